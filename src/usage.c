/*-------------------------------------------------------------------------
 *
 * usage.c
 *	  The usage a worker reports with a task's end (complete_task,
 *	  complete_tasks, fail_task): reading it, and booking it on the run
 *	  against the run's budgets and its workspace's.
 *
 * A completion and a failure book alike: the tokens and dollars are on
 * the run (and so in its workspace's spend) and in the event that ended
 * the attempt (its "usage"), which is what replay() adds up.
 *
 * IDENTIFICATION
 *	  src/usage.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "vectorbea.h"
#include "budget.h"
#include "jsonb_util.h"
#include "state.h"
#include "usage.h"

/* Whether a usage field's value is above what one report may hold. */
static bool
usage_too_large(const char *key, Numeric value)
{
	Datum		limit;

	if (strcmp(key, "tokens") == 0)
		limit = DirectFunctionCall1(int8_numeric, Int64GetDatum(VB_MAX_USAGE_TOKENS));
	else
		limit = DirectFunctionCall3(numeric_in, CStringGetDatum(VB_MAX_USAGE_USD),
									ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	return DatumGetBool(DirectFunctionCall2(numeric_gt, NumericGetDatum(value), limit));
}

/*
 * Reads a reported usage ({"tokens": N, "usd": X}, either or both) into
 * *u; NULL is none.  Refuses anything else, changing nothing.
 */
void
vb_usage_parse(Jsonb *usage, VbUsage *u)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			depth = 0;

	u->given = false;
	u->tokens = 0;
	u->usd = "0";
	if (usage == NULL)
		return;
	if (!JsonContainerIsObject(&usage->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid usage: it must be a JSON object like {\"tokens\": 812, \"usd\": 0.0042}")));
	it = JsonbIteratorInit(&usage->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;
		JsonbValue	val;
		char	   *text;

		if (tok == WJB_BEGIN_OBJECT)
			depth++;
		if (tok != WJB_KEY || depth != 1)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		if (strcmp(key, "tokens") != 0 && strcmp(key, "usd") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid usage: unknown field \"%s\"", vb_short_text(key)),
					 errdetail("Allowed fields: tokens, usd.")));
		vb_jsonb_get(&usage->root, key, &val);
		if (val.type != jbvNumeric)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid usage: field \"%s\" must be a number", key),
					 errdetail("Found %s.", vb_jsonb_type_name(&val))));
		text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(val.val.numeric)));
		if (text[0] == '-')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid usage: field \"%s\" must not be negative", key),
					 errdetail("Found %s.", vb_short_text(text))));
		if (usage_too_large(key, val.val.numeric))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("invalid usage: field \"%s\" is out of range", key),
					 errdetail("Found %s; one report may hold at most %s.",
							   vb_short_text(text),
							   strcmp(key, "tokens") == 0 ? psprintf(INT64_FORMAT " tokens", VB_MAX_USAGE_TOKENS)
							   : VB_MAX_USAGE_USD " USD"),
					 errhint("Report the usage of this task alone, in tokens and USD.")));
		if (strcmp(key, "tokens") == 0)
		{
			char	   *end;

			errno = 0;
			u->tokens = strtoll(text, &end, 10);
			if (*end != '\0' || errno != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid usage: field \"tokens\" must be an integer"),
						 errdetail("Found %s.", vb_short_text(text))));
		}
		else
			u->usd = text;
		u->given = true;
	}
}

/* The usage as STEP_COMPLETED and STEP_FAILED record it; NULL when none was given. */
char *
vb_usage_json(const VbUsage *u)
{
	if (!u->given)
		return NULL;
	return psprintf("{\"tokens\":%ld,\"usd\":%s}", (long) u->tokens, u->usd);
}

/* Whether a report holds any amount above zero. */
static bool
spends(const VbUsage *u)
{
	return u->tokens > 0 || strtod(u->usd, NULL) > 0;
}

/*
 * Adds u to a locked run's usage, before the state change that ends the
 * attempt reporting it: a failure that ends a child run tells its parent
 * at once, and the parent takes what the child spent, this report
 * included.  vb_usage_check then checks the budgets.
 */
void
vb_usage_add(VbRun *run, VbUsage *u)
{
	u->over_run = false;
	u->detail = NULL;
	if (u->given)
		u->over_run = vb_state_book_usage(run, u->tokens, u->usd, &u->detail);
}

/*
 * Checks the usage u that vb_usage_add booked on a locked run for node's
 * attempt, which has just ended, against the run's budgets, then its
 * workspace's: the run's own policy (on_budget) applies at its own budget,
 * the workspace budget's on_exceed at the workspace's.  At the budget:
 * under "pause" the work stands and the run is paused before any more (a
 * run of worker tasks makes no llm call whose check would pause it); a run
 * that this end finished, or is about to finish, is not paused, with the
 * overrun on record.  A compensating run goes on over its budget (state.c),
 * under either policy, with the overrun on record, so it may still end
 * with its last compensation.  Under "fail" a running run fails.
 */
void
vb_usage_check(VbRun *run, const VbUsage *u, const char *node, int attempt, TimestampTz at)
{
	char	   *detail = u->detail;
	bool		pause = false;

	if (!u->given)
		return;
	/*
	 * A report of nothing adds nothing to the workspace's spend: it does not
	 * take the blame for what others spent (a run's own budget is its own).
	 */
	if (!u->over_run && (!spends(u) ||
						 (detail = vb_budget_workspace_overspent(run, &pause)) == NULL))
		return;
	if (u->over_run && vb_run_active(run->status))
		pause = vb_budget_pauses(run);
	vb_state_over_budget(run, node, attempt, detail, pause, at);
}

/* vb_usage_add, then vb_usage_check: for an attempt that has ended already. */
void
vb_usage_book(VbRun *run, VbUsage *u, const char *node, int attempt, TimestampTz at)
{
	vb_usage_add(run, u);
	vb_usage_check(run, u, node, attempt, at);
}
