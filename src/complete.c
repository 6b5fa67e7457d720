/*-------------------------------------------------------------------------
 *
 * complete.c
 *	  complete_task and save_checkpoint: results a worker hands back.
 *
 * complete_task does, in its caller's transaction: the fenced success of
 * the attempt (lease and status in the WHERE clause, state.c), the
 * validation and insertion of spawned nodes with NODES_SPAWNED, the
 * booking of usage against the run's budget, and the end of the run when
 * nothing is left open.  Either all of it commits or none.
 *
 * Dependents are released before spawned nodes are added: a spawned node
 * that depends on the node being completed counts it as done when it is
 * inserted, and must not be released a second time.
 *
 * IDENTIFICATION
 *	  src/complete.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "vectorbea.h"
#include "caller.h"
#include "clock.h"
#include "crashpoint.h"
#include "complete.h"
#include "jsonb_util.h"
#include "lease.h"
#include "spi_util.h"
#include "state.h"
#include "usage.h"
#include "validate.h"

/*
 * The normalised specs of node's spawn list, validated against the run's
 * definition and its nodes; NULL when the list adds nothing.  Of the run's
 * nodes only those the list names (as an id or a dependency, read from it
 * leniently: validation reports a malformed list) are looked up, by the
 * key (run_id, node); how many the run has is its counter.  For a repeated
 * completion (again), the nodes that node's completion spawned are left
 * out of the run's, so that the same list validates the same.
 */
static char *
spawn_specs(VbRun *run, Jsonb *spawn, const char *node, bool again)
{
	static SPIPlanPtr plan = NULL;
	Datum		rargs[5] = {UUIDPGetDatum(&run->id), CStringGetTextDatum(run->workflow),
		Int32GetDatum(run->workflow_version), again ? CStringGetTextDatum(node) : (Datum) 0,
	JsonbPGetDatum(spawn)};
	char		rnulls[5] = {' ', ' ', ' ', again ? ' ' : 'n', ' '};
	VbExistingNodes existing = {0};
	Jsonb	   *definition;
	List	   *specs;
	char	   *specs_json;
	bool		isnull;
	Datum		arr;

	if (plan == NULL)
	{
		Oid			rtypes[5] = {UUIDOID, TEXTOID, INT4OID, TEXTOID, JSONBOID};

		/*
		 * Generic: the plan cache found the generic plan dearer than the
		 * custom ones (it cannot see how few ids the list names) and planned
		 * every spawn again, 112 us for 25 us of execution.
		 */
		plan = vb_prepare_opts("WITH named AS ("
							   "  SELECT v #>> '{}' AS id"
							   "    FROM pg_catalog.jsonb_path_query($5, 'lax $[*].id') AS v"
							   "   WHERE pg_catalog.jsonb_typeof(v) = 'string'"
							   "  UNION"
							   "  SELECT v #>> '{}'"
							   "    FROM pg_catalog.jsonb_path_query($5, 'lax $[*].depends_on[*]') AS v"
							   "   WHERE pg_catalog.jsonb_typeof(v) = 'string'"
							   ")"
							   " SELECT w.definition,"
							   "        (SELECT pg_catalog.array_agg(n.node) FROM vectorbea.nodes n"
							   "          WHERE n.run_id = $1 AND n.node = ANY (ARRAY(SELECT id FROM named))"
							   "            AND ($4 IS NULL OR n.spawned_by IS DISTINCT FROM $4))::text[],"
							   "        CASE WHEN $4 IS NULL THEN 0"
							   "             ELSE (SELECT pg_catalog.count(*) FROM vectorbea.nodes n"
							   "                    WHERE n.run_id = $1 AND n.spawned_by = $4) END"
							   "   FROM vectorbea.workflows w WHERE w.name = $2 AND w.version = $3",
							   lengthof(rtypes), rtypes, CURSOR_OPT_GENERIC_PLAN);
	}
	if (SPI_execute_plan(plan, rargs, rnulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: definition of run %s is missing", vb_uuid_text(&run->id));
	definition = DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	arr = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
	{
		Datum	   *elems;

		deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, NULL, &existing.named_count);
		existing.named_ids = palloc(sizeof(char *) * Max(existing.named_count, 1));
		for (int i = 0; i < existing.named_count; i++)
			existing.named_ids[i] = TextDatumGetCString(elems[i]);
	}
	existing.count = run->node_count -
		(int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	specs = vb_validate_spawn(spawn, definition, node, &existing);
	if (specs == NIL)
		return NULL;
	specs_json = vb_node_specs_json(specs);
	/* as define_workflow checks a definition's */
	vb_check_child_workflows(run->workflow, specs_json, "spawn list", false);
	return specs_json;
}

/*
 * The nodes a completion spawns: validated against the run's definition and
 * its existing nodes, added, and recorded in NODES_SPAWNED.
 */
static void
add_spawned(VbRun *run, Jsonb *spawn, const char *node, int attempt, TimestampTz at)
{
	char	   *specs_json = spawn_specs(run, spawn, node, false);

	if (specs_json == NULL)
		return;
	vb_event(run, "NODES_SPAWNED", node, attempt, psprintf("{\"nodes\":%s}", specs_json), at);
	vb_state_add_nodes(run, specs_json, node, at);
	vb_crash_point(VB_CRASH_SPAWNING);	/* tests only */
}

/*
 * Whether json (NULL: none) is what node's attempt recorded as key in the
 * data of its event type (missing, when not NULL, stands for a key the
 * event does not have): a repeated completion whose spawn list
 * (NODES_SPAWNED nodes) or usage (STEP_COMPLETED usage) differs from its
 * completion's would be dropped unseen.
 */
static bool
same_as_recorded(VbRun *run, const char *type, const char *key, const char *json,
				 const char *missing, const char *node, int attempt)
{
	Datum		args[7] = {UUIDPGetDatum(&run->id), CStringGetTextDatum(node), Int32GetDatum(attempt),
		CStringGetTextDatum(type), CStringGetTextDatum(key),
		json ? CStringGetTextDatum(json) : (Datum) 0,
	missing ? CStringGetTextDatum(missing) : (Datum) 0};
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', json ? ' ' : 'n', missing ? ' ' : 'n'};
	bool		isnull;

	if (SPI_execute_with_args("SELECT $6::jsonb IS NOT DISTINCT FROM coalesce(("
							  "  SELECT data->$5 FROM vectorbea.events"
							  "   WHERE run_id = $1 AND type = $4 AND node = $2 AND attempt = $3), $7::jsonb)",
							  lengthof(args), (Oid[]) {UUIDOID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID},
							  args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not read the %s of node \"%s\"", type, node);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * A completion that matched no running node: a repeat of the call that
 * succeeded (a no-op), the same lease with another output, another spawn
 * list or another usage (an error), or a stale lease (refused).  A repeat
 * without a spawn list or usage (SQL NULL) loses nothing and is not
 * compared (run may then be NULL); an empty usage ({}) is compared as no
 * amounts, like a completion that reported none.
 */
static void
not_running(VbRun *run, int64 task_id, pg_uuid_t *lease, Jsonb *output, Jsonb *spawn,
			const char *usage_json)
{
	Datum		args[3] = {Int64GetDatum(task_id), UUIDPGetDatum(lease),
	output ? JsonbPGetDatum(output) : (Datum) 0};
	char		nulls[3] = {' ', ' ', output ? ' ' : 'n'};
	Oid			types[3] = {INT8OID, UUIDOID, JSONBOID};
	bool		isnull;
	bool		same_output;
	char	   *node;
	int			attempt;

	if (SPI_execute_with_args("SELECT output IS NOT DISTINCT FROM $3, node, attempt FROM vectorbea.nodes"
							  " WHERE id = $1 AND lease = $2 AND status = 'succeeded'",
							  3, types, args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: task lookup failed");
	if (SPI_processed == 0)
		vb_refuse_lease(task_id, lease, "complete");
	same_output = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	if (!same_output)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task %ld was already completed with a different output", (long) task_id),
				 errdetail("A completion is final; repeating it is allowed only with the same output."),
				 errhint("Record further results with vectorbea.append_event().")));
	if (spawn && !same_as_recorded(run, "NODES_SPAWNED", "nodes",
								   spawn_specs(run, spawn, node, true), NULL, node, attempt))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task %ld was already completed with a different spawn list", (long) task_id),
				 errdetail("Node \"%s\" spawned its nodes when it completed; a repeated completion adds none.",
						   vb_short_text(node)),
				 errhint("Add further nodes from the nodes that run next, with their own spawn lists.")));
	if (usage_json && !same_as_recorded(run, "STEP_COMPLETED", "usage", usage_json,
										VB_USAGE_NONE_JSON, node, attempt))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task %ld was already completed with a different usage", (long) task_id),
				 errdetail("Node \"%s\" booked its usage when it completed; a repeated completion books none.",
						   vb_short_text(node)),
				 errhint("Repeat the completion with the usage it was first reported with.")));
}

/*
 * Completes task_id with lease in a locked run, all of it in the caller's
 * transaction: the attempt succeeds (STEP_COMPLETED), its dependents are
 * released, the nodes it spawns are validated and added (NODES_SPAWNED),
 * its usage is booked, and the run ends when nothing is left open.  The
 * same call repeated after success is a no-op; a lease that no longer
 * holds the task is refused.  complete_task, complete_tasks (for items
 * with spawn or usage) and the llm driver call this.  True when the attempt
 * succeeded here, false for a repeat of a completion.
 */
bool
vb_complete_locked(VbRun *run, int64 task_id, pg_uuid_t *lease, Jsonb *output,
				   Jsonb *spawn, Jsonb *usage, TimestampTz at)
{
	VbUsage		u;
	char	   *node;
	int			attempt;
	char	   *usage_json;

	vb_usage_parse(usage, &u);
	usage_json = vb_usage_json(&u);
	if (!vb_state_succeed(run, task_id, lease, output, usage_json, at, &node, &attempt))
	{
		/* a repeat is checked as it is, whatever the run does since */
		not_running(run, task_id, lease, output, spawn,
					usage == NULL ? NULL : usage_json ? usage_json : VB_USAGE_NONE_JSON);
		return false;
	}
	/*
	 * While a run is undone only its compensations run, one after another:
	 * a node spawned then would never start, or would wait for nodes that
	 * were skipped, and the run would never end.  The error undoes the
	 * success above with the rest of the call.
	 */
	if (spawn && run->status == VB_RUN_COMPENSATING)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task %ld cannot spawn nodes: its run %s is compensating",
						(long) task_id, vb_uuid_text(&run->id)),
				 errdetail("While a run is undone, only its compensation nodes run."),
				 errhint("Complete the compensation without spawn; record what it did with vectorbea.append_event().")));
	if (spawn)
		add_spawned(run, spawn, node, attempt, at);
	vb_usage_book(run, &u, node, attempt, at);
	vb_state_finish_run_if_done(run, at);
	return true;
}

/*
 * complete_task(task_id bigint, lease uuid, output jsonb, spawn jsonb,
 *               usage jsonb) -> void
 */
static Datum
complete_task_as_owner(PG_FUNCTION_ARGS)
{
	int64		task_id;
	pg_uuid_t  *lease;
	Jsonb	   *output;
	Jsonb	   *spawn;
	Jsonb	   *usage;
	TimestampTz at = vb_now();
	VbRun		run;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_id and lease must not be null")));
	task_id = PG_GETARG_INT64(0);
	lease = PG_GETARG_UUID_P(1);
	output = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	spawn = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	usage = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	vb_check_payload_size(output, "the task output");
	vb_usage_parse(usage, &(VbUsage) {0});

	SPI_connect();
	vb_lock_run_of_task(task_id, &run);
	vb_complete_locked(&run, task_id, lease, output, spawn, usage, at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(vectorbea_complete_task);
Datum
vectorbea_complete_task(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, complete_task_as_owner);
}

/* The elements of a one-dimensional array argument, or an error naming it. */
static Datum *
array_items(ArrayType *array, Oid type, int16 typlen, bool typbyval, char typalign,
			const char *name, int expected, bool nulls_allowed, bool **nulls)
{
	Datum	   *items;
	int			count;

	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s must be a one-dimensional array", name),
				 errdetail("Found %d dimensions.", ARR_NDIM(array))));
	if (!nulls_allowed && array_contains_nulls(array))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain nulls", name)));
	deconstruct_array(array, type, typlen, typbyval, typalign, &items, nulls, &count);
	if (expected >= 0 && count != expected)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("%s has %d elements, task_ids has %d", name, count, expected),
				 errhint("Pass one element per task, in the order of task_ids (NULL where there is none).")));
	return items;
}

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y;
}

/* The item of complete_tasks being checked or completed, for messages. */
typedef struct BatchItem
{
	int			index;			/* 0-based; -1 between items */
	int			count;
	Datum	   *task_ids;
} BatchItem;

/* Names the item an error of complete_tasks is about (its CONTEXT line). */
static void
batch_item_context(void *arg)
{
	BatchItem  *item = arg;

	if (item->index >= 0)
		errcontext("complete_tasks item %d of %d (task %ld)", item->index + 1, item->count,
				   (long) DatumGetInt64(item->task_ids[item->index]));
}

/*
 * Whether an earlier item of this call failed the run (its usage crossed
 * a budget under "fail", a child run it ended failed its parent's node),
 * made it compensate, or cancelled it: that revoked the run's other
 * attempts, as it would have for a complete_task called after it.  Such
 * an item is left out (it counts 0) instead of refused: refused, it would
 * roll the whole call back, the run's failure with it, and the same batch
 * sent again would meet the same refusal every time.
 */
static bool
stopped_by_this_call(VbRun *run, VbRunStatus at_lock)
{
	return run->status != at_lock &&
		(run->status == VB_RUN_FAILED || run->status == VB_RUN_COMPENSATING ||
		 run->status == VB_RUN_CANCELLED);
}

/*
 * complete_tasks(task_ids bigint[], leases uuid[], outputs jsonb[],
 *                spawns jsonb[], usages jsonb[]) -> integer
 *
 * Many completions in one call and one transaction, with complete_task's
 * meaning for each item: all of them or, on any error, none.  The runs
 * are locked together, newest first, with the parents of child runs
 * (vb_run_lock_for_tasks).  Items without spawn or
 * usage, the usual case, go through vb_state_succeed_many: a fixed number
 * of statements for the whole batch.  Items with spawn or usage then go
 * one by one through vb_complete_locked, in the order given.  Returns how
 * many attempts succeeded here (a repeated completion counts 0).
 */
static Datum
complete_tasks_as_owner(PG_FUNCTION_ARGS)
{
	TimestampTz at = vb_now();
	ArrayType  *ids_array;
	ArrayType  *leases_array;
	ArrayType  *outputs_array = NULL;
	Datum	   *ids;
	Datum	   *leases;
	Datum	   *outputs = NULL;
	Datum	   *spawns = NULL;
	Datum	   *usages = NULL;
	bool	   *output_nulls = NULL;
	bool	   *spawn_nulls = NULL;
	bool	   *usage_nulls = NULL;
	Jsonb	  **outputs_of;
	bool	   *plain;
	bool	   *matched;
	VbRunStatus *status_at_lock;	/* each held run's, to tell what this call did to it */
	int64	   *sorted;
	int			n;
	int			nplain = 0;
	int			nruns;
	volatile int completed = 0;
	VbRun	   *runs;
	BatchItem	item;
	ErrorContextCallback item_context;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_ids and leases must not be null")));
	ids_array = PG_GETARG_ARRAYTYPE_P(0);
	leases_array = PG_GETARG_ARRAYTYPE_P(1);
	ids = array_items(ids_array, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, "task_ids", -1,
					  false, NULL);
	n = ArrayGetNItems(ARR_NDIM(ids_array), ARR_DIMS(ids_array));
	if (n > VB_MAX_TASKS_PER_CALL)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("complete_tasks takes at most %d tasks per call", VB_MAX_TASKS_PER_CALL),
				 errdetail("Found %d.", n),
				 errhint("Complete them in several calls.")));
	leases = array_items(leases_array, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, "leases", n,
						 false, NULL);
	if (!PG_ARGISNULL(2))
	{
		outputs_array = PG_GETARG_ARRAYTYPE_P(2);
		outputs = array_items(outputs_array, JSONBOID, -1, false, TYPALIGN_INT, "outputs", n,
							  true, &output_nulls);
	}
	if (!PG_ARGISNULL(3))
		spawns = array_items(PG_GETARG_ARRAYTYPE_P(3), JSONBOID, -1, false, TYPALIGN_INT,
							 "spawns", n, true, &spawn_nulls);
	if (!PG_ARGISNULL(4))
		usages = array_items(PG_GETARG_ARRAYTYPE_P(4), JSONBOID, -1, false, TYPALIGN_INT,
							 "usages", n, true, &usage_nulls);
	if (n == 0)
		PG_RETURN_INT32(0);

	/* A task twice in one call would be completed by the first and refused by the second. */
	sorted = palloc(sizeof(int64) * n);
	for (int i = 0; i < n; i++)
		sorted[i] = DatumGetInt64(ids[i]);
	qsort(sorted, n, sizeof(int64), int64_cmp);
	for (int i = 1; i < n; i++)
		if (sorted[i] == sorted[i - 1])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("task %ld appears more than once in task_ids", (long) sorted[i]),
					 errhint("Complete each task once per call.")));

	outputs_of = palloc0(sizeof(Jsonb *) * n);
	plain = palloc(sizeof(bool) * n);
	matched = palloc0(sizeof(bool) * n);
	item.index = -1;
	item.count = n;
	item.task_ids = ids;
	item_context.callback = batch_item_context;
	item_context.arg = &item;
	item_context.previous = error_context_stack;
	error_context_stack = &item_context;
	for (int i = 0; i < n; i++)
	{
		bool		has_spawn = spawns && !spawn_nulls[i];
		bool		has_usage = usages && !usage_nulls[i];

		item.index = i;

		if (outputs && !output_nulls[i])
		{
			outputs_of[i] = DatumGetJsonbP(outputs[i]);
			vb_check_payload_size(outputs_of[i], "the task output");
		}
		if (has_usage)
			vb_usage_parse(DatumGetJsonbP(usages[i]), &(VbUsage) {0});
		plain[i] = !has_spawn && !has_usage;
		nplain += plain[i];
	}
	item.index = -1;

	SPI_connect();
	vb_refuse_other_tenants_tasks(PointerGetDatum(ids_array));
	nruns = vb_run_lock_for_tasks(PointerGetDatum(ids_array), &runs);
	status_at_lock = palloc(sizeof(VbRunStatus) * Max(nruns, 1));
	for (int r = 0; r < nruns; r++)
		status_at_lock[r] = runs[r].status;
	/* Whatever ends a run here changes its parent, when held, in runs (events.c). */
	vb_run_hold_batch(runs, nruns);
	PG_TRY();
	{
		int			ended;

		if (nplain == n)
			completed += vb_state_succeed_many(runs, nruns, n, PointerGetDatum(ids_array),
											   PointerGetDatum(leases_array),
											   PointerGetDatum(outputs_array), outputs_of, at,
											   matched);
		else if (nplain > 0)
		{
			Datum	   *plain_ids = palloc(sizeof(Datum) * nplain);
			Datum	   *plain_leases = palloc(sizeof(Datum) * nplain);
			Datum	   *plain_outputs = palloc(sizeof(Datum) * nplain);
			bool	   *plain_nulls = palloc(sizeof(bool) * nplain);
			Jsonb	  **plain_outputs_of = palloc(sizeof(Jsonb *) * nplain);
			bool	   *plain_matched = palloc(sizeof(bool) * nplain);
			int			dims[1] = {nplain};
			int			lbs[1] = {1};
			int			k = 0;

			for (int i = 0; i < n; i++)
			{
				if (!plain[i])
					continue;
				plain_ids[k] = ids[i];
				plain_leases[k] = leases[i];
				plain_outputs[k] = outputs_of[i] ? JsonbPGetDatum(outputs_of[i]) : (Datum) 0;
				plain_nulls[k] = outputs_of[i] == NULL;
				plain_outputs_of[k] = outputs_of[i];
				k++;
			}
			completed += vb_state_succeed_many(runs, nruns, nplain,
											   PointerGetDatum(construct_array(plain_ids, nplain, INT8OID, 8,
																			   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
											   PointerGetDatum(construct_array(plain_leases, nplain, UUIDOID,
																			   UUID_LEN, false, TYPALIGN_CHAR)),
											   PointerGetDatum(construct_md_array(plain_outputs, plain_nulls, 1,
																				  dims, lbs, JSONBOID, -1,
																				  false, TYPALIGN_INT)),
											   plain_outputs_of, at, plain_matched);
			k = 0;
			for (int i = 0; i < n; i++)
				if (plain[i])
					matched[i] = plain_matched[k++];
		}

		/* The plain items that matched no running attempt: repeats or refusals. */
		for (int i = 0; i < n; i++)
			if (plain[i] && !matched[i])
				not_running(NULL, DatumGetInt64(ids[i]), DatumGetUUIDP(leases[i]), outputs_of[i], NULL, NULL);

		for (int i = 0; i < n; i++)
		{
			VbRun		run;
			VbRun	   *held;

			if (plain[i])
				continue;
			item.index = i;
			/* A task that does not exist locked no run: the lookup reports it. */
			if (!vb_run_lock_for_task(DatumGetInt64(ids[i]), &run) ||
				(held = vb_run_find(runs, nruns, &run.id)) == NULL)
				vb_refuse_lease(DatumGetInt64(ids[i]), DatumGetUUIDP(leases[i]), "complete");
			if (stopped_by_this_call(held, status_at_lock[held - runs]))
				continue;
			completed += vb_complete_locked(held, DatumGetInt64(ids[i]), DatumGetUUIDP(leases[i]),
											outputs_of[i],
											spawns && !spawn_nulls[i] ? DatumGetJsonbP(spawns[i]) : NULL,
											usages && !usage_nulls[i] ? DatumGetJsonbP(usages[i]) : NULL,
											at);
		}
		item.index = -1;

		/*
		 * A run that ends may end the wait of a parent held here (its run node
		 * succeeds or fails in the batch's copy of the parent, events.c), and
		 * so end it: the runs are looked at again until none ends.
		 */
		do
		{
			ended = 0;
			for (int r = 0; r < nruns; r++)
			{
				VbRunStatus before = runs[r].status;

				vb_state_finish_run_if_done(&runs[r], at);
				ended += runs[r].status != before;
			}
		} while (ended > 0);
		vb_run_save_many(runs, nruns, at);
	}
	PG_FINALLY();
	{
		vb_run_hold_batch(NULL, 0);
	}
	PG_END_TRY();
	error_context_stack = item_context.previous;
	SPI_finish();
	PG_RETURN_INT32(completed);
}

PG_FUNCTION_INFO_V1(vectorbea_complete_tasks);
Datum
vectorbea_complete_tasks(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, complete_tasks_as_owner);
}

/*
 * save_checkpoint(task_id bigint, lease uuid, state jsonb) -> void
 */
static Datum
save_checkpoint_as_owner(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr plan = NULL;
	int64		task_id;
	pg_uuid_t  *lease;
	Jsonb	   *state;
	TimestampTz at = vb_now();
	VbRun		run;
	Datum		args[3];
	bool		isnull;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_id, lease and state must not be null")));
	task_id = PG_GETARG_INT64(0);
	lease = PG_GETARG_UUID_P(1);
	state = PG_GETARG_JSONB_P(2);
	vb_check_payload_size(state, "the checkpoint");

	SPI_connect();
	vb_lock_run_of_task(task_id, &run);
	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, UUIDOID, JSONBOID};

		plan = vb_prepare("UPDATE vectorbea.nodes SET checkpoint = $3"
						  " WHERE id = $1 AND lease = $2 AND status = 'running'"
						  " RETURNING node, attempt", lengthof(types), types);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = UUIDPGetDatum(lease);
	args[2] = JsonbPGetDatum(state);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not save checkpoint");
	if (SPI_processed == 0)
		vb_refuse_lease(task_id, lease, "checkpoint");
	vb_event(&run, "RUN_CHECKPOINTED",
			 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
			 DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)),
			 psprintf("{\"bytes\":%zu}", VARSIZE_ANY_EXHDR(state)), at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(vectorbea_save_checkpoint);
Datum
vectorbea_save_checkpoint(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, save_checkpoint_as_owner);
}
