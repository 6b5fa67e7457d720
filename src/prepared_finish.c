/*-------------------------------------------------------------------------
 *
 * prepared_finish.c
 *	  Tells the scheduler when COMMIT PREPARED or ROLLBACK PREPARED has
 *	  ended a prepared transaction it may be waiting for.
 *
 * A prepared transaction ends in whatever session runs COMMIT PREPARED (or
 * ROLLBACK PREPARED), where no transaction callback of the engine's sees
 * it: what it left the scheduler (notifications it held, a sleep to start,
 * children nobody waits for) used to wait for the scheduler's poll, once a
 * second.  That statement passes through ProcessUtility in the session
 * that runs it, though, and PostgreSQL requires that session to be
 * connected to the transaction's database: once the statement has done
 * its work, the hook asks notify.c to wake that database's scheduler,
 * which does so only while the scheduler watches some prepared
 * transaction, so another application's two-phase commit costs a look at
 * the slot and no pass.  The poll stays, as the fallback.
 *
 * A COMMIT PREPARED also tells the backends' caches of the workspace
 * mapping and of the concurrency limits to read them again: a change to
 * either says so at its commit, which for a prepared one happens here.
 *
 * IDENTIFICATION
 *	  src/prepared_finish.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/parsenodes.h"
#include "tcop/utility.h"

#include "vectorbea.h"
#include "limits_claim.h"
#include "notify.h"
#include "prepared_finish.h"
#include "tenants.h"

static ProcessUtility_hook_type prev_utility = NULL;

static bool
ends_prepared(Node *stmt, bool *committed)
{
	TransactionStmt *t;

	if (stmt == NULL || !IsA(stmt, TransactionStmt))
		return false;
	t = (TransactionStmt *) stmt;
	*committed = t->kind == TRANS_STMT_COMMIT_PREPARED;
	return t->kind == TRANS_STMT_COMMIT_PREPARED || t->kind == TRANS_STMT_ROLLBACK_PREPARED;
}

static void
finish_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			   ProcessUtilityContext context, ParamListInfo params,
			   QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	bool		committed = false;
	bool		ends = ends_prepared(pstmt->utilityStmt, &committed);

	if (prev_utility)
		prev_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								dest, qc);
	/* The prepared transaction has ended: the wake goes at this statement's commit. */
	if (ends)
		vb_wake_scheduler_for_prepared();
	/*
	 * Its changes are visible now.  Those of the workspace mapping and of
	 * the concurrency limits, which backends cache, said so only at a
	 * commit in the session that made them: each cache is read again.
	 */
	if (committed)
	{
		vb_tenants_prepared_committed();
		vb_limits_prepared_committed();
	}
}

/* Called once, from _PG_init. */
void
vb_prepared_finish_init(void)
{
	prev_utility = ProcessUtility_hook;
	ProcessUtility_hook = finish_utility;
}
