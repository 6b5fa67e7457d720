-- fail_task, retries with backoff, lease expiry, and failed runs.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SELECT vectorbea.define_workflow('flaky', '{"nodes":[
	{"id":"call","activity":"call",
	 "retry":{"max_attempts":4,"initial":"1s","max":"3s","jitter":false}},
	{"id":"after","activity":"after","depends_on":["call"]}]}');
SELECT vectorbea.start_run('flaky') AS run \gset

-- A transient failure retries with exponential backoff: 1s, 2s, then the
-- 3s cap.  The delay chosen is written into STEP_RETRIED.
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['call']) \gset
SELECT vectorbea.save_checkpoint(:task_id, :'lease', '{"sent": 10}');
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "connection reset", "class": "transient"}');
SELECT status, attempt, error->>'message' AS error, available_at > vectorbea.clock() AS later
  FROM vectorbea.nodes WHERE id = :task_id;
-- Not claimable before its time, and the old lease is gone.
SELECT count(*) AS claimable_now FROM vectorbea.claim_tasks('w', ARRAY['call']);
SELECT vectorbea.complete_task(:task_id, :'lease', '{}'); \echo SQLSTATE :SQLSTATE
SET vectorbea.test_clock_offset = '1s';
SELECT task_id, lease, attempt, checkpoint FROM vectorbea.claim_tasks('w', ARRAY['call']) \gset
\echo attempt :attempt resumes from :checkpoint
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "503"}');
SET vectorbea.test_clock_offset = '3s';
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['call']) \gset
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "503 again"}');
SELECT seq, node, attempt, data->>'delay_ms' AS delay_ms, data->>'next_attempt' AS next_attempt
  FROM vectorbea.events WHERE run_id = :'run' AND type = 'STEP_RETRIED' ORDER BY seq;
-- Times inside event data are ISO 8601 in UTC whatever the session's zone,
-- and agree with the tables.
SET TimeZone = 'America/New_York';
SELECT data->>'available_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' AS iso_utc,
	   (data->>'available_at')::timestamptz = at + (data->>'delay_ms')::int * interval '1 ms' AS agrees
  FROM vectorbea.events WHERE run_id = :'run' AND type = 'STEP_RETRIED' ORDER BY seq LIMIT 1;
SELECT data->>'lease_expires_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$' AS iso_utc
  FROM vectorbea.events WHERE run_id = :'run' AND type = 'STEP_STARTED' ORDER BY seq LIMIT 1;
RESET TimeZone;
-- The last attempt fails for good: the node fails, the run fails, and its
-- dependent is skipped.
SET vectorbea.test_clock_offset = '6s';
SELECT task_id, lease, attempt FROM vectorbea.claim_tasks('w', ARRAY['call']) \gset
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "still down"}');
SELECT * FROM nodes_of(:'run');
SELECT status, error FROM vectorbea.runs WHERE id = :'run';
SELECT node, activity, attempt, error->>'message' AS error FROM vectorbea.dead_letters WHERE run_id = :'run';
SELECT * FROM timeline_text(:'run');
SELECT * FROM check_run(:'run');
RESET vectorbea.test_clock_offset;

-- Jitter: the delay is drawn between half and all of the backoff.
SELECT vectorbea.define_workflow('jittery', '{"nodes":[{"id":"j","activity":"j",
	"retry":{"max_attempts":2,"initial":"10s"}}]}');
SELECT vectorbea.start_run('jittery') AS jrun \gset
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['j']) \gset
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "x"}');
SELECT (data->>'delay_ms')::int BETWEEN 5000 AND 10000 AS jittered_within_bounds
  FROM vectorbea.events WHERE run_id = :'jrun' AND type = 'STEP_RETRIED';
-- Fixed backoff, and rate limits honour retry_after exactly.
SELECT vectorbea.define_workflow('limited', '{"nodes":[{"id":"api","activity":"api",
	"retry":{"max_attempts":5,"backoff":"fixed","initial":"2s","jitter":false}}]}');
SELECT vectorbea.start_run('limited') AS lrun \gset
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['api']) \gset
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "slow down", "class": "rate_limited", "retry_after": 30}');
SET vectorbea.test_clock_offset = '30s';
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['api']) \gset
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "slow down", "class": "rate_limited", "retry_after": "1m"}');
SET vectorbea.test_clock_offset = '90s';
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['api']) \gset
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "flaky"}');
SELECT attempt, data->>'delay_ms' AS delay_ms FROM vectorbea.events
 WHERE run_id = :'lrun' AND type = 'STEP_RETRIED' ORDER BY seq;

-- Bad errors are refused and change nothing.
SELECT vectorbea.fail_task(1, gen_random_uuid(), '"boom"'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(1, gen_random_uuid(), '{"message": 42}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(1, gen_random_uuid(), '{"class": "meltdown"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(1, gen_random_uuid(), '{"class": "lease_expired"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(1, gen_random_uuid(), '{"class": "transient", "retry_after": 5}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(1, gen_random_uuid(), '{"class": "rate_limited", "retry_after": -5}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(1, gen_random_uuid(), '{"class": "rate_limited", "retry_after": "soon"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(1, gen_random_uuid(), NULL); \echo SQLSTATE :SQLSTATE
SELECT status, attempt FROM vectorbea.nodes WHERE id = :task_id;

-- Permanent errors and retryable => false fail at once.
SET vectorbea.test_clock_offset = '92s';
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['api']) \gset
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "bad request", "class": "permanent"}');
SELECT * FROM check_run(:'lrun');
RESET vectorbea.test_clock_offset;
SELECT vectorbea.start_run('limited') AS lrun2 \gset
SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['api']) \gset
SELECT vectorbea.fail_task(:task_id, :'lease', '{"message": "no"}', retryable => false);
SELECT status, attempt FROM vectorbea.nodes WHERE id = :task_id;
SELECT * FROM check_run(:'lrun2');

-- A failed node fails its run at once: nodes not started are skipped, a
-- running sibling is cancelled and its lease refused.
SELECT vectorbea.define_workflow('parallel', '{"nodes":[
	{"id":"a","activity":"par","retry":{"max_attempts":1}},
	{"id":"b","activity":"par"},
	{"id":"c","activity":"par"},
	{"id":"d","activity":"join","depends_on":["a","b","c"]}]}');
SELECT vectorbea.start_run('parallel') AS prun \gset
CREATE TEMP TABLE par_claims AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['par'], 2);
SELECT node FROM par_claims ORDER BY node;
SELECT vectorbea.fail_task(task_id, lease, '{"message": "crashed"}') FROM par_claims WHERE node = 'a';
SELECT * FROM nodes_of(:'prun');
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM par_claims WHERE node = 'b'; \echo SQLSTATE :SQLSTATE
SELECT * FROM timeline_text(:'prun');
SELECT * FROM check_run(:'prun');

-- An expired lease: the next claim fails the attempt as lease_expired and
-- retries it; the vanished worker's late result is refused.
SELECT vectorbea.define_workflow('lease', '{"nodes":[{"id":"long","activity":"long",
	"retry":{"initial":"0s","max":"0s"}}]}');
SELECT vectorbea.start_run('lease') AS erun \gset
SELECT task_id AS lost_id, lease AS lost_lease FROM vectorbea.claim_tasks('gone', ARRAY['long'], 1, '1 minute') \gset
SELECT count(*) AS before_expiry FROM vectorbea.claim_tasks('w2', ARRAY['long']);
-- A lease past its expiry still holds until the engine takes it back.
SET vectorbea.test_clock_offset = '61s';
SELECT vectorbea.heartbeat(:lost_id, :'lost_lease') > vectorbea.clock() AS extended_in_time;
SET vectorbea.test_clock_offset = '5m';
SELECT task_id AS new_id, lease AS new_lease, attempt, worker
  FROM vectorbea.claim_tasks('w2', ARRAY['long']), LATERAL (SELECT 'w2' AS worker) w \gset
\echo attempt :attempt now held by :worker
SELECT vectorbea.complete_task(:lost_id, :'lost_lease', '{"late": true}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:new_id, :'new_lease', '{"on_time": true}');
SELECT node, status, attempt, output FROM vectorbea.nodes WHERE run_id = :'erun';
SELECT * FROM timeline_text(:'erun');
SELECT * FROM check_run(:'erun');
RESET vectorbea.test_clock_offset;

-- Budgets: usage reported by complete_task counts toward the run's budget;
-- crossing it stops the run with BUDGET_EXCEEDED.
SELECT vectorbea.define_workflow('spend', '{"nodes":[
	{"id":"one","activity":"spend"},{"id":"two","activity":"spend"},
	{"id":"three","activity":"spend","depends_on":["one","two"]}]}');
SELECT vectorbea.start_run('spend', '{}', NULL, '{"budget_tokens": 1000, "budget_usd": 0.05}') AS brun \gset
CREATE TEMP TABLE spend_claims AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['spend'], 2);
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"tokens": 600, "usd": 0.01}')
  FROM spend_claims WHERE node = 'one';
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"tokens": 700, "usd": 0.01}')
  FROM spend_claims WHERE node = 'two';
SELECT status, usage_tokens, usage_usd FROM vectorbea.runs WHERE id = :'brun';
SELECT * FROM nodes_of(:'brun');
SELECT * FROM timeline_text(:'brun');
SELECT * FROM check_run(:'brun');

-- Jitter (above) is drawn anew for each retry: 20 retries of 10 s
-- backoffs, all within the bounds, not all the same (without jitter all
-- 20 would be 10000).
SELECT count(vectorbea.start_run('jittery')) AS started FROM generate_series(1, 20);
SELECT count(vectorbea.fail_task(task_id, lease, '{"message": "x"}')) AS failed
  FROM vectorbea.claim_tasks('w', ARRAY['j'], 20);
SELECT count(*) AS retries, count(DISTINCT data->>'delay_ms') > 1 AS drawn_anew,
	   bool_and((data->>'delay_ms')::int BETWEEN 5000 AND 10000) AS within_bounds
  FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.workflow = 'jittery' AND e.type = 'STEP_RETRIED' AND e.run_id <> :'jrun';

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
