/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  Telling others, at commit: NOTIFY vectorbea_tasks, vectorbea_runs and
 *	  vectorbea_approvals, and waking the scheduler for earlier due work.
 *
 * NOTIFY serialises committing transactions, so it is sent only when
 * someone can act on it (the settings vectorbea.notify_tasks and
 * vectorbea.notify_runs turn the first two off), and the engine's
 * notifications are collected here until the commit, then handed to the
 * database's scheduler, which sends them for many commits at once
 * (relay.c); without a scheduler they are sent as plain NOTIFY in the
 * committing transaction.  A transaction being prepared cannot notify: its
 * notifications wait for the scheduler (prepared_notes.c).  Either way a rolled-back (sub)transaction sends
 * nothing, and identical notifications of one transaction are one.
 *
 * IDENTIFICATION
 *	  src/notify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "lib/stringinfo.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "vectorbea.h"
#include "clock.h"
#include "jsonb_util.h"
#include "notify.h"
#include "relay.h"
#include "settings.h"
#include "shmem.h"

/*
 * The notifications of this transaction, in TopTransactionContext, each
 * with the nesting level of the subtransaction that sent it: an aborted
 * subtransaction drops its own, a committed one hands them to its parent.
 */
static VbNotification *pending_notes = NULL;
static int	n_pending = 0;
static int	pending_size = 0;

/*
 * Between PRE_PREPARE and PREPARE: the id the scheduler will watch, and
 * whether the transaction's notifications wait for it (prepared_notes.c).
 */
static TransactionId preparing_xid = InvalidTransactionId;
static TimestampTz preparing_at = DT_NOBEGIN;
static bool held_notes = false;

/* Identical notifications are folded while the list is short; NOTIFY folds the rest. */
#define FOLD_SCAN_MAX	64

static void ensure_callback(void);

static void
queue_notification(VbChannel channel, const char *payload)
{
	ensure_callback();
	for (int i = 0; n_pending <= FOLD_SCAN_MAX && i < n_pending; i++)
		if (pending_notes[i].channel == channel && strcmp(pending_notes[i].payload, payload) == 0)
			return;
	if (n_pending == pending_size)
	{
		pending_size = pending_size == 0 ? 8 : pending_size * 2;
		pending_notes = pending_notes == NULL ?
			MemoryContextAlloc(TopTransactionContext, sizeof(VbNotification) * pending_size) :
			repalloc(pending_notes, sizeof(VbNotification) * pending_size);
	}
	pending_notes[n_pending].channel = channel;
	pending_notes[n_pending].level = GetCurrentTransactionNestLevel();
	pending_notes[n_pending].payload = MemoryContextStrdup(TopTransactionContext, payload);
	n_pending++;
}

/*
 * Just before the commit: hand the notifications to the relay, or, when it
 * cannot take them (no scheduler, no room, a payload too long), send them
 * as NOTIFY in this transaction.  Just before a PREPARE: hold them for
 * the scheduler (held_notes), or drop them.
 */
static void
send_or_reserve(bool preparing)
{
	bool		fits = true;

	if (n_pending == 0)
		return;
	/*
	 * PREPARE TRANSACTION refuses a transaction that notified, and a
	 * prepared one commits later, from any backend, with no callback here:
	 * its notifications wait in shared memory, and the scheduler sends
	 * them once the transaction has committed (prepared_notes.c).  Where
	 * they cannot wait (no scheduler, no room) they are dropped: they are
	 * hints (workers poll as well, docs/worker-protocol.md), and refusing
	 * the PREPARE for notifications the caller never asked for would keep
	 * two-phase commit from the engine altogether.
	 */
	if (preparing)
	{
		held_notes = vb_relay_hold_prepared(preparing_xid, pending_notes, n_pending);
		n_pending = 0;
		return;
	}
	for (int i = 0; fits && i < n_pending; i++)
		fits = strlen(pending_notes[i].payload) <= VB_RELAY_PAYLOAD_MAX;
	if (vb_relay_reserve(n_pending, fits))
		return;
	for (int i = 0; i < n_pending; i++)
		Async_Notify(vb_channel_name(pending_notes[i].channel), pending_notes[i].payload);
	n_pending = 0;
}

/*
 * NOTIFY vectorbea_tasks with the activity as payload.  PostgreSQL folds
 * identical notifications of one transaction into one, so a transaction
 * that readies many nodes of one activity sends one.  A ready llm node
 * wakes the scheduler instead, which claims it, as does a node without an
 * activity (sleep, signal, run), which the scheduler starts.
 */
void
vb_notify_task_ready(const char *activity)
{
	/* llm nodes, and the engine's nodes without an activity, are the scheduler's work */
	if (activity == NULL || strcmp(activity, VB_LLM_ACTIVITY) == 0)
		vb_wake_scheduler(vb_now());
	else if (vb_notify_tasks && activity)
		queue_notification(VB_CHANNEL_TASKS, activity);
}

void
vb_notify_run_finished(pg_uuid_t *run_id, const char *status)
{
	StringInfoData payload;

	if (!vb_notify_runs)
		return;
	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"run\":\"%s\",\"status\":\"%s\"}",
					 vb_uuid_text(run_id), status);
	queue_notification(VB_CHANNEL_RUNS, payload.data);
}

/* A gate opened, was decided, escalated or closed. */
void
vb_notify_approval(int64 id, pg_uuid_t *run_id, const char *gate, const char *status)
{
	StringInfoData payload;

	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"id\":%ld,\"run\":\"%s\",\"gate\":", (long) id,
					 vb_uuid_text(run_id));
	vb_append_json_string(&payload, gate);
	appendStringInfo(&payload, ",\"status\":\"%s\"}", status);
	queue_notification(VB_CHANNEL_APPROVALS, payload.data);
}

/*
 * Wakes at commit.  A transaction that writes time-driven work notes the
 * earliest due time; once committed it compares that with what the
 * scheduler plans (tell_scheduler_after_commit): while the scheduler is in
 * a pass, which may not see this transaction's rows, it lowers the due
 * time the pass will end with; otherwise, when the scheduler would sleep
 * past it, it raises wake_requested, which tells the scheduler that the
 * latch it finds set is meant for it (other latch sets, from NOTIFY traffic
 * of the database among others, cause no pass), and sets its latch.  No
 * NOTIFY: a notifying commit queues behind every other one (relay.c).
 *
 * Retries whose time has already come by the commit are announced by the
 * committing transaction itself (NOTIFY vectorbea_tasks), since a pass
 * that ran before the commit could not announce them.
 */
typedef struct PendingRetry
{
	char	   *activity;
	TimestampTz available_at;
	int			level;			/* the subtransaction's, as for notifications */
} PendingRetry;

static bool xact_callback_registered = false;
static TimestampTz pending_due = DT_NOEND;
/* Runs this transaction names for the scheduler's look for orphans (shmem.h). */
static pg_uuid_t pending_orphan_runs[VB_ORPHAN_RUNS];
static int	n_pending_orphan_runs = 0;
static bool pending_orphans_overflowed = false;
static List *pending_retries = NIL;	/* in TopTransactionContext */

/*
 * Adds run_id to the set runs[0..*n) of at most VB_ORPHAN_RUNS; false when
 * it is not there and there is no room.
 */
static bool
add_orphan_run(pg_uuid_t *runs, int *n, const pg_uuid_t *run_id)
{
	for (int i = 0; i < *n; i++)
		if (memcmp(&runs[i], run_id, sizeof(pg_uuid_t)) == 0)
			return true;
	if (*n == VB_ORPHAN_RUNS)
		return false;
	runs[(*n)++] = *run_id;
	return true;
}

static void
reset_pending(void)
{
	pending_notes = NULL;		/* its memory goes with the transaction */
	n_pending = pending_size = 0;
	pending_due = DT_NOEND;
	preparing_xid = InvalidTransactionId;
	preparing_at = DT_NOBEGIN;
	held_notes = false;
	n_pending_orphan_runs = 0;
	pending_orphans_overflowed = false;
	pending_retries = NIL;
}

/*
 * Once committed, work due at `due`: a pass running now may not have seen
 * it, and ends by lowering its next due time to it (scheduler.c,
 * publish); a scheduler between passes planned without it, and is woken
 * through its latch if it would sleep past it.  A pass is never woken for
 * another one at once: under load claims commit during every pass, and
 * passes ran back to back.  The runs this transaction named for orphans
 * (vb_wake_scheduler_for_orphans) join the slot's: the scheduler's next
 * pass looks at their children, and at them, and nowhere else (it does
 * not look when no commit asked it to).  A transaction just prepared
 * that left the scheduler work (something due, or orphans) leaves its id
 * instead (`prepared_xid`, valid), with the engine time of its PREPARE
 * (`prepared_at`): it commits later, from any backend, with no callback
 * here, so the scheduler watches it until it has ended, woken by each
 * COMMIT PREPARED of the database (vb_wake_scheduler_for_prepared) and
 * polling, and once it has ended looks for orphans everywhere and
 * announces the retries that fell due since its PREPARE, which its passes
 * meanwhile could not see (scheduler.c).
 */
static void
tell_scheduler_after_commit(VbSchedulerSlot *slot, TimestampTz due, TransactionId prepared_xid,
							TimestampTz prepared_at)
{
	bool		wake = false;
	int			pid = 0;

	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	if (TransactionIdIsValid(prepared_xid))
	{
		if (slot->n_prepared < VB_PREPARED_KEPT)
		{
			slot->prepared[slot->n_prepared] = prepared_xid;
			slot->prepared_at[slot->n_prepared] = prepared_at;
			slot->n_prepared++;
		}
		else
		{
			if (!slot->prepared_overflowed || prepared_at < slot->overflowed_since)
				slot->overflowed_since = prepared_at;
			slot->prepared_overflowed = true;
		}
	}
	else
	{
		if (pending_orphans_overflowed)
			slot->orphan_runs_overflowed = true;
		for (int i = 0; i < n_pending_orphan_runs && !slot->orphan_runs_overflowed; i++)
			if (!add_orphan_run(slot->orphan_runs, &slot->n_orphan_runs, &pending_orphan_runs[i]))
				slot->orphan_runs_overflowed = true;
	}
	if (slot->pid != 0)
	{
		if (slot->in_pass)
		{
			if (due < slot->due_in_pass)
				slot->due_in_pass = due;
		}
		else if (due < slot->next_due)
		{
			/* Its plan is now this work's time: vb_scheduler_ahead_of. */
			slot->next_due = due;
			slot->wake_requested = true;
			wake = true;
			pid = slot->pid;
		}
	}
	LWLockRelease(vb_shared->lock);
	if (wake)
	{
		PGPROC	   *proc = BackendPidGetProc(pid);

		if (proc != NULL)
			SetLatch(&proc->procLatch);
	}
}

/* The retries whose time has come by now are announced at the commit. */
static void
announce_retries_due(void)
{
	ListCell   *lc;

	foreach(lc, pending_retries)
	{
		PendingRetry *r = lfirst(lc);

		if (r->available_at <= vb_now())
			vb_notify_task_ready(r->activity);
	}
}

static void
vb_xact_callback(XactEvent event, void *arg)
{
	VbSchedulerSlot *slot;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			announce_retries_due();
			send_or_reserve(false);
			break;
		case XACT_EVENT_PRE_PREPARE:
			/*
			 * Retries due by the PREPARE are announced once it commits; the
			 * scheduler announces those due since (preparing_at) then too.
			 */
			preparing_at = vb_now();
			announce_retries_due();
			preparing_xid = GetTopTransactionIdIfAny();
			send_or_reserve(true);
			break;
		case XACT_EVENT_COMMIT:
			slot = pending_due == DT_NOEND ? NULL : vb_slot_for_my_database();
			/* Unlocked reads: tell_scheduler_after_commit decides under the lock. */
			if (slot != NULL &&
				(n_pending_orphan_runs > 0 || pending_orphans_overflowed ||
				 (slot->pid != 0 && (slot->in_pass || pending_due < slot->next_due))))
				tell_scheduler_after_commit(slot, pending_due, InvalidTransactionId, DT_NOBEGIN);
			vb_relay_fill(pending_notes);
			reset_pending();
			break;
		case XACT_EVENT_PREPARE:
			/*
			 * Work due was written, or notifications held, so the
			 * transaction has an id.  Held notifications wake the scheduler
			 * now, so that it watches the transaction from its next look.
			 */
			if ((pending_due != DT_NOEND || held_notes) && TransactionIdIsValid(preparing_xid) &&
				(slot = vb_slot_for_my_database()) != NULL)
				tell_scheduler_after_commit(slot, held_notes ? Min(pending_due, vb_now()) : pending_due,
											preparing_xid, preparing_at);
			vb_relay_release();
			reset_pending();
			break;
		case XACT_EVENT_ABORT:
			/* A PREPARE that failed after its notifications were held. */
			if (held_notes)
				vb_relay_forget_prepared(preparing_xid);
			vb_relay_release();
			reset_pending();
			break;
		default:
			break;
	}
}

/*
 * An aborted subtransaction's notifications and retries to announce are
 * dropped, a committed one's are its parent's.  (Its due time for the
 * scheduler stays: at worst a pass that finds nothing.)
 */
static void
vb_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			kept = 0;
	ListCell   *lc;

	if (event != SUBXACT_EVENT_ABORT_SUB && event != SUBXACT_EVENT_COMMIT_SUB)
		return;
	for (int i = 0; i < n_pending; i++)
	{
		if (pending_notes[i].level >= level)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
				continue;
			pending_notes[i].level = level - 1;
		}
		pending_notes[kept++] = pending_notes[i];
	}
	n_pending = kept;
	foreach(lc, pending_retries)
	{
		PendingRetry *r = lfirst(lc);

		if (r->level < level)
			continue;
		if (event == SUBXACT_EVENT_ABORT_SUB)
			pending_retries = foreach_delete_current(pending_retries, lc);
		else
			r->level = level - 1;
	}
}

static void
ensure_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(vb_xact_callback, NULL);
		RegisterSubXactCallback(vb_subxact_callback, NULL);
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

/*
 * This statement, COMMIT PREPARED or ROLLBACK PREPARED, has just ended a
 * prepared transaction of this database (prepared_finish.c).  The
 * scheduler is woken at this statement's commit, as for work due now, when
 * a transaction it watches, or one that named itself in the slot, has
 * ended (this one, most often): another application's two-phase commit
 * costs a look at the slot and a proc array check per watched id, and no
 * pass.  While the scheduler watches some by age (more were prepared at
 * once than its list holds), which one ended cannot be told: it is woken
 * at most every VB_AGE_WAKE_MS.
 */
void
vb_wake_scheduler_for_prepared(void)
{
	VbSchedulerSlot *slot;
	TransactionId ids[2 * VB_PREPARED_KEPT];
	int			n = 0;
	bool		by_age;
	bool		wake = false;

	if (vb_shared == NULL || (slot = vb_slot_for_my_database()) == NULL)
		return;
	LWLockAcquire(vb_shared->lock, LW_SHARED);
	if (slot->pid == 0)
	{
		LWLockRelease(vb_shared->lock);
		return;
	}
	for (int i = 0; i < slot->n_prepared; i++)
		ids[n++] = slot->prepared[i];
	for (int i = 0; i < slot->n_watched; i++)
		ids[n++] = slot->watched[i];
	by_age = slot->watches_by_age || slot->prepared_overflowed;
	LWLockRelease(vb_shared->lock);

	for (int i = 0; i < n && !wake; i++)
		wake = !TransactionIdIsInProgress(ids[i]);
	if (!wake && by_age)
	{
		TimestampTz now = GetCurrentTimestamp();

		LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
		if (TimestampDifferenceExceeds(slot->age_woken_at, now, VB_AGE_WAKE_MS))
		{
			slot->age_woken_at = now;
			wake = true;
		}
		LWLockRelease(vb_shared->lock);
	}
	if (wake)
		vb_wake_scheduler(vb_now());
}

/*
 * This transaction may have left a child run that nobody waits for: a run
 * node of run_id closed or timed out while its child may still run, or
 * run_id, a child, came back to life after its parent stopped waiting.
 * The scheduler cancels such children, and looks for them only when told,
 * at the children of the runs it is told of and at those runs themselves:
 * a look at every running child run read thousands of them for one
 * cancelled parent.  Runs beyond VB_ORPHAN_RUNS make it look everywhere.
 */
void
vb_wake_scheduler_for_orphans(const pg_uuid_t *run_id, TimestampTz at)
{
	if (vb_shared == NULL)
		return;
	vb_wake_scheduler(at);
	if (!add_orphan_run(pending_orphan_runs, &n_pending_orphan_runs, run_id))
		pending_orphans_overflowed = true;
}

/* This transaction scheduled a retry of activity at available_at. */
void
vb_announce_at_commit(const char *activity, TimestampTz available_at)
{
	MemoryContext old;
	PendingRetry *r;

	if (activity == NULL)
	{
		vb_wake_scheduler(available_at);	/* the engine's node: nobody else to tell */
		return;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	r = palloc(sizeof(PendingRetry));

	r->activity = pstrdup(activity);
	r->available_at = available_at;
	r->level = GetCurrentTransactionNestLevel();
	pending_retries = lappend(pending_retries, r);
	MemoryContextSwitchTo(old);
	ensure_callback();
	vb_wake_scheduler(available_at);
}

