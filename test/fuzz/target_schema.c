/*-------------------------------------------------------------------------
 *
 * target_schema.c
 *	  Fuzz target "schema": output schemas, from the definition's check
 *	  (llm_spec.c) to the checking of a model's answer against them
 *	  (vb_json_check_answer in provider_json.c).
 *
 * The input is a JSON array [schema, answer]: the output_schema of an llm
 * node, and the model's answer text (a string is the text itself, any
 * other value its JSON text).  The schema is validated as part of an llm
 * object, as define_workflow does; the answer is then checked against the
 * schema as stored, as the scheduler does.  A schema the definition
 * accepted must be one the checker can use, and the checker's verdict
 * must make a correction request that can be sent.  A schema the
 * definition refused still goes to the checker (no path leads there, but
 * it must not crash on it); only its errors are let pass.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "llm_spec.h"
#include "provider_json.h"
#include "subxact.h"

#include "fuzz.h"

typedef struct SchemaStep
{
	JsonbValue *llm;
	char	   *normalised;
	const char *schema;
	const char *answer;
	char	   *problem;
	char	   *json;
} SchemaStep;

static void
validate_llm(void *arg)
{
	SchemaStep *s = arg;

	s->normalised = vb_validate_llm("workflow definition", "node \"n\"", s->llm, NIL);
}

static void
check_answer(void *arg)
{
	SchemaStep *s = arg;

	s->problem = vb_json_check_answer(s->schema, s->answer, &s->json);
}

void
vb_fuzz_schema(const char *text, size_t len)
{
	Jsonb	   *in = vb_fuzz_parse_input(text, len);
	Jsonb	   *schema = vb_fuzz_element(in, 0);
	Jsonb	   *answer = vb_fuzz_element(in, 1);
	Jsonb	   *llm;
	JsonbValue	llmval;
	SchemaStep	s;
	char	   *schema_text;

	if (schema == NULL)
		vb_fuzz_reject("not [schema, answer]");
	schema_text = JsonbToCString(NULL, &schema->root, VARSIZE(schema));
	memset(&s, 0, sizeof(s));
	if (answer == NULL)
		s.answer = "";
	else if (JsonContainerIsScalar(&answer->root))
	{
		JsonbValue	v;

		if (!JsonbExtractScalar(&answer->root, &v))
			vb_fuzz_reject("odd answer");
		s.answer = v.type == jbvString ? pnstrdup(v.val.string.val, v.val.string.len) :
			JsonbToCString(NULL, &answer->root, VARSIZE(answer));
	}
	else
		s.answer = JsonbToCString(NULL, &answer->root, VARSIZE(answer));

	vb_fuzz_stage = VB_FUZZ_INPUT;
	llm = vb_jsonb_from_cstring(psprintf("{\"provider\": \"openai\", \"model\": \"m\", \"prompt\": \"p\", \"output_schema\": %s}",
										 schema_text));
	vb_fuzz_stage = VB_FUZZ_PRODUCT;
	llmval.type = jbvBinary;
	llmval.val.binary.data = &llm->root;
	llmval.val.binary.len = VARSIZE(llm) - VARHDRSZ;
	s.llm = &llmval;

	if (vb_fuzz_try(validate_llm, &s) == NULL)
	{
		/* Accepted: the checker gets the schema as llm_request.c reads it. */
		Jsonb	   *stored = vb_fuzz_check_json("the normalised llm object", s.normalised);
		JsonbValue	v;
		ErrorData  *edata;

		if (!vb_jsonb_get(&stored->root, "output_schema", &v))
			vb_fuzz_finding("the normalised llm object lost its output_schema: %s", s.normalised);
		s.schema = vb_jsonb_value_text(&v);
		edata = vb_try_in_subxact(check_answer, &s);
		if (edata)
			vb_fuzz_finding("a schema the definition accepted breaks the answer check: %s (schema %s)",
							edata->message, s.schema);
	}
	else
	{
		s.schema = schema_text;
		if (vb_try_in_subxact(check_answer, &s))
			return;
	}
	if (s.problem)
	{
		const char *roles[3] = {"user", "assistant", "user"};
		const char *contents[3] = {"p", s.answer, NULL};

		vb_fuzz_check_text("the checker's problem", s.problem);
		contents[2] = psprintf("Your answer does not match the required JSON schema: %s.\n"
							   "Reply again with only the corrected JSON, matching this schema: %s",
							   s.problem, s.schema);
		vb_fuzz_check_json("the correction request",
						   vb_json_chat_request("openai", "m", NULL, 3, roles, contents, 1024, NULL));
		return;
	}
	vb_fuzz_check_json("the answer's JSON", s.json);
}
