# libFuzzer targets: tests/fuzz/fuzz_NAME.c -> $(FUZZ_DIR)/fuzz_NAME
#
# Each target is built with clang from the daemon sources it exercises
# (compiled again here with the sanitizers and coverage instrumentation,
# never taken from libstanzad.a, which gcc builds). Objects and binaries
# go to $(FUZZ_DIR); the fuzzer's own corpus grows in $(FUZZ_DIR)/corpus/
# so the committed seeds (tests/fuzz/corpus/) and regression inputs
# (tests/fuzz/regressions/) are only read.
#
#   make fuzz              every target for FUZZ_SECONDS (default 60) each
#   make fuzz-check        every target briefly (part of `make check`)
#   make fuzz-build        build only
#   make fuzz FUZZ_TARGETS=fuzz_jid FUZZ_SECONDS=600

FUZZ_CC            ?= clang
FUZZ_DIR           ?= $(BUILD)/fuzz
FUZZ_SECONDS       ?= 60
FUZZ_CHECK_SECONDS ?= 8
FUZZ_ALL           := fuzz_xml_stream fuzz_jid fuzz_sasl fuzz_config fuzz_stanza fuzz_websocket
FUZZ_TARGETS       ?= $(FUZZ_ALL)

FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS := -std=gnu11 -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) \
	       -Wall -Wextra -Wno-unused-parameter -D_GNU_SOURCE \
	       -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION \
	       -Iinclude -Idaemon -Itests/fuzz -I$(BUILD)/bpf -Ibpf -MMD -MP

# Daemon sources per target. arena_asan.c replaces daemon/arena.c so that
# a use of a reset arena is a heap-use-after-free (see that file).
# xml-defer is daemon/xml.c with a small deferral threshold, so that its
# long-token lexer is reached by short inputs.
fuzz_xml_stream_SRCS     := daemon/xml-defer.c daemon/strbuf.c daemon/log.c \
			    tests/fuzz/arena_asan.c tests/fuzz/fuzz_xmlcheck.c
fuzz_jid_SRCS            := daemon/jid.c daemon/log.c
fuzz_sasl_SRCS           := daemon/sasl.c daemon/scram.c daemon/jid.c daemon/log.c
fuzz_config_SRCS         := daemon/config.c daemon/jid.c daemon/log.c daemon/s2s_config.c \
			    daemon/cluster_util.c \
			    daemon/ops_config.c daemon/metrics_acl.c
# The WebSocket layer alone: the target stubs the connection and c2s calls.
fuzz_websocket_SRCS      := daemon/websocket.c daemon/strbuf.c daemon/log.c
# The router reaches most features (blocking, carbons, CSI, stream
# management, the iq handlers), so the stanza target links the whole
# daemon and replaces the socket and storage side through --wrap.
fuzz_stanza_SRCS         := $(filter-out daemon/arena.c,$(DAEMON_SRCS)) \
			    tests/fuzz/arena_asan.c tests/fuzz/fuzz_xmlcheck.c
fuzz_stanza_LDFLAGS      := $(foreach f,conn_send_node c2s_send_stanza conn_send conn_close \
			      conn_abort c2s_stream_error storage_queue_submit,-Wl,--wrap=$(f))

FUZZ_BINS := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)

fuzz_objs = $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,tests/fuzz/$(1).c $($(1)_SRCS))

# Daemon sources may include generated BPF skeletons, like their gcc build.
$(DAEMON_SRCS:%.c=$(FUZZ_DIR)/obj/%.o) $(FUZZ_DIR)/obj/daemon/xml-defer.o: | $(BPF_SKELS)

$(FUZZ_DIR)/obj/%.o: %.c
	$(call msg,FUZZCC,$<)
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(PKG_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/obj/daemon/xml-defer.o: daemon/xml.c
	$(call msg,FUZZCC,$< [XML_DEFER_MIN=24])
	@mkdir -p $(@D)
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -DXML_DEFER_MIN=24 $(PKG_CFLAGS) \
		-c $< -o $@

define FUZZ_LINK_RULE
$(FUZZ_DIR)/$(1): $(call fuzz_objs,$(1))
	$$(call msg,FUZZLD,$$@)
	$$(Q)$$(FUZZ_CC) $$(FUZZ_CFLAGS) -fsanitize=fuzzer $$($(1)_LDFLAGS) -o $$@ $$^ \
		$$(PKG_LIBS) -lhttp_parser -lpthread -lresolv
endef
$(foreach t,$(FUZZ_ALL),$(eval $(call FUZZ_LINK_RULE,$(t))))

fuzz-build: deps
	$(Q)$(MAKE) --no-print-directory fuzz-bins

fuzz-bins: $(FUZZ_BINS)
	@:

fuzz: fuzz-build
	$(Q)scripts/run-fuzz.sh --seconds $(FUZZ_SECONDS) --dir $(FUZZ_DIR) $(FUZZ_TARGETS)

fuzz-check: fuzz-build
	$(Q)scripts/run-fuzz.sh --check --seconds $(FUZZ_CHECK_SECONDS) --dir $(FUZZ_DIR) \
		$(FUZZ_TARGETS)

.PHONY: fuzz fuzz-build fuzz-bins fuzz-check
.PRECIOUS: $(FUZZ_DIR)/obj/%.o

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
