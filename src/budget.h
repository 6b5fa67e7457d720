/*-------------------------------------------------------------------------
 *
 * budget.h
 *	  Run and workspace budgets: reservations before llm calls, and what
 *	  happens at the limit (budget.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_BUDGET_H
#define VB_BUDGET_H

#include "lib/stringinfo.h"

#include "events.h"

extern char *vb_budget_reserve_call(VbRun *run, int64 task_id, double est_usd,
									int64 est_tokens, bool *pause, bool *wait);
extern char *vb_budget_workspace_overspent(VbRun *run, bool *pause);
extern bool vb_budget_pauses(VbRun *run);
extern bool vb_budget_in_usd(VbRun *run);
extern void vb_budget_grant_child(VbRun *run, int64 task_id, const char *usd,
								  const char *tokens, StringInfo options);

#endif							/* VB_BUDGET_H */
