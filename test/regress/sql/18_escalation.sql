-- When things go wrong, a person decides: a node out of attempts with
-- on_exhausted "escalate" opens an escalation gate (accept with an output,
-- retry with a fresh budget and maybe a new input, or fail); a worker task
-- whose lease ran out with in_doubt "ask" opens an in_doubt gate; an
-- approval gate with a quorum needs N of its approvers, each deciding once.
-- Every run ends consistent with its history.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
CREATE ROLE vb_ops;
CREATE ROLE vb_leads;
CREATE ROLE vb_cto;
CREATE ROLE vb_dana IN ROLE vb_ops;
CREATE ROLE vb_finance;
CREATE ROLE vb_fred IN ROLE vb_finance;
CREATE ROLE vb_gina IN ROLE vb_finance;
GRANT USAGE ON SCHEMA vectorbea TO vb_ops, vb_leads, vb_cto, vb_finance;
-- Approvers of a quorum gate work through an application role that may
-- act for any of them (here: vb_app, for ana and ben by name).
CREATE ROLE vb_app;
GRANT USAGE ON SCHEMA vectorbea TO vb_app;
GRANT SELECT, UPDATE (status, reason, decided_by) ON vectorbea.approvals TO vb_app;
GRANT SELECT, UPDATE (status, reason, decided_by, decision, output, input) ON vectorbea.approvals
	TO vb_ops, vb_leads, vb_cto, vb_finance;

-- Bad definitions name the node and the field; nothing is stored.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"a","on_exhausted":"shrug"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"a","on_exhausted":1}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"a","in_doubt":"pray"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"a","escalation":{"gate":"x"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"a","on_exhausted":"escalate","escalation":[]}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"a","on_exhausted":"escalate","escalation":{"on_timeout":"approve","timeout":"1h"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"a","on_exhausted":"escalate","escalation":{"quorum":2}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"a","on_exhausted":"escalate","escalation":{"timeout":"1h","on_timeout":"escalate"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"s","kind":"sleep","sleep":{"for":"1h"},"on_exhausted":"escalate"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g"},"in_doubt":"ask"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"c","kind":"run","run":{"workflow":"bad"},"in_doubt":"ask"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","quorum":2}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","quorum":3,"approvers":["a","b"]}}]}'); \echo SQLSTATE :SQLSTATE
-- A quorum is not escalated: the role it would pass to is not among those who vote.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","quorum":2,"approvers":["a","b"],"timeout":"1h","on_timeout":"escalate","escalate_to":"c"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","quorum":0,"approvers":["a"]}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","approvers":["a","a"]}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","approvers":[]}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","approvers":"ana"}}]}'); \echo SQLSTATE :SQLSTATE
-- ... a long name listed twice is cut, a reserved name gets the approvers'
-- hint, and a list of the wrong size says its size.
SELECT vectorbea.define_workflow('bad', format('{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","approvers":["%s","%s"]}}]}',
	repeat('a', 62), repeat('a', 62))::jsonb); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g","approvers":["ana","public"]}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object('id', 'g', 'kind', 'approval',
	'approval', jsonb_build_object('gate', 'g', 'approvers', (SELECT jsonb_agg('p' || i) FROM generate_series(1, 101) i)))))); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS workflows FROM vectorbea.workflows;

-- Escalation: the task is out of attempts, a gate opens with the last
-- error; a person supplies the output and the run goes on with it.
SELECT vectorbea.define_workflow('enrich', '{"nodes":[
	{"id":"fetch","activity":"e_fetch","retry":{"max_attempts":2,"initial":"0s","max":"0s"},
	 "on_exhausted":"escalate","escalation":{"gate":"fix_fetch","approver_role":"vb_ops"}},
	{"id":"use","activity":"e_use","depends_on":["fetch"]}]}');
SELECT vectorbea.start_run('enrich', '{"company":"acme"}') AS run \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message":"site down","class":"transient"}')
  FROM vectorbea.claim_tasks('w', ARRAY['e_fetch']);
SELECT vectorbea.fail_task(task_id, lease, '{"message":"site still down","class":"transient"}')
  FROM vectorbea.claim_tasks('w', ARRAY['e_fetch']);
SELECT status FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM nodes_of(:'run');
SELECT id AS gate, kind, gate AS name, approver_role, context->'error'->>'message' AS last_error,
	   context->'attempts' AS attempts, context->'input' AS input, status
  FROM vectorbea.approvals WHERE run_id = :'run' \gset
SELECT :'kind' AS kind, :'name' AS name, :'approver_role' AS approver_role, :'last_error' AS last_error, :'attempts' AS attempts;

-- Bad decisions change nothing.
SET ROLE vb_dana;
UPDATE vectorbea.approvals SET status = 'approved' WHERE id = :gate; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'approved', decision = 'fail' WHERE id = :gate; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'rejected', decision = 'retry' WHERE id = :gate; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'approved', decision = 'retry', output = '{}' WHERE id = :gate; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'approved', decision = 'retry', input = '[1]' WHERE id = :gate; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'approved', decision = 'maybe' WHERE id = :gate; \echo SQLSTATE :SQLSTATE
RESET ROLE;
-- Another role does not even see the gate (row security): nothing changes.
SET ROLE vb_cto;
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{}' WHERE id = :gate; \echo SQLSTATE :SQLSTATE
RESET ROLE;
SELECT status FROM vectorbea.approvals WHERE id = :gate;

SET ROLE vb_dana;
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept',
	output = '{"employees": 120, "source": "by hand"}', decided_by = 'dana', reason = 'looked it up'
 WHERE id = :gate;
RESET ROLE;
SELECT node, status, attempt, output FROM vectorbea.nodes WHERE run_id = :'run' ORDER BY id;
SELECT task_id AS use_task, lease AS use_lease, upstream FROM vectorbea.claim_tasks('w', ARRAY['e_use']) \gset
SELECT :'upstream' AS use_sees;
SELECT vectorbea.complete_task(:use_task, :'use_lease', '{}');
SELECT status FROM vectorbea.runs WHERE id = :'run';
SELECT type, node, attempt, data->>'decision' AS decision, data->>'escalated' AS escalated
  FROM vectorbea.events WHERE run_id = :'run' ORDER BY seq;
SELECT * FROM check_run(:'run');

-- retry: a fresh budget of attempts and a corrected input; then fail: the
-- node fails for good and the run with it (no second escalation).
SELECT vectorbea.start_run('enrich', '{"company":"globex"}') AS run2 \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message":"bad name","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['e_fetch']);
SELECT id AS gate2 FROM vectorbea.approvals WHERE run_id = :'run2' \gset
SET ROLE vb_dana;
UPDATE vectorbea.approvals SET status = 'approved', decision = 'retry', input = '{"company":"Globex Corp"}'
 WHERE id = :gate2;
RESET ROLE;
SELECT node, status, attempt, max_attempts, input FROM vectorbea.nodes WHERE run_id = :'run2' AND node = 'fetch';
SELECT input FROM vectorbea.claim_tasks('w', ARRAY['e_fetch']) \gset
SELECT :'input' AS claimed_input;
SELECT vectorbea.fail_task(task_id, lease, '{"message":"gone","class":"transient"}')
  FROM (SELECT id AS task_id, lease FROM vectorbea.nodes WHERE run_id = :'run2' AND node = 'fetch') t;
SELECT vectorbea.fail_task(task_id, lease, '{"message":"gone for good","class":"transient"}')
  FROM vectorbea.claim_tasks('w', ARRAY['e_fetch']);
SELECT count(*) AS gates, count(*) FILTER (WHERE status = 'pending') AS pending
  FROM vectorbea.approvals WHERE run_id = :'run2';
SELECT id AS gate3 FROM vectorbea.approvals WHERE run_id = :'run2' AND status = 'pending' \gset
SET ROLE vb_dana;
UPDATE vectorbea.approvals SET status = 'rejected', reason = 'company closed' WHERE id = :gate3;
RESET ROLE;
-- A rejection without a decision is taken as fail, and the row says so.
SELECT status, decision, decided_by FROM vectorbea.approvals WHERE id = :gate3;
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'run2';
SELECT node, status, error->>'decision' AS decision, error->>'class' AS class
  FROM vectorbea.nodes WHERE run_id = :'run2' ORDER BY id;
SELECT * FROM check_run(:'run2');

-- Three levels of escalation by timeout: ops, then leads, then the CTO;
-- nobody decides, so the node fails when the last level times out.
SELECT vectorbea.define_workflow('chain', '{"nodes":[
	{"id":"pay","activity":"c_pay","retry":{"max_attempts":1},"on_exhausted":"escalate",
	 "escalation":{"gate":"payment_stuck","approver_role":"vb_ops","timeout":"10m",
				   "on_timeout":"escalate","escalate_to":["vb_leads","vb_cto"]}}]}');
SELECT vectorbea.start_run('chain', '{}') AS run3 \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message":"card declined","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['c_pay']);
SELECT approver_role, escalation_level FROM vectorbea.approvals WHERE run_id = :'run3';
SET vectorbea.test_clock_offset = '11m';
SELECT vectorbea.run_due_work()->'gates_expired' AS expired;
SELECT approver_role, escalation_level FROM vectorbea.approvals WHERE run_id = :'run3';
SET vectorbea.test_clock_offset = '22m';
SELECT vectorbea.run_due_work()->'gates_expired' AS expired;
SELECT approver_role, escalation_level FROM vectorbea.approvals WHERE run_id = :'run3';
-- The first level can no longer decide; the third can.
SELECT id AS gate4 FROM vectorbea.approvals WHERE run_id = :'run3' \gset
SET ROLE vb_dana;
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{}' WHERE id = :gate4;
RESET ROLE;
SELECT status FROM vectorbea.approvals WHERE id = :gate4;
SET vectorbea.test_clock_offset = '33m';
SELECT vectorbea.run_due_work()->'gates_expired' AS expired;
RESET vectorbea.test_clock_offset;
SELECT a.status AS gate, r.status AS run, r.error->>'reason' AS reason
  FROM vectorbea.approvals a JOIN vectorbea.runs r ON r.id = a.run_id WHERE a.run_id = :'run3';
-- Nobody decided: the gate is decided "fail", and the node fails for good.
SELECT n.error->>'class' AS error_class, n.error->>'decision' AS decision,
	   (SELECT e.data->>'class' FROM vectorbea.events e WHERE e.run_id = :'run3' AND e.type = 'STEP_FAILED'
		 ORDER BY e.seq DESC LIMIT 1) AS step_failed_class
  FROM vectorbea.nodes n WHERE n.run_id = :'run3';
SELECT type FROM vectorbea.events WHERE run_id = :'run3' ORDER BY seq;
SELECT * FROM check_run(:'run3');

-- In doubt: a worker's lease runs out and the node says "ask": it waits
-- for a person instead of running again; the person says it was done.
SELECT vectorbea.define_workflow('transfer', '{"nodes":[
	{"id":"send","activity":"t_send","in_doubt":"ask","escalation":{"gate":"transfer_in_doubt"}},
	{"id":"notify","activity":"t_notify","depends_on":["send"]}]}');
SELECT vectorbea.start_run('transfer', '{"amount":100}') AS run4 \gset
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w', ARRAY['t_send'], 1, '1 minute');
SET vectorbea.test_clock_offset = '2m';
SELECT count(*) AS reclaimed FROM vectorbea.claim_tasks('w2', ARRAY['t_send']);
RESET vectorbea.test_clock_offset;
-- The attempt in doubt lasted the two minutes of its lease and more.
SELECT data->>'class' AS class, (data->>'duration_ms')::bigint >= 120000 AS lasted
  FROM vectorbea.events WHERE run_id = :'run4' AND type = 'STEP_FAILED';
SELECT node, status, attempt, error->>'class' AS class FROM vectorbea.nodes WHERE run_id = :'run4' ORDER BY id;
SELECT kind, gate, context->'error'->>'class' AS class FROM vectorbea.approvals WHERE run_id = :'run4';
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{"sent":true,"checked":"bank statement"}'
 WHERE run_id = :'run4';
SELECT node, status, output FROM vectorbea.nodes WHERE run_id = :'run4' ORDER BY id;
SELECT * FROM check_run(:'run4');

-- Quorum, 2 of 3 (two people and a role): each decides once, the gate is
-- granted at the second approval and every vote is an event.
SELECT vectorbea.define_workflow('spend', '{"nodes":[
	{"id":"sign","kind":"approval","approval":{"gate":"big_spend","quorum":2,"approvers":["ana","ben","vb_finance"]}},
	{"id":"buy","activity":"s_buy","depends_on":["sign"]}]}');
SELECT vectorbea.start_run('spend', '{}') AS run5 \gset
SELECT id AS q, quorum, approvers FROM vectorbea.approvals WHERE run_id = :'run5' \gset
SELECT :q IS NOT NULL AS opened, :'quorum' AS quorum, :'approvers' AS approvers;
SET ROLE vb_app;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ana' WHERE id = :q;
SELECT status, decided_by FROM vectorbea.approvals WHERE id = :q;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ana' WHERE id = :q; \echo SQLSTATE :SQLSTATE
RESET ROLE;
-- Naming a role entry in decided_by does not cast its vote: only its members do.
SET ROLE vb_app;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'vb_finance' WHERE id = :q; \echo SQLSTATE :SQLSTATE
RESET ROLE;
-- Someone who is none of the approvers (neither a name nor a role of it).
SET ROLE vb_dana;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'zoe' WHERE id = :q; \echo SQLSTATE :SQLSTATE
-- Not an approver, with a decision a gate of a failure would take: refused as not an approver.
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'zoe', decision = 'accept' WHERE id = :q; \echo SQLSTATE :SQLSTATE
RESET ROLE;
SET ROLE vb_fred;
UPDATE vectorbea.approvals SET status = 'approved', reason = 'fine by finance' WHERE id = :q;
RESET ROLE;
SELECT status FROM vectorbea.approvals WHERE id = :q;
SELECT voter, vote, decided_by FROM vectorbea.approval_votes WHERE approval_id = :q ORDER BY decided_at, voter;
SELECT node, status, jsonb_path_query_array(output, '$.votes[*].approver') AS voters
  FROM vectorbea.nodes WHERE run_id = :'run5' AND node = 'sign';
SELECT type, data->>'approver' AS approver, data->>'approved' AS approved, data->>'decided' AS decided
  FROM vectorbea.events WHERE run_id = :'run5' AND type LIKE 'APPROVAL%' ORDER BY seq;
SELECT * FROM check_run(:'run5');

-- An entry that named a role when the gate opened stays a role: once the
-- role is dropped, nobody counts for it, and writing its name in
-- decided_by does not cast its vote (it did: the entry became a name).
CREATE ROLE vb_treasury;
SELECT vectorbea.define_workflow('treasury', '{"nodes":[{"id":"sign","kind":"approval","approval":{"gate":"tr","quorum":1,"approvers":["ana","vb_treasury"]}}]}');
SELECT vectorbea.start_run('treasury', '{}') AS run_tr \gset
SELECT approvers, approver_roles FROM vectorbea.approvals WHERE run_id = :'run_tr';
DROP ROLE vb_treasury;
SET ROLE vb_app;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'vb_treasury' WHERE run_id = :'run_tr'; \echo SQLSTATE :SQLSTATE
RESET ROLE;
SELECT status FROM vectorbea.approvals WHERE run_id = :'run_tr';

-- Long approver names are cut in the refusal, as every quoted value is.
SELECT vectorbea.define_workflow('long_names', format('{"nodes":[{"id":"sign","kind":"approval","approval":{"gate":"ln","quorum":1,"approvers":["%s","%s"]}}]}',
	repeat('p', 63), repeat('q', 63))::jsonb);
SELECT vectorbea.start_run('long_names', '{}') AS run_ln \gset
SET ROLE vb_dana;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'zoe' WHERE run_id = :'run_ln'; \echo SQLSTATE :SQLSTATE
RESET ROLE;

-- A role entry decides once too, whoever of its members acts for it.
SELECT vectorbea.start_run('spend', '{}') AS run6 \gset
SELECT id AS q6 FROM vectorbea.approvals WHERE run_id = :'run6' \gset
SET ROLE vb_fred;
UPDATE vectorbea.approvals SET status = 'rejected' WHERE id = :q6;
RESET ROLE;
SET ROLE vb_gina;
UPDATE vectorbea.approvals SET status = 'approved' WHERE id = :q6; \echo SQLSTATE :SQLSTATE
RESET ROLE;
-- One rejection out of three leaves 2 possible approvals: still pending.
SELECT status FROM vectorbea.approvals WHERE id = :q6;
-- A second rejection makes 2 approvals unreachable: rejected at once.
SET ROLE vb_app;
UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'ben', reason = 'too much' WHERE id = :q6;
RESET ROLE;
SELECT a.status AS gate, r.status AS run FROM vectorbea.approvals a JOIN vectorbea.runs r ON r.id = a.run_id
 WHERE a.id = :q6;
SELECT * FROM check_run(:'run6');

-- A group role beside its members' own roles: a vote counts for the
-- deciding role's own entry, or else the first open entry it belongs to,
-- and a role votes once (it took the group's entry and then refused every
-- other member, and the superuser: the gate could never be decided).
SELECT vectorbea.define_workflow('group_and_members', '{"nodes":[{"id":"sign","kind":"approval","approval":{"gate":"gm","quorum":2,"approvers":["vb_finance","vb_fred","vb_gina"]}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('group_and_members', '{}') AS run_gm \gset
SET ROLE vb_fred;
UPDATE vectorbea.approvals SET status = 'approved' WHERE run_id = :'run_gm';
UPDATE vectorbea.approvals SET status = 'approved' WHERE run_id = :'run_gm'; \echo SQLSTATE :SQLSTATE
RESET ROLE;
SET ROLE vb_gina;
UPDATE vectorbea.approvals SET status = 'approved' WHERE run_id = :'run_gm';
RESET ROLE;
-- Decided by a role without decided_by: a later decision says which role.
SET ROLE vb_fred;
UPDATE vectorbea.approvals SET status = 'rejected' WHERE run_id = :'run_gm'; \echo SQLSTATE :SQLSTATE
RESET ROLE;
SELECT v.voter, v.decided_role, a.status FROM vectorbea.approval_votes v JOIN vectorbea.approvals a ON a.id = v.approval_id
 WHERE a.run_id = :'run_gm' ORDER BY v.decided_at, v.voter;
SELECT * FROM check_run(:'run_gm');
-- The group's entry taken by one member, another member still counts for
-- an entry of their own.
SELECT vectorbea.define_workflow('group_then_member', '{"nodes":[{"id":"sign","kind":"approval","approval":{"gate":"gt","quorum":2,"approvers":["vb_finance","vb_fred"]}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('group_then_member', '{}') AS run_gt \gset
SET ROLE vb_gina;
UPDATE vectorbea.approvals SET status = 'approved' WHERE run_id = :'run_gt';
RESET ROLE;
SET ROLE vb_fred;
UPDATE vectorbea.approvals SET status = 'approved' WHERE run_id = :'run_gt';
RESET ROLE;
SELECT v.voter, v.decided_role, a.status FROM vectorbea.approval_votes v JOIN vectorbea.approvals a ON a.id = v.approval_id
 WHERE a.run_id = :'run_gt' ORDER BY v.decided_at, v.voter;
SELECT * FROM check_run(:'run_gt');
-- A person named by decided_by votes once, whatever role they act in: a
-- member of finance and of ops voted as one, then, after SET ROLE, as the
-- other, and made the quorum alone.
SELECT vectorbea.define_workflow('two_roles', '{"nodes":[{"id":"sign","kind":"approval","approval":{"gate":"tr2","quorum":2,"approvers":["vb_finance","vb_ops"]}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('two_roles', '{}') AS run_tr2 \gset
SET ROLE vb_fred;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'fred' WHERE run_id = :'run_tr2';
RESET ROLE;
SET ROLE vb_ops;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'fred' WHERE run_id = :'run_tr2'; \echo SQLSTATE :SQLSTATE
RESET ROLE;
SET ROLE vb_dana;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'dana' WHERE run_id = :'run_tr2';
RESET ROLE;
SELECT v.voter, v.decided_by, v.decided_role, a.status FROM vectorbea.approval_votes v JOIN vectorbea.approvals a ON a.id = v.approval_id
 WHERE a.run_id = :'run_tr2' ORDER BY v.decided_at, v.voter;

-- decision, output and input belong to gates of failures.
SELECT vectorbea.start_run('spend', '{}') AS run7 \gset
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ana', decision = 'accept' WHERE run_id = :'run7'; \echo SQLSTATE :SQLSTATE
SELECT count(*) AS votes FROM vectorbea.approval_votes v JOIN vectorbea.approvals a ON a.id = v.approval_id
 WHERE a.run_id = :'run7';

-- A gate of a failure closed instead (an earlier row of the statement
-- ended the run) records no decision: not the accept and output the
-- statement set on it.
SELECT vectorbea.define_workflow('gate_and_fix', '{"nodes":[
	{"id":"g","kind":"approval","approval":{"gate":"go"}},
	{"id":"t","activity":"gf_t","retry":{"max_attempts":1},"on_exhausted":"escalate"}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('gate_and_fix') AS run8 \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no"}') FROM vectorbea.claim_tasks('w', ARRAY['gf_t']);
UPDATE vectorbea.approvals SET status = CASE kind WHEN 'approval' THEN 'rejected' ELSE 'approved' END,
	   decision = CASE kind WHEN 'approval' THEN NULL ELSE 'accept' END,
	   output = CASE kind WHEN 'approval' THEN NULL ELSE '{"x": 1}'::jsonb END, decided_by = 'ana'
 WHERE run_id = :'run8';
SELECT kind, status, decision, output, decided_by, decided_role FROM vectorbea.approvals WHERE run_id = :'run8' ORDER BY id;
SELECT * FROM check_run(:'run8');

-- A quorum gate reached after an earlier row ended its run is closed as
-- well, whoever the statement names: cto is none of its approvers, which
-- refused the whole statement before.
SELECT vectorbea.define_workflow('gate_and_quorum', '{"nodes":[
	{"id":"g","kind":"approval","approval":{"gate":"go"}},
	{"id":"q","kind":"approval","approval":{"gate":"two_of","quorum":2,"approvers":["ana","ben"]}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('gate_and_quorum') AS run9 \gset
UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'cto', reason = 'no' WHERE run_id = :'run9';
SELECT gate, status, decided_by, reason FROM vectorbea.approvals WHERE run_id = :'run9' ORDER BY id;
SELECT status FROM vectorbea.runs WHERE id = :'run9';
SELECT * FROM check_run(:'run9');

-- A retry's input for a run node is its child's input, a template: it is
-- checked as a definition's is, and a bad one changes nothing.
SELECT vectorbea.define_workflow('esc_kid', '{"nodes":[{"id":"k","activity":"esc_k","retry":{"max_attempts":1}}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('esc_parent', '{"nodes":[{"id":"r","kind":"run","run":{"workflow":"esc_kid"},
	"retry":{"max_attempts":1},"on_exhausted":"escalate"}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('esc_parent', '{"q": 1}') AS run9 \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent"}') FROM vectorbea.claim_tasks('w', ARRAY['esc_k']);
SELECT kind, status FROM vectorbea.approvals WHERE run_id = :'run9';
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ana', decision = 'retry',
	   input = '{"q": "{{upstream.nope.output.x}}"}' WHERE run_id = :'run9'; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ana', decision = 'retry',
	   input = '{"q": "{{input.q}}"}' WHERE run_id = :'run9'; \echo SQLSTATE :SQLSTATE
SELECT kind, status FROM vectorbea.approvals WHERE run_id = :'run9';
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ana', decision = 'retry',
	   input = '{"q": "{{run.input.q}}"}' WHERE run_id = :'run9';
SELECT n.status, n.input FROM vectorbea.nodes n WHERE n.run_id = :'run9';
SELECT * FROM check_run(:'run9');

DROP OWNED BY vb_ops, vb_leads, vb_cto, vb_finance, vb_app;
DROP ROLE vb_dana, vb_fred, vb_gina, vb_ops, vb_leads, vb_cto, vb_finance, vb_app;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
