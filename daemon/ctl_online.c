/* SPDX-License-Identifier: MIT */
/*
 * stanzactl's online commands (see ctl_online.h): one request line over
 * the control socket, one JSON answer back, printed for people (tables,
 * key: value lines) or, with --json, as indented JSON (the answer's
 * "result" member) for scripts.
 */
#include <errno.h>
#include <ini.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctl_online.h"

#define CTL_ANSWER_MAX	(64u << 20)	/* bytes of an answer stanzactl accepts */

struct ctl_online_cmd {
	const char *name;	/* one or two words */
	const char *arg;	/* argument name, or NULL */
	void (*print)(json_t *result);
};

/* ---- Small printing helpers ---- */

static const char *ctl_str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static long long ctl_int(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static bool ctl_bool(json_t *o, const char *key)
{
	return json_is_true(json_object_get(o, key));
}

static void ctl_print_duration(long long s)
{
	if (s >= 86400)
		printf("%lldd %lldh %lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
	else if (s >= 3600)
		printf("%lldh %lldm %llds", s / 3600, s % 3600 / 60, s % 60);
	else if (s >= 60)
		printf("%lldm %llds", s / 60, s % 60);
	else
		printf("%llds", s);
}

/* "(showing 10000 of 12345)" after a truncated list. */
static void ctl_print_truncated(json_t *r, size_t shown)
{
	if (ctl_bool(r, "truncated"))
		printf("(showing %zu of %lld)\n", shown, ctl_int(r, "total"));
}

/* Width of the widest string member `key` of the array's objects, at least min. */
static int ctl_width(json_t *arr, const char *key, int min)
{
	size_t i;
	json_t *o;
	int w = min;

	json_array_foreach(arr, i, o) {
		int n = (int)strlen(ctl_str(o, key));

		if (n > w)
			w = n;
	}
	return w > 60 ? 60 : w;
}

/* ---- Renderers, one per command ---- */

static void ctl_print_paths(json_t *paths)
{
	size_t i;
	json_t *p;
	int w = ctl_width(paths, "name", 4);

	json_array_foreach(paths, i, p) {
		const char *detail = ctl_str(p, "detail"), *reason = ctl_str(p, "reason");

		printf("  %-*s  %-8s  %s%s%s\n", w, ctl_str(p, "name"),
		       ctl_bool(p, "active") ? "active" : "off", detail,
		       detail[0] && reason[0] ? "; " : "", reason);
	}
}

static void ctl_print_status(json_t *r)
{
	json_t *workers = json_object_get(r, "workers"), *st = json_object_get(r, "storage");
	json_t *ls = json_object_get(r, "listeners"), *lg = json_object_get(r, "log"), *o;
	size_t i;

	printf("stanzad %s, domain %s, pid %lld, up ", ctl_str(r, "version"), ctl_str(r, "domain"),
	       ctl_int(r, "pid"));
	ctl_print_duration(ctl_int(r, "uptime_seconds"));
	printf("\nconnections: %lld (", ctl_int(r, "connections"));
	json_array_foreach(workers, i, o)
		printf("%sworker %lld: %lld", i ? ", " : "", ctl_int(o, "id"), ctl_int(o, "connections"));
	printf(")\nsessions: %lld (", ctl_int(r, "sessions"));
	json_array_foreach(workers, i, o)
		printf("%sworker %lld: %lld", i ? ", " : "", ctl_int(o, "id"), ctl_int(o, "sessions"));
	printf(")\n");
	printf("storage: queue depth %lld, %lld requests, %lld commits, %lld failures\n",
	       ctl_int(st, "queue_depth"), ctl_int(st, "requests"), ctl_int(st, "commits"),
	       ctl_int(st, "failures"));
	printf("listeners:");
	json_array_foreach(ls, i, o)
		printf("%s %s %s", i ? "," : "", ctl_str(o, "kind"), ctl_str(o, "addr"));
	printf("\nlog: %s, rate limit %lld lines/s per event\n", ctl_str(lg, "target"),
	       ctl_int(lg, "rate_limit"));
	printf("kernel paths:\n");
	ctl_print_paths(json_object_get(r, "kernel_paths"));
}

static void ctl_print_paths_cmd(json_t *r)
{
	ctl_print_paths(json_object_get(r, "paths"));
}

static void ctl_print_sessions(json_t *r)
{
	json_t *list = json_object_get(r, "sessions"), *s;
	int w = ctl_width(list, "jid", 3);
	size_t i;

	if (!json_array_size(list)) {
		printf("no sessions\n");
		return;
	}
	printf("%-*s  %-11s  %4s  %-9s  %-9s  %-4s  %-21s  %s\n", w, "JID", "STATE", "PRIO",
	       "TRANSPORT", "TLS", "SM", "PEER", "IDLE");
	json_array_foreach(list, i, s) {
		bool detached = ctl_bool(s, "detached");

		printf("%-*s  %-11s  %4lld  %-9s  %-9s  %-4s  %-21s  ", w, ctl_str(s, "jid"),
		       detached ? "detached" : ctl_bool(s, "available") ? "available" : "unavailable",
		       ctl_int(s, "priority"), detached ? "-" : ctl_str(s, "transport"),
		       detached ? "-" : ctl_str(s, "tls"), ctl_bool(s, "stream_management") ? "yes" : "no",
		       detached ? "-" : ctl_str(s, "peer"));
		if (detached)
			printf("-");
		else
			ctl_print_duration(ctl_int(s, "idle_seconds"));
		printf("\n");
	}
	ctl_print_truncated(r, json_array_size(list));
}

static void ctl_print_kicked(json_t *r)
{
	size_t i;
	json_t *j;

	json_array_foreach(json_object_get(r, "kicked"), i, j)
		printf("session %s ended\n", json_string_value(j));
}

static void ctl_print_users(json_t *r)
{
	json_t *list = json_object_get(r, "users"), *u;
	int w = ctl_width(list, "user", 4);
	size_t i;

	if (!json_array_size(list)) {
		printf("no users\n");
		return;
	}
	printf("%-*s  %s\n", w, "USER", "STATE");
	json_array_foreach(list, i, u) {
		long long n = ctl_int(u, "sessions");

		if (n)
			printf("%-*s  online (%lld session%s)\n", w, ctl_str(u, "user"), n,
			       n == 1 ? "" : "s");
		else
			printf("%-*s  offline\n", w, ctl_str(u, "user"));
	}
	ctl_print_truncated(r, json_array_size(list));
}

static void ctl_print_roster(json_t *r)
{
	json_t *items = json_object_get(r, "items"), *pending = json_object_get(r, "pending_requests");
	json_t *it, *g;
	int w = ctl_width(items, "jid", 3);
	size_t i, k;

	printf("roster of %s (version %lld): %lld item%s\n", ctl_str(r, "user"),
	       ctl_int(r, "version"), ctl_int(r, "total"), ctl_int(r, "total") == 1 ? "" : "s");
	if (json_array_size(items))
		printf("%-*s  %-12s  %-9s  %-20s  %s\n", w, "JID", "SUBSCRIPTION", "ASK", "NAME",
		       "GROUPS");
	json_array_foreach(items, i, it) {
		printf("%-*s  %-12s  %-9s  %-20s  ", w, ctl_str(it, "jid"), ctl_str(it, "subscription"),
		       json_is_string(json_object_get(it, "ask")) ? ctl_str(it, "ask") : "-",
		       json_is_string(json_object_get(it, "name")) ? ctl_str(it, "name") : "-");
		json_array_foreach(json_object_get(it, "groups"), k, g)
			printf("%s%s", k ? ", " : "", json_string_value(g));
		printf("%s\n", json_array_size(json_object_get(it, "groups")) ? "" : "-");
	}
	ctl_print_truncated(r, json_array_size(items));
	if (json_array_size(pending)) {
		printf("subscription requests waiting for an answer:");
		json_array_foreach(pending, k, g)
			printf("%s %s", k ? "," : "", json_string_value(g));
		printf("\n");
	}
}

static void ctl_print_queues(json_t *r)
{
	json_t *list = json_object_get(r, "queues"), *q;
	int w = ctl_width(list, "user", 4);
	size_t i;

	if (!json_array_size(list)) {
		printf("no offline messages\n");
	} else {
		printf("%-*s  %s\n", w, "USER", "OFFLINE");
		json_array_foreach(list, i, q)
			printf("%-*s  %lld\n", w, ctl_str(q, "user"), ctl_int(q, "offline"));
		ctl_print_truncated(r, json_array_size(list));
		printf("%lld message%s for %lld account%s\n", ctl_int(r, "messages"),
		       ctl_int(r, "messages") == 1 ? "" : "s", ctl_int(r, "total"),
		       ctl_int(r, "total") == 1 ? "" : "s");
	}
	printf("storage queue depth: %lld\n", ctl_int(r, "storage_queue_depth"));
}

static void ctl_print_cert(json_t *r)
{
	json_t *c = json_object_get(r, "certificate"), *n;
	size_t i;

	printf("certificate: %s\nkey:         %s\n", ctl_str(r, "cert_file"), ctl_str(r, "key_file"));
	printf("subject:     %s\nissuer:      %s%s\n", ctl_str(c, "subject"), ctl_str(c, "issuer"),
	       ctl_bool(c, "self_signed") ? " (self-signed)" : "");
	printf("names:       ");
	json_array_foreach(json_object_get(c, "dns_names"), i, n)
		printf("%s%s", i ? ", " : "", json_string_value(n));
	printf("\nvalid:       %s to %s (%lld days left)\n", ctl_str(c, "not_before"),
	       ctl_str(c, "not_after"), ctl_int(c, "days_left"));
	printf("key type:    %s\nserial:      %s\nsha256:      %s\n", ctl_str(c, "key"),
	       ctl_str(c, "serial"), ctl_str(c, "sha256"));
}

static void ctl_print_reloaded(json_t *r)
{
	printf("certificate reloaded; new TLS handshakes use it\n");
	ctl_print_cert(r);
}

static void ctl_print_guard(json_t *r)
{
	json_t *c = json_object_get(r, "counters");
	const char *detail = ctl_str(r, "detail"), *reason = ctl_str(r, "reason");

	printf("xdp guard: %s%s%s%s%s\n", ctl_bool(r, "active") ? "active" : "off",
	       detail[0] || reason[0] ? " (" : "", detail, reason, detail[0] || reason[0] ? ")" : "");
	printf("per source: %lld new connections/s, burst %lld\n", ctl_int(r, "syn_rate"),
	       ctl_int(r, "syn_burst"));
	printf("passed %lld, rate-dropped %lld, ban-dropped %lld\n", ctl_int(c, "passed"),
	       ctl_int(c, "rate_dropped"), ctl_int(c, "ban_dropped"));
}

static void ctl_print_workers(json_t *r)
{
	json_t *st = json_object_get(r, "steering"), *o;
	const char *detail = ctl_str(st, "detail"), *reason = ctl_str(st, "reason");
	size_t i;

	printf("steering: %s%s%s%s%s\n", ctl_bool(st, "active") ? "active" : "off (kernel hash)",
	       detail[0] || reason[0] ? " (" : "", detail, reason, detail[0] || reason[0] ? ")" : "");
	printf("%-6s  %11s  %-7s  %s\n", "WORKER", "CONNECTIONS", "DRAINED", "STEERED");
	json_array_foreach(json_object_get(r, "workers"), i, o)
		printf("%-6lld  %11lld  %-7s  %lld\n", ctl_int(o, "id"), ctl_int(o, "connections"),
		       ctl_bool(o, "drained") ? "yes" : "no", ctl_int(o, "selected"));
	if (ctl_bool(st, "active"))
		printf("left to the kernel's hash: %lld\n", ctl_int(st, "fallbacks"));
}

static void ctl_print_drained(json_t *r)
{
	if (ctl_bool(r, "drained"))
		printf("worker %lld drained: no new connections, it keeps the ones it has\n",
		       ctl_int(r, "worker"));
	else
		printf("worker %lld takes new connections again\n", ctl_int(r, "worker"));
}

static void ctl_print_cluster(json_t *r)
{
	json_t *lag = json_object_get(r, "delivery_lag"), *st = json_object_get(r, "stanzas"), *o;
	size_t i;

	if (!ctl_bool(r, "enabled")) {
		printf("cluster mode is off (no cluster setting)\n");
		return;
	}
	printf("node %s, redis %s: %s", ctl_str(r, "node"), ctl_str(r, "redis"),
	       ctl_str(r, "state"));
	if (ctl_int(r, "down_since_ms")) {
		time_t t = (time_t)(ctl_int(r, "down_since_ms") / 1000);
		char when[32];

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", gmtime(&t));
		printf(" since %s UTC", when);
	}
	printf("\nheartbeat ttl %lld ms; sessions here %lld, on other nodes %lld\n",
	       ctl_int(r, "ttl_ms"), ctl_int(r, "sessions"), ctl_int(r, "replica_sessions"));
	{
		json_t *svc = json_object_get(r, "services");
		const char *owner = ctl_str(r, "services_owner");

		printf("services owner: %s%s; %lld taken over here, %lld stanzas sent to the "
		       "owner, %lld refused (no owner)\n", owner[0] ? owner : "none",
		       ctl_bool(r, "services_here") ? " (this node)" : "",
		       ctl_int(svc, "takeovers"), ctl_int(svc, "forwarded"),
		       ctl_int(svc, "refused"));
	}
	printf("%-20s  %-5s  %8s  %7s  %6s  %s\n", "NODE", "STATE", "SESSIONS", "PENDING", "UNREAD",
	       "OLDEST_PENDING_MS");
	json_array_foreach(json_object_get(r, "nodes"), i, o)
		printf("%-20s  %-5s  %8lld  %7lld  %6lld  %lld%s\n", ctl_str(o, "name"),
		       ctl_bool(o, "alive") ? "alive" : "dead", ctl_int(o, "sessions"),
		       ctl_int(o, "pending"), ctl_int(o, "unread"), ctl_int(o, "oldest_pending_ms"),
		       ctl_bool(o, "self") ? "  (this node)" : "");
	printf("stanzas: %lld sent, %lld received, %lld from dead nodes, %lld not sent\n",
	       ctl_int(st, "sent"), ctl_int(st, "received"), ctl_int(st, "reaped"),
	       ctl_int(st, "send_failed"));
	printf("delivery lag (last %lld): last %lld ms, avg %lld ms, max %lld ms\n",
	       ctl_int(lag, "samples"), ctl_int(lag, "last_ms"), ctl_int(lag, "avg_ms"),
	       ctl_int(lag, "max_ms"));
}

static const struct ctl_online_cmd ctl_cmds[] = {
	{ "status", NULL, ctl_print_status },
	{ "sessions list", NULL, ctl_print_sessions },
	{ "sessions kick", "JID", ctl_print_kicked },
	{ "users list", NULL, ctl_print_users },
	{ "roster show", "USER", ctl_print_roster },
	{ "queues", NULL, ctl_print_queues },
	{ "certs show", NULL, ctl_print_cert },
	{ "certs reload", NULL, ctl_print_reloaded },
	{ "paths", NULL, ctl_print_paths_cmd },
	{ "guard", NULL, ctl_print_guard },
	{ "workers drain", "N", ctl_print_drained },	/* before "workers" */
	{ "workers undrain", "N", ctl_print_drained },
	{ "workers", NULL, ctl_print_workers },
	{ "cluster status", NULL, ctl_print_cluster },
};

#define CTL_NCMDS (sizeof(ctl_cmds) / sizeof(ctl_cmds[0]))

bool ctl_online_is_command(const char *word)
{
	for (size_t i = 0; i < CTL_NCMDS; i++) {
		size_t n = strcspn(ctl_cmds[i].name, " ");

		if (strlen(word) == n && strncmp(ctl_cmds[i].name, word, n) == 0)
			return true;
	}
	return false;
}

/* ---- The config file ---- */

struct ctl_config {
	char **state_dir, **control_socket, **storage;
	int err;
};

static int ctl_config_key(void *user, const char *section, const char *name, const char *value)
{
	struct ctl_config *cc = user;
	char **dst = strcmp(name, "state_dir") == 0 ? cc->state_dir
		     : strcmp(name, "control_socket") == 0 ? cc->control_socket
		     : strcmp(name, "storage") == 0 ? cc->storage : NULL;

	if (!dst || section[0])
		return 1;	/* the daemon checks the rest */
	free(*dst);
	*dst = strdup(value);
	if (!*dst)
		cc->err = -ENOMEM;
	return 1;
}

int ctl_read_config(const char *file, char **state_dir, char **control_socket, char **storage)
{
	struct ctl_config cc = { state_dir, control_socket, storage, 0 };
	FILE *f = fopen(file, "r");
	int ret;

	if (!f) {
		ret = -errno;
		fprintf(stderr, "stanzactl: cannot read config file %s: %s\n", file, strerror(-ret));
		return ret;
	}
	ret = ini_parse_file(f, ctl_config_key, &cc);
	fclose(f);
	if (ret != 0) {
		fprintf(stderr, "stanzactl: %s:%d: syntax error (expected key = value)\n", file, ret);
		return -EINVAL;
	}
	return cc.err;
}

/* ---- The socket ---- */

static long long ctl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for `events` until the deadline. 0 or -ETIMEDOUT / -errno. */
static int ctl_wait(int fd, short events, long long deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	long long left = deadline - ctl_now_ms();
	int n;

	if (left <= 0)
		return -ETIMEDOUT;
	do
		n = poll(&p, 1, (int)left);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == 0 ? -ETIMEDOUT : 0;
}

int ctl_online_request(const char *socket_path, const char *line, char **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	long long deadline = ctl_now_ms() + CTL_ONLINE_TIMEOUT_MS;
	size_t len = 0, cap = 4096, sent = 0, want = strlen(line);
	char *buf = NULL;
	int fd, ret;

	*out = NULL;
	if (strlen(socket_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, socket_path, strlen(socket_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		goto out;
	}
	while (sent < want) {
		ssize_t n = send(fd, line + sent, want - sent, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EAGAIN) {
			ret = ctl_wait(fd, POLLOUT, deadline);
			if (ret < 0)
				goto out;
			continue;
		}
		if (n < 0 && errno != EINTR) {
			ret = -errno;
			goto out;
		}
		sent += n > 0 ? (size_t)n : 0;
	}
	buf = malloc(cap);
	if (!buf) {
		ret = -ENOMEM;
		goto out;
	}
	/* The daemon closes after its one-line answer: read to the end. */
	for (;;) {
		ssize_t n;

		if (len + 1 == cap) {
			char *nb;

			if (cap >= CTL_ANSWER_MAX) {
				ret = -EMSGSIZE;
				goto out;
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				ret = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
		ret = ctl_wait(fd, POLLIN, deadline);
		if (ret < 0)
			goto out;
		n = recv(fd, buf + len, cap - len - 1, MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	*out = buf;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	close(fd);
	return ret;
}

/* One line saying why the daemon could not be asked. Returns 1. */
static int ctl_connect_error(const char *path, int err)
{
	switch (err) {
	case -ENOENT:
	case -ECONNREFUSED:
		fprintf(stderr, "stanzactl: the daemon is not running (no control socket answers at "
			"%s)\n", path);
		break;
	case -EACCES:
	case -EPERM:
		fprintf(stderr, "stanzactl: permission denied on the control socket %s (run as the "
			"daemon's user, root, or a member of its control_group)\n", path);
		break;
	case -ETIMEDOUT:
		fprintf(stderr, "stanzactl: the daemon did not answer within %d s (%s)\n",
			CTL_ONLINE_TIMEOUT_MS / 1000, path);
		break;
	default:
		fprintf(stderr, "stanzactl: cannot talk to the daemon at %s: %s\n", path,
			strerror(-err));
		break;
	}
	return 1;
}

int ctl_online_run(const char *socket_path, bool json, int n, char **words)
{
	const struct ctl_online_cmd *cmd = NULL;
	char line[1100], *answer = NULL;
	json_error_t jerr;
	json_t *root, *result;
	int words_in_name = 1, ret;

	for (size_t i = 0; i < CTL_NCMDS && !cmd; i++) {
		const char *sp = strchr(ctl_cmds[i].name, ' ');

		if (!sp && strcmp(ctl_cmds[i].name, words[0]) == 0) {
			cmd = &ctl_cmds[i];
			words_in_name = 1;
		} else if (sp && n >= 2 && strlen(words[0]) == (size_t)(sp - ctl_cmds[i].name) &&
			   strncmp(ctl_cmds[i].name, words[0], (size_t)(sp - ctl_cmds[i].name)) == 0 &&
			   strcmp(sp + 1, words[1]) == 0) {
			cmd = &ctl_cmds[i];
			words_in_name = 2;
		}
	}
	if (!cmd) {
		fprintf(stderr, "stanzactl: unknown command '%s%s%s'\n" CTL_ONLINE_SYNOPSIS
			"Try 'stanzactl --help' for more.\n", words[0], n >= 2 ? " " : "",
			n >= 2 ? words[1] : "");
		return 2;
	}
	if (n != words_in_name + (cmd->arg ? 1 : 0)) {
		fprintf(stderr, "stanzactl: %s: %s\n", cmd->name,
			n < words_in_name + (cmd->arg ? 1 : 0) ? "missing argument" : "too many arguments");
		return 2;
	}
	if (cmd->arg && (strlen(words[n - 1]) > 1000 || strpbrk(words[n - 1], " \t\r\n"))) {
		fprintf(stderr, "stanzactl: %s: invalid %s '%s'\n", cmd->name, cmd->arg, words[n - 1]);
		return 1;
	}
	snprintf(line, sizeof(line), "%s%s%s\n", cmd->name, cmd->arg ? " " : "",
		 cmd->arg ? words[n - 1] : "");
	ret = ctl_online_request(socket_path, line, &answer);
	if (ret < 0)
		return ctl_connect_error(socket_path, ret);
	if (!answer[0]) {
		free(answer);
		fprintf(stderr, "stanzactl: the daemon closed the connection without an answer (%s)\n",
			socket_path);
		return 1;
	}
	root = json_loads(answer, 0, &jerr);
	free(answer);
	if (!root || !json_is_object(root)) {
		fprintf(stderr, "stanzactl: the daemon's answer is not JSON (%s)\n",
			root ? "not an object" : jerr.text);
		json_decref(root);
		return 1;
	}
	if (!ctl_bool(root, "ok")) {
		fprintf(stderr, "stanzactl: %s\n", ctl_str(root, "error"));
		json_decref(root);
		return 1;
	}
	result = json_object_get(root, "result");
	if (json) {
		char *text = json_dumps(result, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

		if (text)
			printf("%s\n", text);
		free(text);
	} else {
		cmd->print(result);
	}
	json_decref(root);
	return 0;
}
