/* SPDX-License-Identifier: MIT */
/*
 * Client certificates on c2s TLS, for SASL EXTERNAL (XEP-0178).
 *
 * With a client CA configured (client_ca, optionally client_crl), a c2s
 * connection's TLS handshake asks the client for a certificate without
 * requiring one (SSL_VERIFY_PEER, no FAIL_IF_NO_PEER_CERT), and a
 * certificate that does not verify does not fail the handshake either:
 * the verdict is recorded and SASL decides (EXTERNAL is offered only for
 * a verified certificate, and refused with not-authorized for any other).
 *
 * What SASL needs is captured when the handshake completes, because the
 * kTLS handoff frees the SSL object right after: the verdict, the SHA-256
 * fingerprint of the certificate and the JIDs it names. Connections
 * without a client certificate carry one NULL pointer.
 */
#ifndef STANZAD_TLS_CLIENT_CERT_H
#define STANZAD_TLS_CLIENT_CERT_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define TLS_PEER_JIDS_MAX	4	/* JIDs kept from one certificate */
#define TLS_PEER_JID_MAX	3071	/* longest JID text kept (bytes, JID_MAX - 1) */
#define TLS_FINGERPRINT_LEN	32	/* SHA-256 of the DER certificate */

struct tls_peer_cert {
	bool verified;			/* chains to the client CA, not revoked by the CRL */
	int verify_error;		/* X509_V_* when not verified (for the log) */
	uint8_t sha256[TLS_FINGERPRINT_LEN];
	/*
	 * The id-on-xmppAddr otherNames of the subjectAltName (RFC 6120
	 * 13.7.1.4); when there are none, its rfc822Name entries. As the
	 * certificate spells them (UTF-8, not yet normalized); at most
	 * TLS_PEER_JIDS_MAX, longer or malformed entries skipped.
	 */
	unsigned njids;
	char *jids[TLS_PEER_JIDS_MAX];
};

/*
 * Configures ctx to verify client certificates against the CA
 * certificates in ca_file (PEM, one or more) and, when crl_file is not
 * NULL, the CRLs in crl_file (PEM; the leaf is checked against them).
 * Also names the CAs in the CertificateRequest and sets the session id
 * context that OpenSSL requires for resumption once peers are verified.
 * Nothing is asked of clients until tls_client_cert_request() is called
 * on a connection. 0, or -errno with a log line naming the file
 * (-ENOENT/-EACCES, -EINVAL: no certificate or CRL in it, -ENOMEM).
 */
int tls_client_ca_configure(SSL_CTX *ctx, const char *ca_file, const char *crl_file);

/* Asks this connection's peer for an optional certificate. */
void tls_client_cert_request(SSL *ssl);

/*
 * After the handshake: what the peer's certificate says, or NULL when it
 * sent none (or no certificate was requested, or out of memory: then
 * EXTERNAL is simply not available). Free with tls_peer_cert_free().
 */
struct tls_peer_cert *tls_peer_cert_capture(SSL *ssl);
void tls_peer_cert_free(struct tls_peer_cert *pc);

/*
 * Fingerprint text as OpenSSL prints it ("AB:CD:..."), for logs and
 * stanzactl: out must hold 3 * TLS_FINGERPRINT_LEN bytes.
 */
void tls_fingerprint_format(const uint8_t fp[TLS_FINGERPRINT_LEN], char *out);

/*
 * Parses a fingerprint: "sha256:" followed by 64 hex digits (colons
 * between byte pairs allowed), or 32 colon-separated hex byte pairs as
 * `openssl x509 -fingerprint -sha256` prints them (its "SHA256
 * Fingerprint=" prefix allowed). Case-insensitive. 0 or -EINVAL.
 */
int tls_fingerprint_parse(const char *s, uint8_t out[TLS_FINGERPRINT_LEN]);

#endif
