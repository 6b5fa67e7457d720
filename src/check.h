/*-------------------------------------------------------------------------
 *
 * check.h
 *	  Field checks shared by the validators of definitions, spawn lists
 *	  and llm specs (check.c): every refusal names the node and the field.
 *	  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_CHECK_H
#define VB_CHECK_H

#include "utils/jsonb.h"

/* What is being validated, for messages: "workflow definition", ... */
typedef struct VbChecker
{
	const char *what;
} VbChecker;

extern bool vb_valid_name(const char *s);
extern void vb_check_fields(VbChecker *chk, JsonbContainer *obj, const char *const *allowed,
							const char *label, const char *field_path);
extern void vb_type_error(VbChecker *chk, const char *label, const char *field,
						  JsonbValue *v, const char *expected) pg_attribute_noreturn();
extern int	vb_get_int(VbChecker *chk, JsonbValue *v, const char *label, const char *field,
					   int min, int max);
extern double vb_get_number(VbChecker *chk, JsonbValue *v, const char *label, const char *field,
							double min, double max);
extern bool vb_in_list(const char *s, const char *const *list);
extern char *vb_list_text(const char *const *list);
extern char *vb_at(const char *label);
extern char *vb_numeric_text(JsonbValue *v);
extern char *vb_numeric_json(JsonbValue *v);

/* Fields every validator reads the same way. */
extern char *vb_get_name_as(VbChecker *chk, JsonbContainer *obj, const char *key,
							const char *field, const char *label, bool required);
extern int64 vb_get_duration(VbChecker *chk, JsonbValue *v, const char *label,
							 const char *field);
extern int64 vb_get_timeout(VbChecker *chk, JsonbValue *v, const char *label,
							const char *field);
extern char *vb_get_role_name(VbChecker *chk, JsonbValue *v, const char *label,
							  const char *field);

/* Arguments of the control functions. */
extern void vb_check_workspace_name(const char *workspace, bool every_allowed);
extern void vb_check_llm_target(const char *provider, const char *model);

#endif							/* VB_CHECK_H */
