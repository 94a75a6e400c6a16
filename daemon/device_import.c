/* SPDX-License-Identifier: MIT */
/*
 * Bulk enrollment of device accounts from a CSV file (`stanzactl device
 * import`, see device.h): the parser, which validates the whole file
 * before anything is written, and the import, which applies it in one
 * transaction so that a failing row leaves the store as it was.
 *
 * The CSV reader follows RFC 4180 (quoted fields, "" inside quotes,
 * fields spanning lines, LF or CRLF) through a bounded cursor; it knows
 * the line each record starts on, for the error messages.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "device.h"
#include "fast.h"
#include "iot_store.h"
#include "roster.h"
#include "scram.h"
#include "subscription.h"

#define CSV_FIELDS_MAX		4	/* JID, credential, tags, owner */
#define CSV_FIELD_MAX		4096	/* bytes of one field */
#define CSV_ROWS_MAX		1000000	/* rows of one file */
#define DEVICE_RANDOM_SECRET	32	/* bytes behind a fingerprint-only account's password */

/* printf into why (when given); returns -EINVAL. */
static int device_why(char *why, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int device_why(char *why, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (why && size) {
		va_start(ap, fmt);
		vsnprintf(why, size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* ---- Tags ---- */

static int device_tag_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int device_tags_normalize(const char *in, size_t len, char *out, size_t out_size,
			  char *why, size_t why_size)
{
	char buf[DEVICE_TAGS_MAX + 1];
	char *tags[DEVICE_TAGS_MAX / 2 + 1];
	size_t n = 0, o = 0;
	char *p, *save = NULL;

	if (len > DEVICE_TAGS_MAX)
		return device_why(why, why_size, "tags longer than %d bytes", DEVICE_TAGS_MAX);
	memcpy(buf, in, len);
	buf[len] = '\0';
	for (p = strtok_r(buf, "; \t", &save); p; p = strtok_r(NULL, "; \t", &save)) {
		size_t tl = strlen(p);

		if (tl > DEVICE_TAG_MAX)
			return device_why(why, why_size, "tag '%.20s...' longer than %d bytes", p,
					  DEVICE_TAG_MAX);
		for (size_t i = 0; i < tl; i++) {
			unsigned char ch = (unsigned char)p[i];

			if (ch < 0x20 || ch == 0x7f || ch == ',')
				return device_why(why, why_size, "tag '%s' has a control character "
						  "or a comma", p);
		}
		tags[n++] = p;
	}
	/* Sorted and unique: one spelling per set of tags, so re-imports compare equal. */
	qsort(tags, n, sizeof(tags[0]), device_tag_cmp);
	for (size_t i = 0; i < n; i++) {
		size_t tl = strlen(tags[i]);

		if (i > 0 && strcmp(tags[i], tags[i - 1]) == 0)
			continue;
		if (o + tl + 2 > out_size)
			return device_why(why, why_size, "tags too long");
		if (o)
			out[o++] = ';';
		memcpy(out + o, tags[i], tl);
		o += tl;
	}
	out[o] = '\0';
	return 0;
}

/* ---- CSV records ---- */

struct csv_cursor {
	const char *p, *end;
	unsigned line;			/* of p */
};

struct csv_field {
	char text[CSV_FIELD_MAX + 1];
	bool quoted;
};

/*
 * Reads one record into fields (at most CSV_FIELDS_MAX). Returns the
 * field count, 0 at the end of the input, or -EINVAL (why set).
 */
static int csv_record(struct csv_cursor *cur, struct csv_field *fields, char *why,
		      size_t why_size)
{
	int nf = 0;

	if (cur->p >= cur->end)
		return 0;
	for (;;) {
		struct csv_field *f;
		size_t n = 0;

		if (nf == CSV_FIELDS_MAX)
			return device_why(why, why_size, "more than %d columns (JID, secret or "
					  "fingerprint, tags, owner)", CSV_FIELDS_MAX);
		f = &fields[nf++];
		f->quoted = cur->p < cur->end && *cur->p == '"';
		if (f->quoted) {
			cur->p++;
			for (;;) {
				if (cur->p >= cur->end)
					return device_why(why, why_size, "unterminated quoted field");
				if (*cur->p == '"') {
					if (cur->p + 1 < cur->end && cur->p[1] == '"') {
						cur->p++;	/* "" is one quote */
					} else {
						cur->p++;
						break;
					}
				}
				if (*cur->p == '\n')
					cur->line++;
				if (n == CSV_FIELD_MAX)
					return device_why(why, why_size, "field longer than %d bytes",
							  CSV_FIELD_MAX);
				f->text[n++] = *cur->p++;
			}
			if (cur->p < cur->end && *cur->p != ',' && *cur->p != '\n' && *cur->p != '\r')
				return device_why(why, why_size, "text after a closing quote");
		} else {
			while (cur->p < cur->end && *cur->p != ',' && *cur->p != '\n' &&
			       *cur->p != '\r') {
				if (*cur->p == '"')
					return device_why(why, why_size, "a quote inside an unquoted field");
				if (n == CSV_FIELD_MAX)
					return device_why(why, why_size, "field longer than %d bytes",
							  CSV_FIELD_MAX);
				f->text[n++] = *cur->p++;
			}
		}
		f->text[n] = '\0';
		if (memchr(f->text, '\0', n))
			return device_why(why, why_size, "a NUL byte in a field");
		if (cur->p < cur->end && *cur->p == ',') {
			cur->p++;
			continue;
		}
		if (cur->p < cur->end && *cur->p == '\r')
			cur->p++;
		if (cur->p < cur->end && *cur->p == '\n') {
			cur->p++;
			cur->line++;
		} else if (cur->p < cur->end) {
			return device_why(why, why_size, "a carriage return inside a field");
		}
		return nf;
	}
}

/* Trims ASCII whitespace around an unquoted field, in place. */
static char *csv_trim(struct csv_field *f)
{
	char *s = f->text, *e;

	if (f->quoted)
		return s;
	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

/* ---- Rows ---- */

static void device_row_wipe(struct device_csv_row *r)
{
	if (r->secret) {
		OPENSSL_cleanse(r->secret, strlen(r->secret));
		free(r->secret);
		r->secret = NULL;
	}
}

void device_csv_free(struct device_csv *csv)
{
	for (size_t i = 0; i < csv->n; i++)
		device_row_wipe(&csv->rows[i]);
	free(csv->rows);
	memset(csv, 0, sizeof(*csv));
}

/* A bare JID field into local and domain parts. 0 or -EINVAL. */
static int device_bare_jid(struct jid *j, const char *text, char *local, char *domain)
{
	if (jid_parse(j, text, strlen(text)) < 0 || !jid_has_local(j) || jid_has_resource(j))
		return -EINVAL;
	memcpy(local, j->buf, j->local_len);
	local[j->local_len] = '\0';
	memcpy(domain, j->buf + j->domain_off, j->domain_len);
	domain[j->domain_len] = '\0';
	return 0;
}

/* Validates one data record into r. 0 or -EINVAL/-ENOMEM (why set, without the line). */
static int device_row_parse(struct device_csv_row *r, struct csv_field *f, int nf,
			    const char *domain, struct jid *j, char *why, size_t ws)
{
	char okdom[JID_PART_MAX + 1], oklocal[JID_PART_MAX + 1], prep[SCRAM_PASSWORD_MAX + 1];
	const char *jid = csv_trim(&f[0]), *cred, *tags, *owner;
	int ret;

	if (nf < 2)
		return device_why(why, ws, "expected JID,secret-or-fingerprint[,tags[,owner]]");
	cred = f[1].quoted ? f[1].text : csv_trim(&f[1]);
	tags = nf > 2 ? csv_trim(&f[2]) : "";
	owner = nf > 3 ? csv_trim(&f[3]) : "";
	if (device_bare_jid(j, jid, r->user, r->domain) < 0)
		return device_why(why, ws, "'%.64s' is not a bare JID (user@domain)", jid);
	if (domain && strcmp(domain, r->domain) != 0)
		return device_why(why, ws, "'%.64s' is not at %s", jid, domain);
	if (!cred[0])
		return device_why(why, ws, "no secret or certificate fingerprint");
	if (tls_fingerprint_parse(cred, r->fingerprint) == 0) {
		r->has_fingerprint = true;
	} else {
		if (strlen(cred) > SCRAM_PASSWORD_MAX ||
		    scram_saslprep(cred, prep, sizeof(prep)) < 0) {
			OPENSSL_cleanse(prep, sizeof(prep));
			return device_why(why, ws, "the secret is not a usable password "
					  "(SASLprep refuses it, or it is longer than %d bytes)",
					  SCRAM_PASSWORD_MAX);
		}
		OPENSSL_cleanse(prep, sizeof(prep));
		r->secret = strdup(cred);
		if (!r->secret)
			return -ENOMEM;
	}
	ret = device_tags_normalize(tags, strlen(tags), r->tags, sizeof(r->tags), why, ws);
	if (ret < 0)
		return ret;
	if (owner[0]) {
		if (device_bare_jid(j, owner, oklocal, okdom) < 0)
			return device_why(why, ws, "owner '%.64s' is not a bare JID", owner);
		snprintf(r->owner, sizeof(r->owner), "%s", j->buf);
		if (strcmp(oklocal, r->user) == 0 && strcmp(okdom, r->domain) == 0)
			return device_why(why, ws, "a device cannot own itself");
	}
	return 0;
}

/* Grows the row array by one. NULL with -ENOMEM semantics. */
static struct device_csv_row *device_csv_push(struct device_csv *csv)
{
	if (csv->n == csv->cap) {
		size_t cap = csv->cap ? csv->cap * 2 : 64;
		struct device_csv_row *rows = realloc(csv->rows, cap * sizeof(*rows));

		if (!rows)
			return NULL;
		csv->rows = rows;
		csv->cap = cap;
	}
	memset(&csv->rows[csv->n], 0, sizeof(csv->rows[0]));
	return &csv->rows[csv->n++];
}

/* Rejects a JID or fingerprint that an earlier row already has. */
static int device_csv_dupes(const struct device_csv *csv, const struct device_csv_row *r,
			    char *why, size_t ws)
{
	for (size_t i = 0; i + 1 < csv->n; i++) {
		const struct device_csv_row *o = &csv->rows[i];

		if (strcmp(o->user, r->user) == 0)
			return device_why(why, ws, "%s@%s is already on line %u", r->user, r->domain,
					  o->line);
		if (r->has_fingerprint && o->has_fingerprint &&
		    memcmp(o->fingerprint, r->fingerprint, TLS_FINGERPRINT_LEN) == 0)
			return device_why(why, ws, "the fingerprint is already on line %u", o->line);
	}
	return 0;
}

int device_csv_parse(const char *data, size_t len, const char *domain, struct device_csv *out,
		     char *why, size_t why_size)
{
	struct csv_cursor cur = { data, data + len, 1 };
	struct csv_field *fields = malloc(CSV_FIELDS_MAX * sizeof(*fields));
	char msg[512], first_domain[JID_PART_MAX + 1] = "";
	struct jid *j = malloc(sizeof(*j));
	bool header_possible = true;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (!fields || !j) {
		ret = -ENOMEM;
		goto out;
	}
	/* A UTF-8 byte order mark, as spreadsheets write. */
	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		cur.p += 3;
	while (cur.p < cur.end) {
		unsigned line = cur.line;
		struct device_csv_row *r;
		int nf;

		/* Blank and comment lines. */
		if (*cur.p == '\n' || *cur.p == '#' || (*cur.p == '\r' && cur.p + 1 < cur.end &&
							cur.p[1] == '\n')) {
			const char *nl = memchr(cur.p, '\n', (size_t)(cur.end - cur.p));

			cur.p = nl ? nl + 1 : cur.end;
			cur.line++;
			continue;
		}
		nf = csv_record(&cur, fields, msg, sizeof(msg));
		if (nf < 0) {
			ret = device_why(why, why_size, "line %u: %s", line, msg);
			goto out;
		}
		if (nf == 1 && !csv_trim(&fields[0])[0])
			continue;	/* whitespace only */
		if (header_possible && strcasecmp(csv_trim(&fields[0]), "jid") == 0) {
			header_possible = false;
			continue;
		}
		header_possible = false;
		if (out->n >= CSV_ROWS_MAX) {
			ret = device_why(why, why_size, "line %u: more than %d rows", line, CSV_ROWS_MAX);
			goto out;
		}
		r = device_csv_push(out);
		if (!r) {
			ret = -ENOMEM;
			goto out;
		}
		r->line = line;
		ret = device_row_parse(r, fields, nf, domain ? domain : first_domain[0] ?
				       first_domain : NULL, j, msg, sizeof(msg));
		if (ret == 0)
			ret = device_csv_dupes(out, r, msg, sizeof(msg));
		if (ret < 0) {
			if (ret == -EINVAL)
				device_why(why, why_size, "line %u: %s", line, msg);
			goto out;
		}
		if (!first_domain[0])
			snprintf(first_domain, sizeof(first_domain), "%s", r->domain);
	}
	if (out->n == 0)
		ret = device_why(why, why_size, "no device rows");
out:
	if (ret < 0)
		device_csv_free(out);
	/* Fields held secrets. */
	if (fields)
		OPENSSL_cleanse(fields, CSV_FIELDS_MAX * sizeof(*fields));
	free(fields);
	free(j);
	return ret;
}

/* ---- Import ---- */

/* A password nobody knows, for an account that logs in by certificate only. */
static int device_random_creds(uint32_t iterations, struct scram_creds *c)
{
	unsigned char r[DEVICE_RANDOM_SECRET];
	char pw[2 * DEVICE_RANDOM_SECRET + 1];
	int ret;

	if (RAND_bytes(r, sizeof(r)) != 1)
		return -EIO;
	for (size_t i = 0; i < sizeof(r); i++)
		snprintf(pw + 2 * i, 3, "%02x", r[i]);
	ret = scram_creds_from_password(pw, iterations, c);
	OPENSSL_cleanse(r, sizeof(r));
	OPENSSL_cleanse(pw, sizeof(pw));
	return ret;
}

/*
 * The account: created (1), password changed (2), as it was (0), or
 * -errno (why set). An account that exists but was never enrolled
 * (enrolled false) is refused: adopting it would hand whoever made it (in
 * band registration before the import, or a person's account named by a
 * wrong row) the owner's friendship and provisioning, and a certificate
 * row would add a way in without ending the old password.
 */
static int device_apply_account(struct storage *st, const struct device_csv_row *r,
				uint32_t iterations, bool enrolled, char *why, size_t ws)
{
	struct scram_creds creds;
	int ret = storage_account_get(st, r->user, &creds);

	if (ret == 0 && !enrolled) {
		scram_creds_wipe(&creds);
		return device_why(why, ws, "%s@%s is an account that was not enrolled as a device "
				  "(delete it first, or choose another JID)", r->user, r->domain);
	}
	if (ret == -ENOENT) {
		ret = r->secret ? scram_creds_from_password(r->secret, iterations, &creds)
				: device_random_creds(iterations, &creds);
		if (ret == 0)
			ret = storage_account_create(st, r->user, &creds);
		scram_creds_wipe(&creds);
		return ret < 0 ? ret : 1;
	}
	if (ret < 0)
		return ret;
	/* Same secret: nothing to write (PBKDF2 against the stored salt decides). */
	if (!r->secret || scram_verify_password(&creds, r->secret)) {
		scram_creds_wipe(&creds);
		return 0;
	}
	ret = scram_creds_from_password(r->secret, iterations, &creds);
	if (ret == 0)
		ret = storage_account_set_creds(st, r->user, &creds);
	scram_creds_wipe(&creds);
	return ret < 0 ? ret : 2;
}

/* The certificate: 1 when enrolled now, 0 when it was, or -errno (why set). */
static int device_apply_cert(struct storage *st, const struct device_csv_row *r, int64_t now,
			     char *why, size_t ws)
{
	char owner[STORAGE_USER_MAX + 1];
	bool revoked;
	int ret;

	if (!r->has_fingerprint)
		return 0;
	ret = device_db_cert_find(st, r->fingerprint, owner, sizeof(owner), &revoked);
	if (ret == 0 && revoked)
		return device_why(why, ws, "the certificate fingerprint is revoked "
				  "(enroll a new certificate)");
	if (ret == 0 && strcmp(owner, r->user) != 0)
		return device_why(why, ws, "the certificate fingerprint is enrolled for %s", owner);
	if (ret < 0 && ret != -ENOENT)
		return ret;
	if (ret == 0)
		return 0;
	ret = device_db_cert_set(st, r->user, r->fingerprint, now);
	return ret < 0 ? ret : 1;
}

/* Sets user's roster item for `jid` to subscription both unless it is. 1 changed, 0, -errno. */
static int device_roster_both(struct storage *st, const char *user, const char *jid)
{
	uint8_t state;
	bool approved, exists;
	int ret = roster_db_state(st, user, jid, &state, &approved, &exists);

	if (ret < 0)
		return ret;
	if (exists && (state & (SUB_TO | SUB_FROM)) == (SUB_TO | SUB_FROM))
		return 0;
	ret = roster_db_set_state(st, user, jid, SUB_TO | SUB_FROM, approved);
	return ret < 0 ? ret : 1;
}

/* Ends the subscriptions of user's roster item for `jid`, if any. 1 changed, 0, -errno. */
static int device_roster_none(struct storage *st, const char *user, const char *jid)
{
	uint8_t state;
	bool approved, exists;
	int ret = roster_db_state(st, user, jid, &state, &approved, &exists);

	if (ret < 0)
		return ret;
	if (!exists || !(state & (SUB_TO | SUB_FROM)))
		return 0;
	ret = roster_db_set_state(st, user, jid, SUB_NONE, false);
	return ret < 0 ? ret : 1;
}

/*
 * The owner relation both ways (what XEP-0347 makes of a claimed thing):
 * `owner` (bare JID or "") replaces `old`. A local owner must be an
 * account. 1 changed, 0, or -errno (why set).
 */
static int device_apply_owner(struct storage *st, const struct device_csv_row *r,
			      const char *old, char *why, size_t ws)
{
	char device[JID_MAX], olocal[JID_PART_MAX + 1], odom[JID_PART_MAX + 1];
	struct jid *j = malloc(sizeof(*j));
	int changed = 0, ret = 0;

	if (!j)
		return -ENOMEM;
	snprintf(device, sizeof(device), "%s@%s", r->user, r->domain);
	if (old[0] && strcmp(old, r->owner) != 0) {
		ret = device_roster_none(st, r->user, old);
		changed |= ret > 0;
		if (ret >= 0 && device_bare_jid(j, old, olocal, odom) == 0 &&
		    strcmp(odom, r->domain) == 0 && roster_db_account_exists(st, olocal) == 0) {
			ret = device_roster_none(st, olocal, device);
			changed |= ret > 0;
		}
		if (ret < 0)
			goto out;
	}
	if (!r->owner[0])
		goto out;
	if (device_bare_jid(j, r->owner, olocal, odom) < 0) {
		ret = device_why(why, ws, "owner '%s' is not a bare JID", r->owner);
		goto out;
	}
	if (strcmp(odom, r->domain) == 0) {
		ret = roster_db_account_exists(st, olocal);
		if (ret == -ENOENT) {
			ret = device_why(why, ws, "owner %s is not an account of this server",
					 r->owner);
			goto out;
		}
		if (ret == 0)
			ret = device_roster_both(st, olocal, device);
		if (ret < 0)
			goto out;
		changed |= ret > 0;
	}
	ret = device_roster_both(st, r->user, r->owner);
	changed |= ret > 0;
out:
	free(j);
	return ret < 0 ? ret : changed;
}

/*
 * The owner changed or went: the provisioning rules (XEP-0324) the old
 * owner set for the device go, as with a new claim in the registry, so
 * that the new owner does not inherit whom the old one let in. A device
 * claimed in the registry keeps them: that claim, not the enrollment,
 * names its owner (iot_db_thing_load). 0 or -errno.
 */
static int device_drop_rules(struct storage *st, const char *jid)
{
	struct iot_thing_key k = { .jid = jid, .node_id = "", .source_id = "", .cache_type = "" };
	struct iot_thing_info *t = malloc(sizeof(*t));
	int ret;

	if (!t)
		return -ENOMEM;
	ret = iot_db_thing_get(st, &k, t);
	if (ret == -ENOENT || (ret == 0 && !t->owner[0]))
		ret = iot_db_rules_delete(st, jid, NULL);
	free(t);
	return ret;
}

/* One row: 0 unchanged, 1 created, 2 updated, or -errno (why set). */
static int device_apply_row(struct storage *st, const struct device_csv_row *r,
			    uint32_t iterations, int64_t now, char *why, size_t ws)
{
	char jid[JID_MAX], tags[DEVICE_TAGS_MAX + 1], owner[JID_MAX], old_jid[JID_MAX];
	int created, changed = 0, ret, found;

	found = device_db_get(st, r->user, old_jid, sizeof(old_jid), tags, sizeof(tags), owner,
			      sizeof(owner));
	if (found == -ENOENT)
		owner[0] = '\0';
	else if (found < 0)
		return found;
	created = device_apply_account(st, r, iterations, found == 0, why, ws);
	if (created < 0)
		return created;
	changed |= created == 2;
	ret = device_apply_cert(st, r, now, why, ws);
	if (ret < 0)
		return ret;
	changed |= ret;
	/*
	 * New credentials for a device that had some (a lost or compromised
	 * one is re-enrolled): FAST tokens (XEP-0484) got with the old ones
	 * must not outlive them.
	 */
	if (created == 2 || (ret == 1 && found == 0)) {
		ret = fast_db_delete(st, r->user, NULL, -1);
		if (ret < 0)
			return ret;
	}
	snprintf(jid, sizeof(jid), "%s@%s", r->user, r->domain);
	if (found == -ENOENT || strcmp(tags, r->tags) != 0 || strcmp(owner, r->owner) != 0 ||
	    strcmp(old_jid, jid) != 0) {
		ret = device_db_put(st, r->user, jid, r->tags, r->owner, now);
		if (ret < 0)
			return ret;
		changed = 1;
	}
	ret = device_apply_owner(st, r, owner, why, ws);
	if (ret < 0)
		return ret;
	changed |= ret;
	if (owner[0] && strcmp(owner, r->owner) != 0) {
		ret = device_drop_rules(st, jid);
		if (ret < 0)
			return ret;
	}
	return created == 1 ? 1 : changed ? 2 : 0;
}

int device_import(struct storage *st, const struct device_csv *csv, uint32_t iterations,
		  struct device_import_stats *stats, char *why, size_t why_size)
{
	int64_t now = (int64_t)time(NULL);
	char msg[512];
	int ret;

	memset(stats, 0, sizeof(*stats));
	ret = storage_begin(st);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < csv->n; i++) {
		const struct device_csv_row *r = &csv->rows[i];

		msg[0] = '\0';
		ret = device_apply_row(st, r, iterations, now, msg, sizeof(msg));
		if (ret < 0) {
			storage_rollback(st);
			memset(stats, 0, sizeof(*stats));
			if (ret == -EINVAL && msg[0])
				device_why(why, why_size, "line %u: %s", r->line, msg);
			else
				device_why(why, why_size, "line %u: %s", r->line, strerror(-ret));
			return ret;
		}
		if (ret == 1)
			stats->created++;
		else if (ret == 2)
			stats->updated++;
		else
			stats->unchanged++;
	}
	ret = storage_commit(st);
	if (ret < 0) {
		storage_rollback(st);
		memset(stats, 0, sizeof(*stats));
		device_why(why, why_size, "cannot commit: %s", strerror(-ret));
	}
	return ret;
}
