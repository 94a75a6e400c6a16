/* SPDX-License-Identifier: MIT */
/*
 * Structured logging: one line per event, key=value pairs, to stderr or
 * to the systemd journal.
 *
 *   ts=2026-11-25T18:00:00.123Z level=info event=conn.open conn=7 peer=...
 *
 * Callers pass the event name and the rest of the pairs as a printf
 * format. Values that come from the network must go through
 * log_sanitize() first: it quotes, escapes and truncates, so a peer can
 * never forge log lines. Secrets (passwords, SASL payloads, keys) are
 * never logged at any level.
 *
 * Journal: with log_target journal (or auto, when stderr is the journal:
 * $JOURNAL_STREAM names its device and inode) each line is one datagram
 * of the journal's native protocol to /run/systemd/journal/socket:
 * MESSAGE (the line without ts and level), PRIORITY (from the level),
 * SYSLOG_IDENTIFIER=stanzad, STANZAD_EVENT, and one STANZAD_<KEY> field
 * per pair, so `journalctl STANZAD_EVENT=auth.failure` works. Spoken by
 * hand, as sdnotify.c speaks sd_notify: the protocol is documented and
 * stable, and stanzad also runs where libsystemd does not exist. A line
 * the socket refuses goes to stderr.
 *
 * Repeats are rate limited: more than log_rate_limit lines of one event
 * at one level within a second are counted, not written; when that
 * second is over (at the event's next line, or at the once-a-second
 * log_tick()) one line says how many were left out:
 *
 *   ... level=warn event=log.suppressed suppressed_event=conn.refused suppressed=4242 limit=100
 */
#ifndef STANZAD_LOG_H
#define STANZAD_LOG_H

#include <stdbool.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
	LOG_LVL_DEBUG = 0,
	LOG_LVL_INFO,
	LOG_LVL_WARN,
	LOG_LVL_ERROR,
};

/*
 * The level below which lines are dropped. Atomic because SIGHUP's reload
 * (worker 0) changes it while every worker, the storage thread and the
 * resolver read it: a plain assignment is a seq_cst store (rare), the
 * check below a relaxed load (a plain mov, as before).
 */
extern _Atomic enum log_level log_threshold;

enum log_target {
	LOG_TARGET_AUTO = 0,	/* the journal if stderr is connected to it, else stderr */
	LOG_TARGET_STDERR,
	LOG_TARGET_JOURNAL,
};

/* Parses "auto", "stderr" or "journal" (out may be NULL); -EINVAL otherwise. */
int log_target_parse(const char *name, enum log_target *out);

/*
 * Chooses the output and the rate limit (lines per second per event and
 * level, 0 = none). Returns 0, or -errno when the journal was asked for
 * and cannot be reached: the output stays stderr then. Call before other
 * threads log.
 */
int log_open(enum log_target target, unsigned rate_limit);
/* Whether lines currently go to the journal. */
bool log_to_journal(void);
/* Closes the journal socket (lines go to stderr again) after a final log_tick(). */
void log_close(void);

/*
 * Once a second (worker 0's loop): writes the summary of every rate-limit
 * window that is over with lines left out, and forgets quiet events.
 */
void log_tick(void);

/* Path of the journal's native socket. */
#define LOG_JOURNAL_SOCKET	"/run/systemd/journal/socket"
/* Largest journal datagram built (a line is at most 1 KiB, plus fields). */
#define LOG_JOURNAL_MAX		4096

/*
 * Builds the journal datagram for one line: `pairs` is the formatted
 * "k=v k2=\"v 2\"" text (may be empty). Returns its length, or 0 when
 * it does not fit in size.
 */
size_t log_journal_format(char *buf, size_t size, enum log_level lvl, const char *event,
			  const char *pairs);

/* ---- The rate limiter (exposed for its unit test) ---- */

#define LOG_RL_SLOTS		256	/* events tracked at once (power of two) */
#define LOG_RL_PROBE		8	/* slots a lookup may look at */
#define LOG_RL_EVENT_MAX	48	/* bytes of an event name kept (longer ones share a slot) */
#define LOG_RL_WINDOW_MS	1000

struct log_rl_slot {
	char event[LOG_RL_EVENT_MAX];
	uint8_t level;
	bool used;
	uint32_t count;		/* lines in the current window */
	uint64_t window_start;	/* ms */
	uint64_t suppressed;	/* lines left out in the current window */
};

struct log_rl {
	unsigned limit;		/* lines per window; 0 = unlimited */
	struct log_rl_slot slots[LOG_RL_SLOTS];
};

/* A summary to write: `suppressed` lines of event at level were left out. */
typedef void (*log_rl_report_fn)(void *arg, const char *event, enum log_level lvl,
				 uint64_t suppressed, unsigned limit);

/*
 * Whether one more line of event at lvl may be written at now_ms. A
 * window that ended with lines left out (this event's, or one evicted to
 * make room) is reported through fn first.
 */
bool log_rl_admit(struct log_rl *rl, const char *event, enum log_level lvl, uint64_t now_ms,
		  log_rl_report_fn fn, void *arg);
/*
 * Reports every window over at now_ms (all of them when `all`) that left
 * lines out, and frees the slots of windows that are over.
 */
void log_rl_expire(struct log_rl *rl, uint64_t now_ms, bool all, log_rl_report_fn fn,
		   void *arg);

/* Parses "debug", "info", "warn" or "error"; -EINVAL otherwise. */
int log_level_parse(const char *name, enum log_level *out);

static inline bool log_enabled(enum log_level lvl)
{
	return lvl >= atomic_load_explicit(&log_threshold, memory_order_relaxed);
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
