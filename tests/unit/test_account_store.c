/* SPDX-License-Identifier: MIT */
/*
 * The per-account stores of the everyday XEPs on SQLite: vCards
 * (XEP-0054), private XML (XEP-0049, with its item limit), last logouts
 * (XEP-0012), and the facts answers on an account's behalf rely on
 * (existence, the asker's subscription). Also the pure rules next to
 * them: reserved private-XML namespaces and status truncation. Every
 * test works in a fresh temporary state directory.
 *
 * With STANZAD_TEST_PG_DSN set (a postgresql:// URI of a database the
 * test may empty), the store tests run a second time on PostgreSQL, each
 * starting from an empty accounts table.
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

#include "contact_query.h"
#include "last_activity.h"
#include "private_xml.h"
#include "storage.h"
#include "storage_db.h"
#include "vcard.h"

/* The PostgreSQL database of the second run, NULL for SQLite. */
static const char *pg_dsn;

struct fixture {
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

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->root, "/tmp/test_account_store.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
	if (pg_dsn) {
		char why[512];
		int ret = storage_open_at(&f->st, pg_dsn, f->dir, why, sizeof(why));

		if (ret)
			fail_msg("%s", why);
		/* Everything an account owns goes with it (ON DELETE CASCADE). */
		assert_int_equal(db_exec(storage_db(f->st), "DELETE FROM accounts"), 0);
	} else {
		assert_int_equal(storage_open(&f->st, f->dir), 0);
	}
	add_account(f->st, "alice");
	add_account(f->st, "bob");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	storage_close(f->st);
	nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void exec_sql(struct storage *st, const char *sql)
{
	assert_int_equal(db_exec(storage_db(st), sql), 0);
}

/* ---- vCards ---- */

static void test_vcard_absent_then_stored_then_replaced(void **state)
{
	struct fixture *f = *state;
	char *xml;
	size_t len;

	assert_int_equal(vcard_store_get(f->st, "alice", &xml, &len), -ENOENT);
	assert_null(xml);
	assert_int_equal(vcard_store_set(f->st, "alice", "<vCard xmlns='vcard-temp'><FN>A</FN>"
					 "</vCard>", 40), 0);
	assert_int_equal(vcard_store_set(f->st, "alice", "<vCard xmlns='vcard-temp'/>junk", 27), 0);
	assert_int_equal(vcard_store_get(f->st, "alice", &xml, &len), 0);
	/* Exactly the bytes given: the length bounds what is stored. */
	assert_int_equal(len, 27);
	assert_string_equal(xml, "<vCard xmlns='vcard-temp'/>");
	free(xml);
	/* Bob's is separate. */
	assert_int_equal(vcard_store_get(f->st, "bob", &xml, &len), -ENOENT);
}

static void test_vcard_delete_and_missing_account(void **state)
{
	struct fixture *f = *state;
	char *xml;
	size_t len;

	assert_int_equal(vcard_store_set(f->st, "alice", "<v/>", 4), 0);
	assert_int_equal(vcard_store_set(f->st, "alice", NULL, 0), 0);
	assert_int_equal(vcard_store_get(f->st, "alice", &xml, &len), -ENOENT);
	/* No account: nothing is created, and the caller learns why. */
	assert_int_equal(vcard_store_set(f->st, "ghost", "<v/>", 4), -ENOENT);
	assert_int_equal(vcard_store_set(f->st, "ghost", NULL, 0), -ENOENT);
	assert_int_equal(vcard_store_get(f->st, "ghost", &xml, &len), -ENOENT);
}

static void test_vcard_goes_with_the_account(void **state)
{
	struct fixture *f = *state;
	char *xml;
	size_t len;

	assert_int_equal(vcard_store_set(f->st, "bob", "<v/>", 4), 0);
	assert_int_equal(storage_account_delete(f->st, "bob"), 0);
	add_account(f->st, "bob");
	assert_int_equal(vcard_store_get(f->st, "bob", &xml, &len), -ENOENT);
}

/* ---- private XML ---- */

static void test_private_keyed_by_namespace_and_name(void **state)
{
	struct fixture *f = *state;
	char *xml;
	size_t len;

	assert_int_equal(private_xml_store_set(f->st, "alice", "urn:a", "x", "<x xmlns='urn:a'/>",
					       18), 0);
	assert_int_equal(private_xml_store_set(f->st, "alice", "urn:a", "y", "<y xmlns='urn:a'/>",
					       18), 0);
	assert_int_equal(private_xml_store_get(f->st, "alice", "urn:a", "y", &xml, &len), 0);
	assert_string_equal(xml, "<y xmlns='urn:a'/>");
	free(xml);
	assert_int_equal(private_xml_store_get(f->st, "alice", "urn:b", "x", &xml, &len), -ENOENT);
	assert_int_equal(private_xml_store_get(f->st, "bob", "urn:a", "x", &xml, &len), -ENOENT);
	assert_int_equal(private_xml_store_set(f->st, "alice", "urn:a", "x", NULL, 0), 0);
	assert_int_equal(private_xml_store_get(f->st, "alice", "urn:a", "x", &xml, &len), -ENOENT);
	assert_int_equal(private_xml_store_set(f->st, "ghost", "urn:a", "x", "<x/>", 4), -ENOENT);
}

static void test_private_item_limit_allows_replacing(void **state)
{
	struct fixture *f = *state;
	char name[32];

	for (int i = 0; i < PRIVATE_MAX_ITEMS; i++) {
		snprintf(name, sizeof(name), "e%d", i);
		assert_int_equal(private_xml_store_set(f->st, "alice", "urn:many", name, "<e/>", 4),
				 0);
	}
	assert_int_equal(private_xml_store_set(f->st, "alice", "urn:many", "one-more", "<e/>", 4),
			 -ENOSPC);
	/* Replacing an existing element is not growth. */
	assert_int_equal(private_xml_store_set(f->st, "alice", "urn:many", "e0", "<f/>", 4), 0);
	/* The limit is per account. */
	assert_int_equal(private_xml_store_set(f->st, "bob", "urn:many", "one-more", "<e/>", 4), 0);
	assert_int_equal(private_xml_store_set(f->st, "alice", "urn:many", "e1", NULL, 0), 0);
	assert_int_equal(private_xml_store_set(f->st, "alice", "urn:many", "one-more", "<e/>", 4),
			 0);
}

static void test_private_reserved_namespaces(void **state)
{
	const char *reserved[] = { "", "jabber:client", "jabber:server", "jabber:iq:private",
				   "jabber:x:data", "http://jabber.org/protocol/muc",
				   "vcard-temp", NULL };
	const char *allowed[] = { "storage:bookmarks", "exodus:prefs", "urn:xmpp:bookmarks:1",
				  "jabber", "http://jabber.org", "https://jabber.org/x",
				  "vcard-temp:x:update", "storage:rosternotes" };

	assert_true(private_xml_ns_reserved(NULL));
	for (size_t i = 0; reserved[i]; i++)
		assert_true(private_xml_ns_reserved(reserved[i]));
	for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
		assert_false(private_xml_ns_reserved(allowed[i]));
}

/* ---- last activity ---- */

static void test_last_activity_round_trip(void **state)
{
	struct fixture *f = *state;
	char status[LAST_STATUS_MAX + 1];
	int64_t at;

	assert_int_equal(last_activity_store_get(f->st, "alice", &at, status, sizeof(status)),
			 -ENOENT);
	assert_int_equal(last_activity_store_set(f->st, "alice", 1700000000, "Heading Home"), 0);
	assert_int_equal(last_activity_store_get(f->st, "alice", &at, status, sizeof(status)), 0);
	assert_int_equal(at, 1700000000);
	assert_string_equal(status, "Heading Home");
	/* The next logout replaces it; no status is stored as none. */
	assert_int_equal(last_activity_store_set(f->st, "alice", 1700000100, NULL), 0);
	assert_int_equal(last_activity_store_get(f->st, "alice", &at, status, sizeof(status)), 0);
	assert_int_equal(at, 1700000100);
	assert_string_equal(status, "");
	assert_int_equal(last_activity_store_set(f->st, "ghost", 1, "x"), -ENOENT);
}

static void test_status_truncation_keeps_characters_whole(void **state)
{
	char out[8];

	assert_int_equal(last_activity_truncate(out, sizeof(out), "abc", 7), 3);
	assert_string_equal(out, "abc");
	/* "é" is two bytes: a cut after 5 bytes keeps two of them, not two and a half. */
	assert_int_equal(last_activity_truncate(out, sizeof(out), "\xc3\xa9\xc3\xa9\xc3\xa9", 5),
			 4);
	assert_string_equal(out, "\xc3\xa9\xc3\xa9");
	/* The buffer bounds the cut too. */
	assert_int_equal(last_activity_truncate(out, 4, "abcdef", 100), 3);
	assert_string_equal(out, "abc");
	/* A four-byte character that does not fit goes entirely. */
	assert_int_equal(last_activity_truncate(out, sizeof(out), "a\xf0\x9f\x8c\xb9", 3), 1);
	assert_string_equal(out, "a");
}

/* ---- facts for answers on an account's behalf ---- */

static void test_contact_facts(void **state)
{
	struct fixture *f = *state;
	struct contact_facts cf;

	assert_int_equal(contact_store_facts(f->st, "ghost", "bob@localhost", true, &cf), 0);
	assert_false(cf.exists);
	assert_int_equal(contact_store_facts(f->st, "alice", "bob@localhost", true, &cf), 0);
	assert_true(cf.exists);
	assert_false(cf.subscribed);

	/* 'to': alice sees bob, bob does not see alice. */
	exec_sql(f->st, "INSERT INTO roster_items (username, jid, subscription)"
			" VALUES ('alice', 'bob@localhost', 'to')");
	assert_int_equal(contact_store_facts(f->st, "alice", "bob@localhost", true, &cf), 0);
	assert_false(cf.subscribed);
	exec_sql(f->st, "UPDATE roster_items SET subscription = 'from'");
	assert_int_equal(contact_store_facts(f->st, "alice", "bob@localhost", true, &cf), 0);
	assert_true(cf.subscribed);
	assert_false(cf.has_last);
	exec_sql(f->st, "UPDATE roster_items SET subscription = 'both'");
	assert_int_equal(last_activity_store_set(f->st, "alice", 1234, "bye"), 0);
	assert_int_equal(contact_store_facts(f->st, "alice", "bob@localhost", true, &cf), 0);
	assert_true(cf.subscribed && cf.has_last);
	assert_int_equal(cf.logout_at, 1234);
	assert_string_equal(cf.status, "bye");
	/* Not asked for: not fetched. */
	assert_int_equal(contact_store_facts(f->st, "alice", "bob@localhost", false, &cf), 0);
	assert_false(cf.has_last);
	/* A removed item (a tombstone for roster versioning) is no subscription. */
	exec_sql(f->st, "UPDATE roster_items SET deleted = 1");
	assert_int_equal(contact_store_facts(f->st, "alice", "bob@localhost", true, &cf), 0);
	assert_false(cf.subscribed);
	assert_false(cf.has_last);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_vcard_absent_then_stored_then_replaced, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_vcard_delete_and_missing_account, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_vcard_goes_with_the_account, setup, teardown),
		cmocka_unit_test_setup_teardown(test_private_keyed_by_namespace_and_name, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_private_item_limit_allows_replacing, setup,
						teardown),
		cmocka_unit_test(test_private_reserved_namespaces),
		cmocka_unit_test_setup_teardown(test_last_activity_round_trip, setup, teardown),
		cmocka_unit_test(test_status_truncation_keeps_characters_whole),
		cmocka_unit_test_setup_teardown(test_contact_facts, setup, teardown),
	};

	int failed = cmocka_run_group_tests_name("sqlite", tests, NULL, NULL);

	pg_dsn = getenv("STANZAD_TEST_PG_DSN");
	if (pg_dsn && pg_dsn[0])
		failed += cmocka_run_group_tests_name("postgresql", tests, NULL, NULL);
	return failed;
}
