/* SPDX-License-Identifier: MIT */
/*
 * The rules of XEP-0045 that need no room: names of roles and
 * affiliations, who may do what (sections 5.1 and 5.2, and the refusals
 * sections 7 to 10 name), the choice of discussion history on entering,
 * and XEP-0082 times. Pure functions, unit-tested (tests/unit/test_muc.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "muc.h"

static const char *const role_names[] = {
	[MUC_ROLE_NONE] = "none",
	[MUC_ROLE_VISITOR] = "visitor",
	[MUC_ROLE_PARTICIPANT] = "participant",
	[MUC_ROLE_MODERATOR] = "moderator",
};

static const char *const aff_names[] = {
	[MUC_AFF_OUTCAST] = "outcast",
	[MUC_AFF_NONE] = "none",
	[MUC_AFF_MEMBER] = "member",
	[MUC_AFF_ADMIN] = "admin",
	[MUC_AFF_OWNER] = "owner",
};

/* The names muc#roomconfig_allowpm uses (XEP-0045 15.5.3). */
static const char *const pm_names[] = {
	[MUC_PM_ANYONE] = "anyone",
	[MUC_PM_PARTICIPANTS] = "participants",
	[MUC_PM_MODERATORS] = "moderators",
	[MUC_PM_NONE] = "none",
};

#define NAMES(a) (sizeof(a) / sizeof((a)[0]))

static int name_parse(const char *const *names, size_t n, const char *s)
{
	if (!s)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

const char *muc_role_name(enum muc_role r)
{
	return (size_t)r < NAMES(role_names) ? role_names[r] : "none";
}

const char *muc_affiliation_name(enum muc_affiliation a)
{
	return (size_t)a < NAMES(aff_names) ? aff_names[a] : "none";
}

const char *muc_allow_pm_name(enum muc_allow_pm p)
{
	return (size_t)p < NAMES(pm_names) ? pm_names[p] : "anyone";
}

int muc_role_parse(const char *s)
{
	return name_parse(role_names, NAMES(role_names), s);
}

int muc_affiliation_parse(const char *s)
{
	return name_parse(aff_names, NAMES(aff_names), s);
}

int muc_allow_pm_parse(const char *s)
{
	return name_parse(pm_names, NAMES(pm_names), s);
}

enum muc_role muc_default_role(enum muc_affiliation aff, bool moderated)
{
	switch (aff) {
	case MUC_AFF_OWNER:
	case MUC_AFF_ADMIN:
		return MUC_ROLE_MODERATOR;
	case MUC_AFF_MEMBER:
		return MUC_ROLE_PARTICIPANT;
	case MUC_AFF_NONE:
		return moderated ? MUC_ROLE_VISITOR : MUC_ROLE_PARTICIPANT;
	case MUC_AFF_OUTCAST:
		break;
	}
	return MUC_ROLE_NONE;
}

const char *muc_check_enter(enum muc_affiliation aff, bool members_only)
{
	if (aff == MUC_AFF_OUTCAST)
		return "forbidden";		/* 7.2.8 */
	if (members_only && aff < MUC_AFF_MEMBER)
		return "registration-required";	/* 7.2.7 */
	return NULL;
}

const char *muc_check_role_change(enum muc_affiliation actor_aff, enum muc_role actor_role,
				  enum muc_affiliation target_aff, enum muc_role target_role,
				  enum muc_role new_role, bool self)
{
	/* Section 8: role changes are the moderators' business. */
	if (actor_role != MUC_ROLE_MODERATOR)
		return "forbidden";
	if (new_role == target_role)
		return NULL;
	/* 8.2: the service MAY refuse a self-kick with conflict; it does. */
	if (self && new_role == MUC_ROLE_NONE)
		return "conflict";
	/*
	 * 8.4 and 9.7: nobody revokes the voice or the moderation of an
	 * admin or owner (their role follows from their affiliation); only
	 * a higher affiliation may kick one (8.2).
	 */
	if (target_aff >= MUC_AFF_ADMIN)
		return new_role == MUC_ROLE_NONE && actor_aff > target_aff ? NULL : "not-allowed";
	/* 9.6, 9.7: moderation itself is granted and revoked by admins and owners. */
	if ((target_role == MUC_ROLE_MODERATOR || new_role == MUC_ROLE_MODERATOR) &&
	    actor_aff < MUC_AFF_ADMIN)
		return "not-allowed";
	/*
	 * 8.2, 8.4: a moderator cannot kick or silence a higher affiliation
	 * (a member moderator may act on the unaffiliated and members, an
	 * unaffiliated moderator on the unaffiliated).
	 */
	if (target_aff > actor_aff)
		return "not-allowed";
	return NULL;
}

const char *muc_check_affiliation_change(enum muc_affiliation actor_aff,
					 enum muc_affiliation target_aff,
					 enum muc_affiliation new_aff, bool self, unsigned owners)
{
	/* Sections 9 and 10: affiliations are the admins' and owners' business. */
	if (actor_aff < MUC_AFF_ADMIN)
		return "forbidden";
	if (new_aff == target_aff)
		return NULL;
	if (self) {
		/* 9.1: admins and owners cannot ban themselves. */
		if (new_aff == MUC_AFF_OUTCAST)
			return "conflict";
		/* 10.5: a room always keeps an owner. */
		if (target_aff == MUC_AFF_OWNER && owners <= 1)
			return "conflict";
		/* Stepping down is always allowed. */
		if (new_aff < target_aff)
			return NULL;
	}
	if (actor_aff == MUC_AFF_OWNER)
		return NULL;
	/* 9.1, 10.3-10.8: the admin and owner lists are the owners'. */
	if (target_aff >= MUC_AFF_ADMIN || new_aff >= MUC_AFF_ADMIN)
		return "not-allowed";
	return NULL;
}

const char *muc_check_groupchat(enum muc_role role)
{
	if (role == MUC_ROLE_NONE)
		return "not-acceptable";	/* 7.4: not an occupant */
	if (role == MUC_ROLE_VISITOR)
		return "forbidden";		/* 7.4: no voice */
	return NULL;
}

const char *muc_check_subject(enum muc_role role, bool occupants_may_change)
{
	if (role == MUC_ROLE_NONE)
		return "not-acceptable";
	if (role == MUC_ROLE_MODERATOR)
		return NULL;
	/* 8.1: configurable for participants; visitors never have voice. */
	return role == MUC_ROLE_PARTICIPANT && occupants_may_change ? NULL : "forbidden";
}

const char *muc_check_pm(enum muc_role role, enum muc_allow_pm allow)
{
	if (role == MUC_ROLE_NONE)
		return "not-acceptable";	/* 7.5 */
	switch (allow) {
	case MUC_PM_ANYONE:
		return NULL;
	case MUC_PM_PARTICIPANTS:
		return role >= MUC_ROLE_PARTICIPANT ? NULL : "forbidden";
	case MUC_PM_MODERATORS:
		return role == MUC_ROLE_MODERATOR ? NULL : "forbidden";
	case MUC_PM_NONE:
		break;
	}
	return "forbidden";
}

const char *muc_check_invite(enum muc_role role, enum muc_affiliation aff, bool members_only,
			     bool allow_invites)
{
	/* Admins and owners may invite even from outside the room. */
	if (aff >= MUC_AFF_ADMIN)
		return NULL;
	if (role == MUC_ROLE_NONE)
		return "not-acceptable";
	/* 9.4: in a members-only room an invitation grants membership. */
	if (members_only && !allow_invites)
		return "forbidden";
	return NULL;
}

const char *muc_check_role_list(enum muc_role actor_role)
{
	return actor_role == MUC_ROLE_MODERATOR ? NULL : "forbidden";
}

const char *muc_check_affiliation_list(enum muc_affiliation actor_aff,
				       enum muc_affiliation list, bool non_anonymous)
{
	if (actor_aff >= MUC_AFF_ADMIN)
		return NULL;
	/* 9.5: the member list lists real JIDs: only where everyone sees them. */
	if (actor_aff == MUC_AFF_MEMBER && list == MUC_AFF_MEMBER && non_anonymous)
		return NULL;
	return "forbidden";
}

bool muc_sees_jid(enum muc_role viewer, bool non_anonymous)
{
	return non_anonymous || viewer == MUC_ROLE_MODERATOR;
}

size_t muc_history_select(const int64_t *at, const size_t *len, size_t n, long max_stanzas,
			  long max_chars, int64_t since)
{
	size_t count = 0, chars = 0;

	/* Newest first: the limits keep the most recent stanzas. */
	while (count < n) {
		size_t i = n - 1 - count;

		if (max_stanzas >= 0 && count >= (size_t)max_stanzas)
			break;
		if (at[i] < since)
			break;
		if (max_chars >= 0 && chars + len[i] > (size_t)max_chars)
			break;
		chars += len[i];
		count++;
	}
	return count;
}

/* Reads exactly n digits. */
static int digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -EINVAL;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

int muc_parse_datetime(const char *s, int64_t *out)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	const char *p = s;
	struct tm tm;
	time_t t;

	if (!s || digits(&p, 4, &y) < 0 || *p++ != '-' || digits(&p, 2, &mo) < 0 ||
	    *p++ != '-' || digits(&p, 2, &d) < 0 || *p++ != 'T' || digits(&p, 2, &h) < 0 ||
	    *p++ != ':' || digits(&p, 2, &mi) < 0 || *p++ != ':' || digits(&p, 2, &sec) < 0)
		return -EINVAL;
	/* XEP-0082: an optional fraction of a second, then the zone. */
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'Z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '+' ? 1 : -1;
		if (digits(&p, 2, &oh) < 0 || *p++ != ':' || digits(&p, 2, &om) < 0 || oh > 23 ||
		    om > 59)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	if (*p || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
	    sec > 60)
		return -EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	/* timegm normalizes Feb 30 into March: refuse what moved. */
	if (sec < 60 && tm.tm_mday != d)
		return -EINVAL;
	*out = (int64_t)t - sign * (int64_t)(oh * 3600 + om * 60);
	return 0;
}

bool muc_nick_ok(const char *nick, size_t len)
{
	/* XEP-0045 15.1: no empty or invisible nicknames. */
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)nick[i];

		if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
			return true;
	}
	return false;
}
