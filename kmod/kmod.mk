# The stanza offload module (kmod/, Kbuild) and its lab tools; included by
# the top Makefile.
#
# `make` builds build/kmod/stanza_offload.ko against, in this order: KDIR
# when given; the kernel lab's unpacked headers when they are there
# (`scripts/kernel-lab.sh kdir` prepares them; make check-kernel does);
# the running kernel's build tree. Without any of them the module is
# skipped with one line. Kbuild writes its objects beside the sources, so
# it builds a copy in $(BUILD)/kmod; a change of KDIR rebuilds.
#
#   make kmod-lab   the module for the kernel the lab boots (fetches its headers)

KMOD_LAB_KDIR := $(lastword $(sort $(wildcard build/kernel-lab/headers-*/usr/src/linux-headers-*-amd64)))
KMOD_KDIR     := $(or $(KDIR),$(KMOD_LAB_KDIR),$(wildcard /lib/modules/$(shell uname -r)/build))
KMOD_SRCS     := $(wildcard kmod/*.c kmod/*.h) kmod/Kbuild include/stanzad/uapi/stanza_offload.h
KMOD_KO       := $(BUILD)/kmod/stanza_offload.ko

ifneq ($(KMOD_KDIR),)
all: $(KMOD_KO)
else
all: kmod-skip
endif

kmod-skip:
	@echo "  KMOD     skipped: no kernel headers (KDIR=DIR, or scripts/kernel-lab.sh kdir for the lab's)"

# The headers the module was built against: a different KDIR rebuilds it.
$(BUILD)/kmod/.kdir: FORCE
	@mkdir -p $(@D)
	@echo '$(KMOD_KDIR)' | cmp -s - $@ || echo '$(KMOD_KDIR)' > $@

$(KMOD_KO): $(KMOD_SRCS) $(BUILD)/kmod/.kdir
	$(call msg,KMOD,$@)
	@rm -f $(BUILD)/kmod/*.c $(BUILD)/kmod/*.h
	@cp kmod/*.c kmod/*.h kmod/Kbuild $(BUILD)/kmod/
	$(Q)$(MAKE) -C $(KMOD_KDIR) M=$(abspath $(BUILD)/kmod) STANZAD_INCLUDE=$(abspath include) \
		modules >$(BUILD)/kmod/build.log 2>&1 || { cat $(BUILD)/kmod/build.log >&2; exit 1; }
	@grep -E 'warning:|error:' $(BUILD)/kmod/build.log >&2 || true

kmod-lab:
	$(Q)kdir=$$(scripts/kernel-lab.sh kdir) && [ -n "$$kdir" ] && \
		$(MAKE) --no-print-directory KDIR="$$kdir" $(KMOD_KO)

# Lab tools: the module's C tests (ioctl + genetlink through libnl) and
# the many-client XMPP driver of the fan-out tests and benchmark.
$(BUILD)/tests/kmod_test: $(BUILD)/obj/tests/kernel/kmod_test.o $(BUILD)/libstanzad.a
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lcmocka $(LDLIBS)

$(BUILD)/tests/fanout_client: $(BUILD)/obj/tests/kernel/fanout_client.o
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lssl -lcrypto

.PHONY: kmod-skip kmod-lab FORCE
