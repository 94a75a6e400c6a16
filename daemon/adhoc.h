/* SPDX-License-Identifier: MIT */
/*
 * XEP-0050 Ad-Hoc Commands on the server's JID: the command list (disco
 * items at node 'http://jabber.org/protocol/commands', filtered by what
 * the requester may run), disco#info of each command node, and the
 * execution engine: sessions, stages, actions and their errors.
 *
 * A command is a table entry (struct adhoc_command) with a number of form
 * stages. Executing it returns stage 0's form (status 'executing') with
 * the actions that stage allows; the requester submits each form with
 * action next/complete (or 'execute', which means the stage's default),
 * goes back with prev, or ends with cancel. The engine checks the action,
 * the session and the submitted form against the form it offered
 * (dataform_validate: required fields, options, JIDs) before calling the
 * command, so a command's run() sees only well-formed submissions. A
 * command without stages runs at once.
 *
 * Sessions belong to one requester (full JID) and one command, live in
 * their worker, expire after adhoc_timeout seconds without a step, and
 * are bounded (adhoc_max_sessions per account: a new one ends the
 * account's oldest; ADHOC_MAX_SESSIONS per worker). Session ids carry a
 * keyed MAC over (requester, node), so an id that is no longer active is
 * told apart from one that never was without remembering ended sessions:
 * the first gets session-expired, the second bad-sessionid.
 *
 * Errors (XEP-0050 section 4.6) carry the commands namespace's specific
 * condition: malformed-action (unknown action), bad-action (an action the
 * stage does not offer), bad-sessionid, session-expired, bad-payload (no
 * form, or a form that does not fit). A submission that fails validation
 * or a command's own check (e.g. an account that exists) gets the error
 * with the form again and a <note type='error'/>, and the session stays
 * at its stage, so the requester can correct it.
 */
#ifndef STANZAD_ADHOC_H
#define STANZAD_ADHOC_H

#include <stdbool.h>
#include <stddef.h>

#include "dataform.h"
#include "iq.h"
#include "iq_async.h"

#define NS_COMMANDS		"http://jabber.org/protocol/commands"
#define ADHOC_SESSIONID_MAX	64	/* "w<worker>-<seq>-<mac>" and its NUL */
#define ADHOC_MAX_SESSIONS	1024	/* open sessions per worker (the oldest end) */

struct worker;
struct session;
struct adhoc_ctx;

struct adhoc_command {
	const char *node;	/* unique on the server JID */
	const char *name;	/* disco item name / identity name */
	/* Whether `requester` (a normalized bare JID) may see and run it. */
	bool (*allowed)(const struct worker *w, const char *requester_bare);
	unsigned nstages;	/* form stages; 0 = runs at 'execute' */
	/*
	 * The form of a stage (built in adhoc_arena(ctx)), or NULL on ENOMEM.
	 * Also used as the template submissions are validated against, so it
	 * must describe the same fields every time.
	 */
	struct xml_node *(*form)(struct adhoc_ctx *ctx, unsigned stage);
	/*
	 * A valid submission of `stage` (form NULL for a command without
	 * stages). Must answer exactly once, now or from an async completion:
	 * adhoc_complete(), adhoc_advance() or adhoc_fail().
	 */
	void (*run)(struct adhoc_ctx *ctx, unsigned stage, const struct dataform *form);
};

/*
 * One step of a command being answered. In an async step it is the first
 * member of the command's own request (see adhoc_async_new), so it
 * survives the storage round trip; then rq and form are NULL.
 */
struct adhoc_ctx {
	struct iq_async a;		/* first: the addressing and the storage request */
	struct iq_request *rq;		/* the request (synchronous steps only) */
	struct session *s;		/* where answers go; NULL: the requester is gone */
	const struct adhoc_command *cmd;
	const struct dataform *form;	/* the submission (synchronous steps only) */
	unsigned stage;
	bool answered;
	char sessionid[ADHOC_SESSIONID_MAX];
	char requester[JID_MAX];	/* bare JID of the requester */
};

/* iq handler (iq.c table): <command/> sets to the server. */
void adhoc_set(struct iq_request *rq);

/*
 * disco#info / disco#items of a node of the server (called by disco.c).
 * Return true when the node is the command list or a command (answered
 * here), false to let disco.c answer.
 */
bool adhoc_disco_info(struct iq_request *rq, const char *node);
bool adhoc_disco_items(struct iq_request *rq, const char *node);

/* Frees the worker's sessions (worker teardown). */
void adhoc_worker_destroy(struct worker *w);

/* ---- For command implementations ---- */

struct worker *adhoc_worker(const struct adhoc_ctx *ctx);
/* The worker's scratch arena: build forms and payloads here. */
struct arena *adhoc_arena(const struct adhoc_ctx *ctx);

/*
 * Ends the session with status 'completed': an optional note (type
 * "info", "warn" or "error"; XEP-0050 6.6 wants an error note when the
 * command failed) and an optional payload (a result form).
 */
void adhoc_complete(struct adhoc_ctx *ctx, const char *note_type, const char *note,
		    struct xml_node *payload);
/* Goes on to the next stage: its form goes out (status 'executing'). */
void adhoc_advance(struct adhoc_ctx *ctx);
/*
 * Refuses the submission: an error with `condition` (RFC 6120) and
 * optionally a commands-namespace condition (e.g. "bad-payload"), the
 * note as <text/> and <note type='error'/>, and the stage's form again:
 * `form` when given, else the stage's form prefilled from the submission
 * (passwords left out). The session stays at its stage.
 */
void adhoc_fail(struct adhoc_ctx *ctx, const char *condition, const char *cmd_condition,
		const char *note, struct xml_node *form);

/*
 * Starts an async step: a zeroed request of `size` bytes (a struct whose
 * first member is struct adhoc_ctx) carrying a copy of ctx, with
 * req.op = STORAGE_OP_RUN, run/done set and req.user = user (change
 * req.op for the account operations). The session is busy until the
 * completion. NULL after answering an error (too many requests in
 * flight, out of memory): then just return.
 */
void *adhoc_async_new(struct adhoc_ctx *ctx, size_t size, const char *user,
		      int (*run)(struct storage *st, struct storage_req *req),
		      void (*done)(struct storage_req *req));
void adhoc_async_submit(struct adhoc_ctx *op);
/*
 * Instead of adhoc_async_submit, for a step the workers answer rather
 * than the storage thread (a worker_gather): the request stays with the
 * caller, whose completion calls adhoc_async_begin/adhoc_async_free on
 * this worker as a storage completion would (run/done unused: NULL).
 */
void adhoc_async_hold(struct adhoc_ctx *op);
/*
 * In the completion: releases the session's busy mark and finds where to
 * answer. Returns false when the requester is gone (then only clean up).
 */
bool adhoc_async_begin(struct adhoc_ctx *op);
/* Ends the completion: resets the scratch arena, wipes and frees the request. */
void adhoc_async_free(struct adhoc_ctx *op);

/* ---- Testable pieces ---- */

enum adhoc_action {
	ADHOC_ACTION_EXECUTE = 1,
	ADHOC_ACTION_CANCEL,
	ADHOC_ACTION_PREV,
	ADHOC_ACTION_NEXT,
	ADHOC_ACTION_COMPLETE,
};

/* NULL -> EXECUTE (the default); an unknown name -> 0 (malformed-action). */
enum adhoc_action adhoc_action_parse(const char *name);
/*
 * What an action does at `stage` of a command with `nstages` form stages:
 * EXECUTE resolves to the stage's default (NEXT before the last stage,
 * COMPLETE at it). Returns the effective action, or 0 when the stage does
 * not offer it (bad-action). CANCEL is always allowed.
 */
enum adhoc_action adhoc_action_resolve(enum adhoc_action a, unsigned stage, unsigned nstages);

#endif
