/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  The worker's side of a lease: claim_tasks and heartbeat.
 *
 * claim_tasks never waits on a lock.  It takes ready nodes together with
 * their runs, run first as every writer does, both SKIP LOCKED, inside a
 * MATERIALIZED CTE (so LIMIT bounds the rows taken, whatever the plan): a
 * run busy in another transaction keeps its nodes for the next claim.  A
 * quota per activity, computed before anything is locked, keeps a claim over
 * several activities from locking rows it will not lease, since such rows
 * would stay locked until the worker's transaction ends.
 * One statement leases the nodes, numbers their STEP_STARTED events and
 * returns them with their upstream outputs.
 *
 * Attempts that ran out (lease or timeout) are ended here too, for the
 * activities claimed (sweep.c), so a task whose worker vanished is offered
 * again even where no scheduler runs.  A claim whose lease ends before the
 * scheduler's next planned wake wakes it at commit.
 *
 * IDENTIFICATION
 *	  src/claim.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "vectorbea.h"

#define MAX_TASKS_PER_CLAIM		1000

/* Set by the scheduler around its own claims of llm nodes (llm.c). */
bool		vb_scheduler_claiming = false;
/*
 * The claim statement: a head that picks and locks candidate nodes, and a
 * tail that leases them, numbers their STEP_STARTED events and returns
 * them.  With several activities the head first computes a quota per
 * activity (see claim_tasks); with one, the quota is max_tasks and the
 * head is one locking scan.
 */
#define CLAIM_MANY_HEAD \
	"WITH acts AS (" \
	"  SELECT DISTINCT a FROM pg_catalog.unnest($2::text[]) AS a" \
	"), best AS (" \
	"  SELECT b.activity FROM acts CROSS JOIN LATERAL (" \
	"      SELECT n.activity, n.priority, n.available_at, n.id" \
	"        FROM vectorbea.nodes n" \
	"       WHERE n.status = 'ready' AND n.activity = acts.a" \
	"         AND n.available_at <= $4" \
	"       ORDER BY n.priority DESC, n.available_at, n.id" \
	"       LIMIT $3) b" \
	"   ORDER BY b.priority DESC, b.available_at, b.id" \
	"   LIMIT $3" \
	"), quota AS (" \
	"  SELECT activity, pg_catalog.count(*) AS n FROM best GROUP BY activity" \
	"), candidate AS MATERIALIZED (" \
	"  SELECT c.id, c.run_id, c.priority, c.available_at" \
	"    FROM quota CROSS JOIN LATERAL (" \
	"      SELECT n.id, n.run_id, n.priority, n.available_at" \
	"        FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id" \
	"       WHERE n.status = 'ready' AND n.activity = quota.activity" \
	"         AND n.available_at <= $4 AND r.status = 'running'" \
	"       ORDER BY n.priority DESC, n.available_at, n.id" \
	"       LIMIT quota.n" \
	"       FOR NO KEY UPDATE OF r SKIP LOCKED" \
	"       FOR UPDATE OF n SKIP LOCKED) c"

#define CLAIM_ONE_HEAD \
	"WITH candidate AS MATERIALIZED (" \
	"  SELECT n.id, n.run_id, n.priority, n.available_at" \
	"    FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id" \
	"   WHERE n.status = 'ready' AND n.activity = ($2::text[])[1]" \
	"     AND n.available_at <= $4 AND r.status = 'running'" \
	"   ORDER BY n.priority DESC, n.available_at, n.id" \
	"   LIMIT $3" \
	"   FOR NO KEY UPDATE OF r SKIP LOCKED" \
	"   FOR UPDATE OF n SKIP LOCKED"

#define CLAIM_TAIL \
	"), claimed AS (" \
	"  UPDATE vectorbea.nodes n" \
	"     SET status = 'running', attempt = n.attempt + 1," \
	"         lease = pg_catalog.gen_random_uuid()," \
	"         lease_expires_at = least($4 + $5, $4 + n.timeout_ms * interval '1 ms')," \
	"         attempt_deadline = $4 + n.timeout_ms * interval '1 ms'," \
	"         lease_duration = $5, worker = $1, started_at = $4" \
	"   WHERE n.id = ANY (ARRAY(SELECT id FROM candidate))" \
	"  RETURNING n.id, n.lease, n.run_id, n.node, n.activity, n.attempt," \
	"            n.max_attempts, n.input, n.depends_on, n.checkpoint," \
	"            n.lease_expires_at, n.priority, n.available_at" \
	"), numbered AS (" \
	"  SELECT cl.*, pg_catalog.row_number() OVER (PARTITION BY cl.run_id ORDER BY cl.id) AS k," \
	"         pg_catalog.count(*) OVER (PARTITION BY cl.run_id) AS per_run" \
	"    FROM claimed cl" \
	"), seq AS (" \
	"  UPDATE vectorbea.runs r" \
	"     SET last_seq = r.last_seq" \
	"                    + (SELECT pg_catalog.count(*) FROM numbered nb WHERE nb.run_id = r.id)" \
	"   WHERE r.id = ANY (ARRAY(SELECT run_id FROM numbered))" \
	"  RETURNING r.id," \
	"            r.last_seq - (SELECT pg_catalog.count(*) FROM numbered nb WHERE nb.run_id = r.id)" \
	"              AS base" \
	"), started AS (" \
	"  INSERT INTO vectorbea.events (run_id, seq, type, node, attempt, data, at)" \
	"  SELECT nb.run_id, s.base + nb.k, 'STEP_STARTED', nb.node, nb.attempt," \
	"         pg_catalog.jsonb_build_object('worker', $1::text, 'task_id', nb.id," \
	"                            'lease_expires_at', pg_catalog.to_char(nb.lease_expires_at AT TIME ZONE 'UTC'," \
	"                                      'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))," \
	"         $4" \
	"    FROM numbered nb JOIN seq s ON s.id = nb.run_id" \
	")" \
	" SELECT nb.id, nb.lease, nb.run_id, nb.node, nb.activity, nb.attempt," \
	"        nb.max_attempts, nb.input," \
	"        coalesce((SELECT pg_catalog.jsonb_object_agg(d.node, d.output)" \
	"                    FROM vectorbea.nodes d" \
	"                   WHERE d.run_id = nb.run_id AND d.node = ANY (nb.depends_on))," \
	"                 '{}'::jsonb)," \
	"        nb.checkpoint, nb.run_id::text || ':' || nb.node," \
	"        nb.lease_expires_at," \
	"        (SELECT r.input FROM vectorbea.runs r WHERE r.id = nb.run_id)" \
	"   FROM numbered nb" \
	"  ORDER BY nb.priority DESC, nb.available_at, nb.id"

/*
 * claim_tasks(worker text, activities text[], max_tasks int,
 *             lease_duration interval) -> SETOF record
 */
PG_FUNCTION_INFO_V1(vectorbea_claim_tasks);
Datum
vectorbea_claim_tasks(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr single_plan = NULL;
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *worker;
	ArrayType  *activities;
	int32		max_tasks;
	Interval   *lease_duration;
	TimestampTz at = vb_now();
	Datum		args[5];
	int			nelems;
	TimestampTz first_expiry = DT_NOEND;

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

	if (strlen(worker) == 0 || strlen(worker) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("worker name must be 1 to 200 characters long")));
	nelems = ArrayGetNItems(ARR_NDIM(activities), ARR_DIMS(activities));
	if (nelems == 0 || array_contains_nulls(activities))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("activities must be a non-empty array without nulls"),
				 errhint("Pass the activities this worker can do, e.g. ARRAY['scout'].")));
	if (!vb_scheduler_claiming)
	{
		Datum	   *names;
		int			n;

		deconstruct_array(activities, TEXTOID, -1, false, TYPALIGN_INT, &names, NULL, &n);
		for (int i = 0; i < n; i++)
		{
			char	   *name = TextDatumGetCString(names[i]);

			if (vb_reserved_activity(name))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("activity \"%s\" belongs to the vectorbea scheduler", name),
						 errdetail("Activities starting with \"%s\" are the engine's own: llm nodes are claimed and called by the scheduler.",
								   VB_RESERVED_PREFIX),
						 errhint("Claim the activities of task nodes.")));
		}
	}
	if (max_tasks < 1 || max_tasks > MAX_TASKS_PER_CLAIM)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_tasks must be between 1 and %d", MAX_TASKS_PER_CLAIM),
				 errdetail("Found %d.", max_tasks)));
	(void) vb_interval_ms(lease_duration, "lease_duration");

	InitMaterializedSRF(fcinfo, 0);

	SPI_connect();
	vb_expire_attempts(PointerGetDatum(activities), at, false, NULL);

	if (plan == NULL)
	{
		Oid			types[5] = {TEXTOID, TEXTARRAYOID, INT4OID, TIMESTAMPTZOID, INTERVALOID};

		/*
		 * For several activities, first, without locking, the best
		 * max_tasks ready nodes over all of them decide how many each
		 * activity may take (its quota), so that no more rows are locked
		 * than can be claimed; one activity's quota is max_tasks.
		 * Then, per activity, a scan in index order locks the run row and
		 * the node row, each SKIP LOCKED, inside the scan, so the quota
		 * counts only claimable nodes.  The run is locked first, as every
		 * writer does.  A run busy in another transaction keeps its nodes
		 * for the next claim.  The quota is not known when the statement is
		 * planned, so the later steps are written to use the indexes
		 * whatever row count the planner guesses, and the generic plan is
		 * used from the first call: planning this statement costs more than
		 * running it.
		 */
		plan = vb_prepare_opts(
						  CLAIM_MANY_HEAD
						  CLAIM_TAIL,
						  lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
		single_plan = vb_prepare_opts(
									  CLAIM_ONE_HEAD
									  CLAIM_TAIL,
									  lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = CStringGetTextDatum(worker);
	args[1] = PointerGetDatum(activities);
	args[2] = Int32GetDatum(max_tasks);
	args[3] = TimestampTzGetDatum(at);
	args[4] = IntervalPGetDatum(lease_duration);
	if (SPI_execute_plan(nelems == 1 ? single_plan : plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: claim failed");

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		TimestampTz expires = DatumGetTimestampTz(SPI_getbinval(tup, SPI_tuptable->tupdesc,
															   12, &isnull));

		if (expires < first_expiry)
			first_expiry = expires;
		tuplestore_puttuple(rsinfo->setResult, tup);
	}
	SPI_finish();
	if (first_expiry != DT_NOEND)
		vb_wake_scheduler(first_expiry);
	return (Datum) 0;
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
PG_FUNCTION_INFO_V1(vectorbea_heartbeat);
Datum
vectorbea_heartbeat(PG_FUNCTION_ARGS)
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
	if (!vb_run_lock_for_task(task_id, &run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("task %ld does not exist", (long) task_id)));
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
