/*-------------------------------------------------------------------------
 *
 * settings.c
 *	  The settings of vectorbea, defined in one place, so that the
 *	  documentation (docs/operations.md) can be checked against one list.
 *
 * Limits that protect the engine are PGC_SUSET: an ordinary role must not
 * be able to raise them for its own session.  Four settings keep their
 * variables and check hooks with the code that parses them: the test clock
 * offset (clock.c), the test crash points (crashpoint.c), the LLM
 * allow-list (allowlist.c) and the test resolver (resolve.c); every other
 * variable lives here.  A leaf, apart from those hooks.
 *
 * IDENTIFICATION
 *	  src/settings.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "allowlist.h"
#include "clock.h"
#include "crashpoint.h"
#include "resolve.h"
#include "settings.h"
#include "shmem.h"

int			vb_max_payload_kb = 1024;
int			vb_max_nodes_per_run = 10000;
int			vb_max_tree_runs = 10000;
bool		vb_notify_tasks = true;
bool		vb_notify_runs = true;
bool		vb_early_lock_release = false;
bool		vb_test_pause_claim_mark = false;
char	   *vb_databases = NULL;
int			vb_scheduler_idle_ms = 5 * 60 * 1000;
int			vb_prepared_poll_ms = 1000;
char	   *vb_master_key_file = NULL;
int			vb_llm_max_in_flight = 32;
int			vb_llm_request_timeout_ms = 120 * 1000;
int			vb_llm_connect_timeout_ms = 10 * 1000;
int			vb_llm_max_response_kb = 4096;
int			vb_retention_min = 0;
int			vb_retention_batch_events = 50000;
int			vb_claim_wait_ms = 100;
bool		vb_live_index_pages = true;

/*
 * vectorbea.database is read when the postmaster starts, where a list it
 * cannot use is FATAL: refused when it is set (ALTER SYSTEM included), a
 * value that would stop the next start never reaches the file.  One
 * written into the file by hand is let through while the postmaster loads
 * the library: PostgreSQL applies a preloaded library's settings from the
 * file with a mere WARNING for a value its hook refuses, keeping the
 * default, so the server would start serving "postgres" instead of the
 * databases meant.  vb_register_schedulers then refuses it, and the
 * server does not start.
 */
static bool
check_databases(char **newval, void **extra, GucSource source)
{
	char	   *rawlist;
	List	   *names;
	List	   *unique = NIL;
	ListCell   *lc;

	if (process_shared_preload_libraries_in_progress)
		return true;
	rawlist = pstrdup(*newval);

	if (!SplitIdentifierString(rawlist, ',', &names))
	{
		GUC_check_errdetail("List database names separated by commas, e.g. 'app, analytics'; "
							"double-quote a name with commas, spaces or capitals.");
		return false;
	}
	foreach(lc, names)
		if (!list_member(unique, makeString(lfirst(lc))))
			unique = lappend(unique, makeString(lfirst(lc)));
	if (list_length(unique) > VB_MAX_SCHEDULERS)
	{
		GUC_check_errdetail("It lists %d databases; one server runs at most %d schedulers.",
							list_length(unique), VB_MAX_SCHEDULERS);
		return false;
	}
	return true;
}

/* Called once, from _PG_init. */
void
vb_define_settings(void)
{
	DefineCustomIntVariable("vectorbea.max_payload_size",
							"Largest JSON payload the engine accepts.",
							"Applies to run input, node input, outputs, spawn lists, "
							"checkpoints, errors and custom event data, measured as "
							"stored jsonb.",
							&vb_max_payload_kb,
							1024, 1, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.max_nodes_per_run",
							"Largest number of nodes one run may have, spawned nodes included.",
							NULL,
							&vb_max_nodes_per_run,
							10000, 1, 1000000,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.max_tree_runs",
							"Largest number of child runs one run may start, at any depth.",
							"Counted on the run that no run started, the root of the tree.",
							&vb_max_tree_runs,
							10000, 1, INT_MAX,
							PGC_SUSET, 0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("vectorbea.notify_tasks",
							 "Sends NOTIFY vectorbea_tasks when tasks become ready.",
							 "NOTIFY serialises committing transactions; turn it off "
							 "when no worker listens and workers poll instead.",
							 &vb_notify_tasks,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("vectorbea.notify_runs",
							 "Sends NOTIFY vectorbea_runs when a run finishes.",
							 "NOTIFY serialises committing transactions; turn it off "
							 "when nobody listens for finished runs.",
							 &vb_notify_runs,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("vectorbea.early_lock_release",
							 "Releases the runs' locks of a commit before its WAL flush, and flushes before the commit is acknowledged.",
							 "One run's commits then share flushes: a wide run drains faster. "
							 "Other sessions may see such a commit for the moments of its flush "
							 "before it is durable; the committing client is answered only after it. "
							 "Not used with synchronous_commit off or synchronous_standby_names set.",
							 &vb_early_lock_release,
							 false,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.claim_wait",
							"How long a claim that found ready work only in busy runs waits for the first of them.",
							"Such a claim waits for the run's lock, in line with its other "
							"writers, instead of coming back empty; 0 makes it come back at once.",
							&vb_claim_wait_ms,
							100, 0, 60 * 1000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("vectorbea.live_index_pages",
							 "Plans a sparse partial index of the engine's tables as the pages its live entries fill.",
							 "A queue's index keeps the pages of its largest backlog; after a drain the "
							 "planner would price a lookup in it as a read of many of them and take "
							 "another index. Applies to statements planned after it is set.",
							 &vb_live_index_pages,
							 true,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("vectorbea.test_clock_offset",
							   "Moves the engine clock forward, for tests.",
							   "A duration such as 90s or 2h30m added to the wall clock "
							   "wherever the engine reads time. Only for tests: leases, "
							   "backoff and timeouts are then tested without sleeping.",
							   &vb_test_clock_offset_text,
							   "0s",
							   PGC_SUSET, 0,
							   vb_check_clock_offset, vb_assign_clock_offset, NULL);

	DefineCustomBoolVariable("vectorbea.test_pause_claim_mark",
							 "Makes a claim that moves a mark wait between its scan and the move, for tests.",
							 "While on, such a claim takes and releases the advisory lock "
							 CppAsString2(VB_TEST_PAUSE_LOCK) " after its scan, so that a test "
							 "holding that lock can commit work in between. Only for tests; off "
							 "in production.",
							 &vb_test_pause_claim_mark,
							 false,
							 PGC_SUSET, GUC_NOT_IN_SAMPLE,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("vectorbea.test_crash_point",
							   "Makes the engine die at the named points, for tests.",
							   "A comma-separated list of claim_committed, llm_answered, "
							   "approval_applying, spawning and compensation_starting. A process "
							   "that reaches a named point kills itself with SIGKILL and the "
							   "server runs crash recovery. Only for tests; empty in production.",
							   &vb_test_crash_point_text,
							   "",
							   PGC_SUSET, GUC_NOT_IN_SAMPLE,
							   vb_check_crash_point, vb_assign_crash_point, NULL);

	/*
	 * A postmaster setting may be defined only while shared_preload_libraries
	 * loads: PostgreSQL ends with FATAL a session that defines one later, and
	 * so every session of a server that does not preload the library, at its
	 * first call of vectorbea (CREATE EXTENSION's among them).  There the
	 * setting is read by nothing (no scheduler runs, no shared memory is
	 * claimed), and it is defined as a reloadable one only so that SHOW
	 * answers and a value in postgresql.conf is not reported as invalid.
	 */
	DefineCustomStringVariable("vectorbea.database",
							   "Databases served by a vectorbea scheduler, comma-separated.",
							   "One background worker per database moves time-driven work "
							   "(expired leases, timeouts, due retries, run deadlines). "
							   "Empty starts none.",
							   &vb_databases,
							   "postgres",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   check_databases, NULL, NULL);

	DefineCustomIntVariable("vectorbea.scheduler_idle_timeout",
							"Longest a scheduler sleeps when nothing is due.",
							"The scheduler wakes when due work is committed and sleeps "
							"exactly until the next due item; this is only the fallback.",
							&vb_scheduler_idle_ms,
							5 * 60 * 1000, 100, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.prepared_poll_interval",
							"How often a scheduler looks again while a prepared transaction may leave it work.",
							"COMMIT PREPARED and ROLLBACK PREPARED wake the scheduler; this is only the fallback.",
							&vb_prepared_poll_ms,
							1000, 100, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.retention",
							"How long finished runs are kept before the scheduler purges them.",
							"0 (the default) keeps them for ever; purge_runs() purges on demand. "
							"The scheduler purges one bounded batch a pass.",
							&vb_retention_min,
							0, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MIN,
							NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.retention_batch_events",
							"Most events one purge batch of the scheduler deletes.",
							"A batch also stops at 500 runs; a run with more events than this "
							"is purged alone.",
							&vb_retention_batch_events,
							50000, 1, INT_MAX,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("vectorbea.master_key_file",
							   "File holding the master key that encrypts provider API keys.",
							   "The file must belong to the server's OS user and be readable by "
							   "it alone. The key itself is never the value of a setting.",
							   &vb_master_key_file,
							   "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.llm_max_in_flight",
							"Most LLM calls a scheduler has in flight at once.",
							"Also the most connections it opens to providers.",
							&vb_llm_max_in_flight,
							32, 1, 1000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("vectorbea.llm_allowed_hosts",
							   "Where LLM calls may go: host names, *.domain wildcards, IP addresses, CIDR ranges, each with an optional :port or :low-high.",
							   "A base_url's host and port must match an entry (without a port, the scheme's "
							   "default), and the address actually connected to must lie in a range or be public.",
							   &vb_llm_allowed_hosts,
							   "api.openai.com, api.anthropic.com",
							   PGC_SIGHUP, 0,
							   vb_check_allowed_hosts, NULL, NULL);

	DefineCustomStringVariable("vectorbea.test_resolve",
							   "Pins host names to addresses for LLM calls, for tests: name:port:address entries.",
							   "Like curl's --resolve.  The address is still checked against "
							   "vectorbea.llm_allowed_hosts when the call connects.",
							   &vb_test_resolve,
							   "",
							   PGC_SIGHUP, 0,
							   vb_check_test_resolve, NULL, NULL);

	DefineCustomIntVariable("vectorbea.llm_request_timeout",
							"Longest one LLM call may take, connection included.",
							"A node's own timeout shortens it.",
							&vb_llm_request_timeout_ms,
							120 * 1000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.llm_connect_timeout",
							"Longest an LLM call may take to connect.",
							NULL,
							&vb_llm_connect_timeout_ms,
							10 * 1000, 100, 600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("vectorbea.llm_max_response_size",
							"Largest provider response accepted.",
							"A larger response fails the call permanently.",
							&vb_llm_max_response_kb,
							4096, 16, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("vectorbea");
}

/*
 * The databases named in vectorbea.database (as String nodes), each once:
 * two schedulers on one database would each take the other's llm calls for
 * calls in doubt.  warn: say so when a name repeats.
 */
List *
vb_scheduler_databases(bool warn)
{
	char	   *rawlist = pstrdup(vb_databases);
	List	   *names;
	List	   *unique = NIL;
	ListCell   *lc;

	if (!SplitIdentifierString(rawlist, ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid list syntax in vectorbea.database: \"%s\"", vb_databases),
				 errhint("List database names separated by commas, e.g. 'app, analytics'.")));
	foreach(lc, names)
	{
		char	   *name = lfirst(lc);

		if (list_member(unique, makeString(name)))
		{
			if (warn)
				ereport(WARNING,
						(errmsg("vectorbea.database lists \"%s\" more than once; it gets one scheduler",
								name)));
			continue;
		}
		unique = lappend(unique, makeString(name));
	}
	return unique;
}
