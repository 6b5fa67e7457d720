-- After bench/load.sql's backlog (runs of 100): the backlog drained through
-- the engine as workers would (claims of 1,000, complete_tasks), five
-- tasks of another activity left ready, and VACUUM ANALYZE, so that the
-- index of ready nodes is recorded as a queue's index is once its backlog
-- is gone: many pages, few live entries (the five are cancelled after, so
-- that bench/run sees when the new work runs dry).  Then eight runs of
-- :wide tasks start (new work after the drain); with analyse=on nodes is
-- analysed again after them (statistics that count the new work, as
-- bench/load.sql gives every other measurement), with off the statistics
-- stay as the drain left them, as they do in a big table until its next
-- ANALYZE.
-- Used by bench/run (drained mode) through psql (-v wide=... -v analyse=on|off).
SET client_min_messages = warning;
SELECT vectorbea.define_workflow('left', '{"nodes": [{"id": "l", "activity": "left"}]}')
\g /dev/null
SELECT count(*) FROM vectorbea.start_runs('left', array_fill('{}'::jsonb, ARRAY[5]))
\g /dev/null
DO $$
DECLARE
	ids bigint[];
	leases uuid[];
BEGIN
	LOOP
		SELECT array_agg(task_id), array_agg(lease) INTO ids, leases
		  FROM vectorbea.claim_tasks('drainer', ARRAY['work'], 1000);
		EXIT WHEN ids IS NULL;
		PERFORM vectorbea.complete_tasks(ids, leases);
	END LOOP;
END $$;
VACUUM ANALYZE;
SELECT count(vectorbea.cancel_run(id, 'the drain is over')) FROM vectorbea.runs WHERE workflow = 'left'
\g /dev/null
SELECT vectorbea.define_workflow('wide', jsonb_build_object('nodes',
         (SELECT jsonb_agg(jsonb_build_object('id', 'w' || i, 'activity', 'work'))
            FROM generate_series(1, :wide) AS i)))
\g /dev/null
SELECT count(*) FROM vectorbea.start_runs('wide', array_fill('{}'::jsonb, ARRAY[8]))
\g /dev/null
\if :analyse
ANALYZE vectorbea.nodes;
\endif
CHECKPOINT;
