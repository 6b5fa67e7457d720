/*-------------------------------------------------------------------------
 *
 * upstream.c
 *	  The upstream object of a node of several dependencies, after
 *	  checking that their outputs together fit in one jsonb value.
 *
 * Every output is within vectorbea.max_payload_size, but the outputs of a
 * join's dependencies together may pass what a jsonb value can hold
 * (256 MB of content).  jsonb_object_agg then fails, and with it the
 * statement that read them: a claim of the node's activity failed for
 * every worker and every run, the node staying ready for the next claim
 * to fail the same way, and a sleep or run node failed the scheduler's
 * pass every time.  So the statements that read a node's upstream make
 * it only for a node of at most one dependency (VB_UPSTREAM_SQL), and for
 * the others their callers come here.  The size is measured from the
 * stored values' headers, which give the uncompressed size without
 * reading a TOASTed value, and the object is made only when it fits.
 * Otherwise the caller fails the attempt for good
 * (vb_upstream_too_large_json): its input cannot be made, now or later.
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

#include "jsonb_util.h"
#include "spi_util.h"
#include "upstream.h"

/* The dependencies d of node n = $1, which the two statements below read. */
#define DEPENDENCIES_OF_NODE \
	" FROM vectorbea.nodes n" \
	" JOIN vectorbea.nodes d ON d.run_id = n.run_id AND d.node = ANY (n.depends_on)" \
	" WHERE n.id = $1"

/* A dependency's share of the object: its key, its value, their JEntries. */
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
	bool		isnull;

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
	if (SPI_execute_plan(size_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not measure the upstream of task %ld", (long) node_id);
	*bytes = sizeof(uint32);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		Datum		output = SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull);

		*bytes += entry_bytes(SPI_getvalue(tup, SPI_tuptable->tupdesc, 1), output, isnull);
	}
	if (*bytes > VB_UPSTREAM_MAX_BYTES)
		return NULL;
	if (SPI_execute_plan(object_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the upstream of task %ld", (long) node_id);
	return DatumGetJsonbP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
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
