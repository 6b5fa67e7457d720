/*-------------------------------------------------------------------------
 *
 * validate.c
 *	  Validation and normalisation of workflow definitions and spawn lists.
 *
 * A definition and a spawn list describe nodes in the same shape, and both
 * pass through the same checks before anything is written: known fields
 * only, known kinds, unique ids, dependencies that exist, no cycles,
 * durations that parse, a sane retry policy, sizes within the settings.
 * Every error names the node and the field; the one check that reads a
 * table, that a run node's child workflow exists, is made on the
 * normalised JSON (vb_check_child_workflows).  The result is a list of
 * VbNodeSpec with all defaults applied, which is what the engine stores on
 * the nodes and writes into RUN_STARTED / NODES_SPAWNED, so that replay
 * never has to know the defaulting rules.
 *
 * Fields of the contract that this version does not act on yet
 * (compensation) are refused with feature_not_supported, never accepted and
 * silently ignored.  The "llm" object of llm nodes is checked by
 * llm_spec.c; activity names starting with "vectorbea:" are the engine's.
 *
 * IDENTIFICATION
 *	  src/validate.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "common/shortest_dec.h"
#include "common/string.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "vectorbea.h"
#include "check.h"
#include "duration.h"
#include "gate_spec.h"
#include "jsonb_util.h"
#include "llm_spec.h"
#include "settings.h"
#include "spi_util.h"
#include "validate.h"
#include "wait_spec.h"

static const char *const top_fields[] = {"nodes", "defaults", NULL};
static const char *const default_fields[] = {"retry", "timeout", NULL};
static const char *const node_fields[] = {"id", "kind", "activity", "depends_on",
"input", "retry", "timeout", "approval", "llm", "sleep", "signal", "run", "not_before",
"on_exhausted", "escalation", "in_doubt", "compensate", "estimate", NULL};
static const char *const estimate_fields[] = {"usd", "tokens", NULL};
static const char *const compensate_fields[] = {"kind", "activity", "input", "retry",
"timeout", "llm", "escalation", "in_doubt", NULL};
/* Node fields whose columns come with the 0.2.0 schema. */
static const char *const fields_of_020[] = {"not_before", "on_exhausted", "escalation",
"in_doubt", "compensate", "estimate", NULL};
static const char *const on_exhausted_values[] = {"fail", "escalate", NULL};
static const char *const in_doubt_values[] = {"retry", "ask", "compensate", NULL};
static const char *const wait_kinds[] = {"sleep", "signal", "run", NULL};
static const char *const retry_fields[] = {"max_attempts", "backoff", "initial",
"max", "multiplier", "jitter", NULL};

static char *specs_json(List *specs, bool compact);

/* The default retry policy (validate.h). */
static void
set_default_retry(VbNodeSpec *s)
{
	s->max_attempts = VB_DEFAULT_MAX_ATTEMPTS;
	s->backoff_exponential = true;
	s->initial_ms = VB_DEFAULT_INITIAL_MS;
	s->max_ms = VB_DEFAULT_MAX_MS;
	s->multiplier = VB_DEFAULT_MULTIPLIER;
	s->jitter = true;
	s->on_exhausted = NULL;
	s->in_doubt = NULL;
}

/* "node \"plan\"" or "node #3" when the id itself is unusable. */
static char *
node_label(const char *id, int position)
{
	if (id)
		return psprintf("node \"%s\"", vb_short_text(id));
	return psprintf("node #%d", position + 1);
}

static char *
get_name(VbChecker *chk, JsonbContainer *obj, const char *key, const char *label,
		 bool required)
{
	return vb_get_name_as(chk, obj, key, key, label, required);
}

/*
 * Applies one retry object (the workflow defaults or a node's own) on top of
 * spec's current policy.  prefix is "" or "defaults." so that the error names
 * the field the user wrote.
 */
static void
apply_retry(VbChecker *chk, JsonbValue *retry, VbNodeSpec *spec, const char *label,
			const char *prefix)
{
	JsonbContainer *obj;
	JsonbValue	v;
	char	   *field = psprintf("%sretry", prefix);

	if (retry->type != jbvBinary || !JsonContainerIsObject(retry->val.binary.data))
		vb_type_error(chk, label, field, retry, "an object");
	obj = retry->val.binary.data;
	vb_check_fields(chk, obj, retry_fields, label, field);

	if (vb_jsonb_get(obj, "max_attempts", &v))
		spec->max_attempts = vb_get_int(chk, &v, label,
									 psprintf("%s.max_attempts", field),
									 1, VB_MAX_ATTEMPTS_LIMIT);
	if (vb_jsonb_get(obj, "backoff", &v))
	{
		char	   *b;

		if (v.type != jbvString)
			vb_type_error(chk, label, psprintf("%s.backoff", field), &v, "a string");
		b = pnstrdup(v.val.string.val, v.val.string.len);
		if (strcmp(b, "exponential") == 0)
			spec->backoff_exponential = true;
		else if (strcmp(b, "fixed") == 0)
			spec->backoff_exponential = false;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %sfield \"%s.backoff\" has an unknown value \"%s\"",
							chk->what, vb_at(label), field, vb_short_text(b)),
					 errdetail("Allowed values: exponential, fixed.")));
	}
	if (vb_jsonb_get(obj, "initial", &v))
		spec->initial_ms = vb_get_duration(chk, &v, label, psprintf("%s.initial", field));
	if (vb_jsonb_get(obj, "max", &v))
		spec->max_ms = vb_get_duration(chk, &v, label, psprintf("%s.max", field));
	if (vb_jsonb_get(obj, "multiplier", &v))
		spec->multiplier = vb_get_number(chk, &v, label,
									  psprintf("%s.multiplier", field), 1.0, 10.0);
	if (vb_jsonb_get(obj, "jitter", &v))
	{
		if (v.type != jbvBool)
			vb_type_error(chk, label, psprintf("%s.jitter", field), &v, "a boolean");
		spec->jitter = v.val.boolean;
	}
	/* max caps the exponential growth; a fixed backoff never reaches it. */
	if (spec->backoff_exponential && spec->max_ms < spec->initial_ms)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %sfield \"%s.max\" is shorter than \"%s.initial\"",
						chk->what, vb_at(label), field, field),
				 errdetail("max is %s, initial is %s.",
						   vb_format_duration(spec->max_ms),
						   vb_format_duration(spec->initial_ms)),
				 errhint("The longest delay between attempts must be at least the first one.")));
}

/*
 * An approval node: the gate it opens (gate_spec.c).  It has no activity
 * (no worker does it) and no retry policy or node timeout.
 */
static void
parse_approval(VbChecker *chk, JsonbContainer *node, const char *label, VbNodeSpec *spec)
{
	JsonbValue	a;
	JsonbValue	v;

	for (const char *const *f = (const char *const[]) {"activity", "retry", "timeout",
			"on_exhausted", "escalation", "in_doubt", NULL}; *f; f++)
		if (vb_jsonb_get(node, *f, &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"%s\" does not apply to approval nodes",
							chk->what, label, *f),
					 errhint("A person decides an approval node; its timing is under \"approval\": timeout, on_timeout, escalate_to.")));
	if (!vb_jsonb_get(node, "approval", &a))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"approval\" is required for approval nodes",
						chk->what, label),
				 errhint("Give at least the gate: \"approval\": {\"gate\": \"publish\"}.")));
	spec->approval_json = vb_validate_gate(chk, label, "approval", &a, false, NULL);
	spec->activity = NULL;
	spec->max_attempts = 1;
	spec->timeout_ms = 0;
}

static void parse_node(VbChecker *chk, JsonbValue *nodeval, int position, VbNodeSpec *spec);
static char *parse_compensate(VbChecker *chk, JsonbValue *v, const char *label,
							  VbNodeSpec *spec, VbNodeSpec *defaults);

/*
 * A task's "estimate": what an attempt of it may cost, in USD and/or
 * tokens, held against the budgets while it runs (budget.c).
 */
static char *
parse_estimate(VbChecker *chk, JsonbValue *v, const char *label, VbNodeSpec *spec)
{
	JsonbValue	f;
	StringInfoData buf;
	bool		any = false;

	if (strcmp(spec->kind, "task") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"estimate\" applies to task nodes", chk->what, label),
				 strcmp(spec->kind, "llm") == 0 ?
				 errdetail("An llm node's calls are estimated from their prompt and max_tokens.") :
				 errdetail("An estimate is what a worker's attempt may cost; %s %s node has no worker.",
						   strchr("aeiou", spec->kind[0]) ? "an" : "a", spec->kind)));
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		vb_type_error(chk, label, "estimate", v, "an object: {\"usd\": 0.05, \"tokens\": 2000}");
	vb_check_fields(chk, v->val.binary.data, estimate_fields, label, "estimate");
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	if (vb_jsonb_get(v->val.binary.data, "usd", &f))
	{
		(void) vb_get_number(chk, &f, label, "estimate.usd", 0, 1e6);
		appendStringInfo(&buf, "\"usd\":%s", vb_numeric_json(&f));
		any = true;
	}
	if (vb_jsonb_get(v->val.binary.data, "tokens", &f))
	{
		appendStringInfo(&buf, "%s\"tokens\":%d", any ? "," : "",
						 vb_get_int(chk, &f, label, "estimate.tokens", 0, 1000000000));
		any = true;
	}
	if (!any)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"estimate\" needs \"usd\" or \"tokens\"", chk->what, label)));
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/* A node field that takes one of a few words; NULL when absent. */
static char *
get_word(VbChecker *chk, JsonbContainer *obj, const char *key, const char *label,
		 const char *const *allowed)
{
	JsonbValue	v;
	char	   *word;

	if (!vb_jsonb_get(obj, key, &v))
		return NULL;
	if (v.type != jbvString)
		vb_type_error(chk, label, key, &v, psprintf("one of %s", vb_list_text(allowed)));
	word = pnstrdup(v.val.string.val, v.val.string.len);
	if (!vb_in_list(word, allowed))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"%s\" has an unknown value \"%s\"",
						chk->what, label, key, vb_short_text(word)),
				 errdetail("Allowed: %s.", vb_list_text(allowed))));
	return word;
}

/*
 * What happens when a task, llm or run node fails for good
 * (on_exhausted: fail, or escalate to a person through its "escalation"
 * gate) and when an attempt of it is in doubt (in_doubt: retry, ask a
 * person through the same gate, or compensate).
 */
static void
parse_failure_policy(VbChecker *chk, JsonbContainer *obj, const char *label, VbNodeSpec *spec)
{
	JsonbValue	v;
	char	   *on_exhausted = get_word(chk, obj, "on_exhausted", label, on_exhausted_values);
	bool		llm_escalates = spec->llm_json &&
		strstr(spec->llm_json, "\"on_exhausted\":\"escalate\"") != NULL;
	bool		has_gate = vb_jsonb_get(obj, "escalation", &v);

	spec->in_doubt = get_word(chk, obj, "in_doubt", label, in_doubt_values);
	if ((on_exhausted || spec->in_doubt || has_gate) &&
		strcmp(spec->kind, "task") != 0 && strcmp(spec->kind, "llm") != 0 &&
		strcmp(spec->kind, "run") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, fields \"on_exhausted\", \"in_doubt\" and \"escalation\" do not apply to %s nodes",
						chk->what, label, spec->kind),
				 errdetail("They apply to task, llm and run nodes.")));
	if (spec->in_doubt && strcmp(spec->kind, "run") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"in_doubt\" does not apply to run nodes",
						chk->what, label),
				 errdetail("A child run is never in doubt: its end is recorded in the same database.")));
	if (on_exhausted && spec->llm_json && strcmp(on_exhausted, "escalate") != 0 && llm_escalates)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, fields \"on_exhausted\" and \"llm.on_exhausted\" disagree",
						chk->what, label),
				 errhint("Give one of them.")));
	spec->on_exhausted = (llm_escalates || (on_exhausted && strcmp(on_exhausted, "escalate") == 0)) ?
		"escalate" : NULL;
	if (spec->on_exhausted && !vb_waits_available())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("invalid %s: %s uses \"on_exhausted\": \"escalate\", which this database's vectorbea does not have yet",
						chk->what, label),
				 errhint("Run ALTER EXTENSION vectorbea UPDATE.")));
	if (spec->in_doubt && strcmp(spec->in_doubt, "retry") == 0)
		spec->in_doubt = NULL;
	if (spec->in_doubt && strcmp(spec->in_doubt, "compensate") == 0 &&
		!vb_jsonb_get(obj, "compensate", &v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"in_doubt\": \"compensate\" needs \"compensate\"",
						chk->what, label),
				 errhint("Say how the node is undone: \"compensate\": {\"activity\": \"...\"}.")));
	if (has_gate && spec->on_exhausted == NULL &&
		(spec->in_doubt == NULL || strcmp(spec->in_doubt, "ask") != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"escalation\" applies only with \"on_exhausted\": \"escalate\" or \"in_doubt\": \"ask\"",
						chk->what, label)));
	spec->escalation_json = NULL;
	if (spec->on_exhausted || (spec->in_doubt && strcmp(spec->in_doubt, "ask") == 0))
		spec->escalation_json = vb_validate_gate(chk, label, "escalation", has_gate ? &v : NULL,
												 true, psprintf("%s:escalation", spec->id));
}

/* qsort comparator of C strings. */
static int
compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Parses one node object into spec, defaults already applied to spec. */
static void
parse_node(VbChecker *chk, JsonbValue *nodeval, int position, VbNodeSpec *spec)
{
	JsonbContainer *obj;
	JsonbValue	v;
	char	   *label = node_label(NULL, position);
	VbNodeSpec	defaults = *spec;

	if (nodeval->type != jbvBinary || !JsonContainerIsObject(nodeval->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s must be an object", chk->what, label),
				 errdetail("Found %s.", vb_jsonb_type_name(nodeval))));
	obj = nodeval->val.binary.data;

	spec->id = get_name(chk, obj, "id", label, true);
	label = node_label(spec->id, position);
	/*
	 * The engine names the compensation of node P "P:compensate" (position
	 * -1, from parse_compensate): a node of that name would take the
	 * compensation's place in the run, and the run could then neither
	 * compensate nor end.
	 */
	if (position >= 0 && pg_str_endswith(spec->id, VB_COMPENSATION_SUFFIX))
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("invalid %s: %s, field \"id\" ends in \"%s\", which names compensation nodes",
						chk->what, label, VB_COMPENSATION_SUFFIX),
				 errdetail("The engine adds the compensation of a node \"%s\" as \"%s\".",
						   vb_short_text(pnstrdup(spec->id, strlen(spec->id) - strlen(VB_COMPENSATION_SUFFIX))),
						   vb_short_text(spec->id)),
				 errhint("Choose another id; say how a node is undone with its \"compensate\" field.")));
	vb_check_fields(chk, obj, node_fields, label, "");

	spec->kind = VB_DEFAULT_KIND;
	if (vb_jsonb_get(obj, "kind", &v))
	{
		char	   *kind;

		if (v.type != jbvString)
			vb_type_error(chk, label, "kind", &v, "a string");
		kind = pnstrdup(v.val.string.val, v.val.string.len);
		if (strcmp(kind, "approval") == 0)
			spec->kind = "approval";
		else if (strcmp(kind, "llm") == 0)
			spec->kind = "llm";
		else if (vb_in_list(kind, wait_kinds))
			spec->kind = kind;
		else if (strcmp(kind, "task") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"kind\" has an unknown value \"%s\"",
							chk->what, label, vb_short_text(kind)),
					 errdetail("Allowed kinds: task, llm, approval, sleep, signal, run.")));
	}
	if (!vb_waits_available())
	{
		const char *newer = vb_in_list(spec->kind, wait_kinds) ?
			psprintf("kind \"%s\"", spec->kind) : NULL;

		for (const char *const *f = fields_of_020; *f && newer == NULL; f++)
			if (vb_jsonb_get(obj, *f, &v))
				newer = psprintf("\"%s\"", *f);
		if (newer)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("invalid %s: %s uses %s, which this database's vectorbea does not have yet",
							chk->what, label, newer),
					 errhint("Run ALTER EXTENSION vectorbea UPDATE.")));
	}
	for (const char *const *k = wait_kinds; *k; k++)
		if (strcmp(spec->kind, *k) != 0 && vb_jsonb_get(obj, *k, &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"%s\" belongs to %s nodes",
							chk->what, label, *k, *k),
					 errhint("Add \"kind\": \"%s\".", *k)));
	if (strcmp(spec->kind, "llm") != 0 && vb_jsonb_get(obj, "llm", &v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"llm\" belongs to llm nodes",
						chk->what, label),
				 errhint("Add \"kind\": \"llm\" to have the scheduler call the model.")));
	spec->llm_json = NULL;
	if (strcmp(spec->kind, "approval") == 0)
		parse_approval(chk, obj, label, spec);
	else if (strcmp(spec->kind, "llm") == 0)
	{
		if (vb_jsonb_get(obj, "activity", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"activity\" does not apply to llm nodes",
							chk->what, label),
					 errdetail("The scheduler calls the model of an llm node itself."),
					 errhint("Remove \"activity\", or make the node a \"task\".")));
		if (vb_jsonb_get(obj, "approval", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"approval\" belongs to approval nodes",
							chk->what, label)));
		if (!vb_jsonb_get(obj, "llm", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"llm\" is required for llm nodes",
							chk->what, label),
					 errhint("Give {\"provider\": \"openai\", \"model\": \"...\", \"prompt\": \"...\"}.")));
		spec->activity = VB_LLM_ACTIVITY;
	}
	else if (vb_in_list(spec->kind, wait_kinds))
	{
		if (vb_jsonb_get(obj, "activity", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"activity\" does not apply to %s nodes",
							chk->what, label, spec->kind),
					 errdetail("The engine runs %s nodes itself, without a worker.", spec->kind),
					 errhint("Remove \"activity\".")));
		if (vb_jsonb_get(obj, "approval", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"approval\" belongs to approval nodes",
							chk->what, label)));
		spec->activity = NULL;
	}
	else
	{
		if (vb_jsonb_get(obj, "approval", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"approval\" belongs to approval nodes",
							chk->what, label),
					 errhint("Add \"kind\": \"approval\" to make this node a human gate.")));
		spec->activity = get_name(chk, obj, "activity", label, true);
		if (vb_reserved_activity(spec->activity))
			ereport(ERROR,
					(errcode(ERRCODE_RESERVED_NAME),
					 errmsg("invalid %s: %s, field \"activity\": names starting with \"%s\" are reserved",
							chk->what, label, VB_RESERVED_PREFIX),
					 errdetail("Found \"%s\".", spec->activity),
					 errhint("Choose another activity name; llm nodes use \"kind\": \"llm\".")));
	}

	spec->depends_on = NIL;
	if (vb_jsonb_get(obj, "depends_on", &v))
	{
		JsonbContainer *deps;
		int			n;
		char	  **sorted;

		if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data))
			vb_type_error(chk, label, "depends_on", &v, "an array of node ids");
		deps = v.val.binary.data;
		n = JsonContainerSize(deps);
		sorted = palloc(sizeof(char *) * Max(n, 1));
		for (int i = 0; i < n; i++)
		{
			JsonbValue *d = getIthJsonbValueFromContainer(deps, i);
			char	   *dep;

			if (d->type != jbvString)
				vb_type_error(chk, label, psprintf("depends_on[%d]", i), d, "a node id string");
			dep = pnstrdup(d->val.string.val, d->val.string.len);
			/*
			 * A dependency is a node id, held to the same rule: the ids are
			 * looked up in a hash that keeps VB_MAX_NAME_LEN bytes of a key,
			 * so a longer string would match an id it merely starts with.
			 */
			if (!vb_valid_name(dep))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s: %s, field \"depends_on[%d]\" is not a node id: \"%s\"",
								chk->what, label, i, vb_short_text(dep)),
						 errdetail("Node ids are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
								   VB_MAX_NAME_LEN)));
			if (strcmp(dep, spec->id) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
						 errmsg("invalid %s: %s, field \"depends_on\": the node depends on itself",
								chk->what, label),
						 errdetail("A dependency cycle: %s → %s.", spec->id, spec->id)));
			spec->depends_on = lappend(spec->depends_on, dep);
			sorted[i] = dep;
		}
		/* Duplicates found by sorting: a long list must not cost n². */
		qsort(sorted, n, sizeof(char *), compare_names);
		for (int i = 1; i < n; i++)
			if (strcmp(sorted[i - 1], sorted[i]) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s: %s, field \"depends_on\" lists \"%s\" twice",
								chk->what, label, sorted[i])));
		pfree(sorted);
	}

	spec->input_json = "{}";
	if (vb_jsonb_get(obj, "input", &v))
	{
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			vb_type_error(chk, label, "input", &v, "an object");
		spec->input_json = vb_jsonb_value_text(&v);
	}

	if (vb_jsonb_get(obj, "retry", &v))
		apply_retry(chk, &v, spec, label, "");
	if (vb_jsonb_get(obj, "timeout", &v))
		spec->timeout_ms = vb_get_timeout(chk, &v, label, "timeout");
	if (strcmp(spec->kind, "llm") == 0)
	{
		vb_jsonb_get(obj, "llm", &v);
		spec->llm_json = vb_validate_llm(chk->what, label, &v, spec->depends_on);
	}
	spec->wait_json = NULL;
	if (vb_in_list(spec->kind, wait_kinds))
	{
		spec->wait_json = vb_validate_wait(chk->what, label, spec->kind, obj, spec->depends_on);
		/* A sleep or signal node's time is its own; a run node's timeout is its own. */
		if (strcmp(spec->kind, "run") != 0 && vb_jsonb_get(obj, "timeout", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"timeout\" does not apply to %s nodes",
							chk->what, label, spec->kind),
					 strcmp(spec->kind, "signal") == 0 ?
					 errhint("A signal node waits up to \"signal\": {\"timeout\": ...}.") :
					 errhint("A sleep node ends at its own time.")));
		/* Nothing retries a sleep or a signal wait (defaults.retry may name them). */
		if (strcmp(spec->kind, "run") != 0 && vb_jsonb_get(obj, "retry", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"retry\" does not apply to %s nodes",
							chk->what, label, spec->kind),
					 strcmp(spec->kind, "signal") == 0 ?
					 errhint("A signal node that times out fails or continues as \"signal\": {\"on_timeout\": ...} says; it is not waited for again.") :
					 errhint("A sleep node ends at its own time; it has no attempts to retry.")));
		if (!vb_jsonb_get(obj, "timeout", &v))
			spec->timeout_ms = 0;
	}
	spec->not_before = NULL;
	if (vb_jsonb_get(obj, "not_before", &v))
		spec->not_before = vb_validate_not_before(chk->what, label, &v, spec->depends_on);
	parse_failure_policy(chk, obj, label, spec);
	spec->estimate_json = NULL;
	if (vb_jsonb_get(obj, "estimate", &v))
		spec->estimate_json = parse_estimate(chk, &v, label, spec);
	spec->compensate_json = NULL;
	spec->compensation_of = NULL;
	if (vb_jsonb_get(obj, "compensate", &v))
	{
		if (strcmp(spec->kind, "task") != 0 && strcmp(spec->kind, "llm") != 0 &&
			strcmp(spec->kind, "run") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"compensate\" does not apply to %s nodes",
							chk->what, label, spec->kind),
					 errdetail("A compensation undoes work: of task, llm and run nodes.")));
		spec->compensate_json = parse_compensate(chk, &v, label, spec, &defaults);
	}
}

/*
 * The "compensate" object of node spec: how it is undone, a task or an
 * llm node of its own, checked as a node named "<id>:compensate" (so its
 * errors name it) with the workflow's defaults.  It depends on nothing
 * (the engine chains compensations in reverse order of completion), and
 * when it fails for good a person decides (an escalation gate): a failed
 * compensation is never skipped silently.  Returns the normalised spec.
 */
static char *
parse_compensate(VbChecker *chk, JsonbValue *v, const char *label, VbNodeSpec *spec,
				 VbNodeSpec *defaults)
{
	VbNodeSpec	comp = *defaults;
	JsonbValue	node;
	StringInfoData buf;
	char	   *text;
	char	   *json;
	JsonbValue	k;

	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		vb_type_error(chk, label, "compensate", v, "an object: a task or an llm node");
	vb_check_fields(chk, v->val.binary.data, compensate_fields, label, "compensate");
	if (vb_jsonb_get(v->val.binary.data, "kind", &k) &&
		!(k.type == jbvString &&
		  vb_in_list(pnstrdup(k.val.string.val, k.val.string.len),
					 (const char *const[]) {"task", "llm", NULL})))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"compensate.kind\" must be \"task\" or \"llm\"",
						chk->what, label),
				 errdetail("A compensation is work a worker or a model does.")));
	if (strlen(spec->id) + strlen(VB_COMPENSATION_SUFFIX) > VB_MAX_NAME_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"compensate\": the compensation's id would be longer than %d characters",
						chk->what, label, VB_MAX_NAME_LEN),
				 errdetail("A compensation is named after its node, \"<id>%s\"; this id has %d characters.",
						   VB_COMPENSATION_SUFFIX, (int) strlen(spec->id)),
				 errhint("A node with \"compensate\" may have an id of at most %d characters.",
						 VB_MAX_NAME_LEN - (int) strlen(VB_COMPENSATION_SUFFIX))));
	/*
	 * While a run is undone nothing is spawned (complete.c refuses it): an
	 * llm compensation allowed to spawn would fail at its first answer
	 * that does.
	 */
	if (vb_jsonb_get(v->val.binary.data, "llm", &k) && k.type == jbvBinary &&
		JsonContainerIsObject(k.val.binary.data) &&
		vb_jsonb_get(k.val.binary.data, "allow_spawn", &k))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"compensate.llm.allow_spawn\" is not allowed",
						chk->what, label),
				 errdetail("While a run is undone, only its compensation nodes run: a compensation spawns nothing."),
				 errhint("Remove \"allow_spawn\" from the compensation.")));
	text = vb_jsonb_value_text(v);
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"id\":");
	vb_append_json_string(&buf, psprintf("%s" VB_COMPENSATION_SUFFIX, spec->id));
	appendStringInfoString(&buf, ",\"on_exhausted\":\"escalate\"");
	if (strcmp(text, "{}") != 0)
		appendStringInfo(&buf, ",%s", text + 1);
	else
		appendStringInfoChar(&buf, '}');
	node.type = jbvBinary;
	node.val.binary.data = &vb_jsonb_from_cstring(buf.data)->root;
	node.val.binary.len = 0;
	parse_node(chk, &node, -1, &comp);
	comp.depends_on = NIL;
	/* Every field: validate_workflow shows it, and compensations are rare. */
	json = specs_json(list_make1(&comp), false);
	/* The one spec of the array. */
	json[strlen(json) - 1] = '\0';
	return json + 1;
}

typedef struct IdEntry
{
	char		key[VB_MAX_NAME_LEN + 1];
	int			index;			/* position among new nodes, -1 for existing */
} IdEntry;

static HTAB *
id_table(int size)
{
	HASHCTL		ctl;

	ctl.keysize = VB_MAX_NAME_LEN + 1;
	ctl.entrysize = sizeof(IdEntry);
	ctl.hcxt = CurrentMemoryContext;
	return hash_create("vectorbea node ids", Max(size, 16), &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

#define CYCLE_SHOWN		20

/*
 * Finds and reports a cycle among the nodes Kahn's algorithm could not
 * order.  Each of them has a dependency that is also unordered, so walking
 * such dependencies must revisit a node.
 */
static void
report_cycle(VbChecker *chk, VbNodeSpec **specs, int n, bool *ordered, HTAB *ids)
{
	int		   *visit_order = palloc0(sizeof(int) * n);
	int			start = -1;
	int			cur;
	int			step = 1;
	int			length = 0;
	StringInfoData path;

	for (int i = 0; i < n && start < 0; i++)
		if (!ordered[i])
			start = i;
	cur = start;
	while (visit_order[cur] == 0)
	{
		ListCell   *lc;
		int			next = -1;

		visit_order[cur] = step++;
		foreach(lc, specs[cur]->depends_on)
		{
			IdEntry    *e = hash_search(ids, lfirst(lc), HASH_FIND, NULL);

			if (e && e->index >= 0 && !ordered[e->index])
			{
				next = e->index;
				break;
			}
		}
		Assert(next >= 0);
		if (next < 0)
			elog(ERROR, "cycle search lost its way at node \"%s\"", specs[cur]->id);
		cur = next;
	}

	/*
	 * cur is on the cycle; print it in the direction of the dependencies,
	 * its first CYCLE_SHOWN nodes only: a cycle through thousands of nodes
	 * would make a message nobody reads.
	 */
	initStringInfo(&path);
	start = cur;
	do
	{
		ListCell   *lc;

		if (length++ < CYCLE_SHOWN)
			appendStringInfo(&path, "%s → ", vb_short_text(specs[cur]->id));
		foreach(lc, specs[cur]->depends_on)
		{
			IdEntry    *e = hash_search(ids, lfirst(lc), HASH_FIND, NULL);

			if (e && e->index >= 0 && !ordered[e->index])
			{
				cur = e->index;
				break;
			}
		}
	} while (cur != start);
	if (length > CYCLE_SHOWN)
		appendStringInfo(&path, "… (%d nodes in all) → ", length);
	appendStringInfoString(&path, vb_short_text(specs[start]->id));

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
			 errmsg("invalid %s: node \"%s\", field \"depends_on\" closes a dependency cycle",
					chk->what, vb_short_text(specs[start]->id)),
			 errdetail("The cycle (each node depends on the next): %s.", path.data),
			 errhint("A workflow is a directed acyclic graph; remove one of these dependencies.")));
}

/*
 * Parses an array of node objects against the defaults, checks ids,
 * dependencies and cycles.  existing (may be NULL) are the run's nodes for a
 * spawn list (those it names): new ids must not collide with them and may
 * depend on them.
 */
static List *
parse_nodes(VbChecker *chk, JsonbValue *nodes, JsonbValue *defaults_retry,
			JsonbValue *defaults_timeout, VbExistingNodes *existing)
{
	JsonbContainer *arr;
	int			n;
	int			existing_count = existing ? existing->count : 0;
	int			existing_named = existing ? existing->named_count : 0;
	VbNodeSpec **specs;
	VbNodeSpec	template;
	HTAB	   *ids;
	int		   *remaining;
	List	  **dependents;		/* per new node, the new nodes that name it */
	bool	   *ordered;
	int		   *queue;
	int			head = 0,
				tail = 0;
	List	   *result = NIL;

	if (nodes->type != jbvBinary || !JsonContainerIsArray(nodes->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: \"nodes\" must be an array of node objects", chk->what),
				 errdetail("Found %s.", vb_jsonb_type_name(nodes))));
	arr = nodes->val.binary.data;
	n = JsonContainerSize(arr);
	if (n == 0 && existing == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: \"nodes\" is empty", chk->what),
				 errhint("A workflow needs at least one node.")));
	if (n + existing_count > vb_max_nodes_per_run)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("invalid %s: a run would have %d nodes, more than vectorbea.max_nodes_per_run",
						chk->what, n + existing_count),
				 errdetail("vectorbea.max_nodes_per_run is %d%s.", vb_max_nodes_per_run,
						   existing ? psprintf("; the run already has %d", existing_count) : ""),
				 errhint("Split the work into several runs, or raise vectorbea.max_nodes_per_run.")));

	/* The defaults, checked once, are where every node starts from. */
	memset(&template, 0, sizeof(template));
	set_default_retry(&template);
	if (defaults_retry)
		apply_retry(chk, defaults_retry, &template, NULL, "defaults.");
	if (defaults_timeout)
		template.timeout_ms = vb_get_timeout(chk, defaults_timeout, NULL, "defaults.timeout");

	specs = palloc0(sizeof(VbNodeSpec *) * Max(n, 1));
	ids = id_table(n + existing_named);
	for (int i = 0; i < existing_named; i++)
	{
		IdEntry    *e = hash_search(ids, existing->named_ids[i], HASH_ENTER, NULL);

		e->index = -1;
	}

	for (int i = 0; i < n; i++)
	{
		VbNodeSpec *spec = palloc0(sizeof(VbNodeSpec));
		JsonbValue *nodeval = getIthJsonbValueFromContainer(arr, i);
		IdEntry    *e;
		bool		found;

		*spec = template;
		parse_node(chk, nodeval, i, spec);

		e = hash_search(ids, spec->id, HASH_ENTER, &found);
		if (found)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("invalid %s: node \"%s\", field \"id\" is not unique",
							chk->what, vb_short_text(spec->id)),
					 e->index >= 0 ?
					 errdetail("Nodes #%d and #%d both have the id \"%s\".",
							   e->index + 1, i + 1, vb_short_text(spec->id)) :
					 errdetail("The run already has a node \"%s\".", vb_short_text(spec->id)),
					 errhint("Every node of a run needs its own id.")));
		e->index = i;
		specs[i] = spec;
	}

	/* Dependencies must name a node of the run, new or existing. */
	remaining = palloc0(sizeof(int) * Max(n, 1));
	dependents = palloc0(sizeof(List *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		ListCell   *lc;

		foreach(lc, specs[i]->depends_on)
		{
			IdEntry    *e = hash_search(ids, lfirst(lc), HASH_FIND, NULL);

			if (e == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("invalid %s: node \"%s\", field \"depends_on\" names an unknown node \"%s\"",
								chk->what, vb_short_text(specs[i]->id), vb_short_text(lfirst(lc))),
						 errhint(existing ? "A spawned node may depend on nodes of the run or on nodes spawned with it."
								 : "Dependencies must be ids of nodes in the same definition.")));
			if (e->index >= 0)
			{
				remaining[i]++;
				dependents[e->index] = lappend_int(dependents[e->index], i);
			}
		}
	}

	/* Kahn's algorithm over the new nodes; what stays unordered is cyclic. */
	ordered = palloc0(sizeof(bool) * Max(n, 1));
	queue = palloc(sizeof(int) * Max(n, 1));
	for (int i = 0; i < n; i++)
		if (remaining[i] == 0)
			queue[tail++] = i;
	while (head < tail)
	{
		int			done = queue[head++];

		ListCell   *lc;

		ordered[done] = true;
		/*
		 * Through the dependents' lists, linear in the edges: scanning
		 * every node's depends_on for each ordered node took 1.6 s for
		 * 9,000 tasks and 7 joins, at every start_run of the definition.
		 */
		foreach(lc, dependents[done])
			if (--remaining[lfirst_int(lc)] == 0)
				queue[tail++] = lfirst_int(lc);
	}
	if (tail < n)
		report_cycle(chk, specs, n, ordered, ids);

	for (int i = 0; i < n; i++)
		result = lappend(result, specs[i]);
	return result;
}

static List *
validate(VbChecker *chk, Jsonb *definition, VbExistingNodes *existing,
		 JsonbValue *nodes_override)
{
	JsonbValue	nodes;
	JsonbValue	defaults;
	JsonbValue	retry;
	JsonbValue	timeout;
	JsonbValue *defaults_retry = NULL;
	JsonbValue *defaults_timeout = NULL;
	JsonbContainer *root = &definition->root;

	if (!JsonContainerIsObject(root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: it must be a JSON object with a \"nodes\" array", chk->what)));
	if (nodes_override == NULL)
	{
		vb_check_fields(chk, root, top_fields, NULL, "");
		if (!vb_jsonb_get(root, "nodes", &nodes))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: field \"nodes\" is required", chk->what)));
	}
	if (vb_jsonb_get(root, "defaults", &defaults))
	{
		if (defaults.type != jbvBinary || !JsonContainerIsObject(defaults.val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: field \"defaults\" must be an object", chk->what),
					 errdetail("Found %s.", vb_jsonb_type_name(&defaults))));
		if (nodes_override == NULL)
		{
			ListCell   *lc;

			foreach(lc, vb_jsonb_object_keys(defaults.val.binary.data))
			{
				char	   *key = lfirst(lc);

				if (vb_in_list(key, default_fields))
					continue;
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s: field \"defaults.%s\" is unknown", chk->what, key),
						 errdetail("Allowed fields here: %s.", vb_list_text(default_fields))));
			}
		}
		if (vb_jsonb_get(defaults.val.binary.data, "retry", &retry))
			defaults_retry = &retry;
		if (vb_jsonb_get(defaults.val.binary.data, "timeout", &timeout))
			defaults_timeout = &timeout;
	}
	return parse_nodes(chk, nodes_override ? nodes_override : &nodes,
					   defaults_retry, defaults_timeout, existing);
}

/* Validates a workflow definition; returns its nodes, normalised. */
List *
vb_validate_definition(Jsonb *definition)
{
	VbChecker		chk = {"workflow definition"};

	vb_check_payload_size(definition, "the workflow definition");
	return validate(&chk, definition, NULL, NULL);
}

/*
 * Validates the spawn list of node spawner against the run's definition (for
 * its defaults) and its existing nodes.
 */
List *
vb_validate_spawn(Jsonb *spawn, Jsonb *definition, const char *spawner,
				  VbExistingNodes *existing)
{
	VbChecker		chk;
	JsonbValue	nodes;

	chk.what = psprintf("spawn list of node \"%s\"", vb_short_text(spawner));
	vb_check_payload_size(spawn, psprintf("the spawn list of node \"%s\"", vb_short_text(spawner)));
	if (!JsonContainerIsArray(&spawn->root) || JsonContainerIsScalar(&spawn->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: it must be a JSON array of node objects", chk.what),
				 errhint("Pass spawn => '[{\"id\": \"next\", \"activity\": \"work\"}]'.")));
	nodes.type = jbvBinary;
	nodes.val.binary.data = &spawn->root;
	nodes.val.binary.len = VARSIZE(spawn) - VARHDRSZ;
	return validate(&chk, definition, existing, &nodes);
}

/* Whether a node's retry policy is the default one, which specs leave out. */
static bool
default_retry(const VbNodeSpec *s)
{
	return s->max_attempts == VB_DEFAULT_MAX_ATTEMPTS && s->backoff_exponential &&
		s->initial_ms == VB_DEFAULT_INITIAL_MS && s->max_ms == VB_DEFAULT_MAX_MS &&
		s->multiplier == VB_DEFAULT_MULTIPLIER && s->jitter &&
		s->on_exhausted == NULL && s->in_doubt == NULL;
}

/* ,"retry":{...}: the node's retry policy with every field. */
static void
append_retry(StringInfo buf, const VbNodeSpec *s)
{
	/* The shortest text that reads back as the same double (%g kept 6 digits). */
	char		multiplier[DOUBLE_SHORTEST_DECIMAL_LEN];

	double_to_shortest_decimal_buf(s->multiplier, multiplier);
	appendStringInfo(buf, ",\"retry\":{\"max_attempts\":%d,"
					 "\"backoff\":\"%s\",\"initial_ms\":%ld,\"max_ms\":%ld,"
					 "\"multiplier\":%s,\"jitter\":%s",
					 s->max_attempts,
					 s->backoff_exponential ? "exponential" : "fixed",
					 (long) s->initial_ms, (long) s->max_ms, multiplier,
					 s->jitter ? "true" : "false");
	if (s->on_exhausted)
		appendStringInfo(buf, ",\"on_exhausted\":\"%s\"", s->on_exhausted);
	if (s->in_doubt)
		appendStringInfo(buf, ",\"in_doubt\":\"%s\"", s->in_doubt);
	appendStringInfoChar(buf, '}');
}

/*
 * The normalised JSON array of specs, with every field (compact false) or
 * without the fields that have their default (validate.h).
 */
static char *
specs_json(List *specs, bool compact)
{
	StringInfoData buf;
	ListCell   *lc;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	foreach(lc, specs)
	{
		VbNodeSpec *s = lfirst(lc);
		ListCell   *d;

		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(&buf, ',');
		appendStringInfoString(&buf, "{\"id\":");
		vb_append_json_string(&buf, s->id);
		if (!compact || strcmp(s->kind, VB_DEFAULT_KIND) != 0)
		{
			appendStringInfoString(&buf, ",\"kind\":");
			vb_append_json_string(&buf, s->kind);
		}
		appendStringInfoString(&buf, ",\"activity\":");
		vb_append_json_string(&buf, s->activity);
		if (!compact || s->depends_on != NIL)
		{
			appendStringInfoString(&buf, ",\"depends_on\":[");
			foreach(d, s->depends_on)
			{
				if (foreach_current_index(d) > 0)
					appendStringInfoChar(&buf, ',');
				vb_append_json_string(&buf, lfirst(d));
			}
			appendStringInfoChar(&buf, ']');
		}
		if (!compact || strcmp(s->input_json, "{}") != 0)
			appendStringInfo(&buf, ",\"input\":%s", s->input_json);
		if (!compact || !default_retry(s))
			append_retry(&buf, s);
		if (s->escalation_json)
			appendStringInfo(&buf, ",\"escalation\":%s", s->escalation_json);
		if (s->compensate_json)
			appendStringInfo(&buf, ",\"compensate\":%s", s->compensate_json);
		if (s->estimate_json)
			appendStringInfo(&buf, ",\"estimate\":%s", s->estimate_json);
		if (s->timeout_ms > 0)
			appendStringInfo(&buf, ",\"timeout_ms\":%ld", (long) s->timeout_ms);
		if (s->approval_json)
			appendStringInfo(&buf, ",\"approval\":%s", s->approval_json);
		if (s->llm_json)
			appendStringInfo(&buf, ",\"llm\":%s", s->llm_json);
		if (s->wait_json)
			appendStringInfo(&buf, ",\"%s\":%s", s->kind, s->wait_json);
		if (s->not_before)
		{
			appendStringInfoString(&buf, ",\"not_before\":");
			vb_append_json_string(&buf, s->not_before);
		}
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, ']');
	return buf.data;
}

/*
 * The specs as RUN_STARTED and NODES_SPAWNED record them, and as replay
 * rebuilds nodes from: without the fields that have their default, so that
 * the history of a one-node run is a third of the size.  A 0.1.0 schema
 * (before ALTER EXTENSION UPDATE) gets every field: its replay() and its
 * nodes.retry (NOT NULL) know no defaults.
 */
char *
vb_node_specs_json(List *specs)
{
	return specs_json(specs, vb_waits_available());
}

/* The specs with every default written out, as validate_workflow shows them. */
char *
vb_node_specs_full_json(List *specs)
{
	return specs_json(specs, false);
}

/*
 * The fields a spec leaves out, with their defaults, as a JSON object:
 * defaults || spec is the spec with every field, whichever form it was
 * written in.
 */
char *
vb_node_spec_defaults_json(void)
{
	VbNodeSpec	defaults;
	StringInfoData buf;

	memset(&defaults, 0, sizeof(defaults));
	set_default_retry(&defaults);
	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"kind\":\"%s\",\"depends_on\":[],\"input\":{}", VB_DEFAULT_KIND);
	append_retry(&buf, &defaults);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * The workflows that the run nodes of specs_json (a definition's, or a
 * spawn list's: `what` says which) start must exist (the version too,
 * when one is named): a name typed wrong is found now rather than when the
 * node runs.  Workflow `name`, being defined or the spawning run's, may
 * name itself, at a version it has, or (defining) the one the definition
 * becomes.  Not read-only: a workflow defined since the caller's statement
 * began (the scheduler's step, for an llm node's spawn) counts.
 */
void
vb_check_child_workflows(const char *name, const char *specs_json, const char *what, bool defining)
{
	Datum		args[3] = {CStringGetTextDatum(specs_json), CStringGetTextDatum(name),
	Int32GetDatum(defining ? 1 : 0)};
	Oid			types[3] = {TEXTOID, TEXTOID, INT4OID};

	if (strstr(specs_json, "\"kind\":\"run\"") == NULL)
		return;
	if (SPI_execute_with_args("SELECT s->>'id', s->'run'->>'workflow', s->'run'->>'version'"
							  "  FROM pg_catalog.jsonb_array_elements($1::jsonb) AS s"
							  " WHERE s->>'kind' = 'run'"
							  "   AND CASE WHEN s->'run'->>'workflow' <> $2"
							  "            THEN NOT EXISTS (SELECT FROM vectorbea.workflows w"
							  "                              WHERE w.name = s->'run'->>'workflow'"
							  "                                AND (s->'run'->'version' IS NULL"
							  "                                     OR w.version = (s->'run'->>'version')::int))"
							  "            ELSE (s->'run'->>'version')::int >"
							  "                 (SELECT coalesce(pg_catalog.max(w.version), 0) + $3"
							  "                    FROM vectorbea.workflows w WHERE w.name = $2) END"
							  " LIMIT 1", 3, types, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look up child workflows");
	if (SPI_processed == 1)
	{
		char	   *version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);

		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("invalid %s: node \"%s\", field \"run.workflow\" names %sworkflow \"%s\", which does not exist",
						what, vb_short_text(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
						version ? psprintf("version %s of ", version) : "",
						vb_short_text(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2))),
				 errhint("Define the child workflow first.")));
	}
}
