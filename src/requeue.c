/*-------------------------------------------------------------------------
 *
 * requeue.c
 *	  requeue() and requeue_dead(): a person gives nodes that failed for good
 *	  (the dead letters) a new attempt budget, and their runs run again.
 *
 * The doors check what they are given and which runs may come back: a run
 * that was cancelled stays cancelled, and a run whose deadline has passed
 * would only fail again at once, so both are refused with the reason.  The
 * transition itself is the state machine's (vb_state_requeue).
 *
 * IDENTIFICATION
 *	  src/requeue.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "controls.h"
#include "jsonb_util.h"
#include "lease.h"
#include "spi_util.h"
#include "state.h"
#include "subxact.h"
#include "tenants.h"
#include "workspace_lock.h"

static const char *const filter_fields[] = {"run", "workspace", "workflow", "activity",
"node", "class", "failed_after", "failed_before", NULL};

/*
 * Whether a task of a locked run can be requeued, read after the lock: its
 * node failed for good, its run was neither cancelled nor compensated, and
 * its deadline has not passed.  When it cannot, refuse raises the reason;
 * otherwise the answer is false.
 */
static bool
requeueable(int64 task_id, VbRun *run, TimestampTz at, bool refuse)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {Int64GetDatum(task_id)};
	char	   *status;
	char	   *node;
	bool		isnull;
	bool		compensated;
	Datum		deadline;

	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = vb_prepare("SELECT n.status, n.node, r.deadline,"
						  "       EXISTS (SELECT FROM vectorbea.events e WHERE e.run_id = r.id"
						  "                  AND e.type = 'COMPENSATION_STARTED')"
						  "  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
						  " WHERE n.id = $1", lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: task %ld vanished", (long) task_id);
	status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	node = vb_short_text(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	compensated = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4), "t") == 0;
	deadline = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (strcmp(status, "failed") != 0)
	{
		if (!refuse)
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task %ld (node \"%s\") is %s; only a node that failed for good can be requeued",
						(long) task_id, node, status),
				 errhint("vectorbea.dead_letters lists the nodes that can.")));
	}
	if (run->status == VB_RUN_CANCELLED)
	{
		if (!refuse)
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task %ld (node \"%s\") cannot be requeued: its run %s was cancelled",
						(long) task_id, node, vb_uuid_text(&run->id)),
				 errhint("Start the workflow again instead.")));
	}
	if (compensated)
	{
		if (!refuse)
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task %ld (node \"%s\") cannot be requeued: run %s was compensated",
						(long) task_id, node, vb_uuid_text(&run->id)),
				 errdetail("What the run did was undone; running its nodes again would act on undone work."),
				 errhint("Start the workflow again instead.")));
	}
	if (!isnull && DatumGetTimestampTz(deadline) <= at)
	{
		if (!refuse)
			return false;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task %ld (node \"%s\") cannot be requeued: the deadline of run %s has passed",
						(long) task_id, node, vb_uuid_text(&run->id)),
				 errdetail("The deadline was %s; the run would fail again at once.",
						   vb_timestamp_iso(DatumGetTimestampTz(deadline))),
				 errhint("Start the workflow again with a later deadline.")));
	}
	return true;
}

static char *
caller_name(void)
{
	return vb_caller_name();
}

static char *
checked_reason(FunctionCallInfo fcinfo, int argno)
{
	char	   *reason;

	if (PG_ARGISNULL(argno))
		return NULL;
	reason = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	vb_check_text_size(reason, "the reason of a requeue", VB_MAX_REASON_BYTES);
	return reason;
}

/*
 * requeue(task_id bigint, reason text) -> boolean
 */
static Datum
requeue_as_owner(PG_FUNCTION_ARGS)
{
	int64		task_id;
	char	   *reason;
	TimestampTz at = vb_now();
	VbRun		run;
	char	   *workspace;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_id must not be null")));
	task_id = PG_GETARG_INT64(0);
	reason = checked_reason(fcinfo, 1);

	SPI_connect();
	/*
	 * It sets the run going: under its workspace's lock, taken before the
	 * run's, and only once the caller may act on the workspace.
	 */
	workspace = vb_require_task_workspace(task_id, "requeue runs of");
	/* One committed since that read is not taken unchecked and unlocked. */
	if (workspace == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("task %ld does not exist", (long) task_id)));
	vb_workspace_share(workspace);
	vb_lock_run_of_task(task_id, &run);
	(void) requeueable(task_id, &run, at, true);
	if (!vb_state_requeue(&run, task_id, reason, caller_name(), at))
		elog(ERROR, "vectorbea: task %ld changed while it was requeued", (long) task_id);
	(void) vb_pause_if_workspace_paused(&run, workspace, at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

PG_FUNCTION_INFO_V1(vectorbea_requeue);
Datum
vectorbea_requeue(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, requeue_as_owner);
}

typedef struct ParseArg
{
	bool		is_run;
	char	   *text;
} ParseArg;

static void
parse_filter_value(void *arg)
{
	ParseArg   *p = arg;

	(void) DirectFunctionCall3(p->is_run ? uuid_in : timestamptz_in, CStringGetDatum(p->text),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

/* Refuses a requeue_dead filter with unknown fields or values of the wrong form. */
static void
check_filter(Jsonb *filter)
{
	VbChecker	chk = {"requeue filter"};
	JsonbValue	v;

	if (!JsonContainerIsObject(&filter->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid requeue filter: it must be a JSON object"),
				 errhint("For example '{\"workflow\": \"triage\", \"class\": \"transient\"}'.")));
	vb_check_fields(&chk, &filter->root, filter_fields, NULL, "");
	for (const char *const *f = filter_fields; *f; f++)
	{
		if (!vb_jsonb_get(&filter->root, *f, &v))
			continue;
		if (v.type != jbvString)
			vb_type_error(&chk, NULL, *f, &v, "a string");
		if (strcmp(*f, "run") == 0 || strncmp(*f, "failed_", 7) == 0)
		{
			ParseArg	p = {strcmp(*f, "run") == 0, pnstrdup(v.val.string.val, v.val.string.len)};
			char	   *text = p.text;
			ErrorData  *edata;

			/* The cast in the statement would fail too, without naming the field. */
			edata = vb_try_in_subxact(parse_filter_value, &p);
			if (edata)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid requeue filter: field \"%s\" must be %s", *f,
								strcmp(*f, "run") == 0 ? "a run id (uuid)" : "a timestamp"),
						 errdetail("Found \"%s\".", vb_short_text(text))));
		}
	}
}

/*
 * requeue_dead(filter jsonb, reason text) -> integer
 *
 * Requeues every dead letter that matches the filter (all fields must
 * match; an empty filter matches every dead letter), run by run, each run
 * locked in turn and kept; returns how many nodes came back.  The runs are
 * taken newest first, the one order of every multi-run lock
 * (vb_run_lock_for_tasks), so that this never waits in a circle with a
 * batch of completions; a run purged meanwhile is skipped.
 */
static Datum
requeue_dead_as_owner(PG_FUNCTION_ARGS)
{
	Jsonb	   *filter;
	char	   *reason;
	TimestampTz at = vb_now();
	Datum		args[2];
	Oid			types[2] = {JSONBOID, TIMESTAMPTZOID};
	uint64		n;
	int64	   *task_ids;
	char	  **workspaces;		/* of each task's run, whose locks are taken first */
	int			requeued = 0;

	filter = PG_ARGISNULL(0) ? vb_jsonb_from_cstring("{}") : PG_GETARG_JSONB_P(0);
	check_filter(filter);
	reason = checked_reason(fcinfo, 1);

	SPI_connect();
	args[0] = JsonbPGetDatum(filter);
	args[1] = TimestampTzGetDatum(at);
	if (SPI_execute_with_args("SELECT d.task_id, r.workspace FROM vectorbea.dead_letters d"
							  "  JOIN vectorbea.runs r ON r.id = d.run_id"
							  " WHERE r.status = 'failed'"
							  "   AND (r.deadline IS NULL OR r.deadline > $2)"
							  "   AND NOT EXISTS (SELECT FROM vectorbea.events e WHERE e.run_id = r.id"
							  "                      AND e.type = 'COMPENSATION_STARTED')"
							  "   AND ($1->>'run' IS NULL OR d.run_id = ($1->>'run')::uuid)"
							  "   AND ($1->>'workspace' IS NULL OR d.workspace = $1->>'workspace')"
							  "   AND ($1->>'workflow' IS NULL OR d.workflow = $1->>'workflow')"
							  "   AND ($1->>'activity' IS NULL OR d.activity = $1->>'activity')"
							  "   AND ($1->>'node' IS NULL OR d.node = $1->>'node')"
							  "   AND ($1->>'class' IS NULL OR d.error->>'class' = $1->>'class')"
							  "   AND ($1->>'failed_after' IS NULL"
							  "        OR d.finished_at >= ($1->>'failed_after')::timestamptz)"
							  "   AND ($1->>'failed_before' IS NULL"
							  "        OR d.finished_at < ($1->>'failed_before')::timestamptz)"
							  " ORDER BY r.created_at DESC, r.id DESC, d.finished_at, d.task_id",
							  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: dead letter lookup failed");
	n = SPI_processed;
	task_ids = palloc(sizeof(int64) * Max(n, 1));
	workspaces = palloc(sizeof(char *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		task_ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		workspaces[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
	}

	/*
	 * Every workspace's lock before any run: a run of one workspace held
	 * while waiting for another's lock, behind a pause of that one that
	 * waits for a run a batch holds while it waits for ours, is a circle.
	 */
	for (uint64 i = 0; i < n; i++)
		vb_workspace_share(workspaces[i]);
	for (uint64 i = 0; i < n; i++)
	{
		VbRun		run;

		/*
		 * Each dead letter in an SPI connection of its own, so that what
		 * its statements return is freed before the next: kept until the
		 * end, they took about 30 kB a dead letter (a peak of 402 MB for
		 * 10,000).
		 */
		SPI_connect();

		/*
		 * The list was read before the locks: meanwhile another requeue
		 * may have revived the run, retention purged it, or the run came
		 * back, failed again and compensated (requeueing it then would
		 * run undone work and add its compensations a second time).  Skip
		 * what moved or went.
		 */
		if (vb_run_lock_for_task(task_ids[i], &run) && run.status == VB_RUN_FAILED &&
			requeueable(task_ids[i], &run, at, false))
		{
			if (vb_state_requeue(&run, task_ids[i], reason, caller_name(), at))
			{
				requeued++;
				(void) vb_pause_if_workspace_paused(&run, workspaces[i], at);
			}
			vb_run_save(&run, at);
		}
		SPI_finish();
	}
	SPI_finish();
	PG_RETURN_INT32(requeued);
}

PG_FUNCTION_INFO_V1(vectorbea_requeue_dead);
Datum
vectorbea_requeue_dead(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, requeue_dead_as_owner);
}
