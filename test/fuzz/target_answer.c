/*-------------------------------------------------------------------------
 *
 * target_answer.c
 *	  Fuzz target "answer": what the engine makes of a provider's HTTP
 *	  response (llm_answer.c, provider_json.c, redact.c, and validate.c
 *	  for a spawn list), in the order llm.c's finish_one() takes it.
 *
 * The input is the response, bytes as they come off the network:
 *
 *	  <provider> <mode> <status> [<curl result>]
 *	  <header>: <value>
 *	  ...
 *	  <empty line>
 *	  <body>
 *
 * provider is openai or anthropic; mode is plain (no output schema),
 * schema (a fixed output schema) or spawn (allow_spawn, and the schema a
 * spawn list needs); curl result is libcurl's code (0 when absent).  The
 * headers http.c keeps (Retry-After and the remaining-requests pair) are
 * kept as header_cb() keeps them: name without case, value trimmed and cut
 * to the field's size; "curl-error:" stands for libcurl's error text.
 *
 * The checks: whatever the response, the error or output the engine would
 * store is JSON in valid UTF-8, no run of the API key survives in an error
 * message (redact.c), the times the provider's headers set are within the
 * year ahead the engine believes (and do not overflow), and a correction
 * request can be built from what the checker said.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "common/int.h"
#include "utils/timestamp.h"

#include "clock.h"
#include "http.h"
#include "jsonb_util.h"
#include "llm_call.h"
#include "validate.h"

#include "fuzz.h"

#define SECRET			"sk-FUZZ-q7Rk2Wx9Lm4Tz8Np3Vb6"
#define REDACT_MIN_RUN	8		/* redact.c's VB_REDACT_MIN_RUN */
#define MAX_WAIT_MS		((int64) 366 * 24 * 3600 * 1000)	/* llm_answer.c's */

static const char answer_schema[] =
"{\"type\":\"object\",\"properties\":{\"answer\":{\"type\":\"string\"},"
"\"score\":{\"type\":\"integer\"},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"},"
"\"maxItems\":3}},\"required\":[\"answer\"]}";
static const char spawn_schema[] = "{\"type\":\"object\"}";
static const char allow_spawn[] =
"{\"activities\":[\"work\",\"review\",\"vectorbea:llm\"],\"max_nodes\":3}";
static const char definition[] =
"{\"nodes\": [{\"id\": \"planner\", \"kind\": \"llm\", \"llm\": {\"provider\": \"openai\","
" \"model\": \"m\", \"prompt\": \"p\", \"allow_spawn\": {\"activities\": [\"work\"], \"max_nodes\": 3}}}]}";

/* One line of the input; *p moves past it.  NULL at the end. */
static char *
next_line(const char **p, const char *end)
{
	const char *nl;
	char	   *line;

	if (*p >= end)
		return NULL;
	nl = memchr(*p, '\n', end - *p);
	if (nl == NULL)
		nl = end;
	line = pnstrdup(*p, nl - *p);
	*p = nl < end ? nl + 1 : end;
	return line;
}

/* No run of REDACT_MIN_RUN characters of the key, case and blanks ignored. */
static void
check_redacted(const char *what, const char *text)
{
	StringInfoData flat;
	char		key[] = SECRET;

	if (text == NULL)
		return;
	initStringInfo(&flat);
	for (const char *p = text; *p; p++)
		if (!isspace((unsigned char) *p))
			appendStringInfoChar(&flat, pg_tolower((unsigned char) *p));
	for (char *k = key; *k; k++)
		*k = pg_tolower((unsigned char) *k);
	for (size_t i = 0; i + REDACT_MIN_RUN <= strlen(key); i++)
	{
		char		run[REDACT_MIN_RUN + 1];

		memcpy(run, key + i, REDACT_MIN_RUN);
		run[REDACT_MIN_RUN] = '\0';
		if (strstr(flat.data, run))
			vb_fuzz_finding("%s shows part of the API key (\"%s\"): %s", what, run, text);
	}
}

typedef struct SpawnStep
{
	const char *spawn;
	LlmCall    *c;
} SpawnStep;

/* What complete_task does with the model's spawn list. */
static void
validate_spawn(void *arg)
{
	SpawnStep  *s = arg;
	char	   *ids[] = {"planner"};
	VbExistingNodes existing = {1, 1, ids};

	vb_validate_spawn(vb_jsonb_from_cstring(s->spawn), vb_jsonb_from_cstring(definition),
					  s->c->node, &existing);
}

static void
check_correction(LlmCall *c, const char *answer, const char *problem)
{
	StringInfoData data;
	const char *roles[3] = {"user", "assistant", "user"};
	const char *contents[3];

	vb_fuzz_check_text("the checker's problem", problem);
	/* The SELF_CORRECTION event, as llm.c writes it. */
	initStringInfo(&data);
	appendStringInfoString(&data, "{\"correction\":1,\"max_corrections\":2,\"error\":");
	vb_append_json_string(&data, problem);
	appendStringInfoChar(&data, '}');
	vb_fuzz_check_json("a SELF_CORRECTION event", data.data);
	/* The request that asks again. */
	contents[0] = "the prompt";
	contents[1] = answer;
	contents[2] = psprintf("Your answer does not match the required JSON schema: %s.\n"
						   "Reply again with only the corrected JSON, matching this schema: %s",
						   problem, c->schema);
	vb_fuzz_check_json("the correction request",
					   vb_json_chat_request(c->provider, c->model, NULL, 3, roles, contents,
											1024, NULL));
}

void
vb_fuzz_answer(const char *text, size_t len)
{
	const char *p = text;
	const char *end = text + len;
	char	   *first = next_line(&p, end);
	char		provider[16] = "openai";
	char		mode[16] = "plain";
	long		status = 200;
	int			result = 0;
	char	   *line;
	LlmCall		c;
	VbHttpCall	h;
	VbLlmOutcome o;
	char	   *json = NULL;
	int64		x;
	TimestampTz now;

	if (first == NULL)
		vb_fuzz_reject("empty");
	(void) sscanf(first, "%15s %15s %ld %d", provider, mode, &status, &result);
	/* What libcurl can report: no status, or three digits. */
	if (status != 0 && (status < 100 || status > 999))
		vb_fuzz_reject("an HTTP status has three digits");

	memset(&c, 0, sizeof(c));
	c.cxt = CurrentMemoryContext;
	c.node = "planner";
	c.provider = strcmp(provider, "anthropic") == 0 ? "anthropic" : "openai";
	c.model = strcmp(provider, "anthropic") == 0 ? "claude-sonnet-4" : "gpt-4o-mini";
	c.secret = SECRET;
	c.timeout_ms = 30000;
	c.max_corrections = 2;
	if (strcmp(mode, "schema") == 0)
		c.schema = (char *) answer_schema;
	else if (strcmp(mode, "spawn") == 0)
	{
		c.schema = (char *) spawn_schema;
		c.allow_spawn = (char *) allow_spawn;
	}

	memset(&h, 0, sizeof(h));
	h.result = result;
	h.status = status;
	h.connected = true;
	h.elapsed_ms = 120;
	strlcpy(h.errbuf, "(no error text)", sizeof(h.errbuf));
	/* Headers through http.c's own rule, as libcurl would hand them over. */
	while ((line = next_line(&p, end)) != NULL && line[0] != '\0' && strcmp(line, "\r") != 0)
	{
		size_t		n = strlen(line);

		vb_http_keep_headers(&h, line, n);
		vb_http_keep_header(line, n, "curl-error:", h.errbuf, sizeof(h.errbuf));
	}
	/* The body as http.c holds it: its bytes, NUL-terminated. */
	h.response_len = end - p;
	h.response = palloc(h.response_len + 1);
	memcpy(h.response, p, h.response_len);
	h.response[h.response_len] = '\0';

	vb_llm_classify(&c, &h, &o);

	/*
	 * llm.c blocks calls to the model until now + retry_after_ms * 1000 µs,
	 * and until blocked_until: a provider is believed up to a year ahead.
	 */
	now = vb_now();
	if (o.retry_after_ms < -1 || o.retry_after_ms > MAX_WAIT_MS ||
		pg_add_s64_overflow(now, o.retry_after_ms * 1000, &x))
		vb_fuzz_finding("Retry-After \"%s\" gives %lld ms", h.retry_after,
						(long long) o.retry_after_ms);
	if (o.blocked_until != 0 &&
		(o.blocked_until < now - USECS_PER_DAY ||
		 o.blocked_until > now + MAX_WAIT_MS * 1000 + USECS_PER_DAY))
		vb_fuzz_finding("reset \"%s\" blocks calls until %lld, now is %lld",
						h.requests_reset, (long long) o.blocked_until, (long long) now);
	/*
	 * LLM_CALLED records the model the provider reports whatever the
	 * outcome: never raw (a refusal or a broken answer kept it unredacted,
	 * uncut and unconverted), never past its cap.
	 */
	check_redacted("the model the provider reports", o.answer.model);
	if (o.answer.model && strlen(o.answer.model) > 200 + 64)
		vb_fuzz_finding("the model the provider reports is kept at %zu bytes", strlen(o.answer.model));
	if (o.err_class)
	{
		char	   *extra = o.retry_after_ms >= 0 ?
			psprintf("\"retry_after\":\"%ldms\"", (long) o.retry_after_ms) : NULL;

		check_redacted("the error message", o.message);
		vb_fuzz_check_json("the error of the attempt",
						   vb_llm_error_json(o.err_class, o.message, extra));
		return;
	}
	vb_fuzz_check_text("the answer", o.answer.text);
	vb_fuzz_check_text("the model", o.answer.model);
	if (c.schema)
	{
		char	   *problem = vb_json_check_answer(c.schema, o.answer.text, &json);

		if (problem)
		{
			check_correction(&c, o.answer.text, problem);
			return;
		}
		vb_fuzz_check_json("the answer's JSON", json);
		if (c.allow_spawn)
		{
			char	   *spawn;

			problem = vb_llm_answer_spawn(&c, json, &spawn);
			if (spawn)
				vb_fuzz_check_json("the answer's spawn list", spawn);
			if (problem || spawn)
			{
				SpawnStep	step = {spawn, &c};
				ErrorData  *edata;

				if (problem)
				{
					vb_fuzz_check_json("the error of a refused spawn list",
									   vb_llm_error_json("permanent", problem, NULL));
					return;
				}
				edata = vb_fuzz_try(validate_spawn, &step);
				if (edata)
				{
					vb_fuzz_check_json("the error of a refused spawn list",
									   vb_llm_error_json("permanent",
														 psprintf("the model's spawn list was refused: %s",
																  edata->message), NULL));
					return;
				}
			}
		}
	}
	vb_fuzz_check_json("the node's output", vb_llm_output_json(&c, &o, json));
}
