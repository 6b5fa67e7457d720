-- Resets the extension and pre-loads fan-outs that end in a join, :runs
-- runs of either shape (bench/run fanout):
--   :spawn = 0  a workflow of :fan nodes n1 .. n:fan and a node "join"
--               that depends on all of them, every one of activity 'work';
--               with :steps = 2, each branch is two steps: m<i> depends on
--               n<i>, and the join on the m nodes (a run of 2 x :fan + 1);
--   :spawn = 1  a workflow of one node "plan" (activity 'work') whose
--               completion spawns those :fan + 1 nodes (the living graph,
--               bench/lifecycle_spawn.sql and bench/batch_spawn.sql).
-- Used by bench/run through psql (-v runs=... -v fan=... -v spawn=... -v steps=...).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS vectorbea CASCADE;
CREATE EXTENSION vectorbea CASCADE;
SELECT vectorbea.define_workflow('bench', jsonb_build_object('nodes',
         CASE WHEN :spawn = 1 THEN '[{"id": "plan", "activity": "work"}]'::jsonb
              ELSE (SELECT jsonb_agg(jsonb_build_object('id', 'n' || i, 'activity', 'work'))
                      FROM generate_series(1, :fan) AS i)
                   || CASE WHEN :steps = 2 THEN
                        (SELECT jsonb_agg(jsonb_build_object('id', 'm' || i, 'activity', 'work',
                                                             'depends_on', jsonb_build_array('n' || i)))
                           FROM generate_series(1, :fan) AS i)
                      ELSE '[]' END
                   || jsonb_build_array(jsonb_build_object('id', 'join', 'activity', 'work',
                        'depends_on', (SELECT jsonb_agg(CASE WHEN :steps = 2 THEN 'm' ELSE 'n' END || i)
                                         FROM generate_series(1, :fan) AS i)))
         END))
\g /dev/null
SELECT count(*) FROM generate_series(0, (:runs - 1) / 1000) AS b,
       vectorbea.start_runs('bench', array_fill('{}'::jsonb, ARRAY[least(1000, :runs - b * 1000)]))
\g /dev/null
VACUUM ANALYZE;
CHECKPOINT;
