/*-------------------------------------------------------------------------
 *
 * events.c
 *	  The run lock and the one writer of the append-only event history.
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
 * Events of several runs at once (a claim's STEP_STARTED) are numbered
 * by vb_event_batch_write in one statement, for runs that the transaction
 * has locked but holds in no VbRun; a batch completion holds its runs
 * (vb_run_lock_for_tasks) and numbers in memory (vb_event_batch_write_held).  Event timestamps in data use the
 * engine's one format, vb_timestamp_iso (clock.c).
 *
 * Every writer arms early_release.c: a transaction that numbered events
 * holds runs' locks to its commit, and with vectorbea.early_lock_release
 * gives them up before the commit's flush.
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
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "vectorbea.h"
#include "clock.h"
#include "early_release.h"
#include "events.h"
#include "spi_util.h"

/* Engine event types: append_event may not forge these. */
static const char *const engine_event_types[] = {
	"RUN_STARTED", "STEP_STARTED", "STEP_COMPLETED", "STEP_FAILED",
	"STEP_RETRIED", "NODES_SPAWNED", "APPROVAL_REQUESTED", "APPROVAL_GRANTED",
	"APPROVAL_REJECTED", "APPROVAL_ESCALATED", "APPROVAL_EXPIRED",
	"RUN_CHECKPOINTED", "LLM_REQUESTED", "LLM_CALLED", "SELF_CORRECTION", "BUDGET_EXCEEDED",
	"RATE_LIMITED", "RUN_CANCELLED", "COMPENSATION_STARTED", "RUN_COMPLETED",
	"RUN_FAILED", "SCHEDULER_ERROR", "NODES_REQUEUED", "TIMER_STARTED", "SIGNAL_AWAITED",
	"SIGNAL_RECEIVED", "CHILD_RUN_STARTED", "APPROVAL_VOTED", "COMPENSATION_COMPLETED",
	"COMPENSATION_FAILED", "RUN_PAUSED", "RUN_RESUMED", "LLM_CHARGED", "RUN_BUDGET_SET", NULL
};

static void
fill_run(VbRun *run, HeapTuple tup, TupleDesc desc)
{
	bool		isnull;

	memcpy(&run->id, DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)),
		   sizeof(pg_uuid_t));
	run->status = vb_run_status_from_name(SPI_getvalue(tup, desc, 2));
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
 * The runs a batch holds in memory (complete_tasks), sorted by id; NULL
 * when none.  A run ending inside the batch may have to change another
 * run of the same batch (a child run tells its parent): it must change the
 * batch's copy, whose counters are ahead of the table until the batch
 * saves them, or its events would take sequence numbers the batch has
 * used and its changes would be overwritten by the batch's save.
 */
static VbRun *held_runs = NULL;
static int	held_count = 0;

/*
 * How vb_run_lock_parent waits for a parent run's row: in the lock
 * manager (-1, the default), not at all (0: the scheduler's time-driven
 * steps and a claim's ending of expired attempts), or by trying every
 * 10 ms for that many milliseconds (a decision, which promises not to
 * wait in the lock manager).
 */
static int	parent_lock_wait_ms = -1;

/* How long a batch tries a parent it did not lock in order (vb_run_lock_parent). */
#define BATCH_PARENT_LOCK_WAIT_MS	2000

/*
 * Sets how long vb_run_lock_parent tries a held parent (-1: waits in the
 * lock manager; 0: not at all); returns the previous setting, for the
 * caller to restore.
 */
int
vb_run_parent_lock_wait_limit(int wait_ms)
{
	int			previous = parent_lock_wait_ms;

	parent_lock_wait_ms = wait_ms;
	return previous;
}

/*
 * Locks the parent of a child run that ends (the one second run a
 * transaction ever locks, after the child); false when there is no such
 * run.  With a limit on the wait, a parent that another transaction holds
 * past it raises lock_not_available: the scheduler then defers the item
 * that ended the child (due_items.c) instead of stalling every other item
 * behind a worker's open transaction, a claim leaves that expired attempt
 * for later, and a decision is refused, to be made again.
 */
bool
vb_run_lock_parent(pg_uuid_t *run_id, VbRun *run)
{
	static SPIPlanPtr exists_plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(run_id)};
	int			wait_ms = parent_lock_wait_ms;

	/*
	 * A batch that holds several runs (complete_tasks) locked in order the
	 * parents of the children it expected to end; a child that ends all the
	 * same (its budget crossed by an item's usage, or its other nodes
	 * finished meanwhile) finds its parent unlocked.  Waiting for it in the
	 * lock manager, with the batch's other runs held, could close a circle
	 * with another batch (40P01): the parent is tried for a while instead,
	 * and the batch refused, to be run again, when it stays busy.
	 */
	if (wait_ms < 0 && held_runs != NULL && held_count > 1)
		wait_ms = BATCH_PARENT_LOCK_WAIT_MS;
	if (wait_ms < 0)
		return vb_run_lock(run_id, run);
	if (vb_run_try_lock(run_id, run))
		return true;
	/* Not there at all, or held: only a held parent is worth trying again. */
	if (exists_plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		exists_plan = vb_prepare("SELECT FROM vectorbea.runs WHERE id = $1", 1, types);
	}
	if (SPI_execute_plan(exists_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look for run %s", vb_uuid_text(run_id));
	if (SPI_processed == 0)
		return false;
	for (int waited = 10; waited <= wait_ms; waited += 10)
	{
		pg_usleep(10 * 1000L);
		CHECK_FOR_INTERRUPTS();
		if (vb_run_try_lock(run_id, run))
			return true;
	}
	ereport(ERROR,
			(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			 errmsg("vectorbea: parent run %s is locked by another transaction",
					vb_uuid_text(run_id)),
			 errdetail("A child run's end settles its parent's run node in the same transaction."),
			 wait_ms == 0 ?
			 errhint("The scheduler comes back to the item once the parent is free.") :
			 errhint("Run the statement again once the transaction holding the parent has ended.")));
	return false;				/* keep the compiler quiet */
}

/*
 * Waits up to timeout_ms for the lock of a run that a claim may take from
 * (running or compensating, in no workspace of not_workspaces) and takes
 * it; false when the run is not such a run.  A wait that runs out (or the
 * session's lock_timeout, when that is shorter) raises lock_not_available:
 * the caller runs this in a subtransaction, and only while its transaction
 * holds no row lock, so that the wait cannot close a circle of waits
 * (events.h).
 */
bool
vb_run_wait_lock(pg_uuid_t *run_id, ArrayType *not_workspaces, int timeout_ms)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	char		timeout[32];
	int			nestlevel;
	volatile int rc = 0;

	if (plan == NULL)
	{
		Oid			types[2] = {UUIDOID, TEXTARRAYOID};

		plan = vb_prepare("SELECT FROM vectorbea.runs r"
						  " WHERE r.id = $1 AND r.status || '' IN ('running', 'compensating')"
						  "   AND r.workspace <> ALL ($2)"
						  " FOR NO KEY UPDATE", lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(run_id);
	args[1] = PointerGetDatum(not_workspaces ? not_workspaces : construct_empty_array(TEXTOID));
	/* the session's own lock_timeout, when shorter, still holds */
	if (LockTimeout > 0 && LockTimeout < timeout_ms)
		timeout_ms = LockTimeout;
	snprintf(timeout, sizeof(timeout), "%d", timeout_ms);
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("lock_timeout", timeout, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	PG_TRY();
	{
		rc = SPI_execute_plan(plan, args, NULL, false, 1);
	}
	PG_FINALLY();
	{
		AtEOXact_GUC(true, nestlevel);
	}
	PG_END_TRY();
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: run lock failed");
	return SPI_processed == 1;
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

	vb_early_release_arm();
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

/* Orders runs as PostgreSQL orders uuids, for vb_run_find. */
static int
run_cmp(const void *a, const void *b)
{
	return memcmp(&((const VbRun *) a)->id, &((const VbRun *) b)->id, UUID_LEN);
}

/*
 * Locks the runs of the tasks in task_ids (a bigint[]), with the parent of
 * each child run the batch may end (and so on up), newest first, and
 * returns them sorted by id (*runs, palloc'd, for vb_run_find).  One order
 * for every multi-run lock, so two batches never wait for each other in a
 * circle.  The parents are taken in that order too: a child that ends
 * tells its parent, and a parent locked then, after every run of the
 * batch, could be held by a batch waiting for one of them (two batches of
 * a child and an older run each deadlocked so).  Only a child with no more
 * open nodes than the batch has items in it may end, so the parents of
 * the others are left alone (batches of sibling children would otherwise
 * queue on their parent); that count is read before the locks, and a
 * child that ends all the same (other writers brought it down meanwhile,
 * or an item's usage crossed its budget) only tries its parent
 * (vb_run_lock_parent), since the batch holds other runs.  A child run is created after
 * its parent, so the batch takes a child before its parent, as a child's
 * end does.  Tasks that do not exist lock nothing: the caller reports
 * them.
 */
int
vb_run_lock_for_tasks(Datum task_ids, VbRun **runs)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan_010 = NULL;
	Datum		args[1] = {task_ids};
	VbRun	   *out;

	if (plan == NULL)
	{
		Oid			types[1] = {INT8ARRAYOID};

		plan_010 = vb_prepare_opts("SELECT " RUN_COLUMNS " FROM vectorbea.runs"
								   " WHERE id = ANY (ARRAY(SELECT run_id FROM vectorbea.nodes"
								   "                        WHERE id = ANY ($1)))"
								   " ORDER BY created_at DESC, id DESC FOR NO KEY UPDATE",
								   1, types, CURSOR_OPT_GENERIC_PLAN);
		plan = vb_prepare_opts("WITH RECURSIVE batch AS ("
							   "  SELECT run_id, pg_catalog.count(*) AS n FROM vectorbea.nodes"
							   "   WHERE id = ANY ($1) GROUP BY run_id"
							   "), ending(id) AS ("
							   /*
							    * a child the batch may end: no more open nodes than its
							    * items.  Read run by run from the batch (the LIMIT keeps
							    * the subquery a parameterised lookup): joined as a plain
							    * join, the generic plan took "parent_run IS NOT NULL" for
							    * one row and read every run of a table of a few thousand
							    * runs at each call, 170 of complete_tasks' 420 us.
							    */
							   "  SELECT k.parent_run FROM batch b CROSS JOIN LATERAL ("
							   "    SELECT c.parent_run FROM vectorbea.runs c"
							   "     WHERE c.id = b.run_id AND c.parent_run IS NOT NULL AND c.open_nodes <= b.n"
							   "     LIMIT 1) k"
							   "  UNION"
							   /* a parent that may end with it: its run node and the batch's items */
							   "  SELECT p.parent_run FROM ending e JOIN vectorbea.runs p ON p.id = e.id"
							   "   WHERE p.parent_run IS NOT NULL"
							   "     AND p.open_nodes <= 1 + coalesce((SELECT b.n FROM batch b"
							   "                                        WHERE b.run_id = p.id), 0)"
							   ")"
							   " SELECT " RUN_COLUMNS " FROM vectorbea.runs"
							   " WHERE id = ANY (ARRAY(SELECT run_id FROM batch UNION SELECT id FROM ending))"
							   " ORDER BY created_at DESC, id DESC FOR NO KEY UPDATE",
							   1, types, CURSOR_OPT_GENERIC_PLAN);
	}
	/* a 0.1.0 schema has no child runs */
	if (SPI_execute_plan(vb_waits_available() ? plan : plan_010, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: run lock failed");
	out = palloc(sizeof(VbRun) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
		fill_run(&out[i], SPI_tuptable->vals[i], SPI_tuptable->tupdesc);
	qsort(out, SPI_processed, sizeof(VbRun), run_cmp);
	*runs = out;
	return (int) SPI_processed;
}

/* The run with id among runs (as vb_run_lock_for_tasks returns them), or NULL. */
VbRun *
vb_run_find(VbRun *runs, int nruns, pg_uuid_t *id)
{
	VbRun		key;

	memcpy(&key.id, id, sizeof(pg_uuid_t));
	return bsearch(&key, runs, nruns, sizeof(VbRun), run_cmp);
}

/* Registers runs (sorted by id) as held by the batch now running; NULL ends it. */
void
vb_run_hold_batch(VbRun *runs, int nruns)
{
	held_runs = runs;
	held_count = runs ? nruns : 0;
}

/* The batch's copy of a run it holds, or NULL. */
VbRun *
vb_run_held(pg_uuid_t *id)
{
	return held_runs ? vb_run_find(held_runs, held_count, id) : NULL;
}

/* vb_run_save for several locked runs, in one statement. */
void
vb_run_save_many(VbRun *runs, int nruns, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *ids;
	Datum	   *seqs;
	Datum	   *open;
	Datum	   *count;
	Datum		args[4];

	if (nruns == 1)
	{
		vb_run_save(&runs[0], at);
		return;
	}
	if (nruns == 0)
		return;
	if (plan == NULL)
	{
		Oid			types[4] = {UUIDARRAYOID, INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID};

		/*
		 * "r.id = ANY ($1)" repeats the join for the planner: without it
		 * the generic plan, counting a hundred rows from the unnest, read
		 * the runs with a sequential scan and a hash join, every run of a
		 * table of a few thousand at each call (test/t/042_hot_plans.pl).
		 */
		plan = vb_prepare_opts("UPDATE vectorbea.runs r"
							   "   SET last_seq = t.seq, open_nodes = t.open, node_count = t.count"
							   "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							   "                  pg_catalog.unnest($3), pg_catalog.unnest($4))"
							   "       AS t(id, seq, open, count)"
							   " WHERE r.id = t.id AND r.id = ANY ($1)",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	ids = palloc(sizeof(Datum) * nruns);
	seqs = palloc(sizeof(Datum) * nruns);
	open = palloc(sizeof(Datum) * nruns);
	count = palloc(sizeof(Datum) * nruns);
	for (int i = 0; i < nruns; i++)
	{
		ids[i] = UUIDPGetDatum(&runs[i].id);
		seqs[i] = Int64GetDatum(runs[i].last_seq);
		open[i] = Int32GetDatum(runs[i].open_nodes);
		count[i] = Int32GetDatum(runs[i].node_count);
	}
	args[0] = PointerGetDatum(construct_array(ids, nruns, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[1] = PointerGetDatum(construct_array(seqs, nruns, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = PointerGetDatum(construct_array(open, nruns, INT4OID, 4, true, TYPALIGN_INT));
	args[3] = PointerGetDatum(construct_array(count, nruns, INT4OID, 4, true, TYPALIGN_INT));
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE ||
		SPI_processed != (uint64) nruns)
		elog(ERROR, "vectorbea: could not save the counters of %d runs", nruns);
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


/* ---- events of several runs, numbered in one statement ---- */

void
vb_event_batch_init(VbEventBatch *batch, int capacity)
{
	capacity = Max(capacity, 1);
	batch->count = 0;
	batch->capacity = capacity;
	batch->run_ids = palloc(sizeof(Datum) * capacity);
	batch->types = palloc(sizeof(Datum) * capacity);
	batch->nodes = palloc(sizeof(Datum) * capacity);
	batch->attempts = palloc(sizeof(Datum) * capacity);
	batch->data = palloc(sizeof(Datum) * capacity);
}

void
vb_event_batch_add(VbEventBatch *batch, pg_uuid_t *run_id, const char *type,
				   const char *node, int attempt, const char *data_json)
{
	pg_uuid_t  *copy = palloc(sizeof(pg_uuid_t));

	if (batch->count == batch->capacity)
		elog(ERROR, "vectorbea: event batch is full");
	memcpy(copy, run_id, sizeof(pg_uuid_t));
	batch->run_ids[batch->count] = UUIDPGetDatum(copy);
	batch->types[batch->count] = CStringGetTextDatum(type);
	batch->nodes[batch->count] = CStringGetTextDatum(node);
	batch->attempts[batch->count] = Int32GetDatum(attempt);
	batch->data[batch->count] = CStringGetTextDatum(data_json);
	batch->count++;
}

/*
 * One event of a run not held in a VbRun, in one short statement: a claim
 * of one task (the commonest) pays for no arrays and no window.
 */
static void
write_one(VbEventBatch *batch, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[6];

	if (plan == NULL)
	{
		Oid			types[6] = {UUIDOID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TIMESTAMPTZOID};

		plan = vb_prepare_opts("WITH seq AS ("
							   "  UPDATE vectorbea.runs SET last_seq = last_seq + 1 WHERE id = $1"
							   "  RETURNING last_seq"
							   ")"
							   " INSERT INTO vectorbea.events (run_id, seq, type, node, attempt, data, at)"
							   " SELECT $1, seq.last_seq, $2, $3, $4, $5::jsonb, $6 FROM seq",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = batch->run_ids[0];
	args[1] = batch->types[0];
	args[2] = batch->nodes[0];
	args[3] = batch->attempts[0];
	args[4] = batch->data[0];
	args[5] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not append an event");
}

/* The batch's types, nodes, attempts and data as four arrays, into out. */
static void
batch_arrays(VbEventBatch *batch, Datum *out)
{
	out[0] = PointerGetDatum(construct_array(batch->types, batch->count, TEXTOID,
											 -1, false, TYPALIGN_INT));
	out[1] = PointerGetDatum(construct_array(batch->nodes, batch->count, TEXTOID,
											 -1, false, TYPALIGN_INT));
	out[2] = PointerGetDatum(construct_array(batch->attempts, batch->count, INT4OID,
											 4, true, TYPALIGN_INT));
	out[3] = PointerGetDatum(construct_array(batch->data, batch->count, TEXTOID,
											 -1, false, TYPALIGN_INT));
}

/*
 * The events of a batch that are all of one run (a claim of several tasks
 * usually takes them from one run): numbered from that run's counter in
 * one statement without the window, grouping and join that several runs
 * need, which cost a claim of ten about as much as the inserts themselves.
 */
static void
write_one_run(VbEventBatch *batch, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[7];

	if (plan == NULL)
	{
		Oid			types[7] = {UUIDOID, INT4OID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
		TEXTARRAYOID, TIMESTAMPTZOID};

		plan = vb_prepare_opts("WITH seq AS ("
							   "  UPDATE vectorbea.runs SET last_seq = last_seq + $2 WHERE id = $1"
							   "  RETURNING last_seq - $2 AS base"
							   ")"
							   " INSERT INTO vectorbea.events (run_id, seq, type, node, attempt, data, at)"
							   " SELECT $1, seq.base + e.k, e.type, e.node, e.attempt, e.data::jsonb, $7"
							   "   FROM seq, ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4),"
							   "                        pg_catalog.unnest($5), pg_catalog.unnest($6))"
							   "        WITH ORDINALITY AS e(type, node, attempt, data, k)",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = batch->run_ids[0];
	args[1] = Int32GetDatum(batch->count);
	batch_arrays(batch, &args[2]);
	args[6] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT ||
		SPI_processed != (uint64) batch->count)
		elog(ERROR, "vectorbea: could not append %d events", batch->count);
}

/* Whether every event of the batch is of the same run. */
static bool
batch_of_one_run(VbEventBatch *batch)
{
	for (int i = 1; i < batch->count; i++)
		if (memcmp(DatumGetUUIDP(batch->run_ids[i]), DatumGetUUIDP(batch->run_ids[0]),
				   sizeof(pg_uuid_t)) != 0)
			return false;
	return true;
}

/*
 * Appends the batch's events, numbered per run in the order they were
 * added, after each run's last event.  Every run must be locked by this
 * transaction, and none held in a VbRun, whose counter would go stale.
 */
void
vb_event_batch_write(VbEventBatch *batch, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[6];

	if (batch->count == 0)
		return;
	vb_early_release_arm();
	if (batch->count == 1)
	{
		write_one(batch, at);
		return;
	}
	if (batch_of_one_run(batch))
	{
		write_one_run(batch, at);
		return;
	}
	if (plan == NULL)
	{
		Oid			types[6] = {UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID,
		TEXTARRAYOID, TIMESTAMPTZOID};

		/* "r.id = ANY ($1)": as in vb_run_save_many, so runs are read by key */
		plan = vb_prepare_opts("WITH ev AS ("
							   "  SELECT e.run_id, e.type, e.node, e.attempt, e.data, e.ord,"
							   "         pg_catalog.row_number() OVER (PARTITION BY e.run_id ORDER BY e.ord) AS k"
							   "    FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							   "                    pg_catalog.unnest($3), pg_catalog.unnest($4),"
							   "                    pg_catalog.unnest($5))"
							   "         WITH ORDINALITY AS e(run_id, type, node, attempt, data, ord)"
							   "), per_run AS ("
							   "  SELECT ev.run_id, pg_catalog.max(ev.k) AS n FROM ev GROUP BY ev.run_id"
							   "), seq AS ("
							   "  UPDATE vectorbea.runs r SET last_seq = r.last_seq + p.n"
							   "    FROM per_run p WHERE r.id = p.run_id AND r.id = ANY ($1)"
							   "  RETURNING r.id, r.last_seq - p.n AS base"
							   ")"
							   " INSERT INTO vectorbea.events (run_id, seq, type, node, attempt, data, at)"
							   " SELECT ev.run_id, s.base + ev.k, ev.type, ev.node, ev.attempt,"
							   "        ev.data::jsonb, $6"
							   "   FROM ev JOIN seq s ON s.id = ev.run_id",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = PointerGetDatum(construct_array(batch->run_ids, batch->count, UUIDOID,
											  UUID_LEN, false, TYPALIGN_CHAR));
	batch_arrays(batch, &args[1]);
	args[5] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT ||
		SPI_processed != (uint64) batch->count)
		elog(ERROR, "vectorbea: could not append %d events", batch->count);
}

/*
 * Appends the batch's events to runs that this transaction has locked and
 * holds in runs (vb_run_lock_for_tasks): each is numbered from its run's
 * counter in memory, in the order added, and all go in one statement.
 * The caller saves the counters (vb_run_save_many).
 */
void
vb_event_batch_write_held(VbEventBatch *batch, VbRun *runs, int nruns, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *seqs;
	Datum		args[7];

	if (batch->count == 0)
		return;
	vb_early_release_arm();
	if (plan == NULL)
	{
		Oid			types[7] = {UUIDARRAYOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		INT4ARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID};

		plan = vb_prepare_opts("INSERT INTO vectorbea.events (run_id, seq, type, node, attempt, data, at)"
							   " SELECT e.run_id, e.seq, e.type, e.node, e.attempt, e.data::jsonb, $7"
							   "   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							   "                   pg_catalog.unnest($3), pg_catalog.unnest($4),"
							   "                   pg_catalog.unnest($5), pg_catalog.unnest($6))"
							   "        AS e(run_id, seq, type, node, attempt, data)",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	seqs = palloc(sizeof(Datum) * batch->count);
	for (int i = 0; i < batch->count; i++)
	{
		VbRun	   *run = vb_run_find(runs, nruns, DatumGetUUIDP(batch->run_ids[i]));

		if (run == NULL)
			elog(ERROR, "vectorbea: an event's run is not locked");
		seqs[i] = Int64GetDatum(++run->last_seq);
	}
	args[0] = PointerGetDatum(construct_array(batch->run_ids, batch->count, UUIDOID,
											  UUID_LEN, false, TYPALIGN_CHAR));
	args[1] = PointerGetDatum(construct_array(seqs, batch->count, INT8OID,
											  8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	batch_arrays(batch, &args[2]);
	args[6] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT ||
		SPI_processed != (uint64) batch->count)
		elog(ERROR, "vectorbea: could not append %d events", batch->count);
}

/*
 * The first event of runs created by this transaction (invisible to
 * others, so nothing to lock): one event of type per run, data[i] for
 * runs[i], numbered from each run's counter, in one statement.
 */
void
vb_event_first_of_new_runs(VbRun *runs, int nruns, const char *type, char **data,
						   TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum	   *ids = palloc(sizeof(Datum) * Max(nruns, 1));
	Datum	   *seqs = palloc(sizeof(Datum) * Max(nruns, 1));
	Datum	   *texts = palloc(sizeof(Datum) * Max(nruns, 1));
	Datum		args[5];

	if (nruns == 0)
		return;
	vb_early_release_arm();
	if (plan == NULL)
	{
		Oid			types[5] = {UUIDARRAYOID, INT8ARRAYOID, TEXTOID, TEXTARRAYOID, TIMESTAMPTZOID};

		plan = vb_prepare_opts("INSERT INTO vectorbea.events (run_id, seq, type, data, at)"
							   " SELECT e.run_id, e.seq, $3, e.data::jsonb, $5"
							   "   FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
							   "                   pg_catalog.unnest($4)) AS e(run_id, seq, data)",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	for (int i = 0; i < nruns; i++)
	{
		ids[i] = UUIDPGetDatum(&runs[i].id);
		seqs[i] = Int64GetDatum(++runs[i].last_seq);
		texts[i] = CStringGetTextDatum(data[i]);
	}
	args[0] = PointerGetDatum(construct_array(ids, nruns, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR));
	args[1] = PointerGetDatum(construct_array(seqs, nruns, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = CStringGetTextDatum(type);
	args[3] = PointerGetDatum(construct_array(texts, nruns, TEXTOID, -1, false, TYPALIGN_INT));
	args[4] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_INSERT ||
		SPI_processed != (uint64) nruns)
		elog(ERROR, "vectorbea: could not append %d events", nruns);
}
