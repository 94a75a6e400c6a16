/* SPDX-License-Identifier: MIT */
/*
 * Client certificates for SASL EXTERNAL: CA and CRL loading, the
 * per-connection request, and what is kept of the peer's certificate
 * once the handshake is over (see tls_client_cert.h).
 *
 * The verify callback accepts every chain so that the handshake never
 * fails over a client certificate (a device with an expired certificate
 * can still log in with a password); it only notes that something was
 * wrong, in the SSL's ex_data, because OpenSSL's verify result keeps the
 * last error only and a later success must not hide an earlier failure.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "tls_client_cert.h"

/* The session id context: any constant works, it only has to be set. */
#define TLS_CLIENT_SID_CTX	"stanzad-c2s"

/* ex_data slot marking "some certificate in the chain failed" (value non-NULL). */
static int tls_client_failed_idx = -1;
static pthread_once_t tls_client_once = PTHREAD_ONCE_INIT;

static void tls_client_init_once(void)
{
	tls_client_failed_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/*
 * Accepts the chain whatever the verdict (see the top of the file) and
 * remembers a failure on the connection.
 */
static int tls_client_verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl;

	if (ok)
		return 1;
	ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	if (ssl && tls_client_failed_idx >= 0)
		SSL_set_ex_data(ssl, tls_client_failed_idx, (void *)1);
	return 1;
}

/* Logs why a file could not be used; returns the -errno to report. */
static int tls_client_file_error(const char *what, const char *file)
{
	unsigned long e = ERR_peek_last_error();
	int err = -EINVAL;

	if (ERR_GET_LIB(e) == ERR_LIB_SYS)
		err = -ERR_GET_REASON(e);
	log_error("tls.client_ca", "file=%s what=%s reason=\"%s\"", file, what,
		  e ? ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unknown"
		    : "no usable entry");
	ERR_clear_error();
	return err;
}

int tls_client_ca_configure(SSL_CTX *ctx, const char *ca_file, const char *crl_file)
{
	STACK_OF(X509_NAME) *names;
	X509_STORE *store;
	int ret;

	pthread_once(&tls_client_once, tls_client_init_once);
	if (tls_client_failed_idx < 0)
		return -ENOMEM;
	ERR_clear_error();
	store = X509_STORE_new();
	if (!store)
		return -ENOMEM;
	if (X509_STORE_load_file(store, ca_file) != 1) {
		ret = tls_client_file_error("CA certificates", ca_file);
		goto err_free_store;
	}
	if (crl_file) {
		X509_LOOKUP *lk = X509_STORE_add_lookup(store, X509_LOOKUP_file());

		if (!lk || X509_load_crl_file(lk, crl_file, X509_FILETYPE_PEM) <= 0) {
			ret = tls_client_file_error("CRL", crl_file);
			goto err_free_store;
		}
		/* The leaf only: intermediate CAs are the operator's own. */
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
	}
	/* Names in the CertificateRequest help clients holding several certificates. */
	names = SSL_load_client_CA_file(ca_file);
	if (!names) {
		ret = tls_client_file_error("CA names", ca_file);
		goto err_free_store;
	}
	SSL_CTX_set0_CA_list(ctx, names);
	/* set1: the context takes its own reference. */
	if (SSL_CTX_set1_verify_cert_store(ctx, store) != 1 ||
	    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_CLIENT_SID_CTX,
					   sizeof(TLS_CLIENT_SID_CTX) - 1) != 1) {
		ret = -ENOMEM;
		goto err_free_store;
	}
	X509_STORE_free(store);
	return 0;

err_free_store:
	X509_STORE_free(store);
	ERR_clear_error();
	return ret;
}

void tls_client_cert_request(SSL *ssl)
{
	/* Optional: no FAIL_IF_NO_PEER_CERT, so password logins still work. */
	SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, tls_client_verify_cb);
}

/* Copies a SAN string if it can be a JID: 1..TLS_PEER_JID_MAX bytes, no NUL or controls. */
static void tls_peer_add_jid(struct tls_peer_cert *pc, const ASN1_STRING *s)
{
	const unsigned char *d = ASN1_STRING_get0_data(s);
	int len = ASN1_STRING_length(s);
	char *copy;

	if (pc->njids >= TLS_PEER_JIDS_MAX || !d || len <= 0 || len > TLS_PEER_JID_MAX)
		return;
	for (int i = 0; i < len; i++) {
		if (d[i] < 0x20 || d[i] == 0x7f)
			return;
	}
	copy = malloc((size_t)len + 1);
	if (!copy)
		return;
	memcpy(copy, d, (size_t)len);
	copy[len] = '\0';
	pc->jids[pc->njids++] = copy;
}

/* The xmppAddr otherNames, else the rfc822Names, of the certificate's SAN. */
static void tls_peer_collect_jids(struct tls_peer_cert *pc, X509 *x)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int n = gens ? sk_GENERAL_NAME_num(gens) : 0;

	for (int i = 0; i < n; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const OTHERNAME *on;

		if (g->type != GEN_OTHERNAME)
			continue;
		on = g->d.otherName;
		if (OBJ_obj2nid(on->type_id) == NID_XmppAddr && on->value &&
		    on->value->type == V_ASN1_UTF8STRING)
			tls_peer_add_jid(pc, on->value->value.utf8string);
	}
	for (int i = 0; pc->njids == 0 && i < n; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_EMAIL)
			tls_peer_add_jid(pc, g->d.rfc822Name);
	}
	GENERAL_NAMES_free(gens);
}

struct tls_peer_cert *tls_peer_cert_capture(SSL *ssl)
{
	X509 *x = SSL_get0_peer_certificate(ssl);
	struct tls_peer_cert *pc;
	unsigned int len = 0;
	long vr;

	if (!x || !(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER))
		return NULL;
	pc = calloc(1, sizeof(*pc));
	if (!pc)
		return NULL;
	if (!X509_digest(x, EVP_sha256(), pc->sha256, &len) || len != TLS_FINGERPRINT_LEN) {
		ERR_clear_error();
		free(pc);
		return NULL;
	}
	/*
	 * A resumed session carries the certificate and verdict of the
	 * handshake that created it; the callback did not run this time.
	 */
	vr = SSL_get_verify_result(ssl);
	pc->verified = vr == X509_V_OK &&
		       !(tls_client_failed_idx >= 0 && SSL_get_ex_data(ssl, tls_client_failed_idx));
	pc->verify_error = vr == X509_V_OK && !pc->verified ? X509_V_ERR_UNSPECIFIED : (int)vr;
	tls_peer_collect_jids(pc, x);
	ERR_clear_error();
	return pc;
}

void tls_peer_cert_free(struct tls_peer_cert *pc)
{
	if (!pc)
		return;
	for (unsigned i = 0; i < pc->njids; i++)
		free(pc->jids[i]);
	free(pc);
}

void tls_fingerprint_format(const uint8_t fp[TLS_FINGERPRINT_LEN], char *out)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < TLS_FINGERPRINT_LEN; i++) {
		*out++ = hex[fp[i] >> 4];
		*out++ = hex[fp[i] & 15];
		*out++ = i + 1 < TLS_FINGERPRINT_LEN ? ':' : '\0';
	}
}

static int tls_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int tls_fingerprint_parse(const char *s, uint8_t out[TLS_FINGERPRINT_LEN])
{
	static const char openssl_prefix[] = "sha256 fingerprint=";
	static const char prefix[] = "sha256:";
	bool colons_required = true;
	size_t n = 0;

	if (!s)
		return -EINVAL;
	if (strncasecmp(s, openssl_prefix, sizeof(openssl_prefix) - 1) == 0) {
		s += sizeof(openssl_prefix) - 1;
	} else if (strncasecmp(s, prefix, sizeof(prefix) - 1) == 0) {
		s += sizeof(prefix) - 1;
		colons_required = false;
	}
	while (n < TLS_FINGERPRINT_LEN) {
		int hi = tls_hexval((unsigned char)s[0]);
		int lo = hi >= 0 ? tls_hexval((unsigned char)s[1]) : -1;

		if (lo < 0)
			return -EINVAL;
		out[n++] = (uint8_t)(hi << 4 | lo);
		s += 2;
		if (n == TLS_FINGERPRINT_LEN)
			break;
		if (*s == ':')
			s++;
		else if (colons_required)
			return -EINVAL;
	}
	return *s == '\0' ? 0 : -EINVAL;
}
