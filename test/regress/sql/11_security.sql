-- Security fixes of 0.2.0 (issue 9): bounded usage, numbers out of range
-- named by field, reserved names in any case, workflow ownership, bounded
-- free texts, escaped timelines, strict base_url, allow-list ports and
-- IPv6 forms that embed IPv4.  Every refusal changes nothing.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
-- The master key file the base_url checks below store keys under.
DO $$ BEGIN
	EXECUTE format('COPY (SELECT %L) TO PROGRAM %L', 'first-master-key-0123456789',
				   'umask 077 && cat > vb_master_1');
END $$;

SELECT vectorbea.define_workflow('sec', '{"nodes":[{"id":"a","activity":"sec_a"}]}');

-- complete_task: usage beyond what one completion may report is refused
-- with the field named, and the task stays running.
SELECT vectorbea.start_run('sec') AS run \gset
SELECT task_id, lease FROM vectorbea.claim_tasks('w1', ARRAY['sec_a']) \gset
SELECT vectorbea.complete_task(:task_id, :'lease', '{}', usage => '{"usd": 1e400}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:task_id, :'lease', '{}', usage => '{"tokens": 1e400}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:task_id, :'lease', '{}', usage => '{"tokens": -1e400}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:task_id, :'lease', '{}', usage => '{"tokens": 1000000001}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:task_id, :'lease', '{}', usage => '{"usd": 1000000.01}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.complete_task(:task_id, :'lease', '{}', usage => '{"tokens": -5}'); \echo SQLSTATE :SQLSTATE
SELECT status, usage_tokens, usage_usd FROM vectorbea.runs WHERE id = :'run';
SELECT status FROM vectorbea.nodes WHERE id = :task_id;
-- The largest allowed usage is booked.
SELECT vectorbea.complete_task(:task_id, :'lease', '{}', usage => '{"tokens": 1000000000, "usd": 1000000}');
SELECT status, usage_tokens, usage_usd FROM vectorbea.runs WHERE id = :'run';
SELECT * FROM check_run(:'run');

-- Numbers beyond double's range name their field (no raw 22003).
SELECT vectorbea.define_workflow('sec_bad', '{"nodes":[{"id":"a","activity":"x","retry":{"multiplier":1e400}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('sec', '{}', NULL, '{"budget_usd": 1e400}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('sec', '{}', NULL, '{"budget_usd": 1000000001}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.start_run('sec') AS run_r \gset
SELECT task_id AS task_r, lease AS lease_r FROM vectorbea.claim_tasks('w1', ARRAY['sec_a']) \gset
SELECT vectorbea.fail_task(:task_r, :'lease_r', '{"message": "slow down", "class": "rate_limited", "retry_after": 1e400}'); \echo SQLSTATE :SQLSTATE
SELECT status, attempt FROM vectorbea.nodes WHERE id = :task_r;
SELECT count(*) AS workflows_named_sec_bad FROM vectorbea.workflows WHERE name = 'sec_bad';

-- Reserved names are reserved in any case.
SELECT vectorbea.define_workflow('sec_bad', '{"nodes":[{"id":"a","activity":"VECTORBEA:llm"}]}'); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('w1', ARRAY['Vectorbea:LLM']); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.append_event(:'run_r', 'APPROVAL_granted'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.append_event(:'run_r', 'run_completed'); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS custom_events FROM vectorbea.events
 WHERE run_id = :'run_r' AND upper(type) IN ('APPROVAL_GRANTED', 'RUN_COMPLETED');

-- "public" is no role: a gate given to it could never be decided.
SELECT vectorbea.define_workflow('sec_bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"x","approver_role":"public"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('sec_bad', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"x","timeout":"1h","on_timeout":"escalate","escalate_to":["vb_sec_leads","public"]}}]}'); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS workflows_named_sec_bad FROM vectorbea.workflows WHERE name = 'sec_bad';

-- A workflow belongs to the role that defined its first version.
-- vb_sec_admin stands for a superuser, so that no step below prints the
-- name of the bootstrap superuser that runs the suite.
CREATE ROLE vb_sec_owner;
CREATE ROLE vb_sec_member IN ROLE vb_sec_owner;
CREATE ROLE vb_sec_other;
CREATE ROLE vb_sec_admin SUPERUSER;
GRANT USAGE ON SCHEMA vectorbea TO vb_sec_owner, vb_sec_other;
GRANT EXECUTE ON FUNCTION vectorbea.define_workflow(text, jsonb) TO vb_sec_owner, vb_sec_other;
SET ROLE vb_sec_owner;
SELECT vectorbea.define_workflow('sec_owned', '{"nodes":[{"id":"a","activity":"sec_owned"}]}');
SET ROLE vb_sec_other;
SELECT vectorbea.define_workflow('sec_owned', '{"nodes":[{"id":"a","activity":"sec_hijacked"}]}'); \echo SQLSTATE :SQLSTATE
SET ROLE vb_sec_member;
SELECT vectorbea.define_workflow('sec_owned', '{"nodes":[{"id":"a","activity":"sec_owned_v2"}]}');
-- A superuser, no member of the owner, may add a version too.
SET ROLE vb_sec_admin;
SELECT vectorbea.define_workflow('sec_owned', '{"nodes":[{"id":"a","activity":"sec_owned_v3"}]}');
RESET ROLE;
SELECT version, created_by, definition->'nodes'->0->>'activity' AS activity
  FROM vectorbea.workflows WHERE name = 'sec_owned' ORDER BY version;

-- Free texts people write into the history are bounded.
SELECT vectorbea.define_workflow('sec_gate', '{"nodes":[
	{"id":"g","kind":"approval","approval":{"gate":"sec"}},
	{"id":"h","kind":"approval","approval":{"gate":"sec2"}}]}');
SELECT vectorbea.start_run('sec_gate') AS run_g \gset
SELECT min(id) AS gate_g FROM vectorbea.approvals WHERE run_id = :'run_g' \gset
UPDATE vectorbea.approvals SET status = 'approved', reason = repeat('x', 4097) WHERE id = :gate_g; \echo SQLSTATE :SQLSTATE
UPDATE vectorbea.approvals SET status = 'approved', decided_by = repeat('y', 257) WHERE id = :gate_g; \echo SQLSTATE :SQLSTATE
SELECT status, reason IS NULL AS no_reason FROM vectorbea.approvals WHERE id = :gate_g;
SELECT vectorbea.cancel_run(:'run_g', repeat('z', 4097)); \echo SQLSTATE :SQLSTATE
SELECT status FROM vectorbea.runs WHERE id = :'run_g';

-- timeline() shows control characters in free text escaped: a reason with
-- a line feed cannot forge a line that looks like an event.
UPDATE vectorbea.approvals
   SET status = 'approved', decided_by = E'mallory\r\n12:00:00.000 APPROVAL_GRANTED',
	   reason = E'fine\n12:00:00.000 RUN_COMPLETED → succeeded\t\u001b[2J\u2028'
 WHERE id = :gate_g;
SELECT count(*) FILTER (WHERE line ~ '[\n\r\t\u001b\u2028]') AS raw_control_characters,
	   count(*) AS lines
  FROM vectorbea.timeline(:'run_g') AS line;
SELECT regexp_replace(line, '^\S+ ', '') AS line FROM vectorbea.timeline(:'run_g') AS line
 WHERE line LIKE '%APPROVAL_GRANTED%';
SELECT vectorbea.escape_text(E'a\nb\rc\td\u0001e\u007ff\u0085g\u2029h\\i');
-- A worker name is free text too.
SELECT vectorbea.start_run('sec') AS run_w \gset
SELECT count(*) FROM vectorbea.claim_tasks(E'evil\nworker', ARRAY['sec_a']);
SELECT regexp_replace(line, '^\S+ ', '') AS line FROM vectorbea.timeline(:'run_w') AS line
 WHERE line LIKE '%STEP_STARTED%';

-- Gates closed because an earlier row of the same UPDATE ended their run
-- have no decider, like every closed gate.
SELECT vectorbea.start_run('sec_gate') AS run_two \gset
SET ROLE vb_sec_admin;
UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'cto', reason = 'no'
 WHERE run_id = :'run_two';
RESET ROLE;
SELECT node, status, decided_by, decided_role, reason, decided_at IS NOT NULL AS stamped
  FROM vectorbea.approvals WHERE run_id = :'run_two' ORDER BY id;
SELECT * FROM check_run(:'run_two');

-- A gate whose role is gone says so, and how to fix it.
CREATE ROLE vb_sec_gone;
SELECT vectorbea.define_workflow('sec_gone', '{"nodes":[{"id":"g","kind":"approval","approval":{"gate":"gone","approver_role":"vb_sec_gone"}}]}');
SELECT vectorbea.start_run('sec_gone') AS run_gone \gset
DROP ROLE vb_sec_gone;
SET ROLE vb_sec_admin;
UPDATE vectorbea.approvals SET status = 'approved' WHERE run_id = :'run_gone'; \echo SQLSTATE :SQLSTATE
RESET ROLE;

-- base_url: a provider's API root, nothing else.
SET vectorbea.master_key_file = 'vb_master_1';
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'http://user:secret@llm.example/v1'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'http://:secret@llm.example/v1'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'https://llm.example/v1?api-version=1'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'https://llm.example/v1#frag'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'https://llm.example:99999/v1'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'https://llm.example:0/v1'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'https:///v1'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'ftp://user:secret@llm.example/v1'); \echo SQLSTATE :SQLSTATE
SELECT count(*) AS keys_of_sec FROM vectorbea.provider_keys WHERE workspace = 'sec';
SELECT vectorbea.set_provider_key('sec', 'openai', 'sk-sec-1', 'http://127.0.0.1:11434/v1');
SELECT vectorbea.set_provider_key('sec', 'anthropic', 'sk-sec-2', 'https://[fd00::1]:8443/');
SELECT provider, base_url FROM vectorbea.provider_key_info WHERE workspace = 'sec' ORDER BY provider;

-- vectorbea.database is read when the server starts: a list it cannot use
-- is refused when it is set, not found at the next start (which it stopped).
ALTER SYSTEM SET vectorbea.database = 'postgres, "unterminated'; \echo SQLSTATE :SQLSTATE
SELECT 'ALTER SYSTEM SET vectorbea.database = ' || quote_literal(string_agg('db' || i, ', ')) AS too_many
  FROM generate_series(1, 17) i \gset
:too_many; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.database = 'postgres, postgres, "Other DB"';
ALTER SYSTEM RESET vectorbea.database;

-- The allow-list: entries take a port or a port range; without one, the
-- scheme's default port only.
ALTER SYSTEM SET vectorbea.llm_allowed_hosts = '127.0.0.1:99999'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.llm_allowed_hosts = '127.0.0.1:9000-8000'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.llm_allowed_hosts = '[fd00::1:8000'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.llm_allowed_hosts = 'api.example.com:'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.llm_allowed_hosts =
	'127.0.0.1, 10.0.0.0/8:8000-8099, [fd00::1]:8443, fe80::/10, localhost:11434';
SELECT pg_reload_conf();
-- Until this session has read the file (at most 10 s): each statement that
-- \gexec sends is a command of its own, and a backend takes a reload
-- between commands; a fixed sleep was a guess at how long that takes.
\o /dev/null
\set ECHO none
SELECT format('SELECT pg_sleep(0.1) WHERE current_setting(%L) <> %L', 'vectorbea.llm_allowed_hosts',
			  '127.0.0.1, 10.0.0.0/8:8000-8099, [fd00::1]:8443, fe80::/10, localhost:11434')
  FROM generate_series(1, 100) \gexec
\set ECHO all
\o
SHOW vectorbea.llm_allowed_hosts;
SELECT address, port, scheme, vectorbea.llm_address_allowed(address::inet, port, scheme) AS allowed
  FROM (VALUES ('127.0.0.1', 443, 'https'), ('127.0.0.1', 80, 'http'),
			   ('127.0.0.1', 80, 'https'), ('127.0.0.1', 5432, 'https'),
			   ('10.1.2.3', 8000, 'http'), ('10.1.2.3', 8099, 'http'), ('10.1.2.3', 8100, 'http'),
			   ('fd00::1', 8443, 'https'), ('fd00::1', 443, 'https'),
			   ('fe80::1', 443, 'https'), ('fe80::1', 8080, 'https'),
			   -- public addresses: reached through a name entry, whose port is checked first
			   ('8.8.8.8', 8080, 'https'), ('2606:4700::1111', 443, 'https'),
			   -- IPv6 forms that embed an IPv4 address are judged by it
			   ('::ffff:127.0.0.2', 443, 'https'), ('::ffff:8.8.8.8', 443, 'https'),
			   ('::127.0.0.2', 443, 'https'), ('::8.8.8.8', 443, 'https'),
			   ('64:ff9b::7f00:2', 443, 'https'), ('64:ff9b::a9fe:a9fe', 443, 'https'),
			   ('64:ff9b::808:808', 443, 'https'), ('64:ff9b:1::808:808', 443, 'https'),
			   ('2002:7f00:2::1', 443, 'https'), ('2002:c0a8:101::1', 443, 'https'),
			   ('2002:808:808::1', 443, 'https'),
			   ('2001:0:4136:e378:8000:63bf:80ff:fffd', 443, 'https'),
			   ('2001:0:4136:e378:8000:63bf:f7f7:f7f7', 443, 'https'),
			   ('::1', 443, 'https'), ('169.254.169.254', 80, 'http'))
	   AS t(address, port, scheme);
SELECT vectorbea.llm_address_allowed('127.0.0.1', 0); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.llm_address_allowed('127.0.0.1', 443, 'gopher'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.llm_address_allowed('127.0.0.1', 443, repeat('s', 100000)); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.llm_address_allowed('10.0.0.0/8', 443); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.llm_address_allowed('fd00::1/64', 443); \echo SQLSTATE :SQLSTATE
ALTER SYSTEM RESET vectorbea.llm_allowed_hosts;
SELECT pg_reload_conf();

-- vectorbea.test_resolve (the SSRF suite's resolver): name:port:address
-- entries, an IPv6 address in brackets; a name and port once.
ALTER SYSTEM SET vectorbea.test_resolve = 'model.test:8000'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.test_resolve = 'model.test:0:127.0.0.1'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.test_resolve = 'model.test:8000:localhost'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.test_resolve = 'model.test:8000:::1'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.test_resolve = 'bad_name:8000:127.0.0.1'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.test_resolve = 'a.test:80:127.0.0.1, A.test:80:[::1]'; \echo SQLSTATE :SQLSTATE
SET vectorbea.test_resolve = 'a.test:80:127.0.0.1'; \echo SQLSTATE :SQLSTATE
ALTER SYSTEM SET vectorbea.test_resolve = 'a.test:80:127.0.0.1, b.test:8000:[::1]';
ALTER SYSTEM RESET vectorbea.test_resolve;

-- Roles are cluster-wide: leave none behind.
DROP OWNED BY vb_sec_owner, vb_sec_member, vb_sec_other, vb_sec_admin;
DROP ROLE vb_sec_member, vb_sec_owner, vb_sec_other, vb_sec_admin;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
