/*-------------------------------------------------------------------------
 *
 * provider_json.c
 *	  Everything vectorbea does with jansson: provider request bodies, the
 *	  parsing of provider answers and errors, and the checking of a model's
 *	  answer against an llm node's output schema (and that jsonb can store
 *	  it).
 *
 * jansson is used here and nowhere else, and never json_object(), whose
 * name the server's own SQL function takes (see vb_json_chat_request).  It allocates with malloc, so every
 * json_t is released before this file hands anything back, and what it hands
 * back is palloc'd.  Nothing here raises an error for bad input: a body a
 * provider got wrong or an answer that does not match is an outcome the
 * caller classifies (transient, invalid_output), reported as text.
 *
 * Only the schema keywords llm_spec.c accepts are checked; the two files
 * change together.
 *
 * IDENTIFICATION
 *	  src/provider_json.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include <jansson.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

#include "vectorbea.h"
#include "encoding.h"
#include "jsonb_util.h"
#include "provider_json.h"
#include "subxact.h"

#define MAX_REPORTED_PATH	200

static char *shorten(const char *path);

/* A malloc'd jansson string as palloc'd text (NULL stays NULL). */
static char *
take(char *s)
{
	char	   *copy;

	if (s == NULL)
		return NULL;
	copy = pstrdup(s);
	free(s);
	return copy;
}

/* json_dumps then json_decref, so callers cannot forget the second. */
static char *
dumps_and_free(json_t *value)
{
	char	   *s = json_dumps(value, JSON_COMPACT | JSON_ENSURE_ASCII);

	json_decref(value);
	return s;
}

/*
 * OpenAI's reasoning models (o1, o3, o4, gpt-5 and their variants) refuse
 * "max_tokens" and take "max_completion_tokens"; other OpenAI-compatible
 * servers know only the former.
 */
static bool
reasoning_model(const char *provider, const char *model)
{
	static const char *const families[] = {"o1", "o3", "o4", "gpt-5", NULL};

	if (strcmp(provider, "openai") != 0)
		return false;
	for (const char *const *f = families; *f; f++)
	{
		size_t		len = strlen(*f);

		if (strncmp(model, *f, len) == 0 && (model[len] == '\0' || model[len] == '-'))
			return true;
	}
	return false;
}

/*
 * The request body of one chat call.  messages alternate user/assistant,
 * starting with the user's prompt; a correction adds the model's previous
 * answer and the validation error.  temperature is numeric text or NULL
 * (then the provider's default applies).
 */
char *
vb_json_chat_request(const char *provider, const char *model, const char *system,
					 int nmessages, const char *const *roles,
					 const char *const *contents, int max_tokens,
					 const char *temperature)
{
	/*
	 * Not json_object(): the server exports a function of that name (the SQL
	 * json_object), which the dynamic linker would bind our call to.
	 * jansson's own calls inside libjansson are bound locally.
	 */
	json_t	   *body = json_pack("{s:s}", "model", model);
	json_t	   *msgs = json_array();
	bool		anthropic = strcmp(provider, "anthropic") == 0;
	bool		ok = body != NULL && msgs != NULL;

	/*
	 * Each json_pack or json_string gives NULL for a string that is not
	 * UTF-8, and appending NULL appends nothing: a message would be left out
	 * of the request without a word.  So every step is checked.
	 */
	if (ok && system && !anthropic)
		ok = json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system",
												   "content", system)) == 0;
	for (int i = 0; ok && i < nmessages; i++)
		ok = json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", roles[i],
												   "content", contents[i])) == 0;
	if (ok && system && anthropic)
		ok = json_object_set_new(body, "system", json_string(system)) == 0;
	if (!ok)
	{
		json_decref(msgs);
		json_decref(body);
		return NULL;
	}
	json_object_set_new(body, "messages", msgs);
	json_object_set_new(body, reasoning_model(provider, model) ? "max_completion_tokens" : "max_tokens",
						json_integer(max_tokens));
	if (temperature)
		json_object_set_new(body, "temperature", json_real(strtod(temperature, NULL)));
	return take(dumps_and_free(body));
}

/*
 * A token count the provider reports, or a problem: a negative, absurd or
 * non-integer count would be booked on the run (or booked as 0) and priced,
 * so it makes the answer invalid rather than being believed.  A count the
 * answer leaves out is 0 (llm.md, costs and budgets).
 */
static bool
token_member(json_t *usage, const char *key, int64 *tokens, char **problem)
{
	json_t	   *v = json_object_get(usage, key);
	double		real = json_is_real(v) ? json_real_value(v) : 0;

	*tokens = 0;
	if (v == NULL || json_is_null(v))
		return true;
	if (json_is_integer(v))
		*tokens = (int64) json_integer_value(v);
	else if (json_is_real(v) && real == floor(real))
	{
		char	   *text;

		if (real >= 0 && real <= VB_MAX_USAGE_TOKENS)
		{
			*tokens = (int64) real;
			return true;
		}
		/* a whole number all the same: 1e10, or an integer beyond 64 bits */
		text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
		*problem = psprintf("the provider's answer reports an impossible token count (usage.%s = %s; allowed 0 to " INT64_FORMAT ")",
							key, text ? shorten(text) : "?", (int64) VB_MAX_USAGE_TOKENS);
		free(text);
		return false;
	}
	else
	{
		char	   *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);

		*problem = psprintf("the provider's answer reports a token count that is not a whole number (usage.%s = %s)",
							key, text ? shorten(text) : "?");
		free(text);
		return false;
	}
	if (*tokens >= 0 && *tokens <= VB_MAX_USAGE_TOKENS)
		return true;
	*problem = psprintf("the provider's answer reports an impossible token count (usage.%s = " INT64_FORMAT "; allowed 0 to " INT64_FORMAT ")",
						key, *tokens, (int64) VB_MAX_USAGE_TOKENS);
	*tokens = 0;
	return false;
}

/*
 * Reads a successful answer.  False with *problem set when the body is not
 * the provider's answer shape (a truncated or garbled body).
 */
bool
vb_json_parse_answer(const char *provider, const char *body, size_t len,
					 VbLlmAnswer *answer, char **problem)
{
	json_error_t err;
	json_t	   *root = json_loadb(body, len, 0, &err);
	json_t	   *usage;
	json_t	   *model;
	StringInfoData text;

	/* An integer beyond 64 bits (a token count): read as a real, refused by its value. */
	if (root == NULL && strstr(err.text, "too big integer") != NULL)
		root = json_loadb(body, len, JSON_DECODE_INT_AS_REAL, &err);
	memset(answer, 0, sizeof(*answer));
	*problem = NULL;
	if (root == NULL)
	{
		*problem = psprintf("the provider's answer is not valid JSON (%s at byte %d)",
							err.text, err.position);
		return false;
	}
	initStringInfo(&text);
	if (strcmp(provider, "anthropic") == 0)
	{
		json_t	   *content = json_object_get(root, "content");
		size_t		i;
		json_t	   *part;

		if (!json_is_array(content))
			*problem = pstrdup("the provider's answer has no \"content\" array");
		else
			json_array_foreach(content, i, part)
			{
				json_t	   *t = json_object_get(part, "text");

				if (json_is_string(t))
					appendBinaryStringInfo(&text, json_string_value(t), json_string_length(t));
			}
		if (*problem == NULL && json_is_string(json_object_get(root, "stop_reason")) &&
			strcmp(json_string_value(json_object_get(root, "stop_reason")), "refusal") == 0)
			answer->refusal = pstrdup(text.data);
		answer->truncated = json_is_string(json_object_get(root, "stop_reason")) &&
			strcmp(json_string_value(json_object_get(root, "stop_reason")), "max_tokens") == 0;
		usage = json_object_get(root, "usage");
		if (token_member(usage, "input_tokens", &answer->tokens_in, problem))
			token_member(usage, "output_tokens", &answer->tokens_out, problem);
	}
	else
	{
		json_t	   *choice = json_array_get(json_object_get(root, "choices"), 0);
		json_t	   *message = json_object_get(choice, "message");
		json_t	   *content = json_object_get(message, "content");
		json_t	   *refusal = json_object_get(message, "refusal");
		json_t	   *finish = json_object_get(choice, "finish_reason");

		/* A refusal comes with "content": null and the model's words apart. */
		if (json_is_string(refusal) && !json_is_string(content))
			answer->refusal = pnstrdup(json_string_value(refusal), json_string_length(refusal));
		else if (!json_is_string(content))
			*problem = pstrdup("the provider's answer has no choices[0].message.content string");
		else
			appendBinaryStringInfo(&text, json_string_value(content), json_string_length(content));
		answer->truncated = json_is_string(finish) && strcmp(json_string_value(finish), "length") == 0;
		usage = json_object_get(root, "usage");
		if (token_member(usage, "prompt_tokens", &answer->tokens_in, problem))
			token_member(usage, "completion_tokens", &answer->tokens_out, problem);
	}
	model = json_object_get(root, "model");
	if (json_is_string(model))
		answer->model = pstrdup(json_string_value(model));
	json_decref(root);
	if (*problem)
	{
		/* Nothing of an answer that is refused is booked. */
		answer->tokens_in = answer->tokens_out = 0;
		return false;
	}
	if (strlen(text.data) != (size_t) text.len)
	{
		*problem = pstrdup("the provider's answer contains a NUL character");
		return false;
	}
	answer->text = text.data;
	return true;
}

/*
 * The message of a provider's error body ({"error": {"message": ...}} in
 * both formats), or NULL when the body carries none.
 */
char *
vb_json_error_message(const char *body, size_t len)
{
	json_t	   *root = json_loadb(body, len, 0, NULL);
	json_t	   *msg;
	char	   *result = NULL;

	if (root == NULL)
		return NULL;
	msg = json_object_get(json_object_get(root, "error"), "message");
	if (!json_is_string(msg))
		msg = json_object_get(root, "message");
	if (json_is_string(msg))
		result = pstrdup(json_string_value(msg));
	json_decref(root);
	return result;
}

/* ---- output schemas ---- */

static const char *
type_name(json_t *v)
{
	switch (json_typeof(v))
	{
		case JSON_OBJECT:
			return "an object";
		case JSON_ARRAY:
			return "an array";
		case JSON_STRING:
			return "a string";
		case JSON_INTEGER:
		case JSON_REAL:
			return "a number";
		case JSON_TRUE:
		case JSON_FALSE:
			return "a boolean";
		case JSON_NULL:
			return "null";
	}
	return "a value";
}

static bool
has_type(json_t *v, const char *type)
{
	if (strcmp(type, "object") == 0)
		return json_is_object(v);
	if (strcmp(type, "array") == 0)
		return json_is_array(v);
	if (strcmp(type, "string") == 0)
		return json_is_string(v);
	if (strcmp(type, "number") == 0)
		return json_is_number(v);
	if (strcmp(type, "integer") == 0)
		return json_is_integer(v) ||
			(json_is_real(v) && floor(json_real_value(v)) == json_real_value(v));
	if (strcmp(type, "boolean") == 0)
		return json_is_boolean(v);
	if (strcmp(type, "null") == 0)
		return json_is_null(v);
	return false;
}

/* A path for a message, cut between characters when it is long. */
static char *
shorten(const char *path)
{
	int			len = strlen(path);

	if (len <= MAX_REPORTED_PATH)
		return pstrdup(path);
	return psprintf("%.*s…", pg_mbcliplen(path, len, MAX_REPORTED_PATH), path);
}

/*
 * Whether an answer's value equals a value of an "enum", as JSON compares
 * them: numbers by value (1 and 1.0 are one number, and an answer holding
 * an integer beyond 64 bits is read with all its integers as reals),
 * arrays element by element, objects member by member.  json_equal alone
 * holds an integer and a real apart.
 */
static bool
same_json(json_t *a, json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b))
		return json_integer_value(a) == json_integer_value(b);
	if (json_is_number(a) && json_is_number(b))
		return json_number_value(a) == json_number_value(b);
	if (json_is_array(a) && json_is_array(b))
	{
		size_t		n = json_array_size(a);

		if (json_array_size(b) != n)
			return false;
		for (size_t i = 0; i < n; i++)
			if (!same_json(json_array_get(a, i), json_array_get(b, i)))
				return false;
		return true;
	}
	if (json_is_object(a) && json_is_object(b))
	{
		const char *key;
		json_t	   *member;

		if (json_object_size(a) != json_object_size(b))
			return false;
		json_object_foreach(a, key, member)
		{
			json_t	   *other = json_object_get(b, key);

			if (other == NULL || !same_json(member, other))
				return false;
		}
		return true;
	}
	return json_equal(a, b);
}

/* An enum's values for a message: whole when short, else their start and count. */
static char *
enum_text(json_t *e)
{
	char	   *all = json_dumps(e, JSON_COMPACT | JSON_ENSURE_ASCII);
	char	   *text;
	int			len = strlen(all);

	if (len <= MAX_REPORTED_PATH)
		text = pstrdup(all);
	else
		text = psprintf("%.*s… (%zu values)", pg_mbcliplen(all, len, MAX_REPORTED_PATH), all,
						json_array_size(e));
	free(all);
	return text;
}

/* NULL when v conforms to schema, else what is wrong and where. */
static char *
check_value(json_t *schema, json_t *v, const char *path)
{
	json_t	   *t = json_object_get(schema, "type");
	json_t	   *e;

	if (json_is_string(t) && !has_type(v, json_string_value(t)))
		return psprintf("%s must be %s %s, found %s", shorten(path),
						strcmp(json_string_value(t), "integer") == 0 ||
						strcmp(json_string_value(t), "array") == 0 ||
						strcmp(json_string_value(t), "object") == 0 ? "an" : "a",
						json_string_value(t), type_name(v));
	if (json_is_array(t))
	{
		size_t		i;
		json_t	   *one;
		bool		ok = false;

		json_array_foreach(t, i, one)
			if (json_is_string(one) && has_type(v, json_string_value(one)))
			ok = true;
		if (!ok)
		{
			char	   *types = json_dumps(t, JSON_COMPACT);
			char	   *msg = psprintf("%s must be one of the types %s, found %s",
									   shorten(path), types, type_name(v));

			free(types);
			return msg;
		}
	}
	e = json_object_get(schema, "enum");
	if (json_is_array(e))
	{
		size_t		i;
		json_t	   *one;
		bool		ok = false;

		json_array_foreach(e, i, one)
			if (same_json(one, v))
			ok = true;
		if (!ok)
			return psprintf("%s must be one of %s", shorten(path), enum_text(e));
	}
	if (json_is_object(v))
	{
		json_t	   *props = json_object_get(schema, "properties");
		json_t	   *req = json_object_get(schema, "required");
		size_t		i;
		json_t	   *one;
		const char *key;
		json_t	   *member;

		json_array_foreach(req, i, one)
			if (json_is_string(one) && json_object_get(v, json_string_value(one)) == NULL)
			return psprintf("%s is missing the required property \"%s\"",
							shorten(path), json_string_value(one));
		json_object_foreach(v, key, member)
		{
			json_t	   *sub = json_object_get(props, key);
			char	   *problem;

			if (sub == NULL)
			{
				if (json_is_false(json_object_get(schema, "additionalProperties")))
					return psprintf("%s has the property \"%s\", which the schema does not allow",
									shorten(path), shorten(key));
				continue;
			}
			problem = check_value(sub, member, psprintf("%s.%s", path, key));
			if (problem)
				return problem;
		}
	}
	if (json_is_array(v))
	{
		json_t	   *items = json_object_get(schema, "items");
		json_t	   *minv = json_object_get(schema, "minItems");
		json_t	   *maxv = json_object_get(schema, "maxItems");
		size_t		i;
		json_t	   *one;

		if (json_is_integer(minv) && (json_int_t) json_array_size(v) < json_integer_value(minv))
			return psprintf("%s must have at least %lld items, found %zu", shorten(path),
							(long long) json_integer_value(minv), json_array_size(v));
		if (json_is_integer(maxv) && (json_int_t) json_array_size(v) > json_integer_value(maxv))
			return psprintf("%s must have at most %lld items, found %zu", shorten(path),
							(long long) json_integer_value(maxv), json_array_size(v));
		if (json_is_object(items))
			json_array_foreach(v, i, one)
			{
				char	   *problem = check_value(items, one, psprintf("%s[%zu]", path, i));

				if (problem)
					return problem;
			}
	}
	return NULL;
}

/*
 * Models often wrap JSON in a Markdown code fence; the fence is not part of
 * the answer.
 */
static void
strip_fence(const char **start, size_t *len)
{
	const char *s = *start;
	size_t		n = *len;

	while (n > 0 && isspace((unsigned char) *s))
		s++, n--;
	while (n > 0 && isspace((unsigned char) s[n - 1]))
		n--;
	if (n >= 6 && strncmp(s, "```", 3) == 0 && strncmp(s + n - 3, "```", 3) == 0)
	{
		const char *nl = memchr(s, '\n', n);

		if (nl != NULL && nl < s + n - 3)
		{
			n -= (nl + 1 - s) + 3;
			s = nl + 1;
		}
	}
	*start = s;
	*len = n;
}

/*
 * Why the answer check could not load schema_text (JSON that jsonb took),
 * or NULL.  jansson refuses some of what jsonb takes: an integer beyond 64
 * bits or a real beyond a double (in "enum"), nesting deeper than its
 * limit; llm_spec.c asks at definition time, so that no stored schema
 * fails the check of every answer later.
 */
char *
vb_json_schema_problem(const char *schema_text)
{
	json_error_t err;
	json_t	   *schema = json_loads(schema_text, 0, &err);

	if (schema == NULL)
		return psprintf("%s", err.text);
	json_decref(schema);
	return NULL;
}

/* The step of jsonb_in that an answer must pass (vb_try_in_subxact). */
static void
parse_as_jsonb(void *json)
{
	(void) vb_jsonb_from_cstring((const char *) json);
}

/*
 * Checks a model's answer text against schema (JSON text).  NULL when it is
 * JSON that conforms, with *json_out the answer's own JSON text (a code
 * fence around it taken off); otherwise what is wrong, worded for the model
 * to correct.
 *
 * jansson takes some JSON that jsonb refuses: a number beyond what numeric
 * holds (2e-400000, which jansson reads as 0).  Such an answer could not
 * be stored as the node's output: its completion failed, and with it the
 * record of the call, so the answer was lost.  jsonb_in is tried on it
 * (in a subtransaction, as it refuses by error), and its refusal is a
 * problem for the model to correct like any other.
 *
 * The JSON handed on is the model's text, not jansson's rendering of it:
 * jansson holds a number as a double or a 64-bit integer, so 0.1 came back
 * as 0.10000000000000001 and a longer integer was refused; jsonb keeps both
 * exactly.  An integer beyond 64 bits is checked as a real (the schema's
 * "integer" takes a real with no fraction).
 */
char *
vb_json_check_answer(const char *schema_text, const char *answer, char **json_out)
{
	json_t	   *schema = json_loads(schema_text, 0, NULL);
	json_t	   *value;
	json_error_t err;
	const char *start = answer;
	size_t		len = strlen(answer);
	char	   *problem;

	*json_out = NULL;
	if (schema == NULL)
		elog(ERROR, "vectorbea: stored output schema is not JSON");
	strip_fence(&start, &len);
	value = json_loadb(start, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
	if (value == NULL && json_error_code(&err) == json_error_numeric_overflow)
		value = json_loadb(start, len,
						   JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &err);
	if (value == NULL)
	{
		json_decref(schema);
		/* jansson quotes the answer near the error, and may cut a character. */
		return psprintf("the answer is not valid JSON: %s (line %d, column %d)",
						vb_valid_text(err.text), err.line, err.column);
	}
	problem = check_value(schema, value, "$");
	json_decref(value);
	json_decref(schema);
	if (problem == NULL)
	{
		char	   *json = pnstrdup(start, len);
		ErrorData  *refusal = vb_try_in_subxact(parse_as_jsonb, json);

		if (refusal == NULL)
			*json_out = json;
		else if (refusal->detail)
			problem = psprintf("the answer is JSON that PostgreSQL cannot store: %s (%s)",
							   refusal->message, refusal->detail);
		else
			problem = psprintf("the answer is JSON that PostgreSQL cannot store: %s",
							   refusal->message);
	}
	return problem;
}

