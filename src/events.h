/*-------------------------------------------------------------------------
 *
 * events.h
 *	  The run lock and the one writer of the event history (events.c).
 *
 * Locking rule, relied on by every file that changes a run: a transaction
 * locks the run's row before it changes or locks any of that run's nodes
 * or appends an event; heartbeat too, although it writes no event, so that
 * no transaction ever holds a node while waiting for its run.  The run row
 * carries the per-run event sequence, so holding it orders a run's events
 * in commit order with no gaps.  Only the claim takes node rows first, and
 * it never waits while it holds a row: it skips locked nodes and locked
 * runs alike, and the one wait it may make, for a busy run when it found
 * nothing else (vb_run_wait_lock), it makes only in a transaction that has
 * locked no row yet, so it cannot be part of a deadlock.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_EVENTS_H
#define VB_EVENTS_H

#include "postgres.h"

#include "executor/spi.h"
#include "utils/array.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "status.h"

/* A run locked by this transaction, with its counters kept in memory. */
typedef struct VbRun
{
	pg_uuid_t	id;
	VbRunStatus status;
	char	   *workflow;
	int			workflow_version;
	int64		last_seq;
	int32		open_nodes;
	int32		node_count;
	int32		priority;
	TimestampTz created_at;
	bool		gates_pending;	/* an approval node became ready: open its gate */
} VbRun;

extern bool vb_run_lock(pg_uuid_t *run_id, VbRun *run);
extern bool vb_run_lock_for_task(int64 task_id, VbRun *run);
extern bool vb_run_try_lock(pg_uuid_t *run_id, VbRun *run);
extern int	vb_run_parent_lock_wait_limit(int wait_ms);
extern bool vb_run_lock_parent(pg_uuid_t *run_id, VbRun *run);
extern bool vb_run_wait_lock(pg_uuid_t *run_id, ArrayType *not_workspaces, int timeout_ms);
extern void vb_run_save(VbRun *run, TimestampTz at);
extern int	vb_run_lock_for_tasks(Datum task_ids, VbRun **runs);
extern VbRun *vb_run_find(VbRun *runs, int nruns, pg_uuid_t *id);
extern void vb_run_save_many(VbRun *runs, int nruns, TimestampTz at);
extern void vb_run_hold_batch(VbRun *runs, int nruns);
extern VbRun *vb_run_held(pg_uuid_t *id);

extern int64 vb_event(VbRun *run, const char *type, const char *node,
					  int attempt, const char *data_json, TimestampTz at);

/* Events of runs locked by this transaction but not held in a VbRun. */
typedef struct VbEventBatch
{
	int			count;
	int			capacity;
	Datum	   *run_ids;
	Datum	   *types;
	Datum	   *nodes;
	Datum	   *attempts;
	Datum	   *data;
} VbEventBatch;

extern void vb_event_batch_init(VbEventBatch *batch, int capacity);
extern void vb_event_batch_add(VbEventBatch *batch, pg_uuid_t *run_id, const char *type,
							   const char *node, int attempt, const char *data_json);
extern void vb_event_batch_write(VbEventBatch *batch, TimestampTz at);
extern void vb_event_batch_write_held(VbEventBatch *batch, VbRun *runs, int nruns,
									  TimestampTz at);

extern void vb_event_first_of_new_runs(VbRun *runs, int nruns, const char *type,
									   char **data, TimestampTz at);

extern bool vb_event_type_reserved(const char *type);

#endif							/* VB_EVENTS_H */
