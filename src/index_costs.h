/*-------------------------------------------------------------------------
 *
 * index_costs.h
 *	  The planner's view of the engine's partial indexes (index_costs.c).
 *	  Called by _PG_init only.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_INDEX_COSTS_H
#define VB_INDEX_COSTS_H

extern void vb_index_costs_init(void);

#endif							/* VB_INDEX_COSTS_H */
