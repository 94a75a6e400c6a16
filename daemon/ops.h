/* SPDX-License-Identifier: MIT */
/*
 * Startup of the operations features that main.c calls once: the log
 * output (log.h). The metrics (metrics.h) and the control socket
 * (control.h) have their own entry points.
 */
#ifndef STANZAD_OPS_H
#define STANZAD_OPS_H

struct config;

/*
 * Opens the log output chosen by log_target (auto: the journal when
 * stderr is connected to it) with log_rate_limit; when the journal cannot
 * be reached, logs why and stays on stderr. Before any thread starts.
 */
void ops_log_open(const struct config *cfg);

#endif
