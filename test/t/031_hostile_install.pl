# A hostile install (issue 16): look-alikes planted in schema public BEFORE
# CREATE EXTENSION vectorbea.  dbo, an ordinary login that owns the
# database (and so schema public, through pg_database_owner), plants a
# function, aggregate or operator for every name the engine's C code and its
# SQL scripts call, in every form that beats pg_catalog's where public is
# searched (VbPlants.pm, shared with 011_hostile_search_path.pl, which
# plants after the install): the oid family and "char" among the argument
# types, and op(T, T) for the operators an untyped literal selects (jsonb
# ->> 'key').  Each plant records its call and, called by a superuser,
# makes dbo a superuser.
#
# CREATE EXTENSION runs its scripts as a superuser with the extension's
# schema and pgcrypto's on the search_path.  With pgcrypto in public, a
# plant there was called during the install and stayed bound to CHECK
# constraints (public.>=(numeric, integer), public.=(oid, regclass)).  Now,
# with the library preloaded:
#   1. with pgcrypto in public, CREATE EXTENSION vectorbea (and ALTER
#      EXTENSION UPDATE) is refused before anything runs, naming a plant;
#   2. an extension schema that dbo owns, or may create objects in, is
#      refused the same way;
#   3. with pgcrypto in a schema only superusers write to, the install
#      succeeds with every plant in public, none is called, and nothing of
#      the extension depends on one;
#   4. a superuser whose search_path puts public first then drives the
#      engine (runs, claims, completions with spawn, retries, approvals,
#      keys, an llm call, budgets, prices, limits, kill switches, signals,
#      cancel, fork, purge, the views), and dbo calls the API with temp
#      tables and temp functions named like the engine's in its pg_temp:
#      no plant is called, the temp tables stay empty, the results are
#      those of a clean database, and dbo is not a superuser;
# and then on the same server restarted without preloading it:
#   5. CREATE EXTENSION vectorbea (also with check_function_bodies off, as
#      pg_restore runs it) and ALTER EXTENSION vectorbea UPDATE from 0.1.0
#      are refused by the first statements of the 0.2.0 scripts, which load
#      the library and check, before anything else of theirs runs: no plant
#      is called, nothing is installed or upgraded; with pgcrypto out of
#      public both go through.  The released 0.1.0 script asked for by name
#      has no such prelude and is not covered there (the last control).
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbPlants;
use VbTest;

my $node = vb_server('hostinst');
my $fake_port = vb_fake_start($node->basedir);
$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = '127.0.0.1:$fake_port'\n");
$node->reload;
vb_master_key($node);
# The test's own superuser sessions see pg_catalog only, so that nothing
# but the engine (or a caller that asks for it) reaches a plant.
$ENV{PGOPTIONS} = '-c search_path=pg_catalog';

sub sql { return $node->safe_psql(shift // 'postgres', shift); }
sub su { return $node->safe_psql('postgres', shift); }

# A superuser's statements with public first in the search_path.
sub su_public { return $node->safe_psql('postgres', "SET search_path = public, pg_catalog;\n" . shift); }

# dbo's statements (public first).
my $dbo_conn = $node->connstr('postgres') . ' user=dbo';

sub dbo
{
	my ($sql, $db) = @_;
	my $conn = $node->connstr($db // 'postgres') . ' user=dbo';
	my ($rc, $out, $err) = $node->psql($db // 'postgres', "SET search_path = public, pg_catalog;\n" . $sql,
		connstr => $conn);
	diag("dbo's statement failed: $err\n$sql") if $rc != 0;
	return $out;
}

# A statement that must fail: returns its error text (verbose, with the SQLSTATE).
sub fails
{
	my ($sql, $db) = @_;
	my ($rc, $out, $err) = $node->psql($db // 'postgres', "\\set VERBOSITY verbose\n$sql");
	return $rc == 0 ? "(succeeded: $out)" : $err;
}

sub planted_calls
{
	my $db = shift // 'postgres';
	return sql($db, q{SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.planted_calls});
}

sub planted_report
{
	my $db = shift // 'postgres';
	return sql($db, q{SELECT string_agg(what || ' by ' || session_role || ' (superuser ' || superuser || '): '
						|| coalesce(activity, ''), E'\n' ORDER BY id) FROM public.planted_log});
}

sub no_plant_called
{
	my ($what, $db) = @_;
	is(planted_calls($db), 0, "$what: no planted function, aggregate or operator was called")
	  or diag(planted_report($db));
	is(su(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'}), 'f', "$what: dbo is not a superuser");
}

# Objects outside the plants that depend on a plant (a constraint, a
# default, a view, an index, a policy, a trigger bound to it when it was
# created), described.
my $bound_to_plants = q{
	WITH plant AS (
		SELECT 'pg_proc'::regclass AS classid, p.oid FROM pg_proc p
		 WHERE p.pronamespace = 'public'::regnamespace AND p.proowner = 'dbo'::regrole
		UNION ALL
		SELECT 'pg_operator'::regclass, o.oid FROM pg_operator o
		 WHERE o.oprnamespace = 'public'::regnamespace AND o.oprowner = 'dbo'::regrole)
	SELECT coalesce(string_agg(DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) || ' -> '
							   || pg_describe_object(d.refclassid, d.refobjid, 0), E'\n'), '')
	  FROM pg_depend d JOIN plant p ON p.classid = d.refclassid AND p.oid = d.refobjid
	 WHERE NOT EXISTS (SELECT FROM plant q WHERE q.classid = d.classid AND q.oid = d.objid)};

# ---------------------------------------------------------------------------
# dbo owns the database; pgcrypto is installed in public first, the layout
# of many servers (and of managed ones), which puts public on the path of
# vectorbea's scripts.
su(q{CREATE ROLE dbo LOGIN NOSUPERUSER;
	 ALTER DATABASE postgres OWNER TO dbo;
	 CREATE EXTENSION pgcrypto SCHEMA public;});
is(su(q{SELECT has_schema_privilege('dbo', 'public', 'CREATE') || ' '
		|| (SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pgcrypto')}),
	'true public', 'dbo may create objects in public, where pgcrypto is');

# The names: the C code's SQL and the scripts' (statements and bodies).
my $root = "$FindBin::Bin/../..";
my ($fn, $crypto) = vb_engine_names([ glob "$root/src/*.c" ], [ glob "$root/sql/*.sql" ]);
ok($fn->{jsonb_build_object} && $fn->{format} && $fn->{pg_get_serial_sequence} && $crypto->{pgp_sym_encrypt},
	'the scan finds the calls of the C code and of the scripts');
$fn->{$_} = 1 for qw(now gen_random_uuid unnest digest pgp_sym_encrypt pgp_sym_decrypt
  sum count max min array_agg string_agg jsonb_agg jsonb_object_agg to_char date_trunc);
my @ops = split / /, '= <> < <= > >= -> ->> #> #>> #- @> <@ ? ?| ?& || + - * / % ~~ ~ !~ ~*';
vb_plant_prepare(\&dbo, 'dbo');
my @plant_opts = (
	extra_types => [qw(oid regclass regproc regprocedure regnamespace regtype regrole regoper regoperator "char")],
	unknown => 1);
vb_plant_lookalikes(\&dbo, $fn, $crypto, \@ops, @plant_opts);
my %planted = split /[|\n]/, su(q{SELECT kind, count(*) FROM public.planted_objects GROUP BY kind});
diag(sprintf('planted before CREATE EXTENSION: %d functions, %d aggregates, %d operators; %d skipped',
	$planted{function} // 0, $planted{aggregate} // 0, $planted{operator} // 0,
	su(q{SELECT count(*) FROM public.planted_skipped})));
cmp_ok(($planted{function} // 0) + ($planted{operator} // 0), '>=', 1000, 'a thousand and more look-alikes are planted');
is(su(q{SELECT string_agg(signature, ', ' ORDER BY signature) FROM public.planted_objects WHERE signature IN
		('>=(numeric, integer)', '=(oid, regclass)', '->>(jsonb, jsonb)', 'pgp_sym_encrypt(text, character varying)',
		 'jsonb_build_object(text[])', 'unnest(text[])')}),
	'->>(jsonb, jsonb), =(oid, regclass), >=(numeric, integer), jsonb_build_object(text[]), '
	  . 'pgp_sym_encrypt(text, character varying), unnest(text[])',
	'among them the ones that beat pg_catalog\'s in the scripts\' statements');

# Positive control: where public is searched, a plant wins when an object
# is created, and the dependency check sees it.
dbo(q{CREATE TABLE public.probe (x numeric CHECK (x >= 0));
	  SELECT 0::oid = 'pg_class'::regclass});
like(su($bound_to_plants), qr/constraint probe_x_check on table public\.probe -> operator public\.>=\(numeric,integer\)/,
	'control: a constraint created with public on the path is bound to the plant');
cmp_ok(planted_calls(), '>', 0, 'control: and a query with public on the path calls a plant');
dbo(q{DROP TABLE public.probe; ALTER SEQUENCE public.planted_calls RESTART; TRUNCATE public.planted_log});
is(planted_calls(), 0, 'control: the counter is reset');
my $log_offset = -s $node->logfile;

# ---------------------------------------------------------------------------
# 1. pgcrypto in public: the install is refused before anything runs.
for my $stmt ('CREATE EXTENSION vectorbea', 'CREATE EXTENSION vectorbea CASCADE',
	"CREATE EXTENSION vectorbea VERSION '0.1.0'")
{
	like(fails($stmt),
		qr/ERROR:  42501: cannot install or upgrade vectorbea: schema "public" holds (operator|function|aggregate) public\..+?, owned by role "dbo", which is not a superuser\n.*DETAIL:  .*\d+ such object\(s\) in all\.\nHINT:  .*ALTER EXTENSION pgcrypto SET SCHEMA/s,
		"$stmt: refused, naming a plant in public");
	is(su(q{SELECT count(*) FROM pg_extension WHERE extname = 'vectorbea'}) . ' '
		  . su(q{SELECT count(*) FROM pg_namespace WHERE nspname = 'vectorbea'}), '0 0',
		"$stmt: nothing was installed");
	no_plant_called($stmt);
}

# ---------------------------------------------------------------------------
# 2. The extension's schema must belong to a superuser, and no other role
# may create objects in it.  (pgcrypto moves out of public first: it is
# where a careful administrator keeps it, docs/operations.md.)
su(q{CREATE SCHEMA crypto; ALTER EXTENSION pgcrypto SET SCHEMA crypto;});
dbo(q{CREATE SCHEMA vectorbea});
like(fails('CREATE EXTENSION vectorbea'),
	qr/ERROR:  42501: cannot install or upgrade vectorbea: schema "vectorbea" belongs to role "dbo", which is not a superuser/,
	'an extension schema that dbo created is refused');
su(q{ALTER SCHEMA vectorbea OWNER TO CURRENT_USER; GRANT CREATE ON SCHEMA vectorbea TO dbo});
like(fails('CREATE EXTENSION vectorbea'),
	qr/ERROR:  42501: cannot install or upgrade vectorbea: role "dbo", which is not a superuser, may create objects in schema "vectorbea"/,
	'an extension schema where dbo may create objects is refused');
su(q{REVOKE CREATE ON SCHEMA vectorbea FROM dbo; GRANT CREATE ON SCHEMA vectorbea TO PUBLIC});
like(fails('CREATE EXTENSION vectorbea'),
	qr/ERROR:  42501: cannot install or upgrade vectorbea: role "PUBLIC", which is not a superuser, may create objects in schema "vectorbea"/,
	'an extension schema where everyone may create objects is refused');
su(q{DROP SCHEMA vectorbea});
no_plant_called('the refused installs');

# ---------------------------------------------------------------------------
# 3. pgcrypto in a superuser's schema: the install succeeds with every plant
# still in public, calls none, and nothing of it is bound to one.
su(q{CREATE EXTENSION vectorbea});
is(su(q{SELECT extversion FROM pg_extension WHERE extname = 'vectorbea'}), '0.2.0', 'the extension is installed');
no_plant_called('CREATE EXTENSION');
is(su($bound_to_plants), '', 'nothing outside the plants depends on a plant');
is(su(q{
	WITH ext AS (SELECT d.classid, d.objid FROM pg_depend d
				  WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
					AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'vectorbea')),
		 rels AS (SELECT objid AS rel FROM ext WHERE classid = 'pg_class'::regclass),
		 parts AS (SELECT classid, objid FROM ext
				   UNION ALL SELECT 'pg_constraint'::regclass, oid FROM pg_constraint WHERE conrelid IN (SELECT rel FROM rels)
				   UNION ALL SELECT 'pg_attrdef'::regclass, oid FROM pg_attrdef WHERE adrelid IN (SELECT rel FROM rels)
				   UNION ALL SELECT 'pg_rewrite'::regclass, oid FROM pg_rewrite WHERE ev_class IN (SELECT rel FROM rels)
				   UNION ALL SELECT 'pg_policy'::regclass, oid FROM pg_policy WHERE polrelid IN (SELECT rel FROM rels)
				   UNION ALL SELECT 'pg_trigger'::regclass, oid FROM pg_trigger WHERE tgrelid IN (SELECT rel FROM rels)
				   UNION ALL SELECT 'pg_class'::regclass, indexrelid FROM pg_index WHERE indrelid IN (SELECT rel FROM rels))
	SELECT count(*) FROM pg_depend d JOIN parts p ON p.classid = d.classid AND p.objid = d.objid
	  LEFT JOIN pg_proc f ON d.refclassid = 'pg_proc'::regclass AND f.oid = d.refobjid
	  LEFT JOIN pg_operator o ON d.refclassid = 'pg_operator'::regclass AND o.oid = d.refobjid
	 WHERE coalesce(f.pronamespace, o.oprnamespace) NOT IN
		   ('pg_catalog'::regnamespace, 'vectorbea'::regnamespace, 'crypto'::regnamespace)}),
	'0', 'the extension\'s objects, constraints, defaults, views, policies, triggers and indexes use pg_catalog\'s, its own and pgcrypto\'s functions and operators only');

# ---------------------------------------------------------------------------
# 4. The engine driven by a superuser with public first in its search_path.
# Its statements call the API and nothing else (no operator, no function
# by an unqualified name), so that only the engine could reach a plant;
# what they did is read back in sessions that see pg_catalog only.
su(q{GRANT USAGE ON SCHEMA vectorbea TO dbo;
	 GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA vectorbea TO dbo;
	 GRANT SELECT ON ALL TABLES IN SCHEMA vectorbea TO dbo;
	 GRANT SELECT, UPDATE (status, reason, decided_by) ON vectorbea.approvals TO dbo;});
ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'), 'the scheduler serves the database');
vb_store_key($node, 'default', 'openai', 'sk-hostile-install-0001', "http://127.0.0.1:$fake_port/v1");
is(su_public(q{SELECT vectorbea.check_provider_key('default', 'openai')}), 't', 'a key is stored and checks');
vb_fake_script({ match => { contains => 'hostile install plan' }, times => -1,
		text => vb_json()->encode({ plan => 'one more', spawn => [ { id => 'extra', activity => 'hi_extra' } ] }) });

my $wf = '{"nodes": [
	{"id": "a", "activity": "hi_work", "retry": {"max_attempts": 2, "backoff": "fixed", "initial": "1ms", "jitter": false}},
	{"id": "gate", "kind": "approval", "depends_on": ["a"], "approval": {"gate": "ship", "timeout": "1h", "approver_role": "dbo"}},
	{"id": "plan", "kind": "llm", "depends_on": ["gate"], "llm": {"provider": "openai", "model": "gpt-4o-mini",
		"prompt": "hostile install plan", "allow_spawn": {"activities": ["hi_extra"], "max_nodes": 1}}},
	{"id": "wait", "kind": "signal", "depends_on": ["plan"], "signal": {"name": "go", "timeout": "1h"}}]}';
is(su_public(qq{SELECT vectorbea.define_workflow('hi', '$wf')}), '1', 'a workflow is defined');
su_public(q{INSERT INTO vectorbea.model_prices (provider, model, input_usd_per_mtok, output_usd_per_mtok, source)
			VALUES ('openai', 'hi-model', 1.5, 2, 'user')});
is(su(q{SELECT input_usd_per_mtok || ' ' || output_usd_per_mtok FROM vectorbea.model_prices WHERE model = 'hi-model'}),
	'1.5 2', 'a price row is written through its CHECK constraints');
su_public(q{SELECT vectorbea.set_budget('default', 100, 'month');
			SELECT vectorbea.set_concurrency_limit('hi_work', 5);
			SELECT vectorbea.set_rate_limit('default', 'openai', 600);
			SELECT vectorbea.pause_workspace('elsewhere', 'hostile'); SELECT vectorbea.resume_workspace('elsewhere');
			SELECT vectorbea.disable_model('anthropic', '*', 'hostile'); SELECT vectorbea.enable_model('anthropic', '*');});
is(su(q{SELECT usd FROM vectorbea.budgets WHERE workspace = 'default'}), '100', 'a budget is set');

my $run = su_public(q{SELECT vectorbea.start_run('hi', '{"n": 1}', 'hi-key-1')});
is(su_public(q{SELECT vectorbea.start_run('hi', '{"n": 1}', 'hi-key-1')}), $run,
	'start_run with the same idempotency key returns the run');
my ($t1, $l1) = split /\|/, su_public(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', '{hi_work}')});
ok($t1, 'a task is claimed');
su_public(qq{SELECT vectorbea.heartbeat($t1, '$l1'); SELECT vectorbea.save_checkpoint($t1, '$l1', '{"step": 1}');
			 SELECT vectorbea.fail_task($t1, '$l1', '{"message": "try again"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.nodes WHERE id = $t1}, 'ready'), 'a failed attempt is retried');
my ($t2, $l2) = split /\|/, su_public(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', '{hi_work}')});
is($t2, $t1, 'the retry is claimed');
su_public(qq{SELECT vectorbea.complete_task($t2, '$l2', '{"ok": true}', '[{"id": "side", "activity": "hi_side"}]',
											 '{"tokens": 10, "usd": 0.01}')});
my ($t3, $l3) = split /\|/, su_public(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', '{hi_side}')});
su_public(qq{SELECT vectorbea.complete_task($t3, '$l3', '{"side": 1}')});
my $gate = su(qq{SELECT id FROM vectorbea.approvals WHERE run_id = '$run'});
is(dbo(qq{UPDATE vectorbea.approvals SET status = 'approved', reason = 'fine', decided_by = 'dbo'
		   WHERE id OPERATOR(pg_catalog.=) $gate RETURNING status}), 'approved', 'dbo decides the gate');
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'plan'}, 'succeeded'),
	'the llm node runs and succeeds');
my ($t4, $l4) = split /\|/, su_public(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', '{hi_extra}')});
su_public(qq{SELECT vectorbea.complete_task($t4, '$l4', '{"extra": 1}')});
su_public(qq{SELECT vectorbea.send_signal('$run', 'go', '{"go": true}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'succeeded'), 'the run succeeds');
is(su(qq{SELECT string_agg(node || '=' || status, ' ' ORDER BY node) FROM vectorbea.nodes WHERE run_id = '$run'}),
	'a=succeeded extra=succeeded gate=succeeded plan=succeeded side=succeeded wait=succeeded',
	'every node succeeded, the spawned ones included');
is(su(qq{SELECT output FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'a'}), '{"ok": true}',
	'the outputs are those given');
is(su_public(qq{SELECT vectorbea.verify_run('$run')}), '', 'verify_run is empty');
like(su_public(qq{SELECT vectorbea.timeline('$run')}), qr/RUN_COMPLETED/, 'timeline shows the run');
like(su_public(qq{SELECT vectorbea.graph('$run')}), qr/gate/, 'graph draws it');
is(vb_json()->decode(su_public(qq{SELECT vectorbea.replay('$run')}))->{status}, 'succeeded', 'replay rebuilds it');
my $fork = su_public(qq{SELECT vectorbea.fork_run('$run', 'wait')});
ok($fork, 'fork_run makes a new run');
my $run2 = su_public(q{SELECT vectorbea.start_run('hi', '{"n": 2}')});
su_public(qq{SELECT vectorbea.pause_run('$run2', 'hostile'); SELECT vectorbea.resume_run('$run2');
			 SELECT vectorbea.cancel_run('$run2', 'hostile'); SELECT vectorbea.cancel_run('$fork', 'hostile')});
is(su(qq{SELECT status FROM vectorbea.runs WHERE id = '$run2'}), 'cancelled', 'a run is cancelled');
like(su_public(q{SELECT pg_catalog.count(*) FROM vectorbea.controls; SELECT pg_catalog.count(*) FROM vectorbea.spend;
				 SELECT pg_catalog.count(*) FROM vectorbea.dead_letters;
				 SELECT pg_catalog.count(*) FROM vectorbea.provider_key_info}),
	qr/^\d+\n\d+\n0\n1$/, 'the views answer');
su_public(q{SELECT vectorbea.run_due_work(); SET vectorbea.test_clock_offset = '1h'; SELECT vectorbea.purge_runs('1min')});
is(su(q{SELECT count(*) FROM vectorbea.runs}), '0', 'purge_runs purges the finished runs');
no_plant_called('a superuser with public first, driving the engine');

# ---------------------------------------------------------------------------
# pg_temp: dbo's session has temp tables named like the engine's tables and
# temp functions named like what it calls.  Functions and operators are
# never looked up in pg_temp, and every table the engine names is
# qualified: they stay empty, and the API works.
my $temp = join("\n", map { "CREATE TEMP TABLE $_ (LIKE vectorbea.$_);" }
	  qw(workflows runs nodes events approvals provider_keys model_prices signals budgets))
  . q{
CREATE FUNCTION pg_temp.jsonb_build_object(VARIADIC text[]) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{"temp": 1}'::jsonb $$;
CREATE FUNCTION pg_temp.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT 'epoch'::timestamptz $$;
SET search_path = pg_temp, public, pg_catalog;
SELECT vectorbea.define_workflow('hi_temp', '{"nodes": [{"id": "t", "activity": "hi_temp"}]}');
SELECT vectorbea.start_run('hi_temp') IS NOT NULL;
SELECT pg_catalog.count(*) FROM vectorbea.claim_tasks('w2', '{hi_temp}');
SELECT pg_catalog.count(*) FROM pg_temp.workflows;
SELECT pg_catalog.count(*) FROM pg_temp.runs;
SELECT pg_catalog.count(*) FROM pg_temp.nodes;
SELECT pg_catalog.count(*) FROM pg_temp.events;};
is(dbo($temp), "1\nt\n1\n0\n0\n0\n0", 'dbo\'s temp tables stay empty while its API calls work');
is(su(q{SELECT n.status FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id WHERE r.workflow = 'hi_temp'}),
	'running', 'the run and the claim are in the engine\'s tables');
no_plant_called('dbo\'s calls with pg_temp objects');

# ---------------------------------------------------------------------------
# An upgrade is checked like an install: a database where 0.1.0 went in
# before anything was planted, pgcrypto in public, then a plant.
su(q{CREATE DATABASE upg OWNER dbo});
sql('upg', q{CREATE EXTENSION pgcrypto SCHEMA public; CREATE EXTENSION vectorbea VERSION '0.1.0'});
vb_plant_prepare(sub { dbo(shift, 'upg') }, 'dbo');
dbo(q{SET search_path = pg_catalog;
	  CREATE FUNCTION public.ge(numeric, integer) RETURNS boolean LANGUAGE plpgsql AS
		$$ BEGIN PERFORM public.planted_hit('>=(numeric, integer)'); RETURN $1 OPERATOR(pg_catalog.>=) $2; END $$;
	  CREATE OPERATOR public.>= (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = public.ge);}, 'upg');
like(fails('ALTER EXTENSION vectorbea UPDATE', 'upg'),
	qr/ERROR:  42501: cannot install or upgrade vectorbea: schema "public" holds operator public\.>=\(numeric,integer\), owned by role "dbo"/,
	'ALTER EXTENSION UPDATE is refused while the plant is there');
is(sql('upg', q{SELECT extversion FROM pg_extension WHERE extname = 'vectorbea'}), '0.1.0', 'the extension stays at 0.1.0');
dbo(q{DROP OPERATOR public.>= (numeric, integer); DROP FUNCTION public.ge(numeric, integer)}, 'upg');
sql('upg', q{ALTER EXTENSION vectorbea UPDATE});
is(sql('upg', q{SELECT extversion FROM pg_extension WHERE extname = 'vectorbea'}), '0.2.0', 'without it the upgrade goes through');
no_plant_called('the upgrade', 'upg');

# ---------------------------------------------------------------------------
# 5. A server that does not preload the library.  No hook is in place when
# CREATE or ALTER EXTENSION starts: the library is loaded by the script.
# The 0.2.0 scripts (vectorbea--0.2.0.sql, which the Makefile makes of the
# 0.1.0 script and the upgrade script, and the upgrade script itself) load
# it and check in their first statements, before any of theirs looks an
# operator or a function up in the path.  Database np: pgcrypto in public,
# 0.1.0 installed before anything was planted there, then every look-alike
# of the first part planted.
# (vectorbea.database stays set: a library loaded after startup does not
# make it a postmaster setting, which would end the session with FATAL.)
$node->adjust_conf('postgresql.conf', 'shared_preload_libraries', "''");
$node->restart;
is(su(q{SHOW shared_preload_libraries}), '', 'the server no longer preloads vectorbea');
su(q{CREATE DATABASE np OWNER dbo});
sql('np', q{CREATE EXTENSION pgcrypto SCHEMA public; CREATE EXTENSION vectorbea VERSION '0.1.0'});
vb_plant_prepare(sub { dbo(shift, 'np') }, 'dbo');
vb_plant_lookalikes(sub { dbo(shift, 'np') }, $fn, $crypto, \@ops, @plant_opts);
is(sql('np', q{SELECT count(*) FROM public.planted_objects}), su(q{SELECT count(*) FROM public.planted_objects}),
	'np: the same look-alikes are planted');

# A statement in a new session, where nothing has loaded the library yet
# (its settings are placeholders, which pg_settings leaves out): the
# error text, as fails() gives it.
sub fails_unloaded
{
	my ($sql, $db) = @_;
	my ($rc, $out, $err) = $node->psql($db,
		"\\set VERBOSITY verbose\nSELECT count(*) FROM pg_settings WHERE name LIKE 'vectorbea.%';\n$sql");
	(my $what = $sql) =~ s/\n/ /g;
	is((split /\n/, $out)[0], '0', "$what: the library is not loaded in the session before it");
	return $rc == 0 ? "(succeeded: $out)" : $err;
}

my $refusal = qr/ERROR:  42501: cannot install or upgrade vectorbea: schema "public" holds (operator|function|aggregate) public\..+?, owned by role "dbo", which is not a superuser\n/;
my $no_check_function = q{SELECT count(*) FROM pg_proc WHERE prosrc = 'vectorbea_install_check'};

# (For the upgrade the prelude is a guard for what may come at the script's
# top later: the statement after it is a C function, which would load the
# library too, and none before that looks an operator up.  The install's
# is the prelude or nothing: the 0.1.0 script's first C function comes
# after its seeded prices, as the control at the end shows.)
like(fails_unloaded('ALTER EXTENSION vectorbea UPDATE', 'np'), $refusal,
	'without preload, ALTER EXTENSION UPDATE is refused, naming a plant');
is(sql('np', q{SELECT extversion FROM pg_extension WHERE extname = 'vectorbea'}) . ' '
	  . sql('np', q{SELECT to_regprocedure('vectorbea.escape_text(text)') IS NULL}),
	'0.1.0 t', 'the extension stays at 0.1.0, without the functions of 0.2.0');
no_plant_called('ALTER EXTENSION UPDATE without preload', 'np');

sql('np', q{DROP EXTENSION vectorbea; DROP SCHEMA IF EXISTS vectorbea});
no_plant_called('DROP EXTENSION', 'np');
# Also with check_function_bodies = off, as pg_restore sets it (the
# prelude's SELECT loads the library whether CREATE FUNCTION does or not).
for my $stmt ('CREATE EXTENSION vectorbea', 'CREATE EXTENSION vectorbea CASCADE',
	"SET check_function_bodies = off;\nCREATE EXTENSION vectorbea")
{
	(my $what = $stmt) =~ s/\n/ /g;
	like(fails_unloaded($stmt, 'np'), $refusal, "without preload, $what: refused, naming a plant");
	is(sql('np', q{SELECT count(*) FROM pg_extension WHERE extname = 'vectorbea'}) . ' '
		  . sql('np', q{SELECT count(*) FROM pg_namespace WHERE nspname = 'vectorbea'}) . ' '
		  . sql('np', $no_check_function),
		'0 0 0', "without preload, $what: nothing was installed");
	no_plant_called("without preload, $what", 'np');
}

# With pgcrypto moved out of public, the same installs go through without
# preload: the prelude's check passes, and its function is gone after it.
sql('np', q{CREATE SCHEMA crypto; ALTER EXTENSION pgcrypto SET SCHEMA crypto});
sql('np', q{CREATE EXTENSION vectorbea VERSION '0.1.0'});
unlike(fails_unloaded('ALTER EXTENSION vectorbea UPDATE', 'np'), qr/ERROR/,
	'without preload, ALTER EXTENSION UPDATE goes through with pgcrypto out of public');
is(sql('np', q{SELECT extversion FROM pg_extension WHERE extname = 'vectorbea'}) . ' ' . sql('np', $no_check_function),
	'0.2.0 0', 'the upgrade is done, and the check\'s function is gone');
sql('np', q{DROP EXTENSION vectorbea; DROP SCHEMA IF EXISTS vectorbea});
unlike(fails_unloaded("SET check_function_bodies = off;\nCREATE EXTENSION vectorbea", 'np'), qr/ERROR/,
	'without preload, CREATE EXTENSION goes through with pgcrypto out of public');
is(sql('np', q{SELECT extversion FROM pg_extension WHERE extname = 'vectorbea'}) . ' ' . sql('np', $no_check_function),
	'0.2.0 0', 'the install is done, and the check\'s function is gone');
is(sql('np', $bound_to_plants), '', 'nothing outside the plants depends on a plant');
no_plant_called('the installs without preload', 'np');

unlike(slurp_file($node->logfile, $log_offset), qr/LOG:  vectorbea planted call: /,
	'the server log records no planted call after the control');

# Control for part 5, and the case that stays open: the released 0.1.0
# script asked for by name (VERSION '0.1.0') has no prelude.  On a server
# that does not preload the library, nothing checks before its first C
# function; before it, its seeded prices call public.>=(numeric, integer)
# as the superuser.  The plant makes dbo a superuser, and the hook's check
# at the statement after that function, in the same transaction, then
# counts dbo's plants as a superuser's: the install goes through.
# (docs/operations.md: install 0.1.0 by name only on a server that preloads
# the library, or with pgcrypto out of public.)  Last, since dbo stays a
# superuser.
sql('np', q{DROP EXTENSION vectorbea; DROP SCHEMA IF EXISTS vectorbea; ALTER EXTENSION pgcrypto SET SCHEMA public});
is(su(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'}), 'f', 'control: dbo is not a superuser before');
unlike(fails_unloaded("CREATE EXTENSION vectorbea VERSION '0.1.0'", 'np'), qr/ERROR/,
	'control: without preload, the 0.1.0 script asked for by name goes through');
cmp_ok(planted_calls('np'), '>', 0, 'control: it called plants (this case is not covered)');
is(su(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'}), 't', 'control: and dbo is a superuser');
done_testing();
