/*-------------------------------------------------------------------------
 *
 * llm.c
 *	  llm nodes: the scheduler claims them, calls the provider and completes
 *	  or fails them like any task.
 *
 * The life of one attempt, each numbered step a short transaction of the
 * scheduler's, never one open across a network wait:
 *
 *	1. claim (vb_claim with the engine's activity, SKIP LOCKED like any
 *	   worker), decrypt the workspace's key, render the templates, check the
 *	   URL against the allow-list and the estimated cost against the run's
 *	   budget, and write LLM_REQUESTED: the call is on record before it
 *	   leaves, so a crash while it is in flight leaves an attempt visibly in
 *	   doubt (and the next scheduler ends it as such).
 *	2. after commit, send it (http.c); many calls are in flight at once.
 *	3. when it finishes, write LLM_CALLED (latency, tokens, cost from
 *	   model_prices) and book its cost on the run; then either complete the
 *	   node (with the model's spawn list, if allowed), fail it with the
 *	   error's class, or, when the answer does not match the output schema
 *	   and corrections are left, write SELF_CORRECTION and LLM_REQUESTED and
 *	   go back to 2 with the validation error added to the conversation.
 *
 * A call whose lease is lost meanwhile (run cancelled or failed) is
 * dropped: the scheduler looks at its calls' leases whenever it is woken.
 *
 * The provider key exists in plaintext only in this process's memory while
 * its call is prepared and in flight, and is zeroed when the call ends.  It
 * is never in an event, an error or a log line; provider error messages are
 * scrubbed of it before they are recorded.
 *
 * This file is the driver: it holds the calls and moves them through the
 * steps.  Building a request is llm_request.c's, prices and budgets are
 * llm_cost.c's, what an answer means is llm_answer.c's, and what a crash
 * left behind is llm_recover.c's.
 *
 * IDENTIFICATION
 *	  src/llm.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "vectorbea.h"
#include "claim.h"
#include "clock.h"
#include "crashpoint.h"
#include "complete.h"
#include "controls.h"
#include "due_items.h"
#include "encoding.h"
#include "http.h"
#include "jsonb_util.h"
#include "keys.h"
#include "llm.h"
#include "llm_call.h"
#include "rate.h"
#include "settings.h"
#include "spi_util.h"
#include "state.h"
#include "subxact.h"

#define SCHEDULER_WORKER		"vectorbea scheduler"
#define LEASE_MARGIN_MS			(60 * 1000)
#define NODE_TIMEOUT_MARGIN_MS	500
/*
 * A correction waits at most this long for its time under a rate limit,
 * and only when its node's timeout leaves it this much after that time.
 */
#define MAX_HELD_MS				(60 * 1000)
#define MIN_HELD_CALL_ROOM_MS	(10 * 1000)
#define HELD_BUSY_RETRY_MS		100
#define MAX_MESSAGES			(2 * 10 + 1)	/* the prompt, then answer/correction pairs */
#define MAX_PROVIDER_MESSAGE	500

static MemoryContext llm_cxt = NULL;
static LlmCall *calls = NULL;	/* every call this scheduler holds */

void
vb_llm_init(void)
{
	vb_http_init();
	if (llm_cxt == NULL)
		llm_cxt = AllocSetContextCreate(TopMemoryContext, "vectorbea llm calls",
										ALLOCSET_DEFAULT_SIZES);
}

bool
vb_llm_busy(void)
{
	return calls != NULL;
}

static void
forget_call(LlmCall *c)
{
	LlmCall   **p;

	for (p = &calls; *p; p = &(*p)->next)
		if (*p == c)
		{
			*p = c->next;
			break;
		}
	if (c->http)
		vb_http_abort(c->http);
	if (c->secret)
		explicit_bzero(c->secret, strlen(c->secret));
	if (c->auth_header)
		explicit_bzero(c->auth_header, strlen(c->auth_header));
	MemoryContextDelete(c->cxt);
}

/*
 * Drops every call this scheduler holds, sent or not: after an error that
 * rolled back an llm step, memory and history may disagree, so the calls
 * go as at a restart, and vb_llm_recover ends their attempts.
 */
void
vb_llm_forget_all(void)
{
	while (calls)
		forget_call(calls);
}

/* The SHA-256 of len bytes of data, in hex. */
static char *
sha256_hex(const char *data, size_t len)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char	   *hex = palloc(PG_SHA256_DIGEST_LENGTH * 2 + 1);

	if (ctx == NULL || pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "vectorbea: could not hash an llm request");
	pg_cryptohash_free(ctx);
	for (int i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		sprintf(hex + 2 * i, "%02x", digest[i]);
	return hex;
}

/* Writes LLM_REQUESTED for the call about to be sent and extends the lease. */
static void
record_request(VbRun *run, LlmCall *c, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	char	   *body = vb_llm_request_body(c);
	size_t		body_len = strlen(body);
	StringInfoData data;
	Datum		args[3];
	Datum		deadline;
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[3] = {INT8OID, UUIDOID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.nodes"
						  "   SET lease_expires_at = least($3, attempt_deadline)"
						  " WHERE id = $1 AND lease = $2 AND status = 'running'"
						  " RETURNING attempt_deadline",
						  lengthof(types), types);
	}
	c->calls++;
	args[0] = Int64GetDatum(c->task_id);
	args[1] = UUIDPGetDatum(&c->lease);
	args[2] = TimestampTzGetDatum(at + (int64) (c->timeout_ms + LEASE_MARGIN_MS) * 1000);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "vectorbea: could not extend the lease of an llm call");
	deadline = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		/*
		 * End the call a little before the node's timeout ends the attempt,
		 * so that a slow provider is reported as such (transient), not as
		 * an attempt the engine had to end (timeout).  Corrections get what
		 * is left of the attempt.
		 */
		int64		remaining = (DatumGetTimestampTz(deadline) - at) / 1000;
		int64		within = Max(remaining - NODE_TIMEOUT_MARGIN_MS, remaining / 2);

		c->timeout_ms = (long) Min((int64) c->timeout_ms, Max(within, 1));
	}

	initStringInfo(&data);
	appendStringInfoString(&data, "{\"provider\":");
	vb_append_json_string(&data, c->provider);
	appendStringInfoString(&data, ",\"model\":");
	vb_append_json_string(&data, c->model);
	/*
	 * What was asked, exactly, without the prompt itself: a fork or a
	 * rerun can tell whether a call would be the same one.
	 */
	appendStringInfo(&data, ",\"call\":%d,\"request_bytes\":%zu,\"request_sha256\":\"%s\","
					 "\"max_tokens\":%d,\"timeout_ms\":%ld}",
					 c->calls, body_len, sha256_hex(body, body_len), c->max_tokens, c->timeout_ms);
	vb_event(run, "LLM_REQUESTED", c->node, c->attempt, data.data, at);
	c->send = true;
}

/*
 * Holds correction c until `until`, its time under a rate limit, when that
 * is at most MAX_HELD_MS away and its node's timeout leaves the call
 * MIN_HELD_CALL_ROOM_MS after it: its lease is kept until then and a
 * margin.  False, nothing changed, when not.
 */
static bool
hold_correction(LlmCall *c, TimestampTz until, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];

	if (until - at > (int64) MAX_HELD_MS * 1000)
		return false;
	if (plan == NULL)
	{
		Oid			types[4] = {INT8OID, UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID};

		plan = vb_prepare("UPDATE vectorbea.nodes"
						  "   SET lease_expires_at = greatest(lease_expires_at, least($3, attempt_deadline))"
						  " WHERE id = $1 AND lease = $2 AND status = 'running'"
						  "   AND (attempt_deadline IS NULL OR attempt_deadline > $4)",
						  lengthof(types), types);
	}
	args[0] = Int64GetDatum(c->task_id);
	args[1] = UUIDPGetDatum(&c->lease);
	args[2] = TimestampTzGetDatum(until + (int64) LEASE_MARGIN_MS * 1000);
	args[3] = TimestampTzGetDatum(until + (int64) MIN_HELD_CALL_ROOM_MS * 1000);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not hold the correction of task %ld", (long) c->task_id);
	if (SPI_processed != 1)
		return false;
	c->held_until = until;
	return true;
}

/* ---- 1. claim and prepare ---- */

typedef struct ClaimBatch
{
	VbClaimedLlm *claimed;
	char	   *master;
	TimestampTz at;
} ClaimBatch;

/* Fails the claimed attempt without a call: nothing was sent. */
static void
fail_unsent(ClaimBatch *b, int i, VbRun *run, const char *err_class, const char *message)
{
	vb_state_fail_attempt(run, b->claimed[i].task_id, err_class,
						  vb_llm_error_json(err_class, message, NULL),
					strcmp(err_class, "permanent") != 0, -1, b->at);
	vb_run_save(run, b->at);
}

/*
 * Records call c of claimed attempt i, or, when it must not be made now (a
 * switch thrown, a rate limit, a budget, an address not allowed), holds or
 * fails the attempt instead; true when it was recorded, to be sent.  A
 * call refused before its turn under the rate limits gives up the time a
 * wait there gave it (vb_rate_take): the attempt after a resume takes a
 * new time, behind those given meanwhile, even within the grace rate.c
 * allows a late node.
 */
static bool
record_or_hold(ClaimBatch *b, int i, VbRun *run, LlmCall *c)
{
	char	   *problem;

	/* A switch thrown after the node became ready: hold it, uncalled. */
	if (vb_model_disabled(c->provider, c->model))
	{
		vb_rate_forget_grant(c->task_id);
		vb_state_abort_attempt(run, b->claimed[i].task_id,
							   psprintf("%s/%s is disabled", c->provider, c->model), DT_NOEND, b->at);
		vb_run_save(run, b->at);
		return false;
	}
	problem = vb_http_check_url(c->url);
	if (problem)
	{
		vb_rate_forget_grant(c->task_id);
		fail_unsent(b, i, run, "permanent", problem);
		return false;
	}
	if (vb_llm_stop_if_over_budget(run, c, strlen(vb_llm_request_body(c)), b->at))
	{
		vb_rate_forget_grant(c->task_id);
		return false;
	}
	/*
	 * Its time under the rate limits: not yet, it waits (once) for it.
	 * Last, so that a call refused for anything else takes no place.
	 */
	{
		TimestampTz until;
		char	   *why;

		if (!vb_rate_take(c->task_id, c->workspace, c->provider, c->model,
						  (int64) (strlen(vb_llm_request_body(c)) / 4) + 1 + c->max_tokens,
						  b->at, &until, &why))
		{
			vb_event(run, "RATE_LIMITED", b->claimed[i].node, b->claimed[i].attempt, why, b->at);
			vb_state_abort_attempt(run, b->claimed[i].task_id, "waiting for its time under a rate limit",
								   until, b->at);
			vb_run_save(run, b->at);
			return false;
		}
	}
	record_request(run, c, b->at);
	vb_run_save(run, b->at);
	return true;
}

static void
prepare_one(void *arg, int i)
{
	ClaimBatch *b = arg;
	char	   *problem;
	VbRun		run;
	LlmCall    *c;
	bool		recorded;

	if (!vb_run_lock(&b->claimed[i].run_id, &run))
		return;
	/* An earlier call of this claim stopped the run (its budget): no call. */
	if (run.status == VB_RUN_PAUSED)
	{
		vb_state_abort_attempt(&run, b->claimed[i].task_id, "its run is paused", b->at, b->at);
		vb_run_save(&run, b->at);
		return;
	}
	if (!vb_run_active(run.status))
		return;					/* and its failure revoked this attempt */
	c = vb_llm_build_call(llm_cxt, &b->claimed[i], b->master, &problem);
	if (c == NULL)
	{
		fail_unsent(b, i, &run, "permanent", problem);
		return;
	}
	/*
	 * c lives in llm_cxt, for the life of the process, and holds the key:
	 * an error here (caught by the item) must not leave it behind.
	 */
	PG_TRY();
	{
		recorded = record_or_hold(b, i, &run, c);
	}
	PG_CATCH();
	{
		forget_call(c);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (!recorded)
	{
		forget_call(c);
		return;
	}
	/* Held only once it is on record: an error above drops it unsent. */
	c->next = calls;
	calls = c;
}

/* Whether an llm node is ready now: most passes find none. */
static bool
llm_work_ready(void)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {TimestampTzGetDatum(vb_now())};

	if (plan == NULL)
	{
		Oid			types[1] = {TIMESTAMPTZOID};

		/* Every pass runs it: generic, as the scheduler's other scans. */
		plan = vb_prepare_opts("SELECT FROM vectorbea.nodes"
							   " WHERE status = 'ready' AND activity = '" VB_LLM_ACTIVITY "'"
							   "   AND available_at <= $1 LIMIT 1", lengthof(types), types,
							   CURSOR_OPT_GENERIC_PLAN);
	}
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: llm work lookup failed");
	return SPI_processed > 0;
}

/* The claimable runs (at most 64) with an llm node ready now. */
#define WAITING_LLM_RUNS \
	"WITH waiting AS MATERIALIZED (" \
	"  SELECT r.id FROM vectorbea.runs r" \
	"   WHERE r.status IN ('running', 'compensating') AND r.id IN (" \
	"         SELECT n.run_id FROM vectorbea.nodes n" \
	"          WHERE n.status = 'ready' AND n.activity = '" VB_LLM_ACTIVITY "'" \
	"            AND n.available_at <= $1)" \
	"   LIMIT 64)"

/*
 * Whether a claimable run with a ready llm node is held by another
 * transaction: the claim skipped it (SKIP LOCKED), and nothing else may
 * wake the scheduler when its holder commits (a heartbeat, a completion of
 * another node, an operator's lock).  Called after a claim that had room
 * left, so without a concurrency limit on llm calls any such node left
 * ready was skipped for its run (or its own row), and a read says so.
 * With a limit, nodes may wait for it instead, and a call's end wakes the
 * scheduler for those; then the probe locks the runs it can (at most 64),
 * in a subtransaction that is always rolled back: a run it could not lock
 * counts, and so does one it could whose workspace the limits leave room
 * for.  The claim did not take that one either, so its node row was held,
 * or the run was until a moment ago (its holder committed between the
 * claim and the probe): either way nothing will wake the scheduler for it,
 * and counting only the runs still held lost it (test/t/036_llm_busy_run.pl).
 * Only a run whose workspace a full limit covers is left to a call's end.
 * Runs held by this transaction count as free.
 */
static bool
probe_busy_llm_runs(void *arg)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr plan_without_limits = NULL;
	Datum		args[1] = {TimestampTzGetDatum(vb_now())};
	Oid			types[1] = {TIMESTAMPTZOID};
	bool		limits_table = vb_waits_available();
	bool		isnull;

	if (plan == NULL && limits_table)
		/* CASE evaluates the locking count only when it gets there. */
		plan = vb_prepare(WAITING_LLM_RUNS
						  ", free AS MATERIALIZED ("
						  "  SELECT r.workspace FROM vectorbea.runs r WHERE r.id IN (SELECT id FROM waiting)"
						  "     FOR NO KEY UPDATE OF r SKIP LOCKED"
						  "), full_limits AS ("
						  "  SELECT l.workspace FROM vectorbea.concurrency_limits l"
						  "   WHERE l.activity = '" VB_LLM_ACTIVITY "'"
						  "     AND l.max_running <= (SELECT pg_catalog.count(*) FROM vectorbea.nodes n"
						  "                             JOIN vectorbea.runs r ON r.id = n.run_id"
						  "                            WHERE n.status = 'running' AND n.lease_expires_at IS NOT NULL"
						  "                              AND n.activity = l.activity"
						  "                              AND (l.workspace = '*' OR r.workspace = l.workspace))"
						  ")"
						  "SELECT CASE"
						  "  WHEN NOT EXISTS (SELECT FROM waiting) THEN false"
						  "  WHEN NOT EXISTS (SELECT FROM vectorbea.concurrency_limits l"
						  "                    WHERE l.activity = '" VB_LLM_ACTIVITY "') THEN true"
						  "  ELSE (SELECT pg_catalog.count(*) FROM waiting) > (SELECT pg_catalog.count(*) FROM free)"
						  "       OR EXISTS (SELECT FROM free f WHERE NOT EXISTS ("
						  "                    SELECT FROM full_limits x WHERE x.workspace IN ('*', f.workspace)))"
						  " END",
						  lengthof(types), types);
	/* A 0.1.0 schema, before ALTER EXTENSION UPDATE, has no limits. */
	if (plan_without_limits == NULL && !limits_table)
		plan_without_limits = vb_prepare(WAITING_LLM_RUNS "SELECT EXISTS (SELECT FROM waiting)",
										 lengthof(types), types);
	if (SPI_execute_plan(limits_table ? plan : plan_without_limits, args, NULL, false, 1) !=
		SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: could not look for busy runs with llm work");
	*(bool *) arg = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											   1, &isnull));
	return false;				/* give back every lock the probe took */
}

static bool
llm_work_left_busy(void)
{
	bool		busy = false;
	ErrorData  *error = vb_try_in_subxact_keep(probe_busy_llm_runs, &busy);

	if (error)
		ReThrowError(error);
	return busy;
}

/*
 * The master key, or NULL after a warning (at most one a minute) when it
 * cannot be read; the scheduler's status shows the error.
 */
static void
read_master_key_into(void *arg)
{
	*(char **) arg = vb_read_master_key(vb_master_key_file);
}

static char *
read_master_key_or_warn(VbSweepCounters *counters)
{
	static TimestampTz last_warning = 0;
	char	   *master = NULL;
	ErrorData  *edata = vb_try_in_subxact(read_master_key_into, &master);
	TimestampTz now = GetCurrentTimestamp();

	if (edata == NULL)
		return master;
	if (TimestampDifferenceExceeds(last_warning, now, 60 * 1000))
	{
		ereport(WARNING,
				(errmsg("vectorbea scheduler: llm nodes wait: %s", edata->message),
				 edata->hint ? errhint("%s", edata->hint) : 0));
		last_warning = now;
	}
	if (counters)
	{
		counters->errors++;
		strlcpy(counters->last_error, edata->message, sizeof(counters->last_error));
	}
	FreeErrorData(edata);
	return NULL;
}

/*
 * Claims as many ready llm nodes as there is room for, prepares their calls
 * and records them.  Runs in the caller's transaction; vb_llm_send() sends
 * them once it has committed.  True when, with room left, ready llm work
 * stayed behind a busy run: the caller looks again shortly.
 */
bool
vb_llm_claim(VbSweepCounters *counters)
{
	int			room = vb_llm_max_in_flight;
	ClaimBatch	b;
	uint64		n;
	Interval   *lease;
	char	   *master;
	Datum		activity = CStringGetTextDatum(VB_LLM_ACTIVITY);
	ArrayType  *activities;
	VbStartedAttempts started;
	TimestampTz at;

	for (LlmCall *c = calls; c; c = c->next)
		room--;
	if (room <= 0)
		return false;
	if (!llm_work_ready())
		return false;

	/*
	 * Without the master key no call can be made: leave the nodes ready
	 * (claiming them would only fail them) and say why.  The next pass
	 * tries again.
	 */
	master = read_master_key_or_warn(counters);
	if (master == NULL)
		return false;
	lease = palloc0(sizeof(Interval));
	lease->time = (int64) (vb_llm_request_timeout_ms + LEASE_MARGIN_MS) * 1000;
	activities = construct_array(&activity, 1, TEXTOID, -1, false, TYPALIGN_INT);
	at = vb_now();
	/* the scheduler never waits for a run: it has other work to do */
	vb_claim(SCHEDULER_WORKER, activities, room, NULL, lease, at, 0, &started);
	n = started.count;
	if (n == 0)
	{
		vb_forget(master);
		return llm_work_left_busy();
	}

	memset(&b, 0, sizeof(b));
	b.master = master;
	b.at = at;
	b.claimed = palloc(sizeof(VbClaimedLlm) * n);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = started.vals[i];
		TupleDesc	desc = started.tupdesc;
		VbClaimedLlm *cl = &b.claimed[i];
		bool		isnull;

		/* claim_tasks' columns: task_id, lease, run_id, node, activity, attempt, ... */
		cl->task_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		memcpy(&cl->lease, DatumGetUUIDP(SPI_getbinval(tup, desc, 2, &isnull)), sizeof(pg_uuid_t));
		memcpy(&cl->run_id, DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull)), sizeof(pg_uuid_t));
		cl->node = SPI_getvalue(tup, desc, 4);
		cl->attempt = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		cl->input = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 8, &isnull));
		cl->upstream = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
		cl->run_input = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 13, &isnull));
	}
	for (uint64 i = 0; i < n; i++)
		vb_due_item(true, prepare_one, &b, (int) i, counters, &b.claimed[i].run_id,
					VB_ITEM_ATTEMPT, b.claimed[i].task_id, b.at);
	vb_forget(b.master);
	return n < (uint64) room && llm_work_left_busy();
}

/* ---- 2. send ---- */

/* Sends the calls recorded by the transaction that has just committed. */
void
vb_llm_send(void)
{
	for (LlmCall *c = calls; c; c = c->next)
	{
		const char *headers[2];
		int			nheaders = 0;
		char	   *body;

		if (!c->send)
			continue;
		c->send = false;
		headers[nheaders++] = c->auth_header;
		if (strcmp(c->provider, "anthropic") == 0)
			headers[nheaders++] = "anthropic-version: 2023-06-01";
		body = vb_llm_request_body(c);
		c->http = vb_http_start(c->url, nheaders, headers, body, c->timeout_ms,
								Min(vb_llm_connect_timeout_ms, c->timeout_ms),
								(size_t) vb_llm_max_response_kb * 1024, c);
		pfree(body);
	}
}

/*
 * When the first correction held for its time under a rate limit is due;
 * DT_NOEND when none is held.
 */
TimestampTz
vb_llm_next_send(void)
{
	TimestampTz next = DT_NOEND;

	for (LlmCall *c = calls; c; c = c->next)
		if (c->held_until != 0)
			next = Min(next, c->held_until);
	return next;
}

typedef enum HeldOutcome
{
	HELD_RUN_BUSY,				/* its run is held, or gone: look again shortly */
	HELD_DROPPED,				/* its run has ended: not sent */
	HELD_RECORDED				/* on record, to be sent */
} HeldOutcome;

typedef struct HeldCall
{
	LlmCall    *call;
	HeldOutcome outcome;
} HeldCall;

/*
 * Without waiting for the run: a worker's open transaction must not stall
 * the scheduler.  A run that is gone is found by vb_llm_check_leases at
 * the next pass (its lease is gone with it).
 */
static void
record_held_one(void *arg)
{
	HeldCall   *h = arg;
	VbRun		run;
	TimestampTz at;

	h->outcome = HELD_RUN_BUSY;
	if (!vb_run_try_lock(&h->call->run_id, &run))
		return;
	h->outcome = HELD_DROPPED;
	if (!vb_run_active(run.status))
		return;
	at = vb_now();
	record_request(&run, h->call, at);
	vb_run_save(&run, at);
	h->outcome = HELD_RECORDED;
}

/*
 * Records the held corrections whose time has come, each in a
 * subtransaction of the caller's (after vb_llm_check_leases dropped those
 * whose lease is gone); vb_llm_send sends them after its commit.  Until
 * then the history says the attempt's last call was answered.  One whose
 * run is held is tried again shortly; one that fails is dropped, and its
 * attempt ends when its lease does.
 */
void
vb_llm_record_held(void)
{
	LlmCall    *next;

	for (LlmCall *c = calls; c; c = next)
	{
		HeldCall	h = {c, HELD_DROPPED};
		ErrorData  *edata;

		next = c->next;
		if (c->held_until == 0 || c->held_until > vb_now())
			continue;
		edata = vb_try_in_subxact(record_held_one, &h);
		if (edata)
		{
			ereport(WARNING,
					(errmsg("vectorbea scheduler: the correction of task %ld was not sent: %s",
							(long) c->task_id, edata->message)));
			FreeErrorData(edata);
			h.outcome = HELD_DROPPED;
		}
		if (h.outcome == HELD_RUN_BUSY)
			c->held_until = vb_now() + (int64) HELD_BUSY_RETRY_MS * 1000;
		else if (h.outcome == HELD_RECORDED)
			c->held_until = 0;
		else
			forget_call(c);
	}
}

/*
 * Drops calls that were recorded but whose transaction rolled back, and
 * calls whose lease is gone (their run was cancelled or failed, or their
 * lease expired): the answer could not be used.  Not read-only: after a
 * claim, in its transaction, it must see what the claim changed.
 */
void
vb_llm_check_leases(void)
{
	int			n = 0;
	Datum	   *ids;
	Datum	   *leases;
	ArrayType  *id_arr;
	ArrayType  *lease_arr;
	Datum		args[2];
	Oid			types[2] = {INT8ARRAYOID, UUIDARRAYOID};

	for (LlmCall *c = calls; c; c = c->next)
		n++;
	if (n == 0)
		return;
	ids = palloc(sizeof(Datum) * n);
	leases = palloc(sizeof(Datum) * n);
	n = 0;
	for (LlmCall *c = calls; c; c = c->next, n++)
	{
		ids[n] = Int64GetDatum(c->task_id);
		leases[n] = UUIDPGetDatum(&c->lease);
	}
	id_arr = construct_array(ids, n, INT8OID, 8, true, TYPALIGN_DOUBLE);
	lease_arr = construct_array(leases, n, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR);
	args[0] = PointerGetDatum(id_arr);
	args[1] = PointerGetDatum(lease_arr);
	if (SPI_execute_with_args("SELECT t.id, t.lease FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS t(id, lease)"
							  " WHERE NOT EXISTS (SELECT FROM vectorbea.nodes n"
							  "                    WHERE n.id = t.id AND n.lease = t.lease"
							  "                      AND n.status = 'running')",
							  2, types, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not check the leases of llm calls");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		pg_uuid_t  *lease = DatumGetUUIDP(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2,
													   &isnull));
		LlmCall    *c = calls;

		/*
		 * By task and lease: a node's old call and its new attempt's may
		 * both be here (a pause and a resume between two steps), and the
		 * new one, first in the list, holds the lease.
		 */
		while (c && (c->task_id != id || memcmp(&c->lease, lease, UUID_LEN) != 0))
			c = c->next;
		if (c)
		{
			ereport(DEBUG1,
					(errmsg("vectorbea: dropping the llm call of task %ld: its lease is gone",
							(long) id)));
			forget_call(c);
		}
	}
}

/* ---- 3. finish ---- */


/*
 * The answer checked against the node's output schema: both are text of
 * the database and go to jansson in UTF-8 (encoding.c).  What cannot be
 * converted is a problem like any mismatch.
 */
static char *
check_answer(LlmCall *c, const char *answer, char **json)
{
	char	   *problem = NULL;
	const char *schema = vb_to_utf8(c->schema, "the output schema", &problem);
	const char *text = schema ? vb_to_utf8(answer, "the answer", &problem) : NULL;

	*json = NULL;
	if (text == NULL)
		return problem;
	/* The checker's words quote the answer, in UTF-8. */
	problem = vb_json_check_answer(schema, text, json);
	if (problem)
		return vb_from_utf8_lossy(problem);
	/* The JSON is the answer's own text: back to the database's encoding. */
	*json = vb_from_utf8(*json, strlen(*json), "the answer", &problem);
	return problem;
}

/*
 * Completes the node, in a subtransaction, as complete_task would: an
 * output over vectorbea.max_payload_size, or a spawn list that fails
 * validation, fails the node instead (permanently: the same answer would
 * be refused again), and nothing is added.
 */
typedef struct Completion
{
	VbRun		run;			/* a copy: the subtransaction may roll back */
	LlmCall    *call;
	Jsonb	   *output;
	Jsonb	   *spawn;
	TimestampTz at;
} Completion;

static void
complete_in_subxact(void *arg)
{
	Completion *cp = arg;

	vb_check_payload_size(cp->output, "the task output");
	vb_complete_locked(&cp->run, cp->call->task_id, &cp->call->lease, cp->output,
					   cp->spawn, NULL, cp->at);
	vb_run_save(&cp->run, cp->at);
}

static void
complete_node(VbRun *run, LlmCall *c, const char *output, const char *spawn, TimestampTz at)
{
	Completion	cp;
	ErrorData  *edata;
	VbRun		again;

	/* What the run holds so far is saved, so a rollback loses none of it. */
	vb_run_save(run, at);
	cp.run = *run;
	cp.call = c;
	cp.output = vb_jsonb_from_cstring(output);
	cp.spawn = spawn ? vb_jsonb_from_cstring(spawn) : NULL;
	cp.at = at;
	edata = vb_try_in_subxact(complete_in_subxact, &cp);
	if (edata == NULL)
	{
		*run = cp.run;
		return;
	}
	if (vb_run_lock(&c->run_id, &again))
	{
		char	   *refused = psprintf("%s: %s",
									   spawn ? "the model's spawn list was refused" :
									   "the node's output was refused",
									   edata->message);

		vb_state_fail_attempt(&again, c->task_id, "permanent",
							  vb_llm_error_json("permanent", refused, NULL), false, -1, at);
		vb_run_save(&again, at);
	}
	FreeErrorData(edata);
}

typedef struct FinishBatch
{
	LlmCall   **calls;
	VbHttpCall **https;
	bool	   *done;			/* the call is over (not corrected) */
	TimestampTz at;
} FinishBatch;

static bool
lease_held(LlmCall *c)
{
	Datum		args[2] = {Int64GetDatum(c->task_id), UUIDPGetDatum(&c->lease)};
	Oid			types[2] = {INT8OID, UUIDOID};

	if (SPI_execute_with_args("SELECT FROM vectorbea.nodes"
							  " WHERE id = $1 AND lease = $2 AND status = 'running'",
							  2, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: lease lookup failed");
	return SPI_processed == 1;
}

static void
finish_one(void *arg, int i)
{
	FinishBatch *b = arg;
	LlmCall    *c = b->calls[i];
	VbHttpCall *h = b->https[i];
	VbLlmOutcome o;
	VbRun		run;
	char	   *json = NULL;
	char	   *problem;
	char	   *spawn = NULL;

	b->done[i] = true;
	if (!vb_run_lock(&c->run_id, &run) || !lease_held(c))
		return;					/* cancelled or taken over meanwhile */
	vb_llm_classify(c, h, &o);
	if (!vb_llm_record_call(&run, c, h, &o, b->at))
	{
		vb_run_save(&run, b->at);
		return;
	}
	/* The provider's word on when to call again slows every call to it. */
	if (o.retry_after_ms >= 0)
		vb_rate_block(c->workspace, c->provider, c->model, b->at + o.retry_after_ms * 1000);
	if (o.blocked_until > 0)
		vb_rate_block(c->workspace, c->provider, c->model, o.blocked_until);
	if (o.err_class)
	{
		char	   *extra = o.retry_after_ms >= 0 ?
			psprintf("\"retry_after\":\"%ldms\"", (long) o.retry_after_ms) : NULL;

		vb_state_fail_attempt(&run, c->task_id, o.err_class, vb_llm_error_json(o.err_class, o.message, extra),
						strcmp(o.err_class, "permanent") != 0, o.retry_after_ms, b->at);
		vb_run_save(&run, b->at);
		return;
	}
	if (c->schema)
	{
		problem = check_answer(c, o.answer.text, &json);
		/* Asked again, a model that ran out of room needs to know it did. */
		if (problem && o.answer.truncated)
			problem = psprintf("%s (the answer was cut off at max_tokens: write it shorter)", problem);
		if (problem)
		{
			StringInfoData data;

			if (c->corrections >= c->max_corrections)
			{
				StringInfoData answer;

				/*
				 * The last answer goes with the error: an escalation shows
				 * it.  Cut to half of vectorbea.max_payload_size, since the
				 * error is held to it like any payload, and STEP_FAILED and
				 * the gate's context carry it with more around it.
				 */
				int			len = strlen(o.answer.text);
				int			room = vb_payload_limit_kb() * 1024 / 2;

				initStringInfo(&answer);
				appendStringInfoString(&answer, "\"answer\":");
				if (len <= room)
					vb_append_json_string(&answer, o.answer.text);
				else
				{
					vb_append_json_string(&answer, pnstrdup(o.answer.text,
															pg_mbcliplen(o.answer.text, len, room)));
					appendStringInfo(&answer, ",\"answer_cut\":true,\"answer_bytes\":%d", len);
				}
				vb_state_fail_attempt(&run, c->task_id, "invalid_output",
								vb_llm_error_json("invalid_output",
										   psprintf("the answer does not match the output schema after %d correction%s: %s",
													c->corrections, c->corrections == 1 ? "" : "s", problem),
										   answer.data),
								false, -1, b->at);
				vb_run_save(&run, b->at);
				return;
			}
			c->corrections++;
			initStringInfo(&data);
			appendStringInfo(&data, "{\"correction\":%d,\"max_corrections\":%d,\"error\":",
							 c->corrections, c->max_corrections);
			vb_append_json_string(&data, problem);
			appendStringInfoChar(&data, '}');
			vb_event(&run, "SELF_CORRECTION", c->node, c->attempt, data.data, b->at);
			vb_llm_add_message(c, "assistant", o.answer.text);
			vb_llm_add_message(c, "user",
						psprintf("Your answer does not match the required JSON schema: %s.\n"
								 "Reply again with only the corrected JSON, matching this schema: %s",
								 problem, c->schema));
			if (vb_llm_stop_if_over_budget(&run, c, strlen(vb_llm_request_body(c)), b->at))
				return;
			/*
			 * A correction is a call of its own: it takes its place under
			 * the rate limits (and a provider's block).  A wait of up to a
			 * minute that its lease and its node's timeout leave room for
			 * is spent here, the conversation kept (the answer it corrects
			 * was paid for); a longer one ends the attempt, uncounted, as a
			 * first call's wait does, and the attempt comes back then.
			 */
			{
				TimestampTz until;
				char	   *why;

				if (!vb_rate_take(c->task_id, c->workspace, c->provider, c->model,
								  (int64) (strlen(vb_llm_request_body(c)) / 4) + 1 + c->max_tokens,
								  b->at, &until, &why))
				{
					vb_event(&run, "RATE_LIMITED", c->node, c->attempt, why, b->at);
					if (hold_correction(c, until, b->at))
					{
						vb_rate_forget_grant(c->task_id);	/* its time is used by the held call */
						vb_run_save(&run, b->at);
						b->done[i] = false;
						return;
					}
					vb_state_abort_attempt(&run, c->task_id, "waiting for its time under a rate limit",
										   until, b->at);
					vb_run_save(&run, b->at);
					return;
				}
			}
			record_request(&run, c, b->at);
			vb_run_save(&run, b->at);
			b->done[i] = false;
			return;
		}
		if (c->allow_spawn && (problem = vb_llm_answer_spawn(c, json, &spawn)) != NULL)
		{
			vb_state_fail_attempt(&run, c->task_id, "permanent",
							vb_llm_error_json("permanent", problem, NULL), false, -1, b->at);
			vb_run_save(&run, b->at);
			return;
		}
	}
	complete_node(&run, c, vb_llm_output_json(c, &o, json), spawn, b->at);
}

/*
 * Handles every finished call in the caller's transaction, each in a
 * subtransaction of its own.
 */
void
vb_llm_finish(VbSweepCounters *counters)
{
	FinishBatch b;
	int			n = 0;
	int			cap = 16;
	VbHttpCall *h;

	b.calls = palloc(sizeof(LlmCall *) * cap);
	b.https = palloc(sizeof(VbHttpCall *) * cap);
	while ((h = vb_http_next_done()) != NULL)
	{
		if (n == cap)
		{
			cap *= 2;
			b.calls = repalloc(b.calls, sizeof(LlmCall *) * cap);
			b.https = repalloc(b.https, sizeof(VbHttpCall *) * cap);
		}
		b.calls[n] = h->owner;
		b.calls[n]->http = NULL;
		b.https[n] = h;
		n++;
	}
	if (n == 0)
		return;
	vb_crash_point(VB_CRASH_LLM_ANSWERED);	/* tests only */
	b.done = palloc0(sizeof(bool) * n);
	b.at = vb_now();
	for (int i = 0; i < n; i++)
	{
		if (!vb_due_item(true, finish_one, &b, i, counters, &b.calls[i]->run_id,
						 VB_ITEM_ATTEMPT, b.calls[i]->task_id, b.at))
			b.done[i] = true;
		vb_http_free(b.https[i]);
		if (b.done[i])
			forget_call(b.calls[i]);
	}
}
