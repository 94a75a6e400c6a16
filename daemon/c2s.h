/* SPDX-License-Identifier: MIT */
/*
 * Client-to-server streams (RFC 6120 sections 4-7): the negotiation state
 * table (header -> STARTTLS -> SASL -> bind -> ready), stream features and
 * stream errors. Stanzas of a ready session go to the router.
 */
#ifndef STANZAD_C2S_H
#define STANZAD_C2S_H

#include "conn.h"

/* A connection was accepted on a c2s listener (direct_tls already set). */
void c2s_accepted(struct conn *c);

/* The TLS handshake finished (STARTTLS or Direct TLS). */
void c2s_tls_established(struct conn *c);

/* Whether the stream waits for a (new) stream header (WebSocket <open/>). */
bool c2s_expects_header(const struct conn *c);

/* The peer sent </stream:stream> or close_notify. */
void c2s_stream_closed_by_peer(struct conn *c);

/*
 * Sends a stream error (RFC 6120 4.9) with `condition` and optional text,
 * our stream header first if it was not sent yet, then the closing tag,
 * and closes the connection.
 */
void c2s_stream_error(struct conn *c, const char *condition, const char *text);

/*
 * The connection is closing (any reason): cancel auth, and end the
 * session unless stream management keeps it detached for resumption.
 */
void c2s_closing(struct conn *c);

struct session;
struct worker;

/*
 * The session ends for good (connection closed, or a detached session's
 * resumption window is over; s->conn may be NULL): it leaves the
 * directory and is freed. Per-session end logic goes here.
 */
void c2s_session_end(struct worker *w, struct session *s);

/*
 * Cluster mode: the session `full` on this worker was replaced by a
 * session with the same full JID on node `by` (cluster.c): it ends with
 * <conflict/>, as when replaced here. Nothing when it is gone already.
 */
void c2s_replaced_elsewhere(struct worker *w, const char *full, const char *by);

/* Stream management resumed s on c: c becomes ready with s as its session. */
void c2s_resume_session(struct conn *c, struct session *s);

/* ---- For the other authentication front ends (sasl2.c, sasl_external.c) ---- */

struct sasl_channel;
struct account;

/* The channel-binding view of c for SASL (sasl.h). */
void c2s_channel(const struct conn *c, struct sasl_channel *ch);
/* PLAIN (and SASL2) may run without TLS: require_tls = no. */
bool c2s_plain_allowed_insecure(const struct conn *c);

/*
 * Authentication as `user` (a normalized localpart) succeeded with `mech`:
 * c->jid is set, the RFC 6120 exchange (if any) freed, the full stanza
 * limit applies. Sends nothing. 0, or -ENOMEM after a stream error.
 */
int c2s_authenticated(struct conn *c, const char *user, const char *mech);

/*
 * An attempt failed and the caller has sent its failure element: logs,
 * frees the RFC 6120 exchange (if any), returns to the authentication
 * state, and past max_auth_failures ends the stream with
 * policy-violation ("aborted" does not count).
 */
void c2s_auth_failed(struct conn *c, const char *mech, const char *user, const char *condition);

/* SASL2 states: waiting for storage (input paused), expecting <response/>. */
void c2s_sasl2_waiting(struct conn *c);
void c2s_sasl2_challenged(struct conn *c);
/*
 * SASL2 sent <success/>: features follow (bound or not), except after an
 * inline stream resumption, where the stream is ready at once.
 */
void c2s_sasl2_finished(struct conn *c, bool resumed);

/*
 * Binds the full JID `full` (its bare part c->jid) to c with the account
 * state `loaded` (NULL when a session of the account holds it already):
 * an older session with the same full JID is replaced (conflict),
 * max_resources is enforced. Returns the session (c is then ready) or
 * NULL with *err the stanza error condition; `loaded` is consumed either
 * way.
 */
struct session *c2s_bind_resource(struct conn *c, const char *full, struct account *loaded,
				  const char **err);

/*
 * Sends a stanza (message, presence, iq) on a client stream; stream
 * management counts what passes here.
 */
void c2s_send_stanza(struct conn *c, const struct xml_node *st);

/*
 * The same for a stanza already serialized for this stream (fan-out:
 * presence.c): data[0..len) is st serialized with its recipient's 'to'.
 */
void c2s_send_prepared(struct conn *c, const struct xml_node *st, const char *data, size_t len);

/* Frees the sessions that ended during this loop turn (worker, end of turn). */
struct worker;
void c2s_reap_sessions(struct worker *w);

/* The connection's deadline expired (not called once closing). */
void c2s_deadline(struct conn *c);

#endif
