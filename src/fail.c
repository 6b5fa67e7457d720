/*-------------------------------------------------------------------------
 *
 * fail.c
 *	  fail_task: a worker reports a failed attempt.
 *
 * The door checks the error object (its class, its retry_after, its
 * usage) and the lease; whether the node retries or fails for good, and
 * what that does to its run, is the state machine's decision
 * (vb_state_fail_reported).  The usage is booked on the run before it, so
 * that a failure that ends a child run hands its parent what the child
 * spent with this report, and checked against the budgets after it, as a
 * completion's is (usage.c).
 *
 * IDENTIFICATION
 *	  src/fail.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "caller.h"
#include "clock.h"
#include "duration.h"
#include "jsonb_util.h"
#include "lease.h"
#include "state.h"
#include "usage.h"

/* Classes a worker may report; the engine sets timeout and lease_expired. */
static const char *const worker_classes[] = {"transient", "rate_limited",
"invalid_output", "permanent", NULL};

/* Reads fail_task's error object (its usage into *usage); returns its class. */
static const char *
parse_error(Jsonb *error, int64 *retry_after_ms, VbUsage *usage)
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
					 errmsg("invalid error: field \"class\" has an unknown value \"%s\"", vb_short_text(c)),
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
						 errmsg("invalid error: field \"retry_after\" has an invalid duration \"%s\"",
								vb_short_text(text)),
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
	/* What the failed attempt spent counts toward the budgets as a completion's does. */
	if (vb_jsonb_get(&error->root, "usage", &v))
	{
		if (v.type != jbvBinary || !JsonContainerIsObject(v.val.binary.data))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid error: field \"usage\" must be an object like {\"tokens\": 812, \"usd\": 0.0042}"),
					 errdetail("Found %s.", vb_jsonb_type_name(&v))));
		vb_usage_parse(JsonbValueToJsonb(&v), usage);
	}
	else
		vb_usage_parse(NULL, usage);
	return err_class;
}

/*
 * fail_task(task_id bigint, lease uuid, error jsonb, retryable boolean)
 *   -> text ('retrying' or 'failed')
 */
static Datum
fail_task_as_owner(PG_FUNCTION_ARGS)
{
	int64		task_id;
	pg_uuid_t  *lease;
	Jsonb	   *error;
	bool		retryable;
	int64		retry_after_ms;
	const char *err_class;
	const char *result;
	VbUsage		usage;
	TimestampTz at = vb_now();
	VbRun		run;
	VbRunStatus before_check;
	char	   *node;
	int			attempt;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_id, lease and error must not be null")));
	task_id = PG_GETARG_INT64(0);
	lease = PG_GETARG_UUID_P(1);
	error = PG_GETARG_JSONB_P(2);
	retryable = PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3);
	vb_check_payload_size(error, "the error");
	err_class = parse_error(error, &retry_after_ms, &usage);

	SPI_connect();
	vb_lock_run_of_task(task_id, &run);
	vb_require_lease(task_id, lease, "fail", &node, &attempt);
	vb_usage_add(&run, &usage);
	result = vb_state_fail_reported(&run, task_id, err_class,
									JsonbToCString(NULL, &error->root, VARSIZE(error)),
									vb_usage_json(&usage), retryable, retry_after_ms, at);
	before_check = run.status;
	vb_usage_check(&run, &usage, node, attempt, at);
	/*
	 * A retry that the budget's "fail" ended with its run will not come,
	 * nor a person's decision: the run's end (or the compensation it
	 * began, which closes its open nodes) closed the gate.
	 */
	if (!vb_run_active(run.status) ||
		(run.status == VB_RUN_COMPENSATING && before_check != VB_RUN_COMPENSATING))
		result = "failed";
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_TEXT_P(cstring_to_text(result));
}

PG_FUNCTION_INFO_V1(vectorbea_fail_task);
Datum
vectorbea_fail_task(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, fail_task_as_owner);
}

