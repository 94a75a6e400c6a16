/* SPDX-License-Identifier: MIT */
/*
 * The server certificate at run time: what is in use (`stanzactl certs
 * show`) and replacing it without a restart (`stanzactl certs reload`).
 *
 * A reload reads the certificate chain and the key into memory, checks
 * that they belong together, and only then installs them into the TLS
 * context the listeners share (SSL_CTX_use_cert_and_key). Connections
 * already established keep the certificate they were made with (OpenSSL
 * copies it into each connection); every handshake after the reload uses
 * the new one. A file that cannot be read or a key that does not match
 * leaves the running certificate untouched. The ticket keys, the client
 * CA and the kTLS callbacks live in the same context and are kept, so
 * session tickets issued before the reload still resume.
 *
 * Runs on the loop of worker 0 (the control socket's): with one worker
 * nothing else touches the context meanwhile.
 */
#ifndef STANZAD_TLS_CERTS_H
#define STANZAD_TLS_CERTS_H

#include <stdbool.h>
#include <stddef.h>

struct tls_server;

struct tls_cert_info {
	char subject[256];	/* RFC 2253 */
	char issuer[256];
	char not_before[32];	/* ISO 8601, UTC */
	char not_after[32];
	long long not_after_epoch;
	char serial[80];	/* hex */
	char sha256[100];	/* fingerprint, AA:BB:... */
	char dns_names[512];	/* subjectAltName DNS entries, comma-separated */
	char key[48];		/* "EC 256", "RSA 2048" */
	bool self_signed;	/* subject = issuer and it verifies with its own key */
};

/* Describes the certificate srv uses. 0, or -ENOENT when there is none. */
int tls_certs_describe(const struct tls_server *srv, struct tls_cert_info *out);

/*
 * Installs cert_file (PEM chain, leaf first) and key_file (PEM) into
 * srv's context (and so every sibling sharing it). 0, or -errno with one
 * line saying why in why[]: -ENOENT/-EACCES (a file), -EINVAL (not PEM),
 * -EKEYREJECTED (the key is not the certificate's).
 */
int tls_certs_reload(struct tls_server *srv, const char *cert_file, const char *key_file,
		     char *why, size_t why_size);

#endif
