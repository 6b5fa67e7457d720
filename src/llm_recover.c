/*-------------------------------------------------------------------------
 *
 * llm_recover.c
 *	  After a scheduler starts: llm attempts still running belong to a
 *	  scheduler that is gone (one per database), so their calls are in
 *	  doubt.  Each ends as a transient failure marked in_doubt, and its
 *	  node's retry policy decides what follows.
 *
 * IDENTIFICATION
 *	  src/llm_recover.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "vectorbea.h"
#include "clock.h"
#include "due_items.h"
#include "llm.h"
#include "state.h"

typedef struct RecoverBatch
{
	int64	   *task_ids;
	pg_uuid_t  *run_ids;
	TimestampTz at;
} RecoverBatch;

static void
recover_one(void *arg, int i)
{
	RecoverBatch *b = arg;
	VbRun		run;

	if (!vb_run_lock(&b->run_ids[i], &run) || !vb_run_active(run.status))
		return;
	/*
	 * No call out (a correction was held for its rate limit): nothing is
	 * in doubt; the attempt ends uncounted and starts again.
	 */
	if (!vb_state_llm_call_out(b->task_ids[i]))
	{
		vb_state_abort_attempt(&run, b->task_ids[i],
							   "the scheduler stopped between two calls of the attempt, none in flight",
							   b->at, b->at);
		vb_run_save(&run, b->at);
		return;
	}
	/* Found before the run was locked: closed meanwhile, it is left alone. */
	if (vb_state_attempt_in_doubt(&run, b->task_ids[i], "transient",
								  "{\"message\":\"in doubt: the scheduler stopped while the call was in flight; the provider may have answered\","
								  "\"class\":\"transient\",\"in_doubt\":true}",
								  b->at) == NULL)
		return;
	vb_run_save(&run, b->at);
}

/*
 * At start: llm attempts still running belong to a scheduler that is gone
 * (one per database), so their calls are in doubt.  Each node's in_doubt
 * policy decides: by default they end as transient failures marked
 * in_doubt and are retried by their retry policy; "ask" holds the node
 * for a person, "compensate" fails it for good (vb_state_attempt_in_doubt).
 */
void
vb_llm_recover(VbSweepCounters *counters)
{
	RecoverBatch b;
	uint64		n;

	if (SPI_execute("SELECT n.id, n.run_id FROM vectorbea.nodes n"
					" WHERE n.status = 'running' AND n.activity = '" VB_LLM_ACTIVITY "'",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look for llm calls in doubt");
	n = SPI_processed;
	if (n == 0)
		return;
	b.at = vb_now();
	vb_read_due_items(1, 2, &b.task_ids, &b.run_ids);
	for (uint64 i = 0; i < n; i++)
		vb_due_item(true, recover_one, &b, (int) i, counters, &b.run_ids[i],
					VB_ITEM_ATTEMPT, b.task_ids[i], b.at);
}
