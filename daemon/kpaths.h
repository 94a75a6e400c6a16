/* SPDX-License-Identifier: MIT */
/*
 * The kernel paths of the design (DESIGN "Kernel paths and their
 * fallbacks") as this process runs them: which are active, with what, and
 * why the others are not. One description for the startup log's
 * server.paths line, /metrics (stanzad_kernel_path_active) and
 * `stanzactl paths` / `status`.
 */
#ifndef STANZAD_KPATHS_H
#define STANZAD_KPATHS_H

#include <stdbool.h>

struct server;

#define KPATHS_MAX	8	/* io_uring, ktls, kmod, xdp_guard, sockops, steering; room for more */

struct kpath {
	const char *name;	/* "io_uring", "ktls", "xdp_guard", "reuseport_steering" */
	bool active;
	char detail[128];	/* what runs (ring flags, kTLS suites), "" if nothing */
	char reason[160];	/* why it is off or partial, "" when fully on */
};

/* Fills out[] and returns how many paths it describes (<= KPATHS_MAX). */
unsigned kpaths_describe(const struct server *srv, struct kpath out[KPATHS_MAX]);

#endif
