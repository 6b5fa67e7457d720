/*-------------------------------------------------------------------------
 *
 * relay.c
 *	  The relay: notifications that committed transactions hand to their
 *	  database's scheduler, which sends them in a transaction of its own.
 *
 * PostgreSQL commits transactions that sent NOTIFY one at a time: a
 * notifying transaction takes a database-wide lock just before its commit
 * record and keeps it until the commit is flushed, so that notifications
 * enter the queue in commit order.  Each notifying commit therefore waits
 * for the previous one's WAL flush, and group commit no longer helps:
 * with one task per run, every completion ends a run and notifies, and
 * claim-then-complete ran 53 % faster with the notifications turned off
 * (bench/README.md, "NOTIFY serialises commits").
 *
 * With a scheduler serving the database, a transaction's notifications go
 * instead into a ring in shared memory once it has committed, and the
 * scheduler, woken through its latch, sends everything it finds there in
 * one transaction, committed without waiting for its WAL flush (nothing in
 * it needs to survive a crash: listeners reconnect and claim anyway).  One
 * notifying commit then serves many, and the committing backends never
 * take the lock.  A listener gets each notification after the commit it
 * announces is visible, as before, but from the scheduler's process and a
 * little later: the scheduler's wake-up when it sleeps, at most one step
 * of a pass when it is busy.
 *
 * Room in the ring is reserved just before the commit (notify.c), so that
 * a committed transaction always finds its entries' room; an abort after
 * the reservation gives it back.  The ring is first in, first out: a
 * listener sees the relayed notifications of two transactions in the order
 * they committed.  Only the database's scheduler reads its ring; after a
 * restart of the scheduler, it sends what the ring still holds.
 *
 * Each ring counts what it relayed, what its transactions sent directly
 * while a scheduler read it (no room, too long, too many) and what a
 * failed batch lost; relay_status() shows them.
 *
 * IDENTIFICATION
 *	  src/relay.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "vectorbea.h"
#include "prepared_notes.h"
#include "relay.h"
#include "shmem.h"

/* Entries of one database's ring: a backlog of this many makes commits notify directly. */
#define RELAY_ENTRIES		256

/*
 * Entries the scheduler copies out at a time, under the ring's lock: a
 * committing backend waits for at most one chunk's copy.
 */
#define RELAY_CHUNK			32

/* The rings' locks, one per ring (pg_stat_activity shows this name). */
#define RELAY_TRANCHE		"vectorbea relay"

/*
 * The scheduler sends at most one batch per this many microseconds: under
 * load each batch then serves several commits (a batch per commit cost the
 * scheduler a transaction per task), and a notification waits at most
 * this much longer.
 */
#define RELAY_INTERVAL_US	2000

static const char *const channel_names[] = {
	[VB_CHANNEL_TASKS] = "vectorbea_tasks",
	[VB_CHANNEL_RUNS] = "vectorbea_runs",
	[VB_CHANNEL_APPROVALS] = "vectorbea_approvals",
};

typedef struct RelayEntry
{
	uint8		channel;		/* a VbChannel */
	char		payload[VB_RELAY_PAYLOAD_MAX + 1];
} RelayEntry;

/*
 * One database's ring.  head, tail and reserved count entries, never
 * wrapping back (an entry's place is its count modulo RELAY_ENTRIES), so
 * the ring holds tail - head entries and reserved more are promised.
 * Everything in it is read and written under its lock, an LWLock rather
 * than a spinlock because the holders copy payloads (up to a chunk of
 * them, kilobytes) while they hold it.
 */
typedef struct RelayRing
{
	LWLock	   *lock;			/* in the RELAY_TRANCHE tranche */
	Oid			database_oid;	/* set by its scheduler */
	int			reader_pid;		/* the scheduler reading it; 0 while none does */
	int			reader_procno;	/* whose latch a commit sets */
	uint64		head;
	uint64		tail;
	uint64		reserved;
	/* Since the server started (relay_status()), in notifications. */
	uint64		relayed;		/* sent by the scheduler */
	uint64		direct;			/* sent by their own transaction while the scheduler ran */
	uint64		dropped;		/* taken by the scheduler and lost with its batch */
	RelayEntry	entries[RELAY_ENTRIES];
} RelayRing;

static RelayRing *rings = NULL;	/* VB_MAX_SCHEDULERS of them, by scheduler slot */
static RelayRing *my_ring = NULL;	/* the scheduler's own */
static TimestampTz last_send = 0;	/* the scheduler's last batch */
static RelayRing *reserved_ring = NULL;	/* where this transaction reserved room */
static int	reserved_n = 0;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
rings_size(void)
{
	return mul_size(sizeof(RelayRing), VB_MAX_SCHEDULERS);
}

static void
relay_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(rings_size());
	RequestNamedLWLockTranche(RELAY_TRANCHE, VB_MAX_SCHEDULERS);
}

static void
relay_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rings = ShmemInitStruct("vectorbea_relay", rings_size(), &found);
	if (!found)
	{
		LWLockPadded *locks = GetNamedLWLockTranche(RELAY_TRANCHE);

		memset(rings, 0, rings_size());
		for (int i = 0; i < VB_MAX_SCHEDULERS; i++)
			rings[i].lock = &locks[i].lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
vb_relay_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = relay_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = relay_shmem_startup;
}

const char *
vb_channel_name(VbChannel channel)
{
	return channel_names[channel];
}

/* The ring of this backend's database while a scheduler other than this backend reads it. */
static RelayRing *
ring_for_my_database(void)
{
	if (rings == NULL)
		return NULL;
	for (int i = 0; i < VB_MAX_SCHEDULERS; i++)
	{
		RelayRing  *ring = &rings[i];

		/* Unlocked reads: a stale answer is corrected under the lock in vb_relay_reserve. */
		if (ring->database_oid == MyDatabaseId && ring->reader_pid != 0)
			return ring->reader_pid == MyProcPid ? NULL : ring;
	}
	return NULL;
}

/*
 * Reserves room for n entries, just before this transaction commits; fits
 * is false when a payload is too long for an entry.  False, with nothing
 * reserved, when the notifications must be sent directly: no scheduler
 * reads this database's ring (or this backend is it), or the ring cannot
 * take them (too long, more than it holds, no room now), which the ring
 * counts as sent directly.
 */
bool
vb_relay_reserve(int n, bool fits)
{
	RelayRing  *ring = ring_for_my_database();

	Assert(reserved_ring == NULL);
	if (ring == NULL || n <= 0)
		return false;
	LWLockAcquire(ring->lock, LW_EXCLUSIVE);
	if (ring->reader_pid != 0 && ring->database_oid == MyDatabaseId)
	{
		if (fits && n <= RELAY_ENTRIES &&
			ring->tail - ring->head + ring->reserved + n <= RELAY_ENTRIES)
		{
			ring->reserved += n;
			reserved_ring = ring;
			reserved_n = n;
		}
		else
			ring->direct += n;
	}
	LWLockRelease(ring->lock);
	return reserved_ring != NULL;
}

/*
 * Ends this transaction's reservation: fills its entries with the first of
 * notes and wakes the reader, or, with notes NULL, gives the room back.
 * Runs in the commit or abort callback, so it must not fail.
 */
static void
end_reservation(const VbNotification *notes)
{
	RelayRing  *ring = reserved_ring;
	int			procno = -1;

	if (ring == NULL)
		return;
	LWLockAcquire(ring->lock, LW_EXCLUSIVE);
	ring->reserved -= reserved_n;
	for (int i = 0; notes != NULL && i < reserved_n; i++)
	{
		RelayEntry *e = &ring->entries[ring->tail % RELAY_ENTRIES];

		e->channel = (uint8) notes[i].channel;
		strlcpy(e->payload, notes[i].payload, sizeof(e->payload));
		ring->tail++;
	}
	if (notes != NULL && ring->reader_pid != 0)
		procno = ring->reader_procno;
	LWLockRelease(ring->lock);
	reserved_ring = NULL;
	reserved_n = 0;
	if (procno >= 0)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/* Once committed: the reserved entries get the first of notes. */
void
vb_relay_fill(const VbNotification *notes)
{
	end_reservation(notes);
}

/* After an abort: gives back the room reserved by vb_relay_reserve, if any. */
void
vb_relay_release(void)
{
	end_reservation(NULL);
}

static void
detach(int code, Datum arg)
{
	if (my_ring == NULL)
		return;
	LWLockAcquire(my_ring->lock, LW_EXCLUSIVE);
	my_ring->reader_pid = 0;
	my_ring->reader_procno = -1;
	LWLockRelease(my_ring->lock);
	my_ring = NULL;
}

/*
 * The scheduler of slot `slot` reads its database's ring from now on,
 * until it exits.  Entries left by an earlier scheduler of the same
 * database are sent by the next vb_relay_send; those of another database
 * (the slot's database changed with a restart) are dropped.
 */
void
vb_relay_attach(int slot)
{
	if (rings == NULL || slot < 0 || slot >= VB_MAX_SCHEDULERS)
		return;
	my_ring = &rings[slot];
	LWLockAcquire(my_ring->lock, LW_EXCLUSIVE);
	if (my_ring->database_oid != MyDatabaseId)
	{
		my_ring->head = my_ring->tail;
		my_ring->database_oid = MyDatabaseId;
		my_ring->relayed = my_ring->direct = my_ring->dropped = 0;
	}
	my_ring->reader_pid = MyProcPid;
	my_ring->reader_procno = MyProc->pgprocno;
	LWLockRelease(my_ring->lock);
	on_shmem_exit(detach, (Datum) 0);
}

/*
 * Just before PREPARE: the n notifications of transaction xid are held
 * until it ends, for the scheduler to send if it committed
 * (prepared_notes.c).  False when no scheduler reads this database's ring
 * (nobody would send them) or they do not fit, which the ring counts as
 * dropped: the caller drops them.
 */
bool
vb_relay_hold_prepared(TransactionId xid, const VbNotification *notes, int n)
{
	RelayRing  *ring = ring_for_my_database();

	if (ring == NULL || n <= 0)
		return false;
	if (vb_prepared_notes_hold(xid, notes, n))
		return true;
	LWLockAcquire(ring->lock, LW_EXCLUSIVE);
	ring->dropped += n;
	LWLockRelease(ring->lock);
	return false;
}

/* The PREPARE of transaction xid failed after its notifications were held. */
void
vb_relay_forget_prepared(TransactionId xid)
{
	vb_prepared_notes_forget(xid);
}

/*
 * True when the scheduler's ring holds entries to send, or a prepared
 * transaction that held notifications has ended.
 */
bool
vb_relay_pending(void)
{
	bool		pending;

	if (my_ring == NULL)
		return false;
	LWLockAcquire(my_ring->lock, LW_SHARED);
	pending = my_ring->tail != my_ring->head;
	LWLockRelease(my_ring->lock);
	return pending || vb_prepared_notes_ended();
}

/* The scheduler counts a batch sent, or lost. */
static void
count_batch(int taken, bool lost)
{
	LWLockAcquire(my_ring->lock, LW_EXCLUSIVE);
	if (lost)
		my_ring->dropped += taken;
	else
		my_ring->relayed += taken;
	LWLockRelease(my_ring->lock);
}

/*
 * The scheduler: sends what its ring holds, in one transaction that does
 * not wait for its WAL flush.  Less than RELAY_INTERVAL_US after the last
 * batch it first sleeps out the rest of the interval, or, with may_wait
 * false (between the steps of a pass), leaves the entries for a later
 * call.  Identical notifications in the batch are folded into one, as
 * PostgreSQL folds them within any transaction.  An error (the
 * notification queue full, because a listener stopped reading) drops the
 * batch with a warning, as a NOTIFY sent in the committing transaction
 * would have failed that transaction.  Returns how many entries it took.
 */
int
vb_relay_send(bool may_wait)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int taken = 0;
	long		secs;
	int			usecs;

	if (!vb_relay_pending())
		return 0;
	TimestampDifference(last_send, GetCurrentTimestamp(), &secs, &usecs);
	if (secs == 0 && usecs < RELAY_INTERVAL_US)
	{
		if (!may_wait)
			return 0;
		pg_usleep(RELAY_INTERVAL_US - usecs);
	}
	StartTransactionCommand();
	PG_TRY();
	{
		RelayEntry	chunk[RELAY_CHUNK];
		VbNotification *committed;
		int			n;

		(void) set_config_option("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
		do
		{
			LWLockAcquire(my_ring->lock, LW_EXCLUSIVE);
			n = 0;
			while (n < RELAY_CHUNK && my_ring->head != my_ring->tail)
				chunk[n++] = my_ring->entries[my_ring->head++ % RELAY_ENTRIES];
			LWLockRelease(my_ring->lock);
			taken += n;			/* out of the ring: sent or lost */
			for (int i = 0; i < n; i++)
				Async_Notify(channel_names[chunk[i].channel], chunk[i].payload);
		} while (n == RELAY_CHUNK);
		/* Those of prepared transactions that have committed since. */
		n = vb_prepared_notes_take(&committed);
		taken += n;
		for (int i = 0; i < n; i++)
			Async_Notify(channel_names[committed[i].channel], committed[i].payload);
		CommitTransactionCommand();
		last_send = GetCurrentTimestamp();
		count_batch(taken, false);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		count_batch(taken, true);
		ereport(WARNING,
				(errmsg("vectorbea scheduler: %d notifications could not be sent", (int) taken)));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	return taken;
}

/*
 * relay_status() -> SETOF record: one row per database whose scheduler
 * has read a ring since the server started.
 */
PG_FUNCTION_INFO_V1(vectorbea_relay_status);
Datum
vectorbea_relay_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (rings == NULL)
		return (Datum) 0;		/* not preloaded: no relay */
	for (int i = 0; i < VB_MAX_SCHEDULERS; i++)
	{
		RelayRing  *ring = &rings[i];
		Oid			database_oid;
		int			reader_pid;
		uint64		waiting,
					relayed,
					direct,
					dropped;
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};
		char	   *name;

		/* Read under the ring's lock; the catalog is read outside it. */
		LWLockAcquire(ring->lock, LW_SHARED);
		database_oid = ring->database_oid;
		reader_pid = ring->reader_pid;
		waiting = ring->tail - ring->head;
		relayed = ring->relayed;
		direct = ring->direct;
		dropped = ring->dropped;
		LWLockRelease(ring->lock);
		if (!OidIsValid(database_oid))
			continue;
		name = get_database_name(database_oid);
		if (name == NULL)
			continue;			/* dropped since */
		values[0] = CStringGetTextDatum(name);
		values[1] = Int32GetDatum(reader_pid);
		nulls[1] = (reader_pid == 0);
		values[2] = Int64GetDatum((int64) waiting);
		values[3] = Int64GetDatum((int64) relayed);
		values[4] = Int64GetDatum((int64) direct);
		values[5] = Int64GetDatum((int64) dropped);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
