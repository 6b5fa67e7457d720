/* vectorbea--0.1.0--0.2.0.sql: from the released 0.1.0 to 0.2.0.
 *
 * Every change of the SQL surface since 0.1.0 goes here, never into
 * vectorbea--0.1.0.sql, which is frozen as released.  A fresh
 * CREATE EXTENSION runs vectorbea--0.2.0.sql, which the Makefile generates:
 * the install guard's prelude below, the body of vectorbea--0.1.0.sql, then
 * the body of this script without its prelude.  So a fresh install and an
 * upgraded one run the same statements; test/t/013_upgrade.pl checks that
 * they are the same on a database with runs in flight.
 */

\echo Use "ALTER EXTENSION vectorbea UPDATE TO '0.2.0'" to load this file. \quit

-- BEGIN install guard prelude (copied by the Makefile to the top of vectorbea--0.2.0.sql)
/*
 * The install guard (src/install_guard.c) first, before any statement that
 * looks an operator or a function up in the search_path, where another
 * role's look-alike could be called as the superuser running this script.
 * A preloaded library has already checked, from its hook.  Otherwise the
 * library is loaded here, and the SELECT makes the check itself:
 * vectorbea_install_check() refuses, naming a look-alike, before anything
 * else has run.  The SELECT does not count on CREATE FUNCTION to load the
 * library (PostgreSQL 15's validator of C functions does, even with
 * check_function_bodies off as pg_restore sets it, but its own comment
 * calls that inconsistent), nor on the hook's check at the next statement.
 * Nothing here is looked up in the path: the function and its return type
 * are qualified, and it has no arguments.  The function lives only for
 * these three statements, inside this script's transaction, so no other
 * session ever sees it and there is no grant to revoke.
 */
CREATE FUNCTION @extschema@.install_check() RETURNS pg_catalog.void
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_install_check';
SELECT @extschema@.install_check();
DROP FUNCTION @extschema@.install_check();
-- END install guard prelude

/*
 * The engine's tables, all taken before anything changes.  Statement by
 * statement, the script would take runs (an index) and then nodes (a new
 * column) while a worker holds nodes and waits for runs: a deadlock that
 * failed the update or the worker.  The locks are taken together, nodes
 * first as most of the engine's transactions take it first, and all or
 * none: a wait that would deadlock gives back what it took and tries again
 * after a pause.  This script's deadlock check runs first (10 ms), so the
 * one that gives way is the update, never a worker; a lock_timeout the
 * caller set still bounds each wait.  Workers queue behind the update
 * until it commits.  In a fresh install the tables are new and free.
 */
DO $lock$
DECLARE
	caller_deadlock_timeout text := pg_catalog.current_setting('deadlock_timeout');
	deadlocks integer := 0;
BEGIN
	PERFORM pg_catalog.set_config('deadlock_timeout', '10ms', true);
	LOOP
		BEGIN
			LOCK TABLE @extschema@.nodes, @extschema@.runs, @extschema@.events,
				@extschema@.approvals, @extschema@.workflows, @extschema@.provider_keys,
				@extschema@.model_prices
				IN ACCESS EXCLUSIVE MODE;
			EXIT;
		EXCEPTION WHEN deadlock_detected THEN
			deadlocks := deadlocks + 1;
			IF deadlocks = 600 THEN
				RAISE EXCEPTION 'the update could not take the engine''s tables: it met a deadlock 600 times'
					USING ERRCODE = 'lock_not_available',
						  HINT = 'Run ALTER EXTENSION vectorbea UPDATE again when fewer workers are busy, or stop them for the update.';
			END IF;
		END;
		PERFORM pg_catalog.pg_sleep(0.1);
	END LOOP;
	PERFORM pg_catalog.set_config('deadlock_timeout', caller_deadlock_timeout, true);
END
$lock$;

/*
 * The engine's functions are doors (src/caller.c): SECURITY INVOKER, so
 * that they know the role that called them, current_user, and switching
 * to the extension's owner themselves for the engine's reads and writes.
 * As SECURITY DEFINER, 0.1.0's could only ask for the session's role, so
 * a SECURITY DEFINER function of one tenant, called by a member of
 * another, acted for that member.  EXECUTE still decides who may call
 * each; the grants do not change.  The functions written in SQL become
 * doors over a body of their own below (src/query_door.c).
 */
ALTER FUNCTION @extschema@.define_workflow(text, jsonb) SECURITY INVOKER;
ALTER FUNCTION @extschema@.start_run(text, jsonb, text, jsonb) SECURITY INVOKER;
ALTER FUNCTION @extschema@.claim_tasks(text, text[], integer, interval) SECURITY INVOKER;
ALTER FUNCTION @extschema@.heartbeat(bigint, uuid, interval) SECURITY INVOKER;
ALTER FUNCTION @extschema@.complete_task(bigint, uuid, jsonb, jsonb, jsonb) SECURITY INVOKER;
ALTER FUNCTION @extschema@.fail_task(bigint, uuid, jsonb, boolean) SECURITY INVOKER;
ALTER FUNCTION @extschema@.save_checkpoint(bigint, uuid, jsonb) SECURITY INVOKER;
ALTER FUNCTION @extschema@.await_approval(bigint, uuid, text, jsonb, interval) SECURITY INVOKER;
ALTER FUNCTION @extschema@.cancel_run(uuid, text, boolean) SECURITY INVOKER;
ALTER FUNCTION @extschema@.append_event(uuid, text, jsonb, text) SECURITY INVOKER;
ALTER FUNCTION @extschema@.set_provider_key(text, text, text, text) SECURITY INVOKER;
ALTER FUNCTION @extschema@.check_provider_key(text, text) SECURITY INVOKER;
ALTER FUNCTION @extschema@.rotate_master_key(text) SECURITY INVOKER;
ALTER FUNCTION @extschema@.run_due_work() SECURITY INVOKER;

/*
 * Tenants (issue: hardening): workspaces mapped to roles.  A workspace
 * mapped to at least one role is seen and acted on by the members of its
 * roles only; one mapped to none stays open to every role with the
 * privileges.  workspace_visible() and run_visible() are what the
 * row-level security policies below and the views ask, row by row; they
 * answer for current_user only, as row-level security does (inside the
 * engine's own functions, for the role that called them; src/tenants.c).  They come first: the
 * functions below that read a run by id ask run_visible() too.
 */
-- role is a regrole, stored as the role's OID but dumped by name, so that a
-- logical backup restored in another cluster (where the same OIDs name
-- other roles) maps each workspace to the role of the same name.
CREATE TABLE @extschema@.workspace_roles (
	workspace		text NOT NULL,
	role			regrole NOT NULL,
	granted_at		timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (workspace, role)
);
COMMENT ON TABLE @extschema@.workspace_roles IS
	'Workspaces mapped to roles (grant_workspace): a mapped workspace''s runs, nodes, events, approvals and spend are its roles'' alone.';
REVOKE ALL ON TABLE @extschema@.workspace_roles FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.workspace_roles', '');

CREATE FUNCTION @extschema@.workspace_visible(workspace text)
	RETURNS boolean
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_workspace_visible';
COMMENT ON FUNCTION @extschema@.workspace_visible(text) IS
	'Whether current_user may see a workspace: it is mapped to no role, or current_user is a member of one of its roles (or bypasses row-level security); inside the engine''s own functions, the role that called them.  Executable by all: the row-level security policies ask it.';

CREATE FUNCTION @extschema@.run_visible(run uuid)
	RETURNS boolean
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_run_visible';
COMMENT ON FUNCTION @extschema@.run_visible(uuid) IS
	'workspace_visible() of a run''s workspace, for the policies of the tables keyed by run.';

/*
 * timeline(): free text (reasons, who decided, worker names, provider
 * messages) could hold a line feed that forges what looks like another
 * event line, or a terminal escape sequence.  Every line is now passed
 * through escape_text(), which shows control characters as \n, \xNN ...
 */
CREATE FUNCTION @extschema@.escape_text(t text)
	RETURNS text
	LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_escape_text';
COMMENT ON FUNCTION @extschema@.escape_text(text) IS
	'The text on one line: control characters and line separators shown as \n, \r, \t, \xNN or \uNNNN.';
REVOKE ALL ON FUNCTION @extschema@.escape_text(text) FROM PUBLIC;

-- The queries of timeline(), replay() and verify_run() are PL/pgSQL
-- functions of one statement, not SQL functions: PostgreSQL plans the
-- statements of a SQL function (one that cannot be inlined, as none with
-- SET can) again at every call, and PL/pgSQL keeps their plans for the
-- session.  Checking every run of a database with verify_run() spent
-- most of its 8 ms per run planning (bench/README.md, "Replay and
-- verify_run keep their plans").  Each reads one run by key, whatever the
-- run, so the generic plan from the first call (where the plan cache
-- would plan the first five calls afresh, and one more to compare).
-- #variable_conflict use_column keeps a SQL function's rule that a column
-- wins over a parameter of the same name.
CREATE FUNCTION @extschema@.timeline_body(run uuid)
	RETURNS SETOF text
	LANGUAGE plpgsql STABLE
	SET search_path = pg_catalog, pg_temp
	SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
SELECT @extschema@.escape_text(to_char(e.at, 'HH24:MI:SS.MS') || ' ' || e.type ||
	   coalesce(' ' || CASE e.type
		WHEN 'RUN_STARTED' THEN
			format('run=%s workflow=%s@%s nodes=%s input=%s%s', e.run_id, e.data->>'workflow',
				   e.data->>'version', jsonb_array_length(e.data->'nodes'),
				   CASE WHEN length((e.data->'input')::text) > 80
						THEN left((e.data->'input')::text, 79) || '…'
						ELSE (e.data->'input')::text END,
				   coalesce(' forked from ' || (e.data->'forked_from'->>'run') || ' at '
							|| (e.data->'forked_from'->>'node'), ''))
		WHEN 'STEP_STARTED' THEN
			format('%s attempt %s by %s', e.node, e.attempt, e.data->>'worker')
		WHEN 'STEP_COMPLETED' THEN
			CASE WHEN e.data ? 'reused'
				 THEN format('%s → reused the output of run %s', e.node, e.data->'reused'->>'run')
				 ELSE format('%s → ok (%sms)', e.node, e.data->>'duration_ms') END
		WHEN 'STEP_FAILED' THEN
			format('%s%s → %s%s%s', e.node, coalesce(' attempt ' || e.attempt, ''), e.data->>'class',
				   coalesce(': ' || (e.data->'error'->>'message'), ''),
				   CASE WHEN (e.data->>'final')::boolean THEN ' (final)' ELSE '' END)
		WHEN 'STEP_RETRIED' THEN
			format('%s → attempt %s in %sms', e.node, e.data->>'next_attempt', e.data->>'delay_ms')
		WHEN 'NODES_SPAWNED' THEN
			format('%s → %s', e.node,
				   (SELECT string_agg(x->>'id', ', ') FROM jsonb_array_elements(e.data->'nodes') x))
		WHEN 'RUN_CHECKPOINTED' THEN
			format('%s attempt %s saved %s bytes', e.node, e.attempt, e.data->>'bytes')
		WHEN 'LLM_REQUESTED' THEN
			format('%s attempt %s call %s → %s %s (sent)', e.node, e.attempt, e.data->>'call',
				   e.data->>'provider', e.data->>'model')
		WHEN 'LLM_CALLED' THEN
			format('%s attempt %s call %s ← %s%s in %sms, %s+%s tokens, %s USD', e.node, e.attempt,
				   e.data->>'call', e.data->>'outcome', coalesce(': ' || (e.data->>'error'), ''),
				   e.data->>'latency_ms', e.data->>'tokens_in', e.data->>'tokens_out',
				   e.data->>'cost_usd')
		WHEN 'LLM_CHARGED' THEN
			format('%s attempt %s call %s charged %s USD, %s tokens: %s', e.node, e.attempt,
				   e.data->>'call', e.data->'usage'->>'usd', e.data->'usage'->>'tokens',
				   e.data->>'reason')
		WHEN 'SELF_CORRECTION' THEN
			format('%s correction %s/%s: %s', e.node, e.data->>'correction',
				   e.data->>'max_corrections', e.data->>'error')
		WHEN 'BUDGET_EXCEEDED' THEN
			CASE WHEN e.data->>'scope' = 'workspace' THEN
				format('%s workspace %s spent %s USD / %s tokens (%s), budget %s USD / %s tokens',
					   e.node, e.data->>'workspace', e.data->>'spent_usd', e.data->>'spent_tokens',
					   e.data->>'period', coalesce(e.data->>'budget_usd', '-'),
					   coalesce(e.data->>'budget_tokens', '-'))
			ELSE
				format('%s usage %s USD / %s tokens%s, budget %s USD / %s tokens', e.node,
					   e.data->>'usage_usd', e.data->>'usage_tokens',
					   CASE WHEN e.data ? 'child_usage_usd' THEN
						   format(' (child runs %s USD / %s tokens)', e.data->>'child_usage_usd',
								  e.data->>'child_usage_tokens') ELSE '' END,
					   coalesce(e.data->>'budget_usd', '-'), coalesce(e.data->>'budget_tokens', '-'))
			END
		WHEN 'APPROVAL_REQUESTED' THEN
			format('%s gate=%s approval=%s waiting for %s%s', e.node, e.data->>'gate',
				   e.data->>'approval', coalesce(e.data->>'approver_role', 'any approver'),
				   coalesce(' until ' || (e.data->>'expires_at'), ''))
		WHEN 'APPROVAL_GRANTED' THEN
			format('%s by=%s reason=%s', e.node, coalesce(e.data->>'by', e.data->>'role'),
				   quote_literal(coalesce(e.data->>'reason', '')))
		WHEN 'APPROVAL_REJECTED' THEN
			format('%s by=%s reason=%s', e.node, coalesce(e.data->>'by', e.data->>'role'),
				   quote_literal(coalesce(e.data->>'reason', '')))
		WHEN 'APPROVAL_ESCALATED' THEN
			format('%s gate=%s from %s to %s until %s', e.node, e.data->>'gate',
				   coalesce(e.data->>'from', 'any approver'), e.data->>'to', e.data->>'expires_at')
		WHEN 'APPROVAL_EXPIRED' THEN
			format('%s gate=%s → %s by timeout', e.node, e.data->>'gate', e.data->>'outcome')
		WHEN 'RUN_COMPLETED' THEN
			format('→ succeeded, %s nodes (%sms)', e.data->>'nodes', e.data->>'duration_ms')
		WHEN 'RUN_FAILED' THEN
			format('→ failed%s (%s), skipped %s, revoked %s',
				   coalesce(' at ' || (e.data->>'node'), ''), e.data->>'reason',
				   e.data->'skipped', e.data->'revoked')
		WHEN 'NODES_REQUEUED' THEN
			format('%s requeued by %s%s, max_attempts %s, back: %s', e.node, e.data->>'by',
				   coalesce(' reason=' || quote_literal(e.data->>'reason'), ''),
				   e.data->>'max_attempts', e.data->'revived')
		WHEN 'RUN_CANCELLED' THEN
			format('→ cancelled%s, cancelled %s, revoked %s',
				   coalesce(': ' || (e.data->>'reason'), ''), e.data->'cancelled', e.data->'revoked')
		ELSE
			concat_ws(' ', e.node, left(e.data::text, 120))
	   END, ''))
  FROM @extschema@.events e
 WHERE e.run_id = timeline_body.run AND @extschema@.run_visible(timeline_body.run)
 ORDER BY e.seq;
END
$$;
COMMENT ON FUNCTION @extschema@.timeline_body(uuid) IS
	'The query of timeline(), which runs it as the extension''s owner for its caller; not for direct use.';
REVOKE ALL ON FUNCTION @extschema@.timeline_body(uuid) FROM PUBLIC;
CREATE OR REPLACE FUNCTION @extschema@.timeline(run uuid)
	RETURNS SETOF text
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_query_door';
COMMENT ON FUNCTION @extschema@.timeline(uuid) IS
	'The run''s history as readable lines, oldest first; free text is shown with control characters escaped.';

/*
 * The allow-list takes ports (an entry without one allows the scheme's
 * default port only), and IPv6 forms that embed an IPv4 address are judged
 * by it.  llm_address_allowed() shows what the connect-time check decides.
 */
CREATE FUNCTION @extschema@.llm_address_allowed(address inet, port integer,
												 scheme text DEFAULT 'https')
	RETURNS boolean
	LANGUAGE c STABLE STRICT
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_llm_address_allowed';
COMMENT ON FUNCTION @extschema@.llm_address_allowed(inet, integer, text) IS
	'Whether the scheduler would connect to this address and port for an LLM call, under vectorbea.llm_allowed_hosts.';
REVOKE ALL ON FUNCTION @extschema@.llm_address_allowed(inet, integer, text) FROM PUBLIC;

/*
 * Dead letters can be requeued: requeue() gives a node that failed for good
 * a new attempt budget, and its run runs again with the nodes its failure
 * had closed; requeue_dead() does it for every dead letter a filter
 * matches.  replay() knows the new event, NODES_REQUEUED.
 */
CREATE FUNCTION @extschema@.requeue(task_id bigint, reason text DEFAULT NULL)
	RETURNS boolean
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_requeue';
COMMENT ON FUNCTION @extschema@.requeue(bigint, text) IS
	'Gives a node that failed for good a new attempt budget; its failed run runs again with the nodes its failure closed.';
REVOKE ALL ON FUNCTION @extschema@.requeue(bigint, text) FROM PUBLIC;

CREATE FUNCTION @extschema@.requeue_dead(filter jsonb DEFAULT '{}', reason text DEFAULT NULL)
	RETURNS integer
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_requeue_dead';
COMMENT ON FUNCTION @extschema@.requeue_dead(jsonb, text) IS
	'Requeues every dead letter the filter matches (run, workspace, workflow, activity, node, class, failed_after, failed_before); returns how many.';
REVOKE ALL ON FUNCTION @extschema@.requeue_dead(jsonb, text) FROM PUBLIC;

-- A run's budget covers its child runs (run nodes, below): a child gets
-- what its parent has left as its own budget, and its spend comes back to
-- the parent when it ends, beside the parent's own usage (usage_usd stays
-- the run's own, which a workspace's spend adds up once per run).  Added
-- here, before replay and verify_run, which read them.
ALTER TABLE @extschema@.runs ADD COLUMN child_usage_usd numeric NOT NULL DEFAULT 0;
ALTER TABLE @extschema@.runs ADD COLUMN child_usage_tokens bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.runs.child_usage_usd IS
	'What the child runs of this run spent in USD, booked when each ended (their own children''s included); counts against budget_usd with usage_usd.';
COMMENT ON COLUMN @extschema@.runs.child_usage_tokens IS
	'What the child runs of this run spent in tokens, booked when each ended (their own children''s included); counts against budget_tokens with usage_tokens.';

CREATE FUNCTION @extschema@.replay_parts(run uuid, upto bigint DEFAULT NULL)
	RETURNS TABLE (part text, key text, state jsonb)
	LANGUAGE plpgsql STABLE
	SET search_path = pg_catalog, pg_temp
	SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH ev AS (
	SELECT e.seq, e.type, e.node, e.attempt, e.data
	  FROM @extschema@.events e
	 WHERE e.run_id = replay_parts.run AND (replay_parts.upto IS NULL OR e.seq <= replay_parts.upto)
	   -- a run of a workspace the caller may not see has no history for it
	   AND @extschema@.run_visible(replay_parts.run)
), started AS (
	SELECT ev.data FROM ev WHERE ev.type = 'RUN_STARTED'
), added AS (
	-- a spec leaves out a field that has its default (docs/concepts.md)
	SELECT spec.value->>'id' AS node,
		   '{"kind": "task", "depends_on": []}'::jsonb || spec.value AS spec,
		   CASE WHEN ev.type = 'NODES_SPAWNED' THEN ev.node END AS spawned_by
	  FROM ev, jsonb_array_elements(ev.data->'nodes') AS spec
	 WHERE ev.type IN ('RUN_STARTED', 'NODES_SPAWNED', 'COMPENSATION_STARTED')
), marks AS (
	SELECT ev.node, ev.seq,
		   CASE ev.type WHEN 'STEP_STARTED' THEN 'running'
						WHEN 'STEP_COMPLETED' THEN 'succeeded'
						WHEN 'STEP_RETRIED' THEN 'ready'
						WHEN 'STEP_FAILED' THEN 'failed'
						ELSE 'waiting' END AS status
	  FROM ev
	 WHERE ev.type IN ('STEP_STARTED', 'STEP_COMPLETED', 'STEP_RETRIED', 'APPROVAL_REQUESTED',
					   'TIMER_STARTED', 'SIGNAL_AWAITED', 'CHILD_RUN_STARTED')
		OR (ev.type = 'STEP_FAILED' AND (ev.data->>'final')::boolean)
	UNION ALL
	SELECT closed.node, ev.seq,
		   CASE WHEN ev.type IN ('RUN_FAILED', 'COMPENSATION_STARTED', 'COMPENSATION_FAILED')
					 AND closed.list = 'skipped'
				THEN 'skipped' ELSE 'cancelled' END
	  FROM ev,
		   LATERAL (SELECT x, 'skipped' FROM jsonb_array_elements_text(ev.data->'skipped') x
					UNION ALL
					SELECT x, 'cancelled' FROM jsonb_array_elements_text(ev.data->'cancelled') x
					UNION ALL
					SELECT x, 'revoked' FROM jsonb_array_elements_text(ev.data->'revoked') x)
			   AS closed(node, list)
	 WHERE ev.type IN ('RUN_FAILED', 'RUN_CANCELLED', 'COMPENSATION_STARTED', 'COMPENSATION_FAILED')
	UNION ALL
	-- A requeued node and the nodes its run's failure had closed are open
	-- again: no mark, so their status is derived from their dependencies.
	SELECT reopened.node, ev.seq, NULL
	  FROM ev,
		   LATERAL (SELECT ev.data->>'requeued'
					UNION ALL
					SELECT x FROM jsonb_array_elements_text(ev.data->'revived') x) AS reopened(node)
	 WHERE ev.type = 'NODES_REQUEUED'
), last_mark AS (
	SELECT DISTINCT ON (node) node, status FROM marks ORDER BY node, seq DESC
), node_events AS (
	-- Each node's attempts and its last completion and failure, in one
	-- pass over the history: a subquery per node scanned all of it for
	-- every node, quadratic in the run's size (a minute at 10,000 nodes).
	SELECT ev.node,
		   count(*) FILTER (WHERE ev.type IN ('STEP_STARTED', 'TIMER_STARTED', 'SIGNAL_AWAITED',
											 'CHILD_RUN_STARTED')) AS attempts,
		   max(ev.seq) FILTER (WHERE ev.type = 'STEP_COMPLETED') AS completed_seq,
		   max(ev.seq) FILTER (WHERE ev.type = 'STEP_FAILED') AS failed_seq
	  FROM ev
	 WHERE ev.node IS NOT NULL
	 GROUP BY ev.node
), per_node AS (
	SELECT a.node, coalesce(ne.attempts, 0) AS attempts,
		   completed.data->'output' AS output, failed.data->'error' AS error,
		   lm.status AS marked
	  FROM added a
	  LEFT JOIN node_events ne ON ne.node = a.node
	  LEFT JOIN ev completed ON completed.seq = ne.completed_seq
	  LEFT JOIN ev failed ON failed.seq = ne.failed_seq
	  LEFT JOIN last_mark lm ON lm.node = a.node
), unmet AS (
	-- the nodes with a dependency that has not succeeded (last mark)
	SELECT DISTINCT a.node
	  FROM added a
	 CROSS JOIN LATERAL jsonb_array_elements_text(a.spec->'depends_on') AS dep(node)
	  LEFT JOIN last_mark lm ON lm.node = dep.node AND lm.status = 'succeeded'
	 WHERE lm.node IS NULL
), gate_events AS (
	SELECT ev.seq, ev.type, ev.node, ev.data, ev.data->>'approval' AS id
	  FROM ev
	 WHERE ev.type IN ('APPROVAL_REQUESTED', 'APPROVAL_GRANTED', 'APPROVAL_REJECTED',
					   'APPROVAL_ESCALATED', 'APPROVAL_EXPIRED', 'APPROVAL_VOTED')
), gate_decided AS (
	SELECT DISTINCT ON (id) id, type, data
	  FROM gate_events
	 WHERE type IN ('APPROVAL_GRANTED', 'APPROVAL_REJECTED', 'APPROVAL_EXPIRED')
	 ORDER BY id, seq
), gates AS (
	-- A gate nobody decided is closed by the end of its run (or the start
	-- of its compensation), which writes no event of the gate's own.
	SELECT o.id, jsonb_build_object(
			   'node', o.node,
			   'gate', o.data->'gate',
			   'kind', coalesce(o.data->'kind', '"approval"'),
			   'status', CASE d.type
						   WHEN 'APPROVAL_GRANTED' THEN 'approved'
						   WHEN 'APPROVAL_REJECTED' THEN 'rejected'
						   WHEN 'APPROVAL_EXPIRED' THEN
							   CASE d.data->>'outcome' WHEN 'approved' THEN 'approved' ELSE 'expired' END
						   ELSE CASE WHEN EXISTS (
										 SELECT 1 FROM ev
										  WHERE ev.seq > o.seq
											AND ev.type IN ('RUN_FAILED', 'RUN_CANCELLED', 'COMPENSATION_STARTED'))
									 THEN 'closed' ELSE 'pending' END
						 END,
			   'escalation_level', (SELECT count(*) FROM gate_events g
									 WHERE g.id = o.id AND g.type = 'APPROVAL_ESCALATED'),
			   'approver_role', coalesce((SELECT g.data->'to' FROM gate_events g
										   WHERE g.id = o.id AND g.type = 'APPROVAL_ESCALATED'
										   ORDER BY g.seq DESC LIMIT 1),
										 o.data->'approver_role'),
			   'decided_by', CASE d.type WHEN 'APPROVAL_EXPIRED' THEN '"vectorbea: timeout"'
										 ELSE d.data->'by' END,
			   'decision', d.data->'decision',
			   'votes', (SELECT count(*) FROM gate_events g
						  WHERE g.id = o.id AND g.type = 'APPROVAL_VOTED')) AS state
	  FROM gate_events o LEFT JOIN gate_decided d ON d.id = o.id
	 WHERE o.type = 'APPROVAL_REQUESTED'
), state AS (
	SELECT a.node, a.spec, a.spawned_by, p.attempts, p.output, p.error,
		   coalesce(p.marked, CASE WHEN u.node IS NULL THEN 'ready' ELSE 'pending' END) AS status
	  FROM added a JOIN per_node p ON p.node = a.node
	  LEFT JOIN unmet u ON u.node = a.node
)
SELECT 'run', NULL::text, jsonb_build_object(
		   'run', replay_parts.run,
		   'workflow', s.data->'workflow',
		   'version', s.data->'version',
		   'input', s.data->'input',
		   'status', coalesce((SELECT CASE ev.type WHEN 'RUN_COMPLETED' THEN 'succeeded'
												   WHEN 'RUN_FAILED' THEN 'failed'
												   WHEN 'NODES_REQUEUED' THEN 'running'
												   WHEN 'COMPENSATION_STARTED' THEN 'compensating'
												   WHEN 'RUN_PAUSED' THEN 'paused'
												   WHEN 'RUN_RESUMED' THEN ev.data->>'to'
												   ELSE 'cancelled' END
								 FROM ev WHERE ev.type IN ('RUN_COMPLETED', 'RUN_FAILED', 'RUN_CANCELLED',
														   'NODES_REQUEUED', 'COMPENSATION_STARTED',
														   'RUN_PAUSED', 'RUN_RESUMED')
								ORDER BY ev.seq DESC LIMIT 1), 'running'),
		   'events', (SELECT count(*) FROM ev),
		   'upto', (SELECT max(ev.seq) FROM ev),
		   'usage', jsonb_build_object(
				'tokens', (SELECT coalesce(sum((ev.data->'usage'->>'tokens')::bigint), 0)
							 FROM ev WHERE ev.type IN ('STEP_COMPLETED', 'STEP_FAILED', 'LLM_CALLED', 'LLM_CHARGED')),
				'usd', (SELECT coalesce(sum((ev.data->'usage'->>'usd')::numeric), 0)
						  FROM ev WHERE ev.type IN ('STEP_COMPLETED', 'STEP_FAILED', 'LLM_CALLED', 'LLM_CHARGED'))),
		   -- a requeue books the children its run's failure abandoned
		   'child_usage', jsonb_build_object(
				'tokens', (SELECT coalesce(sum((ev.data->'child_usage'->>'tokens')::bigint), 0)
							 FROM ev WHERE ev.type IN ('STEP_COMPLETED', 'STEP_FAILED', 'NODES_REQUEUED')),
				'usd', (SELECT coalesce(sum((ev.data->'child_usage'->>'usd')::numeric), 0)
						  FROM ev WHERE ev.type IN ('STEP_COMPLETED', 'STEP_FAILED', 'NODES_REQUEUED'))))
  FROM started s
UNION ALL
SELECT 'node', st.node, jsonb_build_object(
		   'kind', st.spec->'kind',
		   'activity', st.spec->'activity',
		   'depends_on', st.spec->'depends_on',
		   'status', st.status,
		   'attempts', st.attempts,
		   'output', st.output,
		   'error', st.error,
		   'spawned_by', st.spawned_by)
  FROM state st
 WHERE EXISTS (SELECT FROM started)
UNION ALL
SELECT 'gate', g.id, g.state
  FROM gates g
 WHERE EXISTS (SELECT FROM started);
END
$$;
COMMENT ON FUNCTION @extschema@.replay_parts(uuid, bigint) IS
	'The state replay() rebuilds, as rows: the run''s, then one per node and one per gate; not for direct use.';
REVOKE ALL ON FUNCTION @extschema@.replay_parts(uuid, bigint) FROM PUBLIC;

CREATE FUNCTION @extschema@.replay_body(run uuid, upto bigint DEFAULT NULL)
	RETURNS jsonb
	LANGUAGE plpgsql STABLE
	SET search_path = pg_catalog, pg_temp
	SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
RETURN (
WITH p AS MATERIALIZED (
	SELECT * FROM @extschema@.replay_parts(replay_body.run, replay_body.upto)
)
SELECT r.state || jsonb_build_object(
		   'nodes', coalesce((SELECT jsonb_object_agg(n.key, n.state) FROM p n WHERE n.part = 'node'),
							 '{}'::jsonb),
		   'gates', coalesce((SELECT jsonb_object_agg(g.key, g.state) FROM p g WHERE g.part = 'gate'),
							 '{}'::jsonb))
  FROM p r
 WHERE r.part = 'run');
END
$$;
COMMENT ON FUNCTION @extschema@.replay_body(uuid, bigint) IS
	'The query of replay(), which runs it as the extension''s owner for its caller; not for direct use.';
REVOKE ALL ON FUNCTION @extschema@.replay_body(uuid, bigint) FROM PUBLIC;
CREATE OR REPLACE FUNCTION @extschema@.replay(run uuid, upto bigint DEFAULT NULL)
	RETURNS jsonb
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_query_door';
COMMENT ON FUNCTION @extschema@.replay(uuid, bigint) IS
	'The run''s state rebuilt from its events alone, optionally as of event upto.';

-- The graph's edges in both directions: a node lists the nodes that
-- depend on it, so that a node that succeeds releases its dependents by
-- the unique key (run_id, node), where it read every pending node of its
-- run to find those whose depends_on names it: each completion cost in
-- proportion to what the run still had to do, and a run of a thousand
-- two-step branches cost a thousand rows read per completion
-- (bench/README.md, "Dependents by key").  Written by the engine with the
-- nodes that name it (src/state.c, add_nodes), NULL when no node depends
-- on this one; filled here for the nodes an upgraded database has.
ALTER TABLE @extschema@.nodes ADD COLUMN dependents text[];
COMMENT ON COLUMN @extschema@.nodes.dependents IS
	'The nodes of the run whose depends_on names this node (NULL: none), kept by the engine as nodes are added; a node that succeeds releases these.';
UPDATE @extschema@.nodes p
   SET dependents = k.nodes
  FROM (SELECT c.run_id, dep.node AS parent, pg_catalog.array_agg(c.node) AS nodes
		  FROM @extschema@.nodes c, pg_catalog.unnest(c.depends_on) AS dep(node)
		 GROUP BY c.run_id, dep.node) k
 WHERE p.run_id OPERATOR(pg_catalog.=) k.run_id AND p.node OPERATOR(pg_catalog.=) k.parent;

/*
 * verify_run(): a run of a workspace the caller may not see (tenants,
 * above) does not exist for it, as replay() has no history of it: the
 * function reads the tables as their owner, whom row-level security lets
 * by, so it asks run_visible() itself.
 */
CREATE FUNCTION @extschema@.verify_run_body(run uuid)
	RETURNS SETOF text
	LANGUAGE plpgsql STABLE
	SET search_path = pg_catalog, pg_temp
	SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
WITH r AS (
	SELECT * FROM @extschema@.runs WHERE id = verify_run_body.run AND @extschema@.run_visible(verify_run_body.run)
), parts AS MATERIALIZED (
	-- the replayed state as rows: a run whose nodes' outputs together pass
	-- what one jsonb value holds (256 MB) is checked too, which replay()
	-- cannot return
	SELECT * FROM @extschema@.replay_parts(verify_run_body.run)
), h AS (
	SELECT (SELECT p.state FROM parts p WHERE p.part = 'run') AS s
), seqs AS (
	SELECT count(*) AS n, coalesce(max(seq), 0) AS top
	  FROM @extschema@.events WHERE run_id = verify_run_body.run AND @extschema@.run_visible(verify_run_body.run)
), table_nodes AS (
	-- The output is compared apart from the rest: carried inside the
	-- states it was copied at every step, and a run of two 135 MB outputs
	-- took 30 s to check (bench/README.md).
	SELECT n.node, jsonb_build_object(
			   'kind', n.kind, 'activity', n.activity, 'depends_on', to_jsonb(n.depends_on),
			   'status', n.status, 'attempts', n.attempt,
			   'error', n.error, 'spawned_by', n.spawned_by) AS state,
		   coalesce(n.output, 'null') AS output
	  FROM @extschema@.nodes n WHERE n.run_id = verify_run_body.run AND @extschema@.run_visible(verify_run_body.run)
), history_nodes AS (
	SELECT p.key AS node, p.state - 'output' AS state, coalesce(p.state->'output', 'null') AS output
	  FROM parts p WHERE p.part = 'node'
), pairs AS (
	SELECT coalesce(t.node, hn.node) AS node, t.state AS t, hn.state AS hs,
		   t.output AS t_output, hn.output AS hs_output
	  FROM table_nodes t FULL JOIN history_nodes hn ON hn.node = t.node
), listed_dependents AS (
	-- the dependents column against the nodes whose depends_on (checked
	-- against the history above) names the node
	SELECT n.node, (SELECT pg_catalog.array_agg(x.node ORDER BY x.node)
					  FROM pg_catalog.unnest(n.dependents) AS x(node)) AS listed
	  FROM @extschema@.nodes n WHERE n.run_id = verify_run_body.run AND @extschema@.run_visible(verify_run_body.run)
), named_dependents AS (
	SELECT dep.node, pg_catalog.array_agg(c.node ORDER BY c.node) AS named
	  FROM @extschema@.nodes c, pg_catalog.unnest(c.depends_on) AS dep(node)
	 WHERE c.run_id = verify_run_body.run AND @extschema@.run_visible(verify_run_body.run)
	 GROUP BY dep.node
), table_gates AS (
	SELECT a.id::text AS id, jsonb_build_object(
			   'node', a.node, 'gate', a.gate, 'kind', a.kind, 'status', a.status,
			   'escalation_level', a.escalation_level, 'approver_role', a.approver_role,
			   'decided_by', a.decided_by, 'decision', a.decision,
			   'votes', (SELECT count(*) FROM @extschema@.approval_votes v
						  WHERE v.approval_id = a.id)) AS state
	  FROM @extschema@.approvals a
	 WHERE a.run_id = verify_run_body.run AND @extschema@.run_visible(verify_run_body.run)
), gate_pairs AS (
	SELECT coalesce(t.id, hg.key) AS id, t.state AS t, hg.value AS hs
	  FROM table_gates t
	  FULL JOIN (SELECT p.key, p.state AS value FROM parts p WHERE p.part = 'gate') hg ON hg.key = t.id
)
SELECT msg FROM (
	SELECT 0 AS o, NULL::text AS node, 'run does not exist' AS msg
	 WHERE NOT EXISTS (SELECT 1 FROM r) AND (SELECT s FROM h) IS NULL
	UNION ALL
	SELECT 1, NULL, 'run is missing from the table'
	 WHERE NOT EXISTS (SELECT 1 FROM r) AND (SELECT s FROM h) IS NOT NULL
	UNION ALL
	SELECT 1, NULL, 'run has no RUN_STARTED event in the history'
	  FROM r WHERE (SELECT s FROM h) IS NULL
	UNION ALL
	SELECT 2, NULL, format('run status is %s in the table but %s in the history',
						   r.status, h.s->>'status')
	  FROM r, h WHERE r.status IS DISTINCT FROM h.s->>'status'
	UNION ALL
	SELECT 3, NULL, format('event sequence has gaps: %s events numbered up to %s',
						   seqs.n, seqs.top)
	  FROM seqs WHERE seqs.n <> seqs.top
	UNION ALL
	SELECT 3, NULL, format('runs.last_seq is %s but the last event is %s', r.last_seq, seqs.top)
	  FROM r, seqs WHERE r.last_seq <> seqs.top
	UNION ALL
	SELECT 4, NULL, format('runs.open_nodes is %s but %s nodes are open', r.open_nodes,
						   (SELECT count(*) FROM @extschema@.nodes n WHERE n.run_id = r.id
							   AND n.status IN ('pending', 'ready', 'running', 'waiting')))
	  FROM r
	 WHERE r.open_nodes <> (SELECT count(*) FROM @extschema@.nodes n WHERE n.run_id = r.id
							   AND n.status IN ('pending', 'ready', 'running', 'waiting'))
	UNION ALL
	SELECT 4, NULL, format('run usage is %s tokens / %s USD in the table but %s / %s in the history',
						   r.usage_tokens, r.usage_usd, h.s->'usage'->>'tokens', h.s->'usage'->>'usd')
	  FROM r, h
	 WHERE r.usage_tokens <> (h.s->'usage'->>'tokens')::bigint
		OR r.usage_usd <> (h.s->'usage'->>'usd')::numeric
	UNION ALL
	SELECT 4, NULL, format('child runs'' usage is %s tokens / %s USD in the table but %s / %s in the history',
						   r.child_usage_tokens, r.child_usage_usd, h.s->'child_usage'->>'tokens',
						   h.s->'child_usage'->>'usd')
	  FROM r, h
	 WHERE r.child_usage_tokens <> (h.s->'child_usage'->>'tokens')::bigint
		OR r.child_usage_usd <> (h.s->'child_usage'->>'usd')::numeric
	UNION ALL
	SELECT 5, p.node, format('node %s is in the table but not in the history', p.node)
	  FROM pairs p WHERE p.hs IS NULL
	UNION ALL
	SELECT 5, p.node, format('node %s is in the history but not in the table', p.node)
	  FROM pairs p WHERE p.t IS NULL
	UNION ALL
	SELECT 6, p.node, format('node %s: %s is %s in the table but %s in the history',
							 p.node, f.key, p.t->f.key, p.hs->f.key)
	  FROM pairs p, jsonb_each(p.t) f
	 WHERE p.hs IS NOT NULL AND p.t->f.key IS DISTINCT FROM p.hs->f.key
	UNION ALL
	SELECT 6, p.node, format('node %s: output is %s in the table but %s in the history',
							 p.node, p.t_output, p.hs_output)
	  FROM pairs p
	 WHERE p.t IS NOT NULL AND p.hs IS NOT NULL AND p.t_output IS DISTINCT FROM p.hs_output
	UNION ALL
	SELECT 6, l.node, format('node %s: dependents is %s in the table but %s depend on it',
							 l.node, coalesce(l.listed::text, 'NULL'), coalesce(d.named::text, 'no nodes'))
	  FROM listed_dependents l LEFT JOIN named_dependents d ON d.node = l.node
	 WHERE l.listed IS DISTINCT FROM d.named
	UNION ALL
	SELECT 7, NULL, format('approval %s (gate %s) is in the table but not in the history',
						   g.id, g.t->'gate')
	  FROM gate_pairs g WHERE g.hs IS NULL
	UNION ALL
	SELECT 7, NULL, format('approval %s (gate %s) is in the history but not in the table',
						   g.id, g.hs->'gate')
	  FROM gate_pairs g WHERE g.t IS NULL
	UNION ALL
	SELECT 8, NULL, format('approval %s (gate %s): %s is %s in the table but %s in the history',
						   g.id, g.t->'gate', f.key, g.t->f.key, g.hs->f.key)
	  FROM gate_pairs g, jsonb_each(g.t) f
	 WHERE g.hs IS NOT NULL AND g.t->f.key IS DISTINCT FROM g.hs->f.key
) d
ORDER BY o, node, msg;
END
$$;
COMMENT ON FUNCTION @extschema@.verify_run_body(uuid) IS
	'The query of verify_run(), which runs it as the extension''s owner for its caller; not for direct use.';
REVOKE ALL ON FUNCTION @extschema@.verify_run_body(uuid) FROM PUBLIC;
CREATE OR REPLACE FUNCTION @extschema@.verify_run(run uuid)
	RETURNS SETOF text
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_query_door';
COMMENT ON FUNCTION @extschema@.verify_run(uuid) IS
	'Differences between the run replayed from its events and the tables; no rows means consistent.';

/*
 * Pictures of a run and the difference between two runs (issue 15, part):
 * graph() draws the living graph as Mermaid or Graphviz dot, with each
 * node's state, kind and attempts, dependencies as solid arrows and spawn
 * provenance as dashed ones, and gates with their decisions;
 * timeline_chart() draws when each attempt ran and each gate waited as a
 * Mermaid gantt chart; diff_runs() lists, node by node, what differs
 * between two runs.  All three read the tables and the history only.
 */
CREATE FUNCTION @extschema@.graph_body(run uuid, format text DEFAULT 'mermaid')
	RETURNS text
	LANGUAGE plpgsql STABLE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result text;
BEGIN
	IF run IS NULL OR format IS NULL THEN
		RAISE EXCEPTION 'run and format must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF format NOT IN ('mermaid', 'dot') THEN
		RAISE EXCEPTION 'unknown graph format "%"',
			CASE WHEN pg_catalog.length(format) <= 40 THEN format
				 ELSE pg_catalog.left(format, 20) || '… (' || pg_catalog.length(format) || ' characters)' END
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use ''mermaid'' (for Markdown, GitHub, Mermaid Live) or ''dot'' (for Graphviz).';
	END IF;
	-- a run of a workspace the caller may not see does not exist for it
	IF NOT EXISTS (SELECT FROM @extschema@.runs r WHERE r.id = graph_body.run AND @extschema@.run_visible(r.id)) THEN
		RAISE EXCEPTION 'run % does not exist', run USING ERRCODE = 'undefined_object';
	END IF;

	WITH n AS (
		SELECT x.node, x.kind, x.status, x.attempt, x.max_attempts, x.depends_on, x.spawned_by,
			   'n' || pg_catalog.row_number() OVER (ORDER BY x.id) AS key,
			   pg_catalog.row_number() OVER (ORDER BY x.id) AS ord,
			   (SELECT a.gate || ': ' || a.status
					   || coalesce(' by ' || coalesce(a.decided_by, a.decided_role::text), '')
				  FROM @extschema@.approvals a
				 WHERE a.run_id = x.run_id AND a.node = x.node
				 ORDER BY a.id DESC LIMIT 1) AS gate,
			   -- one pass over the history (a hashed subplan), not one per node
			   x.node IN (SELECT e.node FROM @extschema@.events e
						   WHERE e.run_id = graph_body.run AND e.type = 'STEP_COMPLETED'
							 AND e.data ? 'reused') AS reused
		  FROM @extschema@.nodes x WHERE x.run_id = graph_body.run
	), labelled AS (
		SELECT n.*,
			   @extschema@.escape_text(n.node) AS title,
			   @extschema@.escape_text(n.kind || ' · ' || n.status
				   || CASE WHEN n.reused THEN ' · reused' ELSE '' END
				   || CASE WHEN n.attempt > 1 THEN ' · attempt ' || n.attempt || '/' || n.max_attempts
						   ELSE '' END) AS sub,
			   @extschema@.escape_text(n.gate) AS gate_text,
			   CASE n.status WHEN 'pending' THEN '#eeeeee' WHEN 'ready' THEN '#fff3cd'
							 WHEN 'running' THEN '#cce5ff' WHEN 'waiting' THEN '#ffe0b2'
							 WHEN 'succeeded' THEN '#d4edda' WHEN 'failed' THEN '#f8d7da'
							 WHEN 'skipped' THEN '#e2e3e5' ELSE '#d6d8db' END AS colour
		  FROM n
	), dep AS (
		SELECT p.key AS from_key, c.key AS to_key, p.node AS from_node, c.node AS to_node
		  FROM labelled c, pg_catalog.unnest(c.depends_on) AS d(node)
		  JOIN labelled p ON p.node = d.node
	), spawn AS (
		SELECT p.key AS from_key, c.key AS to_key, p.node AS from_node, c.node AS to_node
		  FROM labelled c JOIN labelled p ON p.node = c.spawned_by
	)
	SELECT CASE graph_body.format
		WHEN 'mermaid' THEN
			'flowchart TD' || E'\n'
			|| coalesce((SELECT pg_catalog.string_agg(
						'  ' || l.key
						|| CASE l.kind WHEN 'llm' THEN '(["' WHEN 'approval' THEN '{{"' ELSE '["' END
						-- Mermaid reads a label as HTML and its #...; as entity codes:
						-- every character that could make markup is written as a code,
						-- '#' first, '%' too (a %%{...}%% directive counts wherever it
						-- stands), and only the engine's own line breaks are <br/>.
						|| pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
							   pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
								   l.title || E'\n' || l.sub || coalesce(E'\n' || l.gate_text, ''),
								   '#', '#35;'), '%', '#37;'), '"', '#quot;'), '<', '#lt;'), '>', '#gt;'),
								   '&', '#amp;'),
							   E'\n', '<br/>')
						|| CASE l.kind WHEN 'llm' THEN '"])' WHEN 'approval' THEN '"}}' ELSE '"]' END
						|| ':::' || l.status, E'\n' ORDER BY l.ord) FROM labelled l) || E'\n', '')
			|| coalesce((SELECT pg_catalog.string_agg('  ' || d.from_key || ' --> ' || d.to_key, E'\n'
						ORDER BY d.from_node, d.to_node) FROM dep d) || E'\n', '')
			|| coalesce((SELECT pg_catalog.string_agg('  ' || s.from_key || ' -. spawned .-> ' || s.to_key, E'\n'
						ORDER BY s.from_node, s.to_node) FROM spawn s) || E'\n', '')
			|| '  classDef pending fill:#eeeeee,stroke:#9e9e9e' || E'\n'
			|| '  classDef ready fill:#fff3cd,stroke:#b8860b' || E'\n'
			|| '  classDef running fill:#cce5ff,stroke:#1565c0' || E'\n'
			|| '  classDef waiting fill:#ffe0b2,stroke:#e65100' || E'\n'
			|| '  classDef succeeded fill:#d4edda,stroke:#2e7d32' || E'\n'
			|| '  classDef failed fill:#f8d7da,stroke:#c62828' || E'\n'
			|| '  classDef skipped fill:#e2e3e5,stroke:#757575' || E'\n'
			|| '  classDef cancelled fill:#d6d8db,stroke:#424242' || E'\n'
		ELSE
			'digraph run {' || E'\n'
			|| '  rankdir=TB;' || E'\n'
			|| '  node [style="filled,rounded", fontname="Helvetica", fontsize=11];' || E'\n'
			|| '  edge [fontname="Helvetica", fontsize=9];' || E'\n'
			|| coalesce((SELECT pg_catalog.string_agg(
						'  "' || l.key || '" [label="'
						-- A dot string ends at an unescaped '"', and Graphviz reads
						-- &...; in a label as an entity (&#10; a line, &#1; a
						-- control character that breaks the SVG): '\' and '"' are
						-- backslashed, '&' written as &amp;, and only the engine's
						-- own line breaks become \n.
						|| pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
							   l.title || E'\n' || l.sub || coalesce(E'\n' || l.gate_text, ''),
							   '\', '\\'), '"', '\"'), '&', '&amp;'), E'\n', '\n')
						|| '", shape=' || CASE l.kind WHEN 'llm' THEN 'ellipse' WHEN 'approval' THEN 'hexagon'
													  ELSE 'box' END
						|| ', fillcolor="' || l.colour || '"];', E'\n' ORDER BY l.ord) FROM labelled l) || E'\n', '')
			|| coalesce((SELECT pg_catalog.string_agg('  "' || d.from_key || '" -> "' || d.to_key || '";', E'\n'
						ORDER BY d.from_node, d.to_node) FROM dep d) || E'\n', '')
			|| coalesce((SELECT pg_catalog.string_agg('  "' || s.from_key || '" -> "' || s.to_key
						|| '" [style=dashed, color="#757575", label="spawned"];', E'\n'
						ORDER BY s.from_node, s.to_node) FROM spawn s) || E'\n', '')
			|| '}' || E'\n'
		END
	  INTO result;
	RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.graph_body(uuid, text) IS
	'The query of graph(), which runs it as the extension''s owner for its caller; not for direct use.';
REVOKE ALL ON FUNCTION @extschema@.graph_body(uuid, text) FROM PUBLIC;
CREATE FUNCTION @extschema@.graph(run uuid, format text DEFAULT 'mermaid')
	RETURNS text
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_query_door';
COMMENT ON FUNCTION @extschema@.graph(uuid, text) IS
	'The run''s living graph as Mermaid (default) or Graphviz dot: nodes with kind, state, attempts, reuse by a fork and gate decisions; dependencies solid, spawns dashed.';
REVOKE ALL ON FUNCTION @extschema@.graph(uuid, text) FROM PUBLIC;

CREATE FUNCTION @extschema@.timeline_chart_body(run uuid)
	RETURNS text
	LANGUAGE plpgsql STABLE
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	result text;
	r record;
BEGIN
	IF run IS NULL THEN
		RAISE EXCEPTION 'run must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT x.workflow, x.workflow_version, x.finished_at INTO r
	  FROM @extschema@.runs x WHERE x.id = timeline_chart_body.run AND @extschema@.run_visible(x.id);
	IF NOT FOUND THEN
		RAISE EXCEPTION 'run % does not exist', run USING ERRCODE = 'undefined_object';
	END IF;

	WITH ev AS (
		SELECT e.seq, e.type, e.node, e.attempt, e.data, e.at
		  FROM @extschema@.events e WHERE e.run_id = timeline_chart_body.run
	), run_end AS (
		-- A run that a requeue brought back is not over: what it runs now
		-- goes on until now, not until the end it had before.
		SELECT CASE WHEN r.finished_at IS NULL THEN @extschema@.clock()
					ELSE coalesce(pg_catalog.max(ev.at) FILTER (WHERE ev.type IN ('RUN_COMPLETED', 'RUN_FAILED',
																				   'RUN_CANCELLED')),
								  r.finished_at) END AS at
		  FROM ev
	), next_end AS (
		-- For each event, the first later one that ends its node's attempt,
		-- its node's gate, or the run: one pass each in descending order (a
		-- lookup per attempt read the history after it, quadratic in the
		-- run's size).
		SELECT ev.seq,
			   pg_catalog.min(ev.seq) FILTER (WHERE ev.type IN ('STEP_COMPLETED', 'STEP_FAILED',
																 'APPROVAL_REQUESTED'))
				   OVER (PARTITION BY ev.node ORDER BY ev.seq DESC
						 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS attempt_end,
			   pg_catalog.min(ev.seq) FILTER (WHERE ev.type IN ('APPROVAL_GRANTED', 'APPROVAL_REJECTED',
																 'APPROVAL_EXPIRED'))
				   OVER (PARTITION BY ev.node ORDER BY ev.seq DESC
						 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS gate_end,
			   pg_catalog.min(ev.seq) FILTER (WHERE ev.type IN ('RUN_FAILED', 'RUN_CANCELLED',
																 'COMPENSATION_STARTED'))
				   OVER (ORDER BY ev.seq DESC
						 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS run_end
		  FROM ev
	), bars AS (
		-- An attempt: from its STEP_STARTED to the event that ended it (a
		-- task that asked for a gate handed over to it: done); a sleep,
		-- signal or child run, from the start of its wait to its end.  The
		-- run's end cuts what is still open (crit), even when a requeue
		-- brings the run back later: the next attempt is a bar of its own.
		SELECT s.node, s.seq,
			   CASE s.type WHEN 'STEP_STARTED' THEN 'attempt ' || s.attempt
				   ELSE CASE s.type WHEN 'TIMER_STARTED' THEN 'sleep'
								   WHEN 'SIGNAL_AWAITED' THEN 'signal ' || (s.data->>'name'::text)
								   ELSE 'child run' END
						|| CASE WHEN s.attempt > 1 THEN ' (attempt ' || s.attempt || ')' ELSE '' END
			   END AS label,
			   s.at AS from_at,
			   coalesce(fin.at, (SELECT at FROM run_end)) AS to_at,
			   CASE fin.type WHEN 'STEP_COMPLETED' THEN 'done' WHEN 'APPROVAL_REQUESTED' THEN 'done'
				   WHEN 'STEP_FAILED' THEN 'crit'
				   ELSE CASE WHEN fin.type IS NULL AND r.finished_at IS NULL THEN 'active' ELSE 'crit' END
			   END AS tag
		  FROM ev s
		  JOIN next_end nx ON nx.seq = s.seq
		  LEFT JOIN ev fin ON fin.seq = LEAST(nx.attempt_end, nx.run_end)
		 WHERE s.type IN ('STEP_STARTED', 'TIMER_STARTED', 'SIGNAL_AWAITED', 'CHILD_RUN_STARTED')
		UNION ALL
		-- A gate: from its request to its decision, expiry or the run's end
		-- (which closes it, even when a requeue brings the run back).
		SELECT q.node, q.seq, 'gate ' || (q.data->>'gate') || coalesce(' ' || dec.outcome, ''),
			   q.at, coalesce(dec.at, (SELECT at FROM run_end)),
			   CASE dec.outcome WHEN 'approved' THEN 'done' WHEN 'rejected' THEN 'crit'
				   ELSE CASE WHEN dec.outcome IS NULL AND r.finished_at IS NULL THEN 'active' ELSE 'crit' END
			   END
		  FROM ev q
		  JOIN next_end nx ON nx.seq = q.seq
		  LEFT JOIN ev d ON d.seq = LEAST(nx.gate_end, nx.run_end)
		  CROSS JOIN LATERAL (SELECT d.at,
									 CASE WHEN d.seq IS NOT NULL THEN
										 CASE d.type WHEN 'APPROVAL_GRANTED' THEN 'approved'
													 WHEN 'APPROVAL_REJECTED' THEN 'rejected'
													 WHEN 'APPROVAL_EXPIRED' THEN d.data->>'outcome'
													 ELSE 'closed' END
									 END AS outcome) dec
		 WHERE q.type = 'APPROVAL_REQUESTED'
	)
	SELECT 'gantt' || E'\n'
		   || '  title ' || pg_catalog.replace(@extschema@.escape_text(r.workflow), ':', ' ')
		   || ' v' || r.workflow_version || E'\n'
		   || '  dateFormat x' || E'\n'
		   || '  axisFormat %H:%M:%S' || E'\n'
		   || coalesce((SELECT pg_catalog.string_agg(sec.block, '' ORDER BY sec.first_seq)
						  FROM (SELECT pg_catalog.min(b.seq) AS first_seq,
									   '  section ' || pg_catalog.translate(@extschema@.escape_text(b.node), ':#;', '   ')
									   || E'\n'
									   || pg_catalog.string_agg('  ' || pg_catalog.translate(b.label, ':#;,', '    ')
											|| ' :' || b.tag || ', '
											|| (pg_catalog.date_part('epoch', b.from_at) * 1000)::bigint || ', '
											|| greatest((pg_catalog.date_part('epoch', b.to_at) * 1000)::bigint,
																   (pg_catalog.date_part('epoch', b.from_at) * 1000)::bigint + 1)
											|| E'\n', '' ORDER BY b.seq) AS block
								  FROM bars b GROUP BY b.node) sec), '')
	  INTO result;
	RETURN result;
END
$$;
COMMENT ON FUNCTION @extschema@.timeline_chart_body(uuid) IS
	'The query of timeline_chart(), which runs it as the extension''s owner for its caller; not for direct use.';
REVOKE ALL ON FUNCTION @extschema@.timeline_chart_body(uuid) FROM PUBLIC;
CREATE FUNCTION @extschema@.timeline_chart(run uuid)
	RETURNS text
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_query_door';
COMMENT ON FUNCTION @extschema@.timeline_chart(uuid) IS
	'When each attempt of the run ran and each gate waited, as a Mermaid gantt chart (times in epoch milliseconds).';
REVOKE ALL ON FUNCTION @extschema@.timeline_chart(uuid) FROM PUBLIC;

-- The two runs are unnamed: the result's columns are a and b, as the
-- contract names them, and a function's arguments and columns share names.
CREATE FUNCTION @extschema@.diff_runs_body(uuid, uuid)
	RETURNS TABLE (node text, what text, a jsonb, b jsonb)
	LANGUAGE plpgsql STABLE
	SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF $1 IS NULL OR $2 IS NULL THEN
		RAISE EXCEPTION 'both runs must be given' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT FROM @extschema@.runs r WHERE r.id = $1 AND @extschema@.run_visible(r.id)) THEN
		RAISE EXCEPTION 'run % (a) does not exist', $1 USING ERRCODE = 'undefined_object';
	END IF;
	IF NOT EXISTS (SELECT FROM @extschema@.runs r WHERE r.id = $2 AND @extschema@.run_visible(r.id)) THEN
		RAISE EXCEPTION 'run % (b) does not exist', $2 USING ERRCODE = 'undefined_object';
	END IF;
	RETURN QUERY
	WITH node_events AS (
		-- Each node's reuse and usage in one pass over the two histories (a
		-- lookup per node read the run's whole history for every node).
		-- A run node's child's spend, booked on the run when the node's
		-- attempt ends, is in that event's child_usage.
		SELECT e.run_id, e.node,
			   pg_catalog.bool_or(e.type = 'STEP_COMPLETED' AND e.data ? 'reused') AS reused,
			   pg_catalog.sum(coalesce((e.data->'usage'->>'tokens')::bigint, 0)
							  + coalesce((e.data->'child_usage'->>'tokens')::bigint, 0))
				   FILTER (WHERE e.type IN ('STEP_COMPLETED', 'STEP_FAILED', 'LLM_CALLED', 'LLM_CHARGED'))
				   AS tokens,
			   pg_catalog.sum(coalesce((e.data->'usage'->>'usd')::numeric, 0)
							  + coalesce((e.data->'child_usage'->>'usd')::numeric, 0))
				   FILTER (WHERE e.type IN ('STEP_COMPLETED', 'STEP_FAILED', 'LLM_CALLED', 'LLM_CHARGED'))
				   AS usd
		  FROM @extschema@.events e
		 WHERE e.run_id IN ($1, $2) AND e.node IS NOT NULL
		 GROUP BY e.run_id, e.node
	), per_node AS (
		SELECT x.run_id, x.node AS id,
			   -- A node a fork reused was not run: only its status and output compare.
			   coalesce(u.reused, false) AS reused,
			   pg_catalog.jsonb_build_object(
				   'status', pg_catalog.to_jsonb(x.status),
				   'attempts', pg_catalog.to_jsonb(x.attempt),
				   'output', x.output,
				   'tokens', pg_catalog.to_jsonb(coalesce(u.tokens, 0)),
				   'cost_usd', pg_catalog.to_jsonb(coalesce(u.usd, 0)),
				   'latency_ms', pg_catalog.to_jsonb(
						(pg_catalog.date_part('epoch', x.finished_at - x.started_at) * 1000)::bigint)) AS facts
		  FROM @extschema@.nodes x
		  LEFT JOIN node_events u ON u.run_id = x.run_id AND u.node = x.node
		 WHERE x.run_id IN ($1, $2)
	), pairs AS (
		SELECT coalesce(pa.id, pb.id) AS id, pa.facts AS fa, pb.facts AS fb,
			   coalesce(pa.reused, false) OR coalesce(pb.reused, false) AS reused
		  FROM (SELECT * FROM per_node WHERE run_id = $1) pa
		  FULL JOIN (SELECT * FROM per_node WHERE run_id = $2) pb ON pb.id = pa.id
	), facts AS (
		SELECT p.id, k.key AS what, p.fa->k.key AS va, p.fb->k.key AS vb
		  FROM pairs p,
			   LATERAL (VALUES ('status'), ('attempts'), ('output'), ('tokens'), ('cost_usd'),
							   ('latency_ms')) AS k(key)
		 WHERE p.fa IS NOT NULL AND p.fb IS NOT NULL
		   AND (NOT p.reused OR k.key IN ('status', 'output'))
	)
	SELECT p.id, CASE WHEN p.fa IS NULL THEN 'only in b' ELSE 'only in a' END,
		   p.fa->'status', p.fb->'status'
	  FROM pairs p WHERE p.fa IS NULL OR p.fb IS NULL
	UNION ALL
	-- Outputs that are both objects are compared key by key.
	SELECT f.id, 'output.' || k.key, f.va->k.key, f.vb->k.key
	  FROM facts f,
		   LATERAL (SELECT pg_catalog.jsonb_object_keys(f.va)
					UNION
					SELECT pg_catalog.jsonb_object_keys(f.vb)) AS k(key)
	 WHERE f.what = 'output' AND pg_catalog.jsonb_typeof(f.va) = 'object'
	   AND pg_catalog.jsonb_typeof(f.vb) = 'object'
	   AND (f.va->k.key) IS DISTINCT FROM (f.vb->k.key)
	UNION ALL
	SELECT f.id, f.what, f.va, f.vb
	  FROM facts f
	 WHERE f.va IS DISTINCT FROM f.vb
	   AND NOT (f.what = 'output' AND pg_catalog.jsonb_typeof(f.va) = 'object'
				AND pg_catalog.jsonb_typeof(f.vb) = 'object')
	ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION @extschema@.diff_runs_body(uuid, uuid) IS
	'The query of diff_runs(), which runs it as the extension''s owner for its caller; not for direct use.';
REVOKE ALL ON FUNCTION @extschema@.diff_runs_body(uuid, uuid) FROM PUBLIC;
CREATE FUNCTION @extschema@.diff_runs(uuid, uuid)
	RETURNS TABLE (node text, what text, a jsonb, b jsonb)
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_query_door';
COMMENT ON FUNCTION @extschema@.diff_runs(uuid, uuid) IS
	'What differs between two runs, node by node: nodes only in one, status, attempts, output (key by key), tokens, cost and latency (a node a fork reused: status and output only).';
REVOKE ALL ON FUNCTION @extschema@.diff_runs(uuid, uuid) FROM PUBLIC;

/*
 * Retention: purge_runs() deletes finished runs older than a cut-off with
 * their nodes, events and approvals, a bounded batch a call, through the
 * one engine path past the append-only triggers; with the setting
 * vectorbea.retention the scheduler does it on its own.  Each batch is
 * counted in purge_batches, which writes no event.
 */
CREATE TABLE @extschema@.purge_batches (
	id			bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	purged_at	timestamptz NOT NULL,
	runs		bigint NOT NULL CHECK (runs > 0),
	nodes		bigint NOT NULL,
	events		bigint NOT NULL,
	approvals	bigint NOT NULL,
	purged_by	text NOT NULL
);
COMMENT ON TABLE @extschema@.purge_batches IS
	'One row per batch of finished runs purged (purge_runs() or vectorbea.retention): how many runs, nodes, events and approvals, when, by whom.';
REVOKE ALL ON TABLE @extschema@.purge_batches FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.purge_batches', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.purge_batches', 'id')::regclass, '');

-- The append-only trigger in C: it refuses what the PL/pgSQL one of 0.1.0
-- refused, with the same errors, and lets a purge's DELETE of events and
-- approvals pass, recognised by a flag of the purging backend
-- (src/append_only.c), not by session_replication_role = replica: changing
-- that setting empties the backend's plan cache.
CREATE OR REPLACE FUNCTION @extschema@.refuse_event_change() RETURNS trigger
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_refuse_event_change';

-- Retention finds finished runs by when they finished.
CREATE INDEX runs_finished_idx ON @extschema@.runs (finished_at)
	WHERE finished_at IS NOT NULL;

CREATE FUNCTION @extschema@.purge_runs(older_than interval,
									   statuses text[] DEFAULT '{succeeded,failed,cancelled}',
									   max_runs integer DEFAULT 500)
	RETURNS integer
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_purge_runs';
COMMENT ON FUNCTION @extschema@.purge_runs(interval, text[], integer) IS
	'Deletes up to max_runs finished runs older than older_than with their nodes, events and approvals; returns how many.  Call it again until it returns 0.';
REVOKE ALL ON FUNCTION @extschema@.purge_runs(interval, text[], integer) FROM PUBLIC;

/*
 * Forks (issue 15, part): fork_run() reruns a finished run from one of its
 * nodes on, reusing every output recorded before it, with changes to the
 * rerun nodes' input or llm fields.
 */
CREATE FUNCTION @extschema@.fork_run(run uuid, from_node text, changes jsonb DEFAULT '{}',
									 version integer DEFAULT NULL)
	RETURNS uuid
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_fork_run';
COMMENT ON FUNCTION @extschema@.fork_run(uuid, text, jsonb, integer) IS
	'Starts a new run of a finished run''s workflow version (or of the version given) and input that reuses the outputs recorded before from_node and runs from_node, the version''s new and changed nodes and everything downstream of them again, with changes per node (input, llm fields).';
REVOKE ALL ON FUNCTION @extschema@.fork_run(uuid, text, jsonb, integer) FROM PUBLIC;

/*
 * Schedules through pg_cron (issue 14, part): schedule_workflow() makes a
 * pg_cron job that starts a run of a workflow at each tick, with an
 * idempotency key per tick and role, so a tick that runs twice starts one
 * run.  They run as the role that schedules them (SECURITY INVOKER: pg_cron
 * runs a job as its owner), which needs EXECUTE on start_run.
 *
 * pg_cron runs the job's command with the database's and the role's
 * search_path, which the database owner sets: every name in the command is
 * schema-qualified, operators included, so that no object the owner creates
 * runs with the rights of a more privileged role that scheduled the job.
 * Before the job is made, a first run is started and rolled back, so that a
 * schedule whose every tick would fail (an unknown workflow, an input too
 * large, options or a workspace its role may not use) is refused at once.
 */
CREATE FUNCTION @extschema@.schedule_workflow(name text, schedule text, workflow text,
											  input jsonb DEFAULT '{}', options jsonb DEFAULT '{}')
	RETURNS bigint
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tick text;
	command text;
	job bigint;
BEGIN
	IF name IS NULL OR schedule IS NULL OR workflow IS NULL OR input IS NULL OR options IS NULL THEN
		RAISE EXCEPTION 'name, schedule, workflow, input and options must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- pg_cron's job names are 63 bytes; 10 of them are "vectorbea:".
	IF name !~ '^[A-Za-z0-9_.:-]{1,53}$' THEN
		-- a long name is cut in the message, as every quoted value is
		RAISE EXCEPTION 'invalid schedule name "%"',
			CASE WHEN pg_catalog.length(name) <= 40 THEN name
				 ELSE pg_catalog.left(name, 20) || '… (' || pg_catalog.length(name) || ' characters)' END
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Names are 1 to 53 characters: letters, digits, "_", "-", "." and ":".';
	END IF;
	IF pg_catalog.octet_length(schedule) > 100 THEN
		RAISE EXCEPTION 'invalid schedule "%… (% characters)"', pg_catalog.left(schedule, 20), pg_catalog.length(schedule)
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'A schedule is a cron expression such as "0 7 * * 1-5", or "N seconds".';
	END IF;
	IF pg_catalog.jsonb_typeof(input) <> 'object' THEN
		RAISE EXCEPTION 'run input must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'schedules need the pg_cron extension, which is not installed in this database'
			USING ERRCODE = 'feature_not_supported',
				  HINT = 'Install the Debian package postgresql-15-cron, add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron.';
	END IF;
	-- What every tick will do, done once and undone: its errors are the tick's.
	BEGIN
		PERFORM @extschema@.start_run(workflow, input, NULL, options);
		RAISE SQLSTATE 'VBDRY';
	EXCEPTION WHEN SQLSTATE 'VBDRY' THEN
		NULL;
	END;
	-- A tick's key: the minute for cron expressions, the second for
	-- pg_cron's "N seconds" schedules (any case, as pg_cron reads them),
	-- and the scheduling role, as pg_cron keeps one job per name and role.
	tick := CASE WHEN schedule ~* '^\s*\d+\s*seconds?\s*$' THEN 'YYYY-MM-DD"T"HH24:MI:SS'
				 ELSE 'YYYY-MM-DD"T"HH24:MI' END;
	command := pg_catalog.format(
		'SELECT vectorbea.start_run(%L, %L::pg_catalog.jsonb, %L::pg_catalog.text OPERATOR(pg_catalog.||) '
		'pg_catalog.to_char(pg_catalog.timezone(%L, pg_catalog.now()), %L), %L::pg_catalog.jsonb)',
		workflow, input::text,
		'schedule:' || name || '@' || pg_catalog.quote_ident(current_user::text) || ':',
		'UTC', tick, options::text);
	EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job USING 'vectorbea:' || name, schedule, command;
	RETURN job;
END
$$;
COMMENT ON FUNCTION @extschema@.schedule_workflow(text, text, text, jsonb, jsonb) IS
	'Creates (or replaces) the pg_cron job "vectorbea:<name>" of the calling role that starts a run of the workflow, with the input and start_run options given, at each tick of schedule (cron syntax, or "N seconds"), one run per tick.';
REVOKE ALL ON FUNCTION @extschema@.schedule_workflow(text, text, text, jsonb, jsonb) FROM PUBLIC;

CREATE FUNCTION @extschema@.unschedule_workflow(name text)
	RETURNS boolean
	LANGUAGE plpgsql
	SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	job bigint;
BEGIN
	IF name IS NULL THEN
		RAISE EXCEPTION 'name must not be null' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'schedules need the pg_cron extension, which is not installed in this database'
			USING ERRCODE = 'feature_not_supported',
				  HINT = 'Install the Debian package postgresql-15-cron, add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron.';
	END IF;
	-- The calling role's own job of that name (pg_cron keeps one per name
	-- and role); none: false.
	EXECUTE 'SELECT jobid FROM cron.job WHERE jobname = $1 AND username = current_user'
		INTO job USING 'vectorbea:' || name;
	IF job IS NULL THEN
		RETURN false;
	END IF;
	EXECUTE 'SELECT cron.unschedule($1)' USING job;
	RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.unschedule_workflow(text) IS
	'Removes the calling role''s pg_cron job of a schedule made by schedule_workflow(); false when it has none of that name.';
REVOKE ALL ON FUNCTION @extschema@.unschedule_workflow(text) FROM PUBLIC;

/*
 * Timers, signals and child runs (issue 14): three node kinds the engine
 * runs itself, without a worker.  A sleep node waits until a time; a
 * signal node waits for a named signal sent with send_signal(); a run node
 * starts another workflow as a child run and waits for it.  Any node may
 * also say not_before.  While a node waits, attempt_deadline is when the
 * scheduler ends the wait (the timer's time, the signal's timeout, the
 * child's timeout).
 */
-- (No CHECK lists the kinds: see "No CHECK constraints" further down.)
ALTER TABLE @extschema@.nodes ADD COLUMN wait jsonb;
ALTER TABLE @extschema@.nodes ADD COLUMN not_before text;
COMMENT ON COLUMN @extschema@.nodes.wait IS
	'The normalised "sleep", "signal" or "run" object of a node of that kind.';
COMMENT ON COLUMN @extschema@.nodes.not_before IS
	'The node''s not_before (a timestamp or a template): it is not started before that time.  available_at is ''infinity'' until the scheduler has read it.';
-- the scheduler: waits that end at a time.
CREATE INDEX nodes_wait_deadline_idx ON @extschema@.nodes (attempt_deadline)
	WHERE status = 'waiting' AND attempt_deadline IS NOT NULL;
-- the scheduler: nodes held by their not_before.
CREATE INDEX nodes_not_before_idx ON @extschema@.nodes (available_at)
	WHERE status = 'ready' AND not_before IS NOT NULL;
-- the scheduler: ready nodes it runs itself (sleep, signal, run and
-- approval nodes), which its passes start.  Without it their scan and the
-- next due time read every node of the table at every pass: the planner
-- found no index of ready nodes with no activity small enough.
CREATE INDEX nodes_engine_ready_idx ON @extschema@.nodes (available_at)
	WHERE status = 'ready' AND activity IS NULL;

ALTER TABLE @extschema@.runs ADD COLUMN parent_run uuid;
ALTER TABLE @extschema@.runs ADD COLUMN parent_node text;
COMMENT ON COLUMN @extschema@.runs.parent_run IS
	'The run whose run node started this one as a child (no foreign key: retention may purge a parent first).';
COMMENT ON COLUMN @extschema@.runs.parent_node IS
	'The run node of parent_run that waits for this child.';
ALTER TABLE @extschema@.runs ADD COLUMN tree_runs integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.runs.tree_runs IS
	'On a run that no run started: how many child runs its run nodes and theirs have started, at any depth (vectorbea.max_tree_runs bounds it); 0 on child runs.';
-- the scheduler: running children whose parent stopped waiting for them.
CREATE INDEX runs_running_children_idx ON @extschema@.runs (parent_run)
	WHERE parent_run IS NOT NULL AND status = 'running';

CREATE TABLE @extschema@.signals (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	run_id			uuid NOT NULL REFERENCES @extschema@.runs (id) ON DELETE CASCADE,
	name			text NOT NULL,
	payload			jsonb NOT NULL,
	idempotency_key	text,
	sent_at			timestamptz NOT NULL,
	sent_by			name NOT NULL DEFAULT session_user,
	delivered_to	bigint,
	delivered_at	timestamptz,
	UNIQUE (run_id, idempotency_key)
);
COMMENT ON TABLE @extschema@.signals IS
	'Signals sent to runs with send_signal(); each is delivered to one signal node, in the order sent.';
COMMENT ON COLUMN @extschema@.signals.delivered_to IS
	'The node (nodes.id) whose output the payload became; NULL while the signal waits for a node.';
CREATE INDEX signals_undelivered_idx ON @extschema@.signals (run_id, name, id)
	WHERE delivered_to IS NULL;
REVOKE ALL ON TABLE @extschema@.signals FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.signals', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.signals', 'id')::regclass, '');

CREATE FUNCTION @extschema@.send_signal(run uuid, name text, payload jsonb DEFAULT '{}',
										idempotency_key text DEFAULT NULL)
	RETURNS bigint
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_send_signal';
COMMENT ON FUNCTION @extschema@.send_signal(uuid, text, jsonb, text) IS
	'Sends a named signal to a running run: the first signal node of the run waiting for that name takes the payload as its output, or the next one to wait does.  Returns the signal''s id; a repeated idempotency key returns the first signal''s id and changes nothing.';
REVOKE ALL ON FUNCTION @extschema@.send_signal(uuid, text, jsonb, text) FROM PUBLIC;

/*
 * When things go wrong (issue 13): gates on failures and quorums.  A node
 * with on_exhausted "escalate", or an attempt in doubt under the policy
 * "ask", opens a gate of kind escalation or in_doubt instead of failing;
 * the person decides accept (output becomes the node's output), retry
 * (a fresh attempt budget, input optionally replaced) or fail.  An
 * approval node may need quorum approvals out of a list of approvers, each
 * of whom decides once (approval_votes).
 */
ALTER TABLE @extschema@.approvals ADD COLUMN kind text NOT NULL DEFAULT 'approval'
	CHECK (kind IN ('approval', 'escalation', 'in_doubt'));
ALTER TABLE @extschema@.approvals ADD COLUMN decision text
	CHECK (decision IN ('accept', 'retry', 'fail'));
ALTER TABLE @extschema@.approvals ADD COLUMN output jsonb;
ALTER TABLE @extschema@.approvals ADD COLUMN input jsonb;
ALTER TABLE @extschema@.approvals ADD COLUMN quorum integer CHECK (quorum > 0);
ALTER TABLE @extschema@.approvals ADD COLUMN approvers text[];
ALTER TABLE @extschema@.approvals ADD COLUMN approver_roles text[];
COMMENT ON COLUMN @extschema@.approvals.approver_roles IS
	'The entries of approvers that named a role when the gate opened: only its members count for them, even once the role is dropped; the other entries are people, matched with decided_by.';
COMMENT ON COLUMN @extschema@.approvals.kind IS
	'approval: an approval node or await_approval; escalation: a node out of attempts (on_exhausted "escalate"); in_doubt: an attempt cut by a crash (in_doubt "ask").';
COMMENT ON COLUMN @extschema@.approvals.decision IS
	'For escalation and in_doubt gates: accept (with status approved; output becomes the node''s output), retry (with status approved; input, when given, replaces the node''s input) or fail (with status rejected).';
COMMENT ON COLUMN @extschema@.approvals.quorum IS
	'How many of approvers must approve; each decides once (approval_votes).  NULL: the first decision settles the gate.';

CREATE TABLE @extschema@.approval_votes (
	approval_id	bigint NOT NULL REFERENCES @extschema@.approvals (id) ON DELETE CASCADE,
	voter		text NOT NULL,
	vote		text NOT NULL CHECK (vote IN ('approved', 'rejected')),
	decided_by	text,
	decided_role name NOT NULL,
	reason		text,
	decided_at	timestamptz NOT NULL,
	PRIMARY KEY (approval_id, voter)
);
COMMENT ON TABLE @extschema@.approval_votes IS
	'The individual decisions on a gate with a quorum: one per entry of its approvers.';
COMMENT ON COLUMN @extschema@.approval_votes.voter IS
	'The entry of approvers the decision counts for: the person (decided_by) or the role.';
REVOKE ALL ON TABLE @extschema@.approval_votes FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.approval_votes', '');

/*
 * Compensation (issue 13): a node may say how it is undone (compensate).
 * When its run fails, or is cancelled with compensate => true, the run
 * becomes compensating and the compensations of the nodes that succeeded
 * run as new nodes, one after another in reverse order of completion,
 * each pointing at its original (compensation_of).
 */
ALTER TABLE @extschema@.nodes ADD COLUMN compensate jsonb;
ALTER TABLE @extschema@.nodes ADD COLUMN compensation_of text;
COMMENT ON COLUMN @extschema@.nodes.compensate IS
	'The normalised node spec of the node''s compensation, run when its run fails or is cancelled with compensate => true.';
COMMENT ON COLUMN @extschema@.nodes.compensation_of IS
	'For a compensation node: the node of the run it undoes.';

/*
 * Kill switches (issue 12, part): a run or a whole workspace can be paused
 * (nothing of it is claimed or called until it resumes; work already
 * claimed may still be completed), and a provider or one of its models
 * disabled (no call to it is made; calls in flight are aborted).  Each is
 * recorded as events of the runs it touches, effective at commit, and
 * listed with its reason in vectorbea.controls.
 */
-- (No CHECK lists the statuses: see "No CHECK constraints" further down.)
ALTER TABLE @extschema@.runs ADD COLUMN paused jsonb;
COMMENT ON COLUMN @extschema@.runs.paused IS
	'While the run is paused: by whom (run or workspace), why, since when, and the status it resumes to.';

CREATE TABLE @extschema@.paused_workspaces (
	workspace	text PRIMARY KEY,
	reason		text,
	paused_by	name NOT NULL DEFAULT session_user,
	paused_at	timestamptz NOT NULL
);
COMMENT ON TABLE @extschema@.paused_workspaces IS
	'Workspaces paused with pause_workspace(): their runs are paused, new runs start paused.';
REVOKE ALL ON TABLE @extschema@.paused_workspaces FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.paused_workspaces', '');

CREATE TABLE @extschema@.disabled_models (
	provider	text NOT NULL,
	model		text NOT NULL,
	reason		text,
	disabled_by	name NOT NULL DEFAULT session_user,
	disabled_at	timestamptz NOT NULL,
	PRIMARY KEY (provider, model)
);
COMMENT ON TABLE @extschema@.disabled_models IS
	'Providers (model ''*'') and models disabled with disable_model(): no call to them is made.';
REVOKE ALL ON TABLE @extschema@.disabled_models FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.disabled_models', '');

CREATE FUNCTION @extschema@.pause_run(run uuid, reason text DEFAULT NULL)
	RETURNS boolean LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_pause_run';
COMMENT ON FUNCTION @extschema@.pause_run(uuid, text) IS
	'Pauses a running run: nothing of it is claimed or called until resume_run; its llm calls in flight are aborted.  False when it was paused already.  A compensating run is not paused.';
REVOKE ALL ON FUNCTION @extschema@.pause_run(uuid, text) FROM PUBLIC;

CREATE FUNCTION @extschema@.resume_run(run uuid)
	RETURNS boolean LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_resume_run';
COMMENT ON FUNCTION @extschema@.resume_run(uuid) IS
	'Resumes a paused run.  False when it was not paused.';
REVOKE ALL ON FUNCTION @extschema@.resume_run(uuid) FROM PUBLIC;

CREATE FUNCTION @extschema@.pause_workspace(workspace text, reason text DEFAULT NULL)
	RETURNS integer LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_pause_workspace';
COMMENT ON FUNCTION @extschema@.pause_workspace(text, text) IS
	'Pauses a workspace: every running run of it is paused, and runs started in it start paused, until resume_workspace.  Returns how many runs it paused.';
REVOKE ALL ON FUNCTION @extschema@.pause_workspace(text, text) FROM PUBLIC;

CREATE FUNCTION @extschema@.resume_workspace(workspace text)
	RETURNS integer LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_resume_workspace';
COMMENT ON FUNCTION @extschema@.resume_workspace(text) IS
	'Resumes a paused workspace and the runs its pause paused (not those paused one by one).  Returns how many runs it resumed.';
REVOKE ALL ON FUNCTION @extschema@.resume_workspace(text) FROM PUBLIC;

CREATE FUNCTION @extschema@.disable_model(provider text, model text DEFAULT '*', reason text DEFAULT NULL)
	RETURNS integer LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_disable_model';
COMMENT ON FUNCTION @extschema@.disable_model(text, text, text) IS
	'Disables a model of a provider (or, with ''*'', the provider): no call to it is made, calls in flight are aborted, and its llm nodes wait until enable_model.  Returns how many calls it aborted.';
REVOKE ALL ON FUNCTION @extschema@.disable_model(text, text, text) FROM PUBLIC;

CREATE FUNCTION @extschema@.enable_model(provider text, model text DEFAULT '*')
	RETURNS boolean LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_enable_model';
COMMENT ON FUNCTION @extschema@.enable_model(text, text) IS
	'Enables a model (or provider) disabled with disable_model.  False when it was not disabled.';
REVOKE ALL ON FUNCTION @extschema@.enable_model(text, text) FROM PUBLIC;

-- The view of what is paused or disabled (controls) comes after the
-- tenants' functions, which it asks.

/*
 * Concurrency limits (issue 12, part): at most max_running nodes of an
 * activity running at once, over every workspace ('*') or in one,
 * enforced where attempts start (claim_tasks, and the scheduler's claim of
 * llm nodes, activity vectorbea:llm).
 */
CREATE TABLE @extschema@.concurrency_limits (
	activity	text NOT NULL,
	workspace	text NOT NULL DEFAULT '*',
	max_running	integer NOT NULL CHECK (max_running > 0),
	set_by		name NOT NULL DEFAULT session_user,
	set_at		timestamptz NOT NULL,
	PRIMARY KEY (activity, workspace)
);
COMMENT ON TABLE @extschema@.concurrency_limits IS
	'At most max_running nodes of activity running at once, in workspace (''*'': over all of them).  Set with set_concurrency_limit().';
REVOKE ALL ON TABLE @extschema@.concurrency_limits FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.concurrency_limits', '');

CREATE FUNCTION @extschema@.set_concurrency_limit(activity text, max_running integer,
												  workspace text DEFAULT '*')
	RETURNS boolean LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_set_concurrency_limit';
COMMENT ON FUNCTION @extschema@.set_concurrency_limit(text, integer, text) IS
	'Sets how many nodes of an activity may run at once (in a workspace, or ''*'' for all); NULL removes the limit.  Returns whether a limit was there.';
REVOKE ALL ON FUNCTION @extschema@.set_concurrency_limit(text, integer, text) FROM PUBLIC;

/*
 * Budgets (issue 12, part): a workspace budget in USD and/or tokens per
 * calendar period (UTC day or month, or in total), with a policy at the
 * limit (fail the run, or pause it until the budget is raised).  Before
 * each llm call the worst case is reserved on its node (reserved_usd,
 * reserved_tokens) under the budget row's lock, so concurrent runs of a
 * workspace cannot overspend together.  A run's spend counts in the
 * period the run started in.
 */
ALTER TABLE @extschema@.nodes ADD COLUMN reserved_usd numeric;
ALTER TABLE @extschema@.nodes ADD COLUMN reserved_tokens bigint;
COMMENT ON COLUMN @extschema@.nodes.reserved_usd IS
	'The worst case of the llm call in flight, held against the run''s and the workspace''s budgets while the attempt runs.';
CREATE INDEX runs_workspace_idx ON @extschema@.runs (workspace, created_at);

-- A price is at most 1,000,000 USD per million tokens: with the token
-- counts bounded too, the cost of a call stays far inside a double, which
-- the budget checks compare it as (1e400 would not even convert).  0.1.0
-- took any price: one above the bound stops the update with the rows to
-- correct, not with the constraint's bare error.
DO $prices$
DECLARE
	over bigint;
	listed text;
BEGIN
	SELECT pg_catalog.count(*),
		   pg_catalog.string_agg(pg_catalog.format('%s/%s (%s source, input %s, output %s)',
								 p.provider, pg_catalog.left(p.model, 40), p.source,
								 p.input_usd_per_mtok, p.output_usd_per_mtok), '; ')
	  INTO over, listed
	  FROM (SELECT * FROM @extschema@.model_prices m
			 WHERE m.input_usd_per_mtok > 1000000::numeric OR m.output_usd_per_mtok > 1000000::numeric
			 ORDER BY m.provider, m.model, m.source LIMIT 5) p;
	IF over > 0 THEN
		RAISE EXCEPTION 'vectorbea 0.2.0 takes prices of at most 1000000 USD per million tokens, and model_prices has some above it'
			USING ERRCODE = 'check_violation',
				  DETAIL = pg_catalog.format('Above the bound: %s.', listed),
				  HINT = 'Correct or delete those rows (UPDATE vectorbea.model_prices SET input_usd_per_mtok = ..., output_usd_per_mtok = ... WHERE ...), then run ALTER EXTENSION vectorbea UPDATE again.';
	END IF;
END
$prices$;
ALTER TABLE @extschema@.model_prices ADD CONSTRAINT model_prices_at_most_1000000_usd_per_mtok
	CHECK (input_usd_per_mtok <= 1000000::numeric AND output_usd_per_mtok <= 1000000::numeric);

-- An edited list price becomes the user's (so pg_dump keeps it), which
-- collided with a user row of the same model: a bare unique_violation.
-- A user row wins over the list row anyway, so that edit is refused with
-- what to do instead.
CREATE OR REPLACE FUNCTION @extschema@.model_price_edited() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF OLD.source = 'list' AND EXISTS (
			SELECT FROM @extschema@.model_prices p
			 WHERE p.provider = NEW.provider AND p.model = NEW.model AND p.source = 'user') THEN
		RAISE EXCEPTION 'model "%" of provider "%" has a user price, which wins over its list price',
			CASE WHEN pg_catalog.length(NEW.model) <= 40 THEN NEW.model
				 ELSE pg_catalog.left(NEW.model, 20) || '… (' || pg_catalog.length(NEW.model) || ' characters)' END,
			NEW.provider
			USING ERRCODE = 'unique_violation',
				  DETAIL = 'Editing a list price makes it a user price, and a model has at most one.',
				  HINT = 'Edit the user row: add AND source = ''user'' to the UPDATE''s WHERE.';
	END IF;
	NEW.source := 'user';
	RETURN NEW;
END
$$;

-- A price under a provider no node can name prices nothing: a typo there
-- left every call of the model unpriced, and USD budgets blind to it.  A
-- trigger, not a CHECK, so that an upgrade keeps rows written before.
CREATE FUNCTION @extschema@.model_price_checked() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF NEW.provider NOT IN ('openai', 'anthropic') THEN
		RAISE EXCEPTION 'unknown provider "%" in model_prices',
			CASE WHEN pg_catalog.length(NEW.provider) <= 40 THEN NEW.provider
				 ELSE pg_catalog.left(NEW.provider, 20) || '… (' || pg_catalog.length(NEW.provider) || ' characters)' END
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'Providers: openai (any OpenAI-compatible endpoint: its models are priced under openai) and anthropic.';
	END IF;
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION @extschema@.model_price_checked() IS
	'Trigger function: a price names a provider a node can use.';
REVOKE ALL ON FUNCTION @extschema@.model_price_checked() FROM PUBLIC;
CREATE TRIGGER model_prices_checked
	BEFORE INSERT OR UPDATE OF provider ON @extschema@.model_prices
	FOR EACH ROW EXECUTE FUNCTION @extschema@.model_price_checked();

CREATE TABLE @extschema@.budgets (
	workspace	text PRIMARY KEY,
	usd			numeric CHECK (usd >= 0::numeric),
	tokens		bigint CHECK (tokens >= 0),
	period		text NOT NULL DEFAULT 'month' CHECK (period IN ('day', 'month', 'total')),
	on_exceed	text NOT NULL DEFAULT 'fail' CHECK (on_exceed IN ('fail', 'pause')),
	set_by		name NOT NULL DEFAULT session_user,
	set_at		timestamptz NOT NULL,
	CHECK (usd IS NOT NULL OR tokens IS NOT NULL)
);
COMMENT ON TABLE @extschema@.budgets IS
	'Workspace budgets, set with set_budget(): at most usd and/or tokens per period (UTC calendar day or month, or in total); on_exceed says what happens to a run whose call would cross it.';
REVOKE ALL ON TABLE @extschema@.budgets FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.budgets', '');

CREATE FUNCTION @extschema@.set_budget(workspace text, usd numeric, period text DEFAULT 'month',
									   tokens bigint DEFAULT NULL, on_exceed text DEFAULT 'fail')
	RETURNS integer LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_set_budget';
COMMENT ON FUNCTION @extschema@.set_budget(text, numeric, text, bigint, text) IS
	'Sets (or, with usd and tokens NULL, removes) a workspace''s budget; runs the budget had paused are resumed.  Returns how many.';
REVOKE ALL ON FUNCTION @extschema@.set_budget(text, numeric, text, bigint, text) FROM PUBLIC;

-- DESIGN.md's form, period interval: the one-day and one-month intervals
-- name the calendar periods; another span is refused by the text form.
-- No default for period, so that a call without one finds the text form
-- only (and an untyped '1 month' prefers text as well).
CREATE FUNCTION @extschema@.set_budget(workspace text, usd numeric, period interval,
									   tokens bigint DEFAULT NULL, on_exceed text DEFAULT 'fail')
	RETURNS integer LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_set_budget_interval';
COMMENT ON FUNCTION @extschema@.set_budget(text, numeric, interval, bigint, text) IS
	'set_budget with the period as an interval: ''1 day'' or ''1 month'' (the UTC calendar day or month).';
REVOKE ALL ON FUNCTION @extschema@.set_budget(text, numeric, interval, bigint, text) FROM PUBLIC;

CREATE FUNCTION @extschema@.set_run_budget(run uuid, usd numeric, tokens bigint DEFAULT NULL)
	RETURNS boolean LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_set_run_budget';
COMMENT ON FUNCTION @extschema@.set_run_budget(uuid, numeric, bigint) IS
	'Sets a run''s budget (NULL: none); a run its budget paused is resumed.  Returns whether it was resumed.';
REVOKE ALL ON FUNCTION @extschema@.set_run_budget(uuid, numeric, bigint) FROM PUBLIC;

-- A task node may say what an attempt of it may cost (estimate): while
-- it runs, from its claim to its end, that is held against the budgets
-- as an llm call's worst case is.
ALTER TABLE @extschema@.nodes ADD COLUMN estimate jsonb;
COMMENT ON COLUMN @extschema@.nodes.estimate IS
	'What an attempt of the node may cost ({"usd", "tokens"}): held against the budgets while it runs.';

CREATE VIEW @extschema@.spend AS
	SELECT 'workspace'::text AS scope, w.workspace, NULL::uuid AS run,
		   b.period, s.usd AS booked_usd, s.tokens AS booked_tokens,
		   coalesce(rs.usd, 0) AS reserved_usd, coalesce(rs.tokens, 0) AS reserved_tokens,
		   b.usd AS budget_usd, b.tokens AS budget_tokens,
		   NULL::numeric AS child_usage_usd, NULL::bigint AS child_usage_tokens
	  FROM (SELECT DISTINCT workspace FROM @extschema@.runs
			UNION SELECT workspace FROM @extschema@.budgets) w
	  LEFT JOIN @extschema@.budgets b ON b.workspace = w.workspace
	  CROSS JOIN LATERAL (
		SELECT coalesce(sum(r.usage_usd), 0) AS usd, coalesce(sum(r.usage_tokens), 0) AS tokens
		  FROM @extschema@.runs r
		 WHERE r.workspace = w.workspace
		   AND r.created_at >= CASE coalesce(b.period, 'total')
								 WHEN 'day' THEN pg_catalog.date_trunc('day', @extschema@.clock(), 'UTC')
								 WHEN 'month' THEN pg_catalog.date_trunc('month', @extschema@.clock(), 'UTC')
								 ELSE '-infinity' END) s
	  LEFT JOIN LATERAL (
		SELECT sum(coalesce(n.reserved_usd, (n.estimate->>'usd'::text)::numeric)) AS usd,
			   sum(coalesce(n.reserved_tokens, (n.estimate->>'tokens'::text)::bigint)) AS tokens
		  FROM @extschema@.nodes n JOIN @extschema@.runs r ON r.id = n.run_id
		 WHERE r.workspace = w.workspace AND n.status = 'running'
		   AND (n.reserved_usd IS NOT NULL OR n.estimate IS NOT NULL)) rs ON true
	 WHERE @extschema@.workspace_visible(w.workspace)
	UNION ALL
	SELECT 'run', r.workspace, r.id, NULL, r.usage_usd, r.usage_tokens,
		   coalesce((SELECT sum(CASE WHEN n.status = 'running'
									 THEN coalesce(n.reserved_usd, (n.estimate->>'usd'::text)::numeric)
									 ELSE n.reserved_usd END)
					   FROM @extschema@.nodes n WHERE n.run_id = r.id
						AND (n.status = 'running' OR (n.status = 'waiting' AND n.kind = 'run'))), 0),
		   coalesce((SELECT sum(CASE WHEN n.status = 'running'
									 THEN coalesce(n.reserved_tokens, (n.estimate->>'tokens'::text)::bigint)
									 ELSE n.reserved_tokens END)
					   FROM @extschema@.nodes n WHERE n.run_id = r.id
						AND (n.status = 'running' OR (n.status = 'waiting' AND n.kind = 'run'))), 0),
		   r.budget_usd, r.budget_tokens, r.child_usage_usd, r.child_usage_tokens
	  FROM @extschema@.runs r
	 WHERE @extschema@.workspace_visible(r.workspace);
COMMENT ON VIEW @extschema@.spend IS
	'Spend per workspace (in its budget''s current period; in total without a budget) and per run: booked and reserved (calls in flight; for a run, also what its waiting run nodes gave their child runs), in USD and tokens, with the budgets; per run, what its ended child runs spent (child_usage_usd, child_usage_tokens), which counts against its budgets.';
REVOKE ALL ON @extschema@.spend FROM PUBLIC;

/*
 * Rate limits (issue 12, part): requests and tokens per minute for a
 * workspace's calls to a provider (model '*') or one of its models, kept by
 * the scheduler: a call whose time has not come waits (RATE_LIMITED), it
 * does not fail.
 */
CREATE TABLE @extschema@.rate_limits (
	workspace			text NOT NULL,
	provider			text NOT NULL,
	model				text NOT NULL DEFAULT '*',
	requests_per_minute	integer CHECK (requests_per_minute > 0),
	tokens_per_minute	integer CHECK (tokens_per_minute > 0),
	set_by				name NOT NULL DEFAULT session_user,
	set_at				timestamptz NOT NULL,
	PRIMARY KEY (workspace, provider, model),
	CHECK (requests_per_minute IS NOT NULL OR tokens_per_minute IS NOT NULL)
);
COMMENT ON TABLE @extschema@.rate_limits IS
	'How many llm calls (and tokens, at worst) a workspace may send a provider, or one of its models, per minute.  Set with set_rate_limit().';
REVOKE ALL ON TABLE @extschema@.rate_limits FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.rate_limits', '');

CREATE FUNCTION @extschema@.set_rate_limit(workspace text, provider text,
										   requests_per_minute integer,
										   tokens_per_minute integer DEFAULT NULL,
										   model text DEFAULT '*')
	RETURNS boolean LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_set_rate_limit';
COMMENT ON FUNCTION @extschema@.set_rate_limit(text, text, integer, integer, text) IS
	'Sets (or, with both limits NULL, removes) how many requests and tokens per minute a workspace may send a provider (model ''*'') or one model.  Returns whether a limit was there.';
REVOKE ALL ON FUNCTION @extschema@.set_rate_limit(text, text, integer, integer, text) FROM PUBLIC;

-- The task path in batches (issue: the task path at the speed of a commit).
CREATE FUNCTION @extschema@.complete_tasks(task_ids bigint[], leases uuid[],
										    outputs jsonb[] DEFAULT NULL,
										    spawns jsonb[] DEFAULT NULL,
										    usages jsonb[] DEFAULT NULL)
	RETURNS integer
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_complete_tasks';
COMMENT ON FUNCTION @extschema@.complete_tasks(bigint[], uuid[], jsonb[], jsonb[], jsonb[]) IS
	'complete_task for many tasks at once, in one transaction; returns how many attempts succeeded by this call.';
REVOKE ALL ON FUNCTION @extschema@.complete_tasks(bigint[], uuid[], jsonb[], jsonb[], jsonb[]) FROM PUBLIC;

CREATE FUNCTION @extschema@.start_runs(workflow text, inputs jsonb[],
									    idempotency_keys text[] DEFAULT NULL,
									    options jsonb DEFAULT '{}')
	RETURNS SETOF uuid
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_start_runs';
COMMENT ON FUNCTION @extschema@.start_runs(text, jsonb[], text[], jsonb) IS
	'start_run for many inputs of one workflow in one call: one run per input, returned in the order of the inputs.';
REVOKE ALL ON FUNCTION @extschema@.start_runs(text, jsonb[], text[], jsonb) FROM PUBLIC;

CREATE FUNCTION @extschema@.grant_workspace(workspace text, role regrole)
	RETURNS boolean
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_grant_workspace';
COMMENT ON FUNCTION @extschema@.grant_workspace(text, regrole) IS
	'Maps a workspace to a role: from its first role on, only the members of its roles see and act on the workspace.  Returns false when the mapping was there.';
REVOKE ALL ON FUNCTION @extschema@.grant_workspace(text, regrole) FROM PUBLIC;

CREATE FUNCTION @extschema@.revoke_workspace(workspace text, role regrole)
	RETURNS boolean
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_revoke_workspace';
COMMENT ON FUNCTION @extschema@.revoke_workspace(text, regrole) IS
	'Removes a mapping of grant_workspace; a workspace left with no role is open again.  Returns whether the mapping was there.';
REVOKE ALL ON FUNCTION @extschema@.revoke_workspace(text, regrole) FROM PUBLIC;

-- Row-level security: the rows of a mapped workspace are its roles' alone.
-- The engine's functions read the tables as the extension's owner, whom
-- row-level security lets by; they check their caller themselves
-- (src/tenants.c).
ALTER TABLE @extschema@.runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_members ON @extschema@.runs
	USING (@extschema@.workspace_visible(workspace));
ALTER TABLE @extschema@.nodes ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_members ON @extschema@.nodes
	USING (@extschema@.run_visible(run_id));
ALTER TABLE @extschema@.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_members ON @extschema@.events
	USING (@extschema@.run_visible(run_id));
-- approvals has row-level security since 0.1.0 (approvals_for_approvers):
-- this policy narrows it (AS RESTRICTIVE: both must hold).
CREATE POLICY workspace_members ON @extschema@.approvals AS RESTRICTIVE
	USING (@extschema@.run_visible(run_id));
ALTER TABLE @extschema@.signals ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_members ON @extschema@.signals
	USING (@extschema@.run_visible(run_id));
-- The controls of a mapped workspace (why it is paused, its budget, its
-- limits) are its roles' too, and the operators' who may see it; the
-- views over them (controls, spend) filter for themselves.  A
-- concurrency limit of every workspace ('*') is seen by all.
ALTER TABLE @extschema@.paused_workspaces ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_members ON @extschema@.paused_workspaces
	USING (@extschema@.workspace_visible(workspace));
ALTER TABLE @extschema@.budgets ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_members ON @extschema@.budgets
	USING (@extschema@.workspace_visible(workspace));
ALTER TABLE @extschema@.rate_limits ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_members ON @extschema@.rate_limits
	USING (@extschema@.workspace_visible(workspace));
ALTER TABLE @extschema@.concurrency_limits ENABLE ROW LEVEL SECURITY;
CREATE POLICY workspace_members ON @extschema@.concurrency_limits
	USING (workspace = '*' OR @extschema@.workspace_visible(workspace));
-- A vote is seen with its gate, as approvals' policies decide for the
-- caller (the gate's approvers, in the caller's workspaces).
ALTER TABLE @extschema@.approval_votes ENABLE ROW LEVEL SECURITY;
CREATE POLICY with_its_gate ON @extschema@.approval_votes
	USING (EXISTS (SELECT FROM @extschema@.approvals a WHERE a.id = approval_id));
-- An idempotency key is its workspace's own: unique over all runs, one
-- tenant's key found another's run (its id, and whether a guessed input
-- was the one it started with) and kept the other from using it.
ALTER TABLE @extschema@.runs DROP CONSTRAINT runs_idempotency_key_key;
ALTER TABLE @extschema@.runs ADD CONSTRAINT runs_workspace_idempotency_key_key
	UNIQUE (workspace, idempotency_key);
-- Views read the tables as their owner, whom row-level security lets by:
-- the ones users read filter by workspace themselves (spend, above), as
-- security barriers, so that no cheaper condition of the caller's (a
-- function that prints its argument) sees a row before the filter does.
ALTER VIEW @extschema@.spend SET (security_barrier = true);
CREATE OR REPLACE VIEW @extschema@.provider_key_info WITH (security_barrier) AS
	SELECT workspace, provider, base_url, fingerprint, set_at, set_by
	  FROM @extschema@.provider_keys
	 WHERE @extschema@.workspace_visible(workspace);
CREATE OR REPLACE VIEW @extschema@.dead_letters WITH (security_barrier) AS
	SELECT n.run_id, r.workflow, r.workspace, n.id AS task_id, n.node, n.activity,
		   n.attempt, n.error, n.finished_at
	  FROM @extschema@.nodes n
	  JOIN @extschema@.runs r ON r.id = n.run_id
	 WHERE n.status = 'failed' AND @extschema@.workspace_visible(r.workspace);

-- Literals next to an operator carry the other operand's type (::text,
-- ::numeric): this script runs with pgcrypto's schema on its search_path,
-- where an untyped 'key' would let a look-alike ->>(jsonb, jsonb) bind to
-- the view (docs/operations.md, the search_path rule).
--
-- Like spend and dead_letters, the view reads its tables as its owner and
-- so filters by workspace itself: a role that may read it sees the pauses
-- of the workspaces it may see.  Disabled models are the whole database's
-- and stop every workspace's calls, so everyone who may read it sees them.
CREATE VIEW @extschema@.controls WITH (security_barrier) AS
	SELECT 'workspace paused'::text AS control, w.workspace AS target, w.reason,
		   w.paused_by::text AS set_by, w.paused_at AS since
	  FROM @extschema@.paused_workspaces w
	 WHERE @extschema@.workspace_visible(w.workspace)
	UNION ALL
	-- A budget's pause waits for a person too (a larger budget or
	-- resume_run); a workspace's is its row above.
	SELECT CASE WHEN r.paused->>'scope'::text = 'run' THEN 'run paused' ELSE 'run paused by its budget' END,
		   r.id::text || ' (' || r.workspace || ')', r.paused->>'reason'::text,
		   r.paused->>'by'::text, (r.paused->>'at'::text)::timestamptz
	  FROM @extschema@.runs r
	 WHERE r.status = 'paused' AND r.paused->>'scope'::text IN ('run', 'budget')
	   AND @extschema@.workspace_visible(r.workspace)
	UNION ALL
	SELECT CASE WHEN d.model = '*' THEN 'provider disabled' ELSE 'model disabled' END,
		   d.provider || CASE WHEN d.model = '*' THEN '' ELSE '/' || d.model END,
		   d.reason, d.disabled_by::text, d.disabled_at
	  FROM @extschema@.disabled_models d;
COMMENT ON VIEW @extschema@.controls IS
	'What is paused or disabled, why, by whom and since when.';
REVOKE ALL ON @extschema@.controls FROM PUBLIC;

-- claim_tasks of one activity goes run by run (src/state.c): the ready
-- nodes of an activity by run, so that a claim finds the next run in one
-- index descent and passes a busy run with one lock attempt.
CREATE INDEX nodes_ready_run_idx ON @extschema@.nodes
	(activity, priority DESC, run_id, available_at, id) WHERE status = 'ready';
-- ... and the only index of ready nodes by activity: with 0.1.0's
-- nodes_ready_idx beside it (same columns first, same predicate), an
-- autoanalyze could turn the claim's skip scan into a scan of that index
-- filtered by run id, which reads every entry a held snapshot keeps
-- (bench/README.md, growth under a held snapshot).  Claims of several
-- activities take the same order (priority, run, node).
DROP INDEX @extschema@.nodes_ready_idx;
-- Lease expiry, as in 0.1.0, but a lookup of one running node by id
-- ("WHERE id = $1 AND status = 'running'", complete_tasks' UPDATE) can no
-- longer be planned as a whole scan of this index filtered by id: its
-- statistics say few rows while it holds an entry for every node a held
-- snapshot keeps (every task finished since).  The expiry scan and the
-- scheduler's min(lease_expires_at) imply the added condition.
DROP INDEX @extschema@.nodes_running_idx;
CREATE INDEX nodes_running_idx ON @extschema@.nodes (lease_expires_at)
	WHERE status = 'running' AND lease_expires_at IS NOT NULL;
-- No query of the engine reads runs in created_at order, and this index's
-- statistics (few running runs) let the planner scan all of it, filtered,
-- for any lookup of running runs (a claim's run, the scheduler's
-- deadlines and orphaned children): under a held snapshot, every run
-- started since.
DROP INDEX @extschema@.runs_active_idx;

-- No CHECK constraints on the three tables every task writes.  PostgreSQL
-- keeps a CHECK's expression as text and parses and plans it again in
-- every statement that writes its table: with five of them, 8 to 14 % of
-- a task's server CPU (bench/README.md, "Where the time goes").  The
-- tables are written only by the engine (no role but the owner has a
-- grant on them): statuses by the state module from one C mapping
-- (src/status.c), kinds and timeouts after validate.c has checked them,
-- sequence numbers by the event writer; verify_run() compares a run's rows
-- with the replay of its history, so a stray value still shows.  The
-- allowed words are in the columns' comments.
ALTER TABLE @extschema@.nodes DROP CONSTRAINT nodes_status_check,
	DROP CONSTRAINT nodes_kind_check,
	DROP CONSTRAINT nodes_timeout_ms_check;
ALTER TABLE @extschema@.runs DROP CONSTRAINT runs_status_check;
ALTER TABLE @extschema@.events DROP CONSTRAINT events_seq_check;
COMMENT ON COLUMN @extschema@.nodes.status IS
	'pending, ready, running, waiting, succeeded, failed, skipped or cancelled; written only by the engine''s state module.';
COMMENT ON COLUMN @extschema@.nodes.kind IS
	'task, llm, approval, sleep, signal or run.';
COMMENT ON COLUMN @extschema@.runs.status IS
	'running, compensating, paused, succeeded, failed or cancelled; written only by the engine''s state module.';

-- Who caused an event and who started a run, as text: a name is 64 bytes
-- whatever it holds (NAMEDATALEN), a sixth of an event row and more than
-- its data in most (a STEP_COMPLETED row was 200 bytes, 49 of them data),
-- and a task writes two to four events.  The values and the defaults
-- (session_user) are unchanged.  Both statements rewrite their table: on
-- a large history this upgrade takes time (operations.md).
ALTER TABLE @extschema@.events ALTER COLUMN db_role TYPE text;
ALTER TABLE @extschema@.runs ALTER COLUMN created_by TYPE text;

-- A node with the default retry policy stores none: the policy was 150 of
-- a task row's 350 bytes, written again by each of its updates.  The specs
-- in RUN_STARTED and NODES_SPAWNED leave out the fields that have their
-- default in the same way (src/validate.h); replay() fills them in.
ALTER TABLE @extschema@.nodes ALTER COLUMN retry DROP NOT NULL;
COMMENT ON COLUMN @extschema@.nodes.retry IS
	'The node''s retry policy; NULL: the default (3 attempts, exponential backoff from 1 s to 60 s, multiplier 2, jitter).';

-- Claims of one activity start at a mark kept in shared memory, before
-- which no ready node is visible (src/claim_marks.c), so that under a held
-- snapshot they do not visit every node claimed since.  Every node that
-- becomes ready is noted, and the marks are moved only with what was
-- noted: rows updated to ready (or updated while ready) by the row trigger,
-- whatever wrote them; rows inserted by the engine by the engine itself
-- (a row trigger on inserts cost start_runs a quarter of its time); an
-- insert by anything else makes the statement trigger lower every mark of
-- the database once it commits.  ENABLE ALWAYS: they fire under
-- session_replication_role = replica too.
CREATE FUNCTION @extschema@.note_ready_node() RETURNS trigger
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_note_ready_node';
COMMENT ON FUNCTION @extschema@.note_ready_node() IS
	'Trigger: notes ready nodes (and inserts the engine did not make) for the claims'' marks; changes nothing.';
REVOKE ALL ON FUNCTION @extschema@.note_ready_node() FROM PUBLIC;
-- AFTER, not BEFORE: a BEFORE row trigger makes PostgreSQL lock every
-- row the statement updates before it writes it (one more WAL record per
-- completed task), whether or not the trigger fires.
CREATE TRIGGER nodes_note_ready
	AFTER UPDATE ON @extschema@.nodes
	FOR EACH ROW WHEN (NEW.status = 'ready' AND NEW.activity IS NOT NULL)
	EXECUTE FUNCTION @extschema@.note_ready_node();
CREATE TRIGGER nodes_note_inserts
	AFTER INSERT ON @extschema@.nodes
	FOR EACH STATEMENT
	EXECUTE FUNCTION @extschema@.note_ready_node();
ALTER TABLE @extschema@.nodes ENABLE ALWAYS TRIGGER nodes_note_ready;
ALTER TABLE @extschema@.nodes ENABLE ALWAYS TRIGGER nodes_note_inserts;

-- The relay (src/relay.c): committed transactions hand their notifications
-- to the database's scheduler, which sends them.  What each database's
-- relay has done since the server started, for operators: a growing
-- notifications_direct means the ring is too small for the load, a
-- notifications_dropped a listener that stopped reading.
CREATE FUNCTION @extschema@.relay_status(
		OUT database text, OUT pid integer, OUT waiting bigint,
		OUT notifications_relayed bigint, OUT notifications_direct bigint,
		OUT notifications_dropped bigint)
	RETURNS SETOF record
	LANGUAGE c VOLATILE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_relay_status';
COMMENT ON FUNCTION @extschema@.relay_status() IS
	'Per database: the scheduler relaying its notifications, entries waiting, notifications relayed, sent directly, and lost, since the server started.';
REVOKE ALL ON FUNCTION @extschema@.relay_status() FROM PUBLIC;

-- Every statement that changes the tenant mapping or the concurrency
-- limits, whoever runs it (the engine's functions, a superuser's own DML,
-- a data-only restore's COPY), makes every backend read them again once
-- it commits: backends cache both (src/tenants.c, src/limits.c), and a
-- cache kept past a change left a workspace open to every role, or a
-- limit unseen by claims.  ENABLE ALWAYS: under session_replication_role
-- = replica too.
CREATE FUNCTION @extschema@.workspace_roles_changed() RETURNS trigger
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_workspace_roles_changed';
COMMENT ON FUNCTION @extschema@.workspace_roles_changed() IS
	'Trigger: every backend reads the workspace mapping again once the change commits; changes nothing.';
REVOKE ALL ON FUNCTION @extschema@.workspace_roles_changed() FROM PUBLIC;
CREATE TRIGGER workspace_roles_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.workspace_roles
	FOR EACH STATEMENT
	EXECUTE FUNCTION @extschema@.workspace_roles_changed();
ALTER TABLE @extschema@.workspace_roles ENABLE ALWAYS TRIGGER workspace_roles_changed;

CREATE FUNCTION @extschema@.concurrency_limits_changed() RETURNS trigger
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_concurrency_limits_changed';
COMMENT ON FUNCTION @extschema@.concurrency_limits_changed() IS
	'Trigger: every backend asks again whether a concurrency limit exists once the change commits; changes nothing.';
REVOKE ALL ON FUNCTION @extschema@.concurrency_limits_changed() FROM PUBLIC;
CREATE TRIGGER concurrency_limits_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.concurrency_limits
	FOR EACH STATEMENT
	EXECUTE FUNCTION @extschema@.concurrency_limits_changed();
ALTER TABLE @extschema@.concurrency_limits ENABLE ALWAYS TRIGGER concurrency_limits_changed;
