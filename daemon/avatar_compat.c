/* SPDX-License-Identifier: MIT */
/*
 * User avatars converted between PEP (XEP-0084) and the vCard
 * (XEP-0153); see avatar_compat.h. PEP goes through pubsub.c's work on
 * an account's behalf; the vCard is read, changed and written by two
 * storage requests.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "account.h"
#include "arena.h"
#include "avatar_compat.h"
#include "config.h"
#include "jid.h"
#include "log.h"
#include "pubsub.h"
#include "pubsub_store.h"
#include "server.h"
#include "session.h"
#include "storage.h"
#include "stored_xml.h"
#include "strbuf.h"
#include "vcard.h"
#include "worker.h"

#define AV_ARENA_CHUNK	4096
#define AV_DEFAULT_TYPE	"image/png"	/* XEP-0084: what a missing type means */

/* ---- Helpers ---- */

/*
 * The bytes of base64 text (whitespace ignored, XEP-0153 wraps lines) in
 * *out (malloc'd), their count in *out_len. 0, -EINVAL or -ENOMEM.
 */
static int av_b64_decode(const char *text, unsigned char **out, size_t *out_len)
{
	size_t n = strlen(text), k = 0, pad = 0;
	char *clean = malloc(n + 1);
	unsigned char *bin;
	int got;

	if (!clean)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (!isspace((unsigned char)text[i]))
			clean[k++] = text[i];
	clean[k] = '\0';
	if (k == 0 || k % 4 != 0 || k > (size_t)0x7fffffff) {
		free(clean);
		return -EINVAL;
	}
	pad = (clean[k - 1] == '=') + (clean[k - 2] == '=');
	bin = malloc(k / 4 * 3 + 1);
	got = bin ? EVP_DecodeBlock(bin, (unsigned char *)clean, (int)k) : -1;
	free(clean);
	if (!bin)
		return -ENOMEM;
	if (got < 0 || (size_t)got < pad) {
		free(bin);
		return -EINVAL;
	}
	*out = bin;
	*out_len = (size_t)got - pad;
	return 0;
}

/* The SHA-1 of data as lower-case hex into hex (AVATAR_HASH_HEX + 1). 0 or -EIO. */
static int av_sha1_hex(const unsigned char *data, size_t len, char *hex)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;

	if (EVP_Digest(data, len, md, &mdlen, EVP_sha1(), NULL) != 1 || mdlen != 20)
		return -EIO;
	for (unsigned i = 0; i < mdlen; i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return 0;
}

/* The text of base64 `text` without whitespace, in a. NULL on ENOMEM. */
static char *av_b64_compact(struct arena *a, const char *text)
{
	size_t n = strlen(text), k = 0;
	char *out = arena_alloc(a, n + 1);

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (!isspace((unsigned char)text[i]))
			out[k++] = text[i];
	out[k] = '\0';
	return out;
}

/* Records the account's photo hash ("" none) for its presence, if it is loaded. */
static void av_set_hash(struct worker *w, const char *user, const char *hash)
{
	char bare[JID_MAX];
	int len = snprintf(bare, sizeof(bare), "%s@%s", user, w->srv->cfg->domain);
	struct account *a;

	if (len < 0 || (size_t)len >= sizeof(bare))
		return;
	a = sessdir_find_account(w->sessions, bare, (size_t)len);
	if (a)
		snprintf(a->avatar_hash, sizeof(a->avatar_hash), "%s", hash);
}

/* ---- PEP -> vCard ---- */

/* The vCard rewrite: read, then (writing) the new text. */
struct av_vcard {
	struct storage_req req;		/* first */
	struct worker *w;
	bool writing;
	char *old;			/* read: stored vCard (malloc'd) or NULL */
	size_t old_len;
	char hash[AVATAR_HASH_HEX + 1];	/* "" = remove the PHOTO */
	char type[AVATAR_TYPE_MAX + 1];
	size_t len;			/* text: base64 (reading) or the vCard (writing) */
	char text[];
};

static void av_vcard_done(struct storage_req *req);

static int av_vcard_run(struct storage *st, struct storage_req *req)
{
	struct av_vcard *v = (struct av_vcard *)req;
	int ret;

	if (v->writing)
		return vcard_store_set(st, req->user, v->len ? v->text : NULL, v->len);
	ret = vcard_store_get(st, req->user, &v->old, &v->old_len);
	return ret == -ENOENT ? 0 : ret;
}

static void av_vcard_submit(struct worker *w, struct av_vcard *v)
{
	v->req.op = STORAGE_OP_RUN;
	v->req.run = av_vcard_run;
	v->req.done = av_vcard_done;
	v->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &v->req);
}

/*
 * The stored vCard (or a new one) with its PHOTO children replaced by
 * the new photo (none when v->hash is ""), serialized into b (left empty
 * when the vCard ends up empty: it is deleted). 0 or -errno.
 */
static int av_vcard_merge(const struct av_vcard *v, struct arena *a, struct strbuf *b)
{
	struct xml_node *card = NULL, *el, *next, *photo, *t;

	if (v->old_len && !(card = stored_xml_parse(v->w->xml, a, v->old, v->old_len)))
		log_warn("avatar.vcard_unreadable", "user=%s", v->req.user);
	if (!card && !(card = xml_node_new(a, NS_VCARD, "vCard")))
		return -ENOMEM;
	for (el = xml_first_element(card); el; el = next) {
		next = xml_next_element(el);
		if (strcmp(el->name, "PHOTO") == 0 && strcmp(el->ns, NS_VCARD) == 0)
			xml_node_remove(el);
	}
	if (v->hash[0]) {
		photo = xml_node_add_child(a, card, NS_VCARD, "PHOTO");
		t = photo ? xml_node_add_child(a, photo, NS_VCARD, "TYPE") : NULL;
		if (!t || xml_node_add_text(a, t, v->type, strlen(v->type)) < 0 ||
		    !(t = xml_node_add_child(a, photo, NS_VCARD, "BINVAL")) ||
		    xml_node_add_text(a, t, v->text, v->len) < 0)
			return -ENOMEM;
	}
	if (!stored_xml_is_empty(card))
		stored_xml_serialize(b, card);
	return b->oom ? -ENOMEM : 0;
}

static void av_vcard_done(struct storage_req *req)
{
	struct av_vcard *v = (struct av_vcard *)req, *next = NULL;
	const struct config *cfg;
	struct strbuf b = STRBUF_INIT;
	struct arena a;
	int err = req->result;

	if (err == -ESHUTDOWN || v->w->srv->shutting_down)
		goto out;
	if (err == 0 && v->writing)
		av_set_hash(v->w, req->user, v->hash);
	if (err < 0 || v->writing)
		goto out;
	cfg = v->w->srv->cfg;
	arena_init(&a, AV_ARENA_CHUNK);
	err = av_vcard_merge(v, &a, &b);
	arena_release(&a);
	if (!err && (b.len > cfg->max_vcard_bytes || b.len > cfg->max_stanza_bytes))
		err = -E2BIG;
	if (!err && !(next = calloc(1, sizeof(*next) + b.len + 1)))
		err = -ENOMEM;
	if (!err) {
		next->w = v->w;
		next->writing = true;
		memcpy(next->hash, v->hash, sizeof(next->hash));
		next->len = b.len;
		if (b.len)
			memcpy(next->text, b.data, b.len);
		strcpy(next->req.user, req->user);
		av_vcard_submit(v->w, next);
	}
out:
	if (err < 0 && err != -ESHUTDOWN)
		log_warn("avatar.to_vcard_failed", "user=%s err=%d", req->user, err);
	strbuf_free(&b);
	free(v->old);
	free(v);
}

/* Starts the vCard rewrite with the photo b64 (NULL: the PHOTO is removed). */
static void av_vcard_update(struct worker *w, const char *user, const char *hash,
			    const char *type, const char *b64)
{
	size_t len = b64 ? strlen(b64) : 0;
	struct av_vcard *v = calloc(1, sizeof(*v) + len + 1);

	if (!v) {
		log_warn("avatar.to_vcard_failed", "user=%s err=%d", user, -ENOMEM);
		return;
	}
	v->w = w;
	snprintf(v->hash, sizeof(v->hash), "%s", b64 ? hash : "");
	snprintf(v->type, sizeof(v->type), "%s", type && type[0] ? type : AV_DEFAULT_TYPE);
	v->len = len;
	if (len)
		memcpy(v->text, b64, len);
	strcpy(v->req.user, user);
	av_vcard_submit(w, v);
}

/* What the metadata names: the image to fetch from the data node. */
struct av_want {
	char id[AVATAR_HASH_HEX + 1];
	char type[AVATAR_TYPE_MAX + 1];
};

/* The data node was read: the item the metadata named becomes the PHOTO. */
static void av_data_read(struct worker *w, const char *user, const void *ctx, int err,
			 const struct ps_item_row *rows)
{
	const struct av_want *want = ctx;
	unsigned char *bin = NULL;
	char hash[AVATAR_HASH_HEX + 1];
	const char *b64 = NULL;
	struct xml_node *data;
	size_t blen = 0;
	struct arena a;

	arena_init(&a, AV_ARENA_CHUNK);
	for (; !err && rows; rows = rows->next)
		if (strcasecmp(rows->id, want->id) == 0)
			break;
	if (!err && !rows)
		err = -ENOENT;	/* metadata about data that was never published */
	if (!err) {
		data = stored_xml_parse(w->xml, &a, rows->payload, rows->payload_len);
		b64 = data && strcmp(data->ns, NS_AVATAR_DATA) == 0 ? xml_text(&a, data) : NULL;
		b64 = b64 ? av_b64_compact(&a, b64) : NULL;
		err = b64 ? av_b64_decode(b64, &bin, &blen) : -EINVAL;
	}
	/* XEP-0398 3: the SHA-1 of the image should match the id. */
	if (!err && (av_sha1_hex(bin, blen, hash) < 0 || strcasecmp(hash, want->id) != 0))
		err = -EBADMSG;
	if (err)
		log_warn("avatar.to_vcard_failed", "user=%s err=%d", user, err);
	else
		av_vcard_update(w, user, hash, want->type, b64);
	free(bin);
	arena_release(&a);
}

/* The metadata node was read: its newest item says which image (or none). */
static void av_meta_read(struct worker *w, const char *user, const void *ctx, int err,
			 const struct ps_item_row *rows)
{
	const struct ps_item_row *last = rows;
	struct xml_node *meta = NULL, *info;
	struct av_want want = { 0 };
	struct arena a;

	(void)ctx;
	if (err || !rows)
		return;
	while (last->next)
		last = last->next;
	arena_init(&a, AV_ARENA_CHUNK);
	if (last->payload_len)
		meta = stored_xml_parse(w->xml, &a, last->payload, last->payload_len);
	if (!meta || strcmp(meta->ns, NS_AVATAR_METADATA) != 0 ||
	    strcmp(meta->name, "metadata") != 0)
		goto out;
	/* XEP-0398 3: the first <info/> that does not point to an external URL. */
	for (info = xml_first_element(meta); info; info = xml_next_element(info)) {
		const char *id = xml_attr_get(info, "id"), *type = xml_attr_get(info, "type");

		if (strcmp(info->name, "info") != 0 || xml_attr_get(info, "url") || !id ||
		    strlen(id) != AVATAR_HASH_HEX)
			continue;
		snprintf(want.id, sizeof(want.id), "%s", id);
		snprintf(want.type, sizeof(want.type), "%s", type ? type : "");
		break;
	}
	if (!xml_first_element(meta)) {
		/* XEP-0084 4.7: empty metadata disables the avatar. */
		av_vcard_update(w, user, NULL, NULL, NULL);
	} else if (want.id[0]) {
		err = pubsub_pep_read(w, user, NS_AVATAR_DATA, av_data_read, &want, sizeof(want));
		if (err < 0)
			log_warn("avatar.to_vcard_failed", "user=%s err=%d", user, err);
	}
out:
	arena_release(&a);
}

void avatar_compat_pep_changed(struct worker *w, const char *user)
{
	int ret = pubsub_pep_read(w, user, NS_AVATAR_METADATA, av_meta_read, NULL, 0);

	if (ret < 0)
		log_warn("avatar.to_vcard_failed", "user=%s err=%d", user, ret);
}

/* ---- vCard -> PEP ---- */

void avatar_compat_vcard_set(struct worker *w, const char *user, const char *xml, size_t len)
{
	struct xml_node *card, *photo, *bin_el, *type_el, *data, *meta, *info;
	struct pubsub_pep_item item;
	const char *b64, *type;
	char hash[AVATAR_HASH_HEX + 1], bytes[24];
	unsigned char *bin = NULL;
	size_t blen = 0;
	struct arena a;
	int err = 0;

	/* Stopping: the store takes no new work. */
	if (w->srv->shutting_down)
		return;
	arena_init(&a, AV_ARENA_CHUNK);
	card = xml ? stored_xml_parse(w->xml, &a, xml, len) : NULL;
	photo = card ? xml_child(card, NS_VCARD, "PHOTO") : NULL;
	bin_el = photo ? xml_child(photo, NS_VCARD, "BINVAL") : NULL;
	if (!bin_el) {
		/* No photo (or an EXTVAL link): nothing to publish, no hash to show. */
		av_set_hash(w, user, "");
		goto out;
	}
	type_el = xml_child(photo, NS_VCARD, "TYPE");
	type = type_el ? xml_text(&a, type_el) : NULL;
	b64 = av_b64_compact(&a, xml_text(&a, bin_el) ? xml_text(&a, bin_el) : "");
	err = b64 ? av_b64_decode(b64, &bin, &blen) : -ENOMEM;
	if (!err)
		err = av_sha1_hex(bin, blen, hash);
	if (err)
		goto out;
	av_set_hash(w, user, hash);
	/* XEP-0398 4: the data first, then the metadata that points to it. */
	data = xml_node_new(&a, NS_AVATAR_DATA, "data");
	meta = xml_node_new(&a, NS_AVATAR_METADATA, "metadata");
	info = meta ? xml_node_add_child(&a, meta, NULL, "info") : NULL;
	snprintf(bytes, sizeof(bytes), "%zu", blen);
	if (!data || !info || xml_node_add_text(&a, data, b64, strlen(b64)) < 0 ||
	    xml_attr_set(&a, info, "bytes", bytes) < 0 || xml_attr_set(&a, info, "id", hash) < 0 ||
	    xml_attr_set(&a, info, "type", type && type[0] ? type : AV_DEFAULT_TYPE) < 0) {
		err = -ENOMEM;
		goto out;
	}
	item.id = hash;
	item.payload = data;
	err = pubsub_pep_replace(w, user, NS_AVATAR_DATA, &item, 1, false);
	item.payload = meta;
	if (!err)
		err = pubsub_pep_replace(w, user, NS_AVATAR_METADATA, &item, 1, false);
out:
	if (err)
		log_warn("avatar.to_pep_failed", "user=%s err=%d", user, err);
	free(bin);
	arena_release(&a);
}

/* ---- Presence (XEP-0153) and login ---- */

void avatar_compat_presence(struct worker *w, struct session *s, struct xml_node *st)
{
	struct account *acct = s ? session_account(s) : NULL;
	struct xml_node *x, *photo;

	/* The client's own element wins (an empty one says "not ready yet"). */
	if (!acct || !acct->avatar_hash[0] || xml_child(st, NS_VCARD_UPDATE, "x"))
		return;
	x = xml_node_add_child(&w->tmp, st, NS_VCARD_UPDATE, "x");
	photo = x ? xml_node_add_child(&w->tmp, x, NS_VCARD_UPDATE, "photo") : NULL;
	if (photo)
		xml_node_add_text(&w->tmp, photo, acct->avatar_hash, strlen(acct->avatar_hash));
}

int avatar_compat_load(struct storage *st, const char *user, char *hash)
{
	const char *p, *end;
	unsigned char *bin = NULL;
	char *xml = NULL, *b64;
	size_t len = 0, blen = 0;
	int ret;

	hash[0] = '\0';
	ret = vcard_store_get(st, user, &xml, &len);
	if (ret == -ENOENT)
		return 0;
	if (ret < 0)
		return ret;
	/*
	 * No XML parser on the storage thread: the stored text is what
	 * stored_xml_serialize wrote, in which the vcard-temp elements carry
	 * no prefix and PHOTO no attributes.
	 */
	p = strstr(xml, "<PHOTO>");
	p = p ? strstr(p, "<BINVAL>") : NULL;
	end = p ? strstr(p, "</BINVAL>") : NULL;
	if (end) {
		p += strlen("<BINVAL>");
		b64 = strndup(p, (size_t)(end - p));
		if (b64 && av_b64_decode(b64, &bin, &blen) == 0 && av_sha1_hex(bin, blen, hash) < 0)
			hash[0] = '\0';
		free(b64);
		free(bin);
	}
	free(xml);
	return 0;
}
