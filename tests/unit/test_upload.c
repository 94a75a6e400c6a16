/* SPDX-License-Identifier: MIT */
/*
 * XEP-0363 helpers that need no server: the URL encoding of file names,
 * the checks on names and types, the allowed-type list, the /upload/ path
 * parser, and the HTTP percent decoder it uses (encoded NULs, bad escapes).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"
#include "strbuf.h"
#include "upload.h"

static void test_url_encoding_keeps_unreserved_only(void **state)
{
	struct strbuf b = STRBUF_INIT;
	const char *name = "tr\xc3\xa8s cool/../a~b_c-d.jpg?#%";

	upload_url_encode(&b, name, strlen(name));
	assert_string_equal(b.data, "tr%C3%A8s%20cool%2F..%2Fa~b_c-d.jpg%3F%23%25");
	strbuf_free(&b);
}

static void test_filename_checks(void **state)
{
	char long_name[UPLOAD_FILENAME_MAX + 2];

	assert_true(upload_filename_ok("a"));
	assert_true(upload_filename_ok("tr\xc3\xa8s cool.jpg"));
	assert_true(upload_filename_ok("a/b"));	/* encoded in the URL, never a path on disk */
	assert_false(upload_filename_ok(NULL));
	assert_false(upload_filename_ok(""));
	assert_false(upload_filename_ok("."));
	assert_false(upload_filename_ok(".."));
	assert_false(upload_filename_ok("a\nb"));
	assert_false(upload_filename_ok("a\x7f"));
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_false(upload_filename_ok(long_name));
	long_name[UPLOAD_FILENAME_MAX] = '\0';
	assert_true(upload_filename_ok(long_name));
}

static void test_type_checks(void **state)
{
	assert_true(upload_type_ok("image/png"));
	assert_true(upload_type_ok("text/plain; charset=utf-8"));
	assert_false(upload_type_ok("png"));
	assert_false(upload_type_ok("/png"));
	assert_false(upload_type_ok("image/"));
	/* Echoed in a header: no CR/LF smuggling, no 8-bit bytes. */
	assert_false(upload_type_ok("text/plain\r\nSet-Cookie: x=y"));
	assert_false(upload_type_ok("text/pl\xc3\xa4in"));
}

static void test_allowed_types(void **state)
{
	char *list[] = { "image/*", "text/plain" };

	assert_true(upload_type_allowed("application/x-anything", NULL, 0));
	assert_true(upload_type_allowed("image/png", list, 2));
	assert_true(upload_type_allowed("IMAGE/JPEG", list, 2));
	assert_true(upload_type_allowed("text/plain; charset=utf-8", list, 2));
	assert_false(upload_type_allowed("text/html", list, 2));
	assert_false(upload_type_allowed("imagex/png", list, 2));
	assert_false(upload_type_allowed("text/plainx", list, 2));
}

static void test_parse_path(void **state)
{
	char token[UPLOAD_TOKEN_LEN + 1], name[256];
	const char *tok = "0123456789abcdef0123456789abcdef";
	char path[512];

	snprintf(path, sizeof(path), "/upload/%s/tr%%C3%%A8s%%20cool.jpg", tok);
	assert_int_equal(upload_parse_path(path, token, name, sizeof(name)), 0);
	assert_string_equal(token, tok);
	assert_string_equal(name, "tr\xc3\xa8s cool.jpg");

	/* Upper-case hex, short tokens, no name, bad escapes, encoded NUL. */
	assert_int_equal(upload_parse_path("/upload/0123456789ABCDEF0123456789abcdef/a", token, name,
					   sizeof(name)), -EINVAL);
	assert_int_equal(upload_parse_path("/upload/0123/a", token, name, sizeof(name)), -EINVAL);
	snprintf(path, sizeof(path), "/upload/%s/", tok);
	assert_int_equal(upload_parse_path(path, token, name, sizeof(name)), -EINVAL);
	snprintf(path, sizeof(path), "/upload/%s", tok);
	assert_int_equal(upload_parse_path(path, token, name, sizeof(name)), -EINVAL);
	snprintf(path, sizeof(path), "/upload/%s/a%%2", tok);
	assert_int_equal(upload_parse_path(path, token, name, sizeof(name)), -EINVAL);
	snprintf(path, sizeof(path), "/upload/%s/a%%00b", tok);
	assert_int_equal(upload_parse_path(path, token, name, sizeof(name)), -EINVAL);
	snprintf(path, sizeof(path), "/elsewhere/%s/a", tok);
	assert_int_equal(upload_parse_path(path, token, name, sizeof(name)), -EINVAL);
	/* A name longer than the buffer. */
	snprintf(path, sizeof(path), "/upload/%s/abcdefgh", tok);
	assert_int_equal(upload_parse_path(path, token, name, 5), -EINVAL);
}

static void test_percent_decode(void **state)
{
	char s[64];

	strcpy(s, "a%20b%2fc%41");
	assert_int_equal(http_percent_decode(s, strlen(s)), 6);
	assert_string_equal(s, "a b/cA");
	strcpy(s, "plain");
	assert_int_equal(http_percent_decode(s, strlen(s)), 5);
	strcpy(s, "%zz");
	assert_int_equal(http_percent_decode(s, strlen(s)), -EINVAL);
	strcpy(s, "end%4");
	assert_int_equal(http_percent_decode(s, strlen(s)), -EINVAL);
	strcpy(s, "%");
	assert_int_equal(http_percent_decode(s, strlen(s)), -EINVAL);
}

static void test_reason_phrases(void **state)
{
	assert_string_equal(http_reason(404), "Not Found");
	assert_string_equal(http_reason(431), "Request Header Fields Too Large");
	assert_string_equal(http_reason(299), "OK");
	assert_string_equal(http_reason(599), "Error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_encoding_keeps_unreserved_only),
		cmocka_unit_test(test_filename_checks),
		cmocka_unit_test(test_type_checks),
		cmocka_unit_test(test_allowed_types),
		cmocka_unit_test(test_parse_path),
		cmocka_unit_test(test_percent_decode),
		cmocka_unit_test(test_reason_phrases),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
