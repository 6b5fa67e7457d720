/*-------------------------------------------------------------------------
 *
 * check.c
 *	  Field checks shared by the validators of definitions and spawn lists
 *	  (validate.c), of llm specs (llm_spec.c), of sleep, signal and run
 *	  nodes (wait_spec.c) and of gates (gate_spec.c).
 *
 * Every refusal says what was being validated, which node and which
 * field, what was found and what is allowed.  Fields of the contract that
 * this version does not act on yet are refused as not supported, never
 * accepted and silently ignored.  A leaf.
 *
 * IDENTIFICATION
 *	  src/check.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "check.h"
#include "duration.h"
#include "jsonb_util.h"

bool
vb_in_list(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

/* "a, b, c" for messages. */
char *
vb_list_text(const char *const *list)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (; *list; list++)
		appendStringInfo(&buf, "%s%s", buf.len ? ", " : "", *list);
	return buf.data;
}

/* "node \"plan\", " for messages; "" for the workflow's defaults. */
char *
vb_at(const char *label)
{
	return label ? psprintf("%s, ", label) : "";
}

/* Refuses keys outside allowed; names where they were found. */
void
vb_check_fields(VbChecker *chk, JsonbContainer *obj, const char *const *allowed,
			 const char *label, const char *field_path)
{
	ListCell   *lc;

	foreach(lc, vb_jsonb_object_keys(obj))
	{
		char	   *key = lfirst(lc);
		char	   *where;

		if (vb_in_list(key, allowed))
			continue;
		where = vb_short_text(field_path[0] ? psprintf("%s.%s", field_path, key) : key);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %s%sunknown field \"%s\"",
						chk->what, label ? label : "", label ? ", " : "", where),
				 errdetail("Allowed fields here: %s.", vb_list_text(allowed))));
	}
}

void
vb_type_error(VbChecker *chk, const char *label, const char *field, JsonbValue *v,
		   const char *expected)
{
	/* where an array of some size is wanted, the size of the one found */
	int			array_size = strstr(expected, "array") != NULL && v->type == jbvBinary &&
		JsonContainerIsArray(v->val.binary.data) && !JsonContainerIsScalar(v->val.binary.data) ?
		(int) JsonContainerSize(v->val.binary.data) : -1;

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s: %sfield \"%s\" must be %s",
					chk->what, vb_at(label), field, expected),
			 array_size < 0 ? errdetail("Found %s.", vb_jsonb_type_name(v)) :
			 array_size == 0 ? errdetail("Found an empty array.") :
			 errdetail_plural("Found an array of %d element.", "Found an array of %d elements.",
							  array_size, array_size)));
}

bool
vb_valid_name(const char *s)
{
	size_t		len = strlen(s);

	if (len == 0 || len > VB_MAX_NAME_LEN)
		return false;
	for (; *s; s++)
		if (!(isalnum((unsigned char) *s) || *s == '_' || *s == '-' ||
			  *s == '.' || *s == ':'))
			return false;
	return true;
}

/* A JSON number, whole, for JSON the engine stores and reads back. */
char *
vb_numeric_json(JsonbValue *v)
{
	return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
}

/* A JSON number for a message, shortened when it is long. */
char *
vb_numeric_text(JsonbValue *v)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out,
														   NumericGetDatum(v->val.numeric)));

	return vb_short_text(text);
}

/* An integer within [min, max], or an error naming the field. */
int
vb_get_int(VbChecker *chk, JsonbValue *v, const char *label, const char *field,
		int min, int max)
{
	char	   *text;
	char	   *end;
	long		n;

	if (v->type != jbvNumeric)
		vb_type_error(chk, label, field, v, "an integer");
	text = vb_numeric_text(v);
	errno = 0;
	n = strtol(text, &end, 10);
	if (*end != '\0' || errno != 0 || n < min || n > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %sfield \"%s\" must be an integer from %d to %d",
						chk->what, vb_at(label), field, min, max),
				 errdetail("Found %s.", text)));
	return (int) n;
}

/* A number within [min, max], or an error naming the field. */
double
vb_get_number(VbChecker *chk, JsonbValue *v, const char *label, const char *field,
			  double min, double max)
{
	double		d;

	if (v->type != jbvNumeric)
		vb_type_error(chk, label, field, v, "a number");
	d = vb_numeric_double(v->val.numeric);
	if (!(d >= min && d <= max))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %sfield \"%s\" must be a number from %.15g to %.15g",
						chk->what, vb_at(label), field, min, max),
				 errdetail("Found %s.", vb_numeric_text(v))));
	return d;
}

/* A name field; field is how messages call it (e.g. "approval.gate"). */
char *
vb_get_name_as(VbChecker *chk, JsonbContainer *obj, const char *key, const char *field,
			const char *label, bool required)
{
	JsonbValue	v;
	char	   *s;

	if (!vb_jsonb_get(obj, key, &v))
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid %s: %sfield \"%s\" is required",
							chk->what, vb_at(label), field)));
		return NULL;
	}
	if (v.type != jbvString)
		vb_type_error(chk, label, field, &v, "a string");
	s = pnstrdup(v.val.string.val, v.val.string.len);
	if (!vb_valid_name(s))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %sfield \"%s\" has an invalid value \"%s\"",
						chk->what, vb_at(label), field, vb_short_text(s)),
				 errdetail("Names are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
						   VB_MAX_NAME_LEN)));
	return s;
}

int64
vb_get_duration(VbChecker *chk, JsonbValue *v, const char *label, const char *field)
{
	char	   *text;
	int64		ms;

	if (v->type != jbvString)
		vb_type_error(chk, label, field, v, "a duration string such as \"30s\"");
	text = pnstrdup(v->val.string.val, v->val.string.len);
	if (!vb_parse_duration(text, &ms))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %sfield \"%s\" has an invalid duration \"%s\"",
						chk->what, vb_at(label), field, vb_short_text(text)),
				 errdetail("A duration is one or more numbers with a unit: ms, s, m, h or d, up to 366d."),
				 errhint("Write durations like \"500ms\", \"30s\" or \"1m30s\".")));
	return ms;
}

/* A node timeout: a positive duration. */
int64
vb_get_timeout(VbChecker *chk, JsonbValue *v, const char *label, const char *field)
{
	int64		ms = vb_get_duration(chk, v, label, field);

	if (ms <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %sfield \"%s\" must be longer than zero",
						chk->what, vb_at(label), field)));
	return ms;
}

char *
vb_get_role_name(VbChecker *chk, JsonbValue *v, const char *label, const char *field)
{
	char	   *s;

	if (v->type != jbvString)
		vb_type_error(chk, label, field, v, "a role name");
	s = pnstrdup(v->val.string.val, v->val.string.len);
	if (strlen(s) == 0 || strlen(s) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s: %sfield \"%s\" has an invalid role name \"%s\"",
						chk->what, vb_at(label), field, vb_short_text(s)),
				 errdetail("Role names are 1 to %d bytes.", NAMEDATALEN - 1)));
	/* PostgreSQL reserves these: no role can have them, so nobody could decide. */
	if (strcmp(s, "public") == 0 || strcmp(s, "none") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("invalid %s: %sfield \"%s\" names \"%s\", which is not a role",
						chk->what, vb_at(label), field, s),
				 errdetail("\"%s\" is reserved by PostgreSQL; a gate given to it could never be decided.", s),
				 strstr(field, "escalate_to") != NULL ?
				 errhint("List, one per timeout, the roles whose members decide the gate next; \"public\" and \"none\" are not roles.") :
				 strstr(field, "approvers") != NULL ?
				 errhint("List the people (by the name decided_by will carry) and the roles whose members decide; \"public\" and \"none\" are not roles.") :
				 errhint("Omit \"approver_role\" for a gate that any role allowed to UPDATE vectorbea.approvals may decide, or name a role its approvers are members of.")));
	return s;
}

/* The providers llm calls know (keys.c keeps its own words for its errors). */
static const char *const llm_providers[] = {"openai", "anthropic", NULL};

/* A workspace name argument; with every_allowed, '*' (all of them) too. */
void
vb_check_workspace_name(const char *workspace, bool every_allowed)
{
	if (every_allowed && strcmp(workspace, "*") == 0)
		return;
	if (!vb_valid_name(workspace))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid workspace name \"%s\"", vb_short_text(workspace)),
				 every_allowed ?
				 errdetail("A workspace name, or '*' for every workspace.") :
				 errdetail("Names are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
						   VB_MAX_NAME_LEN)));
}

/* A provider and one of its models, or '*' for every model of it. */
void
vb_check_llm_target(const char *provider, const char *model)
{
	bool		control = false;

	if (!vb_in_list(provider, llm_providers))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown provider \"%s\"", vb_short_text(provider)),
				 errdetail("Providers: %s.", vb_list_text(llm_providers))));
	for (const char *p = model; *p; p++)
		control = control || (unsigned char) *p < 0x20;
	if (strcmp(model, "*") != 0 && (strlen(model) == 0 || strlen(model) > 200 || control))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid model name \"%s\"", vb_short_text(model)),
				 errdetail("A model name is 1 to 200 characters, without control characters, or '*' for every model of the provider.")));
}
