/* SPDX-License-Identifier: MIT */
/*
 * XEP-0363 HTTP File Upload: the service at upload.DOMAIN (slot requests,
 * disco) and the /upload/ route of the HTTP listener. See upload.h.
 *
 * Threads: the slot table is shared by the workers (a mutex; slots are
 * few and short-lived), the files are written by the worker that took the
 * PUT (write() per received piece: page cache, no fsync on the loop), and
 * everything that waits for the disk (fsync, rename, the cleanup's
 * unlinks and directory scan) runs on the storage thread, inside the
 * request that also changes the row, so a file and its row change
 * together.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "http.h"
#include "iq.h"
#include "iq_async.h"
#include "jid.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "storage.h"
#include "upload.h"
#include "worker.h"

#define UPLOAD_BUCKETS		256	/* slot hash buckets (power of two) */
#define UPLOAD_DEFAULT_TYPE	"application/octet-stream"
#define NS_DATA_FORMS		"jabber:x:data"

/* Served with every file: user content must not run in the server's origin. */
#define UPLOAD_GET_HEADERS						\
	"Content-Security-Policy: default-src 'none'; frame-ancestors 'none'; sandbox\r\n" \
	"X-Content-Type-Options: nosniff\r\n"				\
	"Access-Control-Allow-Origin: *\r\n"				\
	"Cache-Control: public, max-age=86400\r\n"

#define UPLOAD_CORS_HEADERS						\
	"Access-Control-Allow-Origin: *\r\n"				\
	"Access-Control-Allow-Methods: GET, HEAD, PUT, OPTIONS\r\n"	\
	"Access-Control-Allow-Headers: Content-Type\r\n"		\
	"Access-Control-Max-Age: 86400\r\n"

/* An open slot: requested, not uploaded yet. */
struct upload_slot {
	struct upload_slot *next;
	char token[UPLOAD_TOKEN_LEN + 1];
	char type[UPLOAD_TYPE_MAX + 1];		/* declared type, "" if none */
	char filename[UPLOAD_FILENAME_MAX + 1];
	uint64_t size;
	int64_t expires;			/* wall clock, seconds */
	bool busy;				/* a PUT is in progress */
};

struct upload_state {
	const struct config *cfg;
	char dir[PATH_MAX - 64];		/* STATE_DIR/upload */
	pthread_mutex_t lock;			/* slots and nslots */
	struct upload_slot *slots[UPLOAD_BUCKETS];
	unsigned nslots;
	/* The cleanup: worker 0 owns these. */
	struct worker *w;
	struct loop_timer timer;
	bool cleanup_running;
	bool startup_done;
};

static int64_t upload_wall(void)
{
	return (int64_t)time(NULL);
}

/* ---- Pure helpers ---- */

void upload_url_encode(struct strbuf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
		    ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			strbuf_append(b, s + i, 1);
		} else {
			char esc[3] = { '%', hex[ch >> 4], hex[ch & 15] };

			strbuf_append(b, esc, 3);
		}
	}
}

bool upload_filename_ok(const char *name)
{
	size_t len = name ? strlen(name) : 0;

	if (!len || len > UPLOAD_FILENAME_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return false;
	return true;
}

bool upload_type_ok(const char *type)
{
	size_t len = type ? strlen(type) : 0;
	const char *slash = type ? strchr(type, '/') : NULL;

	if (!len || len > UPLOAD_TYPE_MAX || !slash || slash == type || !slash[1])
		return false;
	/* Printable ASCII only: it is echoed in a response header. */
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)type[i] < 0x20 || (unsigned char)type[i] > 0x7e)
			return false;
	return true;
}

bool upload_type_allowed(const char *type, char *const *allowed, unsigned n)
{
	size_t tlen = strcspn(type, "; \t");
	const char *slash = memchr(type, '/', tlen);

	if (!n)
		return true;
	for (unsigned i = 0; i < n; i++) {
		const char *a = allowed[i];
		size_t alen = strlen(a);

		if (alen == tlen && strncasecmp(a, type, tlen) == 0)
			return true;
		/* A family entry ("image/" and a star): the part before the slash. */
		if (slash && alen >= 2 && !strcmp(a + alen - 2, "/*") &&
		    (size_t)(slash - type) == alen - 2 && strncasecmp(a, type, alen - 2) == 0)
			return true;
	}
	return false;
}

static bool upload_token_ok(const char *t, size_t len)
{
	if (len != UPLOAD_TOKEN_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f')))
			return false;
	return true;
}

int upload_parse_path(const char *path, char token[UPLOAD_TOKEN_LEN + 1], char *name,
		      size_t name_size)
{
	const char *p = path + strlen(UPLOAD_PATH_PREFIX), *slash;
	size_t nlen;
	int n;

	if (strncmp(path, UPLOAD_PATH_PREFIX, strlen(UPLOAD_PATH_PREFIX)) != 0)
		return -EINVAL;
	slash = strchr(p, '/');
	if (!slash || !upload_token_ok(p, (size_t)(slash - p)))
		return -EINVAL;
	memcpy(token, p, UPLOAD_TOKEN_LEN);
	token[UPLOAD_TOKEN_LEN] = '\0';
	nlen = strlen(slash + 1);
	if (!nlen || nlen >= name_size)
		return -EINVAL;
	memcpy(name, slash + 1, nlen + 1);
	n = http_percent_decode(name, nlen);
	return n > 0 ? 0 : -EINVAL;
}

/* ---- Open slots ---- */

static unsigned upload_bucket(const char *token)
{
	unsigned h = 0;

	/* The token is random already: its first bytes are a fine hash. */
	for (int i = 0; i < 4; i++)
		h = h << 4 | (unsigned)(token[i] <= '9' ? token[i] - '0' : token[i] - 'a' + 10);
	return h & (UPLOAD_BUCKETS - 1);
}

static struct upload_slot **upload_slot_find(struct upload_state *us, const char *token)
{
	struct upload_slot **pp = &us->slots[upload_bucket(token)];

	while (*pp && strcmp((*pp)->token, token) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* 0, or -ENOSPC when UPLOAD_MAX_SLOTS are open. Takes ownership of s. */
static int upload_slot_add(struct upload_state *us, struct upload_slot *s)
{
	struct upload_slot **pp;
	int ret = 0;

	pthread_mutex_lock(&us->lock);
	if (us->nslots >= UPLOAD_MAX_SLOTS) {
		ret = -ENOSPC;
	} else {
		pp = &us->slots[upload_bucket(s->token)];
		s->next = *pp;
		*pp = s;
		us->nslots++;
	}
	pthread_mutex_unlock(&us->lock);
	if (ret)
		free(s);
	return ret;
}

/*
 * Claims a slot for a PUT: copies it to *out and marks it busy.
 * -ENOENT (unknown, or another name), -ETIMEDOUT (expired), -EBUSY.
 */
static int upload_slot_claim(struct upload_state *us, const char *token, const char *name,
			     struct upload_slot *out)
{
	struct upload_slot *s;
	int ret = 0;

	pthread_mutex_lock(&us->lock);
	s = *upload_slot_find(us, token);
	if (!s || strcmp(s->filename, name) != 0)
		ret = -ENOENT;
	else if (s->expires <= upload_wall())
		ret = -ETIMEDOUT;
	else if (s->busy)
		ret = -EBUSY;
	else {
		s->busy = true;
		*out = *s;
	}
	pthread_mutex_unlock(&us->lock);
	return ret;
}

/* Ends a claim: the slot is gone when uploaded, open again otherwise. */
static void upload_slot_release(struct upload_state *us, const char *token, bool uploaded)
{
	struct upload_slot **pp, *s;

	pthread_mutex_lock(&us->lock);
	pp = upload_slot_find(us, token);
	s = *pp;
	if (s && uploaded) {
		*pp = s->next;
		us->nslots--;
		free(s);
	} else if (s) {
		s->busy = false;
	}
	pthread_mutex_unlock(&us->lock);
}

/* Drops expired slots nobody is uploading to. */
static void upload_slot_purge(struct upload_state *us)
{
	int64_t now = upload_wall();

	pthread_mutex_lock(&us->lock);
	for (unsigned b = 0; b < UPLOAD_BUCKETS; b++) {
		struct upload_slot **pp = &us->slots[b], *s;

		while ((s = *pp) != NULL) {
			if (s->expires <= now && !s->busy) {
				*pp = s->next;
				us->nslots--;
				free(s);
			} else {
				pp = &s->next;
			}
		}
	}
	pthread_mutex_unlock(&us->lock);
}

static void upload_path(const struct upload_state *us, char *out, size_t size, const char *token,
			const char *suffix)
{
	snprintf(out, size, "%s/%s%s", us->dir, token, suffix);
}

/* ---- State ---- */

struct upload_state *upload_state_new(const struct config *cfg)
{
	struct upload_state *us = calloc(1, sizeof(*us));

	if (!us)
		return NULL;
	us->cfg = cfg;
	if ((size_t)snprintf(us->dir, sizeof(us->dir), "%s/upload", cfg->state_dir) >= sizeof(us->dir)) {
		free(us);
		errno = ENAMETOOLONG;
		return NULL;
	}
	if (mkdir(us->dir, 0700) < 0 && errno != EEXIST) {
		int e = errno;

		fprintf(stderr, "stanzad: cannot create %s: %s\n", us->dir, strerror(e));
		free(us);
		errno = e;
		return NULL;
	}
	pthread_mutex_init(&us->lock, NULL);
	return us;
}

void upload_state_free(struct upload_state *us)
{
	if (!us)
		return;
	for (unsigned b = 0; b < UPLOAD_BUCKETS; b++) {
		while (us->slots[b]) {
			struct upload_slot *s = us->slots[b];

			us->slots[b] = s->next;
			free(s);
		}
	}
	pthread_mutex_destroy(&us->lock);
	free(us);
}

bool upload_enabled(const struct config *cfg)
{
	return cfg->upload && http_configured(cfg);
}

static struct upload_state *upload_of(const struct worker *w)
{
	return w->srv->http ? w->srv->http->upload : NULL;
}

/* ---- The XMPP side: upload.DOMAIN ---- */

/* Adds <child>text</child> under parent. */
static struct xml_node *upload_add_text(struct arena *a, struct xml_node *parent, const char *name,
					const char *text)
{
	struct xml_node *n = xml_node_add_child(a, parent, NULL, name);

	if (n && xml_node_add_text(a, n, text, strlen(text)) < 0)
		return NULL;
	return n;
}

/* XEP-0030 info with the XEP-0128 form XEP-0363 section 2 asks for. */
static void upload_disco_info(struct iq_request *rq)
{
	struct arena *a = iq_arena(rq);
	struct xml_node *q = xml_node_new(a, NS_DISCO_INFO, "query"), *n, *x, *f;
	char max[24];

	snprintf(max, sizeof(max), "%" PRIu32, rq->w->srv->cfg->upload_max_bytes);
	if (!q)
		goto oom;
	n = xml_node_add_child(a, q, NULL, "identity");
	if (!n || xml_attr_set(a, n, "category", "store") < 0 || xml_attr_set(a, n, "type", "file") < 0 ||
	    xml_attr_set(a, n, "name", "HTTP File Upload") < 0)
		goto oom;
	n = xml_node_add_child(a, q, NULL, "feature");
	if (!n || xml_attr_set(a, n, "var", NS_UPLOAD) < 0)
		goto oom;
	n = xml_node_add_child(a, q, NULL, "feature");
	if (!n || xml_attr_set(a, n, "var", NS_DISCO_INFO) < 0)
		goto oom;
	x = xml_node_add_child(a, q, NS_DATA_FORMS, "x");
	if (!x || xml_attr_set(a, x, "type", "result") < 0)
		goto oom;
	f = xml_node_add_child(a, x, NULL, "field");
	if (!f || xml_attr_set(a, f, "var", "FORM_TYPE") < 0 || xml_attr_set(a, f, "type", "hidden") < 0 ||
	    !upload_add_text(a, f, "value", NS_UPLOAD))
		goto oom;
	f = xml_node_add_child(a, x, NULL, "field");
	if (!f || xml_attr_set(a, f, "var", "max-file-size") < 0 || !upload_add_text(a, f, "value", max))
		goto oom;
	iq_reply_result(rq, q);
	return;
oom:
	iq_reply_error(rq, "internal-server-error", NULL);
}

/* The too-large answer: not-acceptable with <file-too-large><max-file-size/>. */
static void upload_too_large(struct iq_request *rq, uint32_t max)
{
	struct arena *a = iq_arena(rq);
	char text[96], num[24];
	struct xml_node *r, *err, *ftl;

	snprintf(num, sizeof(num), "%" PRIu32, max);
	snprintf(text, sizeof(text), "File too large. The maximum file size is %s bytes", num);
	r = stanza_error_reply(a, rq->iq, NULL, "not-acceptable", text);
	err = r ? xml_child(r, XML_NS_CLIENT, "error") : NULL;
	ftl = err ? xml_node_add_child(a, err, NS_UPLOAD, "file-too-large") : NULL;
	if (!ftl || !upload_add_text(a, ftl, "max-file-size", num)) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	iq_reply_node(rq, r);
}

/* A slot request on its way through the storage thread. */
struct upload_slot_op {
	struct iq_async a;		/* first: the storage layer sees a.req */
	struct upload_slot slot;
	uint64_t quota;
	uint64_t used;			/* out: the account's bytes before this slot */
	int64_t now;
};

static int upload_slot_run(struct storage *st, struct storage_req *req)
{
	struct upload_slot_op *op = (struct upload_slot_op *)req;
	int ret = storage_upload_usage(st, req->user, &op->used);

	if (ret < 0)
		return ret;
	if (op->used + op->slot.size > op->quota)
		return -EDQUOT;
	return storage_upload_add(st, req->user, op->slot.token, op->slot.filename, op->slot.size,
				  op->slot.type[0] ? op->slot.type : UPLOAD_DEFAULT_TYPE, op->now);
}

/* <slot><put url/><get url/></slot> for a slot. */
static struct xml_node *upload_slot_payload(struct arena *a, const struct http_server *hs,
					    const struct upload_slot *s, struct strbuf *url)
{
	struct xml_node *slot = xml_node_new(a, NS_UPLOAD, "slot"), *put, *get;

	strbuf_clear(url);
	strbuf_puts(url, hs->base_url);
	strbuf_puts(url, UPLOAD_PATH_PREFIX);
	strbuf_puts(url, s->token);
	strbuf_puts(url, "/");
	upload_url_encode(url, s->filename, strlen(s->filename));
	if (!slot || url->oom)
		return NULL;
	put = xml_node_add_child(a, slot, NULL, "put");
	get = xml_node_add_child(a, slot, NULL, "get");
	if (!put || !get || xml_attr_set(a, put, "url", url->data) < 0 ||
	    xml_attr_set(a, get, "url", url->data) < 0)
		return NULL;
	return slot;
}

static void upload_slot_done(struct storage_req *req)
{
	struct upload_slot_op *op = (struct upload_slot_op *)req;
	struct worker *w = iq_async_worker(&op->a);
	struct session *s = iq_async_session(&op->a);
	struct upload_state *us = upload_of(w);
	struct upload_slot *slot;
	struct strbuf url = STRBUF_INIT;
	char text[128];

	if (req->result == -EDQUOT) {
		snprintf(text, sizeof(text), "Quota reached: %" PRIu64 " of %" PRIu64 " bytes in use",
			 op->used, op->quota);
		if (s)
			iq_async_error(&op->a, s, "resource-constraint", text);
		goto out;
	}
	if (req->result < 0 || !us) {
		log_warn("upload.slot_failed", "user=%s err=%d", req->user, req->result);
		if (s)
			iq_async_error(&op->a, s, "internal-server-error", NULL);
		goto out;
	}
	slot = malloc(sizeof(*slot));
	if (!slot || (*slot = op->slot, upload_slot_add(us, slot)) < 0) {
		/* The row stays until the cleanup: it counts against the quota until then. */
		if (s)
			iq_async_error(&op->a, s, "resource-constraint", "too many uploads in progress");
		goto out;
	}
	log_info("upload.slot", "user=%s size=%" PRIu64 " type=%s", req->user, op->slot.size,
		 op->slot.type[0] ? op->slot.type : UPLOAD_DEFAULT_TYPE);
	if (s) {
		struct xml_node *p = upload_slot_payload(iq_async_arena(&op->a), w->srv->http, &op->slot,
							 &url);

		if (p)
			iq_async_result(&op->a, s, p);
		else
			iq_async_error(&op->a, s, "internal-server-error", NULL);
	}
out:
	strbuf_free(&url);
	iq_async_free(&op->a);
}

/* Parses a size attribute: decimal digits only. */
static int upload_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s || strlen(s) > 19)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

static void upload_slot_request(struct iq_request *rq)
{
	const struct config *cfg = rq->w->srv->cfg;
	const char *filename = xml_attr_get(rq->payload, "filename");
	const char *type = xml_attr_get(rq->payload, "content-type");
	char user[JID_PART_MAX + 1], text[160];
	unsigned char rnd[UPLOAD_TOKEN_LEN / 2];
	struct upload_slot_op *op;
	uint64_t size;

	if (!filename || !upload_filename_ok(filename)) {
		iq_reply_error(rq, "bad-request", "a file name of 1 to 255 bytes without control "
			       "characters is required");
		return;
	}
	if (upload_parse_size(xml_attr_get(rq->payload, "size"), &size) < 0 || size == 0) {
		iq_reply_error(rq, "bad-request", "size must be a positive number of bytes");
		return;
	}
	if (size > cfg->upload_max_bytes) {
		upload_too_large(rq, cfg->upload_max_bytes);
		return;
	}
	if (type && !upload_type_ok(type)) {
		iq_reply_error(rq, "bad-request", "malformed content-type");
		return;
	}
	if (!upload_type_allowed(type ? type : UPLOAD_DEFAULT_TYPE, cfg->upload_allowed_types.v,
				 cfg->upload_allowed_types.n)) {
		snprintf(text, sizeof(text), "files of type %.*s are not accepted here", 64,
			 type ? type : UPLOAD_DEFAULT_TYPE);
		iq_reply_error(rq, "not-acceptable", text);
		return;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	snprintf(user, sizeof(user), "%.*s", (int)rq->from->local_len, rq->from->buf);
	op = iq_async_new(rq, sizeof(*op), user, NS_UPLOAD, "request", upload_slot_run,
			  upload_slot_done);
	if (!op)
		return;
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(op->slot.token + 2 * i, 3, "%02x", rnd[i]);
	snprintf(op->slot.filename, sizeof(op->slot.filename), "%s", filename);
	snprintf(op->slot.type, sizeof(op->slot.type), "%s", type ? type : "");
	op->slot.size = size;
	op->now = upload_wall();
	op->slot.expires = op->now + cfg->upload_slot_timeout;
	op->quota = cfg->upload_quota_bytes;
	iq_async_submit(rq, &op->a);
}

void upload_route(struct worker *w, struct conn *src, struct xml_node *st, const struct jid *from,
		  const struct jid *to)
{
	const struct config *cfg = w->srv->cfg;
	const char *type = stanza_type(st);
	struct iq_request rq = {
		.w = w, .conn = src, .iq = st, .from = from, .to = to, .scope = IQ_SCOPE_SERVER,
	};
	bool get = strcmp(type, "get") == 0;

	if (stanza_kind(st) != STANZA_IQ) {
		/* Nothing reads messages here; presence is ignored. */
		if (stanza_kind(st) == STANZA_MESSAGE && !stanza_is_error(st))
			router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	if (!get && strcmp(type, "set") != 0)
		return;	/* results and errors for us end here */
	/* Only local clients (here, or at home on another worker) use this service. */
	if (src ? !src->sess : !router_from_local_session(w, src, st))
		return;
	rq.payload = xml_first_element(st);
	if (jid_has_local(to) || jid_has_resource(to) || !rq.payload) {
		iq_reply_error(&rq, "service-unavailable", NULL);
	} else if (get && !strcmp(rq.payload->ns, NS_UPLOAD) && !strcmp(rq.payload->name, "request")) {
		/* Only accounts of this server upload here. */
		if (!jid_has_local(from) || from->domain_len != strlen(cfg->domain) ||
		    memcmp(from->buf + from->domain_off, cfg->domain, from->domain_len) != 0)
			iq_reply_error(&rq, "forbidden", "only local accounts may upload");
		else
			upload_slot_request(&rq);
	} else if (get && !strcmp(rq.payload->ns, NS_DISCO_INFO) && !strcmp(rq.payload->name, "query")) {
		upload_disco_info(&rq);
	} else if (get && !strcmp(rq.payload->ns, NS_DISCO_ITEMS) &&
		   !strcmp(rq.payload->name, "query")) {
		iq_reply_result(&rq, xml_node_new(iq_arena(&rq), NS_DISCO_ITEMS, "query"));
	} else {
		iq_reply_error(&rq, "service-unavailable", NULL);
	}
	arena_reset(iq_arena(&rq));
}

/* ---- The HTTP side: PUT ---- */

/* A PUT in progress; after the body, the commit on the storage thread. */
struct upload_put {
	struct storage_req req;		/* first: the storage layer sees this */
	struct upload_state *us;
	struct upload_slot slot;	/* a copy of the claimed slot */
	char type[UPLOAD_TYPE_MAX + 1];	/* what the file is served as */
	char part[PATH_MAX];
	char final[PATH_MAX];
	int fd;
	uint64_t got;
	int64_t now;
};

/* Abandons a PUT before its commit: the partial file goes, the slot reopens. */
static void upload_put_drop(struct upload_put *put)
{
	if (put->fd >= 0)
		close(put->fd);
	unlink(put->part);
	upload_slot_release(put->us, put->slot.token, false);
	free(put);
}

static void upload_put_abort(struct http_request *rq)
{
	struct upload_put *put = rq->ctx;

	log_info("upload.put_aborted", "conn=%llu received=%" PRIu64 " size=%" PRIu64,
		 (unsigned long long)rq->c->id, put->got, put->slot.size);
	rq->ctx = NULL;
	upload_put_drop(put);
}

static int upload_put_body(struct http_request *rq, const char *data, size_t len)
{
	struct upload_put *put = rq->ctx;
	int status = 0;

	if (put->got + len > put->slot.size) {
		status = 413;
		goto fail;
	}
	while (len) {
		ssize_t n = write(put->fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			log_warn("upload.write_failed", "err=\"%s\"", n < 0 ? strerror(errno) : "short");
			status = n < 0 && (errno == ENOSPC || errno == EDQUOT) ? 507 : 500;
			goto fail;
		}
		data += n;
		len -= (size_t)n;
		put->got += (uint64_t)n;
	}
	return 0;
fail:
	rq->ctx = NULL;
	rq->on_abort = NULL;
	upload_put_drop(put);
	return status;
}

/* Storage thread: make the file durable and visible, and the row say so. */
static int upload_commit_run(struct storage *st, struct storage_req *req)
{
	struct upload_put *put = (struct upload_put *)req;
	int fd = put->fd, dfd, ret;

	put->fd = -1;
	if (fsync(fd) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	close(fd);
	if (rename(put->part, put->final) < 0)
		return -errno;
	/* The rename itself must survive a power cut. */
	dfd = open(put->us->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	ret = storage_upload_done(st, put->slot.token, put->type, put->now);
	if (ret < 0)
		unlink(put->final);	/* no row says it exists: it must not */
	return ret;
}

static void upload_commit_done(struct storage_req *req)
{
	struct upload_put *put = (struct upload_put *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct http_request *rq = http_pending_request(worker_conn(w, req->slot, req->gen));
	bool ok = req->result == 0;

	if (put->fd >= 0)
		close(put->fd);	/* never ran (shutdown): the startup sweep takes the part file */
	if (ok) {
		log_info("upload.stored", "size=%" PRIu64 " type=%s", put->slot.size, put->type);
	} else if (req->result != -ESHUTDOWN) {
		log_warn("upload.commit_failed", "err=\"%s\"", strerror(-req->result));
		unlink(put->part);
	}
	upload_slot_release(put->us, put->slot.token, ok);
	if (rq) {
		rq->ctx = NULL;
		rq->on_abort = NULL;
		if (ok)
			http_respond(rq, 201, NULL, NULL, 0, UPLOAD_CORS_HEADERS);
		else
			http_respond_error(rq, 500, "the file could not be stored");
	}
	free(put);
}

static void upload_put_complete(struct http_request *rq)
{
	struct upload_put *put = rq->ctx;
	struct conn *c = rq->c;

	if (put->got != put->slot.size) {
		rq->ctx = NULL;
		rq->on_abort = NULL;
		upload_put_drop(put);
		http_respond_error(rq, 400, "the body is shorter than the slot's size");
		return;
	}
	/* From here the storage request owns put; its completion answers. */
	rq->on_abort = NULL;
	put->req.op = STORAGE_OP_RUN;
	put->req.run = upload_commit_run;
	put->req.done = upload_commit_done;
	put->req.inbox = &c->w->inbox;
	put->req.slot = c->slot;
	put->req.gen = c->gen;
	put->now = upload_wall();
	storage_queue_submit(c->w->srv->store, &put->req);
}

static void upload_put(struct http_request *rq, const char *token, const char *name)
{
	struct upload_state *us = upload_of(rq->c->w);
	struct upload_slot slot;
	struct upload_put *put;
	struct stat sb;
	char final[PATH_MAX];
	int ret;

	if (rq->chunked || !rq->has_length) {
		http_respond_error(rq, 411, "Content-Length is required");
		return;
	}
	upload_path(us, final, sizeof(final), token, "");
	if (stat(final, &sb) == 0) {
		http_respond_error(rq, 409, "this slot was used already");
		return;
	}
	ret = upload_slot_claim(us, token, name, &slot);
	if (ret == -ETIMEDOUT) {
		http_respond_error(rq, 403, "the upload slot has expired");
		return;
	}
	if (ret == -EBUSY) {
		http_respond_error(rq, 409, "an upload to this slot is in progress");
		return;
	}
	if (ret < 0) {
		http_respond_error(rq, 404, NULL);
		return;
	}
	if (rq->content_length != slot.size) {
		upload_slot_release(us, token, false);
		http_respond_error(rq, rq->content_length > slot.size ? 413 : 400,
				   "Content-Length differs from the size of the slot");
		return;
	}
	if (slot.type[0] && strcasecmp(slot.type, rq->content_type) != 0) {
		upload_slot_release(us, token, false);
		http_respond_error(rq, 415, "Content-Type differs from the type of the slot");
		return;
	}
	put = calloc(1, sizeof(*put));
	if (!put) {
		upload_slot_release(us, token, false);
		http_respond_error(rq, 500, NULL);
		return;
	}
	put->us = us;
	put->slot = slot;
	snprintf(put->type, sizeof(put->type), "%s", slot.type[0] ? slot.type : UPLOAD_DEFAULT_TYPE);
	upload_path(us, put->part, sizeof(put->part), token, ".part");
	snprintf(put->final, sizeof(put->final), "%s", final);
	put->fd = open(put->part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (put->fd < 0) {
		log_warn("upload.open_failed", "err=\"%s\"", strerror(errno));
		upload_put_drop(put);
		http_respond_error(rq, 500, NULL);
		return;
	}
	rq->ctx = put;
	rq->on_body = upload_put_body;
	rq->on_complete = upload_put_complete;
	rq->on_abort = upload_put_abort;
}

/* ---- The HTTP side: GET and HEAD ---- */

struct upload_get {
	struct storage_req req;		/* first */
	char token[UPLOAD_TOKEN_LEN + 1];
	char name[UPLOAD_FILENAME_MAX + 1];	/* from the URL */
	char stored[UPLOAD_FILENAME_MAX + 1];	/* from the row */
	char type[UPLOAD_TYPE_MAX + 1];
	uint64_t size;
};

static int upload_get_run(struct storage *st, struct storage_req *req)
{
	struct upload_get *g = (struct upload_get *)req;

	return storage_upload_get(st, g->token, g->stored, sizeof(g->stored), &g->size, g->type,
				  sizeof(g->type));
}

static void upload_get_done(struct storage_req *req)
{
	struct upload_get *g = (struct upload_get *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct http_request *rq = http_pending_request(worker_conn(w, req->slot, req->gen));
	struct upload_state *us = upload_of(w);
	char path[PATH_MAX];
	struct stat sb;
	int fd;

	if (!rq || !us)
		goto out;
	if (req->result == -ENOENT || (!req->result && strcmp(g->stored, g->name) != 0)) {
		http_respond_error(rq, 404, NULL);
		goto out;
	}
	if (req->result < 0) {
		http_respond_error(rq, 500, NULL);
		goto out;
	}
	upload_path(us, path, sizeof(path), g->token, "");
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		/* Expired a moment ago, or removed by hand. */
		if (fd >= 0)
			close(fd);
		http_respond_error(rq, 404, NULL);
		goto out;
	}
	http_respond_file(rq, 200, upload_type_ok(g->type) ? g->type : UPLOAD_DEFAULT_TYPE, fd,
			  (uint64_t)sb.st_size, UPLOAD_GET_HEADERS);
out:
	free(g);
}

static void upload_get(struct http_request *rq, const char *token, const char *name)
{
	struct conn *c = rq->c;
	struct upload_get *g = calloc(1, sizeof(*g));

	if (!g) {
		http_respond_error(rq, 500, NULL);
		return;
	}
	snprintf(g->token, sizeof(g->token), "%s", token);
	snprintf(g->name, sizeof(g->name), "%.*s", UPLOAD_FILENAME_MAX, name);
	g->req.op = STORAGE_OP_RUN;
	g->req.run = upload_get_run;
	g->req.done = upload_get_done;
	g->req.inbox = &c->w->inbox;
	g->req.slot = c->slot;
	g->req.gen = c->gen;
	/* The answer comes with the completion; the request waits (http.c). */
	http_defer(rq);
	storage_queue_submit(c->w->srv->store, &g->req);
}

void upload_http(struct http_request *rq)
{
	char token[UPLOAD_TOKEN_LEN + 1], name[UPLOAD_FILENAME_MAX * 3 + 1];

	/* The token is the only credential: never in the log. */
	rq->log_path = UPLOAD_PATH_PREFIX "...";
	if (rq->method == HTTP_OPTIONS) {
		http_respond(rq, 204, NULL, NULL, 0, UPLOAD_CORS_HEADERS);
		return;
	}
	if (!upload_of(rq->c->w) ||
	    upload_parse_path(rq->path, token, name, sizeof(name)) < 0 || !upload_filename_ok(name)) {
		http_respond_error(rq, 404, NULL);
		return;
	}
	if (rq->method == HTTP_PUT)
		upload_put(rq, token, name);
	else
		upload_get(rq, token, name);
}

/* ---- Cleanup ---- */

struct upload_cleanup {
	struct storage_req req;		/* first */
	struct upload_state *us;
	int64_t done_before;		/* uploaded before this: expired (0: never) */
	int64_t pending_before;		/* slots requested before this: void */
	bool startup;
	unsigned files, slots, orphans;
	char (*tokens)[UPLOAD_TOKEN_LEN + 1];
	size_t ntokens, cap;
};

static int upload_collect(void *arg, const char *token)
{
	struct upload_cleanup *cl = arg;

	if (!upload_token_ok(token, strlen(token)))
		return 0;
	if (cl->ntokens == cl->cap) {
		size_t ncap = cl->cap ? cl->cap * 2 : 64;
		void *p = realloc(cl->tokens, ncap * sizeof(*cl->tokens));

		if (!p)
			return -ENOMEM;
		cl->tokens = p;
		cl->cap = ncap;
	}
	memcpy(cl->tokens[cl->ntokens++], token, UPLOAD_TOKEN_LEN + 1);
	return 0;
}

/* Files no row accounts for: accounts deleted, crashes between steps. */
static int upload_sweep(struct storage *st, struct upload_cleanup *cl)
{
	DIR *d = opendir(cl->us->dir);
	struct dirent *e;
	char path[PATH_MAX];

	if (!d)
		return -errno;
	while ((e = readdir(d)) != NULL) {
		size_t len = strlen(e->d_name);
		bool part = len == UPLOAD_TOKEN_LEN + 5 && !strcmp(e->d_name + UPLOAD_TOKEN_LEN, ".part");
		char token[UPLOAD_TOKEN_LEN + 1];
		int ret;

		if (e->d_name[0] == '.' || (len != UPLOAD_TOKEN_LEN && !part) ||
		    !upload_token_ok(e->d_name, UPLOAD_TOKEN_LEN))
			continue;
		memcpy(token, e->d_name, UPLOAD_TOKEN_LEN);
		token[UPLOAD_TOKEN_LEN] = '\0';
		/* At startup no PUT can be running: every partial file is stale. */
		ret = part && cl->startup ? 0 : storage_upload_exists(st, token);
		if (ret != 0)
			continue;
		upload_path(cl->us, path, sizeof(path), e->d_name, "");
		if (unlink(path) == 0)
			cl->orphans++;
	}
	closedir(d);
	return 0;
}

static int upload_cleanup_run(struct storage *st, struct storage_req *req)
{
	struct upload_cleanup *cl = (struct upload_cleanup *)req;
	char path[PATH_MAX];
	int ret;

	ret = storage_upload_expired(st, cl->done_before, cl->pending_before, upload_collect, cl);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < cl->ntokens; i++) {
		const char *t = cl->tokens[i];

		upload_path(cl->us, path, sizeof(path), t, "");
		if (unlink(path) == 0)
			cl->files++;
		else
			cl->slots++;	/* never uploaded */
		upload_path(cl->us, path, sizeof(path), t, ".part");
		unlink(path);
		ret = storage_upload_delete(st, t);
		if (ret < 0)
			return ret;
	}
	return upload_sweep(st, cl);
}

static void upload_cleanup_done(struct storage_req *req)
{
	struct upload_cleanup *cl = (struct upload_cleanup *)req;

	if (req->result == 0)
		log_info("upload.cleanup", "expired_files=%u void_slots=%u orphans=%u startup=%s",
			 cl->files, cl->slots, cl->orphans, cl->startup ? "yes" : "no");
	else if (req->result != -ESHUTDOWN)
		log_warn("upload.cleanup_failed", "err=\"%s\"", strerror(-req->result));
	if (req->result != -ESHUTDOWN) {
		cl->us->cleanup_running = false;
		upload_slot_purge(cl->us);
	}
	free(cl->tokens);
	free(cl);
}

static void upload_cleanup_start(struct upload_state *us, bool startup)
{
	const struct config *cfg = us->cfg;
	struct upload_cleanup *cl;
	int64_t now = upload_wall();

	if (us->cleanup_running)
		return;
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return;
	cl->us = us;
	cl->startup = startup;
	cl->done_before = cfg->upload_expire_days ? now - (int64_t)cfg->upload_expire_days * 86400 : 0;
	/* Open slots live in memory only: after a restart none is left. */
	cl->pending_before = startup ? now + 1
				     : now - (int64_t)cfg->upload_slot_timeout - UPLOAD_PENDING_GRACE;
	cl->req.op = STORAGE_OP_RUN;
	cl->req.run = upload_cleanup_run;
	cl->req.done = upload_cleanup_done;
	cl->req.inbox = &us->w->inbox;
	us->cleanup_running = true;
	storage_queue_submit(us->w->srv->store, &cl->req);
}

static void upload_cleanup_timer(struct loop_timer *t)
{
	struct upload_state *us = (struct upload_state *)((char *)t - offsetof(struct upload_state, timer));

	upload_cleanup_start(us, false);
	loop_timer_arm(us->w->loop, &us->timer, UPLOAD_CLEANUP_MS);
}

void upload_worker_start(struct worker *w)
{
	struct upload_state *us = upload_of(w);

	if (!us || w->id != 0)
		return;
	us->w = w;
	us->timer.fn = upload_cleanup_timer;
	upload_cleanup_start(us, true);
	loop_timer_arm(w->loop, &us->timer, UPLOAD_CLEANUP_MS);
}

void upload_worker_stop(struct worker *w)
{
	struct upload_state *us = upload_of(w);

	if (us && us->w == w)
		loop_timer_cancel(&us->timer);
}
