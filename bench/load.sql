-- Resets the extension and pre-loads ready tasks: :runs runs of a workflow
-- with :nodes independent nodes (activity 'work'), so :runs * :nodes tasks.
-- Used by bench/run through psql (-v runs=... -v nodes=...).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS vectorbea CASCADE;
CREATE EXTENSION vectorbea CASCADE;
SELECT vectorbea.define_workflow('bench', jsonb_build_object('nodes',
         (SELECT jsonb_agg(jsonb_build_object('id', 'n' || i, 'activity', 'work'))
            FROM generate_series(1, :nodes) AS i)))
\g /dev/null
SELECT count(*) FROM generate_series(0, (:runs - 1) / 1000) AS b,
       vectorbea.start_runs('bench', array_fill('{}'::jsonb, ARRAY[least(1000, :runs - b * 1000)]))
\g /dev/null
VACUUM ANALYZE;
CHECKPOINT;
