/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the pooled Expat stream parser (daemon/xml.c).
 *
 * Input layout (see tests/fuzz/README.md; seeds in corpus/fuzz_xml_stream):
 *
 *   byte 0        flags: bits 0-1 limits profile (default, small, tiny,
 *                 default), bit 2 run the "ops" pass
 *   byte 1        number of chunk descriptors (mod 32)
 *   3 bytes each  descriptor: chunk length - 1, op, op2 (see below)
 *   rest          the stream bytes; whatever the chunks leave is fed last
 *
 * The same bytes go through the parser four times, all streams sharing
 * one parser pool:
 *
 *   A   in one xml_stream_feed() call;
 *   B1, B2  in the fuzzer's chunks, alternately into two streams, each
 *       released to the pool after every chunk, so parsers (primed ones
 *       included) move between streams mid-document;
 *   C   (flag bit 2) in chunks, with the chunk's ops: restart outside
 *       and inside callbacks (stanza and stream_open), stop from a
 *       callback and feed the rest,
 *       limit_override changes, destroy and re-init, restart after an
 *       error or the end of the stream.
 *
 * Properties checked besides the sanitizers:
 *   - every stanza of A and C serializes and parses back to the same
 *     tree (xmlcheck_roundtrip);
 *   - B1 and B2 see exactly the same stanzas and end the same way;
 *   - chunking changes nothing: A and B1 deliver the same stanzas, and
 *     when neither failed, end the same way (closed or open); when one
 *     failed, the stanzas of one are a prefix of the other's (chunked
 *     input defers long tokens, so it may see an error later);
 *   - *consumed is within the bytes fed and moves forward on a stop;
 *     an ended stream reports the same end again;
 *   - no parser is left in use once every stream is destroyed.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "fuzz_xmlcheck.h"
#include "strbuf.h"
#include "xml.h"

#define FUZZ_MAX_CHUNKS		32
/* Bounds the stop-and-continue loop of one chunk (one stop per stanza). */
#define FUZZ_MAX_ROUNDS		4096

/* Limits profiles: the small ones make every limit reachable by short inputs. */
static const struct xml_limits fuzz_limits[4] = {
	XML_LIMITS_DEFAULT,
	{ .max_stanza_bytes = 512, .max_depth = 6, .max_attrs = 6, .max_header_bytes = 256 },
	{ .max_stanza_bytes = 64, .max_depth = 3, .max_attrs = 2, .max_header_bytes = 128 },
	XML_LIMITS_DEFAULT,
};

/* op bits of a chunk (run C) */
enum {
	OP_RELEASE = 0x01,		/* xml_stream_release_idle() after the chunk */
	OP_RESTART = 0x02,		/* xml_stream_restart() after the chunk */
	OP_RESTART_IN_CB = 0x04,	/* restart from the next stanza callback */
	OP_STOP_IN_CB = 0x08,		/* the next stanza callback returns false */
	OP_REVIVE = 0x10,		/* after an end (closed/error): restart, go on */
	OP_LIMIT_SHIFT = 5,		/* 2 bits: limit_override none/0/100/1000 */
};

/* op2 bits of a chunk (run C) */
enum {
	OP2_RENEW = 0x01,		/* destroy the stream and init a new one */
	OP2_STOP_ON_OPEN = 0x02,	/* the next stream_open returns false */
	OP2_LIMIT_IN_CB = 0x04,		/* set limit_override in the next callback */
	OP2_RESTART_ON_OPEN = 0x08,	/* restart from the next stream_open */
};

struct chunk {
	size_t len;
	uint8_t op, op2;
};

enum run_end {
	END_OPEN = 0,	/* still open (or waiting for a header) */
	END_CLOSED,
	END_ERROR,
};

struct run {
	const char *name;
	struct xml_stream s;
	bool roundtrip;		/* check every stanza's round trip */
	char *default_ns;	/* from the last stream_open */
	struct strbuf list;	/* "<len>:<serialized stanza>" for each stanza */
	struct strbuf scratch;
	size_t nstanzas;
	enum run_end end;
	enum xml_status err;
	/* one-shot requests for the next callback (run C) */
	bool restart_in_cb, stop_in_cb, stop_on_open, limit_in_cb, restart_on_open;
	size_t limit_value;
};

static bool on_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	struct run *r = ctx;

	fuzz_check(hdr && hdr->name && default_ns, "%s: stream_open without header", r->name);
	free(r->default_ns);
	r->default_ns = strdup(default_ns);
	if (!r->default_ns)
		abort();
	if (r->restart_on_open) {
		/* Legal from a callback: the next bytes are a new document. */
		r->restart_on_open = false;
		xml_stream_restart(&r->s);
	}
	if (r->stop_on_open) {
		r->stop_on_open = false;
		return false;
	}
	return true;
}

static bool on_stanza(void *ctx, struct xml_node *st)
{
	struct run *r = ctx;
	bool keep_going = true;

	fuzz_check(st && st->name && !st->parent, "%s: stanza is not a detached element",
		   r->name);
	if (r->roundtrip) {
		xmlcheck_roundtrip(st, r->default_ns, r->name, &r->scratch);
	} else {
		strbuf_clear(&r->scratch);
		xml_serialize(&r->scratch, st, r->default_ns);
	}
	strbuf_printf(&r->list, "%zu:", r->scratch.len);
	strbuf_append(&r->list, r->scratch.data, r->scratch.len);
	r->nstanzas++;

	if (r->restart_in_cb) {
		r->restart_in_cb = false;
		xml_stream_restart(&r->s);
	}
	if (r->limit_in_cb) {
		r->limit_in_cb = false;
		r->s.limit_override = r->limit_value;
	}
	if (r->stop_in_cb) {
		r->stop_in_cb = false;
		keep_going = false;
	}
	return keep_going;
}

static const struct xml_stream_handlers handlers = {
	.stream_open = on_open,
	.stanza = on_stanza,
};

static void run_init(struct run *r, const char *name, struct xml_pool *pool, bool roundtrip)
{
	memset(r, 0, sizeof(*r));
	r->name = name;
	r->roundtrip = roundtrip;
	r->list = (struct strbuf)STRBUF_INIT;
	r->scratch = (struct strbuf)STRBUF_INIT;
	xml_stream_init(&r->s, pool, &handlers, r);
}

static void run_free(struct run *r)
{
	xml_stream_destroy(&r->s);
	free(r->default_ns);
	strbuf_free(&r->list);
	strbuf_free(&r->scratch);
}

/*
 * Feeds buf[0..len) to a run that does not stop in callbacks (A, B1, B2).
 * Once the stream ended, feeding again must report the same end.
 */
static void feed_plain(struct run *r, const char *buf, size_t len)
{
	enum xml_status st;
	size_t consumed = 12345;

	st = xml_stream_feed(&r->s, buf, len, &consumed);
	if (r->end == END_CLOSED) {
		fuzz_check(st == XML_CLOSED && consumed == 0,
			   "%s: closed stream fed again gave %d consumed %zu", r->name, st, consumed);
		return;
	}
	if (r->end == END_ERROR) {
		fuzz_check(st == r->err && consumed == 0,
			   "%s: failed stream fed again gave %d, first %d", r->name, st, r->err);
		return;
	}
	switch (st) {
	case XML_OK:
		fuzz_check(consumed == len, "%s: OK but consumed %zu of %zu", r->name, consumed,
			   len);
		break;
	case XML_CLOSED:
		fuzz_check(consumed > 0 && consumed <= len, "%s: closed, consumed %zu of %zu",
			   r->name, consumed, len);
		r->end = END_CLOSED;
		break;
	case XML_STOPPED:
		fuzz_fail("%s: stopped though no callback returned false", r->name);
	default:
		fuzz_check(consumed == 0, "%s: error %d with consumed %zu", r->name, st, consumed);
		fuzz_check(xml_status_condition(st) != NULL, "%s: error %d has no condition",
			   r->name, st);
		r->end = END_ERROR;
		r->err = st;
		break;
	}
}

static size_t limit_choice(unsigned v)
{
	static const size_t values[4] = { 0, 0, 100, 1000 };

	return values[v & 3];
}

/*
 * Feeds one chunk to run C, acting on stops (feed the rest) and, with
 * OP_REVIVE, on the end of the stream (restart and feed the rest).
 */
static void feed_ops(struct run *r, const char *buf, size_t len, uint8_t op, uint8_t op2)
{
	size_t pos = 0;
	unsigned limit_sel = (op >> OP_LIMIT_SHIFT) & 3;

	r->restart_in_cb |= op & OP_RESTART_IN_CB;
	r->stop_in_cb |= op & OP_STOP_IN_CB;
	r->stop_on_open |= op2 & OP2_STOP_ON_OPEN;
	r->restart_on_open |= op2 & OP2_RESTART_ON_OPEN;
	if (limit_sel) {
		if (op2 & OP2_LIMIT_IN_CB) {
			r->limit_in_cb = true;
			r->limit_value = limit_choice(limit_sel);
		} else {
			r->s.limit_override = limit_choice(limit_sel);
		}
	}
	for (int round = 0; pos < len; round++) {
		size_t consumed = 12345;
		enum xml_status st;

		fuzz_check(round < FUZZ_MAX_ROUNDS, "C: no progress feeding a chunk");
		st = xml_stream_feed(&r->s, buf + pos, len - pos, &consumed);
		if (st == XML_OK) {
			fuzz_check(consumed == len - pos, "C: OK but consumed %zu of %zu", consumed,
				   len - pos);
			break;
		}
		if (st == XML_STOPPED) {
			fuzz_check(consumed > 0 && consumed <= len - pos,
				   "C: stopped, consumed %zu of %zu", consumed, len - pos);
			pos += consumed;
			continue;
		}
		if (st == XML_CLOSED) {
			fuzz_check(consumed <= len - pos, "C: closed, consumed %zu of %zu", consumed,
				   len - pos);
			if (!(op & OP_REVIVE))
				break;
			pos += consumed;
			xml_stream_restart(&r->s);
			continue;
		}
		fuzz_check(consumed == 0, "C: error %d with consumed %zu", st, consumed);
		if (!(op & OP_REVIVE))
			break;
		/* Restarting clears the error; the rest is a new document. */
		xml_stream_restart(&r->s);
		op &= (uint8_t)~OP_REVIVE;	/* once per chunk: errors would repeat */
	}
	if (op & OP_RESTART)
		xml_stream_restart(&r->s);
	if (op & OP_RELEASE)
		xml_stream_release_idle(&r->s);
	if (op2 & OP2_RENEW) {
		struct xml_pool *pool = r->s.pool;

		xml_stream_destroy(&r->s);
		xml_stream_init(&r->s, pool, &handlers, r);
	}
}

/* Is a (length-prefixed list) a prefix of b? */
static bool list_is_prefix(const struct strbuf *a, const struct strbuf *b)
{
	return a->len <= b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

static void compare_runs(const struct run *a, const struct run *b, bool exact)
{
	if (exact) {
		fuzz_check(a->end == b->end && a->err == b->err,
			   "%s ended %d/%d but %s ended %d/%d", a->name, a->end, a->err, b->name,
			   b->end, b->err);
		fuzz_check(a->list.len == b->list.len &&
			   (a->list.len == 0 || memcmp(a->list.data, b->list.data, a->list.len) == 0),
			   "%s and %s saw different stanzas (%zu vs %zu)", a->name, b->name,
			   a->nstanzas, b->nstanzas);
		return;
	}
	if (a->end != END_ERROR && b->end != END_ERROR) {
		fuzz_check(a->end == b->end, "%s ended %d but %s ended %d", a->name, a->end,
			   b->name, b->end);
		fuzz_check(list_is_prefix(&a->list, &b->list) && a->list.len == b->list.len,
			   "%s and %s saw different stanzas (%zu vs %zu)", a->name, b->name,
			   a->nstanzas, b->nstanzas);
		return;
	}
	fuzz_check(list_is_prefix(&a->list, &b->list) || list_is_prefix(&b->list, &a->list),
		   "%s and %s saw diverging stanzas (%zu vs %zu, ends %d/%d)", a->name, b->name,
		   a->nstanzas, b->nstanzas, a->end, b->end);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet_logs();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct chunk chunks[FUZZ_MAX_CHUNKS + 1];
	struct run a, b1, b2, c;
	struct xml_pool *pool;
	const char *payload;
	size_t nchunks, plen, off;
	uint8_t flags;

	flags = fuzz_u8(&in);
	nchunks = fuzz_u8(&in) % FUZZ_MAX_CHUNKS;
	for (size_t i = 0; i < nchunks; i++) {
		chunks[i].len = (size_t)fuzz_u8(&in) + 1;
		chunks[i].op = fuzz_u8(&in);
		chunks[i].op2 = fuzz_u8(&in);
	}
	payload = (const char *)in.p;
	plen = in.left;
	/* Clip the chunks to the payload; the rest is one last chunk. */
	off = 0;
	for (size_t i = 0; i < nchunks; i++) {
		if (chunks[i].len > plen - off)
			chunks[i].len = plen - off;
		off += chunks[i].len;
	}
	chunks[nchunks].len = plen - off;
	chunks[nchunks].op = OP_RELEASE;
	chunks[nchunks].op2 = 0;
	nchunks++;

	pool = xml_pool_new(&fuzz_limits[flags & 3]);
	if (!pool)
		abort();

	/* A: everything at once. */
	run_init(&a, "A", pool, true);
	feed_plain(&a, payload, plen);
	xml_stream_release_idle(&a.s);

	/* B1, B2: the same chunks, interleaved, released after each one. */
	run_init(&b1, "B1", pool, false);
	run_init(&b2, "B2", pool, false);
	off = 0;
	for (size_t i = 0; i < nchunks; i++) {
		if (chunks[i].len == 0)
			continue;
		feed_plain(&b1, payload + off, chunks[i].len);
		feed_plain(&b2, payload + off, chunks[i].len);
		xml_stream_release_idle(&b1.s);
		xml_stream_release_idle(&b2.s);
		off += chunks[i].len;
	}
	compare_runs(&b1, &b2, true);
	compare_runs(&a, &b1, false);

	/* C: the chunks with their operations. */
	if (flags & 4) {
		run_init(&c, "C", pool, true);
		off = 0;
		for (size_t i = 0; i < nchunks; i++) {
			feed_ops(&c, payload + off, chunks[i].len, chunks[i].op, chunks[i].op2);
			off += chunks[i].len;
		}
		run_free(&c);
	}

	run_free(&a);
	run_free(&b1);
	run_free(&b2);
	fuzz_check(xml_pool_in_use(pool) == 0, "%zu parsers still in use after destroy",
		   xml_pool_in_use(pool));
	xml_pool_free(pool);
	return 0;
}
