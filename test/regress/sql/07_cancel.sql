-- cancel_run: the kill switch for one run.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SELECT vectorbea.define_workflow('cancellable', '{"nodes":[
	{"id":"a","activity":"c1"},
	{"id":"b","activity":"c1"},
	{"id":"c","activity":"c2","depends_on":["a"]},
	{"id":"d","activity":"c2","depends_on":["b","c"]}]}');
SELECT vectorbea.start_run('cancellable') AS run \gset

CREATE TEMP TABLE held AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['c1'], 1);
SELECT node FROM held;
SELECT vectorbea.cancel_run(:'run', 'operator pressed the kill switch');
SELECT * FROM nodes_of(:'run');
SELECT status, error FROM vectorbea.runs WHERE id = :'run';

-- Nothing of it is claimed or completed afterwards.
SELECT count(*) AS claimable FROM vectorbea.claim_tasks('w', ARRAY['c1', 'c2'], 10);
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM held; \echo SQLSTATE :SQLSTATE
SELECT vectorbea.heartbeat(task_id, lease) FROM held; \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(task_id, lease, '{"message": "x"}') FROM held; \echo SQLSTATE :SQLSTATE

-- Cancelling a finished run changes nothing and says so.
SELECT vectorbea.cancel_run(:'run', 'again');
SELECT count(*) AS cancel_events FROM vectorbea.events WHERE run_id = :'run' AND type = 'RUN_CANCELLED';
SELECT vectorbea.cancel_run('00000000-0000-7000-8000-000000000000'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.cancel_run(:'run', 'x', compensate => true) AS finished_already;
SELECT vectorbea.cancel_run(NULL); \echo SQLSTATE :SQLSTATE

SELECT * FROM timeline_text(:'run');
SELECT key AS node, value->>'status' AS replayed_status, value->>'attempts' AS attempts
  FROM jsonb_each(vectorbea.replay(:'run')->'nodes') ORDER BY key;
SELECT * FROM check_run(:'run');

-- A run cancelled before anything started: with compensate => true and
-- nothing that says how it is undone, it is cancelled at once (compensation
-- itself is tested in 19_compensation).
SELECT vectorbea.start_run('cancellable') AS run2 \gset
SELECT vectorbea.cancel_run(:'run2', 'x', compensate => true);
SELECT status FROM vectorbea.runs WHERE id = :'run2';
SELECT count(*) AS compensation_events FROM vectorbea.events
 WHERE run_id = :'run2' AND type LIKE 'COMPENSATION%';
SELECT vectorbea.cancel_run(:'run2') AS finished_already;
SELECT * FROM timeline_text(:'run2');
SELECT * FROM check_run(:'run2');

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
