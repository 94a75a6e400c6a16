/* SPDX-License-Identifier: MIT */
/*
 * The web console of a hub: a few pages served at /console/ on the HTTP
 * listeners that show the enrolled devices (device.h) with their online
 * state, when they were last seen, their latest sensor readings and
 * their provisioning rules (iot_store.h), updated live.
 *
 * Pages: plain HTML, CSS and JavaScript under daemon/console/, embedded
 * into the binary at build time (scripts/embed-files.sh writes
 * BUILD/gen/console_assets.c), so nothing is built or read from disk to
 * serve them.
 *
 * Login: an account listed as `admin` in the configuration, checked with
 * its stored SCRAM credentials (STORAGE_OP_ACCOUNT_VERIFY_PLAIN: the
 * password is never stored and wiped once used). A login gets a random
 * session token in a cookie (HttpOnly, SameSite=Strict, Secure over
 * HTTPS, Path=/console/) that expires after CONSOLE_SESSION_TTL_S. Only
 * the token's holder is trusted: the pages' POSTs must be
 * application/json, which no cross-site form can send.
 *
 *   GET  /console/               the page (and its .js and .css)
 *   POST /console/login          {"user","password"} -> {"user"} + cookie
 *   POST /console/logout         ends the session
 *   GET  /console/api/devices    the device snapshot (JSON)
 *   GET  /console/events         server-sent events: "devices" with the
 *                                snapshot whenever it changes
 *
 * Readings: while a console watches (an event stream is open), the
 * server asks every online device for a momentary read-out (XEP-0323,
 * from the server's domain, to each of its sessions) every
 * CONSOLE_POLL_MS, and keeps the fields of the answers addressed to the
 * domain (console_sensor_data). Everything runs on the single worker
 * (the tables are plain statics, like the provisioning service's).
 */
#ifndef STANZAD_CONSOLE_H
#define STANZAD_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct http_request;
struct jid;
struct worker;
struct xml_node;

#define CONSOLE_PATH		"/console/"
#define CONSOLE_COOKIE		"stanzad_console"
#define CONSOLE_TOKEN_BYTES	32		/* random bytes of a session token */
#define CONSOLE_SESSION_TTL_S	(8 * 3600)	/* a login lasts this long */
#define CONSOLE_MAX_SESSIONS	32		/* logins kept; one more ends the oldest */
#define CONSOLE_MAX_STREAMS	16		/* event streams open at once */
#define CONSOLE_MAX_LOGINS	4		/* logins being checked at once (PBKDF2) */
#define CONSOLE_MAX_BODY	1024		/* bytes of a login request */
#define CONSOLE_TICK_MS		1000		/* the snapshot is rebuilt this often */
#define CONSOLE_POLL_MS		2000		/* read-outs asked this often */
#define CONSOLE_PING_MS		15000		/* an idle event stream gets a comment */
#define CONSOLE_MAX_DEVICES	1000		/* devices in one snapshot */
#define CONSOLE_READ_DEVICES	256		/* devices whose readings are kept */
#define CONSOLE_FIELDS_MAX	12		/* readings kept per device */
#define CONSOLE_NAME_MAX	32		/* bytes of a field's name or value */
#define CONSOLE_UNIT_MAX	16		/* bytes of a unit */

/* One embedded file (BUILD/gen/console_assets.c). */
struct console_asset {
	const char *name;		/* "index.html" */
	const char *type;		/* Content-Type */
	const unsigned char *data;
	size_t len;
};

extern const struct console_asset console_assets[];
extern const size_t console_nassets;

/* Whether /console/ is served (console = yes). */
bool console_enabled(const struct config *cfg);

/*
 * The value of cookie `name` in a Cookie header ("a=1; b=2", or several
 * headers joined: "a=1, b=2"), copied into
 * out; false when it is absent or does not fit (a value that does not fit
 * is nobody's token).
 */
bool console_cookie(const char *header, const char *name, char *out, size_t size);

/* Every request under /console/ (http.c's route table). */
void console_http(struct http_request *rq);

/*
 * A message to the server's domain (router.c): sensor data (XEP-0323
 * <fields/>) from a device the console asked is kept as its latest
 * readings. Returns true when the message was taken.
 */
bool console_sensor_data(struct worker *w, struct xml_node *st, const struct jid *from);

#endif
