/*-------------------------------------------------------------------------
 *
 * lease.h
 *	  Fencing: the lease check every call on a task makes, and what a
 *	  worker is told when its lease no longer holds the task (lease.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_LEASE_H
#define VB_LEASE_H

#include "events.h"

extern void vb_refuse_other_tenants_tasks(Datum task_ids);
extern void vb_lock_run_of_task(int64 task_id, VbRun *run);
extern void vb_require_lease(int64 task_id, pg_uuid_t *lease, const char *action,
							 char **node, int *attempt);
extern void vb_refuse_lease(int64 task_id, pg_uuid_t *lease, const char *action)
			pg_attribute_noreturn();

#endif							/* VB_LEASE_H */
