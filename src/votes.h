/*-------------------------------------------------------------------------
 *
 * votes.h
 *	  Quorums of approvers on a gate (votes.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_VOTES_H
#define VB_VOTES_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "nodes/pg_list.h"

#include "events.h"

/* Who a decision counts for: an entry of the gate's approvers. */
typedef struct VbVoter
{
	char	   *entry;			/* NULL: the gate has no quorum */
	char	   *role;			/* the deciding role */
	List	   *role_entries;	/* matched by membership: the entries it may
								 * count for, its own name first; NIL for a
								 * person matched by decided_by */
} VbVoter;

extern void vb_find_voter(TupleDesc desc, HeapTuple oldtup, const char *decided_by,
						  int64 id, VbVoter *voter);
extern bool vb_count_vote(VbRun *run, TupleDesc desc, HeapTuple oldtup, HeapTuple newtup,
						  VbVoter *voter, const char *status, TimestampTz at);
extern char *vb_votes_json(int64 id);
extern HeapTuple vb_keep_pending(TupleDesc desc, HeapTuple oldtup, HeapTuple newtup);

#endif							/* VB_VOTES_H */
