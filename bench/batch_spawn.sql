-- (c) on fan-outs spawned at run time (bench/load_fanout.sql with
-- :spawn = 1): the batches of bench/batch.sql, except that each "plan"
-- node among the ten spawns :fan nodes and a "join" that depends on all of
-- them, through complete_tasks' spawns.  Run with pgbench -D batch=10
-- -D fan=N (bench/run fanout does).
SELECT coalesce(array_agg(task_id), '{}') AS ids,
       coalesce(array_agg(lease), '{}') AS leases,
       coalesce(array_agg(node = 'plan'), '{}') AS plans
  FROM vectorbea.claim_tasks('bench-' || :client_id, ARRAY['work'], :batch)
\gset
SELECT vectorbea.complete_tasks(:ids::bigint[], :leases::uuid[], NULL,
         (SELECT array_agg(CASE WHEN p THEN s.spawn END ORDER BY o)
            FROM unnest(:plans::boolean[]) WITH ORDINALITY AS u(p, o),
                 (SELECT (SELECT jsonb_agg(jsonb_build_object('id', 'n' || i, 'activity', 'work'))
                            FROM generate_series(1, :fan) AS i)
                         || jsonb_build_array(jsonb_build_object('id', 'join', 'activity', 'work',
                              'depends_on', (SELECT jsonb_agg('n' || i) FROM generate_series(1, :fan) AS i)))
                         AS spawn) s));
