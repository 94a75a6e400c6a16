/* SPDX-License-Identifier: MIT */
/*
 * SCRAM credentials: SASLprep of passwords, key derivation, constant-time
 * password checks for PLAIN, and decoy credentials for unknown users.
 *
 * Key derivation (RFC 5802 section 3):
 *   SaltedPassword = PBKDF2-HMAC-H(SASLprep(password), salt, i)
 *   ClientKey      = HMAC(SaltedPassword, "Client Key")
 *   StoredKey      = H(ClientKey)
 *   ServerKey      = HMAC(SaltedPassword, "Server Key")
 * Every intermediate secret lives on the stack and is wiped before return.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stringprep.h>

#include "scram.h"

#define SCRAM_HASH_MAX_LEN	SCRAM_SHA256_LEN

static const EVP_MD *scram_md(enum scram_hash hash)
{
	return hash == SCRAM_HASH_SHA1 ? EVP_sha1() : EVP_sha256();
}

static size_t scram_hash_len(enum scram_hash hash)
{
	return hash == SCRAM_HASH_SHA1 ? SCRAM_SHA1_LEN : SCRAM_SHA256_LEN;
}

/*
 * Printable ASCII (U+0020..U+007E) is left unchanged by SASLprep: nothing
 * in that range is mapped, normalized differently or prohibited. Most
 * passwords are ASCII, and this spares libidn's UCS-4 round trip.
 */
static bool scram_is_printable_ascii(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	}
	return true;
}

int scram_saslprep(const char *password, char *out, size_t out_size)
{
	size_t len = strlen(password);
	char *prep = NULL;
	size_t prep_len;
	int rc;

	if (len == 0 || len > SCRAM_PASSWORD_MAX)
		return -EINVAL;
	if (scram_is_printable_ascii(password, len)) {
		if (len >= out_size)
			return -EINVAL;
		memcpy(out, password, len + 1);
		return 0;
	}
	/*
	 * Passwords are stored strings in RFC 4013 terms, so unassigned code
	 * points are refused: a password that could be set can always be
	 * checked again later with the same result.
	 */
	rc = stringprep_profile(password, &prep, "SASLprep", STRINGPREP_NO_UNASSIGNED);
	if (rc != STRINGPREP_OK || prep == NULL)
		return -EINVAL;
	prep_len = strlen(prep);
	rc = 0;
	if (prep_len == 0 || prep_len >= out_size)
		rc = -EINVAL;
	else
		memcpy(out, prep, prep_len + 1);
	OPENSSL_cleanse(prep, prep_len);
	free(prep);
	return rc;
}

/* Keys from an already prepared password. 0 or -EIO. */
static int scram_keys_prepared(enum scram_hash hash, const char *prep,
			       const uint8_t *salt, size_t salt_len,
			       uint32_t iterations, uint8_t *stored_key,
			       uint8_t *server_key)
{
	const EVP_MD *md = scram_md(hash);
	size_t hlen = scram_hash_len(hash);
	uint8_t salted[SCRAM_HASH_MAX_LEN];
	uint8_t client_key[SCRAM_HASH_MAX_LEN];
	unsigned int mlen;
	int rc = -EIO;

	if (!PKCS5_PBKDF2_HMAC(prep, (int)strlen(prep), salt, (int)salt_len,
			       (int)iterations, md, (int)hlen, salted))
		goto out;
	if (!HMAC(md, salted, (int)hlen, (const unsigned char *)"Client Key", 10,
		  client_key, &mlen))
		goto out;
	if (!EVP_Digest(client_key, hlen, stored_key, NULL, md, NULL))
		goto out;
	if (!HMAC(md, salted, (int)hlen, (const unsigned char *)"Server Key", 10,
		  server_key, &mlen))
		goto out;
	rc = 0;
out:
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	return rc;
}

int scram_keys_from_password(enum scram_hash hash, const char *password,
			     const uint8_t *salt, size_t salt_len,
			     uint32_t iterations, uint8_t *stored_key,
			     uint8_t *server_key)
{
	char prep[SCRAM_PASSWORD_MAX * 3 + 1];	/* NFKC may grow it */
	int rc;

	if (iterations < 1 || iterations > SCRAM_ITERATIONS_MAX)
		return -EINVAL;
	rc = scram_saslprep(password, prep, sizeof(prep));
	if (rc == 0)
		rc = scram_keys_prepared(hash, prep, salt, salt_len, iterations,
					 stored_key, server_key);
	OPENSSL_cleanse(prep, sizeof(prep));
	return rc;
}

int scram_creds_from_password_salt(const char *password,
				   const uint8_t salt[SCRAM_SALT_LEN],
				   uint32_t iterations, struct scram_creds *out)
{
	char prep[SCRAM_PASSWORD_MAX * 3 + 1];
	int rc;

	if (iterations == 0)
		iterations = SCRAM_ITERATIONS;
	if (iterations > SCRAM_ITERATIONS_MAX)
		return -EINVAL;
	rc = scram_saslprep(password, prep, sizeof(prep));
	if (rc < 0)
		goto out;
	memset(out, 0, sizeof(*out));
	out->iterations = iterations;
	memcpy(out->salt, salt, SCRAM_SALT_LEN);
	rc = scram_keys_prepared(SCRAM_HASH_SHA1, prep, salt, SCRAM_SALT_LEN,
				 iterations, out->sha1_stored_key, out->sha1_server_key);
	if (rc == 0)
		rc = scram_keys_prepared(SCRAM_HASH_SHA256, prep, salt, SCRAM_SALT_LEN,
					 iterations, out->sha256_stored_key,
					 out->sha256_server_key);
	if (rc < 0)
		scram_creds_wipe(out);
out:
	OPENSSL_cleanse(prep, sizeof(prep));
	return rc;
}

int scram_creds_from_password(const char *password, uint32_t iterations,
			      struct scram_creds *out)
{
	uint8_t salt[SCRAM_SALT_LEN];

	if (RAND_bytes(salt, sizeof(salt)) != 1)
		return -EIO;
	return scram_creds_from_password_salt(password, salt, iterations, out);
}

bool scram_verify_password(const struct scram_creds *c, const char *password)
{
	uint8_t stored[SCRAM_SHA256_LEN];
	uint8_t server[SCRAM_SHA256_LEN];
	bool ok = false;

	if (scram_keys_from_password(SCRAM_HASH_SHA256, password, c->salt,
				     SCRAM_SALT_LEN, c->iterations, stored, server) == 0)
		ok = CRYPTO_memcmp(stored, c->sha256_stored_key, sizeof(stored)) == 0;
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(server, sizeof(server));
	return ok;
}

/*
 * One decoy field: SHA-256(key || label), truncated to len, where key =
 * HMAC-SHA256(secret, username) is computed once per name. A digest per
 * field instead of an HMAC keeps the decoy at about 2 us, close to the
 * cost of copying real credentials, so its time tells nothing either.
 */
static void scram_decoy_field(const uint8_t key[SCRAM_SHA256_LEN], const char *label,
			      uint8_t *out, size_t len)
{
	uint8_t buf[SCRAM_SHA256_LEN + 16];
	uint8_t md[SCRAM_SHA256_LEN];
	size_t label_len = strlen(label);

	memcpy(buf, key, SCRAM_SHA256_LEN);
	memcpy(buf + SCRAM_SHA256_LEN, label, label_len);
	if (!EVP_Digest(buf, SCRAM_SHA256_LEN + label_len, md, NULL, EVP_sha256(), NULL) &&
	    RAND_bytes(md, sizeof(md)) != 1)
		memset(md, 0x5a, sizeof(md));
	memcpy(out, md, len);
	OPENSSL_cleanse(buf, sizeof(buf));
	OPENSSL_cleanse(md, sizeof(md));
}

void scram_decoy_creds(const uint8_t secret[32], const char *username,
		       struct scram_creds *out)
{
	uint8_t key[SCRAM_SHA256_LEN];
	unsigned int mlen;

	/*
	 * Should OpenSSL fail (out of memory), a random key still fails the
	 * login; the decoy is merely not stable for this one attempt.
	 */
	if (!HMAC(EVP_sha256(), secret, 32, (const unsigned char *)username,
		  strlen(username), key, &mlen) &&
	    RAND_bytes(key, sizeof(key)) != 1)
		memset(key, 0xa5, sizeof(key));
	memset(out, 0, sizeof(*out));
	out->iterations = SCRAM_ITERATIONS;
	scram_decoy_field(key, "salt", out->salt, SCRAM_SALT_LEN);
	scram_decoy_field(key, "sha1-stored", out->sha1_stored_key, SCRAM_SHA1_LEN);
	scram_decoy_field(key, "sha1-server", out->sha1_server_key, SCRAM_SHA1_LEN);
	scram_decoy_field(key, "sha256-stored", out->sha256_stored_key, SCRAM_SHA256_LEN);
	scram_decoy_field(key, "sha256-server", out->sha256_server_key, SCRAM_SHA256_LEN);
	OPENSSL_cleanse(key, sizeof(key));
}

void scram_creds_wipe(struct scram_creds *c)
{
	OPENSSL_cleanse(c, sizeof(*c));
}
