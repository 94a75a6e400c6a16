/* SPDX-License-Identifier: MIT */
/*
 * XEP-0324 tokens (prov_tokens.c): only the holder of a certificate's
 * private key earns its token, a token counts only for the JID that
 * proved it, challenges are single-use, per requester and expire, and
 * inputs that are no certificate or have no RSA key are refused.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "prov_tokens.h"

struct keycert {
	EVP_PKEY *key;
	unsigned char *der;
	int der_len;
};

/* A self-signed certificate for a new key of the given type. */
static void keycert_new(struct keycert *kc, const char *type)
{
	X509 *x = X509_new();

	kc->key = strcmp(type, "RSA") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
					   : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	assert_non_null(kc->key);
	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, kc->key);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"device", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	assert_true(X509_sign(x, kc->key, EVP_sha256()) > 0);
	kc->der = NULL;
	kc->der_len = i2d_X509(x, &kc->der);
	assert_true(kc->der_len > 0);
	X509_free(x);
}

static void keycert_free(struct keycert *kc)
{
	EVP_PKEY_free(kc->key);
	OPENSSL_free(kc->der);
}

/* Decrypts a challenge with the private key, as the holder does. */
static size_t decrypt(struct keycert *kc, const unsigned char *ct, size_t ct_len,
		      unsigned char *out, size_t size)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, kc->key, NULL);
	size_t n = size;

	assert_non_null(ctx);
	assert_true(EVP_PKEY_decrypt_init(ctx) > 0);
	assert_true(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0);
	assert_true(EVP_PKEY_decrypt(ctx, out, &n, ct, ct_len) > 0);
	EVP_PKEY_CTX_free(ctx);
	return n;
}

static int teardown(void **state)
{
	prov_tokens_reset();
	return 0;
}

static void test_holder_earns_the_token_for_its_jid_only(void **state)
{
	struct keycert kc;
	unsigned char *ct, secret[512];
	char token[PROV_TOKEN_LEN + 1], again[PROV_TOKEN_LEN + 1];
	uint32_t seqnr;
	size_t ct_len, n;

	keycert_new(&kc, "RSA");
	assert_int_equal(prov_token_challenge("dev@x", kc.der, (size_t)kc.der_len, 100, &seqnr,
					      &ct, &ct_len), 0);
	n = decrypt(&kc, ct, ct_len, secret, sizeof(secret));
	free(ct);
	/* Another JID cannot answer dev's challenge. */
	assert_int_equal(prov_token_respond("eve@x", seqnr, secret, n, 101, token), -ENOENT);
	assert_int_equal(prov_token_respond("dev@x", seqnr, secret, n, 101, token), 0);
	assert_int_equal(strlen(token), PROV_TOKEN_LEN);
	assert_true(prov_token_held(token, "dev@x"));
	assert_false(prov_token_held(token, "eve@x"));
	assert_false(prov_token_held(NULL, "dev@x"));
	/* Used up. */
	assert_int_equal(prov_token_respond("dev@x", seqnr, secret, n, 102, token), -ENOENT);
	/* The same certificate gives the same token (rules naming it survive restarts). */
	assert_int_equal(prov_token_challenge("svc@y", kc.der, (size_t)kc.der_len, 100, &seqnr,
					      &ct, &ct_len), 0);
	n = decrypt(&kc, ct, ct_len, secret, sizeof(secret));
	free(ct);
	assert_int_equal(prov_token_respond("svc@y", seqnr, secret, n, 101, again), 0);
	assert_string_equal(token, again);
	assert_true(prov_token_held(token, "svc@y"));
	keycert_free(&kc);
}

static void test_wrong_or_late_answers_earn_nothing(void **state)
{
	unsigned char *ct, secret[512], zero[32] = { 0 };
	char token[PROV_TOKEN_LEN + 1];
	struct keycert kc;
	uint32_t seqnr;
	size_t ct_len, n;

	keycert_new(&kc, "RSA");
	assert_int_equal(prov_token_challenge("dev@x", kc.der, (size_t)kc.der_len, 100, &seqnr,
					      &ct, &ct_len), 0);
	free(ct);
	/* A wrong guess ends the challenge: no second try with it. */
	assert_int_equal(prov_token_respond("dev@x", seqnr, zero, sizeof(zero), 101, token),
			 -EACCES);
	assert_int_equal(prov_token_respond("dev@x", seqnr, zero, sizeof(zero), 101, token),
			 -ENOENT);
	/* Too late. */
	assert_int_equal(prov_token_challenge("dev@x", kc.der, (size_t)kc.der_len, 100, &seqnr,
					      &ct, &ct_len), 0);
	n = decrypt(&kc, ct, ct_len, secret, sizeof(secret));
	free(ct);
	assert_int_equal(prov_token_respond("dev@x", seqnr, secret, n, 100 + PROV_TOKEN_TTL + 1,
					    token), -ENOENT);
	keycert_free(&kc);
}

static void test_not_a_certificate_or_no_rsa_key(void **state)
{
	unsigned char junk[] = "not a certificate", *ct = NULL, *longer;
	struct keycert kc;
	uint32_t seqnr;
	size_t ct_len;

	assert_int_equal(prov_token_challenge("dev@x", junk, sizeof(junk), 1, &seqnr, &ct,
					      &ct_len), -EINVAL);
	assert_null(ct);
	assert_int_equal(prov_token_challenge("dev@x", junk, 0, 1, &seqnr, &ct, &ct_len),
			 -EINVAL);
	keycert_new(&kc, "EC");
	assert_int_equal(prov_token_challenge("dev@x", kc.der, (size_t)kc.der_len, 1, &seqnr,
					      &ct, &ct_len), -EINVAL);
	/* Trailing bytes after the certificate: refused too. */
	keycert_free(&kc);
	keycert_new(&kc, "RSA");
	longer = malloc((size_t)kc.der_len + 1);
	assert_non_null(longer);
	memcpy(longer, kc.der, (size_t)kc.der_len);
	longer[kc.der_len] = 0;
	assert_int_equal(prov_token_challenge("dev@x", longer, (size_t)kc.der_len + 1, 1, &seqnr,
					      &ct, &ct_len), -EINVAL);
	free(longer);
	keycert_free(&kc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_holder_earns_the_token_for_its_jid_only, teardown),
		cmocka_unit_test_teardown(test_wrong_or_late_answers_earn_nothing, teardown),
		cmocka_unit_test_teardown(test_not_a_certificate_or_no_rsa_key, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
