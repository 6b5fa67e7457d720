/*-------------------------------------------------------------------------
 *
 * approvals.c
 *	  Human approval gates: opened by the engine, decided by UPDATE, timed
 *	  out and escalated by the scheduler, closed with their run.
 *
 * A gate is a row of vectorbea.approvals.  It opens when an approval node
 * becomes ready or when a running task calls await_approval
 * (vb_state_wait_on_gate); its node then waits.  A person decides with a plain
 * UPDATE of status, reason and decided_by; the BEFORE UPDATE trigger
 * (vectorbea_approval_decide) checks the decision, stamps decided_at and
 * the deciding role, and moves the graph on in the same transaction.
 *
 * Lock order.  The UPDATE has locked the approval row before the trigger
 * runs, while every other writer of a run locks the run first and may then
 * wait for the run's approval rows (closing them when the run ends).  So the
 * trigger never waits for the run in the lock manager: it tries the run
 * lock with SKIP LOCKED, in a short loop, and gives up with an error after
 * two seconds.  A deadlock cannot form; a decision that races a run ending
 * fails, its transaction rolls back, and the run's end closes the gate.
 *
 * The trigger runs with the rights of the deciding role, which is what the
 * approver_role check needs; it switches to the table owner only for the
 * engine's own writes, for the deciding role, as the doors do (caller.c).
 *
 * The engine's own updates of gates (closing, expiring, escalating,
 * postponing after an error) pass the trigger: they run through
 * gate_writes.c, which marks them while they run, as the table owner.  A
 * person's UPDATE may change status, reason and decided_by only (column
 * privileges, and the trigger checks it too), and a superuser's UPDATE
 * that also sets decided_at is checked as a person's: it is refused.  Opening and closing gates are transitions
 * of the state machine (state.c).
 *
 * IDENTIFICATION
 *	  src/approvals.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/memutils.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "vectorbea.h"
#include "approvals.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "crashpoint.h"
#include "due_items.h"
#include "duration.h"
#include "gate_writes.h"
#include "jsonb_util.h"
#include "lease.h"
#include "notify.h"
#include "spi_util.h"
#include "state.h"
#include "template.h"
#include "votes.h"

/* How long a decision waits for a busy run before it gives up. */
#define DECISION_LOCK_WAIT_MS	2000

/* Takes the run lock without waiting in the lock manager (see the header). */
static void
lock_run_for_decision(pg_uuid_t *run_id, VbRun *run, int64 approval_id, const char *gate)
{
	for (int waited = 0;; waited += 10)
	{
		if (vb_run_try_lock(run_id, run))
			return;
		/* which gate: an UPDATE may decide many */
		if (waited >= DECISION_LOCK_WAIT_MS)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("the run of gate \"%s\" (approval %ld) stayed busy; the decision was not recorded",
							vb_short_text(gate), (long) approval_id),
					 errdetail("Another transaction held run %s for more than %d ms.",
							   vb_uuid_text(run_id), DECISION_LOCK_WAIT_MS),
					 errhint("Run the UPDATE again.")));
		pg_usleep(10 * 1000L);
		CHECK_FOR_INTERRUPTS();
	}
}

static char *
col_text(HeapTuple tup, TupleDesc desc, const char *name)
{
	return SPI_getvalue(tup, desc, SPI_fnumber(desc, name));
}

static char *
col_text(HeapTuple tup, TupleDesc desc, const char *name);

/*
 * An update by the engine: one of its own statements (gate_writes.c), run
 * with the privileges of the table's owner (see the header).
 */
static bool
engine_write(Relation rel)
{
	return vb_gate_update_active() && has_privs_of_role(GetUserId(), rel->rd_rel->relowner);
}

/*
 * The decision of a gate: on an approval gate, only status (decision,
 * output and input are for gates of failures); on an escalation or
 * in_doubt gate, accept or retry with status approved, fail with status
 * rejected.  Accept needs the output, a JSON value; retry may replace the
 * input, a JSON object.  Returns the decision ("accept", "retry", "fail";
 * NULL on an approval gate) and the texts of output and input.
 */
static const char *
check_decision(TupleDesc desc, HeapTuple oldtup, HeapTuple newtup, int64 id,
			   const char *kind, const char *status, char **output, char **input)
{
	bool		approved = strcmp(status, "approved") == 0;
	char	   *decision;

	if (SPI_fnumber(desc, "decision") <= 0)
		return NULL;			/* a 0.1.0 schema: approval gates only */
	decision = col_text(newtup, desc, "decision");
	*output = col_text(newtup, desc, "output");
	*input = col_text(newtup, desc, "input");
	if (strcmp(kind, "approval") == 0)
	{
		if (decision || *output || *input)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid decision for approval %ld: decision, output and input apply to gates of failures", (long) id),
					 errdetail("Approval %ld is an approval gate; it is decided by status alone.", (long) id),
					 errhint("SET status = 'approved' (or 'rejected'), reason = '...', decided_by = '...'.")));
		return NULL;
	}
	if (decision == NULL)
		decision = approved ? "accept" : "fail";
	/* Before the column's CHECK, whose error would print the whole row. */
	if (strcmp(decision, "accept") != 0 && strcmp(decision, "retry") != 0 &&
		strcmp(decision, "fail") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid decision for approval %ld: decision \"%s\" is not accept, retry or fail",
						(long) id, vb_short_text(decision)),
				 errhint("SET status = 'approved', decision = 'accept', output = '...'; or status = 'approved', decision = 'retry'; or status = 'rejected'.")));
	if (approved ? strcmp(decision, "fail") == 0 : strcmp(decision, "fail") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid decision for approval %ld: decision \"%s\" goes with status \"%s\"",
						(long) id, decision, approved ? "rejected" : "approved"),
				 errdetail("accept and retry approve the gate; fail rejects it."),
				 errhint("SET status = 'approved', decision = 'accept', output = '...'; or status = 'approved', decision = 'retry'; or status = 'rejected'.")));
	if (strcmp(decision, "accept") == 0 && *output == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("invalid decision for approval %ld: accept needs an output", (long) id),
				 errdetail("The output becomes the output of node \"%s\" (gate of kind %s).",
						   vb_short_text(col_text(oldtup, desc, "node")), kind),
				 errhint("SET status = 'approved', decision = 'accept', output = '{...}'.")));
	if (strcmp(decision, "accept") != 0 && *output != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid decision for approval %ld: output goes with accept only", (long) id)));
	if (*input != NULL && strcmp(decision, "retry") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid decision for approval %ld: input goes with retry only", (long) id)));
	if (*input != NULL && (*input)[0] != '{')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid decision for approval %ld: input must be a JSON object", (long) id),
				 errdetail("Found %s.", vb_short_text(*input))));
	if (*output)
		vb_check_payload_size(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(*output))),
							  "the output of a decision");
	if (*input)
		vb_check_payload_size(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(*input))),
							  "the input of a decision");
	return decision;
}

/*
 * A retry's input replaces a run node's input, which is its child's input
 * and a template: it is checked as a definition's is, against the node's
 * dependencies, so that a bad placeholder fails the decision rather than
 * the next attempt.  Inside SPI.
 */
static void
check_retry_input(int64 id, int64 task_id, const char *input)
{
	Datum		args[1] = {Int64GetDatum(task_id)};
	Oid			types[1] = {INT8OID};
	List	   *depends_on = NIL;
	Datum	   *deps;
	int			ndeps;
	bool		isnull;
	Datum		deps_datum;
	char	   *problem;

	if (SPI_execute_with_args("SELECT kind = 'run', depends_on FROM vectorbea.nodes WHERE id = $1",
							  1, types, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "vectorbea: task %ld vanished", (long) task_id);
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return;
	deps_datum = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
	{
		deconstruct_array(DatumGetArrayTypeP(deps_datum), TEXTOID, -1, false, TYPALIGN_INT,
						  &deps, NULL, &ndeps);
		for (int i = 0; i < ndeps; i++)
			depends_on = lappend(depends_on, TextDatumGetCString(deps[i]));
	}
	problem = vb_template_check_json(&vb_jsonb_from_cstring(input)->root, depends_on);
	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid decision for approval %ld: input has a bad placeholder", (long) id),
				 errdetail("%s.", problem),
				 errhint("A run node's input is its child run's input; its strings may use {{run.input.<path>}} and {{upstream.<node>.output.<path>}}.")));
}

/*
 * BEFORE UPDATE ... FOR EACH ROW on vectorbea.approvals: a person decides.
 */
PG_FUNCTION_INFO_V1(vectorbea_approval_decide);
Datum
vectorbea_approval_decide(PG_FUNCTION_ARGS)
{
	TriggerData *trig = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	oldtup;
	HeapTuple	newtup;
	char	   *old_status;
	char	   *new_status;
	char	   *approver_role;
	char	   *decider;
	VbDoorSave	door;
	TimestampTz at = vb_now();
	int64		id;
	bool		isnull;
	int			ncols;
	int		   *cols;
	Datum	   *vals;
	bool	   *nulls;
	volatile bool closing = false;
	volatile bool still_pending = false;
	int			parent_wait;
	char	   *kind;
	const char *volatile decision;
	char	   *output = NULL;
	char	   *input = NULL;
	VbVoter		voter = {NULL, NULL};
	pg_uuid_t	gate_run;
	bool		run_closing;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(trig->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trig->tg_event) || !TRIGGER_FIRED_BY_UPDATE(trig->tg_event))
		elog(ERROR, "vectorbea_approval_decide must be a BEFORE UPDATE row trigger");
	desc = trig->tg_relation->rd_att;
	oldtup = trig->tg_trigtuple;
	newtup = trig->tg_newtuple;
	if (engine_write(trig->tg_relation))
		return PointerGetDatum(newtup);
	id = DatumGetInt64(heap_getattr(oldtup, SPI_fnumber(desc, "id"), desc, &isnull));
	old_status = col_text(oldtup, desc, "status");
	new_status = col_text(newtup, desc, "status");
	if (new_status == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid decision for approval %ld: status must not be null", (long) id),
				 errdetail("A decision sets status to approved or rejected.")));

	if (strcmp(old_status, "pending") != 0)
	{
		char	   *by = col_text(oldtup, desc, "decided_by");
		char	   *role = col_text(oldtup, desc, "decided_role");

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("approval %ld is already %s; only a pending gate can be decided",
						(long) id, old_status),
				 strcmp(old_status, "closed") == 0 ?
				 errdetail("It was closed because its run ended.") :
				 role == NULL ?
				 errdetail("Nobody decided it in time: its timeout settled it (on_timeout).") :
				 by ? errdetail("Decided by %s (role %s).", vb_short_text(by), role) :
				 errdetail("Decided by role %s.", role)));
	}

	/*
	 * Only the decision columns may change.  Values are compared as images:
	 * a row older than a column the upgrade added reads the column's
	 * default from the catalog, stored otherwise than in the new row.
	 */
	for (int i = 1; i <= desc->natts; i++)
	{
		const char *name = NameStr(TupleDescAttr(desc, i - 1)->attname);
		bool		oldnull,
					newnull;
		Datum		o,
					n;
		Form_pg_attribute att = TupleDescAttr(desc, i - 1);

		if (att->attisdropped || strcmp(name, "status") == 0 ||
			strcmp(name, "reason") == 0 || strcmp(name, "decided_by") == 0 ||
			strcmp(name, "decision") == 0 || strcmp(name, "output") == 0 ||
			strcmp(name, "input") == 0)
			continue;
		o = heap_getattr(oldtup, i, desc, &oldnull);
		n = heap_getattr(newtup, i, desc, &newnull);
		if (oldnull != newnull ||
			(!oldnull && !datum_image_eq(o, n, att->attbyval, att->attlen)))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("column \"%s\" of an approval cannot be changed", name),
					 errdetail("A decision sets status, reason and decided_by (and decision, output and input on a gate of a failure); the engine stamps decided_at and decided_role."),
					 errhint("UPDATE vectorbea.approvals SET status = 'approved', reason = '...', decided_by = '...' WHERE id = %ld;",
							 (long) id)));
	}
	/*
	 * A row of a run that an earlier row of this statement ended is closed,
	 * not decided (below), as the run's gates the statement does not touch
	 * are: who may decide it, or vote on it, does not matter then.  Who
	 * may decide is checked before what they decided, as PostgreSQL checks
	 * a privilege before the values.
	 */
	memcpy(&gate_run, DatumGetUUIDP(heap_getattr(oldtup, SPI_fnumber(desc, "run_id"), desc, &isnull)),
		   sizeof(pg_uuid_t));
	run_closing = vb_state_run_closing_deferred(&gate_run);

	approver_role = col_text(oldtup, desc, "approver_role");
	decider = GetUserNameFromId(GetUserId(), false);
	if (approver_role && !run_closing)
	{
		Oid			role = get_role_oid(approver_role, true);

		if (!OidIsValid(role))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("role \"%s\" may not decide approval %ld", decider, (long) id),
					 errdetail("Gate \"%s\" is decided by members of role \"%s\", which does not exist.",
							   vb_short_text(col_text(oldtup, desc, "gate")), approver_role),
					 errhint("CREATE ROLE %s; GRANT %s TO %s; then decide again.",
							 quote_identifier(approver_role), quote_identifier(approver_role),
							 quote_identifier(decider))));
		if (!is_member_of_role(GetUserId(), role))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("role \"%s\" may not decide approval %ld", decider, (long) id),
					 errdetail("Gate \"%s\" is decided by members of role \"%s\".",
							   vb_short_text(col_text(oldtup, desc, "gate")), approver_role),
					 errhint("GRANT %s TO %s; or decide as a member of it.",
							 quote_identifier(approver_role), quote_identifier(decider))));
	}

	if (!run_closing && SPI_fnumber(desc, "quorum") > 0 && col_text(oldtup, desc, "quorum") != NULL)
		vb_find_voter(desc, oldtup, col_text(newtup, desc, "decided_by"), id, &voter);

	if (strcmp(new_status, "approved") != 0 && strcmp(new_status, "rejected") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid decision \"%s\" for approval %ld", vb_short_text(new_status), (long) id),
				 errdetail("A decision sets status to approved or rejected.")));

	vb_check_text_size(col_text(newtup, desc, "reason"), "the reason of a decision",
					   VB_MAX_REASON_BYTES);
	vb_check_text_size(col_text(newtup, desc, "decided_by"), "decided_by",
					   VB_MAX_DECIDED_BY_BYTES);

	kind = SPI_fnumber(desc, "kind") > 0 ? col_text(oldtup, desc, "kind") : "approval";
	decision = check_decision(desc, oldtup, newtup, id, kind, new_status, &output, &input);

	/* The engine's writes, as the owner of the tables, for the decider. */
	vb_door_enter(trig->tg_relation->rd_rel->relowner, GetUserId(), &door);
	vb_state_decision_begin();
	/*
	 * A decision that ends a child run settles its parent too: it tries the
	 * parent as it tried the gate's run, and is refused, not kept waiting,
	 * when another transaction holds it.
	 */
	parent_wait = vb_run_parent_lock_wait_limit(DECISION_LOCK_WAIT_MS);
	PG_TRY();
	{
		pg_uuid_t	run_id;
		VbRun		run;
		int64		task_id;
		char	   *node;
		char	   *gate;
		char	   *reason = col_text(newtup, desc, "reason");
		char	   *by = col_text(newtup, desc, "decided_by");
		bool		approved = strcmp(new_status, "approved") == 0;
		StringInfoData ev;
		StringInfoData out;

		memcpy(&run_id, DatumGetUUIDP(heap_getattr(oldtup, SPI_fnumber(desc, "run_id"), desc, &isnull)),
			   sizeof(pg_uuid_t));
		task_id = DatumGetInt64(heap_getattr(oldtup, SPI_fnumber(desc, "task_id"), desc, &isnull));
		node = col_text(oldtup, desc, "node");
		gate = col_text(oldtup, desc, "gate");

		SPI_connect();
		lock_run_for_decision(&run_id, &run, id, gate);
		if (vb_state_run_closing_deferred(&run_id))
		{
			/*
			 * An earlier row of this statement ended the run, or started its
			 * compensation (a compensating run is still active, but the gates
			 * of its graph are closed, and their nodes skipped): close this one.
			 */
			ereport(NOTICE,
					(errmsg("approval %ld is closed, not %s: an earlier decision of this statement %s",
							(long) id, new_status,
							run.status == VB_RUN_COMPENSATING ? "started its run's compensation" :
							"ended its run")));
			/* As a gate that the run's end closes is announced. */
			vb_notify_approval(id, &run_id, gate, "closed");
			SPI_finish();
			closing = true;
		}
		else if (!vb_run_active(run.status))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("approval %ld can no longer be decided: its run is %s", (long) id,
							vb_run_status_name(run.status)),
					 errhint("The run ended while the gate was open; its gates are closed.")));

		if (!closing && voter.entry != NULL &&
			!vb_count_vote(&run, desc, oldtup, newtup, &voter, new_status, at))
		{
			/* The quorum is not decided yet: the gate stays pending. */
			vb_run_save(&run, at);
			SPI_finish();
			still_pending = true;
		}
		else if (!closing)
		{
			if (input != NULL)
				check_retry_input(id, task_id, input);
			initStringInfo(&ev);
			appendStringInfo(&ev, "{\"approval\":%ld,\"gate\":", (long) id);
			vb_append_json_string(&ev, gate);
			appendStringInfoString(&ev, ",\"by\":");
			vb_append_json_string(&ev, by);
			appendStringInfoString(&ev, ",\"role\":");
			vb_append_json_string(&ev, decider);
			appendStringInfoString(&ev, ",\"reason\":");
			vb_append_json_string(&ev, reason);
			if (strcmp(kind, "approval") != 0)
				appendStringInfo(&ev, ",\"decision\":\"%s\"", decision);
			appendStringInfoChar(&ev, '}');
			vb_event(&run, approved ? "APPROVAL_GRANTED" : "APPROVAL_REJECTED", node, 0, ev.data, at);

			initStringInfo(&out);
			appendStringInfo(&out, "{\"approval\":%ld,\"gate\":", (long) id);
			vb_append_json_string(&out, gate);
			appendStringInfo(&out, ",\"status\":\"%s\",\"decided_by\":", new_status);
			vb_append_json_string(&out, by);
			appendStringInfoString(&out, ",\"decided_role\":");
			vb_append_json_string(&out, decider);
			appendStringInfoString(&out, ",\"reason\":");
			vb_append_json_string(&out, reason);
			appendStringInfo(&out, ",\"decided_at\":\"%s\"", vb_timestamp_iso(at));
			if (!approved)
				appendStringInfo(&out, ",\"message\":\"rejected at gate %s\",\"class\":\"permanent\"",
								 gate);
			if (voter.entry != NULL)
				appendStringInfo(&out, ",\"votes\":%s", vb_votes_json(id));
			if (strcmp(kind, "approval") != 0)
				appendStringInfo(&out, ",\"decision\":\"%s\"", decision);
			appendStringInfoChar(&out, '}');
			if (strcmp(kind, "approval") == 0)
				vb_state_settle_gate(&run, task_id, node, approved, out.data, "permanent", at);
			else
				vb_state_decide_failure(&run, task_id, node, decision, output, input, out.data,
										"permanent", id, at);
			vb_run_save(&run, at);
			vb_crash_point(VB_CRASH_APPROVAL_APPLYING);	/* tests only */
			vb_notify_approval(id, &run_id, gate, new_status);
			SPI_finish();
		}
	}
	PG_FINALLY();
	{
		vb_run_parent_lock_wait_limit(parent_wait);
		vb_state_decision_end();
		vb_door_leave(&door);
	}
	PG_END_TRY();

	if (still_pending)
		return PointerGetDatum(vb_keep_pending(desc, oldtup, newtup));

	/*
	 * Stamp the decision: nobody can forge these two.  A gate closed instead
	 * has no decider and records no decision, like a gate that its run's end
	 * closes (decision, output and input are 0.2.0's columns).  A failure's
	 * gate rejected without a decision records the "fail" it was taken as,
	 * as its APPROVAL_REJECTED does (verify_run compares the two).
	 */
	cols = palloc(sizeof(int) * 8);
	vals = palloc(sizeof(Datum) * 8);
	nulls = palloc0(sizeof(bool) * 8);
	cols[0] = SPI_fnumber(desc, "decided_at");
	vals[0] = TimestampTzGetDatum(at);
	cols[1] = SPI_fnumber(desc, "decided_role");
	ncols = 2;
	if (closing)
	{
		nulls[1] = true;
		cols[ncols] = SPI_fnumber(desc, "status");
		vals[ncols++] = CStringGetTextDatum("closed");
		for (const char *const *c = (const char *const[]) {"decided_by", "reason", "decision",
				"output", "input", NULL}; *c; c++)
		{
			int			attno = SPI_fnumber(desc, *c);

			if (attno <= 0)
				continue;
			cols[ncols] = attno;
			nulls[ncols++] = true;
		}
	}
	else
	{
		vals[1] = DirectFunctionCall1(namein, CStringGetDatum(decider));
		if (decision != NULL)
		{
			cols[ncols] = SPI_fnumber(desc, "decision");
			vals[ncols++] = CStringGetTextDatum(decision);
		}
	}
	return PointerGetDatum(heap_modify_tuple_by_cols(newtup, desc, ncols, cols, vals, nulls));
}

/*
 * await_approval(task_id bigint, lease uuid, gate text, context jsonb,
 *                timeout interval) -> bigint
 *
 * A running task turns into a wait: its gate opens, its lease ends, and the
 * decision becomes its output.  Anyone who may update approvals may decide
 * it (it has no approver_role); on timeout it is rejected.
 */
static Datum
await_approval_as_owner(PG_FUNCTION_ARGS)
{
	int64		task_id;
	pg_uuid_t  *lease;
	char	   *gate;
	Jsonb	   *context = NULL;
	int64		timeout_ms = 0;
	TimestampTz at = vb_now();
	VbRun		run;
	char	   *node;
	int			attempt;
	int64		id;
	StringInfoData spec;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task_id, lease and gate must not be null")));
	task_id = PG_GETARG_INT64(0);
	lease = PG_GETARG_UUID_P(1);
	gate = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!vb_valid_name(gate))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid gate name \"%s\"", vb_short_text(gate)),
				 errdetail("Names are 1 to %d characters: letters, digits, \"_\", \"-\", \".\" and \":\".",
						   VB_MAX_NAME_LEN)));
	if (!PG_ARGISNULL(3))
	{
		context = PG_GETARG_JSONB_P(3);
		if (!JsonContainerIsObject(&context->root))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the context of a gate must be a JSON object")));
		vb_check_payload_size(context, "the context of the gate");
	}
	if (!PG_ARGISNULL(4))
		timeout_ms = vb_interval_ms(PG_GETARG_INTERVAL_P(4), "timeout");

	SPI_connect();
	vb_lock_run_of_task(task_id, &run);
	vb_require_lease(task_id, lease, "await approval for", &node, &attempt);

	initStringInfo(&spec);
	appendStringInfoString(&spec, "{\"gate\":");
	vb_append_json_string(&spec, gate);
	if (timeout_ms > 0)
		appendStringInfo(&spec, ",\"timeout_ms\":%ld", (long) timeout_ms);
	appendStringInfoString(&spec, ",\"on_timeout\":\"reject\",\"approver_role\":null,"
						   "\"escalate_to\":[],\"context\":{}}");
	id = vb_state_wait_on_gate(&run, task_id, node, attempt, spec.data,
				   context ? JsonbToCString(NULL, &context->root, VARSIZE(context)) : NULL, at);
	vb_run_save(&run, at);
	SPI_finish();
	PG_RETURN_INT64(id);
}

PG_FUNCTION_INFO_V1(vectorbea_await_approval);
Datum
vectorbea_await_approval(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, await_approval_as_owner);
}

typedef struct GateBatch
{
	int64	   *ids;
	pg_uuid_t  *run_ids;
	TimestampTz at;
	int			acted;
} GateBatch;

/* One gate past its expiry: escalate, or settle by on_timeout. */
static void
expire_gate(void *arg, int i)
{
	static SPIPlanPtr get_plan = NULL;
	static SPIPlanPtr escalate_plan = NULL;
	static SPIPlanPtr settle_plan = NULL;
	GateBatch  *b = arg;
	VbRun		run;
	Datum		args[3];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	char	   *gate;
	char	   *node;
	char	   *on_timeout;
	char	   *next_role;
	char	   *from_role;
	char	   *kind;
	int64		task_id;
	StringInfoData ev;

	if (get_plan == NULL)
	{
		Oid			t1[1] = {INT8OID};
		Oid			t3[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};
		Oid			t2[2] = {INT8OID, TIMESTAMPTZOID};

		/* kind, through to_jsonb: a 0.1.0 schema has no such column. */
		get_plan = vb_prepare("SELECT gate, node, task_id, on_timeout, timeout_ms, approver_role,"
							  "       escalate_to[escalation_level + 1],"
							  "       coalesce(pg_catalog.to_jsonb(a)->>'kind', 'approval')"
							  "  FROM vectorbea.approvals a WHERE id = $1 AND status = 'pending'",
							  lengthof(t1), t1);
		escalate_plan = vb_prepare("UPDATE vectorbea.approvals SET approver_role = $2,"
								   " escalation_level = escalation_level + 1,"
								   " expires_at = $3 + timeout_ms * interval '1 ms'"
								   " WHERE id = $1 RETURNING expires_at", lengthof(t3), t3);
		settle_plan = vb_prepare("UPDATE vectorbea.approvals"
								 " SET status = CASE WHEN on_timeout = 'approve' THEN 'approved'"
								 "                   ELSE 'expired' END,"
								 "     decided_at = $2, decided_by = 'vectorbea: timeout'"
								 " WHERE id = $1", lengthof(t2), t2);
	}
	if (!vb_run_lock(&b->run_ids[i], &run) || !vb_run_active(run.status))
		return;
	args[0] = Int64GetDatum(b->ids[i]);
	if (SPI_execute_plan(get_plan, args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	gate = SPI_getvalue(tup, desc, 1);
	node = SPI_getvalue(tup, desc, 2);
	task_id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	on_timeout = SPI_getvalue(tup, desc, 4);
	from_role = SPI_getvalue(tup, desc, 6);
	next_role = SPI_getvalue(tup, desc, 7);
	kind = SPI_getvalue(tup, desc, 8);

	initStringInfo(&ev);
	appendStringInfo(&ev, "{\"approval\":%ld,\"gate\":", (long) b->ids[i]);
	vb_append_json_string(&ev, gate);

	if (strcmp(on_timeout, "escalate") == 0 && next_role != NULL)
	{
		TimestampTz expires;

		args[1] = CStringGetTextDatum(next_role);
		args[2] = TimestampTzGetDatum(b->at);
		if (vb_gate_update_plan(escalate_plan, args, NULL) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "vectorbea: could not escalate approval %ld", (long) b->ids[i]);
		expires = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		appendStringInfoString(&ev, ",\"from\":");
		vb_append_json_string(&ev, from_role);
		appendStringInfoString(&ev, ",\"to\":");
		vb_append_json_string(&ev, next_role);
		appendStringInfo(&ev, ",\"expires_at\":\"%s\"}", vb_timestamp_iso(expires));
		vb_event(&run, "APPROVAL_ESCALATED", node, 0, ev.data, b->at);
		vb_notify_approval(b->ids[i], &run.id, gate, "escalated");
		vb_wake_scheduler(expires);
	}
	else
	{
		bool		approved = strcmp(on_timeout, "approve") == 0;
		StringInfoData out;

		args[1] = TimestampTzGetDatum(b->at);
		if (vb_gate_update_plan(settle_plan, args, NULL) != SPI_OK_UPDATE)
			elog(ERROR, "vectorbea: could not expire approval %ld", (long) b->ids[i]);
		appendStringInfo(&ev, ",\"outcome\":\"%s\"}", approved ? "approved" : "rejected");
		vb_event(&run, "APPROVAL_EXPIRED", node, 0, ev.data, b->at);

		initStringInfo(&out);
		appendStringInfo(&out, "{\"approval\":%ld,\"gate\":", (long) b->ids[i]);
		vb_append_json_string(&out, gate);
		appendStringInfo(&out, ",\"status\":\"%s\",\"decided_by\":\"vectorbea: timeout\","
						 "\"decided_at\":\"%s\"",
						 approved ? "approved" : "expired", vb_timestamp_iso(b->at));
		if (!approved)
			appendStringInfo(&out, ",\"message\":\"nobody decided gate %s in time\","
							 "\"class\":\"timeout\"", gate);
		/* a failure's gate that nobody decided is decided "fail", for good */
		if (strcmp(kind, "approval") != 0)
			appendStringInfoString(&out, ",\"decision\":\"fail\"");
		appendStringInfoChar(&out, '}');
		/* The gate's own row is expired already: the run's others close now. */
		if (strcmp(kind, "approval") == 0)
			vb_state_settle_gate(&run, task_id, node, approved, out.data, "timeout", b->at);
		else
			vb_state_decide_failure(&run, task_id, node, "fail", NULL, NULL, out.data,
									"permanent", b->ids[i], b->at);
		vb_notify_approval(b->ids[i], &run.id, gate, approved ? "approved" : "expired");
	}
	vb_run_save(&run, b->at);
	b->acted++;
}

/*
 * The scheduler's part: gates past their expiry, each SKIP LOCKED and then
 * its run SKIP LOCKED (a gate being decided right now is left to its
 * decision, a gate whose run is busy to the next pass).
 */
int
vb_expire_gates(TimestampTz at, VbSweepCounters *counters)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1];
	GateBatch	b;
	uint64		n;

	if (plan == NULL)
	{
		Oid			types[1] = {TIMESTAMPTZOID};

		/*
		 * Generic from the first call, as the scheduler's other scans: left
		 * to the plan cache, it was planned at its first calls, and at every
		 * call whenever a plan for the time looked cheaper.  As a join
		 * of gates and runs, the generic plan, not knowing how many gates
		 * have expired, hashed every run; here each gate's run is read by
		 * key, the gates in expiry order from their partial index.  The
		 * gate is locked before its run, as a person's decision locks them,
		 * so a gate whose run is busy stays locked until the step ends.
		 */
		plan = vb_prepare_opts("SELECT a.id, a.run_id"
							   "  FROM (SELECT id, run_id, expires_at FROM vectorbea.approvals"
							   "         WHERE status = 'pending' AND expires_at <= $1"
							   "         ORDER BY expires_at LIMIT 100"
							   "           FOR UPDATE SKIP LOCKED) a"
							   " CROSS JOIN LATERAL (SELECT FROM vectorbea.runs r WHERE r.id = a.run_id"
							   "                       FOR NO KEY UPDATE SKIP LOCKED) r"
							   " ORDER BY a.expires_at", lengthof(types), types,
							   CURSOR_OPT_GENERIC_PLAN);
	}
	args[0] = TimestampTzGetDatum(at);
	if (SPI_execute_plan(plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: gate expiry scan failed");
	n = SPI_processed;
	if (n == 0)
		return 0;
	memset(&b, 0, sizeof(b));
	b.at = at;
	vb_read_due_items(1, 2, &b.ids, &b.run_ids);
	for (uint64 i = 0; i < n; i++)
		vb_due_item(true, expire_gate, &b, (int) i, counters, &b.run_ids[i],
					VB_ITEM_GATE, b.ids[i], at);
	if (counters)
		counters->gates_expired += b.acted;
	return b.acted;
}

/*
 * AFTER UPDATE ... FOR EACH STATEMENT on vectorbea.approvals: closes the
 * other gates of the runs that a decision of this statement ended.
 */
PG_FUNCTION_INFO_V1(vectorbea_approvals_after_update);
Datum
vectorbea_approvals_after_update(PG_FUNCTION_ARGS)
{
	TriggerData *trig = (TriggerData *) fcinfo->context;
	VbDoorSave	door;
	TimestampTz at = vb_now();

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trig->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trig->tg_event))
		elog(ERROR, "vectorbea_approvals_after_update must be an AFTER statement trigger");
	vb_door_enter(trig->tg_relation->rd_rel->relowner, GetUserId(), &door);
	PG_TRY();
	{
		SPI_connect();
		vb_state_close_deferred_gates(at);
		SPI_finish();
	}
	PG_FINALLY();
	{
		vb_door_leave(&door);
	}
	PG_END_TRY();
	return PointerGetDatum(NULL);
}
