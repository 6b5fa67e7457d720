/*-------------------------------------------------------------------------
 *
 * claim.h
 *	  Claims and heartbeats (claim.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_CLAIM_H
#define VB_CLAIM_H

#include "state.h"

extern void vb_claim(const char *worker, ArrayType *activities, int max_tasks,
					 ArrayType *excluded,
					 Interval *lease_duration, TimestampTz at, int wait_ms,
					 VbStartedAttempts *started);

#endif							/* VB_CLAIM_H */
