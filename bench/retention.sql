-- One simulated minute of steady load for bench/retention, through psql
-- (-v runs=N -v step=S).  Starts :runs runs of retention_flow and works
-- every one of them to its end, as a worker fleet and an approver would:
--
--   fetch (task) -> review (approval gate) -> publish (task)
--   every other fetch spawns enrich (task), a leaf
--   1 run in 20 is cancelled while its gate is open (the gate is closed)
--   1 run in 20 fails: its publish task fails permanently
--   the others succeed
--
-- Claims and completions are separate transactions, as in bench/batch.sql.
-- A claim takes at most 1000 tasks, and each phase claims twice, so :runs
-- must stay at or under 1000 (bench/retention checks).  Prints one line:
-- the runs of this step still running (0 expected).
SET client_min_messages = warning;

SELECT count(vectorbea.start_run('retention_flow', jsonb_build_object('step', :step, 'i', i)))
  FROM generate_series(1, :runs) AS i
\g /dev/null

-- Phase 1: the fetch tasks; even-numbered runs spawn enrich.
SELECT coalesce(array_agg(task_id), '{}') AS ids, coalesce(array_agg(lease), '{}') AS leases,
       coalesce(array_agg((run_input->>'i')::int), '{}') AS nums
  FROM vectorbea.claim_tasks('bench-retention', ARRAY['ret_fetch'], 1000)
\gset
SELECT count(vectorbea.complete_task(t.id, t.lease, jsonb_build_object('rows', t.i),
         CASE WHEN t.i % 2 = 0 THEN '[{"id": "enrich", "activity": "ret_enrich"}]'::jsonb END))
  FROM unnest(:'ids'::bigint[], :'leases'::uuid[], :'nums'::int[]) AS t(id, lease, i)
\g /dev/null
SELECT coalesce(array_agg(task_id), '{}') AS ids, coalesce(array_agg(lease), '{}') AS leases,
       coalesce(array_agg((run_input->>'i')::int), '{}') AS nums
  FROM vectorbea.claim_tasks('bench-retention', ARRAY['ret_fetch'], 1000)
\gset
SELECT count(vectorbea.complete_task(t.id, t.lease, jsonb_build_object('rows', t.i),
         CASE WHEN t.i % 2 = 0 THEN '[{"id": "enrich", "activity": "ret_enrich"}]'::jsonb END))
  FROM unnest(:'ids'::bigint[], :'leases'::uuid[], :'nums'::int[]) AS t(id, lease, i)
\g /dev/null

-- 1 run in 20 is cancelled while its gate is open.
SELECT count(vectorbea.cancel_run(id, 'bench: cancelled while waiting for review'))
  FROM vectorbea.runs
 WHERE status = 'running' AND workflow = 'retention_flow'
   AND (input->>'step')::int = :step AND (input->>'i')::int % 20 = 0
\g /dev/null

-- The reviewer approves the open gates of this workflow (not the held run's).
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'bench', reason = 'looks fine'
 WHERE status = 'pending' AND gate = 'ret_review';

-- Phase 2: publish and enrich.  Completions first, then the failures (a
-- failing publish fails its run, which would end an enrich still open).
SELECT coalesce(array_agg(task_id), '{}') AS ids, coalesce(array_agg(lease), '{}') AS leases,
       coalesce(array_agg(node), '{}') AS nodes, coalesce(array_agg((run_input->>'i')::int), '{}') AS nums
  FROM vectorbea.claim_tasks('bench-retention', ARRAY['ret_publish', 'ret_enrich'], 1000)
\gset
SELECT count(vectorbea.complete_task(t.id, t.lease, '{"ok": true}'))
  FROM unnest(:'ids'::bigint[], :'leases'::uuid[], :'nodes'::text[], :'nums'::int[]) AS t(id, lease, node, i)
 WHERE NOT (t.node = 'publish' AND t.i % 20 = 10)
\g /dev/null
SELECT count(vectorbea.fail_task(t.id, t.lease, '{"class": "permanent", "message": "bench: publishing refused"}', false))
  FROM unnest(:'ids'::bigint[], :'leases'::uuid[], :'nodes'::text[], :'nums'::int[]) AS t(id, lease, node, i)
 WHERE t.node = 'publish' AND t.i % 20 = 10
\g /dev/null
SELECT coalesce(array_agg(task_id), '{}') AS ids, coalesce(array_agg(lease), '{}') AS leases,
       coalesce(array_agg(node), '{}') AS nodes, coalesce(array_agg((run_input->>'i')::int), '{}') AS nums
  FROM vectorbea.claim_tasks('bench-retention', ARRAY['ret_publish', 'ret_enrich'], 1000)
\gset
SELECT count(vectorbea.complete_task(t.id, t.lease, '{"ok": true}'))
  FROM unnest(:'ids'::bigint[], :'leases'::uuid[], :'nodes'::text[], :'nums'::int[]) AS t(id, lease, node, i)
 WHERE NOT (t.node = 'publish' AND t.i % 20 = 10)
\g /dev/null
SELECT count(vectorbea.fail_task(t.id, t.lease, '{"class": "permanent", "message": "bench: publishing refused"}', false))
  FROM unnest(:'ids'::bigint[], :'leases'::uuid[], :'nodes'::text[], :'nums'::int[]) AS t(id, lease, node, i)
 WHERE t.node = 'publish' AND t.i % 20 = 10
\g /dev/null

SELECT count(*) FROM vectorbea.runs
 WHERE status = 'running' AND workflow = 'retention_flow' AND (input->>'step')::int = :step;
