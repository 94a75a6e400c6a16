/* SPDX-License-Identifier: MIT */
/*
 * stanzactl's commands for the running daemon: they go over the control
 * socket (control.h) and print its JSON answer, as text for people or
 * as JSON (--json) for scripts.
 */
#ifndef STANZAD_CTL_ONLINE_H
#define STANZAD_CTL_ONLINE_H

#include <stdbool.h>
#include <stddef.h>

#define CTL_ONLINE_TIMEOUT_MS	40000	/* to connect, send and read the whole answer (the
					 * daemon gives up after CONTROL_ANSWER_MS) */

/* Whether words[0..n) start an online command (status, sessions, ...). */
bool ctl_online_is_command(const char *word);

/*
 * Runs the online command in words[0..n) against the daemon listening on
 * socket_path. Prints the answer (stdout) or one line saying what went
 * wrong (stderr), e.g. that the daemon is not running. Returns the exit
 * status: 0 done, 1 failed, 2 usage error.
 */
int ctl_online_run(const char *socket_path, bool json, int n, char **words);

/*
 * Sends one request line and reads the answer (malloc'd, NUL-terminated,
 * into *out). 0, or -errno (-ENOENT/-ECONNREFUSED: nobody listens,
 * -EACCES, -ETIMEDOUT, -EMSGSIZE for an answer over 64 MiB).
 */
int ctl_online_request(const char *socket_path, const char *line, char **out);

/*
 * Reads state_dir, control_socket and storage from a stanzad config file
 * (other keys are ignored); each out value is malloc'd, or left NULL when
 * the file does not set it. 0, or -errno / -EINVAL (printed).
 */
int ctl_read_config(const char *file, char **state_dir, char **control_socket, char **storage);

/* Usage lines of the online commands (for stanzactl --help). */
#define CTL_ONLINE_SYNOPSIS \
	"       stanzactl [OPTIONS] status\n" \
	"       stanzactl [OPTIONS] sessions list\n" \
	"       stanzactl [OPTIONS] sessions kick JID\n" \
	"       stanzactl [OPTIONS] users list\n" \
	"       stanzactl [OPTIONS] roster show USER\n" \
	"       stanzactl [OPTIONS] queues\n" \
	"       stanzactl [OPTIONS] certs show|reload\n" \
	"       stanzactl [OPTIONS] paths\n" \
	"       stanzactl [OPTIONS] guard\n" \
	"       stanzactl [OPTIONS] workers\n" \
	"       stanzactl [OPTIONS] workers drain|undrain N\n" \
	"       stanzactl [OPTIONS] cluster status\n"

#endif
