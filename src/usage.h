/*-------------------------------------------------------------------------
 *
 * usage.h
 *	  The usage a worker reports with a task's end (usage.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_USAGE_H
#define VB_USAGE_H

#include "utils/jsonb.h"

#include "events.h"

typedef struct VbUsage
{
	bool		given;
	int64		tokens;
	char	   *usd;			/* numeric text */
	/* set by vb_usage_add: */
	bool		over_run;		/* the run's own budget is crossed */
	char	   *detail;			/* BUDGET_EXCEEDED's data when it is */
} VbUsage;

/* A report of no amounts, as vb_usage_json writes one. */
#define VB_USAGE_NONE_JSON "{\"tokens\":0,\"usd\":0}"

extern void vb_usage_parse(Jsonb *usage, VbUsage *u);
extern char *vb_usage_json(const VbUsage *u);
extern void vb_usage_add(VbRun *run, VbUsage *u);
extern void vb_usage_check(VbRun *run, const VbUsage *u, const char *node, int attempt,
						   TimestampTz at);
extern void vb_usage_book(VbRun *run, VbUsage *u, const char *node, int attempt,
						  TimestampTz at);

#endif							/* VB_USAGE_H */
