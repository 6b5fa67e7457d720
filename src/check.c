/*-------------------------------------------------------------------------
 *
 * check.c
 *	  Field checks shared by the validators of definitions and spawn lists
 *	  (validate.c) and of llm specs (llm_spec.c).
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
#include "jsonb_util.h"

/* Node fields of the contract that this version refuses as not supported. */
static const char *const later_node_fields[] = {"compensate", NULL};

/* Whether key is a node field of the contract this version refuses. */
bool
vb_field_not_yet_supported(const char *key)
{
	return vb_in_list(key, later_node_fields);
}

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
		where = field_path[0] ? psprintf("%s.%s", field_path, key) : key;
		if (strcmp(field_path, "") == 0 && label && vb_field_not_yet_supported(key))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("invalid %s: %s, field \"%s\" is not supported by this version of vectorbea",
							chk->what, label, where),
					 errdetail("vectorbea " VB_VERSION " does not act on \"%s\" yet; it refuses it rather than ignore it.",
							   key),
					 errhint("Remove the field, or upgrade to a version that supports it.")));
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
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid %s: %sfield \"%s\" must be %s",
					chk->what, vb_at(label), field, expected),
			 errdetail("Found %s.", vb_jsonb_type_name(v))));
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

