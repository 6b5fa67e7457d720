-- start_run: nodes, RUN_STARTED, options, idempotency keys.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SELECT vectorbea.define_workflow('fanout', '{"nodes":[
	{"id":"collect","activity":"collect","input":{"source":"tickets"}},
	{"id":"left","activity":"analyse","depends_on":["collect"]},
	{"id":"right","activity":"analyse","depends_on":["collect"]},
	{"id":"join","activity":"merge","depends_on":["left","right"]}]}');

SELECT vectorbea.start_run('fanout', '{"ticket": 42}') AS run \gset
SELECT * FROM nodes_of(:'run');
SELECT status, workflow, workflow_version, workspace, priority, last_seq, node_count, open_nodes
  FROM vectorbea.runs WHERE id = :'run';
SELECT seq, type, node, data->'input' AS input, jsonb_array_length(data->'nodes') AS nodes
  FROM vectorbea.events WHERE run_id = :'run';

-- Runs keep their version when the workflow is defined again.
SELECT vectorbea.define_workflow('fanout', '{"nodes":[{"id":"only","activity":"collect"}]}');
SELECT workflow_version FROM vectorbea.runs WHERE id = :'run';
SELECT vectorbea.start_run('fanout') AS run_v2 \gset
SELECT workflow_version, input FROM vectorbea.runs WHERE id = :'run_v2';
SELECT * FROM nodes_of(:'run_v2');

-- Options.
SELECT vectorbea.start_run('fanout', '{}', NULL,
	'{"workspace": "acme", "priority": 5, "budget_usd": 2.5, "budget_tokens": 100000}') AS run_opt \gset
SELECT workspace, priority, budget_usd, budget_tokens FROM vectorbea.runs WHERE id = :'run_opt';
-- A deadline is a duration from the start or a timestamp.
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"deadline": "1h"}') AS run_dl \gset
SELECT deadline - created_at AS deadline_after FROM vectorbea.runs WHERE id = :'run_dl';
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"deadline": "2999-01-01T00:00:00Z"}') AS run_dl2 \gset
SELECT deadline = '2999-01-01T00:00:00Z' AS absolute FROM vectorbea.runs WHERE id = :'run_dl2';
SELECT priority FROM vectorbea.nodes WHERE run_id = :'run_opt';

-- Idempotency: the same key with the same workflow and input is the same run.
SELECT vectorbea.start_run('fanout', '{"order": 7}', 'order-7') AS run_k \gset
SELECT vectorbea.start_run('fanout', '{"order": 7}', 'order-7') = :'run_k' AS same_run;
SELECT count(*) AS runs_with_key FROM vectorbea.runs WHERE idempotency_key = 'order-7';
-- ... and with another input or workflow it is an error that changes nothing.
SELECT vectorbea.define_workflow('other', '{"nodes":[{"id":"x","activity":"x"}]}');
SELECT vectorbea.start_run('fanout', '{"order": 8}', 'order-7'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('other', '{"order": 7}', 'order-7'); \echo SQLSTATE :SQLSTATE
-- The hint's query runs as it is, whatever the key holds; a long key is
-- cut in the message.
SELECT vectorbea.start_run('fanout', '{"order": 9}', E'it''s-' || repeat('k', 60)) IS NOT NULL AS started;
SELECT vectorbea.start_run('fanout', '{"order": 10}', E'it''s-' || repeat('k', 60)); \echo SQLSTATE :SQLSTATE
SELECT id IS NOT NULL AS hint_finds_it FROM vectorbea.runs WHERE idempotency_key = 'it''s-kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk';
SELECT count(*) AS runs_with_key FROM vectorbea.runs WHERE idempotency_key = 'order-7';

-- Refusals, each writing nothing.
SELECT count(*) AS runs_before FROM vectorbea.runs \gset
SELECT vectorbea.start_run('nope'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run(NULL); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '[1, 2]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', ''); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '[]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"colour": "red"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"priority": 1.5}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"priority": 5000}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"workspace": "two words"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"budget_usd": -1}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"budget_tokens": "many"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"deadline": 3600}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"deadline": "tomorrow-ish"}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('fanout', '{}', NULL, '{"deadline": "2001-01-01T00:00:00Z"}'); \echo SQLSTATE :SQLSTATE
SET vectorbea.max_payload_size = '1kB';
SELECT vectorbea.start_run('fanout', jsonb_build_object('blob', repeat('x', 2000))); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_payload_size;
-- A definition stored under a looser limit is checked again at start.
SET vectorbea.max_nodes_per_run = 1;
SELECT vectorbea.define_workflow('wide', '{"nodes":[{"id":"a","activity":"a"},{"id":"b","activity":"b"}]}'); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_nodes_per_run;
SELECT vectorbea.define_workflow('wide', '{"nodes":[{"id":"a","activity":"a"},{"id":"b","activity":"b"}]}');
SET vectorbea.max_nodes_per_run = 1;
SELECT vectorbea.start_run('wide'); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_nodes_per_run;
SELECT count(*) - :runs_before AS runs_added FROM vectorbea.runs;

SELECT * FROM check_run(:'run');
SELECT * FROM check_run(:'run_v2');
SELECT * FROM check_run(:'run_opt');
SELECT * FROM check_run(:'run_k');

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
