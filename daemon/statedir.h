/* SPDX-License-Identifier: MIT */
/*
 * Who owns the state directory. The packaged daemon runs as the `stanzad`
 * user and its state directory is that user's, mode 0700; an operator
 * runs the tools as root (`sudo stanzactl user add alice`). A root-owned
 * database or WAL file left behind by such a tool would lock the daemon
 * out of its own store, so the tools take on the directory owner's
 * identity before they touch it.
 */
#ifndef STANZAD_STATEDIR_H
#define STANZAD_STATEDIR_H

#include <stddef.h>

/*
 * When the process runs as root and `dir` exists and belongs to another
 * user, switches the process to that user for good: its supplementary
 * groups (from the user database), its primary group, then its uid (real,
 * effective and saved), and checks that root cannot be regained. Does
 * nothing when not root, when `dir` is missing (it will be created by the
 * caller, as root) or root's. 0, or -errno with a one-line reason in why.
 * Call before any thread starts.
 */
int statedir_adopt_owner(const char *dir, char *why, size_t why_size);

#endif
