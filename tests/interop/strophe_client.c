/* SPDX-License-Identifier: MIT */
/*
 * Interop client: libstrophe (libstrophe-dev), the C XMPP library.
 *
 *   strophe_client HOST PORT JID PASSWORD PEER
 *
 * Same protocol as tests/interop/slixmpp_client.py: logs in with STARTTLS
 * (mandatory, the self-signed certificate trusted), prints BOUND <jid>,
 * ROSTER <jid> per roster item, sends PEER "hello from libstrophe" and
 * prints SENT, then RECEIVED <body> for the first message from PEER, and
 * exits 0. Exit 1 on a failure or after CLIENT_DEADLINE_MS.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <strophe.h>

#define CLIENT_DEADLINE_MS	40000
#define CLIENT_TURN_MS		100

struct client {
	xmpp_ctx_t *ctx;
	const char *peer;
	int done;	/* 1 answered, -1 failed */
};

/* Whether full JID `from` belongs to bare JID `bare`. */
static int same_bare(const char *from, const char *bare)
{
	size_t n = strlen(bare);

	return from && strncmp(from, bare, n) == 0 && (from[n] == '\0' || from[n] == '/');
}

static int on_message(xmpp_conn_t *conn, xmpp_stanza_t *st, void *data)
{
	struct client *c = data;
	const char *type = xmpp_stanza_get_type(st);
	char *body;

	(void)conn;
	if (type && strcmp(type, "error") == 0)
		return 1;
	if (!same_bare(xmpp_stanza_get_from(st), c->peer))
		return 1;
	body = xmpp_message_get_body(st);
	if (!body)
		return 1;
	printf("RECEIVED %s\n", body);
	fflush(stdout);
	xmpp_free(c->ctx, body);
	c->done = 1;
	return 0;
}

static int on_roster(xmpp_conn_t *conn, xmpp_stanza_t *st, void *data)
{
	xmpp_stanza_t *query, *item;

	(void)conn;
	(void)data;
	if (strcmp(xmpp_stanza_get_type(st), "result") != 0) {
		printf("ERROR roster get failed\n");
		return 0;
	}
	query = xmpp_stanza_get_child_by_name(st, "query");
	for (item = query ? xmpp_stanza_get_children(query) : NULL; item;
	     item = xmpp_stanza_get_next(item))
		if (xmpp_stanza_get_attribute(item, "jid"))
			printf("ROSTER %s\n", xmpp_stanza_get_attribute(item, "jid"));
	fflush(stdout);
	return 0;
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
		    xmpp_stream_error_t *stream_error, void *data)
{
	struct client *c = data;
	xmpp_stanza_t *iq, *query, *pres, *msg;

	(void)stream_error;
	if (status != XMPP_CONN_CONNECT) {
		printf("ERROR disconnected (status %d, error %d)\n", (int)status, error);
		c->done = c->done ? c->done : -1;
		return;
	}
	printf("BOUND %s\n", xmpp_conn_get_bound_jid(conn));
	fflush(stdout);
	xmpp_handler_add(conn, on_message, NULL, "message", NULL, c);

	iq = xmpp_iq_new(c->ctx, "get", "roster1");
	query = xmpp_stanza_new(c->ctx);
	xmpp_stanza_set_name(query, "query");
	xmpp_stanza_set_ns(query, XMPP_NS_ROSTER);
	xmpp_stanza_add_child(iq, query);
	xmpp_stanza_release(query);
	xmpp_id_handler_add(conn, on_roster, "roster1", c);
	xmpp_send(conn, iq);
	xmpp_stanza_release(iq);

	pres = xmpp_presence_new(c->ctx);
	xmpp_send(conn, pres);
	xmpp_stanza_release(pres);

	msg = xmpp_message_new(c->ctx, "chat", c->peer, "m1");
	xmpp_message_set_body(msg, "hello from libstrophe");
	xmpp_send(conn, msg);
	xmpp_stanza_release(msg);
	printf("SENT\n");
	fflush(stdout);
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

int main(int argc, char **argv)
{
	struct client c = { 0 };
	xmpp_conn_t *conn;
	long deadline;

	if (argc != 6) {
		fprintf(stderr, "usage: %s HOST PORT JID PASSWORD PEER\n", argv[0]);
		return 2;
	}
	c.peer = argv[5];
	/* The server may close first while libstrophe still writes </stream>. */
	signal(SIGPIPE, SIG_IGN);
	xmpp_initialize();
	c.ctx = xmpp_ctx_new(NULL, getenv("STROPHE_DEBUG") ?
			     xmpp_get_default_logger(XMPP_LEVEL_DEBUG) : NULL);
	conn = xmpp_conn_new(c.ctx);
	/* STARTTLS required; the test server's certificate is self-signed. */
	xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_TRUST_TLS);
	xmpp_conn_set_jid(conn, argv[3]);
	xmpp_conn_set_pass(conn, argv[4]);
	if (xmpp_connect_client(conn, argv[1], (unsigned short)atoi(argv[2]), on_conn, &c) !=
	    XMPP_EOK) {
		printf("ERROR cannot connect\n");
		return 1;
	}
	deadline = now_ms() + CLIENT_DEADLINE_MS;
	while (!c.done && now_ms() < deadline)
		xmpp_run_once(c.ctx, CLIENT_TURN_MS);
	if (c.done == 1) {
		xmpp_disconnect(conn);
		for (int i = 0; i < 10; i++)
			xmpp_run_once(c.ctx, CLIENT_TURN_MS);
	} else if (!c.done) {
		printf("ERROR no answer within %d ms\n", CLIENT_DEADLINE_MS);
	}
	xmpp_conn_release(conn);
	xmpp_ctx_free(c.ctx);
	xmpp_shutdown();
	return c.done == 1 ? 0 : 1;
}
