/*-------------------------------------------------------------------------
 *
 * workspace_lock.c
 *	  The workspace lock: a transaction lock per workspace that orders its
 *	  kill switch (pause_workspace, resume_workspace) against everything
 *	  that sets a run of it going (start_run, start_runs, a child run,
 *	  fork_run, requeue, requeue_dead, resume_run, and a budget that
 *	  resumes runs).
 *
 * Those read the switch and then set the run going; the switch records
 * itself and then lists the runs to pause.  Unordered, a start that read
 * the switch before the pause committed, and committed after the pause
 * listed the runs, left a running run in a paused workspace (and a start
 * that read a pause a resume then lifted, a paused one in a resumed
 * workspace).  So the switch holds the lock alone from before it writes
 * until it commits, and each of the others holds it shared, from before
 * it reads the switch (and before it locks the run it sets going) until
 * it commits: a switch waits for the starts under way, and the starts
 * that come meanwhile wait for the switch and then read what it
 * committed (the switch is read with the latest snapshot, controls.c).
 * Starts never wait for each other.
 *
 * The lock is PostgreSQL's lock manager's, an advisory lock tag with a
 * class of its own (objsubid VB_WORKSPACE_LOCK_CLASS in pg_locks), keyed
 * by a 64-bit hash of the name; SQL's advisory locks use classes 1 and 2
 * and never meet it.  Two names with one hash only wait for each other.
 * Waits show as Lock/advisory, and lock_timeout, deadlock detection and
 * cancellation apply as to any lock.
 *
 * IDENTIFICATION
 *	  src/workspace_lock.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"

#include "clock.h"
#include "spi_util.h"
#include "workspace_lock.h"

/* objsubid of the workspace locks in pg_locks: "VB" */
#define VB_WORKSPACE_LOCK_CLASS 0x5642

static void
workspace_tag(LOCKTAG *tag, const char *workspace)
{
	uint64		hash = hash_bytes_extended((const unsigned char *) workspace,
										   (int) strlen(workspace), 0);

	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) (hash >> 32), (uint32) hash,
						 VB_WORKSPACE_LOCK_CLASS);
}

/* Holds workspace's lock shared until the transaction ends, waiting for a switch. */
void
vb_workspace_share(const char *workspace)
{
	LOCKTAG		tag;

	workspace_tag(&tag, workspace);
	(void) LockAcquire(&tag, ShareLock, false, false);
}

/*
 * The same, for a caller that holds a run of the workspace and so must
 * not wait (a switch may be waiting for that run): false when a switch
 * holds the lock or waits for it.
 */
bool
vb_workspace_try_share(const char *workspace)
{
	LOCKTAG		tag;

	workspace_tag(&tag, workspace);
	return LockAcquire(&tag, ShareLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/* The workspace the last statement found (or NULL), its lock shared. */
static char *
share_found(void)
{
	char	   *workspace;

	if (SPI_processed == 0)
		return NULL;
	workspace = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	vb_workspace_share(workspace);
	return workspace;
}

/*
 * The lock of run_id's workspace, shared; returns the workspace, or NULL
 * (and takes nothing) for a run that does not exist.
 */
char *
vb_workspace_share_of_run(pg_uuid_t *run_id)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(run_id)};

	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		/* generic from the first call: its plan does not depend on the run */
		plan = vb_prepare_opts("SELECT workspace FROM vectorbea.runs WHERE id = $1", lengthof(types), types,
							   CURSOR_OPT_GENERIC_PLAN);
	}
	/*
	 * A run's workspace never changes: no lock needed to read it.  Not
	 * read-only: a run another session committed a moment ago is found.
	 */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the workspace of run %s", vb_uuid_text(run_id));
	return share_found();
}

/* Holds workspace's lock alone until the transaction ends (the switch). */
void
vb_workspace_lock(const char *workspace)
{
	LOCKTAG		tag;

	workspace_tag(&tag, workspace);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}
