/* vectorbea--0.1.0.sql: the first install script.  Never edited once
 * released; later versions add vectorbea--A--B.sql upgrade scripts. */

\echo Use "CREATE EXTENSION vectorbea CASCADE" to load this file. \quit

/*
 * Tables.  Every table is owned by the extension owner and readable only
 * through explicit grants (docs/operations.md).  The SQL API is made of
 * SECURITY DEFINER functions, so a worker role needs EXECUTE on them and
 * nothing else: it cannot change nodes or events behind the engine's back.
 */

CREATE TABLE @extschema@.workflows (
	name		text NOT NULL,
	version		integer NOT NULL CHECK (version > 0),
	definition	jsonb NOT NULL,
	created_at	timestamptz NOT NULL,
	created_by	name NOT NULL DEFAULT session_user,
	PRIMARY KEY (name, version)
);
COMMENT ON TABLE @extschema@.workflows IS
	'Workflow definitions; defining a name again adds a version, runs keep theirs.';

CREATE TABLE @extschema@.runs (
	id				uuid PRIMARY KEY,
	workflow		text NOT NULL,
	workflow_version integer NOT NULL,
	status			text NOT NULL DEFAULT 'running'
		CHECK (status IN ('running', 'compensating', 'succeeded', 'failed', 'cancelled')),
	input			jsonb NOT NULL,
	options			jsonb NOT NULL DEFAULT '{}',
	workspace		text NOT NULL DEFAULT 'default',
	priority		integer NOT NULL DEFAULT 0,
	budget_usd		numeric,
	budget_tokens	bigint,
	deadline		timestamptz,
	usage_usd		numeric NOT NULL DEFAULT 0,
	usage_tokens	bigint NOT NULL DEFAULT 0,
	idempotency_key	text UNIQUE,
	last_seq		bigint NOT NULL DEFAULT 0,
	node_count		integer NOT NULL DEFAULT 0,
	open_nodes		integer NOT NULL DEFAULT 0,
	error			jsonb,
	created_at		timestamptz NOT NULL,
	finished_at		timestamptz,
	created_by		name NOT NULL DEFAULT session_user
) WITH (fillfactor = 70);
COMMENT ON TABLE @extschema@.runs IS
	'One row per run.  last_seq is the run''s event counter; its row lock orders the run''s events.';
COMMENT ON COLUMN @extschema@.runs.workflow_version IS
	'The version the run started with.  No foreign key: workflow versions are never updated or deleted (a trigger refuses it), and a key would be re-checked on every update of the run row in a transaction.';
COMMENT ON COLUMN @extschema@.runs.open_nodes IS
	'Nodes not yet in a final state; the run finishes when it reaches zero.';
COMMENT ON COLUMN @extschema@.runs.last_seq IS
	'Sequence number of the run''s latest event; events are numbered 1..last_seq with no gaps.';
CREATE INDEX runs_active_idx ON @extschema@.runs (created_at)
	WHERE status IN ('running', 'compensating');
-- the scheduler: runs with a deadline still running.
CREATE INDEX runs_deadline_idx ON @extschema@.runs (deadline)
	WHERE status = 'running' AND deadline IS NOT NULL;
COMMENT ON COLUMN @extschema@.runs.deadline IS
	'When the scheduler fails the run if it is still running (start_run option deadline).';

CREATE TABLE @extschema@.nodes (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	run_id			uuid NOT NULL REFERENCES @extschema@.runs (id) ON DELETE CASCADE,
	node			text NOT NULL,
	kind			text NOT NULL DEFAULT 'task'
		CHECK (kind IN ('task', 'llm', 'approval')),
	activity		text,
	status			text NOT NULL
		CHECK (status IN ('pending', 'ready', 'running', 'waiting', 'succeeded',
						  'failed', 'skipped', 'cancelled')),
	depends_on		text[] NOT NULL DEFAULT '{}',
	deps_remaining	integer NOT NULL DEFAULT 0,
	input			jsonb NOT NULL DEFAULT '{}',
	output			jsonb,
	error			jsonb,
	checkpoint		jsonb,
	attempt			integer NOT NULL DEFAULT 0,
	max_attempts	integer NOT NULL,
	retry			jsonb NOT NULL,
	timeout_ms		bigint CHECK (timeout_ms > 0),
	attempt_deadline timestamptz,
	approval		jsonb,
	llm				jsonb,
	priority		integer NOT NULL DEFAULT 0,
	available_at	timestamptz,
	lease			uuid,
	lease_expires_at timestamptz,
	lease_duration	interval,
	worker			text,
	spawned_by		text,
	created_at		timestamptz NOT NULL,
	started_at		timestamptz,
	finished_at		timestamptz,
	UNIQUE (run_id, node)
);
COMMENT ON TABLE @extschema@.nodes IS
	'The nodes of every run; id is the task id that workers see.';
COMMENT ON COLUMN @extschema@.nodes.node IS 'The node''s id within its run.';
COMMENT ON COLUMN @extschema@.nodes.deps_remaining IS
	'Dependencies not yet succeeded, decremented under the run lock: a join becomes ready exactly once.';
COMMENT ON COLUMN @extschema@.nodes.lease IS
	'Token of the current attempt (or of the attempt that completed the node).';
COMMENT ON COLUMN @extschema@.nodes.attempt_deadline IS
	'End of the current attempt by the node''s timeout; lease_expires_at never passes it.';
COMMENT ON COLUMN @extschema@.nodes.spawned_by IS
	'The node whose completion added this one; NULL for nodes of the definition.';

-- claim_tasks: ready work by activity, priority, then age.
CREATE INDEX nodes_ready_idx ON @extschema@.nodes
	(activity, priority DESC, available_at, id) WHERE status = 'ready';
-- lease expiry: running nodes are few, so this index stays tiny.
CREATE INDEX nodes_running_idx ON @extschema@.nodes (lease_expires_at)
	WHERE status = 'running';
-- the scheduler: retries waiting for their time.
CREATE INDEX nodes_retry_idx ON @extschema@.nodes (available_at)
	WHERE status = 'ready' AND attempt > 0;
-- fan-out: a finishing node releases the pending nodes of its run.
CREATE INDEX nodes_pending_idx ON @extschema@.nodes (run_id)
	WHERE status = 'pending';

CREATE TABLE @extschema@.provider_keys (
	workspace		text NOT NULL,
	provider		text NOT NULL CHECK (provider IN ('openai', 'anthropic')),
	ciphertext		bytea NOT NULL,
	base_url		text,
	fingerprint		text NOT NULL,
	set_at			timestamptz NOT NULL,
	set_by			name NOT NULL DEFAULT session_user,
	PRIMARY KEY (workspace, provider)
);
COMMENT ON TABLE @extschema@.provider_keys IS
	'Provider API keys (BYOK), encrypted with pgcrypto under the master key, bound to their workspace and provider.  Readable by the extension owner only.';
COMMENT ON COLUMN @extschema@.provider_keys.fingerprint IS
	'The first 12 hex digits of the key''s SHA-256: enough to tell keys apart, nothing to use.';

CREATE VIEW @extschema@.provider_key_info AS
	SELECT workspace, provider, base_url, fingerprint, set_at, set_by
	  FROM @extschema@.provider_keys;
COMMENT ON VIEW @extschema@.provider_key_info IS
	'Which provider keys are set, without the keys.';

CREATE TABLE @extschema@.model_prices (
	provider			text NOT NULL,
	model				text NOT NULL CHECK (model <> ''),
	input_usd_per_mtok	numeric NOT NULL CHECK (input_usd_per_mtok >= 0),
	output_usd_per_mtok	numeric NOT NULL CHECK (output_usd_per_mtok >= 0),
	source				text NOT NULL DEFAULT 'user' CHECK (source IN ('list', 'user')),
	PRIMARY KEY (provider, model, source)
);
COMMENT ON TABLE @extschema@.model_prices IS
	'USD per million tokens, by provider and model (a model name prefix: the longest one that matches prices a call, a user row before a list row).  Seeded with list prices; edit freely.';
COMMENT ON COLUMN @extschema@.model_prices.source IS
	'list: seeded by the extension; user: added or edited by you (editing a list row makes it yours).  pg_dump keeps the user rows; CREATE EXTENSION seeds the list again.';
-- list prices per million tokens (input, output) when this version was released
INSERT INTO @extschema@.model_prices VALUES
	('openai', 'gpt-4o', 2.50, 10.00, 'list'),
	('openai', 'gpt-4o-mini', 0.15, 0.60, 'list'),
	('openai', 'gpt-4.1', 2.00, 8.00, 'list'),
	('openai', 'gpt-4.1-mini', 0.40, 1.60, 'list'),
	('openai', 'gpt-4.1-nano', 0.10, 0.40, 'list'),
	('openai', 'gpt-5', 1.25, 10.00, 'list'),
	('openai', 'gpt-5-mini', 0.25, 2.00, 'list'),
	('openai', 'gpt-5-nano', 0.05, 0.40, 'list'),
	('openai', 'o3', 2.00, 8.00, 'list'),
	('openai', 'o4-mini', 1.10, 4.40, 'list'),
	('anthropic', 'claude-opus-4', 15.00, 75.00, 'list'),
	('anthropic', 'claude-sonnet-4', 3.00, 15.00, 'list'),
	('anthropic', 'claude-3-7-sonnet', 3.00, 15.00, 'list'),
	('anthropic', 'claude-3-5-haiku', 0.80, 4.00, 'list'),
	('anthropic', 'claude-haiku-4-5', 1.00, 5.00, 'list');

CREATE FUNCTION @extschema@.model_price_edited() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	NEW.source := 'user';
	RETURN NEW;
END
$$;
COMMENT ON FUNCTION @extschema@.model_price_edited() IS
	'Trigger function: an edited price is the user''s, so pg_dump keeps it.';
CREATE TRIGGER model_prices_edited
	BEFORE UPDATE ON @extschema@.model_prices
	FOR EACH ROW EXECUTE FUNCTION @extschema@.model_price_edited();

CREATE TABLE @extschema@.events (
	run_id		uuid NOT NULL,
	seq			bigint NOT NULL CHECK (seq > 0),
	type		text NOT NULL,
	node		text,
	attempt		integer,
	data		jsonb NOT NULL DEFAULT '{}',
	at			timestamptz NOT NULL,
	db_role		name NOT NULL DEFAULT session_user,
	PRIMARY KEY (run_id, seq)
);
COMMENT ON TABLE @extschema@.events IS
	'Append-only history.  seq is gap-free per run, in commit order; replay() rebuilds a run from these rows alone.';
COMMENT ON COLUMN @extschema@.events.at IS 'Engine clock (vectorbea.clock()) when the event was written.';
COMMENT ON COLUMN @extschema@.events.db_role IS 'The session role that caused the event.';

CREATE FUNCTION @extschema@.refuse_event_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF TG_TABLE_NAME = 'events' THEN
		RAISE EXCEPTION 'the event history is append-only'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('%s on %s.%s is refused.', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME),
				  HINT = 'Record a correction with vectorbea.append_event() instead.';
	ELSIF TG_TABLE_NAME = 'workflows' THEN
		RAISE EXCEPTION 'workflow versions are immutable'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('%s on %s.%s is refused.', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME),
				  HINT = 'Define the workflow again: that adds a version.';
	ELSE
		RAISE EXCEPTION 'approvals are part of the audit trail and are never removed'
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = format('%s on %s.%s is refused.', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME),
				  HINT = 'Decide a gate with UPDATE; cancel_run() closes the gates of a run.';
	END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.refuse_event_change() IS
	'Trigger function that keeps events, workflow versions and approvals from being changed or removed.';

CREATE TRIGGER events_append_only
	BEFORE UPDATE OR DELETE ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.refuse_event_change();
CREATE TRIGGER events_no_truncate
	BEFORE TRUNCATE ON @extschema@.events
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.refuse_event_change();
CREATE TRIGGER workflows_immutable
	BEFORE UPDATE OR DELETE OR TRUNCATE ON @extschema@.workflows
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.refuse_event_change();

CREATE TABLE @extschema@.approvals (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	run_id			uuid NOT NULL REFERENCES @extschema@.runs (id) ON DELETE CASCADE,
	node			text NOT NULL,
	task_id			bigint NOT NULL,
	gate			text NOT NULL,
	context			jsonb NOT NULL DEFAULT '{}',
	approver_role	text,
	escalate_to		text[] NOT NULL DEFAULT '{}',
	escalation_level integer NOT NULL DEFAULT 0,
	on_timeout		text NOT NULL DEFAULT 'reject'
		CHECK (on_timeout IN ('reject', 'approve', 'escalate')),
	timeout_ms		bigint,
	expires_at		timestamptz,
	status			text NOT NULL DEFAULT 'pending'
		CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'closed')),
	reason			text,
	decided_by		text,
	decided_at		timestamptz,
	decided_role	name,
	created_at		timestamptz NOT NULL
);
COMMENT ON TABLE @extschema@.approvals IS
	'Human approval gates.  Decide with UPDATE ... SET status = ''approved'' | ''rejected'', reason = ..., decided_by = ...';
COMMENT ON COLUMN @extschema@.approvals.approver_role IS
	'Members of this role may decide the gate (and see it); NULL: any role allowed to update approvals.';
COMMENT ON COLUMN @extschema@.approvals.decided_role IS
	'The database role that decided, stamped by the engine.';
COMMENT ON COLUMN @extschema@.approvals.decided_by IS
	'The person who decided, as the application names them.';
CREATE INDEX approvals_run_idx ON @extschema@.approvals (run_id);
CREATE INDEX approvals_expiry_idx ON @extschema@.approvals (expires_at)
	WHERE status = 'pending' AND expires_at IS NOT NULL;

-- A role sees and decides only the gates it may approve.  The owner (and so
-- the engine's SECURITY DEFINER functions) is not subject to the policy.
ALTER TABLE @extschema@.approvals ENABLE ROW LEVEL SECURITY;
CREATE POLICY approvals_for_approvers ON @extschema@.approvals
	USING (approver_role IS NULL
		   OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
					   WHERE r.rolname = approver_role
						 AND pg_catalog.pg_has_role(r.oid, 'MEMBER')));

CREATE FUNCTION @extschema@.approval_decide() RETURNS trigger
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_approval_decide';
COMMENT ON FUNCTION @extschema@.approval_decide() IS
	'Trigger: checks a decision, stamps it, and moves the run on in the same transaction.';
CREATE TRIGGER approvals_decide
	BEFORE UPDATE ON @extschema@.approvals
	FOR EACH ROW EXECUTE FUNCTION @extschema@.approval_decide();
CREATE FUNCTION @extschema@.approvals_after_update() RETURNS trigger
	LANGUAGE c
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_approvals_after_update';
COMMENT ON FUNCTION @extschema@.approvals_after_update() IS
	'Trigger: closes the other gates of runs that a decision of the statement ended.';
CREATE TRIGGER approvals_close_ended_runs
	AFTER UPDATE ON @extschema@.approvals
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.approvals_after_update();
CREATE TRIGGER approvals_no_delete
	BEFORE DELETE OR TRUNCATE ON @extschema@.approvals
	FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.refuse_event_change();


CREATE VIEW @extschema@.dead_letters AS
	SELECT n.run_id, r.workflow, r.workspace, n.id AS task_id, n.node, n.activity,
		   n.attempt, n.error, n.finished_at
	  FROM @extschema@.nodes n
	  JOIN @extschema@.runs r ON r.id = n.run_id
	 WHERE n.status = 'failed';
COMMENT ON VIEW @extschema@.dead_letters IS 'Nodes that failed for good, with their last error.';

/*
 * The engine, in C.  Every function is SECURITY DEFINER with a pinned
 * search_path (the C code schema-qualifies every object anyway) and no
 * PUBLIC execute; docs/operations.md lists the grants for worker roles.
 */

CREATE FUNCTION @extschema@.clock() RETURNS timestamptz
	LANGUAGE c VOLATILE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_clock';
COMMENT ON FUNCTION @extschema@.clock() IS
	'The engine clock: wall clock plus vectorbea.test_clock_offset.';

CREATE FUNCTION @extschema@.uuid_v7() RETURNS uuid
	LANGUAGE c VOLATILE PARALLEL SAFE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_uuid_v7';
COMMENT ON FUNCTION @extschema@.uuid_v7() IS 'A time-ordered UUID (version 7) from the engine clock.';

CREATE FUNCTION @extschema@.define_workflow(name text, definition jsonb)
	RETURNS integer
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_define_workflow';
COMMENT ON FUNCTION @extschema@.define_workflow(text, jsonb) IS
	'Validates a definition and stores it as the next version of the workflow; returns the version.';

CREATE FUNCTION @extschema@.validate_workflow(definition jsonb)
	RETURNS jsonb
	LANGUAGE c STABLE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_validate_workflow';
COMMENT ON FUNCTION @extschema@.validate_workflow(jsonb) IS
	'Validates a definition without storing it; returns its nodes with every default applied.';

CREATE FUNCTION @extschema@.start_run(workflow text, input jsonb DEFAULT '{}',
									   idempotency_key text DEFAULT NULL,
									   options jsonb DEFAULT '{}')
	RETURNS uuid
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_start_run';
COMMENT ON FUNCTION @extschema@.start_run(text, jsonb, text, jsonb) IS
	'Starts a run of the latest version of a workflow; the same idempotency key returns the same run.';

CREATE FUNCTION @extschema@.claim_tasks(worker text, activities text[],
										 max_tasks integer DEFAULT 1,
										 lease_duration interval DEFAULT '5 minutes',
										 OUT task_id bigint, OUT lease uuid,
										 OUT run_id uuid, OUT node text,
										 OUT activity text, OUT attempt integer,
										 OUT max_attempts integer, OUT input jsonb,
										 OUT upstream jsonb, OUT checkpoint jsonb,
										 OUT idempotency_key text,
										 OUT lease_expires_at timestamptz,
										 OUT run_input jsonb)
	RETURNS SETOF record
	LANGUAGE c SECURITY DEFINER ROWS 10
	SET search_path = pg_catalog, pg_temp
	-- The claim's generic plan is costed for the whole backlog; compiling
	-- it on every call would cost far more than running it.
	SET jit = off
	AS 'MODULE_PATHNAME', 'vectorbea_claim_tasks';
COMMENT ON FUNCTION @extschema@.claim_tasks(text, text[], integer, interval) IS
	'Takes up to max_tasks ready tasks of the given activities (FOR UPDATE SKIP LOCKED) and leases them; run_input is the input the run was started with.';

CREATE FUNCTION @extschema@.heartbeat(task_id bigint, lease uuid,
									   extend interval DEFAULT NULL)
	RETURNS timestamptz
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_heartbeat';
COMMENT ON FUNCTION @extschema@.heartbeat(bigint, uuid, interval) IS
	'Keeps a lease alive; returns its new expiry.';

CREATE FUNCTION @extschema@.complete_task(task_id bigint, lease uuid,
										   output jsonb DEFAULT NULL,
										   spawn jsonb DEFAULT NULL,
										   usage jsonb DEFAULT NULL)
	RETURNS void
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_complete_task';
COMMENT ON FUNCTION @extschema@.complete_task(bigint, uuid, jsonb, jsonb, jsonb) IS
	'Finishes a task, adds the nodes it spawns and releases its dependents, in one transaction.';

CREATE FUNCTION @extschema@.fail_task(task_id bigint, lease uuid, error jsonb,
									   retryable boolean DEFAULT true)
	RETURNS text
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_fail_task';
COMMENT ON FUNCTION @extschema@.fail_task(bigint, uuid, jsonb, boolean) IS
	'Records a failed attempt; returns retrying or failed.';

CREATE FUNCTION @extschema@.save_checkpoint(task_id bigint, lease uuid, state jsonb)
	RETURNS void
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_save_checkpoint';
COMMENT ON FUNCTION @extschema@.save_checkpoint(bigint, uuid, jsonb) IS
	'Saves progress that a later attempt of the task receives as its checkpoint.';

CREATE FUNCTION @extschema@.await_approval(task_id bigint, lease uuid, gate text,
											context jsonb DEFAULT '{}',
											timeout interval DEFAULT NULL)
	RETURNS bigint
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_await_approval';
COMMENT ON FUNCTION @extschema@.await_approval(bigint, uuid, text, jsonb, interval) IS
	'Turns a running task into an approval wait; the decision becomes its output.  Returns the approval id.';

CREATE FUNCTION @extschema@.cancel_run(run uuid, reason text DEFAULT NULL,
										compensate boolean DEFAULT false)
	RETURNS boolean
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_cancel_run';
COMMENT ON FUNCTION @extschema@.cancel_run(uuid, text, boolean) IS
	'The kill switch for one run; returns false when the run had already finished.';

CREATE FUNCTION @extschema@.append_event(run uuid, type text, data jsonb DEFAULT '{}',
										  node text DEFAULT NULL)
	RETURNS bigint
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_append_event';
COMMENT ON FUNCTION @extschema@.append_event(uuid, text, jsonb, text) IS
	'Appends a custom event to a run''s history; returns its sequence number.';

/*
 * The history, read back.  replay() is a pure function of a run's events:
 * it knows the event shapes the engine writes and nothing else, so when it
 * agrees with the tables (verify_run) the history is complete.
 *
 * Node states from events:
 *   STEP_STARTED -> running, STEP_COMPLETED -> succeeded,
 *   STEP_RETRIED -> ready, STEP_FAILED with final -> failed,
 *   RUN_FAILED: "skipped" -> skipped, "revoked" -> cancelled,
 *   RUN_CANCELLED: "cancelled" and "revoked" -> cancelled.
 * A node with none of these is ready when all its dependencies succeeded,
 * else pending: readiness is derived, not recorded.
 */
CREATE FUNCTION @extschema@.replay(run uuid, upto bigint DEFAULT NULL)
	RETURNS jsonb
	LANGUAGE sql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
WITH ev AS (
	SELECT e.seq, e.type, e.node, e.attempt, e.data
	  FROM @extschema@.events e
	 WHERE e.run_id = replay.run AND (replay.upto IS NULL OR e.seq <= replay.upto)
), started AS (
	SELECT ev.data FROM ev WHERE ev.type = 'RUN_STARTED'
), added AS (
	SELECT spec.value->>'id' AS node, spec.value AS spec,
		   CASE WHEN ev.type = 'NODES_SPAWNED' THEN ev.node END AS spawned_by
	  FROM ev, jsonb_array_elements(ev.data->'nodes') AS spec
	 WHERE ev.type IN ('RUN_STARTED', 'NODES_SPAWNED')
), marks AS (
	SELECT ev.node, ev.seq,
		   CASE ev.type WHEN 'STEP_STARTED' THEN 'running'
						WHEN 'STEP_COMPLETED' THEN 'succeeded'
						WHEN 'STEP_RETRIED' THEN 'ready'
						WHEN 'APPROVAL_REQUESTED' THEN 'waiting'
						ELSE 'failed' END AS status
	  FROM ev
	 WHERE ev.type IN ('STEP_STARTED', 'STEP_COMPLETED', 'STEP_RETRIED', 'APPROVAL_REQUESTED')
		OR (ev.type = 'STEP_FAILED' AND (ev.data->>'final')::boolean)
	UNION ALL
	SELECT closed.node, ev.seq,
		   CASE WHEN ev.type = 'RUN_FAILED' AND closed.list = 'skipped'
				THEN 'skipped' ELSE 'cancelled' END
	  FROM ev,
		   LATERAL (SELECT x, 'skipped' FROM jsonb_array_elements_text(ev.data->'skipped') x
					UNION ALL
					SELECT x, 'cancelled' FROM jsonb_array_elements_text(ev.data->'cancelled') x
					UNION ALL
					SELECT x, 'revoked' FROM jsonb_array_elements_text(ev.data->'revoked') x)
			   AS closed(node, list)
	 WHERE ev.type IN ('RUN_FAILED', 'RUN_CANCELLED')
), last_mark AS (
	SELECT DISTINCT ON (node) node, status FROM marks ORDER BY node, seq DESC
), per_node AS (
	SELECT a.node,
		   (SELECT count(*) FROM ev WHERE ev.type = 'STEP_STARTED' AND ev.node = a.node) AS attempts,
		   (SELECT ev.data->'output' FROM ev
			 WHERE ev.type = 'STEP_COMPLETED' AND ev.node = a.node
			 ORDER BY ev.seq DESC LIMIT 1) AS output,
		   (SELECT ev.data->'error' FROM ev
			 WHERE ev.type = 'STEP_FAILED' AND ev.node = a.node
			 ORDER BY ev.seq DESC LIMIT 1) AS error,
		   lm.status AS marked
	  FROM added a LEFT JOIN last_mark lm ON lm.node = a.node
), state AS (
	SELECT a.node, a.spec, a.spawned_by, p.attempts, p.output, p.error,
		   coalesce(p.marked,
					CASE WHEN NOT EXISTS (
							SELECT 1 FROM jsonb_array_elements_text(a.spec->'depends_on') dep
							 WHERE NOT EXISTS (SELECT 1 FROM last_mark lm
												WHERE lm.node = dep AND lm.status = 'succeeded'))
						 THEN 'ready' ELSE 'pending' END) AS status
	  FROM added a JOIN per_node p ON p.node = a.node
)
SELECT jsonb_build_object(
		   'run', replay.run,
		   'workflow', s.data->'workflow',
		   'version', s.data->'version',
		   'input', s.data->'input',
		   'status', coalesce((SELECT CASE ev.type WHEN 'RUN_COMPLETED' THEN 'succeeded'
												   WHEN 'RUN_FAILED' THEN 'failed'
												   ELSE 'cancelled' END
								 FROM ev WHERE ev.type IN ('RUN_COMPLETED', 'RUN_FAILED', 'RUN_CANCELLED')
								ORDER BY ev.seq DESC LIMIT 1), 'running'),
		   'events', (SELECT count(*) FROM ev),
		   'upto', (SELECT max(ev.seq) FROM ev),
		   'usage', jsonb_build_object(
				'tokens', (SELECT coalesce(sum((ev.data->'usage'->>'tokens')::bigint), 0)
							 FROM ev WHERE ev.type IN ('STEP_COMPLETED', 'LLM_CALLED')),
				'usd', (SELECT coalesce(sum((ev.data->'usage'->>'usd')::numeric), 0)
						  FROM ev WHERE ev.type IN ('STEP_COMPLETED', 'LLM_CALLED'))),
		   'nodes', coalesce((SELECT jsonb_object_agg(st.node, jsonb_build_object(
								'kind', st.spec->'kind',
								'activity', st.spec->'activity',
								'depends_on', st.spec->'depends_on',
								'status', st.status,
								'attempts', st.attempts,
								'output', st.output,
								'error', st.error,
								'spawned_by', st.spawned_by))
							FROM state st), '{}'::jsonb))
  FROM started s
$$;
COMMENT ON FUNCTION @extschema@.replay(uuid, bigint) IS
	'The run''s state rebuilt from its events alone, optionally as of event upto.';

CREATE FUNCTION @extschema@.verify_run(run uuid)
	RETURNS SETOF text
	LANGUAGE sql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
WITH r AS (
	SELECT * FROM @extschema@.runs WHERE id = verify_run.run
), h AS (
	SELECT @extschema@.replay(verify_run.run) AS s
), seqs AS (
	SELECT count(*) AS n, coalesce(max(seq), 0) AS top
	  FROM @extschema@.events WHERE run_id = verify_run.run
), table_nodes AS (
	SELECT n.node, jsonb_build_object(
			   'kind', n.kind, 'activity', n.activity, 'depends_on', to_jsonb(n.depends_on),
			   'status', n.status, 'attempts', n.attempt, 'output', n.output,
			   'error', n.error, 'spawned_by', n.spawned_by) AS state
	  FROM @extschema@.nodes n WHERE n.run_id = verify_run.run
), history_nodes AS (
	SELECT key AS node, value AS state FROM h, jsonb_each(h.s->'nodes')
), pairs AS (
	SELECT coalesce(t.node, hn.node) AS node, t.state AS t, hn.state AS hs
	  FROM table_nodes t FULL JOIN history_nodes hn ON hn.node = t.node
)
SELECT msg FROM (
	SELECT 0 AS o, NULL::text AS node, 'run does not exist' AS msg
	 WHERE NOT EXISTS (SELECT 1 FROM r) AND (SELECT s FROM h) IS NULL
	UNION ALL
	SELECT 1, NULL, 'run is missing from the table'
	 WHERE NOT EXISTS (SELECT 1 FROM r) AND (SELECT s FROM h) IS NOT NULL
	UNION ALL
	SELECT 1, NULL, 'run has no RUN_STARTED event in the history'
	  FROM r WHERE (SELECT s FROM h) IS NULL
	UNION ALL
	SELECT 2, NULL, format('run status is %s in the table but %s in the history',
						   r.status, h.s->>'status')
	  FROM r, h WHERE r.status IS DISTINCT FROM h.s->>'status'
	UNION ALL
	SELECT 3, NULL, format('event sequence has gaps: %s events numbered up to %s',
						   seqs.n, seqs.top)
	  FROM seqs WHERE seqs.n <> seqs.top
	UNION ALL
	SELECT 3, NULL, format('runs.last_seq is %s but the last event is %s', r.last_seq, seqs.top)
	  FROM r, seqs WHERE r.last_seq <> seqs.top
	UNION ALL
	SELECT 4, NULL, format('runs.open_nodes is %s but %s nodes are open', r.open_nodes,
						   (SELECT count(*) FROM @extschema@.nodes n WHERE n.run_id = r.id
							   AND n.status IN ('pending', 'ready', 'running', 'waiting')))
	  FROM r
	 WHERE r.open_nodes <> (SELECT count(*) FROM @extschema@.nodes n WHERE n.run_id = r.id
							   AND n.status IN ('pending', 'ready', 'running', 'waiting'))
	UNION ALL
	SELECT 4, NULL, format('run usage is %s tokens / %s USD in the table but %s / %s in the history',
						   r.usage_tokens, r.usage_usd, h.s->'usage'->>'tokens', h.s->'usage'->>'usd')
	  FROM r, h
	 WHERE r.usage_tokens <> (h.s->'usage'->>'tokens')::bigint
		OR r.usage_usd <> (h.s->'usage'->>'usd')::numeric
	UNION ALL
	SELECT 5, p.node, format('node %s is in the table but not in the history', p.node)
	  FROM pairs p WHERE p.hs IS NULL
	UNION ALL
	SELECT 5, p.node, format('node %s is in the history but not in the table', p.node)
	  FROM pairs p WHERE p.t IS NULL
	UNION ALL
	SELECT 6, p.node, format('node %s: %s is %s in the table but %s in the history',
							 p.node, f.key, p.t->f.key, p.hs->f.key)
	  FROM pairs p, jsonb_each(p.t) f
	 WHERE p.hs IS NOT NULL AND p.t->f.key IS DISTINCT FROM p.hs->f.key
) d
ORDER BY o, node, msg
$$;
COMMENT ON FUNCTION @extschema@.verify_run(uuid) IS
	'Differences between the run replayed from its events and the tables; no rows means consistent.';

CREATE FUNCTION @extschema@.timeline(run uuid)
	RETURNS SETOF text
	LANGUAGE sql STABLE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
AS $$
SELECT to_char(e.at, 'HH24:MI:SS.MS') || ' ' || e.type ||
	   coalesce(' ' || CASE e.type
		WHEN 'RUN_STARTED' THEN
			format('run=%s workflow=%s@%s nodes=%s input=%s', e.run_id, e.data->>'workflow',
				   e.data->>'version', jsonb_array_length(e.data->'nodes'),
				   left((e.data->'input')::text, 80))
		WHEN 'STEP_STARTED' THEN
			format('%s attempt %s by %s', e.node, e.attempt, e.data->>'worker')
		WHEN 'STEP_COMPLETED' THEN
			format('%s → ok (%sms)', e.node, e.data->>'duration_ms')
		WHEN 'STEP_FAILED' THEN
			format('%s%s → %s%s%s', e.node, coalesce(' attempt ' || e.attempt, ''), e.data->>'class',
				   coalesce(': ' || (e.data->'error'->>'message'), ''),
				   CASE WHEN (e.data->>'final')::boolean THEN ' (final)' ELSE '' END)
		WHEN 'STEP_RETRIED' THEN
			format('%s → attempt %s in %sms', e.node, e.data->>'next_attempt', e.data->>'delay_ms')
		WHEN 'NODES_SPAWNED' THEN
			format('%s → %s', e.node,
				   (SELECT string_agg(x->>'id', ', ') FROM jsonb_array_elements(e.data->'nodes') x))
		WHEN 'RUN_CHECKPOINTED' THEN
			format('%s attempt %s saved %s bytes', e.node, e.attempt, e.data->>'bytes')
		WHEN 'LLM_REQUESTED' THEN
			format('%s attempt %s call %s → %s %s (sent)', e.node, e.attempt, e.data->>'call',
				   e.data->>'provider', e.data->>'model')
		WHEN 'LLM_CALLED' THEN
			format('%s attempt %s call %s ← %s%s in %sms, %s+%s tokens, %s USD', e.node, e.attempt,
				   e.data->>'call', e.data->>'outcome', coalesce(': ' || (e.data->>'error'), ''),
				   e.data->>'latency_ms', e.data->>'tokens_in', e.data->>'tokens_out',
				   e.data->>'cost_usd')
		WHEN 'SELF_CORRECTION' THEN
			format('%s correction %s/%s: %s', e.node, e.data->>'correction',
				   e.data->>'max_corrections', e.data->>'error')
		WHEN 'BUDGET_EXCEEDED' THEN
			format('%s usage %s USD / %s tokens, budget %s USD / %s tokens', e.node,
				   e.data->>'usage_usd', e.data->>'usage_tokens',
				   coalesce(e.data->>'budget_usd', '-'), coalesce(e.data->>'budget_tokens', '-'))
		WHEN 'APPROVAL_REQUESTED' THEN
			format('%s gate=%s approval=%s waiting for %s%s', e.node, e.data->>'gate',
				   e.data->>'approval', coalesce(e.data->>'approver_role', 'any approver'),
				   coalesce(' until ' || (e.data->>'expires_at'), ''))
		WHEN 'APPROVAL_GRANTED' THEN
			format('%s by=%s reason=%s', e.node, coalesce(e.data->>'by', e.data->>'role'),
				   quote_literal(coalesce(e.data->>'reason', '')))
		WHEN 'APPROVAL_REJECTED' THEN
			format('%s by=%s reason=%s', e.node, coalesce(e.data->>'by', e.data->>'role'),
				   quote_literal(coalesce(e.data->>'reason', '')))
		WHEN 'APPROVAL_ESCALATED' THEN
			format('%s gate=%s from %s to %s until %s', e.node, e.data->>'gate',
				   coalesce(e.data->>'from', 'any approver'), e.data->>'to', e.data->>'expires_at')
		WHEN 'APPROVAL_EXPIRED' THEN
			format('%s gate=%s → %s by timeout', e.node, e.data->>'gate', e.data->>'outcome')
		WHEN 'RUN_COMPLETED' THEN
			format('→ succeeded, %s nodes (%sms)', e.data->>'nodes', e.data->>'duration_ms')
		WHEN 'RUN_FAILED' THEN
			format('→ failed%s (%s), skipped %s, revoked %s',
				   coalesce(' at ' || (e.data->>'node'), ''), e.data->>'reason',
				   e.data->'skipped', e.data->'revoked')
		WHEN 'RUN_CANCELLED' THEN
			format('→ cancelled%s, cancelled %s, revoked %s',
				   coalesce(': ' || (e.data->>'reason'), ''), e.data->'cancelled', e.data->'revoked')
		ELSE
			concat_ws(' ', e.node, left(e.data::text, 120))
	   END, '')
  FROM @extschema@.events e
 WHERE e.run_id = timeline.run
 ORDER BY e.seq
$$;
COMMENT ON FUNCTION @extschema@.timeline(uuid) IS
	'The run''s history as readable lines, oldest first.';

CREATE FUNCTION @extschema@.scheduler_status(
		OUT database text, OUT pid integer, OUT state text,
		OUT started_at timestamptz, OUT last_wake timestamptz, OUT next_due timestamptz,
		OUT wakes bigint, OUT leases_expired bigint, OUT timeouts bigint,
		OUT retries_announced bigint, OUT deadlines_enforced bigint,
		OUT gates_expired bigint, OUT errors bigint, OUT last_error text)
	RETURNS SETOF record
	LANGUAGE c VOLATILE
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_scheduler_status';
COMMENT ON FUNCTION @extschema@.scheduler_status() IS
	'What each vectorbea scheduler is doing: state, last wake, next due time (engine clock), counters.';

CREATE FUNCTION @extschema@.set_provider_key(workspace text, provider text, api_key text,
											  base_url text DEFAULT NULL)
	RETURNS void
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_set_provider_key';
COMMENT ON FUNCTION @extschema@.set_provider_key(text, text, text, text) IS
	'Stores a provider API key, encrypted under the master key.  Call it with the key as a bound parameter, or with statement logging off.';

CREATE FUNCTION @extschema@.check_provider_key(workspace text, provider text)
	RETURNS boolean
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_check_provider_key';
COMMENT ON FUNCTION @extschema@.check_provider_key(text, text) IS
	'Whether the stored key decrypts under the current master key; never returns the key.';

CREATE FUNCTION @extschema@.rotate_master_key(new_key_file text)
	RETURNS integer
	LANGUAGE c SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_rotate_master_key';
COMMENT ON FUNCTION @extschema@.rotate_master_key(text) IS
	'Re-encrypts every provider key under the master key in new_key_file, in one transaction; then point vectorbea.master_key_file at it.';

CREATE FUNCTION @extschema@.run_due_work()
	RETURNS jsonb
	LANGUAGE c VOLATILE SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp
	AS 'MODULE_PATHNAME', 'vectorbea_run_due_work';
COMMENT ON FUNCTION @extschema@.run_due_work() IS
	'Does the scheduler''s due work now, in this transaction (expired attempts, run deadlines, gate timeouts); returns counts.';

REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
-- Only this extension's functions: CASCADE may have installed pgcrypto in
-- the same schema, and its functions keep their own grants.
DO $$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN
		SELECT d.objid::regprocedure
		  FROM pg_catalog.pg_depend d
		 WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
		   AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
		   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'vectorbea')
		   AND d.deptype = 'e'
	LOOP
		EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
	END LOOP;
END
$$;

-- A scheduler waiting for the extension to appear in its database.
SELECT pg_catalog.pg_notify('vectorbea_scheduler', 'installed');

/*
 * pg_dump dumps no rows of an extension's tables unless they are marked as
 * configuration: these hold the users' data, so all are (model_prices only
 * the rows that are not the seeded list, which CREATE EXTENSION writes
 * again).  pg_dump loads them in foreign-key order.
 */
SELECT pg_catalog.pg_extension_config_dump('@extschema@.workflows', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.runs', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.nodes', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.events', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.approvals', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.provider_keys', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.model_prices', 'WHERE source = ''user''');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.nodes', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.approvals', 'id')::regclass, '');
