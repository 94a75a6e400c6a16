/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the RFC 6455 / RFC 7395 input side of daemon/websocket.c
 * (frame headers, masking, fragmentation, control frames, the <open/> and
 * <close/> framing elements, pausing), plus its pure helpers and the
 * output scanner.
 *
 * The connection layer around it is replaced by the stubs below: what the
 * WebSocket layer hands to the XML stream (conn_input_xml), the frames it
 * sends (conn_send_transport) and how it ends the stream are recorded in
 * a transcript.
 *
 * Input: byte 0 flags (bit 0: a small message limit, bit 1: pause input
 * after every message, bit 2: the stream is already open (no <open/>
 * expected)), byte 1 the number of chunks n (at most 16), n bytes of chunk
 * lengths, then the bytes the client sends (frames, masked or not).
 *
 * Properties checked besides the sanitizers:
 *   - every frame the layer sends parses back (unmasked, length exact);
 *   - no message longer than the limit reaches the XML stream;
 *   - nothing reaches the XML stream after the connection closed;
 *   - the transcript is the same whether the bytes arrive at once or in
 *     the fuzzer's chunks (pauses and resumptions included);
 *   - ws_unmask is an involution at any offset; ws_frame_header output
 *     parses back to the same frame;
 *   - ws_out_feed survives any output text.
 */
#include <errno.h>
#include <string.h>

#include "conn.h"
#include "config.h"
#include "fuzz_common.h"
#include "server.h"
#include "strbuf.h"
#include "websocket.h"
#include "worker.h"

#define FUZZ_WS_SMALL_LIMIT	64
#define FUZZ_WS_LIMIT		4096

static struct config fuzz_cfg;
static struct server fuzz_srv;
static struct worker fuzz_w;

/* What the current run observed. */
static struct {
	struct strbuf log;	/* the transcript */
	bool header_expected;	/* c2s state, as far as <open/> is concerned */
	bool pause_after_message;
	size_t limit;
} run;

static void note(const char *tag, const void *data, size_t len)
{
	strbuf_printf(&run.log, "%s%zu:", tag, len);
	strbuf_append(&run.log, data, len);
}

/* ---- Stubs of the connection and stream layers ---- */

void c2s_accepted(struct conn *c)
{
}

bool c2s_expects_header(const struct conn *c)
{
	return run.header_expected;
}

void c2s_stream_error(struct conn *c, const char *condition, const char *text)
{
	if (c->closing)
		return;
	note("E", condition, strlen(condition));
	c->closing = true;
}

void c2s_stream_closed_by_peer(struct conn *c)
{
	note("P", "", 0);
	c->closing = true;
}

void conn_close(struct conn *c, enum conn_close_reason reason)
{
	if (!c->closing)
		note("C", "", 0);
	c->closing = true;
}

const char *conn_peer_str(const struct conn *c, char *buf, size_t size)
{
	snprintf(buf, size, "fuzz");
	return buf;
}

void conn_input_xml(struct conn *c, const char *data, size_t len)
{
	fuzz_check(!c->closing, "XML delivered after the close");
	/* The synthesized stream header is ours, not the peer's message. */
	if (len >= 14 && memcmp(data, "<stream:stream", 14) == 0) {
		fuzz_check(run.header_expected, "a stream header while a stream is open");
		run.header_expected = false;
	} else {
		fuzz_check(len <= run.limit, "a message of %zu bytes over the limit %zu", len,
			   run.limit);
	}
	note("M", data, len);
	if (run.pause_after_message)
		c->input_paused = true;
}

int conn_send_transport(struct conn *c, const void *data, size_t len)
{
	struct ws_frame f;
	int r = ws_frame_parse(data, len, &f);

	fuzz_check(r == 1, "a frame we send does not parse (%d)", r);
	fuzz_check(!f.masked && f.fin && !f.rsv, "a frame we send is masked or fragmented");
	fuzz_check(f.header_len + f.len == len, "frame length %llu + %zu != %zu",
		   (unsigned long long)f.len, f.header_len, len);
	note("O", data, len);
	return 0;
}

/* ---- Driver ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_logs();
	fuzz_cfg.max_stanza_bytes = FUZZ_WS_LIMIT;
	fuzz_srv.cfg = &fuzz_cfg;
	fuzz_w.srv = &fuzz_srv;
	return 0;
}

/* Unpauses and resumes until the layer stops pausing (or closes). */
static void resume_all(struct conn *c)
{
	for (int i = 0; i < 100000 && c->input_paused && !c->closing; i++) {
		c->input_paused = false;
		ws_resume(c);
	}
}

/* Feeds data in the given chunks; returns the transcript (caller frees). */
static char *feed(uint8_t flags, const uint8_t *data, size_t len, const uint8_t *chunks,
		  size_t nchunks, size_t *out_len)
{
	struct conn c;
	size_t off = 0;
	char *t;

	memset(&c, 0, sizeof(c));
	c.w = &fuzz_w;
	run.log = (struct strbuf)STRBUF_INIT;
	run.header_expected = !(flags & 4);
	run.pause_after_message = flags & 2;
	run.limit = flags & 1 ? FUZZ_WS_SMALL_LIMIT : FUZZ_WS_LIMIT;
	c.xs.limit_override = flags & 1 ? FUZZ_WS_SMALL_LIMIT : 0;
	if (ws_start(&c, "", 0) < 0)
		abort();
	for (size_t i = 0; i < nchunks && off < len && !c.closing; i++) {
		size_t n = (size_t)chunks[i] + 1;

		if (n > len - off)
			n = len - off;
		ws_input(&c, (const char *)data + off, n);
		off += n;
		resume_all(&c);
	}
	if (off < len && !c.closing)
		ws_input(&c, (const char *)data + off, len - off);
	resume_all(&c);
	ws_free(&c);
	*out_len = run.log.len;
	t = run.log.data;
	fuzz_check(!run.log.oom, "transcript out of memory");
	memset(&run.log, 0, sizeof(run.log));
	return t;
}

static void check_helpers(const uint8_t *data, size_t len)
{
	uint8_t mask[4] = { 0x5a, 0x00, 0xff, 0x13 }, hdr[WS_FRAME_HEADER_MAX];
	size_t n = len < 4096 ? len : 4096, off = len ? data[0] % 7 : 0;
	uint8_t *copy = malloc(n + 1);
	struct ws_frame f;

	if (!copy)
		abort();
	if (n) {
		memcpy(copy, data, n);
		ws_unmask(copy, n, mask, off);
		ws_unmask(copy, n, mask, off);
		fuzz_check(memcmp(copy, data, n) == 0, "unmasking twice is not the identity");
	}
	free(copy);

	for (unsigned op = 0; op < 16; op += 5) {
		uint64_t plen = len * 1009u + (len > 2 ? (uint64_t)data[1] << 16 : 0);
		size_t hl = ws_frame_header(hdr, (enum ws_opcode)op, len & 1, plen);

		fuzz_check(ws_frame_parse(hdr, hl, &f) == 1 && f.len == plen && f.opcode == op &&
			   f.header_len == hl && f.fin == (len & 1) && !f.masked,
			   "ws_frame_header output does not parse back");
		fuzz_check(ws_frame_parse(hdr, hl - 1, &f) == 0, "a truncated header parsed");
	}
}

static int count_units(void *arg, const char *text, size_t len, bool close)
{
	(*(size_t *)arg)++;
	return 0;
}

static void check_output_scanner(const uint8_t *data, size_t len)
{
	struct ws_out o;
	struct strbuf tmp = STRBUF_INIT;
	size_t units = 0;

	memset(&o, 0, sizeof(o));
	ws_out_feed(&o, &tmp, (const char *)data, len, count_units, &units);
	ws_out_free(&o);
	strbuf_free(&tmp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	const uint8_t *chunks, *stream;
	size_t nchunks, len, la, lb;
	uint8_t flags;
	char *a, *b;

	flags = fuzz_u8(&in);
	nchunks = fuzz_u8(&in) % 17;
	nchunks = fuzz_bytes(&in, nchunks, &chunks);
	len = fuzz_bytes(&in, in.left, &stream);

	a = feed(flags, stream, len, NULL, 0, &la);
	b = feed(flags, stream, len, chunks, nchunks, &lb);
	fuzz_check(la == lb && (!la || memcmp(a, b, la) == 0),
		   "chunking changed what happened:\n--- whole ---\n%.*s\n--- chunked ---\n%.*s",
		   (int)(la < 2000 ? la : 2000), a, (int)(lb < 2000 ? lb : 2000), b);
	free(a);
	free(b);
	check_helpers(stream, len);
	check_output_scanner(stream, len);
	return 0;
}
