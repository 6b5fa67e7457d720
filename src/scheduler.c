/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The background worker that moves time-driven work: one "vectorbea
 *	  scheduler" per database listed in vectorbea.database.
 *
 * The loop, top to bottom: handle signals; read what woke us; do what is
 * due (each step a short transaction of its own); publish the next due
 * time; sleep until it, or until woken.  It never holds a transaction or a
 * snapshot while it sleeps.
 *
 * Wakes: a backend that has committed work falling due before the
 * scheduler's published next due time (shmem.c) raises wake_requested and
 * sets the scheduler's latch (notify.c).  CREATE EXTENSION sends NOTIFY
 * vectorbea_scheduler, which the scheduler LISTENs to.  SIGHUP (a reload,
 * or a moved test clock) wakes it too, and committed transactions set its
 * latch to have their notifications sent (relay.c).
 * Otherwise it sleeps exactly until the next due item, or at most
 * vectorbea.scheduler_idle_timeout when nothing is due, and issues no
 * statement while nothing is due.
 *
 * Crash semantics: the workers are registered to start once recovery has
 * finished, so a standby runs none until it is promoted.  After any start
 * (a crash restart included) the first pass announces every ready activity
 * (notifications of the crashed cluster are gone) and ends every attempt
 * whose lease ran out meanwhile.  SIGTERM ends the worker at once (its
 * transactions are short); the postmaster restarts it after one second,
 * unless the cluster is shutting down.  Postmaster death ends every wait.
 *
 * IDENTIFICATION
 *	  src/scheduler.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "vectorbea.h"
#include "approvals.h"
#include "clock.h"
#include "events.h"
#include "first_analyze.h"
#include "http.h"
#include "llm.h"
#include "relay.h"
#include "retention.h"
#include "waits.h"
#include "scheduler.h"
#include "settings.h"
#include "shmem.h"
#include "sweep.h"

/* How soon to look again at due work whose run was busy. */
#define BUSY_RETRY_MS	100

/*
 * Runs purged in one scheduler step, at most: its locks last that long.
 * Their events are bounded too (vectorbea.retention_batch_events).
 */
#define PURGE_BATCH		500

/*
 * How long one step goes on taking batches of due items before it commits.
 * Items can make more items in the same step (a child run started by a run
 * node may start children of its own), so without a bound one step of a
 * self-starting workflow built its whole tree in one transaction: minutes,
 * with the tree's runs locked (cancel_run of its root waited for all of
 * it) and every other timer, lease and llm call of the database waiting
 * behind it.  What a step leaves goes to the next pass, which starts at
 * once.
 */
#define STEP_WORK_MS	1000

/* When the current step stops taking more batches. */
static TimestampTz step_deadline;

/* The pass left due items for lack of time (step_has_time). */
static bool pass_cut_short;

/*
 * An llm step (begin_llm_step, until end_step) or a send of llm calls is
 * under way: an error then may have left a call's memory and its history
 * apart, so recover_from_error drops the calls and the next pass ends
 * their attempts as a restart would (vb_llm_recover).  An error anywhere
 * else (another step, a cancel while the scheduler waits for answers)
 * leaves the calls in flight as they are.
 */
static bool llm_calls_at_risk = false;

/* The orphan look goes everywhere next time (cancel_orphans). */
static bool orphans_look_everywhere = true;

/* Errors in a row that escaped a step (recover_from_error); 0 after a clean pass. */
static int	errors_in_a_row = 0;

/* The longest a scheduler waits after an error before its next pass. */
#define MAX_ERROR_BACKOFF_MS	(60 * 1000)

/*
 * The scheduler runs engine SQL as the bootstrap superuser, in a database
 * whose owner (and anyone with CREATE on public) may plant functions,
 * aggregates and operators that out-match pg_catalog's for an unqualified
 * call.  Its search_path therefore names nothing a non-superuser can write
 * to, set at the override level, above ALTER DATABASE ... SET, ALTER ROLE
 * ... SET, ALTER SYSTEM and the configuration files, so no reload changes
 * it (only a SET in this session could, and the scheduler issues none).
 */
#define SAFE_SEARCH_PATH	"pg_catalog, pg_temp"

PGDLLEXPORT void vb_scheduler_main(Datum main_arg);

static VbSchedulerSlot *my_slot = NULL;

/*
 * Registers one scheduler per database named in vectorbea.database.  Runs
 * in the postmaster, from _PG_init, while shared_preload_libraries loads.
 */
void
vb_register_schedulers(void)
{
	List	   *names = vb_scheduler_databases(true);
	ListCell   *lc;
	int			slot = 0;

	foreach(lc, names)
	{
		BackgroundWorker worker;
		char	   *dbname = strVal(lfirst(lc));

		if (slot >= VB_MAX_SCHEDULERS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("vectorbea.database lists more than %d databases", VB_MAX_SCHEDULERS)));
		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = 1;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "vectorbea");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "vb_scheduler_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "vectorbea scheduler for %s", dbname);
		snprintf(worker.bgw_type, BGW_MAXLEN, "vectorbea scheduler");
		strlcpy(worker.bgw_extra, dbname, BGW_EXTRALEN);
		worker.bgw_main_arg = Int32GetDatum(slot);
		RegisterBackgroundWorker(&worker);
		slot++;
	}
}

static void
set_state(const char *state)
{
	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	strlcpy(my_slot->state, state, sizeof(my_slot->state));
	LWLockRelease(vb_shared->lock);
}

static void
clear_slot(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	my_slot->pid = 0;
	my_slot->next_due = 0;
	strlcpy(my_slot->state, "stopped", sizeof(my_slot->state));
	LWLockRelease(vb_shared->lock);
}

/* Signals, config reload, and notifications that arrived while we slept. */
static void
handle_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		vb_http_apply_settings();
	}
	/* Reading the queue keeps it from filling; the content does not matter. */
	if (notifyInterruptPending)
		ProcessNotifyInterrupt(false);
}

/*
 * Nothing the scheduler runs may change its search_path (functions with a
 * SET clause restore theirs on exit); should something ever do so, stop
 * before running engine SQL under it: every step checks.  The postmaster
 * starts the worker again, with the safe path.
 */
static void
assert_safe_search_path(void)
{
	const char *path = GetConfigOption("search_path", false, false);

	if (path == NULL || strcmp(path, SAFE_SEARCH_PATH) != 0)
		ereport(FATAL,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("vectorbea scheduler: search_path changed to \"%s\"",
						path ? path : ""),
				 errdetail("The scheduler runs engine SQL only with search_path \"%s\".",
						   SAFE_SEARCH_PATH)));
}

/*
 * Starts a step's transaction.  Its first lock is the extension's own, in
 * share mode: DROP EXTENSION takes that lock (exclusive) before any of the
 * tables, so a step and a DROP wait for each other instead of deadlocking
 * over tables locked in different orders (the DROP failed with "deadlock
 * detected" about one time in ten right after a restart).  False,
 * with no transaction left open, when the extension is gone (a DROP that
 * committed while the step waited); the pass ends there, and the loop waits
 * for the extension again.
 */
static bool
begin_step(const char *what)
{
	Oid			extension;

	assert_safe_search_path();
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	extension = get_extension_oid("vectorbea", true);
	if (OidIsValid(extension))
	{
		/* Reads the catalog again once granted (AcceptInvalidationMessages). */
		LockDatabaseObject(ExtensionRelationId, extension, 0, AccessShareLock);
		extension = get_extension_oid("vectorbea", true);
	}
	if (!OidIsValid(extension))
	{
		CommitTransactionCommand();
		llm_calls_at_risk = false;
		return false;
	}
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, what);
	step_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), STEP_WORK_MS);
	return true;
}

/* vb_llm_send, with the calls at risk while it runs (llm_calls_at_risk). */
static void
send_llm_calls(void)
{
	llm_calls_at_risk = true;
	vb_llm_send();
	llm_calls_at_risk = false;
}

/* begin_step for a step that acts on llm calls. */
static bool
begin_llm_step(const char *what)
{
	llm_calls_at_risk = true;
	return begin_step(what);
}

/*
 * True while the current step may take another batch.  A step always takes
 * its first batch, so every pass makes progress.
 */
static bool
step_has_time(void)
{
	if (GetCurrentTimestamp() < step_deadline)
		return true;
	pass_cut_short = true;
	return false;
}

/* Notifications committed meanwhile wait at most one step (relay.c). */
static void
end_step(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	llm_calls_at_risk = false;
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	vb_relay_send(false);
}

/* True when the extension is installed in our database (a catalog lookup). */
static bool
extension_installed(void)
{
	bool		installed;

	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid("vectorbea", true));
	CommitTransactionCommand();
	return installed;
}

static void
sleep_ms(long ms)
{
	int			rc;

	rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				   ms, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
}

/*
 * Sleeps until `until` (engine clock) or a wake meant for us: a committed
 * transaction's request, a reload, or a signal.  Latch sets from other
 * NOTIFY traffic in the database are absorbed here without a pass.
 */
static void
sleep_until(TimestampTz until, long max_ms)
{
	TimestampTz start = GetCurrentTimestamp();

	for (;;)
	{
		int64		ms = (until - vb_now()) / 1000 + 1;
		long		elapsed = (long) ((GetCurrentTimestamp() - start) / 1000);

		if (until == DT_NOEND || ms > max_ms - elapsed)
			ms = max_ms - elapsed;
		if (ms <= 0)
			return;
		sleep_ms((long) ms);
		if (ConfigReloadPending || ProcDiePending || my_slot->wake_requested)
			return;
		handle_interrupts();	/* drain the notification queue */
		vb_relay_send(true);		/* what committed transactions handed over */
	}
}

/*
 * Like sleep_until, while LLM calls are in flight: waits on their sockets
 * too, and finishes each call as it ends (a transaction per batch), sending
 * corrections and claiming more llm nodes as room frees up.  Returns when
 * `until` comes, when the scheduler is woken, or when no call is left.
 */
static void
wait_with_calls(TimestampTz until, MemoryContext cxt, VbSweepCounters *c)
{
	TimestampTz start = GetCurrentTimestamp();

	while (vb_llm_busy())
	{
		int64		ms;
		long		elapsed;
		bool		latch;

		/* A correction held for its time under a rate limit leaves at a pass. */
		until = Min(until, vb_llm_next_send());
		ms = (until - vb_now()) / 1000 + 1;
		elapsed = (long) ((GetCurrentTimestamp() - start) / 1000);

		if (until == DT_NOEND || ms > vb_scheduler_idle_ms - elapsed)
			ms = vb_scheduler_idle_ms - elapsed;
		if (ms <= 0)
			return;
		MemoryContextSwitchTo(cxt);
		latch = vb_http_wait((long) ms);
		if (vb_http_has_done())
		{
			/* Room has freed up: ready llm nodes are claimed in the same step. */
			if (!begin_llm_step("vectorbea: finishing llm calls"))
			{
				MemoryContextSwitchTo(TopMemoryContext);
				MemoryContextReset(cxt);
				return;
			}
			vb_llm_finish(c);
			/* as in do_pass: the calls of leases gone are dropped before a claim */
			vb_llm_check_leases();
			if (vb_llm_claim(c))
				until = Min(until, vb_now() + BUSY_RETRY_MS * 1000);
			/*
			 * A call this step put on record (a correction, a claim) whose
			 * lease a later answer of the batch revoked (it failed or
			 * stopped the run) is not sent, as in do_pass.
			 */
			vb_llm_check_leases();
			end_step();
			send_llm_calls();
		}
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(cxt);
		if (latch)
		{
			if (ConfigReloadPending || ProcDiePending || my_slot->wake_requested)
				return;
			handle_interrupts();
			vb_relay_send(true);
		}
	}
}

/*
 * One batch of retention (vectorbea.retention): runs finished longer ago
 * are purged with their history.  True when the batch stopped at one of
 * its bounds (runs or events), so that more may be waiting.  A
 * database still at 0.1.0 has no audit table: purging waits for ALTER
 * EXTENSION ... UPDATE, with a warning an hour.
 */
static bool
purge_old_runs(TimestampTz now)
{
	static TimestampTz last_warning = 0;
	int			purged = 0;
	bool		more = false;

	if (!begin_step("vectorbea: purging finished runs"))
		return false;
	if (vb_retention_available())
		purged = vb_purge_batch(vb_finished_statuses(),
								now - (int64) vb_retention_min * 60 * USECS_PER_SEC,
								PURGE_BATCH, vb_retention_batch_events, "vectorbea scheduler",
								now, &more);
	else if (TimestampDifferenceExceeds(last_warning, GetCurrentTimestamp(), 3600 * 1000))
	{
		ereport(WARNING,
				(errmsg("vectorbea scheduler: vectorbea.retention is set, but this database's extension has no retention yet"),
				 errhint("ALTER EXTENSION vectorbea UPDATE;")));
		last_warning = GetCurrentTimestamp();
	}
	end_step();
	if (purged > 0)
	{
		/*
		 * The purge is the last step of a pass, often less than a second
		 * after the previous flush, and the scheduler may then sleep for
		 * minutes: flush now, so autovacuum learns of the dead rows.
		 */
		pgstat_report_stat(true);
		ereport(DEBUG1, (errmsg("vectorbea scheduler: purged %d finished runs", purged)));
	}
	return more;
}

/*
 * One pass over what is due at engine time `now`; returns the next due time.
 * Each step is its own transaction, so a failure in one does not undo the
 * others, and locks are held for one step only.  A step that finds the
 * extension dropped ends the pass, due at once: the loop then waits for the
 * extension to come back.
 */
/*
 * The steps of a pass that act on items due by time: expired attempts, runs
 * past their deadline, gates past their expiry, waits to start or end.
 * False when a step found the extension dropped.
 */
static bool
end_due_items(TimestampTz now, VbSweepCounters *c)
{
	if (!begin_step("vectorbea: ending expired attempts"))
		return false;
	while (vb_expire_attempts((Datum) 0, now, true, c) > 0 && step_has_time())
		;
	end_step();

	if (!begin_step("vectorbea: failing runs past their deadline"))
		return false;
	while (vb_fail_overdue_runs(now, c) > 0 && step_has_time())
		;
	end_step();

	if (!begin_step("vectorbea: expiring and escalating approval gates"))
		return false;
	while (vb_expire_gates(now, c) > 0 && step_has_time())
		;
	end_step();

	if (!begin_step("vectorbea: starting and ending timers, signal waits and child runs"))
		return false;
	while (vb_start_waits(now, true, c) > 0 && step_has_time())
		;
	while (vb_end_due_waits(now, true, c) > 0 && step_has_time())
		;
	end_step();
	return true;
}

/*
 * The prepared transactions that may still leave this scheduler work when
 * they commit: by id, those whose PREPARE said so (notify.c names them in
 * the slot) and, at the first look, every one of the database prepared then
 * (transactions prepared before the server started are recovered from
 * disk, and the new slot names none); by age, every prepared transaction
 * of the database older than watch_before, set when the slot or this list
 * overflowed.  Another application's two-phase commit leaves no id in the
 * slot, so it keeps the scheduler polling only if it was prepared before
 * one of those moments.
 *
 * COMMIT PREPARED, from any session, runs no callback of the engine's; the
 * statement itself wakes the scheduler when one it watches has ended (the
 * slot's copy of the list, prepared_finish.c).  Should that wake be
 * missed, what the transaction made due (a sleep to start, an llm node,
 * children nobody waits for) would wait for the next planned wake, up to
 * vectorbea.scheduler_idle_timeout; so while one is watched the scheduler
 * also passes every vectorbea.prepared_poll_interval, the fallback.
 */
static TransactionId watched[VB_PREPARED_KEPT];
static TimestampTz watched_at[VB_PREPARED_KEPT];	/* engine time of each PREPARE */
static int	n_watched = 0;
static TransactionId watch_before = InvalidTransactionId;
static bool watch_by_age = false;	/* set watch_before at the next look */
static TimestampTz by_age_since = DT_NOEND; /* the earliest PREPARE of those by age */
static bool list_prepared = true;	/* at the first look: every one, by id */

/*
 * Puts a copy of the watched ids in the slot, for COMMIT PREPARED's wake
 * (notify.c); under the slot's lock.
 */
static void
publish_watched_locked(void)
{
	memcpy(my_slot->watched, watched, n_watched * sizeof(TransactionId));
	my_slot->n_watched = n_watched;
	my_slot->watches_by_age = watch_by_age || TransactionIdIsValid(watch_before);
}

/*
 * At a scheduler's first look: the transactions of its database prepared
 * now, by id, their PREPAREs unknown (DT_NOBEGIN): those the server
 * recovered at its start, and any prepared before this scheduler started
 * whose ids went to a slot nobody read.  Those beyond the list's room are
 * watched by age.  In a step.
 */
static void
watch_prepared_of_database(void)
{
	TransactionId found[VB_PREPARED_KEPT];
	int			n = vb_prepared_xacts(found, VB_PREPARED_KEPT);

	for (int i = 0; i < Min(n, VB_PREPARED_KEPT); i++)
	{
		bool		listed = false;

		for (int j = 0; j < n_watched && !listed; j++)
			listed = TransactionIdEquals(watched[j], found[i]);
		if (listed)
			continue;
		if (n_watched == VB_PREPARED_KEPT)
		{
			n = VB_PREPARED_KEPT + 1;	/* no room: by age */
			break;
		}
		watched[n_watched] = found[i];
		watched_at[n_watched] = DT_NOBEGIN;
		n_watched++;
	}
	if (n > VB_PREPARED_KEPT)
	{
		watch_before = ReadNextTransactionId();
		by_age_since = DT_NOBEGIN;
	}
	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	publish_watched_locked();
	LWLockRelease(vb_shared->lock);
}

/*
 * Takes the ids the slot names; under the slot's lock.  False on overflow,
 * with by_age_since lowered to the earliest PREPARE of those left out.
 */
static bool
take_prepared_locked(void)
{
	bool		fits = !my_slot->prepared_overflowed;

	if (!fits)
		by_age_since = Min(by_age_since, my_slot->overflowed_since);
	for (int i = 0; i < my_slot->n_prepared; i++)
	{
		if (n_watched < VB_PREPARED_KEPT)
		{
			watched[n_watched] = my_slot->prepared[i];
			watched_at[n_watched] = my_slot->prepared_at[i];
			n_watched++;
		}
		else
		{
			by_age_since = Min(by_age_since, my_slot->prepared_at[i]);
			fits = false;
		}
	}
	my_slot->n_prepared = 0;
	my_slot->prepared_overflowed = false;
	return fits;
}

/*
 * Forgets the watched transactions that have ended; whether any is left.
 * (A prepared transaction stays in the proc array until COMMIT or
 * ROLLBACK PREPARED.)  *ended_since: the earliest PREPARE of those that
 * ended, those watched by age included once they all have (by_age_since:
 * DT_NOBEGIN for those found at the first look, whose PREPAREs nobody
 * saw), DT_NOEND when none has.  Reads pg_prepared_xacts, so inside
 * a step.
 */
static bool
prepared_work_may_come(TimestampTz *ended_since)
{
	int			kept = 0;

	*ended_since = DT_NOEND;
	for (int i = 0; i < n_watched; i++)
	{
		if (!TransactionIdIsInProgress(watched[i]))
		{
			*ended_since = Min(*ended_since, watched_at[i]);
			continue;
		}
		watched[kept] = watched[i];
		watched_at[kept] = watched_at[i];
		kept++;
	}
	n_watched = kept;
	if (TransactionIdIsValid(watch_before) && !vb_prepared_xacts_before(watch_before))
	{
		watch_before = InvalidTransactionId;
		*ended_since = Min(*ended_since, by_age_since);
		by_age_since = DT_NOEND;
	}
	return n_watched > 0 || TransactionIdIsValid(watch_before);
}

/*
 * Cancels the child runs nobody waits for any more, when a commit said
 * there may be some (vb_wake_scheduler_for_orphans) or the last look found
 * some left.  A commit names the runs to look at (a parent whose run node
 * stopped waiting, a child that came back to life), and the look reads
 * their children and them only: reading every running child run made a
 * parent fanned out to thousands of children most of every pass, and one
 * cancelled parent cost a read of every other parent's children.  The
 * runs are taken from the slot here and kept until a look at them ends
 * with none left busy, so that none is lost to a step that failed.  The
 * first pass of a scheduler looks at every running child run (a request
 * may have come before a crash), and so does a look after the slot or
 * this list overflowed, the look after a watched prepared transaction
 * (above) has ended, and every look while one watched by age is left.
 * *due: when to look again for children left busy, or to pass again for
 * a prepared transaction; DT_NOEND if neither.  *ended_since: the earliest
 * PREPARE of the watched transactions found ended (prepared_work_may_come).
 * False when the extension is gone.
 */
static bool
cancel_orphans(TimestampTz now, VbSweepCounters *c, TimestampTz *due, TimestampTz *ended_since)
{
	static pg_uuid_t named[VB_ORPHAN_RUNS];
	static int	n_named = 0;
	bool		watching;
	bool		prepared_left = false;
	bool		everywhere;
	ArrayType  *named_array = NULL;

	*due = DT_NOEND;
	*ended_since = DT_NOEND;
	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	if (!take_prepared_locked())
		watch_by_age = true;	/* by age: every id is older than the next */
	publish_watched_locked();
	if (my_slot->orphan_runs_overflowed || n_named + my_slot->n_orphan_runs > VB_ORPHAN_RUNS)
		orphans_look_everywhere = true;
	else
	{
		memcpy(&named[n_named], my_slot->orphan_runs, my_slot->n_orphan_runs * sizeof(pg_uuid_t));
		n_named += my_slot->n_orphan_runs;
	}
	my_slot->n_orphan_runs = 0;
	my_slot->orphan_runs_overflowed = false;
	LWLockRelease(vb_shared->lock);
	if (watch_by_age)
	{
		watch_before = ReadNextTransactionId();
		watch_by_age = false;
	}
	watching = n_watched > 0 || TransactionIdIsValid(watch_before) || list_prepared;
	if (!orphans_look_everywhere && !watching && n_named == 0)
		return true;
	if (!begin_step("vectorbea: cancelling the child runs of ended parents"))
		return false;
	if (list_prepared)
	{
		watch_prepared_of_database();
		list_prepared = false;
	}
	watching = n_watched > 0 || TransactionIdIsValid(watch_before);
	/* Before the look: one committed after this is seen by the next look. */
	if (watching)
	{
		prepared_left = prepared_work_may_come(ended_since);
		LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
		publish_watched_locked();
		LWLockRelease(vb_shared->lock);
	}

	/*
	 * A prepared transaction's orphans appear when it has ended: the look
	 * is everywhere then, not at every pass while it is prepared, which
	 * may be for long.  Those watched by age end unseen, one by one:
	 * everywhere while any is left.
	 */
	everywhere = orphans_look_everywhere || *ended_since != DT_NOEND || TransactionIdIsValid(watch_before);
	if (!everywhere && n_named == 0)
	{
		end_step();
		if (prepared_left)
			*due = TimestampTzPlusMilliseconds(now, vb_prepared_poll_ms);
		return true;
	}
	if (!everywhere)
	{
		Datum	   *ids = palloc(n_named * sizeof(Datum));

		for (int i = 0; i < n_named; i++)
			ids[i] = UUIDPGetDatum(&named[i]);
		named_array = construct_array(ids, n_named, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR);
	}
	while (vb_cancel_orphans(now, named_array, c) > 0 && step_has_time())
		;
	*due = vb_orphans_next_due(now, named_array);
	end_step();
	if (*due == DT_NOEND)
	{
		orphans_look_everywhere = false;
		n_named = 0;
	}
	else if (everywhere)
		orphans_look_everywhere = true; /* the busy child may be anyone's */
	if (prepared_left)
		*due = Min(*due, TimestampTzPlusMilliseconds(now, vb_prepared_poll_ms));
	return true;
}

static TimestampTz
do_pass(TimestampTz now, TimestampTz *announced_upto, VbSweepCounters *c)
{
	TimestampTz next;
	TimestampTz orphans_due;
	TimestampTz prepared_ended_since;
	bool		llm_left_busy;
	bool		ok;

	/* First, so that this pass's own statements are planned with statistics. */
	if (!begin_step("vectorbea: analysing grown tables"))
		return now;
	vb_first_analyze();
	end_step();

	/*
	 * An item of these steps that ends a child run does not wait for its
	 * parent's row: it is put off while another transaction holds it
	 * (due_items.c), so one open worker transaction cannot stall the pass.
	 * An orphan's cancel takes no lock of its parent (nobody there waits
	 * for it, state.c), and the llm steps wait: a call's answer, once
	 * rolled back, could only be had by calling again.
	 */
	(void) vb_run_parent_lock_wait_limit(0);
	ok = end_due_items(now, c);
	(void) vb_run_parent_lock_wait_limit(-1);
	if (!ok)
		return now;
	if (!cancel_orphans(now, c, &orphans_due, &prepared_ended_since))
		return now;

	/*
	 * Retries and held nodes that fell due while a prepared transaction
	 * that has now ended held them were not visible to the announcements
	 * since its PREPARE: this pass announces from there (those due by the
	 * PREPARE were held for its commit, notify.c).  Ended by age, its
	 * PREPARE unknown: every activity with ready work, as at a start.
	 */
	if (prepared_ended_since < *announced_upto)
		*announced_upto = prepared_ended_since;

	if (!begin_llm_step("vectorbea: claiming llm nodes"))
		return now;
	vb_llm_check_leases();
	vb_llm_record_held();
	llm_left_busy = vb_llm_claim(c);
	/* A call this claim recorded and then revoked (its run stopped) is not sent. */
	vb_llm_check_leases();
	end_step();
	send_llm_calls();

	if (!begin_step("vectorbea: announcing due retries"))
		return now;
	vb_announce_due(*announced_upto, now, c);
	vb_announce_not_before(*announced_upto, now);
	*announced_upto = now;
	next = Min(vb_next_due(now), vb_waits_next_due(now));
	next = Min(next, orphans_due);
	end_step();
	if (llm_left_busy)
		next = now;

	if (vb_retention_min > 0 && purge_old_runs(now))
		next = now;				/* a full batch: more may be waiting */
	if (pass_cut_short)
		next = now;
	return next;
}

/*
 * Starts a pass.  Its planned time becomes the pass's own start if that is
 * earlier (a commit woke it ahead of plan), so that a pass that blocks, or
 * fails and backs off (recover_from_error), counts as behind once the lag
 * has passed: claims then end expired leases themselves
 * (vb_scheduler_ahead_of) instead of trusting a plan the scheduler is not
 * keeping.
 */
static void
begin_pass(void)
{
	TimestampTz now = vb_now();

	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	if (my_slot->next_due > now)
		my_slot->next_due = now;
	my_slot->in_pass = true;
	my_slot->wake_requested = false;
	strlcpy(my_slot->state, "working", sizeof(my_slot->state));
	LWLockRelease(vb_shared->lock);
	pass_cut_short = false;
}

/*
 * Ends a pass: publishes the next due time, lowered to the work that
 * transactions committed during the pass (notify.c), which the pass may
 * not have seen; such work already due asks for another pass at once.
 * Returns the next due time.
 */
static TimestampTz
publish(TimestampTz now, TimestampTz next, VbSweepCounters *c)
{
	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	if (my_slot->due_in_pass < next)
		next = my_slot->due_in_pass;
	if (my_slot->due_in_pass <= vb_now())
		my_slot->wake_requested = true;
	my_slot->due_in_pass = DT_NOEND;
	my_slot->last_wake = now;
	my_slot->next_due = next;
	my_slot->in_pass = false;
	my_slot->wakes++;
	my_slot->counters = *c;
	strlcpy(my_slot->state, "idle", sizeof(my_slot->state));
	LWLockRelease(vb_shared->lock);
	return next;
}

/*
 * A database that does not exist (yet) ends each start with a FATAL, and
 * the postmaster starts the worker again a second later.  Starts that did
 * not reach their database wait 2, 4, ... up to 60 seconds first, so the
 * log gets a line a minute, not a second, and a database created later is
 * still served.  The count lives in shared memory; reaching the database
 * resets it.
 */
static void
back_off_before_connecting(void)
{
	int			failures;

	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	failures = my_slot->connect_failures++;
	strlcpy(my_slot->state, failures > 0 ? "waiting to connect" : "connecting",
			sizeof(my_slot->state));
	LWLockRelease(vb_shared->lock);
	if (failures > 0)
	{
		TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														Min(60 * 1000L, 1000L << Min(failures, 6)));

		/* A latch set by anything but SIGTERM does not end the pause. */
		for (;;)
		{
			long		ms = (long) ((until - GetCurrentTimestamp()) / 1000);

			if (ms <= 0)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
}

/*
 * Recovers from an error that escaped a step (a batch's statement, a
 * commit, a cancel by pg_cancel_backend, no memory) as PostgreSQL's own
 * background processes do: reports it, rolls back, and goes on, instead of
 * ending the process (the postmaster would start a new one a second later,
 * losing every llm call in flight, and again a second after that while
 * the error persisted).  Waits 1 s, doubling with each error in a row up
 * to a minute, before the next pass.
 */
static void
recover_from_error(MemoryContext pass_cxt, VbSweepCounters *counters, bool *recovered,
				   TimestampTz *announced_upto)
{
	ErrorData  *edata;
	int			backoff_ms;
	TimestampTz until;

	HOLD_INTERRUPTS();
	disable_all_timeouts(false);
	QueryCancelPending = false;
	EmitErrorReport();
	MemoryContextSwitchTo(TopMemoryContext);
	edata = CopyErrorData();
	AbortCurrentTransaction();
	LWLockReleaseAll();
	ConditionVariableCancelSleep();
	pgstat_report_wait_end();
	FlushErrorState();
	MemoryContextReset(pass_cxt);
	(void) vb_run_parent_lock_wait_limit(-1);
	if (llm_calls_at_risk)
	{
		vb_llm_forget_all();
		*recovered = false;
	}
	llm_calls_at_risk = false;

	/*
	 * What the failed pass had taken on (the ended prepared transactions it
	 * read, the named runs whose look failed, the announcements whose
	 * NOTIFY rolled back) is done again from the start, as after a restart.
	 */
	*announced_upto = DT_NOBEGIN;
	orphans_look_everywhere = true;
	list_prepared = true;
	counters->errors++;
	strlcpy(counters->last_error, edata->message ? edata->message : "", sizeof(counters->last_error));
	FreeErrorData(edata);
	errors_in_a_row = Min(errors_in_a_row + 1, 7);
	backoff_ms = Min(1000 << (errors_in_a_row - 1), MAX_ERROR_BACKOFF_MS);
	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	my_slot->counters = *counters;
	my_slot->in_pass = false;
	snprintf(my_slot->state, sizeof(my_slot->state), "error, next pass in %d s", backoff_ms / 1000);
	LWLockRelease(vb_shared->lock);
	pgstat_report_activity(STATE_IDLE, NULL);
	RESUME_INTERRUPTS();

	/* The whole pause: commits set the latch (relay.c, notify.c) at their rate. */
	until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), backoff_ms);
	for (;;)
	{
		long		left = (long) ((until - GetCurrentTimestamp()) / 1000);

		if (left <= 0)
			break;
		sleep_ms(left);
		CHECK_FOR_INTERRUPTS();
	}
}

void
vb_scheduler_main(Datum main_arg)
{
	int			slot_index = DatumGetInt32(main_arg);
	char		dbname[BGW_EXTRALEN];
	static VbSweepCounters counters;
	static TimestampTz announced_upto = DT_NOBEGIN;
	MemoryContext pass_cxt;
	static bool recovered = false;
	sigjmp_buf	local_sigjmp_buf;

	strlcpy(dbname, MyBgworkerEntry->bgw_extra, sizeof(dbname));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	my_slot = &vb_shared->slots[slot_index];
	back_off_before_connecting();
	BackgroundWorkerInitializeConnection(dbname, NULL, 0);
	SetConfigOption("search_path", SAFE_SEARCH_PATH, PGC_SUSET, PGC_S_OVERRIDE);
	pgstat_report_appname("vectorbea scheduler");
	/* Its statements are short index scans; compiling them never pays. */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * Its steps are written for READ COMMITTED and writable transactions
	 * without time limits: a database's or role's defaults (ALTER DATABASE
	 * ... SET default_transaction_isolation = 'serializable', say) are
	 * for its sessions, not for the engine's worker.  Pinned as search_path
	 * is.
	 */
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);

	LWLockAcquire(vb_shared->lock, LW_EXCLUSIVE);
	my_slot->connect_failures = 0;
	/* Counters go on across restarts of the worker. */
	counters = my_slot->counters;
	if (vb_shared->nslots <= slot_index)
		vb_shared->nslots = slot_index + 1;
	strlcpy(my_slot->database, dbname, sizeof(my_slot->database));
	my_slot->database_oid = MyDatabaseId;
	my_slot->pid = MyProcPid;
	my_slot->started_at = GetCurrentTimestamp();
	/* Until the first pass has published, every commit of due work wakes it. */
	my_slot->in_pass = true;
	my_slot->next_due = DT_NOBEGIN;
	my_slot->due_in_pass = DT_NOEND;
	my_slot->n_watched = 0;
	my_slot->watches_by_age = false;
	strlcpy(my_slot->state, "starting", sizeof(my_slot->state));
	LWLockRelease(vb_shared->lock);
	on_shmem_exit(clear_slot, (Datum) 0);

	/* LISTEN before the first pass, so no wake between them is lost. */
	StartTransactionCommand();
	Async_Listen(VB_SCHEDULER_CHANNEL);
	CommitTransactionCommand();
	vb_relay_attach(slot_index);

	pass_cxt = AllocSetContextCreate(TopMemoryContext, "vectorbea scheduler pass",
									 ALLOCSET_DEFAULT_SIZES);
	vb_llm_init();
	ereport(LOG,
			(errmsg("vectorbea scheduler started for database \"%s\"", dbname)));

	/* An error that escapes a step comes back here (recover_from_error). */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		error_context_stack = NULL;
		recover_from_error(pass_cxt, &counters, &recovered, &announced_upto);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		TimestampTz now;
		TimestampTz next;

		handle_interrupts();
		vb_relay_send(true);
		if (!extension_installed())
		{
			/* CREATE EXTENSION sends NOTIFY vectorbea_scheduler. */
			set_state("waiting for extension");
			announced_upto = DT_NOBEGIN;
			sleep_ms(vb_scheduler_idle_ms);
			continue;
		}

		begin_pass();
		MemoryContextSwitchTo(pass_cxt);
		now = vb_now();
		if (!recovered)
		{
			if (begin_llm_step("vectorbea: ending llm calls in doubt"))
			{
				vb_llm_recover(&counters);
				end_step();
				recovered = true;
			}
		}
		next = do_pass(now, &announced_upto, &counters);
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(pass_cxt);
		next = publish(now, next, &counters);
		errors_in_a_row = 0;
		/*
		 * Before any sleep: a prepared transaction this pass stopped
		 * watching has ended, and the notifications it held may be left
		 * (a step's end leaves them when a batch has just gone).
		 */
		vb_relay_send(true);

		/* Sleep until the next due item by the engine clock, or until woken. */
		if (my_slot->wake_requested)
			continue;
		if (pass_cut_short)
		{
			/* Calls that have ended are finished between such passes too. */
			if (vb_llm_busy())
				wait_with_calls(vb_now(), pass_cxt, &counters);
			continue;
		}
		if (next != DT_NOEND && next <= vb_now())
		{
			/*
			 * Work already due was left by this pass only when its run was
			 * busy (SKIP LOCKED): look again shortly rather than spin.
			 */
			if (vb_llm_busy())
				wait_with_calls(vb_now() + BUSY_RETRY_MS * 1000, pass_cxt, &counters);
			else
				sleep_ms(BUSY_RETRY_MS);
		}
		else if (vb_llm_busy())
			wait_with_calls(next, pass_cxt, &counters);
		else
			sleep_until(next, vb_scheduler_idle_ms);
	}
}
