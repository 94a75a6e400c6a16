/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "statedir.h"

int statedir_adopt_owner(const char *dir, char *why, size_t why_size)
{
	struct passwd *pw;
	struct stat st;
	gid_t gid;
	int e;

	if (geteuid() != 0)
		return 0;
	if (stat(dir, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		e = errno;
		snprintf(why, why_size, "cannot stat %s: %s", dir, strerror(e));
		return -e;
	}
	if (st.st_uid == 0)
		return 0;

	/* A uid without a user entry (a directory from another system) keeps no groups. */
	errno = 0;
	pw = getpwuid(st.st_uid);
	gid = pw ? pw->pw_gid : st.st_gid;
	if ((pw ? initgroups(pw->pw_name, gid) : setgroups(0, NULL)) < 0 || setgid(gid) < 0 ||
	    setuid(st.st_uid) < 0) {
		e = errno;
		snprintf(why, why_size, "cannot switch to uid %u, the owner of %s: %s",
			 (unsigned)st.st_uid, dir, strerror(e));
		return -e;
	}
	/* setuid() from root drops the saved uid too; make sure of it. */
	if (setuid(0) == 0 || geteuid() == 0) {
		snprintf(why, why_size, "could regain root after switching to uid %u",
			 (unsigned)st.st_uid);
		return -EPERM;
	}
	return 0;
}
