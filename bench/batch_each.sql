-- (c-) Batches as before complete_tasks: one transaction claims up to
-- :batch tasks, the next completes them with one complete_task call each.
-- bench/run reports it in the secondary table, to compare with (c).
SELECT coalesce(array_agg(task_id), '{}') AS ids,
       coalesce(array_agg(lease), '{}') AS leases
  FROM vectorbea.claim_tasks('bench-' || :client_id, ARRAY['work'], :batch)
\gset
SELECT vectorbea.complete_task(t.id, t.lease, '{}')
  FROM unnest(:ids::bigint[], :leases::uuid[]) AS t(id, lease);
