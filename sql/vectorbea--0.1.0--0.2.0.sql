/* vectorbea--0.1.0--0.2.0.sql: from the released 0.1.0 to 0.2.0.
 *
 * Every change of the SQL surface since 0.1.0 goes here, never into
 * vectorbea--0.1.0.sql, which is frozen as released.  A fresh
 * CREATE EXTENSION runs 0.1.0 and then this script, so a fresh install and
 * an upgraded one are the same by construction; test/t/013_upgrade.pl
 * checks it on a database with runs in flight.
 */

\echo Use "ALTER EXTENSION vectorbea UPDATE TO '0.2.0'" to load this file. \quit

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

CREATE OR REPLACE FUNCTION @extschema@.timeline(run uuid)
	RETURNS SETOF text
	LANGUAGE sql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
SELECT @extschema@.escape_text(to_char(e.at, 'HH24:MI:SS.MS') || ' ' || e.type ||
	   coalesce(' ' || CASE e.type
		WHEN 'RUN_STARTED' THEN
			format('run=%s workflow=%s@%s nodes=%s input=%s', e.run_id, e.data->>'workflow',
				   e.data->>'version', jsonb_array_length(e.data->'nodes'),
				   left((e.data->'input')::text, 80))
		WHEN 'STEP_STARTED' THEN
			format('%s attempt %s by %s', e.node, e.attempt, e.data->>'worker')
		WHEN 'STEP_COMPLETED' THEN
			format('%s → ok (%sms)', e.node, e.data->>'duration_ms')
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
		WHEN 'SELF_CORRECTION' THEN
			format('%s correction %s/%s: %s', e.node, e.data->>'correction',
				   e.data->>'max_corrections', e.data->>'error')
		WHEN 'BUDGET_EXCEEDED' THEN
			format('%s usage %s USD / %s tokens, budget %s USD / %s tokens', e.node,
				   e.data->>'usage_usd', e.data->>'usage_tokens',
				   coalesce(e.data->>'budget_usd', '-'), coalesce(e.data->>'budget_tokens', '-'))
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
 WHERE e.run_id = timeline.run
 ORDER BY e.seq
$$;
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
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_requeue';
COMMENT ON FUNCTION @extschema@.requeue(bigint, text) IS
	'Gives a node that failed for good a new attempt budget; its failed run runs again with the nodes its failure closed.';
REVOKE ALL ON FUNCTION @extschema@.requeue(bigint, text) FROM PUBLIC;

CREATE FUNCTION @extschema@.requeue_dead(filter jsonb DEFAULT '{}', reason text DEFAULT NULL)
	RETURNS integer
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_requeue_dead';
COMMENT ON FUNCTION @extschema@.requeue_dead(jsonb, text) IS
	'Requeues every dead letter the filter matches (run, workspace, workflow, activity, node, class, failed_after, failed_before); returns how many.';
REVOKE ALL ON FUNCTION @extschema@.requeue_dead(jsonb, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION @extschema@.replay(run uuid, upto bigint DEFAULT NULL)
	RETURNS jsonb
	LANGUAGE sql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
WITH ev AS (
	SELECT e.seq, e.type, e.node, e.attempt, e.data
	  FROM @extschema@.events e
	 WHERE e.run_id = replay.run AND (replay.upto IS NULL OR e.seq <= replay.upto)
), started AS (
	SELECT ev.data FROM ev WHERE ev.type = 'RUN_STARTED'
), added AS (
	SELECT spec.value->>'id' AS node, spec.value AS spec,
		   CASE WHEN ev.type = 'NODES_SPAWNED' THEN ev.node END AS spawned_by
	  FROM ev, jsonb_array_elements(ev.data->'nodes') AS spec
	 WHERE ev.type IN ('RUN_STARTED', 'NODES_SPAWNED')
), marks AS (
	SELECT ev.node, ev.seq,
		   CASE ev.type WHEN 'STEP_STARTED' THEN 'running'
						WHEN 'STEP_COMPLETED' THEN 'succeeded'
						WHEN 'STEP_RETRIED' THEN 'ready'
						WHEN 'APPROVAL_REQUESTED' THEN 'waiting'
						ELSE 'failed' END AS status
	  FROM ev
	 WHERE ev.type IN ('STEP_STARTED', 'STEP_COMPLETED', 'STEP_RETRIED', 'APPROVAL_REQUESTED')
		OR (ev.type = 'STEP_FAILED' AND (ev.data->>'final')::boolean)
	UNION ALL
	SELECT closed.node, ev.seq,
		   CASE WHEN ev.type = 'RUN_FAILED' AND closed.list = 'skipped'
				THEN 'skipped' ELSE 'cancelled' END
	  FROM ev,
		   LATERAL (SELECT x, 'skipped' FROM jsonb_array_elements_text(ev.data->'skipped') x
					UNION ALL
					SELECT x, 'cancelled' FROM jsonb_array_elements_text(ev.data->'cancelled') x
					UNION ALL
					SELECT x, 'revoked' FROM jsonb_array_elements_text(ev.data->'revoked') x)
			   AS closed(node, list)
	 WHERE ev.type IN ('RUN_FAILED', 'RUN_CANCELLED')
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
), per_node AS (
	SELECT a.node,
		   (SELECT count(*) FROM ev WHERE ev.type = 'STEP_STARTED' AND ev.node = a.node) AS attempts,
		   (SELECT ev.data->'output' FROM ev
			 WHERE ev.type = 'STEP_COMPLETED' AND ev.node = a.node
			 ORDER BY ev.seq DESC LIMIT 1) AS output,
		   (SELECT ev.data->'error' FROM ev
			 WHERE ev.type = 'STEP_FAILED' AND ev.node = a.node
			 ORDER BY ev.seq DESC LIMIT 1) AS error,
		   lm.status AS marked
	  FROM added a LEFT JOIN last_mark lm ON lm.node = a.node
), state AS (
	SELECT a.node, a.spec, a.spawned_by, p.attempts, p.output, p.error,
		   coalesce(p.marked,
					CASE WHEN NOT EXISTS (
							SELECT 1 FROM jsonb_array_elements_text(a.spec->'depends_on') dep
							 WHERE NOT EXISTS (SELECT 1 FROM last_mark lm
												WHERE lm.node = dep AND lm.status = 'succeeded'))
						 THEN 'ready' ELSE 'pending' END) AS status
	  FROM added a JOIN per_node p ON p.node = a.node
)
SELECT jsonb_build_object(
		   'run', replay.run,
		   'workflow', s.data->'workflow',
		   'version', s.data->'version',
		   'input', s.data->'input',
		   'status', coalesce((SELECT CASE ev.type WHEN 'RUN_COMPLETED' THEN 'succeeded'
												   WHEN 'RUN_FAILED' THEN 'failed'
												   WHEN 'NODES_REQUEUED' THEN 'running'
												   ELSE 'cancelled' END
								 FROM ev WHERE ev.type IN ('RUN_COMPLETED', 'RUN_FAILED', 'RUN_CANCELLED',
														   'NODES_REQUEUED')
								ORDER BY ev.seq DESC LIMIT 1), 'running'),
		   'events', (SELECT count(*) FROM ev),
		   'upto', (SELECT max(ev.seq) FROM ev),
		   'usage', jsonb_build_object(
				'tokens', (SELECT coalesce(sum((ev.data->'usage'->>'tokens')::bigint), 0)
							 FROM ev WHERE ev.type IN ('STEP_COMPLETED', 'LLM_CALLED')),
				'usd', (SELECT coalesce(sum((ev.data->'usage'->>'usd')::numeric), 0)
						  FROM ev WHERE ev.type IN ('STEP_COMPLETED', 'LLM_CALLED'))),
		   'nodes', coalesce((SELECT jsonb_object_agg(st.node, jsonb_build_object(
								'kind', st.spec->'kind',
								'activity', st.spec->'activity',
								'depends_on', st.spec->'depends_on',
								'status', st.status,
								'attempts', st.attempts,
								'output', st.output,
								'error', st.error,
								'spawned_by', st.spawned_by))
							FROM state st), '{}'::jsonb))
  FROM started s
$$;
COMMENT ON FUNCTION @extschema@.replay(uuid, bigint) IS
	'The run''s state rebuilt from its events alone, optionally as of event upto.';
