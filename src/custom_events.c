/*-------------------------------------------------------------------------
 *
 * custom_events.c
 *	  append_event(): the SQL door for events that agents and applications
 *	  write into a run's history (notes, tool calls).
 *
 * Custom events share the run's sequence with the engine's own; engine
 * event types are refused, in any case, because replay trusts them to
 * come from the engine.
 *
 * IDENTIFICATION
 *	  src/custom_events.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "vectorbea.h"
#include "caller.h"
#include "clock.h"
#include "events.h"
#include "jsonb_util.h"
#include "spi_util.h"
#include "tenants.h"

static bool
valid_event_type(const char *type)
{
	size_t		len = strlen(type);

	if (len == 0 || len > 64 || !isalpha((unsigned char) type[0]))
		return false;
	for (const char *p = type; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '.' || *p == ':' || *p == '-'))
			return false;
	return true;
}

/*
 * append_event(run uuid, type text, data jsonb, node text) -> bigint
 */
static Datum
append_event_as_owner(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *run_id;
	char	   *type;
	Jsonb	   *data;
	char	   *node = NULL;
	VbRun		run;
	int64		seq;
	TimestampTz at = vb_now();

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run and type of an event must not be null")));
	run_id = PG_GETARG_UUID_P(0);
	type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	data = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	if (!PG_ARGISNULL(3))
		node = text_to_cstring(PG_GETARG_TEXT_PP(3));

	if (!valid_event_type(type))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid event type \"%s\"", vb_short_text(type)),
				 errdetail("Event types are 1 to 64 characters, start with a letter, and use letters, digits, \"_\", \".\", \":\" or \"-\".")));
	if (vb_event_type_reserved(type))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("event type \"%s\" is reserved for the engine", type),
				 errhint("Choose another name for custom events, e.g. \"AGENT_NOTE\".")));
	if (data && !JsonContainerIsObject(&data->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("event data must be a JSON object")));
	vb_check_payload_size(data, "the event data");

	SPI_connect();
	vb_require_run_workspace(run_id, "append events to runs of");
	if (!vb_run_lock(run_id, &run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist", vb_uuid_text(run_id))));
	if (node)
	{
		static SPIPlanPtr node_plan = NULL;
		Datum		args[2] = {UUIDPGetDatum(run_id), CStringGetTextDatum(node)};

		/* Kept: agents may note every tool call of a node. */
		if (node_plan == NULL)
		{
			Oid			types[2] = {UUIDOID, TEXTOID};

			node_plan = vb_prepare("SELECT 1 FROM vectorbea.nodes WHERE run_id = $1 AND node = $2",
								   2, types);
		}
		if (SPI_execute_plan(node_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: node lookup failed");
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("the run has no node \"%s\"", vb_short_text(node)),
					 errhint("Pass the id of one of the run's nodes, or NULL for an event of the whole run.")));
	}
	seq = vb_event(&run, type, node, 0,
				   data ? JsonbToCString(NULL, &data->root, VARSIZE(data)) : "{}", at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_INT64(seq);
}

PG_FUNCTION_INFO_V1(vectorbea_append_event);
Datum
vectorbea_append_event(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, append_event_as_owner);
}
