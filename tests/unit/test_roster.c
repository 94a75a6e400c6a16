/* SPDX-License-Identifier: MIT */
/*
 * Rosters: the in-memory structure (items, tombstones, pending requests,
 * the full subscription state), its SQLite layer (load, put, changes made
 * while the account is off-line, tombstone pruning and the versioning
 * horizon, offline messages), and presence priority parsing. Storage tests
 * work in a fresh temporary state directory.
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

#include "offline.h"
#include "presence.h"
#include "roster.h"
#include "storage.h"
#include "subscription.h"

/* ---- The structure ---- */

static void test_upsert_lookup_and_growth(void **state)
{
	struct roster *r = roster_new();
	char jid[64];

	assert_non_null(r);
	for (int i = 0; i < 1000; i++) {
		struct roster_item *it;

		snprintf(jid, sizeof(jid), "contact%d@example.org", i);
		it = roster_upsert(r, jid, strlen(jid));
		assert_non_null(it);
		assert_string_equal(it->jid, jid);
	}
	assert_int_equal(r->count, 1000);
	assert_true(r->nbuckets >= 1000);
	for (int i = 0; i < 1000; i++) {
		snprintf(jid, sizeof(jid), "contact%d@example.org", i);
		assert_non_null(roster_lookup(r, jid, strlen(jid)));
	}
	/* Upsert of an existing item returns it, no duplicate. */
	assert_ptr_equal(roster_upsert(r, "contact7@example.org", 20),
			 roster_lookup(r, "contact7@example.org", 20));
	assert_int_equal(r->count, 1000);
	assert_null(roster_lookup(r, "contact7@example.or", 19));
	assert_null(roster_lookup(r, "nobody@example.org", 18));
	roster_free(r);
	roster_free(NULL);
}

static void test_remove_keeps_tombstone_and_upsert_revives(void **state)
{
	struct roster *r = roster_new();
	struct roster_item *it = roster_upsert(r, "a@x", 3);

	assert_int_equal(roster_item_set_name(it, "A"), 0);
	assert_int_equal(roster_item_set_groups(it, "g1\x1fg2"), 0);
	it->sub = SUB_TO | SUB_FROM;
	it->approved = true;
	roster_touch(r, it);
	assert_int_equal(it->version, 1);
	roster_remove(r, it);
	roster_touch(r, it);
	assert_true(it->deleted);
	assert_null(it->name);
	assert_null(it->groups);
	assert_int_equal(it->sub, 0);
	assert_false(it->approved);
	assert_int_equal(it->version, 2);
	assert_int_equal(r->count, 0);
	assert_int_equal(r->tombstones, 1);
	/* Removing twice changes nothing. */
	roster_remove(r, it);
	assert_int_equal(r->tombstones, 1);
	/* A tombstone is found by lookup, not by roster_state as an item. */
	assert_ptr_equal(roster_lookup(r, "a@x", 3), it);
	/* Revived on the next upsert, same memory. */
	assert_ptr_equal(roster_upsert(r, "a@x", 3), it);
	assert_false(it->deleted);
	assert_int_equal(r->count, 1);
	assert_int_equal(r->tombstones, 0);
	/* Empty strings mean none. */
	assert_int_equal(roster_item_set_name(it, ""), 0);
	assert_null(it->name);
	roster_free(r);
}

static void test_forget_tombstones_up_to_horizon(void **state)
{
	struct roster *r = roster_new();
	char jid[32];

	for (int i = 0; i < 10; i++) {
		struct roster_item *it;

		snprintf(jid, sizeof(jid), "t%d@x", i);
		it = roster_upsert(r, jid, strlen(jid));
		roster_remove(r, it);
		roster_touch(r, it);
	}
	roster_upsert(r, "live@x", 6);
	roster_forget_tombstones(r, 6);
	assert_int_equal(r->tombstones, 4);
	assert_int_equal(r->horizon, 6);
	assert_null(roster_lookup(r, "t0@x", 4));
	assert_null(roster_lookup(r, "t5@x", 4));
	assert_non_null(roster_lookup(r, "t6@x", 4));
	assert_non_null(roster_lookup(r, "live@x", 6));
	/* The horizon never goes back. */
	roster_forget_tombstones(r, 2);
	assert_int_equal(r->horizon, 6);
	roster_free(r);
}

static void test_requests_and_full_state(void **state)
{
	struct roster *r = roster_new();
	struct roster_item *it;
	bool approved;

	assert_int_equal(roster_request_put(r, "a@x", 3, "<presence/>", 11, 2), 0);
	assert_int_equal(roster_request_put(r, "b@x", 3, "<presence/>", 11, 2), 0);
	/* At the limit: new ones refused, replacing an existing one is fine. */
	assert_int_equal(roster_request_put(r, "c@x", 3, "<presence/>", 11, 2), -ENOSPC);
	assert_int_equal(roster_request_put(r, "a@x", 3, "<presence id='2'/>", 18, 2), 0);
	assert_string_equal(roster_request_find(r, "a@x", 3)->stanza, "<presence id='2'/>");
	/* Oldest first. */
	assert_string_equal(r->requests->jid, "a@x");
	assert_int_equal(r->nrequests, 2);

	/* Pending In comes from the request, the rest from the item. */
	assert_int_equal(roster_state(r, "a@x", 3, &approved), SUB_PENDING_IN);
	it = roster_upsert(r, "a@x", 3);
	it->sub = SUB_PENDING_OUT;
	assert_int_equal(roster_state(r, "a@x", 3, &approved), SUB_PENDING_OUT | SUB_PENDING_IN);
	it->sub = SUB_FROM;	/* From and Pending In cannot be both: normalized */
	assert_int_equal(roster_state(r, "a@x", 3, &approved), SUB_FROM);
	it->sub = SUB_TO;
	it->approved = true;
	assert_int_equal(roster_state(r, "a@x", 3, &approved), SUB_TO | SUB_PENDING_IN);
	assert_true(approved);
	assert_int_equal(roster_state(r, "z@x", 3, &approved), SUB_NONE);
	assert_false(approved);

	assert_true(roster_request_drop(r, "a@x", 3));
	assert_false(roster_request_drop(r, "a@x", 3));
	assert_int_equal(r->nrequests, 1);
	assert_int_equal(roster_request_put(r, "c@x", 3, "<presence/>", 11, 2), 0);
	roster_free(r);
}

static void test_priority_parsing(void **state)
{
	int p = 99;

	assert_int_equal(presence_parse_priority("0", &p), 0);
	assert_int_equal(p, 0);
	assert_int_equal(presence_parse_priority(" -128\n", &p), 0);
	assert_int_equal(p, -128);
	assert_int_equal(presence_parse_priority("127", &p), 0);
	assert_int_equal(p, 127);
	assert_int_equal(presence_parse_priority("+5", &p), 0);
	assert_int_equal(p, 5);
	assert_int_equal(presence_parse_priority("128", &p), -1);
	assert_int_equal(presence_parse_priority("-129", &p), -1);
	assert_int_equal(presence_parse_priority("", &p), -1);
	assert_int_equal(presence_parse_priority("  ", &p), -1);
	assert_int_equal(presence_parse_priority("1.5", &p), -1);
	assert_int_equal(presence_parse_priority("5x", &p), -1);
	assert_int_equal(presence_parse_priority("99999999999999999999", &p), -1);
}

/* ---- Storage ---- */

struct fixture {
	char root[64];
	char dir[96];
	struct storage *st;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct scram_creds c;

	assert_non_null(f);
	strcpy(f->root, "/tmp/test_roster.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
	assert_int_equal(storage_open(&f->st, f->dir), 0);
	memset(&c, 7, sizeof(c));
	c.iterations = 4096;
	assert_int_equal(storage_account_create(f->st, "alice", &c), 0);
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

static void put(struct storage *st, const char *jid, const char *name, const char *groups,
		uint8_t sub, bool approved, bool deleted, uint64_t version)
{
	struct roster_row row = { jid, name, groups, sub, approved, deleted, version };

	assert_int_equal(roster_db_put(st, "alice", &row), 0);
}

static void test_store_put_and_load(void **state)
{
	struct fixture *f = *state;
	struct roster *r;
	struct roster_item *it;

	put(f->st, "bob@x", "Bob", "Friends\x1fWork", SUB_TO | SUB_PENDING_OUT, false, false, 1);
	put(f->st, "carol@x", NULL, NULL, SUB_FROM, true, false, 2);
	put(f->st, "dave@x", NULL, NULL, 0, false, true, 3);
	assert_int_equal(roster_db_request_put(f->st, "alice", "eve@x", "<presence/>", 11), 0);

	assert_int_equal(roster_load_sync(f->st, "alice", &r), 0);
	assert_int_equal(r->version, 3);
	assert_int_equal(r->count, 2);
	assert_int_equal(r->tombstones, 1);
	it = roster_lookup(r, "bob@x", 5);
	assert_non_null(it);
	assert_string_equal(it->name, "Bob");
	assert_string_equal(it->groups, "Friends\x1fWork");
	/* To and Pending Out cannot both be: stored ask dropped on load. */
	assert_int_equal(it->sub, SUB_TO);
	it = roster_lookup(r, "carol@x", 7);
	assert_int_equal(it->sub, SUB_FROM);
	assert_true(it->approved);
	assert_null(it->name);
	it = roster_lookup(r, "dave@x", 6);
	assert_true(it->deleted);
	assert_int_equal(it->version, 3);
	assert_non_null(roster_request_find(r, "eve@x", 5));
	roster_free(r);

	/* A user without anything: an empty roster at version 0. */
	assert_int_equal(roster_load_sync(f->st, "nobody", &r), 0);
	assert_int_equal(r->count, 0);
	assert_int_equal(r->version, 0);
	roster_free(r);
}

static void test_store_changes_while_offline(void **state)
{
	struct fixture *f = *state;
	struct roster *r;
	uint8_t st;
	bool approved, exists;

	assert_int_equal(roster_db_account_exists(f->st, "alice"), 0);
	assert_int_equal(roster_db_account_exists(f->st, "ghost"), -ENOENT);

	assert_int_equal(roster_db_state(f->st, "alice", "bob@x", &st, &approved, &exists), 0);
	assert_int_equal(st, 0);
	assert_false(exists);
	assert_int_equal(roster_db_request_put(f->st, "alice", "bob@x", "<presence/>", 11), 0);
	assert_int_equal(roster_db_state(f->st, "alice", "bob@x", &st, &approved, &exists), 0);
	assert_int_equal(st, SUB_PENDING_IN);

	/* A new item from a state change, under the next version. */
	put(f->st, "carol@x", "Carol", "G", SUB_NONE, false, false, 5);
	assert_int_equal(roster_db_set_state(f->st, "alice", "bob@x", SUB_FROM, false), 0);
	assert_int_equal(roster_db_request_delete(f->st, "alice", "bob@x"), 0);
	assert_int_equal(roster_db_state(f->st, "alice", "bob@x", &st, &approved, &exists), 0);
	assert_int_equal(st, SUB_FROM);
	assert_true(exists);
	/* Name and groups survive a state change; a tombstone is revived blank. */
	assert_int_equal(roster_db_set_state(f->st, "alice", "carol@x", SUB_TO, true), 0);
	put(f->st, "dave@x", NULL, NULL, 0, false, true, 8);
	assert_int_equal(roster_db_set_state(f->st, "alice", "dave@x", SUB_PENDING_OUT, false), 0);

	assert_int_equal(roster_load_sync(f->st, "alice", &r), 0);
	assert_int_equal(r->version, 9);
	assert_int_equal(roster_lookup(r, "bob@x", 5)->version, 6);
	assert_string_equal(roster_lookup(r, "carol@x", 7)->name, "Carol");
	assert_true(roster_lookup(r, "carol@x", 7)->approved);
	assert_false(roster_lookup(r, "dave@x", 6)->deleted);
	assert_int_equal(roster_lookup(r, "dave@x", 6)->sub, SUB_PENDING_OUT);
	assert_null(r->requests);
	roster_free(r);

	size_t items, requests;

	assert_int_equal(roster_db_counts(f->st, "alice", &items, &requests), 0);
	assert_int_equal(items, 3);
	assert_int_equal(requests, 0);
}

static void test_store_prunes_tombstones_and_sets_horizon(void **state)
{
	struct fixture *f = *state;
	int n = ROSTER_TOMBSTONES_MAX + 10;
	struct roster *r;
	char jid[32];

	assert_int_equal(storage_begin(f->st), 0);
	for (int i = 1; i <= n; i++) {
		snprintf(jid, sizeof(jid), "t%d@x", i);
		put(f->st, jid, NULL, NULL, 0, false, true, (uint64_t)i);
	}
	put(f->st, "live@x", NULL, NULL, SUB_TO, false, false, (uint64_t)n + 1);
	assert_int_equal(storage_commit(f->st), 0);

	assert_int_equal(roster_load_sync(f->st, "alice", &r), 0);
	assert_int_equal(r->tombstones, ROSTER_TOMBSTONES_MAX / 2);
	assert_int_equal(r->horizon, (uint64_t)(n - ROSTER_TOMBSTONES_MAX / 2));
	assert_null(roster_lookup(r, "t1@x", 4));
	snprintf(jid, sizeof(jid), "t%d@x", n);
	assert_non_null(roster_lookup(r, jid, strlen(jid)));
	assert_non_null(roster_lookup(r, "live@x", 6));
	roster_free(r);
	/* Pruned in the store too, and the horizon remembered. */
	assert_int_equal(roster_load_sync(f->st, "alice", &r), 0);
	assert_int_equal(r->tombstones, ROSTER_TOMBSTONES_MAX / 2);
	assert_int_equal(r->horizon, (uint64_t)(n - ROSTER_TOMBSTONES_MAX / 2));
	roster_free(r);
}

static int collect(void *arg, const char *stanza, size_t len)
{
	char *out = arg;

	strncat(out, stanza, len);
	strcat(out, "|");
	return 0;
}

static void test_offline_store_take_quota_and_missing_account(void **state)
{
	struct fixture *f = *state;
	char got[256] = "";
	uint32_t n, count;

	assert_int_equal(offline_db_put(f->st, "ghost", "<message/>", 10, 5), -ENOENT);
	assert_int_equal(offline_db_put(f->st, "alice", "<m1/>", 5, 2), 0);
	assert_int_equal(offline_db_put(f->st, "alice", "<m2/>", 5, 2), 0);
	assert_int_equal(offline_db_put(f->st, "alice", "<m3/>", 5, 2), -EDQUOT);
	assert_int_equal(offline_count_sync(f->st, "alice", &count), 0);
	assert_int_equal(count, 2);
	assert_int_equal(offline_db_take(f->st, "alice", 1, collect, got, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(got, "<m1/>|");
	assert_int_equal(offline_db_put(f->st, "alice", "<m3/>", 5, 2), 0);
	assert_int_equal(offline_db_take(f->st, "alice", 10, collect, got, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(got, "<m1/>|<m2/>|<m3/>|");
	assert_int_equal(offline_db_take(f->st, "alice", 10, collect, got, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(offline_count_sync(f->st, "alice", &count), 0);
	assert_int_equal(count, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_upsert_lookup_and_growth),
		cmocka_unit_test(test_remove_keeps_tombstone_and_upsert_revives),
		cmocka_unit_test(test_forget_tombstones_up_to_horizon),
		cmocka_unit_test(test_requests_and_full_state),
		cmocka_unit_test(test_priority_parsing),
		cmocka_unit_test_setup_teardown(test_store_put_and_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_changes_while_offline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_prunes_tombstones_and_sets_horizon, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_offline_store_take_quota_and_missing_account,
						setup, teardown),
	};

	return cmocka_run_group_tests_name("roster", tests, NULL, NULL);
}
