/*-------------------------------------------------------------------------
 *
 * wait_spec.h
 *	  The "sleep", "signal" and "run" objects of nodes, and "not_before",
 *	  validated and normalised (wait_spec.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_WAIT_SPEC_H
#define VB_WAIT_SPEC_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

extern char *vb_validate_wait(const char *what, const char *label, const char *kind,
							  JsonbContainer *node, List *depends_on);
extern char *vb_validate_not_before(const char *what, const char *label, JsonbValue *v,
									List *depends_on);

#endif							/* VB_WAIT_SPEC_H */
