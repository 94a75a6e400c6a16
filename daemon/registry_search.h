/* SPDX-License-Identifier: MIT */
/*
 * Meta tags and search expressions of the thing registry (XEP-0347).
 * Pure logic, unit-tested: registry.c parses requests with it on the
 * worker and evaluates searches with it on the storage thread.
 *
 * Tags: <str name='' value=''/> and <num name='' value=''/>. Names are
 * case-insensitive (kept in upper case here), 1..32 characters without
 * ':', '#' or white space; string values at most 128 characters; numbers
 * are xs:double (finite). A thing has at most one tag per name.
 *
 * Search: the children of <search/> are operators that must all hold
 * (AND, as XEP-0347 says). The string operators strEq, strNEq, strGt,
 * strGtEq, strLt, strLtEq, strRange, strNRange, strMask compare only
 * string tags (byte order, UTF-8), the num* ones only numeric tags; an
 * operator on a tag the thing does not have is false. stanzad also takes
 * <and/>, <or/> and <not/> elements grouping operators, so a search can
 * say what XEP-0347 otherwise needs several searches for. A search that
 * mentions the KEY tag anywhere finds nothing; results never show KEY.
 */
#ifndef STANZAD_REGISTRY_SEARCH_H
#define STANZAD_REGISTRY_SEARCH_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "strbuf.h"
#include "xml.h"

#define NS_IOT_DISCOVERY	"urn:xmpp:iot:discovery"	/* XEP-0347 */

#define REG_TAG_NAME_MAX	32	/* characters of a tag name */
#define REG_TAG_VALUE_MAX	128	/* characters of a string value */
#define REG_NUM_TEXT_MAX	64	/* bytes of a numeric value as written */
#define REG_EXPR_MAX_OPS	64	/* operators and groups in one search */
#define REG_EXPR_MAX_DEPTH	8	/* nesting of <and/>, <or/>, <not/> */
#define REG_KEY_TAG		"KEY"	/* shared between thing and owner; never searched */

/* One tag; strings are in the caller's arena (or static storage). */
struct reg_tag {
	const char *name;	/* upper case */
	const char *value;	/* as given (numbers too: "1.20" stays "1.20") */
	double number;		/* numeric tags: the value */
	bool num;
};

/*
 * Parses the <str/> and <num/> children of parent into tags[0..*n), at
 * most cap (more: error). Names are upper-cased into `a`. allow_empty
 * lets a string tag have an empty value (an update that removes it).
 * 0, or -EINVAL with *err a reason for bad-request, -ENOMEM.
 */
int reg_tags_parse(struct arena *a, const struct xml_node *parent, struct reg_tag *tags,
		   size_t cap, size_t *n, bool allow_empty, const char **err);

/* Upper-cases a tag name into out (REG_TAG_NAME_MAX * 4 + 1 bytes); -EINVAL if invalid. */
int reg_tag_name_normalize(const char *name, char *out, size_t out_size);

/*
 * The canonical text of a tag set: sorted by name, each tag as
 * name, type and value (numbers in one spelling), so that two sets with
 * the same tags in any order (and "1.2" = "1.20") give the same text.
 * The registry finds the thing an owner claims by it. tags is sorted in
 * place.
 */
void reg_tags_signature(struct reg_tag *tags, size_t n, struct strbuf *out);

enum reg_op {
	REG_OP_AND = 0,
	REG_OP_OR,
	REG_OP_NOT,
	REG_OP_STR_EQ,
	REG_OP_STR_NEQ,
	REG_OP_STR_GT,
	REG_OP_STR_GTEQ,
	REG_OP_STR_LT,
	REG_OP_STR_LTEQ,
	REG_OP_STR_RANGE,
	REG_OP_STR_NRANGE,
	REG_OP_STR_MASK,
	REG_OP_NUM_EQ,
	REG_OP_NUM_NEQ,
	REG_OP_NUM_GT,
	REG_OP_NUM_GTEQ,
	REG_OP_NUM_LT,
	REG_OP_NUM_LTEQ,
	REG_OP_NUM_RANGE,
	REG_OP_NUM_NRANGE,
};

struct reg_expr {
	enum reg_op op;
	struct reg_expr *kids;		/* AND, OR, NOT (one kid) */
	struct reg_expr *next;		/* sibling */
	const char *name;		/* tag name, upper case */
	const char *s1, *s2;		/* value or min/max; strMask: mask and wildcard */
	double n1, n2;			/* value or min/max */
	bool min_incl, max_incl;	/* ranges */
};

/*
 * Parses <search/>: its operator children ANDed. The tree is allocated
 * in `a`. 0, or -EINVAL with *err (unknown operator, missing attribute,
 * bad number, no operator, too many or too deep), -ENOMEM.
 */
int reg_expr_parse(struct arena *a, const struct xml_node *search, struct reg_expr **out,
		   const char **err);

/* Whether a thing with tags[0..n) matches. */
bool reg_expr_eval(const struct reg_expr *e, const struct reg_tag *tags, size_t n);

/* Whether the expression refers to the KEY tag anywhere. */
bool reg_expr_uses_key(const struct reg_expr *e);

/*
 * strMask: whether s matches mask, where each occurrence of the wildcard
 * string (non-empty) in mask stands for any run of characters (none
 * included) and everything else must match exactly.
 */
bool reg_mask_match(const char *s, const char *mask, const char *wildcard);

#endif
