/*-------------------------------------------------------------------------
 *
 * upstream.h
 *	  Objects of outputs by node name: what a node reads of its
 *	  dependencies, what a child run gives its parent, and what a
 *	  compensation reads of its original (upstream.c).
 *	  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_UPSTREAM_H
#define VB_UPSTREAM_H

#include "utils/jsonb.h"
#include "utils/uuid.h"

/*
 * The upstream object of node row n (an alias of vectorbea.nodes), as a
 * statement's expression: made in the statement when n has at most one
 * dependency, NULL when it has several, whose outputs together may not
 * fit in a jsonb value; the caller then asks vb_upstream_of_node.  A node
 * without dependencies reads nothing, and the one dependency is found by
 * the unique key (run_id, node): most claimed nodes have none, and an
 * aggregate over an array match cost every claim a subplan of three nodes
 * to set up and a bitmap scan per claimed node.
 */
#define VB_UPSTREAM_SQL(n) \
	"CASE pg_catalog.cardinality(" n ".depends_on) WHEN 0 THEN '{}'::jsonb WHEN 1 THEN" \
	"  coalesce((SELECT pg_catalog.jsonb_build_object(d.node, d.output)" \
	"              FROM vectorbea.nodes d" \
	"             WHERE d.run_id = " n ".run_id AND d.node = (" n ".depends_on)[1])," \
	"           '{}'::jsonb) END"

/* The most bytes of content a jsonb value may hold (JENTRY_OFFLENMASK). */
#define VB_UPSTREAM_MAX_BYTES ((int64) JENTRY_OFFLENMASK)

extern Jsonb *vb_upstream_of_node(int64 node_id, int64 *bytes);
extern Jsonb *vb_child_output(pg_uuid_t *run_id, int64 *bytes);
extern Jsonb *vb_compensation_input(int64 node_id, int64 max_bytes, int64 *bytes);
extern char *vb_upstream_too_large_json(const char *node, int64 bytes);
extern char *vb_compensation_too_large_json(const char *node, int64 bytes);

#endif							/* VB_UPSTREAM_H */
