/* SPDX-License-Identifier: MIT */
/*
 * TLS over io_uring with OpenSSL 3: the record layer runs on buffers the
 * loop hands over, never on the socket.
 *
 * Ciphertext in: tls_conn_input() lends OpenSSL the bytes of one receive
 * (no copy into a memory BIO; OpenSSL keeps partial records in its own
 * buffer). Ciphertext out: everything OpenSSL writes goes straight to the
 * connection's sink callback (its output queue), which the loop flushes
 * once per turn. Plaintext is returned to the caller through a callback
 * as it is decrypted.
 *
 * Only TLS 1.2 and 1.3 are allowed. SSL_MODE_RELEASE_BUFFERS keeps idle
 * connections small. Session tickets are on (fast reconnects).
 *
 * Measured on OpenSSL 3.0.19: an idle server connection after a TLS 1.3
 * handshake holds about 14 KiB of heap (TLS 1.2: 13 KiB), almost all of it
 * the SSL object (its struct alone is 7.4 KiB). That is above the 12 KiB
 * budget; only freeing the SSL after the handshake (kTLS handoff) meets it.
 */
#ifndef STANZAD_TLS_H
#define STANZAD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct tls_server;	/* one per server: SSL_CTX, certificate, key */
struct tls_conn;	/* one per connection: OpenSSL state, or what kTLS left of it */
union ktls_crypto_info;

/* Largest channel binding value tls_conn_channel_binding() can return. */
#define TLS_CHANNEL_BINDING_MAX	64

/*
 * Loads cert_file (PEM chain) and key_file. alpn is the protocol the
 * Direct TLS port insists on when the client offers ALPN ("xmpp-client"):
 * a client offering ALPN without it fails with no_application_protocol;
 * clients offering no ALPN are accepted. alpn NULL (STARTTLS port): ALPN
 * offers are ignored. NULL with errno set and a log line naming the file
 * on failure: ENOENT/EACCES/... (file), EINVAL (not PEM, bad ALPN name),
 * EKEYREJECTED (key does not match the certificate), ENOMEM.
 * Resumption is by stateless session tickets (no server session cache).
 */
struct tls_server *tls_server_new(const char *cert_file, const char *key_file,
				  const char *alpn);
/*
 * A second server object on the same certificate, key and ticket keys as
 * `base` (so a ticket from one port resumes on the other), with its own
 * ALPN policy. Either may be freed first. NULL with errno set.
 */
struct tls_server *tls_server_share(const struct tls_server *base, const char *alpn);
void tls_server_free(struct tls_server *srv);

/*
 * The OpenSSL context of srv (shared by its siblings), for tls_certs.c:
 * showing the certificate in use and installing a new one.
 */
struct ssl_ctx_st;
struct ssl_ctx_st *tls_server_ctx(const struct tls_server *srv);

/*
 * SASL EXTERNAL (XEP-0178): client certificates are verified against the
 * CA certificates in ca_file and, if crl_file is not NULL, the CRLs in it
 * (tls_client_cert.h). Connections ask for a certificate only after
 * tls_conn_request_client_cert(), so HTTPS on the same context is not
 * affected. Call for each server object (siblings share the context).
 * 0 or -errno (logged).
 */
int tls_server_set_client_ca(struct tls_server *srv, const char *ca_file, const char *crl_file);

/*
 * Generates a self-signed ECDSA P-256 certificate for `domain` (subject CN
 * and subjectAltName DNS:domain and DNS:*.domain, 10 years) and writes
 * cert_file (0644) and key_file (0600) atomically (temp file + rename).
 * 0, -EINVAL (domain is not a DNS name) or -errno.
 */
int tls_generate_self_signed(const char *domain, const char *cert_file,
			     const char *key_file);

/* Receives ciphertext to send; returns 0 or -ENOMEM (the conn is then closed). */
typedef int (*tls_sink_fn)(void *arg, const void *data, size_t len);
/* Receives decrypted application data; returns 0 to go on, nonzero to stop. */
typedef int (*tls_plain_fn)(void *arg, const char *data, size_t len);

struct tls_conn *tls_conn_new(struct tls_server *srv, tls_sink_fn sink, void *sink_arg);
void tls_conn_free(struct tls_conn *t);

/*
 * c2s: asks the peer for an optional client certificate in this handshake
 * when the server has a client CA (before any input). No-op otherwise.
 */
void tls_conn_request_client_cert(struct tls_conn *t);

/*
 * The client certificate captured when the handshake completed (valid
 * after the kTLS handoff too), or NULL when none was presented.
 */
struct tls_peer_cert;
const struct tls_peer_cert *tls_conn_peer_cert(const struct tls_conn *t);

/* Result of feeding ciphertext. */
enum tls_status {
	TLS_OK = 0,		/* all input consumed; maybe more to come */
	TLS_HANDSHAKE_DONE,	/* the handshake completed during this call */
	TLS_STOPPED,		/* the plaintext callback asked to stop */
	TLS_CLOSED,		/* the peer sent close_notify */
	TLS_ERROR,		/* fatal: any alert OpenSSL made is queued to the sink */
};

/*
 * Feeds one receive's ciphertext; the bytes are only borrowed for the call
 * (partial records are kept inside OpenSSL). Drives the handshake and
 * decrypts; each chunk of plaintext (at most one record, 16 KiB) goes to
 * on_plain. Alerts, handshake and post-handshake messages (tickets,
 * KeyUpdate) go to the sink. Returns a status; on TLS_ERROR,
 * tls_conn_error() describes it, and every later call returns TLS_ERROR.
 * If the handshake completes and application data follows in the same
 * input, TLS_HANDSHAKE_DONE is returned only after that data was passed on;
 * TLS_STOPPED, TLS_CLOSED and TLS_ERROR take precedence over it (check
 * tls_conn_handshake_done()).
 * After TLS_STOPPED the unread rest of the input is copied into the conn:
 * tls_conn_pending() is true, and calling tls_conn_input() again (with new
 * data, or data NULL / len 0 just to resume) processes it first.
 * on_plain may call tls_conn_write() and tls_conn_shutdown(), but must not
 * free t or feed it input.
 */
enum tls_status tls_conn_input(struct tls_conn *t, const void *data, size_t len,
			       tls_plain_fn on_plain, void *arg);

/* True while input kept by a TLS_STOPPED call waits to be processed. */
bool tls_conn_pending(const struct tls_conn *t);

/*
 * Encrypts plaintext into records for the sink (all of it, or nothing
 * usable: a failure is fatal for the conn). 0, -ENOTCONN before the
 * handshake completed, the sink's error (-ENOMEM), or -EIO.
 */
int tls_conn_write(struct tls_conn *t, const void *data, size_t len);

/*
 * Queues close_notify to the sink (once; nothing before the handshake
 * completed or after a fatal error). Answering a TLS_CLOSED is up to the
 * caller.
 */
void tls_conn_shutdown(struct tls_conn *t);

bool tls_conn_handshake_done(const struct tls_conn *t);
/* "TLSv1.3", cipher name, negotiated ALPN ("" if none / before the handshake). */
const char *tls_conn_version(const struct tls_conn *t);
const char *tls_conn_cipher(const struct tls_conn *t);
const char *tls_conn_alpn(const struct tls_conn *t);
/* Short human reason for the last error (for logs), never NULL. */
const char *tls_conn_error(const struct tls_conn *t);

/* TLS 1.3? */
bool tls_conn_is_tls13(const struct tls_conn *t);

/*
 * Channel binding data (RFC 5929 / RFC 9266) for SCRAM-*-PLUS:
 * "tls-exporter" (32 bytes, label only and no context; TLS 1.3, and TLS 1.2
 * with extended master secret), "tls-unique" (the first Finished message
 * of the handshake, as CPython's ssl module computes it; TLS 1.2, and on
 * TLS 1.3 the value deployed clients compute) and "tls-server-end-point"
 * (hash of our certificate). Writes at most cap bytes. Returns the length,
 * -ENOTSUP when the type is unknown or does not apply, -ENOSPC when cap is
 * too small (never truncates), -ENOTCONN unless the handshake is done and
 * the connection healthy.
 */
ssize_t tls_conn_channel_binding(const struct tls_conn *t, const char *type,
				 unsigned char *out, size_t cap);

/* ---- kTLS handoff (see ktls.h and conn.c) ----
 *
 * After the handshake, the record layer of a connection can move to the
 * kernel. OpenSSL cannot do that itself here (memory BIOs, and 3.0 never
 * offloads TLS 1.3 receive), so tls.c keeps what the kernel will need
 * while the handshake runs: the traffic secrets (TLS 1.3, from the keylog
 * callback), and the record sequence numbers, by following the record
 * framing of every byte that passes the BIO in each direction.
 */

/*
 * Lets connections of this server move to kTLS for the (version, cipher)
 * pairs in mask (KTLS_BIT bits from ktls_probe()). Turns on the keylog
 * and message callbacks that collect secrets and watch for key changes;
 * with mask 0 nothing changes. Call before connections are created.
 */
void tls_server_enable_ktls(struct tls_server *srv, unsigned mask);

/*
 * True when the handshake is done and the negotiated version and cipher
 * can move to the kernel, and nothing since the handshake (KeyUpdate,
 * renegotiation, a lost secret) made the collected keys stale.
 */
bool tls_conn_ktls_possible(const struct tls_conn *t);

/* Bytes OpenSSL still needs to complete a partly received record; 0 at a record boundary. */
size_t tls_conn_rx_partial(const struct tls_conn *t);

/*
 * Computes the kernel's key material for both directions at the current
 * record sequence numbers. Only valid when every received byte went
 * through tls_conn_input(), all plaintext was taken, and everything that
 * went to the sink has been sent (or will be before any kTLS byte).
 * 0; -EAGAIN inside a received record (read tls_conn_rx_partial() more
 * bytes first); -ENOTSUP when this connection cannot move (then it just
 * stays in userspace). The caller wipes tx and rx after use.
 */
int tls_conn_ktls_keys(struct tls_conn *t, union ktls_crypto_info *tx, union ktls_crypto_info *rx);

/*
 * The kernel has the keys: frees the SSL object and the collected secrets.
 * What stays (about 200 bytes) answers the accessors and the channel
 * binding queries; tls_conn_input/write/shutdown must not be called again.
 */
void tls_conn_ktls_done(struct tls_conn *t);

/*
 * The handoff will not happen (the kernel refused, the connection closes):
 * drops the bookkeeping so userspace TLS goes on at no extra cost.
 */
void tls_conn_ktls_abandon(struct tls_conn *t);

/* True after tls_conn_ktls_done(). */
bool tls_conn_in_kernel(const struct tls_conn *t);

/*
 * True once a TLS 1.3 connection runs without its SSL object: after the
 * handshake, when kTLS does not take it, tls.c seals and opens the records
 * itself (same suite and keys) and the SSL object's ~13 KB are freed.
 * Everything above works the same; only the SSL-level calls are gone.
 */
bool tls_conn_is_lean(const struct tls_conn *t);

/*
 * kTLS mode: true exactly once when a close_notify should be sent now
 * (not after a fatal alert, not twice).
 */
bool tls_conn_take_close_notify(struct tls_conn *t);

/* kTLS mode: the peer sent a fatal alert or the stream broke; no close_notify. */
void tls_conn_mark_failed(struct tls_conn *t);

/* ---- Federation (s2s.c) ----
 *
 * s2s streams authenticate servers by their certificates (RFC 6120 13.7,
 * XEP-0178): both sides present one and check the other's. A chain that
 * does not verify does not fail the handshake; the stream layer asks
 * tls_conn_peer_verify_domain() for the domain the peer claims and, when
 * its policy allows, falls back to dialback (XEP-0220). No kTLS on these
 * contexts: the SSL object must stay for that check.
 */

/*
 * A context for s2s: server side (client false; asks peers for a
 * certificate; alpn as in tls_server_new) or client side (client true;
 * presents our certificate; alpn unused). Peers are checked against the
 * CA certificates in ca_file (PEM), or the system store when NULL. NULL
 * with errno set (logged).
 */
struct tls_server *tls_s2s_context_new(const char *cert_file, const char *key_file,
				       const char *ca_file, bool client, const char *alpn);

/*
 * A client connection on a client context: SNI set to sni (unless it is
 * an IP literal), ALPN offering alpn when not NULL ("xmpp-server" for
 * Direct TLS, XEP-0368). Start it with tls_conn_start_handshake(). NULL
 * with errno set.
 */
struct tls_conn *tls_conn_new_client(struct tls_server *ctx, const char *sni, const char *alpn,
				     tls_sink_fn sink, void *sink_arg);

/* Sends the ClientHello (to the sink). 0, or -EPROTO (see tls_conn_error). */
int tls_conn_start_handshake(struct tls_conn *t);

/*
 * Whether the peer's certificate proves `domain` (RFC 6120 13.7.2): its
 * chain verifies against the context's trust store and it names the
 * domain as a DNS-ID (RFC 6125, wildcards allowed in the leftmost label).
 * 0; -ENOKEY (no certificate), -EKEYREJECTED (untrusted chain), -EACCES
 * (another name), -ENOTCONN (no handshake). *why says it for the log.
 */
int tls_conn_peer_verify_domain(const struct tls_conn *t, const char *domain,
				const char **why);

#endif
