# stanzad top-level build.
#
#   make            build build/stanzad and build/stanzactl
#   make run        install missing packages, build, start a local server
#   make check      install missing packages, build, run every test
#   make unit       C unit tests only (cmocka)
#   make integration  pytest + slixmpp tests only
#   V=1             show the commands
#
# Generated files all go under build/. The daemon's objects (all of daemon/
# except the two mains) form build/libstanzad.a, which the unit tests link.

.DELETE_ON_ERROR:
.SUFFIXES:

BUILD   ?= build
CC      ?= cc
PYTHON  ?= /usr/bin/python3
PKGS    := liburing expat openssl sqlite3 libgsasl libidn inih

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-8s %s\n' '$(1)' '$(2)';
endif

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Wshadow -Wformat=2 -Wno-unused-parameter \
	   -Wmissing-prototypes -Wstrict-prototypes -fno-strict-aliasing \
	   -D_GNU_SOURCE -Iinclude -Idaemon -MMD -MP
LDLIBS  += -lpthread

ifeq ($(SANITIZE),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

# pkg-config is resolved lazily so that `make deps` can run before the
# development packages exist.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

DAEMON_MAINS := daemon/main.c daemon/stanzactl.c
DAEMON_SRCS  := $(filter-out $(DAEMON_MAINS),$(sort $(wildcard daemon/*.c)))
DAEMON_OBJS  := $(DAEMON_SRCS:%.c=$(BUILD)/obj/%.o)
UNIT_SRCS    := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS    := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

all: $(BUILD)/stanzad $(BUILD)/stanzactl

include bpf/bpf.mk

$(BUILD)/obj/%.o: %.c
	$(call msg,CC,$<)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(BUILD)/libstanzad.a: $(DAEMON_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/stanzad: $(BUILD)/obj/daemon/main.o $(BUILD)/libstanzad.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/stanzactl: $(BUILD)/obj/daemon/stanzactl.o $(BUILD)/libstanzad.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libstanzad.a
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka $(LDLIBS)

deps:
	$(Q)scripts/install-deps.sh

# The unit runner prints one cmocka summary per file and a total line.
unit: $(UNIT_BINS)
	$(Q)scripts/run-unit.sh $(UNIT_BINS)

integration: $(BUILD)/stanzad $(BUILD)/stanzactl
	$(Q)STANZAD_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

check: deps
	$(Q)$(MAKE) --no-print-directory all $(UNIT_BINS)
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory integration

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)scripts/run-local.sh $(BUILD)

clean:
	rm -rf $(BUILD)

.PHONY: all deps unit integration check run clean
.PRECIOUS: $(BUILD)/obj/%.o

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
