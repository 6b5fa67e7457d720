/*-------------------------------------------------------------------------
 *
 * llm_request.c
 *	  Building an llm call: the node's llm object, the workspace's key
 *	  decrypted under the master key, the prompt rendered, the endpoint and
 *	  its headers, and the request body of the conversation so far.
 *
 * The provider key exists in plaintext only in the scheduler's memory
 * while its call is prepared and in flight; keys.c zeroes the copies its
 * decryption leaves (the master key parameter, the decrypted datum), and
 * this file the plaintext of a call that is not made.
 *
 * IDENTIFICATION
 *	  src/llm_request.c
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
#include "encoding.h"
#include "jsonb_util.h"
#include "keys.h"
#include "llm_call.h"
#include "settings.h"
#include "spi_util.h"
#include "template.h"

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

/* s in UTF-8; a text that cannot be is a bug of the caller's checks. */
static char *
utf8_or_error(const char *s)
{
	char	   *problem = NULL;
	char	   *utf8 = vb_to_utf8(s, "a text of the conversation", &problem);

	if (utf8 == NULL)
		elog(ERROR, "vectorbea: %s", problem);
	return utf8;
}

/*
 * Adds a message to the call's conversation.  content is text of the
 * database; it is kept in UTF-8, as the request sends it: converting needs
 * a transaction, and the request is built when none is open.
 * vb_llm_build_call has refused what cannot be converted, and the model's
 * answers came as UTF-8, so the conversion succeeds.
 */
void
vb_llm_add_message(LlmCall *c, const char *role, const char *content)
{
	char	   *utf8 = utf8_or_error(content);
	MemoryContext old = MemoryContextSwitchTo(c->cxt);

	if (c->nmessages >= MAX_MESSAGES)
		elog(ERROR, "vectorbea: too many messages in one llm conversation");
	c->roles[c->nmessages] = pstrdup(role);
	c->contents[c->nmessages] = pstrdup(utf8);
	c->nmessages++;
	MemoryContextSwitchTo(old);
}

/* The request body of the call's conversation so far, in UTF-8. */
char *
vb_llm_request_body(LlmCall *c)
{
	char	   *body = vb_json_chat_request(c->provider, c->model_utf8, c->system, c->nmessages,
											(const char *const *) c->roles,
											(const char *const *) c->contents,
											c->max_tokens, c->temperature);

	/* jansson builds nothing from a string that is not UTF-8. */
	if (body == NULL)
		elog(ERROR, "vectorbea: the request body of llm node %ld could not be built", (long) c->task_id);
	return body;
}

/*
 * The call of a claimed llm node, in a memory context of its own under
 * parent; NULL with *problem (a permanent failure: nothing was sent) when
 * no call can be made.
 */
LlmCall *
vb_llm_build_call(MemoryContext parent, VbClaimedLlm *claimed, const char *master,
				  char **problem)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	Oid			types[1] = {INT8OID};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Jsonb	   *spec;
	char	   *workspace;
	char	   *base_url;
	char	   *key = NULL;
	char	   *prompt;
	char	   *system = NULL;
	char	   *url;
	LlmCall    *c;
	MemoryContext cxt;
	MemoryContext old;

	*problem = NULL;
	if (plan == NULL)
		plan = vb_prepare("SELECT n.llm, r.workspace, k.base_url, k.provider IS NOT NULL"
						  "  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id"
						  "  LEFT JOIN vectorbea.provider_keys k"
						  "    ON k.workspace = r.workspace AND k.provider = n.llm->>'provider'"
						  " WHERE n.id = $1",
						  lengthof(types), types);
	args[0] = Int64GetDatum(claimed->task_id);
	/*
	 * Not read-only: that would read with the scheduler step's snapshot,
	 * older than the claim's, in which a node that became ready while the
	 * claim waited for a lock does not exist yet.
	 */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: llm node %ld vanished", (long) claimed->task_id);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	spec = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 1, &isnull));
	workspace = SPI_getvalue(tup, desc, 2);
	base_url = SPI_getvalue(tup, desc, 3);
	/* A key that does not decrypt stops here, named (keys.c). */
	if (DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull)))
		key = vb_provider_key_plaintext(workspace, json_text_field(&spec->root, "provider"), master);

	if (key == NULL)
	{
		*problem = psprintf("no key is stored for provider \"%s\" in workspace \"%s\"; store one with vectorbea.set_provider_key()",
							json_text_field(&spec->root, "provider"), workspace);
		return NULL;
	}
	for (const char *p = key; *p; p++)
		if (*p == '\r' || *p == '\n')
		{
			explicit_bzero(key, strlen(key));
			*problem = pstrdup("the stored provider key contains a line break; store it again");
			return NULL;
		}

	prompt = vb_template_render(json_text_field(&spec->root, "prompt"), claimed->input,
								claimed->upstream, claimed->run_input, problem);
	if (prompt && json_text_field(&spec->root, "system"))
		system = vb_template_render(json_text_field(&spec->root, "system"), claimed->input,
									claimed->upstream, claimed->run_input, problem);
	if (*problem)
	{
		explicit_bzero(key, strlen(key));
		*problem = psprintf("node \"%s\", field \"llm.%s\": %s", claimed->node,
							prompt ? "system" : "prompt", *problem);
		return NULL;
	}
	/*
	 * Requests are UTF-8: refuse now what could not be sent (encoding.c).
	 * The output schema goes back to the model in corrections.
	 */
	if (vb_to_utf8(prompt, "the prompt", problem) == NULL ||
		(system && (system = vb_to_utf8(system, "the system prompt", problem)) == NULL) ||
		vb_to_utf8(json_text_field(&spec->root, "model"), "the model name", problem) == NULL ||
		(json_text_field(&spec->root, "output_schema") &&
		 vb_to_utf8(json_text_field(&spec->root, "output_schema"), "the output schema", problem) == NULL))
	{
		explicit_bzero(key, strlen(key));
		*problem = psprintf("node \"%s\": %s", claimed->node, *problem);
		return NULL;
	}

	cxt = AllocSetContextCreate(parent, "vectorbea llm call", ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	c = palloc0(sizeof(LlmCall));
	c->cxt = cxt;
	c->task_id = claimed->task_id;
	c->lease = claimed->lease;
	c->run_id = claimed->run_id;
	c->node = pstrdup(claimed->node);
	c->workspace = pstrdup(workspace);
	c->attempt = claimed->attempt;
	c->provider = json_text_field(&spec->root, "provider");
	c->model = json_text_field(&spec->root, "model");
	c->model_utf8 = utf8_or_error(c->model);
	c->system = system ? pstrdup(system) : NULL;
	c->schema = json_text_field(&spec->root, "output_schema");
	c->allow_spawn = json_text_field(&spec->root, "allow_spawn");
	c->temperature = json_text_field(&spec->root, "temperature");
	c->max_tokens = json_int_field(&spec->root, "max_tokens");
	c->max_corrections = json_int_field(&spec->root, "max_corrections");
	c->timeout_ms = vb_llm_request_timeout_ms;	/* the driver may shorten it */
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
	vb_llm_add_message(c, "user", prompt);
	return c;
}
