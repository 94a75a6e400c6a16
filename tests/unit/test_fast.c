/* SPDX-License-Identifier: MIT */
/*
 * FAST (XEP-0484) and the HT mechanisms: the pure parts (mechanisms,
 * message parsing, proofs, tokens) and a login's storage-thread logic on
 * a real store in a temporary directory (slots, rotation, invalidation,
 * counters, expiry, mechanism binding). Also the Bind 2 resource and the
 * SASL EXTERNAL decision table.
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
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "bind2.h"
#include "fast.h"
#include "log.h"
#include "sasl_external.h"
#include "storage.h"

#define NOW	1700000000

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
	strcpy(f->root, "/tmp/test_fast.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
	assert_int_equal(storage_open(&f->st, f->dir), 0);
	assert_int_equal(scram_creds_from_password("pw", 1, &c), 0);
	assert_int_equal(storage_account_create(f->st, "dev", &c), 0);
	assert_int_equal(storage_account_create(f->st, "other", &c), 0);
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

/* What a client sends: HMAC keyed with the token text itself (the draft's definition). */
static void client_proof(const char *token, const char *label, const uint8_t *cb, size_t cb_len,
			 uint8_t out[32])
{
	uint8_t msg[128];
	unsigned int n = 32;

	memcpy(msg, label, strlen(label));
	if (cb_len)	/* memcpy from NULL is undefined even for 0 bytes (UBSan) */
		memcpy(msg + strlen(label), cb, cb_len);
	assert_non_null(HMAC(EVP_sha256(), token, (int)strlen(token), msg, strlen(label) + cb_len,
			     out, &n));
}

/* A login request for `token` by the "ua1" client of "dev" with HT-SHA-256-NONE. */
static void login_for(struct fast_login *fl, const char *token, int64_t now)
{
	memset(fl, 0, sizeof(*fl));
	strcpy(fl->user, "dev");
	strcpy(fl->client, "ua1");
	strcpy(fl->mech, "HT-SHA-256-NONE");
	client_proof(token, "Initiator", NULL, 0, fl->mac);
	fl->now = now;
	fl->lifetime = 3600;
	fl->rotate_after = 86400;
}

static void issue(struct fixture *f, const char *mech, char token[FAST_TOKEN_LEN + 1])
{
	int64_t exp = 0;

	assert_int_equal(fast_issue_sync(f->st, "dev", "ua1", mech, NOW, 3600, token, &exp), 0);
	assert_int_equal(exp, NOW + 3600);
}

/* ---- pure parts ---- */

static void test_mechanisms_offered_by_channel(void **state)
{
	const char *names[4];

	assert_int_equal(fast_offer(true, true, names, 4), 3);
	assert_string_equal(names[0], "HT-SHA-256-EXPR");
	assert_int_equal(fast_offer(true, false, names, 4), 2);
	assert_string_equal(names[0], "HT-SHA-256-ENDP");
	assert_int_equal(fast_offer(false, false, names, 4), 1);
	assert_string_equal(names[0], "HT-SHA-256-NONE");
	assert_null(fast_mech_find("HT-SHA-256-UNIQ"));
	assert_null(fast_mech_find("SCRAM-SHA-256"));
	assert_int_equal(fast_mech_find("HT-SHA-256-ENDP")->cb, FAST_CB_ENDP);
}

static void test_ht_message_parsing(void **state)
{
	char user[32];
	const uint8_t *mac;
	size_t len;

	assert_int_equal(fast_ht_parse("bob\0XYZ", 7, user, sizeof(user), &mac, &len), 0);
	assert_string_equal(user, "bob");
	assert_int_equal(len, 3);
	assert_memory_equal(mac, "XYZ", 3);
	/* No NUL, no authcid, no proof, an authcid longer than the buffer. */
	assert_int_equal(fast_ht_parse("bobXYZ", 6, user, sizeof(user), &mac, &len), -EINVAL);
	assert_int_equal(fast_ht_parse("\0XYZ", 4, user, sizeof(user), &mac, &len), -EINVAL);
	assert_int_equal(fast_ht_parse("bob\0", 4, user, sizeof(user), &mac, &len), -EINVAL);
	assert_int_equal(fast_ht_parse("bob\0X", 5, user, 3, &mac, &len), -EINVAL);
	assert_int_equal(fast_ht_parse(NULL, 0, user, sizeof(user), &mac, &len), -EINVAL);
}

/* The stored SHA-256 of a long token is what HMAC keys with (RFC 2104 section 2). */
static void test_stored_key_gives_the_clients_hmac(void **state)
{
	char token[FAST_TOKEN_LEN + 1], token2[FAST_TOKEN_LEN + 1];
	uint8_t key[32], key2[32], ours[32], theirs[32];
	const uint8_t cb[32] = { 1, 2, 3 };

	assert_int_equal(fast_token_new(token, key), 0);
	assert_int_equal(strlen(token), FAST_TOKEN_LEN);
	assert_true(FAST_TOKEN_LEN > 64);
	for (size_t i = 0; i < FAST_TOKEN_LEN; i++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				       "0123456789-_", token[i]));
	fast_ht_hmac(key, "Initiator", cb, sizeof(cb), ours);
	client_proof(token, "Initiator", cb, sizeof(cb), theirs);
	assert_memory_equal(ours, theirs, 32);
	fast_ht_hmac(key, "Responder", NULL, 0, ours);
	client_proof(token, "Responder", NULL, 0, theirs);
	assert_memory_equal(ours, theirs, 32);
	fast_token_key(token, strlen(token), key2);
	assert_memory_equal(key, key2, 32);
	assert_int_equal(fast_token_new(token2, key2), 0);
	assert_string_not_equal(token, token2);
}

static void test_datetime(void **state)
{
	char buf[32];

	fast_datetime(0, buf, sizeof(buf));
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
	fast_datetime(1700000000, buf, sizeof(buf));
	assert_string_equal(buf, "2023-11-14T22:13:20Z");
}

/* ---- logins on the store ---- */

static void test_login_with_issued_token(void **state)
{
	struct fixture *f = *state;
	char token[FAST_TOKEN_LEN + 1];
	struct fast_login fl;
	uint8_t want[32];

	issue(f, "HT-SHA-256-NONE", token);
	login_for(&fl, token, NOW + 10);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
	client_proof(token, "Responder", NULL, 0, want);
	assert_memory_equal(fl.responder, want, 32);
	assert_false(fl.issued);	/* not due for rotation */
}

static void test_wrong_proof_user_client_or_mechanism_fails(void **state)
{
	struct fixture *f = *state;
	char token[FAST_TOKEN_LEN + 1];
	struct fast_login fl;

	issue(f, "HT-SHA-256-NONE", token);
	login_for(&fl, token, NOW);
	fl.mac[0] ^= 1;
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
	login_for(&fl, token, NOW);
	strcpy(fl.user, "other");
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
	login_for(&fl, token, NOW);
	strcpy(fl.client, "ua2");
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
	/* XEP-0484 section 3.3: bound to the mechanism it was requested for. */
	login_for(&fl, token, NOW);
	strcpy(fl.mech, "HT-SHA-256-ENDP");
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
	/* Still good afterwards. */
	login_for(&fl, token, NOW);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
}

static void test_channel_binding_enters_the_proof(void **state)
{
	struct fixture *f = *state;
	char token[FAST_TOKEN_LEN + 1];
	struct fast_login fl;
	const uint8_t cb[32] = { 9, 9, 9 };

	issue(f, "HT-SHA-256-EXPR", token);
	login_for(&fl, token, NOW);
	strcpy(fl.mech, "HT-SHA-256-EXPR");
	memcpy(fl.cb, cb, sizeof(cb));
	fl.cb_len = sizeof(cb);
	/* A proof over other binding data (another connection) fails. */
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
	client_proof(token, "Initiator", cb, sizeof(cb), fl.mac);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
}

static void test_expired_token_is_refused_and_deleted(void **state)
{
	struct fixture *f = *state;
	char token[FAST_TOKEN_LEN + 1];
	struct fast_token_row rows[2];
	struct fast_login fl;
	size_t n;

	issue(f, "HT-SHA-256-NONE", token);
	login_for(&fl, token, NOW + 3600);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "credentials-expired");
	assert_int_equal(fast_db_get(f->st, "dev", "ua1", rows, &n), 0);
	assert_int_equal(n, 0);
}

static void test_count_must_grow(void **state)
{
	struct fixture *f = *state;
	char token[FAST_TOKEN_LEN + 1];
	struct fast_login fl;

	issue(f, "HT-SHA-256-NONE", token);
	login_for(&fl, token, NOW);
	fl.has_count = true;
	fl.count = 7;
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
	/* The same count again is a replay; a lower one too. */
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
	fl.count = 3;
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
	fl.count = 8;
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
}

static void test_rotation_and_slots(void **state)
{
	struct fixture *f = *state;
	char t1[FAST_TOKEN_LEN + 1], t2[FAST_TOKEN_LEN + 1];
	struct fast_token_row rows[2];
	struct fast_login fl;
	size_t n;

	issue(f, "HT-SHA-256-NONE", t1);
	/* First use of the 'new' token: it becomes 'current'. */
	login_for(&fl, t1, NOW);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_int_equal(fast_db_get(f->st, "dev", "ua1", rows, &n), 0);
	assert_int_equal(n, 1);
	assert_false(rows[0].is_new);
	/* Old enough: its use brings a successor in the 'new' slot. */
	login_for(&fl, t1, NOW + 100);
	fl.rotate_after = 50;
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
	assert_true(fl.issued);
	assert_int_equal(fl.expires, NOW + 100 + 3600);
	strcpy(t2, fl.token);
	assert_int_equal(fast_db_get(f->st, "dev", "ua1", rows, &n), 0);
	assert_int_equal(n, 2);
	assert_true(rows[0].is_new);
	/* The old one works until the new one is used ... */
	login_for(&fl, t1, NOW + 101);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
	login_for(&fl, t2, NOW + 102);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
	/* ... which ends it. */
	login_for(&fl, t1, NOW + 103);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
}

static void test_invalidate_and_request(void **state)
{
	struct fixture *f = *state;
	char token[FAST_TOKEN_LEN + 1];
	struct fast_token_row rows[2];
	struct fast_login fl;
	size_t n;

	issue(f, "HT-SHA-256-NONE", token);
	login_for(&fl, token, NOW + 100);
	fl.invalidate = true;
	fl.rotate_after = 0;	/* due, but invalidation gives no new token */
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_null(fl.condition);
	assert_false(fl.issued);
	assert_int_equal(fast_db_get(f->st, "dev", "ua1", rows, &n), 0);
	assert_int_equal(n, 0);
	login_for(&fl, token, NOW + 101);
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_string_equal(fl.condition, "not-authorized");
	/* Invalidate and request: the old token goes, a new one for the asked mechanism comes. */
	issue(f, "HT-SHA-256-NONE", token);
	login_for(&fl, token, NOW + 102);
	fl.invalidate = true;
	strcpy(fl.request_mech, "HT-SHA-256-ENDP");
	assert_int_equal(fast_login_sync(f->st, &fl), 0);
	assert_true(fl.issued);
	assert_int_equal(fast_db_get(f->st, "dev", "ua1", rows, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(rows[0].mech, "HT-SHA-256-ENDP");
}

static void test_tokens_go_with_the_account(void **state)
{
	struct fixture *f = *state;
	char token[FAST_TOKEN_LEN + 1];
	struct fast_token_row rows[2];
	size_t n;

	issue(f, "HT-SHA-256-NONE", token);
	assert_int_equal(storage_account_delete(f->st, "dev"), 0);
	assert_int_equal(fast_db_get(f->st, "dev", "ua1", rows, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(fast_issue_sync(f->st, "dev", "ua1", "HT-SHA-1-NONE", NOW, 60, token,
					 &(int64_t){ 0 }), -EINVAL);
}

/* ---- Bind 2 resources ---- */

static void test_bind2_resource_stable_per_client(void **state)
{
	const uint8_t secret[32] = { 7 };
	char a[128], b[128], c[128], d[128];

	assert_int_equal(bind2_resource(secret, "dev", "ua-1", "Tag", a, sizeof(a)), 0);
	assert_int_equal(bind2_resource(secret, "dev", "ua-1", "Tag", b, sizeof(b)), 0);
	assert_string_equal(a, b);
	assert_int_equal(strncmp(a, "Tag/", 4), 0);
	assert_int_equal(strlen(a), 4 + BIND2_ID_HEX);
	/* Another client or account: another resource; no client id: random. */
	assert_int_equal(bind2_resource(secret, "dev", "ua-2", "Tag", c, sizeof(c)), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(bind2_resource(secret, "other", "ua-1", "Tag", c, sizeof(c)), 0);
	assert_string_not_equal(a, c);
	assert_int_equal(bind2_resource(secret, "dev", "", NULL, c, sizeof(c)), 0);
	assert_int_equal(bind2_resource(secret, "dev", "", NULL, d, sizeof(d)), 0);
	assert_int_equal(strlen(c), BIND2_ID_HEX);
	assert_string_not_equal(c, d);
	/* The user-agent id cannot be read out of the resource. */
	assert_null(strstr(a, "ua-1"));
}

/* ---- SASL EXTERNAL decisions (XEP-0178 section 3) ---- */

static const char *decide(const char *enrolled, bool revoked, const char *c1, const char *c2,
			  bool has_authz, const char *authz, const char **user)
{
	struct sasl_external_facts f = {
		.enrolled = enrolled, .revoked = revoked, .has_authz = has_authz, .authz = authz,
	};

	if (c1)
		f.cands[f.ncands++] = c1;
	if (c2)
		f.cands[f.ncands++] = c2;
	return sasl_external_decide(&f, user);
}

static void test_external_decisions(void **state)
{
	const char *u;

	/* One JID, no authzid: that account. */
	assert_null(decide(NULL, false, "a", NULL, false, NULL, &u));
	assert_string_equal(u, "a");
	/* No account the certificate names: unknown certificate. */
	assert_string_equal(decide(NULL, false, NULL, NULL, false, NULL, &u), "not-authorized");
	assert_string_equal(decide(NULL, false, NULL, NULL, true, "a", &u), "not-authorized");
	/* Several: the authzid chooses; without one the server cannot. */
	assert_string_equal(decide(NULL, false, "a", "b", false, NULL, &u), "invalid-authzid");
	assert_null(decide(NULL, false, "a", "b", true, "b", &u));
	assert_string_equal(u, "b");
	assert_string_equal(decide(NULL, false, "a", "b", true, "c", &u), "invalid-authzid");
	/* An authzid of another domain (authz NULL). */
	assert_string_equal(decide(NULL, false, "a", NULL, true, NULL, &u), "invalid-authzid");
	/* An enrolled fingerprint wins; revoked refuses whatever the JIDs say. */
	assert_null(decide("dev", false, "a", NULL, false, NULL, &u));
	assert_string_equal(u, "dev");
	assert_string_equal(decide("dev", false, NULL, NULL, true, "a", &u), "invalid-authzid");
	assert_string_equal(decide("dev", true, "a", NULL, false, NULL, &u), "not-authorized");
	assert_null(u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mechanisms_offered_by_channel),
		cmocka_unit_test(test_ht_message_parsing),
		cmocka_unit_test(test_stored_key_gives_the_clients_hmac),
		cmocka_unit_test(test_datetime),
		cmocka_unit_test_setup_teardown(test_login_with_issued_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_proof_user_client_or_mechanism_fails, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_channel_binding_enters_the_proof, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expired_token_is_refused_and_deleted, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_count_must_grow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_and_slots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalidate_and_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tokens_go_with_the_account, setup, teardown),
		cmocka_unit_test(test_bind2_resource_stable_per_client),
		cmocka_unit_test(test_external_decisions),
	};

	log_threshold = LOG_LVL_ERROR;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
