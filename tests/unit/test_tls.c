/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/tls.c: certificate generation, loading, and the buffer
 * driven server against a real OpenSSL client.
 *
 * The client is an ordinary SSL object on two memory BIOs. The pump moves
 * what the client wrote into tls_conn_input() in chunks of random small
 * sizes (often a single byte) from a seeded generator, so a failure
 * reproduces, and moves what the server's sink received into the client.
 */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls.h"

#define DOMAIN		"example.org"
#define ALPN_XMPP	"xmpp-client"
#define MAX_CHUNK	257	/* upper bound of random input chunks */
#define PUMP_ROUNDS	64	/* handshake flights before we give up */

/* ---------------------------------------------------------------------- */
/* Fixture                                                                  */

static struct {
	char dir[64];
	char cert[128];
	char key[128];
	char cert2[128];	/* a second pair, for the wrong-key test */
	char key2[128];
	struct tls_server *direct;	/* ALPN xmpp-client required */
	struct tls_server *starttls;	/* ALPN ignored, own SSL_CTX */
	struct tls_server *shared;	/* tls_server_share(direct, NULL) */
} fx;

static int group_setup(void **state)
{
	strcpy(fx.dir, "/tmp/test_tls.XXXXXX");
	if (!mkdtemp(fx.dir))
		return -1;
	snprintf(fx.cert, sizeof(fx.cert), "%s/cert.pem", fx.dir);
	snprintf(fx.key, sizeof(fx.key), "%s/key.pem", fx.dir);
	snprintf(fx.cert2, sizeof(fx.cert2), "%s/cert2.pem", fx.dir);
	snprintf(fx.key2, sizeof(fx.key2), "%s/key2.pem", fx.dir);
	if (tls_generate_self_signed(DOMAIN, fx.cert, fx.key) != 0 ||
	    tls_generate_self_signed("other.example", fx.cert2, fx.key2) != 0)
		return -1;
	fx.direct = tls_server_new(fx.cert, fx.key, ALPN_XMPP);
	fx.starttls = tls_server_new(fx.cert, fx.key, NULL);
	fx.shared = fx.direct ? tls_server_share(fx.direct, NULL) : NULL;
	return fx.direct && fx.starttls && fx.shared ? 0 : -1;
}

static int group_teardown(void **state)
{
	char cmd[128];

	tls_server_free(fx.shared);
	tls_server_free(fx.direct);
	tls_server_free(fx.starttls);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------------- */
/* Client side and pump                                                     */

struct bytes {
	unsigned char *data;
	size_t len;
	size_t cap;
};

static void bytes_add(struct bytes *b, const void *data, size_t len)
{
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap < b->len + len)
			cap *= 2;
		b->data = realloc(b->data, cap);
		assert_non_null(b->data);
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

struct pair {
	struct tls_conn *server;
	SSL_CTX *cctx;
	SSL *client;
	BIO *c_in;		/* client reads server output from here */
	BIO *c_out;		/* client writes here */
	struct bytes sink;	/* ciphertext the server produced */
	int sink_fail;		/* nonzero: the sink refuses with this */
	struct bytes plain;	/* plaintext the server decrypted */
	int stop_after;		/* >0: on_plain asks to stop after this many calls */
	int plain_calls;
	int done_count;		/* TLS_HANDSHAKE_DONE results seen */
	enum tls_status last;	/* last non-OK status, TLS_OK if none */
	uint32_t rng;
};

static uint32_t rng_next(uint32_t *s)
{
	/* xorshift32: tiny, seeded, reproducible */
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static int pair_sink(void *arg, const void *data, size_t len)
{
	struct pair *p = arg;

	if (p->sink_fail)
		return p->sink_fail;
	bytes_add(&p->sink, data, len);
	return 0;
}

static int pair_plain(void *arg, const char *data, size_t len)
{
	struct pair *p = arg;

	bytes_add(&p->plain, data, len);
	p->plain_calls++;
	return p->stop_after > 0 && p->plain_calls >= p->stop_after;
}

static SSL_CTX *client_ctx(int min_version, int max_version)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());

	assert_non_null(c);
	assert_true(SSL_CTX_set_min_proto_version(c, min_version));
	assert_true(SSL_CTX_set_max_proto_version(c, max_version));
	SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
	if (min_version < TLS1_2_VERSION)
		assert_true(SSL_CTX_set_cipher_list(c, "DEFAULT:@SECLEVEL=0"));
	return c;
}

/* A server conn on srv and a client from cctx (borrowed, one reference taken). */
static void pair_init(struct pair *p, struct tls_server *srv, SSL_CTX *cctx, uint32_t seed)
{
	memset(p, 0, sizeof(*p));
	p->rng = seed ? seed : 0x9e3779b9u;
	p->server = tls_conn_new(srv, pair_sink, p);
	assert_non_null(p->server);
	assert_true(SSL_CTX_up_ref(cctx));
	p->cctx = cctx;
	p->client = SSL_new(cctx);
	assert_non_null(p->client);
	p->c_in = BIO_new(BIO_s_mem());
	p->c_out = BIO_new(BIO_s_mem());
	assert_non_null(p->c_in);
	assert_non_null(p->c_out);
	SSL_set_bio(p->client, p->c_in, p->c_out);
	SSL_set_connect_state(p->client);
	SSL_set_tlsext_host_name(p->client, DOMAIN);
}

static void pair_free(struct pair *p)
{
	tls_conn_free(p->server);
	SSL_free(p->client);
	SSL_CTX_free(p->cctx);
	free(p->sink.data);
	free(p->plain.data);
	memset(p, 0, sizeof(*p));
}

static void pair_note(struct pair *p, enum tls_status st)
{
	if (st == TLS_HANDSHAKE_DONE)
		p->done_count++;
	if (st != TLS_OK)
		p->last = st;
}

/* Feeds everything the client wrote to the server, in random small chunks. */
static void pump_to_server(struct pair *p)
{
	unsigned char *data;
	long len = BIO_get_mem_data(p->c_out, (char **)&data);
	size_t off = 0;

	while (off < (size_t)len) {
		uint32_t r = rng_next(&p->rng);
		size_t n = (r & 3) == 0 ? 1 : 1 + (r >> 8) % MAX_CHUNK;
		enum tls_status st;

		if (n > (size_t)len - off)
			n = (size_t)len - off;
		st = tls_conn_input(p->server, data + off, n, pair_plain, p);
		pair_note(p, st);
		off += n;
		if (st == TLS_ERROR || st == TLS_CLOSED || st == TLS_STOPPED)
			break;
	}
	(void)BIO_reset(p->c_out);
}

/* Feeds everything the client wrote to the server as one input. */
static enum tls_status pump_to_server_whole(struct pair *p)
{
	unsigned char *data;
	long len = BIO_get_mem_data(p->c_out, (char **)&data);
	enum tls_status st = tls_conn_input(p->server, data, (size_t)len, pair_plain, p);

	pair_note(p, st);
	(void)BIO_reset(p->c_out);
	return st;
}

static void pump_to_client(struct pair *p)
{
	if (p->sink.len) {
		assert_int_equal(BIO_write(p->c_in, p->sink.data, (int)p->sink.len),
				 (int)p->sink.len);
		p->sink.len = 0;
	}
}

/*
 * Runs the handshake to the end on both sides. Returns 1 when both are
 * done, 0 when either side failed (the other side has seen the alert).
 */
static int pair_handshake(struct pair *p)
{
	for (int i = 0; i < PUMP_ROUNDS; i++) {
		int r = SSL_do_handshake(p->client);

		if (r <= 0 && SSL_get_error(p->client, r) != SSL_ERROR_WANT_READ)
			return 0;
		pump_to_server(p);
		pump_to_client(p);
		if (p->last == TLS_ERROR)
			return 0;
		if (r == 1 && tls_conn_handshake_done(p->server))
			return 1;
	}
	fail_msg("handshake did not finish in %d rounds", PUMP_ROUNDS);
	return 0;
}

/* Client reads everything the server has sent so far into out. */
static int client_read(struct pair *p, struct bytes *out)
{
	unsigned char buf[4096];
	size_t got;

	pump_to_client(p);
	for (;;) {
		if (SSL_read_ex(p->client, buf, sizeof(buf), &got) == 1) {
			bytes_add(out, buf, got);
			continue;
		}
		return SSL_get_error(p->client, 0);
	}
}

static void client_write(struct pair *p, const char *s)
{
	size_t w;

	assert_int_equal(SSL_write_ex(p->client, s, strlen(s), &w), 1);
	assert_int_equal(w, strlen(s));
}

/* Full handshake on srv with a fresh client context for [min, max]. */
static void pair_connect(struct pair *p, struct tls_server *srv, int min, int max, uint32_t seed)
{
	SSL_CTX *c = client_ctx(min, max);

	pair_init(p, srv, c, seed);
	SSL_CTX_free(c);
	assert_int_equal(pair_handshake(p), 1);
	assert_int_equal(p->done_count, 1);
}

/* Data both ways, then checks it arrived intact. */
static void exchange_data(struct pair *p)
{
	struct bytes got = { 0 };

	client_write(p, "<stream:stream to='example.org'>");
	pump_to_server(p);
	assert_int_equal(p->plain.len, strlen("<stream:stream to='example.org'>"));
	assert_memory_equal(p->plain.data, "<stream:stream to='example.org'>", p->plain.len);
	assert_int_equal(tls_conn_write(p->server, "<features/>", 11), 0);
	assert_int_equal(client_read(p, &got), SSL_ERROR_WANT_READ);
	assert_int_equal(got.len, 11);
	assert_memory_equal(got.data, "<features/>", 11);
	free(got.data);
}

/* True when the client's error queue holds OpenSSL SSL reason `reason`. */
static int client_saw(int reason)
{
	unsigned long e;
	int found = 0;

	while ((e = ERR_get_error()) != 0)
		if (ERR_GET_REASON(e) == reason)
			found = 1;
	return found;
}

/* ---------------------------------------------------------------------- */
/* Self-signed certificates                                                 */

static X509 *load_cert(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	assert_non_null(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(x);
	return x;
}

static EVP_PKEY *load_key(const char *path)
{
	FILE *f = fopen(path, "r");
	EVP_PKEY *k;

	assert_non_null(f);
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(k);
	return k;
}

static int count_temp_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)) != NULL)
		if (strstr(de->d_name, ".tmp."))
			n++;
	closedir(d);
	return n;
}

static void test_self_signed_files_have_safe_modes(void **state)
{
	struct stat st;

	assert_int_equal(stat(fx.key, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(fx.cert, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(count_temp_files(fx.dir), 0);
}

static void test_self_signed_cert_fields(void **state)
{
	X509 *x = load_cert(fx.cert);
	EVP_PKEY *key = load_key(fx.key);
	GENERAL_NAMES *san;
	BASIC_CONSTRAINTS *bc;
	EXTENDED_KEY_USAGE *eku;
	ASN1_BIT_STRING *ku;
	char group[64], cn[128];
	int day, sec, found_plain = 0, found_wild = 0, server_auth = 0;
	size_t glen;
	const ASN1_INTEGER *serial;

	assert_int_equal(X509_get_version(x), X509_VERSION_3);

	/* Key: EC P-256, and it is the certificate's key. */
	assert_true(EVP_PKEY_is_a(key, "EC"));
	assert_int_equal(EVP_PKEY_get_group_name(key, group, sizeof(group), &glen), 1);
	assert_string_equal(group, "prime256v1");
	assert_int_equal(X509_check_private_key(x, key), 1);

	/* Self-signed with ECDSA-SHA256. */
	assert_int_equal(X509_verify(x, key), 1);
	assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_string_equal(cn, DOMAIN);

	/* Serial: positive, about 128 bits. */
	serial = X509_get0_serialNumber(x);
	assert_int_equal(ASN1_STRING_type(serial), V_ASN1_INTEGER);
	assert_in_range(ASN1_STRING_length(serial), 15, 16);

	/* SAN: DNS:example.org and DNS:*.example.org. */
	san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	assert_non_null(san);
	for (int i = 0; i < sk_GENERAL_NAME_num(san); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(san, i);
		const char *s;

		assert_int_equal(gn->type, GEN_DNS);
		s = (const char *)ASN1_STRING_get0_data(gn->d.dNSName);
		found_plain |= strcmp(s, DOMAIN) == 0;
		found_wild |= strcmp(s, "*." DOMAIN) == 0;
	}
	assert_int_equal(sk_GENERAL_NAME_num(san), 2);
	assert_true(found_plain && found_wild);
	GENERAL_NAMES_free(san);

	/* A leaf: CA:FALSE, signature only, for TLS servers. */
	bc = X509_get_ext_d2i(x, NID_basic_constraints, NULL, NULL);
	assert_non_null(bc);
	assert_false(bc->ca);
	BASIC_CONSTRAINTS_free(bc);
	ku = X509_get_ext_d2i(x, NID_key_usage, NULL, NULL);
	assert_non_null(ku);
	assert_true(ASN1_BIT_STRING_get_bit(ku, 0));	/* digitalSignature */
	assert_false(ASN1_BIT_STRING_get_bit(ku, 5));	/* keyCertSign */
	ASN1_BIT_STRING_free(ku);
	eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
	assert_non_null(eku);
	for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++)
		server_auth |= OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == NID_server_auth;
	assert_true(server_auth);
	sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);

	/* Valid now, for about 10 years. */
	assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);
	assert_true(X509_cmp_current_time(X509_get0_notAfter(x)) > 0);
	assert_int_equal(ASN1_TIME_diff(&day, &sec, X509_get0_notBefore(x),
					X509_get0_notAfter(x)), 1);
	assert_in_range(day, 3649, 3651);

	EVP_PKEY_free(key);
	X509_free(x);
}

/* A client that trusts the certificate verifies it for the domain and subdomains. */
static void test_self_signed_cert_verifies_for_subdomain(void **state)
{
	const char *hosts[] = { DOMAIN, "conference." DOMAIN, "upload." DOMAIN };

	for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		SSL_CTX *c = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
		X509 *x = load_cert(fx.cert);
		struct pair p;

		assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(c), x), 1);
		X509_free(x);
		SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
		pair_init(&p, fx.starttls, c, 7 + (uint32_t)i);
		SSL_CTX_free(c);
		assert_int_equal(SSL_set1_host(p.client, hosts[i]), 1);
		assert_int_equal(pair_handshake(&p), 1);
		assert_int_equal(SSL_get_verify_result(p.client), X509_V_OK);
		pair_free(&p);
	}
}

static void test_self_signed_rejects_bad_domains(void **state)
{
	char long_label[80], too_long[300], cert[160], key[160];
	const char *bad[] = {
		"", "exa mple.org", "a,DNS:evil.com", "evil.com/x", "-bad.org", "bad-.org",
		"a..b", ".a", "a.", "*.example.org", "a:b", "ex\xc3\xa4mple.org", long_label,
		too_long,
	};

	memset(long_label, 'a', 64);
	strcpy(long_label + 64, ".org");
	for (size_t i = 0; i < sizeof(too_long) - 1; i++)
		too_long[i] = i % 10 == 9 ? '.' : 'b';
	too_long[sizeof(too_long) - 1] = '\0';
	snprintf(cert, sizeof(cert), "%s/bad.crt", fx.dir);
	snprintf(key, sizeof(key), "%s/bad.key", fx.dir);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(tls_generate_self_signed(bad[i], cert, key), -EINVAL);
		assert_int_equal(access(cert, F_OK), -1);
		assert_int_equal(access(key, F_OK), -1);
	}
	assert_int_equal(tls_generate_self_signed(NULL, cert, key), -EINVAL);
}

/* Over 64 bytes there is no CN (X.520 limit), but the SAN still works. */
static void test_self_signed_long_domain_has_san_only(void **state)
{
	char domain[120], cert[160], key[160], cn[128];
	struct tls_server *srv;
	X509 *x;

	memset(domain, 'd', 60);
	domain[60] = '.';
	memset(domain + 61, 'e', 50);
	strcpy(domain + 111, ".org");
	snprintf(cert, sizeof(cert), "%s/long.crt", fx.dir);
	snprintf(key, sizeof(key), "%s/long.key", fx.dir);
	assert_int_equal(tls_generate_self_signed(domain, cert, key), 0);
	x = load_cert(cert);
	assert_int_equal(X509_check_host(x, domain, 0, 0, NULL), 1);
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
					      sizeof(cn)) < 0);
	X509_free(x);
	srv = tls_server_new(cert, key, NULL);
	assert_non_null(srv);
	tls_server_free(srv);
}

static void test_self_signed_missing_dir_fails_cleanly(void **state)
{
	char cert[160], key[160];

	snprintf(cert, sizeof(cert), "%s/nope/cert.pem", fx.dir);
	snprintf(key, sizeof(key), "%s/key.pem.x", fx.dir);
	assert_int_equal(tls_generate_self_signed(DOMAIN, cert, key), -ENOENT);
	/* The key's temp file was removed and the key never renamed into place. */
	assert_int_equal(access(key, F_OK), -1);
	assert_int_equal(count_temp_files(fx.dir), 0);
}

/* Regenerating replaces both files with a new, matching pair. */
static void test_self_signed_regenerate_replaces_pair(void **state)
{
	char cert[160], key[160];
	struct tls_server *srv;
	X509 *a, *b;

	snprintf(cert, sizeof(cert), "%s/re.crt", fx.dir);
	snprintf(key, sizeof(key), "%s/re.key", fx.dir);
	assert_int_equal(tls_generate_self_signed(DOMAIN, cert, key), 0);
	a = load_cert(cert);
	assert_int_equal(tls_generate_self_signed(DOMAIN, cert, key), 0);
	b = load_cert(cert);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(a),
					      X509_get0_serialNumber(b)), 0);
	srv = tls_server_new(cert, key, NULL);
	assert_non_null(srv);
	tls_server_free(srv);
	X509_free(a);
	X509_free(b);
	assert_int_equal(count_temp_files(fx.dir), 0);
}

/* ---------------------------------------------------------------------- */
/* Loading                                                                  */

static void test_server_new_missing_files(void **state)
{
	char missing[160];

	snprintf(missing, sizeof(missing), "%s/does-not-exist.pem", fx.dir);
	errno = 0;
	assert_null(tls_server_new(missing, fx.key, NULL));
	assert_int_equal(errno, ENOENT);
	errno = 0;
	assert_null(tls_server_new(fx.cert, missing, NULL));
	assert_int_equal(errno, ENOENT);
}

static void test_server_new_wrong_key_refused(void **state)
{
	errno = 0;
	assert_null(tls_server_new(fx.cert, fx.key2, ALPN_XMPP));
	assert_int_equal(errno, EKEYREJECTED);
	errno = 0;
	assert_null(tls_server_new(fx.cert2, fx.key, NULL));
	assert_int_equal(errno, EKEYREJECTED);
}

static void test_server_new_garbage_files_refused(void **state)
{
	char junk[160];
	FILE *f;

	snprintf(junk, sizeof(junk), "%s/junk.pem", fx.dir);
	f = fopen(junk, "w");
	assert_non_null(f);
	fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
	fclose(f);
	errno = 0;
	assert_null(tls_server_new(junk, fx.key, NULL));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(tls_server_new(fx.cert, junk, NULL));
	assert_int_equal(errno, EINVAL);
	/* The certificate is no key either. */
	errno = 0;
	assert_null(tls_server_new(fx.cert, fx.cert, NULL));
	assert_int_not_equal(errno, 0);
}

static void test_server_new_bad_alpn_refused(void **state)
{
	char big[300];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	errno = 0;
	assert_null(tls_server_new(fx.cert, fx.key, ""));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(tls_server_new(fx.cert, fx.key, big));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(tls_server_share(NULL, NULL));
	assert_int_equal(errno, EINVAL);
}

/* ---------------------------------------------------------------------- */
/* Handshakes and data                                                      */

static void test_handshake_tls13_random_chunks(void **state)
{
	for (uint32_t seed = 1; seed <= 20; seed++) {
		struct pair p;

		pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, seed);
		assert_true(tls_conn_is_tls13(p.server));
		assert_string_equal(tls_conn_version(p.server), "TLSv1.3");
		assert_string_equal(tls_conn_cipher(p.server), "TLS_AES_128_GCM_SHA256");
		assert_string_equal(tls_conn_alpn(p.server), "");
		assert_string_equal(tls_conn_error(p.server), "");
		exchange_data(&p);
		pair_free(&p);
	}
}

static void test_handshake_tls12_random_chunks(void **state)
{
	for (uint32_t seed = 100; seed < 120; seed++) {
		struct pair p;

		pair_connect(&p, fx.starttls, TLS1_2_VERSION, TLS1_2_VERSION, seed);
		assert_false(tls_conn_is_tls13(p.server));
		assert_string_equal(tls_conn_version(p.server), "TLSv1.2");
		assert_string_equal(tls_conn_cipher(p.server), "ECDHE-ECDSA-AES128-GCM-SHA256");
		exchange_data(&p);
		pair_free(&p);
	}
}

static void test_accessors_before_handshake(void **state)
{
	struct pair p;
	unsigned char cb[64];
	SSL_CTX *c = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);

	pair_init(&p, fx.direct, c, 3);
	SSL_CTX_free(c);
	assert_false(tls_conn_handshake_done(p.server));
	assert_false(tls_conn_is_tls13(p.server));
	assert_string_equal(tls_conn_version(p.server), "");
	assert_string_equal(tls_conn_cipher(p.server), "");
	assert_string_equal(tls_conn_error(p.server), "");
	assert_int_equal(tls_conn_write(p.server, "x", 1), -ENOTCONN);
	assert_int_equal(tls_conn_channel_binding(p.server, "tls-exporter", cb, sizeof(cb)),
			 -ENOTCONN);
	/* Empty input is no error. */
	assert_int_equal(tls_conn_input(p.server, NULL, 0, pair_plain, &p), TLS_OK);
	/* Shutdown before the handshake sends nothing. */
	tls_conn_shutdown(p.server);
	assert_int_equal(p.sink.len, 0);
	pair_free(&p);
}

/* Client Finished and the first data in one input: data first, then DONE. */
static void test_data_with_client_finished_tls13(void **state)
{
	SSL_CTX *c = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
	struct pair p;
	int r = -1;

	pair_init(&p, fx.direct, c, 5);
	SSL_CTX_free(c);
	/* Drive the client alone until it has written its Finished. */
	for (int i = 0; i < PUMP_ROUNDS && r != 1; i++) {
		r = SSL_do_handshake(p.client);
		if (r != 1) {
			assert_int_equal(SSL_get_error(p.client, r), SSL_ERROR_WANT_READ);
			pump_to_server(&p);
			pump_to_client(&p);
		}
	}
	assert_int_equal(r, 1);
	assert_false(tls_conn_handshake_done(p.server));
	client_write(&p, "<stream:stream>");
	assert_int_equal(pump_to_server_whole(&p), TLS_HANDSHAKE_DONE);
	assert_int_equal(p.plain.len, 15);
	assert_memory_equal(p.plain.data, "<stream:stream>", 15);
	assert_true(tls_conn_handshake_done(p.server));
	pair_free(&p);
}

static void test_large_write_arrives_intact(void **state)
{
	struct bytes got = { 0 };
	size_t n = 100000;
	unsigned char *big = malloc(n);
	struct pair p;

	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = (unsigned char)(i * 31 + 7);
	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 11);
	assert_int_equal(tls_conn_write(p.server, big, n), 0);
	assert_int_equal(tls_conn_write(p.server, big, 0), 0);
	assert_int_equal(client_read(&p, &got), SSL_ERROR_WANT_READ);
	assert_int_equal(got.len, n);
	assert_memory_equal(got.data, big, n);
	/* And the other way, records bigger than any input chunk. */
	assert_int_equal(SSL_write(p.client, big, (int)n), (int)n);
	pump_to_server(&p);
	assert_int_equal(p.plain.len, n);
	assert_memory_equal(p.plain.data, big, n);
	free(got.data);
	free(big);
	pair_free(&p);
}

static void test_close_notify_gives_closed(void **state)
{
	struct bytes got = { 0 };
	struct pair p;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 13);
	/* Data and close_notify in the same input: data first, then CLOSED. */
	client_write(&p, "</stream:stream>");
	SSL_shutdown(p.client);
	assert_int_equal(pump_to_server_whole(&p), TLS_CLOSED);
	assert_int_equal(p.plain.len, 16);
	/* Anything after close_notify is ignored. */
	assert_int_equal(tls_conn_input(p.server, "junk", 4, pair_plain, &p), TLS_CLOSED);
	/* Our close_notify reaches the client. */
	tls_conn_shutdown(p.server);
	assert_true(p.sink.len > 0);
	assert_int_equal(client_read(&p, &got), SSL_ERROR_ZERO_RETURN);
	free(got.data);
	pair_free(&p);
}

static void test_server_shutdown_reaches_client(void **state)
{
	struct bytes got = { 0 };
	struct pair p;

	pair_connect(&p, fx.direct, TLS1_2_VERSION, TLS1_2_VERSION, 17);
	tls_conn_write(p.server, "bye", 3);
	tls_conn_shutdown(p.server);
	tls_conn_shutdown(p.server);	/* once only */
	assert_int_equal(client_read(&p, &got), SSL_ERROR_ZERO_RETURN);
	assert_int_equal(got.len, 3);
	free(got.data);
	pair_free(&p);
}

static void test_garbage_input_is_error(void **state)
{
	static const char http[] = "GET / HTTP/1.1\r\nHost: example.org\r\n\r\n";
	static const unsigned char bad_hello[] = {
		0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
	};
	static const unsigned char bad_type[] = { 0x42, 0x03, 0x03, 0x00, 0x02, 0x00, 0x00 };
	const struct {
		const void *data;
		size_t len;
		const char *reason;
	} cases[] = {
		{ http, sizeof(http) - 1, "http request" },
		{ bad_hello, sizeof(bad_hello), NULL },
		{ bad_type, sizeof(bad_type), NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		SSL_CTX *c = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
		struct pair p;

		pair_init(&p, fx.direct, c, 19);
		SSL_CTX_free(c);
		assert_int_equal(tls_conn_input(p.server, cases[i].data, cases[i].len,
						pair_plain, &p), TLS_ERROR);
		assert_non_null(strstr(tls_conn_error(p.server), "handshake failed: "));
		if (cases[i].reason)
			assert_non_null(strstr(tls_conn_error(p.server), cases[i].reason));
		/* Sticky: nothing works afterwards. */
		assert_int_equal(tls_conn_input(p.server, "x", 1, pair_plain, &p), TLS_ERROR);
		assert_int_equal(tls_conn_write(p.server, "x", 1), -EIO);
		assert_int_equal(p.plain.len, 0);
		pair_free(&p);
	}
}

/* A malformed ClientHello gets a fatal alert on the wire. */
static void test_garbage_hello_sends_alert(void **state)
{
	static const unsigned char bad_hello[] = {
		0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
	};
	SSL_CTX *c = client_ctx(TLS1_2_VERSION, TLS1_3_VERSION);
	struct pair p;

	pair_init(&p, fx.direct, c, 19);
	SSL_CTX_free(c);
	assert_int_equal(tls_conn_input(p.server, bad_hello, sizeof(bad_hello), pair_plain, &p),
			 TLS_ERROR);
	assert_true(p.sink.len >= 7);
	assert_int_equal(p.sink.data[0], 0x15);	/* alert record */
	assert_int_equal(p.sink.data[5], 2);	/* fatal */
	pair_free(&p);
}

/* A tampered record after the handshake: error, bad_record_mac alert to the client. */
static void test_tampered_record_is_error_with_alert(void **state)
{
	struct bytes got = { 0 };
	unsigned char *data;
	struct pair p;
	long len;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 23);
	client_write(&p, "hello there");
	len = BIO_get_mem_data(p.c_out, (char **)&data);
	assert_true(len > 10);
	data[len - 3] ^= 0x40;
	assert_int_equal(pump_to_server_whole(&p), TLS_ERROR);
	assert_non_null(strstr(tls_conn_error(p.server), "read failed: "));
	assert_int_equal(p.plain.len, 0);
	assert_true(p.sink.len > 0);
	assert_int_equal(tls_conn_write(p.server, "x", 1), -EIO);
	ERR_clear_error();
	assert_int_equal(client_read(&p, &got), SSL_ERROR_SSL);
	assert_true(client_saw(SSL_R_SSLV3_ALERT_BAD_RECORD_MAC));
	free(got.data);
	pair_free(&p);
}

static void test_old_tls_versions_refused(void **state)
{
	const int versions[] = { TLS1_VERSION, TLS1_1_VERSION };

	for (size_t i = 0; i < 2; i++) {
		SSL_CTX *c = client_ctx(versions[i], versions[i]);
		struct pair p;

		pair_init(&p, fx.direct, c, 29);
		SSL_CTX_free(c);
		ERR_clear_error();
		assert_int_equal(pair_handshake(&p), 0);
		assert_int_equal(p.last, TLS_ERROR);
		assert_non_null(strstr(tls_conn_error(p.server), "unsupported protocol"));
		assert_false(tls_conn_handshake_done(p.server));
		/* The client got the protocol_version alert. */
		SSL_do_handshake(p.client);
		assert_true(client_saw(SSL_R_TLSV1_ALERT_PROTOCOL_VERSION));
		pair_free(&p);
	}
}

/* TLS 1.2 without ECDHE+AEAD is refused: the policy, not OpenSSL's default. */
static void test_weak_tls12_ciphers_refused(void **state)
{
	const char *lists[] = { "AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-SHA",
				"ECDHE-ECDSA-AES256-SHA384" };

	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		SSL_CTX *c = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
		struct pair p;

		assert_int_equal(SSL_CTX_set_cipher_list(c, lists[i]), 1);
		pair_init(&p, fx.direct, c, 31);
		SSL_CTX_free(c);
		assert_int_equal(pair_handshake(&p), 0);
		assert_non_null(strstr(tls_conn_error(p.server), "no shared cipher"));
		pair_free(&p);
	}
	ERR_clear_error();
}

/* A TLS 1.2 client asking to renegotiate is refused; the connection goes on. */
static void test_tls12_renegotiation_refused(void **state)
{
	unsigned char before[64], after[64];
	struct bytes got = { 0 };
	struct pair p;
	ssize_t n;

	pair_connect(&p, fx.starttls, TLS1_2_VERSION, TLS1_2_VERSION, 33);
	n = tls_conn_channel_binding(p.server, "tls-unique", before, sizeof(before));
	assert_true(n > 0);
	assert_int_equal(SSL_renegotiate(p.client), 1);
	SSL_do_handshake(p.client);	/* sends the new ClientHello */
	pump_to_server(&p);
	assert_int_not_equal(p.last, TLS_ERROR);
	/* The answer is a no_renegotiation warning alert, not a ServerHello. */
	/* header 5, explicit GCM nonce 8, alert 2, tag 16: one record only */
	assert_int_equal(p.sink.len, 5 + 8 + 2 + 16);
	assert_int_equal(p.sink.data[0], 0x15);
	assert_int_equal(tls_conn_channel_binding(p.server, "tls-unique", after, sizeof(after)), n);
	assert_memory_equal(before, after, (size_t)n);
	ERR_clear_error();
	client_read(&p, &got);
	ERR_clear_error();
	free(got.data);
	pair_free(&p);
}

/* ---------------------------------------------------------------------- */
/* ALPN                                                                     */

static int set_alpn(SSL_CTX *c, const char *wire, size_t len)
{
	/* Returns 0 on success, the OpenSSL way. */
	return SSL_CTX_set_alpn_protos(c, (const unsigned char *)wire, (unsigned int)len);
}

static void alpn_case(struct tls_server *srv, int version, const char *wire, size_t len,
		      int expect_ok, const char *expect_alpn)
{
	SSL_CTX *c = client_ctx(version, version);
	const unsigned char *sel;
	unsigned int sel_len;
	struct pair p;

	if (wire)
		assert_int_equal(set_alpn(c, wire, len), 0);
	pair_init(&p, srv, c, 37);
	SSL_CTX_free(c);
	ERR_clear_error();
	assert_int_equal(pair_handshake(&p), expect_ok);
	if (expect_ok) {
		assert_string_equal(tls_conn_alpn(p.server), expect_alpn);
		SSL_get0_alpn_selected(p.client, &sel, &sel_len);
		assert_int_equal(sel_len, strlen(expect_alpn));
		assert_memory_equal(sel, expect_alpn, sel_len);
		exchange_data(&p);
	} else {
		assert_non_null(strstr(tls_conn_error(p.server), "no application protocol"));
		SSL_do_handshake(p.client);
		assert_true(client_saw(SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL));
	}
	pair_free(&p);
}

#define WIRE(s) s, sizeof(s) - 1

static void test_alpn_xmpp_client_accepted(void **state)
{
	alpn_case(fx.direct, TLS1_3_VERSION, WIRE("\x0bxmpp-client"), 1, ALPN_XMPP);
	alpn_case(fx.direct, TLS1_2_VERSION, WIRE("\x0bxmpp-client"), 1, ALPN_XMPP);
	alpn_case(fx.direct, TLS1_3_VERSION, WIRE("\x02h2\x0bxmpp-client"), 1, ALPN_XMPP);
}

static void test_alpn_other_refused_on_direct_tls(void **state)
{
	alpn_case(fx.direct, TLS1_3_VERSION, WIRE("\x02h2\x08http/1.1"), 0, NULL);
	alpn_case(fx.direct, TLS1_2_VERSION, WIRE("\x0bxmpp-server"), 0, NULL);
	/* A prefix or a longer name is not a match. */
	alpn_case(fx.direct, TLS1_3_VERSION, WIRE("\x0axmpp-clien"), 0, NULL);
	alpn_case(fx.direct, TLS1_3_VERSION, WIRE("\x0cxmpp-clientx"), 0, NULL);
}

static void test_alpn_absent_accepted(void **state)
{
	alpn_case(fx.direct, TLS1_3_VERSION, NULL, 0, 1, "");
	alpn_case(fx.direct, TLS1_2_VERSION, NULL, 0, 1, "");
}

static void test_alpn_ignored_without_policy(void **state)
{
	alpn_case(fx.starttls, TLS1_3_VERSION, WIRE("\x02h2"), 1, "");
	alpn_case(fx.starttls, TLS1_3_VERSION, WIRE("\x0bxmpp-client"), 1, "");
	alpn_case(fx.shared, TLS1_2_VERSION, WIRE("\x02h2"), 1, "");
}

/* ---------------------------------------------------------------------- */
/* Channel binding                                                          */

/* tls-unique as CPython's ssl module computes it on the client side. */
static size_t cpython_tls_unique(SSL *client, unsigned char *out, size_t cap)
{
	/* "if session is resumed XOR we are the client": own Finished. */
	if (SSL_session_reused(client) ^ 1)
		return SSL_get_finished(client, out, cap);
	return SSL_get_peer_finished(client, out, cap);
}

static void check_bindings(struct pair *p, int expect_exporter)
{
	unsigned char s[TLS_CHANNEL_BINDING_MAX], c[TLS_CHANNEL_BINDING_MAX];
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned int hlen;
	ssize_t n;
	size_t cn;
	X509 *peer;

	n = tls_conn_channel_binding(p->server, "tls-exporter", s, sizeof(s));
	if (expect_exporter) {
		assert_int_equal(n, 32);
		assert_int_equal(SSL_export_keying_material(p->client, c, 32,
							    "EXPORTER-Channel-Binding", 24,
							    NULL, 0, 0), 1);
		assert_memory_equal(s, c, 32);
	} else {
		assert_int_equal(n, -ENOTSUP);
	}

	n = tls_conn_channel_binding(p->server, "tls-unique", s, sizeof(s));
	cn = cpython_tls_unique(p->client, c, sizeof(c));
	assert_true(cn >= 12);
	assert_int_equal(n, (ssize_t)cn);
	assert_memory_equal(s, c, cn);

	n = tls_conn_channel_binding(p->server, "tls-server-end-point", s, sizeof(s));
	peer = SSL_get1_peer_certificate(p->client);
	assert_non_null(peer);
	assert_int_equal(X509_digest(peer, EVP_sha256(), h, &hlen), 1);
	X509_free(peer);
	assert_int_equal(n, (ssize_t)hlen);
	assert_memory_equal(s, h, hlen);

	/* Never truncated, unknown types refused. */
	assert_int_equal(tls_conn_channel_binding(p->server, "tls-unique", s, 8), -ENOSPC);
	assert_int_equal(tls_conn_channel_binding(p->server, "tls-exporter", s, 31),
			 expect_exporter ? -ENOSPC : -ENOTSUP);
	assert_int_equal(tls_conn_channel_binding(p->server, "tls-foo", s, sizeof(s)),
			 -ENOTSUP);
}

static void test_channel_binding_tls13(void **state)
{
	unsigned char a[64], b[64];
	struct pair p, q;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 41);
	check_bindings(&p, 1);
	/* Two connections never share a binding. */
	pair_connect(&q, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 43);
	assert_int_equal(tls_conn_channel_binding(p.server, "tls-exporter", a, sizeof(a)), 32);
	assert_int_equal(tls_conn_channel_binding(q.server, "tls-exporter", b, sizeof(b)), 32);
	assert_memory_not_equal(a, b, 32);
	pair_free(&q);
	pair_free(&p);
}

static void test_channel_binding_tls12_ems(void **state)
{
	struct pair p;

	pair_connect(&p, fx.starttls, TLS1_2_VERSION, TLS1_2_VERSION, 47);
	assert_int_equal(SSL_get_extms_support(p.client), 1);
	check_bindings(&p, 1);
	pair_free(&p);
}

static void test_channel_binding_tls12_without_ems(void **state)
{
	SSL_CTX *c = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
	struct pair p;

	SSL_CTX_set_options(c, SSL_OP_NO_EXTENDED_MASTER_SECRET);
	pair_init(&p, fx.starttls, c, 53);
	SSL_CTX_free(c);
	assert_int_equal(pair_handshake(&p), 1);
	assert_int_equal(SSL_get_extms_support(p.client), 0);
	check_bindings(&p, 0);
	pair_free(&p);
}

/* ---------------------------------------------------------------------- */
/* KeyUpdate, resumption, stop/resume, sink failures                         */

static void test_key_update_from_client(void **state)
{
	struct bytes got = { 0 };
	struct pair p;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 59);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_REQUESTED), 1);
		client_write(&p, "after-key-update");
		p.plain.len = 0;
		p.last = TLS_OK;
		pump_to_server(&p);
		assert_int_equal(p.last, TLS_OK);
		assert_int_equal(p.plain.len, 16);
		assert_memory_equal(p.plain.data, "after-key-update", 16);
		/* Our answer comes under our new keys; the client must read it. */
		assert_int_equal(tls_conn_write(p.server, "reply", 5), 0);
		got.len = 0;
		assert_int_equal(client_read(&p, &got), SSL_ERROR_WANT_READ);
		assert_int_equal(got.len, 5);
		assert_memory_equal(got.data, "reply", 5);
	}
	free(got.data);
	pair_free(&p);
}

/* A first connection leaves the client a session to resume with. */
static SSL_SESSION *first_session(struct tls_server *srv, SSL_CTX *c)
{
	struct bytes got = { 0 };
	SSL_SESSION *sess;
	struct pair p;

	pair_init(&p, srv, c, 61);
	assert_int_equal(pair_handshake(&p), 1);
	assert_false(SSL_session_reused(p.client));
	/* TLS 1.3 tickets come after the handshake: let the client read them. */
	client_read(&p, &got);
	free(got.data);
	/* A clean close: OpenSSL voids sessions of connections that just vanish. */
	SSL_shutdown(p.client);
	sess = SSL_get1_session(p.client);
	assert_non_null(sess);
	pair_free(&p);
	assert_true(SSL_SESSION_is_resumable(sess));
	return sess;
}

static void resumption_case(struct tls_server *first, struct tls_server *second, int version,
			    int expect_reused)
{
	SSL_CTX *c = client_ctx(version, version);
	SSL_SESSION *sess = first_session(first, c);
	struct pair p;

	pair_init(&p, second, c, 67);
	SSL_CTX_free(c);
	assert_int_equal(SSL_set_session(p.client, sess), 1);
	SSL_SESSION_free(sess);
	assert_int_equal(pair_handshake(&p), 1);
	assert_int_equal(SSL_session_reused(p.client), expect_reused);
	exchange_data(&p);
	if (expect_reused)
		check_bindings(&p, 1);
	pair_free(&p);
}

static void test_resumption_tls13_ticket(void **state)
{
	resumption_case(fx.direct, fx.direct, TLS1_3_VERSION, 1);
}

static void test_resumption_tls12_ticket(void **state)
{
	resumption_case(fx.starttls, fx.starttls, TLS1_2_VERSION, 1);
}

/* Shared servers share ticket keys; separately loaded ones do not. */
static void test_resumption_across_shared_server(void **state)
{
	resumption_case(fx.direct, fx.shared, TLS1_3_VERSION, 1);
	resumption_case(fx.direct, fx.starttls, TLS1_3_VERSION, 0);
}

/* TLS 1.2 abbreviated handshake: the client's Finished and data in one input. */
static void test_data_with_client_finished_tls12_resumed(void **state)
{
	SSL_CTX *c = client_ctx(TLS1_2_VERSION, TLS1_2_VERSION);
	SSL_SESSION *sess = first_session(fx.starttls, c);
	struct pair p;
	int r = -1;

	pair_init(&p, fx.starttls, c, 71);
	SSL_CTX_free(c);
	SSL_set_session(p.client, sess);
	SSL_SESSION_free(sess);
	for (int i = 0; i < PUMP_ROUNDS && r != 1; i++) {
		r = SSL_do_handshake(p.client);
		if (r != 1) {
			pump_to_server(&p);
			pump_to_client(&p);
		}
	}
	assert_int_equal(r, 1);
	assert_true(SSL_session_reused(p.client));
	client_write(&p, "<auth/>");
	assert_int_equal(pump_to_server_whole(&p), TLS_HANDSHAKE_DONE);
	assert_int_equal(p.plain.len, 7);
	check_bindings(&p, 1);
	pair_free(&p);
}

static void test_stop_keeps_rest_for_later(void **state)
{
	struct pair p;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 73);
	client_write(&p, "one");
	client_write(&p, "two");
	client_write(&p, "three");
	p.stop_after = 1;
	assert_int_equal(pump_to_server_whole(&p), TLS_STOPPED);
	assert_int_equal(p.plain.len, 3);
	assert_true(tls_conn_pending(p.server));

	/* New input while stopped goes behind the kept bytes. */
	client_write(&p, "four");
	p.stop_after = 2;	/* stop after "two" (calls count on) */
	assert_int_equal(pump_to_server_whole(&p), TLS_STOPPED);
	assert_int_equal(p.plain.len, 6);
	assert_memory_equal(p.plain.data, "onetwo", 6);

	p.stop_after = 0;
	assert_int_equal(tls_conn_input(p.server, NULL, 0, pair_plain, &p), TLS_OK);
	assert_false(tls_conn_pending(p.server));
	assert_int_equal(p.plain.len, 15);
	assert_memory_equal(p.plain.data, "onetwothreefour", 15);
	pair_free(&p);
}

/* A stop during the handshake's call still leaves the handshake done. */
static void test_stop_in_handshake_input(void **state)
{
	SSL_CTX *c = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
	struct pair p;
	int r = -1;

	pair_init(&p, fx.direct, c, 79);
	SSL_CTX_free(c);
	for (int i = 0; i < PUMP_ROUNDS && r != 1; i++) {
		r = SSL_do_handshake(p.client);
		if (r != 1) {
			pump_to_server(&p);
			pump_to_client(&p);
		}
	}
	client_write(&p, "a");
	client_write(&p, "b");
	p.stop_after = 1;
	assert_int_equal(pump_to_server_whole(&p), TLS_STOPPED);
	assert_true(tls_conn_handshake_done(p.server));
	p.stop_after = 0;
	assert_int_equal(tls_conn_input(p.server, NULL, 0, pair_plain, &p), TLS_OK);
	assert_memory_equal(p.plain.data, "ab", 2);
	pair_free(&p);
}

static void test_sink_failure_is_fatal(void **state)
{
	SSL_CTX *c = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
	struct pair p;

	/* During the handshake: the ServerHello cannot be queued. */
	pair_init(&p, fx.direct, c, 83);
	p.sink_fail = -ENOMEM;
	assert_int_equal(pair_handshake(&p), 0);
	assert_int_equal(p.last, TLS_ERROR);
	assert_non_null(strstr(tls_conn_error(p.server), "ENOMEM"));
	pair_free(&p);

	/* On write after the handshake. */
	pair_init(&p, fx.direct, c, 89);
	SSL_CTX_free(c);
	assert_int_equal(pair_handshake(&p), 1);
	p.sink_fail = -ENOMEM;
	assert_int_equal(tls_conn_write(p.server, "data", 4), -ENOMEM);
	assert_int_equal(tls_conn_write(p.server, "data", 4), -ENOMEM);
	assert_non_null(strstr(tls_conn_error(p.server), "write failed"));
	/* No shutdown after a fatal error. */
	p.sink_fail = 0;
	tls_conn_shutdown(p.server);
	assert_int_equal(p.sink.len, 0);
	pair_free(&p);
}

/* ---------------------------------------------------------------------- */
/* Memory budget                                                            */

#define MEM_CONNS		200
#define MEM_BUDGET_BYTES	(12 * 1024)	/* DESIGN.md: idle TLS connection */
/*
 * What OpenSSL 3.0 needs today: about 13.4 KiB (TLS 1.3) of which the SSL
 * struct alone is 7.4 KiB, so the product budget is only reachable by
 * dropping the SSL object after the handshake (kTLS handoff). This guard
 * catches regressions, e.g. a record buffer (17 KiB) kept per idle conn.
 */
#define MEM_GUARD_BYTES		(15 * 1024)

/*
 * Heap held by one idle server connection after a TLS 1.3 handshake and a
 * little data, with the client side freed. Measured with mallinfo2() over
 * many connections (single-threaded test: all in the main arena).
 */
/*
 * Lean mode: after a TLS 1.3 handshake the SSL object is freed and tls.c
 * seals and opens the records itself; TLS 1.2 keeps OpenSSL.
 */
static void test_lean_mode_tls13_only(void **state)
{
	struct pair p;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 211);
	assert_true(tls_conn_is_lean(p.server));
	assert_string_equal(tls_conn_version(p.server), "TLSv1.3");
	assert_true(tls_conn_cipher(p.server)[0] != '\0');
	assert_true(tls_conn_is_tls13(p.server));
	for (int i = 0; i < 3; i++) {
		p.plain.len = 0;
		exchange_data(&p);
	}
	pair_free(&p);

	pair_connect(&p, fx.direct, TLS1_2_VERSION, TLS1_2_VERSION, 213);
	assert_false(tls_conn_is_lean(p.server));
	exchange_data(&p);
	pair_free(&p);
}

/*
 * A client that negotiated max_fragment_length (RFC 6066) keeps OpenSSL's
 * record layer, which honours it: a long write arrives in records the
 * client accepts.
 */
static void test_lean_not_with_max_fragment_length(void **state)
{
	SSL_CTX *c = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
	struct bytes got = { 0 };
	char big[3000];
	struct pair p;

	assert_int_equal(SSL_CTX_set_tlsext_max_fragment_length(c, TLSEXT_max_fragment_length_512),
			 1);
	pair_init(&p, fx.direct, c, 223);
	SSL_CTX_free(c);
	assert_int_equal(pair_handshake(&p), 1);
	assert_false(tls_conn_is_lean(p.server));
	memset(big, 'x', sizeof(big));
	assert_int_equal(tls_conn_write(p.server, big, sizeof(big)), 0);
	assert_int_equal(client_read(&p, &got), SSL_ERROR_WANT_READ);
	assert_int_equal(got.len, sizeof(big));
	free(got.data);
	pair_free(&p);
}

/* After our close_notify nothing more is sealed. */
static void test_lean_no_data_after_close_notify(void **state)
{
	struct pair p;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 227);
	assert_true(tls_conn_is_lean(p.server));
	tls_conn_shutdown(p.server);
	assert_int_equal(tls_conn_write(p.server, "late", 4), -EPIPE);
	pair_free(&p);
}

/* A KeyUpdate that asks nothing back: new receive keys, same send keys. */
static void test_lean_key_update_not_requested(void **state)
{
	struct bytes got = { 0 };
	struct pair p;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 217);
	assert_true(tls_conn_is_lean(p.server));
	assert_int_equal(SSL_key_update(p.client, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
	client_write(&p, "after");
	p.plain.len = 0;
	p.last = TLS_OK;
	pump_to_server(&p);
	assert_int_equal(p.last, TLS_OK);
	assert_int_equal(p.plain.len, 5);
	assert_memory_equal(p.plain.data, "after", 5);
	assert_int_equal(p.sink.len, 0);	/* nothing sent back */
	assert_int_equal(tls_conn_write(p.server, "reply", 5), 0);
	assert_int_equal(client_read(&p, &got), SSL_ERROR_WANT_READ);
	assert_int_equal(got.len, 5);
	free(got.data);
	pair_free(&p);
}

/* Feeds raw bytes to a lean server; expects a fatal alert `reason` at the client. */
static void lean_bad_input(const unsigned char *rec, size_t len, int reason, uint32_t seed)
{
	struct bytes got = { 0 };
	struct pair p;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, seed);
	assert_true(tls_conn_is_lean(p.server));
	assert_int_equal(tls_conn_input(p.server, rec, len, pair_plain, &p), TLS_ERROR);
	assert_non_null(strstr(tls_conn_error(p.server), "read failed: "));
	assert_int_equal(tls_conn_write(p.server, "x", 1), -EIO);
	tls_conn_shutdown(p.server);	/* no close_notify after a fatal alert */
	ERR_clear_error();
	assert_int_equal(client_read(&p, &got), SSL_ERROR_SSL);
	assert_true(client_saw(reason));
	free(got.data);
	pair_free(&p);
}

static void test_lean_rejects_bad_records(void **state)
{
	/* A cleartext handshake record after the handshake. */
	static const unsigned char hs[] = { 22, 3, 3, 0, 4, 1, 0, 0, 0 };
	/* Longer than 2^14 + 256. */
	static const unsigned char big[] = { 23, 3, 3, 0x41, 0x01 };
	/* Too short to hold a tag. */
	unsigned char shortrec[5 + 16] = { 23, 3, 3, 0, 16 };
	/* A whole record whose tag does not verify. */
	unsigned char forged[5 + 40] = { 23, 3, 3, 0, 40 };

	lean_bad_input(hs, sizeof(hs), SSL_R_SSLV3_ALERT_UNEXPECTED_MESSAGE, 221);
	lean_bad_input(big, sizeof(big), SSL_R_TLSV1_ALERT_RECORD_OVERFLOW, 223);
	lean_bad_input(shortrec, sizeof(shortrec), SSL_R_SSLV3_ALERT_BAD_RECORD_MAC, 227);
	lean_bad_input(forged, sizeof(forged), SSL_R_SSLV3_ALERT_BAD_RECORD_MAC, 229);
}

/* A record cut anywhere waits for its rest; rx_partial says how much is due. */
static void test_lean_partial_record(void **state)
{
	unsigned char *data;
	struct pair p;
	long len;

	pair_connect(&p, fx.direct, TLS1_3_VERSION, TLS1_3_VERSION, 231);
	assert_true(tls_conn_is_lean(p.server));
	assert_int_equal(tls_conn_rx_partial(p.server), 0);
	client_write(&p, "split across inputs");
	len = BIO_get_mem_data(p.c_out, (char **)&data);
	assert_true(len > 8);
	assert_int_equal(tls_conn_input(p.server, data, 3, pair_plain, &p), TLS_OK);
	assert_int_equal(tls_conn_rx_partial(p.server), 2);
	assert_int_equal(tls_conn_input(p.server, data + 3, 5, pair_plain, &p), TLS_OK);
	assert_int_equal(tls_conn_rx_partial(p.server), (size_t)len - 8);
	assert_int_equal(p.plain.len, 0);
	assert_int_equal(tls_conn_input(p.server, data + 8, (size_t)len - 8, pair_plain, &p),
			 TLS_OK);
	assert_int_equal(tls_conn_rx_partial(p.server), 0);
	assert_int_equal(p.plain.len, strlen("split across inputs"));
	(void)BIO_reset(p.c_out);
	pair_free(&p);
}

static void test_idle_conn_memory_within_budget(void **state)
{
	static struct pair p[MEM_CONNS];
	SSL_CTX *c = client_ctx(TLS1_3_VERSION, TLS1_3_VERSION);
	struct tls_conn *keep[MEM_CONNS];
	size_t before, after, per;

	/* Warm up lazily allocated OpenSSL state first. */
	pair_init(&p[0], fx.direct, c, 97);
	assert_int_equal(pair_handshake(&p[0]), 1);
	exchange_data(&p[0]);
	pair_free(&p[0]);
	malloc_trim(0);

	before = mallinfo2().uordblks;
	for (int i = 0; i < MEM_CONNS; i++) {
		pair_init(&p[i], fx.direct, c, 101 + (uint32_t)i);
		assert_int_equal(pair_handshake(&p[i]), 1);
		exchange_data(&p[i]);
		/* Keep the server side only. */
		keep[i] = p[i].server;
		p[i].server = NULL;
		pair_free(&p[i]);
	}
	after = mallinfo2().uordblks;
	for (int i = 0; i < MEM_CONNS && after == before; i++)
		tls_conn_free(keep[i]);
	if (after == before) {
		/* ASan and valgrind replace malloc; mallinfo2() then reports nothing. */
		SSL_CTX_free(c);
		print_message("mallinfo2() sees no heap (sanitizer or valgrind): not measured\n");
		skip();
	}
	per = (after - before) / MEM_CONNS;
	print_message("idle TLS 1.3 server connection: %zu bytes of heap (budget %d)\n", per,
		      MEM_BUDGET_BYTES);
	for (int i = 0; i < MEM_CONNS; i++)
		tls_conn_free(keep[i]);
	SSL_CTX_free(c);
	assert_true(per <= MEM_GUARD_BYTES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_self_signed_files_have_safe_modes),
		cmocka_unit_test(test_self_signed_cert_fields),
		cmocka_unit_test(test_self_signed_cert_verifies_for_subdomain),
		cmocka_unit_test(test_self_signed_rejects_bad_domains),
		cmocka_unit_test(test_self_signed_long_domain_has_san_only),
		cmocka_unit_test(test_self_signed_missing_dir_fails_cleanly),
		cmocka_unit_test(test_self_signed_regenerate_replaces_pair),
		cmocka_unit_test(test_server_new_missing_files),
		cmocka_unit_test(test_server_new_wrong_key_refused),
		cmocka_unit_test(test_server_new_garbage_files_refused),
		cmocka_unit_test(test_server_new_bad_alpn_refused),
		cmocka_unit_test(test_handshake_tls13_random_chunks),
		cmocka_unit_test(test_handshake_tls12_random_chunks),
		cmocka_unit_test(test_accessors_before_handshake),
		cmocka_unit_test(test_data_with_client_finished_tls13),
		cmocka_unit_test(test_large_write_arrives_intact),
		cmocka_unit_test(test_close_notify_gives_closed),
		cmocka_unit_test(test_server_shutdown_reaches_client),
		cmocka_unit_test(test_garbage_input_is_error),
		cmocka_unit_test(test_garbage_hello_sends_alert),
		cmocka_unit_test(test_tampered_record_is_error_with_alert),
		cmocka_unit_test(test_old_tls_versions_refused),
		cmocka_unit_test(test_weak_tls12_ciphers_refused),
		cmocka_unit_test(test_tls12_renegotiation_refused),
		cmocka_unit_test(test_alpn_xmpp_client_accepted),
		cmocka_unit_test(test_alpn_other_refused_on_direct_tls),
		cmocka_unit_test(test_alpn_absent_accepted),
		cmocka_unit_test(test_alpn_ignored_without_policy),
		cmocka_unit_test(test_channel_binding_tls13),
		cmocka_unit_test(test_channel_binding_tls12_ems),
		cmocka_unit_test(test_channel_binding_tls12_without_ems),
		cmocka_unit_test(test_key_update_from_client),
		cmocka_unit_test(test_resumption_tls13_ticket),
		cmocka_unit_test(test_resumption_tls12_ticket),
		cmocka_unit_test(test_resumption_across_shared_server),
		cmocka_unit_test(test_data_with_client_finished_tls12_resumed),
		cmocka_unit_test(test_stop_keeps_rest_for_later),
		cmocka_unit_test(test_stop_in_handshake_input),
		cmocka_unit_test(test_sink_failure_is_fatal),
		cmocka_unit_test(test_lean_mode_tls13_only),
		cmocka_unit_test(test_lean_not_with_max_fragment_length),
		cmocka_unit_test(test_lean_no_data_after_close_notify),
		cmocka_unit_test(test_lean_key_update_not_requested),
		cmocka_unit_test(test_lean_rejects_bad_records),
		cmocka_unit_test(test_lean_partial_record),
		cmocka_unit_test(test_idle_conn_memory_within_budget),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
