/*-------------------------------------------------------------------------
 *
 * lease.c
 *	  Fencing: the check every call on a task makes first, and what a
 *	  worker is told when its lease no longer holds the task.
 *
 * Every call that acts on a task (heartbeat, complete_task, fail_task,
 * save_checkpoint, await_approval) locks the task's run first
 * (vb_lock_run_of_task), as every writer of a run does, and then matches
 * the lease token: in the WHERE clause of its own UPDATE, or with
 * vb_require_lease.  When that matches nothing the result is refused with
 * SQLSTATE VB001 and an explanation of what became of the task, so the
 * worker can drop its work.  The refusal is an error, so a worker that
 * wrote its side effects in the same transaction has them rolled back
 * too; the server log records it.
 *
 * IDENTIFICATION
 *	  src/lease.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "vectorbea.h"
#include "jsonb_util.h"
#include "lease.h"
#include "spi_util.h"
#include "tenants.h"
#include "text_escape.h"

pg_attribute_noreturn()
static void
no_such_task(int64 task_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("task %ld does not exist", (long) task_id)));
}

/*
 * Explains why lease does not hold task_id and throws.  Called inside SPI
 * after the guarded UPDATE matched no row.
 */
void
vb_refuse_lease(int64 task_id, pg_uuid_t *lease, const char *action)
{
	Datum		args[1] = {Int64GetDatum(task_id)};
	Oid			types[1] = {INT8OID};
	HeapTuple	tup;
	TupleDesc	desc;
	char	   *status;
	char	   *node;
	char	   *attempt;
	char	   *worker;
	char	   *run_status;
	char	   *detail;

	if (SPI_execute_with_args("SELECT n.status, n.node, NULL, n.attempt, n.worker, r.status, r.workspace"
							  "  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
							  " WHERE n.id = $1",
							  1, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: task lookup failed");
	if (SPI_processed == 0)
		no_such_task(task_id);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	status = SPI_getvalue(tup, desc, 1);
	node = SPI_getvalue(tup, desc, 2);
	attempt = SPI_getvalue(tup, desc, 4);
	worker = SPI_getvalue(tup, desc, 5);
	run_status = SPI_getvalue(tup, desc, 6);
	/* Another tenant's task is described to no one outside it. */
	if (!vb_workspace_visible(SPI_getvalue(tup, desc, 7)))
		no_such_task(task_id);

	if (strcmp(status, "running") == 0)
	{
		StringInfoData shown;

		/* a worker's name is any text: on one line, and cut when long */
		initStringInfo(&shown);
		vb_append_escaped_line(&shown, worker ? worker : "?");
		detail = psprintf("The task is now attempt %s, held by worker \"%s\".",
						  attempt, vb_short_text(shown.data));
	}
	else if (strcmp(status, "cancelled") == 0 || strcmp(status, "skipped") == 0)
		detail = psprintf("The task was %s because its run is %s.", status, run_status);
	else if ((strcmp(status, "ready") == 0 || strcmp(status, "pending") == 0) && atoi(attempt) == 0)
		detail = pstrdup("The task has not started yet; no lease has been handed out for it.");
	else if (strcmp(status, "ready") == 0 || strcmp(status, "pending") == 0)
		detail = psprintf("The attempt ended (failed or its lease expired); the task waits for attempt %d.",
						  atoi(attempt) + 1);
	else if (strcmp(status, "waiting") == 0)
		detail = psprintf("The task is waiting (attempt %s).", attempt);
	else
		detail = psprintf("The task has %s (attempt %s).", status, attempt);	/* succeeded, failed */

	ereport(ERROR,
			(errcode(ERRCODE_VB_LEASE_LOST),
			 errmsg("cannot %s task %ld: the lease presented does not hold it",
					action, (long) task_id),
			 errdetail("Task %ld is node \"%s\". %s", (long) task_id, vb_short_text(node), detail),
			 errhint("Discard this result: the task belongs to another attempt or is over.")));
}

/*
 * Refuses, as tasks that do not exist (42704), the tasks among task_ids (a
 * bigint[]) of workspaces the caller may not act on, before their runs are
 * locked: a call of another tenant must not queue behind that tenant's
 * transactions, nor hold its runs while it waits for its own (1,000 task
 * ids in one complete_tasks), nor learn from a lock timeout which of its
 * tasks are being worked on.  Nothing to do without a mapping of
 * workspaces to roles, or for a role that bypasses row-level security.
 * Read with a fresh snapshot: a run's workspace never changes.
 */
static void
refuse_tasks_of(Datum task_ids, ArrayType *excluded)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2];
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[2] = {INT8ARRAYOID, TEXTARRAYOID};

		plan = vb_prepare_opts("SELECT n.id FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
							   " WHERE n.id = ANY ($1) AND r.workspace = ANY ($2)"
							   " ORDER BY pg_catalog.array_position($1, n.id) LIMIT 1",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = task_ids;
	args[1] = PointerGetDatum(excluded);
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the workspaces of tasks");
	if (SPI_processed == 1)
		no_such_task(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
												 &isnull)));
}

/* refuse_tasks_of the workspaces the caller may not act on. */
void
vb_refuse_other_tenants_tasks(Datum task_ids)
{
	ArrayType  *excluded = vb_tenant_excluded_workspaces();

	if (excluded != NULL)
		refuse_tasks_of(task_ids, excluded);
}

/*
 * Locks the run that task_id belongs to; an error when there is no such
 * task, or when it is another tenant's (vb_refuse_other_tenants_tasks).
 */
void
vb_lock_run_of_task(int64 task_id, VbRun *run)
{
	ArrayType  *excluded = vb_tenant_excluded_workspaces();

	if (excluded != NULL)
	{
		Datum		one = Int64GetDatum(task_id);

		refuse_tasks_of(PointerGetDatum(construct_array(&one, 1, INT8OID, 8, FLOAT8PASSBYVAL,
														TYPALIGN_DOUBLE)), excluded);
	}
	if (!vb_run_lock_for_task(task_id, run))
		no_such_task(task_id);
}

/*
 * Locks the task when lease holds its running attempt, and returns its
 * node and attempt; otherwise refuses (VB001) with what became of it.  The
 * run is locked already (vb_lock_run_of_task).
 */
void
vb_require_lease(int64 task_id, pg_uuid_t *lease, const char *action,
				 char **node, int *attempt)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2] = {Int64GetDatum(task_id), UUIDPGetDatum(lease)};
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[2] = {INT8OID, UUIDOID};

		plan = vb_prepare("SELECT node, attempt FROM vectorbea.nodes"
						  " WHERE id = $1 AND lease = $2 AND status = 'running' FOR UPDATE",
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: task lock failed");
	if (SPI_processed == 0)
		vb_refuse_lease(task_id, lease, action);
	*node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	*attempt = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
}
