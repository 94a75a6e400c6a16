/* SPDX-License-Identifier: MIT */
/*
 * XMPP over WebSocket (RFC 7395) on the HTTP listeners, at /xmpp-websocket.
 *
 * A WebSocket connection is an ordinary client connection (CONN_C2S, the
 * same c2s negotiation, SASL, bind, stream management) with a framing
 * layer between the transport (socket or TLS) and the XML stream:
 *
 *   input:  bytes -> RFC 6455 frames (masked, maybe fragmented, control
 *           frames in between) -> one text message per XML element ->
 *           <open/> becomes a synthetic stream header for the XML stream,
 *           <close/> the end of the stream, anything else is fed as is
 *   output: what c2s writes (a stream header, features, stanzas, errors,
 *           </stream:stream>) is cut into top-level elements, each sent as
 *           one text frame; the header becomes <open/>, the end tag
 *           <close/> followed by a WebSocket close frame
 *
 * So c2s sees the same callbacks as for TCP; it only has to know that a
 * WebSocket stream offers no STARTTLS (conn->websocket). A connection is
 * secure when the HTTP listener is HTTPS; on plain HTTP the upgrade is
 * refused while require_tls is on, so PLAIN and SCRAM follow one policy.
 *
 * Limits: a message (all its fragments) may not exceed the stream's
 * current stanza limit (max_stanza_bytes_preauth before authentication,
 * max_stanza_bytes after): the connection is closed with 1009 as soon as a
 * frame header announces more. Client frames must be masked (1002), binary
 * messages are refused (1003), control frames are at most 125 bytes.
 */
#ifndef STANZAD_WEBSOCKET_H
#define STANZAD_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "strbuf.h"

struct conn;

#define WS_PATH			"/xmpp-websocket"
#define WS_SUBPROTOCOL		"xmpp"
#define NS_FRAMING		"urn:ietf:params:xml:ns:xmpp-framing"
#define WS_ACCEPT_LEN		28	/* base64 of a SHA-1 */
#define WS_CONTROL_MAX		125	/* payload of a control frame */
#define WS_FRAME_HEADER_MAX	14	/* 2 + 8 (length) + 4 (mask) */

/* Opcodes (RFC 6455 5.2). */
enum ws_opcode {
	WS_OP_CONT = 0x0,
	WS_OP_TEXT = 0x1,
	WS_OP_BINARY = 0x2,
	WS_OP_CLOSE = 0x8,
	WS_OP_PING = 0x9,
	WS_OP_PONG = 0xa,
};

/* Close codes (RFC 6455 7.4.1). */
#define WS_CLOSE_NORMAL		1000
#define WS_CLOSE_GOING_AWAY	1001
#define WS_CLOSE_PROTOCOL	1002
#define WS_CLOSE_UNSUPPORTED	1003
#define WS_CLOSE_TOO_BIG	1009

/* ---- Pure helpers (unit-tested) ---- */

/*
 * Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)).
 * out gets WS_ACCEPT_LEN characters and a NUL. 0, or -EINVAL when the key
 * is not the base64 of 16 bytes (RFC 6455 4.2.1).
 */
int ws_accept_key(const char *key, char out[WS_ACCEPT_LEN + 1]);

/* True when a comma-separated header value lists `token` (case-insensitive). */
bool ws_header_has_token(const char *value, const char *token);

/* A parsed frame header. */
struct ws_frame {
	bool fin;
	bool masked;
	uint8_t rsv;		/* RSV1-3 bits, must be 0 */
	uint8_t opcode;
	uint8_t mask[4];
	uint64_t len;		/* payload length */
	size_t header_len;	/* bytes of the header, mask included */
};

/*
 * Parses a frame header from data[0..len). Returns 1 when complete (f
 * filled), 0 when more bytes are needed, -EPROTO for a length that uses
 * the 64-bit form's top bit or a non-minimal encoding is accepted (RFC
 * 6455 allows receivers to be lenient there; only the top bit is checked).
 */
int ws_frame_parse(const uint8_t *data, size_t len, struct ws_frame *f);

/*
 * Writes an unmasked frame header (server to client) for a payload of
 * len bytes into out (at least WS_FRAME_HEADER_MAX bytes). Returns its
 * length.
 */
size_t ws_frame_header(uint8_t *out, enum ws_opcode op, bool fin, uint64_t len);

/* XORs data with the mask, `offset` bytes into the payload. */
void ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset);

/*
 * The output side: cuts the XML c2s writes into top-level elements and
 * rewrites the stream-level ones (RFC 7395 3.3). Bytes go in with
 * ws_out_feed(); each complete unit comes out through `emit` as the text
 * of one frame (already rewritten). A stream header becomes <open/>, the
 * stream end tag <close/> (with close = true), an XML declaration and
 * whitespace between elements are dropped, a top-level element without a
 * default namespace gets xmlns='jabber:client', and one with the stream:
 * prefix gets its declaration.
 */
struct ws_out {
	struct strbuf pend;	/* bytes of the unit being collected */
	size_t scan;		/* bytes of pend already scanned */
	size_t start;		/* offset of the current element's '<' */
	unsigned depth;		/* open elements of the current unit */
	uint8_t state;		/* lexer state (websocket.c) */
	char quote;		/* inside an attribute value quoted so */
	bool in_unit;		/* between a unit's first '<' and its end */
};

typedef int (*ws_emit_fn)(void *arg, const char *text, size_t len, bool close);

/*
 * Scans data and emits every unit it completes. Returns 0, the first
 * nonzero value emit returned, -EPROTO for output that is not XML the
 * scanner understands (a bug in the caller), or -ENOMEM.
 */
int ws_out_feed(struct ws_out *o, struct strbuf *tmp, const char *data, size_t len,
		ws_emit_fn emit, void *arg);
void ws_out_free(struct ws_out *o);

/* ---- The connection layer (conn.c and http.c call these) ---- */

/*
 * Switches a connection whose HTTP upgrade was accepted (the 101 response
 * is queued) to XMPP over WebSocket: the connection becomes a c2s stream
 * (c2s_accepted) and `rest` (bytes after the request) is its first input.
 * 0 or -ENOMEM (then the caller closes).
 */
int ws_start(struct conn *c, const char *rest, size_t len);

/* Transport plaintext for a WebSocket connection (conn.c). */
void ws_input(struct conn *c, const char *data, size_t len);

/* Input was resumed after an asynchronous step: process held frames. */
void ws_resume(struct conn *c);

/* conn_send() for a WebSocket connection: XML to frames. 0 or -errno. */
int ws_send_xml(struct conn *c, const char *data, size_t len);

/* True while part of a frame or of a fragmented message has arrived (abuse.c). */
bool ws_input_partial(const struct conn *c);

/* Frees the WebSocket state of a connection (from conn_free). */
void ws_free(struct conn *c);

#endif
