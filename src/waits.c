/*-------------------------------------------------------------------------
 *
 * waits.c
 *	  The nodes the engine runs without a worker: sleep (a timer), signal
 *	  (a wait for send_signal) and run (a child run), and the not_before of
 *	  any node.
 *
 * The scheduler starts them.  A node that becomes ready without an
 * activity, or held by its not_before, wakes it (state.c); each pass then:
 *
 *	- reads the not_before of held nodes (rendering a template from the
 *	  node's input, the run's input and its dependencies' outputs) and lets
 *	  them be claimed at that time;
 *	- starts ready sleep, signal and run nodes: each waits (status
 *	  waiting) without holding a worker or a connection, with its end in
 *	  attempt_deadline: the timer's time, the signal's timeout, the child's
 *	  timeout.  A run node first starts its child, whose id becomes the
 *	  node's lease; a signal node first takes a signal sent before it
 *	  waited;
 *	- ends the waits whose time has come;
 *	- cancels running child runs whose parent node no longer waits for
 *	  them (the parent was cancelled or failed, or the node timed out): a
 *	  parent never locks a child (state.c locks child, then parent).
 *
 * A signal sent while its node waits, and a child run that ends, end the
 * wait at once, in the sender's or the child's transaction (signals.c,
 * state.c).  Everything lives in the tables, so a crash loses no timer:
 * after a restart the first pass finds what is due.  Each item runs
 * through due_items.c, so one bad node never stops the loop.
 *
 * IDENTIFICATION
 *	  src/waits.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "budget.h"
#include "clock.h"
#include "due_items.h"
#include "duration.h"
#include "jsonb_util.h"
#include "notify.h"
#include "settings.h"
#include "spi_util.h"
#include "state.h"
#include "subxact.h"
#include "template.h"
#include "upstream.h"
#include "waits.h"
#include "workflow.h"
#include "workspace_lock.h"

#define WAITS_BATCH			100

/*
 * An llm node held at available_at 'infinity' by a disabled model is not
 * one whose not_before is still to be read.
 */
#define HELD_BY_SWITCH \
	"(n.activity = '" VB_LLM_ACTIVITY "' AND EXISTS (SELECT FROM vectorbea.disabled_models d" \
	"   WHERE d.provider = n.llm->>'provider' AND d.model IN ('*', n.llm->>'model')))"

/*
 * Node n's run is running, as a probe of the run by its key for each node
 * a scan in index order reads (OFFSET 0: not a join, which the planner
 * made a hash of every running run).
 */
#define RUN_RUNNING \
	"EXISTS (SELECT FROM vectorbea.runs r WHERE r.id = n.run_id AND r.status = 'running' OFFSET 0)"

/*
 * Child run c runs and its parent's run node no longer waits for it.  The
 * OFFSET 0 keeps NOT EXISTS a probe of each running child's parent node by
 * key: as an anti-join the planner hashed every node of the table, at each
 * pass of the scheduler (test/t/042_hot_plans.pl).
 */
#define NOBODY_WAITS_FOR_C \
	" AND NOT EXISTS (SELECT FROM vectorbea.nodes n" \
	"                  WHERE n.run_id = c.parent_run AND n.node = c.parent_node" \
	"                    AND n.lease = c.id AND n.status = 'waiting' OFFSET 0)"
#define NOBODYS_CHILD \
	"c.parent_run IS NOT NULL AND c.status = 'running'" NOBODY_WAITS_FOR_C

/*
 * The same among named runs (a uuid[], $1): the running children of each
 * (runs_running_children_idx, probed per run: OFFSET 0 keeps the probe
 * from becoming a join, which the generic plan, taking the array for ten
 * runs of many children, made a scan of every run), and the runs
 * themselves; each then probed by its key.  The status is tested as
 * "c.status || ''" so that the probe cannot join that index whole to the
 * keys (a BitmapAnd read all its entries).
 */
#define NOBODYS_CHILD_AMONG_NAMED \
	"c.id = ANY (ARRAY(SELECT k.id FROM pg_catalog.unnest($1) AS p(id) CROSS JOIN LATERAL (" \
	"                    SELECT k.id FROM vectorbea.runs k" \
	"                     WHERE k.parent_run = p.id AND k.parent_run IS NOT NULL" \
	"                       AND k.status = 'running' OFFSET 0) k" \
	"                  UNION ALL SELECT pg_catalog.unnest($1)))" \
	" AND c.parent_run IS NOT NULL AND c.status || '' = 'running'" NOBODY_WAITS_FOR_C

/* When work skipped because its run was busy is looked at again. */
#define RETRY_BUSY_MS		200

/* Child runs nest at most this deep: a workflow that runs itself stops. */
#define MAX_CHILD_DEPTH		16

typedef struct WaitBatch
{
	int64	   *ids;
	pg_uuid_t  *run_ids;
	TimestampTz at;
	int			done;
} WaitBatch;

/* What start_one reads about a node. */
typedef struct WaitNode
{
	int64		id;
	char	   *kind;
	char	   *node;
	char	   *activity;
	bool		held;
	char	   *not_before;
	Jsonb	   *wait;
	Jsonb	   *input;
	Jsonb	   *upstream;		/* NULL: too large (upstream_bytes) */
	int64		upstream_bytes;
	Jsonb	   *run_input;
	char	   *workspace;
	int64		timeout_ms;
} WaitNode;

/*
 * The node's attempt fails for good with a message, and with flag (a field
 * of the error set to true) unless it is NULL; the run fails.
 */
static void
fail_for_good_flagged(VbRun *run, int64 task_id, const char *message, const char *flag,
					  TimestampTz at)
{
	StringInfoData err;

	initStringInfo(&err);
	appendStringInfoString(&err, "{\"message\":");
	vb_append_json_string(&err, message);
	appendStringInfoString(&err, ",\"class\":\"permanent\"");
	if (flag)
		appendStringInfo(&err, ",\"%s\":true", flag);
	appendStringInfoChar(&err, '}');
	vb_state_fail_attempt(run, task_id, "permanent", err.data, false, -1, at);
}

static void
fail_for_good(VbRun *run, int64 task_id, const char *message, TimestampTz at)
{
	fail_for_good_flagged(run, task_id, message, NULL, at);
}

/* Renders a time template (or reads a timestamp); false with *problem set. */
static bool
render_time(const char *text, WaitNode *w, TimestampTz *t, char **problem)
{
	char	   *rendered = vb_template_render(text, w->input, w->upstream, w->run_input, problem);

	if (rendered == NULL)
		return false;
	if (!vb_parse_timestamp(rendered, t))
	{
		*problem = psprintf("\"%s\" is not a timestamp", vb_short_text(rendered));
		return false;
	}
	return true;
}

static char *
wait_text(WaitNode *w, const char *key)
{
	JsonbValue	v;

	if (!vb_jsonb_get(&w->wait->root, key, &v) || v.type == jbvNull)
		return NULL;
	if (v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	return vb_jsonb_value_text(&v);
}

/*
 * Runs plan (a scan of node ids and their run ids, locked, with the time
 * as its one parameter) and acts on each row with fn through due_items.c;
 * returns how many items fn completed.
 */
static int
act_on_scan(SPIPlanPtr plan, TimestampTz at, bool isolate, VbSweepCounters *counters,
			void (*fn) (void *, int))
{
	Datum		args[1] = {TimestampTzGetDatum(at)};
	WaitBatch	b;
	uint64		n;

	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: wait scan failed");
	n = SPI_processed;
	if (n == 0)
		return 0;
	memset(&b, 0, sizeof(b));
	b.at = at;
	vb_read_due_items(1, 2, &b.ids, &b.run_ids);
	for (uint64 i = 0; i < n; i++)
		vb_due_item(isolate, fn, &b, (int) i, counters, &b.run_ids[i], VB_ITEM_WAIT, b.ids[i], at);
	return b.done;
}

/* ---- sleep ---- */

static void
start_sleep(VbRun *run, WaitNode *w, TimestampTz at)
{
	char	   *for_ms = wait_text(w, "for_ms");
	TimestampTz until;
	char	   *iso;

	if (for_ms)
		until = at + strtoll(for_ms, NULL, 10) * 1000;
	else
	{
		char	   *problem;

		if (!render_time(wait_text(w, "until"), w, &until, &problem))
		{
			fail_for_good(run, w->id, psprintf("sleep.until of node \"%s\": %s", w->node, problem), at);
			return;
		}
	}
	iso = vb_timestamp_iso(until);
	if (vb_state_begin_wait(run, w->id, until, NULL, "TIMER_STARTED",
							psprintf("{\"until\":\"%s\"}", iso), at) > 0 && until <= at)
		vb_state_end_wait(run, w->id, psprintf("{\"slept_until\":\"%s\"}", iso), at);
}

/* ---- signal ---- */

/*
 * The oldest signal named `name` sent to a locked run that no node has
 * taken, locked; false when there is none.
 */
static bool
take_stored_signal(VbRun *run, const char *name, int64 *signal_id, char **payload)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, TEXTOID};

		plan = vb_prepare("SELECT id, payload::text FROM vectorbea.signals"
						  " WHERE run_id = $1 AND name = $2 AND delivered_to IS NULL"
						  " ORDER BY id LIMIT 1 FOR UPDATE", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = CStringGetTextDatum(name);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look for stored signals");
	if (SPI_processed == 0)
		return false;
	*signal_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*payload = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	return true;
}

/*
 * Signal signal_id (of a locked run) is delivered to waiting node task_id:
 * its payload becomes the node's output.  Once: the row records the node.
 */
void
vb_deliver_signal(VbRun *run, int64 signal_id, int64 task_id, const char *payload,
				  TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];

	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, INT8OID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.signals SET delivered_to = $2, delivered_at = $3"
						  " WHERE id = $1 AND delivered_to IS NULL", lengthof(types), types);
	}
	args[0] = Int64GetDatum(signal_id);
	args[1] = Int64GetDatum(task_id);
	args[2] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "vectorbea: signal %ld was delivered already", (long) signal_id);
	if (!vb_state_end_wait(run, task_id, payload, at))
		elog(ERROR, "vectorbea: task %ld is not waiting for a signal", (long) task_id);
}

static void
start_signal(VbRun *run, WaitNode *w, TimestampTz at)
{
	char	   *name = wait_text(w, "name");
	char	   *timeout_ms = wait_text(w, "timeout_ms");
	TimestampTz deadline = timeout_ms ? at + strtoll(timeout_ms, NULL, 10) * 1000 : DT_NOEND;
	int64		signal_id = 0;
	char	   *payload = NULL;
	bool		stored = take_stored_signal(run, name, &signal_id, &payload);
	StringInfoData data;

	initStringInfo(&data);
	appendStringInfoString(&data, "{\"name\":");
	vb_append_json_string(&data, name);
	if (deadline != DT_NOEND)
		appendStringInfo(&data, ",\"timeout_at\":\"%s\"", vb_timestamp_iso(deadline));
	if (stored)
		appendStringInfo(&data, ",\"signal\":%ld", (long) signal_id);
	appendStringInfoChar(&data, '}');
	if (vb_state_begin_wait(run, w->id, stored ? DT_NOEND : deadline, NULL, "SIGNAL_AWAITED",
							data.data, at) > 0 && stored)
		vb_deliver_signal(run, signal_id, w->id, payload, at);
}

/* ---- run: a child run ---- */

typedef struct ChildStart
{
	const char *workflow;
	int			version;
	Jsonb	   *input;
	Jsonb	   *options;
	int			priority;
	pg_uuid_t  *parent;
	const char *parent_node;
	pg_uuid_t	child;
	TimestampTz at;
} ChildStart;

static void
create_child(void *arg)
{
	ChildStart *cs = arg;

	vb_check_payload_size(cs->input, "the child run's input");
	(void) vb_create_run(cs->workflow, cs->version, cs->input, cs->options, NULL, cs->priority,
						 0, cs->parent, cs->parent_node, &cs->child, cs->at);
}

/*
 * How many runs above run_id started it, as child of a child of ..., and
 * the topmost of them (run_id itself when no run started it): the root,
 * which counts its tree's runs.  Retention may have purged an ancestor
 * that ended (parent_run has no foreign key); the walk then stops at the
 * oldest one left.
 */
static int
child_depth(pg_uuid_t *run_id, pg_uuid_t *root)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	bool		isnull;
	Datum		top;

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		/*
		 * Generic from the first call: its plan does not depend on the run,
		 * and left to the plan cache it was planned again at most calls
		 * (test/t/046_kept_plans_elsewhere.pl).  The oldest run left is
		 * looked up by key, run by run (LIMIT keeps the lookup a
		 * parameterised one): as a join, the plan read every run.
		 */
		plan = vb_prepare_opts("WITH RECURSIVE up(id, depth) AS ("
							   "  SELECT parent_run, 1 FROM vectorbea.runs WHERE id = $1"
							   "  UNION ALL"
							   "  SELECT r.parent_run, up.depth + 1 FROM vectorbea.runs r JOIN up ON r.id = up.id"
							   "   WHERE up.depth <= " CppAsString2(MAX_CHILD_DEPTH) ")"
							   " SELECT pg_catalog.count(*) FILTER (WHERE up.id IS NOT NULL),"
							   "        (SELECT u.id FROM up u CROSS JOIN LATERAL ("
							   "           SELECT FROM vectorbea.runs r WHERE r.id = u.id LIMIT 1) alive"
							   "          ORDER BY u.depth DESC LIMIT 1)"
							   "   FROM up",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = UUIDPGetDatum(run_id);
	/* not read-only: it must see the runs this pass started a moment ago */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not measure the depth of run %s", vb_uuid_text(run_id));
	top = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	memcpy(root, isnull ? run_id : DatumGetUUIDP(top), sizeof(pg_uuid_t));
	return (int) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Locks the tree's root and returns how many child runs its tree has
 * started.  The lock is only tried: the caller holds a run of the tree, a
 * descendant of the root, and a transaction that holds the root (a batch
 * of completions) may be waiting for it.  A held root raises
 * lock_not_available, and the scheduler puts the node off (due_items.c).
 */
static int
lock_tree_count(pg_uuid_t *root)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(root)};
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT tree_runs FROM vectorbea.runs WHERE id = $1 FOR NO KEY UPDATE NOWAIT",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not lock run %s, the root of its tree", vb_uuid_text(root));
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* One more child run in the tree of root, which lock_tree_count locked. */
static void
count_tree_run(pg_uuid_t *root)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(root)};

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("UPDATE vectorbea.runs SET tree_runs = tree_runs + 1 WHERE id = $1",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not count a child run in the tree of run %s", vb_uuid_text(root));
}

/* Whether an error is of the moment, not of what was asked: class 40, 53, or 55P03. */
static bool
transient_error(int sqlerrcode)
{
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_TRANSACTION_ROLLBACK ||
		ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_INSUFFICIENT_RESOURCES ||
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE;
}

static void
start_child(VbRun *run, WaitNode *w, TimestampTz at)
{
	ChildStart	cs;
	pg_uuid_t	root;
	int			tree_runs;
	char	   *version = wait_text(w, "version");
	char	   *problem;
	ErrorData  *edata;
	StringInfoData data;
	TimestampTz deadline = w->timeout_ms > 0 ? at + w->timeout_ms * 1000 : DT_NOEND;

	memset(&cs, 0, sizeof(cs));
	cs.workflow = wait_text(w, "workflow");
	cs.version = version ? atoi(version) : 0;
	cs.input = vb_template_render_json(w->input, w->upstream, w->run_input, &problem);
	if (cs.input == NULL)
	{
		fail_for_good(run, w->id, psprintf("input of run node \"%s\": %s", w->node, problem), at);
		return;
	}
	if (child_depth(&run->id, &root) >= MAX_CHILD_DEPTH)
	{
		fail_for_good_flagged(run, w->id,
							  psprintf("run node \"%s\" would start a child run more than %d levels deep",
									   w->node, MAX_CHILD_DEPTH), VB_DEPTH_LIMIT_FIELD, at);
		return;
	}
	/*
	 * The child is set going in its parent's workspace, so under its lock
	 * (workspace_lock.c), only tried: a pause of the workspace that holds
	 * the lock, or waits for it, will lock this parent, which this
	 * transaction holds, so waiting would close a circle.  The node is put
	 * off (due_items.c) and comes back in 100 ms.
	 */
	if (!vb_workspace_try_share(w->workspace))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("run node \"%s\" of run %s waits for workspace \"%s\" to be paused or resumed",
						w->node, vb_uuid_text(&run->id), vb_short_text(w->workspace))));
	tree_runs = lock_tree_count(&root);
	if (tree_runs >= vb_max_tree_runs)
	{
		fail_for_good_flagged(run, w->id,
							  psprintf("run node \"%s\" would start child run %d of the tree of run %s;"
									   " vectorbea.max_tree_runs allows %d",
									   w->node, tree_runs + 1, vb_uuid_text(&root), vb_max_tree_runs),
							  VB_TREE_LIMIT_FIELD, at);
		return;
	}
	initStringInfo(&data);
	appendStringInfoString(&data, "{\"workspace\":");
	vb_append_json_string(&data, w->workspace);
	vb_budget_grant_child(run, w->id, wait_text(w, "budget_usd"), wait_text(w, "budget_tokens"), &data);
	appendStringInfoChar(&data, '}');
	cs.options = vb_jsonb_from_cstring(data.data);
	cs.priority = run->priority;
	cs.parent = &run->id;
	cs.parent_node = w->node;
	cs.at = at;

	/*
	 * A child that cannot start (a bad input, a version gone, too big)
	 * fails the node.  A failure of the moment (a deadlock or serialization
	 * failure, no memory or disk, a lock not available) is no fault of the
	 * child's: it is thrown again, and the scheduler tries the node later
	 * (due_items.c), as it does after any error of its own.
	 */
	edata = vb_try_in_subxact(create_child, &cs);
	if (edata && transient_error(edata->sqlerrcode))
		ReThrowError(edata);
	if (edata)
	{
		char	   *message = psprintf("run node \"%s\" could not start workflow \"%s\": %s",
									   w->node, cs.workflow, edata->message);

		FreeErrorData(edata);
		fail_for_good(run, w->id, message, at);
		return;
	}
	count_tree_run(&root);
	resetStringInfo(&data);
	appendStringInfo(&data, "{\"child_run\":\"%s\",\"workflow\":", vb_uuid_text(&cs.child));
	vb_append_json_string(&data, cs.workflow);
	if (version)
		appendStringInfo(&data, ",\"version\":%s", version);
	if (deadline != DT_NOEND)
		appendStringInfo(&data, ",\"timeout_at\":\"%s\"", vb_timestamp_iso(deadline));
	appendStringInfoChar(&data, '}');
	vb_state_begin_wait(run, w->id, deadline, &cs.child, "CHILD_RUN_STARTED", data.data, at);
}

/* ---- starting ---- */

static bool
read_node(int64 id, WaitNode *w)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = vb_prepare("SELECT n.kind, n.node, n.activity, n.available_at = 'infinity',"
						  "       n.not_before, coalesce(n.wait, '{}'), n.input,"
						  "       " VB_UPSTREAM_SQL("n") ","
						  "       r.input, r.workspace, coalesce(n.timeout_ms, 0)"
						  "  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
						  " WHERE n.id = $1 AND n.status = 'ready'", lengthof(types), types);
	}
	args[0] = Int64GetDatum(id);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read task %ld", (long) id);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	w->id = id;
	w->kind = SPI_getvalue(tup, desc, 1);
	w->node = SPI_getvalue(tup, desc, 2);
	w->activity = SPI_getvalue(tup, desc, 3);
	w->held = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
	w->not_before = SPI_getvalue(tup, desc, 5);
	w->wait = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 6, &isnull));
	w->input = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 7, &isnull));
	w->run_input = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
	w->workspace = SPI_getvalue(tup, desc, 10);
	d = SPI_getbinval(tup, desc, 11, &isnull);
	w->timeout_ms = DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 8, &isnull);
	w->upstream_bytes = 0;
	/* last: it runs statements of its own */
	w->upstream = isnull ? vb_upstream_of_node(id, &w->upstream_bytes) : DatumGetJsonbPCopy(d);
	return true;
}

static void
start_one(void *arg, int i)
{
	WaitBatch  *b = arg;
	VbRun		run;
	WaitNode	w;

	if (!vb_run_lock(&b->run_ids[i], &run) || run.status != VB_RUN_RUNNING ||
		!read_node(b->ids[i], &w))
		return;
	if (w.upstream == NULL)
	{
		vb_state_fail_attempt(&run, w.id, "permanent",
							  vb_upstream_too_large_json(w.node, w.upstream_bytes), false, -1, b->at);
		vb_run_save(&run, b->at);
		b->done++;
		return;
	}
	if (w.held)
	{
		TimestampTz t;
		char	   *problem;

		if (!render_time(w.not_before, &w, &t, &problem))
			fail_for_good(&run, w.id, psprintf("not_before of node \"%s\": %s", w.node, problem),
						  b->at);
		else
			vb_state_release_not_before(&run, w.id, w.activity, Max(t, b->at), b->at);
		/* A wait whose time has come is started by the next round of the scan. */
		vb_run_save(&run, b->at);
		b->done++;
		return;
	}
	if (strcmp(w.kind, "sleep") == 0)
		start_sleep(&run, &w, b->at);
	else if (strcmp(w.kind, "signal") == 0)
		start_signal(&run, &w, b->at);
	else if (strcmp(w.kind, "run") == 0)
		start_child(&run, &w, b->at);
	else
	{
		/* An approval node held by its not_before: its gate opens now. */
		vb_state_release_not_before(&run, w.id, NULL, b->at, b->at);
	}
	vb_run_save(&run, b->at);
	b->done++;
}

/*
 * Starts the ready sleep, signal and run nodes whose time has come, and
 * reads the not_before of held nodes.  Returns how many were acted on
 * (items that failed are postponed, not counted, so a caller's loop ends).
 */
int
vb_start_waits(TimestampTz at, bool isolate, VbSweepCounters *counters)
{
	static SPIPlanPtr plan = NULL;

	if (!vb_waits_available())
		return 0;
	if (plan == NULL)
	{
		Oid			types[1] = {TIMESTAMPTZOID};

		/*
		 * Every pass runs it.  The candidates come from the two small
		 * partial indexes of their kinds (nodes_engine_ready_idx,
		 * nodes_not_before_idx), each run probed by its key, and only
		 * they are joined to their runs and locked: as one join, the
		 * planner, estimating the two conditions as independent, read
		 * every node of the table, or hashed every run, at every pass.
		 * The subqueries' n is their own; the outer conditions check the
		 * locked rows again.  Generic from the first call, as the next due
		 * time below.
		 */
		plan = vb_prepare_opts("SELECT w.id, w.run_id"
							   "  FROM vectorbea.nodes w JOIN vectorbea.runs wr ON wr.id = w.run_id"
							   " WHERE w.id = ANY (ARRAY("
							   "         (SELECT n.id FROM vectorbea.nodes n"
							   "           WHERE n.status = 'ready' AND n.activity IS NULL AND n.available_at <= $1"
							   "             AND n.kind IN ('sleep', 'signal', 'run', 'approval') AND " RUN_RUNNING
							   "           ORDER BY n.available_at LIMIT " CppAsString2(WAITS_BATCH) ")"
							   "         UNION ALL"
							   "         (SELECT n.id FROM vectorbea.nodes n"
							   "           WHERE n.status = 'ready' AND n.not_before IS NOT NULL"
							   "             AND n.available_at = 'infinity' AND NOT " HELD_BY_SWITCH
							   "             AND " RUN_RUNNING
							   "           LIMIT " CppAsString2(WAITS_BATCH) ")))"
							   "   AND w.status = 'ready' AND wr.status = 'running'"
							   "   AND ((w.activity IS NULL AND w.available_at <= $1)"
							   "        OR (w.not_before IS NOT NULL AND w.available_at = 'infinity'))"
							   " ORDER BY w.id LIMIT " CppAsString2(WAITS_BATCH)
							   " FOR NO KEY UPDATE OF wr SKIP LOCKED"
							   " FOR UPDATE OF w SKIP LOCKED", lengthof(types), types,
							   CURSOR_OPT_GENERIC_PLAN);
	}
	return act_on_scan(plan, at, isolate, counters, start_one);
}

/* ---- ending at a time ---- */

static void
end_one(void *arg, int i)
{
	static SPIPlanPtr plan = NULL;
	WaitBatch  *b = arg;
	VbRun		run;
	Datum		args[2];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *kind;
	char	   *node;
	Jsonb	   *wait;
	JsonbValue	v;

	if (plan == NULL)
	{
		Oid			types[2] = {INT8OID, TIMESTAMPTZOID};

		/*
		 * By its key: the generic plan is the plan.  A sleep slept until
		 * the time its TIMER_STARTED gave, which attempt_deadline no longer
		 * says once an item put off moved it: its start and duration, or
		 * (a sleep until a time, maybe a template) that event's own word.
		 */
		plan = vb_prepare_opts("SELECT kind, node, wait, attempt_deadline, lease, attempt,"
							   "       CASE WHEN kind = 'sleep' THEN coalesce("
							   "         started_at + (wait->>'for_ms')::bigint * interval '1 ms',"
							   "         (SELECT (e.data->>'until')::timestamptz FROM vectorbea.events e"
							   "           WHERE e.run_id = n.run_id AND e.node = n.node AND e.attempt = n.attempt"
							   "             AND e.type = 'TIMER_STARTED' LIMIT 1),"
							   "         attempt_deadline) END"
							   "  FROM vectorbea.nodes n"
							   " WHERE id = $1 AND status = 'waiting' AND attempt_deadline <= $2",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	if (!vb_run_lock(&b->run_ids[i], &run) || run.status != VB_RUN_RUNNING)
		return;
	args[0] = Int64GetDatum(b->ids[i]);
	args[1] = TimestampTzGetDatum(b->at);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read task %ld", (long) b->ids[i]);
	if (SPI_processed == 0)
		return;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	kind = SPI_getvalue(tup, desc, 1);
	node = SPI_getvalue(tup, desc, 2);
	wait = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 3, &isnull));

	if (strcmp(kind, "sleep") == 0)
	{
		TimestampTz slept_until = DatumGetTimestampTz(SPI_getbinval(tup, desc, 7, &isnull));

		vb_state_end_wait(&run, b->ids[i],
						  psprintf("{\"slept_until\":\"%s\"}", vb_timestamp_iso(slept_until)), b->at);
	}
	else if (strcmp(kind, "signal") == 0)
	{
		/* on_timeout "continue" has a default (null at least); "fail" none. */
		if (vb_jsonb_get(&wait->root, "default", &v))
			vb_state_end_wait(&run, b->ids[i], vb_jsonb_value_text(&v), b->at);
		else
		{
			char	   *name = "";
			StringInfoData err;

			if (vb_jsonb_get(&wait->root, "name", &v) && v.type == jbvString)
				name = pnstrdup(v.val.string.val, v.val.string.len);
			initStringInfo(&err);
			appendStringInfoString(&err, "{\"message\":");
			vb_append_json_string(&err, psprintf("node \"%s\" waited for signal \"%s\" until its timeout",
												 node, name));
			appendStringInfoString(&err, ",\"class\":\"timeout\"}");
			vb_state_fail_attempt(&run, b->ids[i], "timeout", err.data, false, -1, b->at);
		}
	}
	else
	{
		pg_uuid_t	child_id;
		char	   *child;
		int			attempt = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));

		memcpy(&child_id, DatumGetUUIDP(SPI_getbinval(tup, desc, 5, &isnull)), sizeof(pg_uuid_t));
		child = vb_uuid_text(&child_id);
		/* The child, no longer waited for, is cancelled by vb_cancel_orphans. */
		vb_state_child_timed_out(&run, b->ids[i], node, attempt, &child_id,
								 psprintf("{\"message\":\"child run %s did not finish within the node's timeout\","
										  "\"class\":\"timeout\",\"child_run\":\"%s\"}", child, child),
								 b->at);
	}
	vb_run_save(&run, b->at);
	b->done++;
}

/* Ends the waits whose time has come; returns how many. */
int
vb_end_due_waits(TimestampTz at, bool isolate, VbSweepCounters *counters)
{
	static SPIPlanPtr plan = NULL;

	if (!vb_waits_available())
		return 0;
	if (plan == NULL)
	{
		Oid			types[1] = {TIMESTAMPTZOID};

		/*
		 * Generic from the first call, as the next due time below: a pass
		 * of the scheduler runs it, and the plan cache, finding a plan for
		 * the time at hand cheaper than the generic one whenever some nodes
		 * wait, planned it again at every pass (bench/README.md, "The
		 * scheduler's own statements").  Its plan reads the partial index
		 * of waiting nodes whatever the time.
		 */
		plan = vb_prepare_opts("SELECT n.id, n.run_id"
							   "  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
							   " WHERE n.status = 'waiting' AND n.attempt_deadline <= $1"
							   "   AND n.kind IN ('sleep', 'signal', 'run') AND r.status = 'running'"
							   " ORDER BY n.attempt_deadline LIMIT " CppAsString2(WAITS_BATCH)
							   " FOR NO KEY UPDATE OF r SKIP LOCKED"
							   " FOR UPDATE OF n SKIP LOCKED", lengthof(types), types,
							   CURSOR_OPT_GENERIC_PLAN);
	}
	return act_on_scan(plan, at, isolate, counters, end_one);
}

/* ---- children nobody waits for ---- */

static void
cancel_one(void *arg, int i)
{
	WaitBatch  *b = arg;
	VbRun		run;

	if (!vb_run_lock(&b->run_ids[i], &run) || run.status != VB_RUN_RUNNING)
		return;
	vb_state_cancel_run(&run, "its parent run no longer waits for it", vb_state_parent_compensates(&run.id),
						b->at);
	vb_run_save(&run, b->at);
	b->done++;
}

/* A look's plan, with named runs or without (plans[1], plans[0]). */
static SPIPlanPtr
orphans_plan(SPIPlanPtr *plans, bool named, const char *named_sql, const char *every_sql)
{
	if (plans[named] == NULL)
	{
		Oid			types[1] = {UUIDARRAYOID};

		plans[named] = vb_prepare_opts(named ? named_sql : every_sql, named ? 1 : 0, types,
									   CURSOR_OPT_GENERIC_PLAN);
	}
	return plans[named];
}

/*
 * Cancels running child runs whose parent's run node no longer waits for
 * them, among the children of the runs named (uuid[]) and those runs
 * themselves, or among all when named is NULL; returns how many were
 * cancelled.
 */
int
vb_cancel_orphans(TimestampTz at, ArrayType *named, VbSweepCounters *counters)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	SPIPlanPtr	plan;
	Datum		args[1];
	WaitBatch	b;
	uint64		n;

	if (!vb_waits_available())
		return 0;
	plan = orphans_plan(plans, named != NULL,
						"SELECT c.id FROM vectorbea.runs c WHERE " NOBODYS_CHILD_AMONG_NAMED
						" LIMIT " CppAsString2(WAITS_BATCH) " FOR NO KEY UPDATE OF c SKIP LOCKED",
						"SELECT c.id FROM vectorbea.runs c WHERE " NOBODYS_CHILD
						" LIMIT " CppAsString2(WAITS_BATCH) " FOR NO KEY UPDATE OF c SKIP LOCKED");
	args[0] = PointerGetDatum(named);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: orphan child scan failed");
	n = SPI_processed;
	if (n == 0)
		return 0;
	memset(&b, 0, sizeof(b));
	b.at = at;
	vb_read_due_items(0, 1, NULL, &b.run_ids);
	for (uint64 i = 0; i < n; i++)
		vb_due_item(true, cancel_one, &b, (int) i, counters, &b.run_ids[i], VB_ITEM_WAIT, 0, at);
	return b.done;
}

/*
 * now + RETRY_BUSY_MS when a running child run is left that nobody waits
 * for among those vb_cancel_orphans looked at with the same named runs
 * (it skipped it: it or its run was busy); DT_NOEND when none is.  The
 * scheduler asks only after a commit told it that children may have been
 * left (vb_wake_scheduler_for_orphans), not at every pass.
 */
TimestampTz
vb_orphans_next_due(TimestampTz now, ArrayType *named)
{
	static SPIPlanPtr plans[2] = {NULL, NULL};
	SPIPlanPtr	plan;
	Datum		args[1];

	if (!vb_waits_available())
		return DT_NOEND;
	plan = orphans_plan(plans, named != NULL,
						"SELECT FROM vectorbea.runs c WHERE " NOBODYS_CHILD_AMONG_NAMED " LIMIT 1",
						"SELECT FROM vectorbea.runs c WHERE " NOBODYS_CHILD " LIMIT 1");
	args[0] = PointerGetDatum(named);
	/* Not read-only: as vb_cancel_orphans, with a snapshot taken now. */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: orphan child lookup failed");
	return SPI_processed > 0 ? TimestampTzPlusMilliseconds(now, RETRY_BUSY_MS) : DT_NOEND;
}

/*
 * The prepared transactions of this database, read from pg_prepared_xacts:
 * the first `room` of them into xids; returns how many there are, which
 * may be more.
 */
static int
read_prepared_xacts(TransactionId *xids, int room, TransactionId horizon)
{
	static SPIPlanPtr plan = NULL;
	int			n = 0;

	if (plan == NULL)
		plan = vb_prepare("SELECT transaction FROM pg_catalog.pg_prepared_xacts"
						  " WHERE database = pg_catalog.current_database()", 0, NULL);
	if (SPI_execute_plan(plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the prepared transactions");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		xid = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (isnull || (TransactionIdIsValid(horizon) &&
					   !TransactionIdPrecedes(DatumGetTransactionId(xid), horizon)))
			continue;
		if (n < room)
			xids[n] = DatumGetTransactionId(xid);
		n++;
	}
	return n;
}

/*
 * Whether a transaction of this database prepared before `horizon` (an id
 * not yet assigned when more prepared transactions left the scheduler
 * work than its slot names) is left to commit: it may have left the
 * scheduler work, and its commit, from any backend, tells the scheduler
 * nothing of its own (notify.c).
 */
bool
vb_prepared_xacts_before(TransactionId horizon)
{
	return read_prepared_xacts(NULL, 0, horizon) > 0;
}

/*
 * The transactions of this database that are prepared now, for a
 * scheduler that starts: those recovered at the server's start, and any
 * prepared before it whose ids went to a slot nobody read.  The first
 * `room` into xids; returns how many there are.
 */
int
vb_prepared_xacts(TransactionId *xids, int room)
{
	return read_prepared_xacts(xids, room, InvalidTransactionId);
}

/* ---- when ---- */

/*
 * The earliest time after `now` at which a wait ends or a node held by its
 * not_before may start; DT_NOEND when none.  A held node whose time is not
 * read yet, or an engine node ready now, was left by this pass because its
 * run was busy: it is due again shortly.  (Children nobody waits for:
 * vb_orphans_next_due.)
 */
TimestampTz
vb_waits_next_due(TimestampTz now)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	bool		isnull;
	Datum		d;

	if (!vb_waits_available())
		return DT_NOEND;
	if (plan == NULL)
	{
		Oid			types[1] = {TIMESTAMPTZOID};

		/*
		 * Work the last pass left because its run was busy (SKIP LOCKED) is
		 * due again a little later, not at once: a run held for long must
		 * not keep the scheduler spinning.  Generic from the first call:
		 * every pass runs it, each of its parts reads a partial index or a
		 * key, and left to the plan cache it was planned again at every
		 * pass, 0.7 ms each time.  The first wait to end is the first entry of the
		 * waiting nodes' index whose run is running: as the minimum over
		 * all of them joined to their runs, every pass read every waiting
		 * node and its run (8 ms with 5,000 waiting, bench/README.md).  So
		 * is the first node held by its not_before, and the first ready
		 * node the engine runs itself (nodes_engine_ready_idx).
		 */
		plan = vb_prepare_opts("SELECT least("
							   " (SELECT n.attempt_deadline FROM vectorbea.nodes n"
							   "   WHERE n.status = 'waiting' AND n.attempt_deadline IS NOT NULL"
							   "     AND n.kind IN ('sleep', 'signal', 'run')"
							   "     AND " RUN_RUNNING
							   "   ORDER BY n.attempt_deadline LIMIT 1),"
							   " (SELECT CASE WHEN n.available_at = 'infinity'"
							   "              THEN $1 + interval '" CppAsString2(RETRY_BUSY_MS) " ms'"
							   "              ELSE n.available_at END"
							   "    FROM vectorbea.nodes n"
							   "   WHERE n.status = 'ready' AND n.not_before IS NOT NULL"
							   "     AND n.available_at > $1 AND NOT " HELD_BY_SWITCH
							   "     AND " RUN_RUNNING
							   "   ORDER BY n.available_at LIMIT 1),"
							   " (SELECT greatest(n.available_at, $1 + interval '" CppAsString2(RETRY_BUSY_MS) " ms')"
							   "    FROM vectorbea.nodes n"
							   "   WHERE n.status = 'ready' AND n.activity IS NULL"
							   "     AND n.kind IN ('sleep', 'signal', 'run', 'approval') AND " RUN_RUNNING
							   "   ORDER BY n.available_at LIMIT 1))",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = TimestampTzGetDatum(now);
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: next wait scan failed");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? DT_NOEND : DatumGetTimestampTz(d);
}

/*
 * Announces the activities of nodes whose not_before came in (after, upto]
 * (NOTIFY vectorbea_tasks), as vb_announce_due does for retries.
 */
void
vb_announce_not_before(TimestampTz after, TimestampTz upto)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];

	if (!vb_waits_available())
		return;
	if (plan == NULL)
	{
		Oid			types[2] = {TIMESTAMPTZOID, TIMESTAMPTZOID};

		/* Every pass runs it: generic, as the retries' (sweep.c). */
		plan = vb_prepare_opts("SELECT DISTINCT activity FROM vectorbea.nodes"
							   " WHERE status = 'ready' AND not_before IS NOT NULL"
							   "   AND available_at > $1 AND available_at <= $2 AND activity IS NOT NULL",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = TimestampTzGetDatum(after);
	args[1] = TimestampTzGetDatum(upto);
	if (SPI_execute_plan(plan, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: due not_before scan failed");
	for (uint64 i = 0; i < SPI_processed; i++)
		vb_notify_task_ready(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
}
