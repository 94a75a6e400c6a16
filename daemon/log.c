/* SPDX-License-Identifier: MIT */
/*
 * Logging (see log.h): formatting, the stderr and journal outputs, and the
 * rate limiter of repeated events.
 *
 * Threads: the workers and the storage thread log concurrently. A line is
 * written with one write (stderr) or one datagram (journal), so lines
 * never interleave; the rate limiter's table is guarded by one mutex,
 * taken only when a line is about to be written (never on a path that
 * does not log).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_LINE_MAX	1024	/* one line, ts to newline */
#define LOG_JOURNAL_PAIRS 24	/* pairs of a line that become journal fields */

_Atomic enum log_level log_threshold = LOG_LVL_INFO;

static const char *const level_names[] = {
	[LOG_LVL_DEBUG] = "debug",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_WARN] = "warn",
	[LOG_LVL_ERROR] = "error",
};

/* syslog(3) priorities of the levels, for the journal's PRIORITY field. */
static const char level_priority[] = {
	[LOG_LVL_DEBUG] = '7',
	[LOG_LVL_INFO] = '6',
	[LOG_LVL_WARN] = '4',
	[LOG_LVL_ERROR] = '3',
};

static const char *const target_names[] = {
	[LOG_TARGET_AUTO] = "auto",
	[LOG_TARGET_STDERR] = "stderr",
	[LOG_TARGET_JOURNAL] = "journal",
};

/*
 * Output and limiter state. The limiter's table is used under rl_lock;
 * log_rl_on is its limit, read without the lock to skip the lock when
 * there is no limiter. log_journal_fd is set by log_open() before any
 * other thread starts and closed by log_close() after they all stopped.
 * Nothing else here is shared: lines are formatted on the caller's stack.
 */
static int log_journal_fd = -1;
static pthread_mutex_t rl_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_rl log_rl_global;
static _Atomic unsigned log_rl_on;

int log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

int log_target_parse(const char *name, enum log_target *out)
{
	for (size_t i = 0; i < sizeof(target_names) / sizeof(target_names[0]); i++) {
		if (strcmp(name, target_names[i]) == 0) {
			if (out)
				*out = (enum log_target)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* ---- Rate limiter ---- */

/* FNV-1a over the kept part of the name, and the level. */
static uint32_t log_rl_hash(const char *event, enum log_level lvl)
{
	uint32_t h = 2166136261u ^ (uint32_t)lvl;

	for (size_t i = 0; event[i] && i < LOG_RL_EVENT_MAX - 1; i++) {
		h ^= (unsigned char)event[i];
		h *= 16777619u;
	}
	return h;
}

static bool log_rl_same(const struct log_rl_slot *s, const char *event, enum log_level lvl)
{
	return s->used && s->level == lvl && strncmp(s->event, event, LOG_RL_EVENT_MAX - 1) == 0;
}

/* Reports a slot's left-out lines, if any, and starts it afresh at now. */
static void log_rl_restart(struct log_rl *rl, struct log_rl_slot *s, uint64_t now,
			   log_rl_report_fn fn, void *arg)
{
	if (s->suppressed && fn)
		fn(arg, s->event, (enum log_level)s->level, s->suppressed, rl->limit);
	s->window_start = now;
	s->count = 0;
	s->suppressed = 0;
}

bool log_rl_admit(struct log_rl *rl, const char *event, enum log_level lvl, uint64_t now_ms,
		  log_rl_report_fn fn, void *arg)
{
	uint32_t h = log_rl_hash(event, lvl);
	struct log_rl_slot *s = NULL, *victim = NULL;

	if (!rl->limit)
		return true;
	for (unsigned i = 0; i < LOG_RL_PROBE; i++) {
		struct log_rl_slot *c = &rl->slots[(h + i) & (LOG_RL_SLOTS - 1)];

		if (log_rl_same(c, event, lvl)) {
			s = c;
			break;
		}
		/* The first free slot, else the one whose window began first. */
		if (!victim || (victim->used && (!c->used || c->window_start < victim->window_start)))
			victim = c;
	}
	if (!s) {
		/* A new event takes a free slot or evicts the oldest (reported first). */
		s = victim;
		if (s->used)
			log_rl_restart(rl, s, now_ms, fn, arg);
		snprintf(s->event, sizeof(s->event), "%s", event);
		s->level = (uint8_t)lvl;
		s->used = true;
		s->window_start = now_ms;
		s->count = 0;
		s->suppressed = 0;
	} else if (now_ms - s->window_start >= LOG_RL_WINDOW_MS) {
		log_rl_restart(rl, s, now_ms, fn, arg);
	}
	if (s->count >= rl->limit) {
		s->suppressed++;
		return false;
	}
	s->count++;
	return true;
}

void log_rl_expire(struct log_rl *rl, uint64_t now_ms, bool all, log_rl_report_fn fn, void *arg)
{
	for (unsigned i = 0; i < LOG_RL_SLOTS; i++) {
		struct log_rl_slot *s = &rl->slots[i];

		if (!s->used || (!all && now_ms - s->window_start < LOG_RL_WINDOW_MS))
			continue;
		log_rl_restart(rl, s, now_ms, fn, arg);
		s->used = false;
	}
}

/* Coarse is enough for one-second windows, and costs no syscall. */
static uint64_t log_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- Output ---- */

/* Copies s[0..len) into the datagram as "NAME=value\n"; false when it does not fit. */
static bool log_jfield(char *buf, size_t size, size_t *n, const char *name, size_t name_len,
		       const char *s, size_t len)
{
	if (*n + name_len + 1 + len + 1 > size)
		return false;
	memcpy(buf + *n, name, name_len);
	buf[*n + name_len] = '=';
	*n += name_len + 1;
	/* The text form never has newlines; a stray one would start a field. */
	for (size_t i = 0; i < len; i++)
		buf[(*n)++] = s[i] == '\n' ? ' ' : s[i];
	buf[(*n)++] = '\n';
	return true;
}

/*
 * One STANZAD_<KEY> field per "key=value" pair: keys are [a-z0-9_],
 * values end at a space, or are "quoted" with \-escapes (kept as written).
 * Returns false when out of room.
 */
static bool log_jpairs(char *buf, size_t size, size_t *n, const char *p)
{
	unsigned fields = 0;

	while (*p && fields < LOG_JOURNAL_PAIRS) {
		char name[8 + 64];
		size_t klen = 0, vlen = 0;
		const char *v;

		while (*p == ' ')
			p++;
		while ((p[klen] >= 'a' && p[klen] <= 'z') || (p[klen] >= '0' && p[klen] <= '9') ||
		       p[klen] == '_')
			klen++;
		if (!klen || p[klen] != '=' || klen > 63) {
			/* Not a pair (free text): skip to the next space. */
			while (*p && *p != ' ')
				p++;
			continue;
		}
		v = p + klen + 1;
		if (*v == '"') {
			vlen = 1;
			while (v[vlen] && v[vlen] != '"')
				vlen += v[vlen] == '\\' && v[vlen + 1] ? 2 : 1;
			if (v[vlen] == '"')
				vlen++;
		} else {
			while (v[vlen] && v[vlen] != ' ')
				vlen++;
		}
		memcpy(name, "STANZAD_", 8);
		for (size_t i = 0; i < klen; i++)
			name[8 + i] = p[i] >= 'a' && p[i] <= 'z' ? (char)(p[i] - 'a' + 'A') : p[i];
		if (!log_jfield(buf, size, n, name, 8 + klen, v, vlen))
			return false;
		fields++;
		p = v + vlen;
	}
	return true;
}

size_t log_journal_format(char *buf, size_t size, enum log_level lvl, const char *event,
			  const char *pairs)
{
	char msg[LOG_LINE_MAX];
	size_t n = 0;
	int mlen;

	mlen = snprintf(msg, sizeof(msg), "event=%s%s%s", event, pairs[0] ? " " : "", pairs);
	if (mlen < 0)
		return 0;
	if ((size_t)mlen >= sizeof(msg))
		mlen = sizeof(msg) - 1;
	if (!log_jfield(buf, size, &n, "MESSAGE", 7, msg, (size_t)mlen) ||
	    !log_jfield(buf, size, &n, "PRIORITY", 8, &level_priority[lvl], 1) ||
	    !log_jfield(buf, size, &n, "SYSLOG_IDENTIFIER", 17, "stanzad", 7) ||
	    !log_jfield(buf, size, &n, "STANZAD_EVENT", 13, event, strlen(event)) ||
	    !log_jpairs(buf, size, &n, pairs))
		return 0;
	return n;
}

/* Writes one line to the chosen output (stderr when the journal refuses it). */
static void log_write(enum log_level lvl, const char *event, const char *pairs)
{
	char line[LOG_LINE_MAX];
	struct timeval tv;
	struct tm tm;
	int n;

	if (log_journal_fd >= 0) {
		char dgram[LOG_JOURNAL_MAX];
		size_t len = log_journal_format(dgram, sizeof(dgram), lvl, event, pairs);

		if (len && send(log_journal_fd, dgram, len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)len)
			return;
	}
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = snprintf(line, sizeof(line),
		     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s%s%s",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, (long)(tv.tv_usec / 1000), level_names[lvl], event,
		     pairs[0] ? " " : "", pairs);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 1)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line keeps lines whole when several threads log. */
	fwrite(line, 1, (size_t)n, stderr);
}

/* The limiter's summary line (written under rl_lock; log_write never takes it). */
static void log_report_suppressed(void *arg, const char *event, enum log_level lvl,
				  uint64_t suppressed, unsigned limit)
{
	char pairs[160];

	snprintf(pairs, sizeof(pairs), "suppressed_event=%s suppressed=%llu limit=%u", event,
		 (unsigned long long)suppressed, limit);
	log_write(lvl, "log.suppressed", pairs);
}

void log_emit(enum log_level lvl, const char *event, const char *fmt, ...)
{
	char pairs[LOG_LINE_MAX];
	va_list ap;
	bool admit = true;

	/* Decide before formatting: a flood costs a lookup per line, nothing more. */
	if (atomic_load_explicit(&log_rl_on, memory_order_relaxed)) {
		pthread_mutex_lock(&rl_lock);
		admit = log_rl_admit(&log_rl_global, event, lvl, log_now_ms(), log_report_suppressed,
				     NULL);
		pthread_mutex_unlock(&rl_lock);
		if (!admit)
			return;
	}
	pairs[0] = '\0';
	if (fmt && fmt[0]) {
		va_start(ap, fmt);
		vsnprintf(pairs, sizeof(pairs), fmt, ap);
		va_end(ap);
	}
	log_write(lvl, event, pairs);
}

void log_tick(void)
{
	if (!atomic_load_explicit(&log_rl_on, memory_order_relaxed))
		return;
	pthread_mutex_lock(&rl_lock);
	log_rl_expire(&log_rl_global, log_now_ms(), false, log_report_suppressed, NULL);
	pthread_mutex_unlock(&rl_lock);
}

/* Whether stderr is the stream systemd connected to the journal ($JOURNAL_STREAM). */
static bool log_stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static int log_journal_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, sndbuf = 1 << 20;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", LOG_JOURNAL_SOCKET);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	/* A burst of lines should queue, not fall back to stderr line by line. */
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	return fd;
}

int log_open(enum log_target target, unsigned rate_limit)
{
	int fd;

	pthread_mutex_lock(&rl_lock);
	memset(&log_rl_global, 0, sizeof(log_rl_global));
	log_rl_global.limit = rate_limit;
	atomic_store_explicit(&log_rl_on, rate_limit, memory_order_relaxed);
	pthread_mutex_unlock(&rl_lock);

	if (target == LOG_TARGET_AUTO)
		target = log_stderr_is_journal() ? LOG_TARGET_JOURNAL : LOG_TARGET_STDERR;
	if (target != LOG_TARGET_JOURNAL || log_journal_fd >= 0)
		return 0;
	fd = log_journal_connect();
	if (fd < 0)
		return fd;
	log_journal_fd = fd;
	return 0;
}

bool log_to_journal(void)
{
	return log_journal_fd >= 0;
}

void log_close(void)
{
	if (atomic_load_explicit(&log_rl_on, memory_order_relaxed)) {
		/* Counts of the last second are not lost at exit. */
		pthread_mutex_lock(&rl_lock);
		log_rl_expire(&log_rl_global, log_now_ms(), true, log_report_suppressed, NULL);
		pthread_mutex_unlock(&rl_lock);
	}
	if (log_journal_fd >= 0)
		close(log_journal_fd);
	log_journal_fd = -1;
}

char *log_sanitize(char *out, size_t out_size, const char *in, size_t in_len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (out_size < 6) {
		if (out_size)
			out[0] = '\0';
		return out;
	}
	out[o++] = '"';
	for (size_t i = 0; i < in_len; i++) {
		unsigned char c = (unsigned char)in[i];
		char esc[4];
		size_t elen;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			elen = 2;
		} else if (c == '\n') {
			esc[0] = '\\';
			esc[1] = 'n';
			elen = 2;
		} else if (c < 0x20 || c == 0x7f) {
			esc[0] = '\\';
			esc[1] = 'x';
			esc[2] = hex[c >> 4];
			esc[3] = hex[c & 15];
			elen = 4;
		} else {
			esc[0] = (char)c;
			elen = 1;
		}
		/* Keep room for '...', the closing quote and the NUL. */
		if (o + elen + 5 > out_size) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, esc, elen);
		o += elen;
	}
	out[o++] = '"';
	out[o] = '\0';
	return out;
}
