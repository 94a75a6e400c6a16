/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the block list of daemon/blocking.c: the XEP-0191
 * section 5 / XEP-0016 JID matching rules, the set operations (add,
 * remove, clear, iterate) including removal inside probe runs and growth,
 * adversarial items, and the SQLite side (store, load, match, removal with
 * the account).
 */
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "blocking.h"
#include "jid.h"
#include "storage.h"

/* A list holding the given items (normalized through jid_parse first). */
static struct blocklist *list_of(const char *first, ...)
{
	struct blocklist *bl = blocklist_new();
	va_list ap;

	assert_non_null(bl);
	va_start(ap, first);
	for (const char *s = first; s; s = va_arg(ap, const char *)) {
		struct jid j;

		assert_int_equal(jid_parse(&j, s, strlen(s)), 0);
		assert_int_equal(blocklist_add(bl, j.buf, j.len), 1);
	}
	va_end(ap);
	return bl;
}

static bool blocks(const struct blocklist *bl, const char *from)
{
	struct jid j;

	assert_int_equal(jid_parse(&j, from, strlen(from)), 0);
	return blocklist_matches(bl, &j);
}

/* ---- the four item forms of section 5 ---- */

static void test_full_jid_item_matches_only_that_resource(void **state)
{
	struct blocklist *bl = list_of("romeo@montague.net/orchard", NULL);

	assert_true(blocks(bl, "romeo@montague.net/orchard"));
	assert_false(blocks(bl, "romeo@montague.net/garden"));
	assert_false(blocks(bl, "romeo@montague.net"));
	assert_false(blocks(bl, "montague.net"));
	assert_false(blocks(bl, "montague.net/orchard"));
	assert_false(blocks(bl, "juliet@montague.net/orchard"));
	/* Resources keep case: a different resource by case is not blocked. */
	assert_false(blocks(bl, "romeo@montague.net/Orchard"));
	blocklist_free(bl);
}

static void test_bare_jid_item_matches_any_resource(void **state)
{
	struct blocklist *bl = list_of("romeo@montague.net", NULL);

	assert_true(blocks(bl, "romeo@montague.net"));
	assert_true(blocks(bl, "romeo@montague.net/orchard"));
	assert_true(blocks(bl, "ROMEO@Montague.NET/x"));
	assert_false(blocks(bl, "montague.net"));
	assert_false(blocks(bl, "montague.net/romeo"));
	assert_false(blocks(bl, "romeo@capulet.com"));
	assert_false(blocks(bl, "romeo2@montague.net"));
	blocklist_free(bl);
}

static void test_domain_resource_item_matches_only_that_resource(void **state)
{
	struct blocklist *bl = list_of("montague.net/bot", NULL);

	assert_true(blocks(bl, "montague.net/bot"));
	assert_false(blocks(bl, "montague.net/other"));
	assert_false(blocks(bl, "montague.net"));
	/* A user's resource of the same name is another entity. */
	assert_false(blocks(bl, "romeo@montague.net/bot"));
	blocklist_free(bl);
}

static void test_domain_item_matches_everything_from_the_domain(void **state)
{
	struct blocklist *bl = list_of("montague.net", NULL);

	assert_true(blocks(bl, "montague.net"));
	assert_true(blocks(bl, "montague.net/bot"));
	assert_true(blocks(bl, "romeo@montague.net"));
	assert_true(blocks(bl, "romeo@montague.net/orchard"));
	/* Not subdomains, not a parent domain, not a lookalike. */
	assert_false(blocks(bl, "chat.montague.net"));
	assert_false(blocks(bl, "user@chat.montague.net/r"));
	assert_false(blocks(bl, "net"));
	assert_false(blocks(bl, "xmontague.net"));
	blocklist_free(bl);
}

static void test_items_are_compared_in_normalized_form(void **state)
{
	/* The caller normalizes: nodeprep folds case, the domain is lowercased. */
	struct blocklist *bl = list_of("Romeo@MONTAGUE.net", "IAGO.example", NULL);

	assert_true(blocks(bl, "romeo@montague.net/x"));
	assert_true(blocks(bl, "someone@iago.example"));
	assert_true(blocklist_contains(bl, "romeo@montague.net", strlen("romeo@montague.net")));
	assert_false(blocklist_contains(bl, "Romeo@MONTAGUE.net", strlen("Romeo@MONTAGUE.net")));
	blocklist_free(bl);
}

static void test_several_items_combine(void **state)
{
	struct blocklist *bl = list_of("a@x.example/r", "b@y.example", "z.example/s", "w.example",
				       NULL);

	assert_true(blocks(bl, "a@x.example/r"));
	assert_false(blocks(bl, "a@x.example/q"));
	assert_true(blocks(bl, "b@y.example/any"));
	assert_true(blocks(bl, "z.example/s"));
	assert_false(blocks(bl, "u@z.example/s"));
	assert_true(blocks(bl, "anyone@w.example/r"));
	assert_false(blocks(bl, "c@x.example"));
	blocklist_free(bl);
}

static void test_empty_and_null_lists_block_nothing(void **state)
{
	struct blocklist *bl = blocklist_new();
	struct jid empty = { .len = 0 };

	assert_false(blocks(bl, "romeo@montague.net/orchard"));
	assert_false(blocks(NULL, "montague.net"));
	assert_int_equal(blocklist_count(NULL), 0);
	assert_false(blocklist_remove(NULL, "x", 1));
	assert_false(blocklist_contains(NULL, "x", 1));
	blocklist_add(bl, "montague.net", strlen("montague.net"));
	/* An unparsed (empty) JID never matches, even against a domain item. */
	assert_false(blocklist_matches(bl, &empty));
	blocklist_free(bl);
	blocklist_free(NULL);
}

/* ---- the set ---- */

static void test_add_is_idempotent_and_remove_reports_presence(void **state)
{
	struct blocklist *bl = blocklist_new();

	assert_int_equal(blocklist_add(bl, "a@b", 3), 1);
	assert_int_equal(blocklist_add(bl, "a@b", 3), 0);
	assert_int_equal(blocklist_count(bl), 1);
	assert_false(blocklist_remove(bl, "a@c", 3));
	assert_true(blocklist_remove(bl, "a@b", 3));
	assert_false(blocklist_remove(bl, "a@b", 3));
	assert_int_equal(blocklist_count(bl), 0);
	assert_false(blocks(bl, "a@b"));
	blocklist_free(bl);
}

static void test_adversarial_items_are_refused(void **state)
{
	struct blocklist *bl = blocklist_new();
	static char big[JID_MAX + 8];

	assert_int_equal(blocklist_add(bl, "", 0), -EINVAL);
	assert_int_equal(blocklist_add(bl, "a\0b", 3), -EINVAL);
	memset(big, 'a', sizeof(big));
	assert_int_equal(blocklist_add(bl, big, JID_MAX), -EINVAL);
	assert_int_equal(blocklist_add(bl, big, JID_MAX - 1), 1);
	assert_int_equal(blocklist_count(bl), 1);
	/* A prefix or an extension of an item is another item. */
	assert_false(blocklist_contains(bl, big, JID_MAX - 2));
	blocklist_free(bl);
}

/*
 * Many items force growth and long probe runs; removing every other one
 * (backward-shift deletion) must leave every remaining item findable.
 */
static void test_growth_and_removal_keep_every_item_findable(void **state)
{
	enum { N = 5000 };
	struct blocklist *bl = blocklist_new();
	char buf[64];

	for (int i = 0; i < N; i++) {
		int n = snprintf(buf, sizeof(buf), "user%d@host%d.example", i, i % 7);

		assert_int_equal(blocklist_add(bl, buf, (size_t)n), 1);
	}
	assert_int_equal(blocklist_count(bl), N);
	for (int i = 0; i < N; i += 2) {
		int n = snprintf(buf, sizeof(buf), "user%d@host%d.example", i, i % 7);

		assert_true(blocklist_remove(bl, buf, (size_t)n));
	}
	assert_int_equal(blocklist_count(bl), N / 2);
	for (int i = 0; i < N; i++) {
		int n = snprintf(buf, sizeof(buf), "user%d@host%d.example", i, i % 7);

		assert_int_equal(blocklist_contains(bl, buf, (size_t)n), i % 2 == 1);
	}
	snprintf(buf, sizeof(buf), "user%d@host%d.example/res", 7, 0);
	assert_true(blocks(bl, buf));
	snprintf(buf, sizeof(buf), "user%d@host%d.example/res", 8, 1);
	assert_false(blocks(bl, buf));
	blocklist_free(bl);
}

static void test_iteration_visits_each_item_once(void **state)
{
	struct blocklist *bl = list_of("a@x", "b@x", "x", "x/r", "c@x/r", NULL);
	const char *it;
	size_t pos = 0, n = 0;
	bool seen[5] = { false };
	const char *want[5] = { "a@x", "b@x", "x", "x/r", "c@x/r" };

	while ((it = blocklist_next(bl, &pos))) {
		for (int i = 0; i < 5; i++) {
			if (strcmp(it, want[i]) == 0) {
				assert_false(seen[i]);
				seen[i] = true;
			}
		}
		n++;
	}
	assert_int_equal(n, 5);
	for (int i = 0; i < 5; i++)
		assert_true(seen[i]);
	pos = 0;
	assert_null(blocklist_next(NULL, &pos));
	blocklist_clear(bl);
	pos = 0;
	assert_null(blocklist_next(bl, &pos));
	assert_int_equal(blocklist_count(bl), 0);
	assert_false(blocks(bl, "a@x"));
	/* Usable again after clear. */
	assert_int_equal(blocklist_add(bl, "a@x", 3), 1);
	assert_true(blocks(bl, "a@x/y"));
	blocklist_free(bl);
}

/* ---- storage ---- */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* A fresh store in a temporary directory with one account, "juliet". */
static struct storage *store_with_account(char *root, size_t size)
{
	struct scram_creds c = { .iterations = 4096 };
	struct storage *st = NULL;
	char dir[128];

	snprintf(root, size, "/tmp/test_blocking.XXXXXX");
	assert_non_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "%s/state", root);
	assert_int_equal(storage_open(&st, dir), 0);
	assert_int_equal(storage_account_create(st, "juliet", &c), 0);
	return st;
}

static void store_done(struct storage *st, const char *root)
{
	storage_close(st);
	nftw(root, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static int stored_blocks(struct storage *st, const char *from)
{
	struct jid j;

	assert_int_equal(jid_parse(&j, from, strlen(from)), 0);
	return blocking_store_blocks(st, "juliet", &j);
}

static void test_stored_list_loads_back_and_matches_like_memory(void **state)
{
	struct blocklist *bl = NULL;
	char root[64];
	struct storage *st = store_with_account(root, sizeof(root));

	assert_int_equal(blocking_load_sync(st, "juliet", &bl), 0);
	assert_null(bl);	/* empty: no allocation */
	assert_int_equal(blocking_store_add(st, "juliet", "romeo@montague.net"), 0);
	assert_int_equal(blocking_store_add(st, "juliet", "romeo@montague.net"), 0);
	assert_int_equal(blocking_store_add(st, "juliet", "capulet.com/bot"), 0);
	assert_int_equal(blocking_store_add(st, "juliet", "iago.example"), 0);
	assert_int_equal(blocking_store_add(st, "juliet", "a@b.example/r"), 0);
	assert_int_equal(blocking_load_sync(st, "juliet", &bl), 0);
	assert_int_equal(blocklist_count(bl), 4);
	/* The stored matcher agrees with the in-memory one. */
	static const char *const probes[] = {
		"romeo@montague.net/x", "romeo@montague.net", "montague.net", "capulet.com/bot",
		"x@capulet.com/bot", "capulet.com", "u@iago.example/r", "iago.example",
		"a@b.example/r", "a@b.example/s", "a@b.example", "b.example",
	};
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		assert_int_equal(stored_blocks(st, probes[i]), blocks(bl, probes[i]) ? 1 : 0);
	assert_int_equal(stored_blocks(st, "u@iago.example/r"), 1);
	assert_int_equal(stored_blocks(st, "x@capulet.com/bot"), 0);
	blocklist_free(bl);

	assert_int_equal(blocking_store_remove(st, "juliet", "romeo@montague.net"), 0);
	assert_int_equal(blocking_store_remove(st, "juliet", "nobody@x"), 0);
	assert_int_equal(stored_blocks(st, "romeo@montague.net/x"), 0);
	assert_int_equal(blocking_store_clear(st, "juliet"), 0);
	assert_int_equal(stored_blocks(st, "u@iago.example"), 0);
	assert_int_equal(blocking_load_sync(st, "juliet", &bl), 0);
	assert_null(bl);
	store_done(st, root);
}

static void test_stored_items_belong_to_an_existing_account_only(void **state)
{
	struct blocklist *bl = NULL;
	char root[64];
	struct storage *st = store_with_account(root, sizeof(root));

	/* A late write for an account that does not exist stores nothing. */
	assert_int_equal(blocking_store_add(st, "ghost", "romeo@montague.net"), 0);
	assert_int_equal(blocking_load_sync(st, "ghost", &bl), 0);
	assert_null(bl);
	/* Removing the account removes its list (ON DELETE CASCADE). */
	assert_int_equal(blocking_store_add(st, "juliet", "romeo@montague.net"), 0);
	assert_int_equal(storage_account_delete(st, "juliet"), 0);
	assert_int_equal(blocking_load_sync(st, "juliet", &bl), 0);
	assert_null(bl);
	store_done(st, root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_jid_item_matches_only_that_resource),
		cmocka_unit_test(test_bare_jid_item_matches_any_resource),
		cmocka_unit_test(test_domain_resource_item_matches_only_that_resource),
		cmocka_unit_test(test_domain_item_matches_everything_from_the_domain),
		cmocka_unit_test(test_items_are_compared_in_normalized_form),
		cmocka_unit_test(test_several_items_combine),
		cmocka_unit_test(test_empty_and_null_lists_block_nothing),
		cmocka_unit_test(test_add_is_idempotent_and_remove_reports_presence),
		cmocka_unit_test(test_adversarial_items_are_refused),
		cmocka_unit_test(test_growth_and_removal_keep_every_item_findable),
		cmocka_unit_test(test_iteration_visits_each_item_once),
		cmocka_unit_test(test_stored_list_loads_back_and_matches_like_memory),
		cmocka_unit_test(test_stored_items_belong_to_an_existing_account_only),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
