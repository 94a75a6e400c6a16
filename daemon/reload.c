/* SPDX-License-Identifier: MIT */
/*
 * Configuration reload on SIGHUP (see reload.h).
 *
 * Safety of applying a key in place: the event loop runs on one thread
 * and reads these fields where it uses them; the reload runs on that same
 * thread between two events, so no handler sees a half-applied
 * configuration. The storage thread never reads the keys listed live
 * (their users build their storage requests on the loop).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "reload.h"
#include "server.h"
#include "tls_certs.h"
#include "worker.h"

/*
 * Keys a reload applies. Everything else that differs needs a restart:
 * listeners and addresses, domain, state_dir, storage, workers, services that are
 * set up at startup (muc, pubsub, upload, websocket, s2s, components),
 * kTLS, the XML parser limits (built into the parser pool), and sizes
 * that existing rooms and nodes were made with.
 */
static const char *const reload_live_keys[] = {
	"log_level", "cert", "key", "registration", "require_tls", "admin",
	"adhoc_timeout", "adhoc_max_sessions",
	"max_stanza_bytes_preauth", "max_output_bytes", "max_connections",
	"max_auth_failures", "max_resources", "auth_timeout", "idle_timeout", "ping_timeout",
	"max_blocklist_items", "max_csi_held_presence", "max_csi_held_bytes",
	"sm_resume_timeout", "sm_max_unacked", "sm_max_unacked_bytes",
	"max_vcard_bytes", "max_private_bytes", "max_roster_items", "max_offline_messages",
	"mam_default", "mam_retention_days", "max_mam_messages",
	"max_muc_occupants", "max_muc_history",
	"max_pubsub_item_bytes", "http_request_timeout", "http_idle_timeout",
	"upload_max_bytes", "upload_quota_bytes", "upload_expire_days", "upload_slot_timeout",
	"upload_allowed_types",
	/* abuse.c */
	"max_auth_failures_account", "max_auth_failures_source", "auth_failure_window",
	"auth_lockout_time", "max_preauth_per_ip", "stanza_timeout",
	"session_stanza_rate", "session_stanza_burst", "session_byte_rate", "session_byte_burst",
};

/* Keys that are not settings of the server itself. */
static const char *const reload_ignored_keys[] = {
	"config",
};

static int reload_argc;
static char **reload_argv;

void reload_set_args(int argc, char **argv)
{
	reload_argc = argc;
	reload_argv = argv;
}

static bool reload_in(const char *key, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], key) == 0)
			return true;
	return false;
}

int reload_key_is_live(const char *key)
{
	return reload_in(key, reload_live_keys,
			 sizeof(reload_live_keys) / sizeof(reload_live_keys[0]));
}

/* Appends key to a comma-separated list in buf (truncation is marked). */
static void reload_note(char *buf, size_t size, const char *key)
{
	size_t len = strlen(buf);

	if (len + strlen(key) + 2 >= size) {
		if (len + 4 < size && !strstr(buf, "..."))
			strcat(buf, ",...");
		return;
	}
	snprintf(buf + len, size - len, "%s%s", len ? "," : "", key);
}

/*
 * Settings the daemon derived at startup rather than read: an unset
 * max_connections comes from the fd limit, an unset listen_http default
 * may have been dropped because its port was busy. The new configuration
 * keeps the running values there, so they do not look changed.
 */
static void reload_keep_derived(const struct config *cur, struct config *next)
{
	if (!next->max_connections)
		next->max_connections = cur->max_connections;
	if (!next->listen_http.set && !cur->listen_http.set) {
		size_t n = config_option_count();

		for (size_t i = 0; i < n; i++)
			if (strcmp(config_option_key(i), "listen_http") == 0)
				config_option_copy(next, cur, i);
	}
}

/* Reads the certificate files again: renewed certificates keep their paths. */
static void reload_certificate(struct server *srv)
{
	char cert[PATH_MAX], key[PATH_MAX], why[512];
	struct tls_cert_info ci;
	int ret;

	if (!srv->tls_starttls)
		return;
	snprintf(cert, sizeof(cert), "%s", config_cert_path(srv->cfg));
	snprintf(key, sizeof(key), "%s", config_key_path(srv->cfg));
	ret = tls_certs_reload(srv->tls_starttls, cert, key, why, sizeof(why));
	if (ret < 0) {
		log_warn("tls.reload_failed", "cert=%s key=%s err=\"%s\" msg=\"the running "
			 "certificate is unchanged\"", cert, key, why);
		return;
	}
	if (tls_certs_describe(srv->tls_starttls, &ci) == 0)
		log_info("tls.reload", "cert=%s sha256=%s not_after=%s", cert, ci.sha256,
			 ci.not_after);
}

void reload_config(struct worker *w)
{
	struct server *srv = w->srv;
	struct config *cur = srv->cfg, next;
	char applied[512] = "", restart[512] = "";
	size_t n = config_option_count();
	enum log_level lvl;
	int ret;

	if (!reload_argv) {
		log_warn("config.reload_failed", "msg=\"no command line to reload from\"");
		return;
	}
	/* config_load prints one line naming the problem to stderr. */
	ret = config_load(&next, reload_argc, reload_argv);
	if (ret != 0) {
		config_free(&next);
		log_error("config.reload_failed", "file=%s msg=\"the configuration does not load "
			  "(see the line above); nothing changed\"",
			  cur->config_file ? cur->config_file : "-");
		return;
	}
	reload_keep_derived(cur, &next);
	for (size_t i = 0; i < n; i++) {
		const char *key = config_option_key(i);

		if (reload_in(key, reload_ignored_keys, sizeof(reload_ignored_keys) /
			      sizeof(reload_ignored_keys[0])) || !config_option_differs(cur, &next, i))
			continue;
		if (!reload_key_is_live(key)) {
			reload_note(restart, sizeof(restart), key);
			continue;
		}
		if (config_option_copy(cur, &next, i) < 0) {
			log_error("config.reload_failed", "key=%s msg=\"out of memory\"", key);
			continue;
		}
		reload_note(applied, sizeof(applied), key);
	}
	config_free(&next);
	if (log_level_parse(cur->log_level, &lvl) == 0)
		log_threshold = lvl;
	if (cur->max_stanza_bytes_preauth > cur->max_stanza_bytes)
		cur->max_stanza_bytes_preauth = cur->max_stanza_bytes;
	reload_certificate(srv);
	log_info("config.reload", "file=%s applied=%s needs_restart=%s",
		 cur->config_file ? cur->config_file : "-", applied[0] ? applied : "none",
		 restart[0] ? restart : "none");
	if (restart[0])
		log_warn("config.restart_needed", "keys=%s msg=\"these changes take effect at the "
			 "next start (a restart hands the listeners over without dropping "
			 "connections)\"", restart);
}
