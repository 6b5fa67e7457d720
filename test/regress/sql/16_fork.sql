-- fork_run(): a finished run rerun from one of its nodes on.  Nodes that
-- finished before it and are not downstream of it are reused with their
-- recorded outputs (no claim), nodes their spawns added keep the recorded
-- shape, the rest runs again with the changes given; the fork's history
-- says where it came from, and diff_runs() shows what changed.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

SELECT vectorbea.define_workflow('brief', '{"nodes":[
	{"id":"collect","activity":"fk_collect"},
	{"id":"metrics","activity":"fk_metrics"},
	{"id":"plan","activity":"fk_plan","depends_on":["collect","metrics"]},
	{"id":"write","kind":"llm","depends_on":["plan"],
	 "llm":{"provider":"openai","model":"gpt-4o-mini","prompt":"Brief on {{upstream.plan.output.topic}}"}},
	{"id":"publish","activity":"fk_publish","depends_on":["write"]}]}');
SELECT vectorbea.start_run('brief', '{"day": "monday"}') AS src \gset
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, jsonb_build_object('from', activity))
	FROM vectorbea.claim_tasks('w', ARRAY['fk_collect', 'fk_metrics'], 2)) c;
-- plan spawns an investigation that the write step does not wait for.
SELECT vectorbea.complete_task(task_id, lease, '{"topic": "checkout latency"}',
		spawn => '[{"id":"investigate","activity":"fk_investigate","depends_on":["plan"]}]')
  FROM vectorbea.claim_tasks('w', ARRAY['fk_plan']);
SELECT vectorbea.complete_task(task_id, lease, '{"finding": "db pool"}')
  FROM vectorbea.claim_tasks('w', ARRAY['fk_investigate']);
-- The llm node is the scheduler's; here a test stands in: it is cancelled.
SELECT vectorbea.cancel_run(:'src', 'no provider in this test');
SELECT * FROM nodes_of(:'src');

-- Fork from the llm node with a new prompt: collect, metrics, plan and the
-- investigation it spawned are reused; write and publish run again.
SELECT vectorbea.fork_run(:'src', 'write',
	'{"write": {"llm": {"prompt": "A shorter brief on {{upstream.plan.output.topic}}", "max_tokens": 200}}}') AS fork \gset
SELECT * FROM nodes_of(:'fork');
SELECT node, output FROM vectorbea.nodes WHERE run_id = :'fork' AND status = 'succeeded' ORDER BY id;
SELECT llm->>'prompt' AS prompt, llm->>'max_tokens' AS max_tokens FROM vectorbea.nodes
 WHERE run_id = :'fork' AND node = 'write';
SELECT data->'forked_from'->>'node' AS forked_from_node,
	   (data->'forked_from'->>'run')::uuid = :'src' AS from_source
  FROM vectorbea.events WHERE run_id = :'fork' AND type = 'RUN_STARTED';
SELECT line FROM timeline_text(:'fork') AS line;
-- The picture says which nodes the fork reused.
SELECT vectorbea.graph(:'fork');
SELECT count(*) AS reused_claimable FROM vectorbea.claim_tasks('w', ARRAY['fk_collect', 'fk_metrics', 'fk_plan', 'fk_investigate'], 10);
SELECT * FROM check_run(:'fork');
SELECT node, what FROM vectorbea.diff_runs(:'src', :'fork') WHERE what <> 'latency_ms';

-- Fork from plan, changing its input: plan reruns, its old spawn is not
-- copied (plan spawns again, or not, when it reruns).
SELECT vectorbea.fork_run(:'src', 'plan', '{"plan": {"input": {"depth": 2}}}') AS fork2 \gset
SELECT * FROM nodes_of(:'fork2');
SELECT input FROM vectorbea.nodes WHERE run_id = :'fork2' AND node = 'plan';
SELECT vectorbea.complete_task(task_id, lease, '{"topic": "payments"}',
		spawn => '[{"id":"investigate","activity":"fk_investigate","depends_on":["plan"]},
				   {"id":"investigate2","activity":"fk_investigate","depends_on":["plan"]}]')
  FROM vectorbea.claim_tasks('w', ARRAY['fk_plan']);
SELECT node, status, spawned_by FROM vectorbea.nodes WHERE run_id = :'fork2' ORDER BY id;
SELECT * FROM check_run(:'fork2');

-- A node spawned by a reused node but depending on a node the fork leaves
-- out is left out too: its dependency may never come back.
SELECT vectorbea.define_workflow('dang', '{"nodes":[{"id":"a","activity":"dg_a"},{"id":"r","activity":"dg_r"}]}');
SELECT vectorbea.start_run('dang') AS dang \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', spawn => '[{"id":"y","activity":"dg_y"}]')
  FROM vectorbea.claim_tasks('w', ARRAY['dg_a']);
SELECT vectorbea.complete_task(task_id, lease, '{"y": "old"}') FROM vectorbea.claim_tasks('w', ARRAY['dg_y']);
SELECT vectorbea.complete_task(task_id, lease, '{}', spawn => '[{"id":"x","activity":"dg_x","depends_on":["y"]}]')
  FROM vectorbea.claim_tasks('w', ARRAY['dg_r']);
SELECT vectorbea.complete_task(task_id, lease, '{"from_y": "old"}') FROM vectorbea.claim_tasks('w', ARRAY['dg_x']);
SELECT status FROM vectorbea.runs WHERE id = :'dang';
SELECT vectorbea.fork_run(:'dang', 'a') AS dang_fork \gset
SELECT node, status, attempt, spawned_by FROM vectorbea.nodes WHERE run_id = :'dang_fork' ORDER BY id;
SELECT * FROM check_run(:'dang_fork');

-- Fork onto another version of the workflow: its changed node (write's
-- prompt) and new node (review) run with from_node; the rest is reused.
SELECT vectorbea.define_workflow('brief', '{"nodes":[
	{"id":"collect","activity":"fk_collect"},
	{"id":"metrics","activity":"fk_metrics"},
	{"id":"plan","activity":"fk_plan","depends_on":["collect","metrics"]},
	{"id":"write","kind":"llm","depends_on":["plan"],
	 "llm":{"provider":"openai","model":"gpt-4o-mini","prompt":"Two lines on {{upstream.plan.output.topic}}"}},
	{"id":"publish","activity":"fk_publish","depends_on":["write"]},
	{"id":"review","activity":"fk_review","depends_on":["publish"]}]}');
SELECT vectorbea.fork_run(:'src', 'publish', version => 2) AS fork_v2 \gset
SELECT workflow_version FROM vectorbea.runs WHERE id = :'fork_v2';
SELECT * FROM nodes_of(:'fork_v2');
SELECT llm->>'prompt' AS prompt FROM vectorbea.nodes WHERE run_id = :'fork_v2' AND node = 'write';
SELECT data->>'version' AS version, data->'forked_from'->>'version' AS from_version
  FROM vectorbea.events WHERE run_id = :'fork_v2' AND type = 'RUN_STARTED';
SELECT * FROM check_run(:'fork_v2');

-- Onto a version that took nodes away: x's spawner r is gone, and y is
-- now a node of the definition, so the y that a spawned is not copied.
SELECT vectorbea.define_workflow('dang', '{"nodes":[{"id":"a","activity":"dg_a"},
	{"id":"r2","activity":"dg_r"},{"id":"y","activity":"dg_y2"}]}');
SELECT vectorbea.fork_run(:'dang', 'r2', version => 2) AS dang_v2 \gset
SELECT * FROM nodes_of(:'dang_v2');
SELECT * FROM check_run(:'dang_v2');

-- Bad input changes nothing.  (Messages that name a run are masked.)
CREATE FUNCTION masked_error(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	msg text;
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	RETURN SQLSTATE || ' ' || regexp_replace(msg, '[0-9a-f]{8}-[0-9a-f-]{27}', '<run>', 'g');
END $$;
-- An output schema added by a change gets a definition's default
-- corrections (2), not the 0 a node without a schema had.
SELECT vectorbea.fork_run(:'src', 'write', '{"write": {"llm": {"output_schema": {"type": "object"}}}}') AS schema_fork \gset
SELECT llm->>'max_corrections' AS max_corrections, llm->'output_schema' AS schema
  FROM vectorbea.nodes WHERE run_id = :'schema_fork' AND node = 'write';
SELECT count(*) AS runs_before FROM vectorbea.runs \gset
SELECT vectorbea.fork_run(NULL, 'write'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run('00000000-0000-0000-0000-000000000000', 'write'); \echo SQLSTATE :SQLSTATE
SELECT masked_error(format('SELECT vectorbea.fork_run(%L, %L)', :'src', 'nope'));
SELECT masked_error(format('SELECT vectorbea.fork_run(%L, %L)', :'fork', 'write'));
SELECT vectorbea.fork_run(:'src', 'write', '[]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'write', '{"collect": {"input": {}}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'write', '{"ghost": {"input": {}}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'plan', '{"investigate": {"input": {}}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'write', '{"write": {"colour": "red"}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'write', '{"write": {"input": 7}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'write', '{"publish": {"llm": {"model": "x"}}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'write', '{"write": {"llm": {"max_tokens": -1}}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'write', '{"write": {"llm": {"prompt": "{{upstream.collect.output.x}}"}}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fork_run(:'src', 'write', version => 7); \echo SQLSTATE :SQLSTATE
SELECT masked_error(format('SELECT vectorbea.fork_run(%L, %L, version => 1)', :'src', 'review'));
-- A node of the run that the version took away is not a fork's to start from.
SELECT masked_error(format('SELECT vectorbea.fork_run(%L, %L, version => 2)', :'dang', 'r'));
-- A spawned node that the version leaves out (its spawner r is gone) is
-- left out of the fork; no version ever defined it, so it is not "the
-- version has no node", and the detail names its spawner.
CREATE FUNCTION masked_error_detail(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	msg text;
	detail text;
	hint text;
BEGIN
	EXECUTE statement;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
	RETURN SQLSTATE || ' ' || regexp_replace(msg, '[0-9a-f]{8}-[0-9a-f-]{27}', '<run>', 'g')
		   || E'\nDETAIL: ' || detail || E'\nHINT: ' || hint;
END $$;
SELECT masked_error_detail(format('SELECT vectorbea.fork_run(%L, %L, version => 2)', :'dang', 'x'));
-- A fork changes what an llm node asks, not how it fails.
SELECT vectorbea.fork_run(:'src', 'write', '{"write": {"llm": {"on_exhausted": "escalate"}}}'); \echo SQLSTATE :SQLSTATE
-- None of these refusals started a run.
SELECT count(*) = :runs_before AS nothing_written FROM vectorbea.runs;
-- A run node's input is a template, checked as a definition's is.
SELECT vectorbea.define_workflow('kid_of', '{"nodes":[{"id":"k","activity":"ko_k"}]}');
SELECT vectorbea.define_workflow('par_of', '{"nodes":[{"id":"p","activity":"po_p"},
	{"id":"kid","kind":"run","run":{"workflow":"kid_of"},"depends_on":["p"],"input":{"v":"{{upstream.p.output.v}}"}}]}');
SELECT vectorbea.start_run('par_of') AS par_run \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['po_p']);
SELECT count(*) AS runs_before FROM vectorbea.runs \gset
SELECT vectorbea.fork_run(:'par_run', 'kid', '{"kid": {"input": {"v": "{{upstream.zz.output.v}}"}}}'); \echo SQLSTATE :SQLSTATE
SELECT count(*) = :runs_before AS nothing_written FROM vectorbea.runs;

-- A fork keeps its run's deadline option: a duration counts from the
-- fork's start (and is enforced), a timestamp that has passed refuses the
-- fork, which would fail at once.
SELECT vectorbea.define_workflow('due', '{"nodes":[{"id":"a","activity":"due_a","retry":{"max_attempts":1}}]}');
SELECT vectorbea.start_run('due', '{}', NULL, '{"deadline": "1h"}') AS due_src \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['due_a']);
SET vectorbea.test_clock_offset = '3h';
SELECT vectorbea.fork_run(:'due_src', 'a') AS due_fork \gset
SELECT deadline - created_at AS fork_deadline_after FROM vectorbea.runs WHERE id = :'due_fork';
SET vectorbea.test_clock_offset = '5h';
SELECT vectorbea.run_due_work()->'deadlines_enforced' AS enforced;
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'due_fork';
RESET vectorbea.test_clock_offset;
SELECT vectorbea.start_run('due', '{}', NULL, jsonb_build_object('deadline', now() + interval '1 hour')) AS due_abs \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['due_a']);
SET vectorbea.test_clock_offset = '2h';
SELECT regexp_replace(masked_error(format('SELECT vectorbea.fork_run(%L, %L)', :'due_abs', 'a')),
					  '\d{4}-\d\d-\d\dT[0-9:.]+Z', '<time>') AS refused;
RESET vectorbea.test_clock_offset;
SELECT count(*) AS forks_of_due_abs FROM vectorbea.events WHERE type = 'RUN_STARTED' AND data->'forked_from'->>'run' = :'due_abs';

-- A fork's budgets are its options' (what its RUN_STARTED says), not one
-- that set_run_budget gave the source since.
SELECT vectorbea.define_workflow('fb', '{"nodes":[{"id":"a","activity":"fb_a"}]}');
SELECT vectorbea.start_run('fb', '{}', NULL, '{"budget_tokens": 100}') AS fb_run \gset
SELECT vectorbea.set_run_budget(:'fb_run', 2, 500);
SELECT count(vectorbea.complete_task(task_id, lease)) FROM vectorbea.claim_tasks('w', ARRAY['fb_a']);
SELECT vectorbea.fork_run(:'fb_run', 'a') AS fb_fork \gset
SELECT budget_usd, budget_tokens FROM vectorbea.runs WHERE id = :'fb_fork';
SELECT * FROM check_run(:'fb_fork');

-- A fork is held to max_nodes_per_run, as a start is: here the nodes of
-- version 2 fit, but with the spawned node its source keeps they do not.
SELECT vectorbea.define_workflow('fmax', '{"nodes":[{"id":"a","activity":"fmax_a"}]}');
SELECT vectorbea.start_run('fmax') AS fmax_run \gset
SELECT count(vectorbea.complete_task(task_id, lease, '{}', '[{"id":"s","activity":"fmax_s"}]'))
  FROM vectorbea.claim_tasks('w', ARRAY['fmax_a']);
SELECT count(vectorbea.complete_task(task_id, lease)) FROM vectorbea.claim_tasks('w', ARRAY['fmax_s']);
SELECT vectorbea.define_workflow('fmax', '{"nodes":[{"id":"a","activity":"fmax_a"},{"id":"b","activity":"fmax_b"},
	{"id":"c","activity":"fmax_c","depends_on":["b"]}]}');
SET vectorbea.max_nodes_per_run = 3;
SELECT masked_error(format('SELECT vectorbea.fork_run(%L, %L, version => 2)', :'fmax_run', 'b'));
RESET vectorbea.max_nodes_per_run;
SELECT count(*) AS fmax_runs FROM vectorbea.runs WHERE workflow = 'fmax';

-- A long node id is quoted cut in the refusal of a change to a reused node.
SELECT vectorbea.define_workflow('fk_long', jsonb_build_object('nodes', jsonb_build_array(
	jsonb_build_object('id', repeat('n', 63) || '1', 'activity', 'fk_long'),
	jsonb_build_object('id', 'b', 'activity', 'fk_long', 'depends_on', jsonb_build_array(repeat('n', 63) || '1')))));
SELECT vectorbea.start_run('fk_long') AS long_run \gset
SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['fk_long']) t, LATERAL vectorbea.complete_task(t.task_id, t.lease, '{}') c;
SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['fk_long']) t, LATERAL vectorbea.complete_task(t.task_id, t.lease, '{}') c;
SELECT vectorbea.fork_run(:'long_run', 'b', jsonb_build_object(repeat('n', 63) || '1', jsonb_build_object('input', '{}'::jsonb))); \echo SQLSTATE :SQLSTATE

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
