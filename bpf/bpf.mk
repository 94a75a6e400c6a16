# BPF programs: bpf/NAME.bpf.c -> build/bpf/NAME.bpf.o -> build/bpf/NAME.skel.h
#
# Each program has a header bpf/NAME.h with the structs it shares with its
# loader in daemon/ (see include/stanzad/uapi/ for the fixed ABI). Loaders
# include the generated skeleton from build/bpf/. vmlinux.h comes from the
# running kernel's BTF so the programs are CO-RE.

BPF_SRCS  := $(sort $(wildcard bpf/*.bpf.c))
BPF_OBJS  := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.bpf.o)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.skel.h)
BPF_CLANG ?= clang
BPF_ARCH  := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')
# The loaders find NAME.skel.h and bpf/NAME.h.
CFLAGS    += -I$(BUILD)/bpf -Ibpf

$(BUILD)/bpf/vmlinux.h:
	$(call msg,BTF,$@)
	@mkdir -p $(@D)
	$(Q)bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/bpf/vmlinux.h
	$(call msg,BPF,$@)
	$(Q)$(BPF_CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) \
		-I$(BUILD)/bpf -Ibpf -Iinclude -c $< -o $@

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)bpftool gen skeleton $< > $@

# Loaders in daemon/ and the BPF unit tests include the skeletons, so they must exist first.
$(DAEMON_OBJS) $(UNIT_SRCS:%.c=$(BUILD)/obj/%.o): | $(BPF_SKELS)
