/*-------------------------------------------------------------------------
 *
 * waits.h
 *	  Sleep, signal and run nodes, and not_before: what the scheduler
 *	  starts and ends without a worker (waits.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_WAITS_H
#define VB_WAITS_H

#include "events.h"
#include "shmem.h"
#include "utils/array.h"

extern int	vb_start_waits(TimestampTz at, bool isolate, VbSweepCounters *counters);
extern int	vb_end_due_waits(TimestampTz at, bool isolate, VbSweepCounters *counters);
extern int	vb_cancel_orphans(TimestampTz at, ArrayType *named, VbSweepCounters *counters);
extern TimestampTz vb_orphans_next_due(TimestampTz now, ArrayType *named);
extern bool vb_prepared_xacts_before(TransactionId horizon);
extern int	vb_prepared_xacts(TransactionId *xids, int room);
extern TimestampTz vb_waits_next_due(TimestampTz now);
extern void vb_announce_not_before(TimestampTz after, TimestampTz upto);
extern void vb_deliver_signal(VbRun *run, int64 signal_id, int64 task_id,
							  const char *payload, TimestampTz at);

#endif							/* VB_WAITS_H */
