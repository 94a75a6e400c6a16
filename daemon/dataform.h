/* SPDX-License-Identifier: MIT */
/*
 * XEP-0004 Data Forms (jabber:x:data), for every feature that speaks in
 * forms: ad-hoc commands (XEP-0050/0133), MUC room configuration, pubsub
 * node configuration and publish options, MAM query filters, extended
 * disco info (XEP-0128).
 *
 * Two halves:
 *  - reading: dataform_parse() turns an <x/> element into a struct
 *    dataform (every string and array in the caller's arena), with typed
 *    accessors and dataform_validate(), which checks a submission against
 *    the form that was offered (required fields, single values, options,
 *    booleans, JIDs, FORM_TYPE);
 *  - building: dataform_new() and the dataform_add_* / dataform_field_*
 *    calls make an <x/> tree. They keep the element order of the XEP-0004
 *    schema whatever order they are called in (title, instructions,
 *    fields, reported, items; inside a field: desc, required, values,
 *    options), so a caller can add a note or a value late.
 *
 * A typical form processor builds its form with the builders, sends it,
 * and on submission parses the form it would send (the template) and the
 * submission and calls dataform_validate(): one description of the form
 * serves both directions.
 *
 * FORM_TYPE (XEP-0068) is the value of a hidden field named FORM_TYPE; it
 * names the namespace that gives the fields their meaning.
 */
#ifndef STANZAD_DATAFORM_H
#define STANZAD_DATAFORM_H

#include <stdbool.h>
#include <stddef.h>

#include "arena.h"
#include "xml.h"

#define NS_DATA_FORMS		"jabber:x:data"
#define DATAFORM_FORM_TYPE	"FORM_TYPE"

/*
 * Limits on what dataform_parse() accepts (the stanza size limit bounds
 * the total anyway; these give a clear error well before it). MUC and
 * pubsub configuration forms have about 30 fields; a jid-multi of an
 * admin command or a member list can carry many values.
 */
#define DATAFORM_MAX_FIELDS	256	/* <field/> children of one form */
#define DATAFORM_MAX_VALUES	4096	/* <value/> children of one field */
#define DATAFORM_MAX_OPTIONS	1024	/* <option/> children of one field */

enum dataform_type {
	DATAFORM_FORM = 1,	/* a form to fill in */
	DATAFORM_SUBMIT,	/* the filled-in form */
	DATAFORM_CANCEL,	/* the submitter declined */
	DATAFORM_RESULT,	/* data returned (may hold reported/item tables) */
};

enum dataform_field_type {
	DATAFORM_FIELD_UNSPECIFIED = 0,	/* no 'type' attribute (usual in submissions) */
	DATAFORM_FIELD_BOOLEAN,
	DATAFORM_FIELD_FIXED,
	DATAFORM_FIELD_HIDDEN,
	DATAFORM_FIELD_JID_MULTI,
	DATAFORM_FIELD_JID_SINGLE,
	DATAFORM_FIELD_LIST_MULTI,
	DATAFORM_FIELD_LIST_SINGLE,
	DATAFORM_FIELD_TEXT_MULTI,
	DATAFORM_FIELD_TEXT_PRIVATE,
	DATAFORM_FIELD_TEXT_SINGLE,
};

struct dataform_option {
	const char *label;	/* or NULL */
	const char *value;
};

struct dataform_field {
	const char *var;		/* NULL only for a fixed field without one */
	const char *label;		/* or NULL */
	const char *desc;		/* or NULL */
	enum dataform_field_type type;	/* unknown type names read as TEXT_SINGLE (XEP-0004 3.3) */
	bool required;
	const char **values;		/* nvalues strings, document order */
	size_t nvalues;
	struct dataform_option *options;
	size_t noptions;
};

/* A parsed form: top-level fields only (reported/item tables are skipped). */
struct dataform {
	enum dataform_type type;
	const char *form_type;		/* FORM_TYPE's value, or NULL */
	const char *title;		/* or NULL */
	const char *instructions;	/* several elements joined with '\n', or NULL */
	struct dataform_field *fields;
	size_t nfields;
};

/* ---- Names ---- */

/* "form", "submit", "cancel", "result"; NULL for anything else. */
const char *dataform_type_name(enum dataform_type type);
/* The type for a name, or 0 when unknown. */
enum dataform_type dataform_type_parse(const char *name);
/* "boolean", ..., "text-single"; NULL for UNSPECIFIED. */
const char *dataform_field_type_name(enum dataform_field_type type);
/* NULL -> UNSPECIFIED; an unknown name -> TEXT_SINGLE (XEP-0004 3.3). */
enum dataform_field_type dataform_field_type_parse(const char *name);
/* True for the types that may carry several values (XEP-0004 3.2). */
bool dataform_field_type_multi(enum dataform_field_type type);

/* ---- Reading ---- */

/*
 * Parses <x xmlns='jabber:x:data'/> into *out; strings and arrays are
 * allocated from `a` and live as long as it. Returns 0, or:
 *  -EINVAL  not a data form, no or an unknown form 'type', a field
 *           without 'var' (other than fixed), a field that appears twice,
 *           an option without exactly one value;
 *  -E2BIG   more than DATAFORM_MAX_FIELDS / _VALUES / _OPTIONS;
 *  -ENOMEM.
 * On error, *why (when why is not NULL) is a static English sentence for
 * an error <text/>, and *out is zeroed.
 */
int dataform_parse(struct arena *a, const struct xml_node *x, struct dataform *out,
		   const char **why);

/*
 * The first jabber:x:data <x/> child of parent whose FORM_TYPE is
 * form_type, or with form_type NULL the first form at all. NULL if none.
 */
struct xml_node *dataform_find(const struct xml_node *parent, const char *form_type);

/* The field named var, or NULL. */
const struct dataform_field *dataform_get(const struct dataform *f, const char *var);
/* The first value of field var, or NULL (no such field, or no value). */
const char *dataform_value(const struct dataform *f, const char *var);

/* "1"/"true" -> true, "0"/"false" -> false (XEP-0004 3.3). 0 or -EINVAL. */
int dataform_parse_bool(const char *s, bool *out);
/*
 * Field var as a boolean / a decimal number in [min, max]. 0; -ENOENT when
 * the field or its value is absent (*out untouched: keep the default);
 * -EINVAL when the value does not parse or is out of range.
 */
int dataform_get_bool(const struct dataform *f, const char *var, bool *out);
int dataform_get_uint(const struct dataform *f, const char *var, unsigned long min,
		      unsigned long max, unsigned long *out);
/*
 * The values of a field joined with '\n' (how a text-multi is read back,
 * XEP-0004 3.3), in `a`; "" for no values; NULL on ENOMEM.
 */
char *dataform_field_text(struct arena *a, const struct dataform_field *fl);

/*
 * Checks a submission against the form that was offered (both parsed):
 *  - a FORM_TYPE in the submission must equal the template's;
 *  - every required field of the template has a non-empty value;
 *  - fields whose template type is single-valued have at most one value;
 *  - booleans parse; list-single/list-multi values are among the
 *    template's options (when it lists any); jid-single/jid-multi values
 *    are valid JIDs;
 *  - fields the template does not have are ignored (XEP-0004 leaves it to
 *    the processor; lenient reading serves clients that echo extras).
 * Returns 0 or -EINVAL; then *bad_var names the field (may be NULL for
 * FORM_TYPE) and *why says what is wrong (static English text). Either
 * out-pointer may be NULL.
 */
int dataform_validate(const struct dataform *tmpl, const struct dataform *sub,
		      const char **bad_var, const char **why);

/* ---- Building (all in `a`; NULL / -ENOMEM when it runs out) ---- */

/*
 * A new <x xmlns='jabber:x:data' type='...'/>. With form_type not NULL,
 * its first field is the hidden FORM_TYPE field carrying that value.
 */
struct xml_node *dataform_new(struct arena *a, enum dataform_type type, const char *form_type);
/* Sets the <title/> (replacing one). 0 or -ENOMEM. */
int dataform_set_title(struct arena *a, struct xml_node *x, const char *title);
/* Adds an <instructions/> element after the title and earlier instructions. */
int dataform_add_instructions(struct arena *a, struct xml_node *x, const char *text);

/*
 * Adds a <field/> to a form, a <reported/> or an <item/> (before any
 * reported/item of a form). type UNSPECIFIED writes no 'type' (for
 * submissions and result items); var/label may be NULL. Returns the
 * field, or NULL on ENOMEM.
 */
struct xml_node *dataform_add_field(struct arena *a, struct xml_node *parent,
				    enum dataform_field_type type, const char *var,
				    const char *label);
/* A field with one value (value NULL: none), e.g. a result or hidden field. */
struct xml_node *dataform_add_field_value(struct arena *a, struct xml_node *parent,
					  enum dataform_field_type type, const char *var,
					  const char *label, const char *value);
/* Appends a <value/> (after other values, before options). 0 or -ENOMEM. */
int dataform_field_add_value(struct arena *a, struct xml_node *field, const char *value);
/* Removes every <value/> of the field (to replace a default). */
void dataform_field_clear_values(struct xml_node *field);
/* Appends <option label='...'><value/></option>; label may be NULL. */
int dataform_field_add_option(struct arena *a, struct xml_node *field, const char *label,
			      const char *value);
/* Marks the field <required/> (once). 0 or -ENOMEM. */
int dataform_field_set_required(struct arena *a, struct xml_node *field);
/* Sets the field's <desc/> (replacing one). 0 or -ENOMEM. */
int dataform_field_set_desc(struct arena *a, struct xml_node *field, const char *desc);

/* The <reported/> of a result form (created once), for its column fields. */
struct xml_node *dataform_add_reported(struct arena *a, struct xml_node *x);
/* A new <item/> row at the end of a result form. */
struct xml_node *dataform_add_item(struct arena *a, struct xml_node *x);

/* The <field/> child of a built form named var, or NULL. */
struct xml_node *dataform_field_node(const struct xml_node *x, const char *var);

/*
 * Copies the values of a submission into the matching fields of a built
 * form (replacing their defaults), so a form sent again after an error,
 * or on "prev", shows what was entered. Never copies text-private fields
 * (passwords are not echoed), hidden fields or FORM_TYPE. 0 or -ENOMEM.
 */
int dataform_prefill(struct arena *a, struct xml_node *x, const struct dataform *sub);

#endif
