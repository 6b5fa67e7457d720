/*-------------------------------------------------------------------------
 *
 * crashpoint.c
 *	  Test crash points: the process that reaches a point named in
 *	  vectorbea.test_crash_point kills itself with SIGKILL.
 *
 * A crash test that kills the server from outside hits whatever the engine
 * happens to be doing; these points let a test hit the moments that matter
 * for durability exactly: after a claim has committed (the worker never
 * sees its answer), after a provider has answered an llm call (nothing of
 * it recorded), while a decision, a spawn list or the start of a
 * compensation is applied (nothing of it committed).  SIGKILL is what a
 * real crash looks like to the postmaster: it cannot be caught, nothing is
 * cleaned up, and the postmaster resets every process and runs crash
 * recovery.  The setting is superuser-only (PGC_SUSET); it is meant for
 * tests, never for production (docs/operations.md, docs/testing.md).
 *
 * The engine marks a point with one call, vb_crash_point (die now) or
 * vb_crash_point_at_commit (die once the transaction has committed, from
 * a transaction callback; the commit record is flushed first, so the point
 * means "committed and durable" whatever synchronous_commit says).  Both
 * cost a test of a bit when no point is named.  A leaf: it calls nothing
 * of the engine's.
 *
 * IDENTIFICATION
 *	  src/crashpoint.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "crashpoint.h"

/* The names, in the order of VbCrashPoint. */
static const char *const point_names[VB_CRASH_POINT_COUNT] = {
	"claim_committed",
	"llm_answered",
	"approval_applying",
	"spawning",
	"compensation_starting",
};

char	   *vb_test_crash_point_text = NULL;

static uint32 named_points = 0;		/* bit per VbCrashPoint */
static uint32 points_at_commit = 0; /* armed by this transaction */
static int	armed_level = 0;		/* the nesting level that armed them */
static bool callbacks_registered = false;

#define POINT_BIT(p) (((uint32) 1) << (p))

/*
 * Checks a list of point names ("" names none) and hands the bits on to
 * the assign hook.
 */
bool
vb_check_crash_point(char **newval, void **extra, GucSource source)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;
	uint32		bits = 0;
	uint32	   *parsed;

	if (*newval == NULL)
		return false;
	raw = pstrdup(*newval);
	if (!SplitIdentifierString(raw, ',', &names))
	{
		GUC_check_errdetail("\"%s\" is not a list of names separated by commas.", *newval);
		return false;
	}
	foreach(lc, names)
	{
		const char *name = lfirst(lc);
		int			p;

		for (p = 0; p < VB_CRASH_POINT_COUNT; p++)
			if (strcmp(name, point_names[p]) == 0)
				break;
		if (p == VB_CRASH_POINT_COUNT)
		{
			StringInfoData known;

			initStringInfo(&known);
			for (p = 0; p < VB_CRASH_POINT_COUNT; p++)
				appendStringInfo(&known, "%s%s", p > 0 ? ", " : "", point_names[p]);
			GUC_check_errdetail("\"%s\" is not a crash point.", name);
			GUC_check_errhint("Known points: %s.", known.data);
			return false;
		}
		bits |= POINT_BIT(p);
	}
	parsed = malloc(sizeof(uint32));
	if (parsed == NULL)
		return false;
	*parsed = bits;
	*extra = parsed;
	return true;
}

void
vb_assign_crash_point(const char *newval, void *extra)
{
	named_points = *(uint32 *) extra;
}

/* SIGKILL to ourselves, said in the log first so that a test can tell. */
static void
die_at(VbCrashPoint point)
{
	ereport(LOG,
			(errmsg("vectorbea: crash point \"%s\" reached; process %d kills itself",
					point_names[point], MyProcPid),
			 errdetail("vectorbea.test_crash_point is \"%s\".", vb_test_crash_point_text)));
	kill(MyProcPid, SIGKILL);
	/* A signal a process sends itself arrives before kill() returns. */
	for (;;)
		pause();
}

void
vb_crash_point(VbCrashPoint point)
{
	if (named_points & POINT_BIT(point))
		die_at(point);
}

static void
at_commit(XactEvent event, void *arg)
{
	uint32		armed = points_at_commit;

	/* PRE_COMMIT comes before the commit record: keep what is armed. */
	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PRE_PREPARE ||
		event == XACT_EVENT_PARALLEL_PRE_COMMIT)
		return;
	points_at_commit = 0;
	if (event != XACT_EVENT_COMMIT || armed == 0)
		return;
	/* Durable, like a synchronous commit the client was never told of. */
	XLogFlush(XactLastCommitEnd);
	for (int p = 0; p < VB_CRASH_POINT_COUNT; p++)
		if (armed & POINT_BIT(p))
			die_at((VbCrashPoint) p);
}

/* What a subtransaction armed goes with it when it rolls back. */
static void
at_subxact(SubXactEvent event, SubTransactionId mySubid,
		   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (points_at_commit == 0 || level > armed_level)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
		points_at_commit = 0;
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		armed_level = level - 1;
}

void
vb_crash_point_at_commit(VbCrashPoint point)
{
	if (!(named_points & POINT_BIT(point)))
		return;
	if (!callbacks_registered)
	{
		RegisterXactCallback(at_commit, NULL);
		RegisterSubXactCallback(at_subxact, NULL);
		callbacks_registered = true;
	}
	if (points_at_commit == 0 || GetCurrentTransactionNestLevel() < armed_level)
		armed_level = GetCurrentTransactionNestLevel();
	points_at_commit |= POINT_BIT(point);
}
