/*-------------------------------------------------------------------------
 *
 * llm_cost.c
 *	  What llm calls cost: prices from model_prices, the estimate that
 *	  stops a call that could cross the run's budget before it is made, and
 *	  LLM_CALLED with the actual usage booked on the run.
 *
 * IDENTIFICATION
 *	  src/llm_cost.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "vectorbea.h"
#include "jsonb_util.h"
#include "budget.h"
#include "clock.h"
#include "llm_call.h"
#include "spi_util.h"
#include "state.h"

/* Price of one call from model_prices; -1 when the model has no price. */
double
vb_llm_price_call(const char *provider, const char *model, int64 tokens_in, int64 tokens_out)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];
	bool		isnull;
	Datum		d;

	if (plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, INT8OID, INT8OID};

		/*
		 * The longest listed prefix: "gpt-4o-mini-2024-07-18" is
		 * gpt-4o-mini.  Rounded here, in decimal, to the 8 places the
		 * events show: a double holds 0.000000125 as a hair less, and
		 * printing it rounded the cost down.
		 */
		plan = vb_prepare("SELECT pg_catalog.round(($3 * input_usd_per_mtok + $4 * output_usd_per_mtok)"
						  "                        / 1000000.0, 8)"
						  "  FROM vectorbea.model_prices"
						  " WHERE provider = $1 AND pg_catalog.starts_with($2, model)"
						  " ORDER BY pg_catalog.length(model) DESC, source = 'user' DESC LIMIT 1",
						  lengthof(types), types);
	}
	args[0] = CStringGetTextDatum(provider);
	args[1] = CStringGetTextDatum(model);
	args[2] = Int64GetDatum(tokens_in);
	args[3] = Int64GetDatum(tokens_out);
	/* the price now, not as the scheduler step's first snapshot saw it */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: model price lookup failed");
	if (SPI_processed == 0)
		return -1;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, d));
}

/* How long a call that does not fit waits for the calls in flight to settle. */
#define BUDGET_WAIT_MS	1000

/*
 * Whether the call about to be made could cross the run's budget: its
 * prompt (about four bytes a token) and max_tokens, priced from
 * model_prices, on top of what the run has used.  If so the call is not
 * made and the run stops with BUDGET_EXCEEDED.
 */
bool
vb_llm_stop_if_over_budget(VbRun *run, LlmCall *c, size_t body_len, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	int64		est_in = (int64) (body_len / 4) + 1;
	int64		est_tokens = est_in + c->max_tokens;
	double		est_usd = Max(vb_llm_price_call(c->provider, c->model, est_in, c->max_tokens), 0);
	Datum		args[3];
	char	   *detail;
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[3] = {UUIDOID, INT8OID, FLOAT8OID};

		plan = vb_prepare("SELECT coalesce(usage_usd + $3::numeric > budget_usd, false)"
						  "       OR coalesce(usage_tokens + $2 > budget_tokens, false),"
						  "       pg_catalog.jsonb_build_object('usage_usd', usage_usd, 'budget_usd', budget_usd,"
						  "                          'usage_tokens', usage_tokens,"
						  "                          'budget_tokens', budget_tokens,"
						  "                          'estimated_usd', pg_catalog.round($3::numeric, 8),"
						  "                          'estimated_tokens', $2,"
						  "                          'call_not_made', true)::text"
						  "  FROM vectorbea.runs WHERE id = $1", lengthof(types), types);
	}
	if (vb_waits_available())
	{
		/* 0.2.0: the run's and the workspace's budgets, with reservations. */
		bool		pause = false;
		bool		wait = false;

		/* Under a budget in USD, a call that cannot be priced is not a free one. */
		if (vb_llm_price_call(c->provider, c->model, est_in, c->max_tokens) < 0 &&
			vb_budget_in_usd(run))
		{
			vb_state_fail_attempt(run, c->task_id, "permanent",
								  vb_llm_error_json("permanent",
													psprintf("model %s/%s has no price, and run %s spends under a budget in USD",
															 c->provider, c->model, vb_uuid_text(&run->id)),
													"\"hint\":\"Add the model to vectorbea.model_prices.\""),
								  false, -1, at);
			vb_run_save(run, at);
			return true;
		}

		detail = vb_budget_reserve_call(run, c->task_id, est_usd, est_tokens, &pause, &wait);
		if (detail == NULL)
			return false;
		if (wait)
			vb_state_abort_attempt(run, c->task_id, "waiting for the budget's calls in flight to settle",
								   at + (int64) BUDGET_WAIT_MS * 1000, at);
		else
			vb_state_budget_exceeded(run, c->node, c->attempt, c->task_id, detail, pause, at);
		vb_run_save(run, at);
		return true;
	}
	args[0] = UUIDPGetDatum(&c->run_id);
	args[1] = Int64GetDatum(est_tokens);
	args[2] = Float8GetDatum(est_usd);
	/* Not read-only: it must see the usage this transaction has booked. */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: budget lookup failed");
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return false;
	detail = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	vb_event(run, "BUDGET_EXCEEDED", c->node, c->attempt, detail, at);
	vb_state_fail_run(run, c->node, "budget_exceeded", at);
	vb_run_save(run, at);
	return true;
}

/*
 * Writes LLM_CALLED and books the call's cost on the run.  Returns false
 * when that crossed the run's budget (the run has then failed; a
 * compensating run goes on, and true is returned).
 */
bool
vb_llm_record_call(VbRun *run, LlmCall *c, VbHttpCall *h, VbLlmOutcome *o, TimestampTz at)
{
	StringInfoData data;
	double		usd = 0;
	double		price = -1;
	int64		tokens;
	char	   *usd_text;
	char	   *budget;

	/*
	 * An answer refused after it came (a refusal, a character the database
	 * cannot hold) was paid for like any other.
	 */
	if (o->err_class == NULL || o->answer.tokens_in + o->answer.tokens_out > 0)
	{
		price = vb_llm_price_call(c->provider, o->answer.model ? o->answer.model : c->model,
						   o->answer.tokens_in, o->answer.tokens_out);
		if (price < 0 && o->answer.model)
			price = vb_llm_price_call(c->provider, c->model, o->answer.tokens_in, o->answer.tokens_out);
		usd = Max(price, 0);
	}
	tokens = o->answer.tokens_in + o->answer.tokens_out;
	c->tokens_in += o->answer.tokens_in;
	c->tokens_out += o->answer.tokens_out;
	c->cost_usd += usd;
	usd_text = psprintf("%.8f", usd);

	initStringInfo(&data);
	appendStringInfoString(&data, "{\"provider\":");
	vb_append_json_string(&data, c->provider);
	appendStringInfoString(&data, ",\"model\":");
	vb_append_json_string(&data, c->model);
	if (o->answer.model)
	{
		appendStringInfoString(&data, ",\"model_used\":");
		vb_append_json_string(&data, o->answer.model);
	}
	appendStringInfo(&data, ",\"call\":%d,\"latency_ms\":%ld,\"http_status\":%ld,"
					 "\"tokens_in\":%ld,\"tokens_out\":%ld,\"cost_usd\":%s,\"priced\":%s,"
					 "\"usage\":{\"tokens\":%ld,\"usd\":%s}",
					 c->calls, (long) h->elapsed_ms, h->status,
					 (long) o->answer.tokens_in, (long) o->answer.tokens_out, usd_text,
					 price >= 0 ? "true" : "false", (long) tokens, usd_text);
	if (o->err_class)
	{
		appendStringInfo(&data, ",\"outcome\":\"%s\",\"error\":", o->err_class);
		vb_append_json_string(&data, o->message);
	}
	else
		appendStringInfoString(&data, ",\"outcome\":\"answered\"");
	appendStringInfoChar(&data, '}');
	vb_event(run, "LLM_CALLED", c->node, c->attempt, data.data, at);

	if (tokens > 0 || usd > 0)
	{
		/*
		 * Under "pause" the answer stands; the next call's check pauses.  A
		 * run that was compensating goes on over its budget, under either
		 * policy, with the overrun on record: its answer stands too.  (A
		 * running run that fails here may begin to compensate: its answer
		 * is void, its lease revoked.)
		 */
		bool		was_compensating = (run->status == VB_RUN_COMPENSATING);

		if (vb_state_book_usage(run, tokens, usd_text, &budget) &&
			(was_compensating || !vb_budget_pauses(run)))
		{
			vb_state_budget_exceeded(run, c->node, c->attempt, 0, budget, false, at);
			return was_compensating;
		}
	}
	return true;
}

