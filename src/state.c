/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The engine's state machine: every change of a node's or a run's
 *	  status, of a run's counters, and of a gate's status happens here.
 *
 *	  node:  (added) -> pending -> ready -> running -> succeeded
 *	                              ready <- running          (retry)
 *	                                       running -> failed
 *	                    ready/running -> waiting -> succeeded | failed (gates)
 *	                    ready -> waiting -> succeeded | ready | failed
 *	                                     (sleep, signal and run nodes: waits)
 *	         pending/ready/waiting -> skipped, running -> cancelled (run failed)
 *	         every open status -> cancelled                  (run cancelled)
 *	  run:   running -> succeeded | failed | cancelled
 *	         failed -> running, when a person requeues the node it failed for
 *
 * Each transition is one function that updates the rows, writes its event
 * through the event writer (events.c) and keeps the run's counters in the
 * VbRun the caller locked; readiness writes no event (replay derives it).
 * Adding a transition means adding a function here and a case to replay().
 *
 * Readiness is a count, not a query: every node carries deps_remaining,
 * decremented under the run lock, so a join becomes ready exactly once.
 *
 * The scheduler is told about time-driven work and listeners about ready
 * work and finished runs through notify.c.  A child run that ends settles
 * its parent's run node here too (tell_parent): child first, then parent.
 *
 * IDENTIFICATION
 *	  src/state.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/string.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"

#include "vectorbea.h"
#include "claim_marks.h"
#include "clock.h"
#include "crashpoint.h"
#include "gate_writes.h"
#include "jsonb_util.h"
#include "notify.h"
#include "retry.h"
#include "settings.h"
#include "spi_util.h"
#include "state.h"
#include "upstream.h"
#include "validate.h"

static void open_ready_gates(VbRun *run, TimestampTz at);
static char *book_child_usage(VbRun *parent, pg_uuid_t *child_id, bool held, bool *over,
							  char **detail_json, bool *pause);
static bool end_wait(VbRun *run, int64 task_id, const char *output_json, const char *more_fields,
					 TimestampTz at);
static const char *fail_attempt(VbRun *run, int64 task_id, const char *err_class,
								const char *error_json, const char *more_fields, bool retryable,
								int64 retry_after_ms, bool may_escalate, TimestampTz at);
static int64 wait_on_gate(VbRun *run, int64 task_id, const char *node, int attempt,
						  const char *kind, const char *spec_json, const char *context_json,
						  TimestampTz at);
static void open_failure_gate(VbRun *run, int64 task_id, const char *node, int attempt,
							  const char *kind, const char *spec_json, const char *failed_json,
							  const char *error_json, TimestampTz at);
static void close_gates(VbRun *run, TimestampTz at);
static void charge_cut_call(VbRun *run, const char *node, int attempt, TimestampTz at);
static int	add_nodes(VbRun *run, const char *specs_json, const char *spawned_by, bool hold,
					  TimestampTz at);
static void release_dependents_of_tasks(VbRun *runs, int nruns, Datum *parents, int nparents,
										TimestampTz at);

/* ---- nodes come into being and become ready ---- */

/*
 * Nodes of activity inserted ready for runs of priority, the first in id
 * order run_id: for the claims' marks (claim_marks.c), which the trigger
 * on nodes leaves to the engine's inserts.
 */
static void
note_inserted_ready(const char *activity, int32 priority, const pg_uuid_t *run_id)
{
	VbClaimKey	key;

	if (activity == NULL)
		return;
	key.priority = priority;
	memcpy(&key.run_id, run_id, sizeof(pg_uuid_t));
	vb_claim_marks_note(activity, &key);
}

/*
 * A node became ready: its activity is announced; a node without one (an
 * approval, sleep, signal or run node) is the engine's to start
 * (open_ready_gates).  A node held by its not_before (available_at
 * 'infinity') is announced by the scheduler once it has read that time.
 */
static void
became_ready(VbRun *run, const char *activity, bool held)
{
	if (held)
		vb_wake_scheduler(vb_now());
	else if (activity == NULL)
		run->gates_pending = true;
	else
		vb_notify_task_ready(activity);
}

/*
 * Inserts the nodes of a normalised spec array (vb_node_specs_json) into a
 * locked run.  A node whose dependencies have all succeeded is ready at
 * once, and an approval node among those opens its gate.  Returns the
 * number of nodes added.  Callers write the event that lists the nodes
 * (RUN_STARTED, NODES_SPAWNED) before, so a gate follows its node.
 */
int
vb_state_add_nodes(VbRun *run, const char *specs_json, const char *spawned_by, TimestampTz at)
{
	return add_nodes(run, specs_json, spawned_by, false, at);
}

/*
 * As vb_state_add_nodes, but every node is added pending, whatever its
 * dependencies: a fork adds all its nodes first, marks the reused ones
 * succeeded (vb_state_reuse), and only then lets the rest become ready
 * (vb_state_release_held), so that no reused node is ever announced or
 * opens a gate.
 */
int
vb_state_add_nodes_held(VbRun *run, const char *specs_json, const char *spawned_by,
						TimestampTz at)
{
	return add_nodes(run, specs_json, spawned_by, true, at);
}

/*
 * A spec's fields that specs leave out when they have their default
 * (validate.h); the default retry policy is stored as NULL.
 */
#define SPEC_KIND "coalesce(s.kind, '" VB_DEFAULT_KIND "')"
#define SPEC_DEPENDS_ON "coalesce(s.depends_on, '{}')"
#define SPEC_INPUT "coalesce(s.input, '{}')"
#define SPEC_MAX_ATTEMPTS \
	"coalesce((s.retry->>'max_attempts')::int, " CppAsString2(VB_DEFAULT_MAX_ATTEMPTS) ")"
#define NODE_MAX_ATTEMPTS \
	"coalesce((retry->>'max_attempts')::int, " CppAsString2(VB_DEFAULT_MAX_ATTEMPTS) ")"

/*
 * The nodes of a spec array that depend on each node it names, by name
 * ("kids": parent, nodes), for the dependents column.
 */
#define SPEC_DEPENDENTS \
	"  SELECT dep.id AS parent, pg_catalog.array_agg(s.id) AS nodes" \
	"    FROM spec s, pg_catalog.unnest(s.depends_on) AS dep(id) GROUP BY dep.id"

/*
 * The insert of add_nodes.  A node with a not_before is held (available_at
 * 'infinity') until the scheduler has read its time.  The columns of
 * sleep, signal and run nodes and of compensations, and the dependents
 * column, come with 0.2.0's schema; a 0.1.0 schema
 * (before ALTER EXTENSION UPDATE) gets the statement without them, and its
 * definitions cannot have such nodes (validate.c).  With 0.2.0's, the
 * nodes already in the run that a new node depends on list it among their
 * dependents (the run is locked, so no other writer adds to the list).
 */
#define ADD_NODES_010 \
	"", "", "", "", "", "NULL", "s.approval"
#define ADD_NODES_WAITS \
	", sleep jsonb, signal jsonb, run jsonb, not_before text, escalation jsonb," \
	"  compensate jsonb, compensation_of text, estimate jsonb", \
	"), kids AS (" SPEC_DEPENDENTS \
	"), parents AS (" \
	"  UPDATE vectorbea.nodes p SET dependents = coalesce(p.dependents, '{}') || k.nodes" \
	"    FROM kids k WHERE p.run_id = $1 AND p.node = k.parent", \
	" LEFT JOIN kids k ON k.parent = s.id", \
	", wait, not_before, compensate, compensation_of, estimate, dependents", \
	", coalesce(s.sleep, s.signal, s.run), s.not_before, s.compensate, s.compensation_of," \
	"  s.estimate, k.nodes", \
	"s.not_before", "coalesce(s.approval, s.escalation)"
#define ADD_NODES_SQL(v) ADD_NODES_SQL_(v)
#define ADD_NODES_SQL_(spec_cols, edges, join_kids, ins_cols, ins_vals, not_before, approval) \
	"WITH spec AS (" \
	"  SELECT s.* FROM pg_catalog.jsonb_to_recordset($2::jsonb) AS s(id text, kind text," \
	"    activity text, depends_on text[], input jsonb, retry jsonb," \
	"    timeout_ms bigint, approval jsonb, llm jsonb" spec_cols ")" \
	edges \
	"), ins AS (" \
	"  INSERT INTO vectorbea.nodes (run_id, node, kind, activity, status," \
	"    depends_on, deps_remaining, input, max_attempts, retry, timeout_ms, approval, llm, priority," \
	"    available_at, spawned_by, created_at" ins_cols ")" \
	"  SELECT $1, s.id, " SPEC_KIND ", s.activity," \
	"    CASE WHEN d.remaining = 0 AND NOT $6 THEN 'ready' ELSE 'pending' END," \
	"    " SPEC_DEPENDS_ON ", d.remaining, " SPEC_INPUT ", " SPEC_MAX_ATTEMPTS "," \
	"    s.retry, s.timeout_ms, " approval ", s.llm, $3," \
	"    CASE WHEN " not_before " IS NOT NULL THEN 'infinity'::timestamptz" \
	"         WHEN d.remaining = 0 AND NOT $6 THEN $5 END, $4, $5" ins_vals \
	"  FROM spec s CROSS JOIN LATERAL (" \
	"    SELECT pg_catalog.count(*) FILTER (WHERE e.status IS DISTINCT FROM 'succeeded')::int" \
	"           AS remaining" \
	"      FROM pg_catalog.unnest(s.depends_on) AS dep(id)" \
	"      LEFT JOIN vectorbea.nodes e ON e.run_id = $1 AND e.node = dep.id) d" \
	join_kids \
	"  RETURNING activity, status, available_at = 'infinity' AS held" \
	")" \
	" SELECT activity, held, pg_catalog.count(*) FILTER (WHERE status = 'ready'), pg_catalog.count(*)" \
	"   FROM ins GROUP BY activity, held"

static int
add_nodes(VbRun *run, const char *specs_json, const char *spawned_by, bool hold, TimestampTz at)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	int			waits = vb_waits_available() ? 1 : 0;
	SPIPlanPtr	plan;
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	int			added = 0;

	if (plans[waits] == NULL)
	{
		Oid			types[6] = {UUIDOID, TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID, BOOLOID};

		/*
		 * Dependencies among the nodes added by this statement are not
		 * visible to its own snapshot, so they count as not yet done, which
		 * is right: new nodes have not run.  The generic plan from the
		 * first call: its lookups are by the unique key (run_id, node)
		 * whatever the values, and left to the plan cache the statement was
		 * planned again at nearly every call in a mix of starts and spawns
		 * (0.8 ms a plan, twice its run; test/t/044_kept_plans.pl).
		 */
		plans[waits] = vb_prepare_opts(waits ? ADD_NODES_SQL(ADD_NODES_WAITS) : ADD_NODES_SQL(ADD_NODES_010),
									   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	plan = plans[waits];
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(specs_json);
	args[2] = Int32GetDatum(run->priority);
	if (spawned_by)
		args[3] = CStringGetTextDatum(spawned_by);
	else
		nulls[3] = 'n';
	args[4] = TimestampTzGetDatum(at);
	args[5] = BoolGetDatum(hold);
	vb_claim_marks_engine_insert();
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not insert nodes");

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		bool		held = DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
		int64		ready = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));

		added += (int) DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 4, &isnull));
		if (ready > 0)
		{
			char	   *activity = SPI_getvalue(tup, SPI_tuptable->tupdesc, 1);

			note_inserted_ready(activity, run->priority, &run->id);
			became_ready(run, activity, held);
		}
	}
	run->open_nodes += added;
	run->node_count += added;
	open_ready_gates(run, at);
	return added;
}

/*
 * The nodes of a normalised spec array, added to each of runs, which this
 * transaction has just created (start_runs), in one statement.  A new run
 * has no other nodes, so a node's open dependencies are all it names.  The
 * caller takes this path only when no node is one the engine starts at
 * once (an approval without dependencies): those need their run's gate
 * opened (vb_state_add_nodes).
 */
void
vb_state_add_nodes_to_new_runs(VbRun *runs, int nruns, const char *specs_json, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *ids = palloc(sizeof(Datum) * Max(nruns, 1));
	Datum		args[4];
	int			added = 0;
	const pg_uuid_t *first_run;

	if (nruns == 0)
		return;
	if (plan == NULL)
	{
		Oid			types[4] = {UUIDARRAYOID, TEXTOID, INT4OID, TIMESTAMPTZOID};

		plan = vb_prepare_opts("WITH spec AS ("
							   "  SELECT s.*, coalesce(pg_catalog.cardinality(s.depends_on), 0) AS deps"
							   "    FROM pg_catalog.jsonb_to_recordset($2::jsonb) AS s(id text, kind text,"
							   "      activity text, depends_on text[], input jsonb, retry jsonb,"
							   "      timeout_ms bigint, approval jsonb, llm jsonb, sleep jsonb, signal jsonb,"
							   "      run jsonb, not_before text, escalation jsonb, compensate jsonb,"
							   "      compensation_of text, estimate jsonb)"
							   "), kids AS (" SPEC_DEPENDENTS
							   "), ins AS ("
							   "  INSERT INTO vectorbea.nodes (run_id, node, kind, activity, status,"
							   "    depends_on, deps_remaining, input, max_attempts, retry, timeout_ms, approval,"
							   "    llm, priority, available_at, created_at, wait, not_before, compensate,"
							   "    compensation_of, estimate, dependents)"
							   "  SELECT r.id, s.id, " SPEC_KIND ", s.activity,"
							   "    CASE WHEN s.deps = 0 THEN 'ready' ELSE 'pending' END,"
							   "    " SPEC_DEPENDS_ON ", s.deps, " SPEC_INPUT ", " SPEC_MAX_ATTEMPTS ", s.retry,"
							   "    s.timeout_ms, coalesce(s.approval, s.escalation), s.llm, $3,"
							   "    CASE WHEN s.not_before IS NOT NULL THEN 'infinity'::timestamptz"
							   "         WHEN s.deps = 0 THEN $4 END, $4,"
							   "    coalesce(s.sleep, s.signal, s.run), s.not_before, s.compensate,"
							   "    s.compensation_of, s.estimate, k.nodes"
							   "    FROM pg_catalog.unnest($1) AS r(id) CROSS JOIN spec s"
							   "    LEFT JOIN kids k ON k.parent = s.id"
							   "  RETURNING activity, status, available_at = 'infinity' AS held"
							   ")"
							   " SELECT activity, held, pg_catalog.count(*) FILTER (WHERE status = 'ready'),"
							   "        pg_catalog.count(*)"
							   "   FROM ins GROUP BY activity, held",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	for (int i = 0; i < nruns; i++)
		ids[i] = UUIDPGetDatum(&runs[i].id);
	args[0] = PointerGetDatum(construct_array(ids, nruns, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[1] = CStringGetTextDatum(specs_json);
	args[2] = Int32GetDatum(runs[0].priority);
	args[3] = TimestampTzGetDatum(at);
	vb_claim_marks_engine_insert();
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not insert the nodes of new runs");
	first_run = &runs[0].id;
	for (int i = 1; i < nruns; i++)
		if (memcmp(runs[i].id.data, first_run->data, UUID_LEN) < 0)
			first_run = &runs[i].id;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;

		added += (int) DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 4, &isnull));
		if (DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull)) > 0)
		{
			char	   *activity = SPI_getvalue(tup, SPI_tuptable->tupdesc, 1);

			/* The runs share a priority; the first of them in id order comes first. */
			note_inserted_ready(activity, runs[0].priority, first_run);
			became_ready(&runs[0], activity,
						 DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull)));
		}
	}
	if (runs[0].gates_pending)
		elog(ERROR, "vectorbea: new runs with gates to open took the set path");
	for (int i = 0; i < nruns; i++)
	{
		runs[i].open_nodes += added / nruns;
		runs[i].node_count += added / nruns;
	}
}

/*
 * The dependents column that a statement which made one node succeed
 * returned as column col, copied out of SPI's memory; *none when NULL.  In
 * a 0.1.0 schema, which has no such column, the statement returns
 * DEPENDENTS_010 (NULL).
 */
#define DEPENDENTS_020 "dependents"
#define DEPENDENTS_010 "NULL::text[]"

static Datum
returned_dependents(SPITupleTable *returned, int col, bool *none)
{
	Datum		dependents = SPI_getbinval(returned->vals[0], returned->tupdesc, col, none);

	return *none ? (Datum) 0 : PointerGetDatum(DatumGetArrayTypePCopy(dependents));
}

/*
 * node of run has just succeeded: one dependency fewer for each pending
 * node that depends on it, and those with none left become ready.  With
 * 0.2.0's schema they are dependents (the node's dependents column; none
 * costs no statement), found by the key (run_id, node), so a completion
 * reads its own dependents, not every node its run has yet to do.  A 0.1.0
 * schema (before ALTER EXTENSION UPDATE) has no such column: the pending
 * nodes of the run whose depends_on names node.
 */
#define RELEASE_SQL(dependents_of_node) \
	"UPDATE vectorbea.nodes" \
	"   SET deps_remaining = deps_remaining - 1," \
	"       status = CASE WHEN deps_remaining = 1 THEN 'ready' ELSE status END," \
	"       available_at = CASE WHEN deps_remaining = 1 AND available_at IS DISTINCT FROM 'infinity'" \
	"                               THEN $3 ELSE available_at END" \
	" WHERE run_id = $1 AND status = 'pending' AND " dependents_of_node \
	" RETURNING activity, status, available_at = 'infinity'"

static void
release_dependents(VbRun *run, const char *node, Datum dependents, bool none, bool v020,
				   TimestampTz at)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	Datum		args[3];

	if (v020 && none)
		return;
	if (plans[v020] == NULL)
	{
		Oid			types[3] = {UUIDOID, v020 ? TEXTARRAYOID : TEXTOID, TIMESTAMPTZOID};

		/*
		 * Generic: the plan cache would otherwise find the generic plan of
		 * "node = ANY ($2)" dearer than a custom one (it assumes ten
		 * elements) and plan every call again, which cost more than the
		 * statement (77 us against 38).
		 */
		plans[v020] = vb_prepare_opts(v020 ? RELEASE_SQL("node = ANY ($2)") :
									  RELEASE_SQL("$2 = ANY (depends_on)"),
									  lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = v020 ? dependents : CStringGetTextDatum(node);
	args[2] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plans[v020], args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not release dependents of \"%s\"", node);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;

		if (strcmp(SPI_getvalue(tup, SPI_tuptable->tupdesc, 2), "ready") == 0)
			became_ready(run, SPI_getvalue(tup, SPI_tuptable->tupdesc, 1),
						 DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull)));
	}
}

/* ---- ready -> running: a claim ---- */

/*
 * The claim statement: a head that picks and locks candidate nodes, and a
 * tail that leases them and returns them with their upstream outputs.
 * With several activities the head first computes a quota per activity;
 * with one, the quota is max_tasks and the head is one locking scan.
 *
 * For several activities, first, without locking, the best max_tasks ready
 * nodes over all of them (in the order of nodes_ready_run_idx: priority,
 * run, node, as a claim of one activity takes them) decide how many each
 * activity may take (its quota), so that no more rows are locked than can
 * be claimed.  Only nodes the claim may take count (of running or
 * compensating runs, in the claim's workspaces): the ready nodes of a
 * paused run, or of another tenant's, would take the quota of every
 * activity after them, for good.  Then, per activity, a scan in index order locks the run row
 * and the node row, each SKIP LOCKED, inside the scan, so the quota counts
 * only claimable nodes.  The run is locked first, as every writer does.  A
 * run busy in another transaction keeps its nodes for the next claim.
 * LIMIT inside a MATERIALIZED CTE bounds the rows taken, whatever the plan.
 * Each node's run is looked up by key in a subquery of its own (kept so by
 * its LIMIT or its lock): as a join, the generic plan took the runs that
 * may be claimed for a few rows and read them all, with a sequential scan,
 * at each claim (test/t/042_hot_plans.pl).
 */
#define CLAIM_MANY_HEAD(filter) \
	"WITH acts AS (" \
	"  SELECT DISTINCT a FROM pg_catalog.unnest($2::text[]) AS a" \
	"), best AS (" \
	"  SELECT b.activity FROM acts CROSS JOIN LATERAL (" \
	"      SELECT n.activity, n.priority, n.run_id, n.available_at, n.id" \
	"        FROM vectorbea.nodes n CROSS JOIN LATERAL (" \
	"             SELECT FROM vectorbea.runs r" \
	"              WHERE r.id = n.run_id AND r.status || '' IN ('running', 'compensating')" filter \
	"              LIMIT 1) lr" \
	"       WHERE n.status = 'ready' AND n.activity = acts.a AND n.available_at <= $4" \
	"       ORDER BY n.priority DESC, n.run_id, n.available_at, n.id" \
	"       LIMIT $3) b" \
	"   ORDER BY b.priority DESC, b.run_id, b.available_at, b.id" \
	"   LIMIT $3" \
	"), quota AS (" \
	"  SELECT activity, pg_catalog.count(*) AS n FROM best GROUP BY activity" \
	"), candidate AS MATERIALIZED (" \
	"  SELECT c.id, c.run_id, c.priority, c.available_at" \
	"    FROM quota CROSS JOIN LATERAL (" \
	"      SELECT n.id, n.run_id, n.priority, n.available_at" \
	"        FROM vectorbea.nodes n CROSS JOIN LATERAL (" \
	"             SELECT FROM vectorbea.runs r" \
	"              WHERE r.id = n.run_id AND r.status || '' IN ('running', 'compensating')" filter \
	"              FOR NO KEY UPDATE OF r SKIP LOCKED) lr" \
	"       WHERE n.status = 'ready' AND n.activity = quota.activity AND n.available_at <= $4" \
	"       ORDER BY n.priority DESC, n.run_id, n.available_at, n.id" \
	"       LIMIT quota.n" \
	"       FOR UPDATE OF n SKIP LOCKED) c"

/*
 * A claim of one activity goes run by run: the runs with ready nodes of
 * the activity, highest priority first, then oldest (run ids are UUIDv7,
 * in creation order), are found one after the other by a skip scan of
 * nodes_ready_run_idx (each step one index descent past the run before),
 * and each is tried once, SKIP LOCKED; a run it gets gives its ready nodes
 * of that priority, oldest first, until max_tasks (the priority bounds the
 * index range to the run's entries: without it the scan of one run read
 * every entry of the activity, dead ones included).  A busy run (another
 * claimer's, or a completer's until it commits) costs one lock attempt
 * however many ready nodes it has: scanning node by node cost one attempt
 * per node, which made a claim beside one wide busy run walk all of it
 * (bench/README.md, finding 4).  Everything is pulled lazily, so the outer
 * LIMIT stops the scan, and the locking, at the last run it needs.
 *
 * The first step starts at the activity's mark ($8, $9: priority and run
 * id, claim_marks.c), before which no ready node is visible: under a held
 * snapshot the index's front is a long run of entries of nodes claimed
 * since, which every claim would otherwise visit.
 *
 * The claims test a run's status as "r.status || ''" so that a partial
 * index on runs' status, such as a 0.1.0 schema's runs_active_idx (WHERE
 * status IN the same two; 0.2.0 drops it), can never serve the lookup of
 * a run: its statistics can say one row while it holds an
 * entry for every run a held snapshot keeps alive, and a claim planned
 * that way read all of them per run (bench/README.md, growth under a held
 * snapshot).  The primary key is the only index the lookup can use.
 */
#define CLAIM_FIRST_READY_RUN(activity, at, priority, run_id) \
	"  (SELECT * FROM (" \
	"    (SELECT n.priority, n.run_id FROM vectorbea.nodes n" \
	"      WHERE n.status = 'ready' AND n.activity = " activity " AND n.available_at <= " at \
	"        AND n.priority = " priority " AND n.run_id >= " run_id \
	"      ORDER BY n.priority DESC, n.run_id LIMIT 1)" \
	"    UNION ALL" \
	"    (SELECT n.priority, n.run_id FROM vectorbea.nodes n" \
	"      WHERE n.status = 'ready' AND n.activity = " activity " AND n.available_at <= " at \
	"        AND n.priority < " priority \
	"      ORDER BY n.priority DESC, n.run_id LIMIT 1)) first_run" \
	"   LIMIT 1)"

#define CLAIM_ONE_HEAD(filter) \
	"WITH RECURSIVE ready_runs AS (" \
	CLAIM_FIRST_READY_RUN("($2::text[])[1]", "$4", "$8", "$9") \
	"  UNION ALL" \
	"  SELECT nx.priority, nx.run_id FROM ready_runs p CROSS JOIN LATERAL (" \
	"    SELECT * FROM (" \
	"      (SELECT n.priority, n.run_id FROM vectorbea.nodes n" \
	"        WHERE n.status = 'ready' AND n.activity = ($2::text[])[1] AND n.available_at <= $4" \
	"          AND n.priority = p.priority AND n.run_id > p.run_id" \
	"        ORDER BY n.priority DESC, n.run_id LIMIT 1)" \
	"      UNION ALL" \
	"      (SELECT n.priority, n.run_id FROM vectorbea.nodes n" \
	"        WHERE n.status = 'ready' AND n.activity = ($2::text[])[1] AND n.available_at <= $4" \
	"          AND n.priority < p.priority" \
	"        ORDER BY n.priority DESC, n.run_id LIMIT 1)) nxt" \
	"    LIMIT 1) nx" \
	"), candidate AS MATERIALIZED (" \
	"  SELECT c.id, c.run_id, c.priority, c.available_at" \
	"    FROM ready_runs o CROSS JOIN LATERAL (" \
	"      SELECT r.id FROM vectorbea.runs r" \
	"       WHERE r.id = o.run_id AND r.status || '' IN ('running', 'compensating')" filter \
	"       FOR NO KEY UPDATE OF r SKIP LOCKED) lr" \
	"    CROSS JOIN LATERAL (" \
	"      SELECT n.id, n.run_id, n.priority, n.available_at FROM vectorbea.nodes n" \
	"       WHERE n.status = 'ready' AND n.activity = ($2::text[])[1] AND n.run_id = lr.id" \
	"         AND n.priority = o.priority AND n.available_at <= $4" \
	"       ORDER BY n.priority DESC, n.run_id, n.available_at, n.id" \
	"       LIMIT $3" \
	"       FOR UPDATE OF n SKIP LOCKED) c" \
	"   LIMIT $3"

/*
 * The claims of concurrency limits (limits.c) and of worker roles kept out
 * of some workspaces (tenants.c) choose workspaces: only $6, or any but
 * those in $7.  They are statements of their own: when the filter was part
 * of the one claim statement (before the claim went run by run), its
 * generic plan sorted the whole backlog.  The filter only narrows the
 * lookup of each run by its key, so their plans have the usual claim's
 * shape (test/t/042_hot_plans.pl).
 */
#define CLAIM_NO_FILTER ""
#define CLAIM_WORKSPACE_FILTER \
	" AND ($6::text IS NULL OR r.workspace = $6) AND r.workspace <> ALL ($7::text[])"

#define CLAIM_TAIL CLAIM_TAIL_CTE CLAIM_TAIL_SELECT

/*
 * A claim of several activities also says whether it skipped something:
 * one more row, all NULL but for the quotas' total in the key's column
 * (CLAIM_SKIP_ROW_COLUMN), which vb_state_start_attempts takes out.  Fewer
 * tasks than the total means that ready tasks were passed over, their runs
 * or rows busy in other transactions (claim.c tops such a claim up); an
 * idle poll's total is 0, and it is not topped up.
 */
#define CLAIM_TAIL_MANY CLAIM_TAIL_CTE \
	" (" CLAIM_TAIL_SELECT ")" \
	" UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL," \
	"        (SELECT coalesce(pg_catalog.sum(quota.n), 0)::text FROM quota), NULL, NULL"
#define CLAIM_SKIP_ROW_COLUMN 11
#define CLAIM_INPUT_COLUMN 8
#define CLAIM_UPSTREAM_COLUMN 9

#define CLAIM_TAIL_CTE \
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
	")"

#define CLAIM_TAIL_SELECT \
	" SELECT cl.id, cl.lease, cl.run_id, cl.node, cl.activity, cl.attempt," \
	"        cl.max_attempts, cl.input," \
	"        " VB_UPSTREAM_SQL("cl") "," \
	"        cl.checkpoint, cl.run_id::text || ':' || cl.node," \
	"        cl.lease_expires_at," \
	"        (SELECT r.input FROM vectorbea.runs r WHERE r.id = cl.run_id)" \
	"   FROM claimed cl" \
	"  ORDER BY cl.priority DESC, cl.available_at, cl.id"

/* The claim's row tup with value in its column. */
static HeapTuple
replace_column(HeapTuple tup, TupleDesc desc, int column, Jsonb *value)
{
	Datum		datum = JsonbPGetDatum(value);
	bool		isnull = false;

	return heap_modify_tuple_by_cols(tup, desc, 1, &column, &datum, &isnull);
}

/*
 * Fails for good the attempt of task_id, just started in run_id (which
 * the claim has locked), whose input or upstream would take more than a
 * jsonb value holds (error_json says which).  If that ends a child run,
 * telling its parent may wait for the parent's lock, as a completion's
 * would: the one wait a claim makes, on this rare path only.
 */
static void
fail_too_large_claim(pg_uuid_t *run_id, int64 task_id, const char *error_json, TimestampTz at)
{
	VbRun		run;

	if (!vb_run_lock(run_id, &run))
		elog(ERROR, "vectorbea: the run of task %ld vanished", (long) task_id);
	fail_attempt(&run, task_id, "permanent", error_json, NULL, false, -1, true, at);
	vb_run_save(&run, at);
}

/*
 * A failure for good may have ended its run, and with it the attempts this
 * claim started there (their leases revoked): those rows, from
 * started->vals[first], are not handed out.
 */
static void
drop_closed_rows(VbStartedAttempts *started, uint64 first)
{
	uint64		n = started->count - first;
	uint64		kept = first;
	Datum	   *ids;
	Datum		args[1];
	Oid			types[1] = {INT8ARRAYOID};
	bool		isnull;

	if (n == 0)
		return;
	ids = palloc(sizeof(Datum) * n);
	for (uint64 i = 0; i < n; i++)
		ids[i] = SPI_getbinval(started->vals[first + i], started->tupdesc, 1, &isnull);
	args[0] = PointerGetDatum(construct_array(ids, (int) n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	if (SPI_execute_with_args("SELECT id FROM vectorbea.nodes WHERE id = ANY ($1) AND status = 'running'",
							  1, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the claimed nodes");
	for (uint64 i = first; i < started->count; i++)
	{
		int64		id = DatumGetInt64(SPI_getbinval(started->vals[i], started->tupdesc, 1, &isnull));
		bool		running = false;

		for (uint64 j = 0; j < SPI_processed && !running; j++)
			running = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[j], SPI_tuptable->tupdesc, 1,
												  &isnull)) == id;
		if (running)
			started->vals[kept++] = started->vals[i];
	}
	started->count = kept;
}

/* Whether node task_id is still running (a claim's rare path: after a row failed). */
static bool
node_running(int64 task_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {Int64GetDatum(task_id)};

	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = vb_prepare("SELECT FROM vectorbea.nodes WHERE id = $1 AND status = 'running'",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read task %ld", (long) task_id);
	return SPI_processed == 1;
}

/*
 * Completes the rows of the attempts started from started->vals[first]
 * with what the claim statement leaves to this file, each made only once
 * its size shows that it fits in a jsonb value (upstream.c):
 * - the upstream of a node of several dependencies, which comes NULL;
 * - the input of a compensation node (named with VB_COMPENSATION_SUFFIX,
 *   which a definition's nodes may not end with), with its original's
 *   input and output.
 * An attempt whose upstream or input cannot be made (its STEP_STARTED
 * written) fails for good and leaves the claim's result.
 */
static void
complete_claimed_rows(VbStartedAttempts *started, uint64 first, TimestampTz at)
{
	uint64		kept = first;
	bool		any_failed = false;

	for (uint64 i = first; i < started->count; i++)
	{
		HeapTuple	tup = started->vals[i];
		TupleDesc	desc = started->tupdesc;
		bool		isnull;
		int64		task_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *node = SPI_getvalue(tup, desc, 4);
		int64		bytes;
		Jsonb	   *made;

		/*
		 * A row's failure may have ended its run (or a parent's) and closed
		 * later rows: such a row is neither made nor failed a second time,
		 * which would fail a closed node and end the run again (over the
		 * compensation just begun).  drop_closed_rows below takes out the
		 * earlier ones.
		 */
		if (any_failed && !node_running(task_id))
			continue;
		(void) SPI_getbinval(tup, desc, CLAIM_UPSTREAM_COLUMN, &isnull);
		if (isnull)
		{
			made = vb_upstream_of_node(task_id, &bytes);
			if (made == NULL)
			{
				fail_too_large_claim(DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull)), task_id,
									 vb_upstream_too_large_json(node, bytes), at);
				any_failed = true;
				continue;
			}
			tup = replace_column(tup, desc, CLAIM_UPSTREAM_COLUMN, made);
		}
		/* the schema asked only then: a claim's hot path; 0.1.0 has none */
		if (pg_str_endswith(node, VB_COMPENSATION_SUFFIX) && vb_waits_available())
		{
			made = vb_compensation_input(task_id, VB_UPSTREAM_MAX_BYTES, &bytes);
			if (made == NULL)
			{
				fail_too_large_claim(DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull)), task_id,
									 vb_compensation_too_large_json(node, bytes), at);
				any_failed = true;
				continue;
			}
			tup = replace_column(tup, desc, CLAIM_INPUT_COLUMN, made);
		}
		started->vals[kept++] = tup;
	}
	started->count = kept;
	if (any_failed)
		drop_closed_rows(started, first);
}

/*
 * Leases up to max_tasks ready nodes of the activities to worker and
 * writes their STEP_STARTED events.  It never waits on a lock.  The rows
 * (claim_tasks' result columns) stay valid until the caller's SPI_finish.
 */
void
vb_state_start_attempts(const char *worker, ArrayType *activities, int max_tasks,
						Interval *lease_duration, const char *only_workspace,
						ArrayType *not_workspaces, TimestampTz at, VbStartedAttempts *started)
{
	static SPIPlanPtr plans[2][2] = {{NULL, NULL}, {NULL, NULL}};
	static ArrayType *no_workspaces = NULL;
	bool		filtered = only_workspace != NULL || not_workspaces != NULL;
	bool		one = ArrayGetNItems(ARR_NDIM(activities), ARR_DIMS(activities)) == 1;
	SPIPlanPtr *plan = &plans[filtered][one];
	Datum		args[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	VbClaimKey	start;
	VbEventBatch events;
	SPITupleTable *rows;
	uint64		n;

	/*
	 * Each variant is prepared when first used: a worker's session uses one
	 * or two of them, and preparing all four took a sixth of its first
	 * claim (about 3 of 20 ms).
	 */
	if (*plan == NULL)
	{
		Oid			types[9] = {TEXTOID, TEXTARRAYOID, INT4OID, TIMESTAMPTZOID, INTERVALOID,
		TEXTOID, TEXTARRAYOID, INT4OID, UUIDOID};

		/*
		 * The quota is not known when the statement is planned, so the
		 * later steps are written to use the indexes whatever row count the
		 * planner guesses, and the generic plan is used from the first call:
		 * planning this statement costs more than running it.  So with the
		 * workspace filter: left to the plan cache, the filtered variants
		 * were planned afresh at every call (a custom plan always looked
		 * cheaper than the generic one), which made every claim of a worker
		 * role in a database with mapped workspaces cost three times the
		 * owner's (docs/decisions.md, "Every variant of the claim keeps its
		 * generic plan").
		 */
		if (!filtered && !one)
			*plan = vb_prepare_opts(CLAIM_MANY_HEAD(CLAIM_NO_FILTER) CLAIM_TAIL_MANY, 5, types,
									CURSOR_OPT_GENERIC_PLAN);
		else if (!filtered)
			*plan = vb_prepare_opts(CLAIM_ONE_HEAD(CLAIM_NO_FILTER) CLAIM_TAIL, lengthof(types),
									types, CURSOR_OPT_GENERIC_PLAN);
		else if (!one)
			*plan = vb_prepare_opts(CLAIM_MANY_HEAD(CLAIM_WORKSPACE_FILTER) CLAIM_TAIL_MANY,
									lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
		else
			*plan = vb_prepare_opts(CLAIM_ONE_HEAD(CLAIM_WORKSPACE_FILTER) CLAIM_TAIL,
									lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = CStringGetTextDatum(worker);
	args[1] = PointerGetDatum(activities);
	args[2] = Int32GetDatum(max_tasks);
	args[3] = TimestampTzGetDatum(at);
	args[4] = IntervalPGetDatum(lease_duration);
	if (only_workspace)
		args[5] = CStringGetTextDatum(only_workspace);
	else
		nulls[5] = 'n';
	if (no_workspaces == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		no_workspaces = construct_empty_array(TEXTOID);
		MemoryContextSwitchTo(old);
	}
	args[6] = PointerGetDatum(not_workspaces ? not_workspaces : no_workspaces);
	start = VB_CLAIM_KEY_FIRST;
	if (one)
	{
		Datum		first;
		bool		isnull;
		int			index = 1;

		first = array_get_element(PointerGetDatum(activities), 1, &index, -1, -1, false,
								  TYPALIGN_INT, &isnull);
		if (!isnull)
			vb_claim_mark_start(TextDatumGetCString(first), &start);
	}
	args[7] = Int32GetDatum(start.priority);
	args[8] = UUIDPGetDatum(&start.run_id);
	if (SPI_execute_plan(*plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: claim failed");
	rows = SPI_tuptable;
	n = SPI_processed;

	/* A claim of several activities' last row is its quotas' total. */
	if (!one)
	{
		HeapTuple	last;
		bool		isnull;

		for (uint64 i = 0; i < n; i++)
		{
			(void) SPI_getbinval(rows->vals[i], rows->tupdesc, 1, &isnull);
			if (!isnull)
				continue;
			last = rows->vals[i];
			memmove(&rows->vals[i], &rows->vals[i + 1], sizeof(HeapTuple) * (n - i - 1));
			n--;
			if (strtoll(SPI_getvalue(last, rows->tupdesc, CLAIM_SKIP_ROW_COLUMN), NULL, 10) > (int64) n)
				started->skipped = true;
			break;
		}
	}

	/* Appended to what earlier claims of the same call started. */
	if (n > 0)
	{
		started->vals = started->count == 0 ? palloc(sizeof(HeapTuple) * n) :
			repalloc(started->vals, sizeof(HeapTuple) * (started->count + n));
		memcpy(started->vals + started->count, rows->vals, sizeof(HeapTuple) * n);
		started->tupdesc = rows->tupdesc;
		started->count += n;
	}
	vb_event_batch_init(&events, (int) n);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = rows->vals[i];
		TupleDesc	desc = rows->tupdesc;
		bool		isnull;
		TimestampTz expires = DatumGetTimestampTz(SPI_getbinval(tup, desc, 12, &isnull));
		StringInfoData data;

		if (expires < started->first_expiry)
			started->first_expiry = expires;
		initStringInfo(&data);
		appendStringInfoString(&data, "{\"worker\":");
		vb_append_json_string(&data, worker);
		appendStringInfo(&data, ",\"task_id\":%s,\"lease_expires_at\":\"%s\"}",
						 SPI_getvalue(tup, desc, 1), vb_timestamp_iso(expires));
		vb_event_batch_add(&events, DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull)),
						   "STEP_STARTED", SPI_getvalue(tup, desc, 4),
						   DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull)), data.data);
	}
	vb_event_batch_write(&events, at);
	complete_claimed_rows(started, started->count - n, at);
}

/*
 * The run that a claim of activity starts with: the first, in claim order,
 * with a node ready and available at at, into *run_id; returns how many
 * such nodes of the activity it has, counted up to 2 (0: no run has one).
 * Nothing is locked.  A claim that came back empty although this run has
 * ready work found it busy, and may wait for it (claim.c).
 */
int
vb_state_first_ready_run(const char *activity, TimestampTz at, pg_uuid_t *run_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];
	VbClaimKey	start = VB_CLAIM_KEY_FIRST;
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TIMESTAMPTZOID, INT4OID, UUIDOID};

		plan = vb_prepare_opts("SELECT f.run_id,"
							   "       (SELECT pg_catalog.count(*)::int4 FROM ("
							   "          SELECT FROM vectorbea.nodes n"
							   "           WHERE n.status = 'ready' AND n.activity = $1"
							   "             AND n.priority = f.priority AND n.run_id = f.run_id"
							   "             AND n.available_at <= $2 LIMIT 2) two)"
							   "  FROM" CLAIM_FIRST_READY_RUN("$1", "$2", "$3", "$4") " f",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	vb_claim_mark_start(activity, &start);
	args[0] = CStringGetTextDatum(activity);
	args[1] = TimestampTzGetDatum(at);
	args[2] = Int32GetDatum(start.priority);
	args[3] = UUIDPGetDatum(&start.run_id);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look for ready work");
	if (SPI_processed == 0)
		return 0;
	memcpy(run_id, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
												1, &isnull)), sizeof(pg_uuid_t));
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}

/* ---- a running attempt ends ---- */

/*
 * Completes the running attempt of task_id that lease holds, in a locked
 * run: succeeded with output, STEP_COMPLETED (with usage_json, which may
 * be NULL), dependents released.  False when lease does not hold a running
 * attempt of the task (nothing changed).  The caller ends the run when
 * nothing is left open (vb_state_finish_run_if_done) once it has added
 * what the completion spawns.
 */
#define SUCCEED_SQL(dependents) \
	"UPDATE vectorbea.nodes SET status = 'succeeded', output = $3, finished_at = $4" \
	" WHERE id = $1 AND lease = $2 AND status = 'running'" \
	" RETURNING node, attempt, started_at, " dependents

bool
vb_state_succeed(VbRun *run, int64 task_id, pg_uuid_t *lease, Jsonb *output,
				 const char *usage_json, TimestampTz at, char **node, int *attempt)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	int			v020 = vb_waits_available() ? 1 : 0;
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	bool		no_dependents;
	Datum		dependents;
	TimestampTz started_at;
	StringInfoData data;

	if (plans[v020] == NULL)
	{
		Oid			types[4] = {INT8OID, UUIDOID, JSONBOID, TIMESTAMPTZOID};

		plans[v020] = vb_prepare(v020 ? SUCCEED_SQL(DEPENDENTS_020) : SUCCEED_SQL(DEPENDENTS_010),
								 lengthof(types), types);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = UUIDPGetDatum(lease);
	if (output)
		args[2] = JsonbPGetDatum(output);
	else
		nulls[2] = 'n';
	args[3] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plans[v020], args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not complete task");
	if (SPI_processed == 0)
		return false;
	*node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	*attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	started_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	dependents = returned_dependents(SPI_tuptable, 4, &no_dependents);
	run->open_nodes--;

	initStringInfo(&data);
	appendStringInfo(&data, "{\"output\":%s,\"duration_ms\":%ld",
					 output ? JsonbToCString(NULL, &output->root, VARSIZE(output)) : "null",
					 (long) ((at - started_at) / 1000));
	if (usage_json)
		appendStringInfo(&data, ",\"usage\":%s", usage_json);
	appendStringInfoChar(&data, '}');
	vb_event(run, "STEP_COMPLETED", *node, *attempt, data.data, at);
	release_dependents(run, *node, dependents, no_dependents, v020, at);
	open_ready_gates(run, at);
	return true;
}

/*
 * The pending nodes that depend on nparents tasks of runs (locked by the
 * caller) that have just succeeded, by task id (those whose dependents
 * column is not NULL): one dependency fewer per task, and those with none
 * left become ready.
 */
static void
release_dependents_of_tasks(VbRun *runs, int nruns, Datum *parents, int nparents,
							TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];

	if (nparents == 0)
		return;
	if (plan == NULL)
	{
		Oid			types[2] = {INT8ARRAYOID, TIMESTAMPTZOID};

		plan = vb_prepare_opts("WITH hit AS ("
							   "  SELECT p.id, pg_catalog.count(*)::int AS k"
							   "    FROM vectorbea.nodes s"
							   "   CROSS JOIN LATERAL pg_catalog.unnest(s.dependents) AS c(node)"
							   "    JOIN vectorbea.nodes p"
							   "      ON p.run_id = s.run_id AND p.node = c.node AND p.status = 'pending'"
							   "   WHERE s.id = ANY ($1)"
							   "   GROUP BY p.id"
							   ")"
							   " UPDATE vectorbea.nodes n"
							   "    SET deps_remaining = n.deps_remaining - hit.k,"
							   "        status = CASE WHEN n.deps_remaining = hit.k THEN 'ready' ELSE n.status END,"
							   "        available_at = CASE WHEN n.deps_remaining = hit.k"
							   "                             AND n.available_at IS DISTINCT FROM 'infinity'"
							   "                            THEN $2 ELSE n.available_at END"
							   "   FROM hit WHERE n.id = hit.id"
							   " RETURNING n.run_id, n.activity, n.status, n.available_at = 'infinity'",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = PointerGetDatum(construct_array(parents, nparents, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not release the dependents of completed tasks");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		if (strcmp(SPI_getvalue(tup, desc, 3), "ready") == 0)
			became_ready(vb_run_find(runs, nruns, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull))),
						 SPI_getvalue(tup, desc, 2),
						 DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)));
	}
}

/*
 * vb_state_succeed for many attempts of runs that the caller has locked
 * and holds in runs (vb_run_lock_for_tasks), in a fixed number of
 * statements whatever their count: one UPDATE of the nodes, one INSERT of
 * their STEP_COMPLETED events (numbered in the order of the items), one
 * UPDATE that releases the dependents of them all (none when none of them
 * has dependents).  A dependent of two
 * nodes completed here loses both dependencies in that one UPDATE and so
 * becomes ready exactly once.  task_ids, leases and outputs are bigint[],
 * uuid[] and jsonb[] of n items (outputs may be (Datum) 0 for all NULL);
 * outputs_of holds the same outputs for the events.  matched[i] says
 * whether item i's attempt succeeded here; returns how many did.  The
 * caller ends runs left with nothing open and saves the counters.
 */
int
vb_state_succeed_many(VbRun *runs, int nruns, int n, Datum task_ids, Datum leases,
					  Datum outputs, Jsonb **outputs_of, TimestampTz at, bool *matched)
{
	static SPIPlanPtr succeed_plan = NULL;
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int			done = 0;
	VbRun	  **run_of;
	char	  **node_of;
	int		   *attempt_of;
	TimestampTz *started_of;
	VbEventBatch events;
	Datum	   *parents;
	int			nparents = 0;

	if (succeed_plan == NULL)
	{
		Oid			stypes[4] = {INT8ARRAYOID, UUIDARRAYOID, JSONBARRAYOID, TIMESTAMPTZOID};

		/*
		 * "n.id = ANY ($1)" repeats the join so that the primary key serves
		 * it: on a table of a few thousand nodes the generic plan otherwise
		 * hash-joined every node with the unnest (test/t/042_hot_plans.pl).
		 */
		succeed_plan = vb_prepare_opts("UPDATE vectorbea.nodes n"
									   "   SET status = 'succeeded', output = t.output, finished_at = $4"
									   "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
									   "                  pg_catalog.unnest($3))"
									   "       WITH ORDINALITY AS t(id, lease, output, ord)"
									   " WHERE n.id = t.id AND n.id = ANY ($1)"
									   "   AND n.lease = t.lease AND n.status = 'running'"
									   " RETURNING t.ord, n.run_id, n.node, n.attempt, n.started_at,"
									   "           CASE WHEN n.dependents IS NOT NULL THEN n.id END",
									   lengthof(stypes), stypes, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = task_ids;
	args[1] = leases;
	if (outputs == (Datum) 0)
		nulls[2] = 'n';
	else
		args[2] = outputs;
	args[3] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(succeed_plan, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not complete tasks");

	run_of = palloc0(sizeof(VbRun *) * n);
	node_of = palloc0(sizeof(char *) * n);
	attempt_of = palloc0(sizeof(int) * n);
	started_of = palloc0(sizeof(TimestampTz) * n);
	parents = palloc(sizeof(Datum) * Max(SPI_processed, 1));
	memset(matched, 0, sizeof(bool) * n);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		i = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)) - 1;

		run_of[i] = vb_run_find(runs, nruns, DatumGetUUIDP(SPI_getbinval(tup, desc, 2, &isnull)));
		if (run_of[i] == NULL)
			elog(ERROR, "vectorbea: a completed task's run is not locked");
		node_of[i] = SPI_getvalue(tup, desc, 3);
		attempt_of[i] = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		started_of[i] = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
		parents[nparents] = SPI_getbinval(tup, desc, 6, &isnull);
		if (!isnull)
			nparents++;
		matched[i] = true;
		done++;
	}
	if (done == 0)
		return 0;

	vb_event_batch_init(&events, done);
	for (int i = 0; i < n; i++)
	{
		StringInfoData data;

		if (!matched[i])
			continue;
		run_of[i]->open_nodes--;
		initStringInfo(&data);
		appendStringInfo(&data, "{\"output\":%s,\"duration_ms\":%ld}",
						 outputs_of[i] ? JsonbToCString(NULL, &outputs_of[i]->root,
														VARSIZE(outputs_of[i])) : "null",
						 (long) ((at - started_of[i]) / 1000));
		vb_event_batch_add(&events, &run_of[i]->id, "STEP_COMPLETED", node_of[i], attempt_of[i],
						   data.data);
	}
	vb_event_batch_write_held(&events, runs, nruns, at);

	release_dependents_of_tasks(runs, nruns, parents, nparents, at);
	for (int r = 0; r < nruns; r++)
		open_ready_gates(&runs[r], at);
	return done;
}

/*
 * Fails the current attempt of task_id (running or waiting, locked by the
 * caller's lease check) in a locked run.  retry_after_ms < 0 means "use the
 * backoff policy".  Returns "retrying" or "failed"; a node failed for good
 * fails the run.  The retry decision is made here and only here, whether
 * the failure was reported by a worker or found by the engine.
 */
const char *
vb_state_fail_attempt(VbRun *run, int64 task_id, const char *err_class,
					  const char *error_json, bool retryable, int64 retry_after_ms,
					  TimestampTz at)
{
	return fail_attempt(run, task_id, err_class, error_json, NULL, retryable, retry_after_ms, true, at);
}

/*
 * As vb_state_fail_attempt, for a worker's report (fail_task) with the
 * usage it reported (NULL: none), recorded in STEP_FAILED for the caller
 * to book (usage.c).
 */
const char *
vb_state_fail_reported(VbRun *run, int64 task_id, const char *err_class,
					   const char *error_json, const char *usage_json, bool retryable,
					   int64 retry_after_ms, TimestampTz at)
{
	return fail_attempt(run, task_id, err_class, error_json,
						usage_json ? psprintf(",\"usage\":%s", usage_json) : NULL, retryable,
						retry_after_ms, true, at);
}

/*
 * As vb_state_fail_attempt; a final failure of a node whose policy is
 * on_exhausted "escalate" opens its escalation gate instead, unless
 * may_escalate is false (a person has just decided "fail").  more_fields
 * (NULL: none) are added to the event that records the failure, such as
 * ,"usage":{...}.
 */
static const char *
fail_attempt(VbRun *run, int64 task_id, const char *err_class, const char *error_json,
			 const char *more_fields, bool retryable, int64 retry_after_ms, bool may_escalate,
			 TimestampTz at)
{
	const char *more = more_fields ? more_fields : "";
	static SPIPlanPtr get_plan = NULL;
	static SPIPlanPtr retry_plan = NULL;
	static SPIPlanPtr final_plan = NULL;
	Datum		args[3];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *node;
	char	   *activity;
	int			attempt;
	int			max_attempts;
	Datum		policy;
	Jsonb	   *retry;			/* NULL: the default policy */
	TimestampTz started_at;
	bool		final;
	bool		escalates;
	int64		duration_ms;

	if (get_plan == NULL)
	{
		Oid			t1[1] = {INT8OID};
		Oid			t3[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};

		get_plan = vb_prepare("SELECT node, activity, attempt, max_attempts, retry, started_at,"
							  "       retry->>'on_exhausted' = 'escalate', approval::text"
							  "  FROM vectorbea.nodes WHERE id = $1", lengthof(t1), t1);
		retry_plan = vb_prepare("UPDATE vectorbea.nodes SET status = 'ready', error = $2::jsonb,"
								" available_at = $3, lease = NULL, lease_expires_at = NULL"
								" WHERE id = $1", lengthof(t3), t3);
		final_plan = vb_prepare("UPDATE vectorbea.nodes SET status = 'failed', error = $2::jsonb,"
								" finished_at = $3, lease_expires_at = NULL"
								" WHERE id = $1", lengthof(t3), t3);
	}
	args[0] = Int64GetDatum(task_id);
	if (SPI_execute_plan(get_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: task %ld vanished", (long) task_id);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	node = SPI_getvalue(tup, desc, 1);
	activity = SPI_getvalue(tup, desc, 2);
	attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	policy = SPI_getbinval(tup, desc, 5, &isnull);
	retry = isnull ? NULL : DatumGetJsonbPCopy(policy);
	started_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
	duration_ms = isnull ? 0 : (at - started_at) / 1000;

	final = !retryable || strcmp(err_class, "permanent") == 0 || attempt >= max_attempts;
	escalates = DatumGetBool(SPI_getbinval(tup, desc, 7, &isnull)) && !isnull;
	/*
	 * The node's timeout cuts an llm call in flight like any other cut: the
	 * provider may have answered and billed (charge_cut_call; nothing for
	 * a task, or a call answered).
	 */
	if (strcmp(err_class, "timeout") == 0)
		charge_cut_call(run, node, attempt, at);
	if (final && may_escalate && escalates)
	{
		open_failure_gate(run, task_id, node, attempt, "escalation", SPI_getvalue(tup, desc, 8),
						  psprintf("{\"class\":\"%s\",\"error\":%s,\"final\":false,"
								   "\"escalated\":true,\"duration_ms\":%ld%s}",
								   err_class, error_json, (long) duration_ms, more),
						  error_json, at);
		return "escalated";
	}

	vb_event(run, "STEP_FAILED", node, attempt,
			 psprintf("{\"class\":\"%s\",\"error\":%s,\"final\":%s,\"duration_ms\":%ld%s}",
					  err_class, error_json, final ? "true" : "false", (long) duration_ms, more),
			 at);

	args[1] = CStringGetTextDatum(error_json);
	if (!final)
	{
		int64		delay = retry_after_ms >= 0 ? retry_after_ms : vb_backoff_delay_ms(retry, attempt);
		TimestampTz available_at = at + delay * 1000;

		args[2] = TimestampTzGetDatum(available_at);
		if (SPI_execute_plan(retry_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "vectorbea: could not schedule retry");
		vb_event(run, "STEP_RETRIED", node, attempt,
				 psprintf("{\"delay_ms\":%ld,\"available_at\":\"%s\",\"next_attempt\":%d}",
						  (long) delay, vb_timestamp_iso(available_at), attempt + 1),
				 at);
		/*
		 * A delayed retry is announced when it comes due: by the scheduler,
		 * or by this transaction if its time has come by the commit.
		 */
		if (delay == 0)
			vb_notify_task_ready(activity);
		else
			vb_announce_at_commit(activity, available_at);
		return "retrying";
	}

	args[2] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(final_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not fail task");
	run->open_nodes--;
	vb_state_fail_run(run, node, err_class, at);
	return "failed";
}

/* ---- gates ---- */

/*
 * Opens a gate for a node of a locked run; the node waits from now on.
 * spec_json is the node's normalised "approval" (gate, timeout_ms,
 * on_timeout, approver_role, escalate_to, context); context_json, when not
 * NULL, adds to its context (its keys win).  Returns the approval id.
 */
int64
vb_state_wait_on_gate(VbRun *run, int64 task_id, const char *node, int attempt,
					  const char *spec_json, const char *context_json, TimestampTz at)
{
	return wait_on_gate(run, task_id, node, attempt, "approval", spec_json, context_json, at);
}

/*
 * The gate's insert.  The columns of kinds and quorums come with 0.2.0's
 * schema; a 0.1.0 schema (before ALTER EXTENSION UPDATE) has approval
 * gates only, without quorum (validate.c refuses the rest).
 */
#define GATE_SQL_010 "", "", ""
#define GATE_SQL_020 \
	", kind, quorum, approvers, approver_roles", \
	", $6, (s->>'quorum')::int," \
	"    CASE WHEN s ? 'approvers' THEN ARRAY(SELECT pg_catalog.jsonb_array_elements_text(s->'approvers')) END," \
	"    CASE WHEN s ? 'approvers' THEN ARRAY(SELECT a FROM pg_catalog.jsonb_array_elements_text(s->'approvers') a" \
	"                                         WHERE EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = a)) END", \
	", kind, quorum"
#define GATE_SQL(v) GATE_SQL_(v)
#define GATE_SQL_(cols, vals, ret) \
	"WITH spec AS (SELECT $2::jsonb AS s)," \
	" gate AS (" \
	"  INSERT INTO vectorbea.approvals (run_id, node, task_id, gate, context," \
	"    approver_role, escalate_to, on_timeout, timeout_ms, expires_at, created_at" cols ")" \
	"  SELECT $5, n.node, n.id, s->>'gate', coalesce(s->'context', '{}') || coalesce($4::jsonb, '{}')," \
	"    s->>'approver_role'," \
	"    ARRAY(SELECT pg_catalog.jsonb_array_elements_text(coalesce(s->'escalate_to', '[]')))," \
	"    coalesce(s->>'on_timeout', 'reject'), (s->>'timeout_ms')::bigint," \
	"    $3 + (s->>'timeout_ms')::bigint * interval '1 ms', $3" vals \
	"    FROM spec, vectorbea.nodes n WHERE n.id = $1" \
	"  RETURNING id, gate, approver_role, on_timeout, expires_at, context" ret \
	"), waits AS (" \
	"  UPDATE vectorbea.nodes SET status = 'waiting', lease = NULL," \
	"         started_at = coalesce(started_at, $3), lease_expires_at = NULL" \
	"   WHERE id = $1" \
	")" \
	" SELECT id, gate, approver_role, on_timeout, expires_at, context::text" ret \
	"   FROM gate"

static int64
wait_on_gate(VbRun *run, int64 task_id, const char *node, int attempt, const char *kind,
			 const char *spec_json, const char *context_json, TimestampTz at)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	int			schema_020 = vb_waits_available() ? 1 : 0;
	SPIPlanPtr	plan;
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	int64		id;
	char	   *gate;
	Datum		expires;
	bool		expires_null;
	char	   *approver_role;
	StringInfoData data;

	if (plans[schema_020] == NULL)
	{
		Oid			types[6] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, UUIDOID, TEXTOID};

		plans[schema_020] = vb_prepare(schema_020 ? GATE_SQL(GATE_SQL_020) : GATE_SQL(GATE_SQL_010),
									   schema_020 ? 6 : 5, types);
	}
	plan = plans[schema_020];
	args[0] = Int64GetDatum(task_id);
	args[1] = CStringGetTextDatum(spec_json);
	args[2] = TimestampTzGetDatum(at);
	if (context_json)
		args[3] = CStringGetTextDatum(context_json);
	else
		nulls[3] = 'n';
	args[4] = UUIDPGetDatum(&run->id);
	args[5] = CStringGetTextDatum(kind);
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not open the gate of node \"%s\"", node);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	gate = SPI_getvalue(tup, desc, 2);
	approver_role = SPI_getvalue(tup, desc, 3);
	expires = SPI_getbinval(tup, desc, 5, &expires_null);

	initStringInfo(&data);
	appendStringInfo(&data, "{\"approval\":%ld,\"gate\":", (long) id);
	vb_append_json_string(&data, gate);
	appendStringInfoString(&data, ",\"approver_role\":");
	vb_append_json_string(&data, approver_role);
	appendStringInfoString(&data, ",\"on_timeout\":");
	vb_append_json_string(&data, SPI_getvalue(tup, desc, 4));
	if (expires_null)
		appendStringInfoString(&data, ",\"expires_at\":null");
	else
		appendStringInfo(&data, ",\"expires_at\":\"%s\"",
						 vb_timestamp_iso(DatumGetTimestampTz(expires)));
	appendStringInfo(&data, ",\"context\":%s", SPI_getvalue(tup, desc, 6));
	if (schema_020 && strcmp(kind, "approval") != 0)
		appendStringInfo(&data, ",\"kind\":\"%s\"", kind);
	if (schema_020 && SPI_getvalue(tup, desc, 8))
		appendStringInfo(&data, ",\"quorum\":%s", SPI_getvalue(tup, desc, 8));
	appendStringInfoChar(&data, '}');

	vb_event(run, "APPROVAL_REQUESTED", node, attempt, data.data, at);
	vb_notify_approval(id, &run->id, gate, "pending");
	if (!expires_null)
		vb_wake_scheduler(DatumGetTimestampTz(expires));
	return id;
}

/*
 * The context of the failure gate of compensation node task_id, context
 * with the input its attempts were given: its own and its original's
 * input and output ("original"), which its row does not hold (they are
 * added at the claim).  The person deciding sees what was to be undone.
 * The gate and its APPROVAL_REQUESTED event keep a copy, so past
 * vectorbea.max_payload_size the original is named only, with the size
 * of the whole in "input_bytes".
 */
static char *
compensation_gate_context(int64 task_id, const char *context)
{
	static SPIPlanPtr whole_plan = NULL;
	static SPIPlanPtr named_plan = NULL;
	Datum		args[3];
	Jsonb	   *input;
	int64		bytes;

	if (whole_plan == NULL)
	{
		Oid			whole_types[2] = {TEXTOID, JSONBOID};
		Oid			named_types[3] = {TEXTOID, INT8OID, INT8OID};

		whole_plan = vb_prepare("SELECT ($1::jsonb || pg_catalog.jsonb_build_object('input', $2))::text",
								lengthof(whole_types), whole_types);
		named_plan = vb_prepare("SELECT ($1::jsonb || pg_catalog.jsonb_build_object("
								"   'input', ($1::jsonb -> 'input') || pg_catalog.jsonb_build_object("
								"      'original', pg_catalog.jsonb_build_object('node', c.compensation_of)),"
								"   'input_bytes', $3))::text"
								"  FROM vectorbea.nodes c WHERE c.id = $2",
								lengthof(named_types), named_types);
	}
	input = vb_compensation_input(task_id, (int64) vb_max_payload_kb * 1024, &bytes);
	args[0] = CStringGetTextDatum(context);
	if (input != NULL)
	{
		args[1] = JsonbPGetDatum(input);
		if (SPI_execute_plan(whole_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: could not make the gate context of task %ld", (long) task_id);
	}
	else
	{
		args[1] = Int64GetDatum(task_id);
		args[2] = Int64GetDatum(bytes);
		if (SPI_execute_plan(named_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "vectorbea: could not make the gate context of task %ld", (long) task_id);
	}
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * The attempt of task_id failed (failed_json is its STEP_FAILED data, not
 * final) and a person decides what happens: a gate of kind escalation (the
 * node is out of attempts) or in_doubt (the attempt was cut by a crash)
 * opens with spec_json, the node's "escalation" gate, and the node waits.
 * The gate's context holds the error, the attempts, the input and the
 * checkpoint, for the person to judge; a compensation's input holds its
 * original.
 */
static void
open_failure_gate(VbRun *run, int64 task_id, const char *node, int attempt, const char *kind,
				  const char *spec_json, const char *failed_json, const char *error_json,
				  TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	char	   *context;

	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};

		/*
		 * The attempt is over: no deadline ends the wait, no child is
		 * awaited, and a run node holds no grant for one against its run's
		 * budget (its child's spend is booked; a waiting run node's
		 * reservation counts, VB_RUN_RESERVED_SQL).  Another node's
		 * reservation counts only while it runs: it stays, the record of
		 * what a cut call was charged (charge_cut_call).
		 */
		plan = vb_prepare("UPDATE vectorbea.nodes SET error = $2::jsonb, lease_expires_at = NULL,"
						  "       attempt_deadline = NULL, lease = NULL,"
						  "       reserved_usd = CASE WHEN kind = 'run' THEN NULL ELSE reserved_usd END,"
						  "       reserved_tokens = CASE WHEN kind = 'run' THEN NULL ELSE reserved_tokens END"
						  " WHERE id = $1"
						  " RETURNING pg_catalog.jsonb_build_object('kind', $3, 'error', $2::jsonb,"
						  "   'attempts', attempt, 'input', input, 'checkpoint', checkpoint)::text",
						  lengthof(types), types);
	}
	vb_event(run, "STEP_FAILED", node, attempt, failed_json, at);
	args[0] = Int64GetDatum(task_id);
	args[1] = CStringGetTextDatum(error_json);
	args[2] = CStringGetTextDatum(kind);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "vectorbea: could not hold task %ld for a person", (long) task_id);
	context = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	/* the schema asked only then, as at the claim; 0.1.0 has none */
	if (pg_str_endswith(node, VB_COMPENSATION_SUFFIX) && vb_waits_available())
		context = compensation_gate_context(task_id, context);
	wait_on_gate(run, task_id, node, attempt, kind, spec_json, context, at);
}

/*
 * Whether the attempt of node n has a call out: its last LLM_REQUESTED has
 * no LLM_CALLED after it.  One that holds a correction for its time under
 * a rate limit (llm.c) has none: its last call was answered.
 */
#define LLM_CALL_OUT_SQL \
	"coalesce((SELECT e.type FROM vectorbea.events e" \
	"           WHERE e.run_id = n.run_id AND e.node = n.node AND e.attempt = n.attempt" \
	"             AND e.type IN ('LLM_REQUESTED', 'LLM_CALLED')" \
	"           ORDER BY e.seq DESC LIMIT 1) = 'LLM_REQUESTED', false)"

/*
 * An llm call that was in flight when its attempt was cut (its attempt's
 * last LLM_REQUESTED has no LLM_CALLED): the provider may have answered
 * and billed, and nobody will ever know what.  It is charged at the worst
 * case reserved for it before it was sent, in LLM_CHARGED (whose usage
 * replay counts) and on the run, so that what budgets see never lags
 * behind what may have been spent.  LLM_REQUESTED without LLM_CALLED
 * still says that the call was cut.  Whatever cut it: a crash, a lease
 * that ran out, a kill switch, or the run's end, which revokes it.  Once:
 * a call already charged is not charged again (a requeue that asks about
 * an attempt its run's failure charged).
 *
 * A call recorded by this very transaction was never sent: the scheduler
 * sends a call only once the LLM_REQUESTED that records it has committed
 * (a sibling's failure in the same claim step, or a later answer of the
 * same batch, ended the run first).  Nothing is in doubt and nothing was
 * spent: an LLM_CALLED of outcome "not_sent" says so, and the call is out
 * for no one after it (LLM_CALL_OUT_SQL: a requeue does not ask about it,
 * a compensation does not undo it).
 */
static void
charge_cut_call(VbRun *run, const char *node, int attempt, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	HeapTuple	tup;
	TupleDesc	desc;
	char	   *usd;
	char	   *tokens;
	char	   *budget;
	bool		isnull;

	/* A 0.1.0 schema reserves nothing (no reserved_usd): nothing to charge. */
	if (!vb_waits_available())
		return;
	if (plan == NULL)
	{
		Oid			types[3] = {UUIDOID, TEXTOID, INT4OID};

		plan = vb_prepare("SELECT e.type, e.data->>'call', n.reserved_usd::text, n.reserved_tokens,"
						  "       e.xmin, e.data->>'provider', e.data->>'model'"
						  "  FROM vectorbea.events e"
						  "  JOIN vectorbea.nodes n ON n.run_id = e.run_id AND n.node = e.node"
						  " WHERE e.run_id = $1 AND e.node = $2 AND e.attempt = $3"
						  "   AND e.type IN ('LLM_REQUESTED', 'LLM_CALLED', 'LLM_CHARGED') AND n.kind = 'llm'"
						  " ORDER BY e.seq DESC LIMIT 1", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(node);
	args[2] = Int32GetDatum(attempt);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look up a cut call");
	if (SPI_processed == 0)
		return;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (strcmp(SPI_getvalue(tup, desc, 1), "LLM_REQUESTED") != 0)
		return;					/* answered and booked, or charged already */
	if (TransactionIdIsCurrentTransactionId(DatumGetTransactionId(SPI_getbinval(tup, desc, 5, &isnull))))
	{
		StringInfoData data;

		(void) SPI_getbinval(tup, desc, 2, &isnull);
		initStringInfo(&data);
		appendStringInfoString(&data, "{\"provider\":");
		vb_append_json_string(&data, SPI_getvalue(tup, desc, 6));
		appendStringInfoString(&data, ",\"model\":");
		vb_append_json_string(&data, SPI_getvalue(tup, desc, 7));
		appendStringInfo(&data, ",\"call\":%s,\"latency_ms\":0,\"http_status\":0,\"tokens_in\":0,"
						 "\"tokens_out\":0,\"cost_usd\":0,\"priced\":false,\"outcome\":\"not_sent\","
						 "\"error\":\"its attempt ended before the call was sent\"}",
						 isnull ? "null" : SPI_getvalue(tup, desc, 2));
		vb_event(run, "LLM_CALLED", node, attempt, data.data, at);
		return;
	}
	usd = SPI_getvalue(tup, desc, 3);
	tokens = SPI_getvalue(tup, desc, 4);
	(void) SPI_getbinval(tup, desc, 2, &isnull);
	if (usd == NULL && tokens == NULL)
		return;					/* nothing was reserved: no budget, nothing priced */
	vb_event(run, "LLM_CHARGED", node, attempt,
			 psprintf("{\"call\":%s,\"usage\":{\"tokens\":%s,\"usd\":%s},"
					  "\"reason\":\"cut in flight, answer unknown: charged at its reserved worst case\"}",
					  isnull ? "null" : SPI_getvalue(tup, desc, 2), tokens ? tokens : "0",
					  usd ? usd : "0"),
			 at);
	/* The budget's policy acts at the next call's check, which sees this. */
	(void) vb_state_book_usage(run, tokens ? strtoll(tokens, NULL, 10) : 0, usd ? usd : "0",
							   &budget);
}

/*
 * An attempt of task_id (a locked run's) was cut by a crash after it may
 * have taken effect: an llm call sent, or a worker's lease that ran out.
 * The node's in_doubt policy decides: retry (a failure of class err_class,
 * retried by the retry policy), ask (a gate of kind in_doubt: a person
 * says done with an output, retry or fail) or compensate (the node fails
 * for good, class in_doubt, and its run compensates, this node included).
 * NULL, with nothing changed, when the node is no longer running: the
 * caller found it before it locked the run, and meanwhile the run closed
 * it (a failure, a cancellation or a compensation that revoked it), as a
 * running scheduler drops a revoked call.
 */
const char *
vb_state_attempt_in_doubt(VbRun *run, int64 task_id, const char *err_class,
						  const char *error_json, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	char	   *policy;
	char	   *node;
	char	   *spec;
	int			attempt;
	Datum		started_at;
	int64		duration_ms;
	bool		isnull;

	if (!vb_waits_available())
	{
		/* A 0.1.0 schema: no in_doubt policy, the attempt is retried. */
		static SPIPlanPtr running_plan = NULL;

		if (running_plan == NULL)
		{
			Oid			types[1] = {INT8OID};

			running_plan = vb_prepare("SELECT FROM vectorbea.nodes WHERE id = $1 AND status = 'running'",
									  lengthof(types), types);
		}
		args[0] = Int64GetDatum(task_id);
		if (SPI_execute_plan(running_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: could not read task %ld", (long) task_id);
		if (SPI_processed == 0)
			return NULL;
		return fail_attempt(run, task_id, err_class, error_json, NULL, true, -1, true, at);
	}
	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = vb_prepare("SELECT retry->>'in_doubt', node, approval::text, attempt, started_at"
						  "  FROM vectorbea.nodes WHERE id = $1 AND status = 'running'",
						  lengthof(types), types);
	}
	args[0] = Int64GetDatum(task_id);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read task %ld", (long) task_id);
	if (SPI_processed == 0)
		return NULL;
	policy = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	spec = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	started_at = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull);
	duration_ms = isnull ? 0 : (at - DatumGetTimestampTz(started_at)) / 1000;
	charge_cut_call(run, node, attempt, at);
	if (policy && strcmp(policy, "ask") == 0)
	{
		open_failure_gate(run, task_id, node, attempt, "in_doubt", spec,
						  psprintf("{\"class\":\"%s\",\"error\":%s,\"final\":false,"
								   "\"in_doubt\":\"ask\",\"duration_ms\":%ld}", err_class, error_json,
								   (long) duration_ms),
						  error_json, at);
		return "asked";
	}
	if (policy && strcmp(policy, "compensate") == 0)
		return fail_attempt(run, task_id, "in_doubt",
							psprintf("{\"message\":\"in doubt: the attempt may have taken effect; the node is compensated\","
									 "\"class\":\"in_doubt\",\"cut\":%s}", error_json),
							NULL, false, -1, false, at);
	return fail_attempt(run, task_id, err_class, error_json, NULL, true, -1, true, at);
}

/*
 * A person decided the escalation or in_doubt gate of task_id (waiting, in
 * a locked run): accept (the node succeeds with output_json), retry (a
 * fresh attempt budget, the node's retry policy's max_attempts more; its
 * input replaced by input_json when not NULL) or fail (the node fails for
 * good, with record_json, the decision, as its error; no new escalation).
 */
void
vb_state_decide_failure(VbRun *run, int64 task_id, const char *node, const char *decision,
						const char *output_json, const char *input_json,
						const char *record_json, const char *err_class, int64 approval_id,
						TimestampTz at)
{
	static SPIPlanPtr retry_plan = NULL;
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	bool		isnull;
	int			attempt;
	int			max_attempts;
	char	   *activity;

	if (strcmp(decision, "accept") == 0)
	{
		if (!vb_state_end_wait(run, task_id, output_json, at))
			elog(ERROR, "vectorbea: node \"%s\" is not waiting for its gate", node);
		return;
	}
	if (strcmp(decision, "fail") == 0)
	{
		fail_attempt(run, task_id, err_class, record_json, NULL, false, -1, false, at);
		return;
	}
	if (retry_plan == NULL)
	{
		Oid			types[3] = {INT8OID, TIMESTAMPTZOID, TEXTOID};

		retry_plan = vb_prepare("UPDATE vectorbea.nodes"
								"   SET status = 'ready', available_at = $2, lease = NULL,"
								"       lease_expires_at = NULL, attempt_deadline = NULL,"
								"       max_attempts = attempt + " NODE_MAX_ATTEMPTS ","
								"       input = coalesce($3::jsonb, input)"
								" WHERE id = $1 AND status = 'waiting'"
								" RETURNING attempt, max_attempts, activity", lengthof(types), types);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = TimestampTzGetDatum(at);
	if (input_json)
		args[2] = CStringGetTextDatum(input_json);
	else
		nulls[2] = 'n';
	if (SPI_execute_plan(retry_plan, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "vectorbea: node \"%s\" is not waiting for its gate", node);
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	max_attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	activity = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	vb_event(run, "STEP_RETRIED", node, attempt,
			 psprintf("{\"delay_ms\":0,\"available_at\":\"%s\",\"next_attempt\":%d,"
					  "\"max_attempts\":%d,\"approval\":%ld,\"input_replaced\":%s}",
					  vb_timestamp_iso(at), attempt + 1, max_attempts, (long) approval_id,
					  input_json ? "true" : "false"),
			 at);
	became_ready(run, activity, false);
	open_ready_gates(run, at);
}

/*
 * Starts what the engine starts at once among the nodes of a locked run
 * that have become ready without an activity (run->gates_pending): the
 * gates of approval nodes whose time has come.  Sleep, signal and run
 * nodes, and nodes held by their not_before, are the scheduler's to start
 * (waits.c): it is woken.  The event that made them ready is already
 * written, so the history shows a node before its gate.
 */
static void
open_ready_gates(VbRun *run, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	uint64		n;
	int64	   *ids;
	char	  **nodes;
	char	  **specs;
	bool		wake = false;
	uint64		gates = 0;

	if (!run->gates_pending)
		return;
	run->gates_pending = false;
	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, TIMESTAMPTZOID};

		plan = vb_prepare("SELECT id, node, approval::text, kind = 'approval' AND available_at <= $2"
						  "  FROM vectorbea.nodes"
						  " WHERE run_id = $1 AND activity IS NULL AND status = 'ready'"
						  " ORDER BY id", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find gates to open");
	n = SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1));
	nodes = palloc(sizeof(char *) * Max(n, 1));
	specs = palloc(sizeof(char *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;

		if (!DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 4, &isnull)))
		{
			wake = true;
			continue;
		}
		ids[gates] = DatumGetInt64(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
		nodes[gates] = SPI_getvalue(tup, SPI_tuptable->tupdesc, 2);
		specs[gates] = SPI_getvalue(tup, SPI_tuptable->tupdesc, 3);
		gates++;
	}
	for (uint64 i = 0; i < gates; i++)
		vb_state_wait_on_gate(run, ids[i], nodes[i], 0, specs[i], NULL, at);
	if (wake)
		vb_wake_scheduler(at);
}

/* ---- waits the engine ends: timers, signals, child runs ---- */

/*
 * A ready sleep, signal or run node of a locked run starts waiting: a new
 * attempt that ends at deadline (DT_NOEND: only an outside event ends it),
 * with lease as its token (the child run's id; NULL for none).  event_type
 * (TIMER_STARTED, SIGNAL_AWAITED, CHILD_RUN_STARTED) and data_json say
 * what it waits for.  Returns the attempt number, 0 when the node was not
 * ready (nothing changed).
 */
int
vb_state_begin_wait(VbRun *run, int64 task_id, TimestampTz deadline, pg_uuid_t *lease,
					const char *event_type, const char *data_json, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	int			attempt;

	if (plan == NULL)
	{
		Oid			types[4] = {INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, UUIDOID};

		plan = vb_prepare("UPDATE vectorbea.nodes"
						  "   SET status = 'waiting', attempt = attempt + 1, started_at = $2,"
						  "       attempt_deadline = $3, lease = $4, lease_expires_at = NULL,"
						  "       worker = NULL"
						  " WHERE id = $1 AND status = 'ready'"
						  " RETURNING node, attempt", lengthof(types), types);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = TimestampTzGetDatum(at);
	args[2] = TimestampTzGetDatum(deadline);
	if (deadline == DT_NOEND)
		nulls[2] = 'n';
	if (lease)
		args[3] = UUIDPGetDatum(lease);
	else
		nulls[3] = 'n';
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not start the wait of task %ld", (long) task_id);
	if (SPI_processed == 0)
		return 0;
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	vb_event(run, event_type, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
			 attempt, data_json, at);
	if (deadline != DT_NOEND)
		vb_wake_scheduler(deadline);
	return attempt;
}

/*
 * A waiting node of a locked run succeeds with output_json: STEP_COMPLETED,
 * its dependents are released, and the run may finish.  False when the
 * node was not waiting (nothing changed).
 */
bool
vb_state_end_wait(VbRun *run, int64 task_id, const char *output_json, TimestampTz at)
{
	return end_wait(run, task_id, output_json, NULL, at);
}

#define END_WAIT_SQL(dependents) \
	"UPDATE vectorbea.nodes SET status = 'succeeded', output = $2::jsonb, finished_at = $3" \
	" WHERE id = $1 AND status = 'waiting'" \
	" RETURNING node, attempt, started_at, " dependents

/* vb_state_end_wait, with more_fields (NULL: none) added to STEP_COMPLETED. */
static bool
end_wait(VbRun *run, int64 task_id, const char *output_json, const char *more_fields,
		 TimestampTz at)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	int			v020 = vb_waits_available() ? 1 : 0;
	Datum		args[3];
	bool		isnull;
	char	   *node;
	int			attempt;
	bool		no_dependents;
	Datum		dependents;
	TimestampTz started_at;

	if (plans[v020] == NULL)
	{
		Oid			types[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};

		/* By its key: the generic plan is the plan. */
		plans[v020] = vb_prepare_opts(v020 ? END_WAIT_SQL(DEPENDENTS_020) : END_WAIT_SQL(DEPENDENTS_010),
									  lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = CStringGetTextDatum(output_json);
	args[2] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plans[v020], args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not end the wait of task %ld", (long) task_id);
	if (SPI_processed != 1)
		return false;
	node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	started_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	dependents = returned_dependents(SPI_tuptable, 4, &no_dependents);
	run->open_nodes--;
	vb_event(run, "STEP_COMPLETED", node, attempt,
			 psprintf("{\"output\":%s,\"duration_ms\":%ld%s}", output_json,
					  (long) ((at - started_at) / 1000), more_fields ? more_fields : ""),
			 at);
	release_dependents(run, node, dependents, no_dependents, v020, at);
	open_ready_gates(run, at);
	vb_state_finish_run_if_done(run, at);
	return true;
}

/*
 * A ready node of a locked run held by its not_before may start at
 * available_at, which the scheduler read from it: until then no worker
 * claims it.  No event: readiness is derived, and the time is the
 * definition's.
 */
void
vb_state_release_not_before(VbRun *run, int64 task_id, const char *activity,
							TimestampTz available_at, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];

	if (plan == NULL)
	{
		Oid			types[2] = {INT8OID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.nodes SET available_at = $2"
						  " WHERE id = $1 AND status = 'ready' AND available_at = 'infinity'",
						  lengthof(types), types);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = TimestampTzGetDatum(available_at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not release task %ld", (long) task_id);
	if (available_at > at)
		vb_announce_at_commit(activity, available_at);
	else if (activity)
		vb_notify_task_ready(activity);
	else
	{
		run->gates_pending = true;
		open_ready_gates(run, at);
	}
}

/*
 * The node of a decided gate succeeds with output_json (approved) or fails
 * for good with it as its error (rejected, expired); the run moves on as
 * after complete_task or a final fail_task.  A node failed by a decision
 * does not escalate again (a task that asked await_approval and whose
 * policy is on_exhausted "escalate" would open a second gate).  The gate
 * row itself is the decision's (the UPDATE in progress, or the scheduler's
 * expiry).
 */
void
vb_state_settle_gate(VbRun *run, int64 task_id, const char *node, bool approved,
					 const char *output_json, const char *err_class, TimestampTz at)
{
	if (!approved)
	{
		fail_attempt(run, task_id, err_class, output_json, NULL, false, -1, false, at);
		return;
	}
	if (!vb_state_end_wait(run, task_id, output_json, at))
		elog(ERROR, "vectorbea: node \"%s\" is not waiting for its gate", node);
}

/*
 * Runs ended by a person's decision while the decision's UPDATE statement
 * is still in progress: their other gates cannot be closed yet, since the
 * statement may still visit them, so the statement's AFTER trigger closes
 * them (vb_state_close_deferred_gates).  Valid for one local transaction.
 */
typedef struct RunToClose
{
	pg_uuid_t	run_id;
	SubTransactionId subid;		/* the subtransaction whose decision ended it */
} RunToClose;

static List *runs_to_close = NIL;
static LocalTransactionId runs_to_close_lxid = InvalidLocalTransactionId;

static List *
current_runs_to_close(void)
{
	if (runs_to_close_lxid != MyProc->lxid)
		runs_to_close = NIL;
	return runs_to_close;
}

static bool
run_in_list(List *list, pg_uuid_t *run_id)
{
	ListCell   *lc;

	foreach(lc, list)
		if (memcmp(&((RunToClose *) lfirst(lc))->run_id, run_id, sizeof(pg_uuid_t)) == 0)
			return true;
	return false;
}

/*
 * A decision rolled back with its subtransaction (ROLLBACK TO SAVEPOINT,
 * a PL/pgSQL exception block) ended no run: its runs are forgotten, or a
 * later UPDATE of the transaction would close their gates while they go
 * on.  A subtransaction that commits hands its runs to its parent.
 */
static void
forget_aborted_decisions(SubXactEvent event, SubTransactionId subid,
						 SubTransactionId parent_subid, void *arg)
{
	ListCell   *lc;

	if (runs_to_close_lxid != MyProc->lxid || runs_to_close == NIL)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		foreach(lc, runs_to_close)
			if (((RunToClose *) lfirst(lc))->subid >= subid)
				runs_to_close = foreach_delete_current(runs_to_close, lc);
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, runs_to_close)
			if (((RunToClose *) lfirst(lc))->subid >= subid)
				((RunToClose *) lfirst(lc))->subid = parent_subid;
	}
}

/*
 * A person's decision is being applied (the trigger of approvals, while
 * its row is being updated).  Gates of any run it ends are closed at the
 * end of the statement, not at once: a parent failed by its child's end is
 * not the decided run, and the same statement may still reach its gate,
 * which PostgreSQL refuses to update twice in one command.
 */
static int	decisions_running = 0;

void
vb_state_decision_begin(void)
{
	decisions_running++;
}

void
vb_state_decision_end(void)
{
	decisions_running--;
}

/* Whether a decision of the UPDATE in progress ended run_id already. */
bool
vb_state_run_closing_deferred(pg_uuid_t *run_id)
{
	return run_in_list(current_runs_to_close(), run_id);
}

/*
 * The pending gates of a run that has ended are closed: nobody can decide
 * them any more.  A closed gate has no decider and no reason.
 */
static void
close_gates(VbRun *run, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];

	if (decisions_running > 0)
	{
		List	   *list = current_runs_to_close();

		if (!run_in_list(list, &run->id))
		{
			static bool callback_registered = false;
			MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
			RunToClose *entry = palloc(sizeof(RunToClose));

			memcpy(&entry->run_id, &run->id, sizeof(pg_uuid_t));
			entry->subid = GetCurrentSubTransactionId();
			runs_to_close = lappend(list, entry);
			runs_to_close_lxid = MyProc->lxid;
			MemoryContextSwitchTo(old);
			if (!callback_registered)
			{
				RegisterSubXactCallback(forget_aborted_decisions, NULL);
				callback_registered = true;
			}
		}
		return;
	}
	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.approvals SET status = 'closed', decided_at = $2"
						  " WHERE run_id = $1 AND status = 'pending'"
						  " RETURNING id, gate", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = TimestampTzGetDatum(at);
	if (vb_gate_update_plan(plan, args, NULL) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not close the gates of a run");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		vb_notify_approval(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)),
						   &run->id, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2),
						   "closed");
	}
}

/*
 * Closes the gates of the runs that decisions of the UPDATE statement just
 * ended (its AFTER trigger calls this, inside SPI, as the table owner).
 */
void
vb_state_close_deferred_gates(TimestampTz at)
{
	List	   *list = current_runs_to_close();
	ListCell   *lc;

	runs_to_close = NIL;
	foreach(lc, list)
	{
		VbRun		run;

		if (vb_run_lock(&((RunToClose *) lfirst(lc))->run_id, &run))
			close_gates(&run, at);
	}
}

/* ---- runs end ---- */

/*
 * Closes every open node of the run: those not started take idle_status,
 * running ones take running_status and so lose their lease, which refuses
 * their late results; an llm call out among them is charged first.
 * Returns JSON arrays of the closed node ids: those that had not started,
 * and those whose lease was revoked.
 */
static void
close_open_nodes(VbRun *run, VbNodeStatus idle_status, VbNodeStatus running_status,
				 TimestampTz at, char **closed_json, char **revoked_json)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr cut_plan = NULL;
	Datum		args[4];
	bool		isnull;
	uint64		ncut;
	char	  **cut_nodes;
	int		   *cut_attempts;

	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, TEXTOID};
		Oid			t1[1] = {UUIDOID};

		cut_plan = vb_prepare("SELECT n.node, n.attempt FROM vectorbea.nodes n"
							  " WHERE n.run_id = $1 AND n.status = 'running' AND n.kind = 'llm'"
							  "   AND " LLM_CALL_OUT_SQL
							  " ORDER BY n.id", lengthof(t1), t1);

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
						  "        pg_catalog.count(*), pg_catalog.count(*) FILTER (WHERE was = 'running' AND kind = 'llm'),"
						  "        pg_catalog.count(*) FILTER (WHERE was = 'waiting' AND kind = 'run')"
						  "   FROM closed",
						  4, types);
	}
	/*
	 * The llm calls out that the end revokes are cut: charged at their
	 * worst case first (charge_cut_call), as the scheduler drops them.
	 */
	args[0] = UUIDPGetDatum(&run->id);
	if (SPI_execute_plan(cut_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the llm calls out of run %s", vb_uuid_text(&run->id));
	ncut = SPI_processed;
	cut_nodes = palloc(sizeof(char *) * (ncut + 1));
	cut_attempts = palloc(sizeof(int) * (ncut + 1));
	for (uint64 i = 0; i < ncut; i++)
	{
		cut_nodes[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		cut_attempts[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2,
													  &isnull));
	}
	for (uint64 i = 0; i < ncut; i++)
		charge_cut_call(run, cut_nodes[i], cut_attempts[i], at);

	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(vb_node_status_name(idle_status));
	args[2] = TimestampTzGetDatum(at);
	args[3] = CStringGetTextDatum(vb_node_status_name(running_status));
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not close the nodes of a run");
	*closed_json = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	*revoked_json = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	run->open_nodes -= (int32) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc, 3,
														   &isnull));
	/*
	 * The scheduler drops the revoked llm calls it has in flight, and
	 * cancels the child runs nobody waits for any more.
	 */
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)) > 0)
		vb_wake_scheduler(at);
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull)) > 0)
		vb_wake_scheduler_for_orphans(&run->id, at);
}

/*
 * The limit a failed run failed at, when a run node of it hit one of the
 * limits of child runs, itself or further down (VB_DEPTH_LIMIT_FIELD,
 * VB_TREE_LIMIT_FIELD); NULL when it failed otherwise.
 */
static const char *
failed_at_limit(pg_uuid_t *run_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(run_id)};
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT (error->'" VB_DEPTH_LIMIT_FIELD "') = 'true' FROM vectorbea.nodes"
						  " WHERE run_id = $1 AND status = 'failed' AND kind = 'run'"
						  "   AND ((error->'" VB_DEPTH_LIMIT_FIELD "') = 'true'"
						  "        OR (error->'" VB_TREE_LIMIT_FIELD "') = 'true')",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the failure of run %s", vb_uuid_text(run_id));
	if (SPI_processed == 0)
		return NULL;
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))
		? VB_DEPTH_LIMIT_FIELD : VB_TREE_LIMIT_FIELD;
}

/*
 * A child run has ended: the run node of its parent that waits for it (its
 * lease is the child's id) succeeds with the outputs of the child's last
 * nodes (those no other node depends on), or its attempt fails: retryable
 * when the child failed (class child_failed), for good when it was
 * cancelled or failed at a limit of child runs.  The parent is locked
 * after the child, the one order in which the engine ever holds two runs:
 * a parent never waits for a child's lock (its children are cancelled by
 * the scheduler, waits.c); starting a child locks its tree's root the same
 * way, after the parent, and only tries (waits.c).
 */
static void
tell_parent(VbRun *child, VbRunStatus status, const char *data_json, TimestampTz at)
{
	static SPIPlanPtr parent_plan = NULL;
	static SPIPlanPtr node_plan = NULL;
	Datum		args[3];
	bool		isnull;
	Datum		parent_id;
	char	   *parent_node;
	char	   *child_id = vb_uuid_text(&child->id);
	VbRun		locked;
	VbRun	   *parent;
	int64		task_id;
	int			attempt;
	char	   *more;
	char	   *over_detail = NULL;
	bool		over = false;
	bool		pause = false;

	if (parent_plan == NULL)
	{
		Oid			t1[1] = {UUIDOID};
		Oid			t3[3] = {UUIDOID, TEXTOID, UUIDOID};

		parent_plan = vb_prepare("SELECT parent_run, parent_node FROM vectorbea.runs"
								 " WHERE id = $1 AND parent_run IS NOT NULL", lengthof(t1), t1);
		node_plan = vb_prepare("SELECT id, attempt FROM vectorbea.nodes"
							   " WHERE run_id = $1 AND node = $2 AND lease = $3"
							   "   AND kind = 'run' AND status = 'waiting'", lengthof(t3), t3);
	}
	args[0] = UUIDPGetDatum(&child->id);
	if (SPI_execute_plan(parent_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find the parent of run %s", child_id);
	if (SPI_processed == 0)
		return;
	parent_id = datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
						  false, sizeof(pg_uuid_t));
	parent_node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	args[0] = parent_id;
	args[1] = CStringGetTextDatum(parent_node);
	args[2] = UUIDPGetDatum(&child->id);

	/*
	 * A run node that no longer waits for this child never waits for it
	 * again, so an orphan's end (the scheduler cancels it) leaves the
	 * parent alone: taking the parent's lock first would keep the whole
	 * scheduler waiting behind a worker's open transaction on the parent.
	 */
	if (SPI_execute_plan(node_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find the node waiting for run %s", child_id);
	if (SPI_processed == 0)
		return;
	/*
	 * A paused parent still takes its child's end, as it takes a completion.
	 * A parent that the caller's batch holds is changed in the batch's copy
	 * (events.c), which the batch saves.
	 */
	parent = vb_run_held(DatumGetUUIDP(parent_id));
	if (parent == NULL)
	{
		if (!vb_run_lock_parent(DatumGetUUIDP(parent_id), &locked))
			return;
		parent = &locked;
	}
	if (!vb_run_active(parent->status))
		return;
	/* again under the lock: it may have stopped waiting meanwhile */
	if (SPI_execute_plan(node_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find the node waiting for run %s", child_id);
	if (SPI_processed == 0)
		return;
	task_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

	/*
	 * What the child spent counts against the parent's budget from now on
	 * (it had the parent's remainder as its own budget, waits.c), and the
	 * event that ends the run node says so, for replay.
	 */
	more = book_child_usage(parent, &child->id, false, &over, &over_detail, &pause);

	if (status == VB_RUN_SUCCEEDED)
	{
		int64		bytes;
		Jsonb	   *output = vb_child_output(&child->id, &bytes);
		int			limit_kb = vb_payload_limit_kb();

		/*
		 * The outputs of the child's last nodes, each within the limit, may
		 * together pass it, or even what one jsonb value holds: the parent's
		 * node fails, as a worker's output that large would be refused.
		 * Another child would end the same.
		 */
		if (output != NULL)
			bytes = VARSIZE_ANY_EXHDR(output);
		if (output == NULL || bytes > (int64) limit_kb * 1024)
			fail_attempt(parent, task_id, "permanent",
						 psprintf("{\"message\":\"the output of child run %s is too large: it %s %lld bytes;"
								  " vectorbea.max_payload_size allows %d kB\",\"class\":\"permanent\","
								  "\"child_run\":\"%s\"}", child_id, output ? "takes" : "would take about",
								  (long long) bytes, limit_kb, child_id),
						 more, false, -1, true, at);
		else
			end_wait(parent, task_id, JsonbToCString(NULL, &output->root, VARSIZE(output)), more, at);
	}
	else
	{
		bool		failed = (status == VB_RUN_FAILED);
		const char *limit = failed ? failed_at_limit(&child->id) : NULL;
		bool		retryable = failed && limit == NULL;
		const char *class = retryable ? "child_failed" : "permanent";

		fail_attempt(parent, task_id, class,
					 psprintf("{\"message\":\"child run %s %s\",\"class\":\"%s\","
							  "\"child_run\":\"%s\",\"child_error\":%s%s}",
							  child_id, failed ? "failed" : "was cancelled",
							  class, child_id, data_json,
							  limit ? psprintf(",\"%s\":true", limit) : ""),
					 more, retryable, -1, true, at);
	}
	if (over)
		vb_state_over_budget(parent, parent_node, attempt, over_detail, pause, at);
	if (parent == &locked)
		vb_run_save(parent, at);
}

/*
 * The run node task_id (node, attempt) of a locked run stopped waiting for
 * child run child_id at its timeout (error_json: its error, class
 * timeout): what the child has spent so far, and what it still holds, is
 * booked on the run, as at the end of a child, and recorded with the
 * failure, so that the retry's new child is given what is left after it.
 * The child, no longer waited for, is cancelled by the scheduler
 * (waits.c), and its end books nothing more.
 */
void
vb_state_child_timed_out(VbRun *run, int64 task_id, const char *node, int attempt,
						 pg_uuid_t *child_id, const char *error_json, TimestampTz at)
{
	char	   *over_detail = NULL;
	bool		over = false;
	bool		pause = false;
	char	   *more = book_child_usage(run, child_id, true, &over, &over_detail, &pause);

	fail_attempt(run, task_id, "timeout", error_json, more, true, -1, true, at);
	if (over)
		vb_state_over_budget(run, node, attempt, over_detail, pause, at);
	vb_wake_scheduler_for_orphans(&run->id, at);
}

/* Sets the run's final status, writes its closing event and tells listeners. */
static void
end_run(VbRun *run, VbRunStatus status, const char *event_type, const char *data_json,
		TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr unpause_plan = NULL;
	Datum		args[4];

	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, TEXTOID, TIMESTAMPTZOID, TEXTOID};

		plan = vb_prepare("UPDATE vectorbea.runs SET status = $2, finished_at = $3,"
						  " error = $4::jsonb WHERE id = $1", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(vb_run_status_name(status));
	args[2] = TimestampTzGetDatum(at);
	args[3] = CStringGetTextDatum(status == VB_RUN_SUCCEEDED ? "null" : data_json);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not finish run");
	/*
	 * A run that ends while paused (failed, cancelled) is no longer held,
	 * nor one that was paused when it began to compensate: runs.paused
	 * kept the record of that pause until now.  Both states exist only in
	 * a 0.2.0 schema, which has the column.
	 */
	if (run->status == VB_RUN_PAUSED || run->status == VB_RUN_COMPENSATING)
	{
		if (unpause_plan == NULL)
			unpause_plan = vb_prepare("UPDATE vectorbea.runs SET paused = NULL"
									  " WHERE id = $1 AND paused IS NOT NULL", 1, (Oid[]) {UUIDOID});
		if (SPI_execute_plan(unpause_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "vectorbea: could not finish run");
	}
	run->status = status;
	vb_event(run, event_type, NULL, 0, data_json, at);
	if (status != VB_RUN_SUCCEEDED)
		close_gates(run, at);
	vb_notify_run_finished(&run->id, vb_run_status_name(status));
	if (vb_waits_available())
		tell_parent(run, status, data_json, at);
}

/* ---- compensation ---- */

/*
 * The node specs of the compensations of a locked run: of the nodes that
 * succeeded, and of those failed in doubt under in_doubt "compensate", or
 * whose running attempt under it the run's end just revoked (revoked_json,
 * close_open_nodes' list: their effect may have happened too), not of
 * those a fork reused (attempt 0: their work is the source run's), in
 * reverse order of completion, each depending on the one before.  A spec
 * names its original (compensation_of), whose input and output the
 * compensation is claimed with (complete_claimed_rows), not copied
 * here: copies of them all in one aggregate could pass what a jsonb value
 * holds, and the run could then never begin to undo.  "[]" when there is
 * nothing to undo.  The order of completion is the history's (the seq of
 * the node's last STEP_COMPLETED, STEP_FAILED or, for an attempt revoked,
 * STEP_STARTED): the nodes of one complete_tasks batch share their
 * finished_at.
 */
static char *
compensation_specs(VbRun *run, const char *revoked_json)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];

	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, JSONBOID};

		plan = vb_prepare("WITH ended AS ("
						  "  SELECT n.node, n.compensate, n.finished_at, n.id,"
						  "         (SELECT pg_catalog.max(e.seq) FROM vectorbea.events e"
						  "           WHERE e.run_id = $1 AND e.node = n.node"
						  "             AND e.type IN ('STEP_COMPLETED', 'STEP_FAILED', 'STEP_STARTED')) AS seq"
						  "    FROM vectorbea.nodes n"
						  "   WHERE n.run_id = $1 AND n.compensate IS NOT NULL AND n.attempt > 0"
						  "     AND (n.status = 'succeeded'"
						  "          OR (n.status = 'failed' AND n.error->>'class' = 'in_doubt')"
						  "          OR (n.status = 'cancelled' AND n.retry->>'in_doubt' = 'compensate'"
						  "              AND $2 ? n.node AND (n.kind <> 'llm' OR " LLM_CALL_OUT_SQL ")))"
						  "), done AS ("
						  "  SELECT node, compensate, finished_at, id, seq,"
						  "         pg_catalog.lag(node) OVER (ORDER BY seq DESC NULLS LAST, finished_at DESC, id DESC) AS after"
						  "    FROM ended"
						  ")"
						  " SELECT coalesce(pg_catalog.jsonb_agg(compensate || pg_catalog.jsonb_build_object("
						  "   'depends_on', CASE WHEN after IS NULL THEN '[]'::jsonb"
						  "                      ELSE pg_catalog.jsonb_build_array(after || '" VB_COMPENSATION_SUFFIX "') END,"
						  "   'input', coalesce(compensate->'input', '{}'),"
						  "   'compensation_of', node) ORDER BY seq DESC NULLS LAST, finished_at DESC, id DESC), '[]')::text"
						  "   FROM done", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = DirectFunctionCall1(jsonb_in, CStringGetDatum(revoked_json));
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not list the compensations of run %s", vb_uuid_text(&run->id));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * A locked run that fails (then: failed) or is cancelled with
 * compensate => true (then: cancelled), its open nodes closed already
 * (end_json: what RUN_FAILED or RUN_CANCELLED would say), undoes what
 * succeeded: it becomes compensating and its compensation nodes are
 * added (COMPENSATION_STARTED lists them and what was closed).  False,
 * with nothing changed, when there is nothing to undo.
 */
static bool
start_compensation(VbRun *run, VbRunStatus then, const char *end_json, const char *revoked_json,
				   TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	char	   *specs;
	char	   *data;

	if (!vb_waits_available())
		return false;			/* a 0.1.0 schema has no compensations */
	specs = compensation_specs(run, revoked_json);
	if (strcmp(specs, "[]") == 0)
		return false;
	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, TEXTOID};

		plan = vb_prepare("UPDATE vectorbea.runs SET status = 'compensating', error = $2::jsonb"
						  " WHERE id = $1", lengthof(types), types);
	}
	data = psprintf("{\"then\":\"%s\",%s", vb_run_status_name(then), end_json + 1);
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(data);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not start the compensation of run %s", vb_uuid_text(&run->id));
	run->status = VB_RUN_COMPENSATING;
	close_gates(run, at);
	vb_event(run, "COMPENSATION_STARTED", NULL, 0,
			 psprintf("%s,\"nodes\":%s}", pnstrdup(data, strlen(data) - 1), specs), at);
	vb_state_add_nodes(run, specs, NULL, at);
	vb_crash_point(VB_CRASH_COMPENSATION_STARTING);	/* tests only */
	return true;
}

/*
 * A compensating run ends as it was going to (failed or cancelled), with
 * its compensation's outcome: completed, or failed at node (whose failure
 * stops the rest: closed now, listed in COMPENSATION_FAILED).
 */
static void
end_compensation(VbRun *run, bool failed, const char *failed_node, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	bool		cancelled;
	char	   *original;
	StringInfoData data;

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT error->>'then' = 'cancelled',"
						  "       (error - 'then' - 'skipped' - 'revoked' - 'cancelled')::text,"
						  "       (SELECT coalesce(pg_catalog.jsonb_agg(node ORDER BY id), '[]')::text"
						  "          FROM vectorbea.nodes WHERE run_id = $1 AND compensation_of IS NOT NULL"
						  "           AND status = 'succeeded')"
						  "  FROM vectorbea.runs WHERE id = $1", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not read the compensation of run %s", vb_uuid_text(&run->id));
	cancelled = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
	original = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	initStringInfo(&data);
	if (!failed)
		vb_event(run, "COMPENSATION_COMPLETED", NULL, 0,
				 psprintf("{\"compensated\":%s}",
						  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3)),
				 at);
	else
	{
		char	   *skipped;
		char	   *revoked;

		close_open_nodes(run, VB_NODE_SKIPPED, VB_NODE_CANCELLED, at, &skipped, &revoked);
		appendStringInfoString(&data, "{\"node\":");
		vb_append_json_string(&data, failed_node);
		appendStringInfo(&data, ",\"skipped\":%s,\"revoked\":%s}", skipped, revoked);
		vb_event(run, "COMPENSATION_FAILED", failed_node, 0, data.data, at);
		resetStringInfo(&data);
	}
	/* The run's own end: what it said when it began to compensate. */
	appendStringInfo(&data, "%s%s\"%s\":[],\"revoked\":[],\"compensation\":\"%s\"}",
					 pnstrdup(original, strlen(original) - 1), strcmp(original, "{}") == 0 ? "" : ",",
					 cancelled ? "cancelled" : "skipped", failed ? "failed" : "completed");
	end_run(run, cancelled ? VB_RUN_CANCELLED : VB_RUN_FAILED,
			cancelled ? "RUN_CANCELLED" : "RUN_FAILED", data.data, at);
}

/*
 * Whether child_id's parent run undoes what it did (it compensates, or
 * has compensated): the child started by one of its run nodes is part of
 * that, so the child is cancelled with its own compensation.  A parent
 * whose compensation failed or was abandoned (cancel_run of a compensating
 * run) leaves its child's work as it is, as someone stopped the undoing.
 */
bool
vb_state_parent_compensates(pg_uuid_t *child_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(child_id)};
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT p.status = 'compensating' OR p.error->>'compensation' = 'completed'"
						  "  FROM vectorbea.runs c JOIN vectorbea.runs p ON p.id = c.parent_run"
						  " WHERE c.id = $1", lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the parent of run %s", vb_uuid_text(child_id));
	return SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) &&
		!isnull;
}

/*
 * Whether child run `run`, all of whose nodes are done, is one its parent
 * stopped waiting for while the parent undoes what it did
 * (vb_state_parent_compensates): its work is part of the parent's, so it
 * is to be cancelled with its own compensation, as the scheduler cancels
 * such a child that is still running (waits.c).  Its last node finished
 * before the scheduler got to it, and a success would leave its work
 * standing under an undone parent.  Read first without a lock; when the
 * parent's run node still waits for it, the parent is locked (after the
 * child, the one order of two runs) and read again, so that a parent
 * whose cancel or failure commits meanwhile is seen.
 */
static bool
abandoned_by_undoing_parent(VbRun *run)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(&run->id)};
	bool		isnull;
	VbRun		parent;

	if (!vb_waits_available())
		return false;			/* a 0.1.0 schema has no child runs */
	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT child.parent_run,"
						  "       EXISTS (SELECT FROM vectorbea.nodes n"
						  "                WHERE n.run_id = child.parent_run AND n.node = child.parent_node"
						  "                  AND n.lease = child.id AND n.kind = 'run' AND n.status = 'waiting')"
						  "  FROM vectorbea.runs child WHERE child.id = $1 AND child.parent_run IS NOT NULL",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the parent of run %s", vb_uuid_text(&run->id));
	if (SPI_processed == 0)
		return false;
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
	{
		pg_uuid_t	parent_id;

		memcpy(&parent_id, DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
													   &isnull)), sizeof(pg_uuid_t));
		if (vb_run_held(&parent_id) == NULL && !vb_run_lock_parent(&parent_id, &parent))
			return false;
		if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "vectorbea: could not read the parent of run %s", vb_uuid_text(&run->id));
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
			return false;		/* it still waits: the child ends as it is */
	}
	return vb_state_parent_compensates(&run->id);
}

/*
 * A run whose nodes are all final, none of them failed, has succeeded
 * (or, a child its compensating parent no longer waits for, is cancelled
 * with its compensation: abandoned_by_undoing_parent); a compensating run
 * whose compensations are all done ends as it was going to.
 */
void
vb_state_finish_run_if_done(VbRun *run, TimestampTz at)
{
	if (run->open_nodes == 0 && run->status == VB_RUN_RUNNING && abandoned_by_undoing_parent(run))
		vb_state_cancel_run(run, "its parent run no longer waits for it", true, at);
	else if (run->open_nodes == 0 && run->status == VB_RUN_RUNNING)
		end_run(run, VB_RUN_SUCCEEDED, "RUN_COMPLETED",
				psprintf("{\"duration_ms\":%ld,\"nodes\":%d}",
						 (long) ((at - run->created_at) / 1000), run->node_count),
				at);
	else if (run->open_nodes == 0 && run->status == VB_RUN_COMPENSATING)
		end_compensation(run, false, NULL, at);
}

/*
 * Fails a locked run because of node (NULL for the run itself): open nodes
 * are skipped, running ones lose their lease.  reason is the failed node's
 * error class, budget_exceeded or deadline_exceeded.  When nodes that
 * succeeded say how they are undone, the run compensates first.  In a
 * compensating run, node is a compensation that failed for good: the rest
 * of the compensation is abandoned.
 */
void
vb_state_fail_run(VbRun *run, const char *node, const char *reason, TimestampTz at)
{
	char	   *skipped;
	char	   *revoked;
	StringInfoData data;

	if (run->status == VB_RUN_COMPENSATING)
	{
		/* Undoing goes on over budget: BUDGET_EXCEEDED is on record. */
		if (strcmp(reason, "budget_exceeded") != 0)
			end_compensation(run, true, node, at);
		return;
	}
	close_open_nodes(run, VB_NODE_SKIPPED, VB_NODE_CANCELLED, at, &skipped, &revoked);
	initStringInfo(&data);
	appendStringInfoString(&data, "{\"node\":");
	vb_append_json_string(&data, node);
	appendStringInfoString(&data, ",\"reason\":");
	vb_append_json_string(&data, reason);
	appendStringInfo(&data, ",\"skipped\":%s,\"revoked\":%s}", skipped, revoked);
	if (start_compensation(run, VB_RUN_FAILED, data.data, revoked, at))
		return;
	end_run(run, VB_RUN_FAILED, "RUN_FAILED", data.data, at);
}

/*
 * Cancels a locked, running or compensating run: every open node is
 * cancelled (a compensation in progress is abandoned).  With compensate,
 * a running run undoes what succeeded first.
 */
void
vb_state_cancel_run(VbRun *run, const char *reason, bool compensate, TimestampTz at)
{
	char	   *cancelled;
	char	   *revoked;
	bool		was_compensating = (run->status == VB_RUN_COMPENSATING);
	StringInfoData data;

	close_open_nodes(run, VB_NODE_CANCELLED, VB_NODE_CANCELLED, at, &cancelled, &revoked);
	initStringInfo(&data);
	appendStringInfoString(&data, "{\"reason\":");
	vb_append_json_string(&data, reason);
	appendStringInfo(&data, ",\"cancelled\":%s,\"revoked\":%s}", cancelled, revoked);
	if (was_compensating)
	{
		vb_event(run, "COMPENSATION_FAILED", NULL, 0,
				 psprintf("{\"reason\":\"cancelled\",\"cancelled\":%s,\"revoked\":%s}",
						  cancelled, revoked), at);
		data.data[data.len - 1] = '\0';
		data.len--;
		appendStringInfoString(&data, ",\"compensation\":\"failed\"}");
	}
	else if (compensate && start_compensation(run, VB_RUN_CANCELLED, data.data, revoked, at))
		return;
	end_run(run, VB_RUN_CANCELLED, "RUN_CANCELLED", data.data, at);
}

/* ---- kill switches ---- */

/*
 * The running attempt of task_id in a locked run is aborted (message says
 * why: a kill switch, a budget): it does not count against the node's
 * attempts, and the node is ready again at available_at: DT_NOEND holds it
 * until it is released (available_at 'infinity': its model is disabled).  The
 * scheduler drops the call in flight when it sees the lease gone.  False
 * when the attempt was not running.
 */
bool
vb_state_abort_attempt(VbRun *run, int64 task_id, const char *message,
					   TimestampTz available_at, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];
	StringInfoData err;
	bool		isnull;
	char	   *node;
	int			attempt;

	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.nodes"
						  "   SET status = 'ready', error = $2::jsonb, lease = NULL,"
						  "       lease_expires_at = NULL, max_attempts = max_attempts + 1,"
						  "       available_at = $3"
						  " WHERE id = $1 AND status = 'running'"
						  " RETURNING node, attempt", lengthof(types), types);
	}
	initStringInfo(&err);
	appendStringInfoString(&err, "{\"message\":");
	vb_append_json_string(&err, message);
	appendStringInfoString(&err, ",\"class\":\"aborted\"}");
	args[0] = Int64GetDatum(task_id);
	args[1] = CStringGetTextDatum(err.data);
	args[2] = TimestampTzGetDatum(available_at);	/* DT_NOEND is 'infinity' */
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not abort task %ld", (long) task_id);
	if (SPI_processed == 0)
		return false;
	node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	charge_cut_call(run, node, attempt, at);
	vb_event(run, "STEP_FAILED", node, attempt,
			 psprintf("{\"class\":\"aborted\",\"error\":%s,\"final\":false,\"duration_ms\":0}",
					  err.data), at);
	vb_event(run, "STEP_RETRIED", node, attempt,
			 psprintf("{\"delay_ms\":%ld,\"available_at\":%s,\"next_attempt\":%d,\"aborted\":true}",
					  available_at == DT_NOEND ? 0L : (long) ((available_at - at) / 1000),
					  available_at == DT_NOEND ? "null" :
					  psprintf("\"%s\"", vb_timestamp_iso(available_at)), attempt + 1),
			 at);
	vb_wake_scheduler(at);
	if (available_at != DT_NOEND && available_at > at)
		vb_wake_scheduler(available_at);
	return true;
}

/* Whether the running llm task task_id has a call out (LLM_CALL_OUT_SQL). */
bool
vb_state_llm_call_out(int64 task_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {Int64GetDatum(task_id)};
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = vb_prepare("SELECT " LLM_CALL_OUT_SQL " FROM vectorbea.nodes n WHERE n.id = $1",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read task %ld", (long) task_id);
	return SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * An llm call in flight of a locked run is stopped by a kill switch: its
 * attempt is aborted (vb_state_abort_attempt), unless the node asks a
 * person about attempts in doubt (in_doubt "ask") and a call is out: it
 * may have reached the provider, so a gate of kind in_doubt opens instead
 * of sending it again after the switch.
 */
void
vb_state_stop_call(VbRun *run, int64 task_id, const char *message, TimestampTz available_at,
				   TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {Int64GetDatum(task_id)};
	StringInfoData err;
	bool		isnull;
	char	   *node;
	int			attempt;
	char	   *spec;

	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = vb_prepare("SELECT node, attempt, approval::text FROM vectorbea.nodes n"
						  " WHERE id = $1 AND status = 'running' AND retry->>'in_doubt' = 'ask'"
						  "   AND " LLM_CALL_OUT_SQL,
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read task %ld", (long) task_id);
	if (SPI_processed == 0)
	{
		vb_state_abort_attempt(run, task_id, message, available_at, at);
		return;
	}
	initStringInfo(&err);
	appendStringInfoString(&err, "{\"message\":");
	vb_append_json_string(&err, psprintf("in doubt: %s while the call was in flight; the provider may have answered",
										 message));
	appendStringInfoString(&err, ",\"class\":\"aborted\",\"in_doubt\":true}");
	node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	spec = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	charge_cut_call(run, node, attempt, at);
	open_failure_gate(run, task_id, node, attempt, "in_doubt", spec,
					  psprintf("{\"class\":\"aborted\",\"error\":%s,\"final\":false,"
							   "\"in_doubt\":\"ask\",\"duration_ms\":0}", err.data),
					  err.data, at);
	vb_wake_scheduler(at);		/* it drops the call it has in flight */
}

/*
 * Pauses a locked, unfinished run: nothing of it is claimed or called
 * until vb_state_resume_run.  scope is "run" or "workspace" (which switch
 * paused it), by the role.  Its llm calls in flight are aborted; worker
 * tasks it has out may still be completed.  RUN_PAUSED says who and why;
 * each aborted attempt has its own events.  False when it was paused
 * already, except that a person's pause (scope "run") takes over the
 * pause of the run's budget: a larger budget, which ends a budget's
 * pause, must not end the pause of someone who stopped the run.  False
 * too for a compensating run, which no switch pauses: a workspace's pause
 * that listed it running may lock it once it has begun to compensate.
 */
bool
vb_state_pause_run(VbRun *run, const char *scope, const char *reason, const char *by,
				   TimestampTz at)
{
	static SPIPlanPtr pause_plan = NULL;
	static SPIPlanPtr calls_plan = NULL;
	static SPIPlanPtr scope_plan = NULL;
	Datum		args[2];
	StringInfoData data;
	uint64		n;
	int64	   *ids;
	const char *resume_to = vb_run_status_name(run->status);

	if (run->status == VB_RUN_COMPENSATING)
		return false;
	if (run->status == VB_RUN_PAUSED)
	{
		char	   *held_by;

		if (strcmp(scope, "run") != 0)
			return false;
		if (scope_plan == NULL)
		{
			Oid			t1[1] = {UUIDOID};

			scope_plan = vb_prepare("SELECT paused->>'scope', paused->>'resume_to'"
									"  FROM vectorbea.runs WHERE id = $1", lengthof(t1), t1);
		}
		args[0] = UUIDPGetDatum(&run->id);
		/* not read-only: the pause as it is now that the run is locked */
		if (SPI_execute_plan(scope_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "vectorbea: could not read the pause of run %s", vb_uuid_text(&run->id));
		held_by = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		resume_to = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		if (held_by == NULL || strcmp(held_by, "budget") != 0 || resume_to == NULL)
			return false;
	}
	if (pause_plan == NULL)
	{
		Oid			t2[2] = {UUIDOID, TEXTOID};
		Oid			t1[1] = {UUIDOID};

		pause_plan = vb_prepare("UPDATE vectorbea.runs SET status = 'paused', paused = $2::jsonb"
								" WHERE id = $1", lengthof(t2), t2);
		calls_plan = vb_prepare("SELECT id FROM vectorbea.nodes"
								" WHERE run_id = $1 AND status = 'running'"
								"   AND activity = '" VB_LLM_ACTIVITY "' ORDER BY id",
								lengthof(t1), t1);
	}
	initStringInfo(&data);
	appendStringInfoString(&data, "{\"scope\":");
	vb_append_json_string(&data, scope);
	appendStringInfoString(&data, ",\"reason\":");
	vb_append_json_string(&data, reason);
	appendStringInfoString(&data, ",\"by\":");
	vb_append_json_string(&data, by);
	appendStringInfo(&data, ",\"at\":\"%s\",\"resume_to\":\"%s\"}", vb_timestamp_iso(at),
					 resume_to);
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(data.data);
	if (SPI_execute_plan(pause_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not pause run %s", vb_uuid_text(&run->id));
	if (SPI_execute_plan(calls_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find the llm calls of run %s", vb_uuid_text(&run->id));
	n = SPI_processed;
	ids = palloc(sizeof(int64) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	run->status = VB_RUN_PAUSED;
	vb_event(run, "RUN_PAUSED", NULL, 0, data.data, at);
	/* A budget's pause lets the calls it has reserved for finish. */
	if (strcmp(scope, "budget") != 0)
		for (uint64 i = 0; i < n; i++)
			vb_state_stop_call(run, ids[i], psprintf("the %s was paused", scope), at, at);
	return true;
}

/*
 * Resumes a locked, paused run to the status it had: its ready work is
 * announced, and it finishes if everything ended while it was paused.
 * False when it was not paused.
 */
bool
vb_state_resume_run(VbRun *run, const char *by, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr ready_plan = NULL;
	Datum		args[1];
	char	   *to;
	StringInfoData data;

	if (run->status != VB_RUN_PAUSED)
		return false;
	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("UPDATE vectorbea.runs SET status = paused->>'resume_to', paused = NULL"
						  " WHERE id = $1 RETURNING status", lengthof(types), types);
		ready_plan = vb_prepare("SELECT DISTINCT activity FROM vectorbea.nodes"
								" WHERE run_id = $1 AND status = 'ready'", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not resume run %s", vb_uuid_text(&run->id));
	to = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	run->status = vb_run_status_from_name(to);
	initStringInfo(&data);
	appendStringInfo(&data, "{\"to\":\"%s\",\"by\":", to);
	vb_append_json_string(&data, by);
	appendStringInfoChar(&data, '}');
	vb_event(run, "RUN_RESUMED", NULL, 0, data.data, at);
	/*
	 * A deadline or a wait may have passed meanwhile, and a child run's
	 * parent may have stopped waiting for it: cancelled then.
	 */
	vb_wake_scheduler_for_orphans(&run->id, at);
	if (SPI_execute_plan(ready_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find the ready work of run %s", vb_uuid_text(&run->id));
	for (uint64 i = 0; i < SPI_processed; i++)
		vb_notify_task_ready(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	vb_state_finish_run_if_done(run, at);
	return true;
}

/*
 * The ready llm nodes of a provider's model (model "*": of every model of
 * it) are held while it is disabled (hold), or released when it is
 * enabled again and no switch of the provider or model still holds them.
 * No event: their readiness is unchanged; the switch is the controls'
 * record.  Returns how many nodes changed.
 */
int
vb_state_hold_model(const char *provider, const char *model, bool hold, TimestampTz at)
{
	static SPIPlanPtr hold_plan = NULL;
	static SPIPlanPtr release_plan = NULL;
	Datum		args[3];

	if (hold_plan == NULL)
	{
		Oid			types[3] = {TEXTOID, TEXTOID, TIMESTAMPTZOID};

		hold_plan = vb_prepare("UPDATE vectorbea.nodes SET available_at = 'infinity'"
							   " WHERE status = 'ready' AND activity = '" VB_LLM_ACTIVITY "'"
							   "   AND not_before IS NULL AND available_at <> 'infinity'"
							   "   AND llm->>'provider' = $1 AND ($2 = '*' OR llm->>'model' = $2)",
							   2, types);
		release_plan = vb_prepare("UPDATE vectorbea.nodes n SET available_at = $3"
								  " WHERE status = 'ready' AND activity = '" VB_LLM_ACTIVITY "'"
								  "   AND not_before IS NULL AND available_at = 'infinity'"
								  "   AND llm->>'provider' = $1 AND ($2 = '*' OR llm->>'model' = $2)"
								  "   AND NOT EXISTS (SELECT FROM vectorbea.disabled_models d"
								  "                    WHERE d.provider = n.llm->>'provider'"
								  "                      AND d.model IN ('*', n.llm->>'model'))",
								  lengthof(types), types);
	}
	args[0] = CStringGetTextDatum(provider);
	args[1] = CStringGetTextDatum(model);
	args[2] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(hold ? hold_plan : release_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not %s the llm nodes of %s/%s", hold ? "hold" : "release",
			 provider, model);
	/*
	 * Released or not: nodes held by their not_before are not among those
	 * the release touches, and their time is read only at a pass, which
	 * nothing else may bring for minutes.
	 */
	if (!hold)
		vb_wake_scheduler(at);
	return (int) SPI_processed;
}

/* ---- a fork reuses what its source recorded ---- */

/*
 * Node `node` of a locked run being forked (added held) succeeds with the
 * output its source run recorded, without an attempt: STEP_COMPLETED says
 * where the output came from (reused_json).  Its dependents are counted
 * by vb_state_release_held, once every reused node has succeeded.
 */
void
vb_state_reuse(VbRun *run, const char *node, const char *output_json,
			   const char *reused_json, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];

	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.nodes SET status = 'succeeded', output = $3::jsonb,"
						  "       finished_at = $4, available_at = NULL, deps_remaining = 0"
						  " WHERE run_id = $1 AND node = $2 AND status = 'pending'",
						  lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(node);
	args[2] = CStringGetTextDatum(output_json ? output_json : "null");
	args[3] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "vectorbea: node \"%s\" of the fork cannot be reused", node);
	run->open_nodes--;
	vb_event(run, "STEP_COMPLETED", node, 0,
			 psprintf("{\"output\":%s,\"duration_ms\":0,\"reused\":%s}",
					  output_json ? output_json : "null", reused_json),
			 at);
}

/*
 * The nodes of a fork that were added held and are not reused: each one's
 * dependencies not yet succeeded are counted again, and those with none
 * become ready (and are announced); ready approval nodes open their gates.
 * Counting once here, in one statement over the fork's edges, replaces a
 * release per reused node, each of which read every pending node of the
 * run: forking a finished run of 10,000 tasks took 12.7 s.
 */
void
vb_state_release_held(VbRun *run, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];

	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, TIMESTAMPTZOID};

		plan = vb_prepare("WITH counted AS ("
						  "  SELECT n.id, (SELECT pg_catalog.count(*)"
						  "                  FROM pg_catalog.unnest(n.depends_on) AS dep(node)"
						  "                  LEFT JOIN vectorbea.nodes d"
						  "                    ON d.run_id = n.run_id AND d.node = dep.node"
						  "                 WHERE d.status IS DISTINCT FROM 'succeeded')::int AS remaining"
						  "    FROM vectorbea.nodes n"
						  "   WHERE n.run_id = $1 AND n.status = 'pending'"
						  ")"
						  " UPDATE vectorbea.nodes n"
						  "    SET deps_remaining = c.remaining,"
						  "        status = CASE WHEN c.remaining = 0 THEN 'ready' ELSE 'pending' END,"
						  "        available_at = CASE WHEN c.remaining = 0 AND n.available_at IS DISTINCT FROM 'infinity'"
						  "                            THEN $2 ELSE n.available_at END"
						  "   FROM counted c WHERE n.id = c.id"
						  " RETURNING n.activity, n.status, n.available_at = 'infinity'",
						  lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not release the nodes of a fork");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;

		if (strcmp(SPI_getvalue(tup, SPI_tuptable->tupdesc, 2), "ready") == 0)
			became_ready(run, SPI_getvalue(tup, SPI_tuptable->tupdesc, 1),
						 DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull)));
	}
	open_ready_gates(run, at);
	vb_state_finish_run_if_done(run, at);
}

/* ---- a failed run comes back ---- */

/* A node of a failed run that a person decides about again when it comes back. */
typedef struct HeldNode
{
	int64		task_id;
	char	   *node;
	int			attempt;
	char	   *spec;			/* the gate to open: its escalation, or its await_approval */
	char	   *gate_kind;		/* its closed gate's kind; NULL: a revoked attempt */
	char	   *context;		/* its closed gate's context */
	int64		duration_ms;	/* how long the revoked attempt had run */
} HeldNode;

/*
 * The closed nodes of failed run run_id, task_id aside, that were waiting
 * for a person when the run failed (about a failure, or at a task's own
 * gate, await_approval, whose attempt had done its work), or whose attempt
 * the failure revoked under in_doubt "ask" (a worker's attempt, or an llm
 * attempt with a call out): a requeue must not run them again without one.  Read before the
 * nodes come back: a skipped node whose last gate is a closed gate of a
 * failure was waiting on it (a run's end closes the gates of the nodes it
 * skips), and a cancelled one was running.  Returns a List of HeldNode.
 */
static List *
nodes_held_for_a_person(pg_uuid_t *run_id, int64 task_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	List	   *held = NIL;

	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, INT8OID};

		plan = vb_prepare("WITH latest AS ("
						  "  SELECT DISTINCT ON (task_id) task_id, kind, status, context, gate, timeout_ms"
						  "    FROM vectorbea.approvals WHERE run_id = $1"
						  "   ORDER BY task_id, id DESC"
						  ")"
						  " SELECT n.id, n.node, n.attempt,"
						  /* a task's own gate is asked as await_approval asked it */
						  "        CASE WHEN n.status = 'skipped' AND g.kind = 'approval' AND n.kind <> 'approval'"
						  "             THEN pg_catalog.jsonb_build_object('gate', g.gate, 'timeout_ms', g.timeout_ms,"
						  "                                                'on_timeout', 'reject')::text"
						  "             ELSE n.approval::text END,"
						  "        CASE WHEN n.status = 'skipped' THEN g.kind END, g.context::text,"
						  "        coalesce((EXTRACT(epoch FROM n.finished_at - n.started_at) * 1000)::bigint, 0)"
						  "   FROM vectorbea.nodes n LEFT JOIN latest g ON g.task_id = n.id"
						  "  WHERE n.run_id = $1 AND n.id <> $2"
						  "    AND ((n.status = 'skipped' AND g.status = 'closed'"
						  "          AND (g.kind IN ('escalation', 'in_doubt')"
						  /* an approval node's gate opens again when it is ready */
						  "               OR (g.kind = 'approval' AND n.kind <> 'approval')))"
						  "         OR (n.status = 'cancelled' AND n.attempt > 0"
						  "             AND n.retry->>'in_doubt' = 'ask'"
						  "             AND (n.kind <> 'llm' OR " LLM_CALL_OUT_SQL ")))"
						  "  ORDER BY n.id", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(run_id);
	args[1] = Int64GetDatum(task_id);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the nodes of run %s that wait for a person",
			 vb_uuid_text(run_id));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		HeldNode   *h = palloc0(sizeof(HeldNode));
		bool		isnull;

		h->task_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		h->node = SPI_getvalue(tup, desc, 2);
		h->attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		h->spec = SPI_getvalue(tup, desc, 4);
		h->gate_kind = SPI_getvalue(tup, desc, 5);
		h->context = SPI_getvalue(tup, desc, 6);
		h->duration_ms = DatumGetInt64(SPI_getbinval(tup, desc, 7, &isnull));
		held = lappend(held, h);
	}
	return held;
}

/*
 * The child runs that run nodes of failed run `run` waited for when it
 * failed (a skipped run node whose lease names its child; task_id, the
 * node requeued, aside): their end booked nothing on a run that had ended,
 * so their spend, and what they still hold, is booked now, as at a run
 * node's timeout (book_child_usage), before the nodes come back and their
 * new children are given what the budget has left.  Without it, each
 * requeue gave a new child the same money again.  Returns the field for
 * NODES_REQUEUED, ,"child_usage":{"usd": ..., "tokens": ...} (what was
 * booked, for replay), or "" when nothing was.
 */
static const char *
book_abandoned_children(VbRun *run, int64 task_id)
{
	static SPIPlanPtr children_plan = NULL;
	static SPIPlanPtr booked_plan = NULL;
	Datum		args[3];
	Datum	   *children;
	uint64		n;
	bool		isnull;
	char	   *usd;
	int64		tokens;

	if (children_plan == NULL)
	{
		Oid			t2[2] = {UUIDOID, INT8OID};
		Oid			t3[3] = {UUIDOID, NUMERICOID, INT8OID};

		children_plan = vb_prepare("SELECT n.lease, r.child_usage_usd, r.child_usage_tokens"
								   "  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
								   " WHERE n.run_id = $1 AND n.id <> $2 AND n.kind = 'run'"
								   "   AND n.status = 'skipped' AND n.lease IS NOT NULL"
								   " ORDER BY n.id", lengthof(t2), t2);
		booked_plan = vb_prepare("SELECT (child_usage_usd - $2)::text, child_usage_tokens - $3,"
								 "       child_usage_usd = $2 AND child_usage_tokens = $3"
								 "  FROM vectorbea.runs WHERE id = $1", lengthof(t3), t3);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = Int64GetDatum(task_id);
	if (SPI_execute_plan(children_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the child runs of run %s", vb_uuid_text(&run->id));
	n = SPI_processed;
	if (n == 0)
		return "";
	children = palloc(sizeof(Datum) * n);
	for (uint64 i = 0; i < n; i++)
		children[i] = datumCopy(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull),
								false, sizeof(pg_uuid_t));
	args[1] = datumCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull),
						false, -1);
	args[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	for (uint64 i = 0; i < n; i++)
	{
		bool		over;
		bool		pause;
		char	   *detail = NULL;

		/* Over its budget or not, the run comes back: its next spend meets the policy. */
		(void) book_child_usage(run, DatumGetUUIDP(children[i]), true, &over, &detail, &pause);
	}
	if (SPI_execute_plan(booked_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not read what the child runs of run %s spent",
			 vb_uuid_text(&run->id));
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)))
		return "";
	usd = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	tokens = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return psprintf(",\"child_usage\":{\"usd\":%s,\"tokens\":%lld}", usd, (long long) tokens);
}

/*
 * The pause a person put failed run run_id under (pause_run, scope "run"),
 * when it was still paused so as it failed: its last RUN_PAUSED or
 * RUN_RESUMED before its last RUN_FAILED is that pause.  A run's end
 * clears its pause, and a requeue must not lift what only a resume lifts.
 * A budget's pause is not put back: the budget may have been raised, or
 * its period renewed, since (set_budget resumes only paused runs), and a
 * run still over it meets its policy at its next spend, as documented; a
 * workspace's pause is the workspace's (vb_pause_if_workspace_paused).
 * Sets *reason and *by; false when it was not paused so.
 */
static bool
paused_when_failed(pg_uuid_t *run_id, char **reason, char **by)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(run_id)};

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT p.data->>'reason', p.data->>'by'"
						  "  FROM (SELECT e.type, e.data FROM vectorbea.events e"
						  "         WHERE e.run_id = $1 AND e.type IN ('RUN_PAUSED', 'RUN_RESUMED')"
						  "           AND e.seq < (SELECT pg_catalog.max(f.seq) FROM vectorbea.events f"
						  "                         WHERE f.run_id = $1 AND f.type = 'RUN_FAILED')"
						  "         ORDER BY e.seq DESC LIMIT 1) p"
						  " WHERE p.type = 'RUN_PAUSED' AND p.data->>'scope' = 'run'",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the pauses of run %s", vb_uuid_text(run_id));
	if (SPI_processed == 0)
		return false;
	*reason = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	*by = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	return true;
}

/*
 * The held nodes of a run that has come back wait for a person again: a
 * gate like the one the failure closed opens (its context kept), and a
 * revoked attempt is in doubt, as if its lease had run out: it fails,
 * not for good, and a gate of kind in_doubt opens.  After NODES_REQUEUED,
 * so that replay finds them waiting.
 */
static void
ask_again(VbRun *run, List *held, TimestampTz at)
{
	ListCell   *lc;

	foreach(lc, held)
	{
		HeldNode   *h = lfirst(lc);
		StringInfoData err;

		if (h->gate_kind != NULL)
		{
			(void) wait_on_gate(run, h->task_id, h->node, h->attempt, h->gate_kind, h->spec,
								h->context, at);
			continue;
		}
		charge_cut_call(run, h->node, h->attempt, at);
		initStringInfo(&err);
		appendStringInfoString(&err, "{\"message\":\"in doubt: its run failed while this attempt ran,"
							   " which may have taken effect\",\"class\":\"revoked\",\"in_doubt\":true}");
		open_failure_gate(run, h->task_id, h->node, h->attempt, "in_doubt", h->spec,
						  psprintf("{\"class\":\"revoked\",\"error\":%s,\"final\":false,"
								   "\"in_doubt\":\"ask\",\"duration_ms\":%lld}", err.data,
								   (long long) h->duration_ms),
						  err.data, at);
	}
}

/*
 * Requeues task_id, a node that failed for good, in a locked run: it gets a
 * new attempt budget (its policy's max_attempts more) and is ready again.
 * When the run failed because of this node, the run runs again: the nodes
 * its failure skipped come back pending (or ready, when their dependencies
 * have succeeded), and those whose lease it revoked are ready for a new
 * attempt; one that never started and has a not_before waits for it
 * again, as when it was added.  A node that waited for a person, or whose
 * revoked attempt is in doubt under "ask", waits for one again
 * (ask_again).  One NODES_REQUEUED event says who did it, why, and which
 * nodes came back, so replay rebuilds it, with the gates' own events
 * after it.  Returns false
 * when the node is not failed (nothing changed).  The caller checks that
 * the run may revive (vb_state_requeue_refusal).
 */
bool
vb_state_requeue(VbRun *run, int64 task_id, const char *reason, const char *by,
				 TimestampTz at)
{
	static SPIPlanPtr node_plan = NULL;
	static SPIPlanPtr revive_plan = NULL;
	static SPIPlanPtr run_plan = NULL;
	Datum		args[4];
	char	   *node;
	char	   *activity;
	int			max_attempts;
	bool		isnull;
	char	   *revived = "[]";
	const char *child_usage = "";
	List	   *held = NIL;
	bool		was_paused = false;
	char	   *pause_reason = NULL;
	char	   *pause_by = NULL;
	StringInfoData data;

	if (node_plan == NULL)
	{
		Oid			t2[2] = {INT8OID, TIMESTAMPTZOID};
		Oid			t4[4] = {UUIDOID, TIMESTAMPTZOID, INT8OID, INT8ARRAYOID};
		Oid			t1[1] = {UUIDOID};

		node_plan = vb_prepare("UPDATE vectorbea.nodes"
							   "   SET status = 'ready', available_at = $2, started_at = NULL, finished_at = NULL,"
							   "       max_attempts = attempt + " NODE_MAX_ATTEMPTS
							   " WHERE id = $1 AND status = 'failed'"
							   " RETURNING node, activity, max_attempts", lengthof(t2), t2);
		revive_plan = vb_prepare("WITH closed AS ("
								 "  SELECT id FROM vectorbea.nodes"
								 "   WHERE run_id = $1 AND id <> $3 AND status IN ('skipped', 'cancelled')"
								 "   FOR UPDATE"
								 "), reopened AS ("
								 "  UPDATE vectorbea.nodes n"
								 "     SET status = CASE WHEN n.deps_remaining = 0 THEN 'ready' ELSE 'pending' END,"
								 "         available_at = CASE WHEN n.not_before IS NOT NULL AND n.attempt = 0"
								 "                                 THEN 'infinity'::timestamptz"
								 "                                 WHEN n.deps_remaining = 0 THEN $2 END,"
								 /* a gate opened again starts its node's wait again */
								 "         started_at = NULL, finished_at = NULL, lease = NULL, lease_expires_at = NULL,"
								 /* an attempt revoked is no failure: a fresh budget, as the requeued node's */
								 "         max_attempts = GREATEST(n.max_attempts, n.attempt + " NODE_MAX_ATTEMPTS ")"
								 "    FROM closed WHERE n.id = closed.id"
								 /* a node held for a person is not announced: it waits at once */
								 "  RETURNING n.node, n.activity, n.status,"
								 "            n.status = 'ready' AND n.available_at <> 'infinity'"
								 "            AND n.id <> ALL ($4) AS free"
								 ")"
								 " SELECT coalesce(pg_catalog.jsonb_agg(node ORDER BY node), '[]')::text,"
								 "        pg_catalog.count(*),"
								 "        coalesce(pg_catalog.array_agg(DISTINCT activity)"
								 "                 FILTER (WHERE free AND activity IS NOT NULL), '{}'),"
								 "        coalesce(pg_catalog.bool_or(free AND activity IS NULL), false),"
								 "        coalesce(pg_catalog.bool_or(status = 'ready' AND NOT free), false)"
								 "   FROM reopened", lengthof(t4), t4);
		run_plan = vb_prepare("UPDATE vectorbea.runs SET status = 'running', finished_at = NULL,"
							  " error = NULL WHERE id = $1", lengthof(t1), t1);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(node_plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not requeue task %ld", (long) task_id);
	if (SPI_processed == 0)
		return false;
	node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	activity = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	max_attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	run->open_nodes++;

	if (run->status == VB_RUN_FAILED)
	{
		ArrayType  *acts;
		Datum	   *names;
		int			n;

		ListCell   *lc;
		Datum	   *held_ids;
		int			n_held = 0;

		held = nodes_held_for_a_person(&run->id, task_id);
		was_paused = paused_when_failed(&run->id, &pause_reason, &pause_by);
		child_usage = book_abandoned_children(run, task_id);
		held_ids = palloc(sizeof(Datum) * (list_length(held) + 1));
		foreach(lc, held)
			held_ids[n_held++] = Int64GetDatum(((HeldNode *) lfirst(lc))->task_id);
		args[0] = UUIDPGetDatum(&run->id);
		args[1] = TimestampTzGetDatum(at);
		args[2] = Int64GetDatum(task_id);
		args[3] = PointerGetDatum(construct_array(held_ids, n_held, INT8OID, 8, true, TYPALIGN_DOUBLE));
		if (SPI_execute_plan(revive_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: could not reopen the nodes of run %s", vb_uuid_text(&run->id));
		revived = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		run->open_nodes += (int32) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
															   SPI_tuptable->tupdesc, 2, &isnull));
		acts = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		run->gates_pending = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
		/* a node that never started waits for its not_before again */
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull)))
			vb_wake_scheduler(at);
		deconstruct_array(acts, TEXTOID, -1, false, TYPALIGN_INT, &names, NULL, &n);
		for (int i = 0; i < n; i++)
			vb_notify_task_ready(TextDatumGetCString(names[i]));
		revived = pstrdup(revived);
		args[0] = UUIDPGetDatum(&run->id);
		if (SPI_execute_plan(run_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "vectorbea: could not resume run %s", vb_uuid_text(&run->id));
		run->status = VB_RUN_RUNNING;
		/* A child run whose parent stopped waiting for it is cancelled again. */
		vb_wake_scheduler_for_orphans(&run->id, at);
	}

	initStringInfo(&data);
	appendStringInfoString(&data, "{\"requeued\":");
	vb_append_json_string(&data, node);
	appendStringInfo(&data, ",\"max_attempts\":%d,\"revived\":%s,\"by\":", max_attempts, revived);
	vb_append_json_string(&data, by);
	appendStringInfoString(&data, ",\"reason\":");
	vb_append_json_string(&data, reason);
	appendStringInfo(&data, "%s}", child_usage);
	vb_event(run, "NODES_REQUEUED", node, 0, data.data, at);
	became_ready(run, activity, false);
	ask_again(run, held, at);
	open_ready_gates(run, at);
	/* The person's pause it failed under holds it again, as they left it. */
	if (was_paused)
		(void) vb_state_pause_run(run, "run", pause_reason, pause_by, at);
	return true;
}

/* ---- spend ---- */

/*
 * Books usage on the run; true when the run's budget is now exceeded, with
 * the BUDGET_EXCEEDED data in *detail_json.
 */
bool
vb_state_book_usage(VbRun *run, int64 tokens, const char *usd, char **detail_json)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan_010 = NULL;
	Oid			types[3] = {UUIDOID, INT8OID, TEXTOID};
	Datum		args[3];
	bool		isnull;
	bool		schema_020 = vb_waits_available();

#define BOOK_USAGE_SQL(over_budget) \
	"UPDATE vectorbea.runs" \
	"   SET usage_tokens = usage_tokens + $2," \
	"       usage_usd = usage_usd + $3::numeric" \
	" WHERE id = $1" \
	" RETURNING " over_budget

	/* each on first use: a 0.1.0 schema has no child_usage columns */
	if (schema_020 && plan == NULL)
		plan = vb_prepare(BOOK_USAGE_SQL(VB_RUN_OVER_BUDGET_SQL), lengthof(types), types);
	if (!schema_020 && plan_010 == NULL)
		plan_010 = vb_prepare(BOOK_USAGE_SQL(VB_RUN_OVER_BUDGET_010_SQL), lengthof(types), types);
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = Int64GetDatum(tokens);
	args[2] = CStringGetTextDatum(usd);
	if (SPI_execute_plan(schema_020 ? plan : plan_010, args, NULL, false, 0) !=
		SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not book usage");
	*detail_json = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * A budget of a locked run was crossed (detail_json: BUDGET_EXCEEDED's
 * data) by node's attempt task_id (0: no attempt to abort).  With pause
 * the attempt is aborted and the run waits; else the run fails.
 */
void
vb_state_budget_exceeded(VbRun *run, const char *node, int attempt, int64 task_id,
						 const char *detail_json, bool pause, TimestampTz at)
{
	vb_event(run, "BUDGET_EXCEEDED", node, attempt, detail_json, at);
	/* a compensating run goes on (vb_state_fail_run): it is not paused */
	if (pause && vb_run_active(run->status) && run->status != VB_RUN_COMPENSATING)
	{
		if (task_id != 0)
			vb_state_abort_attempt(run, task_id, "its run's budget is spent", at, at);
		vb_state_pause_run(run, "budget", "budget exceeded", "vectorbea", at);
		return;
	}
	vb_state_fail_run(run, node, "budget_exceeded", at);
}

/*
 * Spend booked on a locked run after node's attempt ended (a worker's
 * report, or a child run's spend) crossed a budget, whose policy is pause
 * or not.  The work stands.  A run that has ended, or that has nothing
 * left open, only gets the overrun on record: it is not failed or paused
 * after the fact.  A compensating run goes on over its budget, with the
 * overrun on record.  Else the run fails, or pauses before any more.
 */
void
vb_state_over_budget(VbRun *run, const char *node, int attempt, const char *detail_json,
					 bool pause, TimestampTz at)
{
	if (!vb_run_active(run->status))
	{
		vb_event(run, "BUDGET_EXCEEDED", node, attempt, detail_json, at);
		return;
	}
	pause = pause && run->status != VB_RUN_COMPENSATING;
	if (pause && run->open_nodes == 0)
		vb_event(run, "BUDGET_EXCEEDED", node, attempt, detail_json, at);
	else
		vb_state_budget_exceeded(run, node, attempt, 0, detail_json, pause, at);
}

/*
 * The child runs that run cr (an SQL expression) left behind, and theirs in
 * turn: those its run nodes waited for when its end (or the start of its
 * compensation) closed them, skipped or cancelled with the child's id
 * still in their lease.  Their ends book nothing on cr (it no longer waits
 * for them; the scheduler cancels them), so what they spent and still
 * hold (VB_RUN_RESERVED_SQL) is counted with cr's own wherever cr's spend
 * is booked; otherwise a root lost what a grandchild spent when the child
 * between them ended first, and gave the next child that money again.  A
 * requeue of cr clears those leases (vb_state_requeue), having booked them
 * on cr itself (book_abandoned_children).  Columns usd, tokens.
 */
#define ABANDONED_CHILDREN_SQL(cr) \
	"WITH RECURSIVE ab(id) AS (" \
	"  SELECT an.lease FROM vectorbea.nodes an" \
	"   WHERE an.run_id = " cr " AND an.kind = 'run' AND an.lease IS NOT NULL" \
	"     AND an.status IN ('skipped', 'cancelled')" \
	"  UNION" \
	/* by key, whatever the statistics (OFFSET 0: not flattened into a join) */ \
	"  SELECT x.lease FROM ab CROSS JOIN LATERAL (" \
	"    SELECT an.lease FROM vectorbea.nodes an" \
	"     WHERE an.run_id = ab.id AND an.kind = 'run' AND an.lease IS NOT NULL" \
	"       AND an.status IN ('skipped', 'cancelled') OFFSET 0) x" \
	")" \
	" SELECT coalesce(pg_catalog.sum(g.usage_usd + g.child_usage_usd + gh.usd), 0) AS usd," \
	"        coalesce(pg_catalog.sum(g.usage_tokens + g.child_usage_tokens + gh.tokens), 0) AS tokens" \
	"   FROM ab CROSS JOIN LATERAL (SELECT r.id, r.usage_usd, r.child_usage_usd, r.usage_tokens," \
	"                                      r.child_usage_tokens" \
	"                                 FROM vectorbea.runs r WHERE r.id = ab.id OFFSET 0) g" \
	"  CROSS JOIN LATERAL (" VB_RUN_RESERVED_SQL("g.id", "0") ") gh"

/*
 * Books what child run child_id spent, its own children's included, on
 * its parent, a locked run, when the child ends.  NULL when the child
 * spent nothing; else the field for the event that ends the parent's run
 * node, ,"child_usage":{"usd": ..., "tokens": ...}, with
 * *over set when the parent's budget is now crossed (*detail_json:
 * BUDGET_EXCEEDED's data; *pause: the parent's policy is pause).  What
 * the children the child left behind spent and hold counts too
 * (ABANDONED_CHILDREN_SQL; "abandoned_usd", "abandoned_tokens" in the
 * field).
 *
 * With held, the child has not ended: its parent stops waiting for it
 * (the run node's timeout), and the scheduler cancels it later.  What it
 * holds then is booked as spent too (held_usd, held_tokens in the field):
 * its calls in flight may still be billed, at up to their reserved worst
 * case, and its running children spend within the budgets it gave them,
 * but nobody books any of that on the parent any more.  Without it, a
 * retry's new child was given the same money again.
 */
static char *
book_child_usage(VbRun *parent, pg_uuid_t *child_id, bool held, bool *over, char **detail_json,
				 bool *pause)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	Datum		args[2] = {UUIDPGetDatum(&parent->id), UUIDPGetDatum(child_id)};
	bool		isnull;

	if (plans[held] == NULL)
	{
		Oid			types[2] = {UUIDOID, UUIDOID};

		plans[held] = vb_prepare_opts(psprintf(
			"WITH c AS ("
			"  SELECT cr.usage_usd + cr.child_usage_usd + h.usd + a.usd AS usd,"
			"         cr.usage_tokens + cr.child_usage_tokens + h.tokens + a.tokens AS tokens,"
			"         h.usd AS held_usd, h.tokens AS held_tokens,"
			"         a.usd AS abandoned_usd, a.tokens AS abandoned_tokens"
			"    FROM vectorbea.runs cr CROSS JOIN LATERAL (%s) h"
			"   CROSS JOIN LATERAL (" ABANDONED_CHILDREN_SQL("cr.id") ") a"
			"   WHERE cr.id = $2"
			")"
			" UPDATE vectorbea.runs r"
			"    SET child_usage_usd = r.child_usage_usd + c.usd,"
			"        child_usage_tokens = r.child_usage_tokens + c.tokens"
			"   FROM c"
			"  WHERE r.id = $1 AND (c.usd > 0 OR c.tokens > 0)"
			" RETURNING (pg_catalog.jsonb_build_object('usd', c.usd, 'tokens', c.tokens)"
			"            || CASE WHEN c.held_usd > 0 OR c.held_tokens > 0"
			"                    THEN pg_catalog.jsonb_build_object('held_usd', c.held_usd,"
			"                                                       'held_tokens', c.held_tokens)"
			"                    ELSE '{}' END"
			"            || CASE WHEN c.abandoned_usd > 0 OR c.abandoned_tokens > 0"
			"                    THEN pg_catalog.jsonb_build_object('abandoned_usd', c.abandoned_usd,"
			"                                                       'abandoned_tokens', c.abandoned_tokens)"
			"                    ELSE '{}' END)::text,"
			"           coalesce(r.options->>'on_budget', 'fail') = 'pause',"
			"           " VB_RUN_OVER_BUDGET_SQL,
			held ? VB_RUN_RESERVED_SQL("cr.id", "0") : "SELECT 0::numeric AS usd, 0::bigint AS tokens"),
			/* by key whatever the values: never planned again per child's end */
			lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	if (SPI_execute_plan(plans[held], args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "vectorbea: could not book the spend of child run %s on run %s",
			 vb_uuid_text(child_id), vb_uuid_text(&parent->id));
	*over = false;
	if (SPI_processed == 0)
		return NULL;
	*pause = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	*over = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	*detail_json = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	return psprintf(",\"child_usage\":%s", SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}
