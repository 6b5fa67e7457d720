-- (c) Batches: one transaction claims up to :batch tasks, the next
-- completes all of them in one complete_tasks call.  Task ids and leases
-- travel as arrays.
-- Run with pgbench -D batch=10 (bench/run does).
SELECT coalesce(array_agg(task_id), '{}') AS ids,
       coalesce(array_agg(lease), '{}') AS leases
  FROM vectorbea.claim_tasks('bench-' || :client_id, ARRAY['work'], :batch)
\gset
SELECT vectorbea.complete_tasks(:ids::bigint[], :leases::uuid[]);
