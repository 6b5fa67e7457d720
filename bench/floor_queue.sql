-- (q) A job queue's floor: claim one task in one transaction (one UPDATE of
-- the oldest ready row, SKIP LOCKED), complete it in the next (one UPDATE
-- matching its lease).  No history, no run: what a queue without them
-- costs, for comparison with (f) and (b).  Tables: bench/floor_load.sql.
WITH picked AS MATERIALIZED (
	SELECT id FROM bench_floor_tasks WHERE status = 'ready' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
), task AS (
	UPDATE bench_floor_tasks t
	   SET status = 'running', attempt = t.attempt + 1, lease = gen_random_uuid(),
	       worker = 'bench-' || :client_id, started_at = now(),
	       lease_expires_at = now() + interval '1 minute'
	  FROM picked WHERE t.id = picked.id
	RETURNING t.id, t.lease
)
SELECT coalesce(max(id), 0) AS task_id,
       coalesce(max(lease::text), '00000000-0000-0000-0000-000000000000') AS lease
  FROM task
\gset
UPDATE bench_floor_tasks SET status = 'succeeded', output = '{}', finished_at = now()
 WHERE id = :task_id AND lease = :lease::uuid AND status = 'running';
