/*-------------------------------------------------------------------------
 *
 * upstream.c
 *	  Objects of outputs by node name, made only after checking that they
 *	  fit in one jsonb value: the upstream of a node of several
 *	  dependencies, the output of a child run for its parent, and the
 *	  input of a compensation with its original's input and output.
 *
 * Every output is within vectorbea.max_payload_size, but the outputs of a
 * join's dependencies together may pass what a jsonb value can hold
 * (256 MB of content).  jsonb_object_agg then fails, and with it the
 * statement that read them: a claim of the node's activity failed for
 * every worker and every run, the node staying ready for the next claim
 * to fail the same way, and a sleep or run node failed the scheduler's
 * pass every time.  So the statements that read a node's upstream make
 * it only for a node of at most one dependency (VB_UPSTREAM_SQL), and for
 * the others their callers come here.  A child run's output, the outputs
 * of its last nodes, is made in the transaction that ends the child (a
 * worker's completion): failing there, it failed that completion every
 * time it was tried.  The size is measured from the stored values'
 * headers, which give the uncompressed size without reading a TOASTed
 * value, and the object is made only when it fits.  Otherwise the caller
 * fails the attempt that would read it for good: it cannot be made, now
 * or later.
 *
 * A compensation's input, as a worker or an llm template sees it, holds
 * its original's input and output ("original").  They are added when the
 * compensation is claimed, not copied into its row and its history when
 * the compensation starts: one statement made the specs of all of a run's
 * compensations with those copies in one aggregate, which failed, and
 * with it the failure or cancel that started the compensation, once the
 * originals together passed what one jsonb value holds.
 *
 * A leaf.
 *
 * IDENTIFICATION
 *	  src/upstream.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "jsonb_util.h"
#include "spi_util.h"
#include "upstream.h"

/* The dependencies d of node n = $1, which the two statements below read. */
#define DEPENDENCIES_OF_NODE \
	" FROM vectorbea.nodes n" \
	" JOIN vectorbea.nodes d ON d.run_id = n.run_id AND d.node = ANY (n.depends_on)" \
	" WHERE n.id = $1"

/*
 * The last nodes n of run $1, whose outputs are the run's output: no node
 * depends on them (a 0.2.0 schema: child runs come with it).
 */
#define LAST_NODES_OF_RUN \
	" FROM vectorbea.nodes n" \
	" WHERE n.run_id = $1 AND n.status = 'succeeded' AND n.dependents IS NULL"

/* A node's share of the object: its key, its value, their JEntries. */
static int64
entry_bytes(const char *key, Datum output, bool isnull)
{
	int64		bytes = 2 * sizeof(JEntry) + strlen(key);

	/* a container value is aligned to 4 bytes: up to 3 of padding */
	if (!isnull)
		bytes += (int64) toast_raw_datum_size(output) - VARHDRSZ + 3;
	return bytes;
}

/*
 * Makes the object of the (node, output) rows that measure_plan and
 * object_plan read for args: NULL when it would take more than max_bytes,
 * or than a jsonb value holds.  *bytes is what the object takes, or would
 * take, at most.
 */
static Jsonb *
object_if_it_fits(SPIPlanPtr measure_plan, SPIPlanPtr object_plan, Datum *args, int64 max_bytes,
				  int64 *bytes)
{
	bool		isnull;

	if (SPI_execute_plan(measure_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not measure an object of outputs");
	*bytes = sizeof(uint32);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		Datum		output = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);

		*bytes += entry_bytes(SPI_getvalue(tup, SPI_tuptable->tupdesc, 1), output, isnull);
	}
	if (*bytes > Min(max_bytes, VB_UPSTREAM_MAX_BYTES))
		return NULL;
	if (SPI_execute_plan(object_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not make an object of outputs");
	return DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The upstream object of node node_id (in a run the caller has locked):
 * NULL when it does not fit in a jsonb value.  *bytes is what the object
 * takes, or would take, at most.
 */
Jsonb *
vb_upstream_of_node(int64 node_id, int64 *bytes)
{
	static SPIPlanPtr size_plan = NULL;
	static SPIPlanPtr object_plan = NULL;
	Datum		args[1];

	if (size_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		/* not read-only: the caller has just changed the node */
		size_plan = vb_prepare("SELECT d.node, d.output" DEPENDENCIES_OF_NODE,
							   lengthof(types), types);
		object_plan = vb_prepare("SELECT coalesce(pg_catalog.jsonb_object_agg(d.node, d.output), '{}')"
								 DEPENDENCIES_OF_NODE, lengthof(types), types);
	}
	args[0] = Int64GetDatum(node_id);
	return object_if_it_fits(size_plan, object_plan, args, VB_UPSTREAM_MAX_BYTES, bytes);
}

/*
 * The output of child run run_id, which has succeeded, for its parent's
 * run node: the object of the outputs of its last nodes (those that
 * succeeded and that no other node depends on), by node name.  NULL when
 * it does not fit in a jsonb value; *bytes is what it takes, or would
 * take, at most.
 */
Jsonb *
vb_child_output(pg_uuid_t *run_id, int64 *bytes)
{
	static SPIPlanPtr size_plan = NULL;
	static SPIPlanPtr object_plan = NULL;
	Datum		args[1];

	if (size_plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		size_plan = vb_prepare("SELECT n.node, n.output" LAST_NODES_OF_RUN, lengthof(types), types);
		object_plan = vb_prepare("SELECT coalesce(pg_catalog.jsonb_object_agg(n.node, n.output), '{}')"
								 LAST_NODES_OF_RUN, lengthof(types), types);
	}
	args[0] = UUIDPGetDatum(run_id);
	return object_if_it_fits(size_plan, object_plan, args, VB_UPSTREAM_MAX_BYTES, bytes);
}

/* A compensation node c and its original o, if it has one. */
#define COMPENSATION_AND_ORIGINAL \
	" FROM vectorbea.nodes c" \
	" LEFT JOIN vectorbea.nodes o ON o.run_id = c.run_id AND o.node = c.compensation_of"

/*
 * The input that compensation node node_id is claimed with: its own, and
 * "original", the node it compensates with that node's input and output
 * ({"node", "input", "output"}).  A node that compensates nothing keeps
 * its input.  NULL when it would take more than max_bytes, or than a
 * jsonb value holds (VB_UPSTREAM_MAX_BYTES, whatever max_bytes says);
 * *bytes is what it takes, or would take, at most.  A 0.2.0 schema only.
 */
Jsonb *
vb_compensation_input(int64 node_id, int64 max_bytes, int64 *bytes)
{
	static SPIPlanPtr size_plan = NULL;
	static SPIPlanPtr object_plan = NULL;
	Datum		args[1];

	if (size_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		/*
		 * A row for each part: the compensation's input (whose entries the
		 * object takes over, counted here as one) and the original's.
		 */
		size_plan = vb_prepare("SELECT x.key, x.value" COMPENSATION_AND_ORIGINAL
							   " CROSS JOIN LATERAL (VALUES ('input', c.input), ('original', o.input),"
							   "                            ('node', pg_catalog.to_jsonb(o.node)),"
							   "                            ('output', o.output)) x(key, value)"
							   " WHERE c.id = $1", lengthof(types), types);
		object_plan = vb_prepare("SELECT c.input || CASE WHEN o.id IS NULL THEN '{}'::jsonb"
								 "   ELSE pg_catalog.jsonb_build_object('original', pg_catalog.jsonb_build_object("
								 "          'node', o.node, 'input', o.input, 'output', o.output)) END"
								 COMPENSATION_AND_ORIGINAL " WHERE c.id = $1", lengthof(types), types);
	}
	args[0] = Int64GetDatum(node_id);
	return object_if_it_fits(size_plan, object_plan, args, max_bytes, bytes);
}

/* The error of an attempt of node whose upstream takes bytes, too many. */
char *
vb_upstream_too_large_json(const char *node, int64 bytes)
{
	StringInfoData err;

	initStringInfo(&err);
	appendStringInfoString(&err, "{\"message\":");
	vb_append_json_string(&err, psprintf("the outputs of the dependencies of node \"%s\" take %lld bytes together;"
										 " a node's upstream holds at most %lld bytes (256 MB)",
										 node, (long long) bytes, (long long) VB_UPSTREAM_MAX_BYTES));
	appendStringInfo(&err, ",\"class\":\"permanent\",\"upstream_bytes\":%lld}", (long long) bytes);
	return err.data;
}

/* The error of an attempt of compensation node whose input would take bytes. */
char *
vb_compensation_too_large_json(const char *node, int64 bytes)
{
	StringInfoData err;

	initStringInfo(&err);
	appendStringInfoString(&err, "{\"message\":");
	vb_append_json_string(&err, psprintf("the input of compensation node \"%s\" with its original's input and output"
										 " takes %lld bytes; a node's input holds at most %lld bytes (256 MB)",
										 node, (long long) bytes, (long long) VB_UPSTREAM_MAX_BYTES));
	appendStringInfo(&err, ",\"class\":\"permanent\",\"input_bytes\":%lld}", (long long) bytes);
	return err.data;
}
