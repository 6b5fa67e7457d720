/*-------------------------------------------------------------------------
 *
 * complete.h
 *	  Completions and checkpoints (complete.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_COMPLETE_H
#define VB_COMPLETE_H

#include "events.h"

extern bool vb_complete_locked(VbRun *run, int64 task_id, pg_uuid_t *lease, Jsonb *output,
							  Jsonb *spawn, Jsonb *usage, TimestampTz at);

#endif							/* VB_COMPLETE_H */
