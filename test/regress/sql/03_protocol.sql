-- The worker protocol: claim_tasks, heartbeat, save_checkpoint,
-- complete_task, and the fencing of every call by the lease token.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SELECT vectorbea.define_workflow('proto', '{"nodes":[
	{"id":"fetch","activity":"fetch","input":{"url":"https://example.invalid/42"}},
	{"id":"parse","activity":"parse","depends_on":["fetch"]},
	{"id":"store","activity":"store","depends_on":["parse"]}]}');

-- Priority first, then age.
SELECT vectorbea.start_run('proto', '{"n": 1}') AS run_old \gset
SELECT vectorbea.start_run('proto', '{"n": 2}') AS run_new \gset
SELECT vectorbea.start_run('proto', '{"n": 3}', NULL, '{"priority": 10}') AS run_urgent \gset
SELECT vectorbea.start_run('proto', '{"n": 4}') AS run_late \gset

-- Never more than max_tasks rows.
CREATE TEMP TABLE w1_claims AS SELECT * FROM vectorbea.claim_tasks('w1', ARRAY['fetch'], 2);
SELECT count(*) AS claimed FROM w1_claims;
SELECT r.input->>'n' AS run_n, n.status, n.attempt, n.worker
  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
 WHERE n.node = 'fetch' ORDER BY r.input->>'n';

-- A claim returns the task, its input, upstream outputs and lease.
SELECT task_id, lease, run_id, node, activity, attempt, max_attempts, input, upstream,
	   coalesce(checkpoint, 'null') AS checkpoint,
	   idempotency_key = run_id || ':fetch' AS key_is_run_and_node,
	   lease_expires_at - vectorbea.clock() BETWEEN '29 s' AND '31 s' AS lease_30s, run_input
  FROM vectorbea.claim_tasks('w2', ARRAY['fetch', 'nothing'], 1, '30 seconds') \gset
\echo :node :activity :attempt/:max_attempts :input :upstream :checkpoint :key_is_run_and_node :lease_30s
-- The run's own input comes along, so a worker needs no access to runs.
\echo run_input :run_input
SELECT :'run_id' = :'run_new' AS oldest_unclaimed_run;
SELECT count(*) AS left_for_later FROM vectorbea.claim_tasks('w2', ARRAY['parse', 'store'], 10);

-- Heartbeat: extends the lease, by its own duration or by extend.
SELECT vectorbea.heartbeat(:task_id, :'lease') - vectorbea.clock() BETWEEN '29 s' AND '31 s' AS extended;
SELECT vectorbea.heartbeat(:task_id, :'lease', '10 minutes') - vectorbea.clock() > '9 min' AS extended_10m;
-- ... never shortens it.
SELECT vectorbea.heartbeat(:task_id, :'lease', '1 second') - vectorbea.clock() > '9 min' AS not_shortened;

-- Checkpoints are kept for the next attempt.
SELECT vectorbea.save_checkpoint(:task_id, :'lease', '{"page": 3}');
SELECT checkpoint FROM vectorbea.nodes WHERE id = :task_id;

-- Every call checks the lease token: a wrong one changes nothing.
SELECT vectorbea.heartbeat(:task_id, gen_random_uuid()); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.save_checkpoint(:task_id, gen_random_uuid(), '{}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:task_id, gen_random_uuid(), '{}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(:task_id, gen_random_uuid(), '{"message": "x"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(999999, gen_random_uuid(), '{}'); \echo SQLSTATE :SQLSTATE
-- A task no one has claimed yet: the refusal says so (no attempt ended).
SELECT vectorbea.complete_task(id, gen_random_uuid(), '{}') FROM vectorbea.nodes
 WHERE status IN ('ready', 'pending') AND attempt = 0 ORDER BY id LIMIT 1; \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(NULL, gen_random_uuid(), '{}'); \echo SQLSTATE :SQLSTATE
SELECT status, attempt, checkpoint FROM vectorbea.nodes WHERE id = :task_id;

-- complete_task: the node succeeds and its dependent becomes ready at once.
SELECT vectorbea.complete_task(:task_id, :'lease', '{"html": "<p>42</p>"}',
							   usage => '{"tokens": 120, "usd": 0.0012}');
SELECT * FROM nodes_of(:'run_new');
SELECT usage_tokens, usage_usd FROM vectorbea.runs WHERE id = :'run_new';
-- Repeating the same completion is a no-op; another output is refused.
SELECT vectorbea.complete_task(:task_id, :'lease', '{"html": "<p>42</p>"}');
SELECT vectorbea.complete_task(:task_id, :'lease', '{"html": "changed"}'); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS completions FROM vectorbea.events
 WHERE run_id = :'run_new' AND type = 'STEP_COMPLETED';

-- Upstream outputs flow to the dependent.
SELECT task_id AS parse_id, lease AS parse_lease, upstream
  FROM vectorbea.claim_tasks('w3', ARRAY['parse'], 5) \gset
\echo :upstream
SELECT vectorbea.complete_task(:parse_id, :'parse_lease', '{"value": 42}');
-- It booked no usage: a repeat with zero amounts (or {}) is the same, one
-- with tokens is not.
SELECT vectorbea.complete_task(:parse_id, :'parse_lease', '{"value": 42}', usage => '{"tokens": 0, "usd": 0.00}') AS zero_usage;
SELECT vectorbea.complete_task(:parse_id, :'parse_lease', '{"value": 42}', usage => '{}') AS empty_usage;
SELECT vectorbea.complete_task(:parse_id, :'parse_lease', '{"value": 42}', usage => '{"tokens": 1}'); \echo SQLSTATE :SQLSTATE
SELECT task_id AS store_id, lease AS store_lease, upstream
  FROM vectorbea.claim_tasks('w3', ARRAY['store']) \gset
\echo :upstream
SELECT vectorbea.complete_task(:store_id, :'store_lease');
SELECT status, finished_at IS NOT NULL AS finished, open_nodes FROM vectorbea.runs WHERE id = :'run_new';
SELECT * FROM timeline_text(:'run_new');

-- Only tasks whose available_at has come are claimed.
UPDATE vectorbea.nodes SET available_at = vectorbea.clock() + interval '1 hour'
 WHERE run_id = :'run_late' AND node = 'fetch';
SELECT count(*) AS claimable_late FROM vectorbea.claim_tasks('w4', ARRAY['fetch'], 10)
 WHERE run_id = :'run_late';
UPDATE vectorbea.nodes SET available_at = vectorbea.clock() WHERE run_id = :'run_late' AND node = 'fetch';

-- Bad arguments.
SELECT * FROM vectorbea.claim_tasks('w', ARRAY[]::text[]); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('w', ARRAY['a', NULL]); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('w', ARRAY['a'], 0); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('w', ARRAY['a'], 5000); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('w', ARRAY['a'], 1, '-5 minutes'); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('w', ARRAY['a'], 1, '400 days'); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('w', ARRAY['a'], 1, '1 mon -30 days 1 second'); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('', ARRAY['a']); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks(NULL, ARRAY['a']); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(1, gen_random_uuid(), '{}', usage => '{"tokens": -1}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(1, gen_random_uuid(), '{}', usage => '{"cost": 1}'); \echo SQLSTATE :SQLSTATE
SET vectorbea.max_payload_size = '1kB';
SELECT vectorbea.complete_task(1, gen_random_uuid(), jsonb_build_object('blob', repeat('x', 2000))); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_payload_size;

-- Finish the other runs so that every run here ends verified.
SELECT count(*) AS w1_completed
  FROM w1_claims, LATERAL vectorbea.complete_task(task_id, lease, '{"by": "w1"}');
DO $$
DECLARE t record;
BEGIN
	FOR i IN 1..10 LOOP
		FOR t IN SELECT * FROM vectorbea.claim_tasks('finisher', ARRAY['fetch', 'parse', 'store'], 10) LOOP
			PERFORM vectorbea.complete_task(t.task_id, t.lease, '{}');
		END LOOP;
	END LOOP;
END $$;
SELECT r.input->>'n' AS run_n, r.status, (c).differences, (c).replay_stable
  FROM vectorbea.runs r, LATERAL check_run(r.id) c
 WHERE r.workflow = 'proto' ORDER BY 1;

-- max_tasks NULL claims one task, as the default does.
SELECT vectorbea.define_workflow('proto_pair', '{"nodes":[
	{"id":"a","activity":"pair_task"}, {"id":"b","activity":"pair_task"}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('proto_pair') IS NOT NULL AS started;
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w', ARRAY['pair_task'], NULL);
SELECT count(*) AS still_ready FROM vectorbea.nodes WHERE activity = 'pair_task' AND status = 'ready';

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
