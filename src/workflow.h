/*-------------------------------------------------------------------------
 *
 * workflow.h
 *	  Workflow definitions and the start of runs (workflow.c): the
 *	  start_run door, the start of child runs by the engine, and the head
 *	  of RUN_STARTED's data, which a fork writes too.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_WORKFLOW_H
#define VB_WORKFLOW_H

#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

extern bool vb_create_run(const char *workflow, int version, Jsonb *input, Jsonb *options,
						  const char *key, int priority, TimestampTz deadline,
						  pg_uuid_t *parent_run, const char *parent_node, pg_uuid_t *run_id,
						  TimestampTz at);
extern TimestampTz vb_options_deadline(Jsonb *options, TimestampTz at);
extern void vb_run_started_head(StringInfo data, const char *workflow, int version,
								const char *input_json, const char *options_json,
								const char *key);

#endif							/* VB_WORKFLOW_H */
