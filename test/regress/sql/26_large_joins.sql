-- A join whose dependencies' outputs together pass what one jsonb value
-- holds (256 MB), each output within vectorbea.max_payload_size: its
-- attempt fails for good where its upstream would be made, in a claim or
-- when the scheduler starts a sleep node, and nothing else stalls.  Before,
-- jsonb_object_agg failed the whole claim, for every run of the activity,
-- every time, and the scheduler's pass every 30 seconds.
-- The outputs compress well, so they take little room in the tables, but
-- they are made, checked and written in full: this file takes a while.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SET vectorbea.max_payload_size = '200MB';
-- The join escalates when it fails for good, so that the run goes on for
-- the sleep node to be started too.
SELECT vectorbea.define_workflow('big_join', '{"nodes":[
	{"id":"a","activity":"part"},{"id":"b","activity":"part"},
	{"id":"j","activity":"join","depends_on":["a","b"],
	 "on_exhausted":"escalate","escalation":{"gate":"fix_join"}},
	{"id":"s","kind":"sleep","sleep":{"for":"1s"},"depends_on":["a","b"]}]}');
SELECT vectorbea.define_workflow('small_join', '{"nodes":[
	{"id":"p","activity":"part"},{"id":"q","activity":"part"},
	{"id":"j","activity":"join","depends_on":["p","q"]}]}');
SELECT vectorbea.start_run('big_join', '{}') AS big \gset
SELECT vectorbea.start_run('small_join', '{}') AS small \gset

-- Each output of the big run takes 135 MB, the two together 270 MB.
SELECT count(vectorbea.complete_task(task_id, lease,
		   CASE WHEN run_id = :'big' THEN jsonb_build_object('text', repeat('x', 135000000))
				ELSE jsonb_build_object('part', node) END)) AS completed
  FROM vectorbea.claim_tasks('w1', ARRAY['part'], 10);

-- One claim takes both joins: the small run's gets its upstream; the big
-- run's attempt fails for good (and escalates) and is not returned.
CREATE TEMP TABLE join_claims AS SELECT * FROM vectorbea.claim_tasks('w1', ARRAY['join'], 10);
SELECT run_id = :'small' AS small_run, node, attempt, upstream FROM join_claims;
SELECT status, attempt, error->>'class' AS class, error->>'message' AS message,
	   error->>'upstream_bytes' AS upstream_bytes
  FROM vectorbea.nodes WHERE run_id = :'big' AND node = 'j';
SELECT type, node, attempt, data->'final' AS final, data->'escalated' AS escalated
  FROM vectorbea.events WHERE run_id = :'big' AND seq > 5 ORDER BY seq;

-- A retry decided on the gate makes the join ready again; the next claim
-- fails it the same way, and escalates again, instead of failing.
UPDATE vectorbea.approvals SET status = 'approved', decision = 'retry'
 WHERE run_id = :'big' AND gate = 'fix_join';
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w2', ARRAY['join'], 10);
SELECT status, attempt FROM vectorbea.nodes WHERE run_id = :'big' AND node = 'j';
SELECT count(*) FILTER (WHERE status = 'pending') AS pending_gates, count(*) AS gates
  FROM vectorbea.approvals WHERE run_id = :'big';

-- The sleep node fails for good when the scheduler would start it, and
-- the run fails (before, every pass of the scheduler failed on it).
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT node, status, error->>'message' AS message
  FROM vectorbea.nodes WHERE run_id = :'big' AND node IN ('j', 's') ORDER BY node;
SELECT status FROM vectorbea.runs WHERE id = :'big';

-- The small run goes on as usual.
SELECT vectorbea.complete_task(task_id, lease, '{}') FROM join_claims;
SELECT status FROM vectorbea.runs WHERE id = :'small';
SELECT * FROM check_run(:'small');

-- verify_run checks the big run node by node, although replay cannot
-- return its state, which holds both outputs: with one field edited, the
-- field is the one difference it finds.
SELECT vectorbea.replay(:'big') IS NULL AS no_replay;
SELECT s->>'status' AS status_at_3, jsonb_object_keys(s->'nodes') AS node
  FROM vectorbea.replay(:'big', 3) AS s ORDER BY node;
UPDATE vectorbea.nodes SET error = '{"message": "edited"}' WHERE run_id = :'big' AND node = 's';
SELECT * FROM vectorbea.verify_run(:'big');

-- A child run whose last nodes' outputs together pass what one jsonb
-- value holds: the completion that ends the child commits, and the
-- parent's run node fails for good, its message giving the size.  Before,
-- making the child's output failed that completion, every time a worker
-- tried it.
SELECT vectorbea.define_workflow('big_kid', '{"nodes":[
	{"id":"l","activity":"kid_part"},{"id":"r","activity":"kid_part"}]}') IS NOT NULL AS defined;
SELECT vectorbea.define_workflow('big_parent', '{"nodes":[
	{"id":"kid","kind":"run","run":{"workflow":"big_kid"}}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('big_parent', '{}') AS bp \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT count(vectorbea.complete_task(task_id, lease, jsonb_build_object('text', repeat('y', 135000000))))
	   AS completed
  FROM vectorbea.claim_tasks('w3', ARRAY['kid_part'], 10);
SELECT status FROM vectorbea.runs WHERE parent_run = :'bp';
SELECT n.status, n.error->>'class' AS class,
	   regexp_replace(n.error->>'message', '[0-9a-f]{8}-[0-9a-f-]{27}', '<uuid>') AS message
  FROM vectorbea.nodes n WHERE n.run_id = :'bp';
SELECT status FROM vectorbea.runs WHERE id = :'bp';
SELECT * FROM check_run(:'bp');

-- No payload may take more than 1 kB under the largest jsonb value,
-- whatever vectorbea.max_payload_size says (it goes up to 1 GB): an output
-- just over that is refused, and the attempt stays as it was.  Before, an
-- output within some 15 bytes of the maximum, in a node of one dependency,
-- would fail the claim of its dependent in every run, as a join too large
-- did.  Completed within the limit, it reaches its dependent.
SET vectorbea.max_payload_size = '1GB';
SELECT vectorbea.define_workflow('one_part', '{"nodes":[{"id":"p","activity":"huge_part"},
	{"id":"after","activity":"after_part","depends_on":["p"]}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('one_part', '{}') AS op \gset
CREATE TEMP TABLE huge_claim AS SELECT * FROM vectorbea.claim_tasks('w4', ARRAY['huge_part']);
SELECT vectorbea.complete_task(task_id, lease, jsonb_build_object('text', repeat('z', 268434500)))
  FROM huge_claim;
SELECT status, attempt, output IS NULL AS no_output FROM vectorbea.nodes WHERE run_id = :'op' AND node = 'p';
SET vectorbea.max_payload_size = '200MB';
SELECT count(vectorbea.complete_task(task_id, lease, '{}')) AS completed FROM huge_claim;
SELECT node, upstream FROM vectorbea.claim_tasks('w4', ARRAY['after_part']);

-- A run whose compensable nodes' inputs and outputs together pass what one
-- jsonb value holds begins to compensate: its compensations name their
-- originals, whose input and output each gets when it is claimed.  Before,
-- the specs of all compensations, each with a copy of its original's input
-- and output, were made in one aggregate, which failed, and with it the
-- fail_task that would start the compensation: the run stayed running.
-- Here "a" spawns "d" with an input of 135 MB, and "d" and "b" give
-- outputs of 135 MB each (405 MB of copies in the old specs).  A
-- compensation whose input would pass that limit with its original's
-- fails for good, with its size, and escalates as a compensation that
-- fails does: "d"'s, whose original's input and output take 270 MB.
SELECT vectorbea.define_workflow('big_undo', '{"nodes":[
	{"id":"a","activity":"undo_part","compensate":{"activity":"undo_it"}},
	{"id":"b","activity":"undo_part","compensate":{"activity":"undo_it","input":{"why":"b"}}},
	{"id":"c","activity":"undo_fail"}]}') IS NOT NULL AS defined;
SELECT vectorbea.start_run('big_undo', '{}') AS bu \gset
CREATE TEMP TABLE undo_claims AS SELECT * FROM vectorbea.claim_tasks('w5', ARRAY['undo_part'], 2);
SELECT vectorbea.complete_task(task_id, lease, jsonb_build_object('text', 'a'),
	   jsonb_build_array(jsonb_build_object('id', 'd', 'activity', 'undo_part',
		   'compensate', jsonb_build_object('activity', 'undo_it'),
		   'input', jsonb_build_object('text', repeat('i', 135000000)))))
  FROM undo_claims WHERE node = 'a';
SELECT vectorbea.complete_task(task_id, lease, jsonb_build_object('text', repeat('d', 135000000)))
  FROM vectorbea.claim_tasks('w5', ARRAY['undo_part']);
SELECT vectorbea.complete_task(task_id, lease, jsonb_build_object('text', repeat('b', 135000000)))
  FROM undo_claims WHERE node = 'b';
SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent"}')
  FROM vectorbea.claim_tasks('w5', ARRAY['undo_fail']);
SELECT status FROM vectorbea.runs WHERE id = :'bu';
SELECT node, compensation_of, input FROM vectorbea.nodes
 WHERE run_id = :'bu' AND compensation_of IS NOT NULL ORDER BY id;
SELECT pg_column_size(data) < 2000 AS small_event FROM vectorbea.events
 WHERE run_id = :'bu' AND type = 'COMPENSATION_STARTED';
-- "b"'s compensation, first (the last to complete), is claimed with its
-- own input and its original's input and output.
SELECT node, input->>'why' AS why, input->'original'->>'node' AS original,
	   input->'original'->'input' AS original_input,
	   length(input->'original'->'output'->>'text') AS original_output_length
  FROM vectorbea.claim_tasks('w5', ARRAY['undo_it']);
SELECT vectorbea.complete_task(id, lease, '{"undone": "b"}')
  FROM vectorbea.nodes WHERE run_id = :'bu' AND node = 'b:compensate';
-- "d"'s is not returned: its attempt fails for good and waits for a
-- person at its escalation gate.  Done by hand ("accept"), the last one,
-- "a"'s, is claimed with its original, and the run ends compensated.
-- (vectorbea.max_payload_size at its largest, 1 GB, acts as the 256 MB
-- that one jsonb value holds: the gate still names the original only.)
SET vectorbea.max_payload_size = '1GB';
SELECT count(*) AS claimed FROM vectorbea.claim_tasks('w5', ARRAY['undo_it']);
SELECT node, status, error->>'class' AS class, error->>'message' AS message, error->>'input_bytes' AS input_bytes
  FROM vectorbea.nodes WHERE run_id = :'bu' AND compensation_of IS NOT NULL ORDER BY id;
-- Its gate names the original without copying it (past
-- vectorbea.max_payload_size), with the size of the whole input.
SELECT context->'input' AS input, (context->>'input_bytes')::bigint > 270000000 AS input_bytes_over_270mb,
	   pg_column_size(context) < 2000 AS small_context
  FROM vectorbea.approvals WHERE run_id = :'bu' AND node = 'd:compensate';
SET vectorbea.max_payload_size = '200MB';
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{"undone": "by hand"}'
 WHERE run_id = :'bu' AND node = 'd:compensate';
SELECT vectorbea.complete_task(task_id, lease, jsonb_build_object('undone', input->'original'->>'node',
		   'length', length(input->'original'->'output'->>'text')))
  FROM vectorbea.claim_tasks('w5', ARRAY['undo_it']);
SELECT node, output FROM vectorbea.nodes WHERE run_id = :'bu' AND compensation_of IS NOT NULL ORDER BY id;
SELECT status, error->>'compensation' AS compensation FROM vectorbea.runs WHERE id = :'bu';

-- One claim takes a run's too-large join and other tasks of the same
-- run: the join fails for good and its run with it (the run begins to
-- compensate), which revokes the other tasks' leases in that claim, so the
-- claim hands out none of them.  A second too-large join among them is not
-- failed again: before, it was, and that failure ended the compensation
-- just begun (COMPENSATION_FAILED, nothing undone).
SELECT vectorbea.define_workflow('big_pair', '{"nodes":[
	{"id":"a","activity":"pair_part","compensate":{"activity":"pair_undo"}},
	{"id":"b","activity":"pair_part"},
	{"id":"j","activity":"pair_next","depends_on":["a","b"]},
	{"id":"k","activity":"pair_next","depends_on":["a"]},
	{"id":"l","activity":"pair_next","depends_on":["a","b"]}]}');
SELECT vectorbea.start_run('big_pair', '{}') AS pair \gset
SELECT count(vectorbea.complete_task(task_id, lease, jsonb_build_object('text', repeat('x', 135000000)))) AS completed
  FROM vectorbea.claim_tasks('w6', ARRAY['pair_part'], 10);
SELECT count(*) AS handed_out FROM vectorbea.claim_tasks('w6', ARRAY['pair_next'], 10);
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'pair' ORDER BY node;
SELECT status FROM vectorbea.runs WHERE id = :'pair';
SELECT type, node FROM vectorbea.events WHERE run_id = :'pair' AND seq > 6 ORDER BY seq;

-- Every other run is consistent with its history (the run that
-- compensated, with its 405 MB of inputs and outputs, is left out for
-- time: the compensations' consistency is 19_compensation's).
SELECT r.workflow, d FROM vectorbea.runs r, vectorbea.verify_run(r.id) AS d
 WHERE r.id NOT IN (:'big', :'bu');
