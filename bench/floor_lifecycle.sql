-- (f) The writes of (b) in plain SQL: what the contract asks of one task's
-- lifecycle, one statement per transaction.  The claim locks the oldest
-- ready task and its run, skipping either when busy (as the engine's claim
-- does: a run's counter is held by one writer at a time), leases the task,
-- numbers one STEP_STARTED event from the run's counter and inserts it; the
-- completion matches the lease, sets the output, waits for the run's
-- counter, numbers and inserts STEP_COMPLETED.  Nothing else: no run
-- status, no dependents, no limits, budgets or notifications, no checks of
-- the caller.  Two transactions per task, two row versions, two events
-- numbered gap-free per run in commit order.  Tables: bench/floor_load.sql.
-- A claim that finds nothing sets task_id 0; the completion then changes
-- nothing.
WITH picked AS MATERIALIZED (
	SELECT t.id FROM bench_floor_tasks t JOIN bench_floor_runs r ON r.id = t.run_id
	 WHERE t.status = 'ready' ORDER BY t.id LIMIT 1
	   FOR NO KEY UPDATE OF r SKIP LOCKED FOR UPDATE OF t SKIP LOCKED
), task AS (
	UPDATE bench_floor_tasks t
	   SET status = 'running', attempt = t.attempt + 1, lease = gen_random_uuid(),
	       worker = 'bench-' || :client_id, started_at = now(),
	       lease_expires_at = now() + interval '1 minute'
	  FROM picked WHERE t.id = picked.id
	RETURNING t.id, t.run_id, t.node, t.attempt, t.lease, t.worker, t.lease_expires_at
), run AS (
	UPDATE bench_floor_runs r SET last_seq = r.last_seq + 1
	  FROM task WHERE r.id = task.run_id
	RETURNING r.id, r.last_seq
), event AS (
	INSERT INTO bench_floor_events (run_id, seq, type, node, attempt, data, at)
	SELECT task.run_id, run.last_seq, 'STEP_STARTED', task.node, task.attempt,
	       jsonb_build_object('worker', task.worker, 'task_id', task.id,
	                          'lease_expires_at', task.lease_expires_at), now()
	  FROM task JOIN run ON run.id = task.run_id
)
SELECT coalesce(max(id), 0) AS task_id,
       coalesce(max(lease::text), '00000000-0000-0000-0000-000000000000') AS lease
  FROM task
\gset
WITH task AS (
	UPDATE bench_floor_tasks SET status = 'succeeded', output = '{}', finished_at = now()
	 WHERE id = :task_id AND lease = :lease::uuid AND status = 'running'
	RETURNING id, run_id, node, attempt, started_at, finished_at
), run AS (
	UPDATE bench_floor_runs r SET last_seq = r.last_seq + 1
	  FROM task WHERE r.id = task.run_id
	RETURNING r.id, r.last_seq
)
INSERT INTO bench_floor_events (run_id, seq, type, node, attempt, data, at)
SELECT task.run_id, run.last_seq, 'STEP_COMPLETED', task.node, task.attempt,
       jsonb_build_object('output', '{}'::jsonb, 'duration_ms',
                          (extract(epoch FROM task.finished_at - task.started_at) * 1000)::bigint), now()
  FROM task JOIN run ON run.id = task.run_id;
