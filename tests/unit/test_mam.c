/* SPDX-License-Identifier: MIT */
/*
 * Message Archive Management, the parts without a network: XEP-0082
 * times, archive UIDs, which messages are archived, query parsing
 * (forms and RSM, with the errors XEP-0313 names), the result bytes, and
 * the SQLite store (order, clamping, paging, counts, retention sweeps,
 * preferences, un-stamping offline copies) in a fresh state directory.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "arena.h"
#include "mam.h"
#include "storage.h"
#include "storage_db.h"
#include "stored_xml.h"
#include "strbuf.h"
#include "xml.h"

/* ---- XEP-0082 times ---- */

static void test_datetime_parses_zones_and_fractions(void **state)
{
	int64_t us;

	assert_int_equal(mam_datetime_parse("1970-01-01T00:00:00Z", &us), 0);
	assert_int_equal(us, 0);
	assert_int_equal(mam_datetime_parse("2010-06-07T00:00:00Z", &us), 0);
	assert_int_equal(us, 1275868800LL * 1000000);
	assert_int_equal(mam_datetime_parse("2010-06-07T02:30:00+02:30", &us), 0);
	assert_int_equal(us, 1275868800LL * 1000000);
	assert_int_equal(mam_datetime_parse("2010-06-06T19:00:00-05:00", &us), 0);
	assert_int_equal(us, 1275868800LL * 1000000);
	assert_int_equal(mam_datetime_parse("2010-06-07T00:00:00.5Z", &us), 0);
	assert_int_equal(us, 1275868800LL * 1000000 + 500000);
	/* Digits past microseconds are cut, not rounded. */
	assert_int_equal(mam_datetime_parse("2010-06-07T00:00:00.1234569Z", &us), 0);
	assert_int_equal(us, 1275868800LL * 1000000 + 123456);
	assert_int_equal(mam_datetime_parse("2024-02-29T12:00:00Z", &us), 0);
	assert_int_equal(mam_datetime_parse("1969-12-31T23:59:59Z", &us), 0);
	assert_int_equal(us, -1000000);
}

static void test_datetime_rejects_malformed(void **state)
{
	static const char *const bad[] = {
		"", "yesterday", "2010-06-07", "2010-06-07T00:00:00", "2010-06-07 00:00:00Z",
		"2010-13-01T00:00:00Z", "2010-00-01T00:00:00Z", "2010-02-30T00:00:00Z",
		"2023-02-29T00:00:00Z", "2010-06-07T24:00:00Z", "2010-06-07T00:60:00Z",
		"2010-06-07T00:00:61Z", "2010-06-07T00:00:00.Z", "2010-06-07T00:00:00Zjunk",
		"2010-06-07T00:00:00+0200", "2010-06-07T00:00:00+24:00", "10-06-07T00:00:00Z",
		"2010-6-07T00:00:00Z", "+2010-06-07T00:00:00Z",
	};
	int64_t us;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(mam_datetime_parse(bad[i], &us), -EINVAL);
}

static void test_datetime_format_round_trips(void **state)
{
	static const int64_t values[] = { 0, 1, 999999, 1275868800123456LL, -1, -1500000,
					  253402300799999999LL };
	char out[MAM_DATETIME_MAX];
	int64_t back;

	mam_datetime_format(1275868800123456LL, out);
	assert_string_equal(out, "2010-06-07T00:00:00.123456Z");
	mam_datetime_format(-1, out);
	assert_string_equal(out, "1969-12-31T23:59:59.999999Z");
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		mam_datetime_format(values[i], out);
		assert_int_equal(mam_datetime_parse(out, &back), 0);
		assert_true(back == values[i]);
	}
}

/* ---- UIDs ---- */

static void test_ids_are_url_safe_and_unique(void **state)
{
	enum { N = 2000 };
	static char ids[N][MAM_ID_LEN + 1];

	for (int i = 0; i < N; i++) {
		assert_int_equal(mam_new_id(ids[i]), 0);
		assert_int_equal(strlen(ids[i]), MAM_ID_LEN);
		assert_int_equal(strspn(ids[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
					"0123456789-_"), MAM_ID_LEN);
		for (int k = 0; k < i; k++)
			assert_string_not_equal(ids[i], ids[k]);
	}
}

/* ---- Which messages ---- */

struct fx {
	struct xml_pool *pool;
	struct arena a;
};

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->pool = xml_pool_new(NULL);
	assert_non_null(f->pool);
	arena_init(&f->a, 4096);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	arena_release(&f->a);
	xml_pool_free(f->pool);
	free(f);
	return 0;
}

static struct xml_node *parse(struct fx *f, const char *text)
{
	struct xml_node *n = stored_xml_parse(f->pool, &f->a, text, strlen(text));

	assert_non_null(n);
	return n;
}

static bool archivable(struct fx *f, const char *text)
{
	return mam_archivable(parse(f, text));
}

static void test_archivable_rules(void **state)
{
	struct fx *f = *state;

	assert_true(archivable(f, "<message type='chat'><body>hi</body></message>"));
	assert_true(archivable(f, "<message><body>normal</body></message>"));
	assert_false(archivable(f, "<message type='headline'><body>news</body></message>"));
	assert_false(archivable(f, "<message type='groupchat'><body>room</body></message>"));
	assert_false(archivable(f, "<message type='error'><body>x</body></message>"));
	assert_false(archivable(f, "<message type='chat'><body>x</body>"
				   "<no-store xmlns='urn:xmpp:hints'/></message>"));
	assert_false(archivable(f, "<message type='chat'><no-permanent-store xmlns="
				   "'urn:xmpp:hints'/><body>x</body></message>"));
	assert_false(archivable(f, "<message type='chat'><active xmlns="
				   "'http://jabber.org/protocol/chatstates'/></message>"));
	assert_false(archivable(f, "<message><received xmlns='urn:xmpp:receipts' id='x'/></message>"));
	assert_false(archivable(f, "<message type='chat'/>"));
	assert_true(archivable(f, "<message><displayed xmlns='urn:xmpp:chat-markers:0' id='x'/>"
				  "</message>"));
	assert_true(archivable(f, "<message type='chat'><store xmlns='urn:xmpp:hints'/></message>"));
	assert_true(archivable(f, "<message type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/>"
				  "</message>"));
	assert_true(archivable(f, "<message><x xmlns='http://jabber.org/protocol/muc#user'>"
				  "<invite from='a@b'/></x></message>"));
	assert_false(archivable(f, "<message><x xmlns='http://jabber.org/protocol/muc#user'/>"
				   "</message>"));
	/* Wrappers the server builds are never new messages. */
	assert_false(archivable(f, "<message><received xmlns='urn:xmpp:carbons:2'><forwarded "
				   "xmlns='urn:xmpp:forward:0'/></received><body>x</body></message>"));
	assert_false(archivable(f, "<message><result xmlns='urn:xmpp:mam:2' id='1'/><body>x</body>"
				   "</message>"));
	assert_true(archivable(f, "<message type='chat'><private xmlns='urn:xmpp:carbons:2'/>"
				  "<body>x</body></message>"));
	assert_false(archivable(f, "<presence><body>x</body></presence>"));
}

static void test_mode_names(void **state)
{
	assert_int_equal(mam_mode_parse("always"), MAM_MODE_ALWAYS);
	assert_int_equal(mam_mode_parse("roster"), MAM_MODE_ROSTER);
	assert_int_equal(mam_mode_parse("never"), MAM_MODE_NEVER);
	assert_int_equal(mam_mode_parse("Always"), MAM_MODE_SERVER);
	assert_int_equal(mam_mode_parse(NULL), MAM_MODE_SERVER);
	assert_string_equal(mam_mode_name(MAM_MODE_ROSTER), "roster");
	assert_null(mam_mode_name(MAM_MODE_SERVER));
}

/* ---- Query parsing ---- */

#define FORM(x) "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>" \
		"<value>urn:xmpp:mam:2</value></field>" x "</x>"

static int qparse(struct fx *f, const char *inner, const char *attrs, struct mam_query *q,
		  const char **cond)
{
	char text[8192];
	const char *why;

	snprintf(text, sizeof(text), "<query xmlns='urn:xmpp:mam:2'%s>%s</query>", attrs, inner);
	return mam_query_parse(&f->a, parse(f, text), q, cond, &why);
}

static void test_query_parse_fields_and_rsm(void **state)
{
	struct fx *f = *state;
	const char *cond;
	struct mam_query q;

	assert_int_equal(qparse(f, "", "", &q, &cond), 0);
	assert_null(q.with);
	assert_true(q.start == INT64_MIN && q.end == INT64_MAX);
	assert_int_equal(q.max, MAM_PAGE_DEFAULT);
	assert_int_equal(qparse(f, FORM("<field var='with'><value>Juliet@Capulet.lit/Balcony</value>"
					"</field><field var='start'><value>2010-06-07T00:00:00Z"
					"</value></field><field var='end'/><field var='ids'>"
					"<value>a</value><value>b</value></field>")
				 "<set xmlns='http://jabber.org/protocol/rsm'><max>10</max>"
				 "<before/></set><flip-page/>", " queryid='f27'", &q, &cond), 0);
	assert_string_equal(q.with, "juliet@capulet.lit/Balcony");
	assert_true(q.with_full);
	assert_true(q.start == 1275868800LL * 1000000);
	assert_true(q.end == INT64_MAX);	/* an empty field is no field */
	assert_int_equal(q.nids, 2);
	assert_string_equal(q.ids[1], "b");
	assert_string_equal(q.queryid, "f27");
	assert_int_equal(q.max, 10);
	assert_true(rsm_backwards(&q.rsm));
	assert_true(q.flip);
	assert_int_equal(qparse(f, "<set xmlns='http://jabber.org/protocol/rsm'><max>9999</max>"
				   "</set>", "", &q, &cond), 0);
	assert_int_equal(q.max, MAM_PAGE_MAX);
	assert_int_equal(qparse(f, FORM("<field var='after-id'><value>x1</value></field>"
					"<field var='before-id'><value>x9</value></field>"), "", &q,
			       &cond), 0);
	assert_string_equal(q.after_id, "x1");
	assert_string_equal(q.before_id, "x9");
}

static void test_query_parse_errors(void **state)
{
	struct fx *f = *state;
	const char *cond;
	struct mam_query q;
	char big[600];

	assert_int_equal(qparse(f, FORM("<field var='color'><value>blue</value></field>"), "", &q,
				&cond), -EINVAL);
	assert_string_equal(cond, "feature-not-implemented");
	assert_int_equal(qparse(f, "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
				   "<value>urn:other</value></field></x>", "", &q, &cond), -EINVAL);
	assert_string_equal(cond, "bad-request");
	assert_int_equal(qparse(f, "<x xmlns='jabber:x:data' type='result'/>", "", &q, &cond),
			 -EINVAL);
	assert_int_equal(qparse(f, FORM("<field var='with'><value>a@@b</value></field>"), "", &q,
				&cond), -EINVAL);
	assert_string_equal(cond, "bad-request");
	assert_int_equal(qparse(f, FORM("<field var='start'><value>soon</value></field>"), "", &q,
				&cond), -EINVAL);
	assert_int_equal(qparse(f, "<set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set>",
				"", &q, &cond), -EINVAL);
	assert_string_equal(cond, "bad-request");
	assert_int_equal(qparse(f, "", " node='urn:xmpp:mucsub:nodes:messages'", &q, &cond), -EINVAL);
	assert_string_equal(cond, "feature-not-implemented");
	memset(big, 'q', sizeof(big) - 12);
	strcpy(big + sizeof(big) - 12, "'");
	memmove(big + 10, big, sizeof(big) - 10);
	memcpy(big, " queryid='", 10);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(qparse(f, "", big, &q, &cond), -EINVAL);
}

static void test_result_bytes_parse_back(void **state)
{
	struct fx *f = *state;
	struct strbuf b = STRBUF_INIT;
	const char *stored = "<message xmlns='jabber:client' from='a@x/r' to='b@x' type='chat'>"
			     "<body>1 &lt; 2</body></message>";
	struct xml_node *m, *res, *fwd, *inner;

	mam_result_serialize(&b, "b@x/phone", "b@x", "q'1\n&", "ID1", 1275868800000001LL, stored,
			     strlen(stored));
	m = parse(f, b.data);
	assert_string_equal(xml_attr_get(m, "to"), "b@x/phone");
	assert_string_equal(xml_attr_get(m, "from"), "b@x");
	res = xml_child(m, NS_MAM, "result");
	assert_non_null(res);
	assert_string_equal(xml_attr_get(res, "queryid"), "q'1\n&");
	assert_string_equal(xml_attr_get(res, "id"), "ID1");
	fwd = xml_child(res, MAM_NS_FORWARD, "forwarded");
	assert_string_equal(xml_attr_get(xml_child(fwd, MAM_NS_DELAY, "delay"), "stamp"),
			    "2010-06-07T00:00:00.000001Z");
	inner = xml_child(fwd, XML_NS_CLIENT, "message");
	assert_non_null(inner);
	assert_string_equal(xml_text(&f->a, xml_child(inner, XML_NS_CLIENT, "body")), "1 < 2");
	strbuf_clear(&b);
	mam_result_serialize(&b, "b@x/phone", NULL, NULL, "ID2", 0, stored, strlen(stored));
	m = parse(f, b.data);
	assert_null(xml_attr_get(m, "from"));
	assert_null(xml_attr_get(xml_child(m, NS_MAM, "result"), "queryid"));
	strbuf_free(&b);
}

/* ---- The store ---- */

struct sfx {
	char root[64];
	char dir[96];
	struct storage *st;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void add_account(struct storage *st, const char *user)
{
	struct scram_creds c;

	memset(&c, 7, sizeof(c));
	c.iterations = 4096;
	assert_int_equal(storage_account_create(st, user, &c), 0);
}

static int st_setup(void **state)
{
	struct sfx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->root, "/tmp/test_mam.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
	assert_int_equal(storage_open(&f->st, f->dir), 0);
	add_account(f->st, "alice");
	add_account(f->st, "bob");
	*state = f;
	return 0;
}

static int st_teardown(void **state)
{
	struct sfx *f = *state;

	storage_close(f->st);
	nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void put(struct sfx *f, const char *user, int64_t ts, const char *id, const char *peer,
		const char *res, const char *body)
{
	char stanza[256];

	snprintf(stanza, sizeof(stanza), "<message xmlns='jabber:client'><body>%s</body></message>",
		 body);
	assert_int_equal(mam_db_insert(f->st, user, ts, id, peer, res, false, stanza,
				       strlen(stanza)), 0);
}

struct collected {
	int n;
	int64_t ts[32];
	char ids[32][32];
};

static int collect(void *arg, const struct mam_row *row)
{
	struct collected *c = arg;

	if (c->n < 32) {
		c->ts[c->n] = row->ts;
		snprintf(c->ids[c->n], sizeof(c->ids[0]), "%s", row->id);
	}
	c->n++;
	return 0;
}

static int64_t ts_of(struct sfx *f, const char *user, const char *id)
{
	int64_t ts = 0;

	assert_int_equal(mam_db_lookup(f->st, user, id, INT64_MIN, &ts), 0);
	return ts;
}

static void test_store_keeps_order_when_the_clock_does_not(void **state)
{
	struct sfx *f = *state;

	put(f, "alice", 1000, "a", "bob@x", "", "1");
	put(f, "alice", 1000, "b", "bob@x", "", "2");	/* same microsecond */
	put(f, "alice", 500, "c", "bob@x", "", "3");	/* the clock stepped back */
	put(f, "alice", 5000, "d", "bob@x", "", "4");
	put(f, "bob", 10, "a", "alice@x", "", "other archive, same UID");
	assert_true(ts_of(f, "alice", "a") == 1000);
	assert_true(ts_of(f, "alice", "b") == 1001);
	assert_true(ts_of(f, "alice", "c") == 1002);
	assert_true(ts_of(f, "alice", "d") == 5000);
	assert_true(ts_of(f, "bob", "a") == 10);
}

static void test_store_insert_errors(void **state)
{
	struct sfx *f = *state;
	const char *s = "<message xmlns='jabber:client'/>";
	int64_t ts;

	assert_int_equal(mam_db_insert(f->st, "nobody", 1, "x", "p@x", "", true, s, strlen(s)),
			 -ENOENT);
	put(f, "alice", 1, "dup", "bob@x", "", "1");
	assert_int_equal(mam_db_insert(f->st, "alice", 2, "dup", "p@x", "", true, s, strlen(s)),
			 -EEXIST);
	assert_int_equal(mam_db_lookup(f->st, "alice", "nope", INT64_MIN, &ts), -ENOENT);
	/* Older than the cutoff reads as absent. */
	assert_int_equal(mam_db_lookup(f->st, "alice", "dup", 1, &ts), -ENOENT);
}

static void test_store_pages_counts_and_filters(void **state)
{
	struct sfx *f = *state;
	struct mam_filter all = { INT64_MIN, INT64_MAX, NULL, NULL };
	struct mam_filter with = { INT64_MIN, INT64_MAX, "carol@x", NULL };
	struct mam_filter with_res = { INT64_MIN, INT64_MAX, "carol@x", "desk" };
	struct mam_filter range = { 20, 60, NULL, NULL };
	struct collected c;
	uint32_t n;

	put(f, "alice", 10, "i1", "bob@x", "", "1");
	put(f, "alice", 20, "i2", "carol@x", "desk", "2");
	put(f, "alice", 30, "i3", "bob@x", "phone", "3");
	put(f, "alice", 40, "i4", "carol@x", "phone", "4");
	put(f, "alice", 50, "i5", "carol@x", "desk", "5");
	put(f, "bob", 15, "j1", "alice@x", "", "b");

	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_page(f->st, "alice", &all, false, 3, 0, collect, &c), 0);
	assert_int_equal(c.n, 3);
	assert_string_equal(c.ids[0], "i1");
	assert_string_equal(c.ids[2], "i3");
	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_page(f->st, "alice", &all, true, 2, 0, collect, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "i5");
	assert_string_equal(c.ids[1], "i4");
	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_page(f->st, "alice", &all, false, 10, 3, collect, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "i4");
	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_page(f->st, "alice", &with, false, 10, 0, collect, &c), 0);
	assert_int_equal(c.n, 3);
	assert_string_equal(c.ids[1], "i4");
	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_page(f->st, "alice", &with_res, true, 10, 0, collect, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "i5");
	assert_string_equal(c.ids[1], "i2");
	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_page(f->st, "alice", &range, false, 10, 0, collect, &c), 0);
	assert_int_equal(c.n, 3);	/* bounds are exclusive */
	assert_string_equal(c.ids[0], "i3");

	assert_int_equal(mam_db_count(f->st, "alice", &all, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(mam_db_count(f->st, "alice", &with, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(mam_db_count(f->st, "alice", &with_res, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(mam_db_count(f->st, "alice", &range, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(mam_db_count(f->st, "nobody", &all, &n), 0);
	assert_int_equal(n, 0);

	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_bounds(f->st, "alice", INT64_MIN, collect, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "i1");
	assert_string_equal(c.ids[1], "i5");
	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_bounds(f->st, "alice", 45, collect, &c), 0);
	assert_int_equal(c.n, 2);
	assert_string_equal(c.ids[0], "i5");
	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_bounds(f->st, "carol", INT64_MIN, collect, &c), 0);
	assert_int_equal(c.n, 0);

	memset(&c, 0, sizeof(c));
	assert_int_equal(mam_db_get(f->st, "alice", "i4", INT64_MIN, collect, &c), 0);
	assert_int_equal(c.n, 1);
	assert_true(c.ts[0] == 40);
	assert_int_equal(mam_db_get(f->st, "bob", "i4", INT64_MIN, collect, &c), -ENOENT);
}

static int stop_after_one(void *arg, const struct mam_row *row)
{
	(*(int *)arg)++;
	return 1;
}

static void test_store_callback_stops_early(void **state)
{
	struct sfx *f = *state;
	struct mam_filter all = { INT64_MIN, INT64_MAX, NULL, NULL };
	int n = 0;

	put(f, "alice", 1, "s1", "bob@x", "", "1");
	put(f, "alice", 2, "s2", "bob@x", "", "2");
	assert_int_equal(mam_db_page(f->st, "alice", &all, false, 10, 0, stop_after_one, &n), 0);
	assert_int_equal(n, 1);
	/* The statement was reset: it runs again from the start. */
	assert_int_equal(mam_db_page(f->st, "alice", &all, false, 10, 0, stop_after_one, &n), 0);
	assert_int_equal(n, 2);
}

static void test_store_expire_in_batches(void **state)
{
	struct sfx *f = *state;
	struct mam_filter all = { INT64_MIN, INT64_MAX, NULL, NULL };
	uint32_t deleted, n;

	put(f, "alice", 10, "e1", "bob@x", "", "1");
	put(f, "bob", 11, "e2", "alice@x", "", "2");
	put(f, "alice", 12, "e3", "bob@x", "", "3");
	put(f, "alice", 100, "e4", "bob@x", "", "4");
	assert_int_equal(mam_db_expire(f->st, 50, 2, &deleted), 0);
	assert_int_equal(deleted, 2);
	assert_int_equal(mam_db_expire(f->st, 50, 2, &deleted), 0);
	assert_int_equal(deleted, 1);
	assert_int_equal(mam_db_expire(f->st, 50, 2, &deleted), 0);
	assert_int_equal(deleted, 0);
	assert_int_equal(mam_db_count(f->st, "alice", &all, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(mam_db_count(f->st, "bob", &all, &n), 0);
	assert_int_equal(n, 0);
}

static void test_store_prefs(void **state)
{
	struct sfx *f = *state;
	struct mam_prefs *p;
	enum mam_mode mode;
	char *al, *nv;

	assert_int_equal(mam_db_prefs_get(f->st, "alice", &mode, &al, &nv), 0);
	assert_int_equal(mode, MAM_MODE_SERVER);
	assert_string_equal(al, "");
	assert_string_equal(nv, "");
	free(al);
	free(nv);
	assert_int_equal(mam_prefs_load_sync(f->st, "alice", &p), 0);
	assert_null(p);
	assert_int_equal(mam_db_prefs_put(f->st, "alice", MAM_MODE_ROSTER, "a@x\nb@x/r", ""), 0);
	assert_int_equal(mam_db_prefs_put(f->st, "alice", MAM_MODE_NEVER, "c@x", "d@x"), 0);
	assert_int_equal(mam_db_prefs_put(f->st, "alice", MAM_MODE_SERVER, "", ""), -EINVAL);
	assert_int_equal(mam_prefs_load_sync(f->st, "alice", &p), 0);
	assert_non_null(p);
	assert_int_equal(p->mode, MAM_MODE_NEVER);
	assert_string_equal(p->always, "c@x");
	assert_string_equal(p->never, "d@x");
	mam_prefs_free(p);
	assert_int_equal(mam_db_prefs_put(f->st, "nobody", MAM_MODE_NEVER, "", ""), -EIO);
}

static void test_store_unstamp_offline_and_cascade(void **state)
{
	struct sfx *f = *state;
	sqlite3 *db = storage_sqlite_db(f->st);
	const char *stamp = "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@x' id='S1'/>";
	sqlite3_stmt *s;
	struct mam_filter all = { INT64_MIN, INT64_MAX, NULL, NULL };
	uint32_t n;

	assert_int_equal(sqlite3_exec(db, "INSERT INTO offline_messages (username, stanza, created_at)"
				      " VALUES ('bob', '<message><body>x</body><stanza-id xmlns="
				      "''urn:xmpp:sid:0'' by=''bob@x'' id=''S1''/></message>', 0),"
				      " ('bob', '<message><body>y</body></message>', 0)",
				      NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(mam_db_unstamp_offline(f->st, "bob", stamp), 0);
	assert_int_equal(sqlite3_prepare_v2(db, "SELECT stanza FROM offline_messages ORDER BY id",
					    -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0),
			    "<message><body>x</body></message>");
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0),
			    "<message><body>y</body></message>");
	sqlite3_finalize(s);

	put(f, "bob", 1, "c1", "alice@x", "", "1");
	assert_int_equal(mam_db_prefs_put(f->st, "bob", MAM_MODE_NEVER, "", ""), 0);
	assert_int_equal(storage_account_delete(f->st, "bob"), 0);
	assert_int_equal(mam_db_count(f->st, "bob", &all, &n), 0);
	assert_int_equal(n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_datetime_parses_zones_and_fractions),
		cmocka_unit_test(test_datetime_rejects_malformed),
		cmocka_unit_test(test_datetime_format_round_trips),
		cmocka_unit_test(test_ids_are_url_safe_and_unique),
		cmocka_unit_test_setup_teardown(test_archivable_rules, fx_setup, fx_teardown),
		cmocka_unit_test(test_mode_names),
		cmocka_unit_test_setup_teardown(test_query_parse_fields_and_rsm, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_query_parse_errors, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_result_bytes_parse_back, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_store_keeps_order_when_the_clock_does_not,
						st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_store_insert_errors, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_store_pages_counts_and_filters, st_setup,
						st_teardown),
		cmocka_unit_test_setup_teardown(test_store_callback_stops_early, st_setup,
						st_teardown),
		cmocka_unit_test_setup_teardown(test_store_expire_in_batches, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_store_prefs, st_setup, st_teardown),
		cmocka_unit_test_setup_teardown(test_store_unstamp_offline_and_cascade, st_setup,
						st_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
