-- Bad input (issue 16): every function of the extension called with NULL
-- in each argument (the calls are generated from pg_proc, so a new
-- function is covered without editing this file), oversized and deeply
-- nested JSON, integer overflows in durations and counts, huge node
-- counts, and text that is not valid UTF-8 where a database accepts it.
-- Each gives a clear error naming what was wrong (or, for the arguments
-- listed as taking NULL, does what NULL is documented to mean), writes
-- nothing, and the server stays up.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

-- The helpers live in public: the regress user's name is vectorbea, so
-- "$user" in the default search_path would put them into the extension's
-- schema.
-- A statement's outcome: "ok: <result>" or "SQLSTATE: message | detail",
-- in a subtransaction, so that an error ends nothing else.  The message and
-- detail are shown as the caller gets them: a clear error is a short one.
CREATE FUNCTION public.bi_try(stmt text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	r text;
	st text;
	msg text;
	det text;
BEGIN
	EXECUTE stmt INTO r;
	RETURN 'ok: ' || coalesce(left(r, 60), 'NULL');
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	RETURN st || ': ' || msg || CASE WHEN det <> '' THEN ' | ' || det ELSE '' END;
END $$;

-- An outcome without the ids and times that differ from run to run.
CREATE FUNCTION public.bi_stable(t text) RETURNS text LANGUAGE sql AS $$
	SELECT regexp_replace(t, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d{4}-\d\d-\d\d[ T][0-9:.+]+Z?|\w{3} \w{3} \d\d [0-9:.]+ \d{4} \w+',
						  '<value>', 'g')
$$;

-- Rows in every table of the extension.
CREATE FUNCTION public.bi_counts() RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	t name;
	n bigint;
	result jsonb := '{}';
BEGIN
	FOR t IN SELECT c.relname FROM pg_class c
			  WHERE c.relnamespace = 'vectorbea'::regnamespace AND c.relkind = 'r' ORDER BY 1 LOOP
		EXECUTE format('SELECT count(*) FROM vectorbea.%I', t) INTO n;
		result := result || jsonb_build_object(t, n);
	END LOOP;
	RETURN result;
END $$;

-- The tables whose row counts differ, as "table +n".
CREATE FUNCTION public.bi_delta(before jsonb, after jsonb) RETURNS text LANGUAGE sql AS $$
	SELECT coalesce(string_agg(a.key || ' ' || CASE WHEN a.value::bigint > coalesce((before->>a.key)::bigint, 0) THEN '+' ELSE '' END
							   || (a.value::bigint - coalesce((before->>a.key)::bigint, 0)), ', ' ORDER BY a.key), '')
	  FROM jsonb_each_text(after) a
	 WHERE a.value::bigint <> coalesce((before->>a.key)::bigint, 0)
$$;

-- ---------------------------------------------------------------------------
-- The fixture: a run with a claimed task, a finished run, a dead task, a
-- master key, a provider key.
DO $$
BEGIN
	EXECUTE format('COPY (SELECT %L) TO PROGRAM %L', 'bad-input-master-key-0123456789',
				   'umask 077 && cat > vb_master_bad_input');
END $$;
SET vectorbea.master_key_file = 'vb_master_bad_input';
SELECT vectorbea.set_provider_key('ws', 'openai', 'sk-bad-input-0123456789');
SELECT vectorbea.define_workflow('bi', '{"nodes": [{"id": "a", "activity": "bi_a"},
	{"id": "b", "activity": "bi_b", "depends_on": ["a"]}]}');
SELECT vectorbea.define_workflow('bi_one', '{"nodes": [{"id": "a", "activity": "bi_one"}]}');
SELECT vectorbea.define_workflow('bi_dead', '{"nodes": [{"id": "a", "activity": "bi_dead", "retry": {"max_attempts": 1}}]}');
SELECT vectorbea.start_run('bi', '{"n": 1}') AS run \gset
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['bi_a']) \gset
SELECT vectorbea.start_run('bi_one') AS done_run \gset
SELECT task_id AS done_task, lease AS done_lease FROM vectorbea.claim_tasks('w', ARRAY['bi_one']) \gset
SELECT vectorbea.complete_task(:done_task, :'done_lease', '{"ok": true}');
SELECT vectorbea.start_run('bi_dead') AS dead_run \gset
SELECT task_id AS dead_task, lease AS dead_lease FROM vectorbea.claim_tasks('w', ARRAY['bi_dead']) \gset
SELECT vectorbea.fail_task(:dead_task, :'dead_lease', '{"message": "gone"}');
SELECT vectorbea.define_workflow('bi_esc', '{"nodes": [{"id": "a", "activity": "bi_esc", "retry": {"max_attempts": 1},
	"on_exhausted": "escalate", "escalation": {"gate": "fix", "timeout": "1h"}}]}');
SELECT vectorbea.start_run('bi_esc') AS esc_run \gset
SELECT task_id AS esc_task, lease AS esc_lease FROM vectorbea.claim_tasks('w', ARRAY['bi_esc']) \gset
SELECT vectorbea.fail_task(:esc_task, :'esc_lease', '{"message": "needs a person"}');
SELECT id AS esc_gate FROM vectorbea.approvals WHERE run_id = :'esc_run' \gset
CREATE TABLE public.bi_fixture AS
	SELECT :'run'::uuid AS run, :task_id::bigint AS task_id, :'lease'::uuid AS lease,
		   :'done_run'::uuid AS done_run, :dead_task::bigint AS dead_task;

-- ---------------------------------------------------------------------------
-- NULL in each argument of each function.  The other arguments get values
-- that are valid for the fixture (by argument name, then by type), so that
-- the NULL is what the function answers to.
CREATE FUNCTION public.bi_sample(fn name, arg text, typ regtype) RETURNS text LANGUAGE sql AS $$
	SELECT CASE
		WHEN fn IN ('fork_run', 'diff_runs') AND typ = 'uuid'::regtype THEN format('%L::uuid', f.done_run)
		WHEN arg = 'run' OR (typ = 'uuid'::regtype AND arg = '') THEN format('%L::uuid', f.run)
		WHEN arg = 'lease' THEN format('%L::uuid', f.lease)
		WHEN arg = 'task_ids' THEN format('ARRAY[%s]::bigint[]', f.task_id)
		WHEN arg = 'leases' THEN format('ARRAY[%L]::uuid[]', f.lease)
		WHEN arg IN ('outputs', 'spawns', 'usages') THEN 'ARRAY[NULL]::jsonb[]'
		WHEN arg = 'inputs' THEN 'ARRAY[''{}'']::jsonb[]'
		WHEN arg = 'idempotency_keys' THEN 'ARRAY[''bi_k'']::text[]'
		WHEN arg = 'role' THEN '''vb_plain_user''::regrole'
		WHEN arg = 'task_id' AND fn = 'requeue' THEN f.dead_task::text
		WHEN arg = 'task_id' THEN f.task_id::text
		WHEN arg = 'name' AND fn = 'define_workflow' THEN '''bi_new'''
		WHEN arg = 'name' AND fn = 'send_signal' THEN '''go'''
		WHEN arg = 'definition' THEN '''{"nodes": [{"id": "x", "activity": "bi_x"}]}''::jsonb'
		WHEN arg = 'workflow' THEN '''bi'''
		WHEN arg = 'spawn' THEN '''[]''::jsonb'
		WHEN arg = 'error' THEN '''{"message": "m"}''::jsonb'
		WHEN arg = 'usage' THEN '''{"tokens": 1}''::jsonb'
		WHEN arg IN ('node', 'from_node') THEN '''a'''
		WHEN arg = 'type' THEN '''bi.event'''
		WHEN arg = 'provider' THEN '''openai'''
		WHEN arg = 'model' THEN '''gpt-4o-mini'''
		WHEN arg = 'api_key' THEN '''sk-bad-input-0123456789'''
		WHEN arg = 'base_url' THEN '''https://api.openai.com/v1'''
		WHEN arg = 'period' THEN '''month'''
		WHEN arg = 'on_exceed' THEN '''fail'''
		WHEN arg = 'format' THEN '''mermaid'''
		WHEN arg = 'scheme' THEN '''https'''
		WHEN arg = 'schedule' THEN '''0 * * * *'''
		WHEN arg = 'new_key_file' THEN '''vb_master_bad_input'''
		WHEN arg = 'activities' THEN 'ARRAY[''bi_b'']'
		WHEN arg = 'statuses' THEN '''{succeeded}''::text[]'
		WHEN arg = 'activity' THEN '''bi_a'''
		WHEN arg = 'address' THEN '''127.0.0.1''::inet'
		WHEN arg = 'port' THEN '443'
		WHEN arg = 'version' THEN '1'
		WHEN arg = 'upto' THEN '1'
		WHEN typ = 'jsonb'::regtype THEN '''{}''::jsonb'
		WHEN typ = 'interval'::regtype THEN '''1 hour''::interval'
		WHEN typ = 'boolean'::regtype THEN 'false'
		WHEN typ IN ('integer'::regtype, 'bigint'::regtype, 'numeric'::regtype) THEN '2'
		WHEN typ = 'text'::regtype THEN quote_literal(CASE WHEN arg = '' THEN 'x' ELSE 'bi_' || arg END)
		ELSE 'NULL' END
	  FROM bi_fixture f
$$;

-- The arguments that take NULL, and what NULL means there (the SQL
-- reference says so).  Every other argument must refuse NULL.
CREATE TABLE public.bi_null_ok (fn name, arg text, means text, PRIMARY KEY (fn, arg));
INSERT INTO bi_null_ok VALUES
	('append_event', 'data', 'no data ({})'), ('append_event', 'node', 'an event of the run, not of a node'),
	('await_approval', 'context', 'no context ({})'), ('await_approval', 'timeout', 'no timeout'),
	('cancel_run', 'reason', 'no reason'), ('cancel_run', 'compensate', 'false'),
	('claim_tasks', 'max_tasks', '1'),
	('complete_task', 'output', 'no output'), ('complete_task', 'spawn', 'no spawn list'),
	('complete_task', 'usage', 'no usage'),
	('complete_tasks', 'outputs', 'no output for any task'), ('complete_tasks', 'spawns', 'no spawn list for any task'),
	('complete_tasks', 'usages', 'no usage for any task'),
	('disable_model', 'reason', 'no reason'),
	('escape_text', 't', 'STRICT: NULL'),
	('fail_task', 'retryable', 'true'),
	('fork_run', 'changes', 'no changes ({})'), ('fork_run', 'version', 'the source run''s version'),
	('heartbeat', 'extend', 'the lease''s own duration'),
	('llm_address_allowed', 'address', 'STRICT: NULL'), ('llm_address_allowed', 'port', 'STRICT: NULL'),
	('llm_address_allowed', 'scheme', 'STRICT: NULL'),
	('pause_run', 'reason', 'no reason'), ('pause_workspace', 'reason', 'no reason'),
	('replay', 'run', 'NULL: no such run'), ('replay', 'upto', 'up to the last event'),
	('requeue', 'reason', 'no reason'),
	('requeue_dead', 'filter', 'every dead task ({})'), ('requeue_dead', 'reason', 'no reason'),
	('send_signal', 'payload', 'no payload ({})'), ('send_signal', 'idempotency_key', 'not deduplicated'),
	('set_budget', 'usd', 'no USD budget'), ('set_budget', 'tokens', 'no token budget'),
	('set_concurrency_limit', 'max_running', 'the limit is removed'),
	('set_provider_key', 'base_url', 'the provider''s own endpoint'),
	('set_rate_limit', 'requests_per_minute', 'no request limit'),
	('set_rate_limit', 'tokens_per_minute', 'no token limit'),
	('set_run_budget', 'usd', 'no USD budget'), ('set_run_budget', 'tokens', 'no token budget'),
	('start_run', 'input', 'no input ({})'), ('start_run', 'idempotency_key', 'not deduplicated'),
	('start_run', 'options', 'no options ({})'),
	('start_runs', 'idempotency_keys', 'not deduplicated'), ('start_runs', 'options', 'no options ({})'),
	('run_visible', 'run', 'false: visible to nobody'), ('workspace_visible', 'workspace', 'false: visible to nobody'),
	('timeline', 'run', 'NULL: no such run'),
	('verify_run', 'run', 'one row: the run does not exist');

CREATE TABLE public.bi_null_calls (fn name, pos int, arg text, call text, outcome text, wrote text);
DO $$
DECLARE
	p record;
	call text;
	r text;
	before jsonb;
	wrote text;
	st text;
	msg text;
BEGIN
	FOR p IN
		SELECT pr.proname AS fn, pr.pronargs AS n, pr.proargtypes::oid[] AS types,
			   coalesce(pr.proargnames, '{}') AS names
		  FROM pg_proc pr
		 WHERE pr.pronamespace = 'vectorbea'::regnamespace AND pr.prorettype <> 'trigger'::regtype
		   -- the bodies of the doors written in SQL are called through their
		   -- doors, and replay_parts by two of them: none is for direct use
		   AND coalesce(obj_description(pr.oid, 'pg_proc'), '') NOT LIKE '%not for direct use%'
		   AND EXISTS (SELECT FROM pg_depend d
						WHERE d.classid = 'pg_proc'::regclass AND d.objid = pr.oid AND d.deptype = 'e'
						  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'vectorbea'))
		 ORDER BY 1
	LOOP
		FOR i IN 1 .. p.n LOOP
			call := format('SELECT (vectorbea.%I(%s))::text', p.fn, array_to_string(ARRAY(
				SELECT CASE WHEN k = i THEN 'NULL::' || format_type(p.types[k - 1], NULL)
							ELSE bi_sample(p.fn, coalesce(p.names[k], ''), p.types[k - 1]::regtype) END
				  FROM generate_series(1, p.n) k), ', '));
			before := bi_counts();
			BEGIN
				EXECUTE call INTO r;
				wrote := bi_delta(before, bi_counts());
				RAISE EXCEPTION USING ERRCODE = 'VBT01', MESSAGE = 'ok: ' || coalesce(left(bi_stable(r), 40), 'NULL');
			EXCEPTION WHEN OTHERS THEN
				GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
				INSERT INTO bi_null_calls VALUES (p.fn, i, coalesce(nullif(p.names[i], ''), '$' || i), call,
												  CASE WHEN st = 'VBT01' THEN msg ELSE st || ': ' || msg END,
												  CASE WHEN st = 'VBT01' THEN wrote END);
			END;
		END LOOP;
	END LOOP;
END $$;

-- Every function with arguments is covered, each argument once.
SELECT count(DISTINCT fn) AS functions, count(*) AS arguments FROM bi_null_calls;
-- The refusals: SQLSTATE 22004 (null_value_not_allowed) and a message
-- naming the arguments that must not be null.
SELECT fn, arg, bi_stable(outcome) AS outcome FROM bi_null_calls c
 WHERE NOT EXISTS (SELECT FROM bi_null_ok o WHERE o.fn = c.fn AND o.arg = c.arg)
 ORDER BY fn, pos;
-- The arguments that take NULL: what NULL means, what the call did, and
-- which tables it wrote (a documented no-op writes nothing).
SELECT c.fn, c.arg, o.means, bi_stable(c.outcome) AS outcome, c.wrote
  FROM bi_null_calls c JOIN bi_null_ok o ON o.fn = c.fn AND o.arg = c.arg
 ORDER BY c.fn, c.pos;
-- What must hold: a refused NULL is a 22004 naming the argument; an
-- accepted one succeeds; nothing is an internal error or a constraint
-- violation of a table; the list of NULL-taking arguments has no stale
-- entry.
SELECT fn, arg, outcome FROM bi_null_calls c
 WHERE (NOT EXISTS (SELECT FROM bi_null_ok o WHERE o.fn = c.fn AND o.arg = c.arg)
		AND (outcome NOT LIKE '22004: %' OR (c.arg NOT LIKE '$%' AND position(c.arg IN outcome) = 0)))
	OR (EXISTS (SELECT FROM bi_null_ok o WHERE o.fn = c.fn AND o.arg = c.arg) AND outcome NOT LIKE 'ok: %')
	OR outcome ~ '^(XX|23|42883|42P13)';
SELECT fn, arg FROM bi_null_ok o WHERE NOT EXISTS (SELECT FROM bi_null_calls c WHERE c.fn = o.fn AND c.arg = o.arg);

-- ---------------------------------------------------------------------------
-- From here on every call is refused, and nothing is written.
SELECT bi_counts() AS counts_before \gset
CREATE TABLE public.bi_refused (section text, what text, outcome text);
CREATE FUNCTION public.bi_expect_error(section text, what text, stmt text) RETURNS void LANGUAGE sql AS $$
	INSERT INTO bi_refused VALUES (section, what, bi_try(stmt))
$$;

-- Oversized JSON: every payload a caller writes is held to
-- vectorbea.max_payload_size (here 1kB), and the definition too.
SET vectorbea.max_payload_size = '1kB';
CREATE TABLE public.bi_big AS SELECT jsonb_build_object('blob', repeat('x', 2000)) AS j;
SELECT bi_expect_error('oversized', 'definition',
	$q$SELECT vectorbea.define_workflow('bi_big', jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', 'a', 'activity', 'bi_a', 'input', (SELECT j FROM bi_big)))))$q$);
SELECT bi_expect_error('oversized', 'run input', $q$SELECT vectorbea.start_run('bi', (SELECT j FROM bi_big))$q$);
-- (Run options take known fields only, each of a bounded size: a large
-- value among them is an unknown field.)
SELECT bi_expect_error('oversized', 'run options, an unknown field', $q$SELECT vectorbea.start_run('bi', '{}', NULL, jsonb_build_object('workspace', 'ws') || (SELECT j FROM bi_big))$q$);
SELECT bi_expect_error('oversized', 'task output', format($q$SELECT vectorbea.complete_task(%s, %L, (SELECT j FROM bi_big))$q$, :task_id, :'lease'));
SELECT bi_expect_error('oversized', 'spawn list', format($q$SELECT vectorbea.complete_task(%s, %L, '{}', jsonb_build_array(jsonb_build_object('id', 's', 'activity', 'bi_s', 'input', (SELECT j FROM bi_big))))$q$, :task_id, :'lease'));
SELECT bi_expect_error('oversized', 'checkpoint', format($q$SELECT vectorbea.save_checkpoint(%s, %L, (SELECT j FROM bi_big))$q$, :task_id, :'lease'));
SELECT bi_expect_error('oversized', 'error', format($q$SELECT vectorbea.fail_task(%s, %L, jsonb_build_object('message', 'm') || (SELECT j FROM bi_big))$q$, :task_id, :'lease'));
SELECT bi_expect_error('oversized', 'event data', format($q$SELECT vectorbea.append_event(%L, 'bi.big', (SELECT j FROM bi_big))$q$, :'run'));
SELECT bi_expect_error('oversized', 'approval context', format($q$SELECT vectorbea.await_approval(%s, %L, 'g', (SELECT j FROM bi_big))$q$, :task_id, :'lease'));
SELECT bi_expect_error('oversized', 'signal payload', format($q$SELECT vectorbea.send_signal(%L, 'go', (SELECT j FROM bi_big))$q$, :'run'));
SELECT bi_expect_error('oversized', 'fork change', format($q$SELECT vectorbea.fork_run(%L, 'a', jsonb_build_object('a', jsonb_build_object('input', (SELECT j FROM bi_big))))$q$, :'done_run'));
SELECT bi_expect_error('oversized', 'cancel reason', format($q$SELECT vectorbea.cancel_run(%L, repeat('r', 5000))$q$, :'run'));
SELECT bi_expect_error('oversized', 'pause reason', format($q$SELECT vectorbea.pause_run(%L, repeat('r', 5000))$q$, :'run'));
SELECT bi_expect_error('oversized', 'workspace pause reason', $q$SELECT vectorbea.pause_workspace('ws', repeat('r', 5000))$q$);
SELECT bi_expect_error('oversized', 'requeue reason', format($q$SELECT vectorbea.requeue(%s, repeat('r', 5000))$q$, :dead_task));
SELECT bi_expect_error('oversized', 'api key', $q$SELECT vectorbea.set_provider_key('ws', 'openai', repeat('k', 100000))$q$);
SELECT bi_expect_error('oversized', 'base_url', $q$SELECT vectorbea.set_provider_key('ws', 'openai', 'sk-1234567890', 'https://' || repeat('a', 5000) || '.example/v1')$q$);
SELECT bi_expect_error('oversized', 'idempotency key', $q$SELECT vectorbea.start_run('bi', '{}', repeat('k', 1000))$q$);
SELECT bi_expect_error('oversized', 'worker name', $q$SELECT vectorbea.claim_tasks(repeat('w', 1000), ARRAY['bi_b'])$q$);
SELECT bi_expect_error('oversized', 'event type', format($q$SELECT vectorbea.append_event(%L, repeat('t', 1000))$q$, :'run'));
SELECT bi_expect_error('oversized', 'signal name', format($q$SELECT vectorbea.send_signal(%L, repeat('s', 1000))$q$, :'run'));
SELECT bi_expect_error('oversized', 'gate name', format($q$SELECT vectorbea.await_approval(%s, %L, repeat('g', 1000))$q$, :task_id, :'lease'));
SELECT bi_expect_error('oversized', 'workflow name', $q$SELECT vectorbea.define_workflow(repeat('w', 1000), '{"nodes": [{"id": "a", "activity": "x"}]}')$q$);
SELECT bi_expect_error('oversized', 'model name', $q$SELECT vectorbea.disable_model('openai', repeat('m', 100000))$q$);
SELECT bi_expect_error('oversized', 'workspace name', $q$SELECT vectorbea.set_budget(repeat('w', 100000), 5)$q$);
SELECT bi_expect_error('oversized', 'activity name', $q$SELECT vectorbea.set_concurrency_limit(repeat('a', 100000), 5)$q$);
-- A person's decision: an UPDATE of approvals, checked by its trigger.
SELECT bi_expect_error('decision', 'output', format($q$UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = (SELECT j FROM bi_big) WHERE id = %s RETURNING status$q$, :esc_gate));
SELECT bi_expect_error('decision', 'input', format($q$UPDATE vectorbea.approvals SET status = 'approved', decision = 'retry', input = (SELECT j FROM bi_big) WHERE id = %s RETURNING status$q$, :esc_gate));
SELECT bi_expect_error('decision', 'reason', format($q$UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', reason = repeat('r', 5000) WHERE id = %s RETURNING status$q$, :esc_gate));
SELECT bi_expect_error('decision', 'decided_by', format($q$UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', decided_by = repeat('d', 300) WHERE id = %s RETURNING status$q$, :esc_gate));
SELECT bi_expect_error('decision', 'status NULL', format($q$UPDATE vectorbea.approvals SET status = NULL WHERE id = %s RETURNING status$q$, :esc_gate));
SELECT bi_expect_error('decision', 'status unknown', format($q$UPDATE vectorbea.approvals SET status = 'maybe' WHERE id = %s RETURNING status$q$, :esc_gate));
SELECT bi_expect_error('decision', 'decision unknown', format($q$UPDATE vectorbea.approvals SET status = 'approved', decision = 'later' WHERE id = %s RETURNING status$q$, :esc_gate));
SELECT bi_expect_error('decision', 'decision NULL on a gate of failures', format($q$UPDATE vectorbea.approvals SET status = 'approved', decision = NULL WHERE id = %s RETURNING status$q$, :esc_gate));
RESET vectorbea.max_payload_size;
-- The default bound (1MB) holds without setting anything.
SELECT bi_expect_error('oversized', 'run input over the default 1MB', $q$SELECT vectorbea.start_run('bi', jsonb_build_object('blob', repeat('x', 1100000)))$q$);

-- Deeply nested JSON: PostgreSQL's own parser stops at its stack limit;
-- what it accepts, the engine stores or refuses with the field named.
CREATE TABLE public.bi_deep AS SELECT ('{"a": ' || repeat('[', 5000) || repeat(']', 5000) || '}')::jsonb AS j;
SELECT bi_expect_error('nested', 'beyond the stack', $q$SELECT vectorbea.start_run('bi', ('{"a": ' || repeat('[', 100000) || repeat(']', 100000) || '}')::jsonb)$q$);
SELECT bi_expect_error('nested', 'node input an array', $q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', 'a', 'activity', 'x', 'input', (SELECT j->'a' FROM bi_deep)))))$q$);
SELECT bi_expect_error('nested', 'spawn input an array', format($q$SELECT vectorbea.complete_task(%s, %L, '{}', jsonb_build_array(jsonb_build_object('id', 's', 'activity', 'bi_s', 'input', (SELECT j->'a' FROM bi_deep))))$q$, :task_id, :'lease'));
SELECT bi_expect_error('nested', 'spawn list of lists', format($q$SELECT vectorbea.complete_task(%s, %L, '{}', (SELECT j->'a' FROM bi_deep))$q$, :task_id, :'lease'));
SELECT bi_expect_error('nested', 'output schema', $q$SELECT vectorbea.validate_workflow(('{"nodes": [{"id": "a", "kind": "llm", "llm": {"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"type": "object", "properties": {"a": ' || repeat('{"type": "array", "items": ', 3000) || '{}' || repeat('}', 3000) || '}}}}]}')::jsonb)$q$);
SELECT bi_expect_error('nested', 'template path', $q$SELECT vectorbea.validate_workflow(('{"nodes": [{"id": "a", "kind": "llm", "llm": {"provider": "openai", "model": "m", "prompt": "{{run.input' || repeat('.a', 5000) || '}}"}}]}')::jsonb)$q$);
SELECT bi_expect_error('nested', 'requeue filter', $q$SELECT vectorbea.requeue_dead((SELECT j FROM bi_deep))$q$);
SELECT bi_expect_error('nested', 'fork change', format($q$SELECT vectorbea.fork_run(%L, 'a', (SELECT j FROM bi_deep))$q$, :'done_run'));
SELECT bi_expect_error('nested', 'run options', $q$SELECT vectorbea.start_run('bi', '{}', NULL, (SELECT j FROM bi_deep))$q$);
SELECT bi_expect_error('nested', 'usage', format($q$SELECT vectorbea.complete_task(%s, %L, '{}', NULL, jsonb_build_object('tokens', (SELECT j FROM bi_deep)))$q$, :task_id, :'lease'));
SELECT bi_expect_error('nested', 'error', format($q$SELECT vectorbea.fail_task(%s, %L, jsonb_build_object('message', (SELECT j FROM bi_deep)))$q$, :task_id, :'lease'));

-- Huge node counts: more nodes than vectorbea.max_nodes_per_run, in a
-- definition or through a spawn list.
SELECT bi_expect_error('nodes', '10001 nodes', $q$SELECT vectorbea.define_workflow('bi_huge', jsonb_build_object('nodes', (SELECT jsonb_agg(jsonb_build_object('id', 'n' || i, 'activity', 'x')) FROM generate_series(1, 10001) i)))$q$);
SET vectorbea.max_nodes_per_run = 3;
SELECT bi_expect_error('nodes', 'a spawn past the limit', format($q$SELECT vectorbea.complete_task(%s, %L, '{}', '[{"id": "s1", "activity": "x"}, {"id": "s2", "activity": "x"}]')$q$, :task_id, :'lease'));
RESET vectorbea.max_nodes_per_run;
SELECT bi_expect_error('nodes', 'a node that depends on itself', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "x", "depends_on": ["a"]}]}')$q$);
SELECT bi_expect_error('nodes', 'a cycle of 5000', $q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', (SELECT jsonb_agg(jsonb_build_object('id', 'n' || i, 'activity', 'x', 'depends_on', jsonb_build_array('n' || (i % 5000 + 1)))) FROM generate_series(1, 5000) i)))$q$);
SELECT bi_expect_error('nodes', 'a dependency that only starts with an id', $q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', repeat('a', 128), 'activity', 'x'), jsonb_build_object('id', 'b', 'activity', 'y', 'depends_on', jsonb_build_array(repeat('a', 128) || 'zzz')))))$q$);
SELECT bi_expect_error('nodes', '20000 dependencies of one node', $q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', 'z', 'activity', 'x', 'depends_on', (SELECT jsonb_agg('d' || i) FROM generate_series(1, 20000) i)))))$q$);
SELECT bi_expect_error('nodes', 'a dependency listed twice among 20000', $q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', 'z', 'activity', 'x', 'depends_on', (SELECT jsonb_agg('d' || (i % 19999)) FROM generate_series(1, 20000) i)))))$q$);
SELECT bi_expect_error('nodes', 'a duplicate id', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "x"}, {"id": "a", "activity": "y"}]}')$q$);
SELECT bi_expect_error('nodes', 'no nodes', $q$SELECT vectorbea.validate_workflow('{"nodes": []}')$q$);

-- Integer overflows and out-of-range numbers in durations and counts.
SELECT bi_expect_error('numbers', 'timeout beyond int64', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "x", "timeout": "99999999999999999999s"}]}')$q$);
SELECT bi_expect_error('numbers', 'timeout of 2^63 ms', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "x", "timeout": "9223372036854775808ms"}]}')$q$);
SELECT bi_expect_error('numbers', 'a duration of 1000 digits', $q$SELECT vectorbea.validate_workflow(('{"nodes": [{"id": "a", "activity": "x", "timeout": "' || repeat('9', 1000) || 's"}]}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'max_attempts 2^31', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "x", "retry": {"max_attempts": 2147483648}}]}')$q$);
SELECT bi_expect_error('numbers', 'max_attempts 1e1000', $q$SELECT vectorbea.validate_workflow(('{"nodes": [{"id": "a", "activity": "x", "retry": {"max_attempts": 1e1000}}]}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'backoff initial', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "x", "retry": {"initial": "99999999999999d"}}]}')$q$);
SELECT bi_expect_error('numbers', 'backoff multiplier 1e400', $q$SELECT vectorbea.validate_workflow(('{"nodes": [{"id": "a", "activity": "x", "retry": {"multiplier": 1e400}}]}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'sleep for', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "s", "kind": "sleep", "sleep": {"for": "9223372036854775807ms"}}]}')$q$);
SELECT bi_expect_error('numbers', 'sleep until year 294277', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "s", "kind": "sleep", "sleep": {"until": "294277-01-01T00:00:00Z"}}]}')$q$);
SELECT bi_expect_error('numbers', 'approval timeout', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "g", "kind": "approval", "approval": {"gate": "g", "timeout": "99999999999999999d"}}]}')$q$);
SELECT bi_expect_error('numbers', 'quorum 1e11', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "g", "kind": "approval", "approval": {"gate": "g", "quorum": 99999999999, "approvers": ["a"]}}]}')$q$);
SELECT bi_expect_error('numbers', 'max_tokens 1e11', $q$SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "kind": "llm", "llm": {"provider": "openai", "model": "m", "prompt": "p", "max_tokens": 99999999999}}]}')$q$);
SELECT bi_expect_error('numbers', 'temperature 1e400', $q$SELECT vectorbea.validate_workflow(('{"nodes": [{"id": "a", "kind": "llm", "llm": {"provider": "openai", "model": "m", "prompt": "p", "temperature": 1e400}}]}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'estimate usd 1e1000', $q$SELECT vectorbea.validate_workflow(('{"nodes": [{"id": "a", "activity": "x", "estimate": {"usd": 1e1000}}]}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'run deadline', $q$SELECT vectorbea.start_run('bi', '{}', NULL, ('{"deadline": "' || repeat('9', 1000) || 's"}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'run budget_tokens 1e1000', $q$SELECT vectorbea.start_run('bi', '{}', NULL, ('{"budget_tokens": 1e1000}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'run budget_usd 1e1000', $q$SELECT vectorbea.start_run('bi', '{}', NULL, ('{"budget_usd": 1e1000}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'run priority 1e1000', $q$SELECT vectorbea.start_run('bi', '{}', NULL, ('{"priority": 1e1000}')::jsonb)$q$);
SELECT bi_expect_error('numbers', 'claim max_tasks 2^31-1', $q$SELECT vectorbea.claim_tasks('w', ARRAY['bi_b'], 2147483647)$q$);
SELECT bi_expect_error('numbers', 'claim lease_duration 178e6 years', $q$SELECT vectorbea.claim_tasks('w', ARRAY['bi_b'], 1, '178000000 years')$q$);
SELECT bi_expect_error('numbers', 'claim lease_duration negative', $q$SELECT vectorbea.claim_tasks('w', ARRAY['bi_b'], 1, '-1 s')$q$);
SELECT bi_expect_error('numbers', 'heartbeat extend', format($q$SELECT vectorbea.heartbeat(%s, %L, '100000 years')$q$, :task_id, :'lease'));
SELECT bi_expect_error('numbers', 'await timeout', format($q$SELECT vectorbea.await_approval(%s, %L, 'g', '{}', '100000 years')$q$, :task_id, :'lease'));
SELECT bi_expect_error('numbers', 'usage tokens 1e1000', format($q$SELECT vectorbea.complete_task(%s, %L, '{}', NULL, '{"tokens": 1e1000}')$q$, :task_id, :'lease'));
SELECT bi_expect_error('numbers', 'usage usd -1', format($q$SELECT vectorbea.complete_task(%s, %L, '{}', NULL, '{"usd": -1}')$q$, :task_id, :'lease'));
SELECT bi_expect_error('numbers', 'retry_after 1e1000', format($q$SELECT vectorbea.fail_task(%s, %L, '{"message": "m", "retry_after": 1e1000}')$q$, :task_id, :'lease'));
SELECT bi_expect_error('numbers', 'retry_after of 1000 digits', format($q$SELECT vectorbea.fail_task(%s, %L, ('{"message": "m", "retry_after": "' || repeat('9', 1000) || 's"}')::jsonb)$q$, :task_id, :'lease'));
SELECT bi_expect_error('numbers', 'error class of 1000 characters', format($q$SELECT vectorbea.fail_task(%s, %L, ('{"message": "m", "class": "' || repeat('c', 1000) || '"}')::jsonb)$q$, :task_id, :'lease'));
SELECT bi_expect_error('numbers', 'budget usd 1e1000', $q$SELECT vectorbea.set_budget('ws', ('1e1000')::numeric)$q$);
SELECT bi_expect_error('numbers', 'budget usd NaN', $q$SELECT vectorbea.set_budget('ws', 'NaN'::numeric)$q$);
SELECT bi_expect_error('numbers', 'budget tokens -1', $q$SELECT vectorbea.set_budget('ws', 5, 'month', -1)$q$);
SELECT bi_expect_error('numbers', 'run budget usd 1e1000', format($q$SELECT vectorbea.set_run_budget(%L, ('1e1000')::numeric)$q$, :'run'));
SELECT bi_expect_error('numbers', 'rate limit 2^31-1', $q$SELECT vectorbea.set_rate_limit('ws', 'openai', 2147483647)$q$);
SELECT bi_expect_error('numbers', 'rate limit 0', $q$SELECT vectorbea.set_rate_limit('ws', 'openai', 0)$q$);
SELECT bi_expect_error('numbers', 'concurrency limit -1', $q$SELECT vectorbea.set_concurrency_limit('bi_a', -1)$q$);
SELECT bi_expect_error('numbers', 'purge older_than 1e6 years', $q$SELECT vectorbea.purge_runs('1000000 years')$q$);
SELECT bi_expect_error('numbers', 'purge max_runs 2^31-1', $q$SELECT vectorbea.purge_runs('1 day', '{succeeded}', 2147483647)$q$);
SELECT bi_expect_error('numbers', 'a price of 1e400', $q$INSERT INTO vectorbea.model_prices VALUES ('openai', 'bi-model', 1e400, 1, 'user') RETURNING model$q$);
SELECT bi_expect_error('numbers', 'a negative price', $q$INSERT INTO vectorbea.model_prices VALUES ('openai', 'bi-model', -1, 1, 'user') RETURNING model$q$);

SELECT section, what, bi_stable(outcome) AS outcome FROM bi_refused ORDER BY section, what;
-- Each was refused with a SQLSTATE of its own (no internal error), in a
-- message short enough to read, and wrote nothing.
SELECT section, what, bi_stable(outcome) AS outcome FROM bi_refused
 WHERE outcome LIKE 'ok: %' OR outcome ~ '^XX' OR length(outcome) > 400;
SELECT bi_delta(:'counts_before', bi_counts()) AS written;
-- A documented no-op: replay up to an event before the first is NULL.
SELECT bi_try(format($q$SELECT vectorbea.replay(%L, -1)$q$, :'run')) AS replay_before_the_first_event;
SELECT (SELECT status FROM vectorbea.runs WHERE id = :'run') AS run_status,
	   (SELECT status FROM vectorbea.nodes WHERE id = :task_id) AS task_status,
	   (SELECT count(*) FROM vectorbea.verify_run(:'run')) AS differences;

-- ---------------------------------------------------------------------------
-- NUL and invalid UTF-8.  A UTF-8 database refuses both before the engine
-- sees them (\u0000 cannot be a jsonb string, a text cannot hold a NUL).
SELECT bi_try($q$SELECT vectorbea.start_run('bi', '{"a": "x\u0000y"}')$q$) AS nul_in_jsonb;
SELECT bi_try($q$SELECT vectorbea.cancel_run(gen_random_uuid(), E'a\x00b')$q$) AS nul_in_text;
SELECT bi_try($q$SELECT vectorbea.cancel_run(gen_random_uuid(), convert_from('\xff'::bytea, 'UTF8'))$q$) AS invalid_utf8;
-- A SQL_ASCII database takes any byte, and a LATIN1 one reads 0x80 to 0x9f
-- as the C1 control characters (0x9b is the terminal's CSI): escape_text
-- and timeline show them escaped, like the C0 ones.
DROP DATABASE IF EXISTS bi_sql_ascii;
DROP DATABASE IF EXISTS bi_latin1;
CREATE DATABASE bi_sql_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
CREATE DATABASE bi_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c bi_sql_ascii
SET client_encoding = 'SQL_ASCII';
SET client_min_messages = warning;
CREATE EXTENSION vectorbea CASCADE;
RESET client_min_messages;
SELECT vectorbea.escape_text(E'ok \xc3\xa9, invalid \xff\xfe, cut \xe2\x82, CSI \x9b[2J, lone \xc2, NEL \xc2\x85, end \xf0');
SELECT vectorbea.define_workflow('enc', '{"nodes": [{"id": "a", "activity": "enc"}]}');
SELECT vectorbea.start_run('enc') AS enc_run \gset
SELECT count(*) FROM vectorbea.claim_tasks(E'worker \x9b[31m\xff', ARRAY['enc']);
SELECT vectorbea.cancel_run(:'enc_run', E'reason \x9b[2J\xe2');
SELECT regexp_replace(t, '^\d\d:\d\d:\d\d\.\d{3} |[0-9a-f]{8}-[0-9a-f-]{27}', '', 'g') FROM vectorbea.timeline(:'enc_run') t;
\c bi_latin1
SET client_encoding = 'UTF8';
SET client_min_messages = warning;
CREATE EXTENSION vectorbea CASCADE;
RESET client_min_messages;
SELECT vectorbea.escape_text(E'caf\u00e9 CSI \u009b[2J NEL \u0085 nbsp \u00a0.');
\c contrib_regression
DROP DATABASE bi_sql_ascii;
DROP DATABASE bi_latin1;

-- Names that name nothing are cut in the message, as bad values are.
SELECT vectorbea.start_run(repeat('w', 300)); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.claim_tasks('w', ARRAY['vectorbea:' || repeat('x', 300)]); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.append_event(:'run', 'NOTE', '{}', repeat('n', 300)); \echo SQLSTATE :SQLSTATE
-- So are unknown field names, wherever they are, and a bad graph format.
SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(
	jsonb_build_object('id', 'a', 'activity', 'a', repeat('f', 200), 1)))); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('bi', '{}', NULL, jsonb_build_object(repeat('o', 200), 1)); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue_dead(jsonb_build_object(repeat('q', 200), 'x')); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.graph(:'run', repeat('m', 5000)); \echo SQLSTATE :SQLSTATE
-- A claim's activities may have any bounds (the array is read as given);
-- a worker name counts characters; a lease refusal cuts the node and the
-- worker it names, and shows the worker on one line.
SELECT vectorbea.define_workflow('bi_lb', jsonb_build_object('nodes', jsonb_build_array(
	jsonb_build_object('id', repeat('n', 100), 'activity', 'bi_lb'))));
SELECT vectorbea.start_run('bi_lb') IS NOT NULL AS started;
SELECT count(*) AS claimed_with_other_bounds FROM vectorbea.claim_tasks('w', '[0:0]={bi_nothing}'::text[]);
SELECT task_id AS lb_task FROM vectorbea.claim_tasks(repeat('é', 150) || E'\nX', '[0:0]={bi_lb}'::text[]) \gset
SELECT vectorbea.complete_task(:lb_task, gen_random_uuid()); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_concurrency_limit('vectorbea:' || repeat('a', 60), 1); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', 'g',
	'kind', 'approval', 'approval', jsonb_build_object('gate', 'g', 'approver_role', repeat('r', 5000)))))); \echo SQLSTATE :SQLSTATE

-- The server is up, and the run is as it was.
SELECT (SELECT status FROM vectorbea.runs WHERE id = :'run') AS run_status;
DROP TABLE public.bi_fixture, public.bi_null_ok, public.bi_null_calls, public.bi_refused, public.bi_big, public.bi_deep;
-- Node ids of up to 128 characters are cut in messages, like every value
-- over 40: in a field's error, a dependency, a duplicate and a cycle.
SELECT bi_try($q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', repeat('n', 100), 'activity', 'x', 'timeout', 'soon'))))$q$);
SELECT bi_try($q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', repeat('n', 100), 'activity', 'x', 'depends_on', jsonb_build_array(repeat('m', 90))))))$q$);
SELECT bi_try($q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', repeat('n', 100), 'activity', 'x'), jsonb_build_object('id', repeat('n', 100), 'activity', 'y'))))$q$);
SELECT bi_try($q$SELECT vectorbea.validate_workflow(jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', repeat('n', 100), 'activity', 'x', 'depends_on', jsonb_build_array(repeat('m', 90))), jsonb_build_object('id', repeat('m', 90), 'activity', 'y', 'depends_on', jsonb_build_array(repeat('n', 100))))))$q$);

-- An llm node's names are cut too, and a nested integer is named by its
-- whole path.
SELECT bi_try(format($q$SELECT vectorbea.validate_workflow('{"nodes":[{"id":"x","kind":"llm","llm":{"provider":"%s","model":"m","prompt":"p"}}]}')$q$, repeat('p', 100)));
SELECT bi_try(format($q$SELECT vectorbea.validate_workflow('{"nodes":[{"id":"x","kind":"llm","llm":{"provider":"openai","model":"m","prompt":"p","output_schema":{"type":"%s"}}}]}')$q$, repeat('t', 100)));
SELECT bi_try(format($q$SELECT vectorbea.validate_workflow('{"nodes":[{"id":"x","kind":"llm","llm":{"provider":"openai","model":"m","prompt":"p","output_schema":{"%s":1}}}]}')$q$, repeat('k', 100)));
SELECT bi_try(format($q$SELECT vectorbea.validate_workflow('{"nodes":[{"id":"x","kind":"llm","llm":{"provider":"openai","model":"m","prompt":"p","output_schema":{"properties":{"%s":{"type":"bogus"}}}}}]}')$q$, repeat('q', 100)));
SELECT bi_try(format($q$SELECT vectorbea.validate_workflow('{"nodes":[{"id":"x","kind":"llm","llm":{"provider":"openai","model":"m","prompt":"p","allow_spawn":{"activities":["%s"],"max_nodes":1}}}]}')$q$, repeat('a', 99) || '!'));
SELECT bi_try($q$SELECT vectorbea.validate_workflow('{"nodes":[{"id":"x","kind":"llm","llm":{"provider":"openai","model":"m","prompt":"p","allow_spawn":{"activities":["a"],"max_nodes":0}}}]}')$q$);
SELECT bi_try($q$SELECT vectorbea.validate_workflow('{"nodes":[{"id":"x","kind":"llm","llm":{"provider":"openai","model":"m","prompt":"p","output_schema":{"properties":{"steps":{"type":"array","maxItems":-1}}}}}]}')$q$);

DROP FUNCTION public.bi_try(text), bi_stable(text), bi_counts(), bi_delta(jsonb, jsonb), bi_sample(name, text, regtype),
	bi_expect_error(text, text, text);

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
