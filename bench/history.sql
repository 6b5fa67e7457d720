-- Adds a finished history to the pre-loaded tasks (bench/run history):
-- :runs finished runs of :per events each, so that claims and completions
-- run beside :runs * :per rows of events (10 million by default).  The
-- events are those a finished one-node run leaves, repeated; their runs
-- are finished, so the engine never touches them again.  Used by bench/run
-- through psql (-v runs=... -v per=...), after load.sql.
SET client_min_messages = warning;
CREATE TEMP TABLE history_runs AS
	SELECT vectorbea.uuid_v7() AS id FROM pg_catalog.generate_series(1, :runs);
INSERT INTO vectorbea.runs (id, workflow, workflow_version, input, status, created_at,
							finished_at, last_seq, node_count)
SELECT id, 'bench', 1, '{}', 'succeeded', now() - interval '1 day', now() - interval '1 day',
	   :per, 1
  FROM history_runs;
INSERT INTO vectorbea.events (run_id, seq, type, node, attempt, data, at)
SELECT h.id, s,
	   CASE s % 3 WHEN 1 THEN 'STEP_STARTED' WHEN 2 THEN 'STEP_COMPLETED' ELSE 'NOTE' END,
	   'n1', 1, '{"worker": "history", "output": {}}', now() - interval '1 day'
  FROM history_runs h CROSS JOIN pg_catalog.generate_series(1, :per) AS s;
VACUUM ANALYZE;
CHECKPOINT;
