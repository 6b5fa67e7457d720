-- Dead letters that come back: requeue() gives a node that failed for good
-- a new attempt budget and its run runs again, with the nodes its failure
-- had skipped or revoked; requeue_dead() does it for every dead letter a
-- filter matches.  Replay and verify_run follow (NODES_REQUEUED).
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

SELECT vectorbea.define_workflow('rq', '{"nodes":[
	{"id":"fetch","activity":"rq_fetch","retry":{"max_attempts":2,"initial":"0s","max":"0s"}},
	{"id":"side","activity":"rq_side"},
	{"id":"report","activity":"rq_report","depends_on":["fetch","side"]},
	{"id":"sign","kind":"approval","depends_on":["report"],"approval":{"gate":"rq_sign"}}]}');
SELECT vectorbea.start_run('rq', '{"ticket": 1}') AS run \gset

-- side is running when fetch fails for good (two attempts): the run fails,
-- side's lease is revoked, report and sign are skipped.
SELECT task_id AS side_task, lease AS side_lease FROM vectorbea.claim_tasks('w', ARRAY['rq_side']) \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message": "upstream down", "class": "transient"}')
  FROM vectorbea.claim_tasks('w', ARRAY['rq_fetch']);
SELECT vectorbea.fail_task(task_id, lease, '{"message": "upstream down", "class": "transient"}')
  FROM vectorbea.claim_tasks('w', ARRAY['rq_fetch']);
SELECT status FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM nodes_of(:'run');
SELECT node, attempt, error->>'class' AS class FROM vectorbea.dead_letters WHERE run_id = :'run';
SELECT id AS fetch_task FROM vectorbea.nodes WHERE run_id = :'run' AND node = 'fetch' \gset

-- Bad input changes nothing.
SELECT vectorbea.requeue(NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue(999999); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue(:side_task); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue(:fetch_task, repeat('x', 4097)); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue_dead('[]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue_dead('{"flavour": "x"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue_dead('{"run": "not-a-uuid"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue_dead('{"failed_after": "yesterday-ish"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.requeue_dead('{"workflow": 7}'); \echo SQLSTATE :SQLSTATE
SELECT status FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM check_run(:'run');

-- requeue, by an operator role: fetch is ready with two more attempts, the
-- run runs again, side (revoked) is ready, report and sign (skipped) are
-- pending.
CREATE ROLE vb_rq_ops;
GRANT USAGE ON SCHEMA vectorbea TO vb_rq_ops;
GRANT EXECUTE ON FUNCTION vectorbea.requeue(bigint, text) TO vb_rq_ops;
SET ROLE vb_rq_ops;
SELECT vectorbea.requeue(:fetch_task, 'upstream is back');
RESET ROLE;
SELECT status, finished_at IS NULL AS open, error IS NULL AS no_error FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM nodes_of(:'run');
SELECT max_attempts FROM vectorbea.nodes WHERE id = :fetch_task;
SELECT count(*) AS dead_letters FROM vectorbea.dead_letters WHERE run_id = :'run';
SELECT * FROM check_run(:'run');
SELECT line FROM timeline_text(:'run') AS line WHERE line LIKE 'NODES_REQUEUED%';
-- The revoked attempt's late result is still refused; a new attempt runs.
SELECT vectorbea.complete_task(:side_task, :'side_lease', '{}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(task_id, lease, '{"rows": 3}')
  FROM vectorbea.claim_tasks('w', ARRAY['rq_fetch', 'rq_side'], 2);
SELECT vectorbea.complete_task(task_id, lease, '{"done": true}')
  FROM vectorbea.claim_tasks('w', ARRAY['rq_report']);
-- The approval node skipped by the failure opens its gate now.
SELECT gate, status FROM vectorbea.approvals WHERE run_id = :'run';
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ops' WHERE run_id = :'run';
SELECT status FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM nodes_of(:'run');
SELECT * FROM check_run(:'run');
-- A node that succeeded cannot be requeued.
SELECT vectorbea.requeue(:fetch_task); \echo SQLSTATE :SQLSTATE

-- requeue_dead: by filter, run by run.
SELECT vectorbea.start_run('rq', jsonb_build_object('ticket', i)) FROM generate_series(2, 4) i \g /dev/null
SELECT count(*) FROM (
	SELECT vectorbea.fail_task(task_id, lease, '{"message": "bad input", "class": "permanent"}')
	  FROM vectorbea.claim_tasks('w', ARRAY['rq_fetch'], 3)) f;
SELECT count(*) AS failed_runs FROM vectorbea.runs WHERE status = 'failed';
SELECT vectorbea.requeue_dead('{"class": "transient"}') AS transient_requeued;
SELECT vectorbea.requeue_dead('{"class": "permanent", "workflow": "rq", "activity": "rq_fetch"}', 'fixed the input')
	AS permanent_requeued;
SELECT count(*) FILTER (WHERE status = 'running') AS running, count(*) FILTER (WHERE status = 'failed') AS failed
  FROM vectorbea.runs;
SELECT count(*) FILTER (WHERE d.differences = 0 AND d.replay_stable) AS consistent_runs, count(*) AS runs
  FROM vectorbea.runs r, LATERAL check_run(r.id) d;
SELECT vectorbea.requeue_dead('{}') AS nothing_left;

-- A run past its deadline would fail again at once: refused.
SELECT vectorbea.define_workflow('rq_dl', '{"nodes":[{"id":"fetch","activity":"rq_dl_fetch"}]}');
SELECT vectorbea.start_run('rq_dl', '{}', NULL, '{"deadline": "1h"}') AS run9 \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['rq_dl_fetch']);
SELECT id AS fetch9 FROM vectorbea.nodes WHERE run_id = :'run9' \gset
SET vectorbea.test_clock_offset = '2h';
-- (its message names the run and the deadline, masked here for a stable output)
CREATE FUNCTION try_requeue(task bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	msg text;
	detail text;
BEGIN
	PERFORM vectorbea.requeue(task);
	RETURN 'requeued';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ' ' || regexp_replace(regexp_replace(msg || ' / ' || detail,
		'[0-9a-f]{8}-[0-9a-f-]{27}', '<run>', 'g'), '\d{4}-\d\d-\d\dT[0-9:.]+Z', '<time>', 'g');
END $$;
SELECT try_requeue(:fetch9);
SELECT vectorbea.requeue_dead(jsonb_build_object('run', :'run9')) AS past_deadline_requeued;
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'run9';
SELECT * FROM check_run(:'run9');

-- A node that never started waits for its not_before again when its run
-- comes back, ready or pending: requeue does not let it start before its time.
SELECT vectorbea.define_workflow('rq_later', '{"nodes":[
	{"id":"first","activity":"rq_first","retry":{"max_attempts":1}},
	{"id":"later","activity":"rq_later","not_before":"{{run.input.at}}"},
	{"id":"after","activity":"rq_later","depends_on":["first"],"not_before":"{{run.input.at}}"}]}');
SELECT vectorbea.start_run('rq_later', jsonb_build_object('at', now() + interval '1 hour')) AS run10 \gset
SELECT vectorbea.run_due_work()->'waits_started' AS read;
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['rq_first']);
SELECT status FROM vectorbea.runs WHERE id = :'run10';
SELECT id AS first_task FROM vectorbea.nodes WHERE run_id = :'run10' AND node = 'first' \gset
SELECT vectorbea.requeue(:first_task);
SELECT node, status, available_at = 'infinity' AS held FROM vectorbea.nodes WHERE run_id = :'run10' ORDER BY node;
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['rq_first']);
SELECT count(*) AS claimed_before FROM vectorbea.claim_tasks('w', ARRAY['rq_later'], 2);
SELECT vectorbea.run_due_work()->'waits_started' AS read;
SELECT count(*) AS claimed_still FROM vectorbea.claim_tasks('w', ARRAY['rq_later'], 2);
SET vectorbea.test_clock_offset = '61m';
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS completed
  FROM vectorbea.claim_tasks('w', ARRAY['rq_later'], 2);
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'run10';
SELECT * FROM check_run(:'run10');

-- A node whose attempt the failure revoked comes back with a fresh attempt
-- budget, as the requeued node does: its next attempt is within it.
SELECT vectorbea.define_workflow('rq_revoked', '{"nodes":[
  {"id":"a","activity":"rqr_a","retry":{"max_attempts":1}},
  {"id":"b","activity":"rqr_b","retry":{"max_attempts":1}}]}');
SELECT vectorbea.start_run('rq_revoked', '{}') AS run11 \gset
SELECT count(*) AS b_claimed FROM vectorbea.claim_tasks('w', ARRAY['rqr_b']);
SELECT vectorbea.fail_task(task_id, lease, '{"message": "x", "class": "permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['rqr_a']);
SELECT vectorbea.requeue(id, 'again') FROM vectorbea.nodes WHERE run_id = :'run11' AND node = 'a';
SELECT node, status, attempt, max_attempts FROM vectorbea.nodes WHERE run_id = :'run11' ORDER BY node;
SELECT node, attempt, max_attempts FROM vectorbea.claim_tasks('w', ARRAY['rqr_b']);
SELECT * FROM check_run(:'run11');

-- A requeued approval node's gate opens anew, and its node's wait starts
-- anew: rejected after a minute, requeued an hour later, approved a minute
-- after that, its STEP_COMPLETED says a minute.
SELECT vectorbea.define_workflow('rq_gate', '{"nodes":[{"id":"ok","kind":"approval","approval":{"gate":"rq_ok"}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('rq_gate') AS run12 \gset
SET vectorbea.test_clock_offset = '1m';
UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'ops' WHERE run_id = :'run12';
SET vectorbea.test_clock_offset = '61m';
SELECT vectorbea.requeue(id, 'reconsider') IS NOT NULL AS requeued FROM vectorbea.nodes WHERE run_id = :'run12';
SET vectorbea.test_clock_offset = '62m';
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ops' WHERE run_id = :'run12' AND status = 'pending';
RESET vectorbea.test_clock_offset;
SELECT round((data->>'duration_ms')::numeric / 60000) AS waited_minutes
  FROM vectorbea.events WHERE run_id = :'run12' AND type = 'STEP_COMPLETED';
SELECT * FROM check_run(:'run12');

-- A node that waited for a person when its run failed waits for one again
-- when the run comes back, at a gate like the one the failure closed: an
-- escalation (out of attempts) and an in_doubt gate (its lease ran out
-- under "ask") are not skipped into a fresh attempt.  And a node whose
-- running attempt the failure revoked under "ask" may have taken effect:
-- it is in doubt, a gate of kind in_doubt asks (class revoked).  A node
-- without "ask" is ready again, as above.
SELECT vectorbea.define_workflow('rq_ask', '{"nodes":[
	{"id":"pay","activity":"rqa_pay","retry":{"max_attempts":1},"on_exhausted":"escalate",
	 "escalation":{"gate":"fix_pay"}},
	{"id":"send","activity":"rqa_send","in_doubt":"ask","escalation":{"gate":"send_in_doubt"}},
	{"id":"wire","activity":"rqa_wire","in_doubt":"ask","escalation":{"gate":"wire_in_doubt"}},
	{"id":"copy","activity":"rqa_copy"},
	{"id":"check","activity":"rqa_check","retry":{"max_attempts":1}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('rq_ask', '{}') AS run14 \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message":"card declined","class":"transient"}')
  FROM vectorbea.claim_tasks('w', ARRAY['rqa_pay']);
SELECT count(*) AS send_claimed FROM vectorbea.claim_tasks('w', ARRAY['rqa_send'], 1, '1 minute');
SET vectorbea.test_clock_offset = '2m';
SELECT count(*) AS send_reclaimed FROM vectorbea.claim_tasks('w2', ARRAY['rqa_send']);
SELECT task_id AS wire_task, lease AS wire_lease FROM vectorbea.claim_tasks('w', ARRAY['rqa_wire']) \gset
SELECT count(*) AS copy_claimed FROM vectorbea.claim_tasks('w', ARRAY['rqa_copy']);
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run14' ORDER BY id;
SELECT node, kind, gate, status FROM vectorbea.approvals WHERE run_id = :'run14' ORDER BY id;
-- check fails for good: the run fails, its gates close, wire and copy are revoked.
SELECT vectorbea.fail_task(task_id, lease, '{"message":"bad","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['rqa_check']);
SELECT status FROM vectorbea.runs WHERE id = :'run14';
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run14' ORDER BY id;
SELECT vectorbea.requeue(id, 'check fixed') AS requeued FROM vectorbea.nodes WHERE run_id = :'run14' AND node = 'check';
SELECT status FROM vectorbea.runs WHERE id = :'run14';
SELECT node, status, error->>'class' AS class FROM vectorbea.nodes WHERE run_id = :'run14' ORDER BY id;
SELECT node, kind, gate, status, context->'error'->>'class' AS class,
	   context->'error'->>'message' AS message
  FROM vectorbea.approvals WHERE run_id = :'run14' ORDER BY id;
-- Nobody runs them behind the people's backs; copy (no "ask") runs again.
SELECT node FROM vectorbea.claim_tasks('w', ARRAY['rqa_pay', 'rqa_send', 'rqa_wire', 'rqa_copy'], 10);
-- The revoked attempt's late result is still refused.
SELECT vectorbea.complete_task(:wire_task, :'wire_lease', '{}'); \echo SQLSTATE :SQLSTATE
SELECT type, node, data->>'class' AS class, data->>'final' AS final
  FROM vectorbea.events WHERE run_id = :'run14'
   AND seq > (SELECT seq FROM vectorbea.events WHERE run_id = :'run14' AND type = 'NODES_REQUEUED')
 ORDER BY seq;
SELECT * FROM check_run(:'run14');
-- The people decide: pay and wire were done, send is tried again.
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{"paid":true}', decided_by = 'ops'
 WHERE run_id = :'run14' AND gate = 'fix_pay' AND status = 'pending';
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{"wired":true}', decided_by = 'ops'
 WHERE run_id = :'run14' AND gate = 'wire_in_doubt' AND status = 'pending';
UPDATE vectorbea.approvals SET status = 'approved', decision = 'retry', decided_by = 'ops'
 WHERE run_id = :'run14' AND gate = 'send_in_doubt' AND status = 'pending';
SELECT vectorbea.complete_task(id, lease, '{}') AS copy_completed
  FROM vectorbea.nodes WHERE run_id = :'run14' AND node = 'copy';
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS completed
  FROM vectorbea.claim_tasks('w', ARRAY['rqa_send', 'rqa_check'], 10);
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'run14';
SELECT node, status, output FROM vectorbea.nodes WHERE run_id = :'run14' ORDER BY id;
SELECT * FROM check_run(:'run14');

-- A task that waited at its own gate (await_approval) when its run failed
-- had done its attempt's work: it waits for a person again, at a gate
-- like the one the failure closed (its context, its timeout from now), and
-- is not run again; the decision still becomes its output.
SELECT vectorbea.define_workflow('rq_own_gate', '{"nodes":[
	{"id":"ship","activity":"rqo_ship"},
	{"id":"check","activity":"rqo_check","retry":{"max_attempts":1}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('rq_own_gate', '{}') AS run17 \gset
SELECT vectorbea.await_approval(task_id, lease, 'prod_deploy', '{"diff":"+3 -1"}', '30 minutes') > 0 AS asked
  FROM vectorbea.claim_tasks('w', ARRAY['rqo_ship']);
SELECT vectorbea.fail_task(task_id, lease, '{"message":"bad","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['rqo_check']);
SELECT node, status, attempt FROM vectorbea.nodes WHERE run_id = :'run17' ORDER BY id;
SET vectorbea.test_clock_offset = '10m';
SELECT vectorbea.requeue(id, 'check fixed') AS requeued FROM vectorbea.nodes WHERE run_id = :'run17' AND node = 'check';
SELECT node, status, attempt FROM vectorbea.nodes WHERE run_id = :'run17' ORDER BY id;
SELECT node, kind, gate, status, context, approver_role, on_timeout,
	   round(extract(epoch FROM expires_at - created_at) / 60) AS timeout_minutes,
	   created_at > (SELECT min(created_at) FROM vectorbea.approvals WHERE run_id = :'run17') AS asked_anew
  FROM vectorbea.approvals WHERE run_id = :'run17' ORDER BY id;
SELECT count(*) AS ship_claimed FROM vectorbea.claim_tasks('w', ARRAY['rqo_ship'], 10);
SELECT type, node, attempt, data->>'gate' AS gate FROM vectorbea.events
 WHERE run_id = :'run17' AND seq > (SELECT seq FROM vectorbea.events WHERE run_id = :'run17' AND type = 'NODES_REQUEUED')
 ORDER BY seq;
SELECT * FROM check_run(:'run17');
UPDATE vectorbea.approvals SET status = 'approved', reason = 'diff looks right', decided_by = 'ops'
 WHERE run_id = :'run17' AND status = 'pending';
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS completed
  FROM vectorbea.claim_tasks('w', ARRAY['rqo_check']);
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'run17';
SELECT node, status, attempt, output->>'status' AS decision, output->>'gate' AS gate FROM vectorbea.nodes WHERE run_id = :'run17' ORDER BY id;
SELECT * FROM check_run(:'run17');

-- A run a person paused, which failed while paused (a task it had out
-- failed for good), comes back paused: the run's end cleared the pause,
-- and a requeue, perhaps another operator's requeue_dead, lifted it.
SELECT vectorbea.define_workflow('rq_still', '{"nodes":[
	{"id":"a","activity":"rqs_a","retry":{"max_attempts":1}},
	{"id":"b","activity":"rqs_b"}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('rq_still', '{}') AS run15 \gset
SELECT task_id AS a_task, lease AS a_lease FROM vectorbea.claim_tasks('w', ARRAY['rqs_a']) \gset
SELECT vectorbea.pause_run(:'run15', 'looks wrong');
SELECT vectorbea.fail_task(:a_task, :'a_lease', '{"message":"no","class":"permanent"}');
SELECT status FROM vectorbea.runs WHERE id = :'run15';
SELECT vectorbea.requeue(:a_task, 'fixed');
SELECT status, paused->>'scope' AS scope, paused->>'reason' AS reason FROM vectorbea.runs WHERE id = :'run15';
SELECT type, data->>'scope' AS scope, data->>'reason' AS reason FROM vectorbea.events
 WHERE run_id = :'run15' AND seq >= (SELECT seq FROM vectorbea.events WHERE run_id = :'run15' AND type = 'NODES_REQUEUED')
 ORDER BY seq;
SELECT count(*) AS claimed_while_paused FROM vectorbea.claim_tasks('w', ARRAY['rqs_a', 'rqs_b'], 10);
SELECT * FROM check_run(:'run15');
SELECT vectorbea.resume_run(:'run15');
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS completed
  FROM vectorbea.claim_tasks('w', ARRAY['rqs_a', 'rqs_b'], 10);
SELECT status FROM vectorbea.runs WHERE id = :'run15';
SELECT * FROM check_run(:'run15');

-- A budget's pause is not put back: the budget may have been raised since,
-- and a run still over it meets its policy at its next spend.
SELECT vectorbea.start_run('rq_still', '{}', NULL, '{"budget_usd": 1, "on_budget": "pause"}') AS run16 \gset
SELECT task_id AS a16_task, lease AS a16_lease FROM vectorbea.claim_tasks('w', ARRAY['rqs_a']) \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 2}')
  FROM vectorbea.claim_tasks('w', ARRAY['rqs_b']);
SELECT status, paused->>'scope' AS scope FROM vectorbea.runs WHERE id = :'run16';
SELECT vectorbea.fail_task(:a16_task, :'a16_lease', '{"message":"no","class":"permanent"}');
SELECT vectorbea.requeue(:a16_task, 'fixed');
SELECT status FROM vectorbea.runs WHERE id = :'run16';
SELECT * FROM check_run(:'run16');
SELECT vectorbea.cancel_run(:'run16', 'done');

-- A long node id is cut in requeue's refusal, like any value.
SELECT vectorbea.define_workflow('rq_long', jsonb_build_object('nodes', jsonb_build_array(
	jsonb_build_object('id', repeat('n', 60), 'activity', 'rq_long')))) IS NOT NULL AS defined;
SELECT vectorbea.start_run('rq_long') AS run13 \gset
SELECT vectorbea.requeue(id) FROM vectorbea.nodes WHERE run_id = :'run13';

DROP OWNED BY vb_rq_ops;
DROP ROLE vb_rq_ops;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
