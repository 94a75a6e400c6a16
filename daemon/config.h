/* SPDX-License-Identifier: MIT */
/*
 * Configuration: an INI file (libinih) and command-line flags with the
 * same names (key listen_c2s <-> flag --listen-c2s). Flags win over the
 * file; a repeatable key given as flags replaces the file's values.
 *
 * Every key is described once, in the option table in config.c, which
 * drives the file parser, the flag parser and --help.
 */
#ifndef STANZAD_CONFIG_H
#define STANZAD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LIST 8	/* values of one repeatable key */

struct config_list {
	char *v[CONFIG_MAX_LIST];
	unsigned n;
	bool set;	/* given by the file or a flag (maybe as 'off') */
};

/* Where accounts are at home (worker_home, docs/account-homes.md). */
enum homes_mode {
	HOMES_HASH = 0,		/* FNV-1a of the bare JID modulo the workers (default) */
	HOMES_ZERO,		/* every account on worker 0 */
	HOMES_OTHER,		/* every account on the last worker (diagnostic) */
	HOMES_LOOP,		/* worker 0, every local route through the mailbox (diagnostic) */
};

struct config {
	char *config_file;	/* --config, NULL if none */
	char *domain;		/* normalized */
	char *state_dir;
	char *storage;		/* "sqlite" or a postgresql:// URI (storage_open_at) */
	uint32_t workers;
	char *homes;		/* hash|zero|other|loop (NULL: hash), see worker_home() */
	enum homes_mode homes_mode;
	bool homes_loop;	/* homes = loop: local routes go through the home's mailbox */
	char *log_level;

	/* Cluster mode on Redis (cluster.c): off while cluster is NULL. */
	char *cluster;		/* redis://[:PASSWORD@]HOST:PORT[/DB] (wiped at free) */
	char *node_name;	/* this node's name in the cluster (default: the host name) */
	uint32_t cluster_ttl;	/* ms a heartbeat lives: a node silent this long is dead */

	struct config_list listen_c2s;		/* ADDR:PORT; empty = off */
	struct config_list listen_c2s_tls;
	struct config_list listen_http;		/* HTTP: upload, WebSocket, host-meta (http.c) */
	struct config_list listen_https;	/* the same over TLS with the server certificate */

	bool registration_open;
	bool require_tls;
	struct config_list admin;	/* bare JIDs allowed the XEP-0133 commands (admin.c) */
	uint32_t adhoc_timeout;		/* seconds an unanswered ad-hoc command session lives */
	uint32_t adhoc_max_sessions;	/* open ad-hoc command sessions per account */
	bool ktls;		/* kTLS handoff where the kernel supports it */
	bool kmod;		/* fan-out through the stanza offload module (kmod.c) */
	uint32_t kmod_min_fanout;	/* smaller fan-outs are not worth a request */
	bool bpf;		/* load the BPF programs at all (bpf_guard.c, bpf_sockops.c, bpf_steer.c) */
	struct config_list guard_interfaces;	/* where the XDP guard attaches; empty: off */
	uint32_t guard_syn_rate;	/* SYNs per second per source (IPv6 /64); 0 = no limit */
	uint32_t guard_syn_burst;
	char *steering;		/* least-loaded|source-hash|kernel (NULL: least-loaded; bpf_steer.c) */
	uint32_t tcp_keepalive_idle;	/* seconds; 0 = no keepalive (sockops or setsockopt) */
	uint32_t tcp_keepalive_interval;	/* seconds between probes */
	uint32_t tcp_keepalive_count;	/* probes before the connection is dropped */
	uint32_t tcp_user_timeout;	/* TCP_USER_TIMEOUT in ms; 0 = the kernel's */
	bool tcp_nodelay;
	char *cert;		/* NULL: <state_dir>/cert.pem, generated */
	char *key;
	char *client_ca;	/* CA of client certificates for SASL EXTERNAL; NULL: none */
	char *client_crl;	/* CRLs checked for them; NULL: none */
	bool sasl2;		/* XEP-0388 SASL2 with Bind2 (XEP-0386) and FAST (XEP-0484) */
	uint32_t fast_token_lifetime;	/* seconds a FAST token is valid */
	uint32_t fast_rotate_after;	/* token age (seconds) at which its use brings a new one */

	/* Limits (named so operators can find them in logs and docs). */
	uint32_t max_stanza_bytes;
	uint32_t max_stanza_bytes_preauth;
	uint32_t max_output_bytes;
	uint32_t max_connections;
	uint32_t max_auth_failures;
	/* Abuse limits (abuse.c): brute force, floods, slow senders. */
	uint32_t max_auth_failures_account;	/* failed logins per name in the window; 0 = off */
	uint32_t max_auth_failures_source;	/* ... per source address (IPv6 /64); 0 = off */
	uint32_t auth_failure_window;	/* seconds failures are counted over */
	uint32_t auth_lockout_time;	/* seconds a name stays locked / a source banned */
	uint32_t max_preauth_per_ip;	/* unauthenticated connections per source; 0 = off */
	uint32_t stanza_timeout;	/* seconds a stanza may take to arrive (after auth); 0 = off */
	uint32_t session_stanza_rate;	/* inbound stanzas per second per stream; 0 = off */
	uint32_t session_stanza_burst;
	uint32_t session_byte_rate;	/* inbound bytes per second per stream; 0 = off */
	uint32_t session_byte_burst;
	char *handover_socket;		/* restart hand-over socket (handover.c); NULL: default, "off" */
	uint32_t max_resources;
	uint32_t auth_timeout;		/* seconds from accept to bound session */
	uint32_t idle_timeout;		/* seconds of silence before a ping; 0 = off */
	uint32_t ping_timeout;		/* seconds to answer that ping */
	uint32_t max_blocklist_items;	/* XEP-0191 block list entries per account */
	uint32_t max_csi_held_presence;	/* XEP-0352 senders held per inactive session */
	uint32_t max_csi_held_bytes;	/* XEP-0352 bytes held per inactive session */
	uint32_t sm_resume_timeout;	/* XEP-0198 resumption window, seconds; 0 = none */
	uint32_t sm_max_unacked;	/* XEP-0198 unacknowledged stanzas per session */
	uint32_t sm_max_unacked_bytes;	/* ... and their bytes (at least 2 stanzas' worth) */
	uint32_t max_vcard_bytes;	/* a stored vCard, serialized (XEP-0054) */
	uint32_t max_private_bytes;	/* one private XML element (XEP-0049) */
	uint32_t max_roster_items;	/* roster items (and pending requests) per account */
	uint32_t max_offline_messages;	/* XEP-0160 messages stored per account */
	uint32_t push_max_registrations;	/* XEP-0357 app servers per account; 0 = off */
	struct config_list contact_abuse;	/* XEP-0157 contact addresses (URIs) */
	struct config_list contact_admin;
	struct config_list contact_feedback;
	struct config_list contact_security;
	struct config_list contact_support;
	char *turn_host;		/* XEP-0215 STUN/TURN host; NULL: none announced */
	uint32_t turn_port;
	char *turn_secret;		/* coturn static-auth-secret; NULL: STUN only (wiped at free) */
	uint32_t turn_credential_lifetime;	/* seconds TURN credentials stay valid */
	char *mam_default;		/* XEP-0313 archiving without preferences: always|roster|never
					 * (NULL: always) */
	uint32_t mam_retention_days;	/* archived messages older than this are deleted; 0 = kept */
	uint32_t max_mam_messages;	/* messages kept per personal archive, oldest go; 0 = all */

	/* XEP-0045 Multi-User Chat at conference.DOMAIN (muc.c). */
	bool muc;			/* the service runs */
	uint32_t max_muc_rooms;		/* rooms in memory (persistent + with occupants) */
	uint32_t max_muc_occupants;	/* occupants of one room (and the default room size) */
	uint32_t max_muc_history;	/* discussion history a room may keep */
	uint32_t max_muc_archive;	/* messages kept per room archive (XEP-0313); 0 = none */

	/* XEP-0060 pubsub at pubsub.DOMAIN and XEP-0163 PEP (pubsub.c). */
	bool pubsub;			/* the service runs (PEP always does) */
	uint32_t max_pubsub_nodes;	/* nodes one account may own, per service */
	uint32_t max_items_per_node;	/* most items a node keeps: what max_items 'max' means */
	uint32_t max_pubsub_item_bytes;	/* one item's payload, serialized */

	/* IoT: XEP-0347 registry.DOMAIN (registry.c), XEP-0324 provisioning.DOMAIN. */
	bool registry;			/* the thing registry runs */
	bool provisioning;		/* the provisioning service runs and its rules are enforced */
	uint32_t max_thing_tags;	/* meta tags of one registered thing */
	uint32_t max_thing_rules;	/* provisioning rules of one thing */

	/* HTTP listener (http.c), WebSocket (websocket.c), file upload (upload.c). */
	uint32_t http_request_timeout;	/* seconds to receive a request's headers */
	uint32_t http_idle_timeout;	/* seconds of silence: keep-alive, body, slow reader */
	bool websocket;			/* RFC 7395 at /xmpp-websocket */
	bool upload;			/* XEP-0363 service at upload.DOMAIN */
	uint32_t upload_max_bytes;	/* largest file */
	uint32_t upload_quota_bytes;	/* all of an account's files together */
	uint32_t upload_expire_days;	/* files are deleted this long after upload; 0 = never */
	uint32_t upload_slot_timeout;	/* seconds a slot waits for its PUT */
	char *upload_url_base;		/* NULL: derived from the first HTTP(S) listener */
	struct config_list upload_allowed_types;	/* MIME types or families; empty = any */

	/* Operations: /metrics (metrics.c), logs (log.c), the control socket (control.c). */
	bool metrics;			/* GET /metrics on the HTTP listeners */
	struct config_list metrics_allow;	/* addresses/CIDR prefixes that may scrape; unset: loopback */
	bool console;			/* the web console at /console/ on the HTTP listeners (console.c) */
	char *log_target;		/* auto|stderr|journal (NULL: auto) */
	uint32_t log_rate_limit;	/* lines per second of one event and level; 0 = no limit */
	char *control_socket;		/* Unix socket path; NULL: <state_dir>/control; "off" */
	char *control_group;		/* group allowed the control socket (mode 0660); NULL: owner only */

	/* Federation (s2s.c) and external components (component.c, XEP-0114). */
	struct config_list listen_s2s;		/* ADDR:PORT, STARTTLS; empty = no inbound s2s */
	struct config_list listen_s2s_tls;	/* Direct TLS (XEP-0368, ALPN xmpp-server) */
	struct config_list listen_component;	/* XEP-0114 jabber:component:accept */
	bool s2s;			/* other domains are reached at all (no: remote-server-not-found) */
	struct config_list s2s_host;	/* DOMAIN=[tls:]ADDR:PORT: the static host table */
	char *s2s_auth;			/* verified|dialback (NULL: dialback) */
	char *s2s_ca;			/* CA file trusted for peer certificates; NULL: system store */
	uint32_t s2s_queue_max;		/* stanzas queued per remote domain while its link comes up */
	uint32_t s2s_queue_max_bytes;	/* ... and their bytes */
	uint32_t s2s_connect_timeout;	/* seconds for one TCP connect */
	uint32_t s2s_handshake_timeout;	/* seconds from connect to an authenticated stream */
	uint32_t s2s_idle_timeout;	/* seconds an unused link stays open; 0 = forever */
	struct config_list component;	/* DOMAIN=SECRET (secrets wiped at exit) */
};

/*
 * Fills cfg from argv (and the file named by --config). Prints one clear
 * line to stderr and returns -EINVAL on a bad flag, key or value; returns 1
 * after printing --help or --version (the caller exits 0); 0 on success.
 */
int config_load(struct config *cfg, int argc, char **argv);
void config_free(struct config *cfg);

/*
 * Checks the federation and component keys (s2s_config.c): addresses,
 * the host table, component entries, s2s_auth. Prints one line and
 * returns -EINVAL on the first bad value.
 */
int config_validate_s2s(struct config *cfg);

/*
 * Checks the operations keys (ops_config.c): metrics_allow, log_target,
 * control_socket, control_group. Prints one line and returns -EINVAL on
 * the first bad value.
 */
int config_validate_ops(struct config *cfg);

/* Paths of the certificate and key, defaulted under state_dir. */
const char *config_cert_path(const struct config *cfg);
const char *config_key_path(const struct config *cfg);

/*
 * The option table by index, for reloads (reload.c): how many keys there
 * are, the name of key i, whether a and b differ in it, and copying its
 * value from src to dst (strings and lists duplicated; 0 or -ENOMEM).
 */
size_t config_option_count(void);
const char *config_option_key(size_t i);
bool config_option_differs(const struct config *a, const struct config *b, size_t i);
int config_option_copy(struct config *dst, const struct config *src, size_t i);

/*
 * Parses "ADDR:PORT" ("127.0.0.1:5222", "[::1]:5222", "*:5222" for any)
 * into a sockaddr. 0 or -EINVAL.
 */
struct sockaddr;
struct sockaddr_storage;
int config_parse_addr(const char *s, struct sockaddr_storage *out, unsigned *out_len);
/*
 * Whether two socket addresses name the same listener: family, address
 * and port (scope ids and flow info do not matter). A configured address
 * against a socket's getsockname(): the restart hand-over and socket
 * activation find their listeners with it.
 */
bool config_addr_equal(const struct sockaddr *a, const struct sockaddr *b);

#endif
