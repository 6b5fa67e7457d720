/*-------------------------------------------------------------------------
 *
 * jsonb_util.c
 *	  Small helpers for reading and writing jsonb from C.
 *
 * The engine reads definitions, options and errors straight from their
 * jsonb containers (no round trip through text) and writes event data as
 * JSON text that jsonb_in turns into jsonb once.
 *
 * IDENTIFICATION
 *	  src/jsonb_util.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "jsonb_util.h"
#include "settings.h"

/* Looks up key in an object container; false when absent. */
bool
vb_jsonb_get(JsonbContainer *obj, const char *key, JsonbValue *out)
{
	if (!JsonContainerIsObject(obj))
		return false;
	return getKeyJsonValueFromContainer(obj, key, strlen(key), out) != NULL;
}

/* The keys of an object container, in jsonb's order. */
List *
vb_jsonb_object_keys(JsonbContainer *obj)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *keys = NIL;

	if (!JsonContainerIsObject(obj))
		return NIL;
	it = JsonbIteratorInit(obj);
	/* skipNested: nested containers come back whole, as values. */
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_KEY)
			keys = lappend(keys, pnstrdup(v.val.string.val, v.val.string.len));
	return keys;
}

const char *
vb_jsonb_type_name(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "a string";
		case jbvNumeric:
			return "a number";
		case jbvBool:
			return "a boolean";
		case jbvBinary:
			if (JsonContainerIsObject(v->val.binary.data))
				return "an object";
			if (JsonContainerIsArray(v->val.binary.data))
				return "an array";
			return "a scalar";
		default:
			return "an unexpected value";
	}
}

/* The JSON text of a value, as it would be stored. */
char *
vb_jsonb_value_text(JsonbValue *v)
{
	Jsonb	   *jb = JsonbValueToJsonb(v);

	return JsonbToCString(NULL, &jb->root, VARSIZE(jb));
}

/*
 * A JSON number as a double, never an error: numeric_float8 throws 22003
 * for 1e400 before the caller could name the field, so the value goes
 * through its text, and a number beyond double's range comes back as
 * +/-infinity (or 0 when too small), which every range check refuses.
 */
double
vb_numeric_double(Numeric n)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)));

	return strtod(text, NULL);
}

/*
 * A value for a message: as it is, or its first 20 characters and its
 * length when it is longer than 40 characters (1e400 prints as 401 digits).
 * The cut falls between characters: a message must stay valid text.
 */
char *
vb_short_text(const char *text)
{
	int			chars = pg_mbstrlen(text);

	/* characters, not bytes: a name in Greek is cut where one in English is */
	if (chars <= 40)
		return pstrdup(text);
	return psprintf("%.*s… (%d characters)", pg_mbcharcliplen(text, strlen(text), 20), text,
					chars);
}

Jsonb *
vb_jsonb_from_cstring(const char *json)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

StaticAssertDecl(JENTRY_OFFLENMASK - VB_PAYLOAD_CEILING_KB * 1024 >= VB_MAX_NAME_LEN + 64,
				 "a payload at the ceiling must fit in an object under a node's name");

/*
 * The payload limit in force, in kB: vectorbea.max_payload_size, at most
 * VB_PAYLOAD_CEILING_KB.  The setting keeps its range (up to 1 GB, as in
 * 0.1.0), so that no configured value is refused at start; above the
 * ceiling it acts as the ceiling.
 */
int
vb_payload_limit_kb(void)
{
	return Min(vb_max_payload_kb, VB_PAYLOAD_CEILING_KB);
}

/*
 * Refuses a payload larger than the payload limit.  The stored jsonb size
 * is what the tables and the history pay for, so that is what is measured.
 */
void
vb_check_payload_size(Jsonb *payload, const char *what)
{
	Size		size;
	int			limit_kb = vb_payload_limit_kb();

	if (payload == NULL)
		return;
	size = VARSIZE_ANY_EXHDR(payload);
	if (size <= (Size) limit_kb * 1024)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("%s is too large", what),
			 limit_kb < vb_max_payload_kb ?
			 errdetail("It takes %zu bytes; no payload may take more than %d kB, "
					   "1 kB under the largest jsonb value, whatever vectorbea.max_payload_size says.",
					   size, limit_kb) :
			 errdetail("It takes %zu bytes; vectorbea.max_payload_size allows %d kB.",
					   size, limit_kb),
			 limit_kb < vb_max_payload_kb ?
			 errhint("Store large artefacts elsewhere and pass a reference.") :
			 errhint("Store large artefacts elsewhere and pass a reference, "
					 "or raise vectorbea.max_payload_size.")));
}

/*
 * Refuses a free text (a decision's reason, the name of who decided, a
 * cancel reason) longer than max_bytes, or than vectorbea.max_payload_size
 * when that is smaller: such texts go into events and node outputs, which
 * the payload limit bounds.
 */
void
vb_check_text_size(const char *text, const char *what, int max_bytes)
{
	size_t		limit = Min((size_t) max_bytes, (size_t) vb_payload_limit_kb() * 1024);
	size_t		len;

	if (text == NULL)
		return;
	len = strlen(text);
	if (len > limit)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long", what),
				 errdetail("It has %zu bytes; at most %zu are allowed.", len, limit),
				 errhint("Keep it short and record details with vectorbea.append_event().")));
}

void
vb_append_json_string(StringInfo buf, const char *s)
{
	if (s == NULL)
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, s);
}
