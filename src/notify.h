/*-------------------------------------------------------------------------
 *
 * notify.h
 *	  NOTIFY to listeners and commit-time wakes of the scheduler
 *	  (notify.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_NOTIFY_H
#define VB_NOTIFY_H

#include "utils/timestamp.h"
#include "utils/uuid.h"

extern void vb_notify_task_ready(const char *activity);
extern void vb_notify_run_finished(pg_uuid_t *run_id, const char *status);
extern void vb_notify_approval(int64 id, pg_uuid_t *run_id, const char *gate,
							   const char *status);
extern void vb_wake_scheduler(TimestampTz due);
extern void vb_wake_scheduler_for_orphans(const pg_uuid_t *run_id, TimestampTz at);
extern void vb_wake_scheduler_for_prepared(void);
extern void vb_announce_at_commit(const char *activity, TimestampTz available_at);

#endif							/* VB_NOTIFY_H */
