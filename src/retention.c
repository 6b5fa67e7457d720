/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Retention: finished runs older than a cut-off are deleted, with their
 *	  nodes, events and approvals, a bounded batch at a time.
 *
 * The history is append-only: triggers refuse UPDATE, DELETE and TRUNCATE
 * on events, and DELETE on approvals (and so on runs, whose approvals
 * cascade), for every role.  Purging is the one engine path past them:
 * its one statement runs through vb_execute_purge() (append_only.c),
 * which the triggers let delete events and approvals.  The statement
 * deletes from every table explicitly, so the foreign keys' cascades,
 * which fire after it, find nothing left.  A running run is never purged.
 * What was purged is counted in vectorbea.purge_batches, an audit that
 * writes no event (the runs' events are what is gone).
 *
 * purge_runs() purges one batch in the caller's transaction, so a batch's
 * locks last as long as that transaction: call it again until it returns
 * 0.  With vectorbea.retention set, the scheduler purges one batch a pass,
 * bounded by its events too (vectorbea.retention_batch_events).
 *
 * IDENTIFICATION
 *	  src/retention.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "vectorbea.h"
#include "append_only.h"
#include "caller.h"
#include "clock.h"
#include "jsonb_util.h"
#include "retention.h"
#include "spi_util.h"

#define MAX_PURGE_BATCH		10000
/* older_than beyond this would take the cut-off before the first timestamp. */
#define MAX_OLDER_THAN_YEARS	1000

static const char *const finished_statuses[] = {"succeeded", "failed", "cancelled", NULL};

/* Whether this database has the audit table (it came with 0.2.0). */
bool
vb_retention_available(void)
{
	return OidIsValid(get_relname_relid("purge_batches",
										get_namespace_oid("vectorbea", true)));
}

/*
 * Deletes up to max_runs runs with a status in statuses (a text[] of
 * finished statuses) that finished before `before`, with their nodes,
 * events and approvals, and records the batch.  The oldest runs go first,
 * as many as have at most max_events events together, and at least one
 * (a run with more is purged alone): a run's events, and its nodes with
 * them, are what a purge's time, locks and WAL grow with, and runs of ten
 * thousand tasks would make a batch of 500 runs last for minutes.  Runs
 * locked by others are skipped.  Inside
 * SPI; returns the number of runs purged, and sets *more when the batch
 * stopped at a bound (older runs may be left).
 */
int
vb_purge_batch(ArrayType *statuses, TimestampTz before, int max_runs, int64 max_events,
			   const char *by, TimestampTz at, bool *more)
{
	static SPIPlanPtr victims_plan = NULL;
	static SPIPlanPtr purge_plan = NULL;
	static SPIPlanPtr audit_plan = NULL;
	Datum		args[6];
	int64		runs;
	int64		locked;
	bool		isnull;
	HeapTuple	tup;

	/*
	 * Two statements, the runs and then their rows, each with one plan for
	 * every batch: the scheduler purges at the end of most passes under a
	 * steady load.  A purge that took its runs from a CTE of its own was
	 * planned again at every call once the tables grew, the plan cache
	 * finding a generic plan that reads the whole history for a victim
	 * list of unknown length dearer; an array of ids makes every delete an
	 * index lookup, whatever the statistics.
	 */
	if (purge_plan == NULL)
	{
		Oid			t4[4] = {TEXTARRAYOID, TIMESTAMPTZOID, INT4OID, INT8OID};
		Oid			t1[1] = {UUIDARRAYOID};
		Oid			t6[6] = {TIMESTAMPTZOID, INT8OID, INT8OID, INT8OID, INT8OID, TEXTOID};

		/* last_seq is the run's number of events. */
		victims_plan = vb_prepare_opts("SELECT pg_catalog.array_agg(id) FILTER (WHERE oldest OR events_upto <= $4),"
									   "       pg_catalog.count(*)"
									   "  FROM (SELECT id,"
									   "               pg_catalog.row_number() OVER w = 1 AS oldest,"
									   "               pg_catalog.sum(last_seq) OVER w AS events_upto"
									   "          FROM (SELECT id, finished_at, last_seq FROM vectorbea.runs"
									   "                 WHERE status = ANY ($1) AND finished_at < $2"
									   "                 ORDER BY finished_at LIMIT $3"
									   "                 FOR UPDATE SKIP LOCKED) locked"
									   "        WINDOW w AS (ORDER BY finished_at, id ROWS UNBOUNDED PRECEDING)) victim",
									   lengthof(t4), t4, CURSOR_OPT_GENERIC_PLAN);
		purge_plan = vb_prepare_opts("WITH ev AS ("
									 "  DELETE FROM vectorbea.events WHERE run_id = ANY ($1)"
									 "  RETURNING 1"
									 "), av AS ("
									 "  DELETE FROM vectorbea.approval_votes WHERE approval_id IN"
									 "    (SELECT id FROM vectorbea.approvals WHERE run_id = ANY ($1))"
									 "), sg AS ("
									 "  DELETE FROM vectorbea.signals WHERE run_id = ANY ($1)"
									 "), ap AS ("
									 "  DELETE FROM vectorbea.approvals WHERE run_id = ANY ($1)"
									 "  RETURNING 1"
									 "), nd AS ("
									 "  DELETE FROM vectorbea.nodes WHERE run_id = ANY ($1)"
									 "  RETURNING 1"
									 "), rn AS ("
									 "  DELETE FROM vectorbea.runs WHERE id = ANY ($1)"
									 "  RETURNING 1"
									 ")"
									 " SELECT (SELECT pg_catalog.count(*) FROM rn), (SELECT pg_catalog.count(*) FROM nd),"
									 "        (SELECT pg_catalog.count(*) FROM ev), (SELECT pg_catalog.count(*) FROM ap)",
									 lengthof(t1), t1, CURSOR_OPT_GENERIC_PLAN);
		audit_plan = vb_prepare("INSERT INTO vectorbea.purge_batches"
								" (purged_at, runs, nodes, events, approvals, purged_by)"
								" VALUES ($1, $2, $3, $4, $5, $6)", lengthof(t6), t6);
	}
	args[0] = PointerGetDatum(statuses);
	args[1] = TimestampTzGetDatum(before);
	args[2] = Int32GetDatum(max_runs);
	args[3] = Int64GetDatum(max_events);
	*more = false;
	if (SPI_execute_plan(victims_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: purge lookup failed");
	locked = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	args[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return 0;				/* most of the scheduler's passes */

	/* The one path past the append-only triggers. */
	vb_execute_purge(purge_plan, args);

	tup = SPI_tuptable->vals[0];
	runs = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
	if (runs == 0)
		return 0;
	*more = locked == max_runs || runs < locked;
	args[0] = TimestampTzGetDatum(at);
	for (int i = 0; i < 4; i++)
		args[i + 1] = SPI_getbinval(tup, SPI_tuptable->tupdesc, i + 1, &isnull);
	args[5] = CStringGetTextDatum(by);
	if (SPI_execute_plan(audit_plan, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "vectorbea: could not record a purge batch");
	return (int) runs;
}

/* The finished statuses, as a text[] for vb_purge_batch. */
ArrayType *
vb_finished_statuses(void)
{
	Datum		names[3];

	for (int i = 0; i < 3; i++)
		names[i] = CStringGetTextDatum(finished_statuses[i]);
	return construct_array(names, 3, TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * purge_runs(older_than interval, statuses text[], max_runs integer)
 *   -> integer
 */
static Datum
purge_runs_as_owner(PG_FUNCTION_ARGS)
{
	Interval   *older_than;
	Interval	zero = {0};
	Interval	longest = {.month = MAX_OLDER_THAN_YEARS * MONTHS_PER_YEAR};
	ArrayType  *statuses;
	int32		max_runs;
	TimestampTz at = vb_now();
	TimestampTz before;
	Datum	   *names;
	bool	   *nulls;
	int			n;
	int			purged;
	bool		more;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("older_than, statuses and max_runs must not be null")));
	older_than = PG_GETARG_INTERVAL_P(0);
	statuses = PG_GETARG_ARRAYTYPE_P(1);
	max_runs = PG_GETARG_INT32(2);

	/* compared as PostgreSQL compares intervals: '1 day -1 hour' is 23 hours */
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(older_than),
										  IntervalPGetDatum(&zero))) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than must be positive"),
				 errdetail("Found %s.", DatumGetCString(DirectFunctionCall1(interval_out,
																			IntervalPGetDatum(older_than)))),
				 errhint("Pass how long finished runs are kept, e.g. '30 days'.")));
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(older_than),
										  IntervalPGetDatum(&longest))) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("older_than must be at most 1000 years"),
				 errdetail("Found %s.", DatumGetCString(DirectFunctionCall1(interval_out,
																			IntervalPGetDatum(older_than)))),
				 errhint("Pass how long finished runs are kept, e.g. '30 days'.")));
	if (max_runs < 1 || max_runs > MAX_PURGE_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_runs must be between 1 and %d", MAX_PURGE_BATCH),
				 errdetail("Found %d.", max_runs),
				 errhint("Purge in batches: call purge_runs again until it returns 0.")));
	deconstruct_array(statuses, TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("statuses must not be empty"),
				 errhint("Pass some of: succeeded, failed, cancelled.")));
	for (int i = 0; i < n; i++)
	{
		const char *status;
		bool		known = false;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("statuses must not contain nulls"),
					 errhint("Pass some of: succeeded, failed, cancelled.")));
		status = TextDatumGetCString(names[i]);
		for (const char *const *f = finished_statuses; *f; f++)
			if (strcmp(*f, status) == 0)
				known = true;
		if (known)
			continue;
		if (strcmp(status, "running") == 0 || strcmp(status, "compensating") == 0 ||
			strcmp(status, "paused") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("runs that are %s are never purged", status),
					 errhint("Only finished runs are: succeeded, failed, cancelled.")));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown run status \"%s\" in statuses", vb_short_text(status)),
				 errdetail("Finished runs are succeeded, failed or cancelled.")));
	}
	before = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													 TimestampTzGetDatum(at),
													 IntervalPGetDatum(older_than)));

	SPI_connect();
	purged = vb_purge_batch(statuses, before, max_runs, PG_INT64_MAX,
							vb_caller_name(), at, &more);
	SPI_finish();
	PG_RETURN_INT32(purged);
}

PG_FUNCTION_INFO_V1(vectorbea_purge_runs);
Datum
vectorbea_purge_runs(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, purge_runs_as_owner);
}
