-- Human approval gates: opened by the engine, decided by UPDATE, checked by
-- role, stamped, refused when not allowed, timed out and escalated.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
CREATE ROLE vb_editors;
CREATE ROLE vb_oncall;
CREATE ROLE vb_alice IN ROLE vb_editors;
CREATE ROLE vb_bob;
CREATE ROLE vb_carol IN ROLE vb_oncall;
GRANT USAGE ON SCHEMA vectorbea TO vb_editors, vb_oncall, vb_bob;
GRANT SELECT, UPDATE (status, reason, decided_by) ON vectorbea.approvals
	TO vb_editors, vb_oncall, vb_bob;

-- Validation of approval nodes.
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval","approval":{}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"x","on_timeout":"escalate"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"x","timeout":"1h","on_timeout":"escalate"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"x","timeout":"1h","on_timeout":"ask"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"x","escalate_to":"vb_oncall"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"x","approver_role":7}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"x","who":"me"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"g","kind":"approval","retry":{"max_attempts":2},"approval":{"gate":"x"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"t","activity":"t","approval":{"gate":"x"}}]}'); \echo SQLSTATE :SQLSTATE

SELECT vectorbea.define_workflow('briefing', '{"nodes":[
	{"id":"collect","activity":"b_collect"},
	{"id":"editor","kind":"approval","depends_on":["collect"],
	 "approval":{"gate":"publish_release","timeout":"1h","on_timeout":"escalate",
				 "approver_role":"vb_editors","escalate_to":["vb_oncall"],
				 "context":{"channel":"#incidents"}}},
	{"id":"brief","activity":"b_brief","depends_on":["editor"]}]}');

-- The gate opens when its node becomes ready; the node waits.
SELECT vectorbea.start_run('briefing', '{"incident": 7}') AS run \gset
SELECT vectorbea.complete_task(task_id, lease, '{"logs": 3}') FROM vectorbea.claim_tasks('w', ARRAY['b_collect']);
SELECT * FROM nodes_of(:'run');
SELECT id AS gate_id FROM vectorbea.approvals WHERE run_id = :'run' \gset
SELECT node, gate, context, approver_role, escalate_to, on_timeout, status,
	   expires_at - created_at AS waits
  FROM vectorbea.approvals WHERE id = :gate_id;

-- A role that may not approve does not see the gate, and cannot decide it.
SET ROLE vb_bob;
SELECT count(*) AS gates_bob_sees FROM vectorbea.approvals;
UPDATE vectorbea.approvals SET status = 'approved' WHERE id = :gate_id;
RESET ROLE;
-- Row-level security is the first line; the trigger is the second.
ALTER TABLE vectorbea.approvals DISABLE ROW LEVEL SECURITY;
SET ROLE vb_bob;
UPDATE vectorbea.approvals SET status = 'approved' WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
-- Who may decide is checked before what they decided.
UPDATE vectorbea.approvals SET status = 'maybe' WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
RESET ROLE;
ALTER TABLE vectorbea.approvals ENABLE ROW LEVEL SECURITY;

-- A member of the approver role sees it; only the decision columns change.
SET ROLE vb_alice;
SELECT count(*) AS gates_alice_sees FROM vectorbea.approvals;
UPDATE vectorbea.approvals SET decided_at = now() WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET decided_role = 'vb_bob', status = 'approved' WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'maybe' WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
RESET ROLE;
UPDATE vectorbea.approvals SET status = NULL WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
-- The owner could change other columns were it not for the trigger.
UPDATE vectorbea.approvals SET gate = 'other', status = 'approved' WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
-- ... or the columns the engine stamps: a decision by hand that also sets
-- decided_at is a decision, refused, not one of the engine's own writes.
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'op', decided_at = now() WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET expires_at = expires_at + interval '1 hour' WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
SELECT status FROM vectorbea.approvals WHERE id = :gate_id;

-- The decision: stamped, recorded, and the graph moves on.
SET ROLE vb_alice;
UPDATE vectorbea.approvals SET status = 'approved', reason = 'looks good', decided_by = 'susmit'
 WHERE id = :gate_id;
RESET ROLE;
SELECT status, reason, decided_by, decided_role, decided_at IS NOT NULL AS stamped
  FROM vectorbea.approvals WHERE id = :gate_id;
SELECT * FROM nodes_of(:'run');
SELECT output - 'decided_at' - 'approval' AS editor_output FROM vectorbea.nodes
 WHERE run_id = :'run' AND node = 'editor';
SELECT upstream->'editor'->>'status' AS brief_sees
  FROM vectorbea.claim_tasks('w', ARRAY['b_brief']) \gset
\echo brief sees the gate :brief_sees
-- Decided twice: refused, and nothing changes.
SET ROLE vb_alice;
UPDATE vectorbea.approvals SET status = 'rejected', reason = 'changed my mind' WHERE id = :gate_id; \echo SQLSTATE :SQLSTATE
RESET ROLE;
SELECT * FROM timeline_text(:'run');

-- Rejection fails the node for good, and so its run.
SELECT vectorbea.start_run('briefing', '{"incident": 8}') AS run2 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['b_collect']);
SET ROLE vb_alice;
UPDATE vectorbea.approvals SET status = 'rejected', reason = 'not accurate', decided_by = 'susmit'
 WHERE run_id = :'run2';
RESET ROLE;
SELECT * FROM nodes_of(:'run2');
SELECT status FROM vectorbea.runs WHERE id = :'run2';
SELECT * FROM timeline_text(:'run2');

-- Two gates decided in one statement: the first rejection ends the run, so
-- the second gate is closed instead; the statement succeeds.
SELECT vectorbea.define_workflow('two_gates', '{"nodes":[
	{"id":"legal","kind":"approval","approval":{"gate":"legal"}},
	{"id":"security","kind":"approval","approval":{"gate":"security"}},
	{"id":"ship","activity":"b_ship2","depends_on":["legal","security"]}]}');
SELECT vectorbea.start_run('two_gates') AS run_two \gset
UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'cto' WHERE run_id = :'run_two';
SELECT node, status, decided_by FROM vectorbea.approvals WHERE run_id = :'run_two' ORDER BY id;
SELECT status FROM vectorbea.runs WHERE id = :'run_two';
SELECT * FROM check_run(:'run_two');

-- A cancelled run closes its gates; they can no longer be decided.
SELECT vectorbea.start_run('briefing', '{"incident": 9}') AS run3 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['b_collect']);
SELECT vectorbea.cancel_run(:'run3', 'incident closed');
SELECT status, decided_at IS NOT NULL AS closed_at FROM vectorbea.approvals WHERE run_id = :'run3';
SET ROLE vb_alice;
UPDATE vectorbea.approvals SET status = 'approved' WHERE run_id = :'run3'; \echo SQLSTATE :SQLSTATE
RESET ROLE;

-- Approvals are never deleted.
DELETE FROM vectorbea.approvals WHERE run_id = :'run3'; \echo SQLSTATE :SQLSTATE

-- Timeouts (run_due_work does the scheduler's work now): the gate passes to
-- vb_oncall, then, past the last level, it is rejected.
SELECT vectorbea.start_run('briefing', '{"incident": 10}') AS run4 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['b_collect']);
SET vectorbea.test_clock_offset = '61m';
SELECT vectorbea.run_due_work()->>'gates_expired' AS escalated;
SELECT approver_role, escalation_level, status FROM vectorbea.approvals WHERE run_id = :'run4';
SET ROLE vb_alice;
SELECT count(*) AS alice_sees_escalated FROM vectorbea.approvals WHERE run_id = :'run4';
RESET ROLE;
SET ROLE vb_carol;
SELECT count(*) AS carol_sees_escalated FROM vectorbea.approvals WHERE run_id = :'run4';
RESET ROLE;
SET vectorbea.test_clock_offset = '122m';
SELECT vectorbea.run_due_work()->>'gates_expired' AS expired;
SELECT approver_role, status, decided_by FROM vectorbea.approvals WHERE run_id = :'run4';
SELECT status FROM vectorbea.runs WHERE id = :'run4';
SELECT * FROM timeline_text(:'run4');

-- on_timeout approve: the gate passes by itself.
SELECT vectorbea.define_workflow('lenient', '{"nodes":[
	{"id":"gate","kind":"approval","approval":{"gate":"ok","timeout":"10m","on_timeout":"approve"}},
	{"id":"after","activity":"b_after","depends_on":["gate"]}]}');
RESET vectorbea.test_clock_offset;
SELECT vectorbea.start_run('lenient') AS run5 \gset
SET vectorbea.test_clock_offset = '11m';
SELECT vectorbea.run_due_work()->>'gates_expired' AS expired;
SELECT status, decided_by FROM vectorbea.approvals WHERE run_id = :'run5';
SELECT * FROM nodes_of(:'run5');
RESET vectorbea.test_clock_offset;
-- A decision after the timeout is refused, saying the timeout settled it.
UPDATE vectorbea.approvals SET status = 'rejected' WHERE run_id = :'run5'; \echo SQLSTATE :SQLSTATE

-- await_approval: a running task turns into a wait; the decision is its output.
SELECT vectorbea.define_workflow('deploy', '{"nodes":[{"id":"ship","activity":"b_ship"}]}');
SELECT vectorbea.start_run('deploy') AS run6 \gset
SELECT task_id AS ship_id, lease AS ship_lease FROM vectorbea.claim_tasks('w', ARRAY['b_ship']) \gset
SELECT vectorbea.await_approval(:ship_id, :'ship_lease', 'prod_deploy', '{"diff": "+3 -1"}', '30 minutes') AS await_id \gset
SELECT node, gate, context, approver_role, status FROM vectorbea.approvals WHERE id = :await_id;
SELECT * FROM nodes_of(:'run6');
SELECT vectorbea.complete_task(:ship_id, :'ship_lease', '{}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.await_approval(:ship_id, :'ship_lease', 'again'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.await_approval(:ship_id, :'ship_lease', 'bad gate name'); \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ops' WHERE id = :await_id;
SELECT node, status, attempt, output->>'status' AS decision FROM vectorbea.nodes WHERE run_id = :'run6';
SELECT status FROM vectorbea.runs WHERE id = :'run6';
-- The lease ended with the wait: after the decision too, a completion
-- with it is refused (VB001), whatever its output.
SELECT vectorbea.complete_task(:ship_id, :'ship_lease', '{"mine": true}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:ship_id, :'ship_lease', (SELECT output FROM vectorbea.nodes WHERE id = :ship_id)); \echo SQLSTATE :SQLSTATE

-- A rejected await_approval fails its node for good, even when the
-- node's policy escalates: a node failed by a decision does not escalate.
SELECT vectorbea.define_workflow('deploy_esc', '{"nodes":[{"id":"ship","activity":"b_ship2",
	"retry":{"max_attempts":3},"on_exhausted":"escalate"}]}');
SELECT vectorbea.start_run('deploy_esc') AS run7 \gset
SELECT task_id AS ship2_id, lease AS ship2_lease FROM vectorbea.claim_tasks('w', ARRAY['b_ship2']) \gset
SELECT vectorbea.await_approval(:ship2_id, :'ship2_lease', 'prod_deploy2') AS await2_id \gset
UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'ops' WHERE id = :await2_id;
SELECT kind, gate, status FROM vectorbea.approvals WHERE run_id = :'run7' ORDER BY id;
SELECT status FROM vectorbea.runs WHERE id = :'run7';

-- A decision rolled back with its savepoint ended no run: a later decision
-- of the same transaction is applied, not closed.
SELECT vectorbea.define_workflow('two_gates', '{"nodes":[
	{"id":"g1","kind":"approval","approval":{"gate":"first"}},
	{"id":"g2","kind":"approval","approval":{"gate":"second"}},
	{"id":"after","activity":"b_after2","depends_on":["g1","g2"]}]}');
SELECT vectorbea.start_run('two_gates') AS run8 \gset
SELECT id AS g1_id FROM vectorbea.approvals WHERE run_id = :'run8' AND gate = 'first' \gset
SELECT id AS g2_id FROM vectorbea.approvals WHERE run_id = :'run8' AND gate = 'second' \gset
BEGIN;
SAVEPOINT before_reject;
UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'ops' WHERE id = :g1_id RETURNING 1 / (id - id);
ROLLBACK TO SAVEPOINT before_reject;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ops' WHERE id = :g2_id;
COMMIT;
SELECT gate, status FROM vectorbea.approvals WHERE run_id = :'run8' ORDER BY id;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ops' WHERE id = :g1_id;
SELECT status FROM vectorbea.runs WHERE id = :'run8';
SELECT * FROM nodes_of(:'run8');

SELECT r.input, (c).differences, (c).replay_stable
  FROM vectorbea.runs r, LATERAL check_run(r.id) c
 WHERE r.workflow IN ('briefing', 'lenient', 'deploy', 'deploy_esc', 'two_gates') ORDER BY r.created_at;

-- Roles are cluster-wide: leave none behind.
DROP OWNED BY vb_editors, vb_oncall, vb_alice, vb_bob, vb_carol;
DROP ROLE vb_alice, vb_carol, vb_bob, vb_editors, vb_oncall;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
