/*-------------------------------------------------------------------------
 *
 * jsonb_util.h
 *	  Reading jsonb without a detour through text, payload limits, JSON
 *	  strings (jsonb_util.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_JSONB_UTIL_H
#define VB_JSONB_UTIL_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

extern bool vb_jsonb_get(JsonbContainer *obj, const char *key, JsonbValue *out);
extern List *vb_jsonb_object_keys(JsonbContainer *obj);
extern const char *vb_jsonb_type_name(JsonbValue *v);
extern char *vb_jsonb_value_text(JsonbValue *v);
extern Jsonb *vb_jsonb_from_cstring(const char *json);
extern double vb_numeric_double(Numeric n);
extern char *vb_short_text(const char *text);
/*
 * The most any payload may take, whatever vectorbea.max_payload_size says:
 * 1,023 bytes under the largest jsonb value, so that an output still fits
 * in an object with its node's name around it (a task's upstream).
 */
#define VB_PAYLOAD_CEILING_KB	((int) (JENTRY_OFFLENMASK / 1024))

extern int	vb_payload_limit_kb(void);
extern void vb_check_payload_size(Jsonb *payload, const char *what);
extern void vb_check_text_size(const char *text, const char *what, int max_bytes);
extern void vb_append_json_string(StringInfo buf, const char *s);

#endif							/* VB_JSONB_UTIL_H */
