/*-------------------------------------------------------------------------
 *
 * workflow.h
 *	  Workflow definitions and the start of runs (workflow.c): the
 *	  start_run door, and the start of child runs by the engine.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_WORKFLOW_H
#define VB_WORKFLOW_H

#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

extern bool vb_create_run(const char *workflow, int version, Jsonb *input, Jsonb *options,
						  const char *key, int priority, TimestampTz deadline,
						  pg_uuid_t *parent_run, const char *parent_node, pg_uuid_t *run_id,
						  TimestampTz at);

#endif							/* VB_WORKFLOW_H */
