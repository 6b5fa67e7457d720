/*-------------------------------------------------------------------------
 *
 * gate_spec.h
 *	  The "approval" and "escalation" objects of nodes, validated and
 *	  normalised (gate_spec.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_GATE_SPEC_H
#define VB_GATE_SPEC_H

#include "check.h"

extern char *vb_validate_gate(VbChecker *chk, const char *label, const char *field,
							  JsonbValue *a, bool escalation, const char *default_gate);

#endif							/* VB_GATE_SPEC_H */
