-- (c+) Batches as a worker loop can also run them: one transaction
-- completes the :batch tasks claimed in the previous one and claims the
-- next :batch.  One commit per batch instead of two.  bench/run reports it
-- in the secondary table.  :ids and :leases start as empty arrays
-- (pgbench -D) and carry over from one run of this script to the next.
BEGIN;
SELECT vectorbea.complete_tasks(:ids::bigint[], :leases::uuid[]);
SELECT coalesce(array_agg(task_id), '{}') AS ids,
       coalesce(array_agg(lease), '{}') AS leases
  FROM vectorbea.claim_tasks('bench-' || :client_id, ARRAY['work'], :batch)
\gset
COMMIT;
