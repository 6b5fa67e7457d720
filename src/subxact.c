/*-------------------------------------------------------------------------
 *
 * subxact.c
 *	  Running a piece of work in a subtransaction of its own, and keeping
 *	  its error instead of letting it end the transaction.
 *
 * The scheduler acts on many items in one transaction and must survive one
 * item's error; an llm node whose completion is refused must fail instead;
 * check_provider_key turns pgcrypto's "wrong key" into false.  Each of them
 * runs the work here: on success the subtransaction is released, on error
 * it is rolled back and the error handed back, copied into the caller's
 * memory context, with the caller's resource owner restored.
 *
 * A cancel (statement_timeout, pg_cancel_backend) is not an item's error:
 * it ends the statement, as PL/pgSQL's WHEN OTHERS lets it, so it is
 * thrown again once the subtransaction is rolled back.  Kept, it would
 * have been recorded against whatever item was running, and the
 * cancelled statement would have gone on and committed.
 *
 * IDENTIFICATION
 *	  src/subxact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "subxact.h"

/* Adapts a step that always keeps its work to vb_try_in_subxact_keep. */
typedef struct KeptStep
{
	void		(*fn) (void *);
	void	   *arg;
} KeptStep;

static bool
run_kept_step(void *arg)
{
	KeptStep   *step = arg;

	step->fn(step->arg);
	return true;
}

/*
 * Runs fn(arg) in a subtransaction.  Returns NULL when it succeeded, else
 * its error, the subtransaction having been rolled back.
 */
ErrorData *
vb_try_in_subxact(void (*fn) (void *), void *arg)
{
	KeptStep	step = {fn, arg};

	return vb_try_in_subxact_keep(run_kept_step, &step);
}

/*
 * Runs fn(arg) in a subtransaction that is kept when fn returns true and
 * rolled back when it returns false, giving back what it locked (a claim
 * that waited for a run and found nothing left in it, claim.c; the
 * scheduler's probe of runs with llm work, llm.c).  Returns NULL unless fn
 * failed; then its error, the subtransaction rolled back.
 */
ErrorData *
vb_try_in_subxact_keep(bool (*fn) (void *), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (fn(arg))
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			CurrentResourceOwner = owner;
			ReThrowError(edata);
		}
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}
