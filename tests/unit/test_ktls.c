/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/ktls.c and the kTLS handoff in daemon/tls.c, on a host
 * whose kernel may have no kTLS at all.
 *
 * Key derivation is checked against the RFC 8448 traces. The handoff is
 * checked against OpenSSL's own record layer: a real OpenSSL client talks
 * to tls.c's server through memory, then the key material tls.c hands
 * over is used exactly as the kernel would use it (nonce, additional
 * data, record sequence): records "the kernel" seals must be accepted by
 * the client, and records the client sends must open. That proves keys,
 * IVs and sequence numbers for every version and cipher.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "ktls.h"
#include "tls.h"
#include "tls_certs.h"

#define DOMAIN		"example.org"
#define PUMP_ROUNDS	32
#define RECORD_MAX	(16384 + 256)
#define ALL_KTLS	0x3fu	/* every (version, cipher) pair */

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;

	while (*hex) {
		unsigned v;

		if (*hex == ' ') {
			hex++;
			continue;
		}
		assert_true(sscanf(hex, "%2x", &v) == 1);
		assert_true(n < cap);
		out[n++] = (uint8_t)v;
		hex += 2;
	}
	return n;
}

static void assert_hex(const uint8_t *got, size_t len, const char *want_hex)
{
	uint8_t want[128];
	size_t n = unhex(want_hex, want, sizeof(want));

	assert_int_equal(n, len);
	assert_memory_equal(got, want, len);
}

/* ---------------------------------------------------------------------- */
/* RFC 8448 section 3 (simple 1-RTT handshake, TLS_AES_128_GCM_SHA256)     */

#define S_HS_TRAFFIC "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38"
#define C_HS_TRAFFIC "b3 ed db 12 6e 06 7f 35 a7 80 b3 ab f4 5e 2d 8f 3b 1a 95 07 38 f5 2e 96 00 74 6a 0e 27 a5 5a 21"
#define S_AP_TRAFFIC "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43"
#define EARLY_SECRET "33 ad 0a 1c 60 7e c0 3b 09 e6 cd 98 93 68 0c e2 10 ad f3 00 aa 1f 26 60 e1 b2 2e 10 f1 70 f9 2a"
#define EMPTY_SHA256 "e3 b0 c4 42 98 fc 1c 14 9a fb f4 c8 99 6f b9 24 27 ae 41 e4 64 9b 93 4c a4 95 99 1b 78 52 b8 55"

static void test_hkdf_expand_label_matches_rfc8448(void **state)
{
	uint8_t secret[32], ctx[32], out[32];

	unhex(S_HS_TRAFFIC, secret, sizeof(secret));
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, "key", NULL, 0, out, 16), 0);
	assert_hex(out, 16, "3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc");
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, "iv", NULL, 0, out, 12), 0);
	assert_hex(out, 12, "5d 31 3e b2 67 12 76 ee 13 00 0b 30");
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, "finished", NULL, 0, out, 32), 0);
	assert_hex(out, 32, "00 8d 3b 66 f8 16 ea 55 9f 96 b5 37 e8 85 c3 1f c0 68 bf 49 2c 65 2f 01 f2 88 a1 d8 cd c1 9f c8");

	unhex(C_HS_TRAFFIC, secret, sizeof(secret));
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, "key", NULL, 0, out, 16), 0);
	assert_hex(out, 16, "db fa a6 93 d1 76 2c 5b 66 6a f5 d9 50 25 8d 01");
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, "iv", NULL, 0, out, 12), 0);
	assert_hex(out, 12, "5b d3 c7 1b 83 6e 0b 76 bb 73 26 5f");

	/* A context: Derive-Secret(early, "derived", "") of the key schedule. */
	unhex(EARLY_SECRET, secret, sizeof(secret));
	unhex(EMPTY_SHA256, ctx, sizeof(ctx));
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, "derived", ctx, 32, out, 32), 0);
	assert_hex(out, 32, "6f 26 15 a1 08 c7 02 c5 67 8f 54 fc 9d ba b6 97 16 c0 76 18 9c 48 25 0c eb ea c3 57 6c 36 11 ba");
}

static void test_tls13_info_splits_iv_and_sets_sequence(void **state)
{
	union ktls_crypto_info ci;
	uint8_t secret[32];

	unhex(S_AP_TRAFFIC, secret, sizeof(secret));
	assert_int_equal(ktls_tls13_info(KTLS_AES_128_GCM, secret, 32, 0x0102030405060708ull, &ci), 0);
	assert_int_equal(ci.info.version, TLS_1_3_VERSION);
	assert_int_equal(ci.info.cipher_type, TLS_CIPHER_AES_GCM_128);
	assert_hex(ci.aes128.key, 16, "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56");
	/* The kernel's nonce is salt || iv: the RFC's 12-byte IV, split 4 + 8. */
	assert_hex(ci.aes128.salt, 4, "cf 78 2b 88");
	assert_hex(ci.aes128.iv, 8, "dd 83 54 9a ad f1 e9 84");
	assert_hex(ci.aes128.rec_seq, 8, "01 02 03 04 05 06 07 08");
	assert_int_equal(ktls_info_size(KTLS_AES_128_GCM), sizeof(ci.aes128));

	/* ChaCha20: the whole IV in iv, no salt. */
	assert_int_equal(ktls_tls13_info(KTLS_CHACHA20_POLY1305, secret, 32, 7, &ci), 0);
	assert_int_equal(ci.info.cipher_type, TLS_CIPHER_CHACHA20_POLY1305);
	assert_hex(ci.chacha.iv, 12, "cf 78 2b 88 dd 83 54 9a ad f1 e9 84");
	assert_hex(ci.chacha.rec_seq, 8, "00 00 00 00 00 00 00 07");
}

static void test_bad_arguments_are_rejected(void **state)
{
	uint8_t secret[32] = { 1 }, out[64], big_ctx[300] = { 0 };
	char long_label[260];
	union ktls_crypto_info ci;

	memset(long_label, 'a', sizeof(long_label) - 1);
	long_label[sizeof(long_label) - 1] = '\0';
	assert_int_equal(ktls_hkdf_expand_label(KTLS_CIPHER_NONE, secret, 32, "key", NULL, 0, out, 16),
			 -EINVAL);
	assert_int_equal(ktls_hkdf_expand_label((enum ktls_cipher)9, secret, 32, "key", NULL, 0, out, 16),
			 -EINVAL);
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, long_label, NULL, 0,
						out, 16), -EINVAL);
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, "key", big_ctx,
						sizeof(big_ctx), out, 16), -EINVAL);
	assert_int_equal(ktls_hkdf_expand_label(KTLS_AES_128_GCM, secret, 32, "key", NULL, 5, out, 16),
			 -EINVAL);
	assert_int_equal(ktls_tls13_info(KTLS_CIPHER_NONE, secret, 32, 0, &ci), -EINVAL);
	assert_int_equal(ktls_tls12_info(KTLS_CIPHER_NONE, secret, 32, secret, secret, true, 0, &ci),
			 -EINVAL);
	assert_int_equal(ktls_info_size(KTLS_CIPHER_NONE), 0);
	assert_string_equal(ktls_cipher_name(KTLS_CHACHA20_POLY1305), "CHACHA20-POLY1305");
	assert_string_equal(ktls_cipher_name((enum ktls_cipher)42), "none");
}

/* A socket that is not TCP cannot take the ULP: nothing else is touched. */
static void test_install_on_a_non_tcp_socket_fails_before_tx(void **state)
{
	union ktls_crypto_info ci;
	uint8_t secret[32] = { 2 };
	enum ktls_step step;
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(ktls_tls13_info(KTLS_AES_128_GCM, secret, 32, 0, &ci), 0);
	assert_true(ktls_install(sv[0], &ci, &ci, &step) < 0);
	assert_int_equal(step, KTLS_STEP_ULP);
	/* An unknown cipher in the struct is refused before any syscall. */
	ci.info.cipher_type = 99;
	assert_int_equal(ktls_install(sv[0], &ci, &ci, &step), -EINVAL);
	close(sv[0]);
	close(sv[1]);
}

/* Whatever the host kernel has, the probe answers and explains a gap. */
static void test_probe_answers_with_a_reason(void **state)
{
	char why[160];
	unsigned mask = ktls_probe(why, sizeof(why));

	assert_true((mask & ~ALL_KTLS) == 0);
	if (mask != ALL_KTLS)
		assert_true(why[0] != '\0');
	print_message("kTLS on this kernel: mask=0x%x %s\n", mask, why);
	/* The kernel lab boots a kernel with every suite: anything less is a bug. */
	if (getenv("KERNEL_LAB"))
		assert_int_equal(mask, ALL_KTLS);
}

/* ---------------------------------------------------------------------- */
/* The kernel's record layer, emulated with the handed-over key material   */

struct kparams {
	enum ktls_cipher c;
	bool tls13;
	uint8_t key[32];
	size_t key_len;
	uint8_t iv[12];		/* salt || iv as the kernel keeps them */
	uint64_t seq;
	uint64_t explicit_nonce;	/* TLS 1.2 GCM: the iv field, counted up */
};

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (uint8_t)v;
		v >>= 8;
	}
}

static void kparams_from(struct kparams *k, enum ktls_cipher c, bool tls13,
			 const union ktls_crypto_info *ci)
{
	memset(k, 0, sizeof(*k));
	k->c = c;
	k->tls13 = tls13;
	assert_int_equal(ci->info.version, tls13 ? TLS_1_3_VERSION : TLS_1_2_VERSION);
	switch (c) {
	case KTLS_AES_128_GCM:
		assert_int_equal(ci->info.cipher_type, TLS_CIPHER_AES_GCM_128);
		k->key_len = 16;
		memcpy(k->key, ci->aes128.key, 16);
		memcpy(k->iv, ci->aes128.salt, 4);
		memcpy(k->iv + 4, ci->aes128.iv, 8);
		k->seq = be64(ci->aes128.rec_seq);
		k->explicit_nonce = be64(ci->aes128.iv);
		break;
	case KTLS_AES_256_GCM:
		assert_int_equal(ci->info.cipher_type, TLS_CIPHER_AES_GCM_256);
		k->key_len = 32;
		memcpy(k->key, ci->aes256.key, 32);
		memcpy(k->iv, ci->aes256.salt, 4);
		memcpy(k->iv + 4, ci->aes256.iv, 8);
		k->seq = be64(ci->aes256.rec_seq);
		k->explicit_nonce = be64(ci->aes256.iv);
		break;
	default:
		assert_int_equal(ci->info.cipher_type, TLS_CIPHER_CHACHA20_POLY1305);
		k->key_len = 32;
		memcpy(k->key, ci->chacha.key, 32);
		memcpy(k->iv, ci->chacha.iv, 12);
		k->seq = be64(ci->chacha.rec_seq);
		break;
	}
}

static const EVP_CIPHER *kcipher(enum ktls_cipher c)
{
	return c == KTLS_AES_128_GCM ? EVP_aes_128_gcm() :
	       c == KTLS_AES_256_GCM ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
}

/* Nonce for the next record, the way the kernel builds it. */
static void knonce(const struct kparams *k, uint8_t nonce[12], uint8_t explicit_part[8])
{
	memcpy(nonce, k->iv, 12);
	if (!k->tls13 && k->c != KTLS_CHACHA20_POLY1305) {
		/* TLS 1.2 GCM: salt || explicit nonce, sent in the record. */
		put_be64(explicit_part, k->explicit_nonce);
		memcpy(nonce + 4, explicit_part, 8);
		return;
	}
	/* TLS 1.3 and ChaCha20: iv XOR the sequence number. */
	for (int i = 0; i < 8; i++)
		nonce[4 + i] ^= (uint8_t)(k->seq >> (56 - 8 * i));
}

/* Seals one application data record as the kernel's TX would. */
static size_t kseal(struct kparams *k, const void *pt, size_t len, uint8_t *out)
{
	uint8_t nonce[12], explicit_part[8], aad[13], inner[RECORD_MAX];
	size_t body_off = 5, clen = len, aad_len;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n;

	memcpy(inner, pt, len);
	knonce(k, nonce, explicit_part);
	out[0] = 23;
	out[1] = 3;
	out[2] = 3;
	if (k->tls13) {
		inner[clen++] = 23;	/* TLSInnerPlaintext content type */
		out[3] = (uint8_t)((clen + 16) >> 8);
		out[4] = (uint8_t)(clen + 16);
		memcpy(aad, out, 5);
		aad_len = 5;
	} else {
		size_t extra = k->c == KTLS_CHACHA20_POLY1305 ? 0 : 8;

		out[3] = (uint8_t)((extra + clen + 16) >> 8);
		out[4] = (uint8_t)(extra + clen + 16);
		if (extra) {
			memcpy(out + 5, explicit_part, 8);
			body_off += 8;
		}
		put_be64(aad, k->seq);
		aad[8] = 23;
		aad[9] = 3;
		aad[10] = 3;
		aad[11] = (uint8_t)(len >> 8);
		aad[12] = (uint8_t)len;
		aad_len = 13;
	}
	assert_int_equal(EVP_EncryptInit_ex(ctx, kcipher(k->c), NULL, k->key, nonce), 1);
	assert_int_equal(EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len), 1);
	assert_int_equal(EVP_EncryptUpdate(ctx, out + body_off, &n, inner, (int)clen), 1);
	assert_int_equal(EVP_EncryptFinal_ex(ctx, out + body_off + clen, &n), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, out + body_off + clen), 1);
	EVP_CIPHER_CTX_free(ctx);
	k->seq++;
	k->explicit_nonce++;
	return body_off + clen + 16;
}

/*
 * Opens one record as the kernel's RX would. Returns the plaintext length
 * (content type in *type), or -1 when authentication fails.
 */
static int kopen(struct kparams *k, const uint8_t *rec, size_t rec_len, uint8_t *out, int *type)
{
	uint8_t nonce[12], explicit_part[8], aad[13];
	size_t body_off = 5, clen, aad_len;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int n, ok;

	assert_true(rec_len > 5 + 16);
	assert_int_equal(((size_t)rec[3] << 8 | rec[4]) + 5, rec_len);
	knonce(k, nonce, explicit_part);
	if (k->tls13) {
		memcpy(aad, rec, 5);
		aad_len = 5;
		clen = rec_len - 5 - 16;
	} else {
		if (k->c != KTLS_CHACHA20_POLY1305) {
			memcpy(nonce + 4, rec + 5, 8);	/* the peer's explicit nonce */
			body_off += 8;
		}
		clen = rec_len - body_off - 16;
		put_be64(aad, k->seq);
		aad[8] = rec[0];
		aad[9] = 3;
		aad[10] = 3;
		aad[11] = (uint8_t)(clen >> 8);
		aad[12] = (uint8_t)clen;
		aad_len = 13;
	}
	assert_int_equal(EVP_DecryptInit_ex(ctx, kcipher(k->c), NULL, k->key, nonce), 1);
	assert_int_equal(EVP_DecryptUpdate(ctx, NULL, &n, aad, (int)aad_len), 1);
	assert_int_equal(EVP_DecryptUpdate(ctx, out, &n, rec + body_off, (int)clen), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16,
					     (void *)(rec + body_off + clen)), 1);
	ok = EVP_DecryptFinal_ex(ctx, out + clen, &n);
	EVP_CIPHER_CTX_free(ctx);
	if (ok != 1)
		return -1;
	k->seq++;
	if (k->tls13) {
		/* Strip padding and the inner content type. */
		while (clen > 0 && out[clen - 1] == 0)
			clen--;
		assert_true(clen > 0);
		*type = out[--clen];
	} else {
		*type = rec[0];
	}
	return (int)clen;
}

/* ---------------------------------------------------------------------- */
/* A client and tls.c's server over memory                                 */

static struct {
	char dir[64];
	char cert[128];
	char key[128];
	struct tls_server *srv;
} fx;

static int group_setup(void **state)
{
	strcpy(fx.dir, "/tmp/test_ktls.XXXXXX");
	if (!mkdtemp(fx.dir))
		return -1;
	snprintf(fx.cert, sizeof(fx.cert), "%s/cert.pem", fx.dir);
	snprintf(fx.key, sizeof(fx.key), "%s/key.pem", fx.dir);
	if (tls_generate_self_signed(DOMAIN, fx.cert, fx.key) != 0)
		return -1;
	fx.srv = tls_server_new(fx.cert, fx.key, NULL);
	if (!fx.srv)
		return -1;
	/* Pretend the kernel can take every suite: the test plays the kernel. */
	tls_server_enable_ktls(fx.srv, ALL_KTLS);
	return 0;
}

static int group_teardown(void **state)
{
	char cmd[128];

	tls_server_free(fx.srv);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
	return system(cmd) == 0 ? 0 : -1;
}

struct pair {
	struct tls_conn *server;
	SSL_CTX *cctx;
	SSL *client;
	BIO *c_in, *c_out;
	uint8_t sink[65536];	/* ciphertext the server produced, not yet moved */
	size_t sink_len;
	char plain[4096];	/* plaintext the server decrypted */
	size_t plain_len;
};

static int sink_cb(void *arg, const void *data, size_t len)
{
	struct pair *p = arg;

	assert_true(p->sink_len + len <= sizeof(p->sink));
	memcpy(p->sink + p->sink_len, data, len);
	p->sink_len += len;
	return 0;
}

static int plain_cb(void *arg, const char *data, size_t len)
{
	struct pair *p = arg;

	assert_true(p->plain_len + len <= sizeof(p->plain));
	memcpy(p->plain + p->plain_len, data, len);
	p->plain_len += len;
	return 0;
}

/* Moves the server's output to the client. */
static void to_client(struct pair *p)
{
	if (p->sink_len) {
		assert_int_equal(BIO_write(p->c_in, p->sink, (int)p->sink_len), (int)p->sink_len);
		p->sink_len = 0;
	}
}

/* Takes what the client wrote (ciphertext). */
static size_t from_client(struct pair *p, uint8_t *buf, size_t cap)
{
	int n = BIO_read(p->c_out, buf, (int)cap);

	return n > 0 ? (size_t)n : 0;
}

/* Feeds the server everything the client wrote, in one call. */
static enum tls_status client_to_server(struct pair *p)
{
	uint8_t buf[65536];
	size_t n = from_client(p, buf, sizeof(buf));

	return n ? tls_conn_input(p->server, buf, n, plain_cb, p) : TLS_OK;
}

static void pair_open(struct pair *p, bool tls13, enum ktls_cipher c)
{
	static const char *const tls12_suites[] = {
		[KTLS_AES_128_GCM] = "ECDHE-ECDSA-AES128-GCM-SHA256",
		[KTLS_AES_256_GCM] = "ECDHE-ECDSA-AES256-GCM-SHA384",
		[KTLS_CHACHA20_POLY1305] = "ECDHE-ECDSA-CHACHA20-POLY1305",
	};
	static const char *const tls13_suites[] = {
		[KTLS_AES_128_GCM] = "TLS_AES_128_GCM_SHA256",
		[KTLS_AES_256_GCM] = "TLS_AES_256_GCM_SHA384",
		[KTLS_CHACHA20_POLY1305] = "TLS_CHACHA20_POLY1305_SHA256",
	};
	int ver = tls13 ? TLS1_3_VERSION : TLS1_2_VERSION;

	memset(p, 0, sizeof(*p));
	p->server = tls_conn_new(fx.srv, sink_cb, p);
	assert_non_null(p->server);
	p->cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(p->cctx);
	assert_int_equal(SSL_CTX_set_min_proto_version(p->cctx, ver), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(p->cctx, ver), 1);
	if (tls13)
		assert_int_equal(SSL_CTX_set_ciphersuites(p->cctx, tls13_suites[c]), 1);
	else
		assert_int_equal(SSL_CTX_set_cipher_list(p->cctx, tls12_suites[c]), 1);
	p->client = SSL_new(p->cctx);
	p->c_in = BIO_new(BIO_s_mem());
	p->c_out = BIO_new(BIO_s_mem());
	SSL_set_bio(p->client, p->c_in, p->c_out);
	SSL_set_connect_state(p->client);
}

static void pair_handshake(struct pair *p)
{
	for (int i = 0; i < PUMP_ROUNDS && !tls_conn_handshake_done(p->server); i++) {
		int ret = SSL_do_handshake(p->client);

		if (ret != 1)
			assert_int_equal(SSL_get_error(p->client, ret), SSL_ERROR_WANT_READ);
		assert_int_not_equal(client_to_server(p), TLS_ERROR);
		to_client(p);
	}
	assert_true(tls_conn_handshake_done(p->server));
	assert_int_equal(SSL_do_handshake(p->client), 1);
}

static void pair_close(struct pair *p)
{
	tls_conn_free(p->server);
	SSL_free(p->client);
	SSL_CTX_free(p->cctx);
}

/* The client reads whatever it has; returns the bytes of plaintext. */
static size_t client_read(struct pair *p, char *buf, size_t cap)
{
	size_t total = 0, got;

	while (total < cap && SSL_read_ex(p->client, buf + total, cap - total, &got) == 1)
		total += got;
	return total;
}

/*
 * The whole handoff for one version and cipher: handshake, application
 * data both ways through OpenSSL (so the sequence numbers are not just
 * the handshake's), then the key material, used as the kernel would.
 */
static void handoff_round_trip(bool tls13, enum ktls_cipher c)
{
	static const char hello[] = "<stream:stream to='example.org'>";
	static const char reply[] = "<stream:features/>";
	static const char kernel_msg[] = "<message>sealed by the kernel</message>";
	static const char client_msg[] = "<message>opened by the kernel</message>";
	union ktls_crypto_info tx, rx;
	struct kparams ktx, krx;
	struct pair p;
	uint8_t rec[RECORD_MAX], out[RECORD_MAX];
	char buf[512];
	size_t n;
	int type, len;

	pair_open(&p, tls13, c);
	pair_handshake(&p);
	assert_int_equal(tls_conn_is_tls13(p.server), tls13);
	assert_true(tls_conn_ktls_possible(p.server));

	/* Two records from the client, one reply, all through OpenSSL. */
	assert_int_equal(SSL_write(p.client, hello, (int)strlen(hello)), (int)strlen(hello));
	assert_int_equal(SSL_write(p.client, hello, (int)strlen(hello)), (int)strlen(hello));
	assert_int_not_equal(client_to_server(&p), TLS_ERROR);
	assert_int_equal(p.plain_len, 2 * strlen(hello));
	assert_int_equal(tls_conn_write(p.server, reply, strlen(reply)), 0);
	to_client(&p);
	n = client_read(&p, buf, sizeof(buf));
	assert_int_equal(n, strlen(reply));

	assert_int_equal(tls_conn_rx_partial(p.server), 0);
	assert_int_equal(tls_conn_ktls_keys(p.server, &tx, &rx), 0);
	kparams_from(&ktx, c, tls13, &tx);
	kparams_from(&krx, c, tls13, &rx);

	/* "Kernel" TX: the client must accept what we seal with the handed keys. */
	n = kseal(&ktx, kernel_msg, strlen(kernel_msg), rec);
	assert_int_equal(BIO_write(p.c_in, rec, (int)n), (int)n);
	n = client_read(&p, buf, sizeof(buf));
	assert_int_equal(n, strlen(kernel_msg));
	assert_memory_equal(buf, kernel_msg, n);
	/* And the next one too (sequence numbers advance in step). */
	n = kseal(&ktx, kernel_msg, strlen(kernel_msg), rec);
	assert_int_equal(BIO_write(p.c_in, rec, (int)n), (int)n);
	assert_int_equal(client_read(&p, buf, sizeof(buf)), strlen(kernel_msg));

	/* "Kernel" RX: what the client sends opens with the handed keys. */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(SSL_write(p.client, client_msg, (int)strlen(client_msg)),
				 (int)strlen(client_msg));
		n = from_client(&p, rec, sizeof(rec));
		len = kopen(&krx, rec, n, out, &type);
		assert_int_equal(len, (int)strlen(client_msg));
		assert_int_equal(type, 23);
		assert_memory_equal(out, client_msg, (size_t)len);
	}

	/* After the handoff the accessors still answer without the SSL. */
	{
		const char *version = tls_conn_version(p.server);
		unsigned char cb1[64], cb2[64], ep1[EVP_MAX_MD_SIZE];
		ssize_t l1 = tls_conn_channel_binding(p.server, "tls-unique", cb1, sizeof(cb1));
		ssize_t e1 = tls_conn_channel_binding(p.server, "tls-server-end-point", ep1,
						      sizeof(ep1));
		char cert2[160], key2[160], why[256];

		tls_conn_ktls_done(p.server);
		assert_true(tls_conn_in_kernel(p.server));
		assert_string_equal(tls_conn_version(p.server), version);
		assert_true(tls_conn_cipher(p.server)[0] != '\0');
		assert_int_equal(tls_conn_is_tls13(p.server), tls13);
		assert_int_equal(tls_conn_channel_binding(p.server, "tls-unique", cb2, sizeof(cb2)), l1);
		assert_memory_equal(cb1, cb2, (size_t)l1);
		assert_true(e1 > 0);
		assert_int_equal(tls_conn_channel_binding(p.server, "tls-server-end-point", cb2,
							  sizeof(cb2)), e1);
		assert_memory_equal(cb2, ep1, (size_t)e1);
		/*
		 * A reload replaces the context's certificate (worker 0, while
		 * this connection lives on): the binding stays the one of the
		 * certificate the handshake used.
		 */
		snprintf(cert2, sizeof(cert2), "%s/cert2.pem", fx.dir);
		snprintf(key2, sizeof(key2), "%s/key2.pem", fx.dir);
		assert_int_equal(tls_generate_self_signed(DOMAIN, cert2, key2), 0);
		assert_int_equal(tls_certs_reload(fx.srv, cert2, key2, why, sizeof(why)), 0);
		assert_int_equal(tls_conn_channel_binding(p.server, "tls-server-end-point", cb2,
							  sizeof(cb2)), e1);
		assert_memory_equal(cb2, ep1, (size_t)e1);
		assert_int_equal(tls_certs_reload(fx.srv, fx.cert, fx.key, why, sizeof(why)), 0);
		assert_int_equal(tls_conn_write(p.server, "x", 1), -EINVAL);
		assert_true(tls_conn_take_close_notify(p.server));
		assert_false(tls_conn_take_close_notify(p.server));
	}
	explicit_bzero(&tx, sizeof(tx));
	explicit_bzero(&rx, sizeof(rx));
	pair_close(&p);
}

static void test_handoff_tls12_aes128(void **state)
{
	handoff_round_trip(false, KTLS_AES_128_GCM);
}

static void test_handoff_tls12_aes256(void **state)
{
	handoff_round_trip(false, KTLS_AES_256_GCM);
}

static void test_handoff_tls12_chacha20(void **state)
{
	handoff_round_trip(false, KTLS_CHACHA20_POLY1305);
}

static void test_handoff_tls13_aes128(void **state)
{
	handoff_round_trip(true, KTLS_AES_128_GCM);
}

static void test_handoff_tls13_aes256(void **state)
{
	handoff_round_trip(true, KTLS_AES_256_GCM);
}

static void test_handoff_tls13_chacha20(void **state)
{
	handoff_round_trip(true, KTLS_CHACHA20_POLY1305);
}

/*
 * Half a record received: the handoff must wait (-EAGAIN) and say how
 * much is missing, then work once the rest arrived, with the record it
 * completed counted.
 */
static void test_handoff_waits_for_a_partial_record(void **state)
{
	static const char msg[] = "<presence/>";
	union ktls_crypto_info tx, rx;
	struct kparams krx;
	struct pair p;
	uint8_t rec[RECORD_MAX], out[RECORD_MAX];
	size_t n, missing;
	int type;

	pair_open(&p, true, KTLS_AES_128_GCM);
	pair_handshake(&p);
	assert_int_equal(SSL_write(p.client, msg, (int)strlen(msg)), (int)strlen(msg));
	n = from_client(&p, rec, sizeof(rec));
	assert_true(n > 10);
	/* Three header bytes first: the header is not complete yet. */
	assert_int_equal(tls_conn_input(p.server, rec, 3, plain_cb, &p), TLS_OK);
	assert_int_equal(tls_conn_rx_partial(p.server), 2);
	assert_int_equal(tls_conn_ktls_keys(p.server, &tx, &rx), -EAGAIN);
	assert_int_equal(tls_conn_input(p.server, rec + 3, 7, plain_cb, &p), TLS_OK);
	missing = tls_conn_rx_partial(p.server);
	assert_int_equal(missing, n - 10);
	assert_int_equal(tls_conn_ktls_keys(p.server, &tx, &rx), -EAGAIN);
	assert_int_equal(tls_conn_input(p.server, rec + 10, missing, plain_cb, &p), TLS_OK);
	assert_int_equal(p.plain_len, strlen(msg));
	assert_int_equal(tls_conn_rx_partial(p.server), 0);
	assert_int_equal(tls_conn_ktls_keys(p.server, &tx, &rx), 0);

	kparams_from(&krx, KTLS_AES_128_GCM, true, &rx);
	assert_int_equal(krx.seq, 1);
	assert_int_equal(SSL_write(p.client, msg, (int)strlen(msg)), (int)strlen(msg));
	n = from_client(&p, rec, sizeof(rec));
	assert_int_equal(kopen(&krx, rec, n, out, &type), (int)strlen(msg));
	explicit_bzero(&tx, sizeof(tx));
	explicit_bzero(&rx, sizeof(rx));
	pair_close(&p);
}

/* A KeyUpdate before the handoff changes keys we cannot know: no handoff. */
static void test_key_update_before_handoff_keeps_userspace(void **state)
{
	union ktls_crypto_info tx, rx;
	struct pair p;
	char buf[64];

	pair_open(&p, true, KTLS_AES_256_GCM);
	pair_handshake(&p);
	assert_true(tls_conn_ktls_possible(p.server));
	assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_REQUESTED), 1);
	assert_int_equal(SSL_write(p.client, "after", 5), 5);
	assert_int_not_equal(client_to_server(&p), TLS_ERROR);
	assert_int_equal(p.plain_len, 5);
	assert_false(tls_conn_ktls_possible(p.server));
	assert_int_equal(tls_conn_ktls_keys(p.server, &tx, &rx), -ENOTSUP);
	/* Userspace TLS goes on, with the new keys both ways. */
	tls_conn_ktls_abandon(p.server);
	assert_int_equal(tls_conn_write(p.server, "still here", 10), 0);
	to_client(&p);
	assert_int_equal(client_read(&p, buf, sizeof(buf)), 10);
	pair_close(&p);
}

/* A server without kTLS collects nothing and never offers a handoff. */
static void test_server_without_ktls_never_hands_off(void **state)
{
	struct tls_server *plain = tls_server_new(fx.cert, fx.key, NULL);
	struct tls_server *saved = fx.srv;
	union ktls_crypto_info tx, rx;
	struct pair p;

	assert_non_null(plain);
	fx.srv = plain;
	pair_open(&p, true, KTLS_AES_128_GCM);
	pair_handshake(&p);
	assert_false(tls_conn_ktls_possible(p.server));
	assert_int_equal(tls_conn_ktls_keys(p.server, &tx, &rx), -ENOTSUP);
	pair_close(&p);
	fx.srv = saved;
	tls_server_free(plain);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hkdf_expand_label_matches_rfc8448),
		cmocka_unit_test(test_tls13_info_splits_iv_and_sets_sequence),
		cmocka_unit_test(test_bad_arguments_are_rejected),
		cmocka_unit_test(test_install_on_a_non_tcp_socket_fails_before_tx),
		cmocka_unit_test(test_probe_answers_with_a_reason),
		cmocka_unit_test(test_handoff_tls12_aes128),
		cmocka_unit_test(test_handoff_tls12_aes256),
		cmocka_unit_test(test_handoff_tls12_chacha20),
		cmocka_unit_test(test_handoff_tls13_aes128),
		cmocka_unit_test(test_handoff_tls13_aes256),
		cmocka_unit_test(test_handoff_tls13_chacha20),
		cmocka_unit_test(test_handoff_waits_for_a_partial_record),
		cmocka_unit_test(test_key_update_before_handoff_keeps_userspace),
		cmocka_unit_test(test_server_without_ktls_never_hands_off),
	};

	return cmocka_run_group_tests_name("ktls", tests, group_setup, group_teardown);
}
