/* SPDX-License-Identifier: MIT */
/*
 * Federation (RFC 6120 server-to-server streams) and external components
 * (XEP-0114).
 *
 * Outbound: stanzas for another domain go to a link per (local domain,
 * remote domain) pair. A link resolves the remote domain (the static host
 * table, else DNS SRV _xmpps-server/_xmpp-server with A/AAAA fallback, on
 * the resolver thread), connects (io_uring connect), negotiates TLS
 * (Direct TLS or STARTTLS, certificate checked for the domain) and
 * authenticates by SASL EXTERNAL or dialback (XEP-0220). Stanzas wait in
 * the link's bounded queue meanwhile and are bounced (remote-server-not-
 * found, remote-server-timeout) when it fails.
 *
 * Inbound: a peer connects, negotiates TLS and proves its domain by
 * certificate (SASL EXTERNAL, XEP-0178) or, when the policy s2s_auth =
 * dialback allows it, by dialback; its stanzas must come from a domain it
 * proved and go to one of ours, or the stream ends with invalid-from,
 * host-unknown or improper-addressing.
 *
 * Components: a configured domain is served by whoever connects with its
 * secret (component.c); stanzas to it go there or bounce with
 * service-unavailable.
 *
 * Everything here runs on a worker's loop. s2s_owns() connections pass
 * through the same conn layer as clients; c2s.c hands their stream events
 * here.
 */
#ifndef STANZAD_S2S_H
#define STANZAD_S2S_H

#include <stdbool.h>
#include <stddef.h>

#include "conn.h"
#include "tls.h"
#include "xml.h"

struct server;
struct worker;
struct jid;

/* The connection is a server or component stream (not a client, not HTTP). */
static inline bool s2s_owns(const struct conn *c)
{
	return c->kind == CONN_S2S_IN || c->kind == CONN_S2S_OUT || c->kind == CONN_COMPONENT;
}

/* ---- Process setup (main.c) ---- */

/*
 * TLS contexts for s2s (server and client side, sharing the server's
 * certificate), the dialback secret, the host table, the component table
 * and the resolver thread. 0, or -errno with a line on stderr.
 */
int s2s_server_init(struct server *srv);
/* Stops the resolver thread (before the workers' inboxes are drained). */
void s2s_server_stop(struct server *srv);
/* Frees what s2s_server_init made (after the workers). */
void s2s_server_free(struct server *srv);

/* Whether a listener kind (enum listener_kind) belongs here. */
bool s2s_listener_kind(int kind);

/* ---- Connection events (worker.c, conn.c, c2s.c) ---- */

/* Accepted on an s2s, s2s Direct TLS or component listener. */
void s2s_accepted(struct conn *c, int listener_kind);
/* An outbound connect finished: res 0 (receiving is armed) or -errno. */
void s2s_connected(struct conn *c, int res);
/* The TLS handshake completed. */
void s2s_tls_established(struct conn *c);
/* Stream error with our header first if needed; then the connection closes. */
void s2s_stream_error(struct conn *c, const char *condition, const char *text);
/* The peer closed its stream (or sent close_notify). */
void s2s_stream_closed_by_peer(struct conn *c);
/* The connection closes for any reason (once): links, components, verifications. */
void s2s_closing(struct conn *c);
/* The connection's deadline fired: connect, handshake or idle. */
void s2s_deadline(struct conn *c);
/* A connection's output queue drained (conn.c): our links refill it from theirs. */
void s2s_output_drained(struct conn *c);
/* Frees the per-connection state (the worker, with the connection). */
void s2s_conn_free(struct conn *c);
/* The TLS object for c: server side inbound, client side (SNI, ALPN) outbound. */
struct tls_conn *s2s_tls_conn_new(struct conn *c, tls_sink_fn sink);
/* Frees the worker's links, bouncing nothing (shutdown). */
void s2s_worker_destroy(struct worker *w);

/* ---- Routing (router.c, presence.c) ---- */

/*
 * Whether domain[0..len) is served here: the server's domain, one of its
 * services (service.c) or a configured component.
 */
bool s2s_domain_is_local(const struct worker *w, const char *domain, size_t len);

/* Whether domain[0..len) is a configured component's. */
bool s2s_domain_is_component(const struct worker *w, const char *domain, size_t len);

/*
 * A stanza for a domain that is neither ours nor one of our services:
 * to a configured component (XEP-0114), or over the link to the remote
 * domain. Bounces (to the local sender through the router) when that is
 * not possible: component not connected (service-unavailable), federation
 * off or the link failing (remote-server-not-found, remote-server-timeout),
 * the queue full (resource-constraint). Presence is never bounced for a
 * full queue or federation off, as before federation. 'from' must be at a
 * local domain: stanzas are never relayed between other servers.
 */
void s2s_route(struct worker *w, struct conn *src, struct xml_node *st, const struct jid *from,
	       const struct jid *to);

/*
 * One copy of a fan-out to a contact at another domain (presence
 * broadcasts): data[0..len) is the stanza serialized with its 'to' (the
 * normalized JID to[0..to_len)), from a JID at from_domain (ours).
 */
void s2s_send_prepared(struct worker *w, const char *from_domain, const char *to, size_t to_len,
		       const char *data, size_t len);

/* ---- Pure helpers (unit-tested) ---- */

/*
 * The dialback key (XEP-0220 section 2.1.1, XEP-0185): hex of
 * HMAC-SHA256(SHA256(secret), receiving + ' ' + originating + ' ' +
 * stream_id), into out (65 bytes). 0 or -EINVAL.
 */
int s2s_dialback_key(const unsigned char *secret, size_t secret_len, const char *receiving,
		     const char *originating, const char *stream_id, char out[65]);

/*
 * XEP-0114 handshake check: whether `given` is the hex SHA-1 of
 * stream_id + secret (case-insensitive, constant time).
 */
bool s2s_component_handshake_ok(const char *stream_id, const char *secret, const char *given);

/*
 * Parses a static host table entry "DOMAIN=[tls:]ADDR:PORT" (s2s_host):
 * the normalized domain into domain (JID_PART_MAX + 1 bytes), the address,
 * and whether it is Direct TLS. 0 or -EINVAL.
 */
struct sockaddr_storage;
int s2s_host_parse(const char *entry, char *domain, size_t domain_size,
		   struct sockaddr_storage *addr, unsigned *addrlen, bool *direct_tls);

/*
 * Parses a component entry "DOMAIN=SECRET": the normalized domain into
 * domain (JID_PART_MAX + 1 bytes) and a pointer to the secret inside
 * entry. 0 or -EINVAL (no '=', bad domain, empty secret).
 */
int s2s_component_parse(const char *entry, char *domain, size_t domain_size,
			const char **secret);
/* The s2s_auth policy: NULL or "dialback" allow dialback, "verified" does not. */
int s2s_auth_parse(const char *v, bool *verified_only);

#endif
