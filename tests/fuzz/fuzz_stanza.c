/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: stanza handling after the parser (daemon/stanza.c,
 * router.c, session.c, iq.c and the iq handlers ping/disco/version).
 *
 * Input layout:
 *   byte 0  bits 0-1 the sending session (see session_defs[]), bits 2-6
 *           the condition for the direct stanza_error_reply() check, bit 7
 *           also route a copy with router_route_stanza() (no source
 *           connection, as for stanzas the server holds)
 *   byte 1  session features (see sessions_setup())
 *   rest    XML fed after a standard c2s stream header: the stanzas
 *
 * No server runs: the target links every daemon object, a worker and a
 * server with a session directory are set up by hand, four sessions
 * (alice twice, bob unavailable, carol with a negative priority) with
 * fake connections, and the functions that would write to a socket or
 * queue storage work are replaced through the linker's --wrap by checks
 * (conn_send_node() for replies, c2s_send_stanza() for deliveries). Each stanza goes
 * through what c2s_ready_stanza() does for a bound session: 'from'
 * checked and stamped, validation, 'to' parsed and normalized, routing.
 * The fuzz build uses arena_asan.c, so a use of a reset arena is a
 * heap-use-after-free.
 *
 * Properties checked besides the sanitizers: every reply and delivery
 * round-trips through the serializer; an error stanza is never answered;
 * a stanza gets at most one reply, addressed to its sender, and the reply
 * is itself a valid stanza of the same kind; deliveries reach only
 * sessions that may receive them; a bounced message is not also
 * carbon-copied as received (XEP-0280); stanza_error_reply() and
 * stanza_iq_result() build what RFC 6120 8.3 asks for; log_sanitize()
 * output is quoted, bounded and free of raw control bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "blocking.h"
#include "csi.h"
#include "c2s.h"
#include "config.h"
#include "conn.h"
#include "fuzz_common.h"
#include "fuzz_xmlcheck.h"
#include "iq.h"
#include "jid.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "storage.h"
#include "stanza.h"
#include "worker.h"
#include "xml.h"

#define DOMAIN "localhost"

static const struct {
	const char *jid;
	size_t bare_len;
	bool available;
	int priority;
} session_defs[] = {
	{ "alice@localhost/phone", 15, true, 0 },
	{ "alice@localhost/laptop", 15, true, 5 },
	{ "bob@localhost/x", 13, false, 0 },
	{ "carol@localhost/y", 15, true, -1 },
};

#define NSESS (sizeof(session_defs) / sizeof(session_defs[0]))

static const char *const conditions[] = {
	"bad-request", "conflict", "feature-not-implemented", "forbidden", "gone",
	"internal-server-error", "item-not-found", "jid-malformed", "not-acceptable",
	"not-allowed", "not-authorized", "policy-violation", "recipient-unavailable",
	"redirect", "registration-required", "remote-server-not-found",
	"remote-server-timeout", "resource-constraint", "service-unavailable",
	"subscription-required", "undefined-condition", "unexpected-request",
	"made-up-condition",
};

#define NCOND (sizeof(conditions) / sizeof(conditions[0]))

static struct config cfg;
static struct server srv;
static struct worker wk;
static struct conn *conns[NSESS];
static struct session *sessions[NSESS];
static struct xml_pool *pool;
/* FUZZ_VERBOSE=1: print every reply and delivery. */
static bool verbose;
/*
 * c2s_ready_stanza() stamps 'from' and 'to' into the worker's scratch
 * arena, as done here by default. FUZZ_IGNORE_KNOWN=1 in the environment
 * stamps into an arena of the target's instead and skips the carbons
 * check, to explore past the open findings saved in
 * regressions/fuzz_stanza/ (the router resets the scratch arena while the
 * stanza is still in use; carbons copy bounced messages).
 */
static struct arena own_stamps;
static struct arena *stamp_arena = &wk.tmp;
static bool ignore_known;

/* What the stanza being routed is, for the checks in the stubs. */
static struct {
	const struct xml_node *st;
	const struct conn *src;		/* NULL: router_route_stanza() */
	const char *sender;		/* stamped 'from' */
	bool to_bare;			/* addressed to a bare JID */
	bool completing;		/* storage completions are running */
	bool bounced;			/* the sender got an error reply */
	unsigned carbons_received;	/* XEP-0280 "received" copies delivered */
	unsigned replies;
	struct strbuf text;
} cur;

/* ---- stand-ins for the socket side (linked with --wrap) ---- */

int __wrap_conn_send_node(struct conn *c, const struct xml_node *n);
void __wrap_c2s_send_stanza(struct conn *c, const struct xml_node *st);
int __wrap_conn_send(struct conn *c, const void *data, size_t len);
void __wrap_conn_close(struct conn *c, enum conn_close_reason reason);
void __wrap_conn_abort(struct conn *c, enum conn_close_reason reason);
void __wrap_c2s_stream_error(struct conn *c, const char *condition, const char *text);
void __wrap_storage_queue_submit(struct storage_queue *q, struct storage_req *req);

static int session_index(const struct conn *c)
{
	for (size_t i = 0; i < NSESS; i++)
		if (conns[i] == c)
			return (int)i;
	return -1;
}

/* Replies (errors, iq results) go here. */
int __wrap_conn_send_node(struct conn *c, const struct xml_node *n)
{
	const char *to = xml_attr_get(n, "to");
	const char *type = stanza_type(n);

	fuzz_check(session_index(c) >= 0, "reply to an unknown connection");
	if (cur.completing) {
		/* After storage: the stanza it answers is gone, the reply must be sane. */
		xmlcheck_roundtrip(n, XML_NS_CLIENT, "reply after storage", &cur.text);
		if (verbose)
			fprintf(fuzz_err(), "  late reply to %s: %s\n", sessions[session_index(c)]->jid,
				cur.text.data);
		return 0;
	}
	fuzz_check(cur.st, "reply outside routing");
	fuzz_check(!cur.src || c == cur.src, "reply to another connection than the sender's");
	xmlcheck_roundtrip(n, XML_NS_CLIENT, "reply", &cur.text);
	if (verbose)
		fprintf(fuzz_err(), "  reply to %s: %s\n", sessions[session_index(c)]->jid,
			cur.text.data);
	if (n == cur.st || strcmp(n->name, cur.st->name) != 0)
		return 0;	/* not a reply: a push, a carbon copy, ... */
	if (!to || strcmp(to, cur.sender) != 0)
		return 0;	/* for someone else */
	if (strcmp(type, "error") != 0 && strcmp(type, "result") != 0)
		return 0;
	fuzz_check(!stanza_is_error(cur.st), "an error stanza was answered (%s)", type);
	fuzz_check(++cur.replies == 1, "%u replies to one stanza", cur.replies);
	cur.bounced = strcmp(type, "error") == 0;
	fuzz_check(stanza_validate(n) == NULL || stanza_kind(n) == STANZA_OTHER ||
		   !xml_attr_get(n, "id"), "invalid reply: %s", stanza_validate(n));
	return 0;
}

/* Deliveries to a session's stream go here. */
void __wrap_c2s_send_stanza(struct conn *c, const struct xml_node *st)
{
	int i = session_index(c);

	fuzz_check(i >= 0, "delivery to an unknown connection");
	if (st == cur.st && cur.to_bare && stanza_kind(st) == STANZA_MESSAGE)
		fuzz_check(sessions[i]->available && sessions[i]->priority >= 0,
			   "message for a bare JID delivered to %s (available %d, priority %d)",
			   sessions[i]->jid, sessions[i]->available, sessions[i]->priority);
	if (st == cur.st && cur.to_bare && stanza_kind(st) == STANZA_PRESENCE)
		fuzz_check(sessions[i]->available, "presence to an unavailable session");
	xmlcheck_roundtrip(st, XML_NS_CLIENT, "delivery", &cur.text);
	if (st != cur.st && xml_child(st, "urn:xmpp:carbons:2", "received"))
		cur.carbons_received++;
	if (verbose)
		fprintf(fuzz_err(), "  delivery to %s: %s\n", sessions[i]->jid, cur.text.data);
}

int __wrap_conn_send(struct conn *c, const void *data, size_t len)
{
	fuzz_check(session_index(c) >= 0, "bytes for an unknown connection");
	fuzz_check(len == 0 || data, "conn_send without data");
	return 0;
}

void __wrap_conn_close(struct conn *c, enum conn_close_reason reason)
{
	fuzz_check(session_index(c) >= 0, "closing an unknown connection");
}

void __wrap_conn_abort(struct conn *c, enum conn_close_reason reason)
{
	fuzz_check(session_index(c) >= 0, "aborting an unknown connection");
}

void __wrap_c2s_stream_error(struct conn *c, const char *condition, const char *text)
{
	fuzz_check(session_index(c) >= 0, "stream error on an unknown connection");
	fuzz_check(condition && *condition, "stream error without condition");
}

/*
 * No storage thread: requests complete after the stanza was handled, as
 * they would on a later loop turn, with an I/O error. Their connections
 * are not in the worker's slot table, so completions find them gone.
 */
static struct storage_req *pending_head, **pending_tail = &pending_head;

void __wrap_storage_queue_submit(struct storage_queue *q, struct storage_req *req)
{
	req->next = NULL;
	*pending_tail = req;
	pending_tail = &req->next;
}

static void complete_storage(void)
{
	cur.completing = true;
	while (pending_head) {
		struct storage_req *req = pending_head;

		pending_head = req->next;
		if (!pending_head)
			pending_tail = &pending_head;
		req->result = -EIO;
		if (req->done)
			req->done(req);
	}
	cur.completing = false;
}

/* ---- setup ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	static char *args[] = { "stanzad", "--domain", DOMAIN, "--registration", "open", NULL };

	fuzz_quiet_logs();
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	arena_init(&own_stamps, 1024);
	ignore_known = getenv("FUZZ_IGNORE_KNOWN") != NULL;
	if (ignore_known)
		stamp_arena = &own_stamps;
	/* Every limit at its default, as the daemon would run. */
	if (config_load(&cfg, 5, args) != 0)
		abort();
	srv.cfg = &cfg;
	srv.nworkers = 1;	/* one worker: every account at home here */
	srv.workers = &wk;
	wk.srv = &srv;
	arena_init(&wk.tmp, 4096);
	pool = xml_pool_new(NULL);
	if (!pool)
		abort();
	/* Features parse stored XML (offline messages) with the worker's pool. */
	wk.xml = pool;
	cur.text = (struct strbuf)STRBUF_INIT;
	return 0;
}

/*
 * Fresh sessions for every input, so that what one input turned on
 * (carbons, a block list, availability) cannot leak into the next and
 * every crash reproduces from its input alone. feat: bit 0 carbons for
 * alice's phone, bit 1 carol inactive (XEP-0352), bit 2 alice blocks
 * mallory@evil.example and the domain blocked.example.
 */
static void sessions_setup(uint8_t feat)
{
	wk.sessions = srv.sessdirs[0] = sessdir_new();
	if (!wk.sessions)
		abort();
	for (size_t i = 0; i < NSESS; i++) {
		conns[i] = calloc(1, sizeof(*conns[i]));
		if (!conns[i])
			abort();
		conns[i]->w = &wk;
		conns[i]->id = i + 1;
		conns[i]->authenticated = true;
		sessions[i] = session_new(conns[i], session_defs[i].jid, session_defs[i].bare_len);
		if (!sessions[i] || sessdir_add(wk.sessions, sessions[i]) < 0)
			abort();
		sessions[i]->available = session_defs[i].available;
		sessions[i]->priority = session_defs[i].priority;
		conns[i]->sess = sessions[i];
	}
	sessions[0]->carbons = feat & 1;
	sessions[3]->csi_inactive = feat & 2;
	if (feat & 4) {
		struct account *a = calloc(1, sizeof(*a));

		if (!a || !(a->blocklist = blocklist_new()))
			abort();
		snprintf(a->user, sizeof(a->user), "alice");
		blocklist_add(a->blocklist, "mallory@evil.example", 20);
		blocklist_add(a->blocklist, "blocked.example", 15);
		session_install_account(sessions[0], a);
	}
}

static void sessions_teardown(void)
{
	for (size_t i = 0; i < NSESS; i++) {
		csi_session_end(sessions[i]);
		sessdir_remove(wk.sessions, sessions[i]);
		session_free(sessions[i]);
		free(conns[i]);
	}
	sessdir_free(wk.sessions);
	wk.sessions = srv.sessdirs[0] = NULL;
}

/* ---- checks of the stanza helpers ---- */

static void check_error_reply(const struct xml_node *st, const char *cond, bool with_text)
{
	struct arena a;
	struct xml_node *r, *err, *last = NULL, *c;
	const char *from = xml_attr_get(st, "from"), *to = xml_attr_get(st, "to");
	const char *id = xml_attr_get(st, "id"), *v;
	size_t want_children = 1;

	arena_init(&a, 1024);
	r = stanza_error_reply(&a, st, DOMAIN, cond, with_text ? "some <text> & more" : NULL);
	fuzz_check(r, "stanza_error_reply failed");
	fuzz_check(strcmp(r->name, st->name) == 0 && strcmp(r->ns, XML_NS_CLIENT) == 0,
		   "error reply element");
	fuzz_check(stanza_is_error(r), "error reply without type='error'");
	v = xml_attr_get(r, "to");
	fuzz_check((!from && !v) || (from && v && strcmp(v, from) == 0), "error reply 'to'");
	v = xml_attr_get(r, "from");
	fuzz_check(v && strcmp(v, to ? to : DOMAIN) == 0, "error reply 'from'");
	v = xml_attr_get(r, "id");
	fuzz_check((!id && !v) || (id && v && strcmp(v, id) == 0), "error reply 'id'");
	for (c = xml_first_element(st); c; c = xml_next_element(c))
		if (!(strcmp(c->ns, XML_NS_CLIENT) == 0 && strcmp(c->name, "error") == 0))
			want_children++;
	fuzz_check(xml_element_count(r) == want_children, "error reply has %zu children, want %zu",
		   xml_element_count(r), want_children);
	for (c = xml_first_element(r); c; c = xml_next_element(c))
		last = c;
	err = last;
	fuzz_check(err && strcmp(err->name, "error") == 0 && strcmp(err->ns, XML_NS_CLIENT) == 0,
		   "<error/> is not the last child");
	v = xml_attr_get(err, "type");
	fuzz_check(v && strcmp(v, stanza_error_type(cond)) == 0, "error type");
	fuzz_check(xml_child(err, NS_STANZAS, cond), "condition element missing");
	fuzz_check(!with_text || xml_child(err, NS_STANZAS, "text"), "text missing");
	if (stanza_kind(st) == STANZA_MESSAGE || stanza_kind(st) == STANZA_PRESENCE ||
	    (stanza_kind(st) == STANZA_IQ && id))
		fuzz_check(stanza_validate(r) == NULL, "error reply invalid: %s",
			   stanza_validate(r));
	xmlcheck_roundtrip(r, XML_NS_CLIENT, "stanza_error_reply", NULL);

	if (stanza_kind(st) == STANZA_IQ) {
		r = stanza_iq_result(&a, st, DOMAIN);
		fuzz_check(r && strcmp(stanza_type(r), "result") == 0 && !r->children,
			   "stanza_iq_result");
		v = xml_attr_get(r, "id");
		fuzz_check((!id && !v) || (id && v && strcmp(v, id) == 0), "iq result 'id'");
		xmlcheck_roundtrip(r, XML_NS_CLIENT, "stanza_iq_result", NULL);
	}
	arena_release(&a);
}

static void check_sanitize(const char *s)
{
	static const size_t sizes[] = { 0, 1, 5, 6, 7, 8, 16, 64 };
	char out[64];
	size_t len = strlen(s);

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];

		memset(out, 'Z', sizeof(out));
		log_sanitize(out, n, s, len);
		if (n == 0)
			continue;
		fuzz_check(memchr(out, '\0', n), "log_sanitize: no NUL within %zu", n);
		if (n < 6)
			continue;
		fuzz_check(out[0] == '"' && out[strlen(out) - 1] == '"' && strlen(out) >= 2,
			   "log_sanitize: not quoted");
		for (const char *p = out; *p; p++)
			fuzz_check((unsigned char)*p >= 0x20 && *p != 0x7f,
				   "log_sanitize: raw control byte");
	}
}

/* ---- routing, as c2s_ready_stanza() does it ---- */


static void route_as_session(struct xml_node *st, int si)
{
	struct session *s = sessions[si];
	struct conn *c = conns[si];
	const char *bad = stanza_validate(st);
	const char *from_attr = xml_attr_get(st, "from");
	const char *to_attr = xml_attr_get(st, "to");
	struct jid from, to;

	/* RFC 6120 8.1.2.1: 'from' may only be the session's full or bare JID. */
	if (from_attr && strcmp(from_attr, s->jid) != 0 &&
	    (strlen(from_attr) != s->bare_len || memcmp(from_attr, s->jid, s->bare_len) != 0)) {
		struct jid fj;

		if (jid_parse(&fj, from_attr, strlen(from_attr)) < 0 ||
		    (strcmp(fj.buf, s->jid) != 0 &&
		     (fj.len != s->bare_len || memcmp(fj.buf, s->jid, s->bare_len) != 0)))
			return;	/* invalid-from: a stream error */
	}
	fuzz_check(jid_parse(&from, s->jid, s->jid_len) == 0, "session JID");
	fuzz_check(xml_attr_set(stamp_arena, st, "from", s->jid) == 0, "stamping 'from'");

	cur.st = st;
	cur.src = c;
	cur.sender = s->jid;
	cur.replies = 0;
	cur.bounced = false;
	cur.carbons_received = 0;
	cur.to_bare = false;
	if (bad) {
		router_bounce(c, st, bad);
	} else if (to_attr) {
		if (jid_parse(&to, to_attr, strlen(to_attr)) < 0) {
			router_bounce(c, st, "jid-malformed");
		} else {
			fuzz_check(xml_attr_set(stamp_arena, st, "to", to.buf) == 0, "stamping 'to'");
			cur.to_bare = !jid_has_resource(&to);
			router_route(c, st, &from, &to);
		}
	} else {
		cur.to_bare = true;
		router_route(c, st, &from, NULL);
	}
	/* XEP-0280: what the sender was told did not arrive was not received. */
	fuzz_check(ignore_known || !(cur.bounced && cur.carbons_received),
		   "a bounced stanza was also carbon-copied as received (%u copies)",
		   cur.carbons_received);
	cur.st = NULL;
	arena_reset(&wk.tmp);
	arena_reset(&own_stamps);
	complete_storage();
}

/* Stanzas the server holds: addresses from the attributes, no source. */
static void route_held(const struct xml_node *orig)
{
	struct arena a;
	struct xml_node *st;
	const char *from, *to;
	struct jid fj, tj;
	int rc, want;

	arena_init(&a, 1024);
	st = xml_node_clone(&a, orig);
	fuzz_check(st, "clone");
	from = xml_attr_get(st, "from");
	to = xml_attr_get(st, "to");
	want = (!from || jid_parse(&fj, from, strlen(from)) < 0 ||
		(to && jid_parse(&tj, to, strlen(to)) < 0)) ? -EINVAL : 0;
	cur.st = st;
	cur.src = NULL;
	cur.sender = from ? from : "";
	cur.replies = 0;
	cur.to_bare = to && want == 0 && !jid_has_resource(&tj);
	if (want == 0 && !to)
		cur.to_bare = true;
	/* Replies go to the session named by 'from': use its normalized form. */
	if (want == 0) {
		xml_attr_set(&a, st, "from", fj.buf);
		cur.sender = xml_attr_get(st, "from");
	}
	rc = router_route_stanza(&wk, st);
	fuzz_check(rc == want, "router_route_stanza rc %d, want %d", rc, want);
	cur.st = NULL;
	arena_reset(&wk.tmp);
	complete_storage();
	arena_release(&a);
}

struct input_ctx {
	uint8_t flags;
};

static bool on_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	(void)ctx;
	(void)hdr;
	(void)default_ns;
	return true;
}

static bool on_stanza(void *ctx, struct xml_node *st)
{
	struct input_ctx *in = ctx;
	const char *type = stanza_type(st);

	fuzz_check(stanza_is_error(st) == (strcmp(type, "error") == 0), "stanza_is_error");
	fuzz_check(!stanza_validate(st) || strcmp(stanza_validate(st), "bad-request") == 0,
		   "stanza_validate gave %s", stanza_validate(st));
	for (const struct xml_attr *at = st->attrs; at; at = at->next)
		check_sanitize(at->value);
	check_error_reply(st, conditions[((in->flags >> 2) & 31) % NCOND], in->flags & 1);
	if (in->flags & 128)
		route_held(st);
	if (verbose)
		fprintf(fuzz_err(), "from %s: <%s type='%s' to='%s'>\n", session_defs[in->flags & 3].jid,
			st->name, type, xml_attr_get(st, "to") ? xml_attr_get(st, "to") : "");
	route_as_session(st, in->flags & 3);
	return true;
}

static const struct xml_stream_handlers handlers = {
	.stream_open = on_open,
	.stanza = on_stanza,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char header[] = "<stream:stream xmlns='jabber:client' "
		"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";
	struct input_ctx ctx = { size ? data[0] : 0 };
	struct xml_stream s;

	sessions_setup(size > 1 ? data[1] : 0);
	if (size > 1) {
		data++;
		size--;
	}
	xml_stream_init(&s, pool, &handlers, &ctx);
	if (xml_stream_feed(&s, header, sizeof(header) - 1, NULL) == XML_OK && size > 1)
		(void)xml_stream_feed(&s, (const char *)data + 1, size - 1, NULL);
	xml_stream_destroy(&s);
	fuzz_check(sessdir_size(wk.sessions) == NSESS, "sessions changed");
	sessions_teardown();
	return 0;
}
