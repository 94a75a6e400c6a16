/* SPDX-License-Identifier: MIT */
/*
 * kTLS: handing an established TLS session's record layer to the kernel.
 *
 * OpenSSL does the handshake on buffers (tls.c); this file turns the
 * session's secrets into the kernel's key material and installs it on the
 * socket (TCP_ULP "tls", SOL_TLS TLS_TX and TLS_RX). From then on the
 * daemon sends and receives plaintext on that socket; non-data records
 * (alerts, post-handshake messages) arrive as control messages.
 *
 * Nothing here touches the ring or keeps state per connection: key
 * derivation (RFC 8446 7.1/7.3 for TLS 1.3, RFC 5246 5/6.3 for TLS 1.2),
 * the one-time probe of what the running kernel supports, the setsockopt
 * calls, and alerts sent as records of their own type.
 *
 * Key material passes through `union ktls_crypto_info` on the caller's
 * stack; callers wipe it (explicit_bzero) as soon as it is installed.
 */
#ifndef STANZAD_KTLS_H
#define STANZAD_KTLS_H

#include <linux/tls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The AEAD suites stanzad negotiates; each maps to one kernel cipher. */
enum ktls_cipher {
	KTLS_CIPHER_NONE = 0,
	KTLS_AES_128_GCM,
	KTLS_AES_256_GCM,
	KTLS_CHACHA20_POLY1305,
};

#define KTLS_CIPHER_COUNT	3

/*
 * One bit per (protocol version, cipher) the kernel accepted in the probe:
 * KTLS_BIT(false, c) for TLS 1.2, KTLS_BIT(true, c) for TLS 1.3.
 */
#define KTLS_BIT(tls13, c)	(1u << (((tls13) ? KTLS_CIPHER_COUNT : 0) + (c) - 1))
#define KTLS_ALL_SUITES		((1u << (2 * KTLS_CIPHER_COUNT)) - 1)

/* The kernel's key material for one direction (first member = the header). */
union ktls_crypto_info {
	struct tls_crypto_info info;
	struct tls12_crypto_info_aes_gcm_128 aes128;
	struct tls12_crypto_info_aes_gcm_256 aes256;
	struct tls12_crypto_info_chacha20_poly1305 chacha;
};

/* TLS record content types (RFC 8446 5.1). */
enum ktls_record_type {
	KTLS_RECORD_CHANGE_CIPHER_SPEC = 20,
	KTLS_RECORD_ALERT = 21,
	KTLS_RECORD_HANDSHAKE = 22,
	KTLS_RECORD_DATA = 23,
};

/* Alerts we send or recognise (RFC 8446 6). */
#define KTLS_ALERT_WARNING		1
#define KTLS_ALERT_FATAL		2
#define KTLS_ALERT_CLOSE_NOTIFY		0
#define KTLS_ALERT_USER_CANCELED	90
#define KTLS_ALERT_NO_RENEGOTIATION	100

/* Handshake message types seen after the handshake (RFC 8446 4). */
#define KTLS_HS_CLIENT_HELLO		1
#define KTLS_HS_NEW_SESSION_TICKET	4
#define KTLS_HS_KEY_UPDATE		24

#define KTLS_SECRET_MAX		48	/* SHA-384 traffic secret */
#define KTLS_RANDOM_LEN		32	/* client/server random */

/* Short name for logs ("AES-128-GCM", ...); "none" for KTLS_CIPHER_NONE. */
const char *ktls_cipher_name(enum ktls_cipher c);

/* Size of the kernel struct for cipher c (what setsockopt expects), 0 if unknown. */
size_t ktls_info_size(enum ktls_cipher c);

/*
 * HKDF-Expand-Label (RFC 8446 7.1) with the hash of cipher c (SHA-256 or
 * SHA-384): out_len bytes from secret, "tls13 " + label and context.
 * 0, or -EINVAL (label/context too long, unknown cipher) / -EIO (crypto).
 */
int ktls_hkdf_expand_label(enum ktls_cipher c, const uint8_t *secret, size_t secret_len,
			   const char *label, const uint8_t *context, size_t context_len,
			   uint8_t *out, size_t out_len);

/*
 * TLS 1.3: the key material of one direction from its application traffic
 * secret (RFC 8446 7.3: key and iv by HKDF-Expand-Label), starting at
 * record sequence number seq. 0 or -EINVAL / -EIO.
 */
int ktls_tls13_info(enum ktls_cipher c, const uint8_t *secret, size_t secret_len, uint64_t seq,
		    union ktls_crypto_info *out);

/*
 * TLS 1.2 key block (RFC 5246 6.3): PRF(master_secret, "key expansion",
 * server_random + client_random) with the suite's PRF hash. out_len bytes.
 * 0 or -EINVAL / -EIO.
 */
int ktls_tls12_key_block(enum ktls_cipher c, const uint8_t *master, size_t master_len,
			 const uint8_t client_random[KTLS_RANDOM_LEN],
			 const uint8_t server_random[KTLS_RANDOM_LEN], uint8_t *out, size_t out_len);

/*
 * TLS 1.2: the key material of one direction (server_write: ours, else the
 * client's) from the master secret and the hello randoms, starting at
 * record sequence number seq. AES-GCM's explicit nonce starts at seq too
 * (the kernel counts both up together, so nonces never repeat).
 * 0 or -EINVAL / -EIO.
 */
int ktls_tls12_info(enum ktls_cipher c, const uint8_t *master, size_t master_len,
		    const uint8_t client_random[KTLS_RANDOM_LEN],
		    const uint8_t server_random[KTLS_RANDOM_LEN], bool server_write, uint64_t seq,
		    union ktls_crypto_info *out);

/*
 * Finds out once per process what the running kernel offloads: for each
 * TLS version and cipher, a loopback TCP pair gets the "tls" ULP and keys
 * on both ends, and one record must make it through the kernel intact.
 * Returns the KTLS_BIT mask (0 when nothing works) and writes a short
 * reason into why (e.g. "the kernel has no tls ULP (ENOENT)") when some
 * or all of it is missing.
 */
unsigned ktls_probe(char *why, size_t why_size);

/* How far ktls_install() got. */
enum ktls_step {
	KTLS_STEP_ULP = 0,	/* attaching the "tls" ULP */
	KTLS_STEP_TX,		/* TX keys: the socket is still plain TCP */
	KTLS_STEP_RX,		/* RX keys: the kernel already encrypts what is sent */
	KTLS_STEP_DONE,
};

/*
 * Installs TX then RX keys on a connected TCP socket. *step says where it
 * stopped: on a failure before KTLS_STEP_RX the socket passes bytes
 * through untouched and userspace TLS can go on; at KTLS_STEP_RX the
 * kernel already encrypts what is sent, so the connection cannot go back.
 * 0 or -errno of the failed step.
 */
int ktls_install(int fd, const union ktls_crypto_info *tx, const union ktls_crypto_info *rx,
		 enum ktls_step *step);

/* "TCP_ULP", "TLS_TX", "TLS_RX" or "done", for logs. */
const char *ktls_step_name(enum ktls_step step);

/*
 * Sends one alert record through the kernel (a non-blocking sendmsg with
 * TLS_SET_RECORD_TYPE). For close_notify after the output queue drained.
 * 0 or -errno.
 */
int ktls_send_alert(int fd, uint8_t level, uint8_t description);

#endif
