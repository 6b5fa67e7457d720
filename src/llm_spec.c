/*-------------------------------------------------------------------------
 *
 * llm_spec.c
 *	  Validation and normalisation of the "llm" object of llm nodes.
 *
 * The same strictness as the rest of a definition: known fields only,
 * values of the right type and range, templates whose placeholders can be
 * filled (template.c), an output schema that uses only the keywords the
 * answer checker (json.c) implements, and a spawn allowance naming real
 * activity names.  Every error names the node and the field.  The result is
 * the normalised JSON stored on the node and written into RUN_STARTED /
 * NODES_SPAWNED, with every default applied.
 *
 * IDENTIFICATION
 *	  src/llm_spec.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "check.h"
#include "encoding.h"
#include "jsonb_util.h"
#include "llm_spec.h"
#include "provider_json.h"
#include "settings.h"
#include "template.h"

#define MAX_MODEL_LEN			200
#define MAX_OUTPUT_TOKENS		1000000
#define MAX_CORRECTIONS_LIMIT	10
#define DEFAULT_MAX_TOKENS		1024
#define DEFAULT_CORRECTIONS		2
#define MAX_SCHEMA_DEPTH		32

static const char *const llm_fields[] = {"provider", "model", "system", "prompt",
	"max_tokens", "temperature", "output_schema", "max_corrections",
"on_exhausted", "allow_spawn", NULL};
static const char *const spawn_fields[] = {"activities", "max_nodes", NULL};
static const char *const schema_keywords[] = {"type", "properties", "required",
	"enum", "items", "additionalProperties", "description", "title",
"minItems", "maxItems", NULL};
static const char *const schema_types[] = {"object", "array", "string", "number",
"integer", "boolean", "null", NULL};

typedef struct LlmCheck
{
	VbChecker	chk;			/* what is validated, as validate.c says it */
	const char *label;			/* node "brief" */
} LlmCheck;

static void pg_attribute_noreturn()
bad(LlmCheck *c, const char *field, const char *problem, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s: %s, field \"llm.%s\" %s", c->chk.what, c->label, field, problem),
			 detail ? errdetail("%s", detail) : 0));
}

static void pg_attribute_noreturn()
wrong_type(LlmCheck *c, const char *field, JsonbValue *v, const char *expected)
{
	vb_type_error(&c->chk, c->label, psprintf("llm.%s", field), v, expected);
}

static char *
get_string(LlmCheck *c, JsonbContainer *obj, const char *key, bool required,
		   size_t max_len)
{
	JsonbValue	v;
	char	   *s;

	if (!vb_jsonb_get(obj, key, &v))
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"llm.%s\" is required", c->chk.what, c->label, key)));
		return NULL;
	}
	if (v.type != jbvString)
		wrong_type(c, key, &v, "a string");
	s = pnstrdup(v.val.string.val, v.val.string.len);
	if (strlen(s) != (size_t) v.val.string.len || s[0] == '\0')
		bad(c, key, "must be a non-empty string without NUL characters", NULL);
	if (max_len > 0 && strlen(s) > max_len)
		bad(c, key, psprintf("must be at most %zu characters long", max_len), NULL);
	return s;
}

/* An integer field within [min, max]; dflt when absent. */
/* An integer member key of obj, which is the llm object's member at path (NULL: itself). */
static int
get_int(LlmCheck *c, JsonbContainer *obj, const char *path, const char *key, int min, int max,
		int dflt)
{
	JsonbValue	v;

	if (!vb_jsonb_get(obj, key, &v))
		return dflt;
	return vb_get_int(&c->chk, &v, c->label,
					  path ? psprintf("llm.%s.%s", path, key) : psprintf("llm.%s", key), min, max);
}

static void
check_schema_type(LlmCheck *c, const char *field, JsonbValue *t)
{
	if (t->type == jbvString)
	{
		char	   *s = pnstrdup(t->val.string.val, t->val.string.len);

		if (!vb_in_list(s, schema_types))
			bad(c, field, psprintf("names an unknown type \"%s\"", vb_short_text(s)),
				psprintf("Types: %s.", vb_list_text(schema_types)));
		return;
	}
	if (t->type == jbvBinary && JsonContainerIsArray(t->val.binary.data) &&
		!JsonContainerIsScalar(t->val.binary.data) && JsonContainerSize(t->val.binary.data) > 0)
	{
		JsonbContainer *arr = t->val.binary.data;

		for (uint32 i = 0; i < JsonContainerSize(arr); i++)
			check_schema_type(c, psprintf("%s[%u]", field, i), getIthJsonbValueFromContainer(arr, i));
		return;
	}
	wrong_type(c, field, t, "a type name or a non-empty array of type names");
}

/*
 * Checks a JSON Schema subset: the keywords json.c checks answers with, so
 * that no keyword of a schema is silently not enforced.
 */
static void
check_schema(LlmCheck *c, JsonbValue *schema, const char *field, int depth)
{
	JsonbContainer *obj;
	JsonbValue	v;
	ListCell   *lc;

	if (depth > MAX_SCHEMA_DEPTH)
		bad(c, field, psprintf("nests deeper than %d levels", MAX_SCHEMA_DEPTH), NULL);
	if (schema->type != jbvBinary || !JsonContainerIsObject(schema->val.binary.data))
		wrong_type(c, field, schema, "a JSON Schema object");
	obj = schema->val.binary.data;
	foreach(lc, vb_jsonb_object_keys(obj))
	{
		char	   *key = lfirst(lc);

		if (!vb_in_list(key, schema_keywords))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("invalid %s: %s, field \"llm.%s\" uses the JSON Schema keyword \"%s\", which vectorbea does not check",
							c->chk.what, c->label, field, vb_short_text(key)),
					 errdetail("Supported keywords: %s.", vb_list_text(schema_keywords)),
					 errhint("Remove the keyword, or check that constraint in a later node.")));
	}
	if (vb_jsonb_get(obj, "type", &v))
		check_schema_type(c, psprintf("%s.type", field), &v);
	if (vb_jsonb_get(obj, "properties", &v))
	{
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			wrong_type(c, psprintf("%s.properties", field), &v, "an object of schemas");
		foreach(lc, vb_jsonb_object_keys(v.val.binary.data))
		{
			char	   *key = lfirst(lc);
			JsonbValue	sub;

			vb_jsonb_get(v.val.binary.data, key, &sub);
			check_schema(c, &sub, psprintf("%s.properties.%s", field, vb_short_text(key)), depth + 1);
		}
	}
	if (vb_jsonb_get(obj, "required", &v))
	{
		if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data) ||
			JsonContainerIsScalar(v.val.binary.data))
			wrong_type(c, psprintf("%s.required", field), &v, "an array of property names");
		for (uint32 i = 0; i < JsonContainerSize(v.val.binary.data); i++)
		{
			JsonbValue *e = getIthJsonbValueFromContainer(v.val.binary.data, i);

			if (e->type != jbvString)
				wrong_type(c, psprintf("%s.required[%u]", field, i), e, "a property name");
		}
	}
	if (vb_jsonb_get(obj, "enum", &v))
	{
		if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data) ||
			JsonContainerIsScalar(v.val.binary.data) || JsonContainerSize(v.val.binary.data) == 0)
			wrong_type(c, psprintf("%s.enum", field), &v, "a non-empty array of allowed values");
	}
	if (vb_jsonb_get(obj, "items", &v))
		check_schema(c, &v, psprintf("%s.items", field), depth + 1);
	if (vb_jsonb_get(obj, "additionalProperties", &v) && v.type != jbvBool)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("invalid %s: %s, field \"llm.%s.additionalProperties\" must be true or false",
						c->chk.what, c->label, field),
				 errdetail("A schema for additional properties is not supported.")));
	if (vb_jsonb_get(obj, "description", &v) && v.type != jbvString)
		wrong_type(c, psprintf("%s.description", field), &v, "a string");
	if (vb_jsonb_get(obj, "title", &v) && v.type != jbvString)
		wrong_type(c, psprintf("%s.title", field), &v, "a string");
	(void) get_int(c, obj, field, "minItems", 0, INT_MAX, 0);
	(void) get_int(c, obj, field, "maxItems", 0, INT_MAX, 0);
}

/* True when a (checked) schema's "type", if any, allows an object. */
static bool
schema_allows_object(JsonbValue *schema)
{
	JsonbValue	t;

	if (!vb_jsonb_get(schema->val.binary.data, "type", &t))
		return true;
	if (t.type == jbvString)
		return t.val.string.len == 6 && strncmp(t.val.string.val, "object", 6) == 0;
	for (uint32 i = 0; i < JsonContainerSize(t.val.binary.data); i++)
	{
		JsonbValue *e = getIthJsonbValueFromContainer(t.val.binary.data, i);

		if (e->type == jbvString && e->val.string.len == 6 &&
			strncmp(e->val.string.val, "object", 6) == 0)
			return true;
	}
	return false;
}

static void
check_template(LlmCheck *c, const char *field, const char *template, List *depends_on)
{
	char	   *problem = vb_template_check(template, depends_on);

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"llm.%s\" has a bad placeholder",
						c->chk.what, c->label, field),
				 errdetail("%s.", problem),
				 errhint("Placeholders: {{input.<path>}}, {{run.input.<path>}}, {{upstream.<node>.output.<path>}}.")));
}

/*
 * Validates the "llm" object of node label; returns its normalised JSON.
 * depends_on are the node's dependencies (for upstream placeholders).
 */
char *
vb_validate_llm(const char *what, const char *label, JsonbValue *llm,
				List *depends_on)
{
	LlmCheck	c = {{what}, label};
	JsonbContainer *obj;
	JsonbValue	v;
	char	   *provider;
	char	   *model;
	char	   *system;
	char	   *prompt;
	int			max_tokens;
	char	   *temperature = NULL;
	char	   *schema = NULL;
	int			corrections;
	char	   *on_exhausted = "fail";
	StringInfoData spawn;
	StringInfoData buf;

	if (llm->type != jbvBinary || !JsonContainerIsObject(llm->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"llm\" must be an object", what, label),
				 errdetail("Found %s.", vb_jsonb_type_name(llm)),
				 errhint("An llm node needs at least {\"provider\": \"openai\", \"model\": \"...\", \"prompt\": \"...\"}.")));
	obj = llm->val.binary.data;
	vb_check_fields(&c.chk, obj, llm_fields, c.label, "llm");

	provider = get_string(&c, obj, "provider", true, 0);
	if (strcmp(provider, "openai") != 0 && strcmp(provider, "anthropic") != 0)
		bad(&c, "provider", psprintf("names an unknown provider \"%s\"", vb_short_text(provider)),
			"Providers: openai (any OpenAI-compatible endpoint, through the key's base_url) and anthropic.");
	model = get_string(&c, obj, "model", true, MAX_MODEL_LEN);
	for (const char *p = model; *p; p++)
		if ((unsigned char) *p < 0x20)
			bad(&c, "model", "must not contain control characters", NULL);
	system = get_string(&c, obj, "system", false, 0);
	prompt = get_string(&c, obj, "prompt", true, 0);
	if (system)
		check_template(&c, "system", system, depends_on);
	check_template(&c, "prompt", prompt, depends_on);
	max_tokens = get_int(&c, obj, NULL, "max_tokens", 1, MAX_OUTPUT_TOKENS, DEFAULT_MAX_TOKENS);
	if (vb_jsonb_get(obj, "temperature", &v))
	{
		double		t;

		if (v.type != jbvNumeric)
			wrong_type(&c, "temperature", &v, "a number from 0 to 2");
		temperature = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
		t = strtod(temperature, NULL);
		if (!(t >= 0 && t <= 2))
			bad(&c, "temperature", "must be a number from 0 to 2", psprintf("Found %s.", vb_short_text(temperature)));
	}

	initStringInfo(&spawn);
	if (vb_jsonb_get(obj, "allow_spawn", &v))
	{
		JsonbContainer *as;
		JsonbValue	acts;
		int			max_nodes;

		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			wrong_type(&c, "allow_spawn", &v, "an object {\"activities\": [...], \"max_nodes\": N}");
		as = v.val.binary.data;
		vb_check_fields(&c.chk, as, spawn_fields, c.label, "llm.allow_spawn");
		if (!vb_jsonb_get(as, "activities", &acts))
			bad(&c, "allow_spawn.activities", "is required",
				"Name the activities the model may add nodes for.");
		if (acts.type != jbvBinary || !JsonContainerIsArray(acts.val.binary.data) ||
			JsonContainerIsScalar(acts.val.binary.data) || JsonContainerSize(acts.val.binary.data) == 0)
			wrong_type(&c, "allow_spawn.activities", &acts, "a non-empty array of activity names");
		max_nodes = get_int(&c, as, "allow_spawn", "max_nodes", 1, vb_max_nodes_per_run, -1);
		if (max_nodes < 0)
			bad(&c, "allow_spawn.max_nodes", "is required",
				"Bound how many nodes one answer may add.");
		appendStringInfoString(&spawn, "{\"activities\":[");
		for (uint32 i = 0; i < JsonContainerSize(acts.val.binary.data); i++)
		{
			JsonbValue *a = getIthJsonbValueFromContainer(acts.val.binary.data, i);
			char	   *name;

			if (a->type != jbvString)
				wrong_type(&c, psprintf("allow_spawn.activities[%u]", i), a, "an activity name");
			name = pnstrdup(a->val.string.val, a->val.string.len);
			/* VB_LLM_ACTIVITY: the model may add llm nodes (a planner of planners). */
			if (!vb_valid_name(name) ||
				(vb_reserved_activity(name) && strcmp(name, VB_LLM_ACTIVITY) != 0))
				bad(&c, psprintf("allow_spawn.activities[%u]", i),
					psprintf("has an invalid activity name \"%s\"", vb_short_text(name)),
					psprintf("Activity names are 1 to %d letters, digits, \"_\", \"-\", \".\" and \":\", and do not start with \"%s\" (but \"%s\" lets the model add llm nodes).",
							 VB_MAX_NAME_LEN, VB_RESERVED_PREFIX, VB_LLM_ACTIVITY));
			if (i > 0)
				appendStringInfoChar(&spawn, ',');
			vb_append_json_string(&spawn, name);
		}
		appendStringInfo(&spawn, "],\"max_nodes\":%d}", max_nodes);
	}

	if (vb_jsonb_get(obj, "output_schema", &v))
	{
		char	   *problem;

		char	   *utf8;
		char	   *unconvertible = NULL;

		check_schema(&c, &v, "output_schema", 0);
		if (spawn.len > 0 && !schema_allows_object(&v))
			bad(&c, "output_schema", "must allow a JSON object when \"allow_spawn\" is given",
				"The spawn list is the answer's member \"spawn\", so the answer is an object: give \"type\": \"object\" (or leave \"type\" out).");
		schema = vb_jsonb_value_text(&v);
		/*
		 * The answer check loads the schema as UTF-8 (jansson), as the call
		 * sends it; text that has no UTF-8 form (SQL_ASCII bytes) fails the
		 * call with the reason instead (llm.md).
		 */
		utf8 = vb_to_utf8(schema, "the output schema", &unconvertible);
		problem = utf8 ? vb_json_schema_problem(utf8) : NULL;
		if (problem)
			bad(&c, "output_schema", "cannot be used to check answers",
				psprintf("%s. Integers in a schema must fit in 64 bits (1e20 is stored as the integer 100000000000000000000), other numbers in a double, and values nest at most 2048 levels deep.",
						 vb_valid_text(problem)));
	}
	else if (spawn.len > 0)
		schema = "{\"type\":\"object\"}";	/* a spawn list needs a JSON answer */
	corrections = get_int(&c, obj, NULL, "max_corrections", 0, MAX_CORRECTIONS_LIMIT,
						  schema ? DEFAULT_CORRECTIONS : 0);
	if (corrections > 0 && schema == NULL)
		bad(&c, "max_corrections", "applies only with \"output_schema\"",
			"Without a schema every answer is accepted, so there is nothing to correct.");
	if (vb_jsonb_get(obj, "on_exhausted", &v))
	{
		if (v.type != jbvString)
			wrong_type(&c, "on_exhausted", &v, "\"fail\" or \"escalate\"");
		on_exhausted = pnstrdup(v.val.string.val, v.val.string.len);
		if (strcmp(on_exhausted, "fail") != 0 && strcmp(on_exhausted, "escalate") != 0)
			bad(&c, "on_exhausted", psprintf("has an unknown value \"%s\"", vb_short_text(on_exhausted)),
				"Allowed: fail, escalate (a person decides: the node's \"escalation\" gate).");
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"provider\":");
	vb_append_json_string(&buf, provider);
	appendStringInfoString(&buf, ",\"model\":");
	vb_append_json_string(&buf, model);
	appendStringInfoString(&buf, ",\"system\":");
	vb_append_json_string(&buf, system);
	appendStringInfoString(&buf, ",\"prompt\":");
	vb_append_json_string(&buf, prompt);
	appendStringInfo(&buf, ",\"max_tokens\":%d,\"temperature\":%s,\"output_schema\":%s,"
					 "\"max_corrections\":%d,\"on_exhausted\":\"%s\",\"allow_spawn\":%s}",
					 max_tokens, temperature ? temperature : "null",
					 schema ? schema : "null", corrections, on_exhausted,
					 spawn.len > 0 ? spawn.data : "null");
	return buf.data;
}
