/*-------------------------------------------------------------------------
 *
 * sweep.h
 *	  Time-driven work: expired attempts, due retries, run deadlines and
 *	  the next due time (sweep.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_SWEEP_H
#define VB_SWEEP_H

#include "shmem.h"

extern int	vb_expire_attempts(Datum activities, TimestampTz at, bool isolate,
							   VbSweepCounters *counters);
extern int	vb_fail_overdue_runs(TimestampTz at, VbSweepCounters *counters);
extern int	vb_announce_due(TimestampTz after, TimestampTz upto,
							VbSweepCounters *counters);
extern TimestampTz vb_next_due(TimestampTz now);

#endif							/* VB_SWEEP_H */
