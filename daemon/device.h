/* SPDX-License-Identifier: MIT */
/*
 * Device fleets: enrolled device accounts (tags, owner), the client
 * certificate fingerprints that log in as them (SASL EXTERNAL,
 * sasl_external.c), and bulk enrollment from a CSV file (device_import.c,
 * run by `stanzactl device import`).
 *
 * The SQL lives in storage_device.c (tables of the "devices"
 * migration); every device_db_* call runs on the storage thread or in
 * stanzactl, inside the caller's batch when there is one.
 */
#ifndef STANZAD_DEVICE_H
#define STANZAD_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "jid.h"
#include "storage.h"
#include "tls_client_cert.h"

#define DEVICE_TAGS_MAX		1024	/* bytes of a device's tags, ';'-joined */
#define DEVICE_TAG_MAX		128	/* bytes of one tag */
#define DEVICE_OWNER_MAX	(JID_MAX - 1)

/* ---- Storage (storage_device.c) ---- */

struct device_row {
	const char *user;		/* normalized localpart */
	const char *jid;		/* bare JID as enrolled */
	const char *tags;		/* "" when none */
	const char *owner;		/* bare JID or NULL */
	int64_t logout_at;		/* last session end (last_activity), 0 unknown */
	unsigned certs;			/* fingerprints enrolled and not revoked */
	unsigned revoked;		/* fingerprints revoked */
};

/*
 * The enrollment record of `user`: JID, tags and owner copied into the
 * buffers (owner "" when none). 0, -ENOENT (not an enrolled device) or
 * -errno.
 */
int device_db_get(struct storage *st, const char *user, char *jid, size_t jid_size, char *tags,
		  size_t tags_size, char *owner, size_t owner_size);
/* Creates or replaces the enrollment record (owner NULL: none). 0 or -errno. */
int device_db_put(struct storage *st, const char *user, const char *jid, const char *tags,
		  const char *owner, int64_t now);
/*
 * The account a certificate fingerprint is enrolled for (copied into
 * user), and whether it is revoked. 0, -ENOENT or -errno.
 */
int device_db_cert_find(struct storage *st, const uint8_t fp[TLS_FINGERPRINT_LEN], char *user,
			size_t user_size, bool *revoked);
/*
 * Makes fp the account's certificate: its other fingerprints that are not
 * revoked are removed (a re-enrollment replaces the certificate), revoked
 * ones stay. fp must not be enrolled for another account or revoked
 * (device_db_cert_find first). 0 or -errno.
 */
int device_db_cert_set(struct storage *st, const char *user,
		       const uint8_t fp[TLS_FINGERPRINT_LEN], int64_t now);
/* Whether fp is user's current (not revoked) fingerprint. 0 yes, -ENOENT no, or -errno. */
int device_db_cert_is_current(struct storage *st, const char *user,
			      const uint8_t fp[TLS_FINGERPRINT_LEN]);
/* Revokes one fingerprint. 0, -ENOENT (not enrolled) or -errno. */
int device_db_cert_revoke(struct storage *st, const uint8_t fp[TLS_FINGERPRINT_LEN]);
/*
 * Calls fn for every enrolled device in username order, with its last
 * logout and certificate counts; stops when fn returns nonzero. 0 or -errno.
 */
int device_db_list(struct storage *st, int (*fn)(void *arg, const struct device_row *r),
		   void *arg);

/* ---- CSV enrollment (device_import.c) ---- */

/* One data row of an enrollment file, parsed and validated. */
struct device_csv_row {
	unsigned line;			/* 1-based line number in the file */
	char user[JID_PART_MAX + 1];	/* normalized localpart */
	char domain[JID_PART_MAX + 1];	/* normalized domain of the JID */
	bool has_fingerprint;		/* else: secret */
	uint8_t fingerprint[TLS_FINGERPRINT_LEN];
	char *secret;			/* malloc'd, wiped on free; NULL with a fingerprint */
	char tags[DEVICE_TAGS_MAX + 1];	/* normalized: sorted, unique, ';'-joined */
	char owner[JID_MAX];		/* normalized bare JID, "" none */
};

struct device_csv {
	struct device_csv_row *rows;
	size_t n, cap;
};

/*
 * Parses an enrollment file: RFC 4180 CSV (quotes, "" escapes, CRLF or
 * LF), columns JID, credential, tags, owner; an optional header row whose
 * first field is "jid"; blank lines and lines starting with '#' skipped.
 * The credential is a certificate fingerprint when it parses as one
 * (tls_fingerprint_parse), else a secret (password). Tags are separated
 * by ';' (or spaces), each 1..DEVICE_TAG_MAX printable bytes without
 * ',', ';' or spaces. Every JID must be a bare JID of one domain, or of
 * `domain` when it is not NULL; a JID may appear once. On error returns
 * -EINVAL with "line N: what" in why (nothing kept), or -ENOMEM.
 */
int device_csv_parse(const char *data, size_t len, const char *domain, struct device_csv *out,
		     char *why, size_t why_size);
void device_csv_free(struct device_csv *csv);

/* What an import did, for the summary line. */
struct device_import_stats {
	unsigned created, updated, unchanged;
};

/*
 * Applies a parsed file in one transaction: creates missing accounts
 * (a fingerprint-only device gets an unusable random password), sets
 * secrets that differ, enrolls fingerprints, stores tags and owner, and
 * makes a local owner a contact of the device both ways (roster items
 * with subscription "both"; an owner replaced by the file loses them).
 * Idempotent: a second run changes nothing and counts every row as
 * unchanged. Any failing row rolls everything back: -EINVAL with "line
 * N: what" in why (a revoked or foreign fingerprint, a local owner that
 * is not an account), or -errno. iterations: PBKDF2 count for new
 * secrets (0: SCRAM_ITERATIONS).
 */
int device_import(struct storage *st, const struct device_csv *csv, uint32_t iterations,
		  struct device_import_stats *stats, char *why, size_t why_size);

/* Normalizes a tag list as device_csv_parse() does. 0 or -EINVAL (why set). */
int device_tags_normalize(const char *in, size_t len, char *out, size_t out_size,
			  char *why, size_t why_size);

/*
 * stanzactl device import|list|revoke (ctl_device.c): argv[0] is the
 * subcommand. socket_path: the daemon's control socket (NULL: the one in
 * state_dir, "off": none). Returns the exit status (0, 1, 2 usage).
 */
int ctl_device_main(const char *storage, const char *state_dir, const char *socket_path,
		    bool json, int argc, char **argv);

#endif
