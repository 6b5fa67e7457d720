/*-------------------------------------------------------------------------
 *
 * graph.c
 *	  The living graph: adding nodes, releasing dependents, finishing runs.
 *
 * Readiness is a count, not a query: every node carries deps_remaining, the
 * number of its dependencies not yet succeeded.  A finishing node decrements
 * the count of its pending dependents under the run lock, and the one
 * decrement that reaches zero makes the dependent ready.  Two parents
 * finishing at the same time are serialised by the run lock, so a join
 * becomes ready exactly once.
 *
 * Readiness writes no event of its own: replay derives it from the
 * completions, which keeps the history to one event per state change the
 * engine cannot infer.
 *
 * All functions here run inside SPI with the run locked (vb_run_lock).
 *
 * IDENTIFICATION
 *	  src/graph.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "vectorbea.h"

/*
 * NOTIFY vectorbea_tasks with the activity as payload.  PostgreSQL folds
 * identical notifications of one transaction into one, so a transaction
 * that readies many nodes of one activity sends one.  A ready llm node
 * wakes the scheduler instead, which claims it.
 */
void
vb_notify_task_ready(const char *activity)
{
	if (activity && strcmp(activity, VB_LLM_ACTIVITY) == 0)
		vb_wake_scheduler(vb_now());	/* llm nodes are the scheduler's work */
	else if (vb_notify_tasks && activity)
		Async_Notify("vectorbea_tasks", activity);
}

void
vb_notify_run_finished(VbRun *run)
{
	StringInfoData payload;

	if (!vb_notify_runs)
		return;
	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"run\":\"%s\",\"status\":\"%s\"}",
					 vb_uuid_text(&run->id), run->status);
	Async_Notify("vectorbea_runs", payload.data);
}

/*
 * Inserts the nodes of a normalised spec array (vb_node_specs_json) into a
 * locked run.  A node whose dependencies have all succeeded is ready at
 * once.  Returns the number of nodes added and updates the run's counters.
 */
int
vb_insert_nodes(VbRun *run, const char *specs_json, const char *spawned_by,
				int priority, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			added = 0;

	if (plan == NULL)
	{
		Oid			types[5] = {UUIDOID, TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID};

		/*
		 * Dependencies among the nodes added by this statement are not
		 * visible to its own snapshot, so they count as not yet done, which
		 * is right: new nodes have not run.
		 */
		plan = vb_prepare(
						  "WITH spec AS ("
						  "  SELECT s.* FROM pg_catalog.jsonb_to_recordset($2::jsonb) AS s(id text, kind text,"
						  "    activity text, depends_on text[], input jsonb, retry jsonb,"
						  "    timeout_ms bigint, approval jsonb, llm jsonb)"
						  "), ins AS ("
						  "  INSERT INTO vectorbea.nodes (run_id, node, kind, activity, status,"
						  "    depends_on, deps_remaining, input, max_attempts, retry, timeout_ms, approval, llm, priority,"
						  "    available_at, spawned_by, created_at)"
						  "  SELECT $1, s.id, s.kind, s.activity,"
						  "    CASE WHEN d.remaining = 0 THEN 'ready' ELSE 'pending' END,"
						  "    s.depends_on, d.remaining, s.input, (s.retry->>'max_attempts')::int,"
						  "    s.retry, s.timeout_ms, s.approval, s.llm, $3, CASE WHEN d.remaining = 0 THEN $5 END, $4, $5"
						  "  FROM spec s CROSS JOIN LATERAL ("
						  "    SELECT pg_catalog.count(*) FILTER (WHERE e.status IS DISTINCT FROM 'succeeded')::int"
						  "           AS remaining"
						  "      FROM pg_catalog.unnest(s.depends_on) AS dep(id)"
						  "      LEFT JOIN vectorbea.nodes e ON e.run_id = $1 AND e.node = dep.id) d"
						  "  RETURNING activity, status"
						  ")"
						  " SELECT activity, pg_catalog.count(*) FILTER (WHERE status = 'ready'), pg_catalog.count(*)"
						  "   FROM ins GROUP BY activity",
						  5, types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(specs_json);
	args[2] = Int32GetDatum(priority);
	if (spawned_by)
		args[3] = CStringGetTextDatum(spawned_by);
	else
		nulls[3] = 'n';
	args[4] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not insert nodes");

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		ready = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));

		added += (int) DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
		if (ready == 0)
			continue;
		/* Only approval nodes have no activity: their gates open next. */
		if (SPI_getvalue(tup, SPI_tuptable->tupdesc, 1) == NULL)
			run->gates_pending = true;
		else
			vb_notify_task_ready(SPI_getvalue(tup, SPI_tuptable->tupdesc, 1));
	}
	run->open_nodes += added;
	run->node_count += added;
	return added;
}

/*
 * node has just succeeded: one dependency fewer for each pending dependent,
 * and those with none left become ready.
 */
void
vb_release_dependents(VbRun *run, const char *node, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];

	if (plan == NULL)
	{
		Oid			types[3] = {UUIDOID, TEXTOID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.nodes"
						  "   SET deps_remaining = deps_remaining - 1,"
						  "       status = CASE WHEN deps_remaining = 1 THEN 'ready' ELSE status END,"
						  "       available_at = CASE WHEN deps_remaining = 1 THEN $3 ELSE available_at END"
						  " WHERE run_id = $1 AND status = 'pending' AND $2 = ANY (depends_on)"
						  " RETURNING activity, status",
						  3, types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(node);
	args[2] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not release dependents of \"%s\"", node);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		char	   *status = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);

		if (strcmp(status, "ready") != 0)
			continue;
		if (SPI_getvalue(tup, SPI_tuptable->tupdesc, 1) == NULL)
			run->gates_pending = true;
		else
			vb_notify_task_ready(SPI_getvalue(tup, SPI_tuptable->tupdesc, 1));
	}
}

/*
 * Closes every open node of the run: those not started take idle_status,
 * running ones take running_status and so lose their lease, which refuses
 * their late results.  Returns
 * JSON arrays of the closed node ids: those that had not started, and those
 * whose lease was revoked.
 */
void
vb_close_open_nodes(VbRun *run, const char *idle_status, const char *running_status,
					TimestampTz at, char **closed_json, char **revoked_json)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, TEXTOID};

		plan = vb_prepare("WITH open AS ("
						  "  SELECT id, status FROM vectorbea.nodes"
						  "   WHERE run_id = $1 AND status IN ('pending', 'ready', 'running', 'waiting')"
						  "   FOR UPDATE"
						  "), closed AS ("
						  "  UPDATE vectorbea.nodes n"
						  "     SET status = CASE WHEN open.status = 'running' THEN $4 ELSE $2 END,"
						  "         finished_at = $3"
						  "    FROM open WHERE n.id = open.id"
						  "  RETURNING n.node, n.kind, open.status AS was"
						  ")"
						  " SELECT coalesce(pg_catalog.jsonb_agg(node ORDER BY node) FILTER (WHERE was <> 'running'), '[]')::text,"
						  "        coalesce(pg_catalog.jsonb_agg(node ORDER BY node) FILTER (WHERE was = 'running'), '[]')::text,"
						  "        pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE was = 'running' AND kind = 'llm')"
						  "   FROM closed",
						  4, types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(idle_status);
	args[2] = TimestampTzGetDatum(at);
	args[3] = CStringGetTextDatum(running_status);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not close the nodes of a run");
	*closed_json = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	*revoked_json = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	run->open_nodes -= (int32) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 3,
														   &isnull));
	/* The scheduler drops the revoked llm calls it has in flight. */
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)) > 0)
		vb_wake_scheduler(at);
}

/* Sets the run's final status, writes its closing event and tells listeners. */
void
vb_end_run(VbRun *run, const char *status, const char *event_type,
		   const char *data_json, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];

	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, TEXTOID};

		plan = vb_prepare("UPDATE vectorbea.runs SET status = $2, finished_at = $3,"
						  " error = $4::jsonb WHERE id = $1", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(status);
	args[2] = TimestampTzGetDatum(at);
	args[3] = CStringGetTextDatum(strcmp(status, "succeeded") == 0 ? "null" : data_json);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not finish run");
	run->status = pstrdup(status);
	vb_event(run, event_type, NULL, 0, data_json, at);
	if (strcmp(status, "succeeded") != 0)
		vb_close_gates(run, at);
	vb_notify_run_finished(run);
}

/*
 * A node has succeeded (its row is already updated): STEP_COMPLETED, and
 * its pending dependents are released.  usage_json may be NULL.
 */
void
vb_node_succeeded(VbRun *run, const char *node, int attempt, const char *output_json,
				  int64 duration_ms, const char *usage_json, TimestampTz at)
{
	StringInfoData data;

	initStringInfo(&data);
	appendStringInfo(&data, "{\"output\":%s,\"duration_ms\":%ld",
					 output_json ? output_json : "null", (long) duration_ms);
	if (usage_json)
		appendStringInfo(&data, ",\"usage\":%s", usage_json);
	appendStringInfoChar(&data, '}');
	vb_event(run, "STEP_COMPLETED", node, attempt, data.data, at);
	vb_release_dependents(run, node, at);
}

/* A run whose nodes are all final, none of them failed, has succeeded. */
void
vb_finish_run_if_done(VbRun *run, TimestampTz at)
{
	if (run->open_nodes == 0 && strcmp(run->status, "running") == 0)
	{
		char	   *data = psprintf("{\"duration_ms\":%ld,\"nodes\":%d}",
									(long) ((at - run->created_at) / 1000),
									run->node_count);

		vb_end_run(run, "succeeded", "RUN_COMPLETED", data, at);
	}
}
