# The web console's pages (daemon/console/*.html, .css, .js, .svg) become a C
# file at build time (scripts/embed-files.sh), compiled into libstanzad.a
# like any daemon source: stanzad serves them from memory (console.c).
# Included before fuzz.mk so that the whole-daemon fuzz target gets it too.

CONSOLE_FILES := $(sort $(wildcard daemon/console/*.html daemon/console/*.css daemon/console/*.js daemon/console/*.svg))
CONSOLE_GEN   := $(BUILD)/gen/console_assets.c

DAEMON_SRCS += $(CONSOLE_GEN)
DAEMON_OBJS += $(BUILD)/obj/gen/console_assets.o

$(CONSOLE_GEN): $(CONSOLE_FILES) scripts/embed-files.sh
	$(call msg,GEN,$@)
	@mkdir -p $(@D)
	$(Q)scripts/embed-files.sh $(CONSOLE_FILES) > $@

$(BUILD)/obj/gen/console_assets.o: $(CONSOLE_GEN)
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@
