/* SPDX-License-Identifier: MIT */
/*
 * The PostgreSQL engine of the driver layer (db.h), on libpq.
 *
 * Calls are synchronous: the store runs on its own thread (or in
 * stanzactl), never on an event loop. Each statement becomes a named
 * server-side prepared statement the first time it runs on a connection,
 * with its ?N placeholders rewritten to $N and the parameter types taken
 * from the first binding (text, int8, bytea; NULL leaves the type to the
 * server). Parameters go as text, blobs in binary; results come back as
 * text and bytea columns are decoded on access. A step runs the statement
 * and keeps the whole result, so the rows of one statement can be read
 * while others run (as SQLite allows).
 *
 * A lost connection fails the call with -ENOTCONN and logs storage.down
 * once. The transaction it was in is gone with it: every call fails until
 * the store begins a new transaction (or rolls back), which reconnects (at
 * most once a second while the server stays away, so a dead server costs
 * a batch of requests one failed connect, not one each) and logs
 * storage.up. Nothing committed is lost: a commit either returned 0 or
 * the batch failed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "db.h"
#include "log.h"

/* Type OIDs (pg_type.h is a server header; these never change). */
#define PG_BOOLOID	16
#define PG_BYTEAOID	17
#define PG_INT8OID	20
#define PG_TEXTOID	25

/* Seconds a connect may take unless the URI says otherwise. */
#define PG_CONNECT_TIMEOUT "10"
/* Between two reconnect attempts while the server stays away. */
#define PG_RETRY_NS 1000000000ULL

struct db_pg {
	struct db base;
	PGconn *conn;
	unsigned gen;		/* bumped by each reconnect: statements prepare again */
	unsigned next_id;	/* names of prepared statements */
	int changes;
	bool in_txn;		/* between BEGIN and COMMIT/ROLLBACK */
	bool broken;		/* the connection died inside a transaction */
	bool down;		/* storage.down logged, storage.up not yet */
	uint64_t retry_ns;	/* no reconnect before this (CLOCK_MONOTONIC) */
	char err[256];
};

struct pg_stmt {
	struct db_stmt base;
	const char *sql;	/* the caller's, for log lines */
	char *text;		/* with $N placeholders */
	int nparams;
	unsigned gen;		/* connection generation it is prepared in; 0: not */
	char name[16];
	Oid *types;		/* as prepared */
	Oid *hints;		/* for a NULL binding: text where the SQL needs a type */
	/* Bindings: values are owned copies, NULL for SQL NULL. */
	char **values;
	int *lengths, *formats;
	Oid *bound;
	/* The result of the last run and the row being read. */
	PGresult *res;
	int row, nrows;
	bool ran;
	/* bytea columns of the current row, decoded on first access. */
	unsigned char **blobs;
	int *blob_len;
	int ncols;
};

static struct db_pg *to_db(struct db *db)
{
	return (struct db_pg *)db;
}

static struct pg_stmt *to_s(struct db_stmt *s)
{
	return (struct pg_stmt *)s;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Keeps libpq's message (one line, no trailing newline) for db_errmsg. */
static void set_err(struct db_pg *d, const char *msg)
{
	size_t n;

	snprintf(d->err, sizeof(d->err), "%s", msg && msg[0] ? msg : "unknown error");
	n = strcspn(d->err, "\n");
	d->err[n] = '\0';
}

/* libpq prints server notices to stderr by default; the store has none to show. */
static void pg_notice(void *arg, const char *msg)
{
}

/* Appends len bytes of p to out (n bytes so far), truncating at out_size. */
static void mask_put(char *out, size_t out_size, size_t *n, const char *p, size_t len)
{
	if (*n + len >= out_size)
		len = out_size - 1 - *n;
	memcpy(out + *n, p, len);
	*n += len;
	out[*n] = '\0';
}

void db_uri_mask(const char *uri, char *out, size_t out_size)
{
	const char *auth = strstr(uri, "://");
	const char *end, *at = NULL, *colon, *pw;
	size_t n = 0;

	if (!out_size)
		return;
	out[0] = '\0';
	if (!auth) {
		mask_put(out, out_size, &n, uri, strlen(uri));
		return;
	}
	auth += 3;
	end = auth + strcspn(auth, "/?");
	/* user:password@host: the last '@' of the authority ends the userinfo. */
	for (const char *p = auth; p < end; p++)
		if (*p == '@')
			at = p;
	colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (colon) {
		mask_put(out, out_size, &n, uri, (size_t)(colon + 1 - uri));
		mask_put(out, out_size, &n, "***", 3);
		mask_put(out, out_size, &n, at, (size_t)(end - at));
	} else {
		mask_put(out, out_size, &n, uri, (size_t)(end - uri));
	}
	/* ...?password=secret&... in the query. */
	while (*end) {
		pw = strstr(end, "password=");
		if (!pw) {
			mask_put(out, out_size, &n, end, strlen(end));
			break;
		}
		mask_put(out, out_size, &n, end, (size_t)(pw + 9 - end));
		mask_put(out, out_size, &n, "***", 3);
		end = pw + 9 + strcspn(pw + 9, "&");
	}
}

/* Marks the connection gone: logged once per outage. */
static void pg_lost(struct db_pg *d)
{
	if (d->in_txn)
		d->broken = true;
	d->in_txn = false;
	if (!d->down) {
		char q[256];

		log_error("storage.down", "engine=postgresql err=%s",
			  log_sanitize(q, sizeof(q), d->err, strlen(d->err)));
		d->down = true;
	}
	d->retry_ns = 0;
}

/*
 * Maps a failed result to -errno (db.h), keeping the message. A broken
 * connection shows as CONNECTION_BAD, or as an error class the server
 * sends while it shuts down (08: connection exception, 57P: operator
 * intervention).
 */
static int pg_fail(struct db_pg *d, PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	set_err(d, res && PQresultErrorMessage(res)[0] ? PQresultErrorMessage(res) :
		PQerrorMessage(d->conn));
	if (PQstatus(d->conn) == CONNECTION_BAD ||
	    (state && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0))) {
		pg_lost(d);
		return -ENOTCONN;
	}
	if (!state)
		return -EIO;
	if (strcmp(state, "23505") == 0)
		return -EEXIST;
	if (strncmp(state, "23", 2) == 0)
		return -EINVAL;
	/* lock_not_available, serialization failure, deadlock: try again later. */
	if (strcmp(state, "55P03") == 0 || strcmp(state, "40001") == 0 ||
	    strcmp(state, "40P01") == 0)
		return -EBUSY;
	if (strcmp(state, "53100") == 0)
		return -ENOSPC;
	return -EIO;
}

/*
 * Makes sure the connection works before a call that may use it: after an
 * outage, reconnects, unless inside a lost transaction (whose calls must
 * all fail) or too soon after the last try. 0 or -ENOTCONN.
 */
static int pg_usable(struct db_pg *d)
{
	uint64_t now;

	if (d->broken)
		return -ENOTCONN;
	if (PQstatus(d->conn) == CONNECTION_OK)
		return 0;
	now = now_ns();
	if (d->retry_ns && now < d->retry_ns)
		return -ENOTCONN;
	PQreset(d->conn);
	if (PQstatus(d->conn) != CONNECTION_OK) {
		set_err(d, PQerrorMessage(d->conn));
		if (!d->down)
			pg_lost(d);
		d->retry_ns = now + PG_RETRY_NS;
		return -ENOTCONN;
	}
	d->gen++;
	d->retry_ns = 0;
	if (d->down) {
		log_info("storage.up", "engine=postgresql");
		d->down = false;
	}
	return 0;
}

/*
 * Rewrites ?N to $N outside string literals and quoted names; the highest
 * N is the parameter count. NULL on ENOMEM.
 */
static char *pg_rewrite(const char *sql, int *nparams)
{
	char *out = malloc(strlen(sql) + 1), *o = out;
	char quote = 0;

	if (!out)
		return NULL;
	*nparams = 0;
	for (const char *p = sql; *p; p++) {
		if (quote) {
			/* '' inside a literal closes and reopens it: the same. */
			if (*p == quote)
				quote = 0;
			*o++ = *p;
			continue;
		}
		if (*p == '\'' || *p == '"') {
			quote = *p;
		} else if (*p == '?' && p[1] >= '0' && p[1] <= '9') {
			int n = (int)strtol(p + 1, NULL, 10);

			if (n > *nparams)
				*nparams = n;
			*o++ = '$';
			continue;
		}
		*o++ = *p;
	}
	*o = '\0';
	return out;
}

/*
 * "$N IS NULL" alone tells the server nothing about $N's type, so when the
 * first run binds NULL there, prepare it as text (the optional filters of
 * the archive queries: "?7 IS NULL OR resource = ?7").
 */
static void pg_type_hints(struct pg_stmt *s)
{
	for (const char *p = s->text; (p = strchr(p, '$')); p++) {
		char *end;
		long n = strtol(p + 1, &end, 10);

		if (end != p + 1 && n >= 1 && n <= s->nparams && strncmp(end, " IS NULL", 8) == 0)
			s->hints[n - 1] = PG_TEXTOID;
	}
}

/* A statement's memory (nothing on the server: see pg_finalize). */
static void pg_stmt_free(struct pg_stmt *s)
{
	free(s->hints);
	free(s->types);
	free(s->values);
	free(s->lengths);
	free(s->formats);
	free(s->bound);
	free(s->text);
	free(s);
}

static struct db_stmt *pg_prepare(struct db *db, const char *sql)
{
	struct pg_stmt *s = calloc(1, sizeof(*s));
	int n;

	if (!s)
		goto err;
	s->base.db = db;
	s->sql = sql;
	s->text = pg_rewrite(sql, &s->nparams);
	if (!s->text)
		goto err_free;
	n = s->nparams ? s->nparams : 1;
	s->types = calloc((size_t)n, sizeof(*s->types));
	s->values = calloc((size_t)n, sizeof(*s->values));
	s->lengths = calloc((size_t)n, sizeof(*s->lengths));
	s->formats = calloc((size_t)n, sizeof(*s->formats));
	s->bound = calloc((size_t)n, sizeof(*s->bound));
	s->hints = calloc((size_t)n, sizeof(*s->hints));
	if (!s->types || !s->values || !s->lengths || !s->formats || !s->bound || !s->hints)
		goto err_free;
	pg_type_hints(s);
	return &s->base;

err_free:
	pg_stmt_free(s);
err:
	set_err(to_db(db), "out of memory");
	return NULL;
}

static void pg_free_blobs(struct pg_stmt *s)
{
	for (int i = 0; i < s->ncols && s->blobs; i++) {
		PQfreemem(s->blobs[i]);
		s->blobs[i] = NULL;
	}
}

static void pg_reset(struct db_stmt *bs)
{
	struct pg_stmt *s = to_s(bs);

	pg_free_blobs(s);
	free(s->blobs);
	free(s->blob_len);
	s->blobs = NULL;
	s->blob_len = NULL;
	s->ncols = 0;
	PQclear(s->res);
	s->res = NULL;
	s->ran = false;
	for (int i = 0; i < s->nparams; i++) {
		free(s->values[i]);
		s->values[i] = NULL;
		s->bound[i] = 0;
	}
}

/* Runs a command with no parameters and no rows. 0 or -errno. */
static int pg_command(struct db_pg *d, const char *sql, PGresult **keep)
{
	PGresult *res = PQexec(d->conn, sql);
	ExecStatusType rs = PQresultStatus(res);
	int ret = 0;

	if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK)
		ret = pg_fail(d, res);
	if (keep && !ret)
		*keep = res;
	else
		PQclear(res);
	return ret;
}

/*
 * The server's prepared statement is left to the end of the session: the
 * store finalizes its statements when it closes, and a round trip each
 * then could hang a shutdown on a dead network.
 */
static void pg_finalize(struct db_stmt *bs)
{
	struct pg_stmt *s = to_s(bs);

	pg_reset(bs);
	pg_stmt_free(s);
}

/* Takes a copy of a value for parameter i (1-based). */
static int pg_bind(struct db_stmt *bs, int i, const void *p, size_t len, Oid type, int format)
{
	struct pg_stmt *s = to_s(bs);
	char *v;

	if (i < 1 || i > s->nparams)
		return -ERANGE;
	i--;
	free(s->values[i]);
	s->values[i] = NULL;
	s->bound[i] = type;
	if (!p)
		return 0;
	v = malloc(len + 1);
	if (!v)
		return -ENOMEM;
	memcpy(v, p, len);
	v[len] = '\0';
	s->values[i] = v;
	s->lengths[i] = (int)len;
	s->formats[i] = format;
	return 0;
}

static int pg_bind_text(struct db_stmt *s, int i, const char *p, int len)
{
	if (!p)
		return pg_bind(s, i, NULL, 0, 0, 0);
	return pg_bind(s, i, p, len < 0 ? strlen(p) : (size_t)len, PG_TEXTOID, 0);
}

static int pg_bind_blob(struct db_stmt *s, int i, const void *p, int len)
{
	/* SQLite binds a NULL pointer as NULL; an empty blob is still a value. */
	return pg_bind(s, i, p ? p : "", p ? (size_t)len : 0, PG_BYTEAOID, 1);
}

static int pg_bind_int64(struct db_stmt *s, int i, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", (long long)v);

	return pg_bind(s, i, num, (size_t)n, PG_INT8OID, 0);
}

static int pg_bind_null(struct db_stmt *s, int i)
{
	return pg_bind(s, i, NULL, 0, 0, 0);
}

/*
 * Prepares s on this connection when it is not yet, or when a binding's
 * type differs from the one it was prepared with (the server would parse
 * the value as the old type). 0 or -errno.
 */
static int pg_ready(struct db_pg *d, struct pg_stmt *s)
{
	bool again = s->gen != d->gen || !s->gen;
	PGresult *res;
	int ret;

	for (int i = 0; i < s->nparams && !again; i++)
		again = s->bound[i] && s->types[i] && s->bound[i] != s->types[i];
	if (!again)
		return 0;
	if (s->gen == d->gen && s->gen) {
		char sql[32];

		snprintf(sql, sizeof(sql), "DEALLOCATE %s", s->name);
		ret = pg_command(d, sql, NULL);
		if (ret)
			return ret;
	}
	for (int i = 0; i < s->nparams; i++)
		if (s->bound[i])
			s->types[i] = s->bound[i];
		else if (!s->types[i])
			s->types[i] = s->hints[i];
	snprintf(s->name, sizeof(s->name), "s%u", ++d->next_id);
	res = PQprepare(d->conn, s->name, s->text, s->nparams, s->types);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		ret = pg_fail(d, res);
		PQclear(res);
		s->gen = 0;
		return ret;
	}
	PQclear(res);
	s->gen = d->gen;
	return 0;
}

/* Rows changed by a command, as sqlite3_changes counts them (DML only). */
static void pg_count_changes(struct db_pg *d, PGresult *res)
{
	const char *tag = PQcmdStatus(res);

	if (strncmp(tag, "INSERT", 6) == 0 || strncmp(tag, "UPDATE", 6) == 0 ||
	    strncmp(tag, "DELETE", 6) == 0)
		d->changes = atoi(PQcmdTuples(res));
}

static int pg_step(struct db_stmt *bs)
{
	struct pg_stmt *s = to_s(bs);
	struct db_pg *d = to_db(bs->db);
	ExecStatusType rs;
	PGresult *res;
	int ret;

	if (s->ran) {
		pg_free_blobs(s);
		if (s->res && ++s->row < s->nrows)
			return DB_ROW;
		return DB_DONE;
	}
	s->ran = true;
	ret = pg_usable(d);
	if (!ret)
		ret = pg_ready(d, s);
	if (ret)
		return ret;
	res = PQexecPrepared(d->conn, s->name, s->nparams, (const char *const *)s->values,
			     s->lengths, s->formats, 0);
	rs = PQresultStatus(res);
	if (rs == PGRES_COMMAND_OK) {
		pg_count_changes(d, res);
		PQclear(res);
		return DB_DONE;
	}
	if (rs != PGRES_TUPLES_OK) {
		ret = pg_fail(d, res);
		PQclear(res);
		return ret;
	}
	pg_count_changes(d, res);
	s->res = res;
	s->row = 0;
	s->nrows = PQntuples(res);
	s->ncols = PQnfields(res);
	if (s->ncols) {
		s->blobs = calloc((size_t)s->ncols, sizeof(*s->blobs));
		s->blob_len = calloc((size_t)s->ncols, sizeof(*s->blob_len));
		if (!s->blobs || !s->blob_len) {
			set_err(d, "out of memory");
			return -ENOMEM;
		}
	}
	return s->nrows ? DB_ROW : DB_DONE;
}

static bool pg_busy(struct db_stmt *bs)
{
	return to_s(bs)->ran;
}

/* True when col of the current row can be read. */
static bool pg_has(struct pg_stmt *s, int col)
{
	return s->res && s->row < s->nrows && col >= 0 && col < s->ncols;
}

static int pg_column_count(struct db_stmt *bs)
{
	struct pg_stmt *s = to_s(bs);

	return s->res ? s->ncols : 0;
}

static bool pg_column_is_null(struct db_stmt *bs, int col)
{
	struct pg_stmt *s = to_s(bs);

	return !pg_has(s, col) || PQgetisnull(s->res, s->row, col);
}

static const unsigned char *pg_column_text(struct db_stmt *bs, int col)
{
	struct pg_stmt *s = to_s(bs);

	if (pg_column_is_null(bs, col))
		return NULL;
	return (const unsigned char *)PQgetvalue(s->res, s->row, col);
}

static const void *pg_column_blob(struct db_stmt *bs, int col)
{
	struct pg_stmt *s = to_s(bs);
	size_t len;

	if (pg_column_is_null(bs, col))
		return NULL;
	if (PQftype(s->res, col) != PG_BYTEAOID)
		return PQgetvalue(s->res, s->row, col);
	if (!s->blobs[col]) {
		s->blobs[col] = PQunescapeBytea((const unsigned char *)PQgetvalue(s->res, s->row, col),
						&len);
		if (!s->blobs[col])
			return NULL;
		s->blob_len[col] = (int)len;
	}
	return s->blobs[col];
}

static int pg_column_bytes(struct db_stmt *bs, int col)
{
	struct pg_stmt *s = to_s(bs);

	if (pg_column_is_null(bs, col))
		return 0;
	if (PQftype(s->res, col) == PG_BYTEAOID)
		return pg_column_blob(bs, col) ? s->blob_len[col] : 0;
	return PQgetlength(s->res, s->row, col);
}

static int64_t pg_column_int64(struct db_stmt *bs, int col)
{
	struct pg_stmt *s = to_s(bs);
	const char *v;

	if (pg_column_is_null(bs, col))
		return 0;
	v = PQgetvalue(s->res, s->row, col);
	/* A comparison in a select list is a boolean here, 0 or 1 in SQLite. */
	if (PQftype(s->res, col) == PG_BOOLOID)
		return v[0] == 't';
	return strtoll(v, NULL, 10);
}

static int pg_changes(struct db *db)
{
	return to_db(db)->changes;
}

static int pg_exec(struct db *db, const char *script)
{
	struct db_pg *d = to_db(db);
	int ret = pg_usable(d);

	return ret ? ret : pg_command(d, script, NULL);
}

static int pg_begin(struct db_pg *d)
{
	int ret;

	/* A new transaction: what the lost one did is gone, a reconnect may follow. */
	d->broken = false;
	d->in_txn = false;
	ret = pg_usable(d);
	if (!ret)
		ret = pg_command(d, "BEGIN", NULL);
	/* Nothing ran yet: a connection that died while idle gets one more try. */
	if (ret == -ENOTCONN) {
		d->broken = false;
		d->retry_ns = 0;
		ret = pg_usable(d);
		if (!ret)
			ret = pg_command(d, "BEGIN", NULL);
	}
	d->in_txn = ret == 0;
	return ret;
}

static int pg_txn(struct db *db, enum db_txn verb)
{
	struct db_pg *d = to_db(db);
	PGresult *res = NULL;
	int ret;

	switch (verb) {
	case DB_BEGIN:
		return pg_begin(d);
	case DB_COMMIT:
		if (d->broken)
			return -ENOTCONN;
		ret = pg_command(d, "COMMIT", &res);
		/* COMMIT of a transaction that failed answers ROLLBACK, not an error. */
		if (!ret && strcmp(PQcmdStatus(res), "ROLLBACK") == 0) {
			set_err(d, "the transaction failed and was rolled back");
			ret = -EIO;
		}
		PQclear(res);
		d->in_txn = false;
		return ret;
	case DB_ROLLBACK:
		d->in_txn = false;
		if (d->broken) {
			d->broken = false;
			return 0;
		}
		return PQstatus(d->conn) == CONNECTION_OK ? pg_command(d, "ROLLBACK", NULL) : 0;
	case DB_SAVEPOINT:
		return d->broken ? -ENOTCONN : pg_command(d, "SAVEPOINT req", NULL);
	case DB_RELEASE:
		return d->broken ? -ENOTCONN : pg_command(d, "RELEASE SAVEPOINT req", NULL);
	case DB_ROLLBACK_TO:
		return d->broken ? -ENOTCONN : pg_command(d, "ROLLBACK TO SAVEPOINT req", NULL);
	}
	return -EINVAL;
}

static bool pg_in_transaction(struct db *db)
{
	struct db_pg *d = to_db(db);

	return d->in_txn && !d->broken && PQstatus(d->conn) == CONNECTION_OK;
}

static const char *pg_errmsg(struct db *db)
{
	return to_db(db)->err;
}

static bool pg_is_lost(struct db *db)
{
	return to_db(db)->down;
}

static void pg_close(struct db *db)
{
	struct db_pg *d = to_db(db);

	PQfinish(d->conn);
	free(d);
}

static const struct db_ops db_pg_ops = {
	.name = "postgresql",
	.prepare = pg_prepare,
	.finalize = pg_finalize,
	.bind_text = pg_bind_text,
	.bind_blob = pg_bind_blob,
	.bind_int64 = pg_bind_int64,
	.bind_null = pg_bind_null,
	.step = pg_step,
	.reset = pg_reset,
	.busy = pg_busy,
	.column_count = pg_column_count,
	.column_is_null = pg_column_is_null,
	.column_text = pg_column_text,
	.column_blob = pg_column_blob,
	.column_bytes = pg_column_bytes,
	.column_int64 = pg_column_int64,
	.changes = pg_changes,
	.exec = pg_exec,
	.txn = pg_txn,
	.in_transaction = pg_in_transaction,
	.errmsg = pg_errmsg,
	.lost = pg_is_lost,
	.close = pg_close,
};

int db_pg_connect(struct db **out, const char *uri, char *why, size_t why_size)
{
	/*
	 * Later keywords win: the URI (expanded from dbname) can set its own
	 * timeouts; UTF-8 is what the store speaks whatever the URI says. The
	 * keepalives and the TCP user timeout make a server that vanished
	 * from the network (no reset) fail the call in about half a minute
	 * instead of blocking the storage thread for the kernel's minutes.
	 */
	static const char *const keys[] = {
		"connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count",
		"tcp_user_timeout", "application_name", "dbname", "client_encoding", NULL,
	};
	const char *values[] = {
		PG_CONNECT_TIMEOUT, "10", "5", "3", "30000", "stanzad", uri, "UTF8", NULL,
	};
	struct db_pg *d;

	*out = NULL;
	d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(why, why_size, "out of memory");
		return -ENOMEM;
	}
	d->base.ops = &db_pg_ops;
	d->gen = 1;
	d->conn = PQconnectdbParams(keys, values, 1);
	if (!d->conn) {
		free(d);
		snprintf(why, why_size, "out of memory");
		return -ENOMEM;
	}
	if (PQstatus(d->conn) != CONNECTION_OK) {
		set_err(d, PQerrorMessage(d->conn));
		snprintf(why, why_size, "cannot connect: %s", d->err);
		PQfinish(d->conn);
		free(d);
		return -ECONNREFUSED;
	}
	PQsetNoticeProcessor(d->conn, pg_notice, NULL);
	*out = &d->base;
	return 0;
}
