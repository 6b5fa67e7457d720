-- (b+) The lifecycle as a worker loop can also run it: one transaction
-- completes the task claimed in the previous one and claims the next.
-- One commit per task instead of two.  Not one of the measurements the
-- aims are about; bench/run reports it in the secondary table.
-- :task_id and :lease start as 0 and the zero uuid (pgbench -D) and then
-- carry over from one run of this script to the next, per client.
BEGIN;
SELECT vectorbea.complete_task(:task_id, :lease, '{}') WHERE :task_id <> 0;
SELECT coalesce(max(task_id), 0) AS task_id,
       coalesce(max(lease::text), '00000000-0000-0000-0000-000000000000') AS lease
  FROM vectorbea.claim_tasks('bench-' || :client_id, ARRAY['work'], 1)
\gset
COMMIT;
