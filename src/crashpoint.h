/*-------------------------------------------------------------------------
 *
 * crashpoint.h
 *	  Test crash points: the process dies with SIGKILL at a named point
 *	  when vectorbea.test_crash_point names it (crashpoint.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_CRASHPOINT_H
#define VB_CRASHPOINT_H

#include "utils/guc.h"

/* The points; their names are in crashpoint.c. */
typedef enum VbCrashPoint
{
	VB_CRASH_CLAIM_COMMITTED,	/* a claim's transaction has committed */
	VB_CRASH_LLM_ANSWERED,		/* a provider answered; nothing recorded */
	VB_CRASH_APPROVAL_APPLYING, /* a decision applied, not committed */
	VB_CRASH_SPAWNING,			/* a spawn list validated, not committed */
	VB_CRASH_COMPENSATION_STARTING, /* a compensation started, not committed */
	VB_CRASH_POINT_COUNT
} VbCrashPoint;

/* Dies here, now, when the point is named. */
extern void vb_crash_point(VbCrashPoint point);

/* Dies once the current transaction has committed, when the point is named. */
extern void vb_crash_point_at_commit(VbCrashPoint point);

/* vectorbea.test_crash_point, defined by settings.c. */
extern char *vb_test_crash_point_text;
extern bool vb_check_crash_point(char **newval, void **extra, GucSource source);
extern void vb_assign_crash_point(const char *newval, void *extra);

#endif							/* VB_CRASHPOINT_H */
