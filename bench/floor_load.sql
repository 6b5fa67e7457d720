-- The floor's tables (bench/run floor): what the contract asks a task path
-- to write, and nothing else, in plain tables beside the extension.  A task
-- row with the columns a claim and a completion change; a run row that
-- carries the gap-free event counter (DESIGN.md: "a gap-free per-run
-- sequence", in commit order); an events table with the contract's
-- columns and primary key.  The indexes are the ones any engine with leases
-- needs: tasks by id, by (run, name), the ready ones in claim order, the
-- running ones by lease end (for the sweep of lost workers).
-- :runs runs of :nodes ready tasks, a run's tasks with consecutive ids.
-- Used by bench/run through psql (-v runs=... -v nodes=...).
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_floor_events, bench_floor_tasks, bench_floor_runs;
CREATE TABLE bench_floor_runs (
	id			uuid PRIMARY KEY,
	last_seq	bigint NOT NULL DEFAULT 0
);
CREATE TABLE bench_floor_tasks (
	id			bigserial PRIMARY KEY,
	run_id		uuid NOT NULL,
	node		text NOT NULL,
	status		text NOT NULL,
	attempt		integer NOT NULL DEFAULT 0,
	output		jsonb,
	lease		uuid,
	lease_expires_at timestamptz,
	worker		text,
	started_at	timestamptz,
	finished_at	timestamptz,
	UNIQUE (run_id, node)
);
CREATE INDEX bench_floor_tasks_ready_idx ON bench_floor_tasks (id) WHERE status = 'ready';
CREATE INDEX bench_floor_tasks_running_idx ON bench_floor_tasks (lease_expires_at) WHERE status = 'running';
CREATE TABLE bench_floor_events (
	run_id		uuid NOT NULL,
	seq			bigint NOT NULL,
	type		text NOT NULL,
	node		text,
	attempt		integer,
	data		jsonb NOT NULL,
	at			timestamptz NOT NULL,
	db_role		text NOT NULL DEFAULT session_user,
	PRIMARY KEY (run_id, seq)
);
INSERT INTO bench_floor_runs (id) SELECT gen_random_uuid() FROM generate_series(1, :runs);
INSERT INTO bench_floor_tasks (run_id, node, status)
SELECT r.id, 'n' || i, 'ready'
  FROM bench_floor_runs r CROSS JOIN generate_series(1, :nodes) AS i
 ORDER BY r.id, i;
VACUUM ANALYZE;
CHECKPOINT;
