/*-------------------------------------------------------------------------
 *
 * resolve.h
 *	  vectorbea.test_resolve: host names pinned to addresses, for tests
 *	  (resolve.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_RESOLVE_H
#define VB_RESOLVE_H

#include "nodes/pg_list.h"
#include "utils/guc.h"

/* The setting, defined by settings.c with this check hook. */
extern char *vb_test_resolve;
extern bool vb_check_test_resolve(char **newval, void **extra, GucSource source);

extern List *vb_test_resolve_lines(void);

#endif							/* VB_RESOLVE_H */
