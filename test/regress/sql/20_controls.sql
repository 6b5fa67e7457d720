-- Kill switches: pause and resume a run or a workspace, disable and enable
-- a model.  Nothing of a paused run is claimed; what was claimed may still
-- be completed; everything is an event, effective at commit, listed in
-- vectorbea.controls.  Every run ends consistent with its history.
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

-- Bad input: a clear error, nothing written.
SELECT vectorbea.pause_run(NULL); \echo SQLSTATE :SQLSTATE
SELECT try($$SELECT vectorbea.pause_run(gen_random_uuid())$$);
SELECT vectorbea.pause_workspace(NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.pause_workspace('no spaces'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.pause_workspace('ws', repeat('x', 4097)); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.resume_workspace(NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.disable_model('openia', 'gpt-4o'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.disable_model('openai', NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.disable_model('openai', ''); \echo SQLSTATE :SQLSTATE
-- no llm node can name a model with a line break in it: neither can a kill switch
SELECT vectorbea.disable_model('openai', E'gpt\n4o'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.enable_model('anthropics'); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS controls FROM vectorbea.controls;

SELECT vectorbea.define_workflow('two', '{"nodes":[
	{"id":"a","activity":"k_a"},
	{"id":"b","activity":"k_b"},
	{"id":"c","activity":"k_c","depends_on":["a","b"]}]}');

-- pause_run: a is claimed first; while paused b is not claimable, but a's
-- completion is accepted; after resume_run b is claimed and the run ends.
SELECT vectorbea.start_run('two', '{}') AS run \gset
SELECT task_id AS a_task, lease AS a_lease FROM vectorbea.claim_tasks('w', ARRAY['k_a']) \gset
SELECT vectorbea.pause_run(:'run', 'looping agent');
SELECT vectorbea.pause_run(:'run', 'again') AS paused_twice;
SELECT status, paused->>'scope' AS scope, paused->>'reason' AS reason FROM vectorbea.runs WHERE id = :'run';
SELECT control, reason FROM vectorbea.controls;
SELECT count(*) AS claimable FROM vectorbea.claim_tasks('w', ARRAY['k_b', 'k_c'], 10);
SELECT vectorbea.complete_task(:a_task, :'a_lease', '{"a": 1}');
SELECT * FROM nodes_of(:'run');
SELECT vectorbea.resume_run(:'run');
SELECT vectorbea.resume_run(:'run') AS resumed_twice;
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['k_b']);
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['k_c']);
SELECT status, paused FROM vectorbea.runs WHERE id = :'run';
SELECT type, data->>'scope' AS scope, data->>'to' AS to_status FROM vectorbea.events
 WHERE run_id = :'run' AND type IN ('RUN_PAUSED', 'RUN_RESUMED') ORDER BY seq;
SELECT * FROM check_run(:'run');
SELECT try(format('SELECT vectorbea.pause_run(%L)', :'run'));

-- A run whose last work ends while it is paused finishes when resumed.
SELECT vectorbea.start_run('two', '{}') AS run2 \gset
CREATE TEMP TABLE held AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['k_a', 'k_b'], 2);
SELECT vectorbea.pause_run(:'run2');
SELECT count(*) FROM held, LATERAL vectorbea.complete_task(held.task_id, held.lease, '{}') c;
SELECT status FROM vectorbea.runs WHERE id = :'run2';
SELECT vectorbea.resume_run(:'run2');
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['k_c']);
SELECT status FROM vectorbea.runs WHERE id = :'run2';
SELECT * FROM check_run(:'run2');
DROP TABLE held;

-- A paused run can be cancelled.
SELECT vectorbea.start_run('two', '{}') AS run3 \gset
SELECT vectorbea.pause_run(:'run3');
SELECT vectorbea.cancel_run(:'run3', 'stop it for good');
SELECT status, paused FROM vectorbea.runs WHERE id = :'run3';
SELECT * FROM check_run(:'run3');

-- pause_workspace pauses its runs, and runs started in it start paused;
-- a run paused by the workspace cannot be resumed alone; resume_workspace
-- resumes the runs it paused, not one paused by itself.
SELECT vectorbea.start_run('two', '{}', NULL, '{"workspace":"acme"}') AS w1 \gset
SELECT vectorbea.start_run('two', '{}', NULL, '{"workspace":"acme"}') AS w2 \gset
SELECT vectorbea.start_run('two', '{}', NULL, '{"workspace":"other"}') AS o1 \gset
SELECT vectorbea.pause_run(:'w2', 'one by one');
SELECT vectorbea.pause_workspace('acme', 'spend spike');
SELECT vectorbea.pause_workspace('acme', 'again') AS paused_again;
SELECT vectorbea.start_run('two', '{}', NULL, '{"workspace":"acme"}') AS w3 \gset
SELECT workspace, status, paused->>'scope' AS scope FROM vectorbea.runs
 WHERE id IN (:'w1', :'w2', :'w3', :'o1') ORDER BY created_at;
SELECT control, target, reason FROM vectorbea.controls WHERE control <> 'run paused' ORDER BY control;
SELECT count(*) AS acme_claimable FROM vectorbea.claim_tasks('w', ARRAY['k_a', 'k_b'], 10) c
  JOIN vectorbea.runs r ON r.id = c.run_id WHERE r.workspace = 'acme';
SELECT try(format('SELECT vectorbea.resume_run(%L)', :'w1'));
SELECT vectorbea.resume_workspace('acme');
SELECT id = :'w2' AS still_paused_is_w2 FROM vectorbea.runs WHERE workspace = 'acme' AND status = 'paused';
SELECT vectorbea.resume_workspace('acme') AS resumed_again;
SELECT count(*) AS inconsistent FROM vectorbea.runs r WHERE EXISTS (SELECT FROM vectorbea.verify_run(r.id));

-- disable_model holds the ready llm nodes of the model (no scheduler here
-- claims them: their available_at is 'infinity'); enable_model releases them.
SELECT vectorbea.define_workflow('ask', '{"nodes":[
	{"id":"q","kind":"llm","llm":{"provider":"openai","model":"gpt-4o-mini","prompt":"Hi"}},
	{"id":"r","kind":"llm","llm":{"provider":"anthropic","model":"claude-3-5-haiku","prompt":"Hi"}}]}');
SELECT vectorbea.start_run('ask', '{}') AS run4 \gset
SELECT vectorbea.disable_model('openai', 'gpt-4o-mini', 'provider incident');
SELECT node, available_at = 'infinity' AS held FROM vectorbea.nodes WHERE run_id = :'run4' ORDER BY node;
SELECT vectorbea.disable_model('anthropic', '*', 'all of it');
SELECT node, available_at = 'infinity' AS held FROM vectorbea.nodes WHERE run_id = :'run4' ORDER BY node;
SELECT control, target, reason FROM vectorbea.controls WHERE control <> 'run paused' ORDER BY control, target;
-- Enabling one model of a disabled provider releases nothing of it.
SELECT vectorbea.enable_model('anthropic', 'claude-3-5-haiku') AS was_disabled;
SELECT vectorbea.enable_model('anthropic');
SELECT vectorbea.enable_model('openai', 'gpt-4o-mini');
SELECT node, available_at = 'infinity' AS held FROM vectorbea.nodes WHERE run_id = :'run4' ORDER BY node;
SELECT count(*) AS controls FROM vectorbea.controls WHERE control LIKE '%disabled';
SELECT * FROM check_run(:'run4');

-- A compensating run is not paused: its undoing runs to its end.
SELECT vectorbea.define_workflow('undo', '{"nodes":[
	{"id":"a","activity":"u_a","compensate":{"activity":"u_undo"}},
	{"id":"b","activity":"u_b","depends_on":["a"],"retry":{"max_attempts":1}}]}');
SELECT vectorbea.start_run('undo', '{}', NULL, '{"workspace":"undo"}') AS run5 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['u_a']);
SELECT vectorbea.fail_task(task_id, lease, '{"message":"no","class":"permanent"}') FROM vectorbea.claim_tasks('w', ARRAY['u_b']);
SELECT try(format('SELECT vectorbea.pause_run(%L)', :'run5'));
SELECT vectorbea.pause_workspace('undo') AS paused_runs;
SELECT status FROM vectorbea.runs WHERE id = :'run5';
SELECT vectorbea.resume_workspace('undo');
SELECT * FROM check_run(:'run5');
-- A paused run that fails, or is cancelled with compensate => true,
-- compensates: its undoing is not held, and runs.paused keeps the pause's
-- record until the run ends.
SELECT vectorbea.start_run('undo', '{}') AS run6 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['u_a']);
SELECT task_id AS b_task, lease AS b_lease FROM vectorbea.claim_tasks('w', ARRAY['u_b']) \gset
SELECT vectorbea.pause_run(:'run6', 'looping');
SELECT vectorbea.fail_task(:b_task, :'b_lease', '{"message":"no","class":"permanent"}');
SELECT status, paused->>'reason' AS paused_for FROM vectorbea.runs WHERE id = :'run6';
-- (run5's compensation, left ready above, ends here too)
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS undone
  FROM vectorbea.claim_tasks('w', ARRAY['u_undo'], 10);
SELECT status, paused FROM vectorbea.runs WHERE id = :'run6';
SELECT * FROM check_run(:'run6');
SELECT vectorbea.start_run('undo', '{}') AS run7 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['u_a']);
SELECT vectorbea.pause_run(:'run7', 'stop');
SELECT vectorbea.cancel_run(:'run7', 'give up', compensate => true);
SELECT status, paused->>'reason' AS paused_for FROM vectorbea.runs WHERE id = :'run7';
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['u_undo']);
SELECT status, paused FROM vectorbea.runs WHERE id = :'run7';
SELECT * FROM check_run(:'run7');

-- A claim of several activities: a paused run's ready tasks, ahead in the
-- queue, do not take the places of the other activities' tasks.
SELECT vectorbea.define_workflow('pq_a', '{"nodes":[{"id":"x1","activity":"pq_x"},{"id":"x2","activity":"pq_x"}]}');
SELECT vectorbea.define_workflow('pq_b', '{"nodes":[{"id":"y","activity":"pq_y"}]}');
SELECT vectorbea.start_run('pq_a') AS pq_held \gset
SELECT vectorbea.start_run('pq_b') AS pq_other \gset
SELECT vectorbea.pause_run(:'pq_held', 'held');
SELECT node FROM vectorbea.claim_tasks('w', ARRAY['pq_x', 'pq_y'], 1);
SELECT vectorbea.resume_run(:'pq_held');
SELECT count(*) AS claimed_after_resume FROM vectorbea.claim_tasks('w', ARRAY['pq_x', 'pq_y'], 10);

-- A limit set earlier in a transaction holds for that transaction's claims.
SELECT vectorbea.define_workflow('pl', '{"nodes":[{"id":"a","activity":"pl_x"},{"id":"b","activity":"pl_x"},{"id":"c","activity":"pl_x"}]}');
SELECT vectorbea.start_run('pl') IS NOT NULL AS started;
BEGIN;
SELECT vectorbea.set_concurrency_limit('pl_x', 1) AS replaced;
SELECT count(*) AS claimed_under_new_limit FROM vectorbea.claim_tasks('w', ARRAY['pl_x'], 5);
ROLLBACK;

-- Concurrency limits: bad input, then a limit in one workspace and one
-- over all (the race of claimers is the isolation spec concurrency_limit).
SELECT vectorbea.set_concurrency_limit(NULL, 1); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_concurrency_limit('k_a', 1, NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_concurrency_limit('no spaces', 1); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_concurrency_limit('vectorbea:other', 1); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_concurrency_limit('k_a', 0); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_concurrency_limit('k_a', 1, 'bad name'); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS limits FROM vectorbea.concurrency_limits;
SELECT count(vectorbea.start_run('two', '{}', NULL, jsonb_build_object('workspace', w)))
  FROM unnest(ARRAY['lim1', 'lim2']) w, generate_series(1, 3);
-- One k_a of workspace "other" is still running (claimed above): 2 places
-- are free overall, one of them in lim1.
SELECT vectorbea.set_concurrency_limit('k_a', 1, 'lim1');
SELECT vectorbea.set_concurrency_limit('k_a', 3);
SELECT r.workspace, count(*) FROM vectorbea.claim_tasks('w', ARRAY['k_a'], 10) c
  JOIN vectorbea.runs r ON r.id = c.run_id GROUP BY r.workspace ORDER BY r.workspace;
SELECT count(*) AS more FROM vectorbea.claim_tasks('w', ARRAY['k_a'], 10);
SELECT vectorbea.set_concurrency_limit('k_a', NULL) AS removed, vectorbea.set_concurrency_limit('k_a', NULL, 'lim1') AS removed_too;
SELECT r.workspace, count(*) FROM vectorbea.claim_tasks('w', ARRAY['k_a'], 10) c
  JOIN vectorbea.runs r ON r.id = c.run_id GROUP BY r.workspace ORDER BY r.workspace;

-- Budgets: bad input is refused and changes nothing; a budget and the
-- spend view (llm calls against budgets are tested in TAP 024).
SELECT vectorbea.set_budget(NULL, 1); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_budget('no spaces', 1); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_budget('acme', -1); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_budget('acme', 1e12); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_budget('acme', 1, 'week'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_budget('acme', 1, 'month', -5); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_budget('acme', 1, 'month', NULL, 'shrug'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_run_budget(NULL, 1); \echo SQLSTATE :SQLSTATE
SELECT try($$SELECT vectorbea.set_run_budget(gen_random_uuid(), 1)$$);
SELECT try(format('SELECT vectorbea.set_run_budget(%L, -1)', :'run'));
SELECT try(format('SELECT vectorbea.set_run_budget(%L, 1)', :'run'));
SELECT vectorbea.start_run('two', '{}', NULL, '{"on_budget":"maybe"}'); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS budgets FROM vectorbea.budgets;
SELECT vectorbea.set_budget('acme', 2.5, 'day', NULL, 'pause') AS resumed;
SELECT workspace, usd, tokens, period, on_exceed FROM vectorbea.budgets;
SELECT vectorbea.set_budget('acme', NULL, 'day') AS resumed;
SELECT count(*) AS budgets FROM vectorbea.budgets;
-- DESIGN.md's form: the period as an interval of one month (or day),
-- untyped or typed interval (which found no function), whatever the
-- session's IntervalStyle.
SELECT vectorbea.set_budget('acme', 25.00, '1 month') AS resumed;
SELECT period FROM vectorbea.budgets WHERE workspace = 'acme';
SELECT vectorbea.set_budget('acme', 25.00, '2 months'); \echo SQLSTATE :SQLSTATE
SET IntervalStyle = iso_8601;
SELECT vectorbea.set_budget('acme', 20.00, interval '1 day') AS resumed;
SELECT period, usd FROM vectorbea.budgets WHERE workspace = 'acme';
SELECT vectorbea.set_budget('acme', 25.00, interval '1 month', NULL, 'fail') AS resumed;
SELECT period, usd FROM vectorbea.budgets WHERE workspace = 'acme';
SELECT vectorbea.set_budget('acme', 25.00, interval '30 days'); \echo SQLSTATE :SQLSTATE
RESET IntervalStyle;
SELECT vectorbea.set_budget('acme', 10, 'total', 100000);
SELECT workspace, period, booked_usd, reserved_usd, budget_usd, budget_tokens
  FROM vectorbea.spend WHERE scope = 'workspace' ORDER BY workspace;

-- A run's whole spend counts in the budget period it started in, and it
-- is checked against that period: a run started before midnight (UTC)
-- that spends after it crosses its own day's budget, not a fresh one,
-- while a run started after midnight has the new day's.
SELECT (extract(epoch FROM date_trunc('day', now() AT TIME ZONE 'UTC') + interval '2 days'
		- (now() AT TIME ZONE 'UTC'))::bigint - 60) || 's' AS to_late_evening, (extract(epoch FROM date_trunc('day', now() AT TIME ZONE 'UTC') + interval '2 days'
		- (now() AT TIME ZONE 'UTC'))::bigint + 60) || 's' AS after_midnight \gset
SELECT vectorbea.set_budget('ovn', 10, 'day', NULL, 'fail') AS resumed;
SELECT vectorbea.define_workflow('ovn_flow', '{"nodes":[
	{"id":"a","activity":"ovn_a"},{"id":"b","activity":"ovn_b","depends_on":["a"]},
	{"id":"c","activity":"ovn_c","depends_on":["b"]}]}') IS NOT NULL AS defined;
SET vectorbea.test_clock_offset = :'to_late_evening';
SELECT (vectorbea.clock() AT TIME ZONE 'UTC')::time > '23:55' AS just_before_midnight;
SELECT vectorbea.start_run('ovn_flow', '{}', NULL, '{"workspace": "ovn"}') AS ovn_late \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 6}')
  FROM vectorbea.claim_tasks('w', ARRAY['ovn_a']);
SET vectorbea.test_clock_offset = :'after_midnight';
SELECT (vectorbea.clock() AT TIME ZONE 'UTC')::time < '00:05' AS just_after_midnight;
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 6}')
  FROM vectorbea.claim_tasks('w', ARRAY['ovn_b']);
SELECT status, usage_usd FROM vectorbea.runs WHERE id = :'ovn_late';
SELECT data->>'scope' AS scope, data->>'period' AS period, data->>'spent_usd' AS spent_usd
  FROM vectorbea.events WHERE run_id = :'ovn_late' AND type = 'BUDGET_EXCEEDED';
SELECT vectorbea.start_run('ovn_flow', '{}', NULL, '{"workspace": "ovn"}') AS ovn_new \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 6}')
  FROM vectorbea.claim_tasks('w', ARRAY['ovn_a']);
SELECT status, usage_usd FROM vectorbea.runs WHERE id = :'ovn_new';
SELECT booked_usd FROM vectorbea.spend WHERE scope = 'workspace' AND workspace = 'ovn';
RESET vectorbea.test_clock_offset;
SELECT vectorbea.cancel_run(:'ovn_new', 'done');
SELECT vectorbea.set_budget('ovn', NULL, 'day') AS resumed;
SELECT * FROM check_run(:'ovn_late');

-- on_budget "pause" stops a run of worker tasks too: the usage that
-- crosses the budget stands, and the run is paused before its next task
-- (it waited for an llm call's check, which such a run never makes).  A
-- larger budget resumes it; a crossing by the run's last task ends it.
SELECT vectorbea.define_workflow('paid', '{"nodes":[
	{"id":"a","activity":"paid_a"},{"id":"b","activity":"paid_b","depends_on":["a"]}]}');
SELECT vectorbea.start_run('paid', '{}', NULL, '{"budget_usd": 1, "on_budget": "pause"}') AS paid \gset
SELECT task_id AS p_task, lease AS p_lease FROM vectorbea.claim_tasks('w', ARRAY['paid_a']) \gset
SELECT vectorbea.complete_task(:p_task, :'p_lease', '{}', usage => '{"usd": 5}');
SELECT status, usage_usd, paused->>'scope' AS scope FROM vectorbea.runs WHERE id = :'paid';
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w', ARRAY['paid_b']);
SELECT control, reason, set_by FROM vectorbea.controls WHERE target LIKE :'paid' || '%';
SELECT vectorbea.set_run_budget(:'paid', 10) AS resumed;
SELECT task_id AS p_task, lease AS p_lease FROM vectorbea.claim_tasks('w', ARRAY['paid_b']) \gset
SELECT vectorbea.complete_task(:p_task, :'p_lease', '{}', usage => '{"usd": 100}');
SELECT status, usage_usd, paused FROM vectorbea.runs WHERE id = :'paid';
SELECT string_agg(type || coalesce(' ' || node, ''), ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id = :'paid';
SELECT count(*) AS differences FROM vectorbea.verify_run(:'paid');
-- A run paused by its budget whose workspace is paused meanwhile keeps its
-- pause; a larger budget then hands it to the workspace's pause (it ran
-- again before), and resume_workspace lets it go on.
SELECT vectorbea.start_run('paid', '{}', NULL, '{"budget_usd": 1, "on_budget": "pause", "workspace": "wsb"}') AS paid2 \gset
SELECT task_id AS p_task, lease AS p_lease FROM vectorbea.claim_tasks('w', ARRAY['paid_a']) \gset
SELECT vectorbea.complete_task(:p_task, :'p_lease', '{}', usage => '{"usd": 5}');
SELECT vectorbea.pause_workspace('wsb', 'quarter end') AS paused;
SELECT vectorbea.set_run_budget(:'paid2', 10) AS resumed;
SELECT status, paused->>'scope' AS scope, paused->>'reason' AS reason FROM vectorbea.runs WHERE id = :'paid2';
SELECT vectorbea.resume_workspace('wsb') AS resumed;
SELECT status FROM vectorbea.runs WHERE id = :'paid2';
SELECT string_agg(type, ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id = :'paid2' AND type LIKE 'RUN_%';
SELECT count(*) AS differences FROM vectorbea.verify_run(:'paid2');
SELECT vectorbea.cancel_run(:'paid2', 'done');
-- A budget lowered below what a run has spent is crossed at once: under
-- "fail" the run fails, without waiting for a usage report that may never
-- come (or that reports nothing and takes the blame); under "pause" it
-- pauses, and a budget still below the spend leaves it paused.
SELECT vectorbea.start_run('paid', '{}', NULL, '{"budget_usd": 10}') AS low1 \gset
SELECT task_id AS p_task, lease AS p_lease FROM vectorbea.claim_tasks('w', ARRAY['paid_a']) \gset
SELECT vectorbea.complete_task(:p_task, :'p_lease', '{}', usage => '{"usd": 5}');
SELECT vectorbea.set_run_budget(:'low1', 3) AS resumed;
SELECT status, error FROM vectorbea.runs WHERE id = :'low1';
SELECT string_agg(type, ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id = :'low1' AND type NOT LIKE 'STEP_%';
SELECT vectorbea.start_run('paid', '{}', NULL, '{"budget_usd": 10, "on_budget": "pause"}') AS low2 \gset
SELECT task_id AS p_task, lease AS p_lease FROM vectorbea.claim_tasks('w', ARRAY['paid_a']) \gset
SELECT vectorbea.complete_task(:p_task, :'p_lease', '{}', usage => '{"usd": 5}');
SELECT vectorbea.set_run_budget(:'low2', 3) AS resumed;
SELECT status, paused->>'scope' AS scope FROM vectorbea.runs WHERE id = :'low2';
SELECT vectorbea.set_run_budget(:'low2', 4) AS resumed;
SELECT status, paused->>'scope' AS scope FROM vectorbea.runs WHERE id = :'low2';
SELECT vectorbea.set_run_budget(:'low2', 6) AS resumed;
SELECT status FROM vectorbea.runs WHERE id = :'low2';
-- A person who pauses a run its budget paused takes the pause over: a
-- larger budget no longer ends it, only resume_run does.
SELECT vectorbea.set_run_budget(:'low2', 3) AS resumed;
SELECT vectorbea.pause_run(:'low2', 'looping agent') AS paused;
SELECT status, paused->>'scope' AS scope, paused->>'reason' AS reason, paused->>'resume_to' AS resume_to
  FROM vectorbea.runs WHERE id = :'low2';
SELECT vectorbea.pause_run(:'low2', 'again') AS paused;
SELECT vectorbea.set_run_budget(:'low2', 100) AS resumed;
SELECT status, paused->>'scope' AS scope FROM vectorbea.runs WHERE id = :'low2';
SELECT vectorbea.resume_run(:'low2') AS resumed;
SELECT status FROM vectorbea.runs WHERE id = :'low2';
SELECT string_agg(type, ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id = :'low2' AND type NOT LIKE 'STEP_%';
SELECT vectorbea.cancel_run(:'low2', 'done');

-- A failed attempt's spend counts too: fail_task's error may carry the
-- usage, booked like a completion's and recorded in STEP_FAILED.  Bad
-- usage is refused and changes nothing.  Under "fail", a failure whose
-- usage crosses the budget fails the run (fail_task says failed, the
-- retry will not come); under "pause" the run is paused.
SELECT vectorbea.define_workflow('tries', '{"nodes":[{"id":"t","activity":"tries_t","retry":{"max_attempts":5,"initial":"0s"}}]}');
SELECT vectorbea.start_run('tries', '{}', NULL, '{"budget_tokens": 1000}') AS tries \gset
SELECT task_id AS f_task, lease AS f_lease FROM vectorbea.claim_tasks('w', ARRAY['tries_t']) \gset
SELECT vectorbea.fail_task(:f_task, :'f_lease', '{"message": "x", "usage": "lots"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(:f_task, :'f_lease', '{"message": "x", "usage": {"tokens": -1}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.fail_task(:f_task, :'f_lease', '{"message": "x", "usage": {"eur": 1}}'); \echo SQLSTATE :SQLSTATE
SELECT status, attempt FROM vectorbea.nodes WHERE run_id = :'tries';
SELECT vectorbea.fail_task(:f_task, :'f_lease', '{"message": "schema mismatch", "class": "invalid_output", "usage": {"tokens": 600, "usd": 0.01}}');
SELECT usage_tokens, usage_usd FROM vectorbea.runs WHERE id = :'tries';
SELECT data->'usage' AS step_failed_usage FROM vectorbea.events WHERE run_id = :'tries' AND type = 'STEP_FAILED';
SELECT task_id AS f_task, lease AS f_lease FROM vectorbea.claim_tasks('w', ARRAY['tries_t']) \gset
SELECT vectorbea.fail_task(:f_task, :'f_lease', '{"message": "again", "usage": {"tokens": 600}}') AS second_failure;
SELECT r.status, r.error->>'reason' AS reason, r.usage_tokens, n.status AS node
  FROM vectorbea.runs r JOIN vectorbea.nodes n ON n.run_id = r.id WHERE r.id = :'tries';
SELECT string_agg(type, ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id = :'tries';
SELECT count(*) AS differences FROM vectorbea.verify_run(:'tries');
SELECT vectorbea.replay(:'tries')->'usage' AS replayed_usage;
-- A final failure whose usage crosses the budget: the run has failed
-- already, and BUDGET_EXCEEDED puts the overrun on record after it.
SELECT vectorbea.start_run('tries', '{}', NULL, '{"budget_tokens": 1000}') AS tries3 \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent", "usage": {"tokens": 5000}}') AS final_failure
  FROM vectorbea.claim_tasks('w', ARRAY['tries_t']);
SELECT status, usage_tokens FROM vectorbea.runs WHERE id = :'tries3';
SELECT string_agg(type, ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id = :'tries3';
SELECT count(*) AS differences FROM vectorbea.verify_run(:'tries3');
-- A final failure that escalates to a person, whose usage crosses the
-- budget: the run fails, its gate is closed with it, and fail_task says
-- failed, not escalated.
SELECT vectorbea.define_workflow('asks', '{"nodes":[{"id":"t","activity":"asks_t","retry":{"max_attempts":1},"on_exhausted":"escalate"}]}');
SELECT vectorbea.start_run('asks', '{}', NULL, '{"budget_tokens": 1000}') AS asks \gset
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent", "usage": {"tokens": 5000}}') AS escalated_failure
  FROM vectorbea.claim_tasks('w', ARRAY['asks_t']);
SELECT r.status, g.kind, g.status AS gate
  FROM vectorbea.runs r JOIN vectorbea.approvals g ON g.run_id = r.id WHERE r.id = :'asks';
SELECT count(*) AS differences FROM vectorbea.verify_run(:'asks');
-- The same when the run has work to undo: it compensates (still active),
-- the escalating node is closed, and fail_task says failed.
SELECT vectorbea.define_workflow('asks_undo', '{"nodes":[
  {"id":"pay","activity":"asks_pay","compensate":{"activity":"asks_refund"}},
  {"id":"t","activity":"asks_t","depends_on":["pay"],"retry":{"max_attempts":1},"on_exhausted":"escalate"}]}');
SELECT vectorbea.start_run('asks_undo', '{}', NULL, '{"budget_tokens": 1000}') AS asks_undo \gset
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS paid FROM vectorbea.claim_tasks('w', ARRAY['asks_pay']);
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent", "usage": {"tokens": 5000}}') AS escalated_failure
  FROM vectorbea.claim_tasks('w', ARRAY['asks_t']);
SELECT r.status AS run, n.status AS node, g.status AS gate
  FROM vectorbea.runs r JOIN vectorbea.nodes n ON n.run_id = r.id AND n.node = 't'
  JOIN vectorbea.approvals g ON g.run_id = r.id WHERE r.id = :'asks_undo';
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS refunded FROM vectorbea.claim_tasks('w', ARRAY['asks_refund']);
SELECT status FROM vectorbea.runs WHERE id = :'asks_undo';
SELECT count(*) AS differences FROM vectorbea.verify_run(:'asks_undo');
SELECT vectorbea.start_run('tries', '{}', NULL, '{"budget_tokens": 1000, "on_budget": "pause"}') AS tries2 \gset
SELECT task_id AS f_task, lease AS f_lease FROM vectorbea.claim_tasks('w', ARRAY['tries_t']) \gset
SELECT vectorbea.fail_task(:f_task, :'f_lease', '{"message": "costly", "usage": {"tokens": 1500}}') AS paused_failure;
SELECT status, paused->>'scope' AS scope, usage_tokens FROM vectorbea.runs WHERE id = :'tries2';
SELECT count(*) AS differences FROM vectorbea.verify_run(:'tries2');
SELECT vectorbea.cancel_run(:'tries2', 'done');

-- A task's estimate is held against the budgets while it runs (from its
-- claim to its end), as an llm call's worst case is.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"e","estimate":5}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"e","estimate":{}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"e","estimate":{"usd":-1}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"e","estimate":{"tokens":1.5}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"e","estimate":{"eur":1}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","kind":"llm","llm":{"provider":"openai","model":"m","prompt":"p"},"estimate":{"usd":1}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","kind":"sleep","sleep":{"for":"1h"},"estimate":{"usd":1}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","kind":"approval","approval":{"gate":"g"},"estimate":{"usd":1}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"t","activity":"e","estimate":{"usd":2000000}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('costly', '{"nodes":[{"id":"t","activity":"e_costly","estimate":{"usd":0.25,"tokens":5000}}]}');
SELECT vectorbea.start_run('costly', '{}', NULL, '{"workspace":"acme"}') AS costly \gset
SELECT reserved_usd, reserved_tokens FROM vectorbea.spend WHERE scope = 'workspace' AND workspace = 'acme';
SELECT task_id AS e_task, lease AS e_lease FROM vectorbea.claim_tasks('w', ARRAY['e_costly']) \gset
SELECT reserved_usd, reserved_tokens FROM vectorbea.spend WHERE scope = 'workspace' AND workspace = 'acme';
SELECT reserved_usd FROM vectorbea.spend WHERE scope = 'run' AND run = :'costly';
SELECT vectorbea.complete_task(:e_task, :'e_lease', '{}', usage => '{"usd": 0.2, "tokens": 4100}');
-- A repeat with the same usage (in any spelling) is a no-op; another usage
-- is refused (it would be dropped unseen by the budget); a repeat without
-- usage is not compared.
SELECT vectorbea.complete_task(:e_task, :'e_lease', '{}', usage => '{"tokens": 4100, "usd": 0.20}') AS same_usage;
SELECT vectorbea.complete_task(:e_task, :'e_lease', '{}', usage => '{"usd": 20, "tokens": 4100}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:e_task, :'e_lease', '{}') AS without_usage;
-- An empty usage is no amounts, not "not compared": it differs from 4100 tokens.
SELECT vectorbea.complete_task(:e_task, :'e_lease', '{}', usage => '{}'); \echo SQLSTATE :SQLSTATE
SELECT usage_usd, usage_tokens FROM vectorbea.runs WHERE id = :'costly';
SELECT booked_usd, reserved_usd FROM vectorbea.spend WHERE scope = 'workspace' AND workspace = 'acme';

-- Usage that workers report counts against the workspace's budget too: a
-- report that takes the workspace over it stops the reporting run by the
-- budget's on_exceed (scope "workspace", whatever the run's on_budget),
-- and so does every later report of the workspace's runs until the budget
-- is raised.  A report under the budget changes nothing.
SELECT vectorbea.set_budget('wsbud', 1, 'total', 1000);
SELECT vectorbea.start_run('paid', '{}', NULL, '{"workspace": "wsbud"}') AS wb1 \gset
SELECT vectorbea.start_run('paid', '{}', NULL, '{"workspace": "wsbud"}') AS wb2 \gset
SELECT task_id AS p_task, lease AS p_lease, run_id AS wb_first FROM vectorbea.claim_tasks('w', ARRAY['paid_a']) \gset
SELECT vectorbea.complete_task(:p_task, :'p_lease', '{}', usage => '{"usd": 0.6}');
SELECT status FROM vectorbea.runs WHERE id = :'wb_first';
SELECT task_id AS p_task, lease AS p_lease, run_id AS wb_second FROM vectorbea.claim_tasks('w', ARRAY['paid_a']) \gset
SELECT vectorbea.complete_task(:p_task, :'p_lease', '{}', usage => '{"usd": 0.6}');
SELECT id = :'wb_first' AS first, status, error->>'reason' AS reason, usage_usd
  FROM vectorbea.runs WHERE id IN (:'wb1', :'wb2') ORDER BY 1 DESC;
SELECT node, data FROM vectorbea.events WHERE run_id = :'wb_second' AND type = 'BUDGET_EXCEEDED';
SELECT substr(t, 14) AS timeline FROM vectorbea.timeline(:'wb_second') t WHERE t LIKE '%BUDGET_EXCEEDED%';
-- The first run's next report finds the workspace spent: tokens this time.
SELECT task_id AS p_task, lease AS p_lease FROM vectorbea.claim_tasks('w', ARRAY['paid_b']) \gset
SELECT vectorbea.complete_task(:p_task, :'p_lease', '{}', usage => '{"tokens": 10}');
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'wb_first';
-- A report of nothing adds nothing: it does not take the blame for what
-- the others spent; the next report that spends does.
SELECT vectorbea.start_run('paid', '{}', NULL, '{"workspace": "wsbud"}') AS wbz \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 0, "tokens": 0}')
  FROM vectorbea.claim_tasks('w', ARRAY['paid_a']);
SELECT status FROM vectorbea.runs WHERE id = :'wbz';
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 0.01}')
  FROM vectorbea.claim_tasks('w', ARRAY['paid_b']);
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'wbz';
-- Under "pause" the run pauses with scope "budget", and raising the
-- workspace's budget resumes it.
SELECT vectorbea.set_budget('wsbud', 1, 'total', NULL, 'pause') AS resumed;
SELECT vectorbea.start_run('paid', '{}', NULL, '{"workspace": "wsbud", "on_budget": "fail"}') AS wb3 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 0.01}')
  FROM vectorbea.claim_tasks('w', ARRAY['paid_a']);
SELECT status, paused->>'scope' AS scope FROM vectorbea.runs WHERE id = :'wb3';
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w', ARRAY['paid_b']);
-- A budget still below the spend resumes nothing.
SELECT vectorbea.set_budget('wsbud', 1.1, 'total', NULL, 'pause') AS resumed;
SELECT status FROM vectorbea.runs WHERE id = :'wb3';
SELECT vectorbea.set_budget('wsbud', 5, 'total', NULL, 'pause') AS resumed;
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 0.01}')
  FROM vectorbea.claim_tasks('w', ARRAY['paid_b']);
SELECT status FROM vectorbea.runs WHERE id = :'wb3';
SELECT string_agg(type, ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id = :'wb3' AND type NOT LIKE 'STEP_%';
SELECT r.id = :'wb1' AS wb1, v.* FROM vectorbea.runs r, vectorbea.verify_run(r.id) v
 WHERE r.id IN (:'wb1', :'wb2', :'wb3');
SELECT workspace, booked_usd, budget_usd FROM vectorbea.spend WHERE scope = 'workspace' AND workspace = 'wsbud';

-- A run its own budget paused stays paused when its workspace's budget
-- changes, or goes: its own budget still holds it.  Raised, it resumes.
SELECT vectorbea.start_run('paid', '{}', NULL, '{"workspace": "wsown", "budget_usd": 1, "on_budget": "pause"}') AS own \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 2}')
  FROM vectorbea.claim_tasks('w', ARRAY['paid_a']);
SELECT status, paused->>'scope' AS scope FROM vectorbea.runs WHERE id = :'own';
SELECT vectorbea.set_budget('wsown', 100, 'total') AS resumed;
SELECT vectorbea.set_budget('wsown', NULL, 'total') AS resumed;
SELECT status FROM vectorbea.runs WHERE id = :'own';
SELECT vectorbea.set_run_budget(:'own', 3) AS resumed;
SELECT status FROM vectorbea.runs WHERE id = :'own';
SELECT vectorbea.cancel_run(:'own', 'done');
-- A budget set below the spend of a run someone paused is crossed too:
-- under "fail" the run fails; under "pause" it keeps the person's pause,
-- with the crossing on record.
SELECT vectorbea.start_run('paid', '{}', NULL, '{"workspace": "wsown"}') AS held1 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 2}')
  FROM vectorbea.claim_tasks('w', ARRAY['paid_a']);
SELECT vectorbea.pause_run(:'held1', 'a look first') AS paused;
SELECT vectorbea.set_run_budget(:'held1', 1) AS resumed;
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'held1';
SELECT vectorbea.start_run('paid', '{}', NULL, '{"workspace": "wsown", "on_budget": "pause"}') AS held2 \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 2}')
  FROM vectorbea.claim_tasks('w', ARRAY['paid_a']);
SELECT vectorbea.pause_run(:'held2', 'a look first') AS paused;
SELECT vectorbea.set_run_budget(:'held2', 1) AS resumed;
SELECT status, paused->>'scope' AS scope, paused->>'reason' AS reason FROM vectorbea.runs WHERE id = :'held2';
SELECT string_agg(type, ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id IN (:'held1', :'held2') AND type NOT LIKE 'STEP_%'
 GROUP BY run_id ORDER BY run_id = :'held1' DESC;
SELECT vectorbea.cancel_run(:'held2', 'done');

-- Rate limits: bad input is refused and changes nothing (the pacing of
-- calls is tested in TAP 025).
SELECT vectorbea.set_rate_limit(NULL, 'openai', 60); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_rate_limit('acme', 'openai', 60, NULL, NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_rate_limit('no spaces', 'openai', 60); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_rate_limit('acme', 'openia', 60); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_rate_limit('acme', 'openai', 0); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_rate_limit('acme', 'openai', 60, -1); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_rate_limit('acme', 'openai', 60, 1000, ''); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS rate_limits FROM vectorbea.rate_limits;
SELECT vectorbea.set_rate_limit('acme', 'openai', 60, 90000) AS existed;
SELECT vectorbea.set_rate_limit('acme', 'anthropic', NULL, 40000, 'claude-3-5-haiku') AS existed;
SELECT workspace, provider, model, requests_per_minute, tokens_per_minute FROM vectorbea.rate_limits ORDER BY provider;
SELECT vectorbea.set_rate_limit('acme', 'openai', NULL) AS existed;
SELECT count(*) AS rate_limits FROM vectorbea.rate_limits;

DROP FUNCTION try(text);

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
