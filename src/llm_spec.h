/*-------------------------------------------------------------------------
 *
 * llm_spec.h
 *	  The "llm" object of an llm node, validated (llm_spec.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_LLM_SPEC_H
#define VB_LLM_SPEC_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

extern char *vb_validate_llm(const char *what, const char *label, JsonbValue *llm,
							 List *depends_on);

#endif							/* VB_LLM_SPEC_H */
