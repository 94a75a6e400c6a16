/* SPDX-License-Identifier: MIT */
/*
 * XEP-0045 rules that need no room (muc_perm.c): the role and affiliation
 * permission tables, cell by cell where the XEP names a refusal, the
 * choice of discussion history, XEP-0082 times; and the room store
 * (storage_muc.c) on a real database: persistent rooms and their
 * affiliations round trip, the archive keeps order, pages, filters and
 * prunes to its limit.
 */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "muc.h"
#include "storage.h"

#define OUTCAST MUC_AFF_OUTCAST
#define NONE MUC_AFF_NONE
#define MEMBER MUC_AFF_MEMBER
#define ADMIN MUC_AFF_ADMIN
#define OWNER MUC_AFF_OWNER
#define R_NONE MUC_ROLE_NONE
#define VISITOR MUC_ROLE_VISITOR
#define PARTICIPANT MUC_ROLE_PARTICIPANT
#define MODERATOR MUC_ROLE_MODERATOR

/* NULL-safe comparison of a check's answer with the expected condition. */
static void assert_cond(const char *got, const char *want)
{
	if (!want)
		assert_null(got);
	else
		assert_string_equal(got ? got : "(allowed)", want);
}

/* ---- Names ---- */

static void test_names_round_trip(void **state)
{
	for (int r = MUC_ROLE_NONE; r <= MUC_ROLE_MODERATOR; r++)
		assert_int_equal(muc_role_parse(muc_role_name(r)), r);
	for (int a = MUC_AFF_OUTCAST; a <= MUC_AFF_OWNER; a++)
		assert_int_equal(muc_affiliation_parse(muc_affiliation_name(a)), a);
	for (int p = MUC_PM_ANYONE; p <= MUC_PM_NONE; p++)
		assert_int_equal(muc_allow_pm_parse(muc_allow_pm_name(p)), p);
	assert_string_equal(muc_role_name(MUC_ROLE_PARTICIPANT), "participant");
	assert_string_equal(muc_affiliation_name(MUC_AFF_OUTCAST), "outcast");
	/* Unknown and differently cased names are refused, never guessed. */
	assert_int_equal(muc_role_parse("Moderator"), -1);
	assert_int_equal(muc_role_parse(""), -1);
	assert_int_equal(muc_role_parse(NULL), -1);
	assert_int_equal(muc_affiliation_parse("banned"), -1);
	assert_int_equal(muc_allow_pm_parse("everyone"), -1);
}

/* ---- XEP-0045 5.1.2: initial roles ---- */

static void test_default_roles_follow_the_table(void **state)
{
	/* Moderated row, then unmoderated (open and members-only rows are the same). */
	assert_int_equal(muc_default_role(NONE, true), VISITOR);
	assert_int_equal(muc_default_role(MEMBER, true), PARTICIPANT);
	assert_int_equal(muc_default_role(ADMIN, true), MODERATOR);
	assert_int_equal(muc_default_role(OWNER, true), MODERATOR);
	assert_int_equal(muc_default_role(NONE, false), PARTICIPANT);
	assert_int_equal(muc_default_role(MEMBER, false), PARTICIPANT);
	assert_int_equal(muc_default_role(ADMIN, false), MODERATOR);
	assert_int_equal(muc_default_role(OWNER, false), MODERATOR);
	/* Outcasts have no role: they never enter. */
	assert_int_equal(muc_default_role(OUTCAST, false), R_NONE);
}

static void test_entering_by_affiliation(void **state)
{
	assert_cond(muc_check_enter(OUTCAST, false), "forbidden");
	assert_cond(muc_check_enter(OUTCAST, true), "forbidden");
	assert_cond(muc_check_enter(NONE, false), NULL);
	assert_cond(muc_check_enter(NONE, true), "registration-required");
	assert_cond(muc_check_enter(MEMBER, true), NULL);
	assert_cond(muc_check_enter(ADMIN, true), NULL);
	assert_cond(muc_check_enter(OWNER, true), NULL);
}

/* ---- Role changes (sections 8 and 9.6-9.8) ---- */

static void test_only_moderators_change_roles(void **state)
{
	/* Even an owner who is (somehow) not a moderator in the room is refused. */
	assert_cond(muc_check_role_change(OWNER, PARTICIPANT, NONE, PARTICIPANT, R_NONE, false),
		    "forbidden");
	assert_cond(muc_check_role_change(NONE, VISITOR, NONE, PARTICIPANT, VISITOR, false),
		    "forbidden");
	assert_cond(muc_check_role_change(NONE, R_NONE, NONE, PARTICIPANT, R_NONE, false),
		    "forbidden");
}

static void test_kick_rules(void **state)
{
	/* 8.2: moderators kick participants and visitors. */
	assert_cond(muc_check_role_change(NONE, MODERATOR, NONE, PARTICIPANT, R_NONE, false), NULL);
	assert_cond(muc_check_role_change(MEMBER, MODERATOR, NONE, VISITOR, R_NONE, false), NULL);
	assert_cond(muc_check_role_change(ADMIN, MODERATOR, MEMBER, PARTICIPANT, R_NONE, false),
		    NULL);
	/* ... but not a higher affiliation: member kicks admin, admin kicks owner. */
	assert_cond(muc_check_role_change(MEMBER, MODERATOR, ADMIN, MODERATOR, R_NONE, false),
		    "not-allowed");
	assert_cond(muc_check_role_change(ADMIN, MODERATOR, OWNER, MODERATOR, R_NONE, false),
		    "not-allowed");
	assert_cond(muc_check_role_change(NONE, MODERATOR, MEMBER, PARTICIPANT, R_NONE, false),
		    "not-allowed");
	/* An owner may kick an admin. */
	assert_cond(muc_check_role_change(OWNER, MODERATOR, ADMIN, MODERATOR, R_NONE, false), NULL);
	/* An admin may not kick another admin (not higher). */
	assert_cond(muc_check_role_change(ADMIN, MODERATOR, ADMIN, MODERATOR, R_NONE, false),
		    "not-allowed");
	/* Kicking oneself: conflict. */
	assert_cond(muc_check_role_change(OWNER, MODERATOR, OWNER, MODERATOR, R_NONE, true),
		    "conflict");
}

static void test_voice_rules(void **state)
{
	/* 8.3, 8.4: moderators grant and revoke voice. */
	assert_cond(muc_check_role_change(NONE, MODERATOR, NONE, VISITOR, PARTICIPANT, false),
		    NULL);
	assert_cond(muc_check_role_change(NONE, MODERATOR, NONE, PARTICIPANT, VISITOR, false),
		    NULL);
	/* Never from an admin or owner, whoever asks. */
	assert_cond(muc_check_role_change(OWNER, MODERATOR, ADMIN, MODERATOR, VISITOR, false),
		    "not-allowed");
	assert_cond(muc_check_role_change(OWNER, MODERATOR, OWNER, MODERATOR, VISITOR, false),
		    "not-allowed");
	/* Nor from a higher affiliation. */
	assert_cond(muc_check_role_change(NONE, MODERATOR, MEMBER, PARTICIPANT, VISITOR, false),
		    "not-allowed");
	/* No change at all is not a refusal. */
	assert_cond(muc_check_role_change(NONE, MODERATOR, NONE, VISITOR, VISITOR, false), NULL);
}

static void test_moderator_status_needs_admin(void **state)
{
	/* 9.6, 9.7: granting and revoking moderation is for admins and owners. */
	assert_cond(muc_check_role_change(ADMIN, MODERATOR, NONE, PARTICIPANT, MODERATOR, false),
		    NULL);
	assert_cond(muc_check_role_change(OWNER, MODERATOR, MEMBER, MODERATOR, PARTICIPANT, false),
		    NULL);
	assert_cond(muc_check_role_change(MEMBER, MODERATOR, NONE, PARTICIPANT, MODERATOR, false),
		    "not-allowed");
	assert_cond(muc_check_role_change(NONE, MODERATOR, NONE, MODERATOR, PARTICIPANT, false),
		    "not-allowed");
	/* An admin's moderation comes with the affiliation: not revocable. */
	assert_cond(muc_check_role_change(OWNER, MODERATOR, ADMIN, MODERATOR, PARTICIPANT, false),
		    "not-allowed");
}

/* ---- Affiliation changes (sections 9 and 10) ---- */

static void test_affiliations_need_admin_or_owner(void **state)
{
	assert_cond(muc_check_affiliation_change(MEMBER, NONE, OUTCAST, false, 1), "forbidden");
	assert_cond(muc_check_affiliation_change(NONE, NONE, MEMBER, false, 1), "forbidden");
	/* Admins manage members and outcasts. */
	assert_cond(muc_check_affiliation_change(ADMIN, NONE, OUTCAST, false, 1), NULL);
	assert_cond(muc_check_affiliation_change(ADMIN, MEMBER, OUTCAST, false, 1), NULL);
	assert_cond(muc_check_affiliation_change(ADMIN, OUTCAST, NONE, false, 1), NULL);
	assert_cond(muc_check_affiliation_change(ADMIN, NONE, MEMBER, false, 1), NULL);
	/* ... not admins and owners. */
	assert_cond(muc_check_affiliation_change(ADMIN, OWNER, OUTCAST, false, 1), "not-allowed");
	assert_cond(muc_check_affiliation_change(ADMIN, ADMIN, NONE, false, 1), "not-allowed");
	assert_cond(muc_check_affiliation_change(ADMIN, MEMBER, ADMIN, false, 1), "not-allowed");
	assert_cond(muc_check_affiliation_change(ADMIN, NONE, OWNER, false, 1), "not-allowed");
	/* Owners do everything. */
	assert_cond(muc_check_affiliation_change(OWNER, ADMIN, OUTCAST, false, 2), NULL);
	assert_cond(muc_check_affiliation_change(OWNER, NONE, OWNER, false, 1), NULL);
	assert_cond(muc_check_affiliation_change(OWNER, OWNER, MEMBER, false, 2), NULL);
}

static void test_affiliation_changes_of_oneself(void **state)
{
	/* 9.1: nobody bans himself. */
	assert_cond(muc_check_affiliation_change(ADMIN, ADMIN, OUTCAST, true, 1), "conflict");
	assert_cond(muc_check_affiliation_change(OWNER, OWNER, OUTCAST, true, 2), "conflict");
	/* 10.5: the last owner stays. */
	assert_cond(muc_check_affiliation_change(OWNER, OWNER, ADMIN, true, 1), "conflict");
	assert_cond(muc_check_affiliation_change(OWNER, OWNER, NONE, true, 1), "conflict");
	assert_cond(muc_check_affiliation_change(OWNER, OWNER, ADMIN, true, 2), NULL);
	/* An admin may step down. */
	assert_cond(muc_check_affiliation_change(ADMIN, ADMIN, MEMBER, true, 1), NULL);
	assert_cond(muc_check_affiliation_change(ADMIN, ADMIN, NONE, true, 1), NULL);
}

/* ---- Speaking, subject, private messages, invitations, lists ---- */

static void test_groupchat_by_role(void **state)
{
	assert_cond(muc_check_groupchat(R_NONE), "not-acceptable");
	assert_cond(muc_check_groupchat(VISITOR), "forbidden");
	assert_cond(muc_check_groupchat(PARTICIPANT), NULL);
	assert_cond(muc_check_groupchat(MODERATOR), NULL);
}

static void test_subject_by_role_and_config(void **state)
{
	assert_cond(muc_check_subject(MODERATOR, false), NULL);
	assert_cond(muc_check_subject(PARTICIPANT, false), "forbidden");
	assert_cond(muc_check_subject(PARTICIPANT, true), NULL);
	assert_cond(muc_check_subject(VISITOR, true), "forbidden");
	assert_cond(muc_check_subject(R_NONE, true), "not-acceptable");
}

static void test_private_messages_by_allow_pm(void **state)
{
	assert_cond(muc_check_pm(VISITOR, MUC_PM_ANYONE), NULL);
	assert_cond(muc_check_pm(VISITOR, MUC_PM_PARTICIPANTS), "forbidden");
	assert_cond(muc_check_pm(PARTICIPANT, MUC_PM_PARTICIPANTS), NULL);
	assert_cond(muc_check_pm(PARTICIPANT, MUC_PM_MODERATORS), "forbidden");
	assert_cond(muc_check_pm(MODERATOR, MUC_PM_MODERATORS), NULL);
	assert_cond(muc_check_pm(MODERATOR, MUC_PM_NONE), "forbidden");
	assert_cond(muc_check_pm(R_NONE, MUC_PM_ANYONE), "not-acceptable");
}

static void test_invitations(void **state)
{
	/* Open room: any occupant; outsiders only as admin or owner. */
	assert_cond(muc_check_invite(VISITOR, NONE, false, false), NULL);
	assert_cond(muc_check_invite(R_NONE, NONE, false, false), "not-acceptable");
	assert_cond(muc_check_invite(R_NONE, ADMIN, false, false), NULL);
	/* Members-only: admins and owners, occupants only when the room allows it. */
	assert_cond(muc_check_invite(PARTICIPANT, MEMBER, true, false), "forbidden");
	assert_cond(muc_check_invite(PARTICIPANT, MEMBER, true, true), NULL);
	assert_cond(muc_check_invite(MODERATOR, OWNER, true, false), NULL);
}

static void test_lists(void **state)
{
	assert_cond(muc_check_role_list(MODERATOR), NULL);
	assert_cond(muc_check_role_list(PARTICIPANT), "forbidden");
	assert_cond(muc_check_affiliation_list(ADMIN, OUTCAST, false), NULL);
	assert_cond(muc_check_affiliation_list(OWNER, OWNER, false), NULL);
	assert_cond(muc_check_affiliation_list(MEMBER, MEMBER, true), NULL);
	assert_cond(muc_check_affiliation_list(MEMBER, MEMBER, false), "forbidden");
	assert_cond(muc_check_affiliation_list(MEMBER, OUTCAST, true), "forbidden");
	assert_cond(muc_check_affiliation_list(NONE, MEMBER, true), "forbidden");
}

static void test_who_sees_real_jids(void **state)
{
	assert_true(muc_sees_jid(MODERATOR, false));
	assert_false(muc_sees_jid(PARTICIPANT, false));
	assert_false(muc_sees_jid(VISITOR, false));
	assert_true(muc_sees_jid(VISITOR, true));
}

/* ---- History (7.2.15) ---- */

static void test_history_limits(void **state)
{
	int64_t at[5] = { 100, 200, 300, 400, 500 };
	size_t len[5] = { 10, 20, 30, 40, 50 };

	/* No limits: everything. */
	assert_int_equal(muc_history_select(at, len, 5, -1, -1, INT64_MIN), 5);
	assert_int_equal(muc_history_select(at, len, 5, 2, -1, INT64_MIN), 2);
	assert_int_equal(muc_history_select(at, len, 5, 0, -1, INT64_MIN), 0);
	/* maxchars counts whole stanzas, newest first: 50 + 40 = 90 <= 100, + 30 > 100. */
	assert_int_equal(muc_history_select(at, len, 5, -1, 100, INT64_MIN), 2);
	assert_int_equal(muc_history_select(at, len, 5, -1, 90, INT64_MIN), 2);
	assert_int_equal(muc_history_select(at, len, 5, -1, 89, INT64_MIN), 1);
	assert_int_equal(muc_history_select(at, len, 5, -1, 0, INT64_MIN), 0);
	/* since: entries at or after it. */
	assert_int_equal(muc_history_select(at, len, 5, -1, -1, 300), 3);
	assert_int_equal(muc_history_select(at, len, 5, -1, -1, 301), 2);
	assert_int_equal(muc_history_select(at, len, 5, -1, -1, 1000), 0);
	/* The smallest of several limits wins. */
	assert_int_equal(muc_history_select(at, len, 5, 4, 1000, 200), 4);
	assert_int_equal(muc_history_select(at, len, 5, 10, 1000, 400), 2);
	assert_int_equal(muc_history_select(at, len, 0, -1, -1, INT64_MIN), 0);
}

/* ---- XEP-0082 times ---- */

static void test_datetime_parsing(void **state)
{
	int64_t t;

	assert_int_equal(muc_parse_datetime("1970-01-01T00:00:00Z", &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(muc_parse_datetime("2002-10-13T23:58:37Z", &t), 0);
	assert_int_equal(t, 1034553517);
	assert_int_equal(muc_parse_datetime("2002-10-13T23:58:37.123456Z", &t), 0);
	assert_int_equal(t, 1034553517);
	/* Offsets: 01:00 at +01:00 is midnight UTC. */
	assert_int_equal(muc_parse_datetime("1970-01-01T01:00:00+01:00", &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(muc_parse_datetime("1969-12-31T19:00:00-05:00", &t), 0);
	assert_int_equal(t, 0);
	assert_int_equal(muc_parse_datetime("2024-02-29T12:00:00Z", &t), 0);
}

static void test_datetime_garbage_refused(void **state)
{
	static const char *const bad[] = {
		"", "now", "2002-10-13", "2002-10-13T23:58:37", "2002-10-13 23:58:37Z",
		"2002-13-01T00:00:00Z", "2002-02-30T00:00:00Z", "2002-10-13T24:00:00Z",
		"2002-10-13T23:60:00Z", "2002-10-13T23:58:37.Z", "2002-10-13T23:58:37+1:00",
		"2002-10-13T23:58:37Zjunk", "02002-10-13T23:58:37Z", "2002-1a-13T23:58:37Z",
		"2023-02-29T00:00:00Z",
	};
	int64_t t = 42;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (muc_parse_datetime(bad[i], &t) != -EINVAL)
			fail_msg("accepted '%s'", bad[i]);
	}
	assert_int_equal(muc_parse_datetime(NULL, &t), -EINVAL);
}

static void test_nicknames(void **state)
{
	assert_true(muc_nick_ok("thirdwitch", 10));
	assert_true(muc_nick_ok(" a ", 3));
	assert_false(muc_nick_ok("", 0));
	assert_false(muc_nick_ok("   ", 3));
	assert_false(muc_nick_ok("\t \r\n", 4));
}

/* ---- The store ---- */

struct fixture {
	char root[64];
	char dir[96];
	struct storage *st;
};

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->root, "/tmp/test_muc.XXXXXX");
	assert_non_null(mkdtemp(f->root));
	snprintf(f->dir, sizeof(f->dir), "%s/state", f->root);
	assert_int_equal(storage_open(&f->st, f->dir), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	storage_close(f->st);
	nftw(f->root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* What a load saw, flattened to text for simple comparisons. */
struct seen {
	char rooms[512];
	char affs[512];
};

static int seen_room(void *arg, const struct muc_room_row *r)
{
	struct seen *s = arg;
	size_t n = strlen(s->rooms);

	snprintf(s->rooms + n, sizeof(s->rooms) - n, "%s|%s|%s|%s|%s|%u|%u|%s|%d%d%d%d%d%d%d;",
		 r->name, r->title ? r->title : "-", r->password ? r->password : "-",
		 r->subject ? r->subject : "-", r->subject_nick ? r->subject_nick : "-",
		 r->max_users, r->history_len, muc_allow_pm_name(r->allow_pm), r->public_room,
		 r->members_only, r->moderated, r->non_anonymous, r->change_subject,
		 r->allow_invites, r->archive);
	return 0;
}

static int seen_aff(void *arg, const char *room, const struct muc_affiliation_row *a)
{
	struct seen *s = arg;
	size_t n = strlen(s->affs);

	snprintf(s->affs + n, sizeof(s->affs) - n, "%s:%s=%s%s%s;", room, a->jid,
		 muc_affiliation_name(a->aff), a->nick ? "/" : "", a->nick ? a->nick : "");
	return 0;
}

static void test_rooms_round_trip(void **state)
{
	struct fixture *f = *state;
	struct muc_room_row r = {
		.name = "coven", .title = "A Dark Cave", .password = "cauldronburn",
		.subject = "Spells", .subject_nick = "firstwitch", .subject_at = 1000,
		.max_users = 30, .history_len = 7, .allow_pm = MUC_PM_MODERATORS,
		.public_room = false, .members_only = true, .moderated = true,
		.non_anonymous = true, .change_subject = true, .allow_invites = false,
		.archive = true,
	};
	struct muc_affiliation_row affs[] = {
		{ "crone1@shakespeare.lit", MUC_AFF_OWNER, NULL },
		{ "hag66@shakespeare.lit", MUC_AFF_MEMBER, "thirdwitch" },
		{ "evil.example", MUC_AFF_OUTCAST, NULL },
	};
	struct seen s;

	assert_int_equal(muc_db_room_put(f->st, &r, affs, 3), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(muc_db_load(f->st, seen_room, seen_aff, &s), 0);
	assert_string_equal(s.rooms, "coven|A Dark Cave|cauldronburn|Spells|firstwitch|30|7|"
			    "moderators|0111101;");
	assert_string_equal(s.affs, "coven:crone1@shakespeare.lit=owner;coven:evil.example=outcast;"
			    "coven:hag66@shakespeare.lit=member/thirdwitch;");
	/* A second write replaces the configuration and the whole list. */
	r.title = NULL;
	r.password = NULL;
	assert_int_equal(muc_db_room_put(f->st, &r, affs, 1), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(muc_db_load(f->st, seen_room, seen_aff, &s), 0);
	assert_string_equal(s.rooms, "coven|-|-|Spells|firstwitch|30|7|moderators|0111101;");
	assert_string_equal(s.affs, "coven:crone1@shakespeare.lit=owner;");
	/* Deleted: nothing comes back. */
	assert_int_equal(muc_db_room_delete(f->st, "coven", true), 0);
	memset(&s, 0, sizeof(s));
	assert_int_equal(muc_db_load(f->st, seen_room, seen_aff, &s), 0);
	assert_string_equal(s.rooms, "");
	assert_string_equal(s.affs, "");
}

static void put_msg(struct storage *st, const char *room, const char *id, const char *nick,
		    const char *jid, int64_t at, uint32_t keep)
{
	char text[128], bare[64];
	struct muc_archive_row m = {
		.at = at, .stanza_id = id, .nick = nick, .real_jid = jid, .stanza = text,
	};

	snprintf(text, sizeof(text), "<message type='groupchat'><body>%s</body></message>", id);
	m.stanza_len = strlen(text);
	snprintf(bare, sizeof(bare), "%.*s", (int)strcspn(jid, "/"), jid);
	assert_int_equal(muc_db_archive_put(st, room, &m, bare, keep), 0);
}

struct ids {
	char list[256];
	int stop_after;
	int seen;
};

static int collect(void *arg, const struct muc_archive_row *m)
{
	struct ids *ids = arg;
	size_t n = strlen(ids->list);

	snprintf(ids->list + n, sizeof(ids->list) - n, "%s%s", n ? "," : "", m->stanza_id);
	assert_non_null(strstr(m->stanza, m->stanza_id));
	return ++ids->seen == ids->stop_after;
}

static const char *query(struct storage *st, const char *room, struct muc_archive_filter *f,
			 bool back, uint32_t limit, struct ids *ids)
{
	memset(ids, 0, sizeof(*ids));
	assert_int_equal(muc_db_archive_query(st, room, f, back, limit, collect, ids), 0);
	return ids->list;
}

static void test_archive_order_filters_and_pruning(void **state)
{
	struct fixture *f = *state;
	struct muc_archive_filter all = { 0, INT64_MAX, INT64_MIN, INT64_MAX, NULL, NULL };
	struct muc_archive_filter flt;
	struct muc_archive_row m = { 0 };
	struct ids ids;
	uint64_t count;
	int64_t seq_b, seq_d;

	put_msg(f->st, "r", "a", "alice", "alice@x/1", 10, 100);
	put_msg(f->st, "r", "b", "bob", "bob@x/2", 20, 100);
	put_msg(f->st, "other", "z", "zed", "zed@x/1", 25, 100);
	put_msg(f->st, "r", "c", "alice", "alice@x/3", 30, 100);
	put_msg(f->st, "r", "d", "bob", "bob@x/2", 40, 100);
	/* An id is unique within its room. */
	m = (struct muc_archive_row){ .at = 50, .stanza_id = "d", .nick = "n", .real_jid = "n@x",
				       .stanza = "<message/>", .stanza_len = 10 };
	assert_int_equal(muc_db_archive_put(f->st, "r", &m, "n@x", 100), -EEXIST);

	assert_string_equal(query(f->st, "r", &all, false, 10, &ids), "a,b,c,d");
	assert_string_equal(query(f->st, "r", &all, true, 10, &ids), "d,c,b,a");
	assert_string_equal(query(f->st, "r", &all, false, 2, &ids), "a,b");
	assert_int_equal(muc_db_archive_count(f->st, "r", &all, &count), 0);
	assert_int_equal(count, 4);
	/* Paging bounds by sequence (RSM after/before), exclusive. */
	assert_int_equal(muc_db_archive_seq(f->st, "r", "b", &seq_b), 0);
	assert_int_equal(muc_db_archive_seq(f->st, "r", "d", &seq_d), 0);
	assert_int_equal(muc_db_archive_seq(f->st, "r", "z", &seq_d), -ENOENT);
	assert_int_equal(muc_db_archive_seq(f->st, "r", "d", &seq_d), 0);
	flt = all;
	flt.lo = seq_b;
	assert_string_equal(query(f->st, "r", &flt, false, 10, &ids), "c,d");
	flt = all;
	flt.hi = seq_d;
	assert_string_equal(query(f->st, "r", &flt, true, 2, &ids), "c,b");
	/* Time, sender and nickname filters. */
	flt = all;
	flt.start = 20;
	flt.end = 30;
	assert_string_equal(query(f->st, "r", &flt, false, 10, &ids), "b,c");
	flt = all;
	flt.with_bare = "alice@x";
	assert_string_equal(query(f->st, "r", &flt, false, 10, &ids), "a,c");
	assert_int_equal(muc_db_archive_count(f->st, "r", &flt, &count), 0);
	assert_int_equal(count, 2);
	flt = all;
	flt.with_nick = "bob";
	assert_string_equal(query(f->st, "r", &flt, false, 10, &ids), "b,d");
	/* By id. */
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(muc_db_archive_get(f->st, "r", "c", collect, &ids), 0);
	assert_string_equal(ids.list, "c");
	memset(&ids, 0, sizeof(ids));
	assert_int_equal(muc_db_archive_get(f->st, "r", "z", collect, &ids), 0);
	assert_string_equal(ids.list, "");
	/* A callback can stop the walk. */
	memset(&ids, 0, sizeof(ids));
	ids.stop_after = 1;
	assert_int_equal(muc_db_archive_query(f->st, "r", &all, false, 10, collect, &ids), 0);
	assert_string_equal(ids.list, "a");

	/* The newest `keep` stay: the oldest go first. */
	put_msg(f->st, "r", "e", "carol", "carol@x/1", 50, 3);
	assert_string_equal(query(f->st, "r", &all, false, 10, &ids), "c,d,e");
	/* Other rooms are untouched; a deleted room's archive is gone. */
	assert_string_equal(query(f->st, "other", &all, false, 10, &ids), "z");
	assert_int_equal(muc_db_archive_delete(f->st, "r"), 0);
	assert_string_equal(query(f->st, "r", &all, false, 10, &ids), "");
	assert_string_equal(query(f->st, "other", &all, false, 10, &ids), "z");
}

static void test_room_delete_keeps_archive_unless_asked(void **state)
{
	struct fixture *f = *state;
	struct muc_archive_filter all = { 0, INT64_MAX, INT64_MIN, INT64_MAX, NULL, NULL };
	struct muc_room_row r = { .name = "keep", .history_len = 5, .archive = true };
	struct ids ids;

	assert_int_equal(muc_db_room_put(f->st, &r, NULL, 0), 0);
	put_msg(f->st, "keep", "m1", "n", "n@x/r", 1, 10);
	/* No longer persistent: the row goes, the archive stays with the living room. */
	assert_int_equal(muc_db_room_delete(f->st, "keep", false), 0);
	assert_string_equal(query(f->st, "keep", &all, false, 10, &ids), "m1");
	assert_int_equal(muc_db_room_delete(f->st, "keep", true), 0);
	assert_string_equal(query(f->st, "keep", &all, false, 10, &ids), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names_round_trip),
		cmocka_unit_test(test_default_roles_follow_the_table),
		cmocka_unit_test(test_entering_by_affiliation),
		cmocka_unit_test(test_only_moderators_change_roles),
		cmocka_unit_test(test_kick_rules),
		cmocka_unit_test(test_voice_rules),
		cmocka_unit_test(test_moderator_status_needs_admin),
		cmocka_unit_test(test_affiliations_need_admin_or_owner),
		cmocka_unit_test(test_affiliation_changes_of_oneself),
		cmocka_unit_test(test_groupchat_by_role),
		cmocka_unit_test(test_subject_by_role_and_config),
		cmocka_unit_test(test_private_messages_by_allow_pm),
		cmocka_unit_test(test_invitations),
		cmocka_unit_test(test_lists),
		cmocka_unit_test(test_who_sees_real_jids),
		cmocka_unit_test(test_history_limits),
		cmocka_unit_test(test_datetime_parsing),
		cmocka_unit_test(test_datetime_garbage_refused),
		cmocka_unit_test(test_nicknames),
		cmocka_unit_test_setup_teardown(test_rooms_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_archive_order_filters_and_pruning, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_room_delete_keeps_archive_unless_asked, setup,
						teardown),
	};

	return cmocka_run_group_tests_name("muc", tests, NULL, NULL);
}
