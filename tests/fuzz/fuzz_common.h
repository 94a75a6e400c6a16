/* SPDX-License-Identifier: MIT */
/*
 * Shared helpers of the libFuzzer targets in tests/fuzz/.
 *
 * Each target is one LLVMFuzzerTestOneInput() over the daemon's own
 * sources, compiled with clang and -fsanitize=fuzzer,address,undefined
 * (see fuzz.mk). Besides the sanitizers, the targets check properties
 * (round trips, idempotence, agreement of two implementations) and stop
 * with fuzz_fail() when one does not hold, so libFuzzer saves the input.
 */
#ifndef STANZAD_FUZZ_COMMON_H
#define STANZAD_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The real stderr once fuzz_quiet_logs() silenced the code under test. */
__attribute__((weak)) FILE *fuzz_err_file;

static inline FILE *fuzz_err(void)
{
	return fuzz_err_file ? fuzz_err_file : stderr;
}

/*
 * A property does not hold: say which and where, then abort() so that
 * libFuzzer reports a crash with a stack and keeps the input.
 */
__attribute__((noreturn, format(printf, 3, 4)))
static inline void fuzz_fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(fuzz_err(), "\nFUZZ PROPERTY VIOLATED at %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(fuzz_err(), fmt, ap);
	va_end(ap);
	fputc('\n', fuzz_err());
	fflush(fuzz_err());
	abort();
}

#define fuzz_fail(...) fuzz_fail_at(__FILE__, __LINE__, __VA_ARGS__)
#define fuzz_check(cond, ...) \
	do { if (!(cond)) fuzz_fail(__VA_ARGS__); } while (0)

/*
 * Bounded cursor over the fuzzer's input: control values are taken from
 * the front, in a fixed order, so that a seed file reads as a few control
 * bytes followed by the interesting text.
 */
struct fuzz_in {
	const uint8_t *p;
	size_t left;
};

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
	if (!in->left)
		return 0;
	in->left--;
	return *in->p++;
}

/* Up to n bytes (fewer at the end of the input); returns the count. */
static inline size_t fuzz_bytes(struct fuzz_in *in, size_t n, const uint8_t **out)
{
	if (n > in->left)
		n = in->left;
	*out = in->p;
	in->p += n;
	in->left -= n;
	return n;
}

/*
 * The next field: bytes up to (not including) `sep` of sep_len bytes, or
 * the rest of the input. The separator is consumed. Returns the length.
 */
static inline size_t fuzz_field(struct fuzz_in *in, const char *sep, size_t sep_len,
				const uint8_t **out)
{
	size_t n = in->left;

	*out = in->p;
	for (size_t i = 0; i + sep_len <= in->left; i++) {
		if (memcmp(in->p + i, sep, sep_len) == 0) {
			in->p += i + sep_len;
			in->left -= i + sep_len;
			return i;
		}
	}
	in->p += n;
	in->left = 0;
	return n;
}

/* A NUL-terminated malloc'd copy (the daemon's APIs take C strings). */
static inline char *fuzz_strndup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);

	if (!s)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/*
 * The code under test logs to stderr (errors at every level) and
 * config_load() prints usage to stdout: millions of lines per run. Unless
 * FUZZ_VERBOSE is set, the stdio streams `stdout` and `stderr` are pointed
 * at /dev/null. File descriptors 1 and 2 stay open, and libFuzzer and the
 * sanitizers keep writing to them (libFuzzer took its FILE pointer at
 * start-up, the sanitizers write to the descriptor), as do fuzz_fail()
 * and the targets' own messages through fuzz_err().
 */
static inline void fuzz_quiet_logs(void)
{
	FILE *null;

	log_threshold = LOG_LVL_ERROR;
	if (getenv("FUZZ_VERBOSE") || fuzz_err_file)
		return;
	null = fopen("/dev/null", "w");
	if (!null)
		return;
	fuzz_err_file = stderr;
	stderr = null;
	stdout = null;
}

#endif
