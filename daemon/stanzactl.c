/* SPDX-License-Identifier: MIT */
/*
 * stanzactl: the control CLI. Works on the store directly (the synchronous
 * layer of storage.h), so it runs whether or not the daemon does; SQLite's
 * locking and busy timeout let both use the file at once (PostgreSQL, with
 * --storage, lets both connect).
 *
 *   stanzactl [--state-dir DIR] [--storage STORE] user add|del|passwd USER
 *   stanzactl [--state-dir DIR] [--storage STORE] user list
 *
 * Passwords never come from the command line (other users see it in ps):
 * from the terminal with echo off, asked twice, or from the first line of
 * stdin when that is not a terminal (for scripts).
 *
 * Exit status: 0 success, 1 the operation failed, 2 usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "control.h"
#include "ctl_online.h"
#include "db.h"
#include "device.h"
#include "jid.h"
#include "kmod_genl.h"
#include "log.h"
#include "scram.h"
#include "statedir.h"
#include "storage.h"

#define CTL_EXIT_OK	0
#define CTL_EXIT_FAIL	1
#define CTL_EXIT_USAGE	2

/* Longest line of a reason from storage_open_why(). */
#define CTL_WHY_MAX	1024

#define CTL_SYNOPSIS \
	"usage: stanzactl [--state-dir DIR] [--storage STORE] user add USER\n" \
	"       stanzactl [--state-dir DIR] [--storage STORE] user del USER\n" \
	"       stanzactl [--state-dir DIR] [--storage STORE] user passwd USER\n" \
	"       stanzactl [--state-dir DIR] [--storage STORE] user list\n" \
	"       stanzactl kmod status|sockets|reset|set KEY VALUE...\n" \
	"       stanzactl [--state-dir DIR] [--storage STORE] device import FILE.csv | list |" \
	" revoke FINGERPRINT\n" \
	CTL_ONLINE_SYNOPSIS

/*
 * The plural and long names operators guess first (devices, rosters,
 * certificates, kernel) name the same commands as the short ones.
 */
static const char *ctl_canonical_command(const char *word)
{
	static const struct {
		const char *alias, *name;
	} aliases[] = {
		{ "devices", "device" },
		{ "rosters", "roster" },
		{ "certificates", "certs" },
		{ "kernel", "paths" },
	};

	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (strcmp(word, aliases[i].alias) == 0)
			return aliases[i].name;
	return word;
}

static const char ctl_usage[] =
	CTL_SYNOPSIS
	"\n"
	"Manages a stanzad server. The user commands work on its store, whether\n"
	"or not the daemon runs; the others ask the running daemon through its\n"
	"control socket (STATE_DIR/" CONTROL_SOCKET_NAME ", or control_socket in its config).\n"
	"\n"
	"  --state-dir DIR   the server's state directory (default " STORAGE_DEFAULT_STATE_DIR ")\n"
	"  --storage STORE   the server's store: sqlite (in STATE_DIR, the default) or\n"
	"                    postgresql://USER@HOST:PORT/DB\n"
	"  --config FILE     read state_dir, storage and control_socket from the daemon's config\n"
	"  --socket PATH     the control socket (default STATE_DIR/" CONTROL_SOCKET_NAME ")\n"
	"  --json            print the daemon's answer as JSON (for scripts)\n"
	"  -h, --help        show this help\n"
	"\n"
	"status: version, uptime, connections and sessions per worker, storage\n"
	"queue, kernel paths. sessions list / kick JID (a bare JID: every\n"
	"session). users list:\n"
	"accounts and whether they are online. roster show USER. queues: stored\n"
	"offline messages per account. certs show / reload: the certificate in\n"
	"use; reload reads cert and key again for new connections. paths: the\n"
	"kernel paths (io_uring, kTLS, offload module, XDP guard, sockops,\n"
	"steering), active or why not. guard: the XDP guard's counters.\n"
	"workers: connections, drain state and steered connections per worker;\n"
	"workers drain N stops sending worker N new connections (undrain N ends\n"
	"that), e.g. before a graceful restart.\n"
	"cluster status: this node, its Redis connection, the cluster's nodes\n"
	"(alive or dead) with their sessions and inbound stream backlog, and\n"
	"the measured inter-node delivery lag.\n"
	"devices, rosters, certificates and kernel are other names of device,\n"
	"roster, certs and paths.\n"
	"\n"
	"USER is a username or a bare JID (user@domain); only the username is\n"
	"used. Passwords are read from the terminal (asked twice, not echoed), or\n"
	"from the first line of standard input when that is not a terminal.\n"
	"\n"
	"Exit status: 0 success, 1 the operation failed (or the daemon is not\n"
	"running), 2 usage error.\n";

static int ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prints what is wrong, then the usage text. Returns CTL_EXIT_USAGE. */
static int ctl_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("stanzactl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n" CTL_SYNOPSIS "Try 'stanzactl --help' for more.\n", stderr);
	return CTL_EXIT_USAGE;
}

/* ---- Usernames ---- */

/*
 * Normalizes a username as the server does at login (Nodeprep via
 * jid_prep_local), accepting a bare JID "user@domain" too: the localpart
 * is taken, the domain only checked for form (stanzactl does not know the
 * configured domain). 0 or -EINVAL.
 */
static int ctl_username(const char *in, char *out, size_t out_size)
{
	struct jid *j;
	int ret;

	if (!strchr(in, '@'))
		return jid_prep_local(out, out_size, in, strlen(in));

	/* struct jid is 3 KiB: keep it off the stack. */
	j = malloc(sizeof(*j));
	if (!j)
		return -ENOMEM;
	ret = jid_parse(j, in, strlen(in));
	if (!ret && (!jid_has_local(j) || jid_has_resource(j)))
		ret = -EINVAL;
	if (!ret && j->local_len >= out_size)
		ret = -EINVAL;
	if (!ret) {
		memcpy(out, j->buf, j->local_len);
		out[j->local_len] = '\0';
	}
	free(j);
	return ret;
}

/* ---- Passwords ---- */

static struct termios ctl_saved_tty;
static volatile sig_atomic_t ctl_tty_changed;

/* Puts echo back if the user interrupts at the prompt, then dies as asked. */
static void ctl_restore_tty_signal(int sig)
{
	if (ctl_tty_changed)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &ctl_saved_tty);
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * Reads one line from fd with read(2), byte by byte, so no stdio buffer
 * keeps a copy of the password. Drops the line end (\n, \r\n). Returns the
 * length, -E2BIG when the line does not fit in SCRAM_PASSWORD_MAX bytes
 * (the rest of the line is consumed), or -errno.
 */
static ssize_t ctl_read_line(int fd, char *buf, size_t size)
{
	size_t len = 0;
	bool too_long = false;

	for (;;) {
		char c;
		ssize_t n = read(fd, &c, 1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0 || c == '\n')
			break;
		if (len + 1 >= size || len >= SCRAM_PASSWORD_MAX) {
			too_long = true;
			continue;
		}
		buf[len++] = c;
	}
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	if (too_long) {
		explicit_bzero(buf, size);
		return -E2BIG;
	}
	return (ssize_t)len;
}

/* Prompts on the terminal with echo off. Same returns as ctl_read_line. */
static ssize_t ctl_prompt(const char *prompt, char *buf, size_t size)
{
	struct termios quiet;
	ssize_t n;

	fputs(prompt, stderr);
	fflush(stderr);
	quiet = ctl_saved_tty;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	ctl_tty_changed = 1;
	if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) < 0) {
		ctl_tty_changed = 0;
		return -errno;
	}
	n = ctl_read_line(STDIN_FILENO, buf, size);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &ctl_saved_tty);
	ctl_tty_changed = 0;
	return n;
}

/*
 * Gets a new password into pw (size SCRAM_PASSWORD_MAX + 1): twice from a
 * terminal, or the first line of a pipe. Prints why on failure and
 * returns -1; the caller wipes pw either way.
 */
static int ctl_read_password(const char *user, char *pw, size_t size)
{
	char again[SCRAM_PASSWORD_MAX + 1];
	char prompt[64 + STORAGE_USER_MAX];
	struct sigaction sa = { .sa_handler = ctl_restore_tty_signal };
	ssize_t n;
	int ret = -1;

	if (!isatty(STDIN_FILENO)) {
		n = ctl_read_line(STDIN_FILENO, pw, size);
		goto check;
	}
	if (tcgetattr(STDIN_FILENO, &ctl_saved_tty) < 0) {
		fprintf(stderr, "stanzactl: cannot read the terminal: %s\n", strerror(errno));
		return -1;
	}
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	snprintf(prompt, sizeof(prompt), "New password for %s: ", user);
	n = ctl_prompt(prompt, pw, size);
	if (n > 0) {
		ssize_t m = ctl_prompt("Retype new password: ", again, sizeof(again));

		if (m >= 0 && (m != n || memcmp(pw, again, (size_t)n) != 0)) {
			fputs("stanzactl: passwords do not match\n", stderr);
			goto out_wipe;
		}
		if (m < 0)
			n = m;
	}
check:
	if (n == -E2BIG)
		fprintf(stderr, "stanzactl: password too long (at most %d bytes)\n",
			SCRAM_PASSWORD_MAX);
	else if (n < 0)
		fprintf(stderr, "stanzactl: cannot read password: %s\n", strerror((int)-n));
	else if (n == 0)
		fputs("stanzactl: empty password\n", stderr);
	else
		ret = 0;
out_wipe:
	explicit_bzero(again, sizeof(again));
	return ret;
}

/*
 * Reads a password and derives the credentials to store. The password
 * lives only in this frame and is wiped before return. 0 or -1 (printed).
 */
static int ctl_new_creds(const char *user, struct scram_creds *c)
{
	char pw[SCRAM_PASSWORD_MAX + 1];
	int ret;

	ret = ctl_read_password(user, pw, sizeof(pw));
	if (!ret) {
		ret = scram_creds_from_password(pw, 0, c);
		if (ret == -EINVAL)
			fputs("stanzactl: password refused: it contains characters"
			      " SASLprep prohibits (control or unassigned characters)\n", stderr);
		else if (ret)
			fprintf(stderr, "stanzactl: cannot derive keys: %s\n", strerror(-ret));
		ret = ret ? -1 : 0;
	}
	explicit_bzero(pw, sizeof(pw));
	return ret;
}

/* ---- Commands ---- */

/* Prints why a storage call failed. Returns CTL_EXIT_FAIL. */
static int ctl_storage_error(const char *what, const char *user, int err)
{
	if (err == -EBUSY)
		fprintf(stderr, "stanzactl: cannot %s user '%s': the store stayed locked"
			" by another process for %d ms; try again\n", what, user,
			STORAGE_BUSY_TIMEOUT_MS);
	else
		fprintf(stderr, "stanzactl: cannot %s user '%s': %s\n", what, user,
			strerror(-err));
	return CTL_EXIT_FAIL;
}

/*
 * The commands. Each prints one line (stdout on success, stderr on
 * failure) and returns the exit status. `user` is already normalized.
 */
static int ctl_user_add(struct storage *st, const char *user)
{
	struct scram_creds c;
	int ret;

	/* Say so before asking for a password that could not be used. */
	ret = storage_account_get(st, user, &c);
	scram_creds_wipe(&c);
	if (ret == 0) {
		fprintf(stderr, "stanzactl: user '%s' already exists\n", user);
		return CTL_EXIT_FAIL;
	}
	if (ret != -ENOENT)
		return ctl_storage_error("look up", user, ret);
	if (ctl_new_creds(user, &c))
		return CTL_EXIT_FAIL;
	ret = storage_account_create(st, user, &c);
	scram_creds_wipe(&c);
	if (ret == -EEXIST) {
		/* Created meanwhile, by the daemon (in-band registration). */
		fprintf(stderr, "stanzactl: user '%s' already exists\n", user);
		return CTL_EXIT_FAIL;
	}
	if (ret)
		return ctl_storage_error("add", user, ret);
	printf("user '%s' added\n", user);
	return CTL_EXIT_OK;
}

/* Replaces the credentials; sessions already open stay open. */
static int ctl_user_passwd(struct storage *st, const char *user)
{
	struct scram_creds c;
	int ret;

	ret = storage_account_get(st, user, &c);
	scram_creds_wipe(&c);
	if (ret == -ENOENT) {
		fprintf(stderr, "stanzactl: user '%s' does not exist\n", user);
		return CTL_EXIT_FAIL;
	}
	if (ret)
		return ctl_storage_error("look up", user, ret);
	if (ctl_new_creds(user, &c))
		return CTL_EXIT_FAIL;
	ret = storage_account_set_creds(st, user, &c);
	scram_creds_wipe(&c);
	if (ret == -ENOENT) {
		fprintf(stderr, "stanzactl: user '%s' does not exist\n", user);
		return CTL_EXIT_FAIL;
	}
	if (ret)
		return ctl_storage_error("change the password of", user, ret);
	printf("password of user '%s' changed\n", user);
	return CTL_EXIT_OK;
}

/*
 * Deletes the account and everything it owns (ON DELETE CASCADE). A
 * running daemon notices at the next login, not for sessions already open.
 */
static int ctl_user_del(struct storage *st, const char *user)
{
	int ret = storage_account_delete(st, user);

	if (ret == -ENOENT) {
		fprintf(stderr, "stanzactl: user '%s' does not exist\n", user);
		return CTL_EXIT_FAIL;
	}
	if (ret)
		return ctl_storage_error("delete", user, ret);
	printf("user '%s' deleted\n", user);
	return CTL_EXIT_OK;
}

/* One name per line, nothing else: easy to use from scripts. */
static int ctl_print_user(void *arg, const char *user)
{
	return puts(user) < 0;
}

static int ctl_user_list(struct storage *st)
{
	int ret = storage_account_list(st, ctl_print_user, NULL);

	if (ret) {
		fprintf(stderr, "stanzactl: cannot list users: %s\n", strerror(-ret));
		return CTL_EXIT_FAIL;
	}
	return CTL_EXIT_OK;
}

/* `user` subcommands, looked up by name from a table. */
enum ctl_cmd {
	CTL_CMD_ADD = 0,
	CTL_CMD_DEL,
	CTL_CMD_PASSWD,
	CTL_CMD_LIST,
};

static const struct {
	const char *name;
	enum ctl_cmd cmd;
	bool takes_user;
} ctl_user_cmds[] = {
	{ "add", CTL_CMD_ADD, true },
	{ "del", CTL_CMD_DEL, true },
	{ "passwd", CTL_CMD_PASSWD, true },
	{ "list", CTL_CMD_LIST, false },
};

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "state-dir", required_argument, NULL, 'd' },
		{ "config", required_argument, NULL, 'c' },
		{ "storage", required_argument, NULL, 'S' },
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *state_dir = STORAGE_DEFAULT_STATE_DIR;
	const char *socket_path = NULL, *config_file = NULL;
	/* Static: they live as long as the process (state_dir may point here). */
	static char *cfg_state_dir, *cfg_socket, *cfg_storage;
	const char *storage = NULL;
	bool json = false, state_dir_given = false;
	char user[STORAGE_USER_MAX + 1] = "";
	char why[CTL_WHY_MAX];
	struct storage *st;
	size_t ci;
	int opt, ret;

	/*
	 * Info and warning lines (store created, migrated, busy) are for the
	 * daemon's log; stanzactl says what happened in its own words.
	 */
	log_threshold = LOG_LVL_ERROR;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			if (!optarg[0])
				return ctl_usage_error("--state-dir needs a directory");
			state_dir = optarg;
			state_dir_given = true;
			break;
		case 'c':
			config_file = optarg;
			break;
		case 'S':
			if (!db_storage_ok(optarg))
				return ctl_usage_error("--storage must be sqlite or a postgresql:// URI");
			storage = optarg;
			break;
		case 's':
			if (!optarg[0])
				return ctl_usage_error("--socket needs a path");
			socket_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'h':
			fputs(ctl_usage, stdout);
			return CTL_EXIT_OK;
		default:
			if (optopt == 'd')
				return ctl_usage_error("--state-dir needs a directory");
			if (optopt == 's' || optopt == 'c' || optopt == 'S')
				return ctl_usage_error("%s needs a value", argv[optind - 1]);
			return ctl_usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}

	argc -= optind;
	argv += optind;
	if (argc < 1)
		return ctl_usage_error("missing command");
	argv[0] = (char *)ctl_canonical_command(argv[0]);
	/* The offload module's control plane: the kernel, not the store (kmod_ctl.c). */
	if (strcmp(argv[0], "kmod") == 0)
		return kmod_ctl_main(argc, argv);
	/* The daemon's config names the state directory and the socket (flags win). */
	if (config_file &&
	    ctl_read_config(config_file, &cfg_state_dir, &cfg_socket, &cfg_storage) < 0)
		return CTL_EXIT_FAIL;
	if (cfg_state_dir && !state_dir_given)
		state_dir = cfg_state_dir;
	if (cfg_storage && !storage) {
		if (!db_storage_ok(cfg_storage)) {
			fprintf(stderr, "stanzactl: storage in %s must be sqlite or a postgresql:// URI\n",
				config_file);
			return CTL_EXIT_FAIL;
		}
		storage = cfg_storage;
	}
	/* The running daemon's state, over its control socket (ctl_online.c). */
	if (ctl_online_is_command(argv[0])) {
		char path[PATH_MAX];

		if (!socket_path && cfg_socket && strcmp(cfg_socket, "off") == 0) {
			fprintf(stderr, "stanzactl: the control socket is off in %s\n", config_file);
			return CTL_EXIT_FAIL;
		}
		if (!socket_path && cfg_socket)
			socket_path = cfg_socket;
		if (!socket_path) {
			snprintf(path, sizeof(path), "%s/%s", state_dir, CONTROL_SOCKET_NAME);
			socket_path = path;
		}
		ret = ctl_online_run(socket_path, json, argc, argv);
		if (fflush(stdout) != 0 && ret == CTL_EXIT_OK) {
			fprintf(stderr, "stanzactl: cannot write output: %s\n", strerror(errno));
			ret = CTL_EXIT_FAIL;
		}
		return ret;
	}
	/* Device fleets: enrollment in the store, online state from the daemon (ctl_device.c). */
	if (strcmp(argv[0], "device") == 0)
		return ctl_device_main(storage, state_dir, socket_path ? socket_path : cfg_socket,
				       json, argc - 1, argv + 1);
	if (strcmp(argv[0], "user") != 0)
		return ctl_usage_error("unknown command '%s'", argv[0]);
	if (argc < 2)
		return ctl_usage_error("missing user subcommand (add, del, passwd, list)");
	for (ci = 0; ci < sizeof(ctl_user_cmds) / sizeof(ctl_user_cmds[0]); ci++) {
		if (strcmp(argv[1], ctl_user_cmds[ci].name) == 0)
			break;
	}
	if (ci == sizeof(ctl_user_cmds) / sizeof(ctl_user_cmds[0]))
		return ctl_usage_error("unknown user subcommand '%s'", argv[1]);
	if (ctl_user_cmds[ci].takes_user && argc != 3)
		return ctl_usage_error("user %s: %s", argv[1],
				       argc < 3 ? "missing USER" : "too many arguments");
	if (!ctl_user_cmds[ci].takes_user && argc != 2)
		return ctl_usage_error("user %s: too many arguments", argv[1]);

	/* Validate everything before touching the store. */
	if (ctl_user_cmds[ci].takes_user) {
		ret = ctl_username(argv[2], user, sizeof(user));
		if (ret) {
			fprintf(stderr, "stanzactl: invalid username '%s'\n", argv[2]);
			return CTL_EXIT_FAIL;
		}
	}

	/* Run as root, act as the server's user: files it creates stay the server's. */
	ret = db_is_pg_uri(storage) ? 0 : statedir_adopt_owner(state_dir, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "stanzactl: %s\n", why);
		return CTL_EXIT_FAIL;
	}
	ret = storage_open_at(&st, storage, state_dir, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "stanzactl: cannot open the store: %s\n", why);
		return CTL_EXIT_FAIL;
	}
	switch (ctl_user_cmds[ci].cmd) {
	case CTL_CMD_ADD:
		ret = ctl_user_add(st, user);
		break;
	case CTL_CMD_DEL:
		ret = ctl_user_del(st, user);
		break;
	case CTL_CMD_PASSWD:
		ret = ctl_user_passwd(st, user);
		break;
	case CTL_CMD_LIST:
		ret = ctl_user_list(st);
		break;
	default:
		ret = CTL_EXIT_USAGE;
		break;
	}
	storage_close(st);
	/* A full disk or closed pipe on stdout is a failure, not a success. */
	if (fflush(stdout) != 0 && ret == CTL_EXIT_OK) {
		fprintf(stderr, "stanzactl: cannot write output: %s\n", strerror(errno));
		ret = CTL_EXIT_FAIL;
	}
	return ret;
}
