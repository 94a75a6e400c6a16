/* SPDX-License-Identifier: MIT */
/* Configuration: defaults, the INI file, flags overriding it, bad input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char conf_path[64];

static void write_conf(const char *text)
{
	int fd;

	strcpy(conf_path, "/tmp/stanzad-test-conf-XXXXXX");
	fd = mkstemp(conf_path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static int load(struct config *cfg, int argc, const char **argv)
{
	/* Silence the expected error lines. */
	FILE *saved = stderr;
	int ret;

	stderr = fopen("/dev/null", "w");
	ret = config_load(cfg, argc, (char **)argv);
	fclose(stderr);
	stderr = saved;
	return ret;
}

static void test_defaults_without_flags(void **state)
{
	const char *argv[] = { "stanzad" };
	struct config cfg;

	assert_int_equal(load(&cfg, 1, argv), 0);
	assert_string_equal(cfg.domain, "localhost");
	assert_string_equal(cfg.state_dir, "/var/lib/stanzad");
	assert_int_equal(cfg.listen_c2s.n, 1);
	assert_string_equal(cfg.listen_c2s.v[0], "127.0.0.1:5222");
	assert_string_equal(cfg.listen_c2s_tls.v[0], "127.0.0.1:5223");
	assert_false(cfg.registration_open);
	assert_true(cfg.require_tls);
	assert_int_equal(cfg.max_stanza_bytes, 256 * 1024);
	assert_true(cfg.workers >= 1);
	config_free(&cfg);
}

static void test_flags_override_file(void **state)
{
	struct config cfg;

	write_conf("# comment\ndomain = example.org\nregistration = open\nmax_resources = 5\n"
		   "listen_c2s = 127.0.0.1:1\nlisten_c2s = [::1]:1\n");
	const char *argv[] = { "stanzad", "--config", conf_path, "--domain", "Other.Example",
			       "--max-resources=7" };

	assert_int_equal(load(&cfg, 6, argv), 0);
	/* The flag wins, and the domain is normalized. */
	assert_string_equal(cfg.domain, "other.example");
	assert_true(cfg.registration_open);
	assert_int_equal(cfg.max_resources, 7);
	/* Repeated keys in the file add up. */
	assert_int_equal(cfg.listen_c2s.n, 2);
	assert_string_equal(cfg.listen_c2s.v[1], "[::1]:1");
	config_free(&cfg);
	unlink(conf_path);
}

static void test_repeated_flags_replace_file_list(void **state)
{
	struct config cfg;

	write_conf("listen_c2s = 127.0.0.1:1\n");
	const char *argv[] = { "stanzad", "--config", conf_path, "--listen-c2s", "127.0.0.1:2",
			       "--listen-c2s", "127.0.0.1:3", "--listen-c2s-tls", "off" };

	assert_int_equal(load(&cfg, 9, argv), 0);
	assert_int_equal(cfg.listen_c2s.n, 2);
	assert_string_equal(cfg.listen_c2s.v[0], "127.0.0.1:2");
	assert_string_equal(cfg.listen_c2s.v[1], "127.0.0.1:3");
	assert_int_equal(cfg.listen_c2s_tls.n, 0);
	config_free(&cfg);
	unlink(conf_path);
}

static void test_bad_input_is_rejected(void **state)
{
	static const char *cases[][3] = {
		{ "stanzad", "--no-such-flag", "1" },
		{ "stanzad", "--workers", "0" },
		{ "stanzad", "--workers", "abc" },
		{ "stanzad", "--registration", "maybe" },
		{ "stanzad", "--require-tls", "true" },
		{ "stanzad", "--listen-c2s", "localhost" },
		{ "stanzad", "--listen-c2s", "1.2.3.4:99999" },
		{ "stanzad", "--domain", "bad domain" },
		{ "stanzad", "--log-level", "loud" },
		{ "stanzad", "--max-stanza-bytes", "-5" },
		{ "stanzad", "positional", "x" },
	};
	struct config cfg;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(load(&cfg, 3, cases[i]), -EINVAL);
		config_free(&cfg);
	}
	const char *missing[] = { "stanzad", "--domain" };

	assert_int_equal(load(&cfg, 2, missing), -EINVAL);
	config_free(&cfg);
}

static void test_bad_file_is_rejected(void **state)
{
	struct config cfg;
	const char *argv[] = { "stanzad", "--config", conf_path };

	write_conf("domain = example.org\nnot_a_key = 1\n");
	assert_int_equal(load(&cfg, 3, argv), -EINVAL);
	config_free(&cfg);
	unlink(conf_path);

	write_conf("[section]\ndomain = example.org\n");
	assert_int_equal(load(&cfg, 3, argv), -EINVAL);
	config_free(&cfg);
	unlink(conf_path);

	write_conf("this line has no equals sign\n");
	assert_int_equal(load(&cfg, 3, argv), -EINVAL);
	config_free(&cfg);
	unlink(conf_path);

	const char *nofile[] = { "stanzad", "--config", "/nonexistent/stanzad.conf" };

	assert_true(load(&cfg, 3, nofile) < 0);
	config_free(&cfg);
}

static void test_cert_and_key_go_together(void **state)
{
	struct config cfg;
	const char *argv[] = { "stanzad", "--cert", "/tmp/c.pem" };

	assert_int_equal(load(&cfg, 3, argv), -EINVAL);
	config_free(&cfg);
}

static void test_help_and_version_return_1(void **state)
{
	struct config cfg;
	const char *help[] = { "stanzad", "--help" };
	const char *ver[] = { "stanzad", "--version" };
	FILE *saved = stdout;

	stdout = fopen("/dev/null", "w");
	assert_int_equal(config_load(&cfg, 2, (char **)help), 1);
	config_free(&cfg);
	assert_int_equal(config_load(&cfg, 2, (char **)ver), 1);
	config_free(&cfg);
	fclose(stdout);
	stdout = saved;
}

static void test_parse_addr(void **state)
{
	struct sockaddr_storage ss;
	unsigned len;

	assert_int_equal(config_parse_addr("127.0.0.1:5222", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 5222);
	assert_int_equal(config_parse_addr("[::1]:5223", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(config_parse_addr("*:5222", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(config_parse_addr("[::1]5223", &ss, &len), -EINVAL);
	assert_int_equal(config_parse_addr("1.2.3:5", &ss, &len), -EINVAL);
	assert_int_equal(config_parse_addr("1.2.3.4:", &ss, &len), -EINVAL);
	assert_int_equal(config_parse_addr("1.2.3.4:x", &ss, &len), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults_without_flags),
		cmocka_unit_test(test_flags_override_file),
		cmocka_unit_test(test_repeated_flags_replace_file_list),
		cmocka_unit_test(test_bad_input_is_rejected),
		cmocka_unit_test(test_bad_file_is_rejected),
		cmocka_unit_test(test_cert_and_key_go_together),
		cmocka_unit_test(test_help_and_version_return_1),
		cmocka_unit_test(test_parse_addr),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
