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
#include "commands/async.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

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
 * Work that falls due at `due` was just written by this transaction: wake
 * the database's scheduler at commit if it plans to sleep past `due`.  The
 * wake is a NOTIFY on vectorbea_scheduler, so it is sent only if the
 * transaction commits, and PostgreSQL folds repeats into one.
 */
void
vb_wake_scheduler(TimestampTz due)
{
	VbSchedulerSlot *slot = slot_for_my_database();

	if (slot == NULL || slot->pid == 0)
		return;
	if (due < slot->next_due)
		Async_Notify(VB_SCHEDULER_CHANNEL, "");
}

/*
 * scheduler_status() -> SETOF record: one row per configured database.
 */
PG_FUNCTION_INFO_V1(vectorbea_scheduler_status);
Datum
vectorbea_scheduler_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	if (vb_shared == NULL)
		return (Datum) 0;		/* not preloaded: no scheduler */

	LWLockAcquire(vb_shared->lock, LW_SHARED);
	for (int i = 0; i < vb_shared->nslots; i++)
	{
		VbSchedulerSlot *s = &vb_shared->slots[i];
		Datum		values[13];
		bool		nulls[13];

		memset(nulls, 0, sizeof(nulls));
		values[0] = CStringGetTextDatum(s->database);
		values[1] = Int32GetDatum(s->pid);
		nulls[1] = (s->pid == 0);
		values[2] = CStringGetTextDatum(s->state);
		values[3] = TimestampTzGetDatum(s->started_at);
		nulls[3] = (s->started_at == 0);
		values[4] = TimestampTzGetDatum(s->last_wake);
		nulls[4] = (s->last_wake == 0);
		values[5] = TimestampTzGetDatum(s->next_due);
		nulls[5] = (s->next_due == 0 || s->next_due == DT_NOEND);
		values[6] = Int64GetDatum((int64) s->wakes);
		values[7] = Int64GetDatum((int64) s->leases_expired);
		values[8] = Int64GetDatum((int64) s->timeouts);
		values[9] = Int64GetDatum((int64) s->retries_announced);
		values[10] = Int64GetDatum((int64) s->deadlines);
		values[11] = Int64GetDatum((int64) s->errors);
		values[12] = CStringGetTextDatum(s->last_error);
		nulls[12] = (s->last_error[0] == '\0');
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	LWLockRelease(vb_shared->lock);
	return (Datum) 0;
}
