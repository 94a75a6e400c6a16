/* SPDX-License-Identifier: MIT */
/*
 * XEP-0004 Data Forms: parsing, validation against an offered form, and
 * builders that keep the schema's element order. See dataform.h.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "dataform.h"
#include "jid.h"

static const char *const dataform_type_names[] = {
	[DATAFORM_FORM] = "form",
	[DATAFORM_SUBMIT] = "submit",
	[DATAFORM_CANCEL] = "cancel",
	[DATAFORM_RESULT] = "result",
};

static const char *const dataform_field_type_names[] = {
	[DATAFORM_FIELD_BOOLEAN] = "boolean",
	[DATAFORM_FIELD_FIXED] = "fixed",
	[DATAFORM_FIELD_HIDDEN] = "hidden",
	[DATAFORM_FIELD_JID_MULTI] = "jid-multi",
	[DATAFORM_FIELD_JID_SINGLE] = "jid-single",
	[DATAFORM_FIELD_LIST_MULTI] = "list-multi",
	[DATAFORM_FIELD_LIST_SINGLE] = "list-single",
	[DATAFORM_FIELD_TEXT_MULTI] = "text-multi",
	[DATAFORM_FIELD_TEXT_PRIVATE] = "text-private",
	[DATAFORM_FIELD_TEXT_SINGLE] = "text-single",
};

#define N_FORM_TYPES (sizeof(dataform_type_names) / sizeof(dataform_type_names[0]))
#define N_FIELD_TYPES (sizeof(dataform_field_type_names) / sizeof(dataform_field_type_names[0]))

const char *dataform_type_name(enum dataform_type type)
{
	return (unsigned)type < N_FORM_TYPES ? dataform_type_names[type] : NULL;
}

enum dataform_type dataform_type_parse(const char *name)
{
	for (unsigned i = 1; name && i < N_FORM_TYPES; i++)
		if (strcmp(dataform_type_names[i], name) == 0)
			return (enum dataform_type)i;
	return 0;
}

const char *dataform_field_type_name(enum dataform_field_type type)
{
	return (unsigned)type < N_FIELD_TYPES ? dataform_field_type_names[type] : NULL;
}

enum dataform_field_type dataform_field_type_parse(const char *name)
{
	if (!name)
		return DATAFORM_FIELD_UNSPECIFIED;
	for (unsigned i = 1; i < N_FIELD_TYPES; i++)
		if (strcmp(dataform_field_type_names[i], name) == 0)
			return (enum dataform_field_type)i;
	/* XEP-0004 3.3: a type one does not understand is text-single. */
	return DATAFORM_FIELD_TEXT_SINGLE;
}

bool dataform_field_type_multi(enum dataform_field_type type)
{
	return type == DATAFORM_FIELD_JID_MULTI || type == DATAFORM_FIELD_LIST_MULTI ||
	       type == DATAFORM_FIELD_TEXT_MULTI || type == DATAFORM_FIELD_HIDDEN;
}

/* ---- Reading ---- */

static bool is_df(const struct xml_node *n, const char *name)
{
	return n->name && strcmp(n->ns, NS_DATA_FORMS) == 0 && strcmp(n->name, name) == 0;
}

static size_t count_children(const struct xml_node *n, const char *name)
{
	size_t k = 0;

	for (const struct xml_node *c = xml_first_element(n); c; c = xml_next_element(c))
		if (is_df(c, name))
			k++;
	return k;
}

static int parse_fail(const char **why, const char *msg, int err)
{
	if (why)
		*why = msg;
	return err;
}

/*
 * The <option/>s of a field: each needs exactly one <value/> (XEP-0004
 * 3.2). Counted first so the array is allocated once at its size (the
 * arena cannot grow an allocation).
 */
static int parse_options(struct arena *a, const struct xml_node *fn, struct dataform_field *fl,
			 const char **why)
{
	size_t n = count_children(fn, "option");

	if (!n)
		return 0;
	if (n > DATAFORM_MAX_OPTIONS)
		return parse_fail(why, "a field has too many options", -E2BIG);
	fl->options = arena_alloc(a, n * sizeof(*fl->options));
	if (!fl->options)
		return -ENOMEM;
	for (const struct xml_node *c = xml_first_element(fn); c; c = xml_next_element(c)) {
		struct dataform_option *o = &fl->options[fl->noptions];
		const struct xml_node *v;

		if (!is_df(c, "option"))
			continue;
		v = xml_child(c, NS_DATA_FORMS, "value");
		if (!v || count_children(c, "value") != 1)
			return parse_fail(why, "an option needs exactly one value", -EINVAL);
		o->label = xml_attr_get(c, "label");
		o->value = xml_text(a, v);
		if (!o->value)
			return -ENOMEM;
		fl->noptions++;
	}
	return 0;
}

/* One <field/>: attributes, desc, required, values, options. */
static int parse_field(struct arena *a, const struct xml_node *fn, struct dataform_field *fl,
		       const char **why)
{
	size_t nv = count_children(fn, "value");
	const struct xml_node *d = xml_child(fn, NS_DATA_FORMS, "desc");

	fl->var = xml_attr_get(fn, "var");
	fl->label = xml_attr_get(fn, "label");
	fl->type = dataform_field_type_parse(xml_attr_get(fn, "type"));
	fl->required = xml_child(fn, NS_DATA_FORMS, "required") != NULL;
	if (!fl->var && fl->type != DATAFORM_FIELD_FIXED)
		return parse_fail(why, "a field has no 'var'", -EINVAL);
	if (d && !(fl->desc = xml_text(a, d)))
		return -ENOMEM;
	if (nv > DATAFORM_MAX_VALUES)
		return parse_fail(why, "a field has too many values", -E2BIG);
	if (nv) {
		fl->values = arena_alloc(a, nv * sizeof(*fl->values));
		if (!fl->values)
			return -ENOMEM;
		for (const struct xml_node *c = xml_first_element(fn); c; c = xml_next_element(c)) {
			if (!is_df(c, "value"))
				continue;
			fl->values[fl->nvalues] = xml_text(a, c);
			if (!fl->values[fl->nvalues])
				return -ENOMEM;
			fl->nvalues++;
		}
	}
	return parse_options(a, fn, fl, why);
}

/* Instructions: several elements read as lines of one text. */
static int parse_instructions(struct arena *a, const struct xml_node *x, struct dataform *out)
{
	struct strbuf b = STRBUF_INIT;
	bool any = false;

	for (const struct xml_node *c = xml_first_element(x); c; c = xml_next_element(c)) {
		const char *t;

		if (!is_df(c, "instructions"))
			continue;
		t = xml_text(a, c);
		if (!t)
			goto err_oom;
		if (any)
			strbuf_puts(&b, "\n");
		strbuf_puts(&b, t);
		any = true;
	}
	if (!any)
		return 0;
	if (b.oom || !(out->instructions = arena_strndup(a, b.data, b.len)))
		goto err_oom;
	strbuf_free(&b);
	return 0;
err_oom:
	strbuf_free(&b);
	return -ENOMEM;
}

/*
 * The form itself: type, title, instructions, then the top-level fields.
 * reported/item tables belong to results the server sends, not to what
 * it reads, so they are not parsed.
 */
static int dataform_parse_body(struct arena *a, const struct xml_node *x, struct dataform *out,
			       const char **why)
{
	const struct xml_node *t;
	size_t nf;
	int ret;

	if (!x || !is_df(x, "x"))
		return parse_fail(why, "not a data form", -EINVAL);
	out->type = dataform_type_parse(xml_attr_get(x, "type"));
	if (!out->type)
		return parse_fail(why, "the form has no valid 'type'", -EINVAL);
	t = xml_child(x, NS_DATA_FORMS, "title");
	if (t && !(out->title = xml_text(a, t)))
		return -ENOMEM;
	ret = parse_instructions(a, x, out);
	if (ret < 0)
		return ret;
	nf = count_children(x, "field");
	if (nf > DATAFORM_MAX_FIELDS)
		return parse_fail(why, "the form has too many fields", -E2BIG);
	if (!nf)
		return 0;
	out->fields = arena_alloc(a, nf * sizeof(*out->fields));
	if (!out->fields)
		return -ENOMEM;
	memset(out->fields, 0, nf * sizeof(*out->fields));
	for (const struct xml_node *c = xml_first_element(x); c; c = xml_next_element(c)) {
		struct dataform_field *fl = &out->fields[out->nfields];

		if (!is_df(c, "field"))
			continue;
		ret = parse_field(a, c, fl, why);
		if (ret < 0)
			return ret;
		/*
		 * Vars name fields uniquely (XEP-0004 3.2). The quadratic check
		 * is bounded by DATAFORM_MAX_FIELDS and only runs on forms.
		 */
		for (size_t i = 0; fl->var && i < out->nfields; i++)
			if (out->fields[i].var && strcmp(out->fields[i].var, fl->var) == 0)
				return parse_fail(why, "a field appears twice", -EINVAL);
		out->nfields++;
		/* XEP-0068: only a hidden FORM_TYPE (or an untyped one in a submission) counts. */
		if (strcmp(fl->var ? fl->var : "", DATAFORM_FORM_TYPE) == 0 && fl->nvalues &&
		    (fl->type == DATAFORM_FIELD_HIDDEN || fl->type == DATAFORM_FIELD_UNSPECIFIED))
			out->form_type = fl->values[0];
	}
	return 0;
}

int dataform_parse(struct arena *a, const struct xml_node *x, struct dataform *out,
		   const char **why)
{
	int ret;

	memset(out, 0, sizeof(*out));
	if (why)
		*why = NULL;
	ret = dataform_parse_body(a, x, out, why);
	if (ret < 0) {
		if (ret == -ENOMEM && why)
			*why = "out of memory";
		memset(out, 0, sizeof(*out));
	}
	return ret;
}

/* Whether the text content of element n equals s (without allocating). */
static bool text_equals(const struct xml_node *n, const char *s)
{
	size_t off = 0, len = strlen(s);

	for (const struct xml_node *c = n->children; c; c = c->next) {
		if (c->name)
			continue;
		if (c->text_len > len - off || memcmp(c->text, s + off, c->text_len) != 0)
			return false;
		off += c->text_len;
	}
	return off == len;
}

/* Whether an unparsed form's FORM_TYPE is form_type. */
static bool form_type_is(const struct xml_node *x, const char *form_type)
{
	for (const struct xml_node *c = xml_first_element(x); c; c = xml_next_element(c)) {
		const char *var, *type;
		const struct xml_node *v;

		if (!is_df(c, "field"))
			continue;
		var = xml_attr_get(c, "var");
		type = xml_attr_get(c, "type");
		if (!var || strcmp(var, DATAFORM_FORM_TYPE) != 0 || (type && strcmp(type, "hidden")))
			continue;
		v = xml_child(c, NS_DATA_FORMS, "value");
		return v && text_equals(v, form_type);
	}
	return false;
}

struct xml_node *dataform_find(const struct xml_node *parent, const char *form_type)
{
	for (struct xml_node *c = xml_first_element(parent); c; c = xml_next_element(c)) {
		if (is_df(c, "x") && (!form_type || form_type_is(c, form_type)))
			return c;
	}
	return NULL;
}

const struct dataform_field *dataform_get(const struct dataform *f, const char *var)
{
	for (size_t i = 0; i < f->nfields; i++)
		if (f->fields[i].var && strcmp(f->fields[i].var, var) == 0)
			return &f->fields[i];
	return NULL;
}

const char *dataform_value(const struct dataform *f, const char *var)
{
	const struct dataform_field *fl = dataform_get(f, var);

	return fl && fl->nvalues ? fl->values[0] : NULL;
}

int dataform_parse_bool(const char *s, bool *out)
{
	if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0) {
		*out = true;
		return 0;
	}
	if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

int dataform_get_bool(const struct dataform *f, const char *var, bool *out)
{
	const char *v = dataform_value(f, var);

	return v ? dataform_parse_bool(v, out) : -ENOENT;
}

int dataform_get_uint(const struct dataform *f, const char *var, unsigned long min,
		      unsigned long max, unsigned long *out)
{
	const char *v = dataform_value(f, var);
	unsigned long n = 0;

	if (!v)
		return -ENOENT;
	/* Plain decimal digits only: no sign, no space, no hex, no overflow. */
	if (!*v)
		return -EINVAL;
	for (const char *p = v; *p; p++) {
		unsigned long d = (unsigned long)(*p - '0');

		if (*p < '0' || *p > '9' || n > (ULONG_MAX - d) / 10)
			return -EINVAL;
		n = n * 10 + d;
	}
	if (n < min || n > max)
		return -EINVAL;
	*out = n;
	return 0;
}

char *dataform_field_text(struct arena *a, const struct dataform_field *fl)
{
	size_t len = 0;
	char *out, *p;

	for (size_t i = 0; i < fl->nvalues; i++)
		len += strlen(fl->values[i]) + 1;
	out = arena_alloc(a, len + 1);
	if (!out)
		return NULL;
	p = out;
	for (size_t i = 0; i < fl->nvalues; i++) {
		size_t n = strlen(fl->values[i]);

		if (i)
			*p++ = '\n';
		memcpy(p, fl->values[i], n);
		p += n;
	}
	*p = '\0';
	return out;
}

static int validate_fail(const char **bad_var, const char **why, const char *var, const char *msg)
{
	if (bad_var)
		*bad_var = var;
	if (why)
		*why = msg;
	return -EINVAL;
}

/* XEP-0004 3.3: a list value must be one of the options offered. */
static bool option_allowed(const struct dataform_field *t, const char *v)
{
	for (size_t i = 0; i < t->noptions; i++)
		if (strcmp(t->options[i].value, v) == 0)
			return true;
	return false;
}

/* One submitted field against its template field. */
static int validate_field(const struct dataform_field *t, const struct dataform_field *s,
			  const char **bad_var, const char **why)
{
	struct jid j;
	bool b;

	if (s->nvalues > 1 && !dataform_field_type_multi(t->type))
		return validate_fail(bad_var, why, t->var, "this field takes one value");
	for (size_t i = 0; i < s->nvalues; i++) {
		const char *v = s->values[i];

		switch (t->type) {
		case DATAFORM_FIELD_BOOLEAN:
			if (dataform_parse_bool(v, &b) < 0)
				return validate_fail(bad_var, why, t->var,
						     "this field takes 1, 0, true or false");
			break;
		case DATAFORM_FIELD_LIST_SINGLE:
		case DATAFORM_FIELD_LIST_MULTI:
			if (t->noptions && !option_allowed(t, v))
				return validate_fail(bad_var, why, t->var,
						     "the value is not one of the options");
			break;
		case DATAFORM_FIELD_JID_SINGLE:
		case DATAFORM_FIELD_JID_MULTI:
			/* An empty jid-single is "no value" (clients send it for unset fields). */
			if (!*v && t->type == DATAFORM_FIELD_JID_SINGLE)
				break;
			if (jid_parse(&j, v, strlen(v)) < 0)
				return validate_fail(bad_var, why, t->var, "the value is not a valid JID");
			break;
		default:
			break;
		}
	}
	return 0;
}

/* A required field counts as given only with some text: clients send <value/> for blanks. */
static bool has_nonempty_value(const struct dataform_field *s)
{
	for (size_t i = 0; s && i < s->nvalues; i++)
		if (s->values[i][0])
			return true;
	return false;
}

int dataform_validate(const struct dataform *tmpl, const struct dataform *sub,
		      const char **bad_var, const char **why)
{
	if (bad_var)
		*bad_var = NULL;
	if (why)
		*why = NULL;
	if (sub->form_type && tmpl->form_type && strcmp(sub->form_type, tmpl->form_type) != 0)
		return validate_fail(bad_var, why, NULL, "the form is of another FORM_TYPE");
	for (size_t i = 0; i < tmpl->nfields; i++) {
		const struct dataform_field *t = &tmpl->fields[i];
		const struct dataform_field *s;
		int ret;

		if (!t->var || t->type == DATAFORM_FIELD_FIXED ||
		    strcmp(t->var, DATAFORM_FORM_TYPE) == 0)
			continue;
		s = dataform_get(sub, t->var);
		if (t->required && !has_nonempty_value(s))
			return validate_fail(bad_var, why, t->var, "a required field is missing");
		if (!s)
			continue;
		ret = validate_field(t, s, bad_var, why);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---- Building ---- */

/*
 * Links child into parent before `before` (NULL: at the end). The tree
 * is singly linked, so this walks the parent's children once.
 */
static void insert_before(struct xml_node *parent, struct xml_node *child, struct xml_node *before)
{
	struct xml_node **pp = &parent->children;

	while (before && *pp && *pp != before)
		pp = &(*pp)->next;
	if (!before || !*pp) {
		xml_node_append(parent, child);
		return;
	}
	child->parent = parent;
	child->next = before;
	*pp = child;
}

/* The first element child of n whose name is one of names[], or NULL. */
static struct xml_node *first_of(const struct xml_node *n, const char *const *names)
{
	for (struct xml_node *c = xml_first_element(n); c; c = xml_next_element(c))
		for (const char *const *nm = names; *nm; nm++)
			if (is_df(c, *nm))
				return c;
	return NULL;
}

/* A new element named `name` in jabber:x:data, inserted into parent before `before`. */
static struct xml_node *add_before(struct arena *a, struct xml_node *parent, const char *name,
				   struct xml_node *before)
{
	struct xml_node *n = xml_node_new(a, NS_DATA_FORMS, name);

	if (n)
		insert_before(parent, n, before);
	return n;
}

static struct xml_node *add_text_before(struct arena *a, struct xml_node *parent,
					const char *name, const char *text,
					struct xml_node *before)
{
	struct xml_node *n = xml_node_new(a, NS_DATA_FORMS, name);

	if (!n || (text && *text && xml_node_add_text(a, n, text, strlen(text)) < 0))
		return NULL;
	insert_before(parent, n, before);
	return n;
}

/* FORM_TYPE goes first: XEP-0068 readers (and caps hashing, XEP-0115 5.4) look for it. */
struct xml_node *dataform_new(struct arena *a, enum dataform_type type, const char *form_type)
{
	const char *tn = dataform_type_name(type);
	struct xml_node *x;

	if (!tn) {
		errno = EINVAL;
		return NULL;
	}
	x = xml_node_new(a, NS_DATA_FORMS, "x");
	if (!x || xml_attr_set(a, x, "type", tn) < 0)
		return NULL;
	if (form_type && !dataform_add_field_value(a, x, DATAFORM_FIELD_HIDDEN,
						   DATAFORM_FORM_TYPE, NULL, form_type))
		return NULL;
	return x;
}

int dataform_set_title(struct arena *a, struct xml_node *x, const char *title)
{
	struct xml_node *old = xml_child(x, NS_DATA_FORMS, "title");

	if (old)
		xml_node_remove(old);
	return add_text_before(a, x, "title", title, x->children) ? 0 : -ENOMEM;
}

int dataform_add_instructions(struct arena *a, struct xml_node *x, const char *text)
{
	static const char *const after[] = { "field", "reported", "item", NULL };

	return add_text_before(a, x, "instructions", text, first_of(x, after)) ? 0 : -ENOMEM;
}

struct xml_node *dataform_add_field(struct arena *a, struct xml_node *parent,
				    enum dataform_field_type type, const char *var,
				    const char *label)
{
	static const char *const after[] = { "reported", "item", NULL };
	const char *tn = dataform_field_type_name(type);
	struct xml_node *before = is_df(parent, "x") ? first_of(parent, after) : NULL;
	struct xml_node *f = add_before(a, parent, "field", before);

	if (!f || (tn && xml_attr_set(a, f, "type", tn) < 0) ||
	    (var && xml_attr_set(a, f, "var", var) < 0) ||
	    (label && xml_attr_set(a, f, "label", label) < 0))
		return NULL;
	return f;
}

struct xml_node *dataform_add_field_value(struct arena *a, struct xml_node *parent,
					  enum dataform_field_type type, const char *var,
					  const char *label, const char *value)
{
	struct xml_node *f = dataform_add_field(a, parent, type, var, label);

	if (!f || (value && dataform_field_add_value(a, f, value) < 0))
		return NULL;
	return f;
}

int dataform_field_add_value(struct arena *a, struct xml_node *field, const char *value)
{
	static const char *const after[] = { "option", NULL };

	return add_text_before(a, field, "value", value, first_of(field, after)) ? 0 : -ENOMEM;
}

void dataform_field_clear_values(struct xml_node *field)
{
	struct xml_node *v;

	while ((v = xml_child(field, NS_DATA_FORMS, "value")) != NULL)
		xml_node_remove(v);
}

int dataform_field_add_option(struct arena *a, struct xml_node *field, const char *label,
			      const char *value)
{
	struct xml_node *o = add_before(a, field, "option", NULL);

	if (!o || (label && xml_attr_set(a, o, "label", label) < 0) ||
	    !add_text_before(a, o, "value", value, NULL))
		return -ENOMEM;
	return 0;
}

int dataform_field_set_required(struct arena *a, struct xml_node *field)
{
	static const char *const after[] = { "value", "option", NULL };

	if (xml_child(field, NS_DATA_FORMS, "required"))
		return 0;
	return add_before(a, field, "required", first_of(field, after)) ? 0 : -ENOMEM;
}

int dataform_field_set_desc(struct arena *a, struct xml_node *field, const char *desc)
{
	struct xml_node *old = xml_child(field, NS_DATA_FORMS, "desc");

	if (old)
		xml_node_remove(old);
	return add_text_before(a, field, "desc", desc, field->children) ? 0 : -ENOMEM;
}

struct xml_node *dataform_add_reported(struct arena *a, struct xml_node *x)
{
	static const char *const after[] = { "item", NULL };
	struct xml_node *r = xml_child(x, NS_DATA_FORMS, "reported");

	return r ? r : add_before(a, x, "reported", first_of(x, after));
}

struct xml_node *dataform_add_item(struct arena *a, struct xml_node *x)
{
	return add_before(a, x, "item", NULL);
}

struct xml_node *dataform_field_node(const struct xml_node *x, const char *var)
{
	for (struct xml_node *c = xml_first_element(x); c; c = xml_next_element(c)) {
		const char *v;

		if (!is_df(c, "field"))
			continue;
		v = xml_attr_get(c, "var");
		if (v && strcmp(v, var) == 0)
			return c;
	}
	return NULL;
}

/*
 * Only fields the offered form has are touched, so a submission cannot
 * add fields to what is sent back; hidden values stay the server's own.
 */
int dataform_prefill(struct arena *a, struct xml_node *x, const struct dataform *sub)
{
	for (size_t i = 0; i < sub->nfields; i++) {
		const struct dataform_field *s = &sub->fields[i];
		struct xml_node *f;
		enum dataform_field_type t;

		if (!s->var || strcmp(s->var, DATAFORM_FORM_TYPE) == 0)
			continue;
		f = dataform_field_node(x, s->var);
		if (!f)
			continue;
		/* The offered form's type decides, not what the submitter claims. */
		t = dataform_field_type_parse(xml_attr_get(f, "type"));
		if (t == DATAFORM_FIELD_TEXT_PRIVATE || t == DATAFORM_FIELD_HIDDEN ||
		    t == DATAFORM_FIELD_FIXED)
			continue;
		dataform_field_clear_values(f);
		for (size_t k = 0; k < s->nvalues; k++)
			if (dataform_field_add_value(a, f, s->values[k]) < 0)
				return -ENOMEM;
	}
	return 0;
}
