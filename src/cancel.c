/*-------------------------------------------------------------------------
 *
 * cancel.c
 *	  cancel_run: the kill switch for one run.
 *
 * Every open node is cancelled and running leases are revoked, so their
 * late results are refused; the scheduler drops the run's llm calls in
 * flight.  The transition itself is the state machine's.
 *
 * IDENTIFICATION
 *	  src/cancel.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/uuid.h"

#include "vectorbea.h"
#include "caller.h"
#include "clock.h"
#include "jsonb_util.h"
#include "state.h"
#include "tenants.h"

/*
 * cancel_run(run uuid, reason text, compensate boolean) -> boolean
 *
 * The kill switch for one run.  Every open node is cancelled; running
 * leases are revoked, so their late results are refused.  With compensate,
 * what succeeded is undone first (the run compensates, then ends
 * cancelled).  Returns false when the run had already finished.
 */
static Datum
cancel_run_as_owner(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *run_id;
	char	   *reason = NULL;
	TimestampTz at = vb_now();
	VbRun		run;

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
	vb_require_run_workspace(run_id, "cancel runs of");
	if (!vb_run_lock(run_id, &run))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist", vb_uuid_text(run_id))));
	if (!vb_run_active(run.status))
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	vb_state_cancel_run(&run, reason, !PG_ARGISNULL(2) && PG_GETARG_BOOL(2), at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

PG_FUNCTION_INFO_V1(vectorbea_cancel_run);
Datum
vectorbea_cancel_run(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, cancel_run_as_owner);
}
