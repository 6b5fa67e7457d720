/*-------------------------------------------------------------------------
 *
 * sweep.c
 *	  Time-driven work: expired attempts, due retries, run deadlines, and
 *	  the next time any of them falls due.
 *
 * Each function acts on what is due at a given engine time.  The scheduler
 * calls them in a loop; claim_tasks calls vb_expire_attempts for the
 * activities it claims, so expiry also works where no scheduler runs.
 *
 * An attempt ends at its lease_expires_at, which claim_tasks and heartbeat
 * cap at the node's attempt deadline (claim time + the node's timeout).  So
 * one index on lease_expires_at finds both: when the deadline is what
 * ended it, the class is "timeout", otherwise "lease_expired".
 *
 * Rows are taken run first, each SKIP LOCKED, as in claim_tasks: a busy run
 * is left for the next pass.  Each item is acted on through due_items.c.
 * All functions run inside SPI.
 *
 * IDENTIFICATION
 *	  src/sweep.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "fmgr.h"
#include "utils/jsonb.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "vectorbea.h"
#include "approvals.h"
#include "caller.h"
#include "clock.h"
#include "due_items.h"
#include "jsonb_util.h"
#include "notify.h"
#include "spi_util.h"
#include "state.h"
#include "sweep.h"
#include "waits.h"

#define EXPIRE_BATCH	100

typedef struct ExpireBatch
{
	int64	   *task_ids;
	pg_uuid_t  *run_ids;
	char	  **classes;
	bool	   *has_parent;		/* the attempt's run is a child run */
	TimestampTz at;
	int			timeouts;
	int			expired;
} ExpireBatch;

/* Whether task_id's attempt still runs, past its lease. */
static bool
still_expired(int64 task_id, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2] = {Int64GetDatum(task_id), TimestampTzGetDatum(at)};

	if (plan == NULL)
	{
		Oid			types[2] = {INT8OID, TIMESTAMPTZOID};

		plan = vb_prepare("SELECT FROM vectorbea.nodes"
						  " WHERE id = $1 AND status = 'running' AND lease_expires_at <= $2",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read task %ld", (long) task_id);
	return SPI_processed == 1;
}

static void
expire_one(void *arg, int i)
{
	ExpireBatch *b = arg;
	VbRun		run;
	bool		timeout = strcmp(b->classes[i], "timeout") == 0;

	/* Held by us already (taken in the scan), so this does not wait. */
	if (!vb_run_lock(&b->run_ids[i], &run) || !vb_run_active(run.status))
		return;
	/*
	 * An earlier attempt of this batch may have closed this one (it failed
	 * the run, which began to compensate and so is still active): a closed
	 * node is not failed again, which would bring it back ready in a run
	 * that only undoes, or count it off twice.
	 */
	if (!still_expired(b->task_ids[i], b->at))
		return;
	if (timeout)
		vb_state_fail_attempt(&run, b->task_ids[i], "timeout",
							  "{\"message\":\"the attempt ran past the node's timeout\",\"class\":\"timeout\"}",
							  true, -1, b->at);
	else if (strcmp(b->classes[i], "llm_lease_expired") == 0 && !vb_state_llm_call_out(b->task_ids[i]))
		/*
		 * An llm attempt with no call out (the scheduler could not send it:
		 * an error of its step, its key not decrypting) did nothing that
		 * could be in doubt, so the node's in_doubt policy (a person asked,
		 * a compensation) has no say: it fails as transient, counted, so
		 * that an error that lasts ends by the retry policy.
		 */
		vb_state_fail_attempt(&run, b->task_ids[i], "transient",
							  "{\"message\":\"the lease expired before the attempt's call was sent\",\"class\":\"transient\"}",
							  true, -1, b->at);
	else
		/* The worker may have done the work: the node's in_doubt policy decides. */
		vb_state_attempt_in_doubt(&run, b->task_ids[i], "lease_expired",
								  "{\"message\":\"the lease expired before the worker reported\",\"class\":\"lease_expired\"}",
								  b->at);
	vb_run_save(&run, b->at);
	if (timeout)
		b->timeouts++;
	else
		b->expired++;
}

/*
 * A claim's ending of expired attempts, which must not wait: ending one of
 * a child run may end the child, which locks its parent, and another
 * transaction may hold the parent for as long as it likes.  So for a child
 * run's attempt the parent is only tried, in a subtransaction, and an
 * attempt whose parent is busy is put off by the scheduler's 100 ms (not
 * taken first again by the next claim); others end as before, with no
 * subtransaction.
 */
static void
expire_in_claim(ExpireBatch *b, int n)
{
	int			wait_ms = vb_run_parent_lock_wait_limit(0);

	PG_TRY();
	{
		for (int i = 0; i < n; i++)
			if (b->has_parent[i])
				(void) vb_due_item_unless_busy(expire_one, b, i, &b->run_ids[i], VB_ITEM_ATTEMPT,
											   b->task_ids[i], b->at);
			else
				expire_one(b, i);
	}
	PG_FINALLY();
	{
		vb_run_parent_lock_wait_limit(wait_ms);
	}
	PG_END_TRY();
}

/*
 * Fails the attempts whose lease (or timeout) has run out at engine time
 * `at`: for the given activities (a text[] Datum), or all when activities is
 * (Datum) 0.  Returns the number of attempts ended.
 */
int
vb_expire_attempts(Datum activities, TimestampTz at, bool isolate,
				   VbSweepCounters *counters)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	bool		children = vb_waits_available();	/* 0.1.0 has no child runs */
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	ExpireBatch b;
	uint64		n;

	if (plans[children] == NULL)
	{
		Oid			types[2] = {TEXTARRAYOID, TIMESTAMPTZOID};

		/*
		 * Every claim runs this scan first.  Its one good plan (the small
		 * partial index of running nodes, in expiry order) does not depend
		 * on the parameters, but the plan cache, comparing estimates, kept
		 * planning it afresh on most calls under concurrency (0.2 ms each):
		 * the generic plan is used from the start.
		 */
		plans[children] = vb_prepare_opts(psprintf(
			"SELECT n.id, n.run_id,"
			"       CASE WHEN n.attempt_deadline <= n.lease_expires_at THEN 'timeout'"
			"            WHEN n.kind = 'llm' THEN 'llm_lease_expired' ELSE 'lease_expired' END,"
			"       %s"
			"  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
			" WHERE n.status = 'running' AND n.lease_expires_at <= $2"
			"   AND ($1 IS NULL OR n.activity = ANY ($1))"
			" ORDER BY n.lease_expires_at LIMIT " CppAsString2(EXPIRE_BATCH)
			" FOR NO KEY UPDATE OF r SKIP LOCKED"
			" FOR UPDATE OF n SKIP LOCKED",
			children ? "r.parent_run IS NOT NULL" : "false"),
			lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = activities;
	if (activities == (Datum) 0)
		nulls[0] = 'n';
	args[1] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plans[children], args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: expired lease scan failed");
	n = SPI_processed;
	if (n == 0)
		return 0;

	memset(&b, 0, sizeof(b));
	b.at = at;
	vb_read_due_items(1, 2, &b.task_ids, &b.run_ids);
	b.classes = palloc(sizeof(char *) * n);
	b.has_parent = palloc(sizeof(bool) * n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		b.classes[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
		b.has_parent[i] = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
													 4, &isnull));
	}
	if (isolate)
		for (uint64 i = 0; i < n; i++)
			vb_due_item(true, expire_one, &b, (int) i, counters,
						&b.run_ids[i], VB_ITEM_ATTEMPT, b.task_ids[i], at);
	else
		expire_in_claim(&b, (int) n);
	if (counters)
	{
		counters->leases_expired += b.expired;
		counters->timeouts += b.timeouts;
	}
	return b.expired + b.timeouts;
}

typedef struct DeadlineBatch
{
	pg_uuid_t  *run_ids;
	TimestampTz at;
	int			failed;
} DeadlineBatch;

static void
deadline_one(void *arg, int i)
{
	DeadlineBatch *b = arg;
	VbRun		run;

	if (!vb_run_lock(&b->run_ids[i], &run) || run.status != VB_RUN_RUNNING)
		return;
	vb_state_fail_run(&run, NULL, "deadline_exceeded", b->at);
	vb_run_save(&run, b->at);
	b->failed++;
}

/* Fails the runs whose deadline has passed; returns how many. */
int
vb_fail_overdue_runs(TimestampTz at, VbSweepCounters *counters)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	DeadlineBatch b;
	uint64		n;

	if (plan == NULL)
	{
		Oid			types[1] = {TIMESTAMPTZOID};

		/* read in deadline order by runs_deadline_idx, whatever the time given */
		plan = vb_prepare_opts("SELECT id FROM vectorbea.runs"
							   " WHERE status = 'running' AND deadline <= $1"
							   " ORDER BY deadline LIMIT " CppAsString2(EXPIRE_BATCH)
							   " FOR NO KEY UPDATE SKIP LOCKED", lengthof(types), types,
							   CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: run deadline scan failed");
	n = SPI_processed;
	if (n == 0)
		return 0;
	memset(&b, 0, sizeof(b));
	b.at = at;
	vb_read_due_items(0, 1, NULL, &b.run_ids);
	for (uint64 i = 0; i < n; i++)
		vb_due_item(true, deadline_one, &b, (int) i, counters, &b.run_ids[i], VB_ITEM_RUN, 0, at);
	if (counters)
		counters->deadlines += b.failed;
	return b.failed;
}

/*
 * Announces (NOTIFY vectorbea_tasks) the activities of retries that came
 * due in (after, upto]; with after = DT_NOBEGIN, of every ready node, which
 * is what a scheduler does when it starts, since notifications sent before
 * a crash may never have been read.  Returns the number of activities.
 */
int
vb_announce_due(TimestampTz after, TimestampTz upto, VbSweepCounters *counters)
{
	static SPIPlanPtr retry_plan = NULL;
	static SPIPlanPtr all_plan = NULL;
	Datum		args[2];

	if (retry_plan == NULL)
	{
		Oid			types[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};

		/*
		 * Every pass runs it: generic from the first call, on the retries'
		 * partial index.  Left to the plan cache, a plan made for the
		 * pass's times could look no dearer, and a CI run planned it at
		 * every pass (047).
		 */
		retry_plan = vb_prepare_opts("SELECT DISTINCT activity FROM vectorbea.nodes"
									 " WHERE status = 'ready' AND attempt > 0"
									 "   AND available_at > $1 AND available_at <= $2",
									 lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
		all_plan = vb_prepare("SELECT DISTINCT activity FROM vectorbea.nodes"
							  " WHERE status = 'ready' AND available_at <= $2",
							  lengthof(types), types);
	}
	args[0] = TimestampTzGetDatum(after);
	args[1] = TimestampTzGetDatum(upto);
	if (SPI_execute_plan(TIMESTAMP_IS_NOBEGIN(after) ? all_plan : retry_plan,
						 args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: due retry scan failed");
	for (uint64 i = 0; i < SPI_processed; i++)
		vb_notify_task_ready(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	if (counters)
		counters->retries_announced += SPI_processed;
	return (int) SPI_processed;
}

/*
 * The engine time at which the next piece of time-driven work falls due
 * after `now`: an attempt's end, a retry, a run deadline.  DT_NOEND when
 * nothing is scheduled.
 */
TimestampTz
vb_next_due(TimestampTz now)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	bool		isnull;
	Datum		d;

	if (plan == NULL)
	{
		Oid			types[1] = {TIMESTAMPTZOID};

		/* Every pass runs it: generic, as the retries' scan. */
		plan = vb_prepare_opts("SELECT least("
							   " (SELECT pg_catalog.min(lease_expires_at) FROM vectorbea.nodes WHERE status = 'running'),"
							   " (SELECT pg_catalog.min(available_at) FROM vectorbea.nodes"
							   "   WHERE status = 'ready' AND attempt > 0 AND available_at > $1),"
							   " (SELECT pg_catalog.min(deadline) FROM vectorbea.runs"
							   "   WHERE status = 'running' AND deadline IS NOT NULL),"
							   " (SELECT pg_catalog.min(expires_at) FROM vectorbea.approvals"
							   "   WHERE status = 'pending' AND expires_at IS NOT NULL))",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = TimestampTzGetDatum(now);
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: next due scan failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/*
 * run_due_work() -> jsonb: one pass of the scheduler's work, now, in the
 * caller's transaction.  For operators (a database without a scheduler) and
 * for tests that must place the scheduler's action exactly.
 */
static Datum
run_due_work_as_owner(PG_FUNCTION_ARGS)
{
	VbSweepCounters c;
	TimestampTz now = vb_now();
	char	   *result;
	int			n;
	volatile int started = 0;
	volatile int ended = 0;
	int			orphans = 0;
	int			wait_ms;

	memset(&c, 0, sizeof(c));
	SPI_connect();
	/* As the scheduler's pass: an item whose parent run is held is put off. */
	wait_ms = vb_run_parent_lock_wait_limit(0);
	PG_TRY();
	{
		while (vb_expire_attempts((Datum) 0, now, true, &c) > 0)
			;
		while (vb_fail_overdue_runs(now, &c) > 0)
			;
		while (vb_expire_gates(now, &c) > 0)
			;
		while ((n = vb_start_waits(now, true, &c)) > 0)
			started += n;
		while ((n = vb_end_due_waits(now, true, &c)) > 0)
			ended += n;
	}
	PG_FINALLY();
	{
		vb_run_parent_lock_wait_limit(wait_ms);
	}
	PG_END_TRY();
	while ((n = vb_cancel_orphans(now, NULL, &c)) > 0)
		orphans += n;
	SPI_finish();
	result = psprintf("{\"leases_expired\":%lu,\"timeouts\":%lu,\"deadlines_enforced\":%lu,"
					  "\"gates_expired\":%lu,\"waits_started\":%d,\"waits_ended\":%d,"
					  "\"children_cancelled\":%d,\"errors\":%lu}",
					  (unsigned long) c.leases_expired, (unsigned long) c.timeouts,
					  (unsigned long) c.deadlines, (unsigned long) c.gates_expired,
					  started, ended, orphans, (unsigned long) c.errors);
	PG_RETURN_JSONB_P(vb_jsonb_from_cstring(result));
}

PG_FUNCTION_INFO_V1(vectorbea_run_due_work);
Datum
vectorbea_run_due_work(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, run_due_work_as_owner);
}
