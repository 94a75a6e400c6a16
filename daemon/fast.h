/* SPDX-License-Identifier: MIT */
/*
 * FAST (XEP-0484, urn:xmpp:fast:0): tokens for one-round-trip
 * reauthentication with the HT SASL mechanisms
 * (draft-schmaus-kitten-sasl-ht): HT-SHA-256-NONE, -ENDP
 * (tls-server-end-point) and -EXPR (tls-exporter).
 *
 * Tokens. A token is FAST_TOKEN_BYTES random bytes in base64url, longer
 * than SHA-256's 64-byte block, so RFC 2104 makes SHA-256(token) the HMAC
 * key: that hash is all the server stores. It still lets whoever reads
 * the database compute HT proofs, as any HT verifier must (the mechanism
 * has no salted verifier), but the token text never touches the disk.
 *
 * Per account and client (the SASL2 user-agent id) there are two slots,
 * 'current' and 'new' (XEP-0484 section 5.1): a token is issued into
 * 'new' (replacing an unused one); a login with the 'new' token moves it
 * to 'current', which ends the previous token; a login with 'current'
 * keeps a pending 'new'. A token is bound to the mechanism it was
 * requested for, expires after fast_token_lifetime, and is succeeded by
 * a new one at its first use after fast_rotate_after.
 *
 * Replay: a 'count' on <fast/> must exceed every count accepted for the
 * token (the XEP's 0-RTT rule, applied whenever a count is sent; stanzad
 * does not accept 0-RTT data). HT-*-EXPR proofs are bound to the TLS
 * connection, so a proof seen on one connection is useless on another.
 *
 * Verification and every state change of a login run in one storage
 * request, on the storage thread, inside one transaction: two logins
 * racing with one token cannot both pass a counter check.
 */
#ifndef STANZAD_FAST_H
#define STANZAD_FAST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storage.h"

#define NS_FAST			"urn:xmpp:fast:0"

#define FAST_TOKEN_BYTES	54	/* random bytes of a token (432 bits) */
#define FAST_TOKEN_LEN		72	/* its base64url text, > the 64-byte HMAC block */
#define FAST_KEY_LEN		32	/* SHA-256 */
#define FAST_CLIENT_ID_MAX	128	/* bytes of a user-agent id we keep */
#define FAST_MECH_MAX		31
#define FAST_CB_MAX		64	/* largest channel binding value used */
#define FAST_AUTHCID_MAX	1023	/* bytes of the authcid in an HT message */

/* Channel binding of an HT mechanism. */
enum fast_cb {
	FAST_CB_NONE = 0,
	FAST_CB_ENDP,		/* tls-server-end-point (RFC 5929) */
	FAST_CB_EXPR,		/* tls-exporter (RFC 9266) */
};

struct fast_mech {
	const char *name;
	enum fast_cb cb;
};

/* The HT mechanism called `name`, or NULL. */
const struct fast_mech *fast_mech_find(const char *name);

/*
 * The HT mechanisms to offer, channel binding first: -EXPR when exporter
 * data exists, -ENDP on TLS, -NONE always. Returns the count (<= cap).
 */
size_t fast_offer(bool tls, bool exporter, const char **names, size_t cap);

/*
 * Splits an HT initiator message "authcid NUL hashed-token": the authcid
 * (1..FAST_AUTHCID_MAX bytes, no NUL) is copied into user (user_size >
 * its length), *mac points at the hash inside msg. 0 or -EINVAL.
 */
int fast_ht_parse(const char *msg, size_t len, char *user, size_t user_size,
		  const uint8_t **mac, size_t *mac_len);

/*
 * HMAC-SHA-256 with the stored key over label || cb (label "Initiator"
 * or "Responder"): the HT proofs.
 */
void fast_ht_hmac(const uint8_t key[FAST_KEY_LEN], const char *label, const uint8_t *cb,
		  size_t cb_len, uint8_t out[FAST_KEY_LEN]);

/* The stored key of a token text: SHA-256 of its bytes. */
void fast_token_key(const char *token, size_t len, uint8_t key[FAST_KEY_LEN]);

/* A new random token (text, NUL-terminated) and its key. 0 or -EIO. */
int fast_token_new(char token[FAST_TOKEN_LEN + 1], uint8_t key[FAST_KEY_LEN]);

/* XEP-0082 DateTime of a Unix time into out (at least 21 bytes). */
void fast_datetime(int64_t t, char *out, size_t size);

/* ---- A FAST login, run on the storage thread ---- */

struct fast_login {
	/* in */
	char user[STORAGE_USER_MAX + 1];	/* normalized authcid */
	char client[FAST_CLIENT_ID_MAX + 1];	/* user-agent id, "" none */
	char mech[FAST_MECH_MAX + 1];		/* the HT mechanism used */
	uint8_t mac[FAST_KEY_LEN];		/* the client's initiator proof */
	uint8_t cb[FAST_CB_MAX];		/* channel binding data of mech */
	size_t cb_len;
	bool has_count;
	uint32_t count;
	bool invalidate;			/* <fast invalidate='true'/> */
	char request_mech[FAST_MECH_MAX + 1];	/* <request-token/>: "" none */
	int64_t now;
	uint32_t lifetime, rotate_after;
	/* out */
	const char *condition;			/* NULL: authenticated */
	const char *why;			/* for the log */
	uint8_t responder[FAST_KEY_LEN];	/* the server's proof (additional data) */
	bool issued;				/* token/expires hold a new token */
	char token[FAST_TOKEN_LEN + 1];
	int64_t expires;
};

/*
 * Verifies fl's proof against the account's tokens for its client and
 * applies what follows (slot move, counter, invalidation, rotation, a
 * requested token). Sets fl->condition to NULL on success, else to
 * "not-authorized" (no such token, wrong proof, mechanism or count) or
 * "credentials-expired" (the proof matched an expired token, which is
 * then deleted). Returns 0 (verdict in fl) or -errno for a storage
 * failure.
 */
int fast_login_sync(struct storage *st, struct fast_login *fl);

/*
 * Issues a token for `mech` into the client's 'new' slot (after another
 * mechanism authenticated the user). 0 or -errno.
 */
int fast_issue_sync(struct storage *st, const char *user, const char *client, const char *mech,
		    int64_t now, uint32_t lifetime, char token[FAST_TOKEN_LEN + 1],
		    int64_t *expires);

/* ---- SQL (storage_fast.c) ---- */

struct fast_token_row {
	bool is_new;				/* slot 'new' (else 'current') */
	char mech[FAST_MECH_MAX + 1];
	uint8_t key[FAST_KEY_LEN];
	int64_t issued_at, expires_at;
	int64_t counter;
};

/*
 * The client's tokens (0..2 rows, 'new' first), locked until the commit on
 * PostgreSQL. 0 or -errno.
 */
int fast_db_get(struct storage *st, const char *user, const char *client,
		struct fast_token_row rows[2], size_t *n);
/* Writes a slot (replacing it). 0 or -errno. */
int fast_db_put(struct storage *st, const char *user, const char *client,
		const struct fast_token_row *row);
/*
 * Deletes one slot, or both when is_new < 0; with client NULL, every token
 * of the account (a revoked certificate must not live on as a token).
 * 0 or -errno.
 */
int fast_db_delete(struct storage *st, const char *user, const char *client, int is_new);
/* Sets a slot's counter. 0 or -errno. */
int fast_db_set_counter(struct storage *st, const char *user, const char *client, bool is_new,
			int64_t counter);

#endif
