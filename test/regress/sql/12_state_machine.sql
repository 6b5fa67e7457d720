-- The state machine after its rework (issue 10): what changed hands stays
-- exact.  A claim over several runs numbers each run's STEP_STARTED after
-- its last event, with no gap; a gate rejected by its timeout fails its run
-- and closes the run's other gates at once (they used to stay pending
-- until another UPDATE of approvals in the same transaction); the engine's
-- own updates of a gate pass the decision trigger, a person's cannot look
-- like one.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

-- One claim of nine tasks from three runs: each run's events stay gap-free.
SELECT vectorbea.define_workflow('fan', '{"nodes":[
	{"id":"a","activity":"sm_fan"},{"id":"b","activity":"sm_fan"},{"id":"c","activity":"sm_fan"},
	{"id":"join","activity":"sm_join","depends_on":["a","b","c"]}]}');
SELECT count(vectorbea.start_run('fan', jsonb_build_object('n', i))) AS runs FROM generate_series(1, 3) i;
SELECT count(*) AS claimed, count(DISTINCT run_id) AS runs
  FROM vectorbea.claim_tasks('w', ARRAY['sm_fan'], 9);
SELECT array_agg(e.seq ORDER BY e.seq) AS step_started_seqs,
	   array_agg(e.node ORDER BY e.seq) AS nodes, r.last_seq
  FROM vectorbea.runs r JOIN vectorbea.events e ON e.run_id = r.id
 WHERE r.workflow = 'fan' AND e.type = 'STEP_STARTED'
 GROUP BY r.id, r.last_seq ORDER BY r.id;
SELECT count(*) FILTER (WHERE d.differences = 0 AND d.replay_stable) AS consistent_runs
  FROM vectorbea.runs r, LATERAL check_run(r.id) d WHERE r.workflow = 'fan';
-- Completing all nine in one transaction makes each join ready once.
SELECT count(*) FROM (
	SELECT vectorbea.complete_task(n.id, n.lease, '{}')
	  FROM vectorbea.nodes n WHERE n.status = 'running' ORDER BY n.id) c;
SELECT status, count(*) FROM vectorbea.nodes WHERE node = 'join' GROUP BY status;

-- A gate rejected by its timeout fails the run and closes the other gate.
SELECT vectorbea.define_workflow('two_gates', '{"nodes":[
	{"id":"legal","kind":"approval","approval":{"gate":"legal","timeout":"1h"}},
	{"id":"security","kind":"approval","approval":{"gate":"security"}}]}');
SELECT vectorbea.start_run('two_gates') AS run \gset
SET vectorbea.test_clock_offset = '2h';
SELECT vectorbea.run_due_work()->'gates_expired' AS gates_expired;
SELECT node, status, decided_by, decided_role, decided_at IS NOT NULL AS stamped
  FROM vectorbea.approvals WHERE run_id = :'run' ORDER BY id;
SELECT status FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM nodes_of(:'run');
SELECT * FROM check_run(:'run');
RESET vectorbea.test_clock_offset;

-- A person's UPDATE can change the decision columns only: engine-only
-- columns are neither granted nor let through by the trigger.
SELECT vectorbea.start_run('two_gates') AS run2 \gset
GRANT USAGE ON SCHEMA vectorbea TO vb_plain_user;
GRANT SELECT, UPDATE (status, reason, decided_by) ON vectorbea.approvals TO vb_plain_user;
SET ROLE vb_plain_user;
UPDATE vectorbea.approvals SET expires_at = now() WHERE run_id = :'run2'; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET decided_at = now(), status = 'approved' WHERE run_id = :'run2'; \echo SQLSTATE :SQLSTATE
RESET ROLE;
-- The owner's decision is a decision too: only a change of an engine-only
-- column (decided_at, escalation_level, expires_at) marks an engine write,
-- so the trigger checks and stamps it and moves the run on.
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'owner'
 WHERE run_id = :'run2' AND node = 'legal';
SELECT node, status, decided_by, decided_role IS NOT NULL AS stamped_role
  FROM vectorbea.approvals WHERE run_id = :'run2' ORDER BY id;
SELECT * FROM check_run(:'run2');

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
