/*-------------------------------------------------------------------------
 *
 * due_items.h
 *	  Acting on due items one by one, each in a subtransaction, with
 *	  errors recorded in the item's run (due_items.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_DUE_ITEMS_H
#define VB_DUE_ITEMS_H

#include "shmem.h"
#include "utils/uuid.h"

typedef enum VbDueItemKind
{
	VB_ITEM_ATTEMPT,			/* nodes.id: an attempt past its lease */
	VB_ITEM_RUN,				/* a run past its deadline */
	VB_ITEM_GATE,				/* approvals.id: a gate past its expiry */
	VB_ITEM_WAIT				/* nodes.id: a sleep, signal or run node to start or end */
} VbDueItemKind;

extern uint64 vb_read_due_items(int id_column, int run_column, int64 **ids,
								pg_uuid_t **run_ids);
extern bool vb_due_item(bool isolate, void (*fn) (void *, int), void *arg, int i,
						VbSweepCounters *counters, pg_uuid_t *run_id,
						VbDueItemKind kind, int64 item_id, TimestampTz at);
extern bool vb_due_item_unless_busy(void (*fn) (void *, int), void *arg, int i,
									pg_uuid_t *run_id, VbDueItemKind kind, int64 item_id,
									TimestampTz at);

#endif							/* VB_DUE_ITEMS_H */
