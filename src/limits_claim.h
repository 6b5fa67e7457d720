/*-------------------------------------------------------------------------
 *
 * limits_claim.h
 *	  Claims within concurrency limits (limits.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_LIMITS_CLAIM_H
#define VB_LIMITS_CLAIM_H

#include "state.h"

extern void vb_limits_prepared_committed(void);
extern bool vb_claim_within_limits(const char *worker, ArrayType *activities, int max_tasks,
								   ArrayType *excluded, Interval *lease, TimestampTz at,
								   VbStartedAttempts *started);

#endif							/* VB_LIMITS_CLAIM_H */
