/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  The schedulers' shared state: one slot per configured database
 *	  (shmem.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_SHMEM_H
#define VB_SHMEM_H

#include "access/transam.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#define VB_MAX_SCHEDULERS		16

/* Runs a scheduler's slot names for its next look for orphaned children. */
#define VB_ORPHAN_RUNS			64

/* Prepared transactions a scheduler's slot names by id (more: by age). */
#define VB_PREPARED_KEPT		64
#define VB_AGE_WAKE_MS			100

#define VB_SCHEDULER_CHANNEL	"vectorbea_scheduler"

/* How late the scheduler may be before claims end expired attempts themselves. */
#define VB_SCHEDULER_LAG_MS		2000

/* What the scheduler has done (sweep.c counts, shmem.c shows). */
typedef struct VbSweepCounters
{
	uint64		leases_expired;
	uint64		timeouts;
	uint64		retries_announced;
	uint64		deadlines;
	uint64		gates_expired;
	uint64		errors;
	char		last_error[256];
} VbSweepCounters;

typedef struct VbSchedulerSlot
{
	char		database[NAMEDATALEN];
	Oid			database_oid;	/* set once the scheduler has connected */
	int			pid;			/* 0 while no scheduler runs */
	char		state[32];		/* "starting", "waiting for extension", "idle", "working" */
	TimestampTz started_at;
	TimestampTz last_wake;
	TimestampTz next_due;		/* engine clock; DT_NOEND when nothing is due */
	bool		in_pass;		/* a pass is reading the tables right now */
	bool		wake_requested; /* a committed transaction added earlier work */
	TimestampTz due_in_pass;	/* earliest work committed during the pass; DT_NOEND */
	/*
	 * Runs whose commits stopped waiting for a running child run (their
	 * children are looked at) or revived a child run (it is looked at),
	 * since the scheduler last took them; overflowed: more than fit, and
	 * the scheduler looks at every running child run.
	 */
	int			n_orphan_runs;
	bool		orphan_runs_overflowed;
	pg_uuid_t	orphan_runs[VB_ORPHAN_RUNS];
	/*
	 * Prepared transactions whose PREPARE left the scheduler work, by id,
	 * since the scheduler last took them; overflowed: more than fit, and
	 * it watches every prepared transaction older than its next look.
	 */
	int			n_prepared;
	bool		prepared_overflowed;
	TimestampTz overflowed_since;	/* the earliest PREPARE of those beyond */
	TransactionId prepared[VB_PREPARED_KEPT];
	TimestampTz prepared_at[VB_PREPARED_KEPT];	/* engine time of each PREPARE */
	/*
	 * The prepared transactions the scheduler watches by id (a copy of its
	 * list), and whether it watches some by age: a COMMIT PREPARED wakes it
	 * when one of those it names (here or above) has ended, and, while it
	 * watches by age, at most every VB_AGE_WAKE_MS (notify.c).
	 */
	int			n_watched;
	TransactionId watched[VB_PREPARED_KEPT];
	bool		watches_by_age;
	TimestampTz age_woken_at;
	int			connect_failures;	/* starts that did not reach the database */
	uint64		wakes;
	VbSweepCounters counters;	/* kept across restarts of the worker */
} VbSchedulerSlot;

typedef struct VbShared
{
	LWLock	   *lock;
	pg_atomic_uint64 limits_generation;	/* bumped when concurrency limits change */
	pg_atomic_uint64 tenants_generation;	/* bumped when workspace_roles change */
	int			nslots;
	VbSchedulerSlot slots[VB_MAX_SCHEDULERS];
} VbShared;

extern VbShared *vb_shared;
extern void vb_shmem_install_hooks(void);
extern VbSchedulerSlot *vb_slot_for_my_database(void);
extern bool vb_scheduler_ahead_of(TimestampTz at);

#endif							/* VB_SHMEM_H */
