-- The living graph: a run that starts as `scout` alone grows, at run time,
-- into council -> implement -> (reviewer, sec-review) -> arbiter -> pr.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SELECT vectorbea.define_workflow('pr_review', '{"nodes":[{"id":"scout","activity":"scout"}]}');
SELECT vectorbea.start_run('pr_review', '{"repo": "acme/api", "issue": 1234}') AS run \gset
SELECT * FROM nodes_of(:'run');

SELECT task_id, lease FROM vectorbea.claim_tasks('w1', ARRAY['scout']) \gset
SELECT vectorbea.complete_task(:task_id, :'lease', '{"files": ["api/auth.py"]}', spawn => '[
	{"id": "council", "activity": "council", "depends_on": ["scout"]},
	{"id": "implement", "activity": "implement", "depends_on": ["council"],
	 "retry": {"max_attempts": 5}},
	{"id": "reviewer", "activity": "review", "depends_on": ["implement"], "input": {"focus": "design"}},
	{"id": "sec-review", "activity": "review", "depends_on": ["implement"], "input": {"focus": "security"}},
	{"id": "arbiter", "activity": "arbiter", "depends_on": ["reviewer", "sec-review"]},
	{"id": "pr", "activity": "pr", "depends_on": ["arbiter"]}]');
-- council depends only on the finished scout: it is ready at once.
SELECT * FROM nodes_of(:'run');
SELECT n.node, n.max_attempts FROM vectorbea.nodes n WHERE run_id = :'run' AND node = 'implement';
SELECT seq, type, node, jsonb_array_length(data->'nodes') AS spawned
  FROM vectorbea.events WHERE run_id = :'run' AND type = 'NODES_SPAWNED';

-- Walk the graph, checking what is claimable at each step.
CREATE TEMP TABLE walk (step int, node text);
DO $$
DECLARE
	t record;
	step int := 0;
	activities text[] := ARRAY['council', 'implement', 'review', 'arbiter', 'pr'];
BEGIN
	LOOP
		step := step + 1;
		-- Claim everything ready now, then complete it.
		FOR t IN SELECT * FROM vectorbea.claim_tasks('walker', activities, 10) LOOP
			INSERT INTO walk VALUES (step, t.node);
			PERFORM vectorbea.complete_task(t.task_id, t.lease,
					jsonb_build_object('done', t.node, 'upstream', t.upstream));
		END LOOP;
		EXIT WHEN NOT FOUND OR step > 10;
	END LOOP;
END $$;
SELECT step, string_agg(node, ', ' ORDER BY node) AS claimed_together
  FROM walk GROUP BY step ORDER BY step;
SELECT output->'upstream' AS arbiter_saw FROM vectorbea.nodes WHERE run_id = :'run' AND node = 'arbiter';
SELECT * FROM nodes_of(:'run');
SELECT status FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM timeline_text(:'run');
SELECT * FROM check_run(:'run');

-- The graph can keep growing from a spawned node, and a spawned node may
-- depend on an existing node that has not finished yet.  Spawned nodes
-- take the run's priority.
SELECT vectorbea.define_workflow('grow', '{"nodes":[
	{"id":"root","activity":"plan"},
	{"id":"slow","activity":"slow"}],
	"defaults": {"retry": {"max_attempts": 7}}}');
SELECT vectorbea.start_run('grow', '{}', NULL, '{"priority": 3}') AS grow \gset
SELECT task_id AS root_id, lease AS root_lease FROM vectorbea.claim_tasks('w', ARRAY['plan']) \gset
SELECT vectorbea.complete_task(:root_id, :'root_lease', '{}', '[
	{"id": "child", "activity": "work", "depends_on": ["root", "slow"]},
	{"id": "sibling", "activity": "work"}]');
-- child waits for slow; spawned nodes take the workflow's defaults.
SELECT node, status, deps_remaining, max_attempts, priority, spawned_by FROM vectorbea.nodes
 WHERE run_id = :'grow' ORDER BY id;
-- Each node lists the nodes that depend on it, those of the definition and
-- those spawned alike: slow, still open, now lists child, and completing
-- it releases child through that list.
SELECT node, dependents FROM vectorbea.nodes WHERE run_id = :'grow' ORDER BY id;
SELECT task_id AS sib_id, lease AS sib_lease FROM vectorbea.claim_tasks('w', ARRAY['work']) \gset
SELECT vectorbea.complete_task(:sib_id, :'sib_lease', '{}', '[{"id": "grandchild", "activity": "work", "depends_on": ["sibling", "child"]}]');
SELECT node, status, deps_remaining, spawned_by, dependents FROM vectorbea.nodes WHERE run_id = :'grow' ORDER BY id;
-- A repeated completion adds nothing: with the same spawn list (or none)
-- it is a no-op; with another, whose nodes would be dropped unseen, it is
-- refused.
SELECT vectorbea.complete_task(:sib_id, :'sib_lease', '{}', '[{"id": "grandchild", "activity": "work", "depends_on": ["sibling", "child"]}]');
SELECT vectorbea.complete_task(:sib_id, :'sib_lease', '{}');
SELECT vectorbea.complete_task(:sib_id, :'sib_lease', '{}', '[{"id": "grandchild", "activity": "work", "depends_on": ["sibling"]}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:sib_id, :'sib_lease', '{}', '[{"id": "cousin", "activity": "work"}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:sib_id, :'sib_lease', '{}', '[]'); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS spawn_events FROM vectorbea.events WHERE run_id = :'grow' AND type = 'NODES_SPAWNED' AND node = 'sibling';
SELECT count(*) AS nodes FROM vectorbea.nodes WHERE run_id = :'grow';

-- Spawn lists are validated as strictly as definitions; a refused spawn
-- refuses the whole completion, and nothing changes.
SELECT task_id AS slow_id, lease AS slow_lease FROM vectorbea.claim_tasks('w', ARRAY['slow']) \gset
SELECT last_seq AS seq_before FROM vectorbea.runs WHERE id = :'grow' \gset
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '{"id": "x"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "root", "activity": "again"}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "n", "activity": "a"}, {"id": "n", "activity": "b"}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "n", "activity": "a", "depends_on": ["ghost"]}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "p", "activity": "a", "depends_on": ["q"]}, {"id": "q", "activity": "a", "depends_on": ["p"]}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "n", "activity": "a", "depends_on": ["n"]}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "n", "kind": "llm", "llm": {"provider": "openai", "model": "m", "prompt": "{{upstream.slow.output.x}}"}}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "n", "activity": "a", "retry": {"initial": "later"}}]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "n", "activity": "a", "priority": 3}]'); \echo SQLSTATE :SQLSTATE
SET vectorbea.max_nodes_per_run = 6;
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[{"id": "n1", "activity": "a"}, {"id": "n2", "activity": "a"}]'); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_nodes_per_run;
SET vectorbea.max_payload_size = '1kB';
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}',
	jsonb_build_array(jsonb_build_object('id', 'big', 'activity', 'a', 'input', jsonb_build_object('x', repeat('y', 2000))))); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_payload_size;
SELECT (SELECT last_seq FROM vectorbea.runs WHERE id = :'grow') = :seq_before AS history_unchanged;
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'grow' AND node = 'slow';

-- An empty spawn list adds nothing; completing slow releases child.
SELECT vectorbea.complete_task(:slow_id, :'slow_lease', '{}', '[]');
SELECT node, status, deps_remaining FROM vectorbea.nodes WHERE run_id = :'grow' ORDER BY id;
DO $$
DECLARE t record;
BEGIN
	FOR i IN 1..5 LOOP
		FOR t IN SELECT * FROM vectorbea.claim_tasks('w', ARRAY['work'], 10) LOOP
			PERFORM vectorbea.complete_task(t.task_id, t.lease, '{}');
		END LOOP;
	END LOOP;
END $$;
SELECT status FROM vectorbea.runs WHERE id = :'grow';
SELECT * FROM check_run(:'grow');

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
