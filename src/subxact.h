/*-------------------------------------------------------------------------
 *
 * subxact.h
 *	  Running a step in a subtransaction of its own (subxact.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_SUBXACT_H
#define VB_SUBXACT_H

#include "utils/elog.h"

extern ErrorData *vb_try_in_subxact(void (*fn) (void *), void *arg);
extern ErrorData *vb_try_in_subxact_keep(bool (*fn) (void *), void *arg);

#endif							/* VB_SUBXACT_H */
