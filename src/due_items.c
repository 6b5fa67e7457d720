/*-------------------------------------------------------------------------
 *
 * due_items.c
 *	  Acting on due items (an attempt past its lease, a run past its
 *	  deadline, a gate past its expiry, a wait to start or end, an llm
 *	  call) one at a time.
 *
 * With isolate set (the scheduler), each item runs in a subtransaction, so
 * one item's error is logged, counted, recorded in its run's history as
 * SCHEDULER_ERROR, and postponed, while the others go on: one bad node
 * never stops the loop.  An item that met a run another transaction holds
 * (lock_not_available: the parent of a child run it ended, events.c) is
 * rolled back and put off for 100 ms, without a word in the history.  All
 * functions run inside SPI.
 *
 * IDENTIFICATION
 *	  src/due_items.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "clock.h"
#include "due_items.h"
#include "events.h"
#include "gate_writes.h"
#include "jsonb_util.h"
#include "subxact.h"

/* How long the scheduler leaves an item alone after failing on it. */
#define ERROR_RETRY_MS	(30 * 1000)

/* How long it leaves an item that met a run another transaction holds. */
#define BUSY_RETRY_MS	100

/* What record_error writes (message set) or defer_busy postpones, for postpone_now. */
typedef struct ErrorRecord
{
	pg_uuid_t  *run_id;
	VbDueItemKind kind;
	int64		item_id;
	const char *message;
	TimestampTz at;
} ErrorRecord;

/*
 * Moves the item's due time (the attempt's lease end, the run's deadline,
 * the gate's expiry, the wait's time) to retry_at, and with a message
 * records a SCHEDULER_ERROR in its run.
 */
static void
postpone_now(void *arg)
{
	static const char *const node_sql[] = {
		[VB_ITEM_ATTEMPT] = "SELECT node FROM vectorbea.nodes WHERE id = $1",
		[VB_ITEM_GATE] = "SELECT node FROM vectorbea.approvals WHERE id = $1",
		[VB_ITEM_WAIT] = "SELECT node FROM vectorbea.nodes WHERE id = $1",
	};
	static const char *const postpone_sql[] = {
		[VB_ITEM_ATTEMPT] = "UPDATE vectorbea.nodes SET lease_expires_at = $2"
		" WHERE id = $1 AND status = 'running'",
		[VB_ITEM_RUN] = "UPDATE vectorbea.runs SET deadline = $2 WHERE id = $1",
		[VB_ITEM_GATE] = "UPDATE vectorbea.approvals SET expires_at = $2"
		" WHERE id = $1 AND status = 'pending'",
		/* a node held by its not_before stays held */
		[VB_ITEM_WAIT] = "UPDATE vectorbea.nodes"
		"   SET available_at = CASE WHEN status = 'ready' AND available_at <> 'infinity'"
		"                           THEN $2 ELSE available_at END,"
		"       attempt_deadline = CASE WHEN status = 'waiting' THEN $2 ELSE attempt_deadline END"
		" WHERE id = $1",
	};
	ErrorRecord *e = arg;
	TimestampTz retry_at = e->at + (int64) (e->message ? ERROR_RETRY_MS : BUSY_RETRY_MS) * 1000;
	VbRun		run;
	char	   *node = NULL;
	StringInfoData data;
	Datum		args[2] = {e->kind == VB_ITEM_RUN ? UUIDPGetDatum(e->run_id) : Int64GetDatum(e->item_id),
	TimestampTzGetDatum(retry_at)};
	Oid			types[2] = {e->kind == VB_ITEM_RUN ? UUIDOID : INT8OID, TIMESTAMPTZOID};

	if (!vb_run_lock(e->run_id, &run))
		return;
	if (e->message && e->kind != VB_ITEM_RUN &&
		SPI_execute_with_args(node_sql[e->kind], 1, types, args, NULL, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	/* A gate's postponement is one of the engine's own writes of approvals. */
	if ((e->kind == VB_ITEM_GATE ?
		 vb_gate_update_plan(SPI_prepare(postpone_sql[e->kind], 2, types), args, NULL) :
		 SPI_execute_with_args(postpone_sql[e->kind], 2, types, args, NULL, false, 0)) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not postpone a failed item");
	if (e->message == NULL)
		return;
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
record_error(pg_uuid_t *run_id, VbDueItemKind kind, int64 item_id,
			 const char *message, TimestampTz at)
{
	ErrorRecord e = {run_id, kind, item_id, message, at};
	ErrorData  *edata = vb_try_in_subxact(postpone_now, &e);

	if (edata)
		FreeErrorData(edata);	/* the item's own error is logged already */
}

/*
 * Puts off, by BUSY_RETRY_MS and without a word in the history, an item
 * that met a run another transaction holds (lock_not_available: the parent
 * of a child run it ended, events.c): the item was rolled back and comes
 * back once that transaction has had time to commit.  A failure here is
 * logged only.
 */
static void
defer_busy(pg_uuid_t *run_id, VbDueItemKind kind, int64 item_id, TimestampTz at)
{
	ErrorRecord e = {run_id, kind, item_id, NULL, at};
	ErrorData  *edata = vb_try_in_subxact(postpone_now, &e);

	if (edata)
	{
		ereport(WARNING,
				(errmsg("vectorbea scheduler: could not put off a busy item: %s", edata->message)));
		FreeErrorData(edata);
	}
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
 * Runs fn(arg, i) for item i in a subtransaction; true when it was done.
 * An item that met a run another transaction holds (lock_not_available)
 * is put off (defer_busy) with *error NULL; any other error is returned
 * in *error for the caller to report or raise.
 */
static bool
run_unless_busy(void (*fn) (void *, int), void *arg, int i, pg_uuid_t *run_id,
				VbDueItemKind kind, int64 item_id, TimestampTz at, ErrorData **error)
{
	SweepItem	item = {fn, arg, i};
	ErrorData  *edata = vb_try_in_subxact(run_one, &item);

	*error = NULL;
	if (edata == NULL)
		return true;
	if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
	{
		*error = edata;
		return false;
	}
	ereport(DEBUG1,
			(errmsg("vectorbea: %s", edata->message),
			 errdetail_internal("The item is put off by %d ms.", BUSY_RETRY_MS)));
	FreeErrorData(edata);
	defer_busy(run_id, kind, item_id, at);
	return false;
}

/*
 * Runs fn(arg, i) for item i in a subtransaction when isolate is set;
 * returns false (after reporting) when it failed.  A failure is logged,
 * counted, and recorded in the item's run by record_error.
 */
bool
vb_due_item(bool isolate, void (*fn) (void *, int), void *arg, int i,
		 VbSweepCounters *counters, pg_uuid_t *run_id, VbDueItemKind kind,
		 int64 item_id, TimestampTz at)
{
	ErrorData  *edata;

	if (!isolate)
	{
		fn(arg, i);
		return true;
	}
	if (run_unless_busy(fn, arg, i, run_id, kind, item_id, at, &edata))
		return true;
	if (edata == NULL)
		return false;			/* put off */
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
 * Runs fn(arg, i) for item i in a subtransaction, for a caller that must
 * not wait (a claim): an item that meets a run another transaction holds
 * is rolled back and put off as the scheduler puts it off (so that the
 * next claim does not take it first again); any other error is the
 * caller's.  Returns whether the item was done.
 */
bool
vb_due_item_unless_busy(void (*fn) (void *, int), void *arg, int i, pg_uuid_t *run_id,
						VbDueItemKind kind, int64 item_id, TimestampTz at)
{
	ErrorData  *edata;

	if (run_unless_busy(fn, arg, i, run_id, kind, item_id, at, &edata))
		return true;
	if (edata != NULL)
		ReThrowError(edata);
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
