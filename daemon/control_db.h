/* SPDX-License-Identifier: MIT */
/*
 * Storage-thread queries of the control socket (storage_control.c).
 */
#ifndef STANZAD_CONTROL_DB_H
#define STANZAD_CONTROL_DB_H

#include <stdint.h>

struct storage;

/*
 * Calls fn(arg, user, n) for every account with n > 0 stored offline
 * messages, by username; stops when fn returns nonzero. 0 or -errno.
 */
int control_db_offline_counts(struct storage *st,
			      int (*fn)(void *arg, const char *user, uint64_t count), void *arg);

#endif
