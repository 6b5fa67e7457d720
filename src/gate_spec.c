/*-------------------------------------------------------------------------
 *
 * gate_spec.c
 *	  Validation of gates: the "approval" object of approval nodes and the
 *	  "escalation" object of nodes that call a person when they fail.
 *
 * Both say which gate opens, who may decide it (approver_role), and what
 * happens when nobody does in time (timeout, on_timeout, escalate_to: a
 * chain of roles the gate passes to, one per timeout).  An approval gate
 * may need a quorum: quorum approvals out of a list of approvers, people
 * (matched with decided_by) or roles (matched by membership), each of whom
 * decides once.  A gate on a failure is decided accept, retry or fail, so
 * its timeout can only reject it (fail) or pass it on.
 *
 * The normalised JSON is what vb_state_wait_on_gate inserts into
 * vectorbea.approvals.
 *
 * IDENTIFICATION
 *	  src/gate_spec.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "check.h"
#include "gate_spec.h"
#include "jsonb_util.h"
#include "spi_util.h"

#define MAX_APPROVERS	100

static const char *const approval_fields[] = {"gate", "timeout", "on_timeout",
"approver_role", "escalate_to", "context", "quorum", "approvers", NULL};
static const char *const escalation_fields[] = {"gate", "timeout", "on_timeout",
"approver_role", "escalate_to", "context", NULL};

/* The approvers of a quorum: 1 to MAX_APPROVERS distinct names. */
static List *
get_approvers(VbChecker *chk, JsonbValue *v, const char *label, const char *field)
{
	List	   *approvers = NIL;
	int			n;

	if (v->type != jbvBinary || !JsonContainerIsArray(v->val.binary.data) ||
		JsonContainerIsScalar(v->val.binary.data) ||
		(n = JsonContainerSize(v->val.binary.data)) == 0 || n > MAX_APPROVERS)
		vb_type_error(chk, label, field, v,
					  psprintf("an array of 1 to %d people or roles", MAX_APPROVERS));
	for (int i = 0; i < n; i++)
	{
		char	   *name = vb_get_role_name(chk, getIthJsonbValueFromContainer(v->val.binary.data, i),
											label, psprintf("%s[%d]", field, i));
		ListCell   *lc;

		foreach(lc, approvers)
			if (strcmp(lfirst(lc), name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid %s: %s, field \"%s\" lists \"%s\" twice",
								chk->what, label, field, vb_short_text(name)),
						 errdetail("Each approver decides once.")));
		approvers = lappend(approvers, name);
	}
	return approvers;
}

/*
 * Validates gate object `a`, written under field (approval or escalation)
 * of node label; for an escalation, default_gate names the gate when the
 * object does not (a may then be NULL).  Returns the normalised JSON.
 */
char *
vb_validate_gate(VbChecker *chk, const char *label, const char *field, JsonbValue *a,
				 bool escalation, const char *default_gate)
{
	JsonbValue	v;
	JsonbContainer *obj = NULL;
	StringInfoData buf;
	int64		timeout_ms = 0;
	char	   *on_timeout = "reject";
	char	   *approver_role = NULL;
	List	   *escalate_to = NIL;
	List	   *approvers = NIL;
	int			quorum = 0;
	char	   *context = "{}";
	const char *gate = default_gate;
	ListCell   *lc;

#define F(name) psprintf("%s.%s", field, name)
	if (a)
	{
		if (a->type != jbvBinary || !JsonContainerIsObject(a->val.binary.data))
			vb_type_error(chk, label, field, a, "an object");
		obj = a->val.binary.data;
		vb_check_fields(chk, obj, escalation ? escalation_fields : approval_fields, label, field);
		gate = vb_get_name_as(chk, obj, "gate", F("gate"), label, !escalation);
		if (gate == NULL)
			gate = default_gate;
	}
	if (obj && vb_jsonb_get(obj, "timeout", &v))
		timeout_ms = vb_get_timeout(chk, &v, label, F("timeout"));
	if (obj && vb_jsonb_get(obj, "on_timeout", &v))
	{
		if (v.type != jbvString)
			vb_type_error(chk, label, F("on_timeout"), &v, "a string");
		on_timeout = pnstrdup(v.val.string.val, v.val.string.len);
		if (strcmp(on_timeout, "reject") != 0 && strcmp(on_timeout, "escalate") != 0 &&
			(escalation || strcmp(on_timeout, "approve") != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"%s\" has an unknown value \"%s\"",
							chk->what, label, F("on_timeout"), vb_short_text(on_timeout)),
					 escalation ?
					 errdetail("Allowed values: reject (the node fails), escalate.") :
					 errdetail("Allowed values: reject, approve, escalate.")));
		if (timeout_ms == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"%s\" needs \"%s\"",
							chk->what, label, F("on_timeout"), F("timeout")),
					 errhint("Say how long the gate waits, e.g. \"timeout\": \"1h\".")));
	}
	if (obj && vb_jsonb_get(obj, "approver_role", &v))
		approver_role = vb_get_role_name(chk, &v, label, F("approver_role"));
	if (obj && vb_jsonb_get(obj, "escalate_to", &v))
	{
		if (v.type == jbvString)
			escalate_to = list_make1(vb_get_role_name(chk, &v, label, F("escalate_to")));
		else if (v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data) &&
				 JsonContainerSize(v.val.binary.data) > 0)
		{
			for (int i = 0; i < (int) JsonContainerSize(v.val.binary.data); i++)
				escalate_to = lappend(escalate_to,
									  vb_get_role_name(chk, getIthJsonbValueFromContainer(v.val.binary.data, i),
													   label, psprintf("%s.escalate_to[%d]", field, i)));
		}
		else
			vb_type_error(chk, label, F("escalate_to"), &v,
						  "a role name or a non-empty array of role names");
		if (strcmp(on_timeout, "escalate") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"%s\" applies only with \"on_timeout\": \"escalate\"",
							chk->what, label, F("escalate_to"))));
	}
	else if (strcmp(on_timeout, "escalate") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, field \"%s\" is required with \"on_timeout\": \"escalate\"",
						chk->what, label, F("escalate_to")),
				 errhint("Name the role (or the roles, in order) the gate passes to.")));
	if (obj && vb_jsonb_get(obj, "context", &v))
	{
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			vb_type_error(chk, label, F("context"), &v, "an object");
		context = vb_jsonb_value_text(&v);
	}
	if (obj && vb_jsonb_get(obj, "approvers", &v))
		approvers = get_approvers(chk, &v, label, F("approvers"));
	/*
	 * A 0.1.0 schema has no column for a quorum: a gate that took the
	 * definition would open without it, and the first person decides.
	 */
	if (approvers != NIL && !vb_waits_available())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("invalid %s: %s uses \"%s\", which this database's vectorbea does not have yet",
						chk->what, label, F("approvers")),
				 errhint("Run ALTER EXTENSION vectorbea UPDATE.")));
	if (obj && vb_jsonb_get(obj, "quorum", &v))
	{
		if (approvers == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %s, field \"%s\" needs \"%s\"",
							chk->what, label, F("quorum"), F("approvers")),
					 errhint("List who decides, people or roles: \"approvers\": [\"ana\", \"ben\", \"finance\"].")));
		quorum = vb_get_int(chk, &v, label, F("quorum"), 1, list_length(approvers));
	}
	else if (approvers != NIL)
		quorum = 1;
	/*
	 * An escalation hands the gate to another role; a quorum's votes come
	 * from its approvers' entries, which the new role's members are not:
	 * the escalated gate could be decided by nobody it was passed to.
	 */
	if (approvers != NIL && escalate_to != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s, fields \"%s\" and \"%s\" do not go together",
						chk->what, label, F("approvers"), F("escalate_to")),
				 errdetail("An escalation passes the gate to a role whose members are not among the approvers who vote."),
				 errhint("Use \"on_timeout\": \"reject\" or \"approve\" with a quorum, or escalate a gate without \"approvers\".")));
#undef F

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"gate\":");
	vb_append_json_string(&buf, gate);
	if (timeout_ms > 0)
		appendStringInfo(&buf, ",\"timeout_ms\":%ld", (long) timeout_ms);
	appendStringInfo(&buf, ",\"on_timeout\":\"%s\",\"approver_role\":", on_timeout);
	vb_append_json_string(&buf, approver_role);
	appendStringInfoString(&buf, ",\"escalate_to\":[");
	foreach(lc, escalate_to)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(&buf, ',');
		vb_append_json_string(&buf, lfirst(lc));
	}
	appendStringInfo(&buf, "],\"context\":%s", context);
	if (quorum > 0)
	{
		appendStringInfo(&buf, ",\"quorum\":%d,\"approvers\":[", quorum);
		foreach(lc, approvers)
		{
			if (foreach_current_index(lc) > 0)
				appendStringInfoChar(&buf, ',');
			vb_append_json_string(&buf, lfirst(lc));
		}
		appendStringInfoChar(&buf, ']');
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}
