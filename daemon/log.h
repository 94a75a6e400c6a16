/* SPDX-License-Identifier: MIT */
/*
 * Structured logging: one line per event, key=value pairs, to stderr.
 *
 *   ts=2026-11-25T18:00:00.123Z level=info event=conn.open conn=7 peer=...
 *
 * Callers pass the event name and the rest of the pairs as a printf
 * format. Values that come from the network must go through
 * log_sanitize() first: it quotes, escapes and truncates, so a peer can
 * never forge log lines. Secrets (passwords, SASL payloads, keys) are
 * never logged at any level.
 */
#ifndef STANZAD_LOG_H
#define STANZAD_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LVL_DEBUG = 0,
	LOG_LVL_INFO,
	LOG_LVL_WARN,
	LOG_LVL_ERROR,
};

extern enum log_level log_threshold;

/* Parses "debug", "info", "warn" or "error"; -EINVAL otherwise. */
int log_level_parse(const char *name, enum log_level *out);

static inline bool log_enabled(enum log_level lvl)
{
	return lvl >= log_threshold;
}

/* Writes one line: ts, level, event, then the formatted pairs. */
void log_emit(enum log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_debug(ev, ...) \
	do { if (log_enabled(LOG_LVL_DEBUG)) log_emit(LOG_LVL_DEBUG, ev, __VA_ARGS__); } while (0)
#define log_info(ev, ...) \
	do { if (log_enabled(LOG_LVL_INFO)) log_emit(LOG_LVL_INFO, ev, __VA_ARGS__); } while (0)
#define log_warn(ev, ...) \
	do { if (log_enabled(LOG_LVL_WARN)) log_emit(LOG_LVL_WARN, ev, __VA_ARGS__); } while (0)
#define log_error(ev, ...) log_emit(LOG_LVL_ERROR, ev, __VA_ARGS__)

/*
 * Copies at most in_len bytes of untrusted input into out as a quoted,
 * escaped value ("..." with \n, \", \\ and \xNN), truncated with "..." to
 * fit out_size. Always NUL-terminates. Returns out.
 */
char *log_sanitize(char *out, size_t out_size, const char *in, size_t in_len);

#endif
