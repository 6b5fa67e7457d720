/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The schedulers' shared state: one slot per configured database.
 *
 * A slot says which database a scheduler serves, its pid, and what it is
 * doing (last wake, next due time, counters, last error), for
 * scheduler_status().  It also publishes the scheduler's next due time so
 * that a backend committing earlier due work can wake it (notify.c)
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
#include "settings.h"
#include "shmem.h"

VbShared   *vb_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void fill_slot_names(void);

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
		pg_atomic_init_u64(&vb_shared->limits_generation, 0);
		pg_atomic_init_u64(&vb_shared->tenants_generation, 0);
		vb_shared->lock = &(GetNamedLWLockTranche("vectorbea"))->lock;
		fill_slot_names();
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
VbSchedulerSlot *
vb_slot_for_my_database(void)
{
	if (vb_shared == NULL)
		return NULL;
	for (int i = 0; i < vb_shared->nslots; i++)
		if (vb_shared->slots[i].database_oid == MyDatabaseId)
			return &vb_shared->slots[i];
	return NULL;
}

/*
 * Whether the scheduler serving this database is running and is at most
 * VB_SCHEDULER_LAG_MS behind what it planned at engine time `at`: its
 * next due time (the earliest lease end it knows of, among others; a
 * claim whose lease ends before it wakes it at commit, notify.c) is no
 * older than that.  During a pass the planned time is at most the pass's
 * start (scheduler.c, begin_pass), so a pass that takes longer than the
 * lag, blocked or failed and pausing, counts as behind.  Read without the
 * lock: a stale value means one sweep made or skipped by a claim.
 */
bool
vb_scheduler_ahead_of(TimestampTz at)
{
	VbSchedulerSlot *slot = vb_slot_for_my_database();

	return slot != NULL && slot->pid != 0 &&
		slot->next_due > at - (TimestampTz) VB_SCHEDULER_LAG_MS * 1000;
}

/*
 * Names the slots after vectorbea.database when shared memory is created,
 * so that scheduler_status() lists a database whose scheduler could not
 * start (it does not exist, or no worker slot was free).
 */
static void
fill_slot_names(void)
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
		vb_shared->slots[i].due_in_pass = DT_NOEND;
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
