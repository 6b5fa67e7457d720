/*-------------------------------------------------------------------------
 *
 * budget.c
 *	  Budgets: a run's (start_run options budget_usd, budget_tokens) and a
 *	  workspace's (set_budget), checked before each llm call with the call's
 *	  worst case reserved, and what happens at the limit.
 *
 * Before a call, its worst case (prompt size and max_tokens, priced from
 * model_prices) is added to what the run and its workspace have booked
 * and to the worst cases of their other calls in flight (reserved on
 * their nodes); if that crosses a budget the call is not made.  The
 * workspace's budget row is locked for the check, so two runs of one
 * workspace cannot both take its last dollar; the reservation is written
 * on the node in the same transaction as LLM_REQUESTED, and counts while
 * the attempt runs (a crash that ends the attempt ends the reservation).
 * A task node's estimate counts the same way while it runs, from its
 * claim to its end: nothing is written at the claim, the reservation is
 * what is running.
 * Usage is booked on the run after the call (llm_cost.c); a workspace's
 * spend in a period is the usage of its runs started in that period.
 *
 * A run's budget covers its child runs: a child starts with what its
 * parent has left as its own budget, held by the parent's run node while
 * the child runs, and its spend is booked on the parent when it ends
 * (child_usage_usd, child_usage_tokens; state.c), next to the parent's own
 * usage, which stays the run's own so that the workspace counts it once.
 *
 * At the limit the policy decides (the run's on_budget option for its own
 * budget, the workspace budget's on_exceed for the workspace's): fail
 * (BUDGET_EXCEEDED, the run fails) or pause (BUDGET_EXCEEDED, the attempt
 * is aborted uncounted and the run paused with scope "budget" until its
 * budget or its workspace's is raised, or resume_run); the state machine
 * makes either change (vb_state_budget_exceeded).
 *
 * IDENTIFICATION
 *	  src/budget.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "vectorbea.h"
#include "budget.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "controls.h"
#include "jsonb_util.h"
#include "spi_util.h"
#include "state.h"
#include "tenants.h"
#include "workspace_lock.h"

static const char *const periods[] = {"day", "month", "total", NULL};
static const char *const policies[] = {"fail", "pause", NULL};

/*
 * The bounds of budget b's period that holds the instant `at` (an SQL
 * expression): UTC calendar days and months, computed in UTC, since a
 * timestamptz plus '1 month' counts in the session's time zone.
 */
#define PERIOD_START_SQL(at) \
	"CASE b.period" \
	"  WHEN 'day' THEN pg_catalog.date_trunc('day', (" at ") AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'" \
	"  WHEN 'month' THEN pg_catalog.date_trunc('month', (" at ") AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'" \
	"  ELSE '-infinity'::timestamptz END"
#define PERIOD_END_SQL(at) \
	"CASE b.period" \
	"  WHEN 'day' THEN (pg_catalog.date_trunc('day', (" at ") AT TIME ZONE 'UTC')" \
	"                   + interval '1 day') AT TIME ZONE 'UTC'" \
	"  WHEN 'month' THEN (pg_catalog.date_trunc('month', (" at ") AT TIME ZONE 'UTC')" \
	"                     + interval '1 month') AT TIME ZONE 'UTC'" \
	"  ELSE 'infinity'::timestamptz END"

/* Whether run column `created` falls in budget b's period that holds `at`. */
#define IN_PERIOD_SQL(created, at) \
	" " created " >= " PERIOD_START_SQL(at) " AND " created " < " PERIOD_END_SQL(at)

/*
 * What the runs of budget b's workspace have booked in the budget's period
 * that holds the instant `at` (columns usd, tokens): the usage of its runs
 * started in that period.  A run's whole spend counts in the period it
 * started in, so a run is checked against that period (at = its
 * created_at), not the current one: a run started before midnight would
 * otherwise spend into a period that nobody checks any more, and a
 * runaway agent that outlives its day would be stopped by nothing.
 */
#define WORKSPACE_SPEND_SQL(at) \
	"SELECT coalesce(pg_catalog.sum(sr.usage_usd), 0) AS usd," \
	"       coalesce(pg_catalog.sum(sr.usage_tokens), 0) AS tokens" \
	"  FROM vectorbea.runs sr" \
	" WHERE sr.workspace = b.workspace AND" IN_PERIOD_SQL("sr.created_at", at)

/* Whether spend s (WORKSPACE_SPEND_SQL) is over budget b. */
#define WORKSPACE_OVER_BUDGET_SQL \
	"(coalesce(s.usd > b.usd, false) OR coalesce(s.tokens > b.tokens, false))"

/* A budget above a billion USD is a typo, not a budget. */
#define MAX_BUDGET_USD	1e9

/* Holds a call's worst case on its node until the attempt ends. */
static void
reserve(int64 task_id, double est_usd, int64 est_tokens)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3] = {Int64GetDatum(task_id), Float8GetDatum(est_usd), Int64GetDatum(est_tokens)};

	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, FLOAT8OID, INT8OID};

		plan = vb_prepare("UPDATE vectorbea.nodes SET reserved_usd = $2::numeric, reserved_tokens = $3"
						  " WHERE id = $1", lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not reserve the budget of task %ld", (long) task_id);
}

/*
 * Checks the call of task_id (in a locked run) against the run's budget
 * and its workspace's, with its worst case est_usd / est_tokens.  NULL
 * when it may be made: its worst case is then reserved on the node.  Else
 * the BUDGET_EXCEEDED data, with *pause set by the policy that applies,
 * and *wait when other calls still hold reservations against that budget:
 * their answers may cost less than their worst cases, so the call waits
 * for them to settle before the budget is called spent.  What the run's
 * child runs were given is not waited for: a child may run for hours, and
 * each wait is an aborted attempt on record.
 */
char *
vb_budget_reserve_call(VbRun *run, int64 task_id, double est_usd, int64 est_tokens,
					   bool *pause, bool *wait)
{
	static SPIPlanPtr run_plan = NULL;
	static SPIPlanPtr lock_plan = NULL;
	static SPIPlanPtr ws_plan = NULL;
	Datum		args[5];
	bool		isnull;
	char	   *workspace;

	if (run_plan == NULL)
	{
		Oid			types[4] = {UUIDOID, INT8OID, FLOAT8OID, INT8OID};
		Oid			tw[5] = {TEXTOID, INT8OID, FLOAT8OID, INT8OID, TIMESTAMPTZOID};
		Oid			t1[1] = {TEXTOID};

		run_plan = vb_prepare("SELECT r.workspace, coalesce(r.options->>'on_budget', 'fail') = 'pause',"
							  "       coalesce(r.usage_usd + r.child_usage_usd + res.usd + $3::numeric > r.budget_usd, false)"
							  "       OR coalesce(r.usage_tokens + r.child_usage_tokens + res.tokens + $2 > r.budget_tokens, false),"
							  "       (pg_catalog.jsonb_build_object('scope', 'run',"
							  "           'usage_usd', r.usage_usd, 'budget_usd', r.budget_usd,"
							  "           'usage_tokens', r.usage_tokens, 'budget_tokens', r.budget_tokens,"
							  "           'reserved_usd', res.usd, 'reserved_tokens', res.tokens,"
							  "           'estimated_usd', pg_catalog.round($3::numeric, 8),"
							  "           'estimated_tokens', $2, 'call_not_made', true)"
							  "        || CASE WHEN r.child_usage_usd > 0 OR r.child_usage_tokens > 0"
							  "            THEN pg_catalog.jsonb_build_object('child_usage_usd', r.child_usage_usd,"
							  "                                               'child_usage_tokens', r.child_usage_tokens)"
							  "            ELSE '{}' END)::text,"
							  "       res.in_flight, r.created_at"
							  "  FROM vectorbea.runs r CROSS JOIN LATERAL (" VB_RUN_RESERVED_SQL("r.id", "$4") ") res"
							  " WHERE r.id = $1", lengthof(types), types);
		lock_plan = vb_prepare("SELECT FROM vectorbea.budgets WHERE workspace = $1 FOR UPDATE",
							   lengthof(t1), t1);
		/* A statement of its own: its snapshot sees what the lock waited for. */
		ws_plan = vb_prepare("SELECT b.on_exceed = 'pause',"
							 "       coalesce(s.usd + res.usd + $3::numeric > b.usd, false)"
							 "       OR coalesce(s.tokens + res.tokens + $2 > b.tokens, false),"
							 "       pg_catalog.jsonb_build_object('scope', 'workspace', 'workspace', b.workspace,"
							 "           'period', b.period, 'spent_usd', s.usd, 'budget_usd', b.usd,"
							 "           'spent_tokens', s.tokens, 'budget_tokens', b.tokens,"
							 "           'reserved_usd', res.usd, 'reserved_tokens', res.tokens,"
							 "           'estimated_usd', pg_catalog.round($3::numeric, 8),"
							 "           'estimated_tokens', $2, 'call_not_made', true)::text,"
							 "       res.usd > 0 OR res.tokens > 0"
							 "  FROM vectorbea.budgets b"
							 " CROSS JOIN LATERAL (" WORKSPACE_SPEND_SQL("$5") ") s"
							 " CROSS JOIN LATERAL ("
							 "    SELECT coalesce(pg_catalog.sum(" VB_RESERVED_USD "), 0) AS usd,"
							 "           coalesce(pg_catalog.sum(" VB_RESERVED_TOKENS "), 0) AS tokens"
							 "      FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
							 "     WHERE r.workspace = b.workspace AND n.status = 'running'"
							 "       AND (n.reserved_usd IS NOT NULL OR n.estimate IS NOT NULL) AND n.id <> $4"
							 /* what the calls of runs of the same period hold */
							 "       AND" IN_PERIOD_SQL("r.created_at", "$5") ") res"
							 " WHERE b.workspace = $1", lengthof(tw), tw);
	}
	if (!vb_waits_available())
		return NULL;			/* a 0.1.0 schema: llm_cost.c checks the run's budget */
	/*
	 * Undoing goes on over a budget (failures.md): a compensation's call is
	 * made, its worst case held like any other's, and the usage booked
	 * after it records an overrun.  Stopping it would leave work half undone
	 * (or pause a run that pause_run may not pause).
	 */
	if (run->status == VB_RUN_COMPENSATING)
	{
		reserve(task_id, est_usd, est_tokens);
		return NULL;
	}
	args[0] = UUIDPGetDatum(&run->id);
	args[1] = Int64GetDatum(est_tokens);
	args[2] = Float8GetDatum(est_usd);
	args[3] = Int64GetDatum(task_id);
	if (SPI_execute_plan(run_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: budget lookup failed");
	workspace = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	/* the run's start: its spend counts in the workspace budget's period that holds it */
	args[4] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 6, &isnull);
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)))
	{
		*pause = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		*wait = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
		return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	}

	args[0] = CStringGetTextDatum(workspace);
	if (SPI_execute_plan(lock_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not lock the budget of workspace \"%s\"", workspace);
	if (SPI_processed > 0)
	{
		if (SPI_execute_plan(ws_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "vectorbea: workspace budget lookup failed");
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		{
			*pause = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			*wait = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
			return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
		}
	}
	reserve(task_id, est_usd, est_tokens);
	return NULL;
}

/*
 * Whether the workspace of a locked run has booked more than its budget in
 * the budget's period that holds the run's start, once a worker's reported
 * usage has been booked on the run (usage.c).  NULL when not, or without a
 * workspace budget; else
 * BUDGET_EXCEEDED's data, with *pause set by the budget's on_exceed.
 *
 * Unlike a call's check, this takes no lock on the budget: the work is
 * done and paid for, there is nothing to hold back, and a completion that
 * locked its workspace's budget row after its run's would deadlock with a
 * batch (complete_tasks) locking the same two runs in turn.  A report that
 * crosses the budget together with another transaction's, uncommitted,
 * is booked; the next report or llm call of the workspace sees both.
 */
char *
vb_budget_workspace_overspent(VbRun *run, bool *pause)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(&run->id)};
	bool		isnull;

	if (!vb_waits_available())
		return NULL;			/* a 0.1.0 schema has no workspace budgets */
	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT b.on_exceed = 'pause',"
						  "       pg_catalog.jsonb_build_object('scope', 'workspace', 'workspace', b.workspace,"
						  "           'period', b.period, 'spent_usd', s.usd, 'budget_usd', b.usd,"
						  "           'spent_tokens', s.tokens, 'budget_tokens', b.tokens)::text"
						  "  FROM vectorbea.runs r JOIN vectorbea.budgets b ON b.workspace = r.workspace"
						  " CROSS JOIN LATERAL (" WORKSPACE_SPEND_SQL("r.created_at") ") s"
						  " WHERE r.id = $1"
						  "   AND " WORKSPACE_OVER_BUDGET_SQL,
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: workspace budget lookup failed");
	if (SPI_processed == 0)
		return NULL;
	*pause = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
}

/* Whether a budget in USD applies to a locked run: its own or its workspace's. */
bool
vb_budget_in_usd(VbRun *run)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(&run->id)};

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT r.budget_usd IS NOT NULL"
						  "       OR EXISTS (SELECT FROM vectorbea.budgets b"
						  "                   WHERE b.workspace = r.workspace AND b.usd IS NOT NULL)"
						  "  FROM vectorbea.runs r WHERE r.id = $1", lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: run %s vanished", vb_uuid_text(&run->id));
	return strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
}

/* Whether a locked run's policy at its budget is to pause. */
bool
vb_budget_pauses(VbRun *run)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(&run->id)};

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT coalesce(options->>'on_budget', 'fail') = 'pause'"
						  "  FROM vectorbea.runs WHERE id = $1", lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: run %s vanished", vb_uuid_text(&run->id));
	return strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") == 0;
}

/*
 * A run r that a budget paused and that no budget holds any more: neither
 * its own ...
 */
#define BUDGET_RESUMABLE_SQL \
	" r.status = 'paused' AND r.paused->>'scope' = 'budget'" \
	" AND NOT " VB_RUN_IS_OVER_BUDGET_SQL \
	/* ... nor its workspace's */ \
	" AND NOT EXISTS (SELECT FROM vectorbea.budgets b" \
	"                  CROSS JOIN LATERAL (" WORKSPACE_SPEND_SQL("r.created_at") ") s" \
	"                 WHERE b.workspace = r.workspace AND " WORKSPACE_OVER_BUDGET_SQL ")"

/*
 * Whether a locked run is still one to resume: read after its lock, since
 * meanwhile a person may have taken its pause over (pause_run), or usage
 * booked may have crossed a budget again.
 */
static bool
still_resumable(pg_uuid_t *run_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(run_id)};

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT FROM vectorbea.runs r WHERE r.id = $1 AND" BUDGET_RESUMABLE_SQL,
						  lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read run %s", vb_uuid_text(run_id));
	return SPI_processed == 1;
}

/*
 * The runs of a workspace (or one run) that a budget paused and that no
 * budget holds any more, resumed: neither the run's own budget nor its
 * workspace's is below what was booked against it (which budget paused a
 * run is not recorded, and both apply).  A run paused before its next llm
 * call is checked again at that call.  One whose workspace has been
 * paused since goes from the budget's pause to the workspace's.  Returns
 * how many run again.
 */
static int
resume_budget_paused(const char *workspace, pg_uuid_t *run_id, TimestampTz at)
{
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	Oid			types[2] = {TEXTOID, UUIDOID};
	uint64		n;
	pg_uuid_t  *ids;
	char	  **workspaces;
	int			resumed = 0;

	if (workspace)
		args[0] = CStringGetTextDatum(workspace);
	else
		nulls[0] = 'n';
	if (run_id)
		args[1] = UUIDPGetDatum(run_id);
	else
		nulls[1] = 'n';
	if (SPI_execute_with_args("SELECT r.id, r.workspace FROM vectorbea.runs r"
							  " WHERE " BUDGET_RESUMABLE_SQL
							  "   AND ($1::text IS NULL OR r.workspace = $1) AND ($2::uuid IS NULL OR r.id = $2)"
							  " ORDER BY r.created_at DESC, r.id DESC", 2, types, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not find the runs a budget paused");
	n = SPI_processed;
	ids = palloc(sizeof(pg_uuid_t) * Max(n, 1));
	workspaces = palloc(sizeof(char *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		memcpy(&ids[i], DatumGetUUIDP(SPI_getbinval(tup, desc, 1, &isnull)), sizeof(pg_uuid_t));
		workspaces[i] = SPI_getvalue(tup, desc, 2);
	}
	for (uint64 i = 0; i < n; i++)
	{
		VbRun		run;
		char	   *reason = NULL;
		char	   *by = NULL;

		/* It sets the run going: under its workspace's lock, taken before the run's. */
		vb_workspace_share(workspaces[i]);
		if (vb_run_lock(&ids[i], &run) && still_resumable(&ids[i]) &&
			vb_state_resume_run(&run, vb_caller_name(), at))
		{
			/*
			 * Its workspace was paused meanwhile (a run paused already keeps
			 * its pause): the budget no longer holds it, the workspace does,
			 * so that resume_workspace lets it go on, not this.
			 */
			if (vb_workspace_paused(workspaces[i], &reason, &by))
				vb_state_pause_run(&run, "workspace", reason, by, at);
			else
				resumed++;
			vb_run_save(&run, at);
		}
	}
	return resumed;
}

static void
check_amounts(FunctionCallInfo fcinfo, int usd_arg, int tokens_arg)
{
	if (!PG_ARGISNULL(usd_arg))
	{
		/* Not numeric_float8: it throws 22003 for 1e400 before the check. */
		double		usd = vb_numeric_double(PG_GETARG_NUMERIC(usd_arg));

		if (!(usd >= 0 && usd <= MAX_BUDGET_USD))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("usd must be a number from 0 to %.0f", MAX_BUDGET_USD),
					 errdetail("Found %s.", vb_short_text(DatumGetCString(DirectFunctionCall1(numeric_out,
																							  PG_GETARG_DATUM(usd_arg)))))));
	}
	if (!PG_ARGISNULL(tokens_arg) && PG_GETARG_INT64(tokens_arg) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tokens must not be negative"),
				 errdetail("Found %ld.", (long) PG_GETARG_INT64(tokens_arg))));
}

/*
 * DESIGN.md writes the period as an interval ('1 month'): one month and one
 * day, as interval input spells them ("1 mon", "1 days", any case), name
 * the calendar month and day.  Other spans have no calendar period.
 */
static char *
calendar_period(char *period)
{
	int			n;
	char		unit[16];
	char		extra;

	if (sscanf(period, " %d %15[A-Za-z] %c", &n, unit, &extra) != 2 || n != 1)
		return period;
	for (char *c = unit; *c; c++)
		*c = pg_ascii_tolower((unsigned char) *c);
	if (strcmp(unit, "month") == 0 || strcmp(unit, "months") == 0 ||
		strcmp(unit, "mon") == 0 || strcmp(unit, "mons") == 0)
		return "month";
	if (strcmp(unit, "day") == 0 || strcmp(unit, "days") == 0)
		return "day";
	return period;
}

/*
 * set_budget(workspace text, usd numeric, period text, tokens bigint,
 *            on_exceed text) -> integer, and the same with period interval
 *            (DESIGN.md's form): one day or one month name the calendar
 *            periods, another span is refused with its text.
 */
static Datum set_budget(FunctionCallInfo fcinfo, char *period);

static Datum
set_budget_as_owner(PG_FUNCTION_ARGS)
{
	return set_budget(fcinfo, PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)));
}

PG_FUNCTION_INFO_V1(vectorbea_set_budget);
Datum
vectorbea_set_budget(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, set_budget_as_owner);
}

static Datum
set_budget_interval_as_owner(PG_FUNCTION_ARGS)
{
	Interval   *span;

	if (PG_ARGISNULL(2))
		return set_budget(fcinfo, NULL);
	span = PG_GETARG_INTERVAL_P(2);
	if (span->month == 1 && span->day == 0 && span->time == 0)
		return set_budget(fcinfo, "month");
	if (span->month == 0 && span->day == 1 && span->time == 0)
		return set_budget(fcinfo, "day");
	return set_budget(fcinfo, DatumGetCString(DirectFunctionCall1(interval_out,
																  IntervalPGetDatum(span))));
}

PG_FUNCTION_INFO_V1(vectorbea_set_budget_interval);
Datum
vectorbea_set_budget_interval(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, set_budget_interval_as_owner);
}

static Datum
set_budget(FunctionCallInfo fcinfo, char *period)
{
	char	   *workspace;
	char	   *on_exceed;
	TimestampTz at = vb_now();
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Oid			types[7] = {TEXTOID, NUMERICOID, INT8OID, TEXTOID, TEXTOID, NAMEOID, TIMESTAMPTZOID};
	int			resumed;

	if (PG_ARGISNULL(0) || period == NULL || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workspace, period and on_exceed must not be null"),
				 errhint("Pass usd and tokens NULL to remove the budget.")));
	workspace = text_to_cstring(PG_GETARG_TEXT_PP(0));
	on_exceed = text_to_cstring(PG_GETARG_TEXT_PP(4));
	vb_check_workspace_name(workspace, false);
	check_amounts(fcinfo, 1, 3);
	period = calendar_period(period);
	if (!vb_in_list(period, periods))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid budget period \"%s\"", vb_short_text(period)),
				 errdetail("Periods: %s (UTC calendar day or month, or the workspace's whole life); '1 day' and '1 month' name the first two.",
						   vb_list_text(periods))));
	if (!vb_in_list(on_exceed, policies))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid budget policy \"%s\"", vb_short_text(on_exceed)),
				 errdetail("Policies: fail (the run fails), pause (the run waits until the budget is raised).")));

	SPI_connect();

	/*
	 * It may resume runs of the workspace: its lock before the budget's row,
	 * which the scheduler's llm step locks while it holds a run (a pause
	 * waiting for that run would otherwise close a circle).
	 */
	vb_workspace_share(workspace);
	args[0] = CStringGetTextDatum(workspace);
	if (PG_ARGISNULL(1) && PG_ARGISNULL(3))
	{
		if (SPI_execute_with_args("DELETE FROM vectorbea.budgets WHERE workspace = $1",
								  1, types, args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "vectorbea: could not remove the budget of workspace \"%s\"", workspace);
	}
	else
	{
		if (PG_ARGISNULL(1))
			nulls[1] = 'n';
		else
			args[1] = PG_GETARG_DATUM(1);
		if (PG_ARGISNULL(3))
			nulls[2] = 'n';
		else
			args[2] = PG_GETARG_DATUM(3);
		args[3] = CStringGetTextDatum(period);
		args[4] = CStringGetTextDatum(on_exceed);
		args[5] = DirectFunctionCall1(namein, CStringGetDatum(vb_caller_name()));
		args[6] = TimestampTzGetDatum(at);
		if (SPI_execute_with_args("INSERT INTO vectorbea.budgets"
								  " (workspace, usd, tokens, period, on_exceed, set_by, set_at)"
								  " VALUES ($1, $2, $3, $4, $5, $6, $7)"
								  " ON CONFLICT (workspace) DO UPDATE SET usd = $2, tokens = $3, period = $4,"
								  "   on_exceed = $5, set_by = $6, set_at = $7",
								  7, types, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "vectorbea: could not set the budget of workspace \"%s\"", workspace);
	}
	resumed = resume_budget_paused(workspace, NULL, at);
	SPI_finish();
	PG_RETURN_INT32(resumed);
}

/*
 * Says that the child runs run_id waits for keep their budgets: each was
 * given what its parent had left when it started, and a change of the
 * parent's does not reach it, which a person raising a tree's budget at
 * its root would not guess.  Names the run nodes that wait for them.  A
 * 0.2.0 schema only.
 */
static void
notice_child_budgets(pg_uuid_t *run_id)
{
	Datum		args[1] = {UUIDPGetDatum(run_id)};
	bool		isnull;
	int			count;

	if (SPI_execute_with_args("SELECT pg_catalog.count(*)::int4,"
							  "       pg_catalog.array_to_string((pg_catalog.array_agg(n.node ORDER BY n.node))[1:10], ', ')"
							  "  FROM vectorbea.nodes n"
							  " WHERE n.run_id = $1 AND n.kind = 'run' AND n.status = 'waiting'"
							  "   AND n.lease IS NOT NULL",
							  1, (Oid[]) {UUIDOID}, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the child runs of run %s", vb_uuid_text(run_id));
	count = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (count == 0)
		return;
	ereport(NOTICE,
			(errmsg_plural("%d child run of this run keeps its own budget",
						   "%d child runs of this run keep their own budgets",
						   count, count),
			 errdetail_plural("The run node that waits for it: %s%s.",
							  "The run nodes that wait for them: %s%s.", count,
							  SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
							  count > 10 ? psprintf(" and %d more", count - 10) : ""),
			 errhint("A child run's budget is what its parent had left when it started; set a child's"
					 " with vectorbea.set_run_budget() (its id: vectorbea.runs.parent_run names"
					 " its parent).")));
}

/* set_run_budget(run uuid, usd numeric, tokens bigint) -> boolean */
static Datum
set_run_budget_as_owner(PG_FUNCTION_ARGS)
{
	TimestampTz at = vb_now();
	Datum		args[4] = {0};
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Oid			types[4] = {UUIDOID, NUMERICOID, INT8OID, TEXTOID};
	VbRun		run;
	bool		resumed = false;
	bool		over;
	bool		budget_paused;
	bool		isnull;
	char	   *detail;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run must not be null")));
	check_amounts(fcinfo, 1, 2);
	SPI_connect();
	vb_require_run_workspace(PG_GETARG_UUID_P(0), "change the budget of runs of");
	/* It may resume the run, setting it going: the workspace's lock first. */
	vb_workspace_share_of_run(PG_GETARG_UUID_P(0));
	if (!vb_run_lock(PG_GETARG_UUID_P(0), &run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist", vb_uuid_text(PG_GETARG_UUID_P(0)))));
	if (!vb_run_active(run.status))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run %s is %s: only an unfinished run's budget can be set",
						vb_uuid_text(&run.id), vb_run_status_name(run.status))));
	args[0] = UUIDPGetDatum(&run.id);
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	else
		args[1] = PG_GETARG_DATUM(1);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	else
		args[2] = PG_GETARG_DATUM(2);
	args[3] = CStringGetTextDatum(vb_caller_name());
	if (SPI_execute_with_args("UPDATE vectorbea.runs SET budget_usd = $2, budget_tokens = $3 WHERE id = $1"
							  " RETURNING pg_catalog.jsonb_build_object('budget_usd', budget_usd,"
							  "          'budget_tokens', budget_tokens, 'by', $4)::text, "
							  VB_RUN_OVER_BUDGET_SQL ", coalesce(paused->>'scope' = 'budget', false)",
							  4, types, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "vectorbea: could not set the budget of run %s", vb_uuid_text(&run.id));
	over = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	detail = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	budget_paused = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4,
											   &isnull));
	/* The history says who changed the budget it is held to, and to what. */
	vb_event(&run, "RUN_BUDGET_SET", NULL, 0,
			 SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), at);
	/*
	 * A budget below what the run has spent is crossed now, not at the
	 * next usage reported (which may never come, or report nothing and
	 * take the blame): a running run fails or pauses by its policy, and
	 * so does a run someone paused (under "pause" it keeps that person's
	 * pause, with the crossing on record); a run its budget paused stays
	 * paused.  A compensating run goes on over its budget, as it does
	 * when usage crosses it.
	 */
	if (over && (run.status == VB_RUN_RUNNING || (run.status == VB_RUN_PAUSED && !budget_paused)))
		vb_state_budget_exceeded(&run, NULL, 0, 0, detail, vb_budget_pauses(&run), at);
	vb_run_save(&run, at);
	if (!over)
		resumed = resume_budget_paused(NULL, &run.id, at) > 0;
	if (vb_waits_available())
		notice_child_budgets(&run.id);
	SPI_finish();
	PG_RETURN_BOOL(resumed);
}

PG_FUNCTION_INFO_V1(vectorbea_set_run_budget);
Datum
vectorbea_set_run_budget(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, set_run_budget_as_owner);
}

/*
 * A run node of a locked run (task_id) is about to start a child run:
 * when the run has a budget, the child gets as its own what the run has
 * left (its budget less its own usage, its ended children's, and what its
 * running nodes and its other waiting run nodes hold), never below 0, or
 * what the node asks for (usd, tokens: numeric and bigint text, NULL for
 * none) when that is less; a run without a budget gives what the node
 * asks for.  The child takes the run's policy at the budget.  The run node
 * holds that grant against the run's budget while it waits (its
 * reserved_usd, reserved_tokens), and the child's spend comes back to the
 * run when the child ends (state.c).  Appends the child's budget fields
 * to options, a JSON object being written (its opening brace and a field
 * already in it).
 */
void
vb_budget_grant_child(VbRun *run, int64 task_id, const char *usd, const char *tokens,
					  StringInfo options)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4] = {UUIDPGetDatum(&run->id), Int64GetDatum(task_id)};
	char		nulls[4] = {' ', ' ', ' ', ' '};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		usd_null;
	bool		tokens_null;
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, INT8OID, TEXTOID, TEXTOID};

		/* LEAST leaves a NULL out: no request, what is left */
		plan = vb_prepare("WITH g AS ("
						  "  SELECT CASE WHEN r.budget_usd IS NULL THEN $3::numeric ELSE LEAST($3::numeric, GREATEST("
						  "             r.budget_usd - r.usage_usd - r.child_usage_usd - res.usd, 0)) END AS usd,"
						  "         CASE WHEN r.budget_tokens IS NULL THEN $4::bigint ELSE LEAST($4::bigint, GREATEST("
						  "             r.budget_tokens - r.usage_tokens - r.child_usage_tokens - res.tokens, 0)) END AS tokens,"
						  "         r.options->>'on_budget' AS policy"
						  "    FROM vectorbea.runs r CROSS JOIN LATERAL (" VB_RUN_RESERVED_SQL("r.id", "$2") ") res"
						  "   WHERE r.id = $1"
						  ")"
						  " UPDATE vectorbea.nodes n SET reserved_usd = g.usd, reserved_tokens = g.tokens"
						  "   FROM g WHERE n.id = $2"
						  " RETURNING g.usd::text, g.tokens::text, g.policy",
						  lengthof(types), types);
	}
	if (usd)
		args[2] = CStringGetTextDatum(usd);
	else
		nulls[2] = 'n';
	if (tokens)
		args[3] = CStringGetTextDatum(tokens);
	else
		nulls[3] = 'n';
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not give the child of task %ld its budget", (long) task_id);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	(void) SPI_getbinval(tup, desc, 1, &usd_null);
	(void) SPI_getbinval(tup, desc, 2, &tokens_null);
	if (!usd_null)
		appendStringInfo(options, ",\"budget_usd\":%s", SPI_getvalue(tup, desc, 1));
	if (!tokens_null)
		appendStringInfo(options, ",\"budget_tokens\":%s", SPI_getvalue(tup, desc, 2));
	(void) SPI_getbinval(tup, desc, 3, &isnull);
	if ((!usd_null || !tokens_null) && !isnull)
	{
		appendStringInfoString(options, ",\"on_budget\":");
		vb_append_json_string(options, SPI_getvalue(tup, desc, 3));
	}
}
