/* SPDX-License-Identifier: MIT */
/* Tools run as root take on the identity of the state directory's owner. */
#include <errno.h>
#include <grp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "statedir.h"

/* A uid no account on a test machine has: no user entry, so no groups. */
#define UNLISTED_UID	64999
#define UNLISTED_GID	64998

static char dir[64];

static int setup(void **state)
{
	snprintf(dir, sizeof(dir), "/tmp/stanzad-statedir-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/created", dir);
	unlink(path);
	rmdir(dir);
	return 0;
}

/* Runs the call in a child (it changes identity for good); its exit status. */
static int in_child(int (*fn)(void))
{
	pid_t pid = fork();
	int status;

	if (pid == 0)
		_exit(fn());
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static int child_adopts_and_creates(void)
{
	char why[256], path[128];
	struct stat st;
	FILE *f;

	if (statedir_adopt_owner(dir, why, sizeof(why)) != 0)
		return 10;
	if (getuid() != UNLISTED_UID || geteuid() != UNLISTED_UID || getgid() != UNLISTED_GID ||
	    getegid() != UNLISTED_GID)
		return 11;
	/* No supplementary group of root's is left. */
	if (getgroups(0, NULL) != 0)
		return 12;
	snprintf(path, sizeof(path), "%s/created", dir);
	f = fopen(path, "w");
	if (!f)
		return 13;
	fclose(f);
	if (stat(path, &st) < 0 || st.st_uid != UNLISTED_UID)
		return 14;
	/* Root is gone for good. */
	if (setuid(0) == 0 || seteuid(0) == 0)
		return 15;
	return 0;
}

static void test_root_becomes_the_owner_of_the_state_dir(void **state)
{
	if (geteuid() != 0)
		skip();
	assert_int_equal(chown(dir, UNLISTED_UID, UNLISTED_GID), 0);
	assert_int_equal(in_child(child_adopts_and_creates), 0);
}

static int child_stays_root(void)
{
	char why[256];

	if (statedir_adopt_owner(dir, why, sizeof(why)) != 0)
		return 10;
	return geteuid() == 0 ? 0 : 11;
}

static void test_root_owned_state_dir_changes_nothing(void **state)
{
	if (geteuid() != 0)
		skip();
	assert_int_equal(chown(dir, 0, 0), 0);
	assert_int_equal(in_child(child_stays_root), 0);
}

static int child_missing_dir(void)
{
	char why[256];

	if (statedir_adopt_owner("/nonexistent/stanzad-state", why, sizeof(why)) != 0)
		return 10;
	return geteuid() == 0 ? 0 : 11;
}

static void test_missing_state_dir_changes_nothing(void **state)
{
	if (geteuid() != 0)
		skip();
	assert_int_equal(in_child(child_missing_dir), 0);
}

static int child_unprivileged(void)
{
	char why[256];

	/* An ordinary user: the directory belongs to someone else. */
	if (setgroups(0, NULL) < 0 || setgid(UNLISTED_GID) < 0 || setuid(UNLISTED_UID) < 0)
		return 20;
	if (statedir_adopt_owner(dir, why, sizeof(why)) != 0)
		return 10;
	return geteuid() == UNLISTED_UID ? 0 : 11;
}

static void test_unprivileged_caller_is_left_alone(void **state)
{
	char why[256];
	uid_t before = geteuid();

	if (before != 0) {
		assert_int_equal(statedir_adopt_owner(dir, why, sizeof(why)), 0);
		assert_int_equal(geteuid(), before);
		return;
	}
	assert_int_equal(chown(dir, 0, 0), 0);
	assert_int_equal(in_child(child_unprivileged), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_root_becomes_the_owner_of_the_state_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_root_owned_state_dir_changes_nothing, setup, teardown),
		cmocka_unit_test(test_missing_state_dir_changes_nothing),
		cmocka_unit_test_setup_teardown(test_unprivileged_caller_is_left_alone, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
