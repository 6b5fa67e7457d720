/*-------------------------------------------------------------------------
 *
 * fork.c
 *	  fork_run(): rerun a finished run from one of its nodes on, reusing
 *	  what it recorded before that node.
 *
 * The fork is a new run of the same workflow version (or of a version
 * given), input and options, built from the source run's history (its
 * RUN_STARTED and NODES_SPAWNED events hold every node as it was added,
 * defaults applied):
 *
 *	- the rerun set is from_node and every node downstream of it (by
 *	  depends_on, spawned nodes included), and every node of the source
 *	  that did not succeed; with a version given, also every node of that
 *	  version's definition that is new or differs from the source's, and
 *	  what is downstream of it;
 *	- nodes spawned by a rerun node are left out: the spawner spawns again
 *	  when it reruns, whatever it decides then; so are nodes that depend on
 *	  a node left out (their dependency may never come back); nodes
 *	  spawned by a reused node are kept otherwise (unless the version's
 *	  definition took their spawner, id or dependencies away), so the
 *	  graph has its recorded shape up to the fork;
 *	- every other node is reused: it succeeds at once with its recorded
 *	  output, with no worker and no LLM call (STEP_COMPLETED with
 *	  "reused": the source run and task);
 *	- changes override, per rerun node, its input or fields of its llm
 *	  object (prompt, system, model, max_tokens, temperature, ...), checked
 *	  like a definition's.
 *
 * RUN_STARTED says which run and node the fork came from.  The source must
 * be finished: a running run's history is still being written.
 *
 * IDENTIFICATION
 *	  src/fork.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "controls.h"
#include "jsonb_util.h"
#include "llm_spec.h"
#include "notify.h"
#include "settings.h"
#include "spi_util.h"
#include "state.h"
#include "template.h"
#include "validate.h"
#include "workflow.h"
#include "tenants.h"
#include "workspace_lock.h"

static const char *const change_fields[] = {"input", "llm", NULL};

/* One node of the fork, as the source's history added it. */
typedef struct ForkNode
{
	char	   *id;
	char	   *spec;			/* normalised spec, as JSON text */
	char	   *spawner;		/* NULL for the definition's nodes */
	int64		batch;			/* 0: RUN_STARTED; else the NODES_SPAWNED seq */
	bool		rerun;
	int64		source_task;
	char	   *output;			/* the recorded output of a reused node */
} ForkNode;

/*
 * The nodes of the fork: the source's nodes less those a rerun node
 * spawned, in the order they were added, each marked rerun or reused.
 */
static ForkNode *
plan_fork(pg_uuid_t *source, const char *from_node, const char *definition_specs,
		  int *count, bool *from_found)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4] = {UUIDPGetDatum(source), CStringGetTextDatum(from_node), (Datum) 0,
	JsonbPGetDatum(vb_jsonb_from_cstring(vb_node_spec_defaults_json()))};
	char		nulls[4] = {' ', ' ', 'n', ' '};
	ForkNode   *nodes;

	if (definition_specs)
	{
		args[2] = JsonbPGetDatum(vb_jsonb_from_cstring(definition_specs));
		nulls[2] = ' ';
	}
	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, TEXTOID, JSONBOID, JSONBOID};

		plan = vb_prepare("WITH RECURSIVE spec AS ("
						  "  SELECT x.value AS s, x.value->>'id' AS id, NULL::text AS spawner,"
						  "         0::bigint AS batch, x.ord"
						  "    FROM pg_catalog.jsonb_array_elements(coalesce($3,"
						  "           (SELECT e.data->'nodes' FROM vectorbea.events e"
						  "             WHERE e.run_id = $1 AND e.type = 'RUN_STARTED')))"
						  "         WITH ORDINALITY x(value, ord)"
						  "  UNION ALL"
						  "  SELECT x.value, x.value->>'id', e.node, e.seq, x.ord"
						  "    FROM vectorbea.events e,"
						  "         pg_catalog.jsonb_array_elements(e.data->'nodes') WITH ORDINALITY x(value, ord)"
						  "   WHERE e.run_id = $1 AND e.type = 'NODES_SPAWNED'"
						  "), old_definition AS ("
						  "  SELECT x.value AS s, x.value->>'id' AS id"
						  "    FROM vectorbea.events e, pg_catalog.jsonb_array_elements(e.data->'nodes') x(value)"
						  "   WHERE e.run_id = $1 AND e.type = 'RUN_STARTED'"
						  "), down(id) AS ("
						  "  SELECT s.id FROM spec s WHERE s.id = $2"
						  /*
						   * a node whose compensation succeeded was undone: its
						   * output no longer stands, so it runs again
						   */
						  "     OR s.id IN (SELECT c.compensation_of FROM vectorbea.nodes c"
						  "                  WHERE c.run_id = $1 AND c.compensation_of IS NOT NULL"
						  "                    AND c.status = 'succeeded')"
						  /*
						   * with another version: its new and changed nodes run
						   * too; $4 || spec is the spec in full, so a spec that
						   * left out its defaults equals one written before that
						   */
						  "     OR ($3 IS NOT NULL AND s.spawner IS NULL"
						  "         AND $4 || s.s IS DISTINCT FROM"
						  "             (SELECT $4 || o.s FROM old_definition o WHERE o.id = s.id))"
						  "  UNION"
						  "  SELECT s.id FROM spec s, down d WHERE (s.s->'depends_on') ? d.id"
						  "), dropped(id) AS ("
						  "  SELECT s.id FROM spec s WHERE s.spawner IN (SELECT id FROM down)"
						  /* with another version: spawns whose spawner, id or dependencies no longer fit */
						  "     OR (s.spawner IS NOT NULL"
						  "         AND (s.spawner NOT IN (SELECT id FROM spec)"
						  "              OR s.id IN (SELECT id FROM spec WHERE spawner IS NULL)"
						  "              OR EXISTS (SELECT FROM pg_catalog.jsonb_array_elements_text(s.s->'depends_on') d(id)"
						  "                          WHERE d.id NOT IN (SELECT id FROM spec))))"
						  "  UNION"
						  "  SELECT s.id FROM spec s, dropped d"
						  "   WHERE s.spawner IS NOT NULL"
						  "     AND (s.spawner = d.id OR (s.s->'depends_on') ? d.id)"
						  ")"
						  " SELECT s.id, s.s::text, s.spawner, s.batch,"
						  "        s.id IN (SELECT id FROM down) OR n.status IS DISTINCT FROM 'succeeded',"
						  "        n.id, n.output::text"
						  "   FROM spec s LEFT JOIN vectorbea.nodes n ON n.run_id = $1 AND n.node = s.id"
						  /* only spawned rows are dropped: an id may be both, with another version */
						  "  WHERE s.spawner IS NULL OR s.id NOT IN (SELECT id FROM dropped)"
						  "  ORDER BY s.batch, s.ord",
						  lengthof(types), types);
	}
	/* Not read-only: the source as its lock found it, not as fork_run began. */
	if (SPI_execute_plan(plan, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the history of the run to fork");
	*count = (int) SPI_processed;
	*from_found = false;
	nodes = palloc0(sizeof(ForkNode) * Max(*count, 1));
	for (int i = 0; i < *count; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		nodes[i].id = SPI_getvalue(tup, desc, 1);
		nodes[i].spec = SPI_getvalue(tup, desc, 2);
		nodes[i].spawner = SPI_getvalue(tup, desc, 3);
		nodes[i].batch = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		nodes[i].rerun = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		nodes[i].source_task = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
		nodes[i].output = SPI_getvalue(tup, desc, 7);
		/* among the fork's nodes: a version may take from_node away */
		if (strcmp(nodes[i].id, from_node) == 0)
			*from_found = true;
	}
	return nodes;
}

/* The depends_on of a node spec, as a list of names. */
static List *
spec_depends_on(Jsonb *spec)
{
	List	   *deps = NIL;
	JsonbValue	depv;

	if (vb_jsonb_get(&spec->root, "depends_on", &depv) && depv.type == jbvBinary)
		for (uint32 k = 0; k < JsonContainerSize(depv.val.binary.data); k++)
		{
			JsonbValue *d = getIthJsonbValueFromContainer(depv.val.binary.data, k);

			deps = lappend(deps, pnstrdup(d->val.string.val, d->val.string.len));
		}
	return deps;
}

/*
 * Refuses a from_node that is not among the fork's nodes, saying why: the
 * run has no such node; it is one of the run's compensations, which a fork
 * never has; it was spawned, and the fork leaves it out (its spawner runs
 * again, or the version forked to does not keep it); or the version forked
 * to (version, 0 for none) has no such node.
 */
static void
refuse_from_node(pg_uuid_t *source_id, VbRun *source, const char *from_node, int version)
{
	bool		in_run;
	bool		compensation = false;
	char	   *spawned_by = NULL;
	bool		isnull;

	if (SPI_execute_with_args("SELECT compensation_of IS NOT NULL, spawned_by FROM vectorbea.nodes"
							  " WHERE run_id = $1 AND node = $2", 2, (Oid[]) {UUIDOID, TEXTOID},
							  (Datum[]) {UUIDPGetDatum(source_id), CStringGetTextDatum(from_node)},
							  NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the nodes of run %s", vb_uuid_text(source_id));
	in_run = SPI_processed == 1;
	if (in_run)
	{
		compensation = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		spawned_by = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	}
	if (in_run && compensation)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("node \"%s\" of run %s is a compensation; a fork has none",
						vb_short_text(from_node), vb_uuid_text(source_id)),
				 errhint("Fork from the node it undid: a fork runs its own nodes, and compensates them if it fails.")));
	/* a definition never has a spawned node: "the version has none" would mislead */
	if (in_run && spawned_by != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("node \"%s\" of run %s is left out of its fork", vb_short_text(from_node),
						vb_uuid_text(source_id)),
				 version > 0 ?
				 errdetail("It was spawned by node \"%s\", and a fork to version %d does not keep it: its spawner runs again or is not in that version, that version defines a node of its id, or it depends on a node the fork leaves out.",
						   vb_short_text(spawned_by), version) :
				 errdetail("It was spawned by node \"%s\", which runs again in the fork (one downstream, or one that was compensated), so the fork spawns anew.",
						   vb_short_text(spawned_by)),
				 errhint("Fork from the node that spawned it%s.",
						 version > 0 ? ", or to the run's own version" : "")));
	if (in_run && version == 0)
		elog(ERROR, "vectorbea: node \"%s\" of run %s is missing from the history its fork reads",
			 vb_short_text(from_node), vb_uuid_text(source_id));
	if (in_run)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("version %d of workflow \"%s\" has no node \"%s\"",
						version, source->workflow, vb_short_text(from_node)),
				 errdetail("Run %s has it, but a fork to that version does not.", vb_uuid_text(source_id)),
				 errhint("Fork from a node the version has, or to the run's own version.")));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("run %s has no node \"%s\"", vb_uuid_text(source_id), vb_short_text(from_node)),
			 errhint("Fork from one of the run's nodes: SELECT node FROM vectorbea.nodes WHERE run_id = '%s'.",
					 vb_uuid_text(source_id))));
}

static ForkNode *
find_node(ForkNode *nodes, int count, const char *id)
{
	for (int i = 0; i < count; i++)
		if (strcmp(nodes[i].id, id) == 0)
			return &nodes[i];
	return NULL;
}

/* A normalised llm object as raw input again: its null fields left out. */
static Jsonb *
strip_nulls(Jsonb *obj)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_strip_nulls, JsonbPGetDatum(obj)));
}

/*
 * Applies the change for node n (an object of input and/or llm) to its
 * spec, checking it as a definition's fields are checked.
 */
static void
apply_change(ForkNode *n, JsonbValue *change, const char *from_node)
{
	VbChecker	chk = {"fork change"};
	char	   *label = psprintf("node \"%s\"", vb_short_text(n->id));
	JsonbValue	v;
	Jsonb	   *spec = vb_jsonb_from_cstring(n->spec);
	JsonbContainer *obj;
	Datum		merged = JsonbPGetDatum(spec);

	if (change->type != jbvBinary || !JsonContainerIsObject(change->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid fork change: the change of node \"%s\" must be an object with \"input\", \"llm\" or both",
						vb_short_text(n->id)),
				 errdetail("Found %s.", vb_jsonb_type_name(change))));
	obj = change->val.binary.data;
	vb_check_fields(&chk, obj, change_fields, label, "");
	if (vb_jsonb_get(obj, "input", &v))
	{
		Jsonb	   *input;
		JsonbValue	kind;
		char	   *problem;

		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			vb_type_error(&chk, label, "input", &v, "an object");
		input = JsonbValueToJsonb(&v);
		vb_check_payload_size(input, psprintf("the input of node \"%s\"", vb_short_text(n->id)));
		/* a run node's input is its child's input, a template: checked as a definition's */
		if (vb_jsonb_get(&spec->root, "kind", &kind) && kind.type == jbvString &&
			kind.val.string.len == 3 && memcmp(kind.val.string.val, "run", 3) == 0 &&
			(problem = vb_template_check_json(&input->root, spec_depends_on(spec))) != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid fork change: %s, field \"input\" has a bad placeholder", label),
					 errdetail("%s.", problem),
					 errhint("A run node's input is the child run's input; its strings may use {{run.input.<path>}} and {{upstream.<node>.output.<path>}}.")));
		merged = DirectFunctionCall3(jsonb_set, merged,
									 PointerGetDatum(construct_array(&(Datum) {CStringGetTextDatum("input")},
																	 1, TEXTOID, -1, false, TYPALIGN_INT)),
									 JsonbPGetDatum(input));
	}
	if (vb_jsonb_get(obj, "llm", &v))
	{
		JsonbValue	old_llm;
		JsonbValue	field;
		JsonbValue	old_field;
		Jsonb	   *old_fields;
		JsonbValue	raw;
		Jsonb	   *combined;
		char	   *normalised;

		if (!vb_jsonb_get(&spec->root, "llm", &old_llm) || old_llm.type == jbvNull)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid fork change: node \"%s\" is not an llm node, so it has no \"llm\" to change",
							vb_short_text(n->id)),
					 errhint("Change its \"input\" instead.")));
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			vb_type_error(&chk, label, "llm", &v, "an object of llm fields");
		old_fields = strip_nulls(JsonbValueToJsonb(&old_llm));
		/*
		 * on_exhausted is the node's failure policy too (its retry policy's
		 * and its escalation gate, set from it when the definition was
		 * read): a fork changes what the node asks, not how it fails.
		 */
		if (vb_jsonb_get(v.val.binary.data, "on_exhausted", &field) &&
			!(field.type == jbvString && vb_jsonb_get(&old_fields->root, "on_exhausted", &old_field) &&
			  old_field.type == jbvString && old_field.val.string.len == field.val.string.len &&
			  memcmp(old_field.val.string.val, field.val.string.val, field.val.string.len) == 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid fork change: %s, field \"llm.on_exhausted\" cannot be changed by a fork", label),
					 errdetail("It is the node's failure policy, with its escalation gate, as its definition sets it."),
					 errhint("Fork to a version of the workflow whose node has the policy you want.")));
		/* a schema added by the change gets the default corrections, as in a definition */
		if (vb_jsonb_get(v.val.binary.data, "output_schema", &field) && field.type != jbvNull &&
			!vb_jsonb_get(&old_fields->root, "output_schema", &old_field) &&
			!vb_jsonb_get(v.val.binary.data, "max_corrections", &field))
			old_fields = DatumGetJsonbP(DirectFunctionCall2(jsonb_delete, JsonbPGetDatum(old_fields),
															CStringGetTextDatum("max_corrections")));
		combined = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat,
													  JsonbPGetDatum(old_fields),
													  JsonbPGetDatum(JsonbValueToJsonb(&v))));
		raw.type = jbvBinary;
		raw.val.binary.data = &combined->root;
		raw.val.binary.len = VARSIZE(combined);
		normalised = vb_validate_llm("fork change", label, &raw, spec_depends_on(spec));
		merged = DirectFunctionCall3(jsonb_set, merged,
									 PointerGetDatum(construct_array(&(Datum) {CStringGetTextDatum("llm")},
																	 1, TEXTOID, -1, false, TYPALIGN_INT)),
									 JsonbPGetDatum(vb_jsonb_from_cstring(normalised)));
	}
	n->spec = JsonbToCString(NULL, &DatumGetJsonbP(merged)->root, VARSIZE(DatumGetJsonbP(merged)));
}

/* Refuses changes for nodes the fork does not run again. */
static void
apply_changes(ForkNode *nodes, int count, Jsonb *changes, const char *from_node)
{
	ListCell   *lc;

	foreach(lc, vb_jsonb_object_keys(&changes->root))
	{
		char	   *id = lfirst(lc);
		ForkNode   *n = find_node(nodes, count, id);
		JsonbValue	change;

		if (n == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid fork change: the fork has no node \"%s\"", vb_short_text(id)),
					 errdetail("Either the run has no such node, or a node the fork runs again spawned it, and whether it exists again is that node's decision."),
					 errhint("Change the nodes from \"%s\" on, as the run's history lists them.", from_node)));
		if (!n->rerun)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid fork change: node \"%s\" is reused, not run again", vb_short_text(id)),
					 errdetail("It succeeded in the source run and is not downstream of \"%s\", so the fork takes its recorded output.",
							   vb_short_text(from_node)),
					 errhint("Fork from \"%s\" (or a node it depends on) to change it.", vb_short_text(id))));
		vb_jsonb_get(&changes->root, id, &change);
		apply_change(n, &change, from_node);
	}
}

/* The specs of one batch (the definition's, or one spawn), as a JSON array. */
static char *
batch_specs(ForkNode *nodes, int count, int first, int *next)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = first; i < count && nodes[i].batch == nodes[first].batch; i++)
		appendStringInfo(&buf, "%s%s", i > first ? "," : "", nodes[i].spec);
	appendStringInfoChar(&buf, ']');
	*next = i;
	return buf.data;
}

/*
 * The normalised node specs of version `version` of the workflow; an
 * error, with a hint to list the versions, when there is no such version.
 */
static char *
version_specs(const char *workflow, int32 version)
{
	Datum		args[2] = {CStringGetTextDatum(workflow), Int32GetDatum(version)};
	Oid			types[2] = {TEXTOID, INT4OID};
	bool		isnull;

	if (SPI_execute_with_args("SELECT definition FROM vectorbea.workflows"
							  " WHERE name = $1 AND version = $2",
							  2, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: workflow lookup failed");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("workflow \"%s\" has no version %d", workflow, version),
				 errhint("See its versions: SELECT version FROM vectorbea.workflows WHERE name = '%s'.",
						 workflow)));
	return vb_node_specs_json(vb_validate_definition(
		DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull))));
}

/*
 * fork_run(run uuid, from_node text, changes jsonb, version integer) -> uuid
 *
 * Without a version the fork keeps the source's workflow version; with one
 * it takes that version's definition, and its new and changed nodes run
 * again with from_node.
 */
static Datum
fork_run_as_owner(PG_FUNCTION_ARGS)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	pg_uuid_t  *source_id;
	char	   *from_node;
	Jsonb	   *changes;
	TimestampTz at = vb_now();
	TimestampTz deadline;
	VbRun		source;
	VbRun		run;
	ForkNode   *nodes;
	int			count;
	bool		from_found;
	pg_uuid_t  *fork_id;
	pg_uuid_t  *result;
	Datum		args[4];
	Oid			types[4] = {UUIDOID, UUIDOID, TIMESTAMPTZOID, INT4OID};
	bool		version_given = !PG_ARGISNULL(3);
	int32		version = version_given ? PG_GETARG_INT32(3) : 0;
	char	   *definition_specs = NULL;
	StringInfoData data;
	int			i;
	char	   *run_input;
	char	   *options;
	char	   *workspace;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run and from_node must not be null")));
	source_id = PG_GETARG_UUID_P(0);
	from_node = text_to_cstring(PG_GETARG_TEXT_PP(1));
	changes = PG_ARGISNULL(2) ? vb_jsonb_from_cstring("{}") : PG_GETARG_JSONB_P(2);
	if (!JsonContainerIsObject(&changes->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid fork changes: they must be a JSON object keyed by node"),
				 errhint("For example '{\"brief\": {\"llm\": {\"prompt\": \"...\"}}}'.")));
	vb_check_payload_size(changes, "the fork's changes");

	SPI_connect();
	/* a fork reads the source's work and runs in its workspace */
	vb_require_run_workspace(source_id, "fork runs of");
	/* The fork is set going in the source's workspace: its lock before the source's. */
	workspace = vb_workspace_share_of_run(source_id);
	if (!vb_run_lock(source_id, &source))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist", vb_uuid_text(source_id))));
	if (vb_run_active(source.status))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run %s is still %s; only a finished run can be forked",
						vb_uuid_text(source_id), vb_run_status_name(source.status)),
				 errhint("Wait for it to finish, or cancel it first.")));
	if (version_given)
		definition_specs = version_specs(source.workflow, version);
	else
		version = source.workflow_version;
	nodes = plan_fork(source_id, from_node, definition_specs, &count, &from_found);
	if (!from_found)
		refuse_from_node(source_id, &source, from_node, version_given ? version : 0);
	apply_changes(nodes, count, changes, from_node);
	/* A fork at another version may have more nodes than its source had. */
	if (count > vb_max_nodes_per_run)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("run %s cannot be forked: the fork would have %d nodes, more than vectorbea.max_nodes_per_run",
						vb_uuid_text(source_id), count),
				 errdetail("vectorbea.max_nodes_per_run is %d.", vb_max_nodes_per_run),
				 errhint("Fork at a version with fewer nodes, or raise vectorbea.max_nodes_per_run.")));

	/*
	 * The new run: the source's input and options, at the chosen version.
	 * Its budgets are its options' (what its RUN_STARTED says), not one
	 * that set_run_budget gave the source since.
	 */
	fork_id = vb_uuid_v7(at);
	args[0] = UUIDPGetDatum(fork_id);
	args[1] = UUIDPGetDatum(source_id);
	args[2] = TimestampTzGetDatum(at);
	args[3] = Int32GetDatum(version);
	if (SPI_execute_with_args("INSERT INTO vectorbea.runs (id, workflow, workflow_version, input,"
							  "  options, workspace, priority, budget_usd, budget_tokens, created_at)"
							  " SELECT $1, workflow, $4, input, options, workspace, priority,"
							  "        (options->>'budget_usd')::numeric, (options->>'budget_tokens')::bigint, $3"
							  "   FROM vectorbea.runs WHERE id = $2"
							  " RETURNING input::text, options::text",
							  4, types, args, NULL, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "vectorbea: could not create the fork of run %s", vb_uuid_text(source_id));
	run_input = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	options = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	/* The source's deadline option, counted from the fork's start. */
	deadline = vb_options_deadline(vb_jsonb_from_cstring(options), at);
	if (deadline != 0 && deadline <= at)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run %s cannot be forked: its deadline %s has passed",
						vb_uuid_text(source_id), vb_timestamp_iso(deadline)),
				 errdetail("A fork keeps its run's options, so it would fail at once."),
				 errhint("Start a new run with vectorbea.start_run() and a later deadline.")));
	if (deadline != 0)
	{
		if (SPI_execute_with_args("UPDATE vectorbea.runs SET deadline = $2 WHERE id = $1", 2,
								  (Oid[]) {UUIDOID, TIMESTAMPTZOID},
								  (Datum[]) {UUIDPGetDatum(fork_id), TimestampTzGetDatum(deadline)},
								  NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "vectorbea: could not set the deadline of run %s", vb_uuid_text(fork_id));
		vb_wake_scheduler(deadline);
	}

	/* The row is new and invisible to others: no lock to take. */
	memset(&run, 0, sizeof(run));
	memcpy(&run.id, fork_id, sizeof(pg_uuid_t));
	run.status = VB_RUN_RUNNING;
	run.workflow = source.workflow;
	run.workflow_version = version;
	run.created_at = at;
	run.priority = source.priority;

	initStringInfo(&data);
	vb_run_started_head(&data, source.workflow, version, run_input, options, NULL);
	appendStringInfo(&data, ",\"forked_from\":{\"run\":\"%s\",\"version\":%d,\"node\":",
					 vb_uuid_text(source_id), source.workflow_version);
	vb_append_json_string(&data, from_node);
	appendStringInfo(&data, ",\"changes\":%s},\"nodes\":",
					 JsonbToCString(NULL, &changes->root, VARSIZE(changes)));
	i = 0;
	if (count > 0 && nodes[0].batch == 0)
	{
		char	   *specs = batch_specs(nodes, count, 0, &i);

		appendStringInfo(&data, "%s}", specs);
		vb_event(&run, "RUN_STARTED", NULL, 0, data.data, at);
		vb_state_add_nodes_held(&run, specs, NULL, at);
	}
	else
	{
		appendStringInfoString(&data, "[]}");
		vb_event(&run, "RUN_STARTED", NULL, 0, data.data, at);
	}
	/* Spawns recorded by reused nodes, in the order they happened. */
	while (i < count)
	{
		int			first = i;
		char	   *specs = batch_specs(nodes, count, first, &i);

		vb_event(&run, "NODES_SPAWNED", nodes[first].spawner, 0,
				 psprintf("{\"nodes\":%s}", specs), at);
		vb_state_add_nodes_held(&run, specs, nodes[first].spawner, at);
	}

	/* Reused nodes succeed in the order their source completed them. */
	{
		Datum		rargs[1] = {UUIDPGetDatum(source_id)};
		Oid			rtypes[1] = {UUIDOID};
		uint64		n;
		char	  **order;

		if (SPI_execute_with_args("SELECT node FROM vectorbea.nodes WHERE run_id = $1"
								  "   AND status = 'succeeded' ORDER BY finished_at, id",
								  1, rtypes, rargs, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: could not read the source run's completions");
		n = SPI_processed;
		order = palloc(sizeof(char *) * Max(n, 1));
		for (uint64 k = 0; k < n; k++)
			order[k] = SPI_getvalue(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, 1);
		for (uint64 k = 0; k < n; k++)
		{
			ForkNode   *fn = find_node(nodes, count, order[k]);

			if (fn == NULL || fn->rerun)
				continue;
			vb_state_reuse(&run, fn->id, fn->output,
						   psprintf("{\"run\":\"%s\",\"task_id\":" INT64_FORMAT "}",
									vb_uuid_text(source_id), fn->source_task),
						   at);
		}
	}
	vb_state_release_held(&run, at);
	/* A fork in a paused workspace starts paused, as a started run does. */
	(void) vb_pause_if_workspace_paused(&run, workspace, at);
	vb_run_save(&run, at);

	result = MemoryContextAlloc(caller_cxt, sizeof(pg_uuid_t));
	memcpy(result, fork_id, sizeof(pg_uuid_t));
	SPI_finish();
	PG_RETURN_UUID_P(result);
}

PG_FUNCTION_INFO_V1(vectorbea_fork_run);
Datum
vectorbea_fork_run(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, fork_run_as_owner);
}
