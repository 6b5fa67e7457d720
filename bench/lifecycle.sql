-- (b) One task's lifecycle, as a worker does it: claim one task in one
-- transaction, complete it in the next.  The claim is folded into one row
-- (task_id 0 when nothing was claimed) so that \gset never fails; the
-- completion then does nothing.  bench/run counts completed tasks from the
-- nodes table, not pgbench transactions.
SELECT coalesce(max(task_id), 0) AS task_id,
       coalesce(max(lease::text), '00000000-0000-0000-0000-000000000000') AS lease
  FROM vectorbea.claim_tasks('bench-' || :client_id, ARRAY['work'], 1)
\gset
SELECT vectorbea.complete_task(:task_id, :lease, '{}') WHERE :task_id <> 0;
