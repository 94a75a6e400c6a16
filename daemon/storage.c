/* SPDX-License-Identifier: MIT */
/*
 * The synchronous store, on one of two engines behind db.h:
 *  - SQLite (the default, nothing to install): one connection in WAL mode
 *    with synchronous=FULL (a commit is on disk when it returns:
 *    power-loss durability is a product promise), foreign keys on, and a
 *    busy timeout so stanzactl and the daemon can share the file;
 *  - PostgreSQL (--storage postgresql://...): one libpq connection, so
 *    several nodes can share the data.
 *
 * The schema is versioned (SQLite: PRAGMA user_version; PostgreSQL: the
 * one row of stanzad_schema) and upgraded at open by one ordered list of
 * migrations for both, each in its own transaction. Every table that
 * belongs to an account references accounts(username) with ON DELETE
 * CASCADE, so deleting the account row deletes everything it owns.
 *
 * Statements are prepared once and reset after each use.
 */
#include <ctype.h>
#include <errno.h>
#include <sys/random.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "fast.h"
#include "log.h"
#include "storage.h"
#include "storage_db.h"
#include "strbuf.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* PRAGMA application_id of a stanzad database: "STNZ". */
#define STORAGE_APPLICATION_ID 0x53544e5a
/* Room for a reason given to storage_open_why() or logged. */
#define STORAGE_WHY_MAX 512

/*
 * Schema migrations, oldest first; entry i takes the store from version i
 * to i + 1. Never edit an entry that has shipped: append a new one.
 *
 * Tables added later (rosters, offline messages, archive, pubsub, ...)
 * reference accounts(username) ON DELETE CASCADE, e.g.
 *   username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE
 * and index that column, so storage_account_delete() stays one statement.
 */
static const char *const storage_migrations[] = {
	/* 1: accounts with SCRAM credentials only, never a password. */
	"CREATE TABLE accounts ("
	"  username      TEXT NOT NULL PRIMARY KEY,"
	"  iterations    INTEGER NOT NULL CHECK (iterations > 0),"
	"  salt          BLOB NOT NULL,"
	"  sha1_stored   BLOB NOT NULL CHECK (length(sha1_stored) = 20),"
	"  sha1_server   BLOB NOT NULL CHECK (length(sha1_server) = 20),"
	"  sha256_stored BLOB NOT NULL CHECK (length(sha256_stored) = 32),"
	"  sha256_server BLOB NOT NULL CHECK (length(sha256_server) = 32),"
	"  created_at    INTEGER NOT NULL"
	");",

	/*
	 * 2: the IM server's data (RFC 6121 and the everyday XEPs).
	 *  - roster_items: one row per contact (bare JID) in a user's roster;
	 *    subscription none|to|from|both, ask = outbound request pending,
	 *    approved = pre-approved inbound (RFC 6121 3.4), groups joined by
	 *    U+001F (a character XML cannot carry), version = the roster
	 *    version at which the row last changed (RFC 6121 2.6).
	 *  - roster_versions: the user's current roster version, and deleted
	 *    items kept as tombstones in roster_items (deleted = 1) so a
	 *    versioned roster get can push removals; horizon = the newest
	 *    version whose tombstones were pruned (older clients get the
	 *    whole roster).
	 *  - subscription_requests: inbound requests not yet answered, with
	 *    the original stanza, delivered when the user is next available.
	 *  - offline_messages: XEP-0160, the serialized stanza and its time.
	 *  - vcards (XEP-0054), private_xml (XEP-0049), blocklist (XEP-0191),
	 *    last_activity (XEP-0012: time and status of the last logout).
	 */
	"CREATE TABLE roster_items ("
	"  username     TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  jid          TEXT NOT NULL,"
	"  name         TEXT,"
	"  subscription TEXT NOT NULL DEFAULT 'none'"
	"               CHECK (subscription IN ('none', 'to', 'from', 'both')),"
	"  ask          INTEGER NOT NULL DEFAULT 0,"
	"  approved     INTEGER NOT NULL DEFAULT 0,"
	"  groups       TEXT NOT NULL DEFAULT '',"
	"  version      INTEGER NOT NULL DEFAULT 0,"
	"  deleted      INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (username, jid)"
	") WITHOUT ROWID;"
	"CREATE TABLE roster_versions ("
	"  username TEXT NOT NULL PRIMARY KEY REFERENCES accounts(username) ON DELETE CASCADE,"
	"  version  INTEGER NOT NULL,"
	"  horizon  INTEGER NOT NULL DEFAULT 0"
	");"
	"CREATE TABLE subscription_requests ("
	"  username   TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  jid        TEXT NOT NULL,"
	"  stanza     TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  PRIMARY KEY (username, jid)"
	") WITHOUT ROWID;"
	"CREATE TABLE offline_messages ("
	"  id         INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  username   TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  stanza     TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL"
	");"
	"CREATE INDEX offline_messages_user ON offline_messages(username, id);"
	"CREATE TABLE vcards ("
	"  username TEXT NOT NULL PRIMARY KEY REFERENCES accounts(username) ON DELETE CASCADE,"
	"  vcard    TEXT NOT NULL"
	");"
	"CREATE TABLE private_xml ("
	"  username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  ns       TEXT NOT NULL,"
	"  name     TEXT NOT NULL,"
	"  xml      TEXT NOT NULL,"
	"  PRIMARY KEY (username, ns, name)"
	") WITHOUT ROWID;"
	"CREATE TABLE blocklist ("
	"  username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  jid      TEXT NOT NULL,"
	"  PRIMARY KEY (username, jid)"
	") WITHOUT ROWID;"
	"CREATE TABLE last_activity ("
	"  username  TEXT NOT NULL PRIMARY KEY REFERENCES accounts(username) ON DELETE CASCADE,"
	"  logout_at INTEGER NOT NULL,"
	"  status    TEXT"
	");",

	/*
	 * pubsub: XEP-0060 nodes at pubsub.DOMAIN and XEP-0163 PEP nodes
	 * (storage_pubsub.c). host is the service domain or the PEP
	 * owner's bare JID; username is the PEP owner (NULL on the service),
	 * so removing an account removes its PEP nodes, and with them their
	 * affiliations, subscriptions and items. config is the node's
	 * configuration as key=value lines (pubsub_node.c); items are
	 * ordered by seq, a sequence number that only grows.
	 */
	"CREATE TABLE pubsub_nodes ("
	"  id         INTEGER PRIMARY KEY,"
	"  host       TEXT NOT NULL,"
	"  username   TEXT REFERENCES accounts(username) ON DELETE CASCADE,"
	"  node       TEXT NOT NULL,"
	"  config     TEXT NOT NULL,"
	"  creator    TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  UNIQUE (host, node)"
	");"
	"CREATE INDEX pubsub_nodes_user ON pubsub_nodes(username);"
	"CREATE TABLE pubsub_affiliations ("
	"  node_id     INTEGER NOT NULL REFERENCES pubsub_nodes(id) ON DELETE CASCADE,"
	"  jid         TEXT NOT NULL,"
	"  affiliation TEXT NOT NULL"
	"              CHECK (affiliation IN ('owner', 'publisher', 'publish-only', 'member', 'outcast')),"
	"  PRIMARY KEY (node_id, jid)"
	");"
	"CREATE TABLE pubsub_subscriptions ("
	"  node_id INTEGER NOT NULL REFERENCES pubsub_nodes(id) ON DELETE CASCADE,"
	"  jid     TEXT NOT NULL,"
	"  subid   TEXT NOT NULL,"
	"  state   TEXT NOT NULL CHECK (state IN ('pending', 'unconfigured', 'subscribed')),"
	"  options TEXT NOT NULL DEFAULT '',"
	"  PRIMARY KEY (node_id, jid)"
	") WITHOUT ROWID;"
	"CREATE TABLE pubsub_items ("
	"  node_id    INTEGER NOT NULL REFERENCES pubsub_nodes(id) ON DELETE CASCADE,"
	"  item_id    TEXT NOT NULL,"
	"  seq        INTEGER NOT NULL,"
	"  publisher  TEXT NOT NULL,"
	"  payload    TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  PRIMARY KEY (node_id, item_id)"
	");"
	"CREATE INDEX pubsub_items_seq ON pubsub_items(node_id, seq);",

	/*
	 * mam: XEP-0313 message archives of accounts and their XEP-0441
	 * preferences (storage_mam.c). ts (microseconds) is the
	 * archive order, strictly increasing per user; id is the archive UID
	 * (the XEP-0359 stanza-id, random); peer/resource the other party;
	 * stanza the message, serialized standalone. Indexes: order and
	 * time ranges, lookups by UID, 'with' queries, retention sweeps.
	 * mam_prefs: default mode and the always/never JIDs joined by '\n'.
	 */
	"CREATE TABLE mam_messages ("
	"  username TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  ts       INTEGER NOT NULL,"
	"  id       TEXT NOT NULL,"
	"  peer     TEXT NOT NULL,"
	"  resource TEXT NOT NULL DEFAULT '',"
	"  outgoing INTEGER NOT NULL,"
	"  stanza   TEXT NOT NULL"
	");"
	"CREATE UNIQUE INDEX mam_messages_order ON mam_messages(username, ts);"
	"CREATE UNIQUE INDEX mam_messages_id ON mam_messages(username, id);"
	"CREATE INDEX mam_messages_peer ON mam_messages(username, peer, ts);"
	"CREATE INDEX mam_messages_ts ON mam_messages(ts);"
	"CREATE TABLE mam_prefs ("
	"  username TEXT NOT NULL PRIMARY KEY REFERENCES accounts(username) ON DELETE CASCADE,"
	"  mode     TEXT NOT NULL CHECK (mode IN ('always', 'roster', 'never')),"
	"  always   TEXT NOT NULL DEFAULT '',"
	"  never    TEXT NOT NULL DEFAULT ''"
	");",

	/*
	 * upload: XEP-0363 files (upload.c, storage_upload.c). One row
	 * per slot: 'pending' from the slot request (counted against the
	 * quota), 'done' once the file is stored as STATE_DIR/upload/TOKEN;
	 * type is what GET serves. Indexes: quota sums, expiry sweeps.
	 */
	"CREATE TABLE uploads ("
	"  token       TEXT NOT NULL PRIMARY KEY,"
	"  username    TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  filename    TEXT NOT NULL,"
	"  size        INTEGER NOT NULL CHECK (size > 0),"
	"  type        TEXT NOT NULL,"
	"  state       TEXT NOT NULL CHECK (state IN ('pending', 'done')),"
	"  created_at  INTEGER NOT NULL,"
	"  uploaded_at INTEGER"
	");"
	"CREATE INDEX uploads_user ON uploads(username);"
	"CREATE INDEX uploads_expiry ON uploads(state, uploaded_at);",

	/*
	 * muc: XEP-0045 rooms at conference.DOMAIN (muc.c,
	 * storage_muc.c). muc_rooms holds persistent rooms only: the
	 * configuration (password = the room's shared secret, NULL when not
	 * protected; allow_pm anyone|participants|moderators|none) and the
	 * subject; muc_affiliations their lists (bare JIDs or domains,
	 * reserved nicknames). muc_archive is the room archive (XEP-0313 on
	 * the room JID) of any room with archiving on, kept while the room
	 * exists: seq is the order, stanza_id the random archive UID, the
	 * sender by nickname and real JID, stanza the message as reflected
	 * (without 'to').
	 */
	"CREATE TABLE muc_rooms ("
	"  name           TEXT NOT NULL PRIMARY KEY,"
	"  title          TEXT,"
	"  description    TEXT,"
	"  password       TEXT,"
	"  subject        TEXT,"
	"  subject_nick   TEXT,"
	"  subject_at     INTEGER NOT NULL DEFAULT 0,"
	"  max_users      INTEGER NOT NULL DEFAULT 0,"
	"  history_len    INTEGER NOT NULL DEFAULT 20,"
	"  allow_pm       TEXT NOT NULL DEFAULT 'anyone',"
	"  public_room    INTEGER NOT NULL DEFAULT 1,"
	"  members_only   INTEGER NOT NULL DEFAULT 0,"
	"  moderated      INTEGER NOT NULL DEFAULT 0,"
	"  non_anonymous  INTEGER NOT NULL DEFAULT 0,"
	"  change_subject INTEGER NOT NULL DEFAULT 0,"
	"  allow_invites  INTEGER NOT NULL DEFAULT 0,"
	"  archive        INTEGER NOT NULL DEFAULT 1,"
	"  updated_at     INTEGER NOT NULL"
	");"
	"CREATE TABLE muc_affiliations ("
	"  room        TEXT NOT NULL REFERENCES muc_rooms(name) ON DELETE CASCADE,"
	"  jid         TEXT NOT NULL,"
	"  affiliation TEXT NOT NULL CHECK (affiliation IN ('owner', 'admin', 'member', 'outcast')),"
	"  nick        TEXT,"
	"  PRIMARY KEY (room, jid)"
	") WITHOUT ROWID;"
	"CREATE TABLE muc_archive ("
	"  seq        INTEGER PRIMARY KEY AUTOINCREMENT,"
	"  room       TEXT NOT NULL,"
	"  stanza_id  TEXT NOT NULL,"
	"  nick       TEXT NOT NULL,"
	"  real_jid   TEXT NOT NULL,"
	"  real_bare  TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  stanza     TEXT NOT NULL"
	");"
	"CREATE INDEX muc_archive_room ON muc_archive(room, seq);"
	"CREATE UNIQUE INDEX muc_archive_id ON muc_archive(room, stanza_id);",

	/*
	 * devices: fleet enrollment, certificate login and FAST tokens
	 * (storage_device.c). devices: the bare JID as enrolled (the
	 * store knows no domain), the tags (sorted, ';'-joined)
	 * and owner (bare JID, or NULL) of an account enrolled with
	 * `stanzactl device import`. device_certs: SHA-256 fingerprints of
	 * client certificates that log in as an account with SASL EXTERNAL
	 * (XEP-0178); a revoked one is refused and never enrolled again.
	 * fast_tokens: XEP-0484 tokens, at most two per account and client
	 * (user-agent id; '' when the client sent none): 'current' and 'new'
	 * (section 5.1). key is SHA-256 of the token, which is the HMAC key
	 * RFC 2104 makes of a token longer than the hash block; counter is
	 * the highest 'count' accepted.
	 */
	"CREATE TABLE devices ("
	"  username    TEXT NOT NULL PRIMARY KEY REFERENCES accounts(username) ON DELETE CASCADE,"
	"  jid         TEXT NOT NULL,"
	"  tags        TEXT NOT NULL DEFAULT '',"
	"  owner       TEXT,"
	"  enrolled_at INTEGER NOT NULL,"
	"  updated_at  INTEGER NOT NULL"
	");"
	"CREATE TABLE device_certs ("
	"  fingerprint BLOB NOT NULL PRIMARY KEY CHECK (length(fingerprint) = 32),"
	"  username    TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  revoked     INTEGER NOT NULL DEFAULT 0,"
	"  created_at  INTEGER NOT NULL"
	");"
	"CREATE INDEX device_certs_user ON device_certs(username);"
	"CREATE TABLE fast_tokens ("
	"  username   TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  client_id  TEXT NOT NULL,"
	"  slot       TEXT NOT NULL CHECK (slot IN ('current', 'new')),"
	"  mechanism  TEXT NOT NULL,"
	"  key        BLOB NOT NULL CHECK (length(key) = 32),"
	"  issued_at  INTEGER NOT NULL,"
	"  expires_at INTEGER NOT NULL,"
	"  counter    INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (username, client_id, slot)"
	") WITHOUT ROWID;",

	/*
	 * iot: the thing registry (XEP-0347, registry.c) and provisioning
	 * rules (XEP-0324, provisioning.c); SQL in storage_iot.c.
	 * iot_things: one row per registered thing (a bare JID, or a node
	 * behind it), owner NULL until claimed, sig the canonical tag set a
	 * claim must match, removed = taken out of the registry by its
	 * owner (still owned), clear_cache = a clearCache waits for the thing
	 * to come online; username ties a local thing to its account.
	 * iot_tags: its meta tags (names upper case, num 1 for numeric).
	 * iot_rules: the owner's rules per thing (partial NULL = every
	 * field or parameter; names joined by U+001F).
	 */
	"CREATE TABLE iot_things ("
	"  id          INTEGER PRIMARY KEY,"
	"  jid         TEXT NOT NULL,"
	"  node_id     TEXT NOT NULL DEFAULT '',"
	"  source_id   TEXT NOT NULL DEFAULT '',"
	"  cache_type  TEXT NOT NULL DEFAULT '',"
	"  username    TEXT REFERENCES accounts(username) ON DELETE CASCADE,"
	"  owner       TEXT,"
	"  public      INTEGER NOT NULL DEFAULT 1,"
	"  removed     INTEGER NOT NULL DEFAULT 0,"
	"  self_owned  INTEGER NOT NULL DEFAULT 0,"
	"  sig         TEXT NOT NULL,"
	"  clear_cache INTEGER NOT NULL DEFAULT 0,"
	"  created_at  INTEGER NOT NULL,"
	"  updated_at  INTEGER NOT NULL,"
	"  UNIQUE (jid, node_id, source_id, cache_type)"
	");"
	"CREATE INDEX iot_things_user ON iot_things(username);"
	"CREATE INDEX iot_things_sig ON iot_things(sig);"
	"CREATE INDEX iot_things_owner ON iot_things(owner);"
	"CREATE TABLE iot_tags ("
	"  thing_id INTEGER NOT NULL REFERENCES iot_things(id) ON DELETE CASCADE,"
	"  name     TEXT NOT NULL,"
	"  num      INTEGER NOT NULL,"
	"  value    TEXT NOT NULL,"
	"  PRIMARY KEY (thing_id, name)"
	") WITHOUT ROWID;"
	"CREATE INDEX iot_tags_value ON iot_tags(name, value);"
	"CREATE TABLE iot_rules ("
	"  id         INTEGER PRIMARY KEY,"
	"  thing      TEXT NOT NULL,"
	"  username   TEXT REFERENCES accounts(username) ON DELETE CASCADE,"
	"  kind       TEXT NOT NULL CHECK (kind IN ('friend', 'read', 'control')),"
	"  scope      TEXT NOT NULL,"
	"  remote     TEXT NOT NULL,"
	"  nodes      TEXT NOT NULL,"
	"  result     INTEGER NOT NULL,"
	"  partial    TEXT,"
	"  created_at INTEGER NOT NULL,"
	"  UNIQUE (thing, kind, scope, remote, nodes)"
	");"
	"CREATE INDEX iot_rules_user ON iot_rules(username);",

	/*
	 * push_registrations: XEP-0357 app servers (jid, node) an account
	 * registered, with the publish-options form (serialized, or NULL)
	 * sent with each notification (push.c, storage_push.c).
	 */
	"CREATE TABLE push_registrations ("
	"  username   TEXT NOT NULL REFERENCES accounts(username) ON DELETE CASCADE,"
	"  jid        TEXT NOT NULL,"
	"  node       TEXT NOT NULL,"
	"  options    TEXT,"
	"  created_at INTEGER NOT NULL,"
	"  PRIMARY KEY (username, jid, node)"
	") WITHOUT ROWID;",

	/*
	 * Values the database hands out, so that several nodes writing one
	 * database never hand out the same one. id_blocks: one row per
	 * kind of id, the next block to reserve; a process reserves a block
	 * when it starts (pubsub node ids: block b is b << 32 up to
	 * (b + 1) << 32, the first above every id stored before). last_seq:
	 * the newest item sequence number of a pubsub node, taken with
	 * UPDATE ... RETURNING at each item write, which also makes writers
	 * of one node wait for each other.
	 */
	"CREATE TABLE id_blocks ("
	"  name       TEXT NOT NULL PRIMARY KEY,"
	"  next_block INTEGER NOT NULL"
	");"
	"INSERT INTO id_blocks (name, next_block)"
	" SELECT 'pubsub_nodes', coalesce(max(id), 0) / 4294967296 + 1 FROM pubsub_nodes;"
	"ALTER TABLE pubsub_nodes ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0;"
	"UPDATE pubsub_nodes SET last_seq = coalesce((SELECT max(seq) FROM pubsub_items"
	" WHERE pubsub_items.node_id = pubsub_nodes.id), 0);",

	/*
	 * 11: secrets every node serving the store must share (the SCRAM
	 * decoys of unknown users: a node with its own would answer an
	 * unknown name with another salt than the others, and tell it
	 * apart from a real account).
	 */
	"CREATE TABLE shared_secrets ("
	"  name  TEXT NOT NULL PRIMARY KEY,"
	"  value BLOB NOT NULL"
	");",
};

enum storage_stmt {
	STMT_ACCOUNT_GET = 0,
	STMT_ACCOUNT_INSERT,
	STMT_ACCOUNT_UPDATE,
	STMT_ACCOUNT_DELETE,
	STMT_ACCOUNT_LIST,
	STMT_COUNT,
};

static const char *const storage_stmt_sql[STMT_COUNT] = {
	[STMT_ACCOUNT_GET] =
		"SELECT iterations, salt, sha1_stored, sha1_server,"
		" sha256_stored, sha256_server FROM accounts WHERE username = ?1",
	[STMT_ACCOUNT_INSERT] =
		"INSERT INTO accounts (username, iterations, salt, sha1_stored,"
		" sha1_server, sha256_stored, sha256_server, created_at)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
	[STMT_ACCOUNT_UPDATE] =
		"UPDATE accounts SET iterations = ?2, salt = ?3, sha1_stored = ?4,"
		" sha1_server = ?5, sha256_stored = ?6, sha256_server = ?7"
		" WHERE username = ?1",
	[STMT_ACCOUNT_DELETE] = "DELETE FROM accounts WHERE username = ?1",
	/* Byte order on both engines: TEXT is COLLATE "C" on PostgreSQL. */
	[STMT_ACCOUNT_LIST] = "SELECT username FROM accounts ORDER BY username",
};

/*
 * Statements of feature modules, prepared on first use
 * (storage_stmt) and found again by the address of their SQL text:
 * an open-addressing table that doubles at half load.
 */
struct storage_stmt_slot {
	const char *sql;	/* the caller's static string: the key */
	struct db_stmt *stmt;
};

/*
 * One connection and its statements. SQLite is opened with
 * SQLITE_OPEN_NOMUTEX and libpq locks nothing either: one thread at a
 * time.
 */
struct storage {
	struct db *db;
	struct db_stmt *stmt[STMT_COUNT];
	struct storage_stmt_slot *cache;
	unsigned cache_cap;	/* power of two, 0 before the first use */
	unsigned ncache;
	int version;		/* schema version after migration */
	int busy_timeout_ms;	/* for log lines */
	bool pg;		/* on PostgreSQL, not SQLite */
	char path[];		/* the database file or the masked URI, for log lines */
};

/* Where a failure to open is reported: the log, or the caller's buffer. */
struct storage_open_ctx {
	const char *path;
	char *why;
	size_t why_size;
};

static void open_fail(struct storage_open_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Says why opening failed: one line naming the path, logged (daemon) or
 * written to the caller's buffer (stanzactl, which prints it itself).
 */
static void open_fail(struct storage_open_ctx *ctx, const char *fmt, ...)
{
	char reason[STORAGE_WHY_MAX];
	char qpath[STORAGE_WHY_MAX], qreason[STORAGE_WHY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (ctx->why) {
		snprintf(ctx->why, ctx->why_size, "%s: %s", ctx->path, reason);
		return;
	}
	log_error("storage.open_failed", "path=%s reason=%s",
		  log_sanitize(qpath, sizeof(qpath), ctx->path, strlen(ctx->path)),
		  log_sanitize(qreason, sizeof(qreason), reason, strlen(reason)));
}

/*
 * Maps an SQLite result code to -errno for the open path. Only the primary
 * code matters (extended codes are on); CANTOPEN carries the errno of the
 * failed system call, which says more (EACCES, ENOENT) than EIO would.
 */
static int sqlite_to_errno(sqlite3 *db, int rc)
{
	switch (rc & 0xff) {
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
		return -EBADMSG;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CANTOPEN:
		if (db && sqlite3_system_errno(db) > 0)
			return -sqlite3_system_errno(db);
		return -EIO;
	default:
		return -EIO;
	}
}

/*
 * Logs a failed statement outside the open path (never bound values) and
 * maps it: -EBUSY when another process kept the lock for longer than the
 * busy timeout (an operational condition, logged as a warning), else -EIO.
 */
static int sql_error(struct storage *st, const char *op, int rc)
{
	char qmsg[256];
	const char *msg;

	/* The outage is logged once (storage.down), not once per request. */
	if (rc == -ENOTCONN)
		return -EIO;
	msg = db_errmsg(st->db);
	log_sanitize(qmsg, sizeof(qmsg), msg, strlen(msg));
	if (rc == -EBUSY) {
		log_warn("storage.busy", "op=%s timeout_ms=%d err=%s", op,
			 st->busy_timeout_ms, qmsg);
		return -EBUSY;
	}
	log_error("storage.sql_failed", "op=%s rc=%d err=%s", op, rc, qmsg);
	return -EIO;
}

/* Resets a cached statement for its next use and drops its bindings. */
static void stmt_release(struct db_stmt *s)
{
	db_reset(s);
}

/* ---- Opening: permissions, file, pragmas, migrations ---- */

/*
 * Makes sure state_dir exists as a directory we may write and nobody else
 * may: created 0700 when missing. Others-writable is refused (anyone could
 * swap the database file); group-writable only warned about.
 */
static int check_state_dir(struct storage_open_ctx *ctx, const char *dir, struct stat *sb)
{
	if (stat(dir, sb) < 0) {
		if (errno != ENOENT) {
			int err = errno;

			open_fail(ctx, "cannot access state directory: %s", strerror(err));
			return -err;
		}
		if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
			int err = errno;

			open_fail(ctx, "cannot create state directory: %s", strerror(err));
			return -err;
		}
		if (stat(dir, sb) < 0) {
			int err = errno;

			open_fail(ctx, "cannot access state directory: %s", strerror(err));
			return -err;
		}
		log_info("storage.dir_created", "mode=0700");
	}
	if (!S_ISDIR(sb->st_mode)) {
		open_fail(ctx, "not a directory");
		return -ENOTDIR;
	}
	if (sb->st_mode & S_IWOTH) {
		open_fail(ctx, "state directory is writable by others (mode %04o);"
			  " chmod 700 it", (unsigned int)(sb->st_mode & 07777));
		return -EPERM;
	}
	if (sb->st_mode & S_IWGRP)
		log_warn("storage.dir_group_writable", "mode=%04o",
			 (unsigned int)(sb->st_mode & 07777));
	/* WAL needs to create -wal and -shm files beside the database. */
	if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) < 0) {
		int err = errno;

		open_fail(ctx, "no write access to state directory: %s", strerror(err));
		return -err;
	}
	return 0;
}

/*
 * Creates the database file with mode 0600 before SQLite sees it (SQLite
 * would create it 0644), or checks the mode of an existing one. SQLite
 * gives the -wal and -shm files the mode of the database file, and when
 * run as root also its owner, so this covers them too.
 */
static int prepare_db_file(struct storage_open_ctx *ctx, const struct stat *dir_sb)
{
	struct stat sb;
	int fd;

	fd = open(ctx->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		int ret = 0;

		/* Exactly 0600, whatever the umask. */
		if (fchmod(fd, 0600) < 0)
			ret = -errno;
		/*
		 * root (stanzactl before the first start) creating the store
		 * in the daemon's directory: give it to the directory's owner,
		 * or the daemon could not open it.
		 */
		if (!ret && geteuid() == 0 && dir_sb->st_uid != 0 &&
		    fchown(fd, dir_sb->st_uid, dir_sb->st_gid) < 0)
			ret = -errno;
		close(fd);
		if (ret) {
			open_fail(ctx, "cannot set owner and mode of new database: %s",
				  strerror(-ret));
			unlink(ctx->path);
			return ret;
		}
		log_info("storage.db_created", "mode=0600");
		return 0;
	}
	if (errno != EEXIST) {
		int err = errno;

		open_fail(ctx, "cannot create database: %s", strerror(err));
		return -err;
	}
	if (lstat(ctx->path, &sb) < 0) {
		int err = errno;

		open_fail(ctx, "cannot access database: %s", strerror(err));
		return -err;
	}
	if (S_ISLNK(sb.st_mode)) {
		open_fail(ctx, "database is a symbolic link; refusing to follow it");
		return -ELOOP;
	}
	if (!S_ISREG(sb.st_mode)) {
		open_fail(ctx, "database is not a regular file");
		return -EBADMSG;
	}
	if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
		open_fail(ctx, "database is writable by group or others (mode %04o);"
			  " chmod 600 it", (unsigned int)(sb.st_mode & 07777));
		return -EPERM;
	}
	if (sb.st_mode & (S_IRGRP | S_IROTH))
		log_warn("storage.db_readable_by_others", "mode=%04o",
			 (unsigned int)(sb.st_mode & 07777));
	return 0;
}

/*
 * Reads a one-integer pragma (or any one-integer query) with a throwaway
 * statement: used only while opening, before the cache is prepared.
 * SQLite result code.
 */
static int pragma_get_int(sqlite3 *db, const char *sql, int *out)
{
	sqlite3_stmt *s;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int(s, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_ERROR;
	}
	sqlite3_finalize(s);
	return rc;
}

/* Runs a pragma that answers with one text value and checks the answer. */
static int pragma_expect_text(sqlite3 *db, const char *sql, const char *want)
{
	sqlite3_stmt *s;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *got = (const char *)sqlite3_column_text(s, 0);

		rc = got && strcasecmp(got, want) == 0 ? SQLITE_OK : SQLITE_ERROR;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_ERROR;
	}
	sqlite3_finalize(s);
	return rc;
}

/*
 * Refuses a file that is not ours before changing anything in it (WAL mode
 * is persistent): garbage gives SQLITE_NOTADB on the first read, a foreign
 * SQLite database has tables but no version, or the wrong application_id.
 */
static int check_identity(struct storage_open_ctx *ctx, sqlite3 *db)
{
	int version, app_id, tables;
	int rc;

	rc = pragma_get_int(db, "PRAGMA user_version", &version);
	if (rc == SQLITE_OK)
		rc = pragma_get_int(db, "PRAGMA application_id", &app_id);
	if (rc == SQLITE_OK)
		rc = pragma_get_int(db, "SELECT count(*) FROM sqlite_schema", &tables);
	if (rc != SQLITE_OK) {
		if ((rc & 0xff) == SQLITE_NOTADB)
			open_fail(ctx, "not an SQLite database (foreign or damaged file)");
		else
			open_fail(ctx, "cannot read database: %s", sqlite3_errstr(rc));
		return sqlite_to_errno(db, rc);
	}
	if (version == 0 && tables > 0) {
		open_fail(ctx, "an SQLite database, but not a stanzad one");
		return -EBADMSG;
	}
	if (version != 0 && (uint32_t)app_id != STORAGE_APPLICATION_ID) {
		open_fail(ctx, "an SQLite database, but not a stanzad one"
			  " (application_id %#x)", (unsigned int)app_id);
		return -EBADMSG;
	}
	if (version > (int)ARRAY_SIZE(storage_migrations)) {
		open_fail(ctx, "schema version %d is newer than this build supports (%d);"
			  " use a newer stanzad", version, (int)ARRAY_SIZE(storage_migrations));
		return -EPROTO;
	}
	return 0;
}

/*
 * Connection settings. WAL lets readers (stanzactl list, lookups) run
 * while one writer commits, and makes a commit one append plus fsync.
 * synchronous=FULL fsyncs the WAL on every commit: NORMAL would be faster
 * but can lose the last commits on power loss, and an acknowledged
 * message must survive that. WAL mode is stored in the file; the other
 * pragmas hold for this connection only, hence set at every open.
 */
static int configure(struct storage_open_ctx *ctx, sqlite3 *db)
{
	static const struct {
		const char *sql;
		const char *want;	/* expected answer, NULL for none */
	} pragmas[] = {
		{ "PRAGMA journal_mode = WAL", "wal" },
		{ "PRAGMA synchronous = FULL", NULL },
		{ "PRAGMA foreign_keys = ON", NULL },
		/* Deleted credentials do not linger in free pages when cheap. */
		{ "PRAGMA secure_delete = FAST", NULL },
	};
	int on = 0;
	int rc;

	for (size_t i = 0; i < ARRAY_SIZE(pragmas); i++) {
		if (pragmas[i].want)
			rc = pragma_expect_text(db, pragmas[i].sql, pragmas[i].want);
		else
			rc = sqlite3_exec(db, pragmas[i].sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			open_fail(ctx, "cannot apply \"%s\": %s", pragmas[i].sql,
				  sqlite3_errstr(rc));
			return sqlite_to_errno(db, rc);
		}
	}
	/* foreign_keys is silently ignored by builds without them: check. */
	rc = pragma_get_int(db, "PRAGMA foreign_keys", &on);
	if (rc != SQLITE_OK || on != 1) {
		open_fail(ctx, "this SQLite cannot enforce foreign keys");
		return -ENOTSUP;
	}
	return 0;
}

/*
 * Brings the schema to the newest version, one migration per transaction.
 * The version is re-read under the write lock because the daemon and
 * stanzactl may open the same store at the same moment.
 */
static int migrate(struct storage_open_ctx *ctx, sqlite3 *db, int *version)
{
	char sql[64];
	int rc, v;

	/*
	 * The usual case needs no write lock: reading the version does not
	 * wait for a writer in WAL mode, so a store busy in a long write
	 * still opens (check_identity already refused newer versions).
	 */
	rc = pragma_get_int(db, "PRAGMA user_version", &v);
	if (rc != SQLITE_OK) {
		open_fail(ctx, "cannot read schema version: %s", sqlite3_errmsg(db));
		return sqlite_to_errno(db, rc);
	}
	if (v == (int)ARRAY_SIZE(storage_migrations)) {
		*version = v;
		return 0;
	}
	for (;;) {
		rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto err;
		rc = pragma_get_int(db, "PRAGMA user_version", &v);
		if (rc != SQLITE_OK)
			goto err_rollback;
		if (v > (int)ARRAY_SIZE(storage_migrations)) {
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			open_fail(ctx, "schema version %d is newer than this build supports (%d)",
				  v, (int)ARRAY_SIZE(storage_migrations));
			return -EPROTO;
		}
		if (v == (int)ARRAY_SIZE(storage_migrations)) {
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			*version = v;
			return 0;
		}
		rc = sqlite3_exec(db, storage_migrations[v], NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto err_rollback;
		/* Both live in the file header and roll back with the transaction. */
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		if (rc == SQLITE_OK && v == 0) {
			snprintf(sql, sizeof(sql), "PRAGMA application_id = %d",
				 (int)STORAGE_APPLICATION_ID);
			rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		}
		if (rc != SQLITE_OK)
			goto err_rollback;
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto err_rollback;
		log_info("storage.migrated", "from=%d to=%d", v, v + 1);
	}

err_rollback:
	open_fail(ctx, "schema migration failed: %s", sqlite3_errmsg(db));
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return sqlite_to_errno(db, rc);
err:
	open_fail(ctx, "cannot start schema migration: %s", sqlite3_errmsg(db));
	return sqlite_to_errno(db, rc);
}

/*
 * Prepares every statement once (on PostgreSQL the server sees each at its
 * first use, and again after a reconnect).
 */
static int prepare_statements(struct storage_open_ctx *ctx, struct storage *st)
{
	for (int i = 0; i < STMT_COUNT; i++) {
		st->stmt[i] = db_prepare(st->db, storage_stmt_sql[i]);
		if (!st->stmt[i]) {
			open_fail(ctx, "cannot prepare statement %d: %s", i, db_errmsg(st->db));
			return -EIO;
		}
	}
	return 0;
}

/* ---- PostgreSQL: the same migrations, translated ---- */

/*
 * The PostgreSQL text of a migration: SQLite's DDL with its types
 * replaced word by word. INTEGER is 64-bit in SQLite, so BIGINT; a rowid
 * key becomes an identity column (explicit ids still allowed, as pubsub
 * inserts them); every TEXT compares in byte order as SQLite's BINARY
 * collation does. Malloc'ed, NULL on ENOMEM.
 */
static char *pg_migration_sql(const char *sql)
{
	static const struct {
		const char *from, *to;
	} words[] = {
		{ "INTEGER PRIMARY KEY AUTOINCREMENT",
		  "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" },
		{ "INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" },
		{ "INTEGER", "BIGINT" },
		{ "BLOB", "BYTEA" },
		{ "TEXT", "TEXT COLLATE \"C\"" },
		{ " WITHOUT ROWID", "" },
	};
	struct strbuf b = { 0 };
	const char *p = sql;

	while (*p) {
		size_t i;

		for (i = 0; i < ARRAY_SIZE(words); i++) {
			size_t n = strlen(words[i].from);
			char next = p[n];

			if (strncmp(p, words[i].from, n) == 0 &&
			    !(p > sql && (isalnum((unsigned char)p[-1]) || p[-1] == '_')) &&
			    !(isalnum((unsigned char)next) || next == '_'))
				break;
		}
		if (i < ARRAY_SIZE(words)) {
			strbuf_append(&b, words[i].to, strlen(words[i].to));
			p += strlen(words[i].from);
		} else {
			strbuf_append(&b, p, 1);
			p++;
		}
	}
	strbuf_append(&b, "", 0);
	if (b.oom) {
		strbuf_free(&b);
		return NULL;
	}
	return b.data;
}

/* One integer from a query without parameters; -ENOENT when no row. */
static int pg_query_int(struct db *db, const char *sql, int *out)
{
	struct db_stmt *s = db_prepare(db, sql);
	int rc;

	if (!s)
		return -ENOMEM;
	rc = db_step(s);
	if (rc == DB_ROW)
		*out = db_column_int(s, 0);
	db_finalize(s);
	return rc == DB_ROW ? 0 : rc == DB_DONE ? -ENOENT : rc;
}

/*
 * The schema version of a PostgreSQL database: the one row of
 * stanzad_schema, 0 for an empty database (in the current schema).
 * Refuses a database with tables but no version (not ours) and a newer
 * version than this build knows.
 */
static int pg_schema_version(struct storage_open_ctx *ctx, struct db *db, int *version)
{
	int what = 0, ours, tables, rc;

	/*
	 * One statement, so one snapshot: another node may commit the first
	 * migration (its tables and stanzad_schema together) meanwhile.
	 */
	rc = pg_query_int(db, "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_tables"
			  " WHERE schemaname = current_schema() AND tablename = 'stanzad_schema')"
			  " THEN 2 WHEN EXISTS (SELECT 1 FROM pg_tables"
			  " WHERE schemaname = current_schema()) THEN 1 ELSE 0 END", &what);
	ours = what == 2;
	tables = what > 0;
	if (!rc && ours)
		rc = pg_query_int(db, "SELECT version FROM stanzad_schema", version);
	else
		*version = 0;
	if (rc) {
		open_fail(ctx, "cannot read schema version: %s", db_errmsg(db));
		return rc == -ENOENT ? -EBADMSG : -EIO;
	}
	if (!ours && tables > 0) {
		open_fail(ctx, "a PostgreSQL database, but not a stanzad one"
			  " (tables, but no stanzad_schema)");
		return -EBADMSG;
	}
	if (*version > (int)ARRAY_SIZE(storage_migrations)) {
		open_fail(ctx, "schema version %d is newer than this build supports (%d);"
			  " use a newer stanzad", *version, (int)ARRAY_SIZE(storage_migrations));
		return -EPROTO;
	}
	return 0;
}

/*
 * Brings a PostgreSQL database to the newest version, one migration per
 * transaction. Nodes sharing the database may start together: each
 * migration runs under a transaction-level advisory lock and re-reads the
 * version under it, so exactly one of them applies it.
 */
static int pg_migrate(struct storage_open_ctx *ctx, struct db *db, int *version)
{
	char lock[64], bump[80];
	char *ddl;
	int v, ret;

	snprintf(lock, sizeof(lock), "SELECT pg_advisory_xact_lock(%d)",
		 (int)STORAGE_APPLICATION_ID);
	/*
	 * Under the lock too: its two reads would otherwise straddle another
	 * node's first migration (no stanzad_schema yet, then its tables),
	 * which looks like somebody else's database.
	 */
	ret = db_txn(db, DB_BEGIN);
	if (!ret)
		ret = db_exec(db, lock);
	if (ret) {
		open_fail(ctx, "cannot read schema version: %s", db_errmsg(db));
		db_txn(db, DB_ROLLBACK);
		return -EIO;
	}
	ret = pg_schema_version(ctx, db, &v);
	db_txn(db, DB_ROLLBACK);
	if (ret)
		return ret;
	while (v < (int)ARRAY_SIZE(storage_migrations)) {
		ret = db_txn(db, DB_BEGIN);
		if (!ret)
			ret = db_exec(db, lock);
		if (!ret)
			ret = db_exec(db, "CREATE TABLE IF NOT EXISTS stanzad_schema ("
				      " one INTEGER PRIMARY KEY CHECK (one = 1),"
				      " version INTEGER NOT NULL);"
				      "INSERT INTO stanzad_schema VALUES (1, 0)"
				      " ON CONFLICT (one) DO NOTHING");
		if (!ret)
			ret = pg_query_int(db, "SELECT version FROM stanzad_schema", &v);
		if (ret)
			goto err_rollback;
		if (v >= (int)ARRAY_SIZE(storage_migrations)) {
			db_txn(db, DB_ROLLBACK);
			break;
		}
		ddl = pg_migration_sql(storage_migrations[v]);
		if (!ddl) {
			db_txn(db, DB_ROLLBACK);
			open_fail(ctx, "out of memory");
			return -ENOMEM;
		}
		ret = db_exec(db, ddl);
		free(ddl);
		snprintf(bump, sizeof(bump), "UPDATE stanzad_schema SET version = %d", v + 1);
		if (!ret)
			ret = db_exec(db, bump);
		if (!ret)
			ret = db_txn(db, DB_COMMIT);
		if (ret)
			goto err_rollback;
		log_info("storage.migrated", "from=%d to=%d", v, v + 1);
		v++;
	}
	if (v > (int)ARRAY_SIZE(storage_migrations)) {
		open_fail(ctx, "schema version %d is newer than this build supports (%d)",
			  v, (int)ARRAY_SIZE(storage_migrations));
		return -EPROTO;
	}
	*version = v;
	return 0;

err_rollback:
	open_fail(ctx, "schema migration failed: %s", db_errmsg(db));
	db_txn(db, DB_ROLLBACK);
	return -EIO;
}

/* Opens the store on a PostgreSQL server (uri: postgresql://...). */
static int storage_open_pg(struct storage **out, const char *uri, char *why, size_t why_size)
{
	struct storage_open_ctx ctx = { .why = why, .why_size = why_size };
	char reason[STORAGE_WHY_MAX];
	struct storage *st;
	/* Room for "***" in place of a shorter password. */
	size_t len = strlen(uri) + 8;
	int ret;

	st = calloc(1, sizeof(*st) + len);
	if (!st) {
		ctx.path = "postgresql";
		open_fail(&ctx, "out of memory");
		return -ENOMEM;
	}
	/* Log lines and messages name the server, never the password. */
	db_uri_mask(uri, st->path, len);
	ctx.path = st->path;
	st->pg = true;
	st->busy_timeout_ms = STORAGE_BUSY_TIMEOUT_MS;
	ret = db_pg_connect(&st->db, uri, reason, sizeof(reason));
	if (ret) {
		open_fail(&ctx, "%s", reason);
		goto err_free;
	}
	ret = pg_migrate(&ctx, st->db, &st->version);
	if (ret)
		goto err_close_db;
	ret = prepare_statements(&ctx, st);
	if (ret)
		goto err_finalize;
	log_debug("storage.opened", "engine=postgresql version=%d", st->version);
	*out = st;
	return 0;

err_finalize:
	for (int i = 0; i < STMT_COUNT; i++)
		db_finalize(st->stmt[i]);
err_close_db:
	db_close(st->db);
err_free:
	free(st);
	return ret;
}

int storage_open_why(struct storage **out, const char *state_dir, char *why,
		     size_t why_size)
{
	struct storage_open_ctx ctx = { .path = state_dir, .why = why, .why_size = why_size };
	struct storage *st;
	struct stat dir_sb;
	sqlite3 *conn = NULL;
	size_t dlen;
	int rc, ret;

	*out = NULL;
	if (why && why_size)
		why[0] = '\0';
	if (!state_dir || !state_dir[0]) {
		ctx.path = "(none)";
		open_fail(&ctx, "no state directory given");
		return -EINVAL;
	}
	if (!sqlite3_threadsafe()) {
		open_fail(&ctx, "SQLite was built without thread support");
		return -ENOTSUP;
	}
	dlen = strlen(state_dir);
	st = calloc(1, sizeof(*st) + dlen + sizeof("/" STORAGE_DB_FILE));
	if (!st) {
		open_fail(&ctx, "out of memory");
		return -ENOMEM;
	}
	memcpy(st->path, state_dir, dlen);
	memcpy(st->path + dlen, "/" STORAGE_DB_FILE, sizeof("/" STORAGE_DB_FILE));

	/* Order: permissions, then the file, then what is in it. */
	ret = check_state_dir(&ctx, state_dir, &dir_sb);
	if (ret)
		goto err_free;
	ctx.path = st->path;
	ret = prepare_db_file(&ctx, &dir_sb);
	if (ret)
		goto err_free;

	/*
	 * No SQLITE_OPEN_CREATE: the file exists with the right mode by now.
	 * NOMUTEX: one thread uses a store at a time (see storage.h).
	 */
	rc = sqlite3_open_v2(st->path, &conn,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
			     SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE, NULL);
	if (rc != SQLITE_OK) {
		open_fail(&ctx, "cannot open database: %s",
			  conn ? sqlite3_errmsg(conn) : sqlite3_errstr(rc));
		ret = sqlite_to_errno(conn, rc);
		goto err_close_conn;
	}
	st->busy_timeout_ms = STORAGE_BUSY_TIMEOUT_MS;
	sqlite3_busy_timeout(conn, STORAGE_BUSY_TIMEOUT_MS);

	ret = check_identity(&ctx, conn);
	if (ret)
		goto err_close_conn;
	ret = configure(&ctx, conn);
	if (ret)
		goto err_close_conn;
	ret = migrate(&ctx, conn, &st->version);
	if (ret)
		goto err_close_conn;
	st->db = db_sqlite_wrap(conn);
	if (!st->db) {
		open_fail(&ctx, "out of memory");
		ret = -ENOMEM;
		goto err_close_conn;
	}
	ret = prepare_statements(&ctx, st);
	if (ret)
		goto err_finalize;

	log_debug("storage.opened", "version=%d", st->version);
	*out = st;
	return 0;

err_finalize:
	for (int i = 0; i < STMT_COUNT; i++)
		db_finalize(st->stmt[i]);
	db_close(st->db);
	free(st);
	return ret;
err_close_conn:
	/* sqlite3_open_v2 may hand back a handle even when it fails. */
	sqlite3_close(conn);
err_free:
	free(st);
	return ret;
}

int storage_open(struct storage **out, const char *state_dir)
{
	return storage_open_why(out, state_dir, NULL, 0);
}

int storage_open_at(struct storage **out, const char *storage, const char *state_dir,
		    char *why, size_t why_size)
{
	if (db_is_pg_uri(storage)) {
		*out = NULL;
		if (why && why_size)
			why[0] = '\0';
		return storage_open_pg(out, storage, why, why_size);
	}
	return storage_open_why(out, state_dir, why, why_size);
}

void storage_close(struct storage *st)
{
	if (!st)
		return;
	if (db_in_transaction(st->db))
		db_txn(st->db, DB_ROLLBACK);
	for (int i = 0; i < STMT_COUNT; i++)
		db_finalize(st->stmt[i]);
	for (unsigned i = 0; i < st->cache_cap; i++)
		if (st->cache[i].sql)
			db_finalize(st->cache[i].stmt);
	free(st->cache);
	/* The last SQLite connection to close checkpoints the WAL into the file. */
	db_close(st->db);
	free(st);
}

void storage_set_busy_timeout(struct storage *st, int ms)
{
	st->busy_timeout_ms = ms;
	if (!st->pg)
		sqlite3_busy_timeout(db_sqlite_handle(st->db), ms);
}

int storage_schema_version(struct storage *st)
{
	return st->version;
}

int storage_schema_latest(void)
{
	return (int)ARRAY_SIZE(storage_migrations);
}

bool storage_down(struct storage *st)
{
	return db_lost(st->db);
}

/* ---- Transactions ---- */

int storage_begin(struct storage *st)
{
	int rc = db_txn(st->db, DB_BEGIN);

	return rc ? sql_error(st, "begin", rc) : 0;
}

int storage_commit(struct storage *st)
{
	int rc = db_txn(st->db, DB_COMMIT);

	return rc ? sql_error(st, "commit", rc) : 0;
}

void storage_rollback(struct storage *st)
{
	/*
	 * SQLite ends the transaction itself after some errors (full disk);
	 * a PostgreSQL transaction lost with its connection is forgotten.
	 */
	if (db_in_transaction(st->db) || db_lost(st->db))
		db_txn(st->db, DB_ROLLBACK);
}

bool storage_in_batch(struct storage *st)
{
	return db_in_transaction(st->db);
}

int storage_savepoint(struct storage *st)
{
	int rc = db_txn(st->db, DB_SAVEPOINT);

	return rc ? sql_error(st, "savepoint", rc) : 0;
}

int storage_savepoint_release(struct storage *st)
{
	int rc = db_txn(st->db, DB_RELEASE);

	return rc ? sql_error(st, "release", rc) : 0;
}

int storage_savepoint_undo(struct storage *st)
{
	/* ROLLBACK TO keeps the savepoint open; RELEASE pops it. */
	int rc = db_txn(st->db, DB_ROLLBACK_TO);

	if (!rc)
		rc = db_txn(st->db, DB_RELEASE);
	return rc ? sql_error(st, "rollback_to", rc) : 0;
}

/* ---- Accounts ---- */

/* A username the store accepts: 1..STORAGE_USER_MAX bytes. Sets *len. */
static int check_user(const char *user, size_t *len)
{
	if (!user)
		return -EINVAL;
	*len = strnlen(user, STORAGE_USER_MAX + 1);
	if (*len == 0 || *len > STORAGE_USER_MAX)
		return -EINVAL;
	return 0;
}

/*
 * The keys have fixed sizes by type; the count is checked here because a
 * count of 0 or of billions would make every later login fail or hang.
 */
static int check_creds(const struct scram_creds *c)
{
	if (!c || c->iterations == 0 || c->iterations > SCRAM_ITERATIONS_MAX)
		return -EINVAL;
	return 0;
}

/*
 * Binds ?2..?7 of the insert and update statements (the credentials
 * outlive the step; SQLite makes no copy of the keys).
 */
static int bind_creds(struct db_stmt *s, const struct scram_creds *c)
{
	int rc;

	rc = db_bind_int64(s, 2, c->iterations);
	if (rc == 0)
		rc = db_bind_blob(s, 3, c->salt, sizeof(c->salt));
	if (rc == 0)
		rc = db_bind_blob(s, 4, c->sha1_stored_key,
				       sizeof(c->sha1_stored_key));
	if (rc == 0)
		rc = db_bind_blob(s, 5, c->sha1_server_key,
				       sizeof(c->sha1_server_key));
	if (rc == 0)
		rc = db_bind_blob(s, 6, c->sha256_stored_key,
				       sizeof(c->sha256_stored_key));
	if (rc == 0)
		rc = db_bind_blob(s, 7, c->sha256_server_key,
				       sizeof(c->sha256_server_key));
	return rc;
}

/* Copies a blob column that must be exactly `len` bytes long. */
static bool column_blob_exact(struct db_stmt *s, int col, void *dst, size_t len)
{
	const void *p = db_column_blob(s, col);

	if (!p || (size_t)db_column_bytes(s, col) != len)
		return false;
	memcpy(dst, p, len);
	return true;
}

int storage_shared_secret(struct storage *st, const char *name, uint8_t out[32])
{
	static const char sql_put[] = "INSERT INTO shared_secrets (name, value) VALUES (?1, ?2)"
				      " ON CONFLICT (name) DO NOTHING";
	static const char sql_get[] = "SELECT value FROM shared_secrets WHERE name = ?1";
	uint8_t fresh[32];
	struct db_stmt *s;
	int rc, ret;

	/* The first node to get here decides; the others read what it stored. */
	if (getrandom(fresh, sizeof(fresh), 0) != (ssize_t)sizeof(fresh))
		return -errno;
	s = storage_stmt(st, sql_put);
	if (!s)
		return -EIO;
	rc = db_bind_text(s, 1, name, -1);
	if (!rc)
		rc = db_bind_blob(s, 2, fresh, (int)sizeof(fresh));
	explicit_bzero(fresh, sizeof(fresh));
	ret = rc ? -EIO : storage_stmt_exec(st, "secret_put", s);
	if (ret)
		return ret;
	s = storage_stmt(st, sql_get);
	if (!s)
		return -EIO;
	rc = db_bind_text(s, 1, name, -1);
	if (!rc)
		rc = db_step(s);
	if (rc == DB_ROW)
		ret = column_blob_exact(s, 0, out, 32) ? 0 : -EIO;
	else
		ret = rc == DB_DONE ? -ENOENT : sql_error(st, "secret_get", rc);
	storage_stmt_release(s);
	return ret;
}

int storage_account_get(struct storage *st, const char *user, struct scram_creds *out)
{
	struct db_stmt *s = st->stmt[STMT_ACCOUNT_GET];
	int64_t iter;
	size_t len;
	int rc, ret;

	ret = check_user(user, &len);
	if (ret)
		return ret;
	rc = db_bind_text(s, 1, user, (int)len);
	if (rc == 0)
		rc = db_step(s);
	if (rc == DB_DONE) {
		ret = -ENOENT;
		goto out_release;
	}
	if (rc != DB_ROW) {
		ret = sql_error(st, "account_get", rc);
		goto out_release;
	}
	/* Stored values are checked like input: a bad row is an error, not a crash. */
	iter = db_column_int64(s, 0);
	if (iter <= 0 || iter > SCRAM_ITERATIONS_MAX ||
	    !column_blob_exact(s, 1, out->salt, sizeof(out->salt)) ||
	    !column_blob_exact(s, 2, out->sha1_stored_key, sizeof(out->sha1_stored_key)) ||
	    !column_blob_exact(s, 3, out->sha1_server_key, sizeof(out->sha1_server_key)) ||
	    !column_blob_exact(s, 4, out->sha256_stored_key, sizeof(out->sha256_stored_key)) ||
	    !column_blob_exact(s, 5, out->sha256_server_key, sizeof(out->sha256_server_key))) {
		log_error("storage.bad_account_row", "iterations=%lld", (long long)iter);
		scram_creds_wipe(out);
		ret = -EIO;
		goto out_release;
	}
	out->iterations = (uint32_t)iter;
	ret = 0;
out_release:
	stmt_release(s);
	return ret;
}

int storage_account_create(struct storage *st, const char *user, const struct scram_creds *c)
{
	struct db_stmt *s = st->stmt[STMT_ACCOUNT_INSERT];
	size_t len;
	int rc, ret;

	ret = check_user(user, &len);
	if (!ret)
		ret = check_creds(c);
	if (ret)
		return ret;
	rc = db_bind_text(s, 1, user, (int)len);
	if (rc == 0)
		rc = bind_creds(s, c);
	if (rc == 0)
		rc = db_bind_int64(s, 8, (int64_t)time(NULL));
	/* The primary key, not a lookup first, decides: no race with stanzactl. */
	if (rc == 0)
		rc = db_step(s);
	if (rc == DB_DONE) {
		ret = 0;
	} else if (rc == -EEXIST) {
		ret = -EEXIST;
	} else {
		ret = sql_error(st, "account_create", rc);
		if (rc == -EINVAL)
			ret = -EINVAL;
	}
	stmt_release(s);
	return ret;
}

int storage_account_set_creds(struct storage *st, const char *user, const struct scram_creds *c)
{
	struct db_stmt *s = st->stmt[STMT_ACCOUNT_UPDATE];
	size_t len;
	int rc, ret;

	ret = check_user(user, &len);
	if (!ret)
		ret = check_creds(c);
	if (ret)
		return ret;
	rc = db_bind_text(s, 1, user, (int)len);
	if (rc == 0)
		rc = bind_creds(s, c);
	if (rc == 0)
		rc = db_step(s);
	/* No row changed: there was no such account. */
	if (rc == DB_DONE) {
		ret = db_changes(st->db) ? 0 : -ENOENT;
	} else {
		ret = sql_error(st, "account_set_creds", rc);
		if (rc == -EINVAL)
			ret = -EINVAL;
	}
	stmt_release(s);
	/* New credentials: FAST tokens (XEP-0484) got with the old ones end too. */
	if (ret == 0)
		ret = fast_db_delete(st, user, NULL, -1);
	return ret;
}

int storage_account_delete(struct storage *st, const char *user)
{
	struct db_stmt *s = st->stmt[STMT_ACCOUNT_DELETE];
	size_t len;
	int rc, ret;

	ret = check_user(user, &len);
	if (ret)
		return ret;
	/* Owned rows in other tables go with it: ON DELETE CASCADE. */
	rc = db_bind_text(s, 1, user, (int)len);
	if (rc == 0)
		rc = db_step(s);
	if (rc == DB_DONE) {
		ret = db_changes(st->db) ? 0 : -ENOENT;
	} else {
		ret = sql_error(st, "account_delete", rc);
	}
	stmt_release(s);
	return ret;
}

int storage_account_list(struct storage *st, int (*fn)(void *arg, const char *user), void *arg)
{
	struct db_stmt *s = st->stmt[STMT_ACCOUNT_LIST];
	int rc, ret = 0;

	/* A nested list would reset the statement under the outer loop. */
	if (db_busy(s))
		return -EBUSY;
	while ((rc = db_step(s)) == DB_ROW) {
		const char *user = (const char *)db_column_text(s, 0);

		if (user && fn(arg, user) != 0)
			break;
	}
	if (rc != DB_ROW && rc != DB_DONE)
		ret = sql_error(st, "account_list", rc);
	stmt_release(s);
	return ret;
}

/* ---- Feature modules' statements (storage_db.h) ---- */

struct db *storage_db(struct storage *st)
{
	return st->db;
}

bool storage_on_pg(struct storage *st)
{
	return st->pg;
}

sqlite3 *storage_sqlite_db(struct storage *st)
{
	return st->pg ? NULL : db_sqlite_handle(st->db);
}

/* Slot index of a statement's SQL address (Fibonacci hashing of the pointer). */
static unsigned stmt_slot(const struct storage *st, const char *sql)
{
	uint64_t h = (uint64_t)(uintptr_t)sql * 0x9e3779b97f4a7c15ULL;
	unsigned i = (unsigned)(h >> 32) & (st->cache_cap - 1);

	while (st->cache[i].sql && st->cache[i].sql != sql)
		i = (i + 1) & (st->cache_cap - 1);
	return i;
}

/* Doubles the statement table. 0 or -ENOMEM. */
static int stmt_cache_grow(struct storage *st)
{
	struct storage_stmt_slot *old = st->cache;
	unsigned old_cap = st->cache_cap;

	st->cache_cap = old_cap ? old_cap * 2 : 64;
	st->cache = calloc(st->cache_cap, sizeof(*st->cache));
	if (!st->cache) {
		st->cache = old;
		st->cache_cap = old_cap;
		return -ENOMEM;
	}
	for (unsigned i = 0; i < old_cap; i++)
		if (old[i].sql)
			st->cache[stmt_slot(st, old[i].sql)] = old[i];
	free(old);
	return 0;
}

struct db_stmt *storage_stmt(struct storage *st, const char *sql)
{
	struct db_stmt *s;
	unsigned i;

	if (st->cache_cap) {
		i = stmt_slot(st, sql);
		if (st->cache[i].sql)
			return st->cache[i].stmt;
	}
	if ((st->ncache + 1) * 2 > st->cache_cap && stmt_cache_grow(st) < 0) {
		log_error("storage.stmt_cache", "msg=\"out of memory\"");
		return NULL;
	}
	s = db_prepare(st->db, sql);
	if (!s) {
		sql_error(st, "prepare", -EIO);
		return NULL;
	}
	i = stmt_slot(st, sql);
	st->cache[i].sql = sql;
	st->cache[i].stmt = s;
	st->ncache++;
	return s;
}

void storage_stmt_release(struct db_stmt *s)
{
	stmt_release(s);
}

int storage_db_error(struct storage *st, const char *op, int rc)
{
	return sql_error(st, op, rc);
}

int storage_stmt_exec(struct storage *st, const char *op, struct db_stmt *s)
{
	int rc = db_step(s);

	stmt_release(s);
	if (rc == DB_DONE || rc == DB_ROW)
		return 0;
	return sql_error(st, op, rc);
}
