-- Pictures of a run and the difference between two runs: graph() as
-- Mermaid and dot (states, kinds, attempts, spawns drawn dashed, gates with
-- their decisions), timeline_chart() as a Mermaid gantt chart, diff_runs()
-- node by node.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

SELECT vectorbea.define_workflow('pic', '{"nodes":[
	{"id":"scout","activity":"pic_scout"},
	{"id":"plan","activity":"pic_plan","depends_on":["scout"],
	 "retry":{"max_attempts":3,"initial":"0s","max":"0s"}},
	{"id":"editor","kind":"approval","depends_on":["plan"],"approval":{"gate":"publish"}}]}');

-- Run A: plan fails once, succeeds, spawns two investigations; the editor approves.
SELECT vectorbea.start_run('pic', '{"topic": "latency"}') AS run_a \gset
SELECT vectorbea.complete_task(task_id, lease, '{"found": 3}') FROM vectorbea.claim_tasks('w', ARRAY['pic_scout']);
SELECT vectorbea.fail_task(task_id, lease, '{"message": "model busy", "class": "transient"}')
  FROM vectorbea.claim_tasks('w', ARRAY['pic_plan']);
SELECT vectorbea.complete_task(task_id, lease, '{"steps": ["a", "b"], "cost": "low"}',
		spawn => '[{"id":"check_db","activity":"pic_check","depends_on":["plan"]},
				   {"id":"check_api","activity":"pic_check","depends_on":["plan"]}]')
  FROM vectorbea.claim_tasks('w', ARRAY['pic_plan']);
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{"ok": true}')
  FROM vectorbea.claim_tasks('w', ARRAY['pic_check'], 2)) c;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'dana' WHERE run_id = :'run_a';
SELECT status FROM vectorbea.runs WHERE id = :'run_a';

SELECT vectorbea.graph(:'run_a');
SELECT vectorbea.graph(:'run_a', 'dot');

-- The chart has a section per node, attempts and the gate as bars; times
-- are epoch milliseconds, masked here.
SELECT regexp_replace(vectorbea.timeline_chart(:'run_a'), '\d{13}', '<ms>', 'g') AS chart;

-- Run B: plan succeeds at once with another output and spawns one check;
-- the editor rejects.
SELECT vectorbea.start_run('pic', '{"topic": "latency"}') AS run_b \gset
SELECT vectorbea.complete_task(task_id, lease, '{"found": 3}') FROM vectorbea.claim_tasks('w', ARRAY['pic_scout']);
SELECT vectorbea.complete_task(task_id, lease, '{"steps": ["a"], "cost": "low"}',
		spawn => '[{"id":"check_db","activity":"pic_check","depends_on":["plan"]}]', usage => '{"tokens": 120, "usd": 0.002}')
  FROM vectorbea.claim_tasks('w', ARRAY['pic_plan']);
SELECT vectorbea.complete_task(task_id, lease, '{"ok": false}') FROM vectorbea.claim_tasks('w', ARRAY['pic_check']);
UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'dana', reason = 'not yet' WHERE run_id = :'run_b';

-- (latency is left out here: it differs from run to run of the test; the
-- gate's output holds the decision time, so only its status is shown)
SELECT node, what, a, b FROM vectorbea.diff_runs(:'run_a', :'run_b')
 WHERE what <> 'latency_ms' AND NOT (node = 'editor' AND what = 'output');
SELECT a->>'status' AS a_decision, b AS b_output
  FROM vectorbea.diff_runs(:'run_a', :'run_b') WHERE node = 'editor' AND what = 'output';
-- A run compared with itself differs in nothing.
SELECT count(*) AS differences FROM vectorbea.diff_runs(:'run_a', :'run_a');
SELECT vectorbea.graph(:'run_b');

-- A person's name is text in the picture, never markup: Mermaid reads a
-- label as HTML and #...; as entity codes, so <, >, &, # and " are codes,
-- and % too (%%{...}%% is a directive wherever it stands).
SELECT vectorbea.start_run('pic', '{"topic": "names"}') AS run_c \gset
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['pic_scout']);
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['pic_plan']);
UPDATE vectorbea.approvals SET status = 'approved',
	   decided_by = '<img src=https://tracker.example/p.png><br/>ask #quot;&amp;" %%{init: {''theme'': ''dark''}}%%'
 WHERE run_id = :'run_c';
SELECT line FROM regexp_split_to_table(vectorbea.graph(:'run_c'), E'\n') line WHERE line LIKE '%approved by%';

-- The chart has a bar for a task that handed over to a gate (done, then
-- the gate's bar) and for the wait of a sleep node.
SELECT vectorbea.define_workflow('pic_wait', '{"nodes":[
	{"id":"ship","activity":"pic_ship"},
	{"id":"nap","kind":"sleep","sleep":{"for":"1m"},"depends_on":["ship"]}]}');
SELECT vectorbea.start_run('pic_wait') AS run_w \gset
SELECT vectorbea.await_approval(task_id, lease, 'go_live') IS NOT NULL AS asked
  FROM vectorbea.claim_tasks('w', ARRAY['pic_ship']);
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ops' WHERE run_id = :'run_w';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SET vectorbea.test_clock_offset = '2m';
SELECT vectorbea.run_due_work()->'waits_ended' AS ended;
RESET vectorbea.test_clock_offset;
SELECT status FROM vectorbea.runs WHERE id = :'run_w';
SELECT regexp_replace(vectorbea.timeline_chart(:'run_w'), '\d{13}', '<ms>', 'g') AS chart;

-- The run's end cuts the bars still open (b's first attempt, the first
-- gate: crit), also when a requeue brings the run back and the node runs
-- again and a new gate opens (bars of their own).
SELECT vectorbea.define_workflow('cut', '{"nodes":[{"id":"a","activity":"cut_a","retry":{"max_attempts":1}},
	{"id":"b","activity":"cut_b"},{"id":"g","kind":"approval","approval":{"gate":"ok"}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('cut') AS run_cut \gset
SELECT count(*) AS b_claimed FROM vectorbea.claim_tasks('w', ARRAY['cut_b']);
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}') FROM vectorbea.claim_tasks('w', ARRAY['cut_a']);
SELECT vectorbea.requeue(id, 'again') IS NOT NULL AS requeued FROM vectorbea.nodes WHERE run_id = :'run_cut' AND node = 'a';
SELECT count(vectorbea.complete_task(task_id, lease)) AS completed FROM vectorbea.claim_tasks('w', ARRAY['cut_a', 'cut_b'], 10);
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'dana' WHERE run_id = :'run_cut' AND status = 'pending';
SELECT status FROM vectorbea.runs WHERE id = :'run_cut';
SELECT regexp_replace(vectorbea.timeline_chart(:'run_cut'), '\d{13}', '<ms>', 'g') AS chart;
SELECT * FROM check_run(:'run_cut');

-- What runs after a requeue brought the run back runs until now: its bar
-- is open (active) and does not end where the run had ended before.
SELECT vectorbea.start_run('cut') AS run_back \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}') FROM vectorbea.claim_tasks('w', ARRAY['cut_a']);
SELECT vectorbea.requeue(id, 'again') IS NOT NULL AS requeued FROM vectorbea.nodes WHERE run_id = :'run_back' AND node = 'a';
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w', ARRAY['cut_a']);
SET vectorbea.test_clock_offset = '1h';
SELECT m[1] AS tag, m[3]::bigint - m[2]::bigint >= 3600000 AS until_now
  FROM regexp_matches(vectorbea.timeline_chart(:'run_back'), 'attempt 2 :(\w+), (\d+), (\d+)') m;
RESET vectorbea.test_clock_offset;
SELECT * FROM check_run(:'run_back');

-- Bad input changes nothing.
SELECT vectorbea.graph(:'run_a', 'png'); \echo SQLSTATE :SQLSTATE
-- The error is the door's: no CONTEXT line names its internal body
-- (graph_body), and a caller's own function keeps its line.
CREATE FUNCTION public.vb_draw(r uuid) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	RETURN vectorbea.graph(r, 'png');
END
$$;
SELECT public.vb_draw(:'run_a'); \echo SQLSTATE :SQLSTATE
DROP FUNCTION public.vb_draw(uuid);
-- ... whatever its name: a caller's function named like the body keeps it.
CREATE SCHEMA vb_pic;
CREATE FUNCTION vb_pic.graph_body(r uuid) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	RETURN vectorbea.graph(r, 'png');
END
$$;
SELECT vb_pic.graph_body(:'run_a'); \echo SQLSTATE :SQLSTATE
DROP SCHEMA vb_pic CASCADE;
SELECT vectorbea.graph(NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.graph('00000000-0000-0000-0000-000000000000'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.timeline_chart('00000000-0000-0000-0000-000000000000'); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.diff_runs(:'run_a', '00000000-0000-0000-0000-000000000000'); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.diff_runs(NULL, :'run_a'); \echo SQLSTATE :SQLSTATE

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
