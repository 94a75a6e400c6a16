# Installation and packaging (included by the top Makefile).
#
#   make man            build/man/stanzad.8, stanzactl.8, stanzad.conf.5 (scdoc)
#   make install        PREFIX (default /usr/local), DESTDIR, and SBINDIR,
#                       BINDIR, MANDIR, SYSCONFDIR (default /etc),
#                       SYSTEMDUNITDIR to place things one by one
#   make deb            build/deb/stanzad_VERSION_ARCH.deb (debian/, built
#                       with dpkg-buildpackage in a copy of the tree)
#   make check-package  install, upgrade and purge the package in a
#                       throwaway Debian root made with debootstrap
#
# Sources: daemon/dist/ (the unit template, the default configuration), daemon/man/
# (the man pages in scdoc), debian/ (the package).

PREFIX         ?= /usr/local
SBINDIR        ?= $(PREFIX)/sbin
BINDIR         ?= $(PREFIX)/bin
MANDIR         ?= $(PREFIX)/share/man
SYSCONFDIR     ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
INSTALL        ?= install

MAN_SRCS  := $(sort $(wildcard daemon/man/*.scd))
MAN_PAGES := $(MAN_SRCS:daemon/man/%.scd=$(BUILD)/man/%)

$(BUILD)/man/%: daemon/man/%.scd
	$(call msg,SCDOC,$@)
	@mkdir -p $(@D)
	$(Q)scdoc < $< > $@

man: $(MAN_PAGES)

# The configuration is installed only where none is yet (an operator's
# file survives `make install`); into a DESTDIR (a package) always.
install: all man
	$(call msg,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SYSCONFDIR)/stanzad $(DESTDIR)$(SYSTEMDUNITDIR)
	$(Q)$(INSTALL) -m 0755 $(BUILD)/stanzad $(DESTDIR)$(SBINDIR)/stanzad
	$(Q)$(INSTALL) -m 0755 $(BUILD)/stanzactl $(DESTDIR)$(BINDIR)/stanzactl
	$(Q)$(INSTALL) -m 0644 $(filter %.8,$(MAN_PAGES)) $(DESTDIR)$(MANDIR)/man8/
	$(Q)$(INSTALL) -m 0644 $(filter %.5,$(MAN_PAGES)) $(DESTDIR)$(MANDIR)/man5/
	$(Q)sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		daemon/dist/stanzad.service.in > $(DESTDIR)$(SYSTEMDUNITDIR)/stanzad.service
	$(Q)chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/stanzad.service
	$(Q)if [ -n "$(DESTDIR)" ] || [ ! -e $(SYSCONFDIR)/stanzad/stanzad.conf ]; then \
		$(INSTALL) -m 0644 daemon/dist/stanzad.conf $(DESTDIR)$(SYSCONFDIR)/stanzad/stanzad.conf; \
	else \
		echo "  keeping $(SYSCONFDIR)/stanzad/stanzad.conf (the new default: daemon/dist/stanzad.conf)"; \
	fi

deb: deps
	$(Q)scripts/make-deb.sh $(BUILD)/deb

# The package test (tests/package/): builds this tree's packages and a
# rebuild with a higher version, then installs, upgrades, removes and
# purges them in a debootstrap root (cached under build/package-test),
# the DKMS package and a kernel headers package included. Measured on 2
# cores: 85-180 s with the cache (180 s on a busy machine), 92 s without
# (downloads from this machine's mirror are fast; most of it is the two
# package builds and the DKMS module build), so
# `make check` runs all of it, with STANZAD_PACKAGE_ALLOW_SKIP=1: no
# Debian mirror (or no root) is a skip with its reason there, and a
# failure here.
check-package: deps
	$(Q)STANZAD_PACKAGE_CACHE=$(abspath $(BUILD))/package-test \
		$(PYTHON) -m pytest -q -rs -p no:cacheprovider tests/package

.PHONY: man install deb check-package
