/* SPDX-License-Identifier: MIT */
/*
 * Showing and reloading the server certificate (see tls_certs.h).
 */
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tls.h"
#include "tls_certs.h"

/* "2027-01-31T12:00:00Z" and the epoch seconds of an ASN.1 time. */
static void tls_certs_time(const ASN1_TIME *t, char *out, size_t size, long long *epoch)
{
	struct tm tm;

	out[0] = '\0';
	if (epoch)
		*epoch = 0;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return;
	strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (epoch)
		*epoch = (long long)timegm(&tm);
}

static void tls_certs_name(const X509_NAME *name, char *out, size_t size)
{
	BIO *b = BIO_new(BIO_s_mem());
	int n;

	out[0] = '\0';
	if (!b)
		return;
	if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
		n = BIO_read(b, out, (int)size - 1);
		out[n > 0 ? n : 0] = '\0';
	}
	BIO_free(b);
}

static void tls_certs_dns_names(X509 *x, char *out, size_t size)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t n = 0;

	out[0] = '\0';
	if (!names)
		return;
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		const unsigned char *d;
		int len;

		if (g->type != GEN_DNS)
			continue;
		d = ASN1_STRING_get0_data(g->d.dNSName);
		len = ASN1_STRING_length(g->d.dNSName);
		if (n + (size_t)len + 2 >= size)
			break;
		n += (size_t)snprintf(out + n, size - n, "%s%.*s", n ? "," : "", len, (const char *)d);
	}
	GENERAL_NAMES_free(names);
}

int tls_certs_describe(const struct tls_server *srv, struct tls_cert_info *out)
{
	SSL_CTX *ctx = tls_server_ctx(srv);
	X509 *x = ctx ? SSL_CTX_get0_certificate(ctx) : NULL;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_PKEY *pk;
	BIGNUM *bn;

	memset(out, 0, sizeof(*out));
	if (!x)
		return -ENOENT;
	tls_certs_name(X509_get_subject_name(x), out->subject, sizeof(out->subject));
	tls_certs_name(X509_get_issuer_name(x), out->issuer, sizeof(out->issuer));
	tls_certs_time(X509_get0_notBefore(x), out->not_before, sizeof(out->not_before), NULL);
	tls_certs_time(X509_get0_notAfter(x), out->not_after, sizeof(out->not_after),
		       &out->not_after_epoch);
	bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	if (bn) {
		char *hex = BN_bn2hex(bn);

		if (hex)
			snprintf(out->serial, sizeof(out->serial), "%s", hex);
		OPENSSL_free(hex);
		BN_free(bn);
	}
	if (X509_digest(x, EVP_sha256(), md, &mdlen)) {
		size_t n = 0;

		/* 32 bytes as "AA:BB:..." take 95 characters. */
		for (unsigned i = 0; i < mdlen && n + 4 <= sizeof(out->sha256); i++)
			n += (size_t)snprintf(out->sha256 + n, sizeof(out->sha256) - n, "%s%02X",
					      i ? ":" : "", md[i]);
	}
	pk = X509_get0_pubkey(x);
	if (pk)
		snprintf(out->key, sizeof(out->key), "%s %d",
			 EVP_PKEY_get0_type_name(pk) ? EVP_PKEY_get0_type_name(pk) : "?",
			 EVP_PKEY_get_bits(pk));
	out->self_signed = X509_check_issued(x, x) == X509_V_OK;
	tls_certs_dns_names(x, out->dns_names, sizeof(out->dns_names));
	ERR_clear_error();
	return 0;
}

/* The first queued OpenSSL reason, or `fallback`. */
static const char *tls_certs_ssl_reason(const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	return r ? r : fallback;
}

/* Reads the PEM chain: the leaf into *leaf, the rest into *chain. 0 or -errno. */
static int tls_certs_read_chain(const char *file, X509 **leaf, STACK_OF(X509) **chain,
				char *why, size_t why_size)
{
	BIO *b = BIO_new_file(file, "r");
	X509 *x;

	*leaf = NULL;
	*chain = NULL;
	if (!b) {
		int e = errno ? errno : ENOENT;

		snprintf(why, why_size, "cannot read certificate %s: %s", file, strerror(e));
		return -e;
	}
	*leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
	if (!*leaf) {
		snprintf(why, why_size, "no PEM certificate in %s (%s)", file,
			 tls_certs_ssl_reason("not PEM"));
		BIO_free(b);
		return -EINVAL;
	}
	*chain = sk_X509_new_null();
	while (*chain && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_push(*chain, x)) {
			X509_free(x);
			break;
		}
	}
	BIO_free(b);
	/* The end of the file reads as "no start line": expected, not an error. */
	ERR_clear_error();
	return 0;
}

int tls_certs_reload(struct tls_server *srv, const char *cert_file, const char *key_file,
		     char *why, size_t why_size)
{
	SSL_CTX *ctx = tls_server_ctx(srv);
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *pkey = NULL;
	X509 *leaf = NULL;
	BIO *b;
	int ret;

	why[0] = '\0';
	if (!ctx) {
		snprintf(why, why_size, "TLS is not set up");
		return -ENOENT;
	}
	ERR_clear_error();
	ret = tls_certs_read_chain(cert_file, &leaf, &chain, why, why_size);
	if (ret < 0)
		goto out;
	b = BIO_new_file(key_file, "r");
	if (!b) {
		ret = errno ? -errno : -ENOENT;
		snprintf(why, why_size, "cannot read key %s: %s", key_file, strerror(-ret));
		goto out;
	}
	pkey = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	if (!pkey) {
		snprintf(why, why_size, "no PEM private key in %s (%s)", key_file,
			 tls_certs_ssl_reason("not PEM"));
		ret = -EINVAL;
		goto out;
	}
	if (X509_check_private_key(leaf, pkey) != 1) {
		snprintf(why, why_size, "the key in %s does not belong to the certificate in %s",
			 key_file, cert_file);
		ret = -EKEYREJECTED;
		goto out;
	}
	/* Certificate, key and chain in one call: never a mismatched pair in use. */
	if (SSL_CTX_use_cert_and_key(ctx, leaf, pkey, chain, 1) != 1) {
		snprintf(why, why_size, "OpenSSL refused the certificate (%s)",
			 tls_certs_ssl_reason("unknown reason"));
		ret = -EINVAL;
		goto out;
	}
	ret = 0;
out:
	ERR_clear_error();
	EVP_PKEY_free(pkey);
	X509_free(leaf);
	sk_X509_pop_free(chain, X509_free);
	return ret;
}
