/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  Telling others, at commit: NOTIFY vectorbea_tasks, vectorbea_runs and
 *	  vectorbea_approvals, and waking the scheduler for earlier due work.
 *
 * NOTIFY serialises committing transactions, so it is sent only when
 * someone can act on it (the settings vectorbea.notify_tasks and
 * vectorbea.notify_runs turn the first two off).
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
#include "settings.h"
#include "shmem.h"

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
		Async_Notify("vectorbea_tasks", activity);
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
	Async_Notify("vectorbea_runs", payload.data);
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
	Async_Notify("vectorbea_approvals", payload.data);
}

/*
 * Wakes at commit.  A transaction that writes time-driven work notes the
 * earliest due time; just before it commits it compares that with what the
 * scheduler plans, and asks for a wake (NOTIFY vectorbea_scheduler) when
 * the scheduler would sleep past it.  Once committed it raises
 * wake_requested, which tells the scheduler that the latch it finds set is
 * meant for it: PostgreSQL signals every listening backend for any NOTIFY
 * in the database.  While the scheduler is in a pass, which may not see
 * this transaction's rows, the committed transaction instead lowers the
 * due time the pass will end with (tell_scheduler_after_commit).
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

static bool tell_after_commit = false;

static void
reset_pending(void)
{
	pending_due = DT_NOEND;
	pending_retries = NIL;
	wake_sent = false;
	tell_after_commit = false;
}

/*
 * Once committed, work due at `due`: a pass running now may not have seen
 * it, and ends by lowering its next due time to it (scheduler.c,
 * publish); a pass that ended meanwhile planned without it, and is woken
 * through its latch if it would sleep past it.  No NOTIFY: a wake sent to
 * a scheduler in a pass made it run another one at once, and under load
 * claims commit during every pass, so passes ran back to back.
 */
static void
tell_scheduler_after_commit(VbSchedulerSlot *slot, TimestampTz due)
{
	bool		wake = false;
	int			pid = 0;

	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	if (slot->pid != 0)
	{
		if (slot->in_pass)
		{
			if (due < slot->due_in_pass)
				slot->due_in_pass = due;
		}
		else if (due < slot->next_due)
		{
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
			slot = vb_slot_for_my_database();
			if (slot && slot->pid != 0 && pending_due != DT_NOEND)
			{
				if (slot->in_pass)
					tell_after_commit = true;
				else if (pending_due < slot->next_due)
				{
					Async_Notify(VB_SCHEDULER_CHANNEL, "");
					wake_sent = true;
				}
			}
			foreach(lc, pending_retries)
			{
				PendingRetry *r = lfirst(lc);

				if (r->available_at <= vb_now())
					vb_notify_task_ready(r->activity);
			}
			break;
		case XACT_EVENT_COMMIT:
			slot = vb_slot_for_my_database();
			if (wake_sent && slot != NULL)
				slot->wake_requested = true;
			else if (slot != NULL && slot->pid != 0 && pending_due != DT_NOEND &&
					 (tell_after_commit || slot->in_pass))
				tell_scheduler_after_commit(slot, pending_due);
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
	pending_retries = lappend(pending_retries, r);
	MemoryContextSwitchTo(old);
	ensure_callback();
	vb_wake_scheduler(available_at);
}

