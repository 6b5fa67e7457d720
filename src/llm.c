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
 * IDENTIFICATION
 *	  src/llm.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "vectorbea.h"
#include "claim.h"
#include "clock.h"
#include "complete.h"
#include "due_items.h"
#include "http.h"
#include "jsonb_util.h"
#include "keys.h"
#include "llm.h"
#include "provider_json.h"
#include "redact.h"
#include "settings.h"
#include "spi_util.h"
#include "state.h"
#include "subxact.h"
#include "template.h"

#define SCHEDULER_WORKER		"vectorbea scheduler"
#define LEASE_MARGIN_MS			(60 * 1000)
#define NODE_TIMEOUT_MARGIN_MS	500
#define MAX_MESSAGES			(2 * 10 + 1)	/* the prompt, then answer/correction pairs */
#define MAX_PROVIDER_MESSAGE	500

typedef struct LlmCall
{
	struct LlmCall *next;
	MemoryContext cxt;			/* everything of this call */
	int64		task_id;
	pg_uuid_t	lease;
	pg_uuid_t	run_id;
	char	   *node;
	int			attempt;
	/* the node's llm object */
	char	   *provider;
	char	   *model;
	char	   *system;
	char	   *schema;			/* NULL: any text is an answer */
	char	   *allow_spawn;	/* NULL: no spawning */
	char	   *temperature;
	int			max_tokens;
	int			max_corrections;
	/* this attempt so far */
	int			corrections;
	int			calls;
	int64		tokens_in;
	int64		tokens_out;
	double		cost_usd;
	int			nmessages;
	char	   *roles[MAX_MESSAGES];
	char	   *contents[MAX_MESSAGES];
	/* the request */
	char	   *url;
	char	   *secret;			/* the API key; zeroed when the call ends */
	char	   *auth_header;	/* holds the key too */
	long		timeout_ms;
	bool		send;			/* to be sent after the current transaction */
	VbHttpCall *http;			/* while in flight */
} LlmCall;

static MemoryContext llm_cxt = NULL;
static double price_call(const char *provider, const char *model,
						 int64 tokens_in, int64 tokens_out);
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

/* text without any run of the key (redact.c), cut to a message's length. */
static char *
scrub(const char *text, const char *secret)
{
	return vb_redact(text, secret, MAX_PROVIDER_MESSAGE);
}

static void
add_message(LlmCall *c, const char *role, const char *content)
{
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	if (c->nmessages >= MAX_MESSAGES)
		elog(ERROR, "vectorbea: too many messages in one llm conversation");
	c->roles[c->nmessages] = pstrdup(role);
	c->contents[c->nmessages] = pstrdup(content);
	c->nmessages++;
	MemoryContextSwitchTo(old);
}

/* Writes LLM_REQUESTED for the call about to be sent and extends the lease. */
static void
record_request(VbRun *run, LlmCall *c, size_t body_len, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
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
	appendStringInfo(&data, ",\"call\":%d,\"request_bytes\":%zu,\"max_tokens\":%d,"
					 "\"timeout_ms\":%ld}",
					 c->calls, body_len, c->max_tokens, c->timeout_ms);
	vb_event(run, "LLM_REQUESTED", c->node, c->attempt, data.data, at);
	c->send = true;
}

/*
 * Whether the call about to be made could cross the run's budget: its
 * prompt (about four bytes a token) and max_tokens, priced from
 * model_prices, on top of what the run has used.  If so the call is not
 * made and the run stops with BUDGET_EXCEEDED.
 */
static bool
stop_if_over_budget(VbRun *run, LlmCall *c, size_t body_len, TimestampTz at)
{
	static SPIPlanPtr plan = NULL;
	int64		est_in = (int64) (body_len / 4) + 1;
	int64		est_tokens = est_in + c->max_tokens;
	double		est_usd = Max(price_call(c->provider, c->model, est_in, c->max_tokens), 0);
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

/* The request body of the call's conversation so far. */
static char *
request_body(LlmCall *c)
{
	return vb_json_chat_request(c->provider, c->model, c->system, c->nmessages,
								(const char *const *) c->roles,
								(const char *const *) c->contents,
								c->max_tokens, c->temperature);
}

static char *
error_json(const char *err_class, const char *message, const char *extra)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"message\":");
	vb_append_json_string(&buf, message);
	appendStringInfo(&buf, ",\"class\":\"%s\"%s%s}", err_class, extra ? "," : "", extra ? extra : "");
	return buf.data;
}

/* ---- 1. claim and prepare ---- */

typedef struct ClaimBatch
{
	int64	   *task_ids;
	pg_uuid_t  *leases;
	pg_uuid_t  *run_ids;
	char	  **nodes;
	int		   *attempts;
	Jsonb	  **inputs;
	Jsonb	  **upstreams;
	Jsonb	  **run_inputs;
	char	   *master;
	TimestampTz at;
} ClaimBatch;

static char *
json_text_field(JsonbContainer *obj, const char *key)
{
	JsonbValue	v;

	if (!vb_jsonb_get(obj, key, &v) || v.type == jbvNull)
		return NULL;
	if (v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	return vb_jsonb_value_text(&v);
}

static int
json_int_field(JsonbContainer *obj, const char *key)
{
	char	   *s = json_text_field(obj, key);

	return s ? atoi(s) : 0;
}

/* Zeroes the bytes of a plain (not compressed, not toasted) text datum. */
static void
forget_text(Datum d)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(d);

	if (v == NULL)
		return;
	if (VARATT_IS_SHORT(v))
		explicit_bzero(VARDATA_SHORT(v), VARSIZE_SHORT(v) - VARHDRSZ_SHORT);
	else if (!VARATT_IS_EXTENDED(v))
		explicit_bzero(VARDATA(v), VARSIZE(v) - VARHDRSZ);
}

/* Fails the claimed attempt without a call: nothing was sent. */
static void
fail_unsent(ClaimBatch *b, int i, VbRun *run, const char *err_class, const char *message)
{
	vb_state_fail_attempt(run, b->task_ids[i], err_class, error_json(err_class, message, NULL),
					strcmp(err_class, "permanent") != 0, -1, b->at);
	vb_run_save(run, b->at);
}

static void
prepare_one(void *arg, int i)
{
	static SPIPlanPtr plan = NULL;
	static char *plan_schema = NULL;
	ClaimBatch *b = arg;
	const char *schema = vb_pgcrypto_schema();
	Datum		args[2];
	Oid			types[2] = {INT8OID, TEXTOID};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Jsonb	   *spec;
	char	   *workspace;
	char	   *base_url;
	char	   *key;
	char	   *prompt;
	char	   *system = NULL;
	char	   *problem;
	char	   *url;
	VbRun		run;
	LlmCall    *c;
	MemoryContext cxt;
	MemoryContext old;

	if (!vb_run_lock(&b->run_ids[i], &run))
		return;
	if (plan == NULL || strcmp(plan_schema, schema) != 0)
	{
		/* pgcrypto's schema is looked up, not assumed; replan if it moved. */
		plan = vb_prepare(psprintf("SELECT n.llm, r.workspace, k.base_url,"
								   "       CASE WHEN k.ciphertext IS NOT NULL THEN"
								   "         %s.pgp_sym_decrypt(k.ciphertext,"
								   "           $2 || E'\\n' || k.workspace || E'\\n' || k.provider) END"
								   "  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
								   "  LEFT JOIN vectorbea.provider_keys k"
								   "    ON k.workspace = r.workspace AND k.provider = n.llm->>'provider'"
								   " WHERE n.id = $1", schema),
						  lengthof(types), types);
		plan_schema = MemoryContextStrdup(TopMemoryContext, schema);
	}
	args[0] = Int64GetDatum(b->task_ids[i]);
	args[1] = CStringGetTextDatum(b->master);
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: llm node %ld vanished", (long) b->task_ids[i]);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	spec = DatumGetJsonbP(SPI_getbinval(tup, desc, 1, &isnull));
	workspace = SPI_getvalue(tup, desc, 2);
	base_url = SPI_getvalue(tup, desc, 3);
	key = SPI_getvalue(tup, desc, 4);
	/* Leave no copy of the master key or of the plaintext key behind. */
	forget_text(args[1]);
	if (key)
		forget_text(SPI_getbinval(tup, desc, 4, &isnull));

	if (key == NULL)
	{
		char	   *provider = json_text_field(&spec->root, "provider");

		fail_unsent(b, i, &run, "permanent",
					psprintf("no key is stored for provider \"%s\" in workspace \"%s\"; store one with vectorbea.set_provider_key()",
							 provider, workspace));
		return;
	}
	for (const char *p = key; *p; p++)
		if (*p == '\r' || *p == '\n')
		{
			explicit_bzero(key, strlen(key));
			fail_unsent(b, i, &run, "permanent",
						"the stored provider key contains a line break; store it again");
			return;
		}

	prompt = vb_template_render(json_text_field(&spec->root, "prompt"), b->inputs[i],
								b->upstreams[i], b->run_inputs[i], &problem);
	if (prompt && json_text_field(&spec->root, "system"))
		system = vb_template_render(json_text_field(&spec->root, "system"), b->inputs[i],
									b->upstreams[i], b->run_inputs[i], &problem);
	if (problem)
	{
		explicit_bzero(key, strlen(key));
		fail_unsent(b, i, &run, "permanent",
					psprintf("node \"%s\", field \"llm.%s\": %s", b->nodes[i],
							 prompt ? "system" : "prompt", problem));
		return;
	}

	cxt = AllocSetContextCreate(llm_cxt, "vectorbea llm call", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	c = palloc0(sizeof(LlmCall));
	c->cxt = cxt;
	c->task_id = b->task_ids[i];
	c->lease = b->leases[i];
	c->run_id = b->run_ids[i];
	c->node = pstrdup(b->nodes[i]);
	c->attempt = b->attempts[i];
	c->provider = json_text_field(&spec->root, "provider");
	c->model = json_text_field(&spec->root, "model");
	c->system = system ? pstrdup(system) : NULL;
	c->schema = json_text_field(&spec->root, "output_schema");
	c->allow_spawn = json_text_field(&spec->root, "allow_spawn");
	c->temperature = json_text_field(&spec->root, "temperature");
	c->max_tokens = json_int_field(&spec->root, "max_tokens");
	c->max_corrections = json_int_field(&spec->root, "max_corrections");
	c->timeout_ms = vb_llm_request_timeout_ms;	/* record_request may shorten it */
	/* "https://host/v1/" and "https://host/v1" name the same endpoint. */
	if (base_url)
	{
		size_t		len = strlen(base_url);

		while (len > 0 && base_url[len - 1] == '/')
			base_url[--len] = '\0';
	}
	if (strcmp(c->provider, "anthropic") == 0)
	{
		url = psprintf("%s/messages", base_url ? base_url : "https://api.anthropic.com/v1");
		c->auth_header = psprintf("x-api-key: %s", key);
	}
	else
	{
		url = psprintf("%s/chat/completions", base_url ? base_url : "https://api.openai.com/v1");
		c->auth_header = psprintf("Authorization: Bearer %s", key);
	}
	c->url = url;
	c->secret = pstrdup(key);
	MemoryContextSwitchTo(old);
	explicit_bzero(key, strlen(key));
	add_message(c, "user", prompt);

	problem = vb_http_check_url(url);
	if (problem == NULL && stop_if_over_budget(&run, c, strlen(request_body(c)), b->at))
		problem = "";
	if (problem)
	{
		explicit_bzero(c->secret, strlen(c->secret));
		explicit_bzero(c->auth_header, strlen(c->auth_header));
		MemoryContextDelete(cxt);
		if (problem[0] != '\0')
			fail_unsent(b, i, &run, "permanent", problem);
		return;
	}
	record_request(&run, c, strlen(request_body(c)), b->at);
	vb_run_save(&run, b->at);
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

		plan = vb_prepare("SELECT FROM vectorbea.nodes"
						  " WHERE status = 'ready' AND activity = '" VB_LLM_ACTIVITY "'"
						  "   AND available_at <= $1 LIMIT 1", lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: llm work lookup failed");
	return SPI_processed > 0;
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
 * them once it has committed.
 */
void
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
		return;
	if (!llm_work_ready())
		return;

	/*
	 * Without the master key no call can be made: leave the nodes ready
	 * (claiming them would only fail them) and say why.  The next pass
	 * tries again.
	 */
	master = read_master_key_or_warn(counters);
	if (master == NULL)
		return;
	lease = palloc0(sizeof(Interval));
	lease->time = (int64) (vb_llm_request_timeout_ms + LEASE_MARGIN_MS) * 1000;
	activities = construct_array(&activity, 1, TEXTOID, -1, false, TYPALIGN_INT);
	at = vb_now();
	vb_claim(SCHEDULER_WORKER, activities, room, lease, at, &started);
	n = started.count;
	if (n == 0)
	{
		vb_forget(master);
		return;
	}

	memset(&b, 0, sizeof(b));
	b.master = master;
	b.at = at;
	b.task_ids = palloc(sizeof(int64) * n);
	b.run_ids = palloc(sizeof(pg_uuid_t) * n);
	b.leases = palloc(sizeof(pg_uuid_t) * n);
	b.nodes = palloc(sizeof(char *) * n);
	b.attempts = palloc(sizeof(int) * n);
	b.inputs = palloc(sizeof(Jsonb *) * n);
	b.upstreams = palloc(sizeof(Jsonb *) * n);
	b.run_inputs = palloc(sizeof(Jsonb *) * n);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = started.rows->vals[i];
		TupleDesc	desc = started.rows->tupdesc;
		bool		isnull;

		/* claim_tasks' columns: task_id, lease, run_id, node, activity, attempt, ... */
		b.task_ids[i] = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		memcpy(&b.leases[i], DatumGetUUIDP(SPI_getbinval(tup, desc, 2, &isnull)), sizeof(pg_uuid_t));
		memcpy(&b.run_ids[i], DatumGetUUIDP(SPI_getbinval(tup, desc, 3, &isnull)), sizeof(pg_uuid_t));
		b.nodes[i] = SPI_getvalue(tup, desc, 4);
		b.attempts[i] = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		b.inputs[i] = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 8, &isnull));
		b.upstreams[i] = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 9, &isnull));
		b.run_inputs[i] = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 13, &isnull));
	}
	for (uint64 i = 0; i < n; i++)
		vb_due_item(true, prepare_one, &b, (int) i, counters, &b.run_ids[i],
					VB_ITEM_ATTEMPT, b.task_ids[i], b.at);
	vb_forget(b.master);
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
		body = request_body(c);
		c->http = vb_http_start(c->url, nheaders, headers, body, c->timeout_ms,
								Min(vb_llm_connect_timeout_ms, c->timeout_ms),
								(size_t) vb_llm_max_response_kb * 1024, c);
		pfree(body);
	}
}

/*
 * Drops calls that were recorded but whose transaction rolled back, and
 * calls whose lease is gone (their run was cancelled or failed, or their
 * lease expired): the answer could not be used.
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
	if (SPI_execute_with_args("SELECT t.id FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS t(id, lease)"
							  " WHERE NOT EXISTS (SELECT FROM vectorbea.nodes n"
							  "                    WHERE n.id = t.id AND n.lease = t.lease"
							  "                      AND n.status = 'running')",
							  2, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not check the leases of llm calls");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		LlmCall    *c = calls;

		while (c && c->task_id != id)
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

typedef struct Outcome
{
	const char *err_class;		/* NULL: the provider answered */
	char	   *message;
	int64		retry_after_ms;
	VbLlmAnswer answer;
} Outcome;

static int64
retry_after_ms(const char *value)
{
	char	   *end;
	double		secs;

	if (value[0] == '\0')
		return -1;
	secs = strtod(value, &end);
	if (end != value && *end == '\0' && secs >= 0)
		return (int64) (secs * 1000);
	/* An HTTP date: how far it is from now. */
	{
		TimestampTz when;

		PG_TRY();
		{
			when = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(value),
														   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
		}
		PG_CATCH();
		{
			FlushErrorState();
			return -1;
		}
		PG_END_TRY();
		return Max((when - GetCurrentTimestamp()) / 1000, 0);
	}
}

/* Classifies a finished HTTP call. */
static void
classify(LlmCall *c, VbHttpCall *h, Outcome *o)
{
	char	   *provider_msg;
	char	   *problem;

	memset(o, 0, sizeof(*o));
	o->retry_after_ms = -1;
	if (h->refused_address && h->result != CURLE_OK)
	{
		o->err_class = "permanent";
		o->message = psprintf("the connection to %s was refused: the address is not allowed by vectorbea.llm_allowed_hosts",
							  h->refused_text);
		return;
	}
	if (h->too_large)
	{
		o->err_class = "permanent";
		o->message = psprintf("the provider's response exceeded vectorbea.llm_max_response_size (%d kB)",
							  vb_llm_max_response_kb);
		return;
	}
	if (h->result == CURLE_OPERATION_TIMEDOUT && !h->connected)
	{
		o->err_class = "transient";
		o->message = psprintf("could not connect to the provider within %ld ms: %s",
							  (long) h->elapsed_ms, scrub(h->errbuf, c->secret));
		return;
	}
	if (h->result == CURLE_OPERATION_TIMEDOUT)
	{
		o->err_class = "transient";
		o->message = psprintf("the provider did not answer within %ld ms (the call's timeout)",
							  c->timeout_ms);
		return;
	}
	if (h->result != CURLE_OK)
	{
		o->err_class = "transient";
		o->message = psprintf("the call failed after %ld ms: %s", (long) h->elapsed_ms,
							  scrub(h->errbuf, c->secret));
		return;
	}
	provider_msg = h->response ? vb_json_error_message(h->response, h->response_len) : NULL;
	provider_msg = scrub(provider_msg ? provider_msg : "(no message)", c->secret);
	if (h->status == 429)
	{
		o->err_class = "rate_limited";
		o->retry_after_ms = retry_after_ms(h->retry_after);
		o->message = psprintf("the provider answered 429 (rate limited): %s", provider_msg);
		return;
	}
	if (h->status >= 500)
	{
		o->err_class = "transient";
		o->message = psprintf("the provider answered %ld: %s", h->status, provider_msg);
		return;
	}
	if (h->status < 200 || h->status >= 300)
	{
		o->err_class = "permanent";
		o->message = psprintf("the provider answered %ld: %s", h->status, provider_msg);
		return;
	}
	if (!vb_json_parse_answer(c->provider, h->response ? h->response : "",
							  h->response_len, &o->answer, &problem))
	{
		o->err_class = "transient";
		o->message = problem;
	}
}

/* Price of one call from model_prices; -1 when the model has no price. */
static double
price_call(const char *provider, const char *model, int64 tokens_in, int64 tokens_out)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4];
	bool		isnull;
	Datum		d;

	if (plan == NULL)
	{
		Oid			types[4] = {TEXTOID, TEXTOID, INT8OID, INT8OID};

		/* The longest listed prefix: "gpt-4o-mini-2024-07-18" is gpt-4o-mini. */
		plan = vb_prepare("SELECT ($3 * input_usd_per_mtok + $4 * output_usd_per_mtok)"
						  "       / 1000000.0"
						  "  FROM vectorbea.model_prices"
						  " WHERE provider = $1 AND pg_catalog.starts_with($2, model)"
						  " ORDER BY pg_catalog.length(model) DESC, source = 'user' DESC LIMIT 1",
						  lengthof(types), types);
	}
	args[0] = CStringGetTextDatum(provider);
	args[1] = CStringGetTextDatum(model);
	args[2] = Int64GetDatum(tokens_in);
	args[3] = Int64GetDatum(tokens_out);
	if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: model price lookup failed");
	if (SPI_processed == 0)
		return -1;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8, d));
}

/*
 * Writes LLM_CALLED and books the call's cost on the run.  Returns false
 * when that crossed the run's budget (the run has then failed).
 */
static bool
record_call(VbRun *run, LlmCall *c, VbHttpCall *h, Outcome *o, TimestampTz at)
{
	StringInfoData data;
	double		usd = 0;
	double		price = -1;
	int64		tokens;
	char	   *usd_text;
	char	   *budget;

	if (o->err_class == NULL)
	{
		price = price_call(c->provider, o->answer.model ? o->answer.model : c->model,
						   o->answer.tokens_in, o->answer.tokens_out);
		if (price < 0 && o->answer.model)
			price = price_call(c->provider, c->model, o->answer.tokens_in, o->answer.tokens_out);
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
		if (vb_state_book_usage(run, tokens, usd_text, &budget))
		{
			vb_event(run, "BUDGET_EXCEEDED", c->node, c->attempt, budget, at);
			vb_state_fail_run(run, c->node, "budget_exceeded", at);
			return false;
		}
	}
	return true;
}

/*
 * Checks the model's spawn list against allow_spawn; NULL when it may be
 * passed to complete_task (which validates it like any spawn list).
 */
static char *
check_spawn(LlmCall *c, const char *spawn_text)
{
	Jsonb	   *allow = vb_jsonb_from_cstring(c->allow_spawn);
	Jsonb	   *spawn = vb_jsonb_from_cstring(spawn_text);
	JsonbValue	acts;
	JsonbValue	maxv;
	int			max_nodes;
	int			n;

	vb_jsonb_get(&allow->root, "activities", &acts);
	vb_jsonb_get(&allow->root, "max_nodes", &maxv);
	max_nodes = atoi(vb_jsonb_value_text(&maxv));
	if (!JsonContainerIsArray(&spawn->root) || JsonContainerIsScalar(&spawn->root))
		return pstrdup("the answer's \"spawn\" must be an array of node objects");
	n = JsonContainerSize(&spawn->root);
	if (n > max_nodes)
		return psprintf("the answer's \"spawn\" adds %d nodes; \"allow_spawn.max_nodes\" allows %d",
						n, max_nodes);
	for (int i = 0; i < n; i++)
	{
		JsonbValue *node = getIthJsonbValueFromContainer(&spawn->root, i);
		JsonbValue	v;
		char	   *activity;
		bool		allowed = false;

		if (node->type != jbvBinary || !JsonContainerIsObject(node->val.binary.data))
			return psprintf("the answer's spawn[%d] is not a node object", i);
		if (vb_jsonb_get(node->val.binary.data, "kind", &v) &&
			!(v.type == jbvString && v.val.string.len == 4 &&
			  strncmp(v.val.string.val, "task", 4) == 0))
			return psprintf("the answer's spawn[%d] is not a task node; an llm node may add task nodes only", i);
		if (!vb_jsonb_get(node->val.binary.data, "activity", &v) || v.type != jbvString)
			return psprintf("the answer's spawn[%d] has no activity", i);
		activity = pnstrdup(v.val.string.val, v.val.string.len);
		for (uint32 k = 0; k < JsonContainerSize(acts.val.binary.data); k++)
		{
			JsonbValue *a = getIthJsonbValueFromContainer(acts.val.binary.data, k);

			if (a->val.string.len == (int) strlen(activity) &&
				strncmp(a->val.string.val, activity, a->val.string.len) == 0)
				allowed = true;
		}
		if (!allowed)
			return psprintf("the answer's spawn[%d] has activity \"%s\", which \"allow_spawn.activities\" does not list (it allows %s)",
							i, activity, vb_jsonb_value_text(&acts));
	}
	return NULL;
}

/* The node's output: the answer, its JSON, the model, usage and cost. */
static char *
output_json(LlmCall *c, Outcome *o, const char *json)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"text\":");
	vb_append_json_string(&buf, o->answer.text);
	if (json)
		appendStringInfo(&buf, ",\"json\":%s", json);
	appendStringInfoString(&buf, ",\"model\":");
	vb_append_json_string(&buf, o->answer.model ? o->answer.model : c->model);
	appendStringInfo(&buf, ",\"usage\":{\"input_tokens\":%ld,\"output_tokens\":%ld},"
					 "\"cost_usd\":%.8f,\"calls\":%d,\"corrections\":%d}",
					 (long) c->tokens_in, (long) c->tokens_out, c->cost_usd,
					 c->calls, c->corrections);
	return buf.data;
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
							  error_json("permanent", refused, NULL), false, -1, at);
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
	Outcome		o;
	VbRun		run;
	char	   *json = NULL;
	char	   *problem;
	char	   *spawn = NULL;

	b->done[i] = true;
	if (!vb_run_lock(&c->run_id, &run) || !lease_held(c))
		return;					/* cancelled or taken over meanwhile */
	classify(c, h, &o);
	if (!record_call(&run, c, h, &o, b->at))
	{
		vb_run_save(&run, b->at);
		return;
	}
	if (o.err_class)
	{
		char	   *extra = o.retry_after_ms >= 0 ?
			psprintf("\"retry_after\":\"%ldms\"", (long) o.retry_after_ms) : NULL;

		vb_state_fail_attempt(&run, c->task_id, o.err_class, error_json(o.err_class, o.message, extra),
						strcmp(o.err_class, "permanent") != 0, o.retry_after_ms, b->at);
		vb_run_save(&run, b->at);
		return;
	}
	if (c->schema)
	{
		problem = vb_json_check_answer(c->schema, o.answer.text, &json);
		if (problem)
		{
			StringInfoData data;

			if (c->corrections >= c->max_corrections)
			{
				vb_state_fail_attempt(&run, c->task_id, "invalid_output",
								error_json("invalid_output",
										   psprintf("the answer does not match the output schema after %d correction%s: %s",
													c->corrections, c->corrections == 1 ? "" : "s", problem),
										   NULL),
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
			add_message(c, "assistant", o.answer.text);
			add_message(c, "user",
						psprintf("Your answer does not match the required JSON schema: %s.\n"
								 "Reply again with only the corrected JSON, matching this schema: %s",
								 problem, c->schema));
			if (stop_if_over_budget(&run, c, strlen(request_body(c)), b->at))
				return;
			record_request(&run, c, strlen(request_body(c)), b->at);
			vb_run_save(&run, b->at);
			b->done[i] = false;
			return;
		}
		if (c->allow_spawn)
		{
			spawn = vb_json_member(json, "spawn");
			if (spawn && strcmp(spawn, "null") != 0 && (problem = check_spawn(c, spawn)) != NULL)
			{
				vb_state_fail_attempt(&run, c->task_id, "permanent",
								error_json("permanent", problem, NULL), false, -1, b->at);
				vb_run_save(&run, b->at);
				return;
			}
			if (spawn && strcmp(spawn, "null") == 0)
				spawn = NULL;
		}
	}
	complete_node(&run, c, output_json(c, &o, json), spawn, b->at);
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

/* ---- after a restart ---- */

typedef struct RecoverBatch
{
	int64	   *task_ids;
	pg_uuid_t  *run_ids;
	TimestampTz at;
} RecoverBatch;

static void
recover_one(void *arg, int i)
{
	RecoverBatch *b = arg;
	VbRun		run;

	if (!vb_run_lock(&b->run_ids[i], &run) || run.status != VB_RUN_RUNNING)
		return;
	vb_state_fail_attempt(&run, b->task_ids[i], "transient",
					"{\"message\":\"in doubt: the scheduler stopped while the call was in flight; the provider may have answered\","
					"\"class\":\"transient\",\"in_doubt\":true}",
					true, -1, b->at);
	vb_run_save(&run, b->at);
}

/*
 * At start: llm attempts still running belong to a scheduler that is gone
 * (one per database), so their calls are in doubt.  They end as transient
 * failures marked in_doubt and are retried by their retry policy.
 */
void
vb_llm_recover(VbSweepCounters *counters)
{
	RecoverBatch b;
	uint64		n;

	if (SPI_execute("SELECT n.id, n.run_id FROM vectorbea.nodes n"
					" WHERE n.status = 'running' AND n.activity = '" VB_LLM_ACTIVITY "'",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look for llm calls in doubt");
	n = SPI_processed;
	if (n == 0)
		return;
	b.at = vb_now();
	vb_read_due_items(1, 2, &b.task_ids, &b.run_ids);
	for (uint64 i = 0; i < n; i++)
		vb_due_item(true, recover_one, &b, (int) i, counters, &b.run_ids[i],
					VB_ITEM_ATTEMPT, b.task_ids[i], b.at);
}
