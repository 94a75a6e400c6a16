/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: configuration file and flags (daemon/config.c).
 *
 * Input layout:
 *   byte 0   bit 0: pass the file as "--config PATH", bit 1: as
 *            "--config=PATH" (both: twice), bit 2: put it after the flags
 *   then     the config file's bytes, up to "\0\0\0"
 *   then     argv[1..] separated by NUL bytes (at most 32)
 *
 * The file lives in a memfd and is named by /proc/self/fd/N. Arguments
 * cannot name other files: '/' in an argument becomes '_' and
 * config_load() runs in an empty, removed directory, so "--config NAME"
 * from the input only ever finds nothing (or ".", a directory).
 *
 * config_load() prints its errors: fuzz_quiet_logs() sends them nowhere.
 *
 * Properties checked besides the sanitizers (and leaks: config_free() is
 * called after every outcome, as main() does): the result is 0, 1 or a
 * negative errno; a loaded configuration is complete and valid (normalized
 * domain, known log level, listeners that parse, limits in range, cert
 * and key together); loading the same input twice gives the same result.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "fuzz_common.h"
#include "jid.h"
#include "log.h"

#define MAX_ARGS 32

static int conf_fd = -1;
static char conf_path[64];
/* config_load() runs in an empty, already removed directory. */
static int empty_dir_fd = -1, cwd_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/stanzad-fuzz-config.XXXXXX";

	(void)argc;
	(void)argv;
	fuzz_quiet_logs();
	conf_fd = memfd_create("stanzad-fuzz.conf", 0);
	if (conf_fd < 0 || !mkdtemp(dir)) {
		perror("fuzz_config: setup");
		abort();
	}
	empty_dir_fd = open(dir, O_RDONLY | O_DIRECTORY);
	cwd_fd = open(".", O_RDONLY | O_DIRECTORY);
	/* Removed at once: nothing can ever appear in it. */
	if (rmdir(dir) < 0 || empty_dir_fd < 0 || cwd_fd < 0) {
		perror("fuzz_config: setup");
		abort();
	}
	snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", conf_fd);
	return 0;
}

/* config_load() where a relative path from the input finds nothing. */
static int load_isolated(struct config *c, int argc, char **argv)
{
	int rc;

	if (fchdir(empty_dir_fd) < 0)
		abort();
	rc = config_load(c, argc, argv);
	if (fchdir(cwd_fd) < 0)
		abort();
	return rc;
}

static bool list_ok(const struct config_list *l)
{
	struct sockaddr_storage ss;
	unsigned len;

	if (l->n > CONFIG_MAX_LIST)
		return false;
	for (unsigned i = 0; i < l->n; i++)
		if (!l->v[i] || config_parse_addr(l->v[i], &ss, &len) < 0)
			return false;
	return true;
}

static void check_loaded(const struct config *c)
{
	char dom[JID_PART_MAX + 1];
	enum log_level lvl;

	fuzz_check(c->domain && c->state_dir && c->log_level, "missing string");
	fuzz_check(jid_prep_domain(dom, sizeof(dom), c->domain, strlen(c->domain)) == 0 &&
		   strcmp(dom, c->domain) == 0, "domain '%s' not normalized", c->domain);
	fuzz_check(log_level_parse(c->log_level, &lvl) == 0, "log level '%s'", c->log_level);
	fuzz_check(list_ok(&c->listen_c2s) && list_ok(&c->listen_c2s_tls), "bad listener");
	fuzz_check(c->listen_c2s.n + c->listen_c2s_tls.n > 0, "no listener");
	fuzz_check(!c->cert == !c->key, "cert without key");
	fuzz_check(c->workers >= 1 && c->max_stanza_bytes >= 1024 &&
		   c->max_stanza_bytes_preauth >= 1024 &&
		   c->max_stanza_bytes_preauth <= c->max_stanza_bytes &&
		   c->max_output_bytes >= 65536 && c->max_auth_failures >= 1 &&
		   c->max_resources >= 1 && c->auth_timeout >= 1 && c->ping_timeout >= 1,
		   "limit out of range");
	fuzz_check(config_cert_path(c) && config_key_path(c), "no certificate path");
}

static bool same_list(const struct config_list *a, const struct config_list *b)
{
	if (a->n != b->n || a->set != b->set)
		return false;
	for (unsigned i = 0; i < a->n; i++)
		if (strcmp(a->v[i], b->v[i]) != 0)
			return false;
	return true;
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool same_config(const struct config *a, const struct config *b)
{
	return same_str(a->domain, b->domain) && same_str(a->state_dir, b->state_dir) &&
	       same_str(a->log_level, b->log_level) && same_str(a->cert, b->cert) &&
	       same_str(a->key, b->key) && same_list(&a->listen_c2s, &b->listen_c2s) &&
	       same_list(&a->listen_c2s_tls, &b->listen_c2s_tls) && a->workers == b->workers &&
	       a->registration_open == b->registration_open && a->require_tls == b->require_tls &&
	       a->max_stanza_bytes == b->max_stanza_bytes &&
	       a->max_stanza_bytes_preauth == b->max_stanza_bytes_preauth &&
	       a->max_output_bytes == b->max_output_bytes &&
	       a->max_connections == b->max_connections &&
	       a->max_auth_failures == b->max_auth_failures &&
	       a->max_resources == b->max_resources && a->auth_timeout == b->auth_timeout &&
	       a->idle_timeout == b->idle_timeout && a->ping_timeout == b->ping_timeout;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t flags = fuzz_u8(&in);
	const uint8_t *file, *arg;
	size_t file_len = fuzz_field(&in, "\0\0\0", 3, &file);
	char *args[MAX_ARGS + 8];
	char *argv[MAX_ARGS + 8];
	char config_eq[96];
	int argc = 0, nargs = 0, rc1, rc2;
	struct config c1, c2;

	if (ftruncate(conf_fd, 0) < 0 ||
	    (file_len && pwrite(conf_fd, file, file_len, 0) != (ssize_t)file_len))
		abort();

	while (in.left && nargs < MAX_ARGS) {
		size_t n = fuzz_field(&in, "\0", 1, &arg);
		struct sockaddr_storage ss;
		unsigned sl;

		args[nargs] = fuzz_strndup(arg, n);
		for (char *p = args[nargs]; *p; p++)
			if (*p == '/')
				*p = '_';
		/* The address parser alone, on every argument. */
		(void)config_parse_addr(args[nargs], &ss, &sl);
		nargs++;
	}

	snprintf(config_eq, sizeof(config_eq), "--config=%s", conf_path);
	argv[argc++] = "stanzad";
	if (!(flags & 4)) {
		if (flags & 1) {
			argv[argc++] = "--config";
			argv[argc++] = conf_path;
		}
		if (flags & 2)
			argv[argc++] = config_eq;
	}
	for (int i = 0; i < nargs; i++)
		argv[argc++] = args[i];
	if (flags & 4) {
		if (flags & 1) {
			argv[argc++] = "--config";
			argv[argc++] = conf_path;
		}
		if (flags & 2)
			argv[argc++] = config_eq;
	}
	argv[argc] = NULL;

	rc1 = load_isolated(&c1, argc, argv);
	fuzz_check(rc1 == 0 || rc1 == 1 || (rc1 < 0 && rc1 > -4096), "config_load rc %d", rc1);
	if (rc1 == 0)
		check_loaded(&c1);
	rc2 = load_isolated(&c2, argc, argv);
	fuzz_check(rc1 == rc2, "second load gave %d, first %d", rc2, rc1);
	if (rc1 == 0)
		fuzz_check(same_config(&c1, &c2), "second load differs");
	config_free(&c1);
	config_free(&c2);
	for (int i = 0; i < nargs; i++)
		free(args[i]);
	return 0;
}
