/*-------------------------------------------------------------------------
 *
 * early_release.c
 *	  Run locks released before the commit's flush, the flush made before
 *	  the commit is acknowledged (vectorbea.early_lock_release).
 *
 * A run's events are gap-free in commit order, so every transaction of a
 * run holds the run's lock until its commit is over, and PostgreSQL
 * releases locks only after the commit record is flushed: one run's
 * commits never share a flush, and one wide run drains at half the rate
 * of many narrow ones (bench/README.md, "What bounds one wide run").
 *
 * With the setting on, a transaction that wrote events commits without
 * waiting for the flush (synchronous_commit off for that commit only),
 * which releases its locks as soon as the commit record is in the WAL,
 * and then flushes the WAL up to that record itself, after the locks are
 * gone and before its client hears that the commit is done.  So an
 * acknowledged commit is as durable as before, and the numbers stay in
 * commit order: the next transaction of the run can only number after
 * this commit record, so no crash keeps its events and loses these.  What
 * changes is that other sessions may see the commit for the moments of
 * the flush before it is durable; a session that writes after seeing it
 * is durable only with it (its commit record comes later in the WAL), so
 * only a reader that acts outside the database on what it read could act
 * on a commit a crash then takes back.  docs/operations.md says so.
 *
 * Not used where the commit would not have waited for the flush anyway
 * (synchronous_commit off) or where it waits for a standby as well
 * (synchronous_standby_names set): skipping the standby's confirmation
 * would break synchronous replication's promise, so those commits keep
 * PostgreSQL's own order.
 *
 * IDENTIFICATION
 *	  src/early_release.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "replication/syncrep.h"
#include "utils/guc.h"
#include "utils/resowner.h"

#include "early_release.h"
#include "settings.h"

/* This transaction wrote events: its commit may release early. */
static bool armed = false;

/* This commit released early and owes its flush. */
static bool flush_owed = false;

static bool callbacks_registered = false;

/* Whether commits wait for standbys too (synchronous replication). */
static bool
standbys_named(void)
{
	return SyncRepStandbyNames == NULL || SyncRepStandbyNames[0] != '\0';
}

/*
 * Just before the commit record: commit this transaction without waiting
 * for the flush, when it may.  The setting is local to the transaction,
 * so the session's own synchronous_commit comes back with its end.
 */
static void
early_release_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_PRE_COMMIT)
	{
		if (armed && vb_early_lock_release && TransactionIdIsValid(GetTopTransactionIdIfAny()) &&
			synchronous_commit > SYNCHRONOUS_COMMIT_OFF && !standbys_named())
		{
			(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_LOCAL, true, 0, false);
			flush_owed = true;
		}
		return;
	}
	armed = false;
	if (event != XACT_EVENT_COMMIT)
		flush_owed = false;
}

/*
 * After the commit's locks are released and before the client is told:
 * the flush the commit did not wait for.
 */
static void
early_release_resource_callback(ResourceReleasePhase phase, bool isCommit, bool isTopLevel,
								void *arg)
{
	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || !isTopLevel || !flush_owed)
		return;
	flush_owed = false;
	if (isCommit)
		XLogFlush(XactLastCommitEnd);
}

/*
 * Called by the event writer: this transaction holds runs' locks until it
 * commits, so its commit is one that may release them early.
 */
void
vb_early_release_arm(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(early_release_xact_callback, NULL);
		RegisterResourceReleaseCallback(early_release_resource_callback, NULL);
		callbacks_registered = true;
	}
	armed = true;
}
