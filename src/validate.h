/*-------------------------------------------------------------------------
 *
 * validate.h
 *	  Definitions and spawn lists, validated before anything is written
 *	  (validate.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_VALIDATE_H
#define VB_VALIDATE_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/*
 * The defaults of a node.  A normalised spec in RUN_STARTED or NODES_SPAWNED
 * leaves out a field that has its default ("kind" task, "depends_on" empty,
 * "input" {}, "retry" the whole default policy), and nodes.retry is NULL
 * for the default policy: so these values are part of the history's format
 * and are never changed.  Another default would have to be written out.
 */
#define VB_DEFAULT_KIND			"task"
#define VB_DEFAULT_MAX_ATTEMPTS	3
#define VB_DEFAULT_INITIAL_MS	1000
#define VB_DEFAULT_MAX_MS		(60 * 1000)
#define VB_DEFAULT_MULTIPLIER	2.0

/*
 * The compensation of node P is the node "P:compensate": no node of a
 * definition or a spawn list may end in it (validate.c).
 */
#define VB_COMPENSATION_SUFFIX	":compensate"

/* A node after validation, with every default applied. */
typedef struct VbNodeSpec
{
	char	   *id;
	char	   *kind;
	char	   *activity;
	List	   *depends_on;		/* of char * */
	char	   *input_json;		/* normalised JSON text of "input" */
	int			max_attempts;
	bool		backoff_exponential;
	int64		initial_ms;
	int64		max_ms;
	double		multiplier;
	bool		jitter;
	int64		timeout_ms;		/* 0: no timeout */
	char	   *approval_json;	/* normalised "approval" of an approval node */
	char	   *llm_json;		/* normalised "llm" of an llm node */
	char	   *wait_json;		/* normalised "sleep", "signal" or "run" */
	char	   *not_before;		/* as given: a timestamp or a template */
	char	   *on_exhausted;	/* "escalate", or NULL: fail */
	char	   *in_doubt;		/* "ask", "compensate", or NULL: retry */
	char	   *escalation_json;	/* normalised gate for escalate and ask */
	char	   *compensate_json;	/* normalised spec of its compensation */
	char	   *estimate_json;	/* {"usd", "tokens"}: held while it runs */
	char	   *compensation_of;	/* unused at validation: the engine sets it */
} VbNodeSpec;

/*
 * A run's existing nodes, as spawn validation needs them: how many there
 * are (for vectorbea.max_nodes_per_run), and those of them whose ids the
 * spawn list names, as a node's id or a dependency (a new id must not be
 * one of them; a dependency must be one of them or a new node).  Not every
 * id of the run: reading them all cost each spawn in proportion to the
 * run's size.
 */
typedef struct VbExistingNodes
{
	int			count;
	int			named_count;
	char	  **named_ids;
} VbExistingNodes;

extern List *vb_validate_definition(Jsonb *definition);
extern List *vb_validate_spawn(Jsonb *spawn, Jsonb *definition,
							   const char *spawner, VbExistingNodes *existing);
extern char *vb_node_specs_json(List *specs);
extern char *vb_node_specs_full_json(List *specs);
extern char *vb_node_spec_defaults_json(void);

extern void vb_check_child_workflows(const char *name, const char *specs_json, const char *what,
									 bool defining);

#endif							/* VB_VALIDATE_H */
