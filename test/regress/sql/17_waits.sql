-- Timers, signals and child runs: sleep, signal and run nodes wait without a
-- worker, and not_before holds any node until its time.  run_due_work()
-- does the scheduler's part (no scheduler serves this database) and the
-- test clock moves time.  Every run ends consistent with its history.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

-- Errors that name a run, without its id.
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f-]{27}', '<uuid>', 'g');
END
$$;

-- The history of a run, event by event, without times and ids.
CREATE FUNCTION history(run uuid) RETURNS TABLE (seq bigint, type text, node text, attempt integer)
LANGUAGE sql AS $$
	SELECT seq, type, node, attempt FROM vectorbea.events WHERE run_id = run ORDER BY seq
$$;

-- Bad definitions: each names the node and the field, and nothing is stored.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"nap"}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep"}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":[]}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"for":"1h","until":"2030-01-01T00:00:00Z"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"for":"forever"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"for":"0s"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"for":"400d"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"until":"next tuesday"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"until":"infinity"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"until":"tomorrow"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"for":"1h"},"timeout":"2h"}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"signal","signal":{"name":"s"},"timeout":"2h"}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"until":"{{upstream.a.output.t}}"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"for":"1h","snooze":true}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","activity":"nap","sleep":{"for":"1h"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","activity":"work","sleep":{"for":"1h"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"signal"}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"signal","signal":{}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"signal","signal":{"name":"has space"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"signal","signal":{"name":"ok","on_timeout":"continue"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"signal","signal":{"name":"ok","timeout":"1h","on_timeout":"shrug"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"signal","signal":{"name":"ok","timeout":"1h","default":{}}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"sleep","sleep":{"for":"1m"},"retry":{"max_attempts":3}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"signal","signal":{"name":"go","timeout":"1h"},"retry":{"max_attempts":3}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"run"}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"run","run":{"workflow":"nowhere"}}]}');
SELECT vectorbea.define_workflow('bad', jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object(
	'id', repeat('z', 60), 'kind', 'run', 'run', jsonb_build_object('workflow', repeat('w', 100))))));
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"run","run":{"workflow":"bad name"}}]}');
-- A run node's input is its child's input, a template: it cannot read
-- itself; a workflow that starts itself names a version it has or gets.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"run","run":{"workflow":"bad"},"input":{"n":"{{input.m}}","m":1}}]}');
SELECT vectorbea.define_workflow('selfref', '{"nodes":[{"id":"r","kind":"run","run":{"workflow":"selfref","version":7}}]}');
SELECT count(*) AS selfref_versions FROM vectorbea.workflows WHERE name = 'selfref';
-- A long placeholder is cut in the message, like any value.
SELECT vectorbea.define_workflow('bad', jsonb_build_object('nodes', jsonb_build_array(jsonb_build_object(
	'id', 'z', 'kind', 'run', 'run', jsonb_build_object('workflow', 'bad'),
	'input', jsonb_build_object('a', '{{upstream.' || repeat('q', 100) || '.output.t}}')))));
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"run","run":{"workflow":"x","version":0}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","kind":"run","run":{"workflow":"x"},"input":{"q":"{{upstream.y.output}}"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","activity":"work","not_before":17}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","activity":"work","not_before":"soonish"}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","activity":"work","not_before":"{{input.when"}]}');
SELECT count(*) AS workflows FROM vectorbea.workflows;

-- A sleep of one hour passes in test-clock time, with no worker: the node
-- waits, nothing can claim it, and the next task is ready when it ends.
SELECT vectorbea.define_workflow('nap', '{"nodes":[
	{"id":"first","activity":"w_first"},
	{"id":"nap","kind":"sleep","sleep":{"for":"1h"},"depends_on":["first"]},
	{"id":"after","activity":"w_after","depends_on":["nap"]}]}');
SELECT vectorbea.start_run('nap', '{}') AS nap_run \gset
SELECT vectorbea.complete_task(task_id, lease, '{"ok":true}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_first']);
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT * FROM nodes_of(:'nap_run');
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w', ARRAY['w_after']);
SET vectorbea.test_clock_offset = '59m';
SELECT vectorbea.run_due_work()->'waits_ended' AS ended_early;
SET vectorbea.test_clock_offset = '61m';
SELECT vectorbea.run_due_work()->'waits_ended' AS ended;
SELECT vectorbea.complete_task(task_id, lease, '{"done":true}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_after']);
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'nap_run';
SELECT * FROM nodes_of(:'nap_run');
SELECT output ? 'slept_until' AS has_time FROM vectorbea.nodes WHERE run_id = :'nap_run' AND node = 'nap';
SELECT * FROM timeline_text(:'nap_run');
SELECT * FROM check_run(:'nap_run');

-- Sleep until a time from the input (a template); a time already past
-- ends the sleep at once; a template that gives no time fails the node.
SELECT vectorbea.define_workflow('alarm', '{"nodes":[
	{"id":"wake","kind":"sleep","sleep":{"until":"{{run.input.at}}"}}]}');
SELECT vectorbea.start_run('alarm', jsonb_build_object('at', now() + interval '2h')) AS alarm_run \gset
SELECT vectorbea.start_run('alarm', '{"at":"2001-01-01T00:00:00Z"}') AS past_run \gset
SELECT vectorbea.start_run('alarm', '{"at":"whenever"}') AS bad_time_run \gset
SELECT vectorbea.start_run('alarm', '{}') AS no_time_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT status FROM vectorbea.runs WHERE id = :'alarm_run';
SELECT status FROM vectorbea.runs WHERE id = :'past_run';
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'bad_time_run';
SELECT error->>'message' AS message FROM vectorbea.nodes WHERE run_id = :'bad_time_run';
SELECT error->>'message' AS message FROM vectorbea.nodes WHERE run_id = :'no_time_run';
SET vectorbea.test_clock_offset = '2h1m';
SELECT vectorbea.run_due_work()->'waits_ended' AS ended;
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'alarm_run';
SELECT * FROM check_run(:'alarm_run');
SELECT * FROM check_run(:'past_run');
SELECT * FROM check_run(:'bad_time_run');

-- not_before holds a worker task until its time (here from the input).
SELECT vectorbea.define_workflow('later', '{"nodes":[
	{"id":"call","activity":"w_call","not_before":"{{run.input.call_at}}"}]}');
SELECT vectorbea.start_run('later', jsonb_build_object('call_at', now() + interval '30m')) AS later_run \gset
SELECT count(*) AS claimed_before FROM vectorbea.claim_tasks('w', ARRAY['w_call']);
SELECT vectorbea.run_due_work()->'waits_started' AS read;
SELECT count(*) AS claimed_still FROM vectorbea.claim_tasks('w', ARRAY['w_call']);
SET vectorbea.test_clock_offset = '31m';
SELECT vectorbea.complete_task(task_id, lease, '{"called":true}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_call']);
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'later_run';
SELECT * FROM check_run(:'later_run');

-- A time whose zone name PostgreSQL does not know is not a time: refused
-- at definition and as a deadline, and from a template it fails the
-- node for good (it used to raise a raw error at every pass, leaving the
-- run running for ever).  A known zone name is read.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"z","activity":"work","not_before":"2026-12-01 09:00 Mars/Olympus"}]}');
SELECT vectorbea.start_run('later', '{"call_at": "2026-12-01T09:00:00Z"}', NULL, '{"deadline": "2030-01-01 Mars/Olympus"}');
SELECT vectorbea.validate_workflow('{"nodes":[{"id":"z","activity":"work","not_before":"2026-12-01 09:00 Europe/Paris"}]}') IS NOT NULL AS known_zone_accepted;
SELECT vectorbea.start_run('later', '{"call_at": "2026-12-01 09:00 Mars/Olympus"}') AS mars_run \gset
SELECT vectorbea.run_due_work()->'errors' AS errors;
SELECT status, error->>'class' AS class, error->>'message' AS message FROM vectorbea.nodes WHERE run_id = :'mars_run';
SELECT status FROM vectorbea.runs WHERE id = :'mars_run';
SELECT * FROM check_run(:'mars_run');

-- Signals: one sent before its node waits is kept and delivered when it
-- does; one sent while it waits is delivered at once; a repeated key is a
-- no-op; each signal goes to one node.
SELECT vectorbea.define_workflow('ci', '{"nodes":[
	{"id":"build","activity":"w_build"},
	{"id":"ci","kind":"signal","signal":{"name":"ci_done"},"depends_on":["build"]},
	{"id":"review","kind":"signal","signal":{"name":"reviewed"}},
	{"id":"merge","activity":"w_merge","depends_on":["ci","review"]}]}');
SELECT vectorbea.start_run('ci', '{}') AS ci_run \gset
SELECT vectorbea.send_signal(:'ci_run', 'ci_done', '{"green":true}', 'hook-1') AS early_signal \gset
SELECT vectorbea.send_signal(:'ci_run', 'ci_done', '{"green":true}', 'hook-1') = :early_signal AS same_id;
SELECT try(format($$SELECT vectorbea.send_signal(%L, 'ci_done', '{"green":false}', 'hook-1')$$, :'ci_run'));
SELECT count(*) AS stored FROM vectorbea.signals WHERE run_id = :'ci_run';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT * FROM nodes_of(:'ci_run');
SELECT vectorbea.complete_task(task_id, lease, '{"built":true}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_build']);
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT node, status, output FROM vectorbea.nodes WHERE run_id = :'ci_run' AND kind = 'signal' ORDER BY node;
SELECT vectorbea.send_signal(:'ci_run', 'reviewed', '{"by":"ana"}') IS NOT NULL AS sent;
SELECT node, status, output FROM vectorbea.nodes WHERE run_id = :'ci_run' AND kind = 'signal' ORDER BY node;
SELECT s.name, n.node AS delivered_to FROM vectorbea.signals s
  LEFT JOIN vectorbea.nodes n ON n.id = s.delivered_to WHERE s.run_id = :'ci_run' ORDER BY s.id;
-- A second signal of a name nobody waits for any more stays undelivered.
SELECT vectorbea.send_signal(:'ci_run', 'ci_done', '{"green":true}', 'hook-2') IS NOT NULL AS sent;
SELECT count(*) FILTER (WHERE delivered_to IS NULL) AS undelivered FROM vectorbea.signals WHERE run_id = :'ci_run';
SELECT vectorbea.complete_task(task_id, lease, '{"merged":true}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_merge']);
SELECT status FROM vectorbea.runs WHERE id = :'ci_run';
SELECT * FROM history(:'ci_run');
SELECT * FROM check_run(:'ci_run');

-- Bad sends change nothing; a signal to a finished run is an error that
-- says so, unless it repeats a send that was made.
SELECT try(format($$SELECT vectorbea.send_signal(%L, 'ci_done', '{}')$$, :'ci_run'));
SELECT vectorbea.send_signal(:'ci_run', 'ci_done', '{"green":true}', 'hook-2') IS NOT NULL AS repeat_ok;
SELECT vectorbea.send_signal(NULL, 'x'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.send_signal(:'ci_run', NULL); \echo SQLSTATE :SQLSTATE
SELECT try($$SELECT vectorbea.send_signal(gen_random_uuid(), 'x')$$);
SELECT vectorbea.send_signal(:'ci_run', 'no spaces please'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.send_signal(:'ci_run', 'x', '{}', ''); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.send_signal(:'ci_run', 'x', '{}', repeat('k', 513)); \echo SQLSTATE :SQLSTATE
-- A key is up to 512 characters, not bytes: 300 two-byte characters pass
-- the check (and meet the finished run).
SELECT try(format($$SELECT vectorbea.send_signal(%L, 'ci_done', '{}', %L)$$, :'ci_run', repeat('é', 300)));
SELECT count(*) AS signals FROM vectorbea.signals;
-- The same send twice in one statement, the first finishing the run: both
-- return the signal's id, as a repeat after the run finished does.
SELECT vectorbea.define_workflow('one_signal', '{"nodes":[{"id":"w","kind":"signal","signal":{"name":"go"}}]}');
SELECT vectorbea.start_run('one_signal') AS one_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT count(DISTINCT id) AS ids, count(*) AS sends
  FROM (SELECT vectorbea.send_signal(:'one_run', 'go', '{"ok":true}', 'delivery-1') AS id
		  FROM generate_series(1, 2)) s;
SELECT status FROM vectorbea.runs WHERE id = :'one_run';
SELECT * FROM check_run(:'one_run');
-- EXECUTE is not granted to PUBLIC: a role with the schema but no grant.
GRANT USAGE ON SCHEMA vectorbea TO vb_plain_user;
SET ROLE vb_plain_user;
\set VERBOSITY terse
SELECT vectorbea.send_signal(:'ci_run', 'x'); \echo SQLSTATE :SQLSTATE
\set VERBOSITY default
RESET ROLE;
REVOKE USAGE ON SCHEMA vectorbea FROM vb_plain_user;

-- A signal timeout: "fail" fails the node (and the run), "continue" gives
-- the default as output.
SELECT vectorbea.define_workflow('deadline', '{"nodes":[
	{"id":"pay","kind":"signal","signal":{"name":"paid","timeout":"10m"}}]}');
SELECT vectorbea.define_workflow('patient', '{"nodes":[
	{"id":"pay","kind":"signal","signal":{"name":"paid","timeout":"10m","on_timeout":"continue","default":{"paid":false}}},
	{"id":"next","activity":"w_next","depends_on":["pay"]}]}');
SELECT vectorbea.start_run('deadline', '{}') AS strict_run \gset
SELECT vectorbea.start_run('patient', '{}') AS patient_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SET vectorbea.test_clock_offset = '11m';
SELECT vectorbea.run_due_work()->'waits_ended' AS ended;
RESET vectorbea.test_clock_offset;
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'strict_run';
SELECT status, attempt, error->>'class' AS class FROM vectorbea.nodes WHERE run_id = :'strict_run';
SELECT node, status, output FROM vectorbea.nodes WHERE run_id = :'patient_run' ORDER BY id;
SELECT * FROM check_run(:'strict_run');
SELECT * FROM check_run(:'patient_run');

-- Child runs: the child gets its input from the template, the parent waits
-- without a worker and takes the outputs of the child's last nodes.
SELECT vectorbea.define_workflow('research', '{"nodes":[
	{"id":"search","activity":"w_search"},
	{"id":"summary","activity":"w_summary","depends_on":["search"]}]}');
SELECT vectorbea.define_workflow('report', '{"nodes":[
	{"id":"plan","activity":"w_plan"},
	{"id":"dig","kind":"run","run":{"workflow":"research"},"depends_on":["plan"],
	 "input":{"topic":"{{upstream.plan.output.topic}}","ask":"about {{run.input.who}}","n":"{{upstream.plan.output.n}}"},
	 "retry":{"max_attempts":2,"initial":"0s","max":"0s"}},
	{"id":"write","activity":"w_write","depends_on":["dig"]}]}');
SELECT vectorbea.start_run('report', '{"who":"ada"}') AS parent_run \gset
SELECT vectorbea.complete_task(task_id, lease, '{"topic":"engines","n":3}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_plan']);
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT id AS child_run FROM vectorbea.runs WHERE parent_run = :'parent_run' \gset
SELECT input, parent_node, workspace FROM vectorbea.runs WHERE id = :'child_run';
SELECT node, status, attempt, lease = :'child_run'::uuid AS lease_is_child
  FROM vectorbea.nodes WHERE run_id = :'parent_run' AND node = 'dig';
-- The child fails for good: the parent's node fails its attempt and
-- retries with a new child.
SELECT vectorbea.fail_task(task_id, lease, '{"message":"index down","class":"permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_search']);
SELECT status FROM vectorbea.runs WHERE id = :'child_run';
SELECT node, status, attempt, error->>'class' AS class FROM vectorbea.nodes WHERE run_id = :'parent_run' AND node = 'dig';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT count(*) AS children FROM vectorbea.runs WHERE parent_run = :'parent_run';
SELECT vectorbea.complete_task(task_id, lease, '{"hits":12}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_search']);
SELECT vectorbea.complete_task(task_id, lease, '{"text":"engines are fun"}')
  FROM vectorbea.claim_tasks('w', ARRAY['w_summary']);
SELECT node, status, attempt, output FROM vectorbea.nodes WHERE run_id = :'parent_run' AND node = 'dig';
SELECT upstream->'dig' AS write_sees, vectorbea.complete_task(task_id, lease, '{}') AS completed
  FROM vectorbea.claim_tasks('w', ARRAY['w_write']);
SELECT status FROM vectorbea.runs WHERE id = :'parent_run';
SELECT r.status, r.parent_node, (SELECT count(*) FROM vectorbea.verify_run(r.id)) AS differences
  FROM vectorbea.runs r WHERE r.parent_run = :'parent_run' ORDER BY r.created_at;
SELECT * FROM check_run(:'parent_run');
SELECT * FROM history(:'parent_run') WHERE node = 'dig';

-- Fan-out to 100 children and a join on them; then cancelling a parent
-- with 100 running children cancels them all.
SELECT vectorbea.define_workflow('leaf', '{"nodes":[{"id":"leaf","activity":"w_leaf"}]}');
SELECT vectorbea.define_workflow('fan', jsonb_build_object('nodes',
	(SELECT jsonb_agg(jsonb_build_object('id', 'c' || i, 'kind', 'run',
										 'run', jsonb_build_object('workflow', 'leaf'),
										 'input', jsonb_build_object('i', i)))
	   FROM generate_series(1, 100) i)
	|| jsonb_build_array(jsonb_build_object('id', 'join', 'activity', 'w_join',
		'depends_on', (SELECT jsonb_agg('c' || i) FROM generate_series(1, 100) i)))));
SELECT vectorbea.start_run('fan', '{}') AS fan_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT count(*) AS children FROM vectorbea.runs WHERE parent_run = :'fan_run' AND status = 'running';
SELECT count(*) AS completed FROM (
	SELECT vectorbea.complete_task(task_id, lease, jsonb_build_object('leaf', run_input->'i'))
	  FROM vectorbea.claim_tasks('w', ARRAY['w_leaf'], 100)) c;
SELECT count(*) FILTER (WHERE status = 'succeeded') AS children_done FROM vectorbea.runs WHERE parent_run = :'fan_run';
SELECT upstream->'c42' AS c42 FROM vectorbea.claim_tasks('w', ARRAY['w_join']);
SELECT * FROM check_run(:'fan_run');

SELECT vectorbea.start_run('fan', '{}') AS doomed_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.cancel_run(:'doomed_run', 'changed my mind');
SELECT vectorbea.run_due_work()->'children_cancelled' AS children_cancelled;
SELECT status, count(*) FROM vectorbea.runs WHERE parent_run = :'doomed_run' GROUP BY status;
SELECT count(*) AS claimable FROM vectorbea.claim_tasks('w', ARRAY['w_leaf'], 100);
SELECT count(*) AS inconsistent FROM vectorbea.runs r
 WHERE (r.id = :'doomed_run' OR r.parent_run = :'doomed_run')
   AND EXISTS (SELECT FROM vectorbea.verify_run(r.id));

-- A parent that compensates undoes its child too: the child it no longer
-- waits for is cancelled with its own compensation (before, its work
-- stood, and nothing could undo it: the parent's run node, which never
-- succeeded, is not compensated).
SELECT vectorbea.define_workflow('undo_kid', '{"nodes":[
	{"id":"booked","activity":"uk_book","compensate":{"activity":"uk_unbook"}},
	{"id":"more","activity":"uk_more","depends_on":["booked"]}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('undo_parent', '{"nodes":[
	{"id":"paid","activity":"up_pay","compensate":{"activity":"up_refund"}},
	{"id":"kid","kind":"run","run":{"workflow":"undo_kid"},"depends_on":["paid"]}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('undo_parent', '{}') AS undo_parent \gset
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS paid FROM vectorbea.claim_tasks('w', ARRAY['up_pay']);
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS booked FROM vectorbea.claim_tasks('w', ARRAY['uk_book']);
SELECT vectorbea.cancel_run(:'undo_parent', 'changed my mind', compensate => true);
SELECT vectorbea.run_due_work()->'children_cancelled' AS children_cancelled;
SELECT r.status AS child_status, n.node, n.status
  FROM vectorbea.runs r JOIN vectorbea.nodes n ON n.run_id = r.id
 WHERE r.parent_run = :'undo_parent' ORDER BY n.id;
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS undone
  FROM vectorbea.claim_tasks('w', ARRAY['uk_unbook', 'up_refund'], 10);
SELECT workflow, status, error->>'compensation' AS compensation FROM vectorbea.runs
 WHERE id = :'undo_parent' OR parent_run = :'undo_parent' ORDER BY workflow;
SELECT count(*) AS inconsistent FROM vectorbea.runs r
 WHERE (r.id = :'undo_parent' OR r.parent_run = :'undo_parent')
   AND EXISTS (SELECT FROM vectorbea.verify_run(r.id));

-- The child's last task completes before the scheduler cancels it: it is
-- cancelled with its own compensation all the same, not left succeeded
-- with its work standing under a parent that undid its own.
SELECT vectorbea.start_run('undo_parent', '{}') AS undo_late \gset
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS paid FROM vectorbea.claim_tasks('w', ARRAY['up_pay']);
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS booked FROM vectorbea.claim_tasks('w', ARRAY['uk_book']);
SELECT task_id AS more_task, lease AS more_lease FROM vectorbea.claim_tasks('w', ARRAY['uk_more']) \gset
SELECT vectorbea.cancel_run(:'undo_late', 'changed my mind', compensate => true);
SELECT vectorbea.complete_task(:more_task, :'more_lease', '{}');
SELECT r.status AS child_status, n.node, n.status
  FROM vectorbea.runs r JOIN vectorbea.nodes n ON n.run_id = r.id
 WHERE r.parent_run = :'undo_late' ORDER BY n.id;
SELECT type, data->>'reason' AS reason FROM vectorbea.events
 WHERE run_id = (SELECT id FROM vectorbea.runs WHERE parent_run = :'undo_late')
   AND type IN ('RUN_COMPLETED', 'RUN_CANCELLED', 'COMPENSATION_STARTED') ORDER BY seq;
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS undone
  FROM vectorbea.claim_tasks('w', ARRAY['uk_unbook', 'up_refund'], 10);
SELECT workflow, status, error->>'compensation' AS compensation FROM vectorbea.runs
 WHERE id = :'undo_late' OR parent_run = :'undo_late' ORDER BY workflow;
SELECT count(*) AS inconsistent FROM vectorbea.runs r
 WHERE (r.id = :'undo_late' OR r.parent_run = :'undo_late')
   AND EXISTS (SELECT FROM vectorbea.verify_run(r.id));

-- A child cancelled by hand fails its parent's node for good.
SELECT vectorbea.define_workflow('one_child', '{"nodes":[{"id":"kid","kind":"run","run":{"workflow":"leaf","version":1}}]}');
SELECT vectorbea.start_run('one_child', '{}') AS solo_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.cancel_run(id, 'not needed') FROM vectorbea.runs WHERE parent_run = :'solo_run';
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'solo_run';
SELECT error->>'message' ~ 'was cancelled' AS says_cancelled FROM vectorbea.nodes WHERE run_id = :'solo_run';
SELECT * FROM check_run(:'solo_run');

-- A child that cannot start for a reason of the moment (a deadlock, raised
-- here by a trigger) does not fail its node: the scheduler records the
-- error, puts the node off and starts the child on a later pass.
CREATE FUNCTION refuse_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.parent_run IS NOT NULL THEN
		RAISE EXCEPTION 'no child now' USING ERRCODE = 'deadlock_detected';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_children BEFORE INSERT ON vectorbea.runs
	FOR EACH ROW EXECUTE FUNCTION refuse_children();
SELECT vectorbea.start_run('one_child', '{}') AS later_run \gset
SELECT r->'waits_started' AS started, r->'errors' AS errors FROM vectorbea.run_due_work() r;
SELECT node, status, attempt FROM vectorbea.nodes WHERE run_id = :'later_run';
SELECT data->>'message' AS scheduler_error FROM vectorbea.events
 WHERE run_id = :'later_run' AND type = 'SCHEDULER_ERROR';
DROP TRIGGER refuse_children ON vectorbea.runs;
DROP FUNCTION refuse_children();
SET vectorbea.test_clock_offset = '31s';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
RESET vectorbea.test_clock_offset;
SELECT n.status, c.status AS child_status FROM vectorbea.nodes n
  JOIN vectorbea.runs c ON c.parent_run = n.run_id WHERE n.run_id = :'later_run';
SELECT * FROM check_run(:'later_run');

-- A child whose last nodes' outputs together pass max_payload_size fails
-- its parent's node for good; each output alone fits.
SELECT vectorbea.define_workflow('wide_kid', '{"nodes":[{"id":"l","activity":"wk"},{"id":"r","activity":"wk"}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('wide_parent', '{"nodes":[{"id":"kid","kind":"run","run":{"workflow":"wide_kid"}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('wide_parent', '{}') AS wide_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SET vectorbea.max_payload_size = '1kB';
SELECT count(vectorbea.complete_task(task_id, lease, jsonb_build_object('text', repeat('x', 800))))
  FROM vectorbea.claim_tasks('w', ARRAY['wk'], 2);
RESET vectorbea.max_payload_size;
SELECT status FROM vectorbea.runs WHERE parent_run = :'wide_run';
SELECT n.status, n.error->>'class' AS class,
	   regexp_replace(n.error->>'message', '[0-9a-f]{8}-[0-9a-f-]{27}', '<uuid>') AS message
  FROM vectorbea.nodes n WHERE n.run_id = :'wide_run';
SELECT * FROM check_run(:'wide_run');

-- A run node's timeout ends the wait; its child is cancelled.
SELECT vectorbea.define_workflow('hurry', '{"nodes":[{"id":"kid","kind":"run","run":{"workflow":"leaf"},"timeout":"5m","retry":{"max_attempts":1}}]}');
SELECT vectorbea.start_run('hurry', '{}') AS hurry_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SET vectorbea.test_clock_offset = '6m';
SELECT vectorbea.run_due_work() - 'leases_expired' - 'timeouts' - 'deadlines_enforced' - 'gates_expired' - 'errors' AS due;
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'hurry_run';
SELECT status FROM vectorbea.runs WHERE parent_run = :'hurry_run';
SELECT * FROM check_run(:'hurry_run');

-- A batch that completes a parent's task and the last task of its child:
-- the child's end moves the parent on in the batch's own copy of it, and
-- the parent ends in the same call.
SELECT vectorbea.define_workflow('kid_b', '{"nodes":[{"id":"k","activity":"wb_k"}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('parent_b', '{"nodes":[
	{"id":"r","kind":"run","run":{"workflow":"kid_b"}},
	{"id":"p","activity":"wb_p"}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('parent_b') AS pb_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.complete_tasks(array_agg(task_id ORDER BY task_id), array_agg(lease ORDER BY task_id)) AS completed
  FROM vectorbea.claim_tasks('w', ARRAY['wb_p', 'wb_k'], 10);
SELECT id = :'pb_run' AS is_parent, status, open_nodes FROM vectorbea.runs
 WHERE id = :'pb_run' OR parent_run = :'pb_run' ORDER BY created_at;
SELECT * FROM history(:'pb_run');
SELECT * FROM check_run(:'pb_run');

-- One UPDATE rejecting a child run's gate and its parent's: the child's
-- rejection fails the child, whose end fails the parent; the parent's gate,
-- later in the same statement, is closed instead of decided.
SELECT vectorbea.define_workflow('kid_g', '{"nodes":[{"id":"kg","kind":"approval","approval":{"gate":"kid_gate"}}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('parent_g', '{"nodes":[
	{"id":"r","kind":"run","run":{"workflow":"kid_g"},"retry":{"max_attempts":1}},
	{"id":"t","activity":"pg_t"},
	{"id":"g","kind":"approval","approval":{"gate":"parent_gate"},"depends_on":["t"]}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('parent_g') AS pg_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) FROM vectorbea.claim_tasks('w', ARRAY['pg_t']);
UPDATE vectorbea.approvals SET status = 'rejected'
 WHERE status = 'pending' AND gate IN ('kid_gate', 'parent_gate')
   AND (run_id = :'pg_run' OR run_id IN (SELECT id FROM vectorbea.runs WHERE parent_run = :'pg_run'));
SELECT a.gate, a.status, r.status AS run_status FROM vectorbea.approvals a JOIN vectorbea.runs r ON r.id = a.run_id
 WHERE a.gate IN ('kid_gate', 'parent_gate') AND (r.id = :'pg_run' OR r.parent_run = :'pg_run') ORDER BY a.id;
SELECT * FROM check_run(:'pg_run');

-- A workflow that runs itself stops at the nesting limit, in one pass:
-- the pass sees the children it has just started, the 17th level fails
-- for good, and that failure goes up the chain without a retry (each
-- retry would only nest again).
SELECT vectorbea.define_workflow('selfrec', '{"nodes":[{"id":"again","kind":"run","run":{"workflow":"selfrec"}}]}');
SELECT vectorbea.start_run('selfrec') AS rec_run \gset
SET statement_timeout = '60s';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
RESET statement_timeout;
SELECT count(*) AS runs, string_agg(DISTINCT status, ',') AS statuses
  FROM vectorbea.runs WHERE workflow = 'selfrec';
SELECT count(*) AS attempts FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.workflow = 'selfrec' AND e.type = 'CHILD_RUN_STARTED';
SELECT error->>'class' AS class, error->>'depth_limit' AS depth_limit FROM vectorbea.nodes WHERE run_id = :'rec_run';
SELECT n.error->>'message' AS deepest FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
 WHERE r.workflow = 'selfrec' AND n.error->>'message' LIKE 'run node%';
SELECT * FROM check_run(:'rec_run');

-- The root of a tree counts the child runs started under it, at any depth.
SELECT tree_runs FROM vectorbea.runs WHERE id = :'rec_run';
SELECT count(*) AS child_runs_counting FROM vectorbea.runs WHERE workflow = 'selfrec' AND tree_runs > 0;

-- A workflow that starts itself twice would make a tree of 2^17 - 1 runs;
-- vectorbea.max_tree_runs stops it.  The run node that would start one
-- child run more than the limit fails for good, and that failure goes up
-- the chain without a retry, as at the nesting limit.
SET vectorbea.max_tree_runs = 6;
SELECT vectorbea.define_workflow('twice', '{"nodes":[
  {"id":"left","kind":"run","run":{"workflow":"twice"}},
  {"id":"right","kind":"run","run":{"workflow":"twice"}}]}');
SELECT vectorbea.start_run('twice') AS twice_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.run_due_work()->'children_cancelled' AS cancelled_later;
RESET vectorbea.max_tree_runs;
SELECT count(*) AS runs, count(*) FILTER (WHERE status = 'running') AS running
  FROM vectorbea.runs WHERE workflow = 'twice';
SELECT status, tree_runs FROM vectorbea.runs WHERE id = :'twice_run';
SELECT count(*) AS child_starts FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.workflow = 'twice' AND e.type = 'CHILD_RUN_STARTED';
SELECT regexp_replace(n.error->>'message', '[0-9a-f-]{36}', '<root>') AS at_the_limit, n.error->>'class' AS class
  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
 WHERE r.workflow = 'twice' AND n.error->>'message' LIKE 'run node%'
 ORDER BY 1;
SELECT count(*) FILTER (WHERE n.error->>'tree_limit' = 'true') AS failed_at_limit,
       count(*) FILTER (WHERE n.attempt > 1) AS retried
  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id WHERE r.workflow = 'twice';
SELECT node, status, error->>'class' AS class, error->>'tree_limit' AS tree_limit
  FROM vectorbea.nodes WHERE run_id = :'twice_run' ORDER BY node;
SELECT * FROM check_run(:'twice_run');
SELECT count(*) AS differences FROM vectorbea.runs r, vectorbea.verify_run(r.id) WHERE r.workflow = 'twice';

-- A cancel (statement_timeout, pg_cancel_backend) ends run_due_work()'s
-- statement: it is not one item's error to record and carry on from.  A
-- trigger stands in for a cancel that lands while a sleep node starts.
SELECT vectorbea.define_workflow('nap_cancel', '{"nodes":[{"id":"cancel_me","kind":"sleep","sleep":{"for":"1h"}}]}');
SELECT vectorbea.start_run('nap_cancel') AS nap_run \gset
CREATE FUNCTION cancel_here() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.node = 'cancel_me' THEN
		RAISE EXCEPTION 'canceling statement due to statement timeout' USING ERRCODE = 'query_canceled';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER cancel_here BEFORE UPDATE ON vectorbea.nodes FOR EACH ROW EXECUTE FUNCTION cancel_here();
\set VERBOSITY terse
SELECT vectorbea.run_due_work(); \echo SQLSTATE :SQLSTATE
\set VERBOSITY default
DROP TRIGGER cancel_here ON vectorbea.nodes;
DROP FUNCTION cancel_here();
SELECT count(*) AS scheduler_errors FROM vectorbea.events WHERE run_id = :'nap_run' AND type = 'SCHEDULER_ERROR';
SELECT vectorbea.run_due_work()->'waits_started' AS started_after;
SELECT status FROM vectorbea.nodes WHERE run_id = :'nap_run';
SELECT * FROM check_run(:'nap_run');

DROP FUNCTION try(text);
DROP FUNCTION history(uuid);

-- A spawned run node's workflow must exist too, as a defined one's: the
-- completion that spawns it is refused and changes nothing.
SELECT vectorbea.define_workflow('spawns_kids', '{"nodes":[{"id":"plan","activity":"kid_planner"}]}');
SELECT vectorbea.start_run('spawns_kids', '{}') AS spawner \gset
SELECT task_id AS plan_task, lease AS plan_lease FROM vectorbea.claim_tasks('w', ARRAY['kid_planner']) \gset
SELECT vectorbea.complete_task(:plan_task, :'plan_lease', '{}',
	spawn => '[{"id":"kid","kind":"run","run":{"workflow":"nowhere"}}]');
-- Its own workflow, at a version it does not have (a definition may name
-- the version it becomes; a spawn may not).
SELECT vectorbea.complete_task(:plan_task, :'plan_lease', '{}',
	spawn => '[{"id":"kid","kind":"run","run":{"workflow":"spawns_kids","version":2}}]');
SELECT status, (SELECT count(*) FROM vectorbea.nodes WHERE run_id = :'spawner') AS nodes
  FROM vectorbea.nodes WHERE id = :plan_task;
SELECT vectorbea.fail_task(:plan_task, :'plan_lease', '{"message": "done with the test", "class": "permanent"}');

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
