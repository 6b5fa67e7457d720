-- Tenants: workspaces mapped to roles.  A matrix of roles x tables x
-- operations: a mapped workspace is seen and acted on by its roles'
-- members only; an unmapped one stays open; superusers see all.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
DROP ROLE IF EXISTS vb_t_acme, vb_t_globex, vb_t_acme_worker, vb_t_globex_worker, vb_t_outsider;
CREATE ROLE vb_t_acme;
CREATE ROLE vb_t_globex;
CREATE ROLE vb_t_acme_worker IN ROLE vb_t_acme;
CREATE ROLE vb_t_globex_worker IN ROLE vb_t_globex;
CREATE ROLE vb_t_outsider;
-- What docs/operations.md grants to people and workers.
GRANT USAGE ON SCHEMA vectorbea TO vb_t_acme, vb_t_globex, vb_t_outsider;
GRANT EXECUTE ON FUNCTION vectorbea.clock() TO vb_t_acme, vb_t_globex, vb_t_outsider;
GRANT SELECT ON vectorbea.runs, vectorbea.nodes, vectorbea.events, vectorbea.approvals,
	  vectorbea.spend, vectorbea.dead_letters, vectorbea.controls, vectorbea.signals,
	  vectorbea.approval_votes, vectorbea.provider_key_info
	TO vb_t_acme, vb_t_globex, vb_t_outsider;
GRANT UPDATE (status, decided_by, decision, output, input, reason) ON vectorbea.approvals
	TO vb_t_acme, vb_t_globex, vb_t_outsider;
GRANT EXECUTE ON FUNCTION vectorbea.claim_tasks(text, text[], integer, interval),
	  vectorbea.complete_task(bigint, uuid, jsonb, jsonb, jsonb),
	  vectorbea.fail_task(bigint, uuid, jsonb, boolean), vectorbea.heartbeat(bigint, uuid, interval),
	  vectorbea.start_run(text, jsonb, text, jsonb),
	  vectorbea.start_runs(text, jsonb[], text[], jsonb),
	  vectorbea.cancel_run(uuid, text, boolean),
	  vectorbea.pause_run(uuid, text), vectorbea.send_signal(uuid, text, jsonb, text),
	  vectorbea.pause_workspace(text, text), vectorbea.resume_workspace(text),
	  vectorbea.fork_run(uuid, text, jsonb, integer), vectorbea.append_event(uuid, text, jsonb, text),
	  vectorbea.set_run_budget(uuid, numeric, bigint), vectorbea.requeue(bigint, text),
	  vectorbea.replay(uuid, bigint), vectorbea.verify_run(uuid), vectorbea.timeline(uuid),
	  vectorbea.graph(uuid, text), vectorbea.timeline_chart(uuid), vectorbea.diff_runs(uuid, uuid)
	TO vb_t_acme, vb_t_globex, vb_t_outsider;

SELECT vectorbea.define_workflow('t', '{"nodes":[
	{"id":"work","activity":"t_work"},
	{"id":"ok","kind":"approval","approval":{"gate":"ok"},"depends_on":["work"]}]}');
SELECT vectorbea.define_workflow('f', '{"nodes":[{"id":"bad","activity":"t_fail"}]}');
-- In each workspace: a run at its approval gate, a failed run (a dead
-- letter), and a run with a task to claim.
SELECT count(vectorbea.start_run(w, '{}', NULL, jsonb_build_object('workspace', ws)))
  FROM unnest(ARRAY['acme', 'globex', 'default']) ws, unnest(ARRAY['t', 'f']) w;
SELECT count(vectorbea.complete_task(task_id, lease))
  FROM vectorbea.claim_tasks('admin', ARRAY['t_work'], 10);
SELECT count(vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent"}'))
  FROM vectorbea.claim_tasks('admin', ARRAY['t_fail'], 10);
SELECT count(vectorbea.start_run('t', '{}', NULL, jsonb_build_object('workspace', ws)))
  FROM unnest(ARRAY['acme', 'globex', 'default']) ws;
-- ... a signal sent to each running run, a quorum gate with a vote, and
-- a provider key (its row only: no key is read here).
SELECT count(vectorbea.send_signal(id, 'note', jsonb_build_object('for', workspace)))
  FROM vectorbea.runs WHERE status = 'running';
SELECT vectorbea.define_workflow('q', '{"nodes":[
	{"id":"vote","kind":"approval","approval":{"gate":"vote","quorum":2,"approvers":["ann","bob"]}}]}');
SELECT count(vectorbea.start_run('q', '{}', NULL, jsonb_build_object('workspace', ws)))
  FROM unnest(ARRAY['acme', 'globex', 'default']) ws;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ann' WHERE gate = 'vote';
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'bob' WHERE gate = 'vote';
INSERT INTO vectorbea.provider_keys (workspace, provider, ciphertext, fingerprint, set_at)
SELECT ws, 'openai', '\x00', 'fp-' || ws, now() FROM unnest(ARRAY['acme', 'globex', 'default']) ws;

-- Before any mapping, every role with the grants sees everything.
SET ROLE vb_t_outsider;
SELECT count(*) AS outsider_runs_before FROM vectorbea.runs;
RESET ROLE;

SELECT vectorbea.grant_workspace('acme', 'vb_t_acme') AS granted,
	   vectorbea.grant_workspace('globex', 'vb_t_globex') AS granted,
	   vectorbea.grant_workspace('acme', 'vb_t_acme') AS again;

-- The matrix: what each role sees of each table, by workspace.
CREATE SCHEMA vb_t;
GRANT USAGE ON SCHEMA vb_t TO PUBLIC;
CREATE FUNCTION vb_t.seen() RETURNS TABLE (tbl text, workspaces text)
LANGUAGE sql AS $$
	SELECT 'runs', string_agg(DISTINCT workspace, ',') FROM vectorbea.runs
	UNION ALL SELECT 'nodes', string_agg(DISTINCT (SELECT workspace FROM vectorbea.runs r WHERE r.id = run_id), ',') FROM vectorbea.nodes
	UNION ALL SELECT 'events', string_agg(DISTINCT (SELECT workspace FROM vectorbea.runs r WHERE r.id = run_id), ',') FROM vectorbea.events
	UNION ALL SELECT 'approvals', string_agg(DISTINCT (SELECT workspace FROM vectorbea.runs r WHERE r.id = run_id), ',') FROM vectorbea.approvals
	UNION ALL SELECT 'spend', string_agg(DISTINCT workspace, ',') FROM vectorbea.spend
	UNION ALL SELECT 'dead_letters', string_agg(DISTINCT workspace, ',') FROM vectorbea.dead_letters
	UNION ALL SELECT 'signals', string_agg(DISTINCT payload->>'for', ',') FROM vectorbea.signals
	UNION ALL SELECT 'approval_votes', string_agg(DISTINCT (SELECT workspace FROM vectorbea.runs r
			JOIN vectorbea.approvals a ON a.run_id = r.id WHERE a.id = approval_id), ',') FROM vectorbea.approval_votes
	UNION ALL SELECT 'approval_votes (count)', count(*)::text FROM vectorbea.approval_votes
	UNION ALL SELECT 'provider_key_info', string_agg(DISTINCT workspace, ',') FROM vectorbea.provider_key_info
$$;
GRANT EXECUTE ON FUNCTION vb_t.seen() TO PUBLIC;
SET ROLE vb_t_acme_worker;
SELECT 'acme_worker' AS role, * FROM vb_t.seen();
SET ROLE vb_t_globex_worker;
SELECT 'globex_worker' AS role, * FROM vb_t.seen();
SET ROLE vb_t_outsider;
SELECT 'outsider' AS role, * FROM vb_t.seen();
RESET ROLE;
SELECT 'superuser' AS role, * FROM vb_t.seen();

-- The views filter before any condition of the caller's: a cheap
-- function that notes what it is given sees none of another tenant's rows.
-- It keeps what it saw in a setting, printed sorted, so that the output
-- does not depend on the order in which a plan visits the rows.
CREATE FUNCTION vb_t.leak(view text, v text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
	PERFORM set_config('vb_t.leaked', coalesce(current_setting('vb_t.leaked', true), '')
					   || view || ': ' || v || E'\n', false);
	RETURN false;
END $$;
GRANT EXECUTE ON FUNCTION vb_t.leak(text, text) TO PUBLIC;
SET ROLE vb_t_globex_worker;
SELECT count(*) AS dead_letters FROM vectorbea.dead_letters WHERE vb_t.leak('dead_letters', workspace || ' ' || error::text);
SELECT count(*) AS spend FROM vectorbea.spend WHERE vb_t.leak('spend', workspace);
SELECT count(*) AS controls FROM vectorbea.controls WHERE vb_t.leak('controls', target);
SELECT count(*) AS provider_key_info FROM vectorbea.provider_key_info WHERE vb_t.leak('provider_key_info', workspace);
SELECT count(*) AS signals FROM vectorbea.signals WHERE vb_t.leak('signals', payload::text);
SELECT seen, count(*) AS times
  FROM regexp_split_to_table(rtrim(current_setting('vb_t.leaked'), E'\n'), E'\n') AS seen
 GROUP BY seen ORDER BY seen;
RESET ROLE;
-- Row-level security answers for current_user: a SECURITY DEFINER
-- function of globex's reads as globex whoever calls it (it read the rows
-- of its caller's workspaces: a member of acme who called it handed acme's
-- runs, history and dead letters to globex).
CREATE TABLE vb_t.acme_runs AS SELECT id FROM vectorbea.runs WHERE workspace = 'acme';
GRANT SELECT ON vb_t.acme_runs TO vb_t_globex;
CREATE FUNCTION vb_t.globex_reads() RETURNS TABLE (source text, seen text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
	SELECT 'runs', string_agg(DISTINCT workspace, ',' ORDER BY workspace) FROM vectorbea.runs
	UNION ALL SELECT 'acme events', count(*)::text FROM vectorbea.events WHERE run_id IN (SELECT id FROM vb_t.acme_runs)
	UNION ALL SELECT 'acme nodes', count(*)::text FROM vectorbea.nodes WHERE run_id IN (SELECT id FROM vb_t.acme_runs)
	UNION ALL SELECT 'dead_letters', string_agg(DISTINCT workspace, ',' ORDER BY workspace) FROM vectorbea.dead_letters
	UNION ALL SELECT 'spend', string_agg(DISTINCT workspace, ',' ORDER BY workspace) FROM vectorbea.spend
$$;
ALTER FUNCTION vb_t.globex_reads() OWNER TO vb_t_globex;
GRANT EXECUTE ON FUNCTION vb_t.globex_reads() TO vb_t_acme;
SET ROLE vb_t_acme_worker;
SELECT 'called by acme_worker' AS who, * FROM vb_t.globex_reads();
RESET ROLE;
-- ... and the member of acme, asking for itself, sees acme's.
SET ROLE vb_t_acme_worker;
SELECT string_agg(DISTINCT workspace, ',' ORDER BY workspace) AS acme_worker_sees FROM vectorbea.runs;
RESET ROLE;
-- The engine's functions act for their caller too: called from globex's
-- SECURITY DEFINER function, for globex, whoever called that.  (They
-- acted for the session's role: acme's worker, calling it, let globex
-- read acme's history, claim acme's task, and steer and start acme's
-- runs.)
SELECT n.run_id AS acme_run FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
 WHERE r.workspace = 'acme' AND n.node = 'work' AND n.status = 'ready' \gset
CREATE FUNCTION vb_t.globex_engine(acme_run uuid) RETURNS TABLE (call text, outcome text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
	calls text[] := ARRAY[
		'SELECT count(*) FROM vectorbea.timeline($1)',
		'SELECT vectorbea.replay($1)->>''status''',
		'SELECT string_agg(v, ''; '') FROM vectorbea.verify_run($1) v',
		'SELECT vectorbea.graph($1) IS NOT NULL',
		'SELECT vectorbea.timeline_chart($1) IS NOT NULL',
		'SELECT count(*) FROM vectorbea.diff_runs($1, $1)',
		'SELECT count(*) FROM vectorbea.claim_tasks(''globex'', ARRAY[''t_work''], 10) WHERE run_id = $1',
		'SELECT vectorbea.pause_run($1, ''by globex'')',
		'SELECT vectorbea.cancel_run($1, ''by globex'')',
		'SELECT vectorbea.append_event($1, ''NOTE'', ''{}'')',
		'SELECT vectorbea.send_signal($1, ''note'', ''{}'')',
		'SELECT vectorbea.fork_run($1, ''work'') IS NOT NULL',
		'SELECT vectorbea.start_run(''t'', ''{}'', NULL, ''{"workspace": "acme"}'') IS NOT NULL',
		'SELECT vectorbea.pause_workspace(''acme'', ''by globex'')'];
	c text;
	r text;
BEGIN
	FOREACH c IN ARRAY calls LOOP
		call := c;
		-- each call is undone after, so that the file's later claims are unchanged
		BEGIN
			EXECUTE c INTO r USING acme_run;
			RAISE SQLSTATE 'VBUND' USING MESSAGE = coalesce(r, 'NULL');
		EXCEPTION
			WHEN SQLSTATE 'VBUND' THEN outcome := SQLERRM;
			WHEN OTHERS THEN outcome := SQLSTATE || ': ' || SQLERRM;
		END;
		outcome := replace(outcome, acme_run::text, '<acme run>');
		RETURN NEXT;
	END LOOP;
	-- a door that raised gave its caller back its own identity
	call := 'current_user after the calls';
	outcome := current_user;
	RETURN NEXT;
END
$$;
ALTER FUNCTION vb_t.globex_engine(uuid) OWNER TO vb_t_globex;
GRANT EXECUTE ON FUNCTION vb_t.globex_engine(uuid) TO vb_t_acme;
SET ROLE vb_t_acme_worker;
SELECT * FROM vb_t.globex_engine(:'acme_run');
RESET ROLE;
-- The same calls, from a function of acme's own that its worker calls,
-- are acme's: the engine acts for the function's owner, as PostgreSQL
-- does, whoever calls it.
CREATE FUNCTION vb_t.acme_reads(acme_run uuid) RETURNS TABLE (timeline bigint, status text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS $$
	SELECT (SELECT count(*) FROM vectorbea.timeline(acme_run)), vectorbea.replay(acme_run)->>'status'
$$;
ALTER FUNCTION vb_t.acme_reads(uuid) OWNER TO vb_t_acme;
GRANT EXECUTE ON FUNCTION vb_t.acme_reads(uuid) TO vb_t_globex;
SET ROLE vb_t_globex_worker;
SELECT * FROM vb_t.acme_reads(:'acme_run');
RESET ROLE;
-- Functions of one extension with two owners (an ALTER EXTENSION UPDATE
-- run by another superuser than the CREATE: the functions it adds are
-- the updater's): a door of one owner called from a door of the other
-- still acts for the outer door's caller.  (The nested door took the
-- engine for its caller, and timeline, replay and verify_run of acme's
-- run answered globex.)
CREATE ROLE vb_t_admin2 SUPERUSER;
ALTER FUNCTION vectorbea.run_visible(uuid) OWNER TO vb_t_admin2;
ALTER FUNCTION vectorbea.timeline_body(uuid) OWNER TO vb_t_admin2;
SET ROLE vb_t_globex_worker;
SELECT (SELECT count(*) FROM vectorbea.timeline(:'acme_run')) AS timeline_lines,
	   vectorbea.replay(:'acme_run')->>'status' AS replay_status,
	   (SELECT string_agg(v, '; ') FROM vectorbea.verify_run(:'acme_run') v) AS verify_run;
SET ROLE vb_t_acme_worker;
SELECT (SELECT count(*) FROM vectorbea.timeline(:'acme_run')) AS timeline_lines,
	   vectorbea.replay(:'acme_run')->>'status' AS replay_status;
RESET ROLE;
ALTER FUNCTION vectorbea.run_visible(uuid) OWNER TO CURRENT_USER;
ALTER FUNCTION vectorbea.timeline_body(uuid) OWNER TO CURRENT_USER;
DROP ROLE vb_t_admin2;
DROP FUNCTION vb_t.globex_engine(uuid);
DROP FUNCTION vb_t.acme_reads(uuid);
DROP FUNCTION vb_t.globex_reads();
DROP TABLE vb_t.acme_runs;

-- A lease refusal describes no other tenant's task: for a non-member it
-- does not exist, as for a task id never used.
SELECT id AS acme_task FROM vectorbea.nodes n
 WHERE node = 'work' AND (SELECT workspace FROM vectorbea.runs r WHERE r.id = n.run_id) = 'acme' LIMIT 1 \gset
SET ROLE vb_t_globex_worker;
SELECT vectorbea.complete_task(:acme_task, '00000000-0000-0000-0000-000000000000');
SELECT vectorbea.fail_task(:acme_task, '00000000-0000-0000-0000-000000000000', '{"message": "x"}');
SELECT vectorbea.heartbeat(:acme_task, '00000000-0000-0000-0000-000000000000');
SET ROLE vb_t_acme_worker;
SELECT vectorbea.complete_task(:acme_task, '00000000-0000-0000-0000-000000000000');
RESET ROLE;

-- Claims: a worker role claims only in its workspace (and open ones).
SET ROLE vb_t_globex_worker;
SELECT (SELECT workspace FROM vectorbea.runs r WHERE r.id = run_id) AS claimed_in
  FROM vectorbea.claim_tasks('g1', ARRAY['t_work'], 10) ORDER BY 1;
SET ROLE vb_t_outsider;
SELECT (SELECT workspace FROM vectorbea.runs r WHERE r.id = run_id) AS claimed_in
  FROM vectorbea.claim_tasks('o1', ARRAY['t_work'], 10) ORDER BY 1;
RESET ROLE;
SELECT (SELECT workspace FROM vectorbea.runs r WHERE r.id = run_id) AS left_for_acme, status FROM vectorbea.nodes
 WHERE node = 'work' AND status = 'ready';

-- Approvals: an UPDATE of another workspace's gate changes nothing.
SET ROLE vb_t_outsider;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'outsider' WHERE status = 'pending';
SET ROLE vb_t_acme_worker;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'acme' WHERE status = 'pending';
RESET ROLE;
SELECT (SELECT workspace FROM vectorbea.runs r WHERE r.id = run_id) AS workspace, status, decided_by FROM vectorbea.approvals
 WHERE gate = 'ok' ORDER BY 1;

-- Starting and steering runs: refused outside one's workspaces, nothing written.
SELECT id AS globex_run FROM vectorbea.runs WHERE workspace = 'globex' AND status = 'running' LIMIT 1 \gset
SELECT count(*) AS runs_before FROM vectorbea.runs \gset
SET ROLE vb_t_acme_worker;
SELECT vectorbea.start_run('t', '{}', NULL, '{"workspace": "globex"}');
SELECT vectorbea.start_runs('t', ARRAY['{}']::jsonb[], NULL, '{"workspace": "globex"}');
SELECT vectorbea.cancel_run(:'globex_run');
SELECT vectorbea.pause_run(:'globex_run');
SELECT vectorbea.send_signal(:'globex_run', 'go');
SELECT vectorbea.pause_workspace('globex', 'not mine');
SELECT vectorbea.resume_workspace('globex');
SELECT vectorbea.pause_workspace('acme', 'mine') AS own_paused, vectorbea.resume_workspace('acme') AS own_resumed;
SELECT vectorbea.start_run('t', '{}', NULL, '{"workspace": "acme"}') IS NOT NULL AS own_workspace;
SELECT vectorbea.start_run('t', '{}') IS NOT NULL AS open_workspace;
RESET ROLE;
SELECT count(*) - :runs_before AS runs_added, (SELECT status FROM vectorbea.runs WHERE id = :'globex_run') AS globex_run,
	   (SELECT count(*) FROM vectorbea.paused_workspaces) AS paused_workspaces
  FROM vectorbea.runs;

-- Forks, events, budgets and requeues of another workspace's runs are
-- refused like the rest; its runs do not exist for the functions that read
-- a run (they read the tables as their owner, whom row-level security
-- lets by).  A role's own workspace works as before.
CREATE FUNCTION vb_t.try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f-]{27}', '<uuid>', 'g');
END $$;
GRANT EXECUTE ON FUNCTION vb_t.try(text) TO PUBLIC;
SELECT id AS globex_failed FROM vectorbea.runs WHERE workspace = 'globex' AND status = 'failed' \gset
SELECT id AS globex_dead FROM vectorbea.nodes WHERE run_id = :'globex_failed' AND status = 'failed' \gset
SELECT id AS acme_failed FROM vectorbea.runs WHERE workspace = 'acme' AND status = 'failed' \gset
SELECT count(*) AS globex_events_before FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.workspace = 'globex' \gset
SELECT count(*) AS globex_runs_before FROM vectorbea.runs WHERE workspace = 'globex' \gset
SET ROLE vb_t_acme_worker;
SELECT vb_t.try(format('SELECT vectorbea.fork_run(%L, %L)', :'globex_failed', 'bad')) AS fork;
SELECT vb_t.try(format('SELECT vectorbea.append_event(%L, %L)', :'globex_run', 'NOTE')) AS append_event;
SELECT vb_t.try(format('SELECT vectorbea.set_run_budget(%L, 10)', :'globex_run')) AS set_run_budget;
SELECT vb_t.try(format('SELECT vectorbea.requeue(%s)', :globex_dead)) AS requeue;
SELECT vectorbea.replay(:'globex_run') IS NULL AS no_history;
SELECT * FROM vectorbea.verify_run(:'globex_run');
SELECT count(*) AS timeline_lines FROM vectorbea.timeline(:'globex_run');
SELECT vb_t.try(format('SELECT vectorbea.graph(%L)', :'globex_run')) AS graph;
SELECT vb_t.try(format('SELECT vectorbea.timeline_chart(%L)', :'globex_run')) AS timeline_chart;
SELECT vb_t.try(format('SELECT * FROM vectorbea.diff_runs(%L, %L)', :'globex_failed', :'acme_failed')) AS diff_a;
SELECT vb_t.try(format('SELECT * FROM vectorbea.diff_runs(%L, %L)', :'acme_failed', :'globex_failed')) AS diff_b;
SELECT vectorbea.replay(:'acme_failed')->>'status' AS own_history;
SELECT count(*) AS own_differences FROM vectorbea.verify_run(:'acme_failed');
SELECT count(*) > 0 AS own_timeline FROM vectorbea.timeline(:'acme_failed');
SELECT vectorbea.graph(:'acme_failed') LIKE 'flowchart%' AS own_graph;
SELECT vectorbea.fork_run(:'acme_failed', 'bad') IS NOT NULL AS own_fork;
RESET ROLE;
SELECT (SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
		 WHERE r.workspace = 'globex') - :globex_events_before AS globex_events_added,
	   (SELECT count(*) FROM vectorbea.runs WHERE workspace = 'globex') - :globex_runs_before AS globex_runs_added,
	   (SELECT budget_usd FROM vectorbea.runs WHERE id = :'globex_run') AS globex_budget,
	   (SELECT status FROM vectorbea.runs WHERE id = :'globex_failed') AS globex_failed_run;

-- The controls view: the pauses of the workspaces a role may see, and
-- every disabled model (they stop every workspace's calls).
SELECT count(vectorbea.pause_run(id, 'paused in ' || workspace))
  FROM vectorbea.runs WHERE status = 'running' AND workspace IN ('acme', 'globex', 'default')
   AND id IN (SELECT min(id::text)::uuid FROM vectorbea.runs WHERE status = 'running' GROUP BY workspace);
SELECT vectorbea.pause_workspace('globex', 'globex stopped') IS NOT NULL AS paused,
	   vectorbea.disable_model('openai', 'gpt-4o-mini', 'too dear') AS disabled;
CREATE FUNCTION vb_t.controls_seen() RETURNS TABLE (control text, workspace text, reason text)
LANGUAGE sql AS $$
	SELECT control, CASE WHEN control = 'run paused' THEN substring(target FROM '\((.*)\)$') ELSE target END,
		   reason
	  FROM vectorbea.controls ORDER BY 1, 2
$$;
GRANT EXECUTE ON FUNCTION vb_t.controls_seen() TO PUBLIC;
SET ROLE vb_t_acme_worker;
SELECT 'acme_worker' AS role, * FROM vb_t.controls_seen();
SET ROLE vb_t_globex_worker;
SELECT 'globex_worker' AS role, * FROM vb_t.controls_seen();
SET ROLE vb_t_outsider;
SELECT 'outsider' AS role, * FROM vb_t.controls_seen();
RESET ROLE;
SELECT 'superuser' AS role, * FROM vb_t.controls_seen();
-- The leak probe again, now that the view has rows: a function cheaper
-- than the view's filter sees only what the role may (globex's, the
-- default workspace's and the disabled model).
SET ROLE vb_t_globex_worker;
SET vb_t.leaked = '';
SELECT count(*) AS controls FROM vectorbea.controls
 WHERE vb_t.leak(control, regexp_replace(target, '^[0-9a-f-]{36} ', ''));
SELECT seen, count(*) AS times
  FROM regexp_split_to_table(rtrim(current_setting('vb_t.leaked'), E'\n'), E'\n') AS seen
 GROUP BY seen ORDER BY seen;
RESET ROLE;
-- The controls' tables filter too: a role reads the pauses (with their
-- reasons), budgets and limits of the workspaces it may see; a
-- concurrency limit of every workspace ('*') is seen by all.
GRANT SELECT ON vectorbea.paused_workspaces, vectorbea.budgets, vectorbea.rate_limits,
	  vectorbea.concurrency_limits TO vb_t_acme, vb_t_globex, vb_t_outsider;
SELECT vectorbea.set_budget('globex', 10) AS g, vectorbea.set_budget('acme', 10) AS a,
	   vectorbea.set_rate_limit('globex', 'openai', 60) AS g_rate,
	   vectorbea.set_concurrency_limit('t_limited', 2, 'globex') AS g_limit,
	   vectorbea.set_concurrency_limit('t_limited', 3) AS all_limit;
CREATE FUNCTION vb_t.control_rows() RETURNS TABLE (paused text, budgets text, rate_limits text, limits text)
LANGUAGE sql AS $$
	SELECT (SELECT string_agg(workspace || ': ' || reason, ', ' ORDER BY workspace) FROM vectorbea.paused_workspaces),
		   (SELECT string_agg(workspace, ', ' ORDER BY workspace) FROM vectorbea.budgets),
		   (SELECT string_agg(workspace, ', ' ORDER BY workspace) FROM vectorbea.rate_limits),
		   (SELECT string_agg(workspace, ', ' ORDER BY workspace) FROM vectorbea.concurrency_limits
			 WHERE activity = 't_limited')
$$;
GRANT EXECUTE ON FUNCTION vb_t.control_rows() TO PUBLIC;
SET ROLE vb_t_acme_worker;
SELECT 'acme_worker' AS role, * FROM vb_t.control_rows();
SET ROLE vb_t_globex_worker;
SELECT 'globex_worker' AS role, * FROM vb_t.control_rows();
SET ROLE vb_t_outsider;
SELECT 'outsider' AS role, * FROM vb_t.control_rows();
RESET ROLE;
SELECT 'superuser' AS role, * FROM vb_t.control_rows();
SELECT vectorbea.set_budget('globex', NULL) AS g, vectorbea.set_budget('acme', NULL) AS a,
	   vectorbea.set_rate_limit('globex', 'openai', NULL) AS g_rate,
	   vectorbea.set_concurrency_limit('t_limited', NULL, 'globex') AS g_limit,
	   vectorbea.set_concurrency_limit('t_limited', NULL) AS all_limit;
SELECT vectorbea.resume_workspace('globex') IS NOT NULL AS resumed,
	   vectorbea.enable_model('openai', 'gpt-4o-mini') AS enabled;

-- Idempotency keys are a workspace's own: globex's 'order-1' neither
-- finds acme's run nor is blocked by it; within a workspace a key still
-- finds its run.
SELECT vectorbea.start_run('t', '{"who": "acme"}', 'order-1', '{"workspace": "acme"}') AS acme_order \gset
SET ROLE vb_t_globex_worker;
SELECT vectorbea.start_run('t', '{"who": "globex"}', 'order-1', '{"workspace": "globex"}') AS globex_order \gset
SELECT vectorbea.start_run('t', '{"who": "globex"}', 'order-1', '{"workspace": "globex"}') = :'globex_order' AS same_key_same_run;
SELECT vectorbea.start_run('t', '{"who": "acme"}', 'order-1', '{"workspace": "globex"}');
RESET ROLE;
SELECT :'acme_order' <> :'globex_order' AS two_runs,
	   (SELECT string_agg(workspace || ':' || (input->>'who'), ',' ORDER BY workspace) FROM vectorbea.runs
		 WHERE idempotency_key = 'order-1') AS runs_of_the_key;

-- While this transaction has a change of its own, every check reads the
-- mapping again; what a read leaves behind is freed: 20,000 checks leave
-- the backend's top memory as it was (each used to keep a copy of every
-- workspace name it read).
BEGIN;
SELECT vectorbea.grant_workspace('leaky', 'vb_t_globex') AS granted_in_transaction;
SELECT sum(used_bytes) AS top_before FROM pg_backend_memory_contexts WHERE name = 'TopMemoryContext' \gset
SET LOCAL ROLE vb_t_globex;
SELECT count(*) AS acme_checks_passed FROM generate_series(1, 20000) g WHERE vectorbea.workspace_visible(CASE WHEN g > 0 THEN 'acme' END);
RESET ROLE;
SELECT sum(used_bytes) - :top_before < 200000 AS top_memory_kept
  FROM pg_backend_memory_contexts WHERE name = 'TopMemoryContext';
ROLLBACK;

-- A revoke undone by a rollback, or by a rollback to a savepoint, leaves
-- the workspace closed, in this backend too (it had read the revoke).
BEGIN;
SELECT vectorbea.revoke_workspace('acme', 'vb_t_acme') AS revoked_in_transaction;
SET LOCAL ROLE vb_t_globex;
SELECT count(*) AS acme_runs_seen_within FROM vectorbea.runs WHERE workspace = 'acme';
ROLLBACK;
SET ROLE vb_t_globex;
SELECT count(*) AS acme_runs_seen_after_rollback FROM vectorbea.runs WHERE workspace = 'acme';
RESET ROLE;
BEGIN;
SAVEPOINT before_revoke;
SELECT vectorbea.revoke_workspace('acme', 'vb_t_acme') AS revoked_in_savepoint;
SET LOCAL ROLE vb_t_globex;
SELECT count(*) AS acme_runs_seen_within FROM vectorbea.runs WHERE workspace = 'acme';
ROLLBACK TO SAVEPOINT before_revoke;
SET LOCAL ROLE vb_t_globex;
SELECT count(*) AS acme_runs_seen_after_savepoint FROM vectorbea.runs WHERE workspace = 'acme';
COMMIT;

-- Revoking the last role opens the workspace again.
SELECT vectorbea.revoke_workspace('globex', 'vb_t_globex') AS revoked,
	   vectorbea.revoke_workspace('globex', 'vb_t_globex') AS again;
SET ROLE vb_t_outsider;
SELECT 'outsider' AS role, * FROM vb_t.seen() WHERE tbl = 'runs';
RESET ROLE;
-- Mapping needs its function's grant; bad arguments are refused.
SET ROLE vb_t_acme_worker;
SELECT vectorbea.grant_workspace('globex', 'vb_t_acme');
RESET ROLE;
SELECT vectorbea.grant_workspace(NULL, 'vb_t_acme');
SELECT vectorbea.grant_workspace('bad name!', 'vb_t_acme');
SELECT vectorbea.grant_workspace('acme', 'no_such_role');
SELECT vectorbea.grant_workspace('acme', 999999);
-- A role dropped while mapped leaves its entry (the workspace stays
-- closed); the entry is found by its OID and revoked by it.
CREATE ROLE vb_t_gone;
SELECT vectorbea.grant_workspace('gone', 'vb_t_gone');
SELECT 'vb_t_gone'::regrole::oid AS gone_oid \gset
DROP ROLE vb_t_gone;
SELECT workspace, role::oid = :gone_oid AS dropped_role FROM vectorbea.workspace_roles
 WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE oid = role);
SELECT vectorbea.revoke_workspace('gone', :gone_oid) AS revoked;
SELECT count(*) AS entries_of_gone FROM vectorbea.workspace_roles WHERE workspace = 'gone';

DROP SCHEMA vb_t CASCADE;
DROP OWNED BY vb_t_acme, vb_t_globex, vb_t_outsider;
SELECT vectorbea.revoke_workspace('acme', 'vb_t_acme');
DROP ROLE vb_t_acme_worker, vb_t_globex_worker, vb_t_acme, vb_t_globex, vb_t_outsider;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
