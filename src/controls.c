/*-------------------------------------------------------------------------
 *
 * controls.c
 *	  Kill switches: pause_run / resume_run, pause_workspace /
 *	  resume_workspace, disable_model / enable_model.
 *
 * A paused run keeps its status paused (runs.paused says who, why and the
 * status it resumes to): claims take only running and compensating runs,
 * so nothing of it is claimed, and the scheduler neither calls its llm
 * nodes nor starts its waits; its llm calls in flight are aborted (the
 * attempts do not count).  What a worker has claimed may still be
 * completed, a gate decided, a signal delivered.  A paused workspace
 * pauses its runs one by one (each gets RUN_PAUSED) and makes runs started
 * in it start paused; resuming it resumes only the runs its pause paused.
 * A disabled model (or provider: model '*') has its calls in flight
 * aborted and its ready nodes held until it is enabled; the scheduler
 * checks the switch again before each call.  A compensating run is not
 * paused: undoing what it did runs to its end (cancel_run abandons it).
 * Everything takes effect when the caller commits; vectorbea.controls
 * lists what holds.  A workspace's switch holds the workspace lock alone
 * (workspace_lock.c), and reads and lists with the latest snapshot, so a
 * run set going at the same moment is either listed or starts paused.
 *
 * Runs are locked one at a time newest first (by start time, then id),
 * the one order of every multi-run lock (events.c): a child is locked
 * before its parent, the order in which a child that ends locks them
 * (state.c).  Ids alone (uuid v7) are ordered by the millisecond only.  A child run is a run of
 * its own: it is paused with its workspace (children inherit the
 * parent's), not with its parent.
 *
 * IDENTIFICATION
 *	  src/controls.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "controls.h"
#include "events.h"
#include "jsonb_util.h"
#include "spi_util.h"
#include "state.h"
#include "tenants.h"
#include "workspace_lock.h"

static char *
caller(void)
{
	return vb_caller_name();
}

static char *
checked_reason(FunctionCallInfo fcinfo, int argno)
{
	char	   *reason;

	if (PG_ARGISNULL(argno))
		return NULL;
	reason = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	vb_check_text_size(reason, "the reason of a kill switch", VB_MAX_REASON_BYTES);
	return reason;
}

static char *
checked_workspace(FunctionCallInfo fcinfo)
{
	char	   *workspace;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workspace must not be null")));
	workspace = text_to_cstring(PG_GETARG_TEXT_PP(0));
	vb_check_workspace_name(workspace, false);
	return workspace;
}

/* A run of this call, locked; errors name what is wrong with it. */
static void
lock_unfinished_run(pg_uuid_t *run_id, VbRun *run, const char *what)
{
	if (!vb_run_lock(run_id, run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist", vb_uuid_text(run_id))));
	if (!vb_run_active(run->status))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run %s is %s: only an unfinished run can be %s",
						vb_uuid_text(run_id), vb_run_status_name(run->status), what)));
}

/*
 * Whether workspace is paused; its reason in *reason, and who paused it in
 * *by when by is not NULL.  The caller holds the workspace lock (shared
 * or alone, workspace_lock.c), so no switch of it is under way, and reads
 * the latest committed one: in REPEATABLE READ a snapshot taken before a
 * pause committed would let the run start running after the pause listed
 * the runs.
 */
bool
vb_workspace_paused(const char *workspace, char **reason, char **by)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {CStringGetTextDatum(workspace)};

	if (!vb_waits_available())
		return false;			/* a 0.1.0 schema has no switches */
	if (plan == NULL)
	{
		Oid			types[1] = {TEXTOID};

		plan = vb_prepare("SELECT reason, paused_by::text FROM vectorbea.paused_workspaces WHERE workspace = $1",
						  1, types);
	}
	if (SPI_execute_snapshot(plan, args, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 false, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look up workspace \"%s\"", workspace);
	if (SPI_processed == 0)
		return false;
	*reason = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (by)
		*by = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	return true;
}

/*
 * A run being set going (started, forked, requeued) in a paused workspace
 * is paused by it at once, in the same transaction, with the workspace's
 * reason and by the role setting it going.  The caller holds the
 * workspace lock shared.  Returns whether it paused the run.
 */
bool
vb_pause_if_workspace_paused(VbRun *run, const char *workspace, TimestampTz at)
{
	char	   *reason = NULL;

	return vb_workspace_paused(workspace, &reason, NULL) &&
		vb_state_pause_run(run, "workspace", reason, caller(), at);
}

/* Whether calls to provider/model are disabled right now. */
bool
vb_model_disabled(const char *provider, const char *model)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2] = {CStringGetTextDatum(provider), CStringGetTextDatum(model)};

	if (!vb_waits_available())
		return false;
	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, TEXTOID};

		plan = vb_prepare("SELECT FROM vectorbea.disabled_models"
						  " WHERE provider = $1 AND model IN ('*', $2)", lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look up disabled models");
	return SPI_processed > 0;
}

/* pause_run(run uuid, reason text) -> boolean */
static Datum
pause_run_as_owner(PG_FUNCTION_ARGS)
{
	char	   *reason = checked_reason(fcinfo, 1);
	TimestampTz at = vb_now();
	VbRun		run;
	bool		paused;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run must not be null")));
	SPI_connect();
	vb_require_run_workspace(PG_GETARG_UUID_P(0), "pause runs of");
	lock_unfinished_run(PG_GETARG_UUID_P(0), &run, "paused");
	if (run.status == VB_RUN_COMPENSATING)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run %s is compensating: its compensation is not paused",
						vb_uuid_text(&run.id)),
				 errdetail("Undoing what the run did is let run to its end."),
				 errhint("Cancel the run to abandon its compensation.")));
	paused = vb_state_pause_run(&run, "run", reason, caller(), at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_BOOL(paused);
}

PG_FUNCTION_INFO_V1(vectorbea_pause_run);
Datum
vectorbea_pause_run(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, pause_run_as_owner);
}

/* resume_run(run uuid) -> boolean */
static Datum
resume_run_as_owner(PG_FUNCTION_ARGS)
{
	TimestampTz at = vb_now();
	VbRun		run;
	bool		resumed;
	char	   *why;
	char	   *workspace;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run must not be null")));
	SPI_connect();
	vb_require_run_workspace(PG_GETARG_UUID_P(0), "resume runs of");
	workspace = vb_workspace_share_of_run(PG_GETARG_UUID_P(0));
	lock_unfinished_run(PG_GETARG_UUID_P(0), &run, "resumed");
	if (run.status == VB_RUN_PAUSED && vb_workspace_paused(workspace, &why, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run %s cannot be resumed: its workspace \"%s\" is paused",
						vb_uuid_text(&run.id), vb_short_text(workspace)),
				 why ? errdetail("The workspace was paused: %s", vb_short_text(why)) : 0,
				 errhint("Resume the workspace with vectorbea.resume_workspace().")));
	resumed = vb_state_resume_run(&run, caller(), at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_BOOL(resumed);
}

PG_FUNCTION_INFO_V1(vectorbea_resume_run);
Datum
vectorbea_resume_run(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, resume_run_as_owner);
}

/*
 * The running runs of workspace (or the ones its pause paused, with
 * paused_by_workspace), newest first, as an array of ids.  The caller
 * holds the workspace lock alone, so every run set going before it is
 * committed, and is read with the latest snapshot: in REPEATABLE READ the
 * transaction's own would miss the runs started since it was taken
 * (lock_listed_run then refuses them).
 */
static pg_uuid_t *
runs_of_workspace(const char *workspace, bool paused_by_workspace, uint64 *n)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[2] = {CStringGetTextDatum(workspace), BoolGetDatum(paused_by_workspace)};
	pg_uuid_t  *ids;

	if (plan == NULL)
	{
		Oid			types[2] = {TEXTOID, BOOLOID};

		plan = vb_prepare("SELECT id FROM vectorbea.runs"
						  " WHERE workspace = $1"
						  "   AND CASE WHEN $2 THEN status = 'paused' AND paused->>'scope' = 'workspace'"
						  "            ELSE status = 'running' END"
						  " ORDER BY created_at DESC, id DESC", lengthof(types), types);
	}
	if (SPI_execute_snapshot(plan, args, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 false, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not list the runs of workspace \"%s\"", workspace);
	*n = SPI_processed;
	ids = palloc(sizeof(pg_uuid_t) * Max(*n, 1));
	for (uint64 i = 0; i < *n; i++)
	{
		bool		isnull;

		memcpy(&ids[i], DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)),
			   sizeof(pg_uuid_t));
	}
	return ids;
}

/*
 * Locks a run runs_of_workspace listed; false when it went meanwhile
 * (purged).  A run the transaction's snapshot cannot see (REPEATABLE READ,
 * started after it was taken) cannot be locked, nor left out: the switch
 * would miss it.
 */
static bool
lock_listed_run(pg_uuid_t *run_id, VbRun *run, const char *workspace)
{
	if (vb_run_lock(run_id, run))
		return true;
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a run started in workspace \"%s\"",
						vb_short_text(workspace)),
				 errdetail("Run %s was started after this transaction's snapshot was taken.",
						   vb_uuid_text(run_id)),
				 errhint("Retry the transaction, or throw the switch in a transaction of its own.")));
	return false;
}

/* pause_workspace(workspace text, reason text) -> integer */
static Datum
pause_workspace_as_owner(PG_FUNCTION_ARGS)
{
	char	   *workspace = checked_workspace(fcinfo);
	char	   *reason = checked_reason(fcinfo, 1);
	TimestampTz at = vb_now();
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			types[4] = {TEXTOID, TEXTOID, NAMEOID, TIMESTAMPTZOID};
	pg_uuid_t  *ids;
	uint64		n;
	int			paused = 0;

	SPI_connect();
	/* It pauses the tenant's runs, as pause_run does: the same check. */
	vb_require_workspace(workspace, "pause");
	vb_workspace_lock(workspace);
	args[0] = CStringGetTextDatum(workspace);
	if (reason)
		args[1] = CStringGetTextDatum(reason);
	else
		nulls[1] = 'n';
	args[2] = DirectFunctionCall1(namein, CStringGetDatum(caller()));
	args[3] = TimestampTzGetDatum(at);
	if (SPI_execute_with_args("INSERT INTO vectorbea.paused_workspaces (workspace, reason, paused_by, paused_at)"
							  " VALUES ($1, $2, $3, $4) ON CONFLICT (workspace) DO NOTHING",
							  4, types, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "vectorbea: could not pause workspace \"%s\"", workspace);
	ids = runs_of_workspace(workspace, false, &n);
	for (uint64 i = 0; i < n; i++)
	{
		VbRun		run;

		if (lock_listed_run(&ids[i], &run, workspace) && vb_run_active(run.status) &&
			vb_state_pause_run(&run, "workspace", reason, caller(), at))
		{
			vb_run_save(&run, at);
			paused++;
		}
	}
	SPI_finish();
	PG_RETURN_INT32(paused);
}

PG_FUNCTION_INFO_V1(vectorbea_pause_workspace);
Datum
vectorbea_pause_workspace(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, pause_workspace_as_owner);
}

/* resume_workspace(workspace text) -> integer */
static Datum
resume_workspace_as_owner(PG_FUNCTION_ARGS)
{
	char	   *workspace = checked_workspace(fcinfo);
	TimestampTz at = vb_now();
	Datum		args[1] = {CStringGetTextDatum(workspace)};
	Oid			types[1] = {TEXTOID};
	pg_uuid_t  *ids;
	uint64		n;
	int			resumed = 0;
	char	   *why;

	SPI_connect();
	vb_require_workspace(workspace, "resume");
	vb_workspace_lock(workspace);
	if (SPI_execute_with_args("DELETE FROM vectorbea.paused_workspaces WHERE workspace = $1",
							  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "vectorbea: could not resume workspace \"%s\"", workspace);
	/* A pause committed after this transaction's snapshot is still there: not resumed. */
	if (IsolationUsesXactSnapshot() && vb_workspace_paused(workspace, &why, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
				 errmsg("could not serialize access due to a pause of workspace \"%s\"",
						vb_short_text(workspace)),
				 errdetail("The workspace was paused after this transaction's snapshot was taken."),
				 errhint("Retry the transaction, or throw the switch in a transaction of its own.")));
	ids = runs_of_workspace(workspace, true, &n);
	for (uint64 i = 0; i < n; i++)
	{
		VbRun		run;

		if (lock_listed_run(&ids[i], &run, workspace) && vb_state_resume_run(&run, caller(), at))
		{
			vb_run_save(&run, at);
			resumed++;
		}
	}
	SPI_finish();
	PG_RETURN_INT32(resumed);
}

PG_FUNCTION_INFO_V1(vectorbea_resume_workspace);
Datum
vectorbea_resume_workspace(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, resume_workspace_as_owner);
}

static void
checked_model(FunctionCallInfo fcinfo, char **provider, char **model)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("provider and model must not be null"),
				 errhint("Use model '*' for every model of the provider.")));
	*provider = text_to_cstring(PG_GETARG_TEXT_PP(0));
	*model = text_to_cstring(PG_GETARG_TEXT_PP(1));
	vb_check_llm_target(*provider, *model);
}

/* disable_model(provider text, model text, reason text) -> integer */
static Datum
disable_model_as_owner(PG_FUNCTION_ARGS)
{
	char	   *provider;
	char	   *model;
	char	   *reason;
	TimestampTz at = vb_now();
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, NAMEOID, TIMESTAMPTZOID};
	int64	   *task_ids;
	pg_uuid_t  *run_ids;
	uint64		n;
	int			aborted = 0;

	checked_model(fcinfo, &provider, &model);
	reason = checked_reason(fcinfo, 2);
	SPI_connect();
	args[0] = CStringGetTextDatum(provider);
	args[1] = CStringGetTextDatum(model);
	if (reason)
		args[2] = CStringGetTextDatum(reason);
	else
		nulls[2] = 'n';
	args[3] = DirectFunctionCall1(namein, CStringGetDatum(caller()));
	args[4] = TimestampTzGetDatum(at);
	if (SPI_execute_with_args("INSERT INTO vectorbea.disabled_models"
							  " (provider, model, reason, disabled_by, disabled_at)"
							  " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (provider, model) DO NOTHING",
							  5, types, args, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "vectorbea: could not disable %s/%s", provider, model);
	vb_state_hold_model(provider, model, true, at);

	/* The calls in flight, run by run, newest run first (events.c's one order). */
	if (SPI_execute_with_args("SELECT n.id, n.run_id FROM vectorbea.nodes n"
							  "  JOIN vectorbea.runs r ON r.id = n.run_id"
							  " WHERE n.status = 'running' AND n.activity = '" VB_LLM_ACTIVITY "'"
							  "   AND n.llm->>'provider' = $1 AND ($2 = '*' OR n.llm->>'model' = $2)"
							  " ORDER BY r.created_at DESC, r.id DESC, n.id", 2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find the calls to %s/%s", provider, model);
	n = SPI_processed;
	task_ids = palloc(sizeof(int64) * Max(n, 1));
	run_ids = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;

		task_ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		memcpy(&run_ids[i], DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)),
			   sizeof(pg_uuid_t));
	}
	for (uint64 i = 0; i < n; i++)
	{
		VbRun		run;

		if (vb_run_lock(&run_ids[i], &run))
		{
			vb_state_stop_call(&run, task_ids[i], psprintf("%s/%s was disabled", provider, model),
							   DT_NOEND, at);
			vb_run_save(&run, at);
			aborted++;
		}
	}
	SPI_finish();
	PG_RETURN_INT32(aborted);
}

PG_FUNCTION_INFO_V1(vectorbea_disable_model);
Datum
vectorbea_disable_model(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, disable_model_as_owner);
}

/* enable_model(provider text, model text) -> boolean */
static Datum
enable_model_as_owner(PG_FUNCTION_ARGS)
{
	char	   *provider;
	char	   *model;
	Datum		args[2];
	Oid			types[2] = {TEXTOID, TEXTOID};
	bool		enabled;

	checked_model(fcinfo, &provider, &model);
	SPI_connect();
	args[0] = CStringGetTextDatum(provider);
	args[1] = CStringGetTextDatum(model);
	if (SPI_execute_with_args("DELETE FROM vectorbea.disabled_models WHERE provider = $1 AND model = $2",
							  2, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "vectorbea: could not enable %s/%s", provider, model);
	enabled = SPI_processed > 0;
	if (enabled)
		vb_state_hold_model(provider, model, false, vb_now());
	SPI_finish();
	PG_RETURN_BOOL(enabled);
}

PG_FUNCTION_INFO_V1(vectorbea_enable_model);
Datum
vectorbea_enable_model(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, enable_model_as_owner);
}
