/*-------------------------------------------------------------------------
 *
 * llm_answer.c
 *	  What a finished llm call means: its failure class (429 rate limited,
 *	  5xx and broken bodies transient, other 4xx permanent ...), the
 *	  provider's message with the key redacted, the model's spawn list
 *	  checked against allow_spawn, and the node's output.
 *
 * IDENTIFICATION
 *	  src/llm_answer.c
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
#include "clock.h"
#include "duration.h"
#include "encoding.h"
#include "jsonb_util.h"
#include "llm_call.h"
#include "redact.h"
#include "settings.h"

/* The longest model name an answer's "model" is recorded with (bytes). */
#define VB_MAX_MODEL_USED 200

/*
 * text without any run of the key (redact.c), valid in the database's
 * encoding, cut to a message's length.
 */
static char *
scrub(const char *text, const char *secret)
{
	return vb_redact(vb_valid_text(text), secret, MAX_PROVIDER_MESSAGE);
}

char *
vb_llm_error_json(const char *err_class, const char *message, const char *extra)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"message\":");
	vb_append_json_string(&buf, message);
	appendStringInfo(&buf, ",\"class\":\"%s\"%s%s}", err_class, extra ? "," : "", extra ? extra : "");
	return buf.data;
}

/*
 * How far ahead a provider's word on when to call again is believed: the
 * engine's longest duration (duration.c).  Further is a provider's mistake,
 * and as microseconds added to the clock it would overflow.
 */
#define MAX_WAIT_MS		((int64) 366 * 24 * 3600 * 1000)

/* Retry-After: seconds or an HTTP date; -1 when absent or unreadable. */
static int64
retry_after_ms(const char *value)
{
	char	   *end;
	double		secs;

	if (value[0] == '\0')
		return -1;
	secs = strtod(value, &end);
	if (end != value && *end == '\0' && secs >= 0)
		return secs * 1000 < MAX_WAIT_MS ? (int64) (secs * 1000) : MAX_WAIT_MS;
	/*
	 * An HTTP date: how far it is from now.  curl reads the header's date
	 * formats and says -1 to anything else, without an error to catch.
	 */
	{
		time_t		when = curl_getdate(value, NULL);

		if (when == (time_t) -1)
			return -1;
		return Min(Max((time_t_to_timestamptz((pg_time_t) when) - GetCurrentTimestamp()) / 1000, 0),
				   MAX_WAIT_MS);
	}
}

/*
 * A response that says no requests remain (x-ratelimit-remaining-requests
 * or anthropic-ratelimit-requests-remaining: 0) blocks calls until their
 * reset: a duration ("1s", "6m0s", OpenAI) or a time (Anthropic).
 */
static void
requests_exhausted(VbHttpCall *h, VbLlmOutcome *o)
{
	int64		ms;
	TimestampTz when;

	if (strcmp(h->requests_remaining, "0") != 0 || h->requests_reset[0] == '\0')
		return;
	/* On the engine's clock, which the test clock may have moved. */
	if (vb_parse_duration(h->requests_reset, &ms))
		o->blocked_until = vb_now() + ms * 1000;
	else if (vb_parse_timestamp(h->requests_reset, &when))
		o->blocked_until = vb_now() +
			Min(Max(when - GetCurrentTimestamp(), 0), MAX_WAIT_MS * 1000);
}

/* Classifies a finished HTTP call. */
void
vb_llm_classify(LlmCall *c, VbHttpCall *h, VbLlmOutcome *o)
{
	char	   *provider_msg;
	char	   *problem;
	bool		parsed;
	char	   *reported_model;

	memset(o, 0, sizeof(*o));
	o->retry_after_ms = -1;
	requests_exhausted(h, o);
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
	if (h->result == CURLE_SEND_FAIL_REWIND)
	{
		/* curl would have sent it again on a new connection (http.c, read_cb). */
		o->err_class = "transient";
		o->message = psprintf("the connection was lost after the request was sent (after %ld ms); it was not sent again, and the provider may have received it",
							  (long) h->elapsed_ms);
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
	provider_msg = scrub(vb_from_utf8_lossy(provider_msg ? provider_msg : "(no message)"), c->secret);
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
	parsed = vb_json_parse_answer(c->provider, h->response ? h->response : "",
								  h->response_len, &o->answer, &problem);
	/*
	 * The model name the provider reports is any text of its: it is kept
	 * only with an answer, converted and redacted below, never raw with a
	 * refusal or a problem (a proxy that echoes the key would put it in
	 * LLM_CALLED's model_used).
	 */
	reported_model = o->answer.model;
	o->answer.model = NULL;
	if (!parsed)
	{
		o->err_class = "transient";
		/* jansson's message quotes the body near the error, which may echo the key. */
		o->message = scrub(problem, c->secret);
		return;
	}
	if (o->answer.refusal)
	{
		/* Asking again gets the same no, and each asking is paid for. */
		o->err_class = "permanent";
		o->message = o->answer.refusal[0] == '\0' ?
			pstrdup("the model refused to answer and gave no reason") :
			psprintf("the model refused to answer: %s",
					 scrub(vb_from_utf8_lossy(o->answer.refusal), c->secret));
		return;
	}
	/* From here on the answer is text of the database (encoding.c). */
	problem = NULL;
	o->answer.text = vb_from_utf8(o->answer.text, strlen(o->answer.text), "the answer", &problem);
	if (o->answer.text && reported_model)
		reported_model = vb_from_utf8(reported_model, strlen(reported_model),
									  "the model name the provider reports", &problem);
	if (problem)
	{
		o->err_class = "permanent";
		o->message = problem;
		return;
	}
	/*
	 * An answer stays in the history and the node's output: a provider (or
	 * a proxy in front of it) that echoes the key must not put it there.
	 */
	o->answer.text = vb_redact(o->answer.text, c->secret, 0);
	if (reported_model)
		o->answer.model = vb_redact(reported_model, c->secret, VB_MAX_MODEL_USED);
}

/* True when the JSON value is the string word. */
static bool
is_word(JsonbValue *v, const char *word)
{
	return v->type == jbvString && v->val.string.len == (int) strlen(word) &&
		strncmp(v->val.string.val, word, v->val.string.len) == 0;
}

/* True when activities (allow_spawn's array) lists activity. */
static bool
lists(JsonbValue *activities, const char *activity, int len)
{
	for (uint32 k = 0; k < JsonContainerSize(activities->val.binary.data); k++)
	{
		JsonbValue *a = getIthJsonbValueFromContainer(activities->val.binary.data, k);

		if (a->type == jbvString && a->val.string.len == len &&
			strncmp(a->val.string.val, activity, len) == 0)
			return true;
	}
	return false;
}

/*
 * Checks one part of a spawned node, the node itself or its "compensate"
 * (where names it: "spawn[0]", "spawn[0].compensate"), against the llm
 * node's allowance: a task of a listed activity, or an llm node when
 * "vectorbea:llm" is listed, whose own allow_spawn stays within this one;
 * and nothing that asks a person (an escalation or in-doubt gate).  NULL
 * when it may go on to complete_task's validation.
 */
static char *
check_spawned_part(JsonbContainer *part, const char *where, JsonbValue *acts, int max_nodes)
{
	JsonbValue	v;
	JsonbValue	kind;
	JsonbValue	llm;
	bool		has_kind = vb_jsonb_get(part, "kind", &kind);
	bool		is_llm = has_kind && is_word(&kind, "llm");
	JsonbContainer *llm_spec = NULL;	/* the llm object of an llm node */

	if (is_llm)
	{
		if (!lists(acts, VB_LLM_ACTIVITY, strlen(VB_LLM_ACTIVITY)))
			return psprintf("the answer's %s is an llm node, which \"allow_spawn.activities\" does not allow (it allows %s; \"%s\" would)",
							where, vb_short_text(vb_jsonb_value_text(acts)), VB_LLM_ACTIVITY);
		if (vb_jsonb_get(part, "llm", &llm) && llm.type == jbvBinary &&
			JsonContainerIsObject(llm.val.binary.data))
			llm_spec = llm.val.binary.data;
	}
	else if (has_kind && !is_word(&kind, "task"))
		return psprintf("the answer's %s is not a task or llm node; an llm node may add those only", where);
	else if (!vb_jsonb_get(part, "activity", &v) || v.type != jbvString)
		return psprintf("the answer's %s has no activity", where);
	else if (!lists(acts, v.val.string.val, v.val.string.len))
		return psprintf("the answer's %s has activity \"%s\", which \"allow_spawn.activities\" does not list (it allows %s)",
						where, vb_short_text(pnstrdup(v.val.string.val, v.val.string.len)),
						vb_short_text(vb_jsonb_value_text(acts)));

	/* A person is asked only where the workflow's author said so. */
	if ((vb_jsonb_get(part, "on_exhausted", &v) && is_word(&v, "escalate")) ||
		(vb_jsonb_get(part, "in_doubt", &v) && is_word(&v, "ask")) ||
		vb_jsonb_get(part, "escalation", &v) ||
		(llm_spec && vb_jsonb_get(llm_spec, "on_exhausted", &v) && is_word(&v, "escalate")))
		return psprintf("the answer's %s asks for a person (\"on_exhausted\": \"escalate\", \"in_doubt\": \"ask\" or \"escalation\"), which an llm node may not add", where);

	/* A spawned planner may spawn only what this one may, and no more at once. */
	if (llm_spec && vb_jsonb_get(llm_spec, "allow_spawn", &v) && v.type == jbvBinary &&
		JsonContainerIsObject(v.val.binary.data))
	{
		JsonbValue	inner;

		if (vb_jsonb_get(v.val.binary.data, "activities", &inner) && inner.type == jbvBinary &&
			JsonContainerIsArray(inner.val.binary.data))
			for (uint32 k = 0; k < JsonContainerSize(inner.val.binary.data); k++)
			{
				JsonbValue *a = getIthJsonbValueFromContainer(inner.val.binary.data, k);

				if (a->type == jbvString && !lists(acts, a->val.string.val, a->val.string.len))
					return psprintf("the answer's %s has \"llm.allow_spawn\" with activity \"%s\", which \"allow_spawn.activities\" does not list (it allows %s)",
									where, vb_short_text(pnstrdup(a->val.string.val, a->val.string.len)),
									vb_short_text(vb_jsonb_value_text(acts)));
			}
		if (vb_jsonb_get(v.val.binary.data, "max_nodes", &inner) && inner.type == jbvNumeric &&
			strtod(vb_jsonb_value_text(&inner), NULL) > max_nodes)
			return psprintf("the answer's %s has \"llm.allow_spawn.max_nodes\" %s; \"allow_spawn.max_nodes\" allows %d",
							where, vb_short_text(vb_jsonb_value_text(&inner)), max_nodes);
	}
	return NULL;
}

/*
 * Checks the model's spawn list against allow_spawn; NULL when it may be
 * passed to complete_task (which validates it like any spawn list).  Every
 * part of a node that runs work is checked: the node and its compensation.
 */
char *
vb_llm_check_spawn(LlmCall *c, const char *spawn_text)
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
		JsonbValue	comp;
		char	   *problem;

		if (node->type != jbvBinary || !JsonContainerIsObject(node->val.binary.data))
			return psprintf("the answer's spawn[%d] is not a node object", i);
		problem = check_spawned_part(node->val.binary.data, psprintf("spawn[%d]", i),
									 &acts, max_nodes);
		if (problem == NULL && vb_jsonb_get(node->val.binary.data, "compensate", &comp) &&
			comp.type == jbvBinary && JsonContainerIsObject(comp.val.binary.data))
			problem = check_spawned_part(comp.val.binary.data,
										 psprintf("spawn[%d].compensate", i), &acts, max_nodes);
		if (problem)
			return problem;
	}
	return NULL;
}

/*
 * The spawn list of an answer the schema accepted (json: its JSON text),
 * checked against allow_spawn: NULL with *spawn the list's JSON text (NULL
 * when the answer has none, or null), or what is wrong.  A schema of the
 * user's own may let a value other than an object through.
 */
char *
vb_llm_answer_spawn(LlmCall *c, const char *json, char **spawn)
{
	Jsonb	   *answer = vb_jsonb_from_cstring(json);
	JsonbValue	member;

	*spawn = NULL;
	if (!JsonContainerIsObject(&answer->root))
		return psprintf("the answer is a JSON %s; with \"allow_spawn\" it must be an object",
						JsonContainerIsArray(&answer->root) && !JsonContainerIsScalar(&answer->root) ?
						"array" : "scalar");
	if (!vb_jsonb_get(&answer->root, "spawn", &member) || member.type == jbvNull)
		return NULL;
	*spawn = vb_jsonb_value_text(&member);
	return vb_llm_check_spawn(c, *spawn);
}

/* The node's output: the answer, its JSON, the model, usage and cost, and whether it was cut. */
char *
vb_llm_output_json(LlmCall *c, VbLlmOutcome *o, const char *json)
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
					 "\"cost_usd\":%.8f,\"calls\":%d,\"corrections\":%d",
					 (long) c->tokens_in, (long) c->tokens_out, c->cost_usd,
					 c->calls, c->corrections);
	/* Cut at max_tokens: the text is not all the model would have said. */
	if (o->answer.truncated)
		appendStringInfoString(&buf, ",\"truncated\":true");
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

