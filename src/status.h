/*-------------------------------------------------------------------------
 *
 * status.h
 *	  The statuses of nodes and runs, and their one mapping to the text
 *	  stored in the tables (status.c).  A leaf: which transitions exist is
 *	  state.c's business.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_STATUS_H
#define VB_STATUS_H

typedef enum VbNodeStatus
{
	VB_NODE_PENDING,			/* dependencies not yet succeeded */
	VB_NODE_READY,				/* may be claimed (from available_at) */
	VB_NODE_RUNNING,			/* an attempt holds a lease */
	VB_NODE_WAITING,			/* a gate is open */
	VB_NODE_SUCCEEDED,
	VB_NODE_FAILED,
	VB_NODE_SKIPPED,			/* its run failed before it started */
	VB_NODE_CANCELLED			/* its run was cancelled, or failed while it ran */
} VbNodeStatus;

typedef enum VbRunStatus
{
	VB_RUN_RUNNING,
	VB_RUN_COMPENSATING,
	VB_RUN_PAUSED,				/* a kill switch holds it: nothing is claimed or called */
	VB_RUN_SUCCEEDED,
	VB_RUN_FAILED,
	VB_RUN_CANCELLED
} VbRunStatus;

/*
 * Whether a run has not finished: running, undoing (compensating) or held
 * by a kill switch (paused: work already claimed may still be reported,
 * gates decided, leases expire).
 */
static inline bool
vb_run_active(VbRunStatus status)
{
	return status == VB_RUN_RUNNING || status == VB_RUN_COMPENSATING ||
		status == VB_RUN_PAUSED;
}

extern const char *vb_node_status_name(VbNodeStatus status);
extern VbNodeStatus vb_node_status_from_name(const char *name);
extern const char *vb_run_status_name(VbRunStatus status);
extern VbRunStatus vb_run_status_from_name(const char *name);

#endif							/* VB_STATUS_H */
