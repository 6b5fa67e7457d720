/*-------------------------------------------------------------------------
 *
 * target_template.c
 *	  Fuzz target "template": the checking and rendering of templates
 *	  (template.c).
 *
 * The input is a JSON array [template, input, upstream, run_input]; the
 * last three are objects (as the node's input, the map of upstream outputs
 * and the run's input always are) and default to {}.  A string template is a prompt (or a time):
 * checked, rendered, and put into a request body as llm_request.c does.
 * Any other template is a run node's JSON input, rendered into jsonb.
 * The node depends on every node upstream names.  A template the check
 * refuses must not render: a definition could not have carried it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "provider_json.h"
#include "template.h"

#include "fuzz.h"

static Jsonb *
part(Jsonb *in, int i)
{
	Jsonb	   *p = vb_fuzz_element(in, i);

	return p ? p : vb_jsonb_from_cstring("{}");
}

void
vb_fuzz_template(const char *text, size_t len)
{
	Jsonb	   *in = vb_fuzz_parse_input(text, len);
	JsonbValue *tmpl;
	Jsonb	   *input;
	Jsonb	   *upstream;
	Jsonb	   *run_input;
	List	   *depends_on;
	char	   *check;
	char	   *problem = NULL;

	if (!JsonContainerIsArray(&in->root) || JsonContainerIsScalar(&in->root) ||
		JsonContainerSize(&in->root) == 0)
		vb_fuzz_reject("not [template, input, upstream, run_input]");
	tmpl = getIthJsonbValueFromContainer(&in->root, 0);
	input = part(in, 1);
	upstream = part(in, 2);
	run_input = part(in, 3);
	/* start_run and the definition take objects only; outputs may be anything. */
	if (!JsonContainerIsObject(&input->root) || !JsonContainerIsObject(&upstream->root) ||
		!JsonContainerIsObject(&run_input->root))
		vb_fuzz_reject("input, upstream and run_input are objects");
	depends_on = vb_jsonb_object_keys(&upstream->root);

	if (tmpl->type == jbvString)
	{
		char	   *t = pnstrdup(tmpl->val.string.val, tmpl->val.string.len);
		char	   *rendered;

		check = vb_template_check(t, depends_on);
		vb_fuzz_check_text("a template's problem", check);
		rendered = vb_template_render(t, input, upstream, run_input, &problem);
		if (rendered == NULL)
		{
			vb_fuzz_check_text("a rendering's problem", problem);
			return;
		}
		if (check)
			vb_fuzz_finding("a template the check refuses (%s) rendered", check);
		vb_fuzz_check_text("a rendered prompt", rendered);
		{
			const char *roles[] = {"user"};
			const char *contents[] = {rendered};

			vb_fuzz_check_json("a request body with the rendered prompt",
							   vb_json_chat_request("openai", "gpt-4o-mini", NULL, 1, roles,
													contents, 1024, NULL));
		}
	}
	else
	{
		Jsonb	   *t = JsonbValueToJsonb(tmpl);
		Jsonb	   *rendered;

		check = vb_template_check_json(&t->root, depends_on);
		vb_fuzz_check_text("a template's problem", check);
		rendered = vb_template_render_json(t, upstream, run_input, &problem);
		if (rendered == NULL)
		{
			vb_fuzz_check_text("a rendering's problem", problem);
			return;
		}
		if (check)
			vb_fuzz_finding("a JSON template the check refuses (%s) rendered", check);
		vb_fuzz_check_json("a rendered run input",
						   JsonbToCString(NULL, &rendered->root, VARSIZE(rendered)));
	}
}
