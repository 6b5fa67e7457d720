/*-------------------------------------------------------------------------
 *
 * approvals.h
 *	  Human approval gates: decided by UPDATE, timed out and escalated by
 *	  the scheduler (approvals.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_APPROVALS_H
#define VB_APPROVALS_H

#include "shmem.h"

extern int	vb_expire_gates(TimestampTz at, VbSweepCounters *counters);

#endif							/* VB_APPROVALS_H */
