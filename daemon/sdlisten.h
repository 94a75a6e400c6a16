/* SPDX-License-Identifier: MIT */
/*
 * systemd socket activation: the listening sockets a socket unit passes
 * (sd_listen_fds(3) protocol), claimed by address by the listen keys.
 */
#ifndef STANZAD_SDLISTEN_H
#define STANZAD_SDLISTEN_H

#include <sys/socket.h>

/*
 * Takes the sockets passed in $LISTEN_FDS when $LISTEN_PID is this
 * process (and clears those variables). The number usable, 0 when none.
 */
int sdlisten_take(void);

/* The passed socket bound to addr (each once), or -ENOENT. */
int sdlisten_claim(const struct sockaddr *addr);

/* Closes, with a warning each, the passed sockets no listener claimed. */
void sdlisten_release_unclaimed(void);

#endif
