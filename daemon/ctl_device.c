/* SPDX-License-Identifier: MIT */
/*
 * stanzactl device: fleet enrollment from the command line.
 *
 *   stanzactl device import FILE.csv    create or update device accounts
 *   stanzactl device list               enrolled devices: online, last seen, tags, owner
 *   stanzactl device revoke FINGERPRINT refuse a client certificate from now on
 *
 * The store is used directly, like `stanzactl user`. What only the
 * running daemon knows (who is online, its domain) comes over its
 * control socket (ctl_online.h) when it answers; without it, `list`
 * shows the last logout only and says so in one line.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "control.h"
#include "ctl_online.h"
#include "db.h"
#include "device.h"
#include "fast.h"
#include "jid.h"
#include "scram.h"
#include "statedir.h"
#include "storage.h"

#define CTL_DEVICE_FILE_MAX	(64u << 20)	/* largest enrollment file */
#define CTL_DEVICE_WHY_MAX	1024
#define CTL_DEVICE_REFRESH_MAX	20000	/* devices an import tells the running daemon about */

#define CTL_DEVICE_USAGE \
	"usage: stanzactl [--state-dir DIR] device import FILE.csv\n" \
	"       stanzactl [--state-dir DIR] [--json] device list\n" \
	"       stanzactl [--state-dir DIR] device revoke FINGERPRINT\n"

/* A set of bare JIDs with a session, from the daemon's "sessions list". */
struct ctl_online_set {
	json_t *root;		/* the answer, kept for its strings */
	const char **jids;	/* bare JIDs (duplicates allowed) */
	size_t n;
	bool known;		/* the daemon answered */
	char why[256];		/* why not, for the one-line note */
};

static int ctl_device_usage(const char *what)
{
	fprintf(stderr, "stanzactl: %s\n" CTL_DEVICE_USAGE, what);
	return 2;
}

/* The socket to ask, or NULL (off). buf holds the default path. */
static const char *ctl_device_socket(const char *state_dir, const char *socket_path, char *buf,
				     size_t size)
{
	if (socket_path && strcmp(socket_path, "off") == 0)
		return NULL;
	if (socket_path)
		return socket_path;
	snprintf(buf, size, "%s/%s", state_dir, CONTROL_SOCKET_NAME);
	return buf;
}

/* One request to the daemon; the "result" object (a new reference) or NULL with why. */
static json_t *ctl_device_ask(const char *sock, const char *line, char *why, size_t ws)
{
	json_t *root, *result;
	char *answer = NULL;
	int ret;

	if (!sock) {
		snprintf(why, ws, "the control socket is off");
		return NULL;
	}
	ret = ctl_online_request(sock, line, &answer);
	if (ret < 0) {
		snprintf(why, ws, "the daemon does not answer on %s (%s)", sock, strerror(-ret));
		return NULL;
	}
	root = json_loads(answer, 0, NULL);
	free(answer);
	result = root ? json_object_get(root, "result") : NULL;
	if (!result || !json_is_true(json_object_get(root, "ok"))) {
		snprintf(why, ws, "the daemon's answer to '%.*s' was not usable",
			 (int)strcspn(line, "\n"), line);
		json_decref(root);
		return NULL;
	}
	json_incref(result);
	json_decref(root);
	return result;
}

/* Who is online (has a session, attached or waiting for resumption). */
static void ctl_online_load(struct ctl_online_set *on, const char *sock)
{
	json_t *list, *s;
	size_t i;

	memset(on, 0, sizeof(*on));
	on->root = ctl_device_ask(sock, "sessions list\n", on->why, sizeof(on->why));
	if (!on->root)
		return;
	list = json_object_get(on->root, "sessions");
	if (!json_is_array(list) || json_is_true(json_object_get(on->root, "truncated"))) {
		snprintf(on->why, sizeof(on->why), "the daemon listed too many sessions");
		return;
	}
	on->jids = calloc(json_array_size(list) + 1, sizeof(*on->jids));
	if (!on->jids) {
		snprintf(on->why, sizeof(on->why), "out of memory");
		return;
	}
	json_array_foreach(list, i, s) {
		const char *jid = json_string_value(json_object_get(s, "jid"));

		if (jid)
			on->jids[on->n++] = jid;
	}
	on->known = true;
}

static bool ctl_online_has(const struct ctl_online_set *on, const char *bare)
{
	size_t bl = strlen(bare);

	for (size_t i = 0; i < on->n; i++) {
		if (strncmp(on->jids[i], bare, bl) == 0 &&
		    (on->jids[i][bl] == '/' || on->jids[i][bl] == '\0'))
			return true;
	}
	return false;
}

static void ctl_online_free(struct ctl_online_set *on)
{
	free(on->jids);
	json_decref(on->root);
}

/* Reads a whole file (at most CTL_DEVICE_FILE_MAX). 0 or -errno. */
static int ctl_read_file(const char *path, char **data, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t cap = 65536, n = 0;
	char *buf = NULL;
	ssize_t r;

	if (fd < 0)
		return -errno;
	buf = malloc(cap + 1);
	while (buf) {
		if (n == cap) {
			char *nb;

			if (cap >= CTL_DEVICE_FILE_MAX) {
				free(buf);
				close(fd);
				return -EFBIG;
			}
			nb = realloc(buf, cap * 2 + 1);
			if (!nb)
				break;
			buf = nb;
			cap *= 2;
		}
		r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = -errno;

			free(buf);
			close(fd);
			return err;
		}
		if (r == 0) {
			close(fd);
			buf[n] = '\0';
			*data = buf;
			*len = n;
			return 0;
		}
		n += (size_t)r;
	}
	free(buf);
	close(fd);
	return -ENOMEM;
}

/*
 * Tells the running daemon about each imported device, so that an owner
 * given or taken by the file rules the device's provisioning at once
 * (provisioning.h), not from its next login: requests queued for it
 * offline meanwhile would otherwise reach it unchecked. Without the
 * daemon there is nothing to tell (it reads the store when it starts).
 */
static void ctl_device_refresh(const struct device_csv *csv, const char *sock, const char *domain)
{
	char line[JID_MAX + 32];
	size_t failed = 0;

	/* One request per device: a huge file would keep the daemon (and its log) busy. */
	if (csv->n > CTL_DEVICE_REFRESH_MAX) {
		fprintf(stderr, "stanzactl: more than %d devices: the daemon applies their "
			"provisioning at its restart or at each device's next login\n",
			CTL_DEVICE_REFRESH_MAX);
		return;
	}
	for (size_t i = 0; i < csv->n; i++) {
		char *answer = NULL;
		json_t *root = NULL;

		snprintf(line, sizeof(line), "provisioning refresh %s@%s\n", csv->rows[i].user,
			 domain);
		if (ctl_online_request(sock, line, &answer) == 0)
			root = json_loads(answer, 0, NULL);
		if (!json_is_true(json_object_get(root, "ok")))
			failed++;
		json_decref(root);
		free(answer);
	}
	if (failed)
		fprintf(stderr, "stanzactl: the daemon did not take the provisioning of %zu "
			"device(s); it applies from their next login\n", failed);
}

static int ctl_device_import(struct storage *st, const char *file, const char *sock)
{
	struct device_import_stats stats;
	struct device_csv csv;
	char why[CTL_DEVICE_WHY_MAX], dom[256] = "";
	const char *domain = NULL;
	json_t *status;
	size_t len = 0;
	char *data = NULL;
	int ret;

	ret = ctl_read_file(file, &data, &len);
	if (ret < 0) {
		fprintf(stderr, "stanzactl: cannot read %s: %s\n", file, strerror(-ret));
		return 1;
	}
	/* The running daemon knows its domain; the store alone does not. */
	status = ctl_device_ask(sock, "status\n", why, sizeof(why));
	if (status && json_string_value(json_object_get(status, "domain"))) {
		snprintf(dom, sizeof(dom), "%s", json_string_value(json_object_get(status, "domain")));
		domain = dom;
	}
	json_decref(status);
	ret = device_csv_parse(data, len, domain, &csv, why, sizeof(why));
	free(data);
	if (ret < 0) {
		fprintf(stderr, "stanzactl: %s: %s; nothing was changed\n", file,
			ret == -EINVAL ? why : strerror(-ret));
		return 1;
	}
	ret = device_import(st, &csv, 0, &stats, why, sizeof(why));
	if (ret < 0) {
		device_csv_free(&csv);
		fprintf(stderr, "stanzactl: %s: %s; nothing was changed\n", file, why);
		return 1;
	}
	printf("%s: %u created, %u updated, %u unchanged\n", file, stats.created, stats.updated,
	       stats.unchanged);
	if (domain)
		ctl_device_refresh(&csv, sock, domain);
	device_csv_free(&csv);
	return 0;
}

struct ctl_list {
	const struct ctl_online_set *on;
	bool json;
	json_t *out;
	unsigned count;
};

/* "2026-01-02T03:04:05Z", "now" or "never". */
static const char *ctl_last_seen(const struct ctl_list *l, const struct device_row *r, bool online,
				 char *buf, size_t size)
{
	time_t t = (time_t)r->logout_at;
	struct tm tm;

	if (online)
		return "now";
	if (!r->logout_at || !gmtime_r(&t, &tm) || !strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
		return "never";
	return buf;
}

static int ctl_list_row(void *arg, const struct device_row *r)
{
	struct ctl_list *l = arg;
	bool online = l->on->known && ctl_online_has(l->on, r->jid);
	char seen[32];

	l->count++;
	if (l->json) {
		json_t *o = json_pack("{s:s, s:s, s:i, s:i}", "jid", r->jid,
				      "last_seen", ctl_last_seen(l, r, online, seen, sizeof(seen)),
				      "certificates", (int)r->certs, "revoked_certificates",
				      (int)r->revoked);
		json_t *tags = json_array();
		const char *p = r->tags;

		if (!o || !tags) {
			json_decref(o);
			json_decref(tags);
			return -ENOMEM;
		}
		/* Stored ';'-joined, sorted: an array for scripts. */
		while (*p) {
			size_t n = strcspn(p, ";");

			json_array_append_new(tags, json_stringn(p, n));
			p += n + (p[n] == ';');
		}
		json_object_set_new(o, "tags", tags);
		json_object_set_new(o, "owner", r->owner ? json_string(r->owner) : json_null());
		json_object_set_new(o, "online", l->on->known ? json_boolean(online) : json_null());
		json_array_append_new(l->out, o);
		return 0;
	}
	if (l->on->known)
		printf("%-32s %-6s %-20s %-24s %-24s %u\n", r->jid, online ? "yes" : "no",
		       ctl_last_seen(l, r, online, seen, sizeof(seen)), r->tags[0] ? r->tags : "-",
		       r->owner ? r->owner : "-", r->certs);
	else
		printf("%-32s %-20s %-24s %-24s %u\n", r->jid,
		       ctl_last_seen(l, r, online, seen, sizeof(seen)), r->tags[0] ? r->tags : "-",
		       r->owner ? r->owner : "-", r->certs);
	return 0;
}

static int ctl_device_list(struct storage *st, const char *sock, bool json)
{
	struct ctl_online_set on;
	struct ctl_list l = { &on, json, NULL, 0 };
	int ret;

	ctl_online_load(&on, sock);
	if (!on.known)
		fprintf(stderr, "stanzactl: online state unavailable: %s; showing last seen only\n",
			on.why);
	if (json) {
		l.out = json_array();
	} else if (on.known) {
		printf("%-32s %-6s %-20s %-24s %-24s %s\n", "JID", "ONLINE", "LAST SEEN", "TAGS",
		       "OWNER", "CERTS");
	} else {
		printf("%-32s %-20s %-24s %-24s %s\n", "JID", "LAST SEEN", "TAGS", "OWNER", "CERTS");
	}
	ret = device_db_list(st, ctl_list_row, &l);
	if (ret == 0 && json) {
		char *text = json_dumps(l.out, JSON_INDENT(2));

		if (text)
			puts(text);
		free(text);
	}
	json_decref(l.out);
	ctl_online_free(&on);
	if (ret < 0) {
		fprintf(stderr, "stanzactl: cannot list devices: %s\n", strerror(-ret));
		return 1;
	}
	return 0;
}

/*
 * Revokes a fingerprint and ends what the certificate gave: the account's
 * FAST tokens (XEP-0484; a device that logged in with EXTERNAL and asked
 * for a token would otherwise keep logging in with it) go in the same
 * transaction, and the running daemon, when it answers, ends the
 * device's sessions.
 */
static int ctl_device_revoke(struct storage *st, const char *arg, const char *sock)
{
	uint8_t fp[TLS_FINGERPRINT_LEN];
	char user[STORAGE_USER_MAX + 1], text[3 * TLS_FINGERPRINT_LEN];
	char jid[JID_MAX], tags[DEVICE_TAGS_MAX + 1], owner[JID_MAX], line[JID_MAX + 32];
	json_t *root, *kicked;
	char *answer = NULL;
	bool revoked;
	int ret;

	if (tls_fingerprint_parse(arg, fp) < 0) {
		fprintf(stderr, "stanzactl: '%s' is not a SHA-256 fingerprint (sha256:HEX or "
			"AB:CD:... as openssl x509 -fingerprint -sha256 prints it)\n", arg);
		return 1;
	}
	tls_fingerprint_format(fp, text);
	ret = storage_begin(st);
	if (ret == 0) {
		ret = device_db_cert_find(st, fp, user, sizeof(user), &revoked);
		if (ret == 0)
			ret = device_db_cert_revoke(st, fp);
		if (ret == 0)
			ret = fast_db_delete(st, user, NULL, -1);
		ret = ret == 0 ? storage_commit(st) : ret;
		if (ret < 0)
			storage_rollback(st);
	}
	if (ret == -ENOENT) {
		fprintf(stderr, "stanzactl: no device has the certificate %s\n", text);
		return 1;
	}
	if (ret < 0) {
		fprintf(stderr, "stanzactl: cannot revoke: %s\n", strerror(-ret));
		return 1;
	}
	printf("revoked %s (%s)%s; its FAST tokens are void\n", text, user,
	       revoked ? ", already revoked" : "");
	/* The enrolled JID names the domain; the daemon ends the sessions. */
	if (device_db_get(st, user, jid, sizeof(jid), tags, sizeof(tags), owner,
			  sizeof(owner)) < 0)
		return 0;
	snprintf(line, sizeof(line), "sessions kick %s\n", jid);
	ret = sock ? ctl_online_request(sock, line, &answer) : -ENOTCONN;
	if (ret < 0) {
		printf("no session ended: the daemon does not answer (%s)\n", strerror(-ret));
		return 0;
	}
	root = json_loads(answer, 0, NULL);
	free(answer);
	kicked = json_object_get(json_object_get(root, "result"), "kicked");
	/* Not ok: the daemon had no session of it. */
	printf("%zu session(s) of %s ended\n", json_is_array(kicked) ? json_array_size(kicked) :
	       (size_t)0, jid);
	json_decref(root);
	return 0;
}

int ctl_device_main(const char *storage, const char *state_dir, const char *socket_path,
		    bool json, int argc, char **argv)
{
	char why[CTL_DEVICE_WHY_MAX], path[256];
	const char *sock = ctl_device_socket(state_dir, socket_path, path, sizeof(path));
	struct storage *st;
	int ret;

	if (argc < 1)
		return ctl_device_usage("missing device subcommand (import, list, revoke)");
	if (strcmp(argv[0], "list") == 0 ? argc != 1 : argc != 2) {
		if (strcmp(argv[0], "import") && strcmp(argv[0], "list") && strcmp(argv[0], "revoke"))
			return ctl_device_usage("unknown device subcommand");
		return ctl_device_usage(argc < 2 && strcmp(argv[0], "list") ? "missing argument"
									    : "too many arguments");
	}
	if (strcmp(argv[0], "import") && strcmp(argv[0], "list") && strcmp(argv[0], "revoke"))
		return ctl_device_usage("unknown device subcommand");
	/* Run as root, act as the server's user (see stanzactl user). */
	ret = db_is_pg_uri(storage) ? 0 : statedir_adopt_owner(state_dir, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "stanzactl: %s\n", why);
		return 1;
	}
	ret = storage_open_at(&st, storage, state_dir, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "stanzactl: cannot open the store: %s\n", why);
		return 1;
	}
	if (strcmp(argv[0], "import") == 0)
		ret = ctl_device_import(st, argv[1], sock);
	else if (strcmp(argv[0], "list") == 0)
		ret = ctl_device_list(st, sock, json);
	else
		ret = ctl_device_revoke(st, argv[1], sock);
	storage_close(st);
	if (fflush(stdout) != 0 && ret == 0) {
		fprintf(stderr, "stanzactl: cannot write output: %s\n", strerror(errno));
		ret = 1;
	}
	return ret;
}
