/* SPDX-License-Identifier: MIT */
/*
 * The operations keys: their validation (config.c calls it once every
 * source is applied) and the log setup at startup.
 */
#include <errno.h>
#include <grp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"

/*
 * Whether a group exists. getgrnam_r: a reload validates the new
 * configuration on worker 0 while other threads run, and getgrnam's
 * static result would be shared with any of them.
 */
static bool ops_group_exists(const char *name)
{
	struct group gr, *res = NULL;
	size_t size = 16384;
	char *buf = NULL;
	int ret;

	/* Groups with many members need more room: ERANGE says so. */
	do {
		char *b = realloc(buf, size);

		if (!b)
			break;
		buf = b;
		ret = getgrnam_r(name, &gr, buf, size, &res);
		size *= 2;
	} while (ret == ERANGE && size <= (1u << 24));
	free(buf);
	return res != NULL;
}

int config_validate_ops(struct config *cfg)
{
	if (metrics_config_check(cfg) < 0)
		return -EINVAL;
	if (cfg->log_target && log_target_parse(cfg->log_target, NULL) < 0) {
		fprintf(stderr, "stanzad: log_target '%s' must be auto, stderr or journal\n",
			cfg->log_target);
		return -EINVAL;
	}
	if (cfg->control_socket && strcmp(cfg->control_socket, "off") != 0 &&
	    cfg->control_socket[0] != '/') {
		fprintf(stderr, "stanzad: control_socket '%s' must be an absolute path or off\n",
			cfg->control_socket);
		return -EINVAL;
	}
	/* A typo here would leave the operators' group locked out: say so now. */
	if (cfg->control_group && !ops_group_exists(cfg->control_group)) {
		fprintf(stderr, "stanzad: control_group '%s' is not a group on this system\n",
			cfg->control_group);
		return -EINVAL;
	}
	return 0;
}

void ops_log_open(const struct config *cfg)
{
	enum log_target t = LOG_TARGET_AUTO;
	int ret;

	if (cfg->log_target)
		log_target_parse(cfg->log_target, &t);
	ret = log_open(t, cfg->log_rate_limit);
	/* Still on stderr: say why there (the journal asked for is not reachable). */
	if (ret < 0)
		log_warn("log.journal_unavailable", "socket=%s err=\"%s\" msg=\"logging to stderr\"",
			 LOG_JOURNAL_SOCKET, strerror(-ret));
}
