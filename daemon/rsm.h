/* SPDX-License-Identifier: MIT */
/*
 * XEP-0059 Result Set Management: the <set xmlns='http://jabber.org/protocol/rsm'/>
 * element of paged queries (MAM archives, MUC archives, pubsub item
 * retrieval, disco#items), read and written in one place.
 *
 * Three parts:
 *  - rsm_parse() reads a request's <set/> (max, after, before, index);
 *  - rsm_build() / rsm_serialize() write a reply's <set/> (first with its
 *    index, last, count), as a tree or as bytes;
 *  - rsm_window() pages an ordered list that is in memory (pubsub items,
 *    MUC history): it turns a request into the slice [start, start + len)
 *    to return, and says whether the slice reaches the end.
 *
 * Paging rules (XEP-0059 section 2):
 *  - no <after/> and no <before/>: the first page;
 *  - <after>UID</after>: the items right after UID, forwards;
 *  - <before>UID</before>: the items right before UID (the last `max` of
 *    them), backwards; an empty <before/> is the last page;
 *  - <index>N</index> (only without after/before): the page that starts
 *    at position N; past the end, an empty page;
 *  - <max>0</max>: no items, just the count;
 *  - a UID that is not in the set: item-not-found.
 *
 * Backends that page in SQL follow the same rules: fetch page size + 1
 * rows in the paging direction (ascending after a lower bound, descending
 * before an upper bound) and call the page complete when the extra row did
 * not come; send a backwards page in ascending order all the same.
 */
#ifndef STANZAD_RSM_H
#define STANZAD_RSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "strbuf.h"
#include "xml.h"

#define NS_RSM		"http://jabber.org/protocol/rsm"
/* Longest UID accepted in <after/> and <before/> (longer: bad-request). */
#define RSM_UID_MAX	1024

/* A request's <set/>. Strings point into the request tree (or its arena). */
struct rsm_request {
	bool present;		/* the request had a <set/> at all */
	bool has_max;
	uint32_t max;		/* <max/>, when has_max */
	const char *after;	/* <after/>: a UID (never ""), or NULL when absent */
	const char *before;	/* <before/>: a UID, "" for the last page, or NULL */
	bool has_index;
	uint32_t index;		/* <index/>, when has_index */
};

/*
 * Reads the <set xmlns='http://jabber.org/protocol/rsm'/> child of `parent`
 * (the query element) into *out. No <set/> is not an error: out->present
 * is false and everything else is zeroed. Text is taken from `a` when an
 * element's text needs joining. Returns 0, or -EINVAL for a malformed set
 * (max or index not a decimal number up to 2^32 - 1, an empty <after/>, a
 * UID longer than RSM_UID_MAX, an element given twice, <index/> together
 * with <after/> or <before/>); then *why (if not NULL) is a static English
 * sentence for the error's <text/>. -ENOMEM when `a` runs out.
 */
int rsm_parse(struct arena *a, const struct xml_node *parent, struct rsm_request *out,
	      const char **why);

/*
 * The page size for a request: its <max/> capped at `cap`, or `dflt` when
 * it gave none (dflt is capped too). A cap below the requested max is what
 * XEP-0059 calls a server-limited page: the reply is not complete.
 */
uint32_t rsm_page_size(const struct rsm_request *r, uint32_t dflt, uint32_t cap);

/* True when the request pages backwards (it has a <before/>, empty or not). */
static inline bool rsm_backwards(const struct rsm_request *r)
{
	return r->before != NULL;
}

/* A reply's <set/>. */
struct rsm_reply {
	const char *first;	/* UID of the first item of the page, NULL when empty */
	const char *last;	/* UID of the last item (== first for one item) */
	bool has_index;
	uint32_t index;		/* position of `first` in the whole result set */
	bool has_count;
	uint32_t count;		/* items in the whole result set */
};

/*
 * Appends <set xmlns=rsm> with <first index=...>, <last> and <count> to
 * `parent` (first/last only for a non-empty page, index only with first).
 * parent may be NULL: the set is returned unattached. NULL on ENOMEM.
 */
struct xml_node *rsm_build(struct arena *a, struct xml_node *parent, const struct rsm_reply *r);

/* The same <set/> as bytes (xmlns declared, UIDs escaped), for byte-built replies. */
void rsm_serialize(struct strbuf *out, const struct rsm_reply *r);

/* ---- Paging an in-memory list ---- */

/* The slice of an ordered list of n items that a request selects. */
struct rsm_window {
	size_t start;		/* first item's position */
	size_t len;		/* items in the page (0..page size) */
	bool complete;		/* the page reaches the end in its paging direction */
};

/*
 * Pages n items (positions 0..n-1 in result-set order) for request r:
 * forwards after r->after (or from r->index, or from 0), backwards before
 * r->before (or from the end for an empty <before/>); both after and
 * before select the items between them, paged backwards. find(arg, uid)
 * returns the position of the item with that UID, or -1 when there is
 * none. Page size as rsm_page_size(r, dflt, cap).
 *
 * Returns 0 and fills *out (the reply's index is out->start, its count
 * n), or -ENOENT when an after/before UID is not in the list (answer
 * item-not-found).
 */
int rsm_window(const struct rsm_request *r, size_t n, uint32_t dflt, uint32_t cap,
	       long (*find)(void *arg, const char *uid), void *arg, struct rsm_window *out);

#endif
