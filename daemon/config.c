/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster_util.h"
#include "config.h"
#include "db.h"
#include "jid.h"
#include "log.h"

#ifndef STANZAD_VERSION
#define STANZAD_VERSION "0.1.0"
#endif

enum opt_type {
	OPT_STRING = 1,
	OPT_UINT,
	OPT_YESNO,	/* yes|no */
	OPT_OPENCLOSED,	/* open|closed */
	OPT_LIST,	/* repeatable string */
};

struct config_option {
	const char *key;
	enum opt_type type;
	size_t offset;
	uint32_t min, max;	/* OPT_UINT */
	const char *metavar;
	const char *help;
};

#define OFF(field) offsetof(struct config, field)

/* The one description of every key: file, flags and --help all use it. */
static const struct config_option options[] = {
	{ "domain", OPT_STRING, OFF(domain), 0, 0, "NAME",
	  "XMPP domain served (default localhost)" },
	{ "state_dir", OPT_STRING, OFF(state_dir), 0, 0, "DIR",
	  "database, certificate and other state (default /var/lib/stanzad)" },
	{ "storage", OPT_STRING, OFF(storage), 0, 0, "STORE",
	  "sqlite (a file in state_dir) or postgresql://USER@HOST:PORT/DB (a libpq URI; the password "
	  "belongs in ~/.pgpass or PGPASSFILE) (default sqlite)" },
	{ "workers", OPT_UINT, OFF(workers), 1, 64, "N",
	  "event-loop worker threads (default: online CPUs)" },
	{ "homes", OPT_STRING, OFF(homes), 0, 0, "MODE",
	  "which worker each account is at home on: hash (spread by a hash of the bare JID), zero "
	  "(all on worker 0), other (all on the last worker: a diagnostic) or loop (worker 0, but "
	  "every stanza for a local account passes through its home's mailbox: a diagnostic) "
	  "(default hash)" },
	{ "cluster", OPT_STRING, OFF(cluster), 0, 0, "URI",
	  "cluster mode: the Redis server (redis://[:PASSWORD@]HOST:PORT[/DB]) holding node "
	  "membership, the session registry and the stanzas between nodes (default none)" },
	{ "node_name", OPT_STRING, OFF(node_name), 0, 0, "NAME",
	  "this node's name in the cluster, [A-Za-z0-9._-], at most 64 (default: the host name)" },
	{ "cluster_ttl", OPT_UINT, OFF(cluster_ttl), 1000, 60000, "MS",
	  "a node whose heartbeat is older than this is dead: its sessions leave the registry "
	  "(default 5000)" },
	{ "log_level", OPT_STRING, OFF(log_level), 0, 0, "LEVEL",
	  "debug|info|warn|error (default info)" },
	{ "listen_c2s", OPT_LIST, OFF(listen_c2s), 0, 0, "ADDR:PORT",
	  "client listener with STARTTLS, repeatable, 'off' to disable (default 127.0.0.1:5222)" },
	{ "listen_c2s_tls", OPT_LIST, OFF(listen_c2s_tls), 0, 0, "ADDR:PORT",
	  "client Direct TLS listener (XEP-0368), repeatable, 'off' to disable (default 127.0.0.1:5223)" },
	{ "listen_http", OPT_LIST, OFF(listen_http), 0, 0, "ADDR:PORT",
	  "HTTP listener: file upload, WebSocket at /xmpp-websocket, host-meta; repeatable, 'off' to "
	  "disable (default 127.0.0.1:5280)" },
	{ "listen_https", OPT_LIST, OFF(listen_https), 0, 0, "ADDR:PORT",
	  "the same over TLS with the server certificate, repeatable (default off)" },
	{ "registration", OPT_OPENCLOSED, OFF(registration_open), 0, 0, "open|closed",
	  "in-band account registration, XEP-0077 (default closed)" },
	{ "require_tls", OPT_YESNO, OFF(require_tls), 0, 0, "yes|no",
	  "require TLS before authentication (default yes)" },
	{ "admin", OPT_LIST, OFF(admin), 0, 0, "JID",
	  "account allowed the administration commands (XEP-0133), repeatable (default none)" },
	{ "adhoc_timeout", OPT_UINT, OFF(adhoc_timeout), 1, 86400, "SECONDS",
	  "how long a multi-stage ad-hoc command waits for the next step, XEP-0050 (default 600)" },
	{ "adhoc_max_sessions", OPT_UINT, OFF(adhoc_max_sessions), 1, 1000, "N",
	  "ad-hoc command sessions one account may keep open; more end the oldest (default 8)" },
	{ "ktls", OPT_YESNO, OFF(ktls), 0, 0, "yes|no",
	  "move TLS records to the kernel after the handshake where it can (default yes)" },
	{ "kmod", OPT_YESNO, OFF(kmod), 0, 0, "yes|no",
	  "fan stanzas out through the stanza offload module when it is loaded (default yes)" },
	{ "kmod_min_fanout", OPT_UINT, OFF(kmod_min_fanout), 1, 1000000, "N",
	  "fewest copies of a fan-out sent through the offload module; fewer use io_uring (default 8)" },
	{ "bpf", OPT_YESNO, OFF(bpf), 0, 0, "yes|no",
	  "load the BPF programs (guard, sockops, steering) where the kernel and rights allow; no: their "
	  "userspace fallbacks (default yes)" },
	{ "guard_interfaces", OPT_LIST, OFF(guard_interfaces), 0, 0, "IFNAME",
	  "interface the XDP guard attaches to, repeatable (default none: guard off)" },
	{ "guard_syn_rate", OPT_UINT, OFF(guard_syn_rate), 0, 1000000, "N",
	  "new connections per second one address (IPv6: /64) may open through the guard, "
	  "0 = no limit (default 20)" },
	{ "guard_syn_burst", OPT_UINT, OFF(guard_syn_burst), 1, 1000000, "N",
	  "new connections one address may open at once above that rate (default 100)" },
	{ "steering", OPT_STRING, OFF(steering), 0, 0, "POLICY",
	  "which worker gets a new client connection: least-loaded, source-hash (by client address) "
	  "or kernel (the kernel's reuseport hash, no BPF program) (default least-loaded)" },
	{ "tcp_keepalive_idle", OPT_UINT, OFF(tcp_keepalive_idle), 0, 86400, "SECONDS",
	  "idle time before TCP keepalive probes on client connections, 0 = no keepalive "
	  "(default 120)" },
	{ "tcp_keepalive_interval", OPT_UINT, OFF(tcp_keepalive_interval), 1, 3600, "SECONDS",
	  "time between keepalive probes (default 30)" },
	{ "tcp_keepalive_count", OPT_UINT, OFF(tcp_keepalive_count), 1, 127, "N",
	  "unanswered keepalive probes before the connection is dropped (default 4)" },
	{ "tcp_user_timeout", OPT_UINT, OFF(tcp_user_timeout), 0, 3600000, "MS",
	  "TCP_USER_TIMEOUT of client connections, 0 = the kernel's (default 0)" },
	{ "tcp_nodelay", OPT_YESNO, OFF(tcp_nodelay), 0, 0, "yes|no",
	  "TCP_NODELAY on client connections (default yes)" },
	{ "cert", OPT_STRING, OFF(cert), 0, 0, "FILE",
	  "server certificate chain, PEM (default: self-signed, generated in state_dir)" },
	{ "key", OPT_STRING, OFF(key), 0, 0, "FILE",
	  "private key of the certificate, PEM" },
	{ "client_ca", OPT_STRING, OFF(client_ca), 0, 0, "FILE",
	  "CA certificates (PEM) whose client certificates SASL EXTERNAL accepts (default none)" },
	{ "client_crl", OPT_STRING, OFF(client_crl), 0, 0, "FILE",
	  "CRLs (PEM) checked for those client certificates (default none)" },
	{ "sasl2", OPT_YESNO, OFF(sasl2), 0, 0, "yes|no",
	  "offer SASL2 (XEP-0388) with Bind2 and FAST tokens (default yes)" },
	{ "fast_token_lifetime", OPT_UINT, OFF(fast_token_lifetime), 60, 31536000, "SECONDS",
	  "how long a FAST token (XEP-0484) stays valid (default 2592000, 30 days)" },
	{ "fast_rotate_after", OPT_UINT, OFF(fast_rotate_after), 0, 31536000, "SECONDS",
	  "a FAST token older than this gets a successor at its next use; 0: every use (default 86400)" },
	{ "max_stanza_bytes", OPT_UINT, OFF(max_stanza_bytes), 1024, 16 << 20, "BYTES",
	  "largest stanza accepted after authentication (default 262144)" },
	{ "max_stanza_bytes_preauth", OPT_UINT, OFF(max_stanza_bytes_preauth), 1024, 16 << 20, "BYTES",
	  "largest stanza accepted before authentication (default 16384)" },
	{ "max_output_bytes", OPT_UINT, OFF(max_output_bytes), 65536, 1u << 30, "BYTES",
	  "output queued for a client before it is disconnected as too slow (default 2097152)" },
	{ "max_connections", OPT_UINT, OFF(max_connections), 1, 10000000, "N",
	  "concurrent client connections per worker (default: from the fd limit)" },
	{ "max_auth_failures", OPT_UINT, OFF(max_auth_failures), 1, 100, "N",
	  "failed SASL attempts before the stream is closed (default 3)" },
	{ "max_auth_failures_account", OPT_UINT, OFF(max_auth_failures_account), 0, 1000000, "N",
	  "failed logins for one account name within auth_failure_window before it is locked for "
	  "auth_lockout_time, 0 = no limit (default 10)" },
	{ "max_auth_failures_source", OPT_UINT, OFF(max_auth_failures_source), 0, 1000000, "N",
	  "failed logins from one address (IPv6: /64) within auth_failure_window before it is "
	  "banned for auth_lockout_time, 0 = no limit (default 30)" },
	{ "auth_failure_window", OPT_UINT, OFF(auth_failure_window), 1, 86400, "SECONDS",
	  "the window those failures are counted in (default 600)" },
	{ "auth_lockout_time", OPT_UINT, OFF(auth_lockout_time), 1, 86400, "SECONDS",
	  "how long a locked account name or a banned address is refused (default 300)" },
	{ "max_preauth_per_ip", OPT_UINT, OFF(max_preauth_per_ip), 0, 10000000, "N",
	  "unauthenticated client and HTTP connections one address (IPv6: /64) may hold open; "
	  "more are refused, 0 = no limit (default 64)" },
	{ "stanza_timeout", OPT_UINT, OFF(stanza_timeout), 0, 3600, "SECONDS",
	  "time from a stanza's first byte to its last after authentication, 0 = none (default 60)" },
	{ "session_stanza_rate", OPT_UINT, OFF(session_stanza_rate), 0, 10000000, "N",
	  "stanzas per second one client stream may send on average; more end it with "
	  "policy-violation, 0 = no limit (default 500)" },
	{ "session_stanza_burst", OPT_UINT, OFF(session_stanza_burst), 1, 10000000, "N",
	  "stanzas one client stream may send at once above that rate (default 2500)" },
	{ "session_byte_rate", OPT_UINT, OFF(session_byte_rate), 0, 1u << 30, "BYTES",
	  "bytes per second one client stream may send on average, 0 = no limit (default 1048576)" },
	{ "session_byte_burst", OPT_UINT, OFF(session_byte_burst), 65536, 1u << 30, "BYTES",
	  "bytes one client stream may send at once above that rate (default 4194304)" },
	{ "handover_socket", OPT_STRING, OFF(handover_socket), 0, 0, "PATH",
	  "Unix socket a new stanzad asks the running one for its listeners on at a restart, "
	  "'off' to disable (default STATE_DIR/handover.sock)" },
	{ "max_resources", OPT_UINT, OFF(max_resources), 1, 1000, "N",
	  "concurrent sessions (resources) per account (default 16)" },
	{ "auth_timeout", OPT_UINT, OFF(auth_timeout), 1, 3600, "SECONDS",
	  "time from connect to a bound session (default 60)" },
	{ "idle_timeout", OPT_UINT, OFF(idle_timeout), 0, 86400, "SECONDS",
	  "silence before the server pings a session, 0 = never (default 300)" },
	{ "ping_timeout", OPT_UINT, OFF(ping_timeout), 1, 3600, "SECONDS",
	  "time to answer that ping before disconnection (default 60)" },
	{ "max_blocklist_items", OPT_UINT, OFF(max_blocklist_items), 1, 1000000, "N",
	  "JIDs an account may block, XEP-0191 (default 1000)" },
	{ "max_csi_held_presence", OPT_UINT, OFF(max_csi_held_presence), 1, 100000, "N",
	  "contacts' presence held for an inactive client, XEP-0352 (default 256)" },
	{ "max_csi_held_bytes", OPT_UINT, OFF(max_csi_held_bytes), 4096, 1u << 30, "BYTES",
	  "memory for presence held for an inactive client, XEP-0352 (default 262144)" },
	{ "sm_resume_timeout", OPT_UINT, OFF(sm_resume_timeout), 0, 86400, "SECONDS",
	  "how long a broken stream can be resumed, XEP-0198; 0 = no resumption (default 300)" },
	{ "sm_max_unacked", OPT_UINT, OFF(sm_max_unacked), 1, 100000, "N",
	  "stanzas a client may leave unacknowledged, XEP-0198 (default 500)" },
	{ "sm_max_unacked_bytes", OPT_UINT, OFF(sm_max_unacked_bytes), 65536, 1u << 30, "BYTES",
	  "bytes of unacknowledged stanzas kept per session, XEP-0198 (default 4194304)" },
	{ "max_vcard_bytes", OPT_UINT, OFF(max_vcard_bytes), 256, 16 << 20, "BYTES",
	  "largest vCard an account may store, XEP-0054 (default 65536)" },
	{ "max_private_bytes", OPT_UINT, OFF(max_private_bytes), 256, 16 << 20, "BYTES",
	  "largest private XML element an account may store, XEP-0049 (default 65536)" },
	{ "max_roster_items", OPT_UINT, OFF(max_roster_items), 1, 1000000, "N",
	  "contacts in an account's roster, and pending subscription requests (default 1000)" },
	{ "max_offline_messages", OPT_UINT, OFF(max_offline_messages), 0, 1000000, "N",
	  "messages stored for an account without available resources, XEP-0160 (default 500)" },
	{ "push_max_registrations", OPT_UINT, OFF(push_max_registrations), 0, 100, "N",
	  "push app servers (XEP-0357) one account may register; 0 = push disabled (default 5)" },
	{ "contact_abuse", OPT_LIST, OFF(contact_abuse), 0, 0, "URI",
	  "where to report abuse (mailto:, xmpp:, https:), XEP-0157 in the server's disco; "
	  "repeatable (default none)" },
	{ "contact_admin", OPT_LIST, OFF(contact_admin), 0, 0, "URI",
	  "the administrators' addresses, XEP-0157; repeatable (default none)" },
	{ "contact_feedback", OPT_LIST, OFF(contact_feedback), 0, 0, "URI",
	  "where to send feedback, XEP-0157; repeatable (default none)" },
	{ "contact_security", OPT_LIST, OFF(contact_security), 0, 0, "URI",
	  "where to report security issues, XEP-0157; repeatable (default none)" },
	{ "contact_support", OPT_LIST, OFF(contact_support), 0, 0, "URI",
	  "where users get support, XEP-0157; repeatable (default none)" },
	{ "turn_host", OPT_STRING, OFF(turn_host), 0, 0, "HOST",
	  "STUN/TURN server announced to clients for calls, XEP-0215 (default none)" },
	{ "turn_port", OPT_UINT, OFF(turn_port), 1, 65535, "PORT",
	  "its port (default 3478)" },
	{ "turn_secret", OPT_STRING, OFF(turn_secret), 0, 0, "SECRET",
	  "shared secret of the TURN server (coturn static-auth-secret); without it only STUN "
	  "is announced (default none)" },
	{ "turn_credential_lifetime", OPT_UINT, OFF(turn_credential_lifetime), 1, 2592000, "SECONDS",
	  "how long TURN credentials handed out stay valid (default 86400)" },
	{ "mam_default", OPT_STRING, OFF(mam_default), 0, 0, "MODE",
	  "always|roster|never: what is archived for accounts without preferences, XEP-0313 "
	  "(default always)" },
	{ "mam_retention_days", OPT_UINT, OFF(mam_retention_days), 0, 36500, "DAYS",
	  "archived messages are deleted this long after they were archived, 0 = never "
	  "(default 365)" },
	{ "max_mam_messages", OPT_UINT, OFF(max_mam_messages), 0, 100000000, "N",
	  "messages kept in each account's archive, XEP-0313, the oldest dropped first; "
	  "0 = no limit but mam_retention_days (default 0)" },
	{ "muc", OPT_YESNO, OFF(muc), 0, 0, "yes|no",
	  "Multi-User Chat service at conference.DOMAIN, XEP-0045 (default yes)" },
	{ "max_muc_rooms", OPT_UINT, OFF(max_muc_rooms), 1, 10000000, "N",
	  "chat rooms in memory: persistent ones and those with occupants (default 10000)" },
	{ "max_muc_occupants", OPT_UINT, OFF(max_muc_occupants), 1, 100000, "N",
	  "occupants of one chat room, and the size of a new room (default 200)" },
	{ "max_muc_history", OPT_UINT, OFF(max_muc_history), 0, 1000, "N",
	  "discussion history messages a room may keep and send on entering (default 50)" },
	{ "max_muc_archive", OPT_UINT, OFF(max_muc_archive), 0, 10000000, "N",
	  "messages kept in each room's archive, XEP-0313; 0 = no room archives (default 10000)" },
	{ "pubsub", OPT_YESNO, OFF(pubsub), 0, 0, "yes|no",
	  "Publish-Subscribe service at pubsub.DOMAIN, XEP-0060 (default yes; PEP always runs)" },
	{ "max_pubsub_nodes", OPT_UINT, OFF(max_pubsub_nodes), 1, 1000000, "N",
	  "pubsub nodes one account may own: on its PEP service, and on pubsub.DOMAIN (default 1000)" },
	{ "max_items_per_node", OPT_UINT, OFF(max_items_per_node), 1, 1000000, "N",
	  "items one pubsub node keeps at most; what max_items 'max' means (default 1000)" },
	{ "max_pubsub_item_bytes", OPT_UINT, OFF(max_pubsub_item_bytes), 64, 16 << 20, "BYTES",
	  "largest pubsub item payload, serialized (default 65536)" },
	{ "registry", OPT_YESNO, OFF(registry), 0, 0, "yes|no",
	  "thing registry at registry.DOMAIN, XEP-0347 (default yes)" },
	{ "provisioning", OPT_YESNO, OFF(provisioning), 0, 0, "yes|no",
	  "IoT provisioning service at provisioning.DOMAIN, XEP-0324, and the enforcement of "
	  "owners' rules (default yes)" },
	{ "max_thing_tags", OPT_UINT, OFF(max_thing_tags), 1, 256, "N",
	  "meta tags one thing may register in the thing registry (default 32)" },
	{ "max_thing_rules", OPT_UINT, OFF(max_thing_rules), 1, 100000, "N",
	  "provisioning rules an owner may set for one thing (default 256)" },
	{ "http_request_timeout", OPT_UINT, OFF(http_request_timeout), 1, 3600, "SECONDS",
	  "time for an HTTP request's headers to arrive (default 10)" },
	{ "http_idle_timeout", OPT_UINT, OFF(http_idle_timeout), 1, 86400, "SECONDS",
	  "HTTP keep-alive, and silence allowed inside a request body or response (default 60)" },
	{ "websocket", OPT_YESNO, OFF(websocket), 0, 0, "yes|no",
	  "XMPP over WebSocket, RFC 7395, at /xmpp-websocket on the HTTP listeners (default yes)" },
	{ "upload", OPT_YESNO, OFF(upload), 0, 0, "yes|no",
	  "HTTP file upload service at upload.DOMAIN, XEP-0363; needs an HTTP listener (default yes)" },
	{ "upload_max_bytes", OPT_UINT, OFF(upload_max_bytes), 1, 0xffffffffu, "BYTES",
	  "largest file one may upload, XEP-0363 (default 10485760)" },
	{ "upload_quota_bytes", OPT_UINT, OFF(upload_quota_bytes), 1, 0xffffffffu, "BYTES",
	  "space all of an account's uploaded files may take (default 104857600)" },
	{ "upload_expire_days", OPT_UINT, OFF(upload_expire_days), 0, 36500, "DAYS",
	  "uploaded files are deleted this long after upload, 0 = never (default 30)" },
	{ "upload_slot_timeout", OPT_UINT, OFF(upload_slot_timeout), 1, 86400, "SECONDS",
	  "time from a slot request to its upload (default 300)" },
	{ "upload_url_base", OPT_STRING, OFF(upload_url_base), 0, 0, "URL",
	  "public http(s)://host[:port] of the upload URLs (default: the first HTTP(S) listener)" },
	{ "upload_allowed_types", OPT_LIST, OFF(upload_allowed_types), 0, 0, "TYPE",
	  "MIME type ('image/png') or family ('image/*') that may be uploaded, repeatable "
	  "(default: any)" },
	{ "metrics", OPT_YESNO, OFF(metrics), 0, 0, "yes|no",
	  "Prometheus metrics at /metrics on the HTTP listeners (default yes)" },
	{ "metrics_allow", OPT_LIST, OFF(metrics_allow), 0, 0, "CIDR",
	  "address or prefix that may read /metrics, repeatable (default: loopback only)" },
	{ "console", OPT_YESNO, OFF(console), 0, 0, "yes|no",
	  "the web console at /console/ on the HTTP listeners, for the admins (default yes)" },
	{ "log_target", OPT_STRING, OFF(log_target), 0, 0, "TARGET",
	  "auto|stderr|journal: where log lines go; auto is the journal when stderr is "
	  "connected to it (default auto)" },
	{ "log_rate_limit", OPT_UINT, OFF(log_rate_limit), 0, 1000000, "N",
	  "lines per second one event may log at one level; the rest are counted and "
	  "summarized, 0 = no limit (default 100)" },
	{ "control_socket", OPT_STRING, OFF(control_socket), 0, 0, "PATH",
	  "Unix socket stanzactl talks to, 'off' to disable (default STATE_DIR/control)" },
	{ "control_group", OPT_STRING, OFF(control_group), 0, 0, "GROUP",
	  "group whose members may use the control socket (default: its owner only)" },
	{ "listen_s2s", OPT_LIST, OFF(listen_s2s), 0, 0, "ADDR:PORT",
	  "server-to-server listener with STARTTLS, repeatable (default off)" },
	{ "listen_s2s_tls", OPT_LIST, OFF(listen_s2s_tls), 0, 0, "ADDR:PORT",
	  "server-to-server Direct TLS listener (XEP-0368, ALPN xmpp-server), repeatable (default off)" },
	{ "listen_component", OPT_LIST, OFF(listen_component), 0, 0, "ADDR:PORT",
	  "external component listener, XEP-0114, repeatable (default off)" },
	{ "s2s", OPT_YESNO, OFF(s2s), 0, 0, "yes|no",
	  "reach other domains (federation); no: they get remote-server-not-found (default yes)" },
	{ "s2s_host", OPT_LIST, OFF(s2s_host), 0, 0, "DOMAIN=ADDR:PORT",
	  "static host table: reach DOMAIN at ADDR:PORT instead of DNS ('tls:ADDR:PORT' for Direct "
	  "TLS), repeatable" },
	{ "s2s_auth", OPT_STRING, OFF(s2s_auth), 0, 0, "verified|dialback",
	  "peers must prove their domain by certificate (verified), or may use dialback when "
	  "the certificate does not (default dialback)" },
	{ "s2s_ca", OPT_STRING, OFF(s2s_ca), 0, 0, "FILE",
	  "CA certificates (PEM) trusted for peer server certificates (default: the system store)" },
	{ "s2s_queue_max", OPT_UINT, OFF(s2s_queue_max), 1, 1000000, "N",
	  "stanzas queued for one remote domain while its link comes up (default 1000)" },
	{ "s2s_queue_max_bytes", OPT_UINT, OFF(s2s_queue_max_bytes), 65536, 1u << 30, "BYTES",
	  "bytes of stanzas queued for one remote domain (default 4194304)" },
	{ "s2s_connect_timeout", OPT_UINT, OFF(s2s_connect_timeout), 1, 600, "SECONDS",
	  "time for one TCP connect to a remote server (default 10)" },
	{ "s2s_handshake_timeout", OPT_UINT, OFF(s2s_handshake_timeout), 1, 3600, "SECONDS",
	  "time from connect to an authenticated server or component stream (default 30)" },
	{ "s2s_idle_timeout", OPT_UINT, OFF(s2s_idle_timeout), 0, 86400, "SECONDS",
	  "an unused server-to-server link is closed after this long, 0 = never (default 600)" },
	{ "component", OPT_LIST, OFF(component), 0, 0, "DOMAIN=SECRET",
	  "external component allowed to connect, XEP-0114, repeatable (default none)" },
};

#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static const struct config_option *option_find(const char *key)
{
	for (size_t i = 0; i < NOPTIONS; i++)
		if (strcmp(options[i].key, key) == 0)
			return &options[i];
	return NULL;
}

static void list_clear(struct config_list *l)
{
	for (unsigned i = 0; i < l->n; i++)
		free(l->v[i]);
	l->n = 0;
}

/*
 * Sets one option from text. `where` names the source for the error line
 * ("--domain" or "stanzad.conf:12"). replace_list: a repeatable key's
 * first value from a new source replaces the earlier ones.
 */
static int option_set(struct config *cfg, const struct config_option *o, const char *value,
		      const char *where, bool replace_list)
{
	void *field = (char *)cfg + o->offset;
	char *end;
	unsigned long v;

	switch (o->type) {
	case OPT_STRING: {
		char **s = field;
		char *dup = strdup(value);

		if (!dup)
			return -ENOMEM;
		free(*s);
		*s = dup;
		return 0;
	}
	case OPT_UINT:
		errno = 0;
		v = strtoul(value, &end, 10);
		if (errno || end == value || *end || value[0] == '-' || v < o->min || v > o->max) {
			fprintf(stderr, "stanzad: %s: '%s' is not a number from %u to %u\n", where, value,
				o->min, o->max);
			return -EINVAL;
		}
		*(uint32_t *)field = (uint32_t)v;
		return 0;
	case OPT_YESNO:
	case OPT_OPENCLOSED: {
		const char *yes = o->type == OPT_YESNO ? "yes" : "open";
		const char *no = o->type == OPT_YESNO ? "no" : "closed";

		if (strcmp(value, yes) == 0) {
			*(bool *)field = true;
		} else if (strcmp(value, no) == 0) {
			*(bool *)field = false;
		} else {
			fprintf(stderr, "stanzad: %s: '%s' must be %s or %s\n", where, value, yes, no);
			return -EINVAL;
		}
		return 0;
	}
	case OPT_LIST: {
		struct config_list *l = field;

		if (replace_list)
			list_clear(l);
		l->set = true;
		if (strcmp(value, "off") == 0)
			return 0;
		if (l->n == CONFIG_MAX_LIST) {
			fprintf(stderr, "stanzad: %s: at most %d values\n", where, CONFIG_MAX_LIST);
			return -EINVAL;
		}
		l->v[l->n] = strdup(value);
		if (!l->v[l->n])
			return -ENOMEM;
		l->n++;
		return 0;
	}
	}
	return -EINVAL;
}

struct ini_ctx {
	struct config *cfg;
	const char *file;
	FILE *f;
	int lineno;	/* lines read so far: inih reports no line to handlers */
	int err;
	/* Which list keys the file already set (the file's own repeats add up). */
	bool list_seen[NOPTIONS];
};

/* fgets for inih that counts lines, so errors can name the line. */
static char *config_ini_read(char *str, int num, void *stream)
{
	struct ini_ctx *ctx = stream;
	char *r = fgets(str, num, ctx->f);

	if (r)
		ctx->lineno++;
	return r;
}

static int config_ini_key(void *user, const char *section, const char *name, const char *value)
{
	struct ini_ctx *ctx = user;
	const struct config_option *o;
	char where[PATH_MAX + 32];
	bool first;

	snprintf(where, sizeof(where), "%s:%d", ctx->file, ctx->lineno);
	if (section[0]) {
		fprintf(stderr, "stanzad: %s: unknown section [%s] (keys go at the top level)\n",
			where, section);
		ctx->err = -EINVAL;
		return 0;
	}
	o = option_find(name);
	if (!o) {
		fprintf(stderr, "stanzad: %s: unknown key '%s'\n", where, name);
		ctx->err = -EINVAL;
		return 0;
	}
	first = !ctx->list_seen[o - options];
	ctx->list_seen[o - options] = true;
	if (option_set(ctx->cfg, o, value, where, first) < 0) {
		ctx->err = -EINVAL;
		return 0;
	}
	return 1;
}

static int config_load_file(struct config *cfg, const char *file)
{
	struct ini_ctx ctx = { .cfg = cfg, .file = file };
	int ret;

	ctx.f = fopen(file, "r");
	if (!ctx.f) {
		ret = -errno;
		fprintf(stderr, "stanzad: cannot read config file %s: %s\n", file, strerror(errno));
		return ret;
	}
	ret = ini_parse_stream(config_ini_read, &ctx, config_ini_key, &ctx);
	fclose(ctx.f);
	if (ctx.err)
		return ctx.err;
	if (ret > 0) {
		fprintf(stderr, "stanzad: %s:%d: syntax error (expected key = value)\n", file, ret);
		return -EINVAL;
	}
	if (ret < 0) {
		fprintf(stderr, "stanzad: cannot parse config file %s\n", file);
		return -EINVAL;
	}
	return 0;
}

static void config_defaults(struct config *cfg)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	memset(cfg, 0, sizeof(*cfg));
	cfg->workers = ncpu <= 0 ? 1 : ncpu > 64 ? 64 : (uint32_t)ncpu;
	cfg->require_tls = true;
	cfg->ktls = true;
	cfg->kmod = true;
	cfg->kmod_min_fanout = 8;
	cfg->bpf = true;
	cfg->guard_syn_rate = 20;
	cfg->guard_syn_burst = 100;
	cfg->tcp_keepalive_idle = 120;
	cfg->tcp_keepalive_interval = 30;
	cfg->tcp_keepalive_count = 4;
	cfg->tcp_nodelay = true;
	cfg->cluster_ttl = 5000;
	cfg->registration_open = false;
	cfg->sasl2 = true;
	cfg->fast_token_lifetime = 30 * 86400;
	cfg->fast_rotate_after = 86400;
	cfg->adhoc_timeout = 600;
	cfg->adhoc_max_sessions = 8;
	cfg->max_stanza_bytes = 256 * 1024;
	cfg->max_stanza_bytes_preauth = 16 * 1024;
	cfg->max_output_bytes = 2 * 1024 * 1024;
	cfg->max_auth_failures = 3;
	cfg->max_auth_failures_account = 10;
	cfg->max_auth_failures_source = 30;
	cfg->auth_failure_window = 600;
	cfg->auth_lockout_time = 300;
	cfg->max_preauth_per_ip = 64;
	cfg->stanza_timeout = 60;
	cfg->session_stanza_rate = 500;
	cfg->session_stanza_burst = 2500;
	cfg->session_byte_rate = 1024 * 1024;
	cfg->session_byte_burst = 4 * 1024 * 1024;
	cfg->max_resources = 16;
	cfg->auth_timeout = 60;
	cfg->idle_timeout = 300;
	cfg->ping_timeout = 60;
	cfg->max_blocklist_items = 1000;
	cfg->max_csi_held_presence = 256;
	cfg->max_csi_held_bytes = 256 * 1024;
	cfg->sm_resume_timeout = 300;
	cfg->sm_max_unacked = 500;
	cfg->sm_max_unacked_bytes = 4 * 1024 * 1024;
	cfg->max_vcard_bytes = 64 * 1024;
	cfg->max_private_bytes = 64 * 1024;
	cfg->max_roster_items = 1000;
	cfg->max_offline_messages = 500;
	cfg->push_max_registrations = 5;
	cfg->turn_port = 3478;
	cfg->turn_credential_lifetime = 86400;
	cfg->mam_retention_days = 365;
	cfg->muc = true;
	cfg->max_muc_rooms = 10000;
	cfg->max_muc_occupants = 200;
	cfg->max_muc_history = 50;
	cfg->max_muc_archive = 10000;
	cfg->pubsub = true;
	cfg->max_pubsub_nodes = 1000;
	cfg->max_items_per_node = 1000;
	cfg->max_pubsub_item_bytes = 64 * 1024;
	cfg->registry = true;
	cfg->provisioning = true;
	cfg->max_thing_tags = 32;
	cfg->max_thing_rules = 256;
	cfg->http_request_timeout = 10;
	cfg->http_idle_timeout = 60;
	cfg->websocket = true;
	cfg->upload = true;
	cfg->upload_max_bytes = 10 * 1024 * 1024;
	cfg->upload_quota_bytes = 100 * 1024 * 1024;
	cfg->upload_expire_days = 30;
	cfg->upload_slot_timeout = 300;
	cfg->metrics = true;
	cfg->console = true;
	cfg->log_rate_limit = 100;
	cfg->s2s = true;
	cfg->s2s_queue_max = 1000;
	cfg->s2s_queue_max_bytes = 4 * 1024 * 1024;
	cfg->s2s_connect_timeout = 10;
	cfg->s2s_handshake_timeout = 30;
	cfg->s2s_idle_timeout = 600;
}

/* Fills what is still unset after file and flags. 0 or -ENOMEM. */
static int config_fill_strings(struct config *cfg)
{
	if (!cfg->domain && !(cfg->domain = strdup("localhost")))
		return -ENOMEM;
	if (!cfg->state_dir && !(cfg->state_dir = strdup("/var/lib/stanzad")))
		return -ENOMEM;
	if (!cfg->storage && !(cfg->storage = strdup("sqlite")))
		return -ENOMEM;
	if (!cfg->log_level && !(cfg->log_level = strdup("info")))
		return -ENOMEM;
	return 0;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: stanzad [--config FILE] [--KEY VALUE ...]\n\n"
		     "Every configuration key can be given as a flag (key listen_c2s is\n"
		     "--listen-c2s); flags override the config file.\n\n"
		     "  --config FILE              read keys from FILE (INI: key = value)\n"
		     "  --help, --version\n");
	for (size_t i = 0; i < NOPTIONS; i++) {
		char flag[64];

		snprintf(flag, sizeof(flag), "--%s %s", options[i].key, options[i].metavar);
		for (char *p = flag + 2; *p && *p != ' '; p++)
			if (*p == '_')
				*p = '-';
		fprintf(out, "  %-26s %s\n", flag, options[i].help);
	}
}

/* "--listen-c2s" -> the option for key listen_c2s, or NULL. */
static const struct config_option *option_for_flag(const char *flag, size_t len)
{
	char key[64];

	if (len >= sizeof(key))
		return NULL;
	for (size_t i = 0; i < len; i++)
		key[i] = flag[i] == '-' ? '_' : flag[i];
	key[len] = '\0';
	return option_find(key);
}

/*
 * Admin JIDs are bare JIDs, kept normalized so that admin.c compares bytes
 * (an operator may write "Admin@Example.org"). 0, -EINVAL or -ENOMEM.
 */
static int config_validate_admins(struct config *cfg)
{
	struct jid j;

	for (unsigned i = 0; i < cfg->admin.n; i++) {
		char *norm;

		if (jid_parse(&j, cfg->admin.v[i], strlen(cfg->admin.v[i])) < 0 ||
		    !jid_has_local(&j) || jid_has_resource(&j)) {
			fprintf(stderr, "stanzad: admin '%s' is not a bare JID (user@domain)\n",
				cfg->admin.v[i]);
			return -EINVAL;
		}
		norm = strdup(j.buf);
		if (!norm)
			return -ENOMEM;
		free(cfg->admin.v[i]);
		cfg->admin.v[i] = norm;
	}
	return 0;
}

/*
 * Cluster mode: the URI must parse (it is never printed back: it may hold
 * a password), and the node name defaults to the host name, made valid.
 * An empty cluster value means off. 0, -EINVAL or -ENOMEM.
 */
static int config_validate_cluster(struct config *cfg)
{
	char host[256] = "", name[CLUSTER_NODE_NAME_MAX + 1];
	struct cluster_uri u;
	size_t n = 0;

	if (cfg->cluster && !cfg->cluster[0]) {
		free(cfg->cluster);
		cfg->cluster = NULL;
	}
	if (cfg->cluster && cluster_uri_parse(&u, cfg->cluster) < 0) {
		fprintf(stderr, "stanzad: cluster must be redis://[:PASSWORD@]HOST:PORT[/DB]\n");
		return -EINVAL;
	}
	if (cfg->cluster)
		cluster_uri_wipe(&u);
	if (cfg->node_name) {
		if (!cluster_node_name_valid(cfg->node_name)) {
			fprintf(stderr, "stanzad: node_name '%s' must be 1 to %d of "
				"A-Z a-z 0-9 . _ -\n", cfg->node_name, CLUSTER_NODE_NAME_MAX);
			return -EINVAL;
		}
		return 0;
	}
	/* The host name, with what a node name cannot hold replaced. */
	gethostname(host, sizeof(host) - 1);
	for (const char *p = host; *p && n < CLUSTER_NODE_NAME_MAX; p++, n++) {
		char one[2] = { *p, '\0' };

		name[n] = cluster_node_name_valid(one) ? *p : '-';
	}
	name[n] = '\0';
	cfg->node_name = strdup(n ? name : "node");
	return cfg->node_name ? 0 : -ENOMEM;
}

/*
 * Validation across keys, after everything is applied: the domain must be
 * a valid domainpart, addresses must parse, the log level must exist.
 */
static int config_validate(struct config *cfg)
{
	char dom[JID_PART_MAX + 1];
	struct sockaddr_storage ss;
	enum log_level lvl;
	unsigned len;

	if (jid_prep_domain(dom, sizeof(dom), cfg->domain, strlen(cfg->domain)) < 0) {
		fprintf(stderr, "stanzad: domain '%s' is not a valid XMPP domain\n", cfg->domain);
		return -EINVAL;
	}
	free(cfg->domain);
	cfg->domain = strdup(dom);
	if (!cfg->domain)
		return -ENOMEM;
	if (cfg->client_crl && !cfg->client_ca) {
		fprintf(stderr, "stanzad: client_crl needs client_ca\n");
		return -EINVAL;
	}
	if (log_level_parse(cfg->log_level, &lvl) < 0) {
		fprintf(stderr, "stanzad: log_level '%s' must be debug, info, warn or error\n",
			cfg->log_level);
		return -EINVAL;
	}
	for (unsigned i = 0; i < cfg->listen_c2s.n; i++)
		if (config_parse_addr(cfg->listen_c2s.v[i], &ss, &len) < 0) {
			fprintf(stderr, "stanzad: listen_c2s '%s' is not ADDR:PORT\n", cfg->listen_c2s.v[i]);
			return -EINVAL;
		}
	for (unsigned i = 0; i < cfg->listen_c2s_tls.n; i++)
		if (config_parse_addr(cfg->listen_c2s_tls.v[i], &ss, &len) < 0) {
			fprintf(stderr, "stanzad: listen_c2s_tls '%s' is not ADDR:PORT\n",
				cfg->listen_c2s_tls.v[i]);
			return -EINVAL;
		}
	for (unsigned i = 0; i < cfg->listen_http.n; i++)
		if (config_parse_addr(cfg->listen_http.v[i], &ss, &len) < 0) {
			fprintf(stderr, "stanzad: listen_http '%s' is not ADDR:PORT\n", cfg->listen_http.v[i]);
			return -EINVAL;
		}
	for (unsigned i = 0; i < cfg->listen_https.n; i++)
		if (config_parse_addr(cfg->listen_https.v[i], &ss, &len) < 0) {
			fprintf(stderr, "stanzad: listen_https '%s' is not ADDR:PORT\n",
				cfg->listen_https.v[i]);
			return -EINVAL;
		}
	if (cfg->upload_url_base && strncmp(cfg->upload_url_base, "http://", 7) != 0 &&
	    strncmp(cfg->upload_url_base, "https://", 8) != 0) {
		fprintf(stderr, "stanzad: upload_url_base '%s' must start with http:// or https://\n",
			cfg->upload_url_base);
		return -EINVAL;
	}
	if (!cfg->listen_c2s.n && !cfg->listen_c2s_tls.n) {
		fprintf(stderr, "stanzad: no client listener (listen_c2s and listen_c2s_tls are both off)\n");
		return -EINVAL;
	}
	if (config_validate_admins(cfg) < 0)
		return -EINVAL;
	if (config_validate_s2s(cfg) < 0)	/* s2s_config.c */
		return -EINVAL;
	if (config_validate_ops(cfg) < 0)	/* ops_config.c */
		return -EINVAL;
	if (cfg->mam_default && strcmp(cfg->mam_default, "always") != 0 &&
	    strcmp(cfg->mam_default, "roster") != 0 && strcmp(cfg->mam_default, "never") != 0) {
		fprintf(stderr, "stanzad: mam_default '%s' must be always, roster or never\n",
			cfg->mam_default);
		return -EINVAL;
	}
	if (!db_storage_ok(cfg->storage)) {
		fprintf(stderr, "stanzad: storage must be sqlite or a postgresql:// URI\n");
		return -EINVAL;
	}
	if (!cfg->homes || strcmp(cfg->homes, "hash") == 0)
		cfg->homes_mode = HOMES_HASH;
	else if (strcmp(cfg->homes, "zero") == 0)
		cfg->homes_mode = HOMES_ZERO;
	else if (strcmp(cfg->homes, "other") == 0)
		cfg->homes_mode = HOMES_OTHER;
	else if (strcmp(cfg->homes, "loop") == 0)
		cfg->homes_mode = HOMES_LOOP;
	else {
		fprintf(stderr, "stanzad: homes '%s' must be zero, hash, other or loop\n", cfg->homes);
		return -EINVAL;
	}
	cfg->homes_loop = cfg->homes_mode == HOMES_LOOP;
	if (config_validate_cluster(cfg) < 0)
		return -EINVAL;
	if (cfg->steering && strcmp(cfg->steering, "least-loaded") != 0 &&
	    strcmp(cfg->steering, "source-hash") != 0 && strcmp(cfg->steering, "kernel") != 0) {
		fprintf(stderr, "stanzad: steering '%s' must be least-loaded, source-hash or kernel\n",
			cfg->steering);
		return -EINVAL;
	}
	if ((cfg->cert == NULL) != (cfg->key == NULL)) {
		fprintf(stderr, "stanzad: cert and key must be given together\n");
		return -EINVAL;
	}
	if (cfg->max_stanza_bytes_preauth > cfg->max_stanza_bytes)
		cfg->max_stanza_bytes_preauth = cfg->max_stanza_bytes;
	return 0;
}

int config_load(struct config *cfg, int argc, char **argv)
{
	bool list_flag_seen[NOPTIONS] = { false };
	int ret;

	config_defaults(cfg);

	/* Pass 1: --help, --version and --config, so the file loads first. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 1;
		}
		if (strcmp(a, "--version") == 0) {
			printf("stanzad %s\n", STANZAD_VERSION);
			return 1;
		}
		if (strcmp(a, "--config") == 0 || strncmp(a, "--config=", 9) == 0) {
			const char *v = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[++i] : NULL);

			if (!v) {
				fprintf(stderr, "stanzad: --config needs a FILE\n");
				return -EINVAL;
			}
			free(cfg->config_file);
			cfg->config_file = strdup(v);
			if (!cfg->config_file)
				return -ENOMEM;
		}
	}
	if (cfg->config_file) {
		ret = config_load_file(cfg, cfg->config_file);
		if (ret < 0)
			return ret;
	}

	/* Pass 2: every other flag, in order; later flags win. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq, *value;
		const struct config_option *o;
		size_t nlen;

		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "stanzad: unexpected argument '%s' (see --help)\n", a);
			return -EINVAL;
		}
		eq = strchr(a, '=');
		nlen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
		if (nlen == 6 && strncmp(a + 2, "config", 6) == 0) {
			if (!eq)
				i++;
			continue;
		}
		o = option_for_flag(a + 2, nlen);
		if (!o) {
			fprintf(stderr, "stanzad: unknown option '%.*s' (see --help)\n", (int)nlen + 2, a);
			return -EINVAL;
		}
		if (eq) {
			value = eq + 1;
		} else if (i + 1 < argc) {
			value = argv[++i];
		} else {
			fprintf(stderr, "stanzad: %s needs a value (%s)\n", a, o->metavar);
			return -EINVAL;
		}
		ret = option_set(cfg, o, value, a, !list_flag_seen[o - options]);
		list_flag_seen[o - options] = true;
		if (ret < 0)
			return ret;
	}

	ret = config_fill_strings(cfg);
	if (ret < 0)
		return ret;
	/* Listeners take their defaults only if neither source named them. */
	if (!cfg->listen_c2s.set)
		ret = option_set(cfg, option_find("listen_c2s"), "127.0.0.1:5222", "default", true);
	if (!ret && !cfg->listen_c2s_tls.set)
		ret = option_set(cfg, option_find("listen_c2s_tls"), "127.0.0.1:5223", "default", true);
	/* Not set by file or flag: main.c tolerates a busy default port (http_default). */
	if (!ret && !cfg->listen_http.set) {
		ret = option_set(cfg, option_find("listen_http"), "127.0.0.1:5280", "default", true);
		cfg->listen_http.set = false;
	}
	if (ret < 0)
		return ret;
	return config_validate(cfg);
}

void config_free(struct config *cfg)
{
	free(cfg->config_file);
	free(cfg->domain);
	free(cfg->state_dir);
	free(cfg->log_level);
	free(cfg->handover_socket);
	free(cfg->cert);
	free(cfg->key);
	free(cfg->client_ca);
	free(cfg->client_crl);
	list_clear(&cfg->listen_c2s);
	list_clear(&cfg->listen_c2s_tls);
	list_clear(&cfg->admin);
	list_clear(&cfg->listen_http);
	list_clear(&cfg->listen_https);
	list_clear(&cfg->upload_allowed_types);
	list_clear(&cfg->guard_interfaces);
	list_clear(&cfg->listen_s2s);
	list_clear(&cfg->listen_s2s_tls);
	list_clear(&cfg->listen_component);
	list_clear(&cfg->s2s_host);
	for (unsigned i = 0; i < cfg->component.n; i++)	/* secrets */
		explicit_bzero(cfg->component.v[i], strlen(cfg->component.v[i]));
	list_clear(&cfg->component);
	free(cfg->s2s_auth);
	free(cfg->s2s_ca);
	free(cfg->turn_host);
	if (cfg->turn_secret)
		explicit_bzero(cfg->turn_secret, strlen(cfg->turn_secret));
	free(cfg->turn_secret);
	free(cfg->upload_url_base);
	free(cfg->mam_default);
	free(cfg->steering);
	free(cfg->homes);
	/* A URI may carry a password (masked wherever it is shown). */
	if (cfg->storage)
		explicit_bzero(cfg->storage, strlen(cfg->storage));
	free(cfg->storage);
	if (cfg->cluster)	/* may hold the Redis password */
		explicit_bzero(cfg->cluster, strlen(cfg->cluster));
	free(cfg->cluster);
	free(cfg->node_name);
	list_clear(&cfg->metrics_allow);
	list_clear(&cfg->contact_abuse);
	list_clear(&cfg->contact_admin);
	list_clear(&cfg->contact_feedback);
	list_clear(&cfg->contact_security);
	list_clear(&cfg->contact_support);
	free(cfg->log_target);
	free(cfg->control_socket);
	free(cfg->control_group);
	memset(cfg, 0, sizeof(*cfg));
}

const char *config_cert_path(const struct config *cfg)
{
	static __thread char path[PATH_MAX];

	if (cfg->cert)
		return cfg->cert;
	snprintf(path, sizeof(path), "%s/cert.pem", cfg->state_dir);
	return path;
}

/* ---- Option access by index (reload.c compares and copies keys) ---- */

size_t config_option_count(void)
{
	return NOPTIONS;
}

const char *config_option_key(size_t i)
{
	return i < NOPTIONS ? options[i].key : NULL;
}

static bool str_equal(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

bool config_option_differs(const struct config *a, const struct config *b, size_t i)
{
	const struct config_option *o = &options[i];
	const void *fa = (const char *)a + o->offset, *fb = (const char *)b + o->offset;

	switch (o->type) {
	case OPT_STRING:
		return !str_equal(*(char *const *)fa, *(char *const *)fb);
	case OPT_UINT:
		return *(const uint32_t *)fa != *(const uint32_t *)fb;
	case OPT_YESNO:
	case OPT_OPENCLOSED:
		return *(const bool *)fa != *(const bool *)fb;
	case OPT_LIST: {
		const struct config_list *la = fa, *lb = fb;

		if (la->n != lb->n)
			return true;
		for (unsigned k = 0; k < la->n; k++)
			if (!str_equal(la->v[k], lb->v[k]))
				return true;
		return false;
	}
	}
	return true;
}

int config_option_copy(struct config *dst, const struct config *src, size_t i)
{
	const struct config_option *o = &options[i];
	void *fd = (char *)dst + o->offset;
	const void *fs = (const char *)src + o->offset;

	switch (o->type) {
	case OPT_STRING: {
		const char *v = *(char *const *)fs;
		char *dup = v ? strdup(v) : NULL;

		if (v && !dup)
			return -ENOMEM;
		free(*(char **)fd);
		*(char **)fd = dup;
		return 0;
	}
	case OPT_UINT:
		*(uint32_t *)fd = *(const uint32_t *)fs;
		return 0;
	case OPT_YESNO:
	case OPT_OPENCLOSED:
		*(bool *)fd = *(const bool *)fs;
		return 0;
	case OPT_LIST: {
		struct config_list *ld = fd, copy = { .n = 0 };
		const struct config_list *ls = fs;

		for (unsigned k = 0; k < ls->n; k++) {
			copy.v[k] = strdup(ls->v[k]);
			if (!copy.v[k]) {
				list_clear(&copy);
				return -ENOMEM;
			}
			copy.n++;
		}
		copy.set = ls->set;
		list_clear(ld);
		*ld = copy;
		return 0;
	}
	}
	return -EINVAL;
}

const char *config_key_path(const struct config *cfg)
{
	static __thread char path[PATH_MAX];

	if (cfg->key)
		return cfg->key;
	snprintf(path, sizeof(path), "%s/key.pem", cfg->state_dir);
	return path;
}

bool config_addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return false;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;

		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;

		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return false;
}

int config_parse_addr(const char *s, struct sockaddr_storage *out, unsigned *out_len)
{
	char host[64];
	const char *colon, *port_s;
	unsigned long port;
	char *end;
	size_t hlen;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		hlen = (size_t)(close - s - 1);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		port_s = close + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -EINVAL;
		hlen = (size_t)(colon - s);
		if (hlen >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		port_s = colon + 1;
	}
	errno = 0;
	port = strtoul(port_s, &end, 10);
	if (errno || end == port_s || *end || port > 65535)
		return -EINVAL;

	memset(out, 0, sizeof(*out));
	if (strcmp(host, "*") == 0 || strcmp(host, "::") == 0 || s[0] == '[') {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;

		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		if (strcmp(host, "*") == 0)
			a6->sin6_addr = in6addr_any;
		else if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1)
			return -EINVAL;
		*out_len = sizeof(*a6);
		return 0;
	}
	struct sockaddr_in *a4 = (struct sockaddr_in *)out;

	a4->sin_family = AF_INET;
	a4->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
		return -EINVAL;
	*out_len = sizeof(*a4);
	return 0;
}
