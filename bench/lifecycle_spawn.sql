-- (b) on fan-outs spawned at run time (bench/load_fanout.sql with
-- :spawn = 1): the lifecycle of bench/lifecycle.sql, except that the
-- completion of a "plan" node spawns :fan nodes and a "join" that depends
-- on all of them.  Run with pgbench -D fan=N (bench/run fanout does).
SELECT coalesce(max(task_id), 0) AS task_id,
       coalesce(max(lease::text), '00000000-0000-0000-0000-000000000000') AS lease,
       coalesce(max(node), '') AS node
  FROM vectorbea.claim_tasks('bench-' || :client_id, ARRAY['work'], 1)
\gset
SELECT vectorbea.complete_task(:task_id, :lease, '{}',
         CASE WHEN :node = 'plan' THEN
           (SELECT jsonb_agg(jsonb_build_object('id', 'n' || i, 'activity', 'work'))
              FROM generate_series(1, :fan) AS i)
           || jsonb_build_array(jsonb_build_object('id', 'join', 'activity', 'work',
                'depends_on', (SELECT jsonb_agg('n' || i) FROM generate_series(1, :fan) AS i)))
         END)
 WHERE :task_id <> 0;
