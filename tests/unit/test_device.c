/* SPDX-License-Identifier: MIT */
/*
 * Fleet enrollment: certificate fingerprints, tag lists, the CSV parser
 * (RFC 4180 details, every refusal with its line number) and the import
 * on a real store (created/updated/unchanged, all-or-nothing, owner
 * contacts, certificate conflicts and revocation).
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
#include <sys/stat.h>

#include <cmocka.h>

#include "device.h"
#include "fast.h"
#include "iot_store.h"
#include "log.h"
#include "roster.h"
#include "storage.h"
#include "subscription.h"

#define FP_A "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define FP_B "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99"

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
	strcpy(f->root, "/tmp/test_device.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
	assert_int_equal(storage_open(&f->st, f->dir), 0);
	assert_int_equal(scram_creds_from_password("ownerpw", 1, &c), 0);
	assert_int_equal(storage_account_create(f->st, "owner", &c), 0);
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

/* Parses text; returns the result and leaves why for the caller. */
static int parse(const char *text, struct device_csv *csv, char *why, size_t ws)
{
	return device_csv_parse(text, strlen(text), NULL, csv, why, ws);
}

/* Asserts that text is refused with a message naming `line`. */
static void assert_refused_at(const char *text, const char *line)
{
	struct device_csv csv;
	char why[512] = "";

	assert_int_equal(parse(text, &csv, why, sizeof(why)), -EINVAL);
	if (!strstr(why, line)) {
		print_error("expected '%s' in '%s'\n", line, why);
		fail();
	}
	assert_int_equal(csv.n, 0);
	assert_null(csv.rows);
}

/* ---- fingerprints and tags ---- */

static void test_fingerprint_forms(void **state)
{
	uint8_t a[32], b[32];
	char text[128];

	assert_int_equal(tls_fingerprint_parse(FP_A, a), 0);
	assert_int_equal(a[0], 0x00);
	assert_int_equal(a[31], 0xff);
	assert_int_equal(tls_fingerprint_parse(FP_B, b), 0);
	assert_int_equal(b[0], 0xaa);
	tls_fingerprint_format(b, text);
	assert_string_equal(text, FP_B);
	assert_int_equal(tls_fingerprint_parse("SHA256 Fingerprint=" FP_B, a), 0);
	assert_memory_equal(a, b, 32);
	snprintf(text, sizeof(text), "sha256:AA:bb:%s", FP_B + 6);
	assert_int_equal(tls_fingerprint_parse(text, a), 0);
	assert_memory_equal(a, b, 32);
	/* Wrong lengths, junk, colons missing where openssl puts them. */
	assert_int_equal(tls_fingerprint_parse("sha256:0011", a), -EINVAL);
	assert_int_equal(tls_fingerprint_parse(FP_A "00", a), -EINVAL);
	assert_int_equal(tls_fingerprint_parse("AABBCC", a), -EINVAL);
	assert_int_equal(tls_fingerprint_parse("hunter2", a), -EINVAL);
	assert_int_equal(tls_fingerprint_parse("", a), -EINVAL);
	assert_int_equal(tls_fingerprint_parse(FP_B ":", a), -EINVAL);
}

static void test_tags_sorted_unique(void **state)
{
	char out[DEVICE_TAGS_MAX + 1], why[128];

	assert_int_equal(device_tags_normalize("site=b; kind=x;site=b  zone", 27, out, sizeof(out),
					       why, sizeof(why)), 0);
	assert_string_equal(out, "kind=x;site=b;zone");
	assert_int_equal(device_tags_normalize("", 0, out, sizeof(out), why, sizeof(why)), 0);
	assert_string_equal(out, "");
	assert_int_equal(device_tags_normalize("a\x01", 2, out, sizeof(out), why, sizeof(why)),
			 -EINVAL);
}

/* ---- CSV ---- */

static void test_csv_quotes_header_comments_crlf(void **state)
{
	struct device_csv csv;
	char why[512] = "";
	const char *text =
		"\xef\xbb\xbf" "JID,Credential,Tags,Owner\r\n"
		"# a comment\r\n"
		"\r\n"
		"Dev1@Example.org,\"pass,word \"\"1\"\"\",\"site=a;t\",owner@example.org\r\n"
		"dev2@example.org," FP_A ",,\n"
		"  dev3@example.org  ,\"pw 3\",kind=z\n";

	assert_int_equal(parse(text, &csv, why, sizeof(why)), 0);
	assert_int_equal(csv.n, 3);
	assert_string_equal(csv.rows[0].user, "dev1");
	assert_string_equal(csv.rows[0].domain, "example.org");
	assert_int_equal(csv.rows[0].line, 4);
	assert_string_equal(csv.rows[0].secret, "pass,word \"1\"");
	assert_string_equal(csv.rows[0].tags, "site=a;t");
	assert_string_equal(csv.rows[0].owner, "owner@example.org");
	assert_true(csv.rows[1].has_fingerprint);
	assert_null(csv.rows[1].secret);
	assert_int_equal(csv.rows[1].line, 5);
	assert_string_equal(csv.rows[2].user, "dev3");
	assert_string_equal(csv.rows[2].secret, "pw 3");
	assert_int_equal(csv.rows[2].line, 6);
	device_csv_free(&csv);
}

static void test_csv_refusals_name_the_line(void **state)
{
	assert_refused_at("a@x,pw\nb@x,pw\nnot a jid,pw\n", "line 3:");
	assert_refused_at("a@x,pw\nb@x/res,pw\n", "line 2:");
	assert_refused_at("a@x,pw\nb@y,pw\n", "line 2:");		/* another domain */
	assert_refused_at("a@x,pw\nb@x\n", "line 2:");			/* no credential */
	assert_refused_at("a@x,pw\nb@x,,\n", "line 2:");		/* empty credential */
	assert_refused_at("a@x,pw,,,extra\n", "line 1:");		/* five columns */
	assert_refused_at("a@x,pw\nb@x,\"open\n", "line 2:");		/* unterminated quote */
	assert_refused_at("a@x,pw\nb@x,pw,\"x\ny\"\n", "line 2:");	/* record of two lines */
	assert_refused_at("a@x,pw\nb@x,\"pw\"x\n", "line 2:");		/* text after a quote */
	assert_refused_at("a@x,pw\nb@x,p\"w\n", "line 2:");		/* quote in a field */
	assert_refused_at("a@x,pw\nA@x,pw2\n", "already on line 1");	/* the same JID */
	assert_refused_at("a@x," FP_A "\nb@x," FP_A "\n", "line 2:");
	assert_refused_at("a@x,pw,,a@x\n", "line 1:");			/* owns itself */
	assert_refused_at("a@x,pw,,not an owner\n", "line 1:");
	assert_refused_at("a@x,pw,tag\x01\n", "line 1:");
	assert_refused_at("a@x,pw\nb@x,\xc2\xad\n", "line 2:");		/* SASLprep maps it away */
	assert_refused_at("# nothing\n\n", "no device rows");
}

static void test_csv_domain_is_checked(void **state)
{
	struct device_csv csv;
	char why[256];

	assert_int_equal(device_csv_parse("a@x,pw\n", 7, "y", &csv, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "line 1"));
	assert_int_equal(device_csv_parse("a@y,pw\n", 7, "y", &csv, why, sizeof(why)), 0);
	device_csv_free(&csv);
}

/* ---- import ---- */

static int import(struct fixture *f, const char *text, struct device_import_stats *s,
		  char *why, size_t ws)
{
	struct device_csv csv;
	int ret = device_csv_parse(text, strlen(text), "x", &csv, why, ws);

	if (ret < 0)
		return ret;
	ret = device_import(f->st, &csv, 1, s, why, ws);
	device_csv_free(&csv);
	return ret;
}

static void assert_sub(struct fixture *f, const char *user, const char *jid, uint8_t want)
{
	uint8_t state;
	bool approved, exists;

	assert_int_equal(roster_db_state(f->st, user, jid, &state, &approved, &exists), 0);
	assert_int_equal(state & (SUB_TO | SUB_FROM), want);
}

static void test_import_created_updated_unchanged(void **state)
{
	struct fixture *f = *state;
	struct device_import_stats s;
	struct scram_creds c;
	char why[512] = "", tags[128], owner[128], jid[128];
	const char *v1 = "d1@x,pw1,\"b;a\",owner@x\nd2@x," FP_A ",,\n";
	const char *v2 = "d1@x,pw1,a;b,\nd2@x," FP_A ",,\nd3@x,pw3,,\n";

	assert_int_equal(import(f, v1, &s, why, sizeof(why)), 0);
	assert_int_equal(s.created, 2);
	assert_int_equal(storage_account_get(f->st, "d1", &c), 0);
	assert_true(scram_verify_password(&c, "pw1"));
	assert_int_equal(device_db_get(f->st, "d1", jid, sizeof(jid), tags, sizeof(tags), owner,
				       sizeof(owner)), 0);
	assert_string_equal(jid, "d1@x");
	assert_string_equal(tags, "a;b");
	assert_string_equal(owner, "owner@x");
	assert_sub(f, "d1", "owner@x", SUB_TO | SUB_FROM);
	assert_sub(f, "owner", "d1@x", SUB_TO | SUB_FROM);
	/* Again: nothing to do. */
	assert_int_equal(import(f, v1, &s, why, sizeof(why)), 0);
	assert_int_equal(s.created + s.updated, 0);
	assert_int_equal(s.unchanged, 2);
	/* d1 loses its owner (both subscriptions end), d3 is new, d2 stays. */
	assert_int_equal(import(f, v2, &s, why, sizeof(why)), 0);
	assert_int_equal(s.created, 1);
	assert_int_equal(s.updated, 1);
	assert_int_equal(s.unchanged, 1);
	assert_sub(f, "d1", "owner@x", 0);
	assert_sub(f, "owner", "d1@x", 0);
	/* A new secret replaces the old one. */
	assert_int_equal(import(f, "d3@x,other,,\n", &s, why, sizeof(why)), 0);
	assert_int_equal(s.updated, 1);
	assert_int_equal(storage_account_get(f->st, "d3", &c), 0);
	assert_false(scram_verify_password(&c, "pw3"));
	assert_true(scram_verify_password(&c, "other"));
}

static void test_import_is_all_or_nothing(void **state)
{
	struct fixture *f = *state;
	struct device_import_stats s;
	struct scram_creds c;
	char why[512] = "";

	/* The last row's owner is no account: the first rows are undone too. */
	assert_int_equal(import(f, "d1@x,pw1,,owner@x\nd2@x,pw2,,\nd3@x,pw3,,ghost@x\n", &s, why,
				sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "line 3"));
	assert_int_equal(storage_account_get(f->st, "d1", &c), -ENOENT);
	assert_int_equal(storage_account_get(f->st, "d2", &c), -ENOENT);
	assert_sub(f, "owner", "d1@x", 0);
	/* An owner on another server needs no account here. */
	assert_int_equal(import(f, "d1@x,pw1,,someone@elsewhere\n", &s, why, sizeof(why)), 0);
	assert_sub(f, "d1", "someone@elsewhere", SUB_TO | SUB_FROM);
}

static void test_import_certificate_conflicts(void **state)
{
	struct fixture *f = *state;
	struct device_import_stats s;
	char why[512] = "", user[64];
	uint8_t fp[32], fpb[32];
	bool revoked;

	assert_int_equal(import(f, "d1@x," FP_A ",,\n", &s, why, sizeof(why)), 0);
	/* The same certificate for another device. */
	assert_int_equal(import(f, "d2@x,pw,,\nd9@x," FP_A ",,\n", &s, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "line 2"));
	assert_non_null(strstr(why, "d1"));
	/* A new certificate replaces the old one. */
	assert_int_equal(import(f, "d1@x," FP_B ",,\n", &s, why, sizeof(why)), 0);
	assert_int_equal(s.updated, 1);
	tls_fingerprint_parse(FP_A, fp);
	tls_fingerprint_parse(FP_B, fpb);
	assert_int_equal(device_db_cert_find(f->st, fp, user, sizeof(user), &revoked), -ENOENT);
	assert_int_equal(device_db_cert_find(f->st, fpb, user, sizeof(user), &revoked), 0);
	assert_string_equal(user, "d1");
	/* Revoked: refused at login and never enrolled again. */
	assert_int_equal(device_db_cert_revoke(f->st, fpb), 0);
	assert_int_equal(device_db_cert_find(f->st, fpb, user, sizeof(user), &revoked), 0);
	assert_true(revoked);
	assert_int_equal(import(f, "d1@x," FP_B ",,\n", &s, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "revoked"));
	/* Another certificate for it: the revoked one stays revoked. */
	assert_int_equal(import(f, "d1@x," FP_A ",,\n", &s, why, sizeof(why)), 0);
	assert_int_equal(device_db_cert_find(f->st, fpb, user, sizeof(user), &revoked), 0);
	assert_true(revoked);
	assert_int_equal(device_db_cert_revoke(f->st, (uint8_t[32]){ 0 }), -ENOENT);
}

/*
 * An account that exists but was never enrolled (registered in band
 * before the import, or a person's) is not adopted: neither a secret nor
 * a certificate, nor the owner's friendship.
 */
static void test_import_refuses_an_account_not_enrolled(void **state)
{
	struct fixture *f = *state;
	struct device_import_stats s;
	struct scram_creds c;
	char why[512] = "", user[64];
	uint8_t fp[32];
	bool revoked;

	assert_int_equal(scram_creds_from_password("squatter", 1, &c), 0);
	assert_int_equal(storage_account_create(f->st, "d1", &c), 0);
	scram_creds_wipe(&c);
	assert_int_equal(import(f, "d0@x,pw0,,\nd1@x,pw1,,owner@x\n", &s, why, sizeof(why)),
			 -EINVAL);
	assert_non_null(strstr(why, "line 2"));
	assert_non_null(strstr(why, "not enrolled"));
	assert_int_equal(storage_account_get(f->st, "d1", &c), 0);
	assert_true(scram_verify_password(&c, "squatter"));
	scram_creds_wipe(&c);
	assert_int_equal(storage_account_get(f->st, "d0", &c), -ENOENT);
	assert_sub(f, "owner", "d1@x", 0);
	/* A certificate for a person's account: refused, not enrolled. */
	assert_int_equal(import(f, "owner@x," FP_A ",,\n", &s, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "not enrolled"));
	tls_fingerprint_parse(FP_A, fp);
	assert_int_equal(device_db_cert_find(f->st, fp, user, sizeof(user), &revoked), -ENOENT);
}

/* Puts a FAST token row for user; returns how many rows user's client has. */
static size_t fast_rows(struct fixture *f, const char *user, bool put)
{
	struct fast_token_row rows[2], row = { .is_new = false, .mech = "HT-SHA-256-NONE",
					       .expires_at = INT64_MAX };
	size_t n = 0;

	if (put)
		assert_int_equal(fast_db_put(f->st, user, "ua", &row), 0);
	assert_int_equal(fast_db_get(f->st, user, "ua", rows, &n), 0);
	return n;
}

/* New credentials for a device (a new secret or certificate) void its FAST tokens. */
static void test_reenrollment_voids_fast_tokens(void **state)
{
	struct fixture *f = *state;
	struct device_import_stats s;
	char why[512] = "";

	assert_int_equal(import(f, "d1@x,pw1,,\nd2@x," FP_A ",,\n", &s, why, sizeof(why)), 0);
	assert_int_equal(fast_rows(f, "d1", true), 1);
	assert_int_equal(fast_rows(f, "d2", true), 1);
	/* The same file again: the tokens stay. */
	assert_int_equal(import(f, "d1@x,pw1,,\nd2@x," FP_A ",,\n", &s, why, sizeof(why)), 0);
	assert_int_equal(fast_rows(f, "d1", false), 1);
	assert_int_equal(fast_rows(f, "d2", false), 1);
	/* A tag change is no credential change either. */
	assert_int_equal(import(f, "d1@x,pw1,t,\n", &s, why, sizeof(why)), 0);
	assert_int_equal(fast_rows(f, "d1", false), 1);
	/* New secret, new certificate: gone. */
	assert_int_equal(import(f, "d1@x,pw2,t,\nd2@x," FP_B ",,\n", &s, why, sizeof(why)), 0);
	assert_int_equal(fast_rows(f, "d1", false), 0);
	assert_int_equal(fast_rows(f, "d2", false), 0);
}

static int count_rule(void *arg, const char *thing, struct iot_rule *r)
{
	(*(int *)arg)++;
	free(r);
	return 0;
}

/* The rules of thing as the store has them (the owner found too). */
static int thing_rules(struct fixture *f, const char *thing)
{
	char owner[128];
	bool cc;
	int n = 0;

	assert_int_equal(iot_db_thing_load(f->st, thing, owner, sizeof(owner), &cc, count_rule,
					   &n), 0);
	return n;
}

/* A new owner by enrollment does not inherit the old owner's provisioning rules. */
static void test_owner_change_drops_rules(void **state)
{
	struct fixture *f = *state;
	struct device_import_stats s;
	struct scram_creds c;
	struct iot_rule *r;
	char why[512] = "";

	assert_int_equal(scram_creds_from_password("pw", 1, &c), 0);
	assert_int_equal(storage_account_create(f->st, "other", &c), 0);
	scram_creds_wipe(&c);
	assert_int_equal(import(f, "d1@x,pw1,,owner@x\n", &s, why, sizeof(why)), 0);
	r = iot_rule_new(IOT_RULE_READ, IOT_RANGE_ALL, true, NULL, NULL, NULL);
	assert_non_null(r);
	assert_int_equal(iot_db_rule_put(f->st, "d1@x", "d1", r, 16, 1), 0);
	free(r);
	assert_int_equal(thing_rules(f, "d1@x"), 1);
	/* Same owner (a tag changes): the rules stay. */
	assert_int_equal(import(f, "d1@x,pw1,t,owner@x\n", &s, why, sizeof(why)), 0);
	assert_int_equal(thing_rules(f, "d1@x"), 1);
	assert_int_equal(import(f, "d1@x,pw1,t,other@x\n", &s, why, sizeof(why)), 0);
	assert_int_equal(thing_rules(f, "d1@x"), 0);
}

static int count_rows(void *arg, const struct device_row *r)
{
	(*(int *)arg)++;
	assert_non_null(strchr(r->jid, '@'));
	return 0;
}

static void test_device_list_and_cascade(void **state)
{
	struct fixture *f = *state;
	struct device_import_stats s;
	char why[512] = "";
	int n = 0;

	assert_int_equal(import(f, "d1@x,pw,,\nd2@x," FP_A ",,\n", &s, why, sizeof(why)), 0);
	assert_int_equal(device_db_list(f->st, count_rows, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(storage_account_delete(f->st, "d2"), 0);
	n = 0;
	assert_int_equal(device_db_list(f->st, count_rows, &n), 0);
	assert_int_equal(n, 1);
	/* The fingerprint went with the account: it can be enrolled again. */
	assert_int_equal(import(f, "d3@x," FP_A ",,\n", &s, why, sizeof(why)), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fingerprint_forms),
		cmocka_unit_test(test_tags_sorted_unique),
		cmocka_unit_test(test_csv_quotes_header_comments_crlf),
		cmocka_unit_test(test_csv_refusals_name_the_line),
		cmocka_unit_test(test_csv_domain_is_checked),
		cmocka_unit_test_setup_teardown(test_import_created_updated_unchanged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_is_all_or_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_certificate_conflicts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_device_list_and_cascade, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_refuses_an_account_not_enrolled, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_reenrollment_voids_fast_tokens, setup, teardown),
		cmocka_unit_test_setup_teardown(test_owner_change_drops_rules, setup, teardown),
	};

	log_threshold = LOG_LVL_ERROR;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
