/*-------------------------------------------------------------------------
 *
 * failure.c
 *	  Failed attempts, retries with backoff, failed and cancelled runs.
 *
 * The retry decision is made here and only here, whether the failure was
 * reported by a worker (fail_task) or found by the engine (an expired lease).
 * Backoff is exponential (or fixed) with "equal jitter": half the delay is
 * fixed, half is random.  The delay actually drawn is written into
 * STEP_RETRIED, so replay never draws a random number.
 *
 * A node that fails for good fails its run: nodes not yet started are
 * skipped, running ones are cancelled and lose their lease, and RUN_FAILED
 * lists both, so that replay rebuilds their states from that one event.
 *
 * IDENTIFICATION
 *	  src/failure.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"

/* Classes a worker may report; the engine sets timeout and lease_expired. */
static const char *const worker_classes[] = {"transient", "rate_limited",
"invalid_output", "permanent", NULL};

static int64
backoff_delay_ms(Jsonb *retry, int attempt)
{
	JsonbValue	v;
	bool		exponential = true;
	double		initial = 1000,
				max = 60000,
				multiplier = 2,
				delay;
	bool		jitter = true;

	if (vb_jsonb_get(&retry->root, "backoff", &v) && v.type == jbvString)
		exponential = (strncmp(v.val.string.val, "exponential", v.val.string.len) == 0);
	if (vb_jsonb_get(&retry->root, "initial_ms", &v) && v.type == jbvNumeric)
		initial = vb_numeric_double(v.val.numeric);
	if (vb_jsonb_get(&retry->root, "max_ms", &v) && v.type == jbvNumeric)
		max = vb_numeric_double(v.val.numeric);
	if (vb_jsonb_get(&retry->root, "multiplier", &v) && v.type == jbvNumeric)
		multiplier = vb_numeric_double(v.val.numeric);
	if (vb_jsonb_get(&retry->root, "jitter", &v) && v.type == jbvBool)
		jitter = v.val.boolean;

	/* max caps the exponential growth; a fixed backoff is what it says. */
	delay = exponential ? Min(initial * pow(multiplier, attempt - 1), max) : initial;
	if (jitter)
		delay = delay / 2 + pg_prng_double(&pg_global_prng_state) * (delay / 2);
	return (int64) llround(delay);
}

/*
 * Fails the current attempt of task_id (locked, running) in a locked run.
 * retry_after_ms < 0 means "use the backoff policy".  Returns "retrying" or
 * "failed"; a node failed for good fails the run.
 */
const char *
vb_fail_attempt(VbRun *run, int64 task_id, const char *err_class,
				const char *error_json, bool retryable, int64 retry_after_ms,
				TimestampTz at)
{
	static SPIPlanPtr get_plan = NULL;
	static SPIPlanPtr retry_plan = NULL;
	static SPIPlanPtr final_plan = NULL;
	Datum		args[3];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *node;
	char	   *activity;
	int			attempt;
	int			max_attempts;
	Jsonb	   *retry;
	TimestampTz started_at;
	bool		final;
	int64		duration_ms;

	if (get_plan == NULL)
	{
		Oid			t1[1] = {INT8OID};
		Oid			t3[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};

		get_plan = vb_prepare("SELECT node, activity, attempt, max_attempts, retry, started_at"
							  "  FROM vectorbea.nodes WHERE id = $1", lengthof(t1), t1);
		retry_plan = vb_prepare("UPDATE vectorbea.nodes SET status = 'ready', error = $2::jsonb,"
								" available_at = $3, lease = NULL, lease_expires_at = NULL"
								" WHERE id = $1", lengthof(t3), t3);
		final_plan = vb_prepare("UPDATE vectorbea.nodes SET status = 'failed', error = $2::jsonb,"
								" finished_at = $3, lease_expires_at = NULL"
								" WHERE id = $1", lengthof(t3), t3);
	}
	args[0] = Int64GetDatum(task_id);
	if (SPI_execute_plan(get_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: task %ld vanished", (long) task_id);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	node = SPI_getvalue(tup, desc, 1);
	activity = SPI_getvalue(tup, desc, 2);
	attempt = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	retry = DatumGetJsonbPCopy(SPI_getbinval(tup, desc, 5, &isnull));
	started_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
	duration_ms = isnull ? 0 : (at - started_at) / 1000;

	final = !retryable || strcmp(err_class, "permanent") == 0 || attempt >= max_attempts;

	vb_event(run, "STEP_FAILED", node, attempt,
			 psprintf("{\"class\":\"%s\",\"error\":%s,\"final\":%s,\"duration_ms\":%ld}",
					  err_class, error_json, final ? "true" : "false", (long) duration_ms),
			 at);

	args[1] = CStringGetTextDatum(error_json);
	if (!final)
	{
		int64		delay = retry_after_ms >= 0 ? retry_after_ms : backoff_delay_ms(retry, attempt);
		TimestampTz available_at = at + delay * 1000;

		args[2] = TimestampTzGetDatum(available_at);
		if (SPI_execute_plan(retry_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "vectorbea: could not schedule retry");
		vb_event(run, "STEP_RETRIED", node, attempt,
				 psprintf("{\"delay_ms\":%ld,\"available_at\":\"%s\",\"next_attempt\":%d}",
						  (long) delay, vb_timestamp_iso(available_at), attempt + 1),
				 at);
		/*
		 * A delayed retry is announced when it comes due: by the scheduler,
		 * or by this transaction if its time has come by the commit.
		 */
		if (delay == 0)
			vb_notify_task_ready(activity);
		else
			vb_announce_at_commit(activity, available_at);
		return "retrying";
	}

	args[2] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(final_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "vectorbea: could not fail task");
	run->open_nodes--;
	vb_fail_run(run, node, err_class, at);
	return "failed";
}

/*
 * Fails a locked run because of node: open nodes are skipped, running ones
 * lose their lease.  reason is the failed node's error class, or
 * budget_exceeded.
 */
void
vb_fail_run(VbRun *run, const char *node, const char *reason, TimestampTz at)
{
	char	   *skipped;
	char	   *revoked;
	StringInfoData data;

	vb_close_open_nodes(run, "skipped", "cancelled", at, &skipped, &revoked);
	initStringInfo(&data);
	appendStringInfoString(&data, "{\"node\":");
	vb_append_json_string(&data, node);
	appendStringInfoString(&data, ",\"reason\":");
	vb_append_json_string(&data, reason);
	appendStringInfo(&data, ",\"skipped\":%s,\"revoked\":%s}", skipped, revoked);
	vb_end_run(run, "failed", "RUN_FAILED", data.data, at);
}

/* Reads fail_task's error object; returns its class. */
static const char *
parse_error(Jsonb *error, int64 *retry_after_ms)
{
	JsonbValue	v;
	const char *err_class = "transient";

	*retry_after_ms = -1;
	if (!JsonContainerIsObject(&error->root))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid error: it must be a JSON object like {\"message\": \"...\", \"class\": \"transient\"}")));
	if (vb_jsonb_get(&error->root, "message", &v) && v.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid error: field \"message\" must be a string"),
				 errdetail("Found %s.", vb_jsonb_type_name(&v))));
	if (vb_jsonb_get(&error->root, "class", &v))
	{
		char	   *c;
		bool		known = false;

		if (v.type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid error: field \"class\" must be a string"),
					 errdetail("Found %s.", vb_jsonb_type_name(&v))));
		c = pnstrdup(v.val.string.val, v.val.string.len);
		for (const char *const *k = worker_classes; *k; k++)
			if (strcmp(*k, c) == 0)
				known = true, err_class = *k;
		if (!known)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid error: field \"class\" has an unknown value \"%s\"", c),
					 errdetail("Workers report transient, rate_limited, invalid_output or permanent; "
							   "timeout and lease_expired are set by the engine.")));
	}
	if (vb_jsonb_get(&error->root, "retry_after", &v))
	{
		int64		ms;

		if (v.type == jbvNumeric)
		{
			double		secs = vb_numeric_double(v.val.numeric);

			if (!(secs >= 0 && secs <= 366.0 * 86400))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid error: field \"retry_after\" must be between 0 and 366 days"),
						 errdetail("Found %s seconds.", vb_short_text(vb_jsonb_value_text(&v)))));
			ms = (int64) llround(secs * 1000);
		}
		else if (v.type == jbvString)
		{
			char	   *text = pnstrdup(v.val.string.val, v.val.string.len);

			if (!vb_parse_duration(text, &ms))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid error: field \"retry_after\" has an invalid duration \"%s\"", text),
						 errhint("Give seconds as a number, or a duration such as \"30s\".")));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid error: field \"retry_after\" must be seconds or a duration"),
					 errdetail("Found %s.", vb_jsonb_type_name(&v))));
		if (strcmp(err_class, "rate_limited") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid error: field \"retry_after\" applies only to class \"rate_limited\""),
					 errhint("Other classes retry with the node's backoff policy.")));
		*retry_after_ms = ms;
	}
	return err_class;
}

/*
 * fail_task(task_id bigint, lease uuid, error jsonb, retryable boolean)
 *   -> text ('retrying' or 'failed')
 */
PG_FUNCTION_INFO_V1(vectorbea_fail_task);
Datum
vectorbea_fail_task(PG_FUNCTION_ARGS)
{
	static SPIPlanPtr lock_plan = NULL;
	int64		task_id;
	pg_uuid_t  *lease;
	Jsonb	   *error;
	bool		retryable;
	int64		retry_after_ms;
	const char *err_class;
	const char *result;
	TimestampTz at = vb_now();
	VbRun		run;
	Datum		args[2];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_id, lease and error must not be null")));
	task_id = PG_GETARG_INT64(0);
	lease = PG_GETARG_UUID_P(1);
	error = PG_GETARG_JSONB_P(2);
	retryable = PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3);
	vb_check_payload_size(error, "the error");
	err_class = parse_error(error, &retry_after_ms);

	SPI_connect();
	if (!vb_run_lock_for_task(task_id, &run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("task %ld does not exist", (long) task_id)));
	if (lock_plan == NULL)
	{
		Oid			types[2] = {INT8OID, UUIDOID};

		lock_plan = vb_prepare("SELECT 1 FROM vectorbea.nodes"
							   " WHERE id = $1 AND lease = $2 AND status = 'running'"
							   " FOR UPDATE", lengthof(types), types);
	}
	args[0] = Int64GetDatum(task_id);
	args[1] = UUIDPGetDatum(lease);
	if (SPI_execute_plan(lock_plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: task lock failed");
	if (SPI_processed == 0)
		vb_refuse_lease(task_id, lease, "fail");

	result = vb_fail_attempt(&run, task_id, err_class,
							 JsonbToCString(NULL, &error->root, VARSIZE(error)),
							 retryable, retry_after_ms, at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

/*
 * cancel_run(run uuid, reason text, compensate boolean) -> boolean
 *
 * The kill switch for one run.  Every open node is cancelled; running
 * leases are revoked, so their late results are refused.  Returns false
 * when the run had already finished.
 */
PG_FUNCTION_INFO_V1(vectorbea_cancel_run);
Datum
vectorbea_cancel_run(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *run_id;
	char	   *reason = NULL;
	TimestampTz at = vb_now();
	VbRun		run;
	char	   *cancelled;
	char	   *revoked;
	StringInfoData data;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run must not be null")));
	run_id = PG_GETARG_UUID_P(0);
	if (!PG_ARGISNULL(1))
	{
		reason = text_to_cstring(PG_GETARG_TEXT_PP(1));
		vb_check_text_size(reason, "the reason of a cancel", VB_MAX_REASON_BYTES);
	}

	SPI_connect();
	if (!vb_run_lock(run_id, &run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist", vb_uuid_text(run_id))));
	if (strcmp(run.status, "running") != 0 && strcmp(run.status, "compensating") != 0)
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	if (!PG_ARGISNULL(2) && PG_GETARG_BOOL(2))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cancel_run with compensate => true is not supported by this version of vectorbea"),
				 errdetail("vectorbea " VB_VERSION " has no compensation yet; nothing was cancelled."),
				 errhint("Cancel without compensation, or upgrade.")));
	vb_close_open_nodes(&run, "cancelled", "cancelled", at, &cancelled, &revoked);
	initStringInfo(&data);
	appendStringInfoString(&data, "{\"reason\":");
	vb_append_json_string(&data, reason);
	appendStringInfo(&data, ",\"cancelled\":%s,\"revoked\":%s}", cancelled, revoked);
	vb_end_run(&run, "cancelled", "RUN_CANCELLED", data.data, at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_BOOL(true);
}
