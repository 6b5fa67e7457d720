-- The event history: append_event, append-only enforcement, timeline,
-- replay (also as of an earlier event) and verify_run.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SELECT vectorbea.define_workflow('history', '{"nodes":[
	{"id":"fetch_ticket","activity":"fetch"},
	{"id":"answer","activity":"answer","depends_on":["fetch_ticket"]}]}');
SELECT vectorbea.start_run('history', '{"ticket": 7}') AS run \gset

SELECT task_id, lease FROM vectorbea.claim_tasks('agent-1', ARRAY['fetch']) \gset
-- Custom events share the run's sequence.
SELECT vectorbea.append_event(:'run', 'AGENT_NOTE', '{"text": "looking up ticket 7"}', 'fetch_ticket');
SELECT vectorbea.append_event(:'run', 'TOOL_CALL', '{"tool": "jira.get", "args": {"id": 7}}');
SELECT vectorbea.complete_task(:task_id, :'lease', '{"subject": "login fails"}');
SELECT seq AS after_fetch FROM vectorbea.events WHERE run_id = :'run' ORDER BY seq DESC LIMIT 1 \gset
SELECT task_id, lease FROM vectorbea.claim_tasks('agent-1', ARRAY['answer']) \gset
SELECT vectorbea.complete_task(:task_id, :'lease', '{"reply": "reset your password"}');

SELECT seq, type, node, attempt FROM vectorbea.events WHERE run_id = :'run' ORDER BY seq;
SELECT * FROM timeline_text(:'run');
-- Lines start with the engine clock time, to the millisecond.
SELECT count(*) FILTER (WHERE line ~ '^\d\d:\d\d:\d\d\.\d{3} [A-Z_]+') = count(*) AS all_timestamped
  FROM vectorbea.timeline(:'run') AS line;

-- Refusals.
SELECT vectorbea.append_event(:'run', 'STEP_COMPLETED', '{}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.append_event(:'run', 'no spaces allowed', '{}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.append_event(:'run', 'NOTE', '[1]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.append_event(:'run', 'NOTE', '{}', 'ghost'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.append_event('00000000-0000-7000-8000-000000000000', 'NOTE'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.append_event(:'run', NULL); \echo SQLSTATE :SQLSTATE
SET vectorbea.max_payload_size = '1kB';
SELECT vectorbea.append_event(:'run', 'NOTE', jsonb_build_object('x', repeat('y', 2000))); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_payload_size;

-- The history is append-only, even for its owner.
UPDATE vectorbea.events SET data = '{}' WHERE run_id = :'run' AND seq = 1; \echo SQLSTATE :SQLSTATE
DELETE FROM vectorbea.events WHERE run_id = :'run'; \echo SQLSTATE :SQLSTATE
TRUNCATE vectorbea.events; \echo SQLSTATE :SQLSTATE
SELECT count(*) AS events FROM vectorbea.events WHERE run_id = :'run';

-- replay: the whole run, and the run as of an earlier event.
SELECT jsonb_pretty(vectorbea.replay(:'run') - 'run');
SELECT vectorbea.replay(:'run', :after_fetch)->'nodes'->'answer'->>'status' AS answer_then,
	   vectorbea.replay(:'run', :after_fetch)->>'status' AS run_then,
	   vectorbea.replay(:'run', 1)->'nodes'->'fetch_ticket'->>'status' AS fetch_at_start,
	   vectorbea.replay(:'run', 1)->'nodes'->'answer'->>'status' AS answer_at_start;
SELECT vectorbea.replay('00000000-0000-7000-8000-000000000000') IS NULL AS unknown_run_is_null;
SELECT * FROM vectorbea.verify_run('00000000-0000-7000-8000-000000000000');
SELECT * FROM check_run(:'run');

-- A spec in the history leaves out the fields that have their default
-- (kind task, no dependencies, input {}, the default retry policy), and a
-- node with the default policy stores none; replay (above) fills them in.
SELECT seq, data->'nodes' AS specs FROM vectorbea.events WHERE run_id = :'run' AND type = 'RUN_STARTED';
SELECT node, retry, max_attempts FROM vectorbea.nodes WHERE run_id = :'run' ORDER BY id;
-- Options and an idempotency key are there only when the run has them.
SELECT vectorbea.start_run('history', '{"ticket": 9}', 'history-key-9', '{"priority": 2}') AS keyed_run \gset
SELECT e.run_id = :'run' AS plain_run, array_agg(k ORDER BY k) AS run_started_fields,
	   e.data->'options' AS options, e.data->>'idempotency_key' AS idempotency_key
  FROM vectorbea.events e, jsonb_object_keys(e.data) k
 WHERE e.run_id IN (:'run', :'keyed_run') AND e.type = 'RUN_STARTED'
 GROUP BY e.run_id, e.data ORDER BY 1 DESC;
SELECT * FROM check_run(:'keyed_run');
-- A field that differs from its default is written, a policy in full.
SELECT vectorbea.define_workflow('history_full', '{"defaults": {"retry": {"max_attempts": 5}}, "nodes":[
	{"id":"a","kind":"task","activity":"fetch","input":{"q":1}},
	{"id":"b","activity":"answer","depends_on":["a"],"retry":{"backoff":"fixed"}}]}');
SELECT vectorbea.start_run('history_full', '{}') AS full_run \gset
SELECT jsonb_pretty(data->'nodes') AS specs FROM vectorbea.events WHERE run_id = :'full_run' AND seq = 1;
SELECT node, retry->>'max_attempts' AS policy_attempts, retry->>'backoff' AS backoff, max_attempts
  FROM vectorbea.nodes WHERE run_id = :'full_run' ORDER BY id;
SELECT * FROM check_run(:'full_run');

-- verify_run finds every difference between the tables and the history.
-- (The tables are writable by their owner; the engine never does this.)
UPDATE vectorbea.nodes SET status = 'failed', attempt = 5, output = '{"text": "edited"}'
 WHERE run_id = :'run' AND node = 'answer';
UPDATE vectorbea.runs SET status = 'running', last_seq = last_seq + 1 WHERE id = :'run';
INSERT INTO vectorbea.nodes (run_id, node, activity, status, max_attempts, retry, created_at)
	VALUES (:'run', 'intruder', 'x', 'ready', 1, '{}', vectorbea.clock());
SELECT * FROM vectorbea.verify_run(:'run');
-- A gap in the sequence is found too.
SELECT vectorbea.start_run('history', '{"ticket": 8}') AS gap_run \gset
INSERT INTO vectorbea.events (run_id, seq, type, at) VALUES (:'gap_run', 5, 'NOTE', vectorbea.clock());
SELECT * FROM vectorbea.verify_run(:'gap_run');

-- And a gate whose row says what its events do not: decided with the
-- trigger turned off, a vote slipped in, a row with no APPROVAL_REQUESTED.
SELECT vectorbea.define_workflow('gated', '{"nodes": [{"id": "ok", "kind": "approval",
	"approval": {"gate": "sign_off", "approver_role": "vb_plain_user"}}]}');
SELECT vectorbea.start_run('gated') AS gated_run \gset
SELECT * FROM vectorbea.verify_run(:'gated_run');
ALTER TABLE vectorbea.approvals DISABLE TRIGGER approvals_decide;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'mallory', escalation_level = 1,
	   approver_role = 'vb_other' WHERE run_id = :'gated_run';
ALTER TABLE vectorbea.approvals ENABLE TRIGGER approvals_decide;
INSERT INTO vectorbea.approval_votes (approval_id, voter, vote, decided_role, decided_at)
	SELECT id, 'eve', 'approved', 'eve', vectorbea.clock() FROM vectorbea.approvals WHERE run_id = :'gated_run';
INSERT INTO vectorbea.approvals (run_id, node, task_id, gate, created_at)
	SELECT run_id, node, task_id, 'forged', created_at FROM vectorbea.approvals WHERE run_id = :'gated_run';
SELECT regexp_replace(d, 'approval \d+', 'approval N') AS difference
  FROM vectorbea.verify_run(:'gated_run') d;
-- A gate's row gone (the table refuses deletes while its trigger is on).
ALTER TABLE vectorbea.approvals DISABLE TRIGGER approvals_no_delete;
DELETE FROM vectorbea.approvals WHERE run_id = :'gated_run';
ALTER TABLE vectorbea.approvals ENABLE TRIGGER approvals_no_delete;
SELECT regexp_replace(d, 'approval \d+', 'approval N') AS difference
  FROM vectorbea.verify_run(:'gated_run') d;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
