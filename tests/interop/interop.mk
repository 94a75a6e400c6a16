# The client interop matrix (included by the top Makefile).
#
#   make check-interop   every client stack of tests/interop against a
#                        stanzad started there; prints the matrix and
#                        writes build/interop-matrix.md (README's table)
#
# The clients come from Debian (scripts/install-deps.sh interop) and npm
# (tests/integration/ws-client). The libstrophe client is C, built here.

$(BUILD)/interop/strophe_client: tests/interop/strophe_client.c
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) $(shell pkg-config --cflags libstrophe 2>/dev/null) $< \
		-o $@ $(LDFLAGS) $(shell pkg-config --libs libstrophe 2>/dev/null)

check-interop: all
	$(Q)scripts/install-deps.sh interop
	$(Q)$(MAKE) --no-print-directory $(BUILD)/interop/strophe_client
	$(Q)STANZAD_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -rs -p no:cacheprovider tests/interop

.PHONY: check-interop
