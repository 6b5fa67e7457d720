/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The schedulers' shared state: one slot per configured database.
 *
 * A slot says which database a scheduler serves, its pid, and what it is
 * doing (last wake, next due time, counters, last error), for
 * scheduler_status().  It also publishes the scheduler's next due time so
 * that a backend committing earlier due work can wake it (vb_wake_scheduler)
 * instead of the scheduler polling.
 *
 * The slot is written by its scheduler only, under the module's LWLock;
 * readers that only compare the next due time read it without the lock (an
 * aligned 64-bit load), since a stale value costs at most one extra wake.
 *
 * IDENTIFICATION
 *	  src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "commands/async.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "vectorbea.h"

VbShared   *vb_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
vb_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(VbShared));
	RequestNamedLWLockTranche("vectorbea", 1);
}

static void
vb_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	vb_shared = ShmemInitStruct("vectorbea", sizeof(VbShared), &found);
	if (!found)
	{
		memset(vb_shared, 0, sizeof(VbShared));
		vb_shared->lock = &(GetNamedLWLockTranche("vectorbea"))->lock;
		vb_fill_slot_names();
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while shared_preload_libraries is processed. */
void
vb_shmem_install_hooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = vb_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = vb_shmem_startup;
}

/* The slot of the scheduler serving this backend's database, or NULL. */
static VbSchedulerSlot *
slot_for_my_database(void)
{
	if (vb_shared == NULL)
		return NULL;
	for (int i = 0; i < vb_shared->nslots; i++)
		if (vb_shared->slots[i].database_oid == MyDatabaseId)
			return &vb_shared->slots[i];
	return NULL;
}

/*
 * Wakes at commit.  A transaction that writes time-driven work notes the
 * earliest due time; just before it commits it compares that with what the
 * scheduler plans, and asks for a wake (NOTIFY vectorbea_scheduler) when
 * the scheduler would sleep past it, or is in a pass that cannot see this
 * transaction's rows.  Once committed it raises wake_requested, which tells
 * the scheduler that the latch it finds set is meant for it: PostgreSQL
 * signals every listening backend for any NOTIFY in the database.
 *
 * Retries whose time has already come by the commit are announced by the
 * committing transaction itself (NOTIFY vectorbea_tasks), since a pass
 * that ran before the commit could not announce them.
 */
typedef struct PendingRetry
{
	char	   *activity;
	TimestampTz available_at;
} PendingRetry;

static bool xact_callback_registered = false;
static TimestampTz pending_due = DT_NOEND;
static List *pending_retries = NIL;	/* in TopTransactionContext */
static bool wake_sent = false;

static void
reset_pending(void)
{
	pending_due = DT_NOEND;
	pending_retries = NIL;
	wake_sent = false;
}

static void
vb_xact_callback(XactEvent event, void *arg)
{
	VbSchedulerSlot *slot;
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (pending_due == DT_NOEND && pending_retries == NIL)
				return;
			slot = slot_for_my_database();
			if (slot && slot->pid != 0 && pending_due != DT_NOEND &&
				(slot->in_pass || pending_due < slot->next_due))
			{
				Async_Notify(VB_SCHEDULER_CHANNEL, "");
				wake_sent = true;
			}
			foreach(lc, pending_retries)
			{
				PendingRetry *r = lfirst(lc);

				if (r->available_at <= vb_now())
					vb_notify_task_ready(r->activity);
			}
			break;
		case XACT_EVENT_COMMIT:
			if (wake_sent && (slot = slot_for_my_database()) != NULL)
				slot->wake_requested = true;
			reset_pending();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			reset_pending();
			break;
		default:
			break;
	}
}

static void
ensure_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(vb_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/* This transaction wrote work that falls due at `due`. */
void
vb_wake_scheduler(TimestampTz due)
{
	if (vb_shared == NULL)
		return;
	ensure_callback();
	if (due < pending_due)
		pending_due = due;
}

/* This transaction scheduled a retry of activity at available_at. */
void
vb_announce_at_commit(const char *activity, TimestampTz available_at)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	PendingRetry *r = palloc(sizeof(PendingRetry));

	r->activity = pstrdup(activity);
	r->available_at = available_at;
	pending_retries = lappend(pending_retries, r);
	MemoryContextSwitchTo(old);
	ensure_callback();
	vb_wake_scheduler(available_at);
}

/*
 * Names the slots after vectorbea.database when shared memory is created,
 * so that scheduler_status() lists a database whose scheduler could not
 * start (it does not exist, or no worker slot was free).
 */
void
vb_fill_slot_names(void)
{
	List	   *names = vb_scheduler_databases(false);
	ListCell   *lc;

	foreach(lc, names)
	{
		int			i = foreach_current_index(lc);

		if (i >= VB_MAX_SCHEDULERS)
			break;
		strlcpy(vb_shared->slots[i].database, strVal(lfirst(lc)), NAMEDATALEN);
		strlcpy(vb_shared->slots[i].state, "not started", sizeof(vb_shared->slots[i].state));
		vb_shared->slots[i].next_due = DT_NOEND;
		vb_shared->nslots = i + 1;
	}
}

/*
 * scheduler_status() -> SETOF record: one row per configured database.
 */
PG_FUNCTION_INFO_V1(vectorbea_scheduler_status);
Datum
vectorbea_scheduler_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	/*
	 * An error can name the master key file or other settings' values, which
	 * members of pg_read_all_settings may read and others may not.
	 */
	bool		may_read_errors = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_SETTINGS);

	InitMaterializedSRF(fcinfo, 0);
	if (vb_shared == NULL)
		return (Datum) 0;		/* not preloaded: no scheduler */

	LWLockAcquire(vb_shared->lock, LW_SHARED);
	for (int i = 0; i < vb_shared->nslots; i++)
	{
		VbSchedulerSlot *s = &vb_shared->slots[i];
		Datum		values[14];
		bool		nulls[14];

		memset(nulls, 0, sizeof(nulls));
		values[0] = CStringGetTextDatum(s->database);
		values[1] = Int32GetDatum(s->pid);
		nulls[1] = (s->pid == 0);
		values[2] = CStringGetTextDatum(s->state[0] ? s->state : "not started");
		values[3] = TimestampTzGetDatum(s->started_at);
		nulls[3] = (s->started_at == 0);
		values[4] = TimestampTzGetDatum(s->last_wake);
		nulls[4] = (s->last_wake == 0);
		values[5] = TimestampTzGetDatum(s->next_due);
		nulls[5] = (s->next_due == 0 || TIMESTAMP_NOT_FINITE(s->next_due));
		values[6] = Int64GetDatum((int64) s->wakes);
		values[7] = Int64GetDatum((int64) s->counters.leases_expired);
		values[8] = Int64GetDatum((int64) s->counters.timeouts);
		values[9] = Int64GetDatum((int64) s->counters.retries_announced);
		values[10] = Int64GetDatum((int64) s->counters.deadlines);
		values[11] = Int64GetDatum((int64) s->counters.gates_expired);
		values[12] = Int64GetDatum((int64) s->counters.errors);
		values[13] = CStringGetTextDatum(may_read_errors ? s->counters.last_error :
										 "(hidden: visible to members of pg_read_all_settings)");
		nulls[13] = (s->counters.last_error[0] == '\0');
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(vb_shared->lock);
	return (Datum) 0;
}
