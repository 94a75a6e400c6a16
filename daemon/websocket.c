/* SPDX-License-Identifier: MIT */
/*
 * XMPP over WebSocket (RFC 7395): the RFC 6455 framing between the
 * transport and the XML stream. See websocket.h for the shape; here:
 *
 * Input is decoded incrementally: a frame header is collected in a small
 * array, the payload of a data frame is unmasked straight into the
 * message buffer (a control frame's into a 125-byte array), so a frame
 * split across receives costs no extra copy. When a text message is
 * complete it is handed to the XML stream through conn_input_xml(), the
 * same loop TCP input uses (pausing for storage, restarts after SASL).
 * While input is paused, raw bytes wait in `held` and are decoded on
 * resume; the rest of a message that was being parsed when the pause
 * came is held by conn.c as XML.
 *
 * <open/> and <close/> are recognised by their first bytes and parsed
 * with a throwaway Expat parser (two per session), so that attributes,
 * quoting and namespaces are read by a real XML parser. Every other
 * message goes to the stream parser, which checks it like any stanza.
 */
#include <errno.h>
#include <expat.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "c2s.h"
#include "config.h"
#include "conn.h"
#include "jid.h"
#include "log.h"
#include "server.h"
#include "websocket.h"
#include "worker.h"

#define WS_GUID		"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEEP_BUF	(16 * 1024)	/* buffers above this are freed once empty */
#define WS_HELD_SLACK	(64 * 1024)	/* held raw input beyond two stanzas' worth */

/* Per-connection state once the upgrade is done. */
struct ws_conn {
	/* Input: the frame being received. */
	uint8_t hdr[WS_FRAME_HEADER_MAX];
	uint8_t hdr_len;		/* header bytes collected */
	bool have_frame;		/* f is parsed; its payload is arriving */
	bool in_message;		/* a fragmented text message is open */
	bool close_sent;
	struct ws_frame f;
	uint64_t got;			/* payload bytes of f received */
	uint8_t ctl[WS_CONTROL_MAX];	/* payload of a control frame */
	struct strbuf msg;		/* the text message being assembled */
	struct strbuf held;		/* raw input while paused */

	/* Output. */
	struct ws_out out;
	struct strbuf tmp;		/* a rewritten unit */
	struct strbuf frame;		/* the frame being sent */
};

/* ---- Pure helpers ---- */

int ws_accept_key(const char *key, char out[WS_ACCEPT_LEN + 1])
{
	unsigned char raw[20], digest[SHA_DIGEST_LENGTH];
	char buf[64 + sizeof(WS_GUID)];
	size_t klen = key ? strlen(key) : 0;

	/* 16 random bytes in base64: 22 characters and "==". */
	if (klen != 24 || key[22] != '=' || key[23] != '=')
		return -EINVAL;
	for (size_t i = 0; i < 22; i++)
		if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", key[i]))
			return -EINVAL;
	if (EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18)
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s%s", key, WS_GUID);
	SHA1((const unsigned char *)buf, strlen(buf), digest);
	EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
	out[WS_ACCEPT_LEN] = '\0';
	return 0;
}

bool ws_header_has_token(const char *value, const char *token)
{
	size_t tlen = strlen(token);
	const char *p = value;

	while (p && *p) {
		const char *end;
		size_t n;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		end = p;
		while (*end && *end != ',')
			end++;
		n = (size_t)(end - p);
		while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
			n--;
		if (n == tlen && strncasecmp(p, token, tlen) == 0)
			return true;
		p = end;
	}
	return false;
}

int ws_frame_parse(const uint8_t *d, size_t len, struct ws_frame *f)
{
	size_t need = 2;
	uint64_t plen;

	if (len < 2)
		return 0;
	memset(f, 0, sizeof(*f));
	f->fin = d[0] & 0x80;
	f->rsv = (d[0] >> 4) & 0x7;
	f->opcode = d[0] & 0x0f;
	f->masked = d[1] & 0x80;
	plen = d[1] & 0x7f;
	if (plen == 126)
		need += 2;
	else if (plen == 127)
		need += 8;
	if (f->masked)
		need += 4;
	if (len < need)
		return 0;
	if (plen == 126) {
		plen = (uint64_t)d[2] << 8 | d[3];
	} else if (plen == 127) {
		plen = 0;
		for (int i = 0; i < 8; i++)
			plen = plen << 8 | d[2 + i];
		/* RFC 6455 5.2: the most significant bit must be 0. */
		if (plen >> 63)
			return -EPROTO;
	}
	f->len = plen;
	if (f->masked)
		memcpy(f->mask, d + need - 4, 4);
	f->header_len = need;
	return 1;
}

size_t ws_frame_header(uint8_t *out, enum ws_opcode op, bool fin, uint64_t len)
{
	size_t n = 2;

	out[0] = (uint8_t)((fin ? 0x80 : 0) | op);
	if (len < 126) {
		out[1] = (uint8_t)len;
	} else if (len <= 0xffff) {
		out[1] = 126;
		out[2] = (uint8_t)(len >> 8);
		out[3] = (uint8_t)len;
		n = 4;
	} else {
		out[1] = 127;
		for (int i = 0; i < 8; i++)
			out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
		n = 10;
	}
	return n;
}

void ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset)
{
	for (size_t i = 0; i < len; i++)
		data[i] ^= mask[(offset + i) & 3];
}

/* ---- Output: XML to units ---- */

enum {
	WS_LEX_TEXT = 0,	/* between tags */
	WS_LEX_LT,		/* after '<' */
	WS_LEX_STAG,		/* inside a start tag */
	WS_LEX_ETAG,		/* inside an end tag */
	WS_LEX_PI,		/* inside <? ... */
	WS_LEX_PI_Q,		/* after '?' inside a PI */
};

static bool ws_is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

struct ws_attr {
	const char *name;
	size_t name_len;
	const char *raw;	/* name='value' as written */
	size_t raw_len;
};

/*
 * The next attribute of a start tag, from p (after the element name) to
 * end (the tag's '>'). Returns the position after it, or NULL at the end
 * of the attributes.
 */
static const char *ws_next_attr(const char *p, const char *end, struct ws_attr *a)
{
	char q;

	while (p < end && ws_is_space(*p))
		p++;
	if (p >= end || *p == '/' || *p == '>')
		return NULL;
	a->raw = a->name = p;
	while (p < end && *p != '=' && !ws_is_space(*p))
		p++;
	a->name_len = (size_t)(p - a->name);
	while (p < end && (ws_is_space(*p) || *p == '='))
		p++;
	if (p >= end || (*p != '\'' && *p != '"'))
		return NULL;
	q = *p++;
	while (p < end && *p != q)
		p++;
	if (p >= end)
		return NULL;
	p++;
	a->raw_len = (size_t)(p - a->raw);
	return p;
}

static bool ws_attr_is(const struct ws_attr *a, const char *name)
{
	return a->name_len == strlen(name) && memcmp(a->name, name, a->name_len) == 0;
}

/* Length of the element name at el + 1. */
static size_t ws_name_len(const char *el, size_t len)
{
	size_t n = 1;

	while (n < len && !ws_is_space(el[n]) && el[n] != '/' && el[n] != '>')
		n++;
	return n - 1;
}

/* <stream:stream ...> becomes <open/> with the same attributes, less xmlns. */
static int ws_out_open(struct strbuf *tmp, const char *el, size_t len, ws_emit_fn emit, void *arg)
{
	const char *p = el + 1 + ws_name_len(el, len), *end = el + len;
	struct ws_attr a;

	strbuf_clear(tmp);
	strbuf_puts(tmp, "<open xmlns='" NS_FRAMING "'");
	while ((p = ws_next_attr(p, end, &a)) != NULL) {
		if (ws_attr_is(&a, "xmlns") || (a.name_len > 6 && memcmp(a.name, "xmlns:", 6) == 0))
			continue;
		strbuf_puts(tmp, " ");
		strbuf_append(tmp, a.raw, a.raw_len);
	}
	strbuf_puts(tmp, "/>");
	if (tmp->oom)
		return -ENOMEM;
	return emit(arg, tmp->data, tmp->len, false);
}

/*
 * A complete top-level element: declare what the stream header used to
 * declare for it (the stream: prefix, or jabber:client as the default).
 */
static int ws_out_element(struct strbuf *tmp, const char *el, size_t len, ws_emit_fn emit,
			  void *arg)
{
	size_t nlen = ws_name_len(el, len);
	const char *p = el + 1 + nlen, *end = el + len, *insert = NULL;
	bool has_default = false, has_stream = false;
	struct ws_attr a;

	while ((p = ws_next_attr(p, end, &a)) != NULL) {
		has_default |= ws_attr_is(&a, "xmlns");
		has_stream |= ws_attr_is(&a, "xmlns:stream");
	}
	if (nlen > 7 && memcmp(el + 1, "stream:", 7) == 0) {
		if (!has_stream)
			insert = " xmlns:stream='http://etherx.jabber.org/streams'";
	} else if (!has_default && !memchr(el + 1, ':', nlen)) {
		insert = " xmlns='" XML_NS_CLIENT "'";
	}
	if (!insert)
		return emit(arg, el, len, false);
	strbuf_clear(tmp);
	strbuf_append(tmp, el, 1 + nlen);
	strbuf_puts(tmp, insert);
	strbuf_append(tmp, el + 1 + nlen, len - 1 - nlen);
	if (tmp->oom)
		return -ENOMEM;
	return emit(arg, tmp->data, tmp->len, false);
}

static bool ws_is_stream_tag(const char *el, size_t len)
{
	return ws_name_len(el, len) == 13 && memcmp(el + 1, "stream:stream", 13) == 0;
}

int ws_out_feed(struct ws_out *o, struct strbuf *tmp, const char *data, size_t len,
		ws_emit_fn emit, void *arg)
{
	size_t consumed = 0, i;
	int ret = 0;
	char *d;

	strbuf_append(&o->pend, data, len);
	if (o->pend.oom)
		return -ENOMEM;
	d = o->pend.data;
	for (i = o->scan; i < o->pend.len && !ret; i++) {
		char ch = d[i];

		switch (o->state) {
		case WS_LEX_TEXT:
			if (ch == '<') {
				if (o->depth == 0)
					o->start = i;
				o->state = WS_LEX_LT;
			}
			break;
		case WS_LEX_LT:
			if (ch == '?')
				o->state = WS_LEX_PI;
			else if (ch == '/')
				o->state = WS_LEX_ETAG;
			else if (ch == '!')
				return -EPROTO;	/* comments, CDATA: never written by us */
			else
				o->state = WS_LEX_STAG;
			break;
		case WS_LEX_STAG:
			if (o->quote) {
				if (ch == o->quote)
					o->quote = 0;
			} else if (ch == '\'' || ch == '"') {
				o->quote = ch;
			} else if (ch == '>') {
				bool empty = d[i - 1] == '/';

				o->state = WS_LEX_TEXT;
				if (o->depth == 0 && ws_is_stream_tag(d + o->start, i + 1 - o->start)) {
					ret = ws_out_open(tmp, d + o->start, i + 1 - o->start, emit, arg);
					consumed = i + 1;
				} else if (empty && o->depth == 0) {
					ret = ws_out_element(tmp, d + o->start, i + 1 - o->start, emit, arg);
					consumed = i + 1;
				} else if (!empty) {
					o->depth++;
				}
			}
			break;
		case WS_LEX_ETAG:
			if (ch != '>')
				break;
			o->state = WS_LEX_TEXT;
			if (o->depth == 0) {
				/* </stream:stream>: the end of the stream. */
				ret = emit(arg, "<close xmlns='" NS_FRAMING "'/>",
					   sizeof("<close xmlns='" NS_FRAMING "'/>") - 1, true);
				consumed = i + 1;
			} else if (--o->depth == 0) {
				ret = ws_out_element(tmp, d + o->start, i + 1 - o->start, emit, arg);
				consumed = i + 1;
			}
			break;
		case WS_LEX_PI:
			if (ch == '?')
				o->state = WS_LEX_PI_Q;
			break;
		case WS_LEX_PI_Q:
			if (ch == '>') {
				o->state = WS_LEX_TEXT;
				if (o->depth == 0)
					consumed = i + 1;	/* the XML declaration: dropped */
			} else if (ch != '?') {
				o->state = WS_LEX_PI;
			}
			break;
		}
	}
	/* Whitespace between units is dropped with them. */
	if (o->depth == 0 && o->state == WS_LEX_TEXT)
		consumed = i;
	if (consumed) {
		memmove(o->pend.data, o->pend.data + consumed, o->pend.len - consumed);
		o->pend.len -= consumed;
		o->pend.data[o->pend.len] = '\0';
		if (o->start >= consumed)
			o->start -= consumed;
	}
	o->scan = o->pend.len;
	if (!o->pend.len && o->pend.cap > WS_KEEP_BUF)
		strbuf_free(&o->pend);
	return ret;
}

void ws_out_free(struct ws_out *o)
{
	strbuf_free(&o->pend);
	memset(o, 0, sizeof(*o));
}

/* ---- Sending frames ---- */

static int ws_send_frame(struct conn *c, enum ws_opcode op, const void *payload, size_t len)
{
	struct ws_conn *ws = c->ws;
	uint8_t hdr[WS_FRAME_HEADER_MAX];
	size_t hlen = ws_frame_header(hdr, op, true, len);
	int ret;

	/* One buffer, so userspace TLS makes one record of it. */
	strbuf_clear(&ws->frame);
	strbuf_append(&ws->frame, hdr, hlen);
	strbuf_append(&ws->frame, payload, len);
	if (ws->frame.oom)
		return -ENOMEM;
	ret = conn_send_transport(c, ws->frame.data, ws->frame.len);
	if (ws->frame.cap > WS_KEEP_BUF)
		strbuf_free(&ws->frame);
	return ret;
}

/* Sends a close frame (once) with a status code. */
static void ws_send_close(struct conn *c, unsigned code)
{
	uint8_t body[2] = { (uint8_t)(code >> 8), (uint8_t)code };

	if (c->ws->close_sent)
		return;
	c->ws->close_sent = true;
	ws_send_frame(c, WS_OP_CLOSE, body, sizeof(body));
}

static int ws_emit(void *arg, const char *text, size_t len, bool close)
{
	struct conn *c = arg;
	int ret = ws_send_frame(c, WS_OP_TEXT, text, len);

	/* RFC 7395 3.6: after <close/> the server closes the WebSocket. */
	if (close && c->ws)
		ws_send_close(c, WS_CLOSE_NORMAL);
	return ret;
}

int ws_send_xml(struct conn *c, const char *data, size_t len)
{
	struct ws_conn *ws = c->ws;
	int ret;

	if (!ws || ws->close_sent)
		return 0;	/* nothing may follow a close frame */
	ret = ws_out_feed(&ws->out, &ws->tmp, data, len, ws_emit, c);
	if (ws->tmp.cap > WS_KEEP_BUF)
		strbuf_free(&ws->tmp);
	if (ret == -EPROTO)
		log_error("ws.output", "conn=%llu msg=\"output the WebSocket framing cannot carry\"",
			  (unsigned long long)c->id);
	return ret;
}

/* ---- Input ---- */

/* A framing violation: close frame with `code`, then close. */
static void ws_fail(struct conn *c, unsigned code, const char *why)
{
	log_info("ws.protocol_error", "conn=%llu code=%u reason=\"%s\"", (unsigned long long)c->id,
		 code, why);
	ws_send_close(c, code);
	conn_close(c, CONN_CLOSE_ERROR);
}

/* What <open/> or <close/> said, read by a throwaway Expat parser. */
struct ws_framing {
	XML_Parser p;
	int depth;
	bool open, close, wrong_ns, bad;
	char to[JID_PART_MAX + 1];
	char from[JID_MAX];
	char version[16];
	char lang[64];
};

static void ws_copy_attr(char *dst, size_t size, const char *v, bool *bad)
{
	if (strlen(v) >= size)
		*bad = true;
	else
		strcpy(dst, v);
}

static void XMLCALL ws_framing_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct ws_framing *fr = ud;
	const char *sep = strchr(name, '\x01');

	if (fr->depth++ > 0)
		return;	/* the content of <open/> is ignored */
	if (!sep || (size_t)(sep - name) != strlen(NS_FRAMING) ||
	    memcmp(name, NS_FRAMING, strlen(NS_FRAMING)) != 0)
		fr->wrong_ns = true;
	sep = sep ? sep + 1 : name;
	fr->open = strcmp(sep, "open") == 0;
	fr->close = strcmp(sep, "close") == 0;
	for (size_t i = 0; atts[i]; i += 2) {
		const char *k = atts[i], *v = atts[i + 1];

		if (strcmp(k, "to") == 0)
			ws_copy_attr(fr->to, sizeof(fr->to), v, &fr->bad);
		else if (strcmp(k, "from") == 0)
			ws_copy_attr(fr->from, sizeof(fr->from), v, &fr->bad);
		else if (strcmp(k, "version") == 0)
			ws_copy_attr(fr->version, sizeof(fr->version), v, &fr->bad);
		else if (strcmp(k, XML_NS_XML "\x01" "lang") == 0)
			ws_copy_attr(fr->lang, sizeof(fr->lang), v, &fr->bad);
	}
}

static void XMLCALL ws_framing_end(void *ud, const XML_Char *name)
{
	((struct ws_framing *)ud)->depth--;
}

static void XMLCALL ws_framing_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
				       const XML_Char *pubid, int has_internal)
{
	struct ws_framing *fr = ud;

	/* No DTD: it is the door to entity expansion. */
	fr->bad = true;
	XML_StopParser(fr->p, XML_FALSE);
}

static void XMLCALL ws_framing_restricted(void *ud, const XML_Char *a, const XML_Char *b)
{
	struct ws_framing *fr = ud;

	fr->bad = true;
	XML_StopParser(fr->p, XML_FALSE);
}

/*
 * Parses a framing element (a message of at most the stanza limit).
 * 0, -EINVAL when it is not one well-formed element without a DTD,
 * -ENOMEM.
 */
static int ws_framing_parse(const char *data, size_t len, struct ws_framing *fr)
{
	enum XML_Status st;

	memset(fr, 0, sizeof(*fr));
	fr->p = XML_ParserCreateNS(NULL, '\x01');
	if (!fr->p)
		return -ENOMEM;
	XML_SetUserData(fr->p, fr);
	XML_SetElementHandler(fr->p, ws_framing_start, ws_framing_end);
	XML_SetStartDoctypeDeclHandler(fr->p, ws_framing_doctype);
	XML_SetProcessingInstructionHandler(fr->p, ws_framing_restricted);
	st = XML_Parse(fr->p, data, (int)len, XML_TRUE);
	XML_ParserFree(fr->p);
	fr->p = NULL;
	return st == XML_STATUS_OK && !fr->bad ? 0 : -EINVAL;
}

/* Whether a message starts with <NAME followed by a name delimiter. */
static bool ws_starts_with_tag(const char *d, size_t len, const char *name)
{
	size_t n = strlen(name);

	return len > n + 1 && d[0] == '<' && memcmp(d + 1, name, n) == 0 &&
	       (ws_is_space(d[n + 1]) || d[n + 1] == '/' || d[n + 1] == '>');
}

static void ws_put_attr(struct strbuf *b, const char *name, const char *v)
{
	if (!v[0])
		return;
	strbuf_printf(b, " %s='", name);
	strbuf_append_xml_escaped(b, v, strlen(v));
	strbuf_puts(b, "'");
}

/*
 * <open/>: the XML stream gets the stream header a TCP client would have
 * sent, with the same attributes, and c2s answers it as usual (its
 * header goes out as <open/>, see ws_out_open).
 */
static void ws_open(struct conn *c, const struct ws_framing *fr)
{
	struct strbuf hdr = STRBUF_INIT;

	if (!c2s_expects_header(c)) {
		c2s_stream_error(c, "policy-violation", "<open/> inside an open stream");
		return;
	}
	strbuf_puts(&hdr, "<stream:stream xmlns='" XML_NS_CLIENT "' xmlns:stream='" XML_NS_STREAM "'");
	ws_put_attr(&hdr, "to", fr->to);
	ws_put_attr(&hdr, "from", fr->from);
	ws_put_attr(&hdr, "version", fr->version);
	ws_put_attr(&hdr, "xml:lang", fr->lang);
	strbuf_puts(&hdr, ">");
	if (hdr.oom)
		c2s_stream_error(c, "internal-server-error", NULL);
	else
		conn_input_xml(c, hdr.data, hdr.len);
	strbuf_free(&hdr);
}

/* A complete text message: one XML element (RFC 7395 3.3.3). */
static void ws_message(struct conn *c, const char *d, size_t len)
{
	struct ws_framing fr;
	int ret;

	while (len && ws_is_space(*d)) {
		d++;
		len--;
	}
	if (!len)
		return;
	if (ws_starts_with_tag(d, len, "open") || ws_starts_with_tag(d, len, "close")) {
		ret = ws_framing_parse(d, len, &fr);
		if (ret == -ENOMEM) {
			c2s_stream_error(c, "internal-server-error", NULL);
		} else if (ret < 0) {
			c2s_stream_error(c, "not-well-formed", NULL);
		} else if (fr.wrong_ns) {
			c2s_stream_error(c, "invalid-namespace", NULL);
		} else if (fr.open) {
			ws_open(c, &fr);
		} else {
			/* The peer ends the stream: c2s answers </stream:stream>, i.e. <close/>. */
			c2s_stream_closed_by_peer(c);
			ws_send_close(c, WS_CLOSE_NORMAL);
		}
		return;
	}
	if (c2s_expects_header(c)) {
		c2s_stream_error(c, "policy-violation", "expected <open/> (RFC 7395)");
		return;
	}
	conn_input_xml(c, d, len);
}

/* The largest message the stream takes now (before or after authentication). */
static size_t ws_message_limit(const struct conn *c)
{
	return c->xs.limit_override ? c->xs.limit_override : c->w->srv->cfg->max_stanza_bytes;
}

/* Checks a frame header; false after failing the connection. */
static bool ws_frame_ok(struct conn *c, const struct ws_frame *f)
{
	struct ws_conn *ws = c->ws;

	if (f->rsv) {
		ws_fail(c, WS_CLOSE_PROTOCOL, "reserved bits set");
		return false;
	}
	if (!f->masked) {
		ws_fail(c, WS_CLOSE_PROTOCOL, "client frames must be masked");
		return false;
	}
	if (f->opcode >= 0x8) {
		if (f->opcode != WS_OP_CLOSE && f->opcode != WS_OP_PING && f->opcode != WS_OP_PONG) {
			ws_fail(c, WS_CLOSE_PROTOCOL, "unknown control opcode");
			return false;
		}
		if (!f->fin || f->len > WS_CONTROL_MAX) {
			ws_fail(c, WS_CLOSE_PROTOCOL, "control frames must be whole and short");
			return false;
		}
		return true;
	}
	switch (f->opcode) {
	case WS_OP_TEXT:
		if (ws->in_message) {
			ws_fail(c, WS_CLOSE_PROTOCOL, "a new message inside a fragmented one");
			return false;
		}
		break;
	case WS_OP_CONT:
		if (!ws->in_message) {
			ws_fail(c, WS_CLOSE_PROTOCOL, "continuation without a message");
			return false;
		}
		break;
	case WS_OP_BINARY:
		ws_fail(c, WS_CLOSE_UNSUPPORTED, "binary messages are not XMPP (RFC 7395 3.2)");
		return false;
	default:
		ws_fail(c, WS_CLOSE_PROTOCOL, "unknown opcode");
		return false;
	}
	if (f->len > ws_message_limit(c) || ws->msg.len + f->len > ws_message_limit(c)) {
		ws_fail(c, WS_CLOSE_TOO_BIG, "message too big");
		return false;
	}
	return true;
}

static bool ws_close_code_ok(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
	       (code >= 3000 && code <= 4999);
}

/* The frame whose payload just completed. */
static void ws_frame_done(struct conn *c)
{
	struct ws_conn *ws = c->ws;
	const struct ws_frame *f = &ws->f;
	unsigned code;

	ws->have_frame = false;
	switch (f->opcode) {
	case WS_OP_PING:
		ws_send_frame(c, WS_OP_PONG, ws->ctl, (size_t)f->len);
		return;
	case WS_OP_PONG:
		return;
	case WS_OP_CLOSE:
		if (f->len == 1) {
			ws_fail(c, WS_CLOSE_PROTOCOL, "close frame with a one-byte body");
			return;
		}
		code = f->len >= 2 ? (unsigned)ws->ctl[0] << 8 | ws->ctl[1] : WS_CLOSE_NORMAL;
		if (!ws_close_code_ok(code)) {
			ws_fail(c, WS_CLOSE_PROTOCOL, "invalid close code");
			return;
		}
		log_debug("ws.close", "conn=%llu code=%u", (unsigned long long)c->id, code);
		/* Without <close/> first, this is a connection lost (resumable, XEP-0198). */
		ws_send_close(c, code);
		conn_close(c, CONN_CLOSE_PEER);
		return;
	}
	/* Text or continuation. */
	if (f->opcode == WS_OP_TEXT)
		ws->in_message = true;
	if (!f->fin)
		return;
	ws->in_message = false;
	ws_message(c, ws->msg.data ? ws->msg.data : "", ws->msg.len);
	if (c->ws) {
		strbuf_clear(&ws->msg);
		if (ws->msg.cap > WS_KEEP_BUF)
			strbuf_free(&ws->msg);
	}
}

/*
 * Decodes frames from p[0..len); returns the bytes used. Stops early when
 * input is paused (an asynchronous step) or the connection closes.
 */
static size_t ws_process(struct conn *c, const uint8_t *p, size_t len)
{
	struct ws_conn *ws = c->ws;
	size_t used = 0;

	while (used < len && !c->closing && !c->input_paused) {
		if (!ws->have_frame) {
			size_t n = len - used, before = ws->hdr_len;
			int r;

			if (n > sizeof(ws->hdr) - before)
				n = sizeof(ws->hdr) - before;
			memcpy(ws->hdr + before, p + used, n);
			r = ws_frame_parse(ws->hdr, before + n, &ws->f);
			if (r < 0) {
				ws_fail(c, WS_CLOSE_PROTOCOL, "invalid frame length");
				return len;
			}
			if (r == 0) {
				ws->hdr_len = (uint8_t)(before + n);
				used += n;
				continue;
			}
			/* Only the header's own bytes are taken; the rest is payload. */
			used += ws->f.header_len - before;
			ws->hdr_len = 0;
			if (!ws_frame_ok(c, &ws->f))
				return len;
			ws->have_frame = true;
			ws->got = 0;
			if (ws->f.len == 0)
				ws_frame_done(c);
			continue;
		}
		size_t n = len - used;
		uint8_t *dst;

		if (n > ws->f.len - ws->got)
			n = (size_t)(ws->f.len - ws->got);
		if (ws->f.opcode >= 0x8) {
			dst = ws->ctl + ws->got;
			memcpy(dst, p + used, n);
		} else {
			strbuf_append(&ws->msg, p + used, n);
			if (ws->msg.oom) {
				c2s_stream_error(c, "internal-server-error", NULL);
				return len;
			}
			dst = (uint8_t *)ws->msg.data + ws->msg.len - n;
		}
		ws_unmask(dst, n, ws->f.mask, ws->got);
		ws->got += n;
		used += n;
		if (ws->got == ws->f.len)
			ws_frame_done(c);
	}
	return used;
}

/* Processes what was held while input was paused. */
static void ws_drain_held(struct conn *c)
{
	struct ws_conn *ws = c->ws;
	size_t used = ws_process(c, (const uint8_t *)ws->held.data, ws->held.len);

	if (c->ws != ws)
		return;
	memmove(ws->held.data, ws->held.data + used, ws->held.len - used);
	ws->held.len -= used;
	if (ws->held.data)
		ws->held.data[ws->held.len] = '\0';
	if (!ws->held.len && ws->held.cap > WS_KEEP_BUF)
		strbuf_free(&ws->held);
}

/* Keeps raw input for later; bounded like conn.c's held XML. */
static void ws_hold(struct conn *c, const char *data, size_t len)
{
	struct ws_conn *ws = c->ws;
	size_t limit = (size_t)c->w->srv->cfg->max_stanza_bytes * 2 + WS_HELD_SLACK;

	if (ws->held.len + len > limit) {
		c2s_stream_error(c, "policy-violation", "too much data while a request is pending");
		return;
	}
	strbuf_append(&ws->held, data, len);
	if (ws->held.oom)
		c2s_stream_error(c, "internal-server-error", NULL);
}

void ws_input(struct conn *c, const char *data, size_t len)
{
	struct ws_conn *ws = c->ws;
	size_t used;

	if (c->closing || !ws)
		return;
	if (ws->held.len) {
		/* Older bytes first. */
		ws_hold(c, data, len);
		if (!c->closing && !c->input_paused)
			ws_drain_held(c);
		return;
	}
	used = ws_process(c, (const uint8_t *)data, len);
	if (used < len && !c->closing)
		ws_hold(c, data + used, len - used);
}

void ws_resume(struct conn *c)
{
	if (c->ws && c->ws->held.len && !c->closing && !c->input_paused)
		ws_drain_held(c);
}

int ws_start(struct conn *c, const char *rest, size_t len)
{
	char peer[64];

	c->ws = calloc(1, sizeof(*c->ws));
	if (!c->ws)
		return -ENOMEM;
	c->kind = CONN_C2S;
	c->websocket = true;
	log_info("ws.open", "conn=%llu peer=%s secure=%s", (unsigned long long)c->id,
		 conn_peer_str(c, peer, sizeof(peer)), c->secure ? "yes" : "no");
	/* From here the connection is a client stream like any other. */
	c2s_accepted(c);
	if (len && !c->closing)
		ws_input(c, rest, len);
	return 0;
}

bool ws_input_partial(const struct conn *c)
{
	const struct ws_conn *ws = c->ws;

	return ws && (ws->hdr_len || ws->have_frame || ws->in_message);
}

void ws_free(struct conn *c)
{
	struct ws_conn *ws = c->ws;

	if (!ws)
		return;
	strbuf_free(&ws->msg);
	strbuf_free(&ws->held);
	strbuf_free(&ws->tmp);
	strbuf_free(&ws->frame);
	ws_out_free(&ws->out);
	free(ws);
	c->ws = NULL;
}
