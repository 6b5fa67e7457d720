/*-------------------------------------------------------------------------
 *
 * status.c
 *	  The one mapping between the statuses of nodes and runs and the text
 *	  stored in vectorbea.nodes.status and vectorbea.runs.status (whose
 *	  column comments list the same words; there is no CHECK constraint,
 *	  which would cost every writing statement a parse of it, see
 *	  docs/decisions.md).
 *
 * IDENTIFICATION
 *	  src/status.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "status.h"

static const char *const node_status_names[] = {
	[VB_NODE_PENDING] = "pending",
	[VB_NODE_READY] = "ready",
	[VB_NODE_RUNNING] = "running",
	[VB_NODE_WAITING] = "waiting",
	[VB_NODE_SUCCEEDED] = "succeeded",
	[VB_NODE_FAILED] = "failed",
	[VB_NODE_SKIPPED] = "skipped",
	[VB_NODE_CANCELLED] = "cancelled",
};

static const char *const run_status_names[] = {
	[VB_RUN_RUNNING] = "running",
	[VB_RUN_COMPENSATING] = "compensating",
	[VB_RUN_PAUSED] = "paused",
	[VB_RUN_SUCCEEDED] = "succeeded",
	[VB_RUN_FAILED] = "failed",
	[VB_RUN_CANCELLED] = "cancelled",
};

const char *
vb_node_status_name(VbNodeStatus status)
{
	return node_status_names[status];
}

VbNodeStatus
vb_node_status_from_name(const char *name)
{
	for (int i = 0; i < (int) lengthof(node_status_names); i++)
		if (strcmp(node_status_names[i], name) == 0)
			return (VbNodeStatus) i;
	elog(ERROR, "vectorbea: unknown node status \"%s\"", name);
	pg_unreachable();
}

const char *
vb_run_status_name(VbRunStatus status)
{
	return run_status_names[status];
}

VbRunStatus
vb_run_status_from_name(const char *name)
{
	for (int i = 0; i < (int) lengthof(run_status_names); i++)
		if (strcmp(run_status_names[i], name) == 0)
			return (VbRunStatus) i;
	elog(ERROR, "vectorbea: unknown run status \"%s\"", name);
	pg_unreachable();
}
