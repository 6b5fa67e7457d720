-- (c) Batches: one transaction claims up to :batch tasks, the next
-- completes all of them.  Task ids and leases travel as arrays.
-- Run with pgbench -D batch=10 (bench/run does).
SELECT coalesce(array_agg(task_id), '{}') AS ids,
       coalesce(array_agg(lease), '{}') AS leases
  FROM vectorbea.claim_tasks('bench-' || :client_id, ARRAY['work'], :batch)
\gset
SELECT vectorbea.complete_task(t.id, t.lease, '{}')
  FROM unnest(:ids::bigint[], :leases::uuid[]) AS t(id, lease);
