/*-------------------------------------------------------------------------
 *
 * limits.c
 *	  Concurrency limits: at most N nodes of an activity running at once,
 *	  over all workspaces or in one (set_concurrency_limit), enforced where
 *	  attempts start: claim_tasks, and the scheduler's claim of llm nodes
 *	  (activity vectorbea:llm).
 *
 * A claim of activities that have limits locks their limit rows (FOR
 * UPDATE, in key order), and only then counts what runs: claimers of one
 * limited activity take their turns, so two of them can never both see
 * the last free place.  Claims of activities without a limit take no
 * lock: there is no global lock on the claim path; and while no limit
 * exists at all, a claim does not even look (a backend caches that until
 * a change of the table commits and its trigger's commit bumps a
 * generation in shared memory).
 * A completion needs no lock: it only frees a place.
 *
 * A limited activity is claimed in steps: first from each workspace with
 * a limit of its own (at most its free places there), then from the other
 * workspaces (at most the activity's free places overall); activities
 * without limits are claimed last, together.  So a claim of several
 * activities may return them in that order rather than strictly by
 * priority.
 *
 * IDENTIFICATION
 *	  src/limits.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "access/xact.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "jsonb_util.h"
#include "limits_claim.h"
#include "notify.h"
#include "shmem.h"
#include "spi_util.h"
#include "state.h"

typedef struct ActivityLimit
{
	char	   *activity;
	char	   *workspace;		/* "*": every workspace */
	int			free;			/* places left: max_running - running */
} ActivityLimit;

static ArrayType *
text_array(List *names)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(names), 1));
	ListCell   *lc;

	foreach(lc, names)
		elems[foreach_current_index(lc)] = CStringGetTextDatum(lfirst(lc));
	return construct_array(elems, list_length(names), TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * Whether any concurrency limit exists, cached in the backend until a
 * change of the table bumps the shared generation (at its commit): most
 * databases have none, and every claim asks.  Read with the latest
 * snapshot, taken after the generation: the statement's (or a REPEATABLE
 * READ transaction's) may predate the commit that bumped it, and "none"
 * would then be kept under the new generation until the next change.
 */
static bool limits_pending_bump = false;

static bool
limits_exist(void)
{
	static uint64 seen_generation = PG_UINT64_MAX;
	static bool any = false;
	static SPIPlanPtr plan = NULL;
	uint64		generation;

	if (vb_shared == NULL)
		return true;			/* no shared memory: always look */
	if (limits_pending_bump)
		return true;			/* this transaction changed them: its own view counts */
	generation = pg_atomic_read_u64(&vb_shared->limits_generation);
	if (generation != seen_generation)
	{
		if (plan == NULL)
			plan = vb_prepare("SELECT FROM vectorbea.concurrency_limits LIMIT 1", 0, NULL);
		if (SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
								 true, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: could not look up concurrency limits");
		any = SPI_processed > 0;
		seen_generation = generation;
	}
	return any;
}

/* A prepared change is bumped for by COMMIT PREPARED (below). */
static void
limits_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && limits_pending_bump && vb_shared)
		pg_atomic_fetch_add_u64(&vb_shared->limits_generation, 1);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE)
		limits_pending_bump = false;
}

/*
 * concurrency_limits_changed() -> trigger, after every statement that
 * changes concurrency_limits, whoever runs it (set_concurrency_limit, or
 * a superuser's own INSERT, UPDATE, DELETE, TRUNCATE or COPY): every
 * backend asks again whether any limit exists once the change commits.
 * Only set_concurrency_limit moved the generation before, so a limit
 * inserted otherwise went unseen by the claims of backends that had found
 * none.
 */
PG_FUNCTION_INFO_V1(vectorbea_concurrency_limits_changed);
Datum
vectorbea_concurrency_limits_changed(PG_FUNCTION_ARGS)
{
	static bool registered = false;
	TriggerData *trig = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trig->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trig->tg_event))
		elog(ERROR, "vectorbea_concurrency_limits_changed must be an AFTER statement trigger");
	if (!registered)
	{
		RegisterXactCallback(limits_xact_callback, NULL);
		registered = true;
	}
	limits_pending_bump = true;
	return PointerGetDatum(NULL);
}

/*
 * COMMIT PREPARED has ended a transaction, which may have set the first
 * concurrency limit: every backend asks again whether any exists.
 */
void
vb_limits_prepared_committed(void)
{
	if (vb_shared)
		pg_atomic_fetch_add_u64(&vb_shared->limits_generation, 1);
}

/* Starts up to cap attempts of one activity; returns how many. */
static int
claim_step(const char *worker, const char *activity, int cap, Interval *lease,
		   const char *only_workspace, ArrayType *not_workspaces, ArrayType *excluded,
		   TimestampTz at, VbStartedAttempts *started)
{
	uint64		before = started->count;

	if (cap <= 0)
		return 0;
	if (excluded)
		not_workspaces = not_workspaces == NULL ? excluded :
			DatumGetArrayTypeP(DirectFunctionCall2(array_cat, PointerGetDatum(not_workspaces),
												   PointerGetDatum(excluded)));
	vb_state_start_attempts(worker, text_array(list_make1(pstrdup(activity))), cap, lease,
							only_workspace, not_workspaces, at, started);
	return (int) (started->count - before);
}

/*
 * Starts up to max_tasks attempts of the activities within their
 * concurrency limits.  Returns false, having done nothing, when none of
 * them has a limit (the caller claims as usual).
 */
bool
vb_claim_within_limits(const char *worker, ArrayType *activities, int max_tasks,
					   ArrayType *excluded, Interval *lease, TimestampTz at,
					   VbStartedAttempts *started)
{
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr free_plan = NULL;
	Datum		args[1] = {PointerGetDatum(activities)};
	List	   *limits = NIL;
	List	   *limited = NIL;
	List	   *unlimited = NIL;
	Datum	   *names;
	int			n;
	int			left = max_tasks;
	ListCell   *lc;

	if (!vb_waits_available() || !limits_exist())
		return false;			/* the claim path stays as it was: no lock, no query */
	if (lock_plan == NULL)
	{
		Oid			types[1] = {TEXTARRAYOID};

		lock_plan = vb_prepare("SELECT FROM vectorbea.concurrency_limits"
							   " WHERE activity = ANY ($1) ORDER BY activity, workspace FOR UPDATE",
							   lengthof(types), types);
		/*
		 * A statement of its own: its snapshot sees what the lock waited for.
		 * The running attempts are read through nodes_running_idx, whose
		 * predicate the condition on lease_expires_at repeats: a running
		 * attempt always has an expiry (the claim sets it, and whatever
		 * clears it moves the node out of running in the same statement
		 * or transaction).  Without it no index served the count, and each
		 * claim of a limited activity read the whole table
		 * (test/t/042_hot_plans.pl).
		 */
		free_plan = vb_prepare("SELECT l.activity, l.workspace, l.max_running -"
							   "   (SELECT pg_catalog.count(*) FROM vectorbea.nodes n"
							   "      JOIN vectorbea.runs r ON r.id = n.run_id"
							   "     WHERE n.status = 'running' AND n.lease_expires_at IS NOT NULL"
							   "       AND n.activity = l.activity"
							   "       AND (l.workspace = '*' OR r.workspace = l.workspace))::int"
							   "  FROM vectorbea.concurrency_limits l"
							   " WHERE l.activity = ANY ($1) ORDER BY l.activity, l.workspace",
							   lengthof(types), types);
	}
	/* The latest snapshot, as limits_exist: a limit it found is locked. */
	if (SPI_execute_snapshot(lock_plan, args, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 false, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not lock concurrency limits");
	if (SPI_processed == 0)
		return false;
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a claim of an activity with a concurrency limit needs READ COMMITTED"),
				 errdetail("Under REPEATABLE READ or SERIALIZABLE the claim could not see what the claims before it took."),
				 errhint("Claim in a READ COMMITTED transaction, PostgreSQL's default.")));
	if (SPI_execute_plan(free_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not count running attempts");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		ActivityLimit	   *l = palloc(sizeof(ActivityLimit));
		bool		isnull;

		l->activity = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		l->workspace = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		l->free = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
		limits = lappend(limits, l);
	}

	deconstruct_array(activities, TEXTOID, -1, false, TYPALIGN_INT, &names, NULL, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *a = TextDatumGetCString(names[i]);
		bool		has = false;

		foreach(lc, limits)
			has |= strcmp(((ActivityLimit *) lfirst(lc))->activity, a) == 0;
		if (!has)
			unlimited = list_append_unique(unlimited, makeString(a)) ;
		else
			limited = list_append_unique(limited, makeString(a));
	}

	foreach(lc, limited)
	{
		char	   *a = strVal(lfirst(lc));
		int			overall = INT_MAX;
		List	   *scoped = NIL;
		ListCell   *lc2;

		foreach(lc2, limits)
		{
			ActivityLimit	   *l = lfirst(lc2);

			if (strcmp(l->activity, a) != 0)
				continue;
			if (strcmp(l->workspace, "*") == 0)
				overall = Max(l->free, 0);
			else
				scoped = lappend(scoped, l);
		}
		foreach(lc2, scoped)
		{
			ActivityLimit	   *l = lfirst(lc2);
			int			got = claim_step(worker, a, Min(Min(l->free, overall), left), lease,
										 l->workspace, NULL, excluded, at, started);

			overall -= got;
			left -= got;
		}
		if (overall > 0 && left > 0)
		{
			List	   *others = NIL;

			foreach(lc2, scoped)
				others = lappend(others, ((ActivityLimit *) lfirst(lc2))->workspace);
			left -= claim_step(worker, a, Min(overall, left), lease, NULL,
							   scoped ? text_array(others) : NULL, excluded, at, started);
		}
	}
	if (unlimited != NIL && left > 0)
	{
		List	   *rest = NIL;

		foreach(lc, unlimited)
			rest = lappend(rest, strVal(lfirst(lc)));
		vb_state_start_attempts(worker, text_array(rest), left, lease, NULL, excluded, at, started);
	}
	return true;
}

/*
 * set_concurrency_limit(activity text, max_running integer, workspace text)
 *   -> boolean: sets (or, with max_running NULL, removes) the limit;
 * returns whether a limit was there before.
 */
static Datum
set_concurrency_limit_as_owner(PG_FUNCTION_ARGS)
{
	char	   *activity;
	char	   *workspace;
	Datum		args[5];
	Oid			types[5] = {TEXTOID, TEXTOID, INT4OID, NAMEOID, TIMESTAMPTZOID};
	bool		existed;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("activity and workspace must not be null"),
				 errhint("Use workspace '*' for a limit over every workspace.")));
	activity = text_to_cstring(PG_GETARG_TEXT_PP(0));
	workspace = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!vb_valid_name(activity))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid activity name \"%s\"", vb_short_text(activity)),
				 errdetail("Names are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
						   VB_MAX_NAME_LEN)));
	if (vb_reserved_activity(activity) && strcmp(activity, VB_LLM_ACTIVITY) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("activity \"%s\" belongs to the engine", vb_short_text(activity)),
				 errhint("Limit llm calls with activity '%s'.", VB_LLM_ACTIVITY)));
	vb_check_workspace_name(workspace, true);
	if (!PG_ARGISNULL(1) && PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_running must be at least 1"),
				 errdetail("Found %d.", PG_GETARG_INT32(1)),
				 errhint("Pass NULL to remove the limit; pause the workspace to stop its work.")));

	SPI_connect();
	args[0] = CStringGetTextDatum(activity);
	args[1] = CStringGetTextDatum(workspace);
	if (PG_ARGISNULL(1))
	{
		if (SPI_execute_with_args("DELETE FROM vectorbea.concurrency_limits WHERE activity = $1 AND workspace = $2",
								  2, types, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "vectorbea: could not remove a concurrency limit");
		existed = SPI_processed > 0;
	}
	else
	{
		/*
		 * A limit changed in place, never deleted and inserted: a claim
		 * waiting on its row follows it to the new version, where a deleted
		 * row would be skipped and the new one, after the claim's snapshot,
		 * unseen: the claim would go unlimited.
		 */
		if (SPI_execute_with_args("SELECT FROM vectorbea.concurrency_limits"
								  " WHERE activity = $1 AND workspace = $2 FOR UPDATE",
								  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: could not look up a concurrency limit");
		existed = SPI_processed > 0;
		args[2] = Int32GetDatum(PG_GETARG_INT32(1));
		args[3] = DirectFunctionCall1(namein, CStringGetDatum(vb_caller_name()));
		args[4] = TimestampTzGetDatum(vb_now());
		if (SPI_execute_with_args("INSERT INTO vectorbea.concurrency_limits"
								  " (activity, workspace, max_running, set_by, set_at)"
								  " VALUES ($1, $2, $3, $4, $5)"
								  " ON CONFLICT (activity, workspace) DO UPDATE"
								  " SET max_running = EXCLUDED.max_running, set_by = EXCLUDED.set_by,"
								  "     set_at = EXCLUDED.set_at",
								  5, types, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "vectorbea: could not set a concurrency limit");
	}
	SPI_finish();

	/*
	 * Work held back by the old limit may run now, and nothing else would
	 * say so: the activity's workers (a notification) or, for llm calls,
	 * the scheduler look again once this commits.
	 */
	vb_notify_task_ready(activity);
	PG_RETURN_BOOL(existed);
}

PG_FUNCTION_INFO_V1(vectorbea_set_concurrency_limit);
Datum
vectorbea_set_concurrency_limit(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, set_concurrency_limit_as_owner);
}
