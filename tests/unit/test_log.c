/* SPDX-License-Identifier: MIT */
/*
 * Logging: the rate limiter of repeated events (per event and level, one
 * window per second, summaries of what was left out, eviction, expiry),
 * the journal's native datagram format, and log_emit end to end on
 * stderr (a flood leaves `limit` lines and one summary line), also from
 * several threads at once (lines whole, every line written or counted).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* What the limiter reported, in order. */
struct reports {
	unsigned n;
	char event[8][LOG_RL_EVENT_MAX];
	enum log_level level[8];
	uint64_t suppressed[8];
};

static void record(void *arg, const char *event, enum log_level lvl, uint64_t suppressed,
		   unsigned limit)
{
	struct reports *r = arg;

	assert_true(r->n < 8);
	snprintf(r->event[r->n], sizeof(r->event[0]), "%s", event);
	r->level[r->n] = lvl;
	r->suppressed[r->n] = suppressed;
	r->n++;
}

static struct log_rl *rl_new(unsigned limit)
{
	struct log_rl *rl = calloc(1, sizeof(*rl));

	assert_non_null(rl);
	rl->limit = limit;
	return rl;
}

static void test_admits_limit_lines_per_second_then_counts(void **state)
{
	struct log_rl *rl = rl_new(3);
	struct reports r = { 0 };
	unsigned admitted = 0;

	for (int i = 0; i < 10; i++)
		admitted += log_rl_admit(rl, "conn.open", LOG_LVL_INFO, 1000 + i, record, &r);
	assert_int_equal(admitted, 3);
	assert_int_equal(r.n, 0);	/* nothing reported while the window runs */
	/* The next second: the summary of the last one comes first, then the line. */
	assert_true(log_rl_admit(rl, "conn.open", LOG_LVL_INFO, 2000, record, &r));
	assert_int_equal(r.n, 1);
	assert_string_equal(r.event[0], "conn.open");
	assert_int_equal(r.level[0], LOG_LVL_INFO);
	assert_int_equal(r.suppressed[0], 7);
	free(rl);
}

static void test_window_is_one_second_from_its_first_line(void **state)
{
	struct log_rl *rl = rl_new(1);
	struct reports r = { 0 };

	assert_true(log_rl_admit(rl, "e", LOG_LVL_WARN, 5000, record, &r));
	assert_false(log_rl_admit(rl, "e", LOG_LVL_WARN, 5999, record, &r));
	assert_true(log_rl_admit(rl, "e", LOG_LVL_WARN, 6000, record, &r));
	assert_int_equal(r.n, 1);
	assert_int_equal(r.suppressed[0], 1);
	free(rl);
}

static void test_events_and_levels_are_limited_apart(void **state)
{
	struct log_rl *rl = rl_new(2);
	struct reports r = { 0 };

	for (int i = 0; i < 5; i++) {
		log_rl_admit(rl, "a", LOG_LVL_INFO, 100, record, &r);
		log_rl_admit(rl, "a", LOG_LVL_WARN, 100, record, &r);
		log_rl_admit(rl, "b", LOG_LVL_INFO, 100, record, &r);
	}
	/* Each pair (event, level) still has its own fresh budget of 2 in this window. */
	assert_false(log_rl_admit(rl, "a", LOG_LVL_INFO, 100, record, &r));
	assert_true(log_rl_admit(rl, "c", LOG_LVL_INFO, 100, record, &r));
	log_rl_expire(rl, 1100, false, record, &r);
	assert_int_equal(r.n, 3);
	for (unsigned i = 0; i < r.n; i++)
		assert_int_equal(r.suppressed[i], strcmp(r.event[i], "a") == 0 &&
							  r.level[i] == LOG_LVL_INFO ? 4 : 3);
	free(rl);
}

static void test_unlimited_when_zero(void **state)
{
	struct log_rl *rl = rl_new(0);
	struct reports r = { 0 };

	for (int i = 0; i < 100000; i++)
		assert_true(log_rl_admit(rl, "flood", LOG_LVL_ERROR, 7, record, &r));
	log_rl_expire(rl, 100000, true, record, &r);
	assert_int_equal(r.n, 0);
	free(rl);
}

static void test_expire_reports_only_windows_that_are_over(void **state)
{
	struct log_rl *rl = rl_new(1);
	struct reports r = { 0 };

	log_rl_admit(rl, "old", LOG_LVL_INFO, 0, record, &r);
	log_rl_admit(rl, "old", LOG_LVL_INFO, 10, record, &r);
	log_rl_admit(rl, "new", LOG_LVL_INFO, 900, record, &r);
	log_rl_admit(rl, "new", LOG_LVL_INFO, 910, record, &r);
	log_rl_expire(rl, 1000, false, record, &r);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.event[0], "old");
	/* The quiet slot is free again: "old" starts a new window, admitted. */
	assert_true(log_rl_admit(rl, "old", LOG_LVL_INFO, 1001, record, &r));
	/* At exit everything is reported, windows over or not. */
	log_rl_expire(rl, 1002, true, record, &r);
	assert_int_equal(r.n, 2);
	assert_string_equal(r.event[1], "new");
	assert_int_equal(r.suppressed[1], 1);
	free(rl);
}

static void test_full_table_evicts_and_reports(void **state)
{
	struct log_rl *rl = rl_new(1);
	struct reports r = { 0 };
	char name[32];
	unsigned admitted = 0;

	/* Far more distinct events than slots: each still gets its first line. */
	for (int i = 0; i < 4 * LOG_RL_SLOTS; i++) {
		snprintf(name, sizeof(name), "event.%d", i);
		admitted += log_rl_admit(rl, name, LOG_LVL_INFO, (uint64_t)i, record, &r);
	}
	assert_int_equal(admitted, 4 * LOG_RL_SLOTS);
	assert_int_equal(r.n, 0);	/* nothing was left out, so nothing to report */
	/* An evicted event that had lines left out is reported when it goes. */
	free(rl);
	rl = rl_new(1);
	memset(&r, 0, sizeof(r));
	log_rl_admit(rl, "victim", LOG_LVL_INFO, 0, record, &r);
	log_rl_admit(rl, "victim", LOG_LVL_INFO, 0, record, &r);
	for (int i = 0; i < 4 * LOG_RL_SLOTS && !r.n; i++) {
		snprintf(name, sizeof(name), "other.%d", i);
		log_rl_admit(rl, name, LOG_LVL_INFO, 1 + (uint64_t)i, record, &r);
	}
	assert_int_equal(r.n, 1);
	assert_string_equal(r.event[0], "victim");
	assert_int_equal(r.suppressed[0], 1);
	free(rl);
}

static void test_long_names_are_cut_not_overflowed(void **state)
{
	struct log_rl *rl = rl_new(1);
	struct reports r = { 0 };
	char longname[300];

	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_true(log_rl_admit(rl, longname, LOG_LVL_INFO, 0, record, &r));
	assert_false(log_rl_admit(rl, longname, LOG_LVL_INFO, 1, record, &r));
	log_rl_expire(rl, 2000, false, record, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(strlen(r.event[0]), LOG_RL_EVENT_MAX - 1);
	free(rl);
}

/* The value of FIELD=... in a journal datagram, or NULL. */
static const char *jfield(const char *d, size_t len, const char *name, char *out, size_t size)
{
	size_t nl = strlen(name);

	for (const char *p = d; p < d + len;) {
		const char *end = memchr(p, '\n', (size_t)(d + len - p));

		assert_non_null(end);
		if ((size_t)(end - p) > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
			snprintf(out, size, "%.*s", (int)(end - p - (ptrdiff_t)nl - 1), p + nl + 1);
			return out;
		}
		p = end + 1;
	}
	return NULL;
}

static void test_journal_datagram_has_message_priority_and_pairs(void **state)
{
	char d[LOG_JOURNAL_MAX], v[512];
	size_t n = log_journal_format(d, sizeof(d), LOG_LVL_WARN, "auth.failure",
				      "conn=7 user=\"a b\\\"c\" reason=not-authorized free text");

	assert_true(n > 0);
	assert_int_equal(d[n - 1], '\n');
	assert_string_equal(jfield(d, n, "MESSAGE", v, sizeof(v)),
			    "event=auth.failure conn=7 user=\"a b\\\"c\" reason=not-authorized free text");
	assert_string_equal(jfield(d, n, "PRIORITY", v, sizeof(v)), "4");
	assert_string_equal(jfield(d, n, "SYSLOG_IDENTIFIER", v, sizeof(v)), "stanzad");
	assert_string_equal(jfield(d, n, "STANZAD_EVENT", v, sizeof(v)), "auth.failure");
	assert_string_equal(jfield(d, n, "STANZAD_CONN", v, sizeof(v)), "7");
	assert_string_equal(jfield(d, n, "STANZAD_USER", v, sizeof(v)), "\"a b\\\"c\"");
	assert_string_equal(jfield(d, n, "STANZAD_REASON", v, sizeof(v)), "not-authorized");
	assert_null(jfield(d, n, "STANZAD_FREE", v, sizeof(v)));
}

static void test_journal_datagram_never_carries_a_raw_newline(void **state)
{
	char d[LOG_JOURNAL_MAX], v[512];
	size_t n = log_journal_format(d, sizeof(d), LOG_LVL_ERROR, "x", "k=a\nFORGED=1");

	assert_true(n > 0);
	assert_null(jfield(d, n, "FORGED", v, sizeof(v)));
	assert_string_equal(jfield(d, n, "PRIORITY", v, sizeof(v)), "3");
	/* Too small a buffer: nothing (the caller falls back to stderr). */
	assert_int_equal(log_journal_format(d, 20, LOG_LVL_INFO, "x", ""), 0);
}

static void test_target_names(void **state)
{
	enum log_target t;

	assert_int_equal(log_target_parse("journal", &t), 0);
	assert_int_equal(t, LOG_TARGET_JOURNAL);
	assert_int_equal(log_target_parse("stderr", NULL), 0);
	assert_int_equal(log_target_parse("auto", &t), 0);
	assert_int_equal(t, LOG_TARGET_AUTO);
	assert_int_equal(log_target_parse("syslog", &t), -EINVAL);
	assert_int_equal(log_target_parse("", &t), -EINVAL);
}

/* A flood through log_emit leaves `limit` lines and, at close, one summary. */
static void test_emit_flood_on_stderr(void **state)
{
	char path[] = "/tmp/stanzad-test-log-XXXXXX", buf[65536];
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	unsigned lines = 0;
	ssize_t n;
	char *p;

	assert_true(fd >= 0 && saved >= 0);
	fflush(stderr);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	log_threshold = LOG_LVL_DEBUG;
	assert_int_equal(log_open(LOG_TARGET_STDERR, 5), 0);
	assert_false(log_to_journal());
	for (int i = 0; i < 50; i++)
		log_warn("test.flood", "i=%d", i);
	log_info("test.other", "k=v");
	log_close();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	buf[n] = '\0';
	for (p = buf; (p = strstr(p, "level=warn event=test.flood ")) != NULL; p++)
		lines++;
	/* Unless the second turned over mid-flood (then two windows of 5). */
	assert_true(lines == 5 || lines == 10);
	assert_non_null(strstr(buf, "level=info event=test.other k=v\n"));
	p = strstr(buf, "level=warn event=log.suppressed suppressed_event=test.flood suppressed=");
	assert_non_null(p);
	assert_int_equal(strtoul(p + strlen("level=warn event=log.suppressed suppressed_event=test.flood "
					    "suppressed="), NULL, 10) + lines, 50);
	log_open(LOG_TARGET_STDERR, 0);
}

#define MT_THREADS	4
#define MT_LINES	2000	/* per thread */
#define MT_LIMIT	50

struct mt_arg {
	unsigned t;
	pthread_barrier_t *start;
};

static void *mt_logger(void *p)
{
	struct mt_arg *a = p;
	char pad[601];

	/* Long lines: interleaved writes would show up as broken lines. */
	memset(pad, 'a' + (int)a->t, sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	pthread_barrier_wait(a->start);
	for (unsigned i = 0; i < MT_LINES; i++) {
		log_warn("test.mt", "t=%u i=%u pad=%s", a->t, i, pad);
		/* Other events meanwhile, as a reload would change the level. */
		log_debug("test.mt_debug", "t=%u", a->t);
		if (a->t == 0)
			log_threshold = i % 2 ? LOG_LVL_DEBUG : LOG_LVL_INFO;
	}
	return NULL;
}

/*
 * Four threads flood one event through log_emit with the limiter on:
 * every line is whole, and the lines written plus the lines the summaries
 * say were left out add up to exactly what was logged.
 */
static void test_emit_from_threads_counts_every_line(void **state)
{
	char path[] = "/tmp/stanzad-test-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	pthread_t th[MT_THREADS];
	struct mt_arg args[MT_THREADS];
	pthread_barrier_t start;
	unsigned long long written = 0, suppressed = 0;
	const char *summary = "level=warn event=log.suppressed suppressed_event=test.mt suppressed=";
	char *buf, *line, *next;
	ssize_t n;

	assert_true(fd >= 0 && saved >= 0);
	fflush(stderr);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	log_threshold = LOG_LVL_INFO;
	assert_int_equal(log_open(LOG_TARGET_STDERR, MT_LIMIT), 0);
	assert_int_equal(pthread_barrier_init(&start, NULL, MT_THREADS), 0);
	for (unsigned t = 0; t < MT_THREADS; t++) {
		args[t] = (struct mt_arg){ .t = t, .start = &start };
		assert_int_equal(pthread_create(&th[t], NULL, mt_logger, &args[t]), 0);
	}
	for (unsigned t = 0; t < MT_THREADS; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
	pthread_barrier_destroy(&start);
	log_close();
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);

	buf = malloc(8 << 20);
	assert_non_null(buf);
	n = pread(fd, buf, (8 << 20) - 1, 0);
	close(fd);
	unlink(path);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_int_equal(buf[n - 1], '\n');
	for (line = buf; *line; line = next) {
		char *p;

		next = strchr(line, '\n');
		assert_non_null(next);
		*next++ = '\0';
		/* Every line is one whole line of ours. */
		assert_int_equal(strncmp(line, "ts=", 3), 0);
		assert_null(strstr(line + 1, "ts="));
		if ((p = strstr(line, summary)) != NULL) {
			suppressed += strtoull(p + strlen(summary), NULL, 10);
		} else if ((p = strstr(line, " level=warn event=test.mt t=")) != NULL) {
			unsigned t = (unsigned)strtoul(p + strlen(" level=warn event=test.mt t="),
						       NULL, 10);
			char *pad = strstr(line, " pad=");

			assert_true(t < MT_THREADS);
			assert_non_null(pad);
			assert_int_equal(strlen(pad + 5), 600);
			assert_int_equal(strspn(pad + 5, (char[]){ (char)('a' + t), 0 }), 600);
			written++;
		}
	}
	free(buf);
	assert_int_equal(written + suppressed, MT_THREADS * MT_LINES);
	/* At most MT_LIMIT lines per one-second window (the flood takes a few). */
	assert_true(written >= MT_LIMIT && suppressed > 0);
	log_threshold = LOG_LVL_INFO;
	log_open(LOG_TARGET_STDERR, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_admits_limit_lines_per_second_then_counts),
		cmocka_unit_test(test_window_is_one_second_from_its_first_line),
		cmocka_unit_test(test_events_and_levels_are_limited_apart),
		cmocka_unit_test(test_unlimited_when_zero),
		cmocka_unit_test(test_expire_reports_only_windows_that_are_over),
		cmocka_unit_test(test_full_table_evicts_and_reports),
		cmocka_unit_test(test_long_names_are_cut_not_overflowed),
		cmocka_unit_test(test_journal_datagram_has_message_priority_and_pairs),
		cmocka_unit_test(test_journal_datagram_never_carries_a_raw_newline),
		cmocka_unit_test(test_target_names),
		cmocka_unit_test(test_emit_flood_on_stderr),
		cmocka_unit_test(test_emit_from_threads_counts_every_line),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
