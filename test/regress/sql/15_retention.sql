-- Retention: purge_runs() deletes finished runs older than a cut-off with
-- their nodes, events and approvals, a batch a call, and counts each batch
-- in purge_batches; a running run is never purged, and the history stays
-- append-only for everything else.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

SELECT vectorbea.define_workflow('ret', '{"nodes":[
	{"id":"work","activity":"ret_work"},
	{"id":"ok","kind":"approval","depends_on":["work"],"approval":{"gate":"ret_ok"}}]}');
SELECT count(vectorbea.start_run('ret', jsonb_build_object('n', i))) AS started FROM generate_series(1, 4) i;
-- Two succeed, one fails, one keeps running (its gate open).
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{}')
	FROM vectorbea.claim_tasks('w', ARRAY['ret_work'], 3)) c;
UPDATE vectorbea.approvals SET status = 'approved'
 WHERE id IN (SELECT id FROM vectorbea.approvals ORDER BY id LIMIT 2);
UPDATE vectorbea.approvals SET status = 'rejected'
 WHERE id = (SELECT id FROM vectorbea.approvals WHERE status = 'pending' ORDER BY id LIMIT 1);
SELECT status, count(*) FROM vectorbea.runs GROUP BY status ORDER BY status;
SELECT id AS running_run FROM vectorbea.runs WHERE status = 'running' \gset

-- An operator role purges (its name is recorded in purge_batches).
CREATE ROLE vb_ret_ops;
GRANT USAGE ON SCHEMA vectorbea TO vb_ret_ops;
GRANT EXECUTE ON FUNCTION vectorbea.purge_runs(interval, text[], integer) TO vb_ret_ops;
SET ROLE vb_ret_ops;

-- Bad input changes nothing.
SELECT vectorbea.purge_runs('0 seconds'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('-1 day'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs(NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1 day -24 hours'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1001 years'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1016 years'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1 hour', '{running}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1 hour', '{paused}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1 hour', '{}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1 hour', '{finished}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1 hour', ARRAY['failed', NULL]); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1 hour', max_runs => 0); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.purge_runs('1 hour', max_runs => 10001); \echo SQLSTATE :SQLSTATE

-- Nothing is old enough yet (an interval with a negative part counts as a whole).
SELECT vectorbea.purge_runs('1 hour') AS purged;
SELECT vectorbea.purge_runs('1 day -1 hour') AS purged;
SELECT vectorbea.purge_runs('1000 years') AS purged;

-- Two hours later (the engine clock moves only for a superuser): the failed
-- run, then a batch of one, then the rest, then nothing.
RESET ROLE;
SET vectorbea.test_clock_offset = '2h';
-- A purge that fails part-way (here an operator's own trigger keeps the
-- nodes: the tables' triggers fire for a purge as for any DELETE) changes
-- nothing, and leaves the history append-only in the session.
CREATE FUNCTION keep_nodes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'nodes are kept for the audit';
END $$;
CREATE TRIGGER keep_nodes BEFORE DELETE ON vectorbea.nodes
	FOR EACH STATEMENT EXECUTE FUNCTION keep_nodes();
\set VERBOSITY terse
SELECT vectorbea.purge_runs('1 hour'); \echo SQLSTATE :SQLSTATE
\set VERBOSITY default
DROP TRIGGER keep_nodes ON vectorbea.nodes;
DROP FUNCTION keep_nodes();
SELECT (SELECT count(*) FROM vectorbea.runs) AS runs,
	   (SELECT count(*) FROM vectorbea.purge_batches) AS batches;
DELETE FROM vectorbea.events WHERE run_id <> :'running_run'; \echo SQLSTATE :SQLSTATE
DELETE FROM vectorbea.approvals WHERE run_id <> :'running_run'; \echo SQLSTATE :SQLSTATE
SET ROLE vb_ret_ops;
SELECT vectorbea.purge_runs('1 hour', '{failed}') AS failed_purged;
SELECT vectorbea.purge_runs('1 hour', max_runs => 1) AS first_batch;
SELECT vectorbea.purge_runs('1 hour') AS second_batch;
SELECT vectorbea.purge_runs('1 hour') AS nothing_left;
RESET ROLE;
RESET vectorbea.test_clock_offset;

-- Only the running run is left, whole and consistent.
SELECT status, count(*) FROM vectorbea.runs GROUP BY status;
SELECT count(*) AS nodes_of_others FROM vectorbea.nodes WHERE run_id <> :'running_run';
SELECT count(*) AS events_of_others FROM vectorbea.events WHERE run_id <> :'running_run';
SELECT count(*) AS approvals_of_others FROM vectorbea.approvals WHERE run_id <> :'running_run';
SELECT * FROM check_run(:'running_run');
SELECT runs, nodes, events, approvals, purged_by FROM vectorbea.purge_batches ORDER BY id;

-- The history is still append-only for everyone else.
DELETE FROM vectorbea.events WHERE run_id = :'running_run'; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.events SET data = '{}' WHERE run_id = :'running_run'; \echo SQLSTATE :SQLSTATE
DELETE FROM vectorbea.approvals WHERE run_id = :'running_run'; \echo SQLSTATE :SQLSTATE
DELETE FROM vectorbea.runs WHERE id = :'running_run'; \echo SQLSTATE :SQLSTATE
SELECT count(*) AS events_kept FROM vectorbea.events WHERE run_id = :'running_run';

DROP OWNED BY vb_ret_ops;
DROP ROLE vb_ret_ops;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
