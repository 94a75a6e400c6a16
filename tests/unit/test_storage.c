/* SPDX-License-Identifier: MIT */
/*
 * Storage: the SQLite store (open, migrations, permissions, accounts) and
 * the asynchronous queue (inboxes, group commit, PLAIN checks, wiping,
 * clean stop). Every test works in its own fresh temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "log.h"
#include "pubsub_store.h"
#include "storage.h"

/* Long enough for a few dozen PBKDF2 rounds under valgrind. */
#define WAIT_TIMEOUT_MS 60000

struct fixture {
	char root[64];		/* mkdtemp directory, removed afterwards */
	char dir[96];		/* state dir, does not exist at first */
	char db[128];		/* dir/stanzad.db */
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->root, "/tmp/test_storage.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
	snprintf(f->db, sizeof(f->db), "%s/%s", f->dir, STORAGE_DB_FILE);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	/* A test may have left the directory unwritable on purpose. */
	chmod(f->dir, 0700);
	nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct storage *open_ok(struct fixture *f)
{
	struct storage *st = NULL;

	assert_int_equal(storage_open(&st, f->dir), 0);
	assert_non_null(st);
	return st;
}

/* Credentials with recognizable bytes, no PBKDF2 needed. */
static void fake_creds(struct scram_creds *c, uint8_t seed)
{
	memset(c, 0, sizeof(*c));
	c->iterations = 4096 + seed;
	memset(c->salt, seed, sizeof(c->salt));
	memset(c->sha1_stored_key, seed + 1, sizeof(c->sha1_stored_key));
	memset(c->sha1_server_key, seed + 2, sizeof(c->sha1_server_key));
	memset(c->sha256_stored_key, seed + 3, sizeof(c->sha256_stored_key));
	memset(c->sha256_server_key, seed + 4, sizeof(c->sha256_server_key));
}

/* Runs SQL on a second connection, as another process would. */
static void raw_exec(const char *db_path, const char *sql)
{
	sqlite3 *db;

	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, STORAGE_BUSY_TIMEOUT_MS);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static int raw_int(const char *db_path, const char *sql)
{
	sqlite3_stmt *s;
	sqlite3 *db;
	int v;

	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

/* ---- Opening and migrations ---- */

static void test_open_creates_dir_0700_and_db_0600(void **state)
{
	struct fixture *f = *state;
	struct storage *st;
	struct stat sb;

	umask(022);
	st = open_ok(f);
	assert_int_equal(stat(f->dir, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0700);
	assert_int_equal(stat(f->db, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	storage_close(st);
}

static void test_open_migrates_to_latest_in_wal_mode(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	sqlite3_stmt *s;
	sqlite3 *db;

	assert_true(storage_schema_latest() >= 1);
	assert_int_equal(storage_schema_version(st), storage_schema_latest());
	assert_int_equal(raw_int(f->db, "PRAGMA user_version"), storage_schema_latest());
	assert_int_equal(raw_int(f->db, "PRAGMA application_id"), 0x53544e5a);

	/* WAL mode is persistent: a second connection sees it. */
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	sqlite3_close(db);
	storage_close(st);
}

static void test_reopen_keeps_accounts(void **state)
{
	struct fixture *f = *state;
	struct scram_creds c, got;
	struct storage *st;

	fake_creds(&c, 7);
	st = open_ok(f);
	assert_int_equal(storage_account_create(st, "alice", &c), 0);
	storage_close(st);

	st = open_ok(f);
	assert_int_equal(storage_schema_version(st), storage_schema_latest());
	assert_int_equal(storage_account_get(st, "alice", &got), 0);
	assert_memory_equal(&got, &c, sizeof(c));
	storage_close(st);
}

static void test_open_refuses_newer_schema(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	char sql[64], why[512];

	storage_close(st);
	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", storage_schema_latest() + 1);
	raw_exec(f->db, sql);

	assert_int_equal(storage_open_why(&st, f->dir, why, sizeof(why)), -EPROTO);
	assert_null(st);
	assert_non_null(strstr(why, f->db));
	assert_non_null(strstr(why, "newer"));
	/* Refused, not downgraded. */
	assert_int_equal(raw_int(f->db, "PRAGMA user_version"), storage_schema_latest() + 1);
}

static void test_open_refuses_garbage_file(void **state)
{
	struct fixture *f = *state;
	struct storage *st;
	char junk[8192], why[512];
	int fd;

	assert_int_equal(mkdir(f->dir, 0700), 0);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 131 + 7);
	fd = open(f->db, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);

	assert_int_equal(storage_open_why(&st, f->dir, why, sizeof(why)), -EBADMSG);
	assert_null(st);
	assert_non_null(strstr(why, f->db));
	assert_non_null(strstr(why, "not an SQLite database"));
}

static void test_open_refuses_foreign_sqlite_database(void **state)
{
	struct fixture *f = *state;
	struct storage *st;
	char why[512];
	int fd;

	assert_int_equal(mkdir(f->dir, 0700), 0);
	fd = open(f->db, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	close(fd);
	raw_exec(f->db, "CREATE TABLE photos (id INTEGER PRIMARY KEY)");

	assert_int_equal(storage_open_why(&st, f->dir, why, sizeof(why)), -EBADMSG);
	assert_non_null(strstr(why, "not a stanzad"));
	/* Left as it was: still in its original journal mode. */
	assert_int_equal(raw_int(f->db, "SELECT count(*) FROM photos"), 0);
}

static void test_open_refuses_db_writable_by_others(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	char why[512];

	storage_close(st);
	assert_int_equal(chmod(f->db, 0620), 0);
	assert_int_equal(storage_open_why(&st, f->dir, why, sizeof(why)), -EPERM);
	assert_non_null(strstr(why, "writable"));
	assert_int_equal(chmod(f->db, 0602), 0);
	assert_int_equal(storage_open_why(&st, f->dir, why, sizeof(why)), -EPERM);
	assert_int_equal(chmod(f->db, 0600), 0);
	st = open_ok(f);
	storage_close(st);
}

static void test_open_refuses_dir_writable_by_others(void **state)
{
	struct fixture *f = *state;
	struct storage *st;
	char why[512];

	assert_int_equal(mkdir(f->dir, 0700), 0);
	assert_int_equal(chmod(f->dir, 0777), 0);
	assert_int_equal(storage_open_why(&st, f->dir, why, sizeof(why)), -EPERM);
	assert_non_null(strstr(why, f->dir));
	/* Nothing was created in it. */
	assert_int_equal(access(f->db, F_OK), -1);
}

static void test_open_refuses_symlinked_db(void **state)
{
	struct fixture *f = *state;
	char target[160], why[512];
	struct storage *st;

	assert_int_equal(mkdir(f->dir, 0700), 0);
	snprintf(target, sizeof(target), "%s/elsewhere.db", f->root);
	assert_int_equal(symlink(target, f->db), 0);
	assert_int_equal(storage_open_why(&st, f->dir, why, sizeof(why)), -ELOOP);
	assert_int_equal(access(target, F_OK), -1);
}

static void test_open_refuses_state_dir_that_is_a_file(void **state)
{
	struct fixture *f = *state;
	struct storage *st;
	char why[512];
	int fd;

	fd = open(f->dir, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(storage_open_why(&st, f->dir, why, sizeof(why)), -ENOTDIR);
	assert_int_equal(storage_open_why(&st, "", why, sizeof(why)), -EINVAL);
}

static void test_open_fails_cleanly_without_parent(void **state)
{
	struct fixture *f = *state;
	struct storage *st;
	char dir[160], why[512];

	snprintf(dir, sizeof(dir), "%s/no/such/dir", f->root);
	assert_int_equal(storage_open_why(&st, dir, why, sizeof(why)), -ENOENT);
	assert_non_null(strstr(why, "cannot create state directory"));
}

/* ---- Accounts ---- */

static void test_account_create_get_roundtrip(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct scram_creds a, b, got;

	fake_creds(&a, 1);
	fake_creds(&b, 50);
	assert_int_equal(storage_account_create(st, "alice", &a), 0);
	assert_int_equal(storage_account_create(st, "bob", &b), 0);
	assert_int_equal(storage_account_get(st, "alice", &got), 0);
	assert_memory_equal(&got, &a, sizeof(a));
	assert_int_equal(storage_account_get(st, "bob", &got), 0);
	assert_memory_equal(&got, &b, sizeof(b));
	storage_close(st);
}

static void test_account_duplicate_create_is_eexist(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct scram_creds a, b, got;

	fake_creds(&a, 1);
	fake_creds(&b, 2);
	assert_int_equal(storage_account_create(st, "alice", &a), 0);
	assert_int_equal(storage_account_create(st, "alice", &b), -EEXIST);
	/* The first credentials survive. */
	assert_int_equal(storage_account_get(st, "alice", &got), 0);
	assert_memory_equal(&got, &a, sizeof(a));
	storage_close(st);
}

static void test_account_missing_is_enoent(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct scram_creds c;

	fake_creds(&c, 1);
	assert_int_equal(storage_account_get(st, "nobody", &c), -ENOENT);
	assert_int_equal(storage_account_set_creds(st, "nobody", &c), -ENOENT);
	assert_int_equal(storage_account_delete(st, "nobody"), -ENOENT);
	/* Usernames are compared byte for byte: callers normalize. */
	assert_int_equal(storage_account_create(st, "alice", &c), 0);
	assert_int_equal(storage_account_get(st, "Alice", &c), -ENOENT);
	storage_close(st);
}

static void test_account_set_creds_replaces(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct scram_creds a, b, got;

	fake_creds(&a, 1);
	fake_creds(&b, 9);
	assert_int_equal(storage_account_create(st, "alice", &a), 0);
	assert_int_equal(storage_account_set_creds(st, "alice", &b), 0);
	assert_int_equal(storage_account_get(st, "alice", &got), 0);
	assert_memory_equal(&got, &b, sizeof(b));
	storage_close(st);
}

static void test_account_delete_removes_owned_rows(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct scram_creds c;

	fake_creds(&c, 1);
	assert_int_equal(storage_account_create(st, "alice", &c), 0);
	assert_int_equal(storage_account_create(st, "bob", &c), 0);
	/* A table like the ones later features add, owned by accounts. */
	raw_exec(f->db,
		 "CREATE TABLE owned (username TEXT NOT NULL REFERENCES accounts(username)"
		 " ON DELETE CASCADE, item TEXT);"
		 "INSERT INTO owned VALUES ('alice', 'x'), ('alice', 'y'), ('bob', 'z');");
	assert_int_equal(storage_account_delete(st, "alice"), 0);
	assert_int_equal(storage_account_get(st, "alice", &c), -ENOENT);
	assert_int_equal(raw_int(f->db, "SELECT count(*) FROM owned WHERE username = 'alice'"), 0);
	assert_int_equal(raw_int(f->db, "SELECT count(*) FROM owned WHERE username = 'bob'"), 1);
	assert_int_equal(storage_account_delete(st, "alice"), -ENOENT);
	storage_close(st);
}

struct list_ctx {
	char names[8][16];
	int n;
	int stop_after;
};

static int list_cb(void *arg, const char *user)
{
	struct list_ctx *l = arg;

	assert_true(l->n < 8);
	snprintf(l->names[l->n], sizeof(l->names[0]), "%s", user);
	l->n++;
	return l->n == l->stop_after;
}

static void test_account_list_in_order_and_stops_early(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct list_ctx l = { .stop_after = -1 };
	struct scram_creds c;

	fake_creds(&c, 1);
	assert_int_equal(storage_account_list(st, list_cb, &l), 0);
	assert_int_equal(l.n, 0);
	assert_int_equal(storage_account_create(st, "carol", &c), 0);
	assert_int_equal(storage_account_create(st, "alice", &c), 0);
	assert_int_equal(storage_account_create(st, "bob", &c), 0);
	assert_int_equal(storage_account_list(st, list_cb, &l), 0);
	assert_int_equal(l.n, 3);
	assert_string_equal(l.names[0], "alice");
	assert_string_equal(l.names[1], "bob");
	assert_string_equal(l.names[2], "carol");

	memset(&l, 0, sizeof(l));
	l.stop_after = 2;
	assert_int_equal(storage_account_list(st, list_cb, &l), 0);
	assert_int_equal(l.n, 2);
	/* The statement was reset: a new listing starts from the top. */
	memset(&l, 0, sizeof(l));
	l.stop_after = -1;
	assert_int_equal(storage_account_list(st, list_cb, &l), 0);
	assert_int_equal(l.n, 3);
	storage_close(st);
}

static void test_account_rejects_bad_arguments(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	char huge[STORAGE_USER_MAX + 2];
	struct scram_creds c;

	fake_creds(&c, 1);
	memset(huge, 'a', sizeof(huge) - 1);
	huge[sizeof(huge) - 1] = '\0';
	assert_int_equal(storage_account_create(st, "", &c), -EINVAL);
	assert_int_equal(storage_account_create(st, NULL, &c), -EINVAL);
	assert_int_equal(storage_account_create(st, huge, &c), -EINVAL);
	assert_int_equal(storage_account_get(st, huge, &c), -EINVAL);
	huge[STORAGE_USER_MAX] = '\0';
	assert_int_equal(storage_account_create(st, huge, &c), 0);

	c.iterations = 0;
	assert_int_equal(storage_account_create(st, "zero", &c), -EINVAL);
	c.iterations = SCRAM_ITERATIONS_MAX + 1;
	assert_int_equal(storage_account_set_creds(st, huge, &c), -EINVAL);
	storage_close(st);
}

static void test_account_bad_stored_row_is_eio(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct scram_creds c;

	fake_creds(&c, 1);
	assert_int_equal(storage_account_create(st, "alice", &c), 0);
	raw_exec(f->db, "UPDATE accounts SET salt = x'0102' WHERE username = 'alice'");
	assert_int_equal(storage_account_get(st, "alice", &c), -EIO);
	raw_exec(f->db, "UPDATE accounts SET salt = zeroblob(16), iterations = 99999999"
			" WHERE username = 'alice'");
	assert_int_equal(storage_account_get(st, "alice", &c), -EIO);
	storage_close(st);
}

static void test_savepoint_undo_keeps_rest_of_batch(void **state)
{
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct scram_creds c;

	fake_creds(&c, 1);
	assert_int_equal(storage_begin(st), 0);
	assert_true(storage_in_batch(st));
	assert_int_equal(storage_account_create(st, "kept", &c), 0);
	assert_int_equal(storage_savepoint(st), 0);
	assert_int_equal(storage_account_create(st, "undone", &c), 0);
	assert_int_equal(storage_savepoint_undo(st), 0);
	assert_int_equal(storage_savepoint(st), 0);
	assert_int_equal(storage_account_create(st, "released", &c), 0);
	assert_int_equal(storage_savepoint_release(st), 0);
	assert_int_equal(storage_commit(st), 0);
	assert_false(storage_in_batch(st));
	storage_close(st);

	st = open_ok(f);
	assert_int_equal(storage_account_get(st, "kept", &c), 0);
	assert_int_equal(storage_account_get(st, "released", &c), 0);
	assert_int_equal(storage_account_get(st, "undone", &c), -ENOENT);

	assert_int_equal(storage_begin(st), 0);
	assert_int_equal(storage_account_delete(st, "kept"), 0);
	storage_rollback(st);
	storage_rollback(st);	/* harmless twice */
	assert_int_equal(storage_account_get(st, "kept", &c), 0);
	storage_close(st);
}

struct lock_holder {
	const char *db_path;
	sqlite3 *db;
};

/* Takes the write lock as stanzactl would in the middle of a transaction. */
static void hold_write_lock(struct lock_holder *h)
{
	assert_int_equal(sqlite3_open(h->db_path, &h->db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h->db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
}

static void release_write_lock(struct lock_holder *h)
{
	assert_int_equal(sqlite3_exec(h->db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h->db);
}

static void test_locked_store_opens_reads_and_writes_fail_busy(void **state)
{
	struct fixture *f = *state;
	struct lock_holder lock = { .db_path = f->db };
	struct storage *st = open_ok(f);
	struct scram_creds c;

	fake_creds(&c, 1);
	assert_int_equal(storage_account_create(st, "alice", &c), 0);
	storage_close(st);

	/* Another process in a long write: opening and reading still work. */
	hold_write_lock(&lock);
	st = open_ok(f);
	storage_set_busy_timeout(st, 50);
	assert_int_equal(storage_account_get(st, "alice", &c), 0);
	assert_int_equal(storage_account_create(st, "bob", &c), -EBUSY);
	assert_int_equal(storage_begin(st), -EBUSY);
	release_write_lock(&lock);
	assert_int_equal(storage_account_create(st, "bob", &c), 0);
	storage_close(st);
}

/* ---- The queue ---- */

struct test_req {
	struct storage_req req;
	int done_calls;
	pthread_t done_thread;
	bool password_zero;
	int *completed;		/* shared counter */
};

static void test_done(struct storage_req *req)
{
	struct test_req *t = req->arg;
	bool zero = true;

	for (size_t i = 0; i < sizeof(req->password); i++)
		zero &= req->password[i] == 0;
	t->password_zero = zero;
	t->done_calls++;
	t->done_thread = pthread_self();
	(*t->completed)++;
}

static void req_init(struct test_req *t, struct storage_inbox *in, int *completed,
		     enum storage_op op, const char *user, const char *password)
{
	memset(t, 0, sizeof(*t));
	t->req.op = op;
	t->req.result = 12345;	/* must be overwritten */
	t->req.inbox = in;
	t->req.done = test_done;
	t->req.arg = t;
	snprintf(t->req.user, sizeof(t->req.user), "%s", user);
	if (password)
		snprintf(t->req.password, sizeof(t->req.password), "%s", password);
	t->completed = completed;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on the inbox's eventfd and drains until `want` completions ran. */
static void wait_completions(struct storage_inbox *in, int *completed, int want)
{
	long deadline = now_ms() + WAIT_TIMEOUT_MS;

	while (*completed < want) {
		struct pollfd p = { .fd = in->eventfd, .events = POLLIN };
		long left = deadline - now_ms();
		int n;

		assert_true(left > 0);
		n = poll(&p, 1, (int)left);
		assert_true(n >= 0);
		if (n == 1)
			storage_inbox_drain(in);
	}
	assert_int_equal(*completed, want);
}

static struct storage_queue *queue_ok(struct fixture *f)
{
	struct storage_queue *q;

	assert_int_equal(storage_queue_start(&q, open_ok(f)), 0);
	return q;
}

static void test_inbox_eventfd_is_nonblocking_cloexec(void **state)
{
	struct storage_inbox in;
	uint64_t v;

	assert_int_equal(storage_inbox_init(&in), 0);
	assert_true(fcntl(in.eventfd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(in.eventfd, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(read(in.eventfd, &v, sizeof(v)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(storage_inbox_drain(&in), 0);
	storage_inbox_destroy(&in);
}

static void test_queue_many_requests_complete_on_draining_thread(void **state)
{
	enum { N = 16 };
	struct fixture *f = *state;
	struct storage_queue *q = queue_ok(f);
	struct test_req *creates = calloc(N, sizeof(*creates));
	struct test_req *gets = calloc(N, sizeof(*gets));
	struct storage_inbox in;
	int completed = 0;
	char name[32];
	uint64_t v;

	assert_non_null(creates);
	assert_non_null(gets);
	assert_int_equal(storage_inbox_init(&in), 0);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "user%02d", i);
		req_init(&creates[i], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, name, "secret");
		storage_queue_submit(q, &creates[i].req);
	}
	/* Queued after the creates: each must see its account. */
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "user%02d", i);
		req_init(&gets[i], &in, &completed, STORAGE_OP_ACCOUNT_GET, name, NULL);
		storage_queue_submit(q, &gets[i].req);
	}
	wait_completions(&in, &completed, 2 * N);

	for (int i = 0; i < N; i++) {
		assert_int_equal(creates[i].req.result, 0);
		assert_int_equal(creates[i].done_calls, 1);
		assert_true(pthread_equal(creates[i].done_thread, pthread_self()));
		assert_int_equal(gets[i].req.result, 0);
		assert_int_equal(gets[i].done_calls, 1);
		assert_true(pthread_equal(gets[i].done_thread, pthread_self()));
		/* What GET returns is what CREATE derived and stored. */
		assert_int_equal(gets[i].req.creds.iterations, SCRAM_ITERATIONS);
		assert_memory_equal(&gets[i].req.creds, &creates[i].req.creds,
				    sizeof(struct scram_creds));
	}
	/* Everything was drained: the counter is reset, nothing is left. */
	assert_int_equal(read(in.eventfd, &v, sizeof(v)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(storage_inbox_drain(&in), 0);

	storage_queue_stop(q);
	storage_inbox_destroy(&in);
	free(creates);
	free(gets);
}

/* After the queue is gone (the end of a shutdown): completed at once, password wiped. */
static void test_submit_without_queue_completes_with_eshutdown(void **state)
{
	struct storage_inbox in;
	struct test_req t;
	int completed = 0;

	(void)state;
	assert_int_equal(storage_inbox_init(&in), 0);
	req_init(&t, &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "late", "secret");
	storage_queue_submit(NULL, &t.req);
	assert_int_equal(storage_queue_submitted(NULL), 0);
	assert_int_equal(storage_queue_failed(NULL), 0);
	wait_completions(&in, &completed, 1);
	assert_int_equal(t.req.result, -ESHUTDOWN);
	assert_int_equal(t.done_calls, 1);
	assert_true(t.password_zero);
	storage_inbox_destroy(&in);
}

static void wait_taken(struct storage_queue *q, uint64_t requests)
{
	long deadline = now_ms() + WAIT_TIMEOUT_MS;
	struct storage_queue_stats s;

	for (;;) {
		storage_queue_get_stats(q, &s);
		if (s.requests >= requests)
			return;
		assert_true(now_ms() < deadline);
		usleep(1000);
	}
}

static void test_queue_group_commit_survives_failing_request(void **state)
{
	struct fixture *f = *state;
	struct storage_queue *q = queue_ok(f);
	struct lock_holder lock = { .db_path = f->db };
	struct test_req r[7];
	struct storage_queue_stats s0, s1;
	struct storage_inbox in;
	struct scram_creds c;
	struct storage *st;
	int completed = 0;

	assert_int_equal(storage_inbox_init(&in), 0);
	req_init(&r[0], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "dup", "pw0");
	storage_queue_submit(q, &r[0].req);
	wait_completions(&in, &completed, 1);
	assert_int_equal(r[0].req.result, 0);

	/*
	 * Hold the write lock so the thread blocks on a lone GET (waiting out
	 * the lock like it would for stanzactl); everything submitted
	 * meanwhile must then form one batch.
	 */
	hold_write_lock(&lock);
	req_init(&r[1], &in, &completed, STORAGE_OP_ACCOUNT_GET, "dup", NULL);
	storage_queue_submit(q, &r[1].req);
	wait_taken(q, 2);
	storage_queue_get_stats(q, &s0);

	req_init(&r[2], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "first", "pw1");
	req_init(&r[3], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "dup", "pw2");
	req_init(&r[4], &in, &completed, STORAGE_OP_ACCOUNT_DELETE, "ghost", NULL);
	req_init(&r[5], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "second", "pw3");
	req_init(&r[6], &in, &completed, STORAGE_OP_ACCOUNT_GET, "first", NULL);
	for (int i = 2; i < 7; i++)
		storage_queue_submit(q, &r[i].req);
	usleep(20000);
	release_write_lock(&lock);
	wait_completions(&in, &completed, 7);

	assert_int_equal(r[1].req.result, 0);
	assert_int_equal(r[2].req.result, 0);
	assert_int_equal(r[3].req.result, -EEXIST);
	assert_int_equal(r[4].req.result, -ENOENT);
	assert_int_equal(r[5].req.result, 0);
	assert_int_equal(r[6].req.result, 0);	/* sees the batch's own write */

	storage_queue_get_stats(q, &s1);
	/* s0 counted the lone GET's batch; the five came as one more. */
	assert_int_equal(s1.batches - s0.batches, 1);
	assert_int_equal(s1.requests - s0.requests, 5);
	assert_int_equal(s1.commits - s0.commits, 2);	/* the GET's and the five's */
	assert_int_equal(s1.fallbacks, 0);
	assert_int_equal(s1.failures, 0);
	storage_queue_stop(q);
	storage_inbox_destroy(&in);

	/* Durable, and the failed duplicate did not overwrite the original. */
	st = open_ok(f);
	assert_int_equal(storage_account_get(st, "first", &c), 0);
	assert_int_equal(storage_account_get(st, "second", &c), 0);
	assert_int_equal(storage_account_get(st, "dup", &c), 0);
	assert_memory_equal(&c, &r[0].req.creds, sizeof(c));
	storage_close(st);
}

static void test_queue_lost_batch_is_redone_one_by_one(void **state)
{
	struct fixture *f = *state;
	struct lock_holder lock = { .db_path = f->db };
	struct storage_queue_stats stats;
	struct storage_queue *q;
	struct storage_inbox in;
	struct scram_creds c;
	struct test_req r[4];
	struct storage *st;
	int completed = 0;

	st = open_ok(f);
	storage_close(st);
	/* Inserting this name makes SQLite abandon the whole transaction. */
	raw_exec(f->db, "CREATE TRIGGER poison BEFORE INSERT ON accounts"
			" WHEN NEW.username = 'poison'"
			" BEGIN SELECT RAISE(ROLLBACK, 'poisoned'); END");
	q = queue_ok(f);
	assert_int_equal(storage_inbox_init(&in), 0);

	/* One batch, as in the group commit test. */
	hold_write_lock(&lock);
	req_init(&r[0], &in, &completed, STORAGE_OP_ACCOUNT_GET, "x", NULL);
	storage_queue_submit(q, &r[0].req);
	wait_taken(q, 1);
	req_init(&r[1], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "before", "pw");
	req_init(&r[2], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "poison", "pw");
	req_init(&r[3], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "after", "pw");
	for (int i = 1; i < 4; i++)
		storage_queue_submit(q, &r[i].req);
	release_write_lock(&lock);
	wait_completions(&in, &completed, 4);

	assert_int_equal(r[0].req.result, -ENOENT);
	assert_int_equal(r[1].req.result, 0);
	assert_true(r[2].req.result < 0);
	assert_int_equal(r[3].req.result, 0);
	storage_queue_get_stats(q, &stats);
	assert_int_equal(stats.fallbacks, 1);
	storage_queue_stop(q);
	storage_inbox_destroy(&in);

	st = open_ok(f);
	assert_int_equal(storage_account_get(st, "before", &c), 0);
	assert_int_equal(storage_account_get(st, "after", &c), 0);
	assert_int_equal(storage_account_get(st, "poison", &c), -ENOENT);
	storage_close(st);
}

static void test_queue_lock_held_too_long_fails_busy_without_hanging(void **state)
{
	struct fixture *f = *state;
	struct lock_holder lock = { .db_path = f->db };
	struct storage_queue_stats stats;
	struct storage_queue *q;
	struct storage *st = open_ok(f);
	struct storage_inbox in;
	struct test_req r[3];
	int completed = 0;
	long t0;

	storage_set_busy_timeout(st, 20);
	assert_int_equal(storage_queue_start(&q, st), 0);
	assert_int_equal(storage_inbox_init(&in), 0);
	hold_write_lock(&lock);
	req_init(&r[0], &in, &completed, STORAGE_OP_ACCOUNT_DELETE, "a", NULL);
	req_init(&r[1], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "b", "pw");
	req_init(&r[2], &in, &completed, STORAGE_OP_ACCOUNT_DELETE, "c", NULL);
	t0 = now_ms();
	for (int i = 0; i < 3; i++)
		storage_queue_submit(q, &r[i].req);
	wait_completions(&in, &completed, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(r[i].req.result, -EBUSY);
	/* A few busy timeouts in all, not one (or more) per request. */
	assert_true(now_ms() - t0 < 2000);
	storage_queue_get_stats(q, &stats);
	assert_int_equal(stats.failures, 3);
	assert_int_equal(stats.fallbacks, 0);

	/* Once the lock is free the queue works again. */
	release_write_lock(&lock);
	req_init(&r[0], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "b", "pw");
	storage_queue_submit(q, &r[0].req);
	wait_completions(&in, &completed, 4);
	assert_int_equal(r[0].req.result, 0);
	storage_queue_stop(q);
	storage_inbox_destroy(&in);
}

static void test_queue_verify_plain(void **state)
{
	struct fixture *f = *state;
	struct storage_queue *q = queue_ok(f);
	struct storage_inbox in;
	struct test_req r[5];
	int completed = 0;

	assert_int_equal(storage_inbox_init(&in), 0);
	req_init(&r[0], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "alice", "correct horse");
	req_init(&r[1], &in, &completed, STORAGE_OP_ACCOUNT_VERIFY_PLAIN, "alice", "correct horse");
	req_init(&r[2], &in, &completed, STORAGE_OP_ACCOUNT_VERIFY_PLAIN, "alice", "battery staple");
	req_init(&r[3], &in, &completed, STORAGE_OP_ACCOUNT_VERIFY_PLAIN, "mallory", "correct horse");
	req_init(&r[4], &in, &completed, STORAGE_OP_ACCOUNT_VERIFY_PLAIN, "alice", "");
	r[2].req.plain_ok = true;	/* must be cleared */
	for (int i = 0; i < 5; i++)
		storage_queue_submit(q, &r[i].req);
	wait_completions(&in, &completed, 5);

	assert_int_equal(r[0].req.result, 0);
	assert_int_equal(r[1].req.result, 0);
	assert_true(r[1].req.plain_ok);
	assert_int_equal(r[1].req.creds.iterations, SCRAM_ITERATIONS);
	assert_int_equal(r[2].req.result, 0);
	assert_false(r[2].req.plain_ok);
	assert_int_equal(r[3].req.result, -ENOENT);
	assert_false(r[3].req.plain_ok);
	assert_false(r[4].req.plain_ok);
	storage_queue_stop(q);
	storage_inbox_destroy(&in);
}

static void test_queue_set_password_and_delete(void **state)
{
	struct fixture *f = *state;
	struct storage_queue *q = queue_ok(f);
	struct storage_inbox in;
	struct test_req r[8];
	int completed = 0;

	assert_int_equal(storage_inbox_init(&in), 0);
	req_init(&r[0], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "bob", "old");
	req_init(&r[1], &in, &completed, STORAGE_OP_ACCOUNT_SET_PASSWORD, "bob", "new");
	req_init(&r[2], &in, &completed, STORAGE_OP_ACCOUNT_VERIFY_PLAIN, "bob", "old");
	req_init(&r[3], &in, &completed, STORAGE_OP_ACCOUNT_VERIFY_PLAIN, "bob", "new");
	req_init(&r[4], &in, &completed, STORAGE_OP_ACCOUNT_SET_PASSWORD, "ghost", "x");
	req_init(&r[5], &in, &completed, STORAGE_OP_ACCOUNT_DELETE, "bob", NULL);
	req_init(&r[6], &in, &completed, STORAGE_OP_ACCOUNT_GET, "bob", NULL);
	req_init(&r[7], &in, &completed, STORAGE_OP_ACCOUNT_DELETE, "bob", NULL);
	for (int i = 0; i < 8; i++)
		storage_queue_submit(q, &r[i].req);
	wait_completions(&in, &completed, 8);

	assert_int_equal(r[0].req.result, 0);
	assert_int_equal(r[1].req.result, 0);
	assert_false(r[2].req.plain_ok);
	assert_true(r[3].req.plain_ok);
	assert_int_equal(r[4].req.result, -ENOENT);
	assert_int_equal(r[5].req.result, 0);
	assert_int_equal(r[6].req.result, -ENOENT);
	assert_int_equal(r[7].req.result, -ENOENT);
	storage_queue_stop(q);
	storage_inbox_destroy(&in);
}

static void test_queue_rejects_bad_requests(void **state)
{
	struct fixture *f = *state;
	struct storage_queue *q = queue_ok(f);
	struct storage_inbox in;
	struct test_req r[6];
	int completed = 0;

	assert_int_equal(storage_inbox_init(&in), 0);
	/* SASLprep prohibits control characters; empty passwords too. */
	req_init(&r[0], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "carol", "bell\x07");
	req_init(&r[1], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "dave", "");
	req_init(&r[2], &in, &completed, STORAGE_OP_ACCOUNT_GET, "", NULL);
	req_init(&r[3], &in, &completed, STORAGE_OP_ACCOUNT_GET, "x", NULL);
	memset(r[3].req.user, 'a', sizeof(r[3].req.user));	/* no terminator */
	req_init(&r[4], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "erin", NULL);
	memset(r[4].req.password, 'p', sizeof(r[4].req.password));	/* no terminator */
	req_init(&r[5], &in, &completed, (enum storage_op)99, "frank", "pw");
	for (int i = 0; i < 6; i++)
		storage_queue_submit(q, &r[i].req);
	wait_completions(&in, &completed, 6);

	for (int i = 0; i < 6; i++) {
		assert_int_equal(r[i].req.result, -EINVAL);
		assert_true(r[i].password_zero);
	}
	storage_queue_stop(q);
	storage_inbox_destroy(&in);

	/* None of them left an account behind. */
	struct storage *st = open_ok(f);
	struct scram_creds c;

	assert_int_equal(storage_account_get(st, "carol", &c), -ENOENT);
	assert_int_equal(storage_account_get(st, "dave", &c), -ENOENT);
	storage_close(st);
}

static void test_queue_wipes_password_before_done(void **state)
{
	struct fixture *f = *state;
	struct storage_queue *q = queue_ok(f);
	struct storage_inbox in;
	struct test_req r[5];
	int completed = 0;

	assert_int_equal(storage_inbox_init(&in), 0);
	req_init(&r[0], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "alice", "hunter2");
	req_init(&r[1], &in, &completed, STORAGE_OP_ACCOUNT_CREATE, "alice", "hunter3");
	req_init(&r[2], &in, &completed, STORAGE_OP_ACCOUNT_VERIFY_PLAIN, "alice", "hunter2");
	req_init(&r[3], &in, &completed, STORAGE_OP_ACCOUNT_VERIFY_PLAIN, "nobody", "hunter2");
	req_init(&r[4], &in, &completed, STORAGE_OP_ACCOUNT_SET_PASSWORD, "alice", "hunter4");
	for (int i = 0; i < 5; i++)
		storage_queue_submit(q, &r[i].req);
	wait_completions(&in, &completed, 5);

	assert_int_equal(r[1].req.result, -EEXIST);
	assert_true(r[2].req.plain_ok);
	for (int i = 0; i < 5; i++)
		assert_true(r[i].password_zero);
	storage_queue_stop(q);
	storage_inbox_destroy(&in);
}

static void test_queue_stop_completes_pending_requests(void **state)
{
	enum { N = 40 };
	struct fixture *f = *state;
	struct storage_queue *q = queue_ok(f);
	struct test_req *r = calloc(N, sizeof(*r));
	struct storage_inbox in;
	int completed = 0;
	char name[32];

	assert_non_null(r);
	assert_int_equal(storage_inbox_init(&in), 0);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "u%d", i % 8);
		/* A few creates (slow PBKDF2) among many lookups. */
		req_init(&r[i], &in, &completed,
			 i < 8 ? STORAGE_OP_ACCOUNT_CREATE : STORAGE_OP_ACCOUNT_GET, name, "pw");
		storage_queue_submit(q, &r[i].req);
	}
	storage_queue_stop(q);

	/* Every completion is already in the inbox, and signalled. */
	struct pollfd p = { .fd = in.eventfd, .events = POLLIN };

	assert_int_equal(poll(&p, 1, 0), 1);
	assert_int_equal(storage_inbox_drain(&in), N);
	assert_int_equal(completed, N);
	for (int i = 0; i < N; i++) {
		assert_int_equal(r[i].done_calls, 1);
		assert_int_equal(r[i].req.result, 0);
	}
	storage_inbox_destroy(&in);
	free(r);
}

static void test_queue_request_without_inbox_runs_on_storage_thread(void **state)
{
	struct fixture *f = *state;
	struct storage_queue *q = queue_ok(f);
	struct test_req r;
	int completed = 0;

	req_init(&r, NULL, &completed, STORAGE_OP_ACCOUNT_GET, "nobody", NULL);
	storage_queue_submit(q, &r.req);
	storage_queue_stop(q);
	assert_int_equal(r.done_calls, 1);
	assert_int_equal(r.req.result, -ENOENT);
	assert_false(pthread_equal(r.done_thread, pthread_self()));
}

/* ---- Values the database hands out (several nodes on one database) ---- */

static int count_node(void *arg, uint64_t id, const char *host, const char *user,
		      const char *name, const char *config, const char *creator, int64_t created)
{
	(*(unsigned *)arg)++;
	return 0;
}

static int skip_affil(void *arg, uint64_t node_id, const char *jid, const char *affil)
{
	return 0;
}

static int skip_sub(void *arg, uint64_t node_id, const char *jid, const char *subid,
		    const char *state, const char *options)
{
	return 0;
}

static void put_item(struct storage *st, uint64_t node_id, const char *item_id, int want)
{
	struct ps_mut m = {
		.kind = PS_MUT_ITEM_PUT, .node_id = node_id, .item_id = item_id,
		.publisher = "p@example", .payload = "<x/>", .payload_len = 4, .created = 1,
	};

	assert_int_equal(pubsub_store_apply(st, &m), want);
}

static void test_pubsub_node_blocks_and_item_seqs_come_from_the_store(void **state)
{
	static const struct ps_load_cb cb = {
		.node = count_node, .affil = skip_affil, .sub = skip_sub,
	};
	struct fixture *f = *state;
	struct storage *st = open_ok(f);
	struct storage *other = open_ok(f);
	uint64_t b1 = 0, b2 = 0, b3 = 0, id;
	unsigned nodes = 0;
	struct ps_mut node = {
		.kind = PS_MUT_NODE_PUT, .host = "pubsub.example", .name = "n",
		.config = "", .creator = "o@example", .created = 1,
	};

	/* Every process that loads gets a block of its own. */
	assert_int_equal(pubsub_store_load(st, &cb, &nodes, &b1), 0);
	assert_int_equal(pubsub_store_load(other, &cb, &nodes, &b2), 0);
	assert_int_equal(b1, 1);
	assert_int_equal(b2, 2);
	id = (b1 << 32) + 1;
	node.node_id = id;
	assert_int_equal(pubsub_store_apply(st, &node), 0);

	/* Items are numbered in the node's row, whichever connection writes. */
	put_item(st, id, "a", 0);
	put_item(other, id, "b", 0);
	put_item(st, id, "a", 0);
	assert_int_equal(raw_int(f->db, "SELECT seq FROM pubsub_items WHERE item_id = 'b'"), 2);
	assert_int_equal(raw_int(f->db, "SELECT seq FROM pubsub_items WHERE item_id = 'a'"), 3);
	assert_int_equal(raw_int(f->db, "SELECT last_seq FROM pubsub_nodes"), 3);
	/* A gone node stores nothing. */
	put_item(other, id + 1, "c", -ENOENT);
	storage_close(other);
	storage_close(st);

	/* A restart takes the next block, above every id stored before. */
	st = open_ok(f);
	nodes = 0;
	assert_int_equal(pubsub_store_load(st, &cb, &nodes, &b3), 0);
	assert_int_equal(nodes, 1);
	assert_int_equal(b3, 3);
	storage_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_dir_0700_and_db_0600, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_migrates_to_latest_in_wal_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_keeps_accounts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_newer_schema, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_garbage_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_foreign_sqlite_database, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_db_writable_by_others, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_dir_writable_by_others, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_symlinked_db, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses_state_dir_that_is_a_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_fails_cleanly_without_parent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_create_get_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_duplicate_create_is_eexist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_missing_is_enoent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_set_creds_replaces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_delete_removes_owned_rows, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_list_in_order_and_stops_early, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_rejects_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_account_bad_stored_row_is_eio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_savepoint_undo_keeps_rest_of_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_locked_store_opens_reads_and_writes_fail_busy, setup, teardown),
		cmocka_unit_test(test_inbox_eventfd_is_nonblocking_cloexec),
		cmocka_unit_test(test_submit_without_queue_completes_with_eshutdown),
		cmocka_unit_test_setup_teardown(test_queue_many_requests_complete_on_draining_thread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_group_commit_survives_failing_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_lost_batch_is_redone_one_by_one, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_lock_held_too_long_fails_busy_without_hanging, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_verify_plain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_set_password_and_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_rejects_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_wipes_password_before_done, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_stop_completes_pending_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_queue_request_without_inbox_runs_on_storage_thread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pubsub_node_blocks_and_item_seqs_come_from_the_store,
						setup, teardown),
	};

	/* Refusals are the point of several tests: keep their log lines out. */
	log_threshold = LOG_LVL_WARN;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
