/*-------------------------------------------------------------------------
 *
 * vectorbea.h
 *	  Constants every layer of vectorbea shares: the version, its own
 *	  SQLSTATE, reserved names and limits.  Declarations live in the header
 *	  of the file that defines them (docs/architecture.md).
 *
 * Every non-static symbol of the module carries the vb_ prefix, because all
 * loaded extensions share one symbol namespace.  SQL-callable functions are
 * named vectorbea_<sqlname>.
 *
 * IDENTIFICATION
 *	  src/vectorbea.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef VECTORBEA_H
#define VECTORBEA_H

#include "postgres.h"

/* SQLSTATE for "the lease presented is no longer the task's lease". */
#define ERRCODE_VB_LEASE_LOST	MAKE_SQLSTATE('V','B','0','0','1')

/*
 * Activity names starting with this prefix belong to the engine: llm nodes
 * carry VB_LLM_ACTIVITY, which only the scheduler may claim.
 */
#define VB_RESERVED_PREFIX		"vectorbea:"
#define VB_LLM_ACTIVITY			"vectorbea:llm"

/* Whether an activity name is the engine's; case does not make it another. */
static inline bool
vb_reserved_activity(const char *name)
{
	return pg_strncasecmp(name, VB_RESERVED_PREFIX, strlen(VB_RESERVED_PREFIX)) == 0;
}

/*
 * The most one completion or one provider answer may report: a billion
 * tokens and a million USD are far above any real call, and keep the sums
 * on a run far from numeric and bigint trouble.  Larger values are refused
 * as invalid, not booked.
 */
#define VB_MAX_USAGE_TOKENS		INT64CONST(1000000000)
#define VB_MAX_USAGE_USD		"1000000"

/* Free texts that people write into the history. */
#define VB_MAX_REASON_BYTES		4096	/* a decision's or a cancel's reason */
#define VB_MAX_DECIDED_BY_BYTES	256		/* who decided, as the application names them */

/* Limits on identifiers used in definitions. */
#define VB_MAX_NAME_LEN			128
#define VB_MAX_ATTEMPTS_LIMIT	1000
/* tasks one claim_tasks or complete_tasks call may take */
#define VB_MAX_TASKS_PER_CALL	1000

#define VB_VERSION				"0.2.0"

#endif							/* VECTORBEA_H */
