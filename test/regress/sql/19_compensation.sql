-- Compensation (saga): when a run fails, or is cancelled with
-- compensate => true, the compensations of the nodes that succeeded run as
-- new nodes, one after another in reverse order of completion, each
-- claimable like any task and seeing its original's input and output; then
-- the run ends failed (or cancelled) with the outcome recorded.  A
-- compensation that fails for good waits for a person (retry, done by hand,
-- or abandon the rest).  Every run ends consistent with its history.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

-- The history of a run, event by event, without times and ids.
CREATE FUNCTION history(run uuid) RETURNS TABLE (seq bigint, type text, node text)
LANGUAGE sql AS $$
	SELECT seq, type, node FROM vectorbea.events WHERE run_id = run ORDER BY seq
$$;
-- Errors that name a run, without its id.
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f-]{27}', '<uuid>', 'g');
END
$$;
-- Claims one task of activity and completes it with output; returns the input it saw.
CREATE FUNCTION work(activity text, output jsonb DEFAULT '{}') RETURNS jsonb
LANGUAGE sql AS $$
	SELECT c.input FROM vectorbea.claim_tasks('w', ARRAY[activity]) c,
		   LATERAL vectorbea.complete_task(c.task_id, c.lease, output) done
$$;

-- Bad compensations name the node and the field; nothing is stored.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","compensate":"undo_a"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","compensate":{}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","compensate":{"activity":"u","depends_on":["b"]}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","compensate":{"kind":"sleep","sleep":{"for":"1h"}}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","compensate":{"activity":"u","retry":{"max_attempts":0}}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","compensate":{"activity":"u","compensate":{"activity":"v"}}}]}'); \echo SQLSTATE :SQLSTATE
-- nothing is spawned while a run is undone: an llm compensation may not ask to
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","compensate":{"kind":"llm","llm":{"provider":"openai","model":"m","prompt":"undo","allow_spawn":{"activities":["x"],"max_nodes":1}}}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","in_doubt":"compensate"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"g"},"compensate":{"activity":"u"}}]}'); \echo SQLSTATE :SQLSTATE
-- A compensation's id, "<node>:compensate", is the engine's: a node of that
-- name would take its place, and the run could neither compensate nor end.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"a","activity":"a","compensate":{"activity":"u"}},
	{"id":"a:compensate","activity":"x"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"x:compensate","activity":"x"}]}'); \echo SQLSTATE :SQLSTATE
-- ... and must be a name too: at most 128 characters.
SELECT vectorbea.define_workflow('bad', format('{"nodes":[{"id":"%s","activity":"a","compensate":{"activity":"u"}}]}',
	repeat('n', 118))::jsonb); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.validate_workflow(format('{"nodes":[{"id":"%s","activity":"a","compensate":{"activity":"u"}}]}',
	repeat('n', 117))::jsonb)->0->'compensate'->>'id' = repeat('n', 117) || ':compensate' AS longest_accepted;
SELECT count(*) AS stored FROM vectorbea.workflows WHERE name = 'bad';
SELECT count(*) AS workflows FROM vectorbea.workflows;
-- A compensation may name its own gate and who decides it.
SELECT vectorbea.validate_workflow('{"nodes":[{"id":"a","activity":"a",
	"compensate":{"activity":"undo_a","escalation":{"gate":"undo_failed","approver_role":"vb_plain_user"}}}]}')
	->0->'compensate'->'escalation'->>'gate' AS gate;

-- The saga: reserve, charge, ship; ship fails for good.
SELECT vectorbea.define_workflow('order', '{"nodes":[
	{"id":"reserve_inventory","activity":"o_reserve","compensate":{"activity":"o_release","input":{"why":"order failed"}}},
	{"id":"charge_card","activity":"o_charge","depends_on":["reserve_inventory"],
	 "compensate":{"activity":"o_refund","retry":{"max_attempts":1}}},
	{"id":"ship","activity":"o_ship","depends_on":["charge_card"],"retry":{"max_attempts":1}},
	{"id":"email","activity":"o_email","depends_on":["ship"]}]}');
SELECT vectorbea.validate_workflow((SELECT definition FROM vectorbea.workflows WHERE name = 'order'))->1->'compensate' AS normalised;
SELECT vectorbea.start_run('order', '{"order": 7, "sku": "A1"}') AS run \gset
SELECT work('o_reserve', '{"reservation": "r-1"}');
SELECT work('o_charge', '{"charge": "ch-9"}');
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no courier","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['o_ship']);
SELECT status, error->>'then' AS then, error->>'node' AS node FROM vectorbea.runs WHERE id = :'run';
SELECT node, status, compensation_of, depends_on FROM vectorbea.nodes WHERE run_id = :'run' ORDER BY id;
-- Nothing else is claimable: the release waits for the refund.
SELECT count(*) AS releases FROM vectorbea.claim_tasks('w', ARRAY['o_release']);
SELECT work('o_refund', '{"refund": "re-3"}') AS refund_saw;
SELECT work('o_release', '{"released": true}') AS release_saw;
SELECT status, error->>'compensation' AS compensation, error->>'node' AS node FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM history(:'run');
SELECT e.data->'compensated' AS compensated FROM vectorbea.events e
 WHERE e.run_id = :'run' AND e.type = 'COMPENSATION_COMPLETED';
SELECT * FROM check_run(:'run');
-- Each compensation ran once, and a compensated run is not requeued.
SELECT node, attempt FROM vectorbea.nodes WHERE run_id = :'run' AND compensation_of IS NOT NULL ORDER BY id;
SELECT try(format('SELECT vectorbea.requeue(%s)', id)) FROM vectorbea.nodes WHERE run_id = :'run' AND node = 'ship';
SELECT vectorbea.requeue_dead(jsonb_build_object('run', :'run')) AS requeued;
-- A fork does not reuse what the compensation undid: the card was
-- refunded and the stock released, so a fork from ship charges and
-- reserves again instead of shipping on a refunded charge.
SELECT vectorbea.fork_run(:'run', 'ship') AS forked \gset
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'forked' ORDER BY id;
SELECT work('o_reserve', '{"reservation": "r-2"}') IS NOT NULL AS reserved,
	   work('o_charge', '{"charge": "ch-10"}') IS NOT NULL AS charged;
SELECT input->'charge_card'->>'charge' AS ship_saw FROM (
	SELECT c.upstream AS input FROM vectorbea.claim_tasks('w', ARRAY['o_ship']) c) x;
SELECT * FROM check_run(:'forked');
SELECT try(format('SELECT vectorbea.fork_run(%L, %L)', :'run', 'charge_card:compensate'));
-- A node spawned by a node that was compensated is spawned anew by the
-- fork: it cannot be forked from.
SELECT vectorbea.define_workflow('undone_spawner', '{"nodes":[
	{"id":"a","activity":"sq_a","compensate":{"activity":"sq_undo"}},
	{"id":"c","activity":"sq_c","depends_on":["a"],"retry":{"max_attempts":1}}]}');
SELECT vectorbea.start_run('undone_spawner') AS us_run \gset
SELECT task_id AS sq_a_task, lease AS sq_a_lease FROM vectorbea.claim_tasks('w', ARRAY['sq_a']) \gset
SELECT vectorbea.complete_task(:sq_a_task, :'sq_a_lease', '{}', spawn => '[{"id":"b","activity":"sq_b","depends_on":["a"]}]');
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['sq_c']);
-- A repeat of a completion made before the run began to compensate is still a no-op.
SELECT 'no-op' AS repeat FROM (SELECT vectorbea.complete_task(:sq_a_task, :'sq_a_lease', '{}',
	spawn => '[{"id":"b","activity":"sq_b","depends_on":["a"]}]')) x;
SELECT work('sq_undo') IS NOT NULL AS undone;
SELECT status FROM vectorbea.runs WHERE id = :'us_run';
SELECT try(format('SELECT vectorbea.fork_run(%L, %L)', :'us_run', 'b'));

-- A failing compensation is never skipped: it waits at an escalation gate
-- (a dead letter for a person); the person retries it and it succeeds.
SELECT vectorbea.start_run('order', '{"order": 8}') AS run2 \gset
SELECT work('o_reserve') IS NOT NULL, work('o_charge', '{"charge": "ch-8"}') IS NOT NULL;
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no courier","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['o_ship']);
SELECT vectorbea.fail_task(task_id, lease, '{"message":"bank offline","class":"transient"}')
  FROM vectorbea.claim_tasks('w', ARRAY['o_refund']);
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run2' AND compensation_of IS NOT NULL ORDER BY id;
SELECT kind, gate, context->'error'->>'message' AS error FROM vectorbea.approvals WHERE run_id = :'run2';
-- The person sees what was to be undone: the gate's context holds the
-- input the compensation's attempts were given, its original's with it.
SELECT context->'input' AS input FROM vectorbea.approvals WHERE run_id = :'run2';
SELECT e.data->'context' = a.context AS same_in_history
  FROM vectorbea.approvals a JOIN vectorbea.events e ON e.run_id = a.run_id
   AND e.type = 'APPROVAL_REQUESTED' AND (e.data->>'approval')::bigint = a.id
 WHERE a.run_id = :'run2';
UPDATE vectorbea.approvals SET status = 'approved', decision = 'retry', decided_by = 'ops' WHERE run_id = :'run2';
SELECT work('o_refund', '{"refund": "re-4"}') IS NOT NULL AS refunded;
SELECT work('o_release') IS NOT NULL AS released;
SELECT status, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'run2';
SELECT * FROM check_run(:'run2');

-- Done by hand, then abandoning the rest: the refund is marked done with
-- an output; in another run the refund fails and the person abandons.
SELECT vectorbea.start_run('order', '{"order": 9}') AS run3 \gset
SELECT work('o_reserve') IS NOT NULL, work('o_charge') IS NOT NULL;
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no courier","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['o_ship']);
SELECT vectorbea.fail_task(task_id, lease, '{"message":"card closed","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['o_refund']);
UPDATE vectorbea.approvals SET status = 'rejected', reason = 'refund by cheque instead', decided_by = 'ops'
 WHERE run_id = :'run3';
SELECT status, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'run3';
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run3' ORDER BY id;
SELECT type, node, data->'skipped' AS skipped FROM vectorbea.events
 WHERE run_id = :'run3' AND type LIKE 'COMPENSATION%' ORDER BY seq;
SELECT task_id IS NOT NULL AS dead_letter FROM vectorbea.dead_letters WHERE run_id = :'run3' AND node = 'charge_card:compensate';
SELECT * FROM check_run(:'run3');

SELECT vectorbea.start_run('order', '{"order": 10}') AS run4 \gset
SELECT work('o_reserve') IS NOT NULL, work('o_charge') IS NOT NULL;
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no courier","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['o_ship']);
SELECT vectorbea.fail_task(task_id, lease, '{"message":"card closed","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['o_refund']);
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{"refund": "by hand"}'
 WHERE run_id = :'run4';
SELECT work('o_release') IS NOT NULL AS released;
SELECT status, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'run4';
SELECT node, status, output FROM vectorbea.nodes WHERE run_id = :'run4' AND compensation_of IS NOT NULL ORDER BY id;
SELECT * FROM check_run(:'run4');

-- cancel_run(compensate => true): the run undoes what it did, then ends
-- cancelled; cancelling a compensating run abandons its compensation.
SELECT vectorbea.start_run('order', '{"order": 11}') AS run5 \gset
SELECT work('o_reserve') IS NOT NULL;
SELECT vectorbea.cancel_run(:'run5', 'customer changed their mind', compensate => true);
SELECT status, error->>'then' AS then FROM vectorbea.runs WHERE id = :'run5';
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run5' ORDER BY id;
SELECT work('o_release') AS release_saw;
SELECT status, error->>'reason' AS reason, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'run5';
SELECT * FROM check_run(:'run5');

SELECT vectorbea.start_run('order', '{"order": 12}') AS run6 \gset
SELECT work('o_reserve') IS NOT NULL, work('o_charge') IS NOT NULL;
SELECT vectorbea.cancel_run(:'run6', 'stop', compensate => true);
SELECT vectorbea.cancel_run(:'run6', 'stop undoing too');
SELECT status FROM vectorbea.runs WHERE id = :'run6';
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run6' AND compensation_of IS NOT NULL ORDER BY id;
SELECT count(*) AS claimable FROM vectorbea.claim_tasks('w', ARRAY['o_refund', 'o_release'], 10);
SELECT type FROM vectorbea.events WHERE run_id = :'run6' AND type IN ('COMPENSATION_STARTED', 'COMPENSATION_FAILED', 'RUN_CANCELLED') ORDER BY seq;
SELECT * FROM check_run(:'run6');

-- Without compensations, a run fails (or is cancelled) as before.
SELECT vectorbea.define_workflow('plain', '{"nodes":[{"id":"a","activity":"p_a"},{"id":"b","activity":"p_b","depends_on":["a"],"retry":{"max_attempts":1}}]}');
SELECT vectorbea.start_run('plain', '{}') AS run7 \gset
SELECT work('p_a') IS NOT NULL;
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}') FROM vectorbea.claim_tasks('w', ARRAY['p_b']);
SELECT status FROM vectorbea.runs WHERE id = :'run7';
SELECT count(*) AS compensation_events FROM vectorbea.events WHERE run_id = :'run7' AND type LIKE 'COMPENSATION%';

-- In doubt, "compensate": a worker's lease runs out on a payment that may
-- have gone through; the node fails for good (class in_doubt) and its own
-- compensation runs first, then the earlier ones.
SELECT vectorbea.define_workflow('pay', '{"nodes":[
	{"id":"hold","activity":"y_hold","compensate":{"activity":"y_unhold"}},
	{"id":"pay","activity":"y_pay","depends_on":["hold"],"in_doubt":"compensate",
	 "compensate":{"activity":"y_void"}}]}');
SELECT vectorbea.start_run('pay', '{}') AS run8 \gset
SELECT work('y_hold') IS NOT NULL;
SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['y_pay'], 1, '1 minute');
SET vectorbea.test_clock_offset = '2m';
SELECT vectorbea.run_due_work()->'leases_expired' AS expired;
SELECT node, status, error->>'class' AS class FROM vectorbea.nodes WHERE run_id = :'run8' ORDER BY id;
SELECT work('y_void') -> 'original' ->> 'node' AS voided;
SELECT work('y_unhold') -> 'original' ->> 'node' AS unheld;
RESET vectorbea.test_clock_offset;
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'run8';
SELECT * FROM check_run(:'run8');

-- A spawn list may not take the name either; the completion changes nothing.
SELECT vectorbea.define_workflow('spawner', '{"nodes":[{"id":"a","activity":"sp_a","compensate":{"activity":"u"}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('spawner') AS sp_run \gset
SELECT try(format('SELECT vectorbea.complete_task(%s, %L, ''{}'', ''[{"id": "a:compensate", "activity": "x"}]'')',
				  task_id, lease)) AS spawn
  FROM vectorbea.claim_tasks('w', ARRAY['sp_a']);
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'sp_run' ORDER BY node;
SELECT vectorbea.cancel_run(:'sp_run') IS NOT NULL AS cancelled;

-- A run that failed for its budget compensates; its last compensation,
-- completed with usage, records the overrun and ends the run.
SELECT vectorbea.define_workflow('dear', '{"nodes":[{"id":"a","activity":"d_a","compensate":{"activity":"d_undo"}},
	{"id":"b","activity":"d_b","depends_on":["a"]}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('dear', '{}', NULL, '{"budget_usd": 1}') AS dear_run \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', NULL, '{"tokens": 10, "usd": 2}')
  FROM vectorbea.claim_tasks('w', ARRAY['d_a']);
SELECT status FROM vectorbea.runs WHERE id = :'dear_run';
SELECT vectorbea.complete_task(task_id, lease, '{}', NULL, '{"tokens": 0, "usd": 0}')
  FROM vectorbea.claim_tasks('w', ARRAY['d_undo']);
SELECT status, error->>'reason' AS reason, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'dear_run';
SELECT * FROM history(:'dear_run');
SELECT * FROM check_run(:'dear_run');

-- One UPDATE deciding two gates of a run: the first rejection starts the
-- compensation, which closes the run's other gate; the statement's later
-- row of that run is closed instead of decided, whatever it says.
SELECT vectorbea.define_workflow('two_gates', '{"nodes":[
	{"id":"a","activity":"tg_a","compensate":{"activity":"tg_undo"}},
	{"id":"g1","kind":"approval","approval":{"gate":"g1"},"depends_on":["a"]},
	{"id":"g2","kind":"approval","approval":{"gate":"g2"},"depends_on":["a"]}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('two_gates') AS tg1 \gset
SELECT vectorbea.start_run('two_gates') AS tg2 \gset
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) FROM vectorbea.claim_tasks('w', ARRAY['tg_a'], 2);
UPDATE vectorbea.approvals SET status = CASE gate WHEN 'g1' THEN 'rejected' ELSE 'approved' END
 WHERE run_id = :'tg1' AND gate IN ('g1', 'g2');
UPDATE vectorbea.approvals SET status = 'rejected' WHERE run_id = :'tg2' AND gate IN ('g1', 'g2');
SELECT run_id = :'tg1' AS first, gate, status FROM vectorbea.approvals
 WHERE run_id IN (:'tg1', :'tg2') ORDER BY 1 DESC, gate;
SELECT count(*) AS undone FROM (SELECT work('tg_undo') UNION ALL SELECT work('tg_undo')) w;
SELECT id = :'tg1' AS first, status, open_nodes, error->>'compensation' AS compensation
  FROM vectorbea.runs WHERE id IN (:'tg1', :'tg2') ORDER BY 1 DESC;
SELECT * FROM check_run(:'tg1');
SELECT * FROM check_run(:'tg2');

-- A compensation cannot spawn nodes: they would never run, nor let the run end.
SELECT vectorbea.start_run('order', '{"order": 12}') AS run12 \gset
SELECT work('o_reserve') IS NOT NULL, work('o_charge') IS NOT NULL;
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no courier","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['o_ship']);
SELECT task_id AS refund_task, lease AS refund_lease FROM vectorbea.claim_tasks('w', ARRAY['o_refund']) \gset
SELECT try(format('SELECT vectorbea.complete_task(%s, %L, ''{}'', ''[{"id": "more", "activity": "x"}]'')',
				  :refund_task, :'refund_lease')) AS spawn;
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run12' AND compensation_of IS NOT NULL ORDER BY id;
SELECT vectorbea.complete_task(:refund_task, :'refund_lease', '{}');
SELECT work('o_release') IS NOT NULL AS released;
SELECT status, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'run12';
SELECT * FROM check_run(:'run12');

-- Nodes completed in one complete_tasks batch share their finished_at: they
-- are undone in the reverse order of the history (c, a, b completed: b, a,
-- c undone), not of their ids.
SELECT vectorbea.define_workflow('batch_undo', '{"nodes":[
  {"id":"a","activity":"bu_a","compensate":{"activity":"bu_undo"}},
  {"id":"b","activity":"bu_b","compensate":{"activity":"bu_undo"}},
  {"id":"c","activity":"bu_c","compensate":{"activity":"bu_undo"}},
  {"id":"z","activity":"bu_z","depends_on":["a","b","c"]}]}');
SELECT vectorbea.start_run('batch_undo', '{}') AS run13 \gset
CREATE TEMP TABLE bu_claimed AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['bu_a', 'bu_b', 'bu_c'], 3);
SELECT vectorbea.complete_tasks(
  (SELECT array_agg(task_id ORDER BY array_position(ARRAY['c', 'a', 'b'], node)) FROM bu_claimed),
  (SELECT array_agg(lease ORDER BY array_position(ARRAY['c', 'a', 'b'], node)) FROM bu_claimed));
SELECT string_agg(node, ', ' ORDER BY seq) AS completed FROM vectorbea.events
 WHERE run_id = :'run13' AND type = 'STEP_COMPLETED';
SELECT vectorbea.cancel_run(:'run13', 'stop', compensate => true);
SELECT node, status, depends_on FROM vectorbea.nodes
 WHERE run_id = :'run13' AND compensation_of IS NOT NULL ORDER BY depends_on::text, node;
SELECT * FROM check_run(:'run13');

-- Two attempts under in_doubt "compensate" whose leases run out together:
-- the first to expire fails the run, which revokes the second; both may
-- have had their effect, so both are undone (before, the revoked one was
-- only cancelled).
SELECT vectorbea.define_workflow('two_doubts', '{"nodes":[
  {"id":"a","activity":"td_a","in_doubt":"compensate","compensate":{"activity":"td_undo"}},
  {"id":"b","activity":"td_b","in_doubt":"compensate","compensate":{"activity":"td_undo"}}]}');
SELECT vectorbea.start_run('two_doubts', '{}') AS run14 \gset
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w', ARRAY['td_a', 'td_b'], 2, '1 second');
SET vectorbea.test_clock_offset = '60s';
SELECT vectorbea.run_due_work() IS NOT NULL AS swept;
SELECT node, status, error->>'class' AS class FROM vectorbea.nodes
 WHERE run_id = :'run14' AND compensation_of IS NULL ORDER BY node;
SELECT data->'revoked' AS revoked, jsonb_path_query_array(data->'nodes', '$[*].id') AS undoing
  FROM vectorbea.events WHERE run_id = :'run14' AND type = 'COMPENSATION_STARTED';
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS undone
  FROM vectorbea.claim_tasks('w', ARRAY['td_undo'], 1);
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS undone
  FROM vectorbea.claim_tasks('w', ARRAY['td_undo'], 1);
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run14' AND compensation_of IS NOT NULL ORDER BY node;
SELECT status, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'run14';
SELECT * FROM check_run(:'run14');
RESET vectorbea.test_clock_offset;

-- Two attempts that ran past their timeouts are ended by one sweep: the
-- first fails the run for good, which closes the second and begins to
-- compensate (the run is still active).  The second is not failed again:
-- it stayed cancelled, rather than coming back ready in a run that only
-- undoes, or being counted off twice.
SELECT vectorbea.define_workflow('two_late', '{"nodes":[
  {"id":"book","activity":"tl_book","compensate":{"activity":"tl_unbook"}},
  {"id":"a","activity":"tl_step","depends_on":["book"],"timeout":"1s","retry":{"max_attempts":1}},
  {"id":"b","activity":"tl_step","depends_on":["book"],"timeout":"2s"}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('two_late', '{}') AS run15 \gset
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS booked FROM vectorbea.claim_tasks('w', ARRAY['tl_book']);
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w', ARRAY['tl_step'], 2, '1 minute');
SET vectorbea.test_clock_offset = '3s';
SELECT vectorbea.run_due_work() IS NOT NULL AS swept;
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'run15' ORDER BY id;
SELECT status, open_nodes FROM vectorbea.runs WHERE id = :'run15';
SELECT count(*) AS claimable FROM vectorbea.claim_tasks('w', ARRAY['tl_step'], 10);
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS undone
  FROM vectorbea.claim_tasks('w', ARRAY['tl_unbook'], 1);
SELECT status, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'run15';
SELECT * FROM check_run(:'run15');
RESET vectorbea.test_clock_offset;

DROP FUNCTION history(uuid);
DROP FUNCTION try(text);
DROP FUNCTION work(text, jsonb);

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
