/*-------------------------------------------------------------------------
 *
 * prepared_notes.c
 *	  The notifications of prepared transactions: held in shared memory
 *	  from the PREPARE until the transaction has ended, then handed to its
 *	  database's scheduler if it committed, forgotten if it rolled back.
 *
 * PostgreSQL refuses to prepare a transaction that has sent NOTIFY, and
 * COMMIT PREPARED, from any session, runs no callback of the engine's.  So
 * a transaction being prepared leaves its notifications here instead
 * (relay.c decides, notify.c hands them over), tagged with its id and
 * database, and its id in the scheduler's slot; the scheduler then
 * watches the transaction, woken by COMMIT PREPARED (prepared_finish.c)
 * or by its poll (scheduler.c).  Once
 * TransactionIdIsInProgress says the transaction has ended, the clog says
 * how: the scheduler sends a committed one's notifications in its relay
 * batch and drops a rolled-back one's.  A transaction whose PREPARE failed
 * after its notifications were held takes them out in its abort.
 *
 * The room is fixed (HELD_NOTES, for every database together); a
 * transaction whose notifications do not all fit, or one of whose payloads
 * is too long for an entry, holds none, and they are dropped as before
 * (relay_status() counts them).  Shared memory does not survive a restart:
 * the notifications of transactions still prepared then are lost.
 *
 * IDENTIFICATION
 *	  src/prepared_notes.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"

#include "vectorbea.h"
#include "prepared_notes.h"

/* Entries for every database together: a few dozen prepared transactions' worth. */
#define HELD_NOTES			128

#define HELD_TRANCHE		"vectorbea prepared notes"

typedef struct HeldNote
{
	Oid			database;
	TransactionId xid;
	uint8		channel;		/* a VbChannel */
	char		payload[VB_RELAY_PAYLOAD_MAX + 1];
} HeldNote;

/* Entries notes[0..n) are in use, in the order they were held. */
typedef struct HeldNotes
{
	LWLock	   *lock;
	int			n;
	HeldNote	notes[HELD_NOTES];
} HeldNotes;

static HeldNotes *held = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
held_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(HeldNotes));
	RequestNamedLWLockTranche(HELD_TRANCHE, 1);
}

static void
held_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	held = ShmemInitStruct("vectorbea_prepared_notes", sizeof(HeldNotes), &found);
	if (!found)
	{
		memset(held, 0, sizeof(HeldNotes));
		held->lock = &(GetNamedLWLockTranche(HELD_TRANCHE))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
vb_prepared_notes_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = held_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = held_shmem_startup;
}

/*
 * Holds the n notifications of transaction xid, of this backend's
 * database, just before its PREPARE; false, holding none, when they do
 * not all fit.
 */
bool
vb_prepared_notes_hold(TransactionId xid, const VbNotification *notes, int n)
{
	bool		fits;

	if (held == NULL || !TransactionIdIsValid(xid) || n <= 0)
		return false;
	for (int i = 0; i < n; i++)
		if (strlen(notes[i].payload) > VB_RELAY_PAYLOAD_MAX)
			return false;
	LWLockAcquire(held->lock, LW_EXCLUSIVE);
	fits = held->n + n <= HELD_NOTES;
	for (int i = 0; fits && i < n; i++)
	{
		HeldNote   *h = &held->notes[held->n++];

		h->database = MyDatabaseId;
		h->xid = xid;
		h->channel = (uint8) notes[i].channel;
		strlcpy(h->payload, notes[i].payload, sizeof(h->payload));
	}
	LWLockRelease(held->lock);
	return fits;
}

/*
 * This backend's PREPARE of transaction xid failed after its notifications
 * were held (a duplicate identifier, max_prepared_transactions at zero):
 * they go now, in its abort, rather than when the scheduler next finds
 * the transaction rolled back, which may be an idle timeout away while
 * they take room the other databases' prepared transactions need.
 */
void
vb_prepared_notes_forget(TransactionId xid)
{
	int			kept = 0;

	if (held == NULL || !TransactionIdIsValid(xid))
		return;
	LWLockAcquire(held->lock, LW_EXCLUSIVE);
	for (int i = 0; i < held->n; i++)
	{
		if (held->notes[i].xid == xid && held->notes[i].database == MyDatabaseId)
			continue;
		if (kept != i)
			held->notes[kept] = held->notes[i];
		kept++;
	}
	held->n = kept;
	LWLockRelease(held->lock);
}

/*
 * The distinct transactions holding notifications of this database, read
 * under the lock into xids (room for HELD_NOTES); returns how many.
 */
static int
held_xids(TransactionId *xids)
{
	int			n = 0;

	LWLockAcquire(held->lock, LW_SHARED);
	for (int i = 0; i < held->n; i++)
	{
		bool		seen = false;

		if (held->notes[i].database != MyDatabaseId)
			continue;
		for (int j = n - 1; j >= 0 && !seen; j--)
			seen = xids[j] == held->notes[i].xid;
		if (!seen)
			xids[n++] = held->notes[i].xid;
	}
	LWLockRelease(held->lock);
	return n;
}

/*
 * For the scheduler: whether a transaction of this database that holds
 * notifications has ended.  Cheap while nothing is held, which is always
 * but around two-phase commits.
 */
bool
vb_prepared_notes_ended(void)
{
	TransactionId xids[HELD_NOTES];
	int			n;

	/* An unlocked read: a transaction held just now is seen by the next look. */
	if (held == NULL || held->n == 0)
		return false;
	n = held_xids(xids);
	for (int i = 0; i < n; i++)
		if (!TransactionIdIsInProgress(xids[i]))
			return true;
	return false;
}

/*
 * For the scheduler, in a transaction: takes out the notifications of this
 * database whose transactions have ended, and returns in *committed (an
 * array in CurrentMemoryContext) those whose transactions committed, in
 * the order they were held; returns how many.
 */
int
vb_prepared_notes_take(VbNotification **committed)
{
	TransactionId xids[HELD_NOTES];
	bool		ended[HELD_NOTES];
	bool		did_commit[HELD_NOTES];
	int			n_xids;
	int			n_ended = 0;
	int			n_out = 0;
	int			kept = 0;

	*committed = NULL;
	if (held == NULL || held->n == 0)
		return 0;
	/*
	 * Decided outside the lock: a transaction that has ended stays ended,
	 * and its notifications were all held before it was prepared.
	 */
	n_xids = held_xids(xids);
	for (int i = 0; i < n_xids; i++)
	{
		ended[i] = !TransactionIdIsInProgress(xids[i]);
		did_commit[i] = ended[i] && TransactionIdDidCommit(xids[i]);
		n_ended += ended[i] ? 1 : 0;
	}
	if (n_ended == 0)
		return 0;
	*committed = palloc(sizeof(VbNotification) * HELD_NOTES);
	LWLockAcquire(held->lock, LW_EXCLUSIVE);
	for (int i = 0; i < held->n; i++)
	{
		HeldNote   *h = &held->notes[i];
		int			x = -1;

		if (h->database == MyDatabaseId)
			for (int j = 0; j < n_xids && x < 0; j++)
				if (xids[j] == h->xid)
					x = j;
		if (x < 0 || !ended[x])
		{
			if (kept != i)
				held->notes[kept] = *h;
			kept++;
			continue;
		}
		if (did_commit[x])
		{
			(*committed)[n_out].channel = (VbChannel) h->channel;
			(*committed)[n_out].level = 0;
			(*committed)[n_out].payload = pstrdup(h->payload);
			n_out++;
		}
	}
	held->n = kept;
	LWLockRelease(held->lock);
	return n_out;
}
