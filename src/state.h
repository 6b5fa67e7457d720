/*-------------------------------------------------------------------------
 *
 * state.h
 *	  The engine's state machine (state.c): the statuses of nodes and runs,
 *	  and one function per transition.
 *
 * This is the only module that changes vectorbea.nodes.status,
 * vectorbea.runs.status or a run's counters (open_nodes, node_count,
 * usage), and it closes the gates of runs that end.  (A gate's decision is
 * recorded by the person's UPDATE, or by the scheduler's expiry, in
 * approvals.c.)  Each transition writes its event through the
 * event writer (events.h) in the caller's transaction.  Every function
 * runs inside SPI, with the run locked by the caller (events.h), unless it
 * says otherwise.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_STATE_H
#define VB_STATE_H

#include "events.h"

/*
 * In a node's error: it could not start a child run that deep, or one more
 * child run in its tree (vectorbea.max_tree_runs; waits.c).  Such a failure
 * goes up its chain of parents for good (tell_parent): a retry would only
 * meet the limit again.
 */
#define VB_DEPTH_LIMIT_FIELD	"depth_limit"
#define VB_TREE_LIMIT_FIELD		"tree_limit"

/* Nodes come into being, become ready, and start. */
extern int	vb_state_add_nodes(VbRun *run, const char *specs_json,
							   const char *spawned_by, TimestampTz at);
extern void vb_state_add_nodes_to_new_runs(VbRun *runs, int nruns, const char *specs_json,
										   TimestampTz at);

/* What vb_state_start_attempts leased, in the order a claim returns. */
typedef struct VbStartedAttempts
{
	uint64		count;
	HeapTuple  *vals;			/* columns: see claim_tasks' result */
	TupleDesc	tupdesc;
	TimestampTz first_expiry;	/* DT_NOEND when none */
	bool		skipped;		/* a claim of several activities passed over
								 * ready tasks (their runs or rows busy) */
} VbStartedAttempts;

/* Zeroed, with no expiry yet: what vb_state_start_attempts appends to. */
#define VB_STARTED_INIT(s) \
	do { memset((s), 0, sizeof(VbStartedAttempts)); (s)->first_expiry = DT_NOEND; } while (0)

extern void vb_state_start_attempts(const char *worker, ArrayType *activities,
									int max_tasks, Interval *lease_duration,
									const char *only_workspace, ArrayType *not_workspaces,
									TimestampTz at, VbStartedAttempts *started);

extern int	vb_state_first_ready_run(const char *activity, TimestampTz at, pg_uuid_t *run_id);

/* A running attempt ends. */
extern bool vb_state_succeed(VbRun *run, int64 task_id, pg_uuid_t *lease, Jsonb *output,
							 const char *usage_json, TimestampTz at,
							 char **node, int *attempt);
extern int	vb_state_succeed_many(VbRun *runs, int nruns, int n, Datum task_ids,
								  Datum leases, Datum outputs, Jsonb **outputs_of,
								  TimestampTz at, bool *matched);
extern const char *vb_state_fail_attempt(VbRun *run, int64 task_id, const char *err_class,
										 const char *error_json, bool retryable,
										 int64 retry_after_ms, TimestampTz at);
extern const char *vb_state_fail_reported(VbRun *run, int64 task_id, const char *err_class,
										  const char *error_json, const char *usage_json,
										  bool retryable, int64 retry_after_ms, TimestampTz at);

/* Gates. */
extern int64 vb_state_wait_on_gate(VbRun *run, int64 task_id, const char *node, int attempt,
								   const char *spec_json, const char *context_json,
								   TimestampTz at);
extern void vb_state_settle_gate(VbRun *run, int64 task_id, const char *node, bool approved,
								 const char *output_json, const char *err_class,
								 TimestampTz at);
extern const char *vb_state_attempt_in_doubt(VbRun *run, int64 task_id, const char *err_class,
											 const char *error_json, TimestampTz at);
extern void vb_state_decide_failure(VbRun *run, int64 task_id, const char *node,
									const char *decision, const char *output_json,
									const char *input_json, const char *record_json,
									const char *err_class, int64 approval_id, TimestampTz at);
extern bool vb_state_run_closing_deferred(pg_uuid_t *run_id);
extern void vb_state_decision_begin(void);
extern void vb_state_decision_end(void);
extern void vb_state_close_deferred_gates(TimestampTz at);

/* Timers, signals and child runs: waits the engine starts and ends. */
extern int	vb_state_begin_wait(VbRun *run, int64 task_id, TimestampTz deadline,
								pg_uuid_t *lease, const char *event_type,
								const char *data_json, TimestampTz at);
extern bool vb_state_end_wait(VbRun *run, int64 task_id, const char *output_json,
							  TimestampTz at);
extern void vb_state_release_not_before(VbRun *run, int64 task_id, const char *activity,
										TimestampTz available_at, TimestampTz at);

/* Runs end. */
extern void vb_state_finish_run_if_done(VbRun *run, TimestampTz at);
extern void vb_state_fail_run(VbRun *run, const char *node, const char *reason,
							  TimestampTz at);
extern bool vb_state_parent_compensates(pg_uuid_t *child_id);
extern void vb_state_cancel_run(VbRun *run, const char *reason, bool compensate,
								TimestampTz at);

/* Kill switches. */
extern bool vb_state_abort_attempt(VbRun *run, int64 task_id, const char *message,
								   TimestampTz available_at, TimestampTz at);
extern bool vb_state_llm_call_out(int64 task_id);
extern void vb_state_stop_call(VbRun *run, int64 task_id, const char *message,
							   TimestampTz available_at, TimestampTz at);
extern bool vb_state_pause_run(VbRun *run, const char *scope, const char *reason,
							   const char *by, TimestampTz at);
extern bool vb_state_resume_run(VbRun *run, const char *by, TimestampTz at);
extern int	vb_state_hold_model(const char *provider, const char *model, bool hold,
								TimestampTz at);

/* A fork: nodes added held, reused ones succeed from the source's record. */
extern int	vb_state_add_nodes_held(VbRun *run, const char *specs_json,
									const char *spawned_by, TimestampTz at);
extern void vb_state_reuse(VbRun *run, const char *node, const char *output_json,
						   const char *reused_json, TimestampTz at);
extern void vb_state_release_held(VbRun *run, TimestampTz at);

/* A failed node, and its run, come back. */
extern bool vb_state_requeue(VbRun *run, int64 task_id, const char *reason, const char *by,
							 TimestampTz at);

/* Spend. */
extern bool vb_state_book_usage(VbRun *run, int64 tokens, const char *usd,
								char **detail_json);
extern void vb_state_budget_exceeded(VbRun *run, const char *node, int attempt, int64 task_id,
									 const char *detail_json, bool pause, TimestampTz at);
extern void vb_state_over_budget(VbRun *run, const char *node, int attempt,
								 const char *detail_json, bool pause, TimestampTz at);
extern void vb_state_child_timed_out(VbRun *run, int64 task_id, const char *node, int attempt,
									 pg_uuid_t *child_id, const char *error_json, TimestampTz at);

/*
 * Whether a row of vectorbea.runs has spent more than one of its budgets:
 * its own usage and what its ended child runs spent (0.2.0 columns).
 */
#define VB_RUN_IS_OVER_BUDGET_SQL \
	"(coalesce(usage_usd + child_usage_usd > budget_usd, false)" \
	" OR coalesce(usage_tokens + child_usage_tokens > budget_tokens, false))"

/*
 * Two columns of a row of vectorbea.runs (for a RETURNING list): whether
 * it is over one of its budgets, and BUDGET_EXCEEDED's data, which names
 * its child runs' spend when they spent something.
 */
#define VB_RUN_OVER_BUDGET_SQL \
	VB_RUN_IS_OVER_BUDGET_SQL "," \
	" (pg_catalog.jsonb_build_object('scope', 'run', 'usage_usd', usage_usd, 'budget_usd', budget_usd," \
	"                                'usage_tokens', usage_tokens," \
	"                                'budget_tokens', budget_tokens)" \
	"  || CASE WHEN child_usage_usd > 0 OR child_usage_tokens > 0" \
	"      THEN pg_catalog.jsonb_build_object('child_usage_usd', child_usage_usd," \
	"                                         'child_usage_tokens', child_usage_tokens)" \
	"      ELSE '{}' END)::text"

/*
 * What a running node holds against the budgets: an llm call's reserved
 * worst case, or a task's estimate.
 */
#define VB_RESERVED_USD	"coalesce(n.reserved_usd, (n.estimate->>'usd')::numeric)"
#define VB_RESERVED_TOKENS	"coalesce(n.reserved_tokens, (n.estimate->>'tokens')::bigint)"

/*
 * What the nodes of run r (but node except) hold against the run's own
 * budgets (columns usd, tokens): the reservations of its running nodes,
 * and the budgets its run nodes gave the child runs they wait for; and
 * whether its running nodes hold any (in_flight): those settle soon, a
 * child run may take hours.  The workspace's checks leave the budgets
 * given to children out: a child's own reservations and usage count
 * there.  (budget.c's checks; and state.c, for what a child whose parent
 * stops waiting for it still holds.)
 */
#define VB_RUN_RESERVED_SQL(r, except) \
	"SELECT coalesce(pg_catalog.sum(CASE WHEN n.status = 'running' THEN " VB_RESERVED_USD \
	"                                    ELSE n.reserved_usd END), 0) AS usd," \
	"       coalesce(pg_catalog.sum(CASE WHEN n.status = 'running' THEN " VB_RESERVED_TOKENS \
	"                                    ELSE n.reserved_tokens END), 0) AS tokens," \
	"       coalesce(pg_catalog.bool_or(n.status = 'running' AND" \
	"                (" VB_RESERVED_USD " > 0 OR " VB_RESERVED_TOKENS " > 0)), false) AS in_flight" \
	"  FROM vectorbea.nodes n" \
	" WHERE n.run_id = " r " AND n.id <> " except \
	"   AND (n.status = 'running' OR (n.status = 'waiting' AND n.kind = 'run'))"

/* VB_RUN_OVER_BUDGET_SQL for a 0.1.0 schema, whose runs have no child runs. */
#define VB_RUN_OVER_BUDGET_010_SQL \
	"(coalesce(usage_usd > budget_usd, false) OR coalesce(usage_tokens > budget_tokens, false))," \
	" pg_catalog.jsonb_build_object('scope', 'run', 'usage_usd', usage_usd, 'budget_usd', budget_usd," \
	"                               'usage_tokens', usage_tokens," \
	"                               'budget_tokens', budget_tokens)::text"

#endif							/* VB_STATE_H */
