/* SPDX-License-Identifier: MIT */
/*
 * Thing registry tags and search expressions (see registry_search.h).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry_search.h"

#define REG_STR_OPERAND_MAX	(REG_TAG_VALUE_MAX * 4)	/* bytes of a compared string */

/*
 * Code points in a UTF-8 string (continuation bytes are not counted): the
 * XEP's limits are in characters. The parser hands over valid UTF-8 only.
 */
static size_t utf8_chars(const char *s)
{
	size_t n = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			n++;
	return n;
}

/*
 * Names are case-insensitive (XEP-0347): ASCII letters are upper-cased,
 * which covers every predefined name; other characters stay as they are.
 */
int reg_tag_name_normalize(const char *name, char *out, size_t out_size)
{
	size_t len = name ? strlen(name) : 0;

	if (len == 0 || len >= out_size || utf8_chars(name) > REG_TAG_NAME_MAX)
		return -EINVAL;
	for (size_t i = 0; i <= len; i++) {
		char c = name[i];

		/* XEP-0347 5.8: no colon, hash sign or white space in a name. */
		if (c == ':' || c == '#' || c == ' ' || c == '\t' || c == '\r' || c == '\n')
			return -EINVAL;
		out[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
	}
	return 0;
}

/*
 * A numeric value as xs:double, finite: NaN would make every comparison
 * false and break the claim signature, infinities have no use in a tag.
 * strtod also takes hexadecimal floats, which xs:double does not; such a
 * value is only ever compared numerically, so it does no harm. 0 or -EINVAL.
 */
static int reg_parse_number(const char *s, double *out)
{
	char *end;

	if (!s || !s[0] || strlen(s) > REG_NUM_TEXT_MAX)
		return -EINVAL;
	errno = 0;
	*out = strtod(s, &end);
	if (*end || errno == ERANGE || !isfinite(*out))
		return -EINVAL;
	return 0;
}

int reg_tags_parse(struct arena *a, const struct xml_node *parent, struct reg_tag *tags,
		   size_t cap, size_t *n, bool allow_empty, const char **err)
{
	char name[REG_TAG_NAME_MAX * 4 + 1];

	*n = 0;
	for (struct xml_node *ch = xml_first_element(parent); ch; ch = xml_next_element(ch)) {
		const char *value = xml_attr_get(ch, "value");
		struct reg_tag *t;
		bool num;

		if (strcmp(ch->name, "str") == 0) {
			num = false;
		} else if (strcmp(ch->name, "num") == 0) {
			num = true;
		} else {
			*err = "only <str/> and <num/> tags are allowed";
			return -EINVAL;
		}
		if (reg_tag_name_normalize(xml_attr_get(ch, "name"), name, sizeof(name)) < 0) {
			*err = "a tag name is missing, longer than 32 characters, or has ':', '#' or "
			       "white space";
			return -EINVAL;
		}
		if (!value) {
			*err = "a tag has no value";
			return -EINVAL;
		}
		for (size_t i = 0; i < *n; i++) {
			if (strcmp(tags[i].name, name) == 0) {
				*err = "a tag name appears twice";
				return -EINVAL;
			}
		}
		if (*n == cap) {
			*err = "too many tags";
			return -EINVAL;
		}
		t = &tags[(*n)++];
		t->num = num;
		t->number = 0;
		if (num) {
			if (reg_parse_number(value, &t->number) < 0) {
				*err = "a numeric tag's value is not a number";
				return -EINVAL;
			}
		} else if (utf8_chars(value) > REG_TAG_VALUE_MAX) {
			*err = "a string tag's value is longer than 128 characters";
			return -EINVAL;
		} else if (!value[0] && !allow_empty) {
			*err = "a string tag's value is empty";
			return -EINVAL;
		}
		t->name = arena_strdup(a, name);
		t->value = arena_strdup(a, value);
		if (!t->name || !t->value)
			return -ENOMEM;
	}
	return 0;
}

/* Sorting by name: names are unique within a set, so the order is total. */
static int reg_tag_cmp(const void *x, const void *y)
{
	return strcmp(((const struct reg_tag *)x)->name, ((const struct reg_tag *)y)->name);
}

/*
 * U+001F and U+001E cannot occur in XML text, so the separators cannot be
 * forged by a value; %.17g gives every double one spelling.
 */
void reg_tags_signature(struct reg_tag *tags, size_t n, struct strbuf *out)
{
	qsort(tags, n, sizeof(*tags), reg_tag_cmp);
	for (size_t i = 0; i < n; i++) {
		strbuf_puts(out, tags[i].name);
		if (tags[i].num)
			strbuf_printf(out, "\x1fn\x1f%.17g\x1e", tags[i].number);
		else
			strbuf_printf(out, "\x1fs\x1f%s\x1e", tags[i].value);
	}
}

/* ---- strMask ---- */

/*
 * Greedy-left matching of the literal segments between wildcards is exact
 * for this pattern language (one wildcard kind, any run): taking each
 * segment at its first occurrence leaves the most room for the rest.
 * Linear in the string per segment; masks are bounded by the search limits.
 */
bool reg_mask_match(const char *s, const char *mask, const char *wildcard)
{
	size_t wl = strlen(wildcard);
	const char *p;

	if (wl == 0 || !(p = strstr(mask, wildcard)))
		return strcmp(s, mask) == 0;
	/* The literal prefix, then each literal segment leftmost, then the suffix. */
	if (strncmp(s, mask, (size_t)(p - mask)) != 0)
		return false;
	s += p - mask;
	mask = p + wl;
	for (;;) {
		size_t seg;

		p = strstr(mask, wildcard);
		if (!p) {
			size_t ml = strlen(mask), sl = strlen(s);

			return sl >= ml && strcmp(s + sl - ml, mask) == 0;
		}
		seg = (size_t)(p - mask);
		if (seg) {
			const char *hit = memmem(s, strlen(s), mask, seg);

			if (!hit)
				return false;
			s = hit + seg;
		}
		mask = p + wl;
	}
}

/* ---- Parsing ---- */

/* What an operator element carries besides its tag name. */
enum reg_form {
	REG_FORM_GROUP = 0,
	REG_FORM_VALUE,
	REG_FORM_RANGE,
	REG_FORM_MASK,
};

static const struct {
	const char *name;
	enum reg_op op;
	enum reg_form form;
	bool num;
} reg_ops[] = {
	{ "and", REG_OP_AND, REG_FORM_GROUP, false },
	{ "or", REG_OP_OR, REG_FORM_GROUP, false },
	{ "not", REG_OP_NOT, REG_FORM_GROUP, false },
	{ "strEq", REG_OP_STR_EQ, REG_FORM_VALUE, false },
	{ "strNEq", REG_OP_STR_NEQ, REG_FORM_VALUE, false },
	{ "strGt", REG_OP_STR_GT, REG_FORM_VALUE, false },
	{ "strGtEq", REG_OP_STR_GTEQ, REG_FORM_VALUE, false },
	{ "strLt", REG_OP_STR_LT, REG_FORM_VALUE, false },
	{ "strLtEq", REG_OP_STR_LTEQ, REG_FORM_VALUE, false },
	{ "strRange", REG_OP_STR_RANGE, REG_FORM_RANGE, false },
	{ "strNRange", REG_OP_STR_NRANGE, REG_FORM_RANGE, false },
	{ "strMask", REG_OP_STR_MASK, REG_FORM_MASK, false },
	{ "numEq", REG_OP_NUM_EQ, REG_FORM_VALUE, true },
	{ "numNEq", REG_OP_NUM_NEQ, REG_FORM_VALUE, true },
	{ "numGt", REG_OP_NUM_GT, REG_FORM_VALUE, true },
	{ "numGtEq", REG_OP_NUM_GTEQ, REG_FORM_VALUE, true },
	{ "numLt", REG_OP_NUM_LT, REG_FORM_VALUE, true },
	{ "numLtEq", REG_OP_NUM_LTEQ, REG_FORM_VALUE, true },
	{ "numRange", REG_OP_NUM_RANGE, REG_FORM_RANGE, true },
	{ "numNRange", REG_OP_NUM_NRANGE, REG_FORM_RANGE, true },
};

/* Parser state: the arena for the tree, the operator count, the error text. */
struct reg_parse {
	struct arena *a;
	unsigned count;
	const char **err;
};

/* An optional xs:boolean attribute with default true. 0 or -EINVAL. */
static int reg_bool_attr(const struct xml_node *el, const char *name, bool *out)
{
	const char *v = xml_attr_get(el, name);

	if (!v || strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
		*out = true;
	else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
		*out = false;
	else
		return -EINVAL;
	return 0;
}

/* A string operand (a value, an end of a range, a mask): present and bounded. */
static int reg_str_operand(struct reg_parse *p, const struct xml_node *el, const char *attr,
			   const char **out)
{
	const char *v = xml_attr_get(el, attr);

	if (!v || strlen(v) > REG_STR_OPERAND_MAX) {
		*p->err = "a search operator lacks a value, or it is too long";
		return -EINVAL;
	}
	*out = arena_strdup(p->a, v);
	return *out ? 0 : -ENOMEM;
}

static int reg_num_operand(struct reg_parse *p, const struct xml_node *el, const char *attr,
			   double *out)
{
	if (reg_parse_number(xml_attr_get(el, attr), out) < 0) {
		*p->err = "a numeric search operator needs a number";
		return -EINVAL;
	}
	return 0;
}

static int reg_parse_list(struct reg_parse *p, const struct xml_node *parent, unsigned depth,
			  struct reg_expr **first);

/* One operator element into e. 0 or -errno. */
static int reg_parse_one(struct reg_parse *p, const struct xml_node *el, unsigned depth,
			 struct reg_expr *e)
{
	char name[REG_TAG_NAME_MAX * 4 + 1];
	size_t i;
	int ret;

	for (i = 0; i < sizeof(reg_ops) / sizeof(reg_ops[0]); i++)
		if (strcmp(el->name, reg_ops[i].name) == 0)
			break;
	if (i == sizeof(reg_ops) / sizeof(reg_ops[0]) || strcmp(el->ns, NS_IOT_DISCOVERY) != 0) {
		*p->err = "unknown search operator";
		return -EINVAL;
	}
	e->op = reg_ops[i].op;
	if (reg_ops[i].form == REG_FORM_GROUP) {
		if (depth >= REG_EXPR_MAX_DEPTH) {
			*p->err = "search operators nested too deep";
			return -EINVAL;
		}
		ret = reg_parse_list(p, el, depth + 1, &e->kids);
		if (ret < 0)
			return ret;
		if (e->op == REG_OP_NOT && e->kids->next) {
			*p->err = "<not/> takes one operator";
			return -EINVAL;
		}
		return 0;
	}
	if (reg_tag_name_normalize(xml_attr_get(el, "name"), name, sizeof(name)) < 0) {
		*p->err = "a search operator has no valid tag name";
		return -EINVAL;
	}
	e->name = arena_strdup(p->a, name);
	if (!e->name)
		return -ENOMEM;
	switch (reg_ops[i].form) {
	case REG_FORM_VALUE:
		return reg_ops[i].num ? reg_num_operand(p, el, "value", &e->n1) :
					reg_str_operand(p, el, "value", &e->s1);
	case REG_FORM_RANGE:
		if (reg_bool_attr(el, "minIncluded", &e->min_incl) < 0 ||
		    reg_bool_attr(el, "maxIncluded", &e->max_incl) < 0) {
			*p->err = "minIncluded/maxIncluded must be true or false";
			return -EINVAL;
		}
		if (reg_ops[i].num) {
			ret = reg_num_operand(p, el, "min", &e->n1);
			return ret < 0 ? ret : reg_num_operand(p, el, "max", &e->n2);
		}
		ret = reg_str_operand(p, el, "min", &e->s1);
		return ret < 0 ? ret : reg_str_operand(p, el, "max", &e->s2);
	case REG_FORM_MASK:
		ret = reg_str_operand(p, el, "value", &e->s1);
		if (ret == 0)
			ret = reg_str_operand(p, el, "wildcard", &e->s2);
		if (ret == 0 && !e->s2[0]) {
			*p->err = "strMask needs a non-empty wildcard";
			ret = -EINVAL;
		}
		return ret;
	default:
		return -EINVAL;
	}
}

/* The operator children of parent, as a sibling list (at least one). */
static int reg_parse_list(struct reg_parse *p, const struct xml_node *parent, unsigned depth,
			  struct reg_expr **first)
{
	struct reg_expr **tail = first;
	int ret;

	*first = NULL;
	for (struct xml_node *ch = xml_first_element(parent); ch; ch = xml_next_element(ch)) {
		struct reg_expr *e;

		if (++p->count > REG_EXPR_MAX_OPS) {
			*p->err = "too many search operators";
			return -EINVAL;
		}
		e = arena_alloc(p->a, sizeof(*e));
		if (!e)
			return -ENOMEM;
		memset(e, 0, sizeof(*e));
		ret = reg_parse_one(p, ch, depth, e);
		if (ret < 0)
			return ret;
		*tail = e;
		tail = &e->next;
	}
	if (!*first) {
		*p->err = "a search needs at least one operator";
		return -EINVAL;
	}
	return 0;
}

int reg_expr_parse(struct arena *a, const struct xml_node *search, struct reg_expr **out,
		   const char **err)
{
	struct reg_parse p = { .a = a, .err = err };
	struct reg_expr *root;
	int ret;

	*out = NULL;
	root = arena_alloc(a, sizeof(*root));
	if (!root)
		return -ENOMEM;
	memset(root, 0, sizeof(*root));
	root->op = REG_OP_AND;
	ret = reg_parse_list(&p, search, 0, &root->kids);
	if (ret < 0)
		return ret;
	*out = root;
	return 0;
}

/* ---- Evaluation ---- */

static const struct reg_tag *reg_find(const struct reg_tag *tags, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(tags[i].name, name) == 0)
			return &tags[i];
	return NULL;
}

static bool reg_in_range_str(const char *v, const struct reg_expr *e)
{
	int lo = strcmp(v, e->s1), hi = strcmp(v, e->s2);

	return (e->min_incl ? lo >= 0 : lo > 0) && (e->max_incl ? hi <= 0 : hi < 0);
}

static bool reg_in_range_num(double v, const struct reg_expr *e)
{
	return (e->min_incl ? v >= e->n1 : v > e->n1) && (e->max_incl ? v <= e->n2 : v < e->n2);
}

/*
 * Recursive over the groups (depth bounded by REG_EXPR_MAX_DEPTH at
 * parse time); a leaf is a linear lookup of its tag among the thing's
 * (at most max_thing_tags) and one comparison.
 */
bool reg_expr_eval(const struct reg_expr *e, const struct reg_tag *tags, size_t n)
{
	const struct reg_tag *t;

	switch (e->op) {
	case REG_OP_AND:
		for (const struct reg_expr *k = e->kids; k; k = k->next)
			if (!reg_expr_eval(k, tags, n))
				return false;
		return true;
	case REG_OP_OR:
		for (const struct reg_expr *k = e->kids; k; k = k->next)
			if (reg_expr_eval(k, tags, n))
				return true;
		return false;
	case REG_OP_NOT:
		return !reg_expr_eval(e->kids, tags, n);
	default:
		break;
	}
	t = reg_find(tags, n, e->name);
	if (!t || t->num != (e->op >= REG_OP_NUM_EQ))
		return false;	/* no such tag, or of the other type */
	switch (e->op) {
	case REG_OP_STR_EQ:
		return strcmp(t->value, e->s1) == 0;
	case REG_OP_STR_NEQ:
		return strcmp(t->value, e->s1) != 0;
	case REG_OP_STR_GT:
		return strcmp(t->value, e->s1) > 0;
	case REG_OP_STR_GTEQ:
		return strcmp(t->value, e->s1) >= 0;
	case REG_OP_STR_LT:
		return strcmp(t->value, e->s1) < 0;
	case REG_OP_STR_LTEQ:
		return strcmp(t->value, e->s1) <= 0;
	case REG_OP_STR_RANGE:
		return reg_in_range_str(t->value, e);
	case REG_OP_STR_NRANGE:
		return !reg_in_range_str(t->value, e);
	case REG_OP_STR_MASK:
		return reg_mask_match(t->value, e->s1, e->s2);
	case REG_OP_NUM_EQ:
		return t->number == e->n1;
	case REG_OP_NUM_NEQ:
		return t->number != e->n1;
	case REG_OP_NUM_GT:
		return t->number > e->n1;
	case REG_OP_NUM_GTEQ:
		return t->number >= e->n1;
	case REG_OP_NUM_LT:
		return t->number < e->n1;
	case REG_OP_NUM_LTEQ:
		return t->number <= e->n1;
	case REG_OP_NUM_RANGE:
		return reg_in_range_num(t->number, e);
	case REG_OP_NUM_NRANGE:
		return !reg_in_range_num(t->number, e);
	default:
		return false;
	}
}

bool reg_expr_uses_key(const struct reg_expr *e)
{
	if (e->op <= REG_OP_NOT) {
		for (const struct reg_expr *k = e->kids; k; k = k->next)
			if (reg_expr_uses_key(k))
				return true;
		return false;
	}
	return strcmp(e->name, REG_KEY_TAG) == 0;
}
