/*-------------------------------------------------------------------------
 *
 * claim_marks.h
 *	  Where a claim of one activity starts looking for ready nodes: a mark
 *	  per database and activity in shared memory (claim_marks.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_CLAIM_MARKS_H
#define VB_CLAIM_MARKS_H

#include "utils/uuid.h"

/*
 * A position in nodes_ready_run_idx's order within one activity: priority
 * descending, then run id ascending.  VB_CLAIM_KEY_FIRST is before every
 * node; a claim that starts there scans the whole index.
 */
typedef struct VbClaimKey
{
	int32		priority;
	pg_uuid_t	run_id;
} VbClaimKey;

extern const VbClaimKey VB_CLAIM_KEY_FIRST;

extern void vb_claim_marks_install_hooks(void);
extern void vb_claim_marks_engine_insert(void);
extern void vb_claim_marks_note(const char *activity, const VbClaimKey *key);

/*
 * The key a claim of activity starts at (VB_CLAIM_KEY_FIRST when no mark is
 * kept), lowered to the nodes this transaction made ready itself.  Inside
 * SPI: now and then it moves the mark up to the first ready node, with one
 * index scan.
 */
extern void vb_claim_mark_start(const char *activity, VbClaimKey *start);

#endif							/* VB_CLAIM_MARKS_H */
