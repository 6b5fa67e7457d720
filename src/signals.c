/*-------------------------------------------------------------------------
 *
 * signals.c
 *	  send_signal(): a named message from outside (a CI webhook, a payment
 *	  callback, another agent) to a running run.
 *
 * The signal is stored, SIGNAL_RECEIVED is written, and if a signal node
 * of the run waits for that name (the one that has waited longest), the
 * payload becomes its output in the same transaction.  Otherwise the
 * signal is kept for the next signal node to wait for it (waits.c).  Each
 * signal is delivered to one node, once; an idempotency key makes a
 * repeated send a no-op that returns the first signal's id.
 *
 * IDENTIFICATION
 *	  src/signals.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "events.h"
#include "jsonb_util.h"
#include "spi_util.h"
#include "waits.h"
#include "tenants.h"

#define MAX_SIGNAL_KEY_LEN	512

/* The id of the signal sent earlier with key; throws if it was another. */
static int64
earlier_signal(pg_uuid_t *run_id, const char *key, const char *name, Jsonb *payload)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[4] = {UUIDPGetDatum(run_id), CStringGetTextDatum(key),
	CStringGetTextDatum(name), JsonbPGetDatum(payload)};
	bool		isnull;

	if (plan == NULL)
	{
		Oid			types[4] = {UUIDOID, TEXTOID, TEXTOID, JSONBOID};

		plan = vb_prepare("SELECT id, name = $3 AND payload = $4, name FROM vectorbea.signals"
						  " WHERE run_id = $1 AND idempotency_key = $2", lengthof(types), types);
	}
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: signal with idempotency key \"%s\" vanished", vb_short_text(key));
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("idempotency key \"%s\" was already used for a different signal to run %s",
						vb_short_text(key), vb_uuid_text(run_id)),
				 errdetail("The key belongs to signal \"%s\" with %s payload.",
						   vb_short_text(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3)),
						   strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3), name) == 0 ?
						   "a different" : "its own"),
				 errhint("Use a new key for a new signal; reuse a key only to retry the same send.")));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * send_signal(run uuid, name text, payload jsonb, idempotency_key text)
 *   -> bigint
 */
static Datum
send_signal_as_owner(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr insert_plan = NULL;
	static SPIPlanPtr waiter_plan = NULL;
	pg_uuid_t  *run_id;
	char	   *name;
	Jsonb	   *payload;
	char	   *key = NULL;
	char	   *payload_text;
	TimestampTz at = vb_now();
	VbRun		run;
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int64		signal_id;
	int64		task_id = 0;
	char	   *node = NULL;
	StringInfoData data;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run and signal name must not be null")));
	run_id = PG_GETARG_UUID_P(0);
	name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	payload = PG_ARGISNULL(2) ? vb_jsonb_from_cstring("{}") : PG_GETARG_JSONB_P(2);
	if (!vb_valid_name(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid signal name \"%s\"", vb_short_text(name)),
				 errdetail("Names are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
						   VB_MAX_NAME_LEN)));
	vb_check_payload_size(payload, "the signal payload");
	if (!PG_ARGISNULL(3))
	{
		key = text_to_cstring(PG_GETARG_TEXT_PP(3));
		if (key[0] == '\0' || pg_mbstrlen(key) > MAX_SIGNAL_KEY_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("idempotency key must be 1 to %d characters long", MAX_SIGNAL_KEY_LEN),
					 errdetail("Found %d characters.", pg_mbstrlen(key))));
	}
	payload_text = JsonbToCString(NULL, &payload->root, VARSIZE(payload));

	SPI_connect();
	vb_require_run_workspace(run_id, "signal runs of");
	if (!vb_waits_available())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("this database's vectorbea has no signals yet"),
				 errhint("Run ALTER EXTENSION vectorbea UPDATE.")));
	if (!vb_run_lock(run_id, &run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist", vb_uuid_text(run_id))));
	if (run.status != VB_RUN_RUNNING && run.status != VB_RUN_PAUSED)
	{
		int64		earlier = 0;

		/*
		 * A retried send of a signal that finished the run is still a no-op,
		 * even within the statement that sent it: not read-only, so the
		 * lookup sees this statement's own insert.
		 */
		if (key && SPI_execute_with_args("SELECT 1 FROM vectorbea.signals"
										 " WHERE run_id = $1 AND idempotency_key = $2",
										 2, (Oid[]) {UUIDOID, TEXTOID},
										 (Datum[]) {UUIDPGetDatum(run_id), CStringGetTextDatum(key)},
										 NULL, false, 1) == SPI_OK_SELECT && SPI_processed == 1)
			earlier = earlier_signal(run_id, key, name, payload);
		if (earlier > 0)
		{
			SPI_finish();
			PG_RETURN_INT64(earlier);
		}
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("run %s is %s: signals go to running (or paused) runs only",
						vb_uuid_text(run_id), vb_run_status_name(run.status)),
				 errdetail("Signal \"%s\" was not sent.", vb_short_text(name))));
	}

	if (insert_plan == NULL)
	{
		Oid			t6[6] = {UUIDOID, TEXTOID, JSONBOID, TEXTOID, TIMESTAMPTZOID, NAMEOID};
		Oid			t2[2] = {UUIDOID, TEXTOID};

		insert_plan = vb_prepare("INSERT INTO vectorbea.signals"
								 " (run_id, name, payload, idempotency_key, sent_at, sent_by)"
								 " VALUES ($1, $2, $3, $4, $5, $6)"
								 " ON CONFLICT (run_id, idempotency_key) DO NOTHING RETURNING id",
								 lengthof(t6), t6);
		waiter_plan = vb_prepare("SELECT id, node FROM vectorbea.nodes"
								 " WHERE run_id = $1 AND kind = 'signal' AND status = 'waiting'"
								 "   AND wait->>'name' = $2"
								 " ORDER BY started_at, id LIMIT 1 FOR UPDATE",
								 lengthof(t2), t2);
	}
	args[0] = UUIDPGetDatum(run_id);
	args[1] = CStringGetTextDatum(name);
	args[2] = JsonbPGetDatum(payload);
	if (key)
		args[3] = CStringGetTextDatum(key);
	else
		nulls[3] = 'n';
	args[4] = TimestampTzGetDatum(at);
	args[5] = DirectFunctionCall1(namein, CStringGetDatum(vb_caller_name()));
	if (SPI_execute_plan(insert_plan, args, nulls, false, 0) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "vectorbea: could not store signal");
	if (SPI_processed == 0)
	{
		signal_id = earlier_signal(run_id, key, name, payload);
		SPI_finish();
		PG_RETURN_INT64(signal_id);
	}
	signal_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	if (SPI_execute_plan(waiter_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not look for a node waiting for signal \"%s\"", name);
	if (SPI_processed == 1)
	{
		task_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		node = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	}

	initStringInfo(&data);
	appendStringInfo(&data, "{\"signal\":%ld,\"name\":", (long) signal_id);
	vb_append_json_string(&data, name);
	appendStringInfo(&data, ",\"payload\":%s,\"idempotency_key\":", payload_text);
	vb_append_json_string(&data, key);
	appendStringInfoString(&data, ",\"sent_by\":");
	vb_append_json_string(&data, vb_caller_name());
	appendStringInfoString(&data, ",\"delivered_to\":");
	vb_append_json_string(&data, node);
	appendStringInfoChar(&data, '}');
	vb_event(&run, "SIGNAL_RECEIVED", node, 0, data.data, at);
	if (task_id != 0)
		vb_deliver_signal(&run, signal_id, task_id, payload_text, at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_INT64(signal_id);
}

PG_FUNCTION_INFO_V1(vectorbea_send_signal);
Datum
vectorbea_send_signal(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, send_signal_as_owner);
}
