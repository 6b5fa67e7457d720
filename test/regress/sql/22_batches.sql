-- complete_tasks: many completions in one call, with complete_task's
-- meaning for each, all or nothing; and the worker loop that completes the
-- previous batch and claims the next in one transaction.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SELECT vectorbea.define_workflow('fan', '{"nodes":[
	{"id":"a1","activity":"work"},{"id":"a2","activity":"work"},
	{"id":"a3","activity":"work"},{"id":"a4","activity":"work"},
	{"id":"join","activity":"sum","depends_on":["a1","a2","a3","a4"]}]}');

-- A fan-out whose four parents finish in one call: the join becomes ready
-- exactly once, with one STEP_COMPLETED per parent numbered in order.
SELECT vectorbea.start_run('fan', '{}') AS fan \gset
CREATE TEMP TABLE c1 AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['work'], 4);
SELECT vectorbea.complete_tasks(array_agg(task_id ORDER BY node), array_agg(lease ORDER BY node),
								array_agg(jsonb_build_object('n', node) ORDER BY node)) AS completed
  FROM c1;
SELECT * FROM nodes_of(:'fan');
SELECT seq, type, node, data->'output' AS output FROM vectorbea.events
 WHERE run_id = :'fan' ORDER BY seq;
SELECT upstream FROM vectorbea.claim_tasks('w', ARRAY['sum'], 5) \gset
\echo :upstream
SELECT * FROM check_run(:'fan');

-- One call across runs: each run locked once, each run ends in it.
SELECT vectorbea.define_workflow('pair', '{"nodes":[
	{"id":"x","activity":"pair"},{"id":"y","activity":"pair"}]}');
SELECT count(vectorbea.start_run('pair', jsonb_build_object('i', i))) AS started FROM generate_series(1, 3) i;
CREATE TEMP TABLE c2 AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['pair'], 10);
SELECT count(*) AS claimed FROM c2;
SELECT vectorbea.complete_tasks(array_agg(task_id), array_agg(lease)) AS completed FROM c2;
SELECT r.input->>'i' AS i, r.status, r.open_nodes,
	   (SELECT array_agg(type ORDER BY seq) FROM vectorbea.events e WHERE e.run_id = r.id) AS history
  FROM vectorbea.runs r WHERE workflow = 'pair' ORDER BY 1;
SELECT count(*) FILTER (WHERE output IS NULL) AS null_outputs FROM vectorbea.nodes
 WHERE run_id IN (SELECT run_id FROM c2);
SELECT bool_and(c.differences = 0 AND c.replay_stable) AS all_consistent
  FROM vectorbea.runs r, check_run(r.id) c WHERE workflow = 'pair';

-- The same call again is a no-op and completes nothing.
SELECT vectorbea.complete_tasks(array_agg(task_id), array_agg(lease)) AS repeated FROM c2;
-- The same lease with another output is refused, like complete_task.
SELECT vectorbea.complete_tasks(ARRAY[task_id], ARRAY[lease], ARRAY['{"other":1}'::jsonb])
  FROM c2 LIMIT 1;

-- All or nothing: one stale lease in a batch, and no task of it completes.
SELECT vectorbea.start_run('pair', '{"i": 9}') AS nine \gset
CREATE TEMP TABLE c3 AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['pair'], 2);
SELECT task_id AS x_id, lease AS x_lease FROM c3 WHERE node = 'x' \gset
SELECT task_id AS y_id, lease AS y_lease FROM c3 WHERE node = 'y' \gset
SELECT vectorbea.complete_tasks(ARRAY[:x_id, :y_id], ARRAY[:'x_lease', gen_random_uuid()]);
\echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_tasks(ARRAY[:x_id, 999999999], ARRAY[:'x_lease', gen_random_uuid()]);
\echo SQLSTATE :SQLSTATE
SELECT status, count(*) FROM vectorbea.nodes WHERE run_id = :'nine' GROUP BY status;
SELECT count(*) AS events FROM vectorbea.events WHERE run_id = :'nine';

-- Arguments: clear errors, nothing written.
SELECT vectorbea.complete_tasks(NULL, ARRAY[gen_random_uuid()]);
SELECT vectorbea.complete_tasks(ARRAY[1::bigint], NULL);
SELECT vectorbea.complete_tasks(ARRAY[1::bigint, NULL], ARRAY[gen_random_uuid(), gen_random_uuid()]);
SELECT vectorbea.complete_tasks(ARRAY[1::bigint, 2], ARRAY[gen_random_uuid()]);
SELECT vectorbea.complete_tasks(ARRAY[1::bigint], ARRAY[gen_random_uuid()], ARRAY['{}'::jsonb, '{}']);
SELECT vectorbea.complete_tasks(ARRAY[:x_id, :x_id], ARRAY[:'x_lease', :'x_lease']::uuid[]);
SELECT vectorbea.complete_tasks(ARRAY[[1::bigint]], ARRAY[[gen_random_uuid()]]);
SELECT vectorbea.complete_tasks(array_agg(i), array_agg(gen_random_uuid()))
  FROM generate_series(1::bigint, 1001) i;
SELECT vectorbea.complete_tasks(ARRAY[:x_id], ARRAY[:'x_lease'::uuid],
								usages => ARRAY['{"tokens": -1}'::jsonb]);
SELECT vectorbea.complete_tasks('{}', '{}') AS nothing;
SELECT status, count(*) FROM vectorbea.nodes WHERE run_id = :'nine' GROUP BY status;

-- Items with spawn or usage in the same call: each has complete_task's
-- meaning (spawned nodes added and recorded, usage booked).
SELECT vectorbea.complete_tasks(array_agg(task_id ORDER BY node), array_agg(lease ORDER BY node),
	ARRAY['{"r":"x"}', '{"r":"y"}']::jsonb[],
	ARRAY['[{"id":"z","activity":"pair","depends_on":["x"]}]', NULL]::jsonb[],
	ARRAY[NULL, '{"tokens": 12, "usd": 0.5}']::jsonb[]) AS completed
  FROM c3;
SELECT node, status, spawned_by, output FROM vectorbea.nodes WHERE run_id = :'nine' ORDER BY id;
SELECT usage_tokens, usage_usd FROM vectorbea.runs WHERE id = :'nine';
SELECT seq, type, node FROM vectorbea.events WHERE run_id = :'nine' ORDER BY seq;

-- The pipelined loop: complete the previous task and claim the next in
-- one transaction (one commit per task).
SELECT task_id AS z_id, lease AS z_lease FROM vectorbea.claim_tasks('w', ARRAY['pair'], 1) \gset
SELECT vectorbea.start_run('pair', '{"i": 10}') AS ten \gset
BEGIN;
SELECT vectorbea.complete_tasks(ARRAY[:z_id], ARRAY[:'z_lease'::uuid], ARRAY['{"r":"z"}'::jsonb]);
SELECT node FROM vectorbea.claim_tasks('w', ARRAY['pair'], 1) \gset
COMMIT;
\echo next claimed :node
SELECT run_id = :'ten' AS next_from_the_new_run FROM vectorbea.nodes WHERE status = 'running' AND activity = 'pair';
SELECT status FROM vectorbea.runs WHERE id = :'nine';
SELECT * FROM check_run(:'nine');

-- An approval node released by a batch opens its gate once.
SELECT vectorbea.define_workflow('gated', '{"nodes":[
	{"id":"p","activity":"gw"},{"id":"q","activity":"gw"},
	{"id":"ok","kind":"approval","approval":{"gate":"ok"},"depends_on":["p","q"]}]}');
SELECT vectorbea.start_run('gated', '{}') AS gated \gset
SELECT vectorbea.complete_tasks(array_agg(task_id), array_agg(lease)) AS completed
  FROM vectorbea.claim_tasks('w', ARRAY['gw'], 2);
SELECT gate, status FROM vectorbea.approvals WHERE run_id = :'gated';
SELECT * FROM timeline_text(:'gated');
SELECT * FROM check_run(:'gated');

-- start_runs: one run per input, in the order of the inputs, created
-- together; each exactly as start_run would have made it.
SELECT vectorbea.define_workflow('two', '{"nodes":[
	{"id":"first","activity":"s1","input":{"from":"{{run.input.n}}"}},
	{"id":"second","activity":"s2","depends_on":["first"]}]}');
CREATE TEMP TABLE started AS
	SELECT * FROM vectorbea.start_runs('two',
		ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[],
		ARRAY['k1', NULL, 'k3'], '{"priority": 5, "workspace": "bulk"}') WITH ORDINALITY AS s(id, ord);
SELECT s.ord, r.input, r.idempotency_key, r.priority, r.workspace, r.status, r.last_seq,
	   r.open_nodes, r.node_count
  FROM started s JOIN vectorbea.runs r ON r.id = s.id ORDER BY s.ord;
SELECT s.ord, n.node, n.status, n.deps_remaining, n.priority, n.available_at IS NOT NULL AS available
  FROM started s JOIN vectorbea.nodes n ON n.run_id = s.id ORDER BY s.ord, n.id;
SELECT s.ord, e.seq, e.type, e.data->'input' AS input, jsonb_array_length(e.data->'nodes') AS nodes
  FROM started s JOIN vectorbea.events e ON e.run_id = s.id ORDER BY s.ord, e.seq;
SELECT bool_and(c.differences = 0 AND c.replay_stable) AS all_consistent
  FROM started s, check_run(s.id) c;
-- The same as start_run one by one (the replayed state, ids and times aside).
SELECT vectorbea.start_run('two', '{"n": 2}', NULL, '{"priority": 5, "workspace": "bulk"}') AS single \gset
SELECT (vectorbea.replay(:'single') - 'run' - 'started_at')
	 = (vectorbea.replay(s.id) - 'run' - 'started_at') AS replay_same_as_start_run,
	   (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(vectorbea.replay(s.id)) k) AS replayed
  FROM started s WHERE s.ord = 2;
-- Keys: a key used before in the workspace returns its run; with another
-- input it is refused.
SELECT s.id = (SELECT id FROM started WHERE ord = 1) AS same_run
  FROM vectorbea.start_runs('two', ARRAY['{"n": 1}']::jsonb[], ARRAY['k1'], '{"workspace": "bulk"}') AS s(id);
SELECT vectorbea.start_runs('two', ARRAY['{"n": 4}', '{"n": 99}']::jsonb[], ARRAY['k4', 'k1'],
							'{"workspace": "bulk"}');
SELECT count(*) AS runs_with_k4 FROM vectorbea.runs WHERE idempotency_key = 'k4';
-- The same key twice in one call with the same input is one run.
SELECT count(DISTINCT s) AS distinct_runs
  FROM vectorbea.start_runs('two', ARRAY['{"n": 5}', '{"n": 5}']::jsonb[], ARRAY['k5', 'k5']) AS s;
-- With another input it is refused by position, and nothing is started.
SELECT vectorbea.start_runs('two', ARRAY['{"n": 6}', '{"n": 7}', '{"n": 8}']::jsonb[], ARRAY['k6', 'k7', 'k6']);
SELECT count(*) AS runs_with_k6 FROM vectorbea.runs WHERE idempotency_key IN ('k6', 'k7');
-- Claimable at once, and worked to the end like any run.
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS claimed
  FROM vectorbea.claim_tasks('w', ARRAY['s1'], 100);
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS second_steps
  FROM vectorbea.claim_tasks('w', ARRAY['s2'], 100);
SELECT status, count(*) FROM vectorbea.runs WHERE workflow = 'two' GROUP BY status;
SELECT count(*) AS differences FROM vectorbea.runs r, vectorbea.verify_run(r.id) v WHERE r.workflow = 'two';
-- Workflows that open a gate at the start, and paused workspaces, take
-- start_run's path one run at a time, with the same result.
SELECT vectorbea.define_workflow('gate_first', '{"nodes":[
	{"id":"ok","kind":"approval","approval":{"gate":"start"}},
	{"id":"go","activity":"go","depends_on":["ok"]}]}');
CREATE TEMP TABLE gated_runs AS
	SELECT s AS id FROM vectorbea.start_runs('gate_first', ARRAY['{}', '{}']::jsonb[]) s;
SELECT count(*) AS gates FROM gated_runs g JOIN vectorbea.approvals a ON a.run_id = g.id;
-- That path treats a key given twice as the set path does: one run for
-- the same input, refused by position for another (it said the key was
-- already used, by the run this call's own error rolls back).
SELECT count(DISTINCT s) AS distinct_runs
  FROM vectorbea.start_runs('gate_first', ARRAY['{"n": 1}', '{"n": 1}']::jsonb[], ARRAY['g1', 'g1']) AS s;
SELECT vectorbea.start_runs('gate_first', ARRAY['{"n": 2}', '{"n": 3}']::jsonb[], ARRAY['g2', 'g2']);
SELECT count(*) AS runs_with_g2 FROM vectorbea.runs WHERE idempotency_key = 'g2';
SELECT bool_and(c.differences = 0) AS consistent FROM gated_runs g, check_run(g.id) c;
SELECT vectorbea.pause_workspace('stopped', 'maintenance');
CREATE TEMP TABLE paused_runs AS
	SELECT s AS id FROM vectorbea.start_runs('two', ARRAY['{}', '{}']::jsonb[], NULL,
											 '{"workspace": "stopped"}') s;
SELECT r.status, count(*) FROM paused_runs p JOIN vectorbea.runs r USING (id) GROUP BY r.status;
-- Bad input: clear errors, nothing started.
SELECT count(*) AS runs_before FROM vectorbea.runs \gset
SELECT vectorbea.start_runs('two', NULL);
SELECT vectorbea.start_runs('nope', ARRAY['{}']::jsonb[]);
SELECT vectorbea.start_runs('two', ARRAY['{}', NULL]::jsonb[]);
SELECT vectorbea.start_runs('two', ARRAY['{}', '[1]']::jsonb[]);
SELECT vectorbea.start_runs('two', ARRAY['{}']::jsonb[], ARRAY['a', 'b']);
SELECT vectorbea.start_runs('two', ARRAY['{}']::jsonb[], ARRAY['']);
SELECT vectorbea.start_runs('two', ARRAY['{}', '{}']::jsonb[], ARRAY[['x'], ['y']]);
SET vectorbea.max_payload_size = '16kB';
SELECT vectorbea.start_runs('two', ARRAY['{}', '{}', jsonb_build_object('pad', repeat('x', 20000))]);
RESET vectorbea.max_payload_size;
SELECT vectorbea.start_runs('two', ARRAY['{}']::jsonb[], NULL, '{"priority": 5000}');
SELECT vectorbea.start_runs('two', array_agg('{}'::jsonb)) FROM generate_series(1, 10001);
SELECT vectorbea.start_runs('two', '{}') AS none;
SELECT vectorbea.start_runs('nope', '{}') AS none;
SELECT count(*) - :runs_before AS runs_added FROM vectorbea.runs;

-- An item's error says which item: two tasks of node "a" of two runs, the
-- second with a spawn list that is not one; nothing is completed.
SELECT vectorbea.define_workflow('named', '{"nodes":[{"id":"a","activity":"named_a"}]}') IS NOT NULL AS defined;
SELECT count(vectorbea.start_run('named')) AS started FROM generate_series(1, 2);
CREATE TEMP TABLE named_held AS SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['named_a'], 2);
SELECT vectorbea.complete_tasks(array_agg(task_id ORDER BY task_id), array_agg(lease ORDER BY task_id),
								NULL, ARRAY[NULL, '"not a list"'::jsonb])
  FROM named_held;
SELECT count(*) AS still_running FROM vectorbea.nodes n JOIN named_held h ON h.task_id = n.id
 WHERE n.status = 'running';
SELECT vectorbea.complete_tasks(array_agg(task_id), array_agg(lease)) AS completed FROM named_held;

-- An item whose usage fails its run (budget policy "fail") revokes the
-- run's other attempts, as a complete_task of it would: a later item of
-- the same run in the call is left out (it counts 0), not refused.  Refused,
-- it rolled the run's failure back with the call, and the same batch sent
-- again met the same refusal every time.
SELECT vectorbea.define_workflow('spent_pair', '{"nodes":[{"id":"a","activity":"spent_pair"},{"id":"b","activity":"spent_pair"}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('spent_pair', '{}', NULL, '{"budget_usd": 1}') AS spent_run \gset
CREATE TEMP TABLE spent_held AS SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['spent_pair'], 2);
SELECT vectorbea.complete_tasks(array_agg(task_id ORDER BY task_id), array_agg(lease ORDER BY task_id),
								NULL, NULL, ARRAY['{"usd": 2}', '{"usd": 0}']::jsonb[]) AS completed
  FROM spent_held;
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'spent_run';
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'spent_run' ORDER BY node;
-- Sent again, after the failure committed: the second item is refused
-- (VB001), as a complete_task of it would be; the first is a repeat.
SELECT vectorbea.complete_tasks(array_agg(task_id ORDER BY task_id), array_agg(lease ORDER BY task_id),
								NULL, NULL, ARRAY['{"usd": 2}', '{"usd": 0}']::jsonb[]) AS completed
  FROM spent_held;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
