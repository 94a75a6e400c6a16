/* SPDX-License-Identifier: MIT */
/*
 * "Acknowledged means committed" (README, Durability) for the writes that
 * features hand to the storage thread without waiting for them: roster
 * items, subscription state, pending requests, room and node changes.
 *
 * The storage thread runs requests in submission order and posts a
 * batch's completions only after the batch committed, so a request
 * submitted after a write completes only once that write is on disk. A
 * no-op request submitted behind the writes (a barrier) therefore tells
 * when everything before it committed. Two uses:
 *
 *  - stream management: when handling one client stanza submitted any
 *    storage request, the sender's <a/> is held (sm_hold_ack) until a
 *    barrier behind those requests completes; features that already hold
 *    acks for their own writes (offline, archive) keep doing so;
 *  - iq results that promise a change is stored (roster sets): sent when
 *    a barrier completes, or internal-server-error (type wait) when a
 *    storage request failed with an I/O error meanwhile.
 */
#ifndef STANZAD_DURABLE_H
#define STANZAD_DURABLE_H

#include <stdint.h>

struct conn;
struct iq_request;

/* Before handling a client stanza: where the storage queue stands. */
uint64_t durable_mark(const struct conn *c);

/*
 * After handling it: if storage requests were submitted since `mark` and
 * c's session uses stream management, its acks wait for a barrier.
 */
void durable_settle(struct conn *c, uint64_t mark);

struct worker;
/*
 * At a recipient's home, after routing a stanza forwarded with the
 * sender's ack held (router.c, docs/account-homes.md 0b): releases that
 * ack at the sender's home worker `home` (full JID `jid`) once what the
 * routing wrote commits - at once when nothing was submitted since
 * `mark` (storage_queue_submitted before routing).
 */
void durable_release_remote(struct worker *w, unsigned home, const char *jid, uint64_t mark);

/*
 * Answers rq with an empty result once everything submitted so far has
 * committed (internal-server-error when a storage request failed with an
 * I/O error in between; ns/name, static strings, name the payload echoed
 * in that error). The sender's acks wait too.
 */
void durable_reply_result(struct iq_request *rq, const char *ns, const char *name);

#endif
