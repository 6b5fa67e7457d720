/*-------------------------------------------------------------------------
 *
 * wait_spec.c
 *	  Validation of what the engine runs without a worker: the "sleep",
 *	  "signal" and "run" objects of nodes of those kinds, and any node's
 *	  "not_before".
 *
 * Each object is checked field by field, with the node and the field named
 * in the error, and returned in a normalised form (durations in
 * milliseconds, defaults applied) that RUN_STARTED and NODES_SPAWNED record
 * and the engine reads (waits.c).  Times may be templates over the node's
 * input, the run's input and its dependencies' outputs; a template is
 * checked here and rendered when the node starts.
 *
 * IDENTIFICATION
 *	  src/wait_spec.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "check.h"
#include "duration.h"
#include "jsonb_util.h"
#include "template.h"
#include "wait_spec.h"

#define MAX_TIME_LEN	512

static const char *const sleep_fields[] = {"for", "until", NULL};
static const char *const signal_fields[] = {"name", "timeout", "on_timeout", "default", NULL};
static const char *const run_fields[] = {"workflow", "version", "budget_usd", "budget_tokens", NULL};
static const char *const on_timeout_values[] = {"fail", "continue", NULL};

static void pg_attribute_noreturn()
bad(VbChecker *chk, const char *label, const char *field, const char *problem,
	const char *detail, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s: %s, field \"%s\" %s", chk->what, label, field, problem),
			 detail ? errdetail("%s", detail) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/* The object under key of node obj, which a node of this kind requires. */
static JsonbContainer *
required_object(VbChecker *chk, JsonbContainer *node, const char *kind, const char *label,
				const char *example)
{
	JsonbValue	v;

	if (!vb_jsonb_get(node, kind, &v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"%s\" is required for %s nodes",
						chk->what, label, kind, kind),
				 errhint("Give it, for example \"%s\": %s.", kind, example)));
	if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
		vb_type_error(chk, label, kind, &v, "an object");
	return v.val.binary.data;
}

/*
 * A time: a timestamp with its zone, or a template that gives one when the
 * node starts.  Returns the text as given.
 */
static char *
time_field(VbChecker *chk, JsonbValue *v, const char *label, const char *field,
		   List *depends_on)
{
	char	   *text;
	TimestampTz t;

	if (v->type != jbvString)
		vb_type_error(chk, label, field, v, "a timestamp or a template string");
	text = pnstrdup(v->val.string.val, v->val.string.len);
	if (strlen(text) != (size_t) v->val.string.len || text[0] == '\0' ||
		strlen(text) > MAX_TIME_LEN)
		bad(chk, label, field,
			psprintf("must be 1 to %d characters without NUL characters", MAX_TIME_LEN),
			NULL, NULL);
	if (strstr(text, "{{") != NULL)
	{
		char	   *problem = vb_template_check(text, depends_on);

		if (problem)
			bad(chk, label, field, "has a bad placeholder", psprintf("%s.", problem),
				"Placeholders: {{input.<path>}}, {{run.input.<path>}}, {{upstream.<node>.output.<path>}}.");
		return text;
	}
	if (!vb_parse_timestamp(text, &t))
		bad(chk, label, field, psprintf("is not a timestamp: \"%s\"", vb_short_text(text)),
			NULL, "Write a timestamp with its zone, such as \"2026-12-01T09:00:00Z\", or a template such as \"{{input.resume_at}}\".");
	return text;
}

static char *
sleep_spec(VbChecker *chk, JsonbContainer *node, const char *label, List *depends_on)
{
	JsonbContainer *obj = required_object(chk, node, "sleep", label, "{\"for\": \"1h\"}");
	JsonbValue	v;
	bool		has_for = vb_jsonb_get(obj, "for", &v);
	StringInfoData buf;

	vb_check_fields(chk, obj, sleep_fields, label, "sleep");
	initStringInfo(&buf);
	if (has_for == vb_jsonb_get(obj, "until", &v))
		bad(chk, label, "sleep", "needs exactly one of \"for\" and \"until\"", NULL,
			"Sleep for a duration (\"for\": \"1h\") or until a time (\"until\": \"{{input.resume_at}}\").");
	if (has_for)
	{
		vb_jsonb_get(obj, "for", &v);
		appendStringInfo(&buf, "{\"for_ms\":%ld}",
						 (long) vb_get_timeout(chk, &v, label, "sleep.for"));
	}
	else
	{
		vb_jsonb_get(obj, "until", &v);
		appendStringInfoString(&buf, "{\"until\":");
		vb_append_json_string(&buf, time_field(chk, &v, label, "sleep.until", depends_on));
		appendStringInfoChar(&buf, '}');
	}
	return buf.data;
}

static char *
signal_spec(VbChecker *chk, JsonbContainer *node, const char *label)
{
	JsonbContainer *obj = required_object(chk, node, "signal", label, "{\"name\": \"ci_finished\"}");
	JsonbValue	v;
	char	   *name;
	int64		timeout_ms = 0;
	char	   *on_timeout = "fail";
	StringInfoData buf;

	vb_check_fields(chk, obj, signal_fields, label, "signal");
	if (!vb_jsonb_get(obj, "name", &v))
		bad(chk, label, "signal.name", "is required", NULL,
			"Name the signal the node waits for: \"signal\": {\"name\": \"ci_finished\"}.");
	if (v.type != jbvString)
		vb_type_error(chk, label, "signal.name", &v, "a name");
	name = pnstrdup(v.val.string.val, v.val.string.len);
	if (strlen(name) != (size_t) v.val.string.len || !vb_valid_name(name))
		bad(chk, label, "signal.name", psprintf("is not a valid name: \"%s\"", vb_short_text(name)),
			psprintf("Names are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
					 VB_MAX_NAME_LEN), NULL);
	if (vb_jsonb_get(obj, "timeout", &v))
		timeout_ms = vb_get_timeout(chk, &v, label, "signal.timeout");
	if (vb_jsonb_get(obj, "on_timeout", &v))
	{
		if (v.type != jbvString)
			vb_type_error(chk, label, "signal.on_timeout", &v, "a string");
		on_timeout = pnstrdup(v.val.string.val, v.val.string.len);
		if (!vb_in_list(on_timeout, on_timeout_values))
			bad(chk, label, "signal.on_timeout",
				psprintf("has an unknown value \"%s\"", vb_short_text(on_timeout)),
				psprintf("Allowed: %s.", vb_list_text(on_timeout_values)), NULL);
		if (timeout_ms == 0)
			bad(chk, label, "signal.on_timeout", "needs \"signal.timeout\"", NULL, NULL);
	}
	if (vb_jsonb_get(obj, "default", &v) && strcmp(on_timeout, "continue") != 0)
		bad(chk, label, "signal.default", "applies only with \"on_timeout\": \"continue\"",
			NULL, "The default is the node's output when no signal came in time and the run continues.");

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"name\":");
	vb_append_json_string(&buf, name);
	if (timeout_ms > 0)
		appendStringInfo(&buf, ",\"timeout_ms\":%ld", (long) timeout_ms);
	appendStringInfo(&buf, ",\"on_timeout\":\"%s\"", on_timeout);
	if (strcmp(on_timeout, "continue") == 0)
		appendStringInfo(&buf, ",\"default\":%s",
						 vb_jsonb_get(obj, "default", &v) ? vb_jsonb_value_text(&v) : "null");
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

static char *
run_spec(VbChecker *chk, JsonbContainer *node, const char *label, List *depends_on)
{
	JsonbContainer *obj = required_object(chk, node, "run", label, "{\"workflow\": \"research\"}");
	JsonbValue	v;
	char	   *workflow;
	int			version = 0;
	char	   *budget_usd = NULL;
	int			budget_tokens = -1;
	StringInfoData buf;

	vb_check_fields(chk, obj, run_fields, label, "run");
	if (!vb_jsonb_get(obj, "workflow", &v))
		bad(chk, label, "run.workflow", "is required", NULL,
			"Name the workflow the child run starts: \"run\": {\"workflow\": \"research\"}.");
	if (v.type != jbvString)
		vb_type_error(chk, label, "run.workflow", &v, "a workflow name");
	workflow = pnstrdup(v.val.string.val, v.val.string.len);
	if (strlen(workflow) != (size_t) v.val.string.len || !vb_valid_name(workflow))
		bad(chk, label, "run.workflow",
			psprintf("is not a valid workflow name: \"%s\"", vb_short_text(workflow)), NULL, NULL);
	if (vb_jsonb_get(obj, "version", &v))
		version = vb_get_int(chk, &v, label, "run.version", 1, INT_MAX);
	/* at most what the run has left when the child starts (budget.c) */
	if (vb_jsonb_get(obj, "budget_usd", &v))
	{
		(void) vb_get_number(chk, &v, label, "run.budget_usd", 0, 1e9);
		budget_usd = vb_numeric_json(&v);
	}
	if (vb_jsonb_get(obj, "budget_tokens", &v))
		budget_tokens = vb_get_int(chk, &v, label, "run.budget_tokens", 0, INT_MAX);

	/* The node's input is the child's input, a template. */
	if (vb_jsonb_get(node, "input", &v) && v.type == jbvBinary)
	{
		char	   *problem = vb_template_check_json(v.val.binary.data, depends_on);

		if (problem)
			bad(chk, label, "input", "has a bad placeholder", psprintf("%s.", problem),
				"A run node's input is the child run's input; its strings may use {{run.input.<path>}} and {{upstream.<node>.output.<path>}}.");
	}

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"workflow\":");
	vb_append_json_string(&buf, workflow);
	if (version > 0)
		appendStringInfo(&buf, ",\"version\":%d", version);
	if (budget_usd)
		appendStringInfo(&buf, ",\"budget_usd\":%s", budget_usd);
	if (budget_tokens >= 0)
		appendStringInfo(&buf, ",\"budget_tokens\":%d", budget_tokens);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * Validates the object of a sleep, signal or run node (kind) of node object
 * `node`; returns its normalised JSON.
 */
char *
vb_validate_wait(const char *what, const char *label, const char *kind,
				 JsonbContainer *node, List *depends_on)
{
	VbChecker	chk = {what};

	if (strcmp(kind, "sleep") == 0)
		return sleep_spec(&chk, node, label, depends_on);
	if (strcmp(kind, "signal") == 0)
		return signal_spec(&chk, node, label);
	return run_spec(&chk, node, label, depends_on);
}

/* Validates a node's not_before; returns it as given. */
char *
vb_validate_not_before(const char *what, const char *label, JsonbValue *v, List *depends_on)
{
	VbChecker	chk = {what};

	return time_field(&chk, v, label, "not_before", depends_on);
}
