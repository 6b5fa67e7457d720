/*-------------------------------------------------------------------------
 *
 * target_validate.c
 *	  Fuzz target "validate": workflow definitions and spawn lists
 *	  (validate.c and what it calls: check.c, llm_spec.c, gate_spec.c,
 *	  wait_spec.c, template.c, duration.c).
 *
 * The input is JSON, as a client would send it.  An object is a
 * definition (define_workflow, start_run); an array is a spawn list
 * (complete_task's spawn) of node "planner" in a run of a definition with
 * defaults, whose nodes "planner" and "done" exist.  What validation
 * accepts must normalise into the JSON that RUN_STARTED / NODES_SPAWNED
 * store and the node columns hold.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/pg_list.h"

#include "jsonb_util.h"
#include "validate.h"

#include "fuzz.h"

static const char spawn_definition[] =
"{\"defaults\": {\"retry\": {\"max_attempts\": 5, \"backoff\": \"fixed\", \"initial\": \"2s\"},"
" \"timeout\": \"1m\"},"
" \"nodes\": [{\"id\": \"planner\", \"activity\": \"plan\"},"
" {\"id\": \"done\", \"activity\": \"finish\", \"depends_on\": [\"planner\"]}]}";

static void
check_part(const char *what, const char *json)
{
	if (json)
		vb_fuzz_check_json(what, json);
}

void
vb_fuzz_validate(const char *text, size_t len)
{
	Jsonb	   *in = vb_fuzz_parse_input(text, len);
	List	   *specs;
	ListCell   *lc;

	if (JsonContainerIsArray(&in->root) && !JsonContainerIsScalar(&in->root))
	{
		char	   *ids[] = {"planner", "done"};
		VbExistingNodes existing = {lengthof(ids), lengthof(ids), ids};

		specs = vb_validate_spawn(in, vb_jsonb_from_cstring(spawn_definition), "planner",
								  &existing);
	}
	else
		specs = vb_validate_definition(in);

	vb_fuzz_check_json("the normalised nodes", vb_node_specs_json(specs));
	foreach(lc, specs)
	{
		VbNodeSpec *s = lfirst(lc);

		/* Each goes into a jsonb column of its own. */
		check_part("a node's input", s->input_json);
		check_part("a node's approval", s->approval_json);
		check_part("a node's llm", s->llm_json);
		check_part("a node's wait", s->wait_json);
		check_part("a node's escalation", s->escalation_json);
		check_part("a node's compensation", s->compensate_json);
		check_part("a node's estimate", s->estimate_json);
		vb_fuzz_check_text("a node's not_before", s->not_before);
	}
}
