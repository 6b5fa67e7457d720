/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  The worker's side of a lease: claim_tasks and heartbeat.
 *
 * claim_tasks checks its arguments, ends the attempts of the claimed
 * activities whose lease or timeout ran out (sweep.c; not in a transaction
 * that has written), so that a task whose
 * worker vanished is offered again even where no scheduler runs (where one
 * runs and is ahead of its work, the scan is left to it: under a held
 * snapshot it visits the old "running" entry of every task finished since,
 * and cost a claim as much as the claim itself), and asks
 * the state machine to start attempts (vb_state_start_attempts, which never
 * waits on a lock), within the concurrency limits of the activities
 * (limits.c).  A claim of several activities that comes back short
 * while ready work is left is topped up one activity at a time.  A claim
 * of one activity whose ready work is all in runs
 * busy in other transactions waits, briefly, for the first of them
 * (vectorbea.claim_wait).  A claim whose lease ends before the
 * scheduler's next planned wake wakes it at commit, and so does a claim
 * that finds the engine's tables grown without statistics
 * (first_analyze.c).  The scheduler claims llm nodes through vb_claim,
 * which takes the engine's reserved activity (and never waits); the SQL
 * door refuses it.
 *
 * IDENTIFICATION
 *	  src/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "vectorbea.h"
#include "caller.h"
#include "claim.h"
#include "clock.h"
#include "crashpoint.h"
#include "duration.h"
#include "first_analyze.h"
#include "jsonb_util.h"
#include "lease.h"
#include "limits_claim.h"
#include "notify.h"
#include "settings.h"
#include "shmem.h"
#include "spi_util.h"
#include "subxact.h"
#include "sweep.h"
#include "tenants.h"

/* A claim's arguments, for the second try made after waiting for a run. */
typedef struct ClaimAfterWait
{
	const char *worker;
	ArrayType  *activities;
	int			max_tasks;
	ArrayType  *excluded;
	Interval   *lease_duration;
	TimestampTz at;
	pg_uuid_t	run_id;
	int			wait_ms;
	VbStartedAttempts *started;
} ClaimAfterWait;

/*
 * Waits for the run, then claims again; true (keep the subtransaction)
 * when that claimed something.  Otherwise the run's lock is given back
 * with the subtransaction, so that its next writer does not wait for this
 * transaction's commit.
 */
static bool
claim_after_wait(void *arg)
{
	ClaimAfterWait *c = arg;

	if (!vb_run_wait_lock(&c->run_id, c->excluded, c->wait_ms))
		return false;
	/*
	 * The second look has a snapshot of its own, taken after the wait: a
	 * workspace mapped to other roles meanwhile is closed to it as well.
	 * Only a worker's claim waits, and its excluded list is the mapping's.
	 */
	c->excluded = vb_tenant_excluded_workspaces();
	vb_state_start_attempts(c->worker, c->activities, c->max_tasks, c->lease_duration, NULL,
							c->excluded, c->at, c->started);
	return c->started->count > 0;
}

/*
 * A claim of one activity that came back empty although a run has ready
 * work found that run busy: a claimer or a completer of the same run
 * holds it until its commit.  Returning empty would send the worker to
 * sleep, or back at once to try again, which on a wide run (one run,
 * thousands of ready tasks, every claim and completion its writer) made
 * 33 empty claims for every task claimed (bench/README.md, "One wide
 * run").  Instead, if that run has more than one ready task of the
 * activity, the claim queues for the run's lock like the run's other
 * writers, for at most vectorbea.claim_wait, and tries again once.  Only
 * in a transaction that holds no row lock yet (no transaction id):
 * waiting while holding one could close a circle of waits.
 */
static void
wait_for_busy_run(const char *worker, ArrayType *activities, int max_tasks,
				  ArrayType *excluded, Interval *lease_duration, TimestampTz at,
				  int wait_ms, VbStartedAttempts *started)
{
	ClaimAfterWait c = {worker, activities, max_tasks, excluded, lease_duration, at,
	{{0}}, wait_ms, started};
	Datum		first;
	bool		isnull;
	int			index = 1;
	ErrorData  *error;

	/*
	 * Not under REPEATABLE READ or SERIALIZABLE either: there, locking the
	 * run its holder has just updated fails with a serialization error
	 * instead of claiming.
	 */
	if (wait_ms <= 0 || started->count > 0 ||
		ArrayGetNItems(ARR_NDIM(activities), ARR_DIMS(activities)) != 1 ||
		TransactionIdIsValid(GetTopTransactionIdIfAny()) || IsolationUsesXactSnapshot())
		return;
	first = array_get_element(PointerGetDatum(activities), 1, &index, -1, -1, false,
							  TYPALIGN_INT, &isnull);
	/*
	 * A run with one ready task is passed over: the busy transaction is most
	 * likely the claim taking it (a burst of new runs of one task each,
	 * every worker woken at once), and waiting would only find it gone.
	 */
	if (isnull || vb_state_first_ready_run(TextDatumGetCString(first), at, &c.run_id) < 2)
		return;
	error = vb_try_in_subxact_keep(claim_after_wait, &c);
	if (error == NULL)
		return;
	if (error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
		ReThrowError(error);
	/* the run stayed busy for all of wait_ms: empty, as without the wait */
	FreeErrorData(error);
}

/*
 * The activities of a claim of several that still have ready nodes it
 * could take (of running or compensating runs, in the claim's
 * workspaces), read without locking, in the order the worker named them;
 * NULL when none.  What the claim itself took is running by now.
 */
static ArrayType *
activities_with_ready_work(ArrayType *activities, ArrayType *excluded, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	Datum		found;
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[3] = {TEXTARRAYOID, TIMESTAMPTZOID, TEXTARRAYOID};

		plan = vb_prepare("SELECT pg_catalog.array_agg(a.name ORDER BY a.position)"
						  "  FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS a (name, position)"
						  " WHERE EXISTS (SELECT FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
						  "                WHERE n.status = 'ready' AND n.activity = a.name"
						  "                  AND n.available_at <= $2"
						  "                  AND r.status || '' IN ('running', 'compensating')"
						  "                  AND ($3::text[] IS NULL OR r.workspace <> ALL ($3::text[])))",
						  lengthof(types), types);
	}
	args[0] = PointerGetDatum(activities);
	args[1] = TimestampTzGetDatum(at);
	if (excluded)
		args[2] = PointerGetDatum(excluded);
	else
		nulls[2] = 'n';
	if (SPI_execute_plan(plan, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not look for ready work");
	found = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? NULL : DatumGetArrayTypePCopy(found);
}

/*
 * Puts what several claims of one call leased in the order a claim returns
 * its tasks: priority (highest first), available_at, task id.
 */
static void
order_started(VbStartedAttempts *started)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *ids = palloc(sizeof(Datum) * started->count);
	HeapTuple  *ordered = palloc(sizeof(HeapTuple) * started->count);
	Datum		args[1];
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[1] = {INT8ARRAYOID};

		plan = vb_prepare("SELECT t.position::int4 FROM pg_catalog.unnest($1::int8[]) WITH ORDINALITY AS t (id, position)"
						  "  JOIN vectorbea.nodes n ON n.id = t.id"
						  " ORDER BY n.priority DESC, n.available_at, n.id", lengthof(types), types);
	}
	for (uint64 i = 0; i < started->count; i++)
		ids[i] = SPI_getbinval(started->vals[i], started->tupdesc, 1, &isnull);
	args[0] = PointerGetDatum(construct_array(ids, (int) started->count, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != started->count)
		elog(ERROR, "vectorbea: could not order the claimed tasks");
	for (uint64 i = 0; i < started->count; i++)
		ordered[i] = started->vals[DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
																 SPI_tuptable->tupdesc, 1,
																 &isnull)) - 1];
	memcpy(started->vals, ordered, sizeof(HeapTuple) * started->count);
}

/*
 * A claim of several activities shares max_tasks among them by the best
 * ready tasks before it locks anything, so the ready tasks of a run that
 * another transaction holds take their activity's share and are then
 * skipped: the claim came back short, or empty, while another of its
 * activities had work in free runs (a worker of several activities beside
 * one wide, busy run went to sleep with work waiting).  When it comes back
 * short having passed over ready tasks (vb_state_start_attempts says so)
 * and ready work is left, each activity that has some is claimed alone for
 * what is missing, in the order the worker named them: a claim of one
 * activity passes a busy run with one lock attempt and goes on to the
 * next.  A claim that passed over nothing (an idle poll, or all the ready
 * work taken) pays nothing more.
 */
static void
top_up_short_claim(const char *worker, ArrayType *activities, int max_tasks,
				   ArrayType *excluded, Interval *lease_duration, TimestampTz at,
				   VbStartedAttempts *started)
{
	ArrayType  *left;
	Datum	   *names;
	int			n;
	int			claims_with_tasks = started->count > 0 ? 1 : 0;

	if (started->count >= (uint64) max_tasks || !started->skipped ||
		ArrayGetNItems(ARR_NDIM(activities), ARR_DIMS(activities)) < 2)
		return;
	left = activities_with_ready_work(activities, excluded, at);
	if (left == NULL)
		return;
	deconstruct_array(left, TEXTOID, -1, false, TYPALIGN_INT, &names, NULL, &n);
	for (int i = 0; i < n && started->count < (uint64) max_tasks; i++)
	{
		uint64		before = started->count;

		vb_state_start_attempts(worker,
								construct_array(&names[i], 1, TEXTOID, -1, false, TYPALIGN_INT),
								max_tasks - (int) started->count, lease_duration, NULL,
								excluded, at, started);
		if (started->count > before)
			claims_with_tasks++;
	}
	if (claims_with_tasks > 1)
		order_started(started);
}

/*
 * Ends the expired attempts of the activities, then leases up to max_tasks
 * of their ready nodes to worker, in no workspace of excluded (NULL: in
 * any).  A claim of one activity that finds its ready work only in busy
 * runs waits up to wait_ms for the first (wait_for_busy_run).  Inside SPI;
 * the rows stay valid until the caller's SPI_finish.  The scheduler is
 * woken at commit for the earliest lease end.
 */
void
vb_claim(const char *worker, ArrayType *activities, int max_tasks, ArrayType *excluded,
		 Interval *lease_duration, TimestampTz at, int wait_ms, VbStartedAttempts *started)
{
	VB_STARTED_INIT(started);
	/*
	 * Not in a transaction that has written already (the pipelined loop's
	 * claim after its completions): ending an attempt that ends a child
	 * run locks the child's parent, and waiting for it there, holding the
	 * completed runs, could close a circle with a batch.  Such a claim
	 * never waits; the scheduler, or the worker's next fresh claim, ends
	 * those attempts.
	 */
	if (!vb_scheduler_ahead_of(at) && !TransactionIdIsValid(GetTopTransactionIdIfAny()))
		vb_expire_attempts(PointerGetDatum(activities), at, false, NULL);
	if (!vb_claim_within_limits(worker, activities, max_tasks, excluded, lease_duration, at,
								started))
	{
		vb_state_start_attempts(worker, activities, max_tasks, lease_duration, NULL, excluded,
								at, started);
		top_up_short_claim(worker, activities, max_tasks, excluded, lease_duration, at, started);
		wait_for_busy_run(worker, activities, max_tasks, excluded, lease_duration, at, wait_ms,
						  started);
	}
	if (started->first_expiry != DT_NOEND)
		vb_wake_scheduler(started->first_expiry);
	/* Plans made while the tables were new read them whole: first_analyze.c. */
	if (vb_first_analyze_wanted())
		vb_wake_scheduler(at);
}

/*
 * claim_tasks(worker text, activities text[], max_tasks int,
 *             lease_duration interval) -> SETOF record
 */
static Datum
claim_tasks_as_owner(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *worker;
	ArrayType  *activities;
	int32		max_tasks;
	Interval   *lease_duration;
	TimestampTz at = vb_now();
	int			nelems;
	VbStartedAttempts started;
	Datum	   *names;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("worker and activities must not be null")));
	worker = text_to_cstring(PG_GETARG_TEXT_PP(0));
	activities = PG_GETARG_ARRAYTYPE_P(1);
	max_tasks = PG_ARGISNULL(2) ? 1 : PG_GETARG_INT32(2);
	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("lease_duration must not be null")));
	lease_duration = PG_GETARG_INTERVAL_P(3);

	if (worker[0] == '\0' || pg_mbstrlen(worker) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("worker name must be 1 to 200 characters long"),
				 errdetail("Found %d characters.", pg_mbstrlen(worker))));
	nelems = ArrayGetNItems(ARR_NDIM(activities), ARR_DIMS(activities));
	if (nelems == 0 || array_contains_nulls(activities))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("activities must be a non-empty array without nulls"),
				 errhint("Pass the activities this worker can do, e.g. ARRAY['scout'].")));
	deconstruct_array(activities, TEXTOID, -1, false, TYPALIGN_INT, &names, NULL, &nelems);
	for (int i = 0; i < nelems; i++)
	{
		char	   *name = TextDatumGetCString(names[i]);

		if (vb_reserved_activity(name))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("activity \"%s\" belongs to the vectorbea scheduler", vb_short_text(name)),
					 errdetail("Activities starting with \"%s\" are the engine's own: llm nodes are claimed and called by the scheduler.",
							   VB_RESERVED_PREFIX),
					 errhint("Claim the activities of task nodes.")));
	}
	/* one dimension from 1, as the claims read it, whatever bounds were given */
	activities = construct_array(names, nelems, TEXTOID, -1, false, TYPALIGN_INT);
	if (max_tasks < 1 || max_tasks > VB_MAX_TASKS_PER_CALL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks must be between 1 and %d", VB_MAX_TASKS_PER_CALL),
				 errdetail("Found %d.", max_tasks)));
	(void) vb_interval_ms(lease_duration, "lease_duration");

	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	/* A worker role claims in the workspaces it may work in (tenants.c). */
	vb_claim(worker, activities, max_tasks, vb_tenant_excluded_workspaces(), lease_duration, at,
			 vb_claim_wait_ms, &started);
	vb_crash_point_at_commit(VB_CRASH_CLAIM_COMMITTED);	/* tests only */
	for (uint64 i = 0; i < started.count; i++)
		tuplestore_puttuple(rsinfo->setResult, started.vals[i]);
	SPI_finish();
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(vectorbea_claim_tasks);
Datum
vectorbea_claim_tasks(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, claim_tasks_as_owner);
}

/*
 * heartbeat(task_id bigint, lease uuid, extend interval) -> timestamptz
 *
 * Writes no event: a heartbeat changes no state that replay rebuilds, and
 * the history would otherwise grow with every minute of work.  It still
 * locks the run first, like every writer: a worker that heartbeats and then
 * completes in one transaction must not hold its node while it waits for
 * the run, or a run failure closing that node would deadlock with it.
 */
static Datum
heartbeat_as_owner(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64		task_id;
	pg_uuid_t  *lease;
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	TimestampTz expires;
	bool		isnull;
	VbRun		run;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_id and lease must not be null")));
	task_id = PG_GETARG_INT64(0);
	lease = PG_GETARG_UUID_P(1);
	if (!PG_ARGISNULL(2))
		(void) vb_interval_ms(PG_GETARG_INTERVAL_P(2), "extend");

	SPI_connect();
	vb_lock_run_of_task(task_id, &run);
	if (plan == NULL)
	{
		Oid			types[4] = {INT8OID, UUIDOID, INTERVALOID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.nodes"
						  "   SET lease_expires_at = least(greatest(lease_expires_at,"
						  "                                         $4 + coalesce($3, lease_duration)),"
						  "                                attempt_deadline)"
						  " WHERE id = $1 AND lease = $2 AND status = 'running'"
						  " RETURNING lease_expires_at", lengthof(types), types);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = UUIDPGetDatum(lease);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	else
		args[2] = PG_GETARG_DATUM(2);
	args[3] = TimestampTzGetDatum(vb_now());
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: heartbeat failed");
	if (SPI_processed == 0)
		vb_refuse_lease(task_id, lease, "extend the lease of");
	expires = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	PG_RETURN_TIMESTAMPTZ(expires);
}

PG_FUNCTION_INFO_V1(vectorbea_heartbeat);
Datum
vectorbea_heartbeat(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, heartbeat_as_owner);
}
