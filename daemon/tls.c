/* SPDX-License-Identifier: MIT */
/*
 * Userspace TLS on OpenSSL 3, driven by buffers instead of sockets.
 *
 * The loop owns the socket. Each connection has one custom BIO that plays
 * both roles OpenSSL needs:
 *   - read: serves the bytes tls_conn_input() lends for the duration of one
 *     call and says "retry" once they are used up, so a partial record is
 *     kept by OpenSSL in its own (released-when-empty) read buffer and the
 *     caller never has to keep leftovers;
 *   - write: passes every record straight to the connection's sink (its
 *     output queue). No BIO_s_mem in between, so no second copy.
 * One BIO object instead of two saves a BIO and its lock (about 250 bytes)
 * per connection; read and write clear their own retry flags, so sharing
 * is safe (socket BIOs are shared the same way).
 *
 * Because the sink accepts everything, OpenSSL never sees a short write:
 * SSL_write() always completes or fails, and partial-write modes are not
 * needed.
 *
 * After a TLS 1.3 handshake (and unless kTLS takes the connection) the SSL
 * object is freed and this file seals and opens the records itself with
 * the negotiated suite and traffic secrets: "lean mode", below. It is what
 * keeps an idle TLS connection near the size of a plain one.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ktls.h"
#include "log.h"
#include "tls.h"
#include "tls_client_cert.h"

/* TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only, fastest first. */
#define TLS_CIPHERS_TLS12                                                     \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"          \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"          \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
/* TLS 1.3 suites; all three can be handed to kTLS later. */
#define TLS_CIPHERS_TLS13 \
	"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
#define TLS_GROUPS		"X25519:P-256:P-384"

#define TLS_NUM_TICKETS		1	/* TLS 1.3 tickets per handshake (one reconnect) */
#define TLS_SESSION_LIFETIME	7200	/* seconds a ticket stays valid */
#define TLS_READ_CHUNK		16384	/* largest plaintext record (RFC 8446 5.1) */
#define TLS_STASH_MAX		(256 * 1024)	/* input kept while the reader is stopped */
#define TLS_ALPN_NAME_MAX	255	/* one ALPN protocol name (RFC 7301) */
#define TLS_DOMAIN_MAX		253	/* DNS name in text form */
#define TLS_CN_MAX		64	/* X.520 ub-common-name */
#define TLS_CERT_DAYS		3650	/* self-signed validity */
#define TLS_CERT_BACKDATE	3600	/* seconds, for peers with a slow clock */
#define TLS_SERIAL_BYTES	16	/* 128-bit random serial */
#define TLS_EXPORTER_LEN	32	/* RFC 9266 */
#define TLS_EXPORTER_LABEL	"EXPORTER-Channel-Binding"
#define TLS_RECORD_HEADER	5	/* type, version, length (RFC 8446 5.1) */
#define TLS_FINISHED_MAX	64	/* longest Finished (SHA-512 sized), for tls-unique */

struct tls_server {
	SSL_CTX *ctx;			/* shared between siblings, refcounted */
	unsigned ktls_mask;		/* KTLS_BIT pairs connections may hand over */
	size_t alpn_len;		/* 0: any ALPN offer is ignored */
	char alpn[TLS_ALPN_NAME_MAX + 1];
	bool client_ca;			/* a client CA is loaded (tls_server_set_client_ca) */
	bool lean;			/* TLS 1.3 connections may drop their SSL (tls_lean_*) */
};

enum tls_conn_state {
	TLS_ST_HANDSHAKE = 0,
	TLS_ST_OPEN,
	TLS_ST_CLOSED,			/* close_notify received */
	TLS_ST_FAILED,			/* fatal error: no more SSL calls but free */
	TLS_ST_KERNEL,			/* kTLS: the SSL object is gone */
	TLS_ST_LEAN,			/* TLS 1.3 records sealed here: the SSL object is gone */
};

/*
 * Record framing of what the peer sent, followed byte by byte as OpenSSL
 * reads them through the BIO, to know the sequence number the kernel must
 * continue from and whether OpenSSL holds part of a record.
 */
struct tls_rec_track {
	uint64_t records;		/* complete records in the current epoch */
	uint32_t left;			/* body bytes of the current record still to come */
	uint8_t hdr[TLS_RECORD_HEADER];
	uint8_t hdr_len;		/* header bytes of the current record seen */
	uint8_t empty_run;		/* records in a row without data (TLS_LEAN_EMPTY_MAX) */
};

/*
 * What the kTLS handoff collects during the handshake (freed after it).
 * A direction's epoch starts (records = 0) when its application keys take
 * over: after ChangeCipherSpec in TLS 1.2; in TLS 1.3 at the server
 * traffic secret for ours and at the end of the handshake for the peer's.
 * Our records are counted as OpenSSL seals them (message callback), not
 * as they reach the BIO: during the handshake OpenSSL buffers a whole
 * flight before writing it, while the key change happens at once.
 */
struct tls_ktls_state {
	uint64_t tx_records;		/* records sealed in our current epoch */
	struct tls_rec_track rx;
	uint8_t client_secret[KTLS_SECRET_MAX];	/* TLS 1.3 application traffic secrets */
	uint8_t server_secret[KTLS_SECRET_MAX];
	uint8_t client_secret_len;
	uint8_t server_secret_len;
	bool stale;			/* keys changed or framing lost: no handoff */
};

/* What stays of a connection after the handoff, for accessors and SASL. */
struct tls_kernel_cache {
	const char *version;		/* OpenSSL's static strings */
	const char *cipher;
	bool tls13;
	bool alpn;			/* our ALPN name was selected */
	uint8_t exporter_len;		/* 0: tls-exporter does not apply */
	uint8_t unique_len;
	uint8_t end_point_len;
	unsigned char exporter[TLS_EXPORTER_LEN];
	unsigned char unique[TLS_FINISHED_MAX];
	/*
	 * tls-server-end-point of the certificate this handshake used: the
	 * context's may have been replaced since by a reload (on worker 0,
	 * while this connection's worker runs).
	 */
	unsigned char end_point[EVP_MAX_MD_SIZE];
};

/* Lean mode (see "Lean mode" below). */
#define TLS_LEAN_TAG		16		/* AEAD tag of every suite here */
#define TLS_LEAN_NONCE		12		/* RFC 8446 5.3 */
#define TLS_LEAN_PLAIN_MAX	16384		/* TLSInnerPlaintext content (RFC 8446 5.1) */
#define TLS_LEAN_CIPHER_MAX	(16384 + 256)	/* TLSCiphertext.length (RFC 8446 5.2) */
#define TLS_LEAN_HS_HEADER	4		/* msg_type, uint24 length */
#define TLS_LEAN_EMPTY_MAX	32		/* records in a row that carry no data */

/* TLS alert descriptions (RFC 8446 6). */
#define TLS_ALERT_UNEXPECTED_MESSAGE	10
#define TLS_ALERT_BAD_RECORD_MAC	20
#define TLS_ALERT_RECORD_OVERFLOW	22
#define TLS_ALERT_ILLEGAL_PARAMETER	47
#define TLS_ALERT_DECODE_ERROR		50

struct tls_lean_dir {
	uint64_t seq;			/* next record's sequence number */
	uint8_t secret[KTLS_SECRET_MAX];	/* current application traffic secret */
	uint8_t key[32];
	uint8_t iv[TLS_LEAN_NONCE];
};

struct tls_lean {
	const EVP_CIPHER *aead;		/* fetched once per process */
	uint8_t suite;			/* enum ktls_cipher: the suite's hash and key size */
	uint8_t secret_len;		/* the suite's hash length */
	uint8_t key_len;
	uint8_t hdr_len;		/* header bytes of the current record seen */
	uint8_t empty_run;		/* records in a row without data (TLS_LEAN_EMPTY_MAX) */
	uint8_t hdr[TLS_RECORD_HEADER];
	struct tls_lean_dir rx, tx;
	/* Body of a record that arrived in pieces (heap, NULL between records). */
	unsigned char *body;
	size_t body_have;
};

struct tls_conn {
	SSL *ssl;
	const struct tls_server *srv;
	tls_sink_fn sink;
	void *sink_arg;
	/* Ciphertext lent by tls_conn_input(); valid only during that call. */
	const unsigned char *in;
	size_t in_len;
	size_t in_off;
	/* Unconsumed input kept after TLS_STOPPED (heap, NULL when empty). */
	unsigned char *stash;
	size_t stash_len;
	char *err;			/* heap reason, or NULL */
	const char *err_static;		/* fallback reason if err could not be built */
	int sink_err;			/* first error the sink returned */
	uint8_t state;			/* enum tls_conn_state */
	bool hs_done;			/* the handshake completed (sticky) */
	bool in_input;			/* tls_conn_input() is on the stack */
	bool shutdown_sent;
	struct tls_ktls_state *ktls;	/* handoff bookkeeping, NULL when off or done */
	struct tls_kernel_cache *kc;	/* after the handoff */
	struct tls_peer_cert *peer;	/* client certificate, captured at the handshake */
	struct tls_lean *lean;		/* TLS 1.3 record state once the SSL is freed */
};

static void tls_track_bytes(struct tls_rec_track *r, const unsigned char *p, size_t n);
struct tls_lean;
static void tls_lean_free(struct tls_lean *l);
static enum tls_status tls_lean_read_all(struct tls_conn *t, tls_plain_fn on_plain, void *arg);
static int tls_lean_write(struct tls_conn *t, const void *data, size_t len);
static void tls_lean_shutdown(struct tls_conn *t);
static void tls_conn_go_lean(struct tls_conn *t);

/* ---------------------------------------------------------------------- */
/* The buffer BIO                                                          */

static BIO_METHOD *tls_bio_method;
static pthread_once_t tls_bio_once = PTHREAD_ONCE_INIT;

/* Read side: hands out the lent slice, then asks OpenSSL to retry later. */
static int tls_bio_read(BIO *b, char *buf, size_t cap, size_t *got)
{
	struct tls_conn *t = BIO_get_data(b);
	size_t n = t->in_len - t->in_off;

	BIO_clear_retry_flags(b);
	if (n == 0) {
		*got = 0;
		BIO_set_retry_read(b);
		return 0;
	}
	if (n > cap)
		n = cap;
	memcpy(buf, t->in + t->in_off, n);
	if (t->ktls)
		tls_track_bytes(&t->ktls->rx, t->in + t->in_off, n);
	t->in_off += n;
	*got = n;
	return 1;
}

/*
 * Write side: every record goes to the sink as OpenSSL produces it. A sink
 * failure is remembered and reported as a hard (non-retry) BIO error, which
 * makes the SSL call fail with SSL_ERROR_SYSCALL.
 */
static int tls_bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
	struct tls_conn *t = BIO_get_data(b);
	int ret;

	BIO_clear_retry_flags(b);
	*written = 0;
	if (t->sink_err)
		return 0;
	ret = t->sink(t->sink_arg, data, len);
	if (ret != 0) {
		t->sink_err = ret < 0 ? ret : -EIO;
		return 0;
	}
	*written = len;
	return 1;
}

static long tls_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	/* Flush must succeed or the handshake state machine stalls. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void tls_bio_init_once(void)
{
	BIO_METHOD *m;

	m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "stanzad-buffer");
	if (!m)
		return;
	if (!BIO_meth_set_read_ex(m, tls_bio_read) || !BIO_meth_set_write_ex(m, tls_bio_write) ||
	    !BIO_meth_set_ctrl(m, tls_bio_ctrl)) {
		BIO_meth_free(m);
		return;
	}
	tls_bio_method = m;
}

/* ---------------------------------------------------------------------- */
/* kTLS bookkeeping during the handshake                                   */

/* One received record is complete: count it, or start the epoch at CCS. */
static void tls_track_record_done(struct tls_rec_track *r)
{
	r->records++;
	/*
	 * TLS 1.2: the record after ChangeCipherSpec is the first under the
	 * new keys. TLS 1.3's compatibility CCS changes nothing; the epoch is
	 * set again at the end of the handshake.
	 */
	if (r->hdr[0] == SSL3_RT_CHANGE_CIPHER_SPEC)
		r->records = 0;
	r->hdr_len = 0;
	r->left = 0;
}

static void tls_track_bytes(struct tls_rec_track *r, const unsigned char *p, size_t n)
{
	while (n) {
		size_t k;

		if (r->hdr_len < TLS_RECORD_HEADER) {
			k = TLS_RECORD_HEADER - r->hdr_len;
			if (k > n)
				k = n;
			memcpy(r->hdr + r->hdr_len, p, k);
			r->hdr_len += (uint8_t)k;
			p += k;
			n -= k;
			if (r->hdr_len == TLS_RECORD_HEADER) {
				r->left = (uint32_t)r->hdr[3] << 8 | r->hdr[4];
				if (!r->left)
					tls_track_record_done(r);
			}
			continue;
		}
		k = r->left < n ? r->left : n;
		r->left -= (uint32_t)k;
		p += k;
		n -= k;
		if (!r->left)
			tls_track_record_done(r);
	}
}

/* Parses up to max bytes of hex; returns the byte count, or -1 if malformed. */
static int tls_parse_hex(const char *s, size_t slen, uint8_t *out, size_t max)
{
	size_t n = 0;

	if (slen % 2 || slen / 2 > max)
		return -1;
	for (size_t i = 0; i < slen; i += 2) {
		int hi = OPENSSL_hexchar2int((unsigned char)s[i]);
		int lo = OPENSSL_hexchar2int((unsigned char)s[i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[n++] = (uint8_t)(hi << 4 | lo);
	}
	return (int)n;
}

/*
 * Keylog callback ("LABEL <client random> <secret>", NSS key log format):
 * keeps the TLS 1.3 application traffic secrets, which OpenSSL offers no
 * other way. Our side's epoch starts here: OpenSSL logs the secret in the
 * same step that switches its write keys. Nothing is ever written out.
 */
static void tls_keylog_cb(const SSL *ssl, const char *line)
{
	static const char client_label[] = "CLIENT_TRAFFIC_SECRET_0 ";
	static const char server_label[] = "SERVER_TRAFFIC_SECRET_0 ";
	struct tls_conn *t = SSL_get_app_data(ssl);
	struct tls_ktls_state *k = t ? t->ktls : NULL;
	const char *p, *secret;
	uint8_t *dst, *dst_len;
	int n;

	if (!k)
		return;
	if (strncmp(line, client_label, sizeof(client_label) - 1) == 0) {
		p = line + sizeof(client_label) - 1;
		dst = k->client_secret;
		dst_len = &k->client_secret_len;
	} else if (strncmp(line, server_label, sizeof(server_label) - 1) == 0) {
		p = line + sizeof(server_label) - 1;
		dst = k->server_secret;
		dst_len = &k->server_secret_len;
		k->tx_records = 0;
	} else {
		return;
	}
	secret = strchr(p, ' ');	/* skip the client random */
	n = secret ? tls_parse_hex(secret + 1, strlen(secret + 1), dst, KTLS_SECRET_MAX) : -1;
	if (n <= 0) {
		k->stale = true;
		return;
	}
	*dst_len = (uint8_t)n;
}

/*
 * Message callback: counts the records OpenSSL seals for us, and notices
 * handshake messages after the handshake (KeyUpdate, renegotiation), which
 * change keys the handoff could not follow.
 */
static void tls_msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
		       SSL *ssl, void *arg)
{
	struct tls_conn *t = SSL_get_app_data(ssl);
	struct tls_ktls_state *k = t ? t->ktls : NULL;

	if (!k)
		return;
	if (content_type == SSL3_RT_HEADER && write_p && len == TLS_RECORD_HEADER) {
		const unsigned char *h = buf;

		k->tx_records++;
		if (h[0] == SSL3_RT_CHANGE_CIPHER_SPEC)
			k->tx_records = 0;
		return;
	}
	if (content_type == SSL3_RT_HANDSHAKE && t->hs_done)
		k->stale = true;
}

void tls_server_enable_ktls(struct tls_server *srv, unsigned mask)
{
	srv->ktls_mask = mask;
	if (mask)
		SSL_CTX_set_keylog_callback(srv->ctx, tls_keylog_cb);
}

/* ---------------------------------------------------------------------- */
/* Error reporting                                                         */

/* OpenSSL's reason for one queued error, never NULL. */
static const char *tls_err_reason(unsigned long e)
{
	const char *r;

	if (e == 0)
		return "unknown error";
	if (ERR_SYSTEM_ERROR(e)) {
		/* ERR_reason_error_string() has no text for errno values. */
		r = strerrordesc_np(ERR_GET_REASON(e));
		return r ? r : "system error";
	}
	r = ERR_reason_error_string(e);
	return r ? r : "unknown error";
}

/*
 * Drains the thread's OpenSSL error queue (it is per thread, so a stale
 * entry would be blamed on the next connection). Returns the reason of the
 * earliest entry, which names the root cause, and stores an errno for it.
 * With detail non-NULL, the entry's extra text (e.g. "No supported data to
 * decode. Input type: PEM") is copied there, or "" if it has none.
 */
static const char *tls_err_drain_detail(int *err_out, char *detail, size_t detail_size)
{
	unsigned long e, first = 0;
	const char *data;
	int err = 0, flags;

	if (detail && detail_size)
		detail[0] = '\0';
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		if (!first) {
			first = e;
			/* A system error's text is "calling fopen(path)": the path is logged anyway. */
			if (detail && (flags & ERR_TXT_STRING) && data && !ERR_SYSTEM_ERROR(e))
				snprintf(detail, detail_size, "%s", data);
		}
		if (err)
			continue;
		if (ERR_SYSTEM_ERROR(e) && ERR_GET_REASON(e) > 0)
			err = ERR_GET_REASON(e);
		else if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
			 (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH ||
			  ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH))
			err = EKEYREJECTED;
		else if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
			err = ENOMEM;
	}
	if (err_out)
		*err_out = err ? err : EINVAL;
	return tls_err_reason(first);
}

static const char *tls_err_drain(int *err_out)
{
	return tls_err_drain_detail(err_out, NULL, 0);
}

/*
 * Logs one line naming the file (and the certificate a key was checked
 * against, if cert is non-NULL) and the OpenSSL reason; sets errno.
 */
static void tls_log_file_error(const char *event, const char *file, const char *cert,
			       int err_override)
{
	char path[256], cpath[256], why[200], detail[120], text[240];
	const char *reason;
	int err;

	reason = tls_err_drain_detail(&err, detail, sizeof(detail));
	if (detail[0])
		snprintf(text, sizeof(text), "%s (%s)", reason, detail);
	else
		snprintf(text, sizeof(text), "%s", reason);
	log_error(event, "file=%s%s%s reason=%s",
		  log_sanitize(path, sizeof(path), file, strlen(file)), cert ? " cert=" : "",
		  cert ? log_sanitize(cpath, sizeof(cpath), cert, strlen(cert)) : "",
		  log_sanitize(why, sizeof(why), text, strlen(text)));
	errno = err_override ? err_override : err;
}

/* Records "phase: reason" as the connection's error and marks it failed. */
static void tls_conn_fail(struct tls_conn *t, const char *phase, const char *reason)
{
	free(t->err);
	t->err = NULL;
	if (asprintf(&t->err, "%s: %s", phase, reason) < 0)
		t->err = NULL;
	t->err_static = phase;
	t->state = TLS_ST_FAILED;
}

/* Turns a failed SSL call into a reason; ret is what the call returned. */
static void tls_conn_fail_ssl(struct tls_conn *t, const char *phase, int ret)
{
	int code = SSL_get_error(t->ssl, ret);
	char why[64];

	if (t->sink_err) {
		ERR_clear_error();
		snprintf(why, sizeof(why), "output sink failed (%s)",
			 strerrorname_np(-t->sink_err) ? strerrorname_np(-t->sink_err) : "?");
		tls_conn_fail(t, phase, why);
		return;
	}
	if (code == SSL_ERROR_SSL || ERR_peek_error()) {
		tls_conn_fail(t, phase, tls_err_drain(NULL));
		return;
	}
	/* SYSCALL without a sink error, or a state we never ask for. */
	snprintf(why, sizeof(why), "unexpected OpenSSL state %d", code);
	tls_conn_fail(t, phase, why);
}

/* ---------------------------------------------------------------------- */
/* Server context                                                          */

/*
 * ALPN selection (XEP-0368). With a required protocol: pick it if the
 * client offers it, otherwise fail the handshake with no_application_protocol.
 * Without one (STARTTLS port): ignore whatever is offered. Clients offering
 * no ALPN at all never reach this callback and are accepted.
 */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			   const unsigned char *in, unsigned int inlen, void *arg)
{
	const struct tls_conn *t = SSL_get_app_data(ssl);
	const struct tls_server *srv = t ? t->srv : NULL;
	unsigned int i = 0;

	if (!srv || srv->alpn_len == 0)
		return SSL_TLSEXT_ERR_NOACK;
	/* OpenSSL has validated the list framing; stay in bounds anyway. */
	while (i < inlen) {
		unsigned int n = in[i];

		if (n == 0 || n > inlen - i - 1)
			break;
		if (n == srv->alpn_len && memcmp(in + i + 1, srv->alpn, n) == 0) {
			*out = (const unsigned char *)srv->alpn;
			*outlen = (unsigned char)n;
			return SSL_TLSEXT_ERR_OK;
		}
		i += n + 1;
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Copies an ALPN name into srv; 0 or -EINVAL for an empty or long name. */
static int tls_server_set_alpn(struct tls_server *srv, const char *alpn)
{
	size_t n;

	srv->alpn_len = 0;
	srv->alpn[0] = '\0';
	if (!alpn)
		return 0;
	n = strlen(alpn);
	if (n == 0 || n > TLS_ALPN_NAME_MAX)
		return -EINVAL;
	memcpy(srv->alpn, alpn, n + 1);
	srv->alpn_len = n;
	return 0;
}

/* Protocol policy of the context; 0 or -EINVAL (logged). */
static int tls_ctx_configure(SSL_CTX *ctx)
{
	const char *what;

	/*
	 * No compression (CRIME), no renegotiation (it breaks tls-unique and
	 * kTLS, and costs CPU for nothing), server picks the suite, but lets a
	 * client that prefers ChaCha20 (no AES hardware) have it.
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE |
					 SSL_OP_PRIORITIZE_CHACHA);
	SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
	/* Idle connections give their 17 KiB record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/*
	 * Resumption is by stateless tickets only: a server-side session cache
	 * would pin one session per connection in a table shared (and locked)
	 * by all workers. Ticket keys are made by OpenSSL per context.
	 */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, TLS_SESSION_LIFETIME);

	what = "min protocol";
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
		goto err;
	what = "cipher list";
	if (!SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_TLS12))
		goto err;
	what = "cipher suites";
	if (!SSL_CTX_set_ciphersuites(ctx, TLS_CIPHERS_TLS13))
		goto err;
	what = "groups";
	if (!SSL_CTX_set1_groups_list(ctx, TLS_GROUPS))
		goto err;
	what = "tickets";
	if (!SSL_CTX_set_num_tickets(ctx, TLS_NUM_TICKETS))
		goto err;
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
	return 0;

err:
	log_error("tls.config", "setting=\"%s\" reason=\"%s\"", what, tls_err_drain(NULL));
	return -EINVAL;
}

struct tls_server *tls_server_new(const char *cert_file, const char *key_file,
				  const char *alpn)
{
	struct tls_server *srv;
	int err;

	pthread_once(&tls_bio_once, tls_bio_init_once);
	if (!tls_bio_method) {
		errno = ENOMEM;
		return NULL;
	}
	if (!cert_file || !key_file) {
		errno = EINVAL;
		return NULL;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return NULL;
	if (tls_server_set_alpn(srv, alpn) < 0) {
		log_error("tls.config", "reason=\"ALPN name must be 1-255 bytes\"");
		err = EINVAL;
		goto err_free_srv;
	}

	ERR_clear_error();
	srv->ctx = SSL_CTX_new(TLS_server_method());
	if (!srv->ctx) {
		tls_err_drain(&err);
		log_error("tls.config", "reason=\"cannot create SSL_CTX\"");
		goto err_free_srv;
	}
	if (tls_ctx_configure(srv->ctx) < 0) {
		err = EINVAL;
		goto err_free_ctx;
	}
	if (SSL_CTX_use_certificate_chain_file(srv->ctx, cert_file) != 1) {
		tls_log_file_error("tls.cert_load", cert_file, NULL, 0);
		err = errno;
		goto err_free_ctx;
	}
	/* Also checks the key against the certificate when both are EC/RSA alike. */
	if (SSL_CTX_use_PrivateKey_file(srv->ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		tls_log_file_error("tls.key_load", key_file, cert_file, 0);
		err = errno;
		goto err_free_ctx;
	}
	if (SSL_CTX_check_private_key(srv->ctx) != 1) {
		tls_log_file_error("tls.key_mismatch", key_file, cert_file, EKEYREJECTED);
		err = EKEYREJECTED;
		goto err_free_ctx;
	}
	/* Lean mode needs the TLS 1.3 traffic secrets, as the kTLS handoff does. */
	srv->lean = true;
	SSL_CTX_set_keylog_callback(srv->ctx, tls_keylog_cb);
	return srv;

err_free_ctx:
	SSL_CTX_free(srv->ctx);
err_free_srv:
	free(srv);
	errno = err;
	return NULL;
}

struct tls_server *tls_server_share(const struct tls_server *base, const char *alpn)
{
	struct tls_server *srv;

	if (!base) {
		errno = EINVAL;
		return NULL;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return NULL;
	if (tls_server_set_alpn(srv, alpn) < 0) {
		free(srv);
		errno = EINVAL;
		return NULL;
	}
	if (!SSL_CTX_up_ref(base->ctx)) {
		free(srv);
		errno = ENOMEM;
		return NULL;
	}
	srv->ctx = base->ctx;
	srv->lean = base->lean;
	return srv;
}

void tls_server_free(struct tls_server *srv)
{
	if (!srv)
		return;
	SSL_CTX_free(srv->ctx);
	free(srv);
}

struct ssl_ctx_st *tls_server_ctx(const struct tls_server *srv)
{
	return srv ? srv->ctx : NULL;
}

/* Client certificates (SASL EXTERNAL): tls_client_cert.c does the work. */
int tls_server_set_client_ca(struct tls_server *srv, const char *ca_file, const char *crl_file)
{
	int ret = tls_client_ca_configure(srv->ctx, ca_file, crl_file);

	if (ret == 0)
		srv->client_ca = true;
	return ret;
}

void tls_conn_request_client_cert(struct tls_conn *t)
{
	if (t->srv->client_ca && t->ssl && t->state == TLS_ST_HANDSHAKE)
		tls_client_cert_request(t->ssl);
}

const struct tls_peer_cert *tls_conn_peer_cert(const struct tls_conn *t)
{
	return t ? t->peer : NULL;
}

/* ---------------------------------------------------------------------- */
/* Self-signed certificate                                                 */

/*
 * A domain we are willing to put in a certificate: DNS labels of letters,
 * digits and hyphens (1-63 bytes, no hyphen at either end), dot-separated,
 * at most 253 bytes. This also keeps the OpenSSL extension syntax
 * ("DNS:a,DNS:*.a") free of injected commas or colons.
 */
static bool tls_domain_valid(const char *d)
{
	size_t len = strlen(d), label = 0;

	if (len == 0 || len > TLS_DOMAIN_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = d[i];

		if (c == '.') {
			if (label == 0 || d[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-'))
			return false;
		if (c == '-' && label == 0)
			return false;
		if (++label > 63)
			return false;
	}
	return label > 0 && d[len - 1] != '-';
}

static int tls_add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
	int ok;

	if (!ext)
		return -EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok ? 0 : -ENOMEM;
}

/* Builds and signs the certificate for pkey. NULL on failure. */
static X509 *tls_make_cert(const char *domain, EVP_PKEY *pkey)
{
	unsigned char serial[TLS_SERIAL_BYTES];
	char *san = NULL;
	X509V3_CTX v3;
	BIGNUM *bn = NULL;
	X509 *x;
	X509_NAME *name;

	x = X509_new();
	if (!x)
		return NULL;
	if (!X509_set_version(x, X509_VERSION_3))
		goto err;

	/* Positive (top bit clear) and never zero. */
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto err;
	serial[0] = (serial[0] & 0x7f) | 0x01;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		goto err;

	if (!X509_gmtime_adj(X509_getm_notBefore(x), -TLS_CERT_BACKDATE) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), TLS_CERT_DAYS, 0, NULL))
		goto err;

	/* CN only when it fits; clients match on the SAN anyway. */
	name = X509_get_subject_name(x);
	if (strlen(domain) <= TLS_CN_MAX &&
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
					(const unsigned char *)domain, -1, -1, 0))
		goto err;
	if (!X509_set_issuer_name(x, name) || !X509_set_pubkey(x, pkey))
		goto err;

	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	/* *.domain also covers service hosts like conference.domain. */
	if (asprintf(&san, "DNS:%s,DNS:*.%s", domain, domain) < 0) {
		san = NULL;
		goto err;
	}
	if (tls_add_ext(x, &v3, NID_subject_alt_name, san) < 0 ||
	    tls_add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    tls_add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") < 0 ||
	    tls_add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth") < 0 ||
	    tls_add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0)
		goto err;
	if (X509_sign(x, pkey, EVP_sha256()) <= 0)
		goto err;

	free(san);
	BN_free(bn);
	return x;

err:
	free(san);
	BN_free(bn);
	X509_free(x);
	return NULL;
}

/* Writes all of buf to fd. 0 or -errno. */
static int tls_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * Writes the contents of mem to a new temporary file next to path, with
 * `mode`, synced. On success *tmp_out is the temp file's name (caller
 * renames or unlinks it and frees the string). 0 or -errno.
 */
static int tls_write_temp(const char *path, BIO *mem, mode_t mode, char **tmp_out)
{
	char *data, *tmp;
	long len;
	int fd, ret;

	if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
		return -ENOMEM;
	/* mkstemp creates the file 0600, so the key is never readable by others. */
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		goto err_free_name;
	}
	if (fchmod(fd, mode) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	len = BIO_get_mem_data(mem, &data);
	if (len <= 0) {
		ret = -EIO;
		goto err_unlink;
	}
	ret = tls_write_all(fd, data, (size_t)len);
	if (ret < 0)
		goto err_unlink;
	if (fsync(fd) < 0) {
		ret = -errno;
		goto err_unlink;
	}
	if (close(fd) < 0) {
		fd = -1;
		ret = -errno;
		goto err_unlink;
	}
	*tmp_out = tmp;
	return 0;

err_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
err_free_name:
	free(tmp);
	return ret;
}

/* fsyncs the directory holding path so a rename survives a power cut. */
static void tls_sync_dir(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd;

	if (!dir)
		return;
	slash = strrchr(dir, '/');
	if (!slash)
		strcpy(dir, ".");
	else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(dir);
}

/* One error line: the file, the errno, and OpenSSL's reason if it has one. */
static void tls_log_generate_error(const char *domain, const char *file, int ret)
{
	char path[256];
	const char *reason = ERR_peek_error() ? tls_err_drain(NULL) : strerrordesc_np(-ret);

	log_error("tls.self_signed", "domain=%s file=%s error=%s reason=\"%s\"", domain,
		  log_sanitize(path, sizeof(path), file, strlen(file)),
		  strerrorname_np(-ret) ? strerrorname_np(-ret) : "?", reason ? reason : "?");
}

/*
 * Both files are written to synced temp files first and only then renamed
 * into place, so a crash leaves either the old file or the new one, never
 * a truncated one. (Between the two renames a crash can pair a new key with
 * an old certificate; tls_server_new() then refuses the pair by name.)
 */
int tls_generate_self_signed(const char *domain, const char *cert_file,
			     const char *key_file)
{
	EVP_PKEY *pkey;
	X509 *x;
	BIO *key_pem = NULL, *cert_pem = NULL;
	char *key_tmp = NULL, *cert_tmp = NULL;
	const char *failed = key_file;	/* the file named in the error line */
	int ret;

	if (!domain || !cert_file || !key_file || !tls_domain_valid(domain))
		return -EINVAL;

	ERR_clear_error();
	pkey = EVP_EC_gen("P-256");
	if (!pkey) {
		ret = -ENOMEM;
		goto out_log;
	}
	x = tls_make_cert(domain, pkey);
	if (!x) {
		ret = -EIO;
		goto out_free_key;
	}
	/* The key's PEM lives in secure-heap memory that is wiped on free. */
	key_pem = BIO_new(BIO_s_secmem());
	cert_pem = BIO_new(BIO_s_mem());
	if (!key_pem || !cert_pem) {
		ret = -ENOMEM;
		goto out_free_bios;
	}
	if (!PEM_write_bio_PrivateKey(key_pem, pkey, NULL, NULL, 0, NULL, NULL) ||
	    !PEM_write_bio_X509(cert_pem, x)) {
		ret = -EIO;
		goto out_free_bios;
	}
	ret = tls_write_temp(key_file, key_pem, 0600, &key_tmp);
	if (ret < 0)
		goto out_free_bios;
	failed = cert_file;
	ret = tls_write_temp(cert_file, cert_pem, 0644, &cert_tmp);
	if (ret < 0)
		goto err_unlink_key;
	failed = key_file;
	if (rename(key_tmp, key_file) < 0) {
		ret = -errno;
		goto err_unlink_cert;
	}
	failed = cert_file;
	if (rename(cert_tmp, cert_file) < 0) {
		ret = -errno;
		goto err_unlink_cert;
	}
	tls_sync_dir(key_file);
	tls_sync_dir(cert_file);
	/* Success is logged by the caller, which knows why it generated. */
	ret = 0;
	goto out_free_bios;	/* same cleanup as the failures below */

err_unlink_cert:
	unlink(cert_tmp);
err_unlink_key:
	unlink(key_tmp);	/* harmless ENOENT if it was already renamed */
out_free_bios:
	free(cert_tmp);
	free(key_tmp);
	BIO_free(cert_pem);
	BIO_free(key_pem);
	X509_free(x);
out_free_key:
	EVP_PKEY_free(pkey);
out_log:
	if (ret < 0)
		tls_log_generate_error(domain, failed, ret);
	ERR_clear_error();
	return ret;
}

/* ---------------------------------------------------------------------- */
/* Connections                                                             */

struct tls_conn *tls_conn_new(struct tls_server *srv, tls_sink_fn sink, void *sink_arg)
{
	struct tls_conn *t;
	BIO *bio;

	if (!srv || !sink) {
		errno = EINVAL;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->srv = srv;
	t->sink = sink;
	t->sink_arg = sink_arg;

	ERR_clear_error();
	t->ssl = SSL_new(srv->ctx);
	if (!t->ssl)
		goto err_free_conn;
	bio = BIO_new(tls_bio_method);
	if (!bio)
		goto err_free_ssl;
	BIO_set_data(bio, t);
	BIO_set_init(bio, 1);
	/* Same BIO both ways: SSL_set_bio() takes the one reference. */
	SSL_set_bio(t->ssl, bio, bio);
	SSL_set_app_data(t->ssl, t);
	SSL_set_accept_state(t->ssl);
	if (srv->ktls_mask || srv->lean) {
		/* Without it the connection simply stays on OpenSSL. */
		t->ktls = calloc(1, sizeof(*t->ktls));
		if (t->ktls)
			SSL_set_msg_callback(t->ssl, tls_msg_cb);
	}
	return t;

err_free_ssl:
	SSL_free(t->ssl);
err_free_conn:
	ERR_clear_error();
	free(t);
	errno = ENOMEM;
	return NULL;
}

/* Wipes and frees the handoff bookkeeping (it holds traffic secrets). */
static void tls_conn_ktls_free(struct tls_conn *t)
{
	if (!t->ktls)
		return;
	OPENSSL_cleanse(t->ktls, sizeof(*t->ktls));
	free(t->ktls);
	t->ktls = NULL;
}

void tls_conn_free(struct tls_conn *t)
{
	if (!t)
		return;
	SSL_free(t->ssl);
	tls_conn_ktls_free(t);
	tls_lean_free(t->lean);
	tls_peer_cert_free(t->peer);
	if (t->kc) {
		OPENSSL_cleanse(t->kc, sizeof(*t->kc));
		free(t->kc);
	}
	free(t->stash);
	free(t->err);
	free(t);
}

/*
 * Keeps the unread part of the lent input after the plaintext callback
 * asked to stop. When the stash itself was lent, it is only trimmed.
 * 0 or -ENOMEM.
 */
static int tls_conn_keep_rest(struct tls_conn *t)
{
	size_t rest = t->in_len - t->in_off;
	unsigned char *copy;

	if (rest == 0) {
		free(t->stash);
		t->stash = NULL;
		t->stash_len = 0;
		return 0;
	}
	if (t->in == t->stash) {
		memmove(t->stash, t->stash + t->in_off, rest);
		t->stash_len = rest;
		return 0;
	}
	copy = malloc(rest);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, t->in + t->in_off, rest);
	free(t->stash);
	t->stash = copy;
	t->stash_len = rest;
	return 0;
}

/* Appends new input behind a stash left by TLS_STOPPED. 0 or -errno. */
static int tls_conn_stash_append(struct tls_conn *t, const void *data, size_t len)
{
	unsigned char *p;

	if (len > TLS_STASH_MAX - t->stash_len)
		return -ENOBUFS;
	p = realloc(t->stash, t->stash_len + len);
	if (!p)
		return -ENOMEM;
	memcpy(p + t->stash_len, data, len);
	t->stash = p;
	t->stash_len += len;
	return 0;
}

/*
 * Finishes the handshake if it is still running. Returns 1 when it is done
 * (it completed now or earlier), 0 when more input is needed, -1 on a fatal
 * error (recorded in t).
 */
static int tls_conn_drive_handshake(struct tls_conn *t)
{
	int ret;

	if (t->state != TLS_ST_HANDSHAKE)
		return 1;
	ret = SSL_do_handshake(t->ssl);
	if (ret == 1) {
		t->state = TLS_ST_OPEN;
		t->hs_done = true;
		/* Now, while the SSL exists: the kTLS handoff frees it (SASL EXTERNAL). */
		if (t->srv->client_ca)
			t->peer = tls_peer_cert_capture(t->ssl);
		/*
		 * TLS 1.3: the peer's Finished was the last record under its
		 * handshake keys (OpenSSL reads no further than the record it
		 * needs), so its application epoch starts here.
		 */
		if (t->ktls && SSL_version(t->ssl) == TLS1_3_VERSION) {
			if (t->ktls->rx.hdr_len)
				t->ktls->stale = true;
			t->ktls->rx.records = 0;
		}
		return 1;
	}
	if (SSL_get_error(t->ssl, ret) == SSL_ERROR_WANT_READ && !t->sink_err)
		return 0;
	tls_conn_fail_ssl(t, "handshake failed", ret);
	return -1;
}

/*
 * Decrypts everything the lent input holds, passing each record's
 * plaintext to on_plain. Returns TLS_OK when the input is used up, or the
 * status that ended the loop.
 */
static enum tls_status tls_conn_read_all(struct tls_conn *t, tls_plain_fn on_plain, void *arg)
{
	char buf[TLS_READ_CHUNK];
	size_t got, dirty = 0;
	enum tls_status st = TLS_OK;

	for (;;) {
		int ret = SSL_read_ex(t->ssl, buf, sizeof(buf), &got);

		if (ret == 1) {
			if (got > dirty)
				dirty = got;
			if (on_plain(arg, buf, got) != 0) {
				st = TLS_STOPPED;
				break;
			}
			/* The callback may have written, and failed, on this conn. */
			if (t->state == TLS_ST_FAILED) {
				st = TLS_ERROR;
				break;
			}
			continue;
		}
		switch (SSL_get_error(t->ssl, ret)) {
		case SSL_ERROR_WANT_READ:
			if (!t->sink_err)
				goto out;
			tls_conn_fail_ssl(t, "read failed", ret);
			st = TLS_ERROR;
			goto out;
		case SSL_ERROR_ZERO_RETURN:
			t->state = TLS_ST_CLOSED;
			st = TLS_CLOSED;
			goto out;
		default:
			tls_conn_fail_ssl(t, "read failed", ret);
			st = TLS_ERROR;
			goto out;
		}
	}
out:
	/* Plaintext may hold credentials (SASL PLAIN): do not leave it on the stack. */
	explicit_bzero(buf, dirty);
	return st;
}

enum tls_status tls_conn_input(struct tls_conn *t, const void *data, size_t len,
			       tls_plain_fn on_plain, void *arg)
{
	enum tls_status st;
	bool was_handshaking;
	int ret;

	if (t->state == TLS_ST_FAILED)
		return TLS_ERROR;
	if (t->state == TLS_ST_CLOSED)
		return TLS_CLOSED;	/* nothing after close_notify is valid */
	if (t->in_input || !on_plain || (len && !data) || t->state == TLS_ST_KERNEL) {
		tls_conn_fail(t, "input failed", "invalid call");
		return TLS_ERROR;
	}

	/* Bytes kept from a stopped call come first. */
	if (t->stash && len) {
		ret = tls_conn_stash_append(t, data, len);
		if (ret < 0) {
			tls_conn_fail(t, "input failed", ret == -ENOBUFS ?
				      "too much input while stopped" : "out of memory");
			return TLS_ERROR;
		}
	}
	if (t->stash) {
		t->in = t->stash;
		t->in_len = t->stash_len;
	} else {
		t->in = data;
		t->in_len = len;
	}
	t->in_off = 0;
	t->in_input = true;
	was_handshaking = t->state == TLS_ST_HANDSHAKE;
	ERR_clear_error();

	ret = tls_conn_drive_handshake(t);
	if (ret < 0) {
		st = TLS_ERROR;
		goto out;
	}
	if (ret == 0) {
		st = TLS_OK;
		goto out;
	}
	st = t->lean ? tls_lean_read_all(t, on_plain, arg) : tls_conn_read_all(t, on_plain, arg);
	if (st == TLS_STOPPED && tls_conn_keep_rest(t) < 0) {
		tls_conn_fail(t, "input failed", "out of memory");
		st = TLS_ERROR;
	}
	if (st == TLS_OK && was_handshaking)
		st = TLS_HANDSHAKE_DONE;

out:
	/* Everything lent was consumed unless we stopped; drop the stash. */
	if (st != TLS_STOPPED && t->stash) {
		free(t->stash);
		t->stash = NULL;
		t->stash_len = 0;
	}
	t->in = NULL;
	t->in_len = 0;
	t->in_off = 0;
	t->in_input = false;
	if (st == TLS_OK || st == TLS_HANDSHAKE_DONE)
		tls_conn_go_lean(t);
	ERR_clear_error();
	return st;
}

bool tls_conn_pending(const struct tls_conn *t)
{
	return t->stash != NULL;
}

int tls_conn_write(struct tls_conn *t, const void *data, size_t len)
{
	size_t written;
	int ret;

	if (t->state == TLS_ST_FAILED)
		return t->sink_err ? t->sink_err : -EIO;
	if (t->state == TLS_ST_HANDSHAKE)
		return -ENOTCONN;
	if (t->state == TLS_ST_KERNEL)
		return -EINVAL;	/* the kernel encrypts: send plaintext on the socket */
	if (len == 0)
		return 0;
	if (t->lean)
		return t->shutdown_sent ? -EPIPE : tls_lean_write(t, data, len);
	ERR_clear_error();
	/* Without partial-write mode this writes every byte or fails. */
	ret = SSL_write_ex(t->ssl, data, len, &written);
	if (ret == 1 && written == len)
		return 0;
	tls_conn_fail_ssl(t, "write failed", ret);
	ERR_clear_error();
	return t->sink_err ? t->sink_err : -EIO;
}

void tls_conn_shutdown(struct tls_conn *t)
{
	/* OpenSSL forbids SSL_shutdown() after a fatal error or mid-handshake. */
	if (t->shutdown_sent || t->state == TLS_ST_FAILED || t->state == TLS_ST_HANDSHAKE ||
	    t->state == TLS_ST_KERNEL)
		return;
	if (t->lean) {
		tls_lean_shutdown(t);
		return;
	}
	t->shutdown_sent = true;
	ERR_clear_error();
	/* 0 = sent, peer's not yet seen; 1 = both done. Both are fine here. */
	if (SSL_shutdown(t->ssl) < 0)
		tls_conn_fail_ssl(t, "shutdown failed", -1);
	ERR_clear_error();
}

/* ---------------------------------------------------------------------- */
/* Accessors                                                               */

bool tls_conn_handshake_done(const struct tls_conn *t)
{
	return t->hs_done;
}

const char *tls_conn_version(const struct tls_conn *t)
{
	if (t->kc)
		return t->kc->version;
	return tls_conn_handshake_done(t) ? SSL_get_version(t->ssl) : "";
}

const char *tls_conn_cipher(const struct tls_conn *t)
{
	const SSL_CIPHER *c;

	if (t->kc)
		return t->kc->cipher;
	if (!tls_conn_handshake_done(t))
		return "";
	c = SSL_get_current_cipher(t->ssl);
	return c ? SSL_CIPHER_get_name(c) : "";
}

const char *tls_conn_alpn(const struct tls_conn *t)
{
	const unsigned char *p;
	unsigned int n;

	if (t->kc)
		return t->kc->alpn ? t->srv->alpn : "";
	SSL_get0_alpn_selected(t->ssl, &p, &n);
	/* We only ever select our own name, so return its NUL-terminated copy. */
	return n > 0 && n == t->srv->alpn_len ? t->srv->alpn : "";
}

const char *tls_conn_error(const struct tls_conn *t)
{
	if (t->err)
		return t->err;
	return t->err_static ? t->err_static : "";
}

bool tls_conn_is_tls13(const struct tls_conn *t)
{
	if (t->kc)
		return t->kc->tls13;
	return tls_conn_handshake_done(t) && SSL_version(t->ssl) == TLS1_3_VERSION;
}

/* ---------------------------------------------------------------------- */
/* Channel binding                                                         */

/* RFC 9266: 32 bytes of exporter output, label only, no context. */
static ssize_t tls_cb_exporter(const struct tls_conn *t, unsigned char *out, size_t cap)
{
	/*
	 * On TLS 1.2 the exporter is only unique per connection when the
	 * master secret covers the whole handshake (RFC 7627).
	 */
	if (SSL_version(t->ssl) != TLS1_3_VERSION && SSL_get_extms_support(t->ssl) != 1)
		return -ENOTSUP;
	if (cap < TLS_EXPORTER_LEN)
		return -ENOSPC;
	if (SSL_export_keying_material(t->ssl, out, TLS_EXPORTER_LEN, TLS_EXPORTER_LABEL,
				       strlen(TLS_EXPORTER_LABEL), NULL, 0, 0) != 1) {
		ERR_clear_error();
		return -EIO;
	}
	return TLS_EXPORTER_LEN;
}

/*
 * RFC 5929 tls-unique: the first Finished message of the handshake. This
 * mirrors CPython's SSLSocket.get_channel_binding() (Modules/_ssl.c), which
 * is what Python XMPP clients (slixmpp, ...) send: a full handshake uses
 * the client's Finished, a resumed one the server's. On the server side
 * that is the peer's Finished for a new session and our own for a resumed
 * one. OpenSSL keeps both on TLS 1.3 too, where deployed clients use the
 * same rule although RFC 8446 left tls-unique undefined.
 */
static ssize_t tls_cb_unique(const struct tls_conn *t, unsigned char *out, size_t cap)
{
	unsigned char buf[EVP_MAX_MD_SIZE];
	size_t len;

	if (SSL_session_reused(t->ssl))
		len = SSL_get_finished(t->ssl, buf, sizeof(buf));
	else
		len = SSL_get_peer_finished(t->ssl, buf, sizeof(buf));
	if (len == 0 || len > sizeof(buf))
		return -ENOTCONN;
	if (cap < len)
		return -ENOSPC;
	memcpy(out, buf, len);
	return (ssize_t)len;
}

/*
 * RFC 5929 tls-server-end-point: hash of our certificate with its signature
 * hash (SHA-256 when that is MD5 or SHA-1).
 */
static ssize_t tls_cb_end_point(const struct tls_conn *t, unsigned char *out, size_t cap)
{
	unsigned char buf[EVP_MAX_MD_SIZE];
	unsigned int len;
	const EVP_MD *md;
	/*
	 * The SSL's own certificate (SSL_new copied the context's): never the
	 * context's, which a reload replaces. Without the SSL (kTLS) the value
	 * kept at the handoff answers (tls_cb_cached).
	 */
	X509 *x = t->ssl ? SSL_get_certificate(t->ssl) : NULL;
	int mdnid;

	if (!x || !X509_get_signature_info(x, &mdnid, NULL, NULL, NULL))
		return -ENOTSUP;
	if (mdnid == NID_md5 || mdnid == NID_sha1 || mdnid == NID_undef)
		mdnid = NID_sha256;
	md = EVP_get_digestbynid(mdnid);
	if (!md || !X509_digest(x, md, buf, &len)) {
		ERR_clear_error();
		return -ENOTSUP;
	}
	if (cap < len)
		return -ENOSPC;
	memcpy(out, buf, len);
	return len;
}

/* kTLS mode: the values computed before the SSL object was freed. */
static ssize_t tls_cb_cached(const struct tls_conn *t, const char *type, unsigned char *out,
			     size_t cap)
{
	const unsigned char *v;
	size_t len;

	if (strcmp(type, "tls-exporter") == 0) {
		v = t->kc->exporter;
		len = t->kc->exporter_len;
	} else if (strcmp(type, "tls-unique") == 0) {
		v = t->kc->unique;
		len = t->kc->unique_len;
	} else if (strcmp(type, "tls-server-end-point") == 0) {
		v = t->kc->end_point;
		len = t->kc->end_point_len;
	} else {
		return -ENOTSUP;
	}
	if (len == 0)
		return -ENOTSUP;
	if (cap < len)
		return -ENOSPC;
	memcpy(out, v, len);
	return (ssize_t)len;
}

ssize_t tls_conn_channel_binding(const struct tls_conn *t, const char *type,
				 unsigned char *out, size_t cap)
{
	if (!type || !out)
		return -EINVAL;
	if ((t->state == TLS_ST_KERNEL || t->state == TLS_ST_LEAN) && t->kc)
		return tls_cb_cached(t, type, out, cap);
	if (t->state != TLS_ST_OPEN)
		return -ENOTCONN;
	if (strcmp(type, "tls-exporter") == 0)
		return tls_cb_exporter(t, out, cap);
	if (strcmp(type, "tls-unique") == 0)
		return tls_cb_unique(t, out, cap);
	if (strcmp(type, "tls-server-end-point") == 0)
		return tls_cb_end_point(t, out, cap);
	return -ENOTSUP;
}

/* ---------------------------------------------------------------------- */
/* kTLS handoff                                                            */

/* The kernel cipher of the negotiated suite, KTLS_CIPHER_NONE if none fits. */
static enum ktls_cipher tls_conn_ktls_cipher(const struct tls_conn *t)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(t->ssl);

	switch (c ? SSL_CIPHER_get_cipher_nid(c) : NID_undef) {
	case NID_aes_128_gcm:
		return KTLS_AES_128_GCM;
	case NID_aes_256_gcm:
		return KTLS_AES_256_GCM;
	case NID_chacha20_poly1305:
		return KTLS_CHACHA20_POLY1305;
	default:
		return KTLS_CIPHER_NONE;
	}
}

bool tls_conn_ktls_possible(const struct tls_conn *t)
{
	enum ktls_cipher c;
	int version;

	if (!t->ktls || t->ktls->stale || t->state != TLS_ST_OPEN)
		return false;
	/* The kernel sends full-size records: not for a peer that negotiated smaller ones. */
	if (SSL_SESSION_get_max_fragment_length(SSL_get_session(t->ssl)) !=
	    TLSEXT_max_fragment_length_DISABLED)
		return false;
	c = tls_conn_ktls_cipher(t);
	version = SSL_version(t->ssl);
	if (c == KTLS_CIPHER_NONE || (version != TLS1_2_VERSION && version != TLS1_3_VERSION))
		return false;
	return (t->srv->ktls_mask & KTLS_BIT(version == TLS1_3_VERSION, c)) != 0;
}

size_t tls_conn_rx_partial(const struct tls_conn *t)
{
	const struct tls_rec_track *r;

	if (t->lean) {
		if (t->lean->hdr_len == 0)
			return 0;
		if (t->lean->hdr_len < TLS_RECORD_HEADER)
			return TLS_RECORD_HEADER - t->lean->hdr_len;
		return ((size_t)t->lean->hdr[3] << 8 | t->lean->hdr[4]) - t->lean->body_have;
	}
	if (!t->ktls)
		return 0;
	r = &t->ktls->rx;
	if (r->hdr_len == 0)
		return 0;
	if (r->hdr_len < TLS_RECORD_HEADER)
		return TLS_RECORD_HEADER - r->hdr_len;
	return r->left;
}

/*
 * Keeps what the accessors and SASL channel binding will need once the
 * SSL object is gone. 0 or -ENOMEM.
 */
static int tls_conn_fill_cache(struct tls_conn *t)
{
	struct tls_kernel_cache *kc = t->kc;
	const unsigned char *alpn;
	unsigned int alpn_len;
	ssize_t n;

	if (!kc) {
		kc = calloc(1, sizeof(*kc));
		if (!kc)
			return -ENOMEM;
		t->kc = kc;
	}
	kc->version = SSL_get_version(t->ssl);		/* static strings in libssl */
	kc->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(t->ssl));
	kc->tls13 = SSL_version(t->ssl) == TLS1_3_VERSION;
	SSL_get0_alpn_selected(t->ssl, &alpn, &alpn_len);
	kc->alpn = alpn_len > 0 && alpn_len == t->srv->alpn_len;
	n = tls_cb_exporter(t, kc->exporter, sizeof(kc->exporter));
	kc->exporter_len = n > 0 ? (uint8_t)n : 0;
	n = tls_cb_unique(t, kc->unique, sizeof(kc->unique));
	kc->unique_len = n > 0 ? (uint8_t)n : 0;
	n = tls_cb_end_point(t, kc->end_point, sizeof(kc->end_point));
	kc->end_point_len = n > 0 ? (uint8_t)n : 0;
	return 0;
}

int tls_conn_ktls_keys(struct tls_conn *t, union ktls_crypto_info *tx, union ktls_crypto_info *rx)
{
	struct tls_ktls_state *k = t->ktls;
	unsigned char master[SSL_MAX_MASTER_KEY_LENGTH];
	unsigned char crand[KTLS_RANDOM_LEN], srand[KTLS_RANDOM_LEN];
	enum ktls_cipher c;
	size_t mlen;
	int ret;

	/* Plaintext OpenSSL decrypted but nobody read would be lost. */
	if (!tls_conn_ktls_possible(t) || t->stash || SSL_pending(t->ssl) > 0)
		return -ENOTSUP;
	if (tls_conn_rx_partial(t))
		return -EAGAIN;
	/* Our framing says "record boundary": OpenSSL must agree. */
	if (SSL_has_pending(t->ssl))
		return -ENOTSUP;
	c = tls_conn_ktls_cipher(t);
	if (SSL_version(t->ssl) == TLS1_3_VERSION) {
		if (!k->client_secret_len || !k->server_secret_len)
			return -ENOTSUP;
		ret = ktls_tls13_info(c, k->server_secret, k->server_secret_len, k->tx_records, tx);
		if (ret == 0)
			ret = ktls_tls13_info(c, k->client_secret, k->client_secret_len,
					      k->rx.records, rx);
	} else {
		mlen = SSL_SESSION_get_master_key(SSL_get_session(t->ssl), master, sizeof(master));
		if (mlen == 0 || SSL_get_client_random(t->ssl, crand, sizeof(crand)) != sizeof(crand) ||
		    SSL_get_server_random(t->ssl, srand, sizeof(srand)) != sizeof(srand))
			return -ENOTSUP;
		ret = ktls_tls12_info(c, master, mlen, crand, srand, true, k->tx_records, tx);
		if (ret == 0)
			ret = ktls_tls12_info(c, master, mlen, crand, srand, false, k->rx.records, rx);
		OPENSSL_cleanse(master, sizeof(master));
	}
	if (ret == 0)
		ret = tls_conn_fill_cache(t);
	ERR_clear_error();
	if (ret < 0) {
		explicit_bzero(tx, sizeof(*tx));
		explicit_bzero(rx, sizeof(*rx));
		return ret == -ENOMEM ? ret : -ENOTSUP;
	}
	return 0;
}

void tls_conn_ktls_done(struct tls_conn *t)
{
	if (!t->kc || t->state != TLS_ST_OPEN)
		return;	/* tls_conn_ktls_keys() did not succeed: nothing to hand over */
	SSL_free(t->ssl);
	t->ssl = NULL;
	tls_conn_ktls_free(t);
	t->state = TLS_ST_KERNEL;
}

void tls_conn_ktls_abandon(struct tls_conn *t)
{
	if (t->state == TLS_ST_KERNEL || t->lean)
		return;	/* the cache answers the accessors now */
	if (t->kc) {
		OPENSSL_cleanse(t->kc, sizeof(*t->kc));
		free(t->kc);
		t->kc = NULL;
	}
	/*
	 * A TLS 1.3 connection that could not go lean right at the end of
	 * the handshake (say, a record cut by the end of the input) keeps
	 * the bookkeeping for a later tls_conn_input() call.
	 */
	if (t->srv->lean && t->ktls && !t->ktls->stale && t->state == TLS_ST_OPEN && t->ssl &&
	    SSL_version(t->ssl) == TLS1_3_VERSION)
		return;
	tls_conn_ktls_free(t);
	if (t->ssl)
		SSL_set_msg_callback(t->ssl, NULL);
}

bool tls_conn_in_kernel(const struct tls_conn *t)
{
	return t->state == TLS_ST_KERNEL;
}

bool tls_conn_take_close_notify(struct tls_conn *t)
{
	if (t->state != TLS_ST_KERNEL || t->shutdown_sent)
		return false;
	t->shutdown_sent = true;
	return true;
}

void tls_conn_mark_failed(struct tls_conn *t)
{
	/* The accessors still answer; only the close_notify is off. */
	t->shutdown_sent = true;
}

/* ---------------------------------------------------------------------- */
/* Lean mode: TLS 1.3 records without the SSL object                       */

/*
 * An idle TLS 1.3 connection on OpenSSL 3.0 holds about 13.5 KB of heap
 * in libssl: the SSL object itself (7.6 KB, mostly the record layer's
 * arrays of 32 pipeline buffers and records, allocated whether used or
 * not), the two AEAD contexts (1.9 KB), the session, the handshake's key
 * shares and transcript hash, the copied CERT, and locks. No OpenSSL call
 * releases them while the SSL object lives.
 *
 * So once a TLS 1.3 handshake is over and kTLS does not take the
 * connection, the record protection is done here and the SSL object is
 * freed, exactly as for the kTLS handoff and with the same bookkeeping
 * (the application traffic secrets from the keylog callback, the records
 * each side has sealed so far): what stays is the two traffic secrets,
 * keys, IVs and sequence numbers (RFC 8446 5.3, 7.3), and the values the
 * accessors and channel binding answer from (tls_conn_fill_cache). The
 * negotiated suite, its AEAD and the protocol rules of the record layer
 * are unchanged: records are AEAD-sealed with the per-record nonce, inner
 * content types are checked, KeyUpdate is answered (RFC 8446 4.6.3), any
 * other post-handshake handshake message or malformed record is a fatal
 * alert, a close_notify ends the stream. TLS 1.2 connections keep their
 * SSL object.
 */

static EVP_CIPHER *tls_lean_aeads[KTLS_CIPHER_COUNT + 1];
static pthread_once_t tls_lean_once = PTHREAD_ONCE_INIT;

static void tls_lean_init_once(void)
{
	tls_lean_aeads[KTLS_AES_128_GCM] = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	tls_lean_aeads[KTLS_AES_256_GCM] = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	tls_lean_aeads[KTLS_CHACHA20_POLY1305] = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
	ERR_clear_error();
}

/* Key and IV of one direction from its traffic secret (RFC 8446 7.3). */
static int tls_lean_derive(struct tls_lean *l, struct tls_lean_dir *d)
{
	int ret = ktls_hkdf_expand_label(l->suite, d->secret, l->secret_len, "key", NULL, 0,
					 d->key, l->key_len);

	if (ret == 0)
		ret = ktls_hkdf_expand_label(l->suite, d->secret, l->secret_len, "iv", NULL, 0,
					     d->iv, sizeof(d->iv));
	return ret;
}

/* KeyUpdate: the next traffic secret (RFC 8446 7.2), keys, and sequence 0. */
static int tls_lean_next_keys(struct tls_lean *l, struct tls_lean_dir *d)
{
	uint8_t next[KTLS_SECRET_MAX];
	int ret = ktls_hkdf_expand_label(l->suite, d->secret, l->secret_len, "traffic upd", NULL, 0,
					 next, l->secret_len);

	if (ret == 0) {
		memcpy(d->secret, next, l->secret_len);
		d->seq = 0;
		ret = tls_lean_derive(l, d);
	}
	OPENSSL_cleanse(next, sizeof(next));
	return ret;
}

static void tls_lean_nonce(const struct tls_lean_dir *d, uint8_t nonce[TLS_LEAN_NONCE])
{
	memcpy(nonce, d->iv, TLS_LEAN_NONCE);
	for (int i = 0; i < 8; i++)
		nonce[TLS_LEAN_NONCE - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

static void tls_lean_free(struct tls_lean *l)
{
	if (!l)
		return;
	free(l->body);
	OPENSSL_cleanse(l, sizeof(*l));
	free(l);
}

/*
 * Seals one record of inner type `type` and passes it to the sink.
 * len <= TLS_LEAN_PLAIN_MAX. 0, or -1 (t->sink_err set, or a crypto
 * failure); the caller fails the connection.
 */
static int tls_lean_seal(struct tls_conn *t, EVP_CIPHER_CTX *ctx, uint8_t type,
			 const void *data, size_t len)
{
	struct tls_lean *l = t->lean;
	unsigned char rec[TLS_RECORD_HEADER + TLS_LEAN_PLAIN_MAX + 1 + TLS_LEAN_TAG];
	size_t body = len + 1 + TLS_LEAN_TAG;
	uint8_t nonce[TLS_LEAN_NONCE];
	int n, fin, ret;

	if (t->sink_err || len > TLS_LEAN_PLAIN_MAX || l->tx.seq == UINT64_MAX)
		return -1;
	rec[0] = KTLS_RECORD_DATA;
	rec[1] = 0x03;
	rec[2] = 0x03;
	rec[3] = (uint8_t)(body >> 8);
	rec[4] = (uint8_t)body;
	memcpy(rec + TLS_RECORD_HEADER, data, len);
	rec[TLS_RECORD_HEADER + len] = type;
	tls_lean_nonce(&l->tx, nonce);
	if (EVP_EncryptInit_ex2(ctx, l->aead, l->tx.key, nonce, NULL) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, rec, TLS_RECORD_HEADER) != 1 ||
	    EVP_EncryptUpdate(ctx, rec + TLS_RECORD_HEADER, &n, rec + TLS_RECORD_HEADER,
			      (int)len + 1) != 1 ||
	    EVP_EncryptFinal_ex(ctx, rec + TLS_RECORD_HEADER + n, &fin) != 1 ||
	    (size_t)n + (size_t)fin != len + 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TLS_LEAN_TAG,
				rec + TLS_RECORD_HEADER + len + 1) != 1) {
		ERR_clear_error();
		explicit_bzero(rec, TLS_RECORD_HEADER + len + 1);
		return -1;
	}
	l->tx.seq++;
	ret = t->sink(t->sink_arg, rec, TLS_RECORD_HEADER + body);
	if (ret != 0) {
		t->sink_err = ret < 0 ? ret : -EIO;
		return -1;
	}
	return 0;
}

/* Sends a fatal alert (best effort) and fails the connection. */
static void tls_lean_fail(struct tls_conn *t, EVP_CIPHER_CTX *ctx, uint8_t alert,
			  const char *reason)
{
	const uint8_t msg[2] = { 2, alert };

	/* Nothing follows our close_notify, not even a fatal alert. */
	if (alert && ctx && !t->shutdown_sent)
		(void)tls_lean_seal(t, ctx, KTLS_RECORD_ALERT, msg, sizeof(msg));
	t->shutdown_sent = true;	/* no close_notify after a fatal alert */
	tls_conn_fail(t, "read failed", reason);
}

/* A post-handshake handshake record: only KeyUpdate is valid (RFC 8446 4.6). */
static enum tls_status tls_lean_handshake(struct tls_conn *t, EVP_CIPHER_CTX *ctx,
					  const unsigned char *p, size_t len)
{
	static const uint8_t reply[TLS_LEAN_HS_HEADER + 1] = { KTLS_HS_KEY_UPDATE, 0, 0, 1, 0 };
	struct tls_lean *l = t->lean;

	/*
	 * One whole message per record: a KeyUpdate must end its record
	 * (RFC 8446 5.1), and it is the only message we take.
	 */
	if (len < TLS_LEAN_HS_HEADER || p[0] != KTLS_HS_KEY_UPDATE) {
		tls_lean_fail(t, ctx, TLS_ALERT_UNEXPECTED_MESSAGE, "unexpected message");
		return TLS_ERROR;
	}
	if (len != TLS_LEAN_HS_HEADER + 1 || p[1] || p[2] || p[3] != 1) {
		tls_lean_fail(t, ctx, TLS_ALERT_DECODE_ERROR, "bad key update");
		return TLS_ERROR;
	}
	if (p[4] > 1) {
		tls_lean_fail(t, ctx, TLS_ALERT_ILLEGAL_PARAMETER, "bad key update");
		return TLS_ERROR;
	}
	if (tls_lean_next_keys(l, &l->rx) < 0) {
		tls_lean_fail(t, ctx, 0, "key update failed");
		return TLS_ERROR;
	}
	/* update_requested: ours goes out under the old keys, then we switch. */
	if (p[4] == 1 && !t->shutdown_sent) {
		if (tls_lean_seal(t, ctx, KTLS_RECORD_HANDSHAKE, reply, sizeof(reply)) < 0 ||
		    tls_lean_next_keys(l, &l->tx) < 0) {
			tls_lean_fail(t, NULL, 0, t->sink_err ? "output sink failed" :
				      "key update failed");
			return TLS_ERROR;
		}
	}
	return TLS_OK;
}

/* Opens one record (header in l->hdr) and acts on its content. */
static enum tls_status tls_lean_open(struct tls_conn *t, EVP_CIPHER_CTX *ctx,
				     const unsigned char *body, size_t len, unsigned char *pt,
				     size_t *dirty, tls_plain_fn on_plain, void *arg)
{
	struct tls_lean *l = t->lean;
	uint8_t nonce[TLS_LEAN_NONCE];
	size_t n = len - TLS_LEAN_TAG;
	int out, fin;
	uint8_t type;

	if (l->rx.seq == UINT64_MAX) {
		tls_lean_fail(t, ctx, 0, "sequence number exhausted");
		return TLS_ERROR;
	}
	tls_lean_nonce(&l->rx, nonce);
	if (n > *dirty)
		*dirty = n;
	if (EVP_DecryptInit_ex2(ctx, l->aead, l->rx.key, nonce, NULL) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &out, l->hdr, TLS_RECORD_HEADER) != 1 ||
	    EVP_DecryptUpdate(ctx, pt, &out, body, (int)n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TLS_LEAN_TAG,
				(void *)(body + n)) != 1 ||
	    EVP_DecryptFinal_ex(ctx, pt + out, &fin) != 1 || (size_t)out + (size_t)fin != n) {
		ERR_clear_error();
		tls_lean_fail(t, ctx, TLS_ALERT_BAD_RECORD_MAC, "decryption failed or bad record mac");
		return TLS_ERROR;
	}
	l->rx.seq++;
	/* TLSInnerPlaintext, padding included, is at most 2^14 + 1 (RFC 8446 5.4). */
	if (n > TLS_LEAN_PLAIN_MAX + 1) {
		tls_lean_fail(t, ctx, TLS_ALERT_RECORD_OVERFLOW, "record overflow");
		return TLS_ERROR;
	}
	/* TLSInnerPlaintext: content, type, zero padding (RFC 8446 5.2). */
	while (n > 0 && pt[n - 1] == 0)
		n--;
	if (n == 0) {
		tls_lean_fail(t, ctx, TLS_ALERT_UNEXPECTED_MESSAGE, "record without content type");
		return TLS_ERROR;
	}
	type = pt[--n];
	if (n > TLS_LEAN_PLAIN_MAX) {
		tls_lean_fail(t, ctx, TLS_ALERT_RECORD_OVERFLOW, "record overflow");
		return TLS_ERROR;
	}
	/*
	 * Records that carry nothing (empty data, warning alerts) cost a
	 * decryption each: as OpenSSL does, a run of them is cut off.
	 */
	if ((type == KTLS_RECORD_DATA && n == 0) || type == KTLS_RECORD_ALERT) {
		if (++l->empty_run > TLS_LEAN_EMPTY_MAX) {
			tls_lean_fail(t, ctx, TLS_ALERT_UNEXPECTED_MESSAGE, "too many empty records");
			return TLS_ERROR;
		}
	} else {
		l->empty_run = 0;
	}
	switch (type) {
	case KTLS_RECORD_DATA:
		if (n == 0)
			return TLS_OK;
		if (on_plain(arg, (const char *)pt, n) != 0)
			return TLS_STOPPED;
		return t->state == TLS_ST_FAILED ? TLS_ERROR : TLS_OK;
	case KTLS_RECORD_ALERT:
		if (n != 2) {
			tls_lean_fail(t, ctx, TLS_ALERT_DECODE_ERROR, "bad alert");
			return TLS_ERROR;
		}
		if (pt[1] == KTLS_ALERT_CLOSE_NOTIFY) {
			t->state = TLS_ST_CLOSED;
			return TLS_CLOSED;
		}
		if (pt[1] == KTLS_ALERT_USER_CANCELED && pt[0] == KTLS_ALERT_WARNING)
			return TLS_OK;	/* a close_notify follows (RFC 8446 6.1) */
		tls_lean_fail(t, NULL, 0, "peer sent an alert");
		return TLS_ERROR;
	case KTLS_RECORD_HANDSHAKE:
		return tls_lean_handshake(t, ctx, pt, n);
	default:
		tls_lean_fail(t, ctx, TLS_ALERT_UNEXPECTED_MESSAGE, "unexpected record type");
		return TLS_ERROR;
	}
}

/*
 * tls_conn_read_all() for lean mode: opens every whole record of the lent
 * input; a record cut by the end of the input is kept (header inline, body
 * on the heap) until the rest arrives.
 */
static enum tls_status tls_lean_read_all(struct tls_conn *t, tls_plain_fn on_plain, void *arg)
{
	struct tls_lean *l = t->lean;
	unsigned char pt[TLS_LEAN_CIPHER_MAX];
	EVP_CIPHER_CTX *ctx = NULL;
	enum tls_status st = TLS_OK;
	size_t dirty = 0;

	while (st == TLS_OK) {
		size_t avail = t->in_len - t->in_off, len, k;
		const unsigned char *body;

		if (l->hdr_len < TLS_RECORD_HEADER) {
			k = TLS_RECORD_HEADER - l->hdr_len;
			if (k > avail)
				k = avail;
			memcpy(l->hdr + l->hdr_len, t->in + t->in_off, k);
			l->hdr_len += (uint8_t)k;
			t->in_off += k;
			avail -= k;
			if (l->hdr_len < TLS_RECORD_HEADER)
				break;
		}
		len = (size_t)l->hdr[3] << 8 | l->hdr[4];
		if (!ctx) {
			ctx = EVP_CIPHER_CTX_new();
			if (!ctx) {
				tls_lean_fail(t, NULL, 0, "out of memory");
				st = TLS_ERROR;
				break;
			}
		}
		/* Every record is protected now: opaque_type is application_data. */
		if (l->hdr[0] != KTLS_RECORD_DATA) {
			tls_lean_fail(t, ctx, TLS_ALERT_UNEXPECTED_MESSAGE, "unexpected record type");
			st = TLS_ERROR;
			break;
		}
		if (len > TLS_LEAN_CIPHER_MAX) {
			tls_lean_fail(t, ctx, TLS_ALERT_RECORD_OVERFLOW, "record overflow");
			st = TLS_ERROR;
			break;
		}
		if (len < TLS_LEAN_TAG + 1) {
			tls_lean_fail(t, ctx, TLS_ALERT_BAD_RECORD_MAC, "record too short");
			st = TLS_ERROR;
			break;
		}
		if (!l->body && avail >= len) {
			body = t->in + t->in_off;
			t->in_off += len;
		} else {
			if (!l->body) {
				l->body = malloc(len);
				l->body_have = 0;
				if (!l->body) {
					tls_lean_fail(t, NULL, 0, "out of memory");
					st = TLS_ERROR;
					break;
				}
			}
			k = len - l->body_have;
			if (k > avail)
				k = avail;
			memcpy(l->body + l->body_have, t->in + t->in_off, k);
			l->body_have += k;
			t->in_off += k;
			if (l->body_have < len)
				break;
			body = l->body;
		}
		l->hdr_len = 0;
		st = tls_lean_open(t, ctx, body, len, pt, &dirty, on_plain, arg);
		if (l->body) {
			free(l->body);
			l->body = NULL;
			l->body_have = 0;
		}
	}
	EVP_CIPHER_CTX_free(ctx);
	/* Plaintext may hold credentials (SASL PLAIN): do not leave it on the stack. */
	explicit_bzero(pt, dirty);
	return st;
}

/* tls_conn_write() in lean mode: records of at most 16 KiB. */
static int tls_lean_write(struct tls_conn *t, const void *data, size_t len)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	const unsigned char *p = data;

	if (!ctx) {
		tls_conn_fail(t, "write failed", "out of memory");
		return -ENOMEM;
	}
	while (len) {
		size_t n = len < TLS_LEAN_PLAIN_MAX ? len : TLS_LEAN_PLAIN_MAX;

		if (tls_lean_seal(t, ctx, KTLS_RECORD_DATA, p, n) < 0) {
			EVP_CIPHER_CTX_free(ctx);
			tls_conn_fail(t, "write failed", t->sink_err ? "output sink failed" :
				      "encryption failed");
			return t->sink_err ? t->sink_err : -EIO;
		}
		p += n;
		len -= n;
	}
	EVP_CIPHER_CTX_free(ctx);
	return 0;
}

/* close_notify (warning level, as OpenSSL sends it). */
static void tls_lean_shutdown(struct tls_conn *t)
{
	static const uint8_t msg[2] = { KTLS_ALERT_WARNING, KTLS_ALERT_CLOSE_NOTIFY };
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();

	t->shutdown_sent = true;
	if (!ctx || tls_lean_seal(t, ctx, KTLS_RECORD_ALERT, msg, sizeof(msg)) < 0)
		tls_conn_fail(t, "shutdown failed", t->sink_err ? "output sink failed" :
			      "encryption failed");
	EVP_CIPHER_CTX_free(ctx);
}

/*
 * After a tls_conn_input() call: a TLS 1.3 connection whose handshake is
 * over, with nothing buffered in OpenSSL and at a record boundary, moves
 * to lean mode unless kTLS takes it. Any doubt (keys changed through
 * OpenSSL, framing lost, an allocation failed) leaves it on OpenSSL.
 */
static void tls_conn_go_lean(struct tls_conn *t)
{
	struct tls_ktls_state *k = t->ktls;
	enum ktls_cipher c;
	struct tls_lean *l;
	size_t hash_len;

	if (!t->srv->lean || !k || k->stale || t->state != TLS_ST_OPEN || t->shutdown_sent ||
	    t->stash || t->kc || k->rx.hdr_len || SSL_version(t->ssl) != TLS1_3_VERSION ||
	    tls_conn_ktls_possible(t))
		return;
	if (SSL_pending(t->ssl) > 0 || SSL_has_pending(t->ssl))
		return;
	/*
	 * A negotiated max_fragment_length (RFC 6066; constrained devices ask
	 * for it) bounds every record we send: OpenSSL's record layer keeps it.
	 */
	if (SSL_SESSION_get_max_fragment_length(SSL_get_session(t->ssl)) !=
	    TLSEXT_max_fragment_length_DISABLED)
		return;
	c = tls_conn_ktls_cipher(t);
	hash_len = c == KTLS_AES_256_GCM ? 48 : 32;
	if (c == KTLS_CIPHER_NONE || k->client_secret_len != hash_len ||
	    k->server_secret_len != hash_len)
		return;
	pthread_once(&tls_lean_once, tls_lean_init_once);
	if (!tls_lean_aeads[c])
		return;
	l = calloc(1, sizeof(*l));
	if (!l)
		return;
	l->aead = tls_lean_aeads[c];
	l->suite = (uint8_t)c;
	l->secret_len = (uint8_t)hash_len;
	l->key_len = c == KTLS_AES_128_GCM ? 16 : 32;
	memcpy(l->rx.secret, k->client_secret, hash_len);
	memcpy(l->tx.secret, k->server_secret, hash_len);
	l->rx.seq = k->rx.records;
	l->tx.seq = k->tx_records;
	if (tls_lean_derive(l, &l->rx) < 0 || tls_lean_derive(l, &l->tx) < 0 ||
	    tls_conn_fill_cache(t) < 0) {
		ERR_clear_error();
		tls_lean_free(l);
		if (t->kc) {
			OPENSSL_cleanse(t->kc, sizeof(*t->kc));
			free(t->kc);
			t->kc = NULL;
		}
		return;
	}
	ERR_clear_error();
	SSL_free(t->ssl);
	t->ssl = NULL;
	tls_conn_ktls_free(t);
	t->lean = l;
	t->state = TLS_ST_LEAN;
}

bool tls_conn_is_lean(const struct tls_conn *t)
{
	return t->lean != NULL;
}

/* ---------------------------------------------------------------------- */
/* Federation (s2s): the client side, and the peer's domain identity      */

/*
 * Peer certificates on s2s streams are asked for and checked, but a chain
 * that does not verify never fails the handshake: the verdict stays in
 * SSL_get_verify_result() and the stream layer decides (dialback may
 * still authenticate the peer, XEP-0220), as RFC 6120 13.7.2 allows.
 */
static int tls_s2s_verify_cb(int preverify_ok, X509_STORE_CTX *x)
{
	(void)preverify_ok;
	(void)x;
	return 1;
}

/* Trust store for s2s peers: the CA file, or the system's default paths. */
static int tls_s2s_load_trust(SSL_CTX *ctx, const char *ca_file)
{
	if (ca_file) {
		if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
			tls_log_file_error("tls.ca_load", ca_file, NULL, EINVAL);
			return -errno;
		}
		return 0;
	}
	if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		log_warn("tls.ca_load", "reason=\"%s\" msg=\"no system CA store: only dialback can "
			 "authenticate peers\"", tls_err_drain(NULL));
	}
	return 0;
}

struct tls_server *tls_s2s_context_new(const char *cert_file, const char *key_file,
				       const char *ca_file, bool client, const char *alpn)
{
	struct tls_server *srv;
	static const unsigned char sid_ctx[] = "stanzad-s2s";
	int err;

	if (!client) {
		srv = tls_server_new(cert_file, key_file, alpn);
		if (!srv)
			return NULL;
		/* s2s checks the peer's certificate after the handshake: keep the SSL. */
		srv->lean = false;
	} else {
		pthread_once(&tls_bio_once, tls_bio_init_once);
		srv = calloc(1, sizeof(*srv));
		if (!srv || !tls_bio_method) {
			free(srv);
			errno = ENOMEM;
			return NULL;
		}
		ERR_clear_error();
		srv->ctx = SSL_CTX_new(TLS_client_method());
		if (!srv->ctx || tls_ctx_configure(srv->ctx) < 0) {
			err = EINVAL;
			goto err_free;
		}
		/* Our certificate, for the peers that authenticate us by SASL EXTERNAL. */
		if (SSL_CTX_use_certificate_chain_file(srv->ctx, cert_file) != 1) {
			tls_log_file_error("tls.cert_load", cert_file, NULL, 0);
			err = errno;
			goto err_free;
		}
		if (SSL_CTX_use_PrivateKey_file(srv->ctx, key_file, SSL_FILETYPE_PEM) != 1) {
			tls_log_file_error("tls.key_load", key_file, cert_file, 0);
			err = errno;
			goto err_free;
		}
	}
	SSL_CTX_set_verify(srv->ctx, SSL_VERIFY_PEER, tls_s2s_verify_cb);
	/* OpenSSL refuses to resume a verified session without an id context. */
	SSL_CTX_set_session_id_context(srv->ctx, sid_ctx, sizeof(sid_ctx) - 1);
	if (tls_s2s_load_trust(srv->ctx, ca_file) < 0) {
		err = errno ? errno : EINVAL;
		goto err_free;
	}
	return srv;

err_free:
	SSL_CTX_free(srv->ctx);
	free(srv);
	errno = err;
	return NULL;
}

/* A DNS name (not an IP literal) may go in SNI (RFC 6066 section 3). */
static bool tls_sni_ok(const char *name)
{
	unsigned char buf[16];

	if (!name || !name[0] || strlen(name) > TLS_DOMAIN_MAX || strchr(name, ':'))
		return false;
	return inet_pton(AF_INET, name, buf) != 1;
}

struct tls_conn *tls_conn_new_client(struct tls_server *ctx, const char *sni, const char *alpn,
				     tls_sink_fn sink, void *sink_arg)
{
	struct tls_conn *t = tls_conn_new(ctx, sink, sink_arg);
	unsigned char protos[TLS_ALPN_NAME_MAX + 1];
	size_t n = alpn ? strlen(alpn) : 0;

	if (!t)
		return NULL;
	SSL_set_connect_state(t->ssl);
	if (tls_sni_ok(sni) && SSL_set_tlsext_host_name(t->ssl, sni) != 1)
		goto err;
	if (n) {
		if (n > TLS_ALPN_NAME_MAX)
			goto err;
		protos[0] = (unsigned char)n;
		memcpy(protos + 1, alpn, n);
		/* Unlike most OpenSSL calls, 0 is success here. */
		if (SSL_set_alpn_protos(t->ssl, protos, (unsigned)n + 1) != 0)
			goto err;
	}
	return t;
err:
	ERR_clear_error();
	tls_conn_free(t);
	errno = EINVAL;
	return NULL;
}

int tls_conn_start_handshake(struct tls_conn *t)
{
	int ret;

	if (t->state != TLS_ST_HANDSHAKE)
		return -EINVAL;
	ERR_clear_error();
	ret = tls_conn_drive_handshake(t);
	ERR_clear_error();
	return ret < 0 ? -EPROTO : 0;
}

int tls_conn_peer_verify_domain(const struct tls_conn *t, const char *domain,
				const char **why)
{
	X509 *cert;
	long vr;
	int ret = 0;

	*why = "verified";
	if (!t->ssl || !t->hs_done) {
		*why = "no TLS session";
		return -ENOTCONN;
	}
	cert = SSL_get1_peer_certificate(t->ssl);
	if (!cert) {
		*why = "no certificate";
		return -ENOKEY;
	}
	vr = SSL_get_verify_result(t->ssl);
	if (vr != X509_V_OK) {
		*why = X509_verify_cert_error_string(vr);
		ret = -EKEYREJECTED;
	} else if (X509_check_host(cert, domain, strlen(domain), 0, NULL) != 1) {
		/* RFC 6125 DNS-ID (wildcards in the leftmost label), as XEP-0178 asks. */
		*why = "the certificate does not name the domain";
		ret = -EACCES;
	}
	X509_free(cert);
	ERR_clear_error();
	return ret;
}
