/* SPDX-License-Identifier: MIT */
/*
 * The operations keys: their validation (config.c calls it once every
 * source is applied) and the log setup at startup.
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "ops.h"

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
	if (cfg->control_group && !getgrnam(cfg->control_group)) {
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
