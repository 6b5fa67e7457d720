/*-------------------------------------------------------------------------
 *
 * append_only.c
 *	  The rule that the history is never changed: the trigger that refuses
 *	  UPDATE, DELETE and TRUNCATE on events, workflow versions and
 *	  approvals, for every role, and its one exception, a purge statement
 *	  of retention (retention.c).
 *
 * The exception is a flag of this backend, set only while
 * vb_execute_purge() runs its statement and cleared however that ends: no
 * setting, role or session state opens it, and nothing a session can call
 * runs inside that statement (the engine's own triggers and the foreign
 * keys' cascades do).  Before 0.2.0's retention the purge passed the
 * triggers with session_replication_role = replica; changing that setting
 * empties the backend's plan cache, so every statement the session ran
 * next was planned again (with vectorbea.retention set, the scheduler's
 * after every pass that purged).  The flag costs no plan, and lets the
 * foreign keys' cascades and the tables' other triggers fire as for any
 * other DELETE.
 *
 * IDENTIFICATION
 *	  src/append_only.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "append_only.h"

/* True only while vb_execute_purge() runs its statement. */
static bool purge_statement_running = false;

/*
 * Runs a prepared purge statement (SELECT over data-modifying CTEs) whose
 * DELETEs of events and approvals the append-only trigger lets pass.
 * Inside SPI; the result is in SPI_tuptable.
 */
void
vb_execute_purge(SPIPlanPtr plan, Datum *args)
{
	Assert(!purge_statement_running);
	purge_statement_running = true;
	PG_TRY();
	{
		if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: purge failed");
	}
	PG_FINALLY();
	{
		purge_statement_running = false;
	}
	PG_END_TRY();
}

/* The trigger fires on these three only. */
static const char *
trigger_operation(TriggerEvent event)
{
	if (TRIGGER_FIRED_BY_UPDATE(event))
		return "UPDATE";
	if (TRIGGER_FIRED_BY_DELETE(event))
		return "DELETE";
	return "TRUNCATE";
}

/*
 * BEFORE UPDATE, DELETE or TRUNCATE ... FOR EACH STATEMENT on events,
 * workflows and approvals: refuses the statement, unless it is a purge's
 * DELETE of events or approvals.
 */
PG_FUNCTION_INFO_V1(vectorbea_refuse_event_change);
Datum
vectorbea_refuse_event_change(PG_FUNCTION_ARGS)
{
	TriggerData *trig = (TriggerData *) fcinfo->context;
	Relation	rel;
	const char *table;
	const char *operation;
	char	   *refused;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trig->tg_event))
		elog(ERROR, "vectorbea_refuse_event_change must be a BEFORE trigger");
	rel = trig->tg_relation;
	table = RelationGetRelationName(rel);
	operation = trigger_operation(trig->tg_event);

	if (purge_statement_running && TRIGGER_FIRED_BY_DELETE(trig->tg_event) &&
		(strcmp(table, "events") == 0 || strcmp(table, "approvals") == 0))
		return PointerGetDatum(NULL);

	refused = psprintf("%s on %s.%s is refused.", operation,
					   get_namespace_name(RelationGetNamespace(rel)), table);
	if (strcmp(table, "events") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the event history is append-only"),
				 errdetail_internal("%s", refused),
				 errhint("Record a correction with vectorbea.append_event() instead.")));
	if (strcmp(table, "workflows") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("workflow versions are immutable"),
				 errdetail_internal("%s", refused),
				 errhint("Define the workflow again: that adds a version.")));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("approvals are part of the audit trail and are never removed"),
			 errdetail_internal("%s", refused),
			 errhint("Decide a gate with UPDATE; cancel_run() closes the gates of a run.")));
	pg_unreachable();
}
