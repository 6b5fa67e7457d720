/*-------------------------------------------------------------------------
 *
 * index_costs.c
 *	  What the planner is told about the size of the engine's partial
 *	  indexes: no more pages than their live entries can fill.
 *
 * The engine's queues are partial indexes (nodes_ready_run_idx: the ready
 * nodes; nodes_running_idx: the running ones; the waits' and retries'
 * indexes).  An entry lives from the moment its node enters the state to
 * the moment it leaves it, so such an index grows to the largest backlog
 * it has held and keeps those pages: VACUUM deletes the emptied ones and
 * reuses them, but they still count in its size.  After a drain, VACUUM
 * and ANALYZE record a few live entries in hundreds of pages, and the
 * planner, which prices an index scan at its share of the index's pages
 * (pages / entries per entry fetched), charges one lookup of a ready node
 * as a read of a large part of the index.  A claim's lookup of a run's
 * ready nodes then went through the unique index on (run_id, node)
 * instead, reading every node of the run and sorting them to take one:
 * with a run of 10,000 nodes, 104 tasks a second instead of 4,962
 * (docs/decisions.md, "A drained queue's index is priced by its live
 * entries").  With a larger index, the claims' walks from run to run
 * could become sequential scans of nodes.
 *
 * A scan never visits a deleted page, and VACUUM deletes the pages it
 * empties, so the pages a scan visits after it hold live entries: an
 * index with fewer live entries than pages has, for the planner, one page
 * per entry (plus the root).  That is still far more than the entries
 * need (a page holds a hundred and more), so the estimate stays on the
 * side of caution; it changes nothing for an index that is fuller than
 * that.  Only partial indexes of tables in the extension's schema are
 * touched, and only their page count; vectorbea.live_index_pages = off
 * (per session) plans them as PostgreSQL alone would, to compare.
 *
 * IDENTIFICATION
 *	  src/index_costs.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/namespace.h"
#include "nodes/pathnodes.h"
#include "optimizer/plancat.h"
#include "utils/lsyscache.h"

#include "index_costs.h"
#include "settings.h"

static get_relation_info_hook_type prev_get_relation_info = NULL;

/* A partial index with fewer live entries than pages (less the root). */
static inline bool
is_sparse(IndexOptInfo *index)
{
	return index->indpred != NIL && index->tuples >= 0 && index->pages > index->tuples + 1;
}

/* Whether relation belongs to the extension's schema (not relocatable). */
static bool
is_engine_table(Oid relation)
{
	Oid			schema = get_rel_namespace(relation);

	return OidIsValid(schema) && schema == get_namespace_oid("vectorbea", true);
}

static void
price_partial_indexes(PlannerInfo *root, Oid relation, bool inhparent, RelOptInfo *rel)
{
	ListCell   *lc;
	bool		sparse = false;

	if (prev_get_relation_info)
		prev_get_relation_info(root, relation, inhparent, rel);
	if (!vb_live_index_pages)
		return;

	/* The test that is cheap comes first: most relations have no such index. */
	foreach(lc, rel->indexlist)
		sparse |= is_sparse(lfirst_node(IndexOptInfo, lc));
	if (!sparse || !is_engine_table(relation))
		return;

	foreach(lc, rel->indexlist)
	{
		IndexOptInfo *index = lfirst_node(IndexOptInfo, lc);

		if (is_sparse(index))
			index->pages = (BlockNumber) ceil(index->tuples) + 1;
	}
}

/* Called once, from _PG_init. */
void
vb_index_costs_init(void)
{
	prev_get_relation_info = get_relation_info_hook;
	get_relation_info_hook = price_partial_indexes;
}
