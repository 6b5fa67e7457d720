-- (f) The writes of (c) in plain SQL: bench/floor_lifecycle.sql for up to
-- :batch tasks per transaction.  The claim's tasks may span runs, each
-- locked as it is taken (SKIP LOCKED); the completion locks its runs'
-- counters in id order, so that two completions never wait for each other
-- crosswise.  Each run's events are numbered after its last.
-- Tables: bench/floor_load.sql.  Run with pgbench -D batch=10 (bench/run does).
WITH picked AS MATERIALIZED (
	SELECT t.id FROM bench_floor_tasks t JOIN bench_floor_runs r ON r.id = t.run_id
	 WHERE t.status = 'ready' ORDER BY t.id LIMIT :batch
	   FOR NO KEY UPDATE OF r SKIP LOCKED FOR UPDATE OF t SKIP LOCKED
), task AS (
	UPDATE bench_floor_tasks t
	   SET status = 'running', attempt = t.attempt + 1, lease = gen_random_uuid(),
	       worker = 'bench-' || :client_id, started_at = now(),
	       lease_expires_at = now() + interval '1 minute'
	  FROM picked WHERE t.id = picked.id
	RETURNING t.id, t.run_id, t.node, t.attempt, t.lease, t.worker, t.lease_expires_at
), per_run AS (
	SELECT run_id, count(*) AS n FROM task GROUP BY run_id
), run AS (
	UPDATE bench_floor_runs r SET last_seq = r.last_seq + per_run.n
	  FROM per_run WHERE r.id = per_run.run_id
	RETURNING r.id, r.last_seq - per_run.n AS before
), event AS (
	INSERT INTO bench_floor_events (run_id, seq, type, node, attempt, data, at)
	SELECT task.run_id, run.before + row_number() OVER (PARTITION BY task.run_id ORDER BY task.id),
	       'STEP_STARTED', task.node, task.attempt,
	       jsonb_build_object('worker', task.worker, 'task_id', task.id,
	                          'lease_expires_at', task.lease_expires_at), now()
	  FROM task JOIN run ON run.id = task.run_id
)
SELECT coalesce(array_agg(id), '{}') AS ids, coalesce(array_agg(lease), '{}') AS leases FROM task
\gset
WITH task AS (
	UPDATE bench_floor_tasks t SET status = 'succeeded', output = '{}', finished_at = now()
	  FROM ROWS FROM (unnest(:ids::bigint[]), unnest(:leases::uuid[])) AS d(id, lease)
	 WHERE t.id = d.id AND t.lease = d.lease AND t.status = 'running'
	RETURNING t.id, t.run_id, t.node, t.attempt, t.started_at, t.finished_at
), per_run AS (
	SELECT run_id, count(*) AS n FROM task GROUP BY run_id
), locked AS MATERIALIZED (
	SELECT r.id FROM bench_floor_runs r WHERE r.id IN (SELECT run_id FROM per_run)
	 ORDER BY r.id FOR NO KEY UPDATE
), run AS (
	UPDATE bench_floor_runs r SET last_seq = r.last_seq + per_run.n
	  FROM per_run, locked WHERE r.id = per_run.run_id AND locked.id = r.id
	RETURNING r.id, r.last_seq - per_run.n AS before
)
INSERT INTO bench_floor_events (run_id, seq, type, node, attempt, data, at)
SELECT task.run_id, run.before + row_number() OVER (PARTITION BY task.run_id ORDER BY task.id),
       'STEP_COMPLETED', task.node, task.attempt,
       jsonb_build_object('output', '{}'::jsonb, 'duration_ms',
                          (extract(epoch FROM task.finished_at - task.started_at) * 1000)::bigint), now()
  FROM task JOIN run ON run.id = task.run_id;
