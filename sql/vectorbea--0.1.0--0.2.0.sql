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
