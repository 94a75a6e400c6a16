/* SPDX-License-Identifier: MIT */
/*
 * SIGHUP: the configuration is read again from the same file and flags as
 * at startup. What can change on a running server changes at once: the
 * log level, the limits and timeouts (read where they are used, so the
 * next connection, stanza or request sees the new value), the policy keys
 * (registration, require_tls, admin) and the certificate, which is read
 * again from its files even when its paths did not change (renewed
 * certificates keep their names). Keys that shape what was set up at
 * startup (listeners, domain, state directory, workers, services,
 * storage-backed sizes that structures were built with) keep their old
 * value, and config.reload names them in needs_restart=. A file that does
 * not load leaves everything as it was (config.reload_failed).
 */
#ifndef STANZAD_RELOAD_H
#define STANZAD_RELOAD_H

struct worker;

/* Remembers the command line (main, once) for later reloads. */
void reload_set_args(int argc, char **argv);

/* Rereads and applies the configuration (worker 0's loop, on SIGHUP). */
void reload_config(struct worker *w);

/* For tests: true when key `key` takes effect on a reload. */
int reload_key_is_live(const char *key);

#endif
