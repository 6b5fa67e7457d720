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
 * is left for the next pass.  With isolate set (the scheduler), each item
 * runs in a subtransaction, so one node's error is recorded and the others
 * go on.  All functions run inside SPI.
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

#define EXPIRE_BATCH	100

/* How long the scheduler leaves an item alone after failing on it. */
#define ERROR_RETRY_MS	(30 * 1000)

/* What record_error writes, for record_error_now. */
typedef struct ErrorRecord
{
	pg_uuid_t  *run_id;
	VbSweepItemKind kind;
	int64		item_id;
	const char *message;
	TimestampTz at;
} ErrorRecord;

static void
record_error_now(void *arg)
{
	static const char *const node_sql[] = {
		[VB_ITEM_ATTEMPT] = "SELECT node FROM vectorbea.nodes WHERE id = $1",
		[VB_ITEM_GATE] = "SELECT node FROM vectorbea.approvals WHERE id = $1",
	};
	static const char *const postpone_sql[] = {
		[VB_ITEM_ATTEMPT] = "UPDATE vectorbea.nodes SET lease_expires_at = $2"
		" WHERE id = $1 AND status = 'running'",
		[VB_ITEM_RUN] = "UPDATE vectorbea.runs SET deadline = $2 WHERE id = $1",
		[VB_ITEM_GATE] = "UPDATE vectorbea.approvals SET expires_at = $2"
		" WHERE id = $1 AND status = 'pending'",
	};
	ErrorRecord *e = arg;
	TimestampTz retry_at = e->at + (int64) ERROR_RETRY_MS * 1000;
	VbRun		run;
	char	   *node = NULL;
	StringInfoData data;
	Datum		args[2] = {e->kind == VB_ITEM_RUN ? UUIDPGetDatum(e->run_id) : Int64GetDatum(e->item_id),
	TimestampTzGetDatum(retry_at)};
	Oid			types[2] = {e->kind == VB_ITEM_RUN ? UUIDOID : INT8OID, TIMESTAMPTZOID};

	if (!vb_run_lock(e->run_id, &run))
		return;
	if (e->kind != VB_ITEM_RUN &&
		SPI_execute_with_args(node_sql[e->kind], 1, types, args, NULL, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	vb_engine_writes_approvals = true;
	if (SPI_execute_with_args(postpone_sql[e->kind], 2, types, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not postpone a failed item");
	vb_engine_writes_approvals = false;
	initStringInfo(&data);
	appendStringInfoString(&data, "{\"message\":");
	vb_append_json_string(&data, e->message);
	appendStringInfo(&data, ",\"retry_at\":\"%s\"}", vb_timestamp_iso(retry_at));
	vb_event(&run, "SCHEDULER_ERROR", node, 0, data.data, e->at);
	vb_run_save(&run, e->at);
}

/*
 * Records, in the run's history, that the scheduler could not act on an
 * item (an attempt, a run's deadline, a gate's timeout): a SCHEDULER_ERROR
 * event, in a subtransaction of its own so that a failure here is only
 * logged.  The item's due time moves ERROR_RETRY_MS ahead (the attempt's
 * lease end, the run's deadline, the gate's expiry), so a persistent error
 * is retried at that pace rather than on every pass.  The run's row lock,
 * taken by the scan, is still ours.
 */
static void
record_error(pg_uuid_t *run_id, VbSweepItemKind kind, int64 item_id,
			 const char *message, TimestampTz at)
{
	ErrorRecord e = {run_id, kind, item_id, message, at};
	ErrorData  *edata = vb_try_in_subxact(record_error_now, &e);

	vb_engine_writes_approvals = false;
	if (edata)
		FreeErrorData(edata);	/* the item's own error is logged already */
}

typedef struct SweepItem
{
	void		(*fn) (void *, int);
	void	   *arg;
	int			i;
} SweepItem;

static void
run_one(void *arg)
{
	SweepItem  *item = arg;

	item->fn(item->arg, item->i);
}

/*
 * Runs fn(arg, i) for item i in a subtransaction when isolate is set;
 * returns false (after reporting) when it failed.  A failure is logged,
 * counted, and recorded in the item's run by record_error.
 */
static bool
run_item(bool isolate, void (*fn) (void *, int), void *arg, int i,
		 VbSweepCounters *counters, pg_uuid_t *run_id, VbSweepItemKind kind,
		 int64 item_id, TimestampTz at)
{
	SweepItem	item = {fn, arg, i};
	ErrorData  *edata;

	if (!isolate)
	{
		fn(arg, i);
		return true;
	}
	edata = vb_try_in_subxact(run_one, &item);
	if (edata == NULL)
		return true;
	ereport(WARNING,
			(errmsg("vectorbea scheduler: %s", edata->message),
			 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
			 edata->context ? errcontext("%s", edata->context) : 0));
	if (counters)
	{
		counters->errors++;
		strlcpy(counters->last_error, edata->message, sizeof(counters->last_error));
	}
	record_error(run_id, kind, item_id, edata->message, at);
	FreeErrorData(edata);
	return false;
}

/*
 * Reads the rows of the scan just run (SPI_tuptable) into arrays: the
 * item ids from column id_column (skipped when ids is NULL) and the run ids
 * from column run_column.  Returns the number of rows.
 */
uint64
vb_read_due_items(int id_column, int run_column, int64 **ids, pg_uuid_t **run_ids)
{
	uint64		n = SPI_processed;

	if (ids)
		*ids = palloc(sizeof(int64) * Max(n, 1));
	*run_ids = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;

		if (ids)
			(*ids)[i] = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, id_column, &isnull));
		memcpy(&(*run_ids)[i], DatumGetUUIDP(SPI_getbinval(tup, SPI_tuptable->tupdesc, run_column, &isnull)),
			   sizeof(pg_uuid_t));
	}
	return n;
}

/* run_item for other files' sweeps, always isolated. */
bool
vb_sweep_item(void (*fn) (void *, int), void *arg, int i, VbSweepCounters *counters,
			  pg_uuid_t *run_id, VbSweepItemKind kind, int64 item_id, TimestampTz at)
{
	return run_item(true, fn, arg, i, counters, run_id, kind, item_id, at);
}

typedef struct ExpireBatch
{
	int64	   *task_ids;
	pg_uuid_t  *run_ids;
	char	  **classes;
	TimestampTz at;
	int			timeouts;
	int			expired;
} ExpireBatch;

static void
expire_one(void *arg, int i)
{
	ExpireBatch *b = arg;
	VbRun		run;
	bool		timeout = strcmp(b->classes[i], "timeout") == 0;

	/* Held by us already (taken in the scan), so this does not wait. */
	if (!vb_run_lock(&b->run_ids[i], &run) || strcmp(run.status, "running") != 0)
		return;
	vb_fail_attempt(&run, b->task_ids[i], b->classes[i],
					timeout ?
					"{\"message\":\"the attempt ran past the node's timeout\",\"class\":\"timeout\"}" :
					"{\"message\":\"the lease expired before the worker reported\",\"class\":\"lease_expired\"}",
					true, -1, b->at);
	vb_run_save(&run, b->at);
	if (timeout)
		b->timeouts++;
	else
		b->expired++;
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
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	ExpireBatch b;
	uint64		n;

	if (plan == NULL)
	{
		Oid			types[2] = {TEXTARRAYOID, TIMESTAMPTZOID};

		/*
		 * Every claim runs this scan first.  Its one good plan (the small
		 * partial index of running nodes, in expiry order) does not depend
		 * on the parameters, but the plan cache, comparing estimates, kept
		 * planning it afresh on most calls under concurrency (0.2 ms each):
		 * the generic plan is used from the start.
		 */
		plan = vb_prepare_opts("SELECT n.id, n.run_id,"
							   "       CASE WHEN n.attempt_deadline <= n.lease_expires_at"
							   "            THEN 'timeout' ELSE 'lease_expired' END"
							   "  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
							   " WHERE n.status = 'running' AND n.lease_expires_at <= $2"
							   "   AND ($1 IS NULL OR n.activity = ANY ($1))"
							   " ORDER BY n.lease_expires_at LIMIT " CppAsString2(EXPIRE_BATCH)
							   " FOR NO KEY UPDATE OF r SKIP LOCKED"
							   " FOR UPDATE OF n SKIP LOCKED", lengthof(types), types,
							   CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = activities;
	if (activities == (Datum) 0)
		nulls[0] = 'n';
	args[1] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: expired lease scan failed");
	n = SPI_processed;
	if (n == 0)
		return 0;

	memset(&b, 0, sizeof(b));
	b.at = at;
	vb_read_due_items(1, 2, &b.task_ids, &b.run_ids);
	b.classes = palloc(sizeof(char *) * n);
	for (uint64 i = 0; i < n; i++)
		b.classes[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
	for (uint64 i = 0; i < n; i++)
		run_item(isolate, expire_one, &b, (int) i, counters,
				 &b.run_ids[i], VB_ITEM_ATTEMPT, b.task_ids[i], at);
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

	if (!vb_run_lock(&b->run_ids[i], &run) || strcmp(run.status, "running") != 0)
		return;
	vb_fail_run(&run, NULL, "deadline_exceeded", b->at);
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

		plan = vb_prepare("SELECT id FROM vectorbea.runs"
						  " WHERE status = 'running' AND deadline <= $1"
						  " ORDER BY deadline LIMIT " CppAsString2(EXPIRE_BATCH)
						  " FOR NO KEY UPDATE SKIP LOCKED", lengthof(types), types);
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
		run_item(true, deadline_one, &b, (int) i, counters, &b.run_ids[i], VB_ITEM_RUN, 0, at);
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

		retry_plan = vb_prepare("SELECT DISTINCT activity FROM vectorbea.nodes"
								" WHERE status = 'ready' AND attempt > 0"
								"   AND available_at > $1 AND available_at <= $2",
								lengthof(types), types);
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

		plan = vb_prepare("SELECT least("
						  " (SELECT pg_catalog.min(lease_expires_at) FROM vectorbea.nodes WHERE status = 'running'),"
						  " (SELECT pg_catalog.min(available_at) FROM vectorbea.nodes"
						  "   WHERE status = 'ready' AND attempt > 0 AND available_at > $1),"
						  " (SELECT pg_catalog.min(deadline) FROM vectorbea.runs"
						  "   WHERE status = 'running' AND deadline IS NOT NULL),"
						  " (SELECT pg_catalog.min(expires_at) FROM vectorbea.approvals"
						  "   WHERE status = 'pending' AND expires_at IS NOT NULL))",
						  lengthof(types), types);
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
PG_FUNCTION_INFO_V1(vectorbea_run_due_work);
Datum
vectorbea_run_due_work(PG_FUNCTION_ARGS)
{
	VbSweepCounters c;
	TimestampTz now = vb_now();
	char	   *result;

	memset(&c, 0, sizeof(c));
	SPI_connect();
	while (vb_expire_attempts((Datum) 0, now, true, &c) > 0)
		;
	while (vb_fail_overdue_runs(now, &c) > 0)
		;
	while (vb_expire_gates(now, &c) > 0)
		;
	SPI_finish();
	result = psprintf("{\"leases_expired\":%lu,\"timeouts\":%lu,\"deadlines_enforced\":%lu,"
					  "\"gates_expired\":%lu,\"errors\":%lu}",
					  (unsigned long) c.leases_expired, (unsigned long) c.timeouts,
					  (unsigned long) c.deadlines, (unsigned long) c.gates_expired,
					  (unsigned long) c.errors);
	PG_RETURN_JSONB_P(vb_jsonb_from_cstring(result));
}
