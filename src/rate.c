/*-------------------------------------------------------------------------
 *
 * rate.c
 *	  Rate limits of llm calls: requests and tokens per minute, per
 *	  workspace and provider (or one of its models), set with
 *	  set_rate_limit, kept by the scheduler, which makes every call.
 *
 * Each limit is a pacing schedule (GCRA, a token bucket without burst):
 * a call takes the next free time of each limit that applies to it, one
 * request apart (60 s / requests_per_minute), and its tokens apart (its
 * worst case, prompt and max_tokens, times 60 s / tokens_per_minute).  A
 * call whose time has not come is not made: it waits, once, for the time
 * it has been given (RATE_LIMITED says how long); its attempt is aborted
 * uncounted and its node comes back then, when it goes through on the
 * time it holds.  So a queue of calls drains at the limit's pace, each
 * waiting once, and no check repeats.  (A correction whose time is near
 * waits in its attempt instead, llm.c, and gives that time up.)  A limit
 * changed by set_rate_limit repaces the schedule from the next call on:
 * the places given under the old limit count as as many at the new pace.
 *
 * A provider's own signals slow a limit down: a 429 with Retry-After, or
 * a response that says no requests remain (OpenAI's
 * x-ratelimit-remaining-requests, Anthropic's
 * anthropic-ratelimit-requests-remaining) with when they reset, block the
 * (workspace, provider, model) until then: calls after it wait, rather
 * than meet the same answer, and it recovers by itself when the time has
 * passed.  This holds also where no limit is set.
 *
 * The schedule lives in the scheduler's memory (one scheduler per
 * database makes every call of it): a restart begins a fresh schedule,
 * and the times given to waiting nodes are forgotten (they take new
 * ones).
 *
 * IDENTIFICATION
 *	  src/rate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "jsonb_util.h"
#include "rate.h"
#include "spi_util.h"

#define RATE_KEY_LEN	(3 * (VB_MAX_NAME_LEN + 1) + 256)
#define MAX_PER_MINUTE	100000000
/* How late a node may come back and still go through on its given time. */
#define GRANT_GRACE_MS	5000

/* The schedule of one (workspace, provider, model): model "*" for all. */
typedef struct RateState
{
	char		key[RATE_KEY_LEN];
	TimestampTz next_request;	/* when the next request may go */
	TimestampTz next_tokens;	/* when the next call's tokens may go */
	TimestampTz blocked_until;	/* the provider said: not before */
	int			rpm;			/* the limits next_request and next_tokens */
	int			tpm;			/* were paced at (0: none yet) */
} RateState;

/* The time a waiting node was given. */
typedef struct RateGrant
{
	int64		task_id;
	TimestampTz at;
} RateGrant;

static HTAB *states = NULL;
static HTAB *grants = NULL;

static void
init_tables(void)
{
	HASHCTL		ctl;

	if (states)
		return;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = RATE_KEY_LEN;
	ctl.entrysize = sizeof(RateState);
	ctl.hcxt = TopMemoryContext;
	states = hash_create("vectorbea rate limits", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(RateGrant);
	ctl.hcxt = TopMemoryContext;
	grants = hash_create("vectorbea rate grants", 256, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

static RateState *
state_of(const char *workspace, const char *provider, const char *model)
{
	char		key[RATE_KEY_LEN];
	bool		found;
	RateState  *s;

	init_tables();
	snprintf(key, sizeof(key), "%s/%s/%s", workspace, provider, model);
	s = hash_search(states, key, HASH_ENTER, &found);
	if (!found)
	{
		s->next_request = 0;
		s->next_tokens = 0;
		s->blocked_until = 0;
		s->rpm = 0;
		s->tpm = 0;
	}
	return s;
}

/*
 * A schedule's horizon (next, paced at old_pace a minute) under a limit
 * set since to new_pace a minute: the places already given stand for as many
 * calls at the new pace, so a raised limit lets the next call go soon
 * instead of after the queue the old pace built, and a lowered one puts
 * it after that queue at the new pace.  (Calls already given a time keep
 * it.)
 */
static TimestampTz
repaced(TimestampTz next, int old_pace, int new_pace, TimestampTz now)
{
	if (old_pace == 0 || old_pace == new_pace || next <= now)
		return next;
	return now + (TimestampTz) ((double) (next - now) * old_pace / new_pace);
}

typedef struct Applicable
{
	RateState  *state;
	int			rpm;			/* 0: no request limit */
	int			tpm;			/* 0: no token limit */
	char	   *model;			/* the limit's model, "*" for the provider */
} Applicable;

/*
 * Whether the call of task_id (workspace, provider, model, with est_tokens
 * at worst) may be made at `now`.  If so, it has taken its place in every
 * schedule that applies; if not, *until is the time it has been given and
 * *reason_json what held it (for RATE_LIMITED).
 */
bool
vb_rate_take(int64 task_id, const char *workspace, const char *provider, const char *model,
			 int64 est_tokens, TimestampTz now, TimestampTz *until, char **reason_json)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[3];
	Applicable	app[3];
	int			napp = 0;
	TimestampTz start = now;
	RateGrant  *grant;
	bool		found;
	StringInfoData why;

	init_tables();
	/*
	 * A node back at the time it was given goes through on it, if it comes
	 * back then: one held meanwhile (its run paused, its model disabled)
	 * and released later takes a new place, or a whole paused queue would
	 * go at once.
	 */
	grant = hash_search(grants, &task_id, HASH_FIND, &found);
	if (found && grant->at <= now)
	{
		bool		in_time = now - grant->at <= (int64) GRANT_GRACE_MS * 1000;

		hash_search(grants, &task_id, HASH_REMOVE, NULL);
		if (in_time)
			return true;
	}

	if (vb_waits_available())
	{
		if (plan == NULL)
		{
			Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};

			plan = vb_prepare("SELECT model, coalesce(requests_per_minute, 0), coalesce(tokens_per_minute, 0)"
							  "  FROM vectorbea.rate_limits"
							  " WHERE workspace = $1 AND provider = $2 AND model IN ('*', $3)"
							  " ORDER BY model", lengthof(types), types);
		}
		args[0] = CStringGetTextDatum(workspace);
		args[1] = CStringGetTextDatum(provider);
		args[2] = CStringGetTextDatum(model);
		/* the limits now, not as the scheduler step's first snapshot saw them */
		if (SPI_execute_plan(plan, args, NULL, false, 2) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: could not look up rate limits");
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			app[napp].model = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			app[napp].rpm = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
			app[napp].tpm = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
			app[napp].state = state_of(workspace, provider, app[napp].model);
			if (app[napp].rpm)
			{
				app[napp].state->next_request = repaced(app[napp].state->next_request,
														app[napp].state->rpm, app[napp].rpm, now);
				app[napp].state->rpm = app[napp].rpm;
			}
			if (app[napp].tpm)
			{
				app[napp].state->next_tokens = repaced(app[napp].state->next_tokens,
													   app[napp].state->tpm, app[napp].tpm, now);
				app[napp].state->tpm = app[napp].tpm;
			}
			napp++;
		}
	}
	/* The provider's own word, for the model, counts with or without a limit. */
	if (napp == 0 || strcmp(app[napp - 1].model, model) != 0)
	{
		app[napp].model = pstrdup(model);
		app[napp].rpm = 0;
		app[napp].tpm = 0;
		app[napp].state = state_of(workspace, provider, model);
		napp++;
	}

	initStringInfo(&why);
	for (int i = 0; i < napp; i++)
	{
		RateState  *s = app[i].state;
		TimestampTz t = Max(s->blocked_until, Max(app[i].rpm ? s->next_request : 0,
												  app[i].tpm ? s->next_tokens : 0));

		if (t > start)
		{
			start = t;
			resetStringInfo(&why);
			/* A model name is any text: it is escaped, the names are not. */
			appendStringInfoString(&why, "\"limit\":");
			vb_append_json_string(&why, psprintf("%s/%s/%s", workspace, provider, app[i].model));
			appendStringInfo(&why, ",\"by\":\"%s\"",
							 s->blocked_until == t ? "provider" :
							 (app[i].rpm && s->next_request == t) ? "requests_per_minute" :
							 "tokens_per_minute");
		}
	}
	/* Its place, now or later, in every schedule that applies. */
	for (int i = 0; i < napp; i++)
	{
		RateState  *s = app[i].state;

		if (app[i].rpm)
			s->next_request = Max(s->next_request, start) + (int64) 60 * USECS_PER_SEC / app[i].rpm;
		if (app[i].tpm)
			s->next_tokens = Max(s->next_tokens, start) +
				(int64) ((double) est_tokens * 60 * USECS_PER_SEC / app[i].tpm);
	}
	if (start <= now)
		return true;
	grant = hash_search(grants, &task_id, HASH_ENTER, &found);
	grant->at = start;
	*until = start;
	*reason_json = psprintf("{%s,\"wait_ms\":%ld,\"until\":\"%s\"}", why.data,
							(long) ((start - now) / 1000), vb_timestamp_iso(start));
	return false;
}

/*
 * The time vb_rate_take gave task_id is not to be taken by a later call of
 * it: a call held in memory until that time (a correction) has used it.
 */
void
vb_rate_forget_grant(int64 task_id)
{
	init_tables();
	hash_search(grants, &task_id, HASH_REMOVE, NULL);
}

/*
 * The provider said no call may be made before `until` (a 429's
 * Retry-After, or no requests remaining until a reset): the schedule of
 * (workspace, provider, model) waits until then.
 */
void
vb_rate_block(const char *workspace, const char *provider, const char *model, TimestampTz until)
{
	RateState  *s = state_of(workspace, provider, model);

	if (until > s->blocked_until)
		s->blocked_until = until;
}

/*
 * set_rate_limit(workspace text, provider text, requests_per_minute integer,
 *                tokens_per_minute integer, model text) -> boolean
 */
static Datum
set_rate_limit_as_owner(PG_FUNCTION_ARGS)
{
	char	   *workspace;
	char	   *provider;
	char	   *model;
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	Oid			types[7] = {TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID, NAMEOID, TIMESTAMPTZOID};
	bool		existed;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workspace, provider and model must not be null"),
				 errhint("Use model '*' for every model of the provider; pass both limits NULL to remove it.")));
	workspace = text_to_cstring(PG_GETARG_TEXT_PP(0));
	provider = text_to_cstring(PG_GETARG_TEXT_PP(1));
	model = text_to_cstring(PG_GETARG_TEXT_PP(4));
	vb_check_workspace_name(workspace, false);
	vb_check_llm_target(provider, model);
	for (int a = 2; a <= 3; a++)
		if (!PG_ARGISNULL(a) && (PG_GETARG_INT32(a) < 1 || PG_GETARG_INT32(a) > MAX_PER_MINUTE))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must be from 1 to %d", a == 2 ? "requests_per_minute" : "tokens_per_minute",
							MAX_PER_MINUTE),
					 errdetail("Found %d.", PG_GETARG_INT32(a)),
					 errhint("Pass NULL for no limit of that kind; disable_model stops every call.")));

	SPI_connect();
	args[0] = CStringGetTextDatum(workspace);
	args[1] = CStringGetTextDatum(provider);
	args[2] = CStringGetTextDatum(model);
	if (SPI_execute_with_args("DELETE FROM vectorbea.rate_limits"
							  " WHERE workspace = $1 AND provider = $2 AND model = $3",
							  3, types, args, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "vectorbea: could not replace a rate limit");
	existed = SPI_processed > 0;
	if (!PG_ARGISNULL(2) || !PG_ARGISNULL(3))
	{
		if (PG_ARGISNULL(2))
			nulls[3] = 'n';
		else
			args[3] = Int32GetDatum(PG_GETARG_INT32(2));
		if (PG_ARGISNULL(3))
			nulls[4] = 'n';
		else
			args[4] = Int32GetDatum(PG_GETARG_INT32(3));
		args[5] = DirectFunctionCall1(namein, CStringGetDatum(vb_caller_name()));
		args[6] = TimestampTzGetDatum(vb_now());
		if (SPI_execute_with_args("INSERT INTO vectorbea.rate_limits"
								  " (workspace, provider, model, requests_per_minute, tokens_per_minute,"
								  "  set_by, set_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
								  7, types, args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "vectorbea: could not set a rate limit");
	}
	SPI_finish();
	PG_RETURN_BOOL(existed);
}

PG_FUNCTION_INFO_V1(vectorbea_set_rate_limit);
Datum
vectorbea_set_rate_limit(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, set_rate_limit_as_owner);
}
