/*-------------------------------------------------------------------------
 *
 * events.c
 *	  The run lock and the append-only event history.
 *
 * A run's events are numbered 1, 2, 3 ... with no gaps, in commit order.
 * That falls out of one rule: the counter lives on the run's row, and a
 * transaction takes that row lock (vb_run_lock) before it numbers an event.
 * Two transactions of the same run therefore number and commit one after the
 * other, and a rolled-back transaction gives its numbers back.  The counter
 * is kept in the VbRun struct while the lock is held and written back once,
 * by vb_run_save, so an API call updates the run row once however many
 * events it writes.
 *
 * All callers run inside SPI (connected by the SQL entry point).
 *
 * IDENTIFICATION
 *	  src/events.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "vectorbea.h"

/* Engine event types: append_event may not forge these. */
static const char *const engine_event_types[] = {
	"RUN_STARTED", "STEP_STARTED", "STEP_COMPLETED", "STEP_FAILED",
	"STEP_RETRIED", "NODES_SPAWNED", "APPROVAL_REQUESTED", "APPROVAL_GRANTED",
	"APPROVAL_REJECTED", "APPROVAL_ESCALATED", "APPROVAL_EXPIRED",
	"RUN_CHECKPOINTED", "LLM_REQUESTED", "LLM_CALLED", "SELF_CORRECTION", "BUDGET_EXCEEDED",
	"RATE_LIMITED", "RUN_CANCELLED", "COMPENSATION_STARTED", "RUN_COMPLETED",
	"RUN_FAILED", "SCHEDULER_ERROR", NULL
};

SPIPlanPtr
vb_prepare(const char *sql, int nargs, Oid *argtypes)
{
	return vb_prepare_opts(sql, nargs, argtypes, 0);
}

/*
 * As vb_prepare, with cursor options: CURSOR_OPT_GENERIC_PLAN for a hot
 * statement whose generic plan is known to be right, so that it is never
 * planned again per call.
 */
SPIPlanPtr
vb_prepare_opts(const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

	if (plan == NULL)
		elog(ERROR, "vectorbea: could not prepare statement: %s\n%s",
			 SPI_result_code_string(SPI_result), sql);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "vectorbea: could not keep prepared statement");
	return plan;
}

static void
fill_run(VbRun *run, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;

	memcpy(&run->id, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)),
		   sizeof(pg_uuid_t));
	run->status = SPI_getvalue(tup, desc, 2);
	run->workflow = SPI_getvalue(tup, desc, 3);
	run->workflow_version = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	run->last_seq = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	run->open_nodes = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	run->node_count = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
	run->created_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 8, &isnull));
	run->priority = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
	run->gates_pending = false;
}

#define RUN_COLUMNS "id, status, workflow, workflow_version, last_seq, open_nodes, node_count, created_at, priority"

/*
 * Runs one of the run-locking statements below (prepared once into *plan)
 * and fills run; false when it returned no row.
 */
static bool
lock_run_with(SPIPlanPtr *plan, const char *sql, Oid argtype, Datum arg, VbRun *run)
{
	Datum		args[1] = {arg};

	if (*plan == NULL)
		*plan = vb_prepare(sql, 1, &argtype);
	if (SPI_execute_plan(*plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: run lock failed");
	if (SPI_processed == 0)
		return false;
	fill_run(run, SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	return true;
}

/* Locks the run's row; false when there is no such run. */
bool
vb_run_lock(pg_uuid_t *run_id, VbRun *run)
{
	static SPIPlanPtr plan = NULL;

	return lock_run_with(&plan, "SELECT " RUN_COLUMNS " FROM vectorbea.runs"
						 " WHERE id = $1 FOR NO KEY UPDATE",
						 UUIDOID, UUIDPGetDatum(run_id), run);
}

/* Locks the run that task_id belongs to; false when there is no such task. */
bool
vb_run_lock_for_task(int64 task_id, VbRun *run)
{
	static SPIPlanPtr plan = NULL;

	return lock_run_with(&plan, "SELECT " RUN_COLUMNS " FROM vectorbea.runs"
						 " WHERE id = (SELECT run_id FROM vectorbea.nodes WHERE id = $1)"
						 " FOR NO KEY UPDATE",
						 INT8OID, Int64GetDatum(task_id), run);
}

/* Locks the run's row if nobody holds it; false when busy (or missing). */
bool
vb_run_try_lock(pg_uuid_t *run_id, VbRun *run)
{
	static SPIPlanPtr plan = NULL;

	return lock_run_with(&plan, "SELECT " RUN_COLUMNS " FROM vectorbea.runs"
						 " WHERE id = $1 FOR NO KEY UPDATE SKIP LOCKED",
						 UUIDOID, UUIDPGetDatum(run_id), run);
}

/*
 * Appends one event to a locked run and returns its sequence number.
 * data_json is JSON text (NULL for {}); node may be NULL, attempt 0 for none.
 */
int64
vb_event(VbRun *run, const char *type, const char *node, int attempt,
		 const char *data_json, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	if (plan == NULL)
	{
		Oid			types[7] = {UUIDOID, INT8OID, TEXTOID, TEXTOID, INT4OID,
		TEXTOID, TIMESTAMPTZOID};

		plan = vb_prepare("INSERT INTO vectorbea.events"
						  " (run_id, seq, type, node, attempt, data, at)"
						  " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)", lengthof(types), types);
	}
	run->last_seq++;
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = Int64GetDatum(run->last_seq);
	args[2] = CStringGetTextDatum(type);
	if (node)
		args[3] = CStringGetTextDatum(node);
	else
		nulls[3] = 'n';
	args[4] = Int32GetDatum(attempt);
	if (attempt <= 0)
		nulls[4] = 'n';
	args[5] = CStringGetTextDatum(data_json ? data_json : "{}");
	args[6] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "vectorbea: could not append event %s", type);
	return run->last_seq;
}

/* Writes the counters kept in memory back to the locked run row. */
void
vb_run_save(VbRun *run, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];

	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, INT8OID, INT4OID, INT4OID};

		plan = vb_prepare("UPDATE vectorbea.runs SET last_seq = $2, open_nodes = $3,"
						  " node_count = $4 WHERE id = $1", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = Int64GetDatum(run->last_seq);
	args[2] = Int32GetDatum(run->open_nodes);
	args[3] = Int32GetDatum(run->node_count);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not save run counters");
}

bool
vb_event_type_reserved(const char *type)
{
	/* APPROVAL_granted would read as the engine's event in any report. */
	for (const char *const *t = engine_event_types; *t; t++)
		if (pg_strcasecmp(*t, type) == 0)
			return true;
	return false;
}

static bool
valid_event_type(const char *type)
{
	size_t		len = strlen(type);

	if (len == 0 || len > 64 || !isalpha((unsigned char) type[0]))
		return false;
	for (const char *p = type; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '.' || *p == ':' || *p == '-'))
			return false;
	return true;
}

/*
 * append_event(run uuid, type text, data jsonb, node text) -> bigint
 *
 * Custom events (agent notes, tool calls) share the run's sequence.  Engine
 * types are refused: replay trusts them to come from the engine.
 */
PG_FUNCTION_INFO_V1(vectorbea_append_event);
Datum
vectorbea_append_event(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *run_id;
	char	   *type;
	Jsonb	   *data;
	char	   *node = NULL;
	VbRun		run;
	int64		seq;
	TimestampTz at = vb_now();

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run and type of an event must not be null")));
	run_id = PG_GETARG_UUID_P(0);
	type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	data = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	if (!PG_ARGISNULL(3))
		node = text_to_cstring(PG_GETARG_TEXT_PP(3));

	if (!valid_event_type(type))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid event type \"%s\"", type),
				 errdetail("Event types are 1 to 64 characters, start with a letter, and use letters, digits, \"_\", \".\", \":\" or \"-\".")));
	if (vb_event_type_reserved(type))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("event type \"%s\" is reserved for the engine", type),
				 errhint("Choose another name for custom events, e.g. \"AGENT_NOTE\".")));
	if (data && !JsonContainerIsObject(&data->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event data must be a JSON object")));
	vb_check_payload_size(data, "the event data");

	SPI_connect();
	if (!vb_run_lock(run_id, &run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist",
						DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(run_id))))));
	if (node)
	{
		Datum		args[2] = {UUIDPGetDatum(run_id), CStringGetTextDatum(node)};
		Oid			types[2] = {UUIDOID, TEXTOID};

		if (SPI_execute_with_args("SELECT 1 FROM vectorbea.nodes WHERE run_id = $1 AND node = $2",
								  2, types, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: node lookup failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the run has no node \"%s\"", node),
					 errhint("Pass the id of one of the run's nodes, or NULL for an event of the whole run.")));
	}
	seq = vb_event(&run, type, node, 0,
				   data ? JsonbToCString(NULL, &data->root, VARSIZE(data)) : "{}", at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_INT64(seq);
}
