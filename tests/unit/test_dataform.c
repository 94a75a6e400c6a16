/* SPDX-License-Identifier: MIT */
/*
 * XEP-0004 data forms: parsing (types, FORM_TYPE, values, options, the
 * malformed cases and the limits), typed accessors, validation of a
 * submission against the offered form, and the builders (schema order
 * kept whatever the call order, prefill never echoing passwords).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dataform.h"
#include "stored_xml.h"

struct fixture {
	struct xml_pool *pool;
	struct arena a;
	struct strbuf b;
};

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	f.pool = xml_pool_new(NULL);
	assert_non_null(f.pool);
	arena_init(&f.a, 4096);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	strbuf_free(&f->b);
	arena_release(&f->a);
	xml_pool_free(f->pool);
	return 0;
}

static struct xml_node *parse_xml(struct fixture *f, const char *text)
{
	struct xml_node *n = stored_xml_parse(f->pool, &f->a, text, strlen(text));

	assert_non_null(n);
	return n;
}

/* Parses a form that must be accepted. */
static void parse_ok(struct fixture *f, const char *text, struct dataform *df)
{
	const char *why = "unset";

	assert_int_equal(dataform_parse(&f->a, parse_xml(f, text), df, &why), 0);
	assert_null(why);
}

/* Parses a form that must be refused with err; returns the reason. */
static const char *parse_err(struct fixture *f, const char *text, int err)
{
	struct dataform df;
	const char *why = NULL;

	assert_int_equal(dataform_parse(&f->a, parse_xml(f, text), &df, &why), err);
	assert_non_null(why);
	assert_int_equal(df.nfields, 0);
	return why;
}

static const char *serialize(struct fixture *f, const struct xml_node *n)
{
	strbuf_clear(&f->b);
	stored_xml_serialize(&f->b, n);
	assert_false(f->b.oom);
	return f->b.data;
}

#define X "<x xmlns='jabber:x:data' "

static void test_parse_reads_fields_values_and_options(void **state)
{
	struct fixture *f = *state;
	const struct dataform_field *fl;
	struct dataform df;

	parse_ok(f, X "type='form'><title>T</title><instructions>one</instructions>"
		 "<instructions>two</instructions>"
		 "<field var='FORM_TYPE' type='hidden'><value>urn:x</value></field>"
		 "<field var='a' type='list-multi' label='A'><desc>d</desc><required/>"
		 "<value>1</value><value>2</value>"
		 "<option label='One'><value>1</value></option><option><value>2</value></option>"
		 "</field><field var='b'/><field type='fixed'><value>hdr</value></field></x>", &df);
	assert_int_equal(df.type, DATAFORM_FORM);
	assert_string_equal(df.title, "T");
	assert_string_equal(df.instructions, "one\ntwo");
	assert_string_equal(df.form_type, "urn:x");
	assert_int_equal(df.nfields, 4);
	fl = dataform_get(&df, "a");
	assert_non_null(fl);
	assert_int_equal(fl->type, DATAFORM_FIELD_LIST_MULTI);
	assert_string_equal(fl->label, "A");
	assert_string_equal(fl->desc, "d");
	assert_true(fl->required);
	assert_int_equal(fl->nvalues, 2);
	assert_string_equal(fl->values[1], "2");
	assert_int_equal(fl->noptions, 2);
	assert_string_equal(fl->options[0].label, "One");
	assert_null(fl->options[1].label);
	assert_string_equal(fl->options[1].value, "2");
	/* No type in a form: the field keeps UNSPECIFIED (text-single by default). */
	assert_int_equal(dataform_get(&df, "b")->type, DATAFORM_FIELD_UNSPECIFIED);
	assert_null(dataform_value(&df, "b"));
	/* A fixed field may go without var. */
	assert_null(df.fields[3].var);
	assert_null(dataform_get(&df, "missing"));
}

static void test_unknown_field_type_reads_as_text_single(void **state)
{
	struct fixture *f = *state;
	struct dataform df;

	parse_ok(f, X "type='submit'><field var='v' type='x-fancy'><value>1</value></field></x>", &df);
	assert_int_equal(df.type, DATAFORM_SUBMIT);
	assert_int_equal(df.fields[0].type, DATAFORM_FIELD_TEXT_SINGLE);
}

static void test_form_type_only_from_hidden_or_untyped_field(void **state)
{
	struct fixture *f = *state;
	struct dataform df;

	/* XEP-0068: a FORM_TYPE that is not hidden is no context indicator. */
	parse_ok(f, X "type='form'><field var='FORM_TYPE' type='text-single'><value>urn:x</value>"
		 "</field></x>", &df);
	assert_null(df.form_type);
	/* Submissions often leave the type out. */
	parse_ok(f, X "type='submit'><field var='FORM_TYPE'><value>urn:y</value></field></x>", &df);
	assert_string_equal(df.form_type, "urn:y");
}

static void test_parse_refuses_malformed_forms(void **state)
{
	struct fixture *f = *state;

	parse_err(f, "<x xmlns='urn:other' type='form'/>", -EINVAL);
	parse_err(f, "<y xmlns='jabber:x:data' type='form'/>", -EINVAL);
	parse_err(f, X "/>", -EINVAL);
	parse_err(f, X "type='bogus'/>", -EINVAL);
	assert_string_equal(parse_err(f, X "type='submit'><field><value>1</value></field></x>",
				      -EINVAL), "a field has no 'var'");
	assert_string_equal(parse_err(f, X "type='submit'><field var='a'/><field var='a'/></x>",
				      -EINVAL), "a field appears twice");
	parse_err(f, X "type='form'><field var='a' type='list-single'><option/></field></x>", -EINVAL);
	parse_err(f, X "type='form'><field var='a' type='list-single'><option><value>1</value>"
		  "<value>2</value></option></field></x>", -EINVAL);
}

static void test_parse_null_and_empty(void **state)
{
	struct fixture *f = *state;
	struct dataform df;

	assert_int_equal(dataform_parse(&f->a, NULL, &df, NULL), -EINVAL);
	parse_ok(f, X "type='cancel'/>", &df);
	assert_int_equal(df.type, DATAFORM_CANCEL);
	assert_int_equal(df.nfields, 0);
	assert_null(df.title);
	assert_null(df.instructions);
	assert_null(df.form_type);
}

static void test_parse_enforces_limits(void **state)
{
	struct fixture *f = *state;
	struct strbuf big = STRBUF_INIT;

	strbuf_puts(&big, X "type='submit'>");
	for (int i = 0; i <= DATAFORM_MAX_FIELDS; i++)
		strbuf_printf(&big, "<field var='f%d'/>", i);
	strbuf_puts(&big, "</x>");
	assert_string_equal(parse_err(f, big.data, -E2BIG), "the form has too many fields");

	strbuf_clear(&big);
	strbuf_puts(&big, X "type='submit'><field var='m'>");
	for (int i = 0; i <= DATAFORM_MAX_VALUES; i++)
		strbuf_puts(&big, "<value/>");
	strbuf_puts(&big, "</field></x>");
	assert_string_equal(parse_err(f, big.data, -E2BIG), "a field has too many values");
	strbuf_free(&big);
}

static void test_find_picks_form_by_form_type(void **state)
{
	struct fixture *f = *state;
	struct xml_node *p = parse_xml(f, "<command xmlns='http://jabber.org/protocol/commands'>"
				       "<note/>" X "type='result'><field var='FORM_TYPE' type='hidden'>"
				       "<value>urn:a</value></field></x>"
				       X "type='submit'><field var='FORM_TYPE'><value>urn:b</value>"
				       "</field></x></command>");
	struct xml_node *x;

	x = dataform_find(p, NULL);
	assert_non_null(x);
	assert_string_equal(xml_attr_get(x, "type"), "result");
	x = dataform_find(p, "urn:b");
	assert_non_null(x);
	assert_string_equal(xml_attr_get(x, "type"), "submit");
	assert_null(dataform_find(p, "urn:c"));
	assert_null(dataform_find(p, "urn:"));
}

static void test_typed_accessors(void **state)
{
	struct fixture *f = *state;
	unsigned long n = 7;
	struct dataform df;
	bool b = false;
	char *t;

	parse_ok(f, X "type='submit'><field var='t'><value>true</value></field>"
		 "<field var='z'><value>0</value></field><field var='bad'><value>yes</value></field>"
		 "<field var='n'><value>150</value></field><field var='neg'><value>-1</value></field>"
		 "<field var='huge'><value>99999999999999999999999</value></field>"
		 "<field var='lines'><value>a</value><value></value><value>c</value></field>"
		 "<field var='empty'/></x>", &df);
	assert_int_equal(dataform_get_bool(&df, "t", &b), 0);
	assert_true(b);
	assert_int_equal(dataform_get_bool(&df, "z", &b), 0);
	assert_false(b);
	assert_int_equal(dataform_get_bool(&df, "bad", &b), -EINVAL);
	assert_int_equal(dataform_get_bool(&df, "absent", &b), -ENOENT);
	assert_int_equal(dataform_get_uint(&df, "n", 1, 200, &n), 0);
	assert_int_equal(n, 150);
	assert_int_equal(dataform_get_uint(&df, "n", 1, 100, &n), -EINVAL);
	assert_int_equal(dataform_get_uint(&df, "n", 151, 200, &n), -EINVAL);
	assert_int_equal(dataform_get_uint(&df, "neg", 0, 100, &n), -EINVAL);
	assert_int_equal(dataform_get_uint(&df, "huge", 0, (unsigned long)-1, &n), -EINVAL);
	assert_int_equal(dataform_get_uint(&df, "empty", 0, 100, &n), -ENOENT);
	assert_int_equal(n, 150);
	t = dataform_field_text(&f->a, dataform_get(&df, "lines"));
	assert_string_equal(t, "a\n\nc");
	assert_string_equal(dataform_field_text(&f->a, dataform_get(&df, "empty")), "");
}

/* The offered form used by the validation tests. */
static void offered(struct fixture *f, struct dataform *tmpl)
{
	parse_ok(f, X "type='form'><field var='FORM_TYPE' type='hidden'><value>urn:t</value></field>"
		 "<field var='who' type='jid-single'><required/></field>"
		 "<field var='many' type='jid-multi'/>"
		 "<field var='on' type='boolean'/>"
		 "<field var='pick' type='list-single'><option><value>a</value></option>"
		 "<option><value>b</value></option></field>"
		 "<field var='picks' type='list-multi'><option><value>a</value></option>"
		 "<option><value>b</value></option></field>"
		 "<field var='free' type='text-single'/><field var='lines' type='text-multi'/>"
		 "<field type='fixed'><value>note</value></field></x>", tmpl);
}

static int validate(struct fixture *f, const char *sub_text, const char **bad_var,
		    const char **why)
{
	struct dataform tmpl, sub;

	offered(f, &tmpl);
	parse_ok(f, sub_text, &sub);
	return dataform_validate(&tmpl, &sub, bad_var, why);
}

static void test_validate_accepts_good_submission(void **state)
{
	struct fixture *f = *state;
	const char *bad = "x", *why = "x";

	assert_int_equal(validate(f, X "type='submit'><field var='FORM_TYPE'><value>urn:t</value></field>"
				  "<field var='who'><value>a@b</value></field>"
				  "<field var='many'><value>c@d</value><value>e/f</value></field>"
				  "<field var='on'><value>1</value></field>"
				  "<field var='pick'><value>b</value></field>"
				  "<field var='picks'><value>a</value><value>b</value></field>"
				  "<field var='lines'><value>1</value><value>2</value></field>"
				  "<field var='unknown-extra'><value>z</value></field></x>",
				  &bad, &why), 0);
	assert_null(bad);
	assert_null(why);
	/* FORM_TYPE may be left out of a submission. */
	assert_int_equal(validate(f, X "type='submit'><field var='who'><value>a@b</value></field></x>",
				  NULL, NULL), 0);
}

static void test_validate_names_the_bad_field(void **state)
{
	struct fixture *f = *state;
	const char *bad, *why;

#define REFUSED(sub, var, msg) do { \
		assert_int_equal(validate(f, X "type='submit'>" sub "</x>", &bad, &why), -EINVAL); \
		if (var) \
			assert_string_equal(bad, var); \
		else \
			assert_null(bad); \
		assert_string_equal(why, msg); \
	} while (0)

	REFUSED("<field var='many'><value>a@b</value></field>", "who", "a required field is missing");
	REFUSED("<field var='who'><value></value></field>", "who", "a required field is missing");
	REFUSED("<field var='who'><value>a@b</value><value>c@d</value></field>", "who",
		"this field takes one value");
	REFUSED("<field var='who'><value>not a jid@</value></field>", "who",
		"the value is not a valid JID");
	REFUSED("<field var='who'><value>a@b</value></field><field var='many'><value>@x</value>"
		"</field>", "many", "the value is not a valid JID");
	REFUSED("<field var='who'><value>a@b</value></field><field var='on'><value>yes</value>"
		"</field>", "on", "this field takes 1, 0, true or false");
	REFUSED("<field var='who'><value>a@b</value></field><field var='pick'><value>c</value>"
		"</field>", "pick", "the value is not one of the options");
	REFUSED("<field var='who'><value>a@b</value></field><field var='picks'><value>a</value>"
		"<value>zz</value></field>", "picks", "the value is not one of the options");
	REFUSED("<field var='who'><value>a@b</value></field><field var='free'><value>1</value>"
		"<value>2</value></field>", "free", "this field takes one value");
	REFUSED("<field var='FORM_TYPE'><value>urn:other</value></field>"
		"<field var='who'><value>a@b</value></field>", NULL, "the form is of another FORM_TYPE");
#undef REFUSED
}

static void test_build_keeps_schema_order(void **state)
{
	struct fixture *f = *state;
	struct xml_node *x, *fl, *fl2;

	x = dataform_new(&f->a, DATAFORM_FORM, "urn:t");
	assert_non_null(x);
	fl = dataform_add_field(&f->a, x, DATAFORM_FIELD_LIST_SINGLE, "pick", "Pick one");
	assert_non_null(fl);
	/* Called out of order on purpose: options, value, required, desc. */
	assert_int_equal(dataform_field_add_option(&f->a, fl, "A", "a"), 0);
	assert_int_equal(dataform_field_add_value(&f->a, fl, "a"), 0);
	assert_int_equal(dataform_field_set_required(&f->a, fl), 0);
	assert_int_equal(dataform_field_set_required(&f->a, fl), 0);
	assert_int_equal(dataform_field_set_desc(&f->a, fl, "old"), 0);
	assert_int_equal(dataform_field_set_desc(&f->a, fl, "d"), 0);
	assert_int_equal(dataform_add_instructions(&f->a, x, "first"), 0);
	assert_int_equal(dataform_set_title(&f->a, x, "old"), 0);
	assert_int_equal(dataform_set_title(&f->a, x, "Title"), 0);
	assert_int_equal(dataform_add_instructions(&f->a, x, "second"), 0);
	fl2 = dataform_add_field_value(&f->a, x, DATAFORM_FIELD_TEXT_PRIVATE, "pw", NULL, NULL);
	assert_non_null(fl2);
	assert_string_equal(serialize(f, x),
			    "<x xmlns='jabber:x:data' type='form'><title>Title</title>"
			    "<instructions>first</instructions><instructions>second</instructions>"
			    "<field type='hidden' var='FORM_TYPE'><value>urn:t</value></field>"
			    "<field type='list-single' var='pick' label='Pick one'><desc>d</desc>"
			    "<required/><value>a</value><option label='A'><value>a</value></option>"
			    "</field><field type='text-private' var='pw'/></x>");
	assert_ptr_equal(dataform_field_node(x, "pw"), fl2);
	assert_null(dataform_field_node(x, "nope"));
}

static void test_build_result_table(void **state)
{
	struct fixture *f = *state;
	struct xml_node *x, *rep, *it;

	x = dataform_new(&f->a, DATAFORM_RESULT, NULL);
	it = dataform_add_item(&f->a, x);
	assert_non_null(dataform_add_field_value(&f->a, it, DATAFORM_FIELD_UNSPECIFIED, "jid", NULL,
						 "a@b"));
	rep = dataform_add_reported(&f->a, x);
	assert_ptr_equal(dataform_add_reported(&f->a, x), rep);
	assert_non_null(dataform_add_field(&f->a, rep, DATAFORM_FIELD_JID_SINGLE, "jid", "JID"));
	/* A top-level field added late still goes before the table. */
	assert_non_null(dataform_add_field_value(&f->a, x, DATAFORM_FIELD_TEXT_SINGLE, "n", NULL, "1"));
	assert_string_equal(serialize(f, x),
			    "<x xmlns='jabber:x:data' type='result'>"
			    "<field type='text-single' var='n'><value>1</value></field>"
			    "<reported><field type='jid-single' var='jid' label='JID'/></reported>"
			    "<item><field var='jid'><value>a@b</value></field></item></x>");
	assert_null(dataform_new(&f->a, (enum dataform_type)99, NULL));
}

static void test_built_form_parses_back(void **state)
{
	struct fixture *f = *state;
	struct xml_node *x = dataform_new(&f->a, DATAFORM_FORM, "urn:t"), *fl;
	struct dataform df;

	fl = dataform_add_field(&f->a, x, DATAFORM_FIELD_BOOLEAN, "b", NULL);
	assert_int_equal(dataform_field_set_required(&f->a, fl), 0);
	assert_int_equal(dataform_parse(&f->a, x, &df, NULL), 0);
	assert_string_equal(df.form_type, "urn:t");
	assert_int_equal(dataform_get(&df, "b")->type, DATAFORM_FIELD_BOOLEAN);
	assert_true(dataform_get(&df, "b")->required);
	/* dataform_find works on built trees too. */
	{
		struct xml_node *p = xml_node_new(&f->a, "urn:p", "p");

		xml_node_append(p, x);
		assert_ptr_equal(dataform_find(p, "urn:t"), x);
	}
}

static void test_prefill_copies_values_but_never_passwords(void **state)
{
	struct fixture *f = *state;
	struct xml_node *x = dataform_new(&f->a, DATAFORM_FORM, "urn:t"), *fl;
	struct dataform sub;

	fl = dataform_add_field_value(&f->a, x, DATAFORM_FIELD_TEXT_SINGLE, "name", NULL, "default");
	assert_non_null(fl);
	assert_non_null(dataform_add_field(&f->a, x, DATAFORM_FIELD_TEXT_PRIVATE, "password", NULL));
	assert_non_null(dataform_add_field_value(&f->a, x, DATAFORM_FIELD_HIDDEN, "h", NULL, "keep"));
	fl = dataform_add_field(&f->a, x, DATAFORM_FIELD_JID_MULTI, "jids", NULL);
	assert_int_equal(dataform_field_add_option(&f->a, fl, NULL, "o"), 0);
	parse_ok(f, X "type='submit'><field var='FORM_TYPE'><value>urn:evil</value></field>"
		 "<field var='name'><value>alice &amp; co</value></field>"
		 "<field var='password' type='text-single'><value>s3cret</value></field>"
		 "<field var='h'><value>changed</value></field>"
		 "<field var='jids'><value>a@b</value><value>c@d</value></field>"
		 "<field var='other'><value>x</value></field></x>", &sub);
	assert_int_equal(dataform_prefill(&f->a, x, &sub), 0);
	assert_string_equal(serialize(f, x),
			    "<x xmlns='jabber:x:data' type='form'>"
			    "<field type='hidden' var='FORM_TYPE'><value>urn:t</value></field>"
			    "<field type='text-single' var='name'><value>alice &amp; co</value></field>"
			    "<field type='text-private' var='password'/>"
			    "<field type='hidden' var='h'><value>keep</value></field>"
			    "<field type='jid-multi' var='jids'><value>a@b</value><value>c@d</value>"
			    "<option><value>o</value></option></field></x>");
	assert_null(strstr(f->b.data, "s3cret"));
}

static void test_names_round_trip(void **state)
{
	(void)state;
	for (int t = DATAFORM_FORM; t <= DATAFORM_RESULT; t++)
		assert_int_equal(dataform_type_parse(dataform_type_name((enum dataform_type)t)), t);
	assert_int_equal(dataform_type_parse("error"), 0);
	assert_int_equal(dataform_type_parse(NULL), 0);
	assert_null(dataform_type_name((enum dataform_type)0));
	for (int t = DATAFORM_FIELD_BOOLEAN; t <= DATAFORM_FIELD_TEXT_SINGLE; t++)
		assert_int_equal(dataform_field_type_parse(
					 dataform_field_type_name((enum dataform_field_type)t)), t);
	assert_null(dataform_field_type_name(DATAFORM_FIELD_UNSPECIFIED));
	assert_int_equal(dataform_field_type_parse(NULL), DATAFORM_FIELD_UNSPECIFIED);
	assert_true(dataform_field_type_multi(DATAFORM_FIELD_JID_MULTI));
	assert_true(dataform_field_type_multi(DATAFORM_FIELD_HIDDEN));
	assert_false(dataform_field_type_multi(DATAFORM_FIELD_TEXT_PRIVATE));
	assert_false(dataform_field_type_multi(DATAFORM_FIELD_UNSPECIFIED));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_parse_reads_fields_values_and_options, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_field_type_reads_as_text_single, setup, teardown),
		cmocka_unit_test_setup_teardown(test_form_type_only_from_hidden_or_untyped_field, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_parse_refuses_malformed_forms, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_null_and_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_enforces_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_find_picks_form_by_form_type, setup, teardown),
		cmocka_unit_test_setup_teardown(test_typed_accessors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_validate_accepts_good_submission, setup, teardown),
		cmocka_unit_test_setup_teardown(test_validate_names_the_bad_field, setup, teardown),
		cmocka_unit_test_setup_teardown(test_build_keeps_schema_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_build_result_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_built_form_parses_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefill_copies_values_but_never_passwords, setup,
						teardown),
		cmocka_unit_test(test_names_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
