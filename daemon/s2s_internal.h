/* SPDX-License-Identifier: MIT */
/*
 * What s2s.c, s2s_in.c, s2s_out.c, s2s_dns.c and component.c share. Not
 * for other modules: their interface is s2s.h.
 */
#ifndef STANZAD_S2S_INTERNAL_H
#define STANZAD_S2S_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "jid.h"
#include "s2s.h"
#include "storage.h"

#define NS_DIALBACK		"jabber:server:dialback"
#define NS_DIALBACK_FEATURE	"urn:xmpp:features:dialback"
#define NS_COMPONENT		"jabber:component:accept"
#define NS_TLS			"urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL			"urn:ietf:params:xml:ns:xmpp-sasl"

#define S2S_ADDRS_MAX		8	/* addresses tried per link attempt */
#define S2S_PAIRS_MAX		8	/* domain pairs one inbound stream may prove */
#define S2S_VERIFY_MAX		64	/* dialback verifications pending per inbound stream */
#define S2S_LINK_VERIFY_MAX	256	/* ... and waiting on one link for their answers */
#define S2S_DEFAULT_PORT	5269	/* RFC 6120 3.2.1 fallback */
#define S2S_DB_KEY_LEN		64	/* hex of HMAC-SHA256 */
#define S2S_STREAM_ID_MAX	64	/* longest peer stream id we keep */

/* One address to try for a remote domain. */
struct s2s_addr {
	struct sockaddr_storage ss;
	unsigned len;
	bool direct_tls;		/* XEP-0368: TLS from the first byte, ALPN xmpp-server */
};

/* A static host table entry (s2s_host). */
struct s2s_host {
	char domain[JID_PART_MAX + 1];
	struct s2s_addr addr;
};

/* A configured component and, while it is connected, its stream. */
struct s2s_component {
	char domain[JID_PART_MAX + 1];
	const char *secret;		/* in the configuration (wiped at exit there) */
	struct worker *w;		/* the connected stream: NULL when none */
	uint32_t slot, gen;
};

struct s2s_resolver;

/* Process-wide federation state (srv->s2s), read-only once workers run. */
struct s2s_server {
	struct tls_server *tls_in;		/* inbound STARTTLS: asks for peer certificates */
	struct tls_server *tls_in_direct;	/* inbound Direct TLS: ALPN xmpp-server */
	struct tls_server *tls_out;		/* our links: client side, our certificate */
	unsigned char db_secret[32];		/* dialback keys (XEP-0185), per process */
	bool verified_only;			/* s2s_auth = verified */
	struct s2s_host hosts[CONFIG_MAX_LIST];
	unsigned nhosts;
	/*
	 * Components: one table for the process. With one worker nothing
	 * else touches it; the connected stream is named by worker, slot and
	 * generation, so a stale entry is recognized.
	 */
	struct s2s_component comps[CONFIG_MAX_LIST];
	unsigned ncomps;
	struct s2s_resolver *resolver;
};

/* ---- DNS (s2s_dns.c) ---- */

/*
 * A resolution: submitted by a worker, run on the resolver thread,
 * completed through the worker's inbox like a storage request (req.done
 * runs on the worker; req.arg is the submitter's).
 */
struct s2s_dns_req {
	struct storage_req req;		/* first */
	struct s2s_dns_req *qnext;	/* resolver queue */
	char domain[JID_PART_MAX + 1];
	struct s2s_addr addrs[S2S_ADDRS_MAX];
	unsigned naddrs;
};

/* One SRV record (RFC 2782). */
struct s2s_srv {
	uint16_t priority, weight, port;
	char target[256];
};

struct s2s_resolver *s2s_resolver_start(void);
void s2s_resolver_stop(struct s2s_resolver *r);
/* Queues a resolution; its done runs later on the inbox's thread. */
void s2s_resolver_submit(struct s2s_resolver *r, struct s2s_dns_req *dr);

/*
 * Parses the SRV records of a DNS answer (msg[0..len)) into out (at most
 * max), skipping other records and the "." target (service not offered).
 * Returns how many, or -EINVAL for a malformed message.
 */
int s2s_srv_parse(const unsigned char *msg, int len, struct s2s_srv *out, unsigned max);
/* Orders records by priority, then by weight (heaviest first). */
void s2s_srv_sort(struct s2s_srv *srv, unsigned n);
/*
 * Resolves domain as RFC 6120 3.2 and XEP-0368 say (blocking; the
 * resolver thread): Direct TLS SRV targets, then STARTTLS SRV targets,
 * else the domain's A/AAAA at port 5269. ".invalid" names fail at once
 * (RFC 6761). Returns the number of addresses, 0 when there is none.
 */
unsigned s2s_resolve(const char *domain, struct s2s_addr *out, unsigned max);

/* ---- Per-connection state (conn->s2s) ---- */

struct s2s_link;

/* A domain pair an inbound stream proved: stanzas from `remote` to `local`. */
struct s2s_pair {
	char *remote;
	char *local;
};

struct s2s_conn {
	uint8_t state;			/* per kind: s2s_in.c, s2s_out.c, component.c */
	bool auth_done : 1;		/* OUT: SASL EXTERNAL succeeded, restart pending */
	bool features_secure : 1;	/* OUT: features after TLS were seen */
	bool peer_verified : 1;		/* the peer's certificate proves its domain */
	bool timed_out : 1;		/* OUT: the deadline ended it (bounce as timeout) */
	bool db_offered : 1;		/* OUT: the peer offered dialback */
	char *local;			/* our domain on this stream (malloc'd) */
	char *remote;			/* the peer's domain as claimed (malloc'd), or NULL */
	char peer_id[S2S_STREAM_ID_MAX + 1];	/* OUT: the peer's stream id */
	struct s2s_link *link;		/* OUT: the link this connection serves */
	struct s2s_addr addr;		/* OUT: where it connects (must outlive the SQE) */
	unsigned npairs;		/* IN: proven pairs */
	struct s2s_pair pairs[S2S_PAIRS_MAX];
	unsigned verifying;		/* IN: dialback keys waiting for their verification */
	uint64_t last_used_ms;		/* OUT: the last stanza sent, for idling */
	struct s2s_component *comp;	/* COMPONENT: its table entry once authenticated */
};

/* A dialback verification we asked for over a link (we are the receiving server). */
struct s2s_verify {
	struct s2s_verify *next;
	uint32_t in_slot, in_gen;	/* the inbound stream that sent the key */
	bool sent;
	char id[S2S_STREAM_ID_MAX + 1];	/* that stream's id (ours) */
	char key[S2S_DB_KEY_LEN + 1];
};

/* One queued stanza, serialized with from/to. */
struct s2s_qitem {
	struct s2s_qitem *next;
	size_t len;
	char data[];
};

enum s2s_link_state {
	S2S_LINK_RESOLVING = 0,
	S2S_LINK_CONNECTING,		/* a connection exists, not yet authenticated */
	S2S_LINK_READY,			/* authenticated: stanzas go straight out */
};

/* Our outbound link for one (local, remote) domain pair. */
struct s2s_link {
	struct s2s_link *next;
	struct worker *w;
	uint8_t state;			/* enum s2s_link_state */
	char *local, *remote;		/* malloc'd */
	struct conn *conn;		/* the current connection, or NULL */
	struct s2s_dns_req *dns;	/* a resolution in flight (owned by its completion) */
	struct s2s_addr addrs[S2S_ADDRS_MAX];
	unsigned naddrs, next_addr;
	struct s2s_qitem *q_head, *q_tail;
	unsigned q_count;
	size_t q_bytes;
	struct s2s_verify *verifies;	/* dialback verifications to send / answered here */
	unsigned nverifies;
	bool relinked;			/* a ready connection dropped with a queue: retried once */
};

struct s2s_worker {
	struct s2s_link *links;
	unsigned nlinks;
};

/* ---- s2s.c ---- */

struct s2s_server *s2s_srv(const struct worker *w);
/* Whether domain is ours, a service's or a component's (NUL-terminated). */
bool s2s_is_local_str(const struct worker *w, const char *domain);
/* Our stream header for c (per kind), `to` optional; sets header_sent, new id. */
void s2s_send_header(struct conn *c, const char *ns, const char *from, const char *to,
		     bool version);
/* A new random stream id in c->stream_id. */
void s2s_new_stream_id(struct conn *c);
/* Rewrites jabber:server / jabber:component:accept to jabber:client in a stanza tree. */
void s2s_ns_to_client(struct xml_node *n, const char *stream_ns);
/*
 * Checks an inbound stanza's addresses for a stream that proved some
 * domains (peer_ok: the 'from' domain is proven on this stream; the 'to'
 * domain must be ours unless any_to, for components) and routes it.
 * Ends the stream on invalid-from, host-unknown or improper-addressing;
 * returns false when the stream ended.
 */
bool s2s_inbound_stanza(struct conn *c, struct xml_node *st,
			bool (*peer_ok)(struct conn *c, const struct jid *from), bool any_to);

/* Whether a presence is a subscription stanza (bounced when undeliverable). */
bool s2s_presence_bounces(const struct xml_node *st);
/* The link for a pair, made (and started) when missing. NULL on ENOMEM. */
struct s2s_link *s2s_link_get(struct worker *w, const char *local, const char *remote);
/* The link for a pair if one exists. */
struct s2s_link *s2s_link_find(struct worker *w, const char *local, const char *remote);

/* ---- s2s_out.c ---- */

/* Starts the link: host table or DNS, then connections in turn. */
void s2s_out_start(struct s2s_link *l);
/* Queues raw stanza bytes, or sends them when ready. 0, -ENOBUFS (full), -ENOMEM. */
int s2s_out_send(struct s2s_link *l, const char *data, size_t len);
/* Queues a dialback verification on the link (sent once the stream allows). */
void s2s_out_verify(struct s2s_link *l, struct s2s_verify *v);
void s2s_out_accepted_conn_init(struct conn *c);
void s2s_out_closing(struct conn *c);
/* The link's socket queue drained: queued stanzas move on (flow control). */
void s2s_out_drained(struct conn *c);
void s2s_out_connected(struct conn *c, int res);
void s2s_out_tls_established(struct conn *c);
void s2s_out_deadline(struct conn *c);
/* Frees a link: bounces its queue with `condition` (NULL: drop silently). */
void s2s_link_free(struct s2s_link *l, const char *condition);

/* ---- s2s_in.c ---- */

void s2s_in_accepted(struct conn *c, bool direct_tls);
void s2s_in_tls_established(struct conn *c);
void s2s_in_deadline(struct conn *c);
void s2s_in_closing(struct conn *c);
/*
 * The answer to a verification this server asked for (db:verify type
 * valid/invalid/error) reached the link: tells the inbound stream.
 */
void s2s_in_verified(struct worker *w, const struct s2s_verify *v, const char *remote,
		     const char *local, const char *type);

/* ---- component.c ---- */

void component_accepted(struct conn *c);
void component_closing(struct conn *c);
void component_deadline(struct conn *c);
/* The configured component serving domain, or NULL. */
struct s2s_component *component_find(struct s2s_server *ss, const char *domain, size_t len);
/*
 * A stanza for a component domain: sent on its stream, or bounced with
 * service-unavailable when it is not connected.
 */
void component_route(struct worker *w, struct conn *src, struct s2s_component *comp,
		     struct xml_node *st);
/* The same for bytes already serialized (fan-out); dropped when not connected. */
void component_send_prepared(struct worker *w, struct s2s_component *comp, const char *data,
			     size_t len);

#endif
