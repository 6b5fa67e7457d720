-- A run's budget covers its child runs.  A run node of a run with a budget
-- gives its child what the run has left as the child's own budget (and the
-- run's policy at the budget), and holds that amount against the run's
-- budget while it waits; when the child ends, what it spent (its own
-- children's included) is booked on the parent, in child_usage_usd and
-- child_usage_tokens, next to the parent's own usage, and the event that
-- ends the run node records it.  run_due_work() does the scheduler's part
-- (no scheduler serves this database).  Every run ends consistent with its
-- history.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

-- The runs of one tree, the root first, then by depth and budget: their budgets,
-- spend and status.
CREATE FUNCTION tree(root uuid)
RETURNS TABLE (depth int, status text, budget_usd numeric, budget_tokens bigint, on_budget text,
			   usage_usd numeric, usage_tokens bigint, child_usage_usd numeric, child_usage_tokens bigint)
LANGUAGE sql AS $$
	WITH RECURSIVE t AS (
		SELECT id, 0 AS depth FROM vectorbea.runs WHERE id = root
		UNION ALL
		SELECT r.id, t.depth + 1 FROM vectorbea.runs r JOIN t ON r.parent_run = t.id
	)
	SELECT t.depth, r.status, r.budget_usd, r.budget_tokens, r.options->>'on_budget',
		   r.usage_usd, r.usage_tokens, r.child_usage_usd, r.child_usage_tokens
	  FROM t JOIN vectorbea.runs r USING (id)
	 ORDER BY t.depth, r.budget_usd, r.id
$$;

SELECT vectorbea.define_workflow('kid', '{"nodes":[{"id":"spend","activity":"kid_work"}]}');
SELECT vectorbea.define_workflow('two_in_turn', '{"nodes":[
  {"id":"first","kind":"run","run":{"workflow":"kid"}},
  {"id":"second","kind":"run","run":{"workflow":"kid"},"depends_on":["first"]}]}');
SELECT vectorbea.define_workflow('two_at_once', '{"nodes":[
  {"id":"left","kind":"run","run":{"workflow":"kid"}},
  {"id":"right","kind":"run","run":{"workflow":"kid"}}]}');
-- A run node may give its child less than what is left: "budget_usd" and
-- "budget_tokens" of its "run" object.
SELECT vectorbea.define_workflow('shared_out', '{"nodes":[
  {"id":"small","kind":"run","run":{"workflow":"kid","budget_usd":1,"budget_tokens":100}},
  {"id":"large","kind":"run","run":{"workflow":"kid","budget_usd":50}},
  {"id":"plain","kind":"run","run":{"workflow":"kid"}}]}');
-- Bad budgets are refused, naming the node and the field; nothing is stored.
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"r","kind":"run","run":{"workflow":"kid","budget_usd":-1}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"r","kind":"run","run":{"workflow":"kid","budget_usd":"ten"}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"r","kind":"run","run":{"workflow":"kid","budget_tokens":1.5}}]}');
SELECT vectorbea.define_workflow('bad', '{"nodes":[{"id":"r","kind":"run","run":{"workflow":"kid","budget":3}}]}');
SELECT count(*) AS bad_versions FROM vectorbea.workflows WHERE name = 'bad';
SELECT vectorbea.define_workflow('then_more', '{"nodes":[
  {"id":"delegate","kind":"run","run":{"workflow":"kid"}},
  {"id":"more","activity":"boss_work","depends_on":["delegate"]}]}');

-- Children in turn: the first gets the whole budget, the second what the
-- first left; the second's overrun fails it, and its parent with it.
SELECT vectorbea.start_run('two_in_turn', '{}', NULL, '{"budget_usd": 10}') AS turn \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT * FROM tree(:'turn');
SELECT node, status, reserved_usd, reserved_tokens FROM vectorbea.nodes WHERE run_id = :'turn' ORDER BY node;
-- The grant is held against the parent's budget, not the workspace's: the
-- child's own calls and usage count there.
SELECT scope, booked_usd, reserved_usd, budget_usd, child_usage_usd
  FROM vectorbea.spend WHERE run = :'turn' OR scope = 'workspace';
SELECT vectorbea.complete_task(task_id, lease, '{"done": 1}', usage => '{"usd": 4, "tokens": 100}')
  FROM vectorbea.claim_tasks('w', ARRAY['kid_work']);
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT * FROM tree(:'turn');
SELECT scope, booked_usd, reserved_usd, budget_usd, child_usage_usd
  FROM vectorbea.spend WHERE run = :'turn' OR scope = 'workspace';
-- The second child reports more than it was given when its task fails
-- for good: the report is booked on it before the failure ends it, so its
-- parent takes the whole of it.
SELECT vectorbea.fail_task(task_id, lease, '{"message": "went on too long", "class": "permanent", "usage": {"usd": 7}}')
  FROM vectorbea.claim_tasks('w', ARRAY['kid_work']);
SELECT * FROM tree(:'turn');
SELECT type, node, attempt,
	   data - 'output' - 'duration_ms' - 'error' - 'child_run' - 'delay_ms' - 'available_at' AS data
  FROM vectorbea.events WHERE run_id = :'turn' ORDER BY seq;
SELECT line FROM timeline_text(:'turn') AS line WHERE line LIKE 'BUDGET_EXCEEDED%';
SELECT replay->'child_usage' AS replayed FROM vectorbea.replay(:'turn') AS replay;

-- Children at once: the first to start takes what is left; the second
-- gets nothing, and a report of anything above nothing crosses it (the
-- child fails, and its run node is retried).
SELECT vectorbea.start_run('two_at_once', '{}', NULL, '{"budget_usd": 3, "budget_tokens": 500}') AS once \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT * FROM tree(:'once');
SELECT sum(reserved_usd) AS held_usd, sum(reserved_tokens) AS held_tokens
  FROM vectorbea.nodes WHERE run_id = :'once';
-- Raising the parent's budget does not raise its children's: the call
-- says so, naming the run nodes whose children keep theirs.
SELECT vectorbea.set_run_budget(:'once', 4, 500) AS resumed;
SELECT * FROM tree(:'once');
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 0.5}')
  FROM vectorbea.claim_tasks('w', ARRAY['kid_work'], 2);
SELECT * FROM tree(:'once');
SELECT node, status, attempt, error->>'class' AS class FROM vectorbea.nodes WHERE run_id = :'once' ORDER BY node;
SELECT vectorbea.cancel_run(:'once', 'seen enough');

-- Asked for: each child gets the smaller of what its node asks and what
-- is left when it starts, in the order the nodes start (as defined):
-- "small" takes the 1 it asks, "large" asks 50 and gets the 7 left,
-- "plain" gets nothing.  The run has no token budget, so "small" gets the
-- 100 tokens it asks; without a budget of the run's, each child gets what
-- its node asks.
SELECT vectorbea.start_run('shared_out', '{}', NULL, '{"budget_usd": 8}') AS shared \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT n.node, c.budget_usd, c.budget_tokens, n.reserved_usd, n.reserved_tokens
  FROM vectorbea.nodes n JOIN vectorbea.runs c ON c.id = n.lease
 WHERE n.run_id = :'shared' ORDER BY n.node;
SELECT vectorbea.start_run('shared_out', '{}') AS unbounded \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT n.node, c.budget_usd, c.budget_tokens FROM vectorbea.nodes n JOIN vectorbea.runs c ON c.id = n.lease
 WHERE n.run_id = :'unbounded' ORDER BY n.node;
SELECT count(vectorbea.cancel_run(id, 'seen enough')) AS cancelled
  FROM vectorbea.runs WHERE id IN (:'shared', :'unbounded') OR parent_run IN (:'shared', :'unbounded');

-- Without a budget, a child has none either, and its spend is still
-- booked on its parent.
SELECT vectorbea.start_run('then_more', '{}') AS free \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 2.5}')
  FROM vectorbea.claim_tasks('w', ARRAY['kid_work']);
SELECT * FROM tree(:'free');
SELECT node, reserved_usd FROM vectorbea.nodes WHERE run_id = :'free' ORDER BY node;
SELECT vectorbea.complete_task(task_id, lease, '{}')
  FROM vectorbea.claim_tasks('w', ARRAY['boss_work']);
SELECT status FROM vectorbea.runs WHERE id = :'free';

-- Under "pause" the child inherits the policy.  Its last task's overrun
-- does not pause it (the work is done: the child succeeds, the overrun on
-- record); what it spent crosses its parent's budget, and the parent,
-- with work left, pauses before any more.  Raising the parent's budget
-- resumes it.
SELECT vectorbea.start_run('then_more', '{}', NULL, '{"budget_usd": 1, "on_budget": "pause"}') AS paused \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 1.5}')
  FROM vectorbea.claim_tasks('w', ARRAY['kid_work']);
SELECT * FROM tree(:'paused');
SELECT paused->>'scope' AS scope FROM vectorbea.runs WHERE id = :'paused';
SELECT count(*) AS claimable FROM vectorbea.claim_tasks('w', ARRAY['boss_work']);
SELECT vectorbea.set_run_budget(:'paused', 5) AS resumed;
SELECT vectorbea.complete_task(task_id, lease, '{}')
  FROM vectorbea.claim_tasks('w', ARRAY['boss_work']);
SELECT * FROM tree(:'paused');

-- A run node's timeout ends its wait: what the child has spent so far,
-- and what it still holds (here "two", running, with its estimate of 2
-- USD: a task's report or a call's answer may still come), is booked on
-- the parent then, with the failure (the child is cancelled by the
-- scheduler later), so the retry's new child is given what is left after
-- it: 5 of 10.
SELECT vectorbea.define_workflow('two_steps', '{"nodes":[{"id":"one","activity":"step_work"},
  {"id":"two","activity":"step_work","depends_on":["one"],"estimate":{"usd":2}}]}');
SELECT vectorbea.define_workflow('impatient', '{"nodes":[
  {"id":"wait","kind":"run","run":{"workflow":"two_steps"},"timeout":"1h"}]}');
SELECT vectorbea.start_run('impatient', '{}', NULL, '{"budget_usd": 10}') AS imp \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 3}')
  FROM vectorbea.claim_tasks('w', ARRAY['step_work']);
SELECT node FROM vectorbea.claim_tasks('w', ARRAY['step_work'], 1, '2 hours');
SET vectorbea.test_clock_offset = '61m';
SELECT vectorbea.run_due_work()->'waits_ended' AS ended;
SELECT type, node, attempt, data->'class' AS class, data->'child_usage' AS child_usage
  FROM vectorbea.events WHERE run_id = :'imp' AND type = 'STEP_FAILED';
-- The retry, after its backoff; the old child was cancelled in the pass
-- above, and its cancel books nothing more.
SET vectorbea.test_clock_offset = '62m';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT * FROM tree(:'imp');
RESET vectorbea.test_clock_offset;
SELECT count(vectorbea.cancel_run(id, 'seen enough')) AS cancelled
  FROM vectorbea.runs WHERE (id = :'imp' OR parent_run = :'imp') AND status = 'running';

-- A budget set below what the run has spent fails it, and its run node
-- stops waiting (the scheduler cancels the child): the call says nothing
-- of a child's budget then.
SELECT vectorbea.define_workflow('pay_then_delegate', '{"nodes":[
  {"id":"pay","activity":"boss_work"},
  {"id":"delegate","kind":"run","run":{"workflow":"kid"},"depends_on":["pay"]}]}');
SELECT vectorbea.start_run('pay_then_delegate', '{}', NULL, '{"budget_usd": 10}') AS low \gset
SELECT vectorbea.complete_task(task_id, lease, '{}', usage => '{"usd": 2}')
  FROM vectorbea.claim_tasks('w', ARRAY['boss_work']);
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.set_run_budget(:'low', 1) AS resumed;
SELECT status, error->>'reason' AS reason FROM vectorbea.runs WHERE id = :'low';
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'low' ORDER BY node;
SELECT vectorbea.run_due_work()->'children_cancelled' AS children_cancelled;

-- A run node out of attempts waits at its escalation gate holding nothing:
-- its child ended and what it spent is booked, so the grant it gave the
-- child no longer counts against the run's budget (it counted all 10
-- while a person decided, leaving the run's other work nothing).
SELECT vectorbea.define_workflow('escalating', '{"nodes":[
  {"id":"delegate","kind":"run","run":{"workflow":"kid"},"retry":{"max_attempts":1},"on_exhausted":"escalate"},
  {"id":"side","activity":"side_work","depends_on":["delegate"]}]}');
SELECT vectorbea.start_run('escalating', '{}', NULL, '{"budget_usd": 10}') AS esc \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT reserved_usd, booked_usd, child_usage_usd FROM vectorbea.spend WHERE run = :'esc';
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent", "usage": {"usd": 2}}')
  FROM vectorbea.claim_tasks('w', ARRAY['kid_work']);
SELECT n.status, n.reserved_usd, g.kind, g.status AS gate
  FROM vectorbea.nodes n JOIN vectorbea.approvals g ON g.run_id = n.run_id AND g.node = n.node
 WHERE n.run_id = :'esc' AND n.node = 'delegate';
SELECT reserved_usd, booked_usd, child_usage_usd FROM vectorbea.spend WHERE run = :'esc';
SELECT vectorbea.cancel_run(:'esc', 'seen enough');

-- A number longer than a message shows (over 40 characters) is kept whole
-- in the stored spec, which the engine reads back as JSON: a run node's
-- budget_usd and a task's estimate.
SELECT vectorbea.define_workflow('tiny', '{"nodes":[
  {"id":"r","kind":"run","run":{"workflow":"kid","budget_usd":0.00000000000000000000000000000000000000003}},
  {"id":"t","activity":"tiny_work","estimate":{"usd":0.00000000000000000000000000000000000000001}}]}');
SELECT vectorbea.start_run('tiny', '{}') AS tiny \gset
SELECT estimate FROM vectorbea.nodes WHERE run_id = :'tiny' AND node = 't';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT budget_usd FROM vectorbea.runs WHERE parent_run = :'tiny';
SELECT count(vectorbea.cancel_run(id, 'seen enough')) AS cancelled
  FROM vectorbea.runs WHERE (id = :'tiny' OR parent_run = :'tiny') AND status = 'running';

-- A requeue books what the children its run's failure abandoned spent:
-- their end booked nothing on a run that had ended, and each requeue gave
-- the run node's new child the whole budget again.
SELECT vectorbea.define_workflow('ab_kid', '{"nodes":[{"id":"spend","activity":"ab_kid_work"}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('abandon', '{"nodes":[
  {"id":"sub","kind":"run","run":{"workflow":"ab_kid"}},
  {"id":"other","activity":"ab_other","retry":{"max_attempts":1}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('abandon', '{}', NULL, '{"budget_usd": 10}') AS ab \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
-- The child spends 6 in an attempt that fails and is retried: it runs on.
SELECT vectorbea.fail_task(task_id, lease, '{"message": "try again", "usage": {"usd": 6, "tokens": 60}}')
  FROM vectorbea.claim_tasks('w', ARRAY['ab_kid_work']);
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['ab_other']);
SELECT vectorbea.run_due_work()->'children_cancelled' AS children_cancelled;
SELECT * FROM tree(:'ab');
SELECT vectorbea.requeue(id, 'other fixed') FROM vectorbea.nodes WHERE run_id = :'ab' AND node = 'other';
SELECT data->'child_usage' AS booked FROM vectorbea.events WHERE run_id = :'ab' AND type = 'NODES_REQUEUED';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
-- The new child gets what is left: 4.
SELECT * FROM tree(:'ab');
SELECT replay->'child_usage' AS replayed FROM vectorbea.replay(:'ab') AS replay;
SELECT * FROM check_run(:'ab');
SELECT count(vectorbea.cancel_run(id, 'seen enough')) AS cancelled FROM vectorbea.runs WHERE id = :'ab';

-- A child that ends while its own child runs on (it failed, or was
-- cancelled) books on its parent what that grandchild spent and still
-- holds: the grandchild's end books nothing on a run that has ended, and
-- the root's next child was given the whole budget again.
SELECT vectorbea.define_workflow('gc_leaf', '{"nodes":[{"id":"spend","activity":"gc_leaf_work"}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('gc_mid', '{"nodes":[
  {"id":"deleg","kind":"run","run":{"workflow":"gc_leaf","budget_usd":5}},
  {"id":"side","activity":"gc_mid_side","retry":{"max_attempts":1}}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('gc_root', '{"nodes":[
  {"id":"kid","kind":"run","run":{"workflow":"gc_mid"}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('gc_root', '{}', NULL, '{"budget_usd": 10}') AS gcr \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.run_due_work()->'waits_started' AS started;
-- The grandchild spends 3 in an attempt that is retried: it runs on.
SELECT vectorbea.fail_task(task_id, lease, '{"message": "again", "usage": {"usd": 3, "tokens": 30}}')
  FROM vectorbea.claim_tasks('w', ARRAY['gc_leaf_work']);
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent"}')
  FROM vectorbea.claim_tasks('w', ARRAY['gc_mid_side']);
-- The root booked the grandchild's 3 and what it still holds (its running
-- attempt holds nothing without an estimate): 3, not 0.
SELECT * FROM tree(:'gcr');
SELECT data->'child_usage' AS booked FROM vectorbea.events
 WHERE run_id = :'gcr' AND type = 'STEP_FAILED';
SELECT vectorbea.run_due_work()->'children_cancelled' AS children_cancelled;
SET vectorbea.test_clock_offset = '1m';
SELECT vectorbea.run_due_work()->'waits_started' AS started;
RESET vectorbea.test_clock_offset;
-- The root's new child gets what is left: 7.
SELECT depth, status, budget_usd FROM tree(:'gcr') WHERE status = 'running';
SELECT replay->'child_usage' AS replayed FROM vectorbea.replay(:'gcr') AS replay;
SELECT * FROM check_run(:'gcr');
SELECT count(vectorbea.cancel_run(id, 'seen enough')) AS cancelled FROM vectorbea.runs WHERE id = :'gcr';

-- diff_runs counts what a run node's child spent as the node's, as the
-- budget books it: two runs whose children spent differently differ in
-- the run node's tokens and cost_usd (it showed 0 and 0 for both).
SELECT vectorbea.start_run('then_more', '{}') AS dx \gset
SELECT vectorbea.start_run('then_more', '{}') AS dy \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT vectorbea.complete_task(c.task_id, c.lease, '{"done": 1}',
		usage => CASE r.parent_run WHEN :'dx' THEN '{"usd": 1, "tokens": 10}'::jsonb
								   ELSE '{"usd": 2.5, "tokens": 30}'::jsonb END)
  FROM vectorbea.claim_tasks('w', ARRAY['kid_work'], 10) c
  JOIN vectorbea.nodes n ON n.id = c.task_id JOIN vectorbea.runs r ON r.id = n.run_id
 WHERE r.parent_run IN (:'dx', :'dy');
SELECT node, what, a, b FROM vectorbea.diff_runs(:'dx', :'dy') WHERE node = 'delegate' AND what <> 'latency_ms';
SELECT count(vectorbea.cancel_run(id, 'seen enough')) AS cancelled FROM vectorbea.runs WHERE id IN (:'dx', :'dy');

DROP FUNCTION tree(uuid);

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
