# Schedules through pg_cron: schedule_workflow() makes a pg_cron job that
# starts a run of a workflow at each tick, with an idempotency key per
# tick (a tick run twice starts one run); unschedule_workflow() stops it.
# Debian 12's pg_cron (1.4) has no seconds syntax, so the test waits for
# one tick of '* * * * *' (up to a minute).
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = PostgreSQL::Test::Cluster->new('schedules');
$node->init;
$node->append_conf('postgresql.conf', PostgreSQL::Test::Utils::slurp_file($ENV{VB_TEST_CONF}))
  if $ENV{VB_TEST_CONF};
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'vectorbea, pg_cron'
vectorbea.database = 'postgres'
cron.database_name = 'postgres'
# pg_cron connects to run a job; the test server trusts local connections.
cron.host = '@{[ $node->host ]}'
});
$node->start;
sub sql { return $node->safe_psql('postgres', shift); }

sql('CREATE EXTENSION vectorbea CASCADE');
sql(q{SELECT vectorbea.define_workflow('nightly', '{"nodes":[{"id":"report","activity":"sc_report"}]}')});

# Without pg_cron the helper says what to install.
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT vectorbea.schedule_workflow('every2', '* * * * *', 'nightly', '{"kind": "tick"}')});
isnt($rc, 0, 'without pg_cron: refused');
like($err, qr/schedules need the pg_cron extension.*postgresql-15-cron/s, 'without pg_cron: says what to install');

sql('CREATE EXTENSION pg_cron');
my $job = sql(q{SELECT vectorbea.schedule_workflow('every2', '* * * * *', 'nightly', '{"kind": "tick"}')});
like($job, qr/^\d+$/, 'scheduled: a pg_cron job id');
is(sql(q{SELECT jobname || ' ' || schedule FROM cron.job WHERE jobid = } . $job), 'vectorbea:every2 * * * * *',
	'the job is named after the schedule');

ok(defined vb_wait_for($node, q{SELECT count(*) >= 1 FROM vectorbea.runs WHERE workflow = 'nightly'}, 't', 75),
	'a tick starts a run');
# In one statement: a tick may start another run between two.
is(sql(q{SELECT count(*) FILTER (WHERE (input->>'kind') = 'tick'
						   AND idempotency_key LIKE 'schedule:every2@' || current_user || ':%') = count(*)
		   FROM vectorbea.runs WHERE workflow = 'nightly'}), 't',
	'every run has the input and a per-tick idempotency key');
is(sql(q{SELECT count(DISTINCT idempotency_key) = count(*) FROM vectorbea.runs WHERE workflow = 'nightly'}), 't',
	'one run per tick');

# The same tick run twice starts one run: run the job's command twice.
my $command = sql(q{SELECT command FROM cron.job WHERE jobname = 'vectorbea:every2'});
my $twice = sql(qq{SELECT count(DISTINCT r) FROM (SELECT ($command) AS r UNION ALL SELECT ($command)) x});
is($twice, '1', 'the same tick twice starts one run');

ok(sql(q{SELECT vectorbea.unschedule_workflow('every2')}) eq 't', 'unscheduled');
is(sql(q{SELECT count(*) FROM cron.job WHERE jobname = 'vectorbea:every2'}), '0', 'the job is gone');
is(sql(q{SELECT count(*) FROM vectorbea.runs r, LATERAL vectorbea.verify_run(r.id)}), '0',
	'every run is consistent');

# Bad input changes nothing.
($rc, $out, $err) = $node->psql('postgres', q{SELECT vectorbea.schedule_workflow('x y', '1 minute', 'nightly')});
like($err, qr/invalid schedule name "x y"/, 'a bad name is refused');
($rc, $out, $err) = $node->psql('postgres', q{SELECT vectorbea.schedule_workflow(repeat('n', 100000) || ' x', '1 minute', 'nightly')});
like($err, qr/invalid schedule name "nnnnnnnnnnnnnnnnnnnn… \(100002 characters\)"/, 'a long bad name is cut in the message');
($rc, $out, $err) = $node->psql('postgres', q{SELECT vectorbea.schedule_workflow('ghost', '* * * * *', repeat('w', 50))});
like($err, qr/workflow "wwwwwwwwwwwwwwwwwwww… \(50 characters\)" does not exist/, 'so is a long workflow name');
($rc, $out, $err) = $node->psql('postgres', q{SELECT vectorbea.schedule_workflow('ghost', '* * * * *', 'nope')});
like($err, qr/workflow "nope" does not exist/, 'an unknown workflow is refused');
($rc, $out, $err) = $node->psql('postgres', q{SELECT vectorbea.schedule_workflow('bad', 'every tuesday', 'nightly')});
like($err, qr/invalid schedule/, 'a schedule pg_cron cannot read is refused');
is(sql(q{SELECT count(*) FROM cron.job}), '0', 'no job was left behind');
($rc, $out, $err) = $node->psql('postgres', q{SELECT vectorbea.schedule_workflow(repeat('s', 54), '* * * * *', 'nightly')});
like($err, qr/invalid schedule name "s{20}… \(54 characters\)".*1 to 53 characters/s,
	"a name longer than pg_cron's job names allow is refused, not cut into another's");
($rc, $out, $err) = $node->psql('postgres', q{SELECT vectorbea.schedule_workflow('long', repeat('*', 5000), 'nightly')});
like($err, qr/invalid schedule "\*{20}… \(5000 characters\)"/, 'a long schedule is cut in the message');
($rc, $out, $err) = $node->psql('postgres',
	q{SELECT vectorbea.schedule_workflow('big', '0 3 * * *', 'nightly', jsonb_build_object('blob', repeat('x', 1100000)))});
like($err, qr/ERROR:  the run input is too large/, 'an input that every tick would refuse is refused at once');
($rc, $out, $err) = $node->psql('postgres',
	q{SELECT vectorbea.schedule_workflow('opts', '0 3 * * *', 'nightly', '{}', '{"priority": "high"}')});
like($err, qr/ERROR: .*priority/, 'so are options that every tick would refuse');
is(sql(q{SELECT count(*) FROM cron.job}) . ' jobs, ' . sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'nightly'}),
	'0 jobs, ' . sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'nightly' AND idempotency_key IS NOT NULL}),
	'no job was left, and the checks started no run');
is(sql(q{SELECT vectorbea.unschedule_workflow('never-made')}), 'f', 'unscheduling an unknown name: false');

# ---------------------------------------------------------------------------
# Roles: each schedules as itself, its workspace included.
# ---------------------------------------------------------------------------
sql(q{
CREATE ROLE acme;
CREATE ROLE t_a LOGIN IN ROLE acme;
CREATE ROLE t_b LOGIN;
GRANT USAGE ON SCHEMA vectorbea, cron TO t_a, t_b;
GRANT EXECUTE ON FUNCTION vectorbea.schedule_workflow(text, text, text, jsonb, jsonb),
	vectorbea.unschedule_workflow(text), vectorbea.start_run(text, jsonb, text, jsonb) TO t_a, t_b;
SELECT vectorbea.grant_workspace('acme', 'acme');});
sub as_role
{
	my ($role, $query) = @_;
	return $node->psql('postgres', "SET ROLE $role; $query");
}
($rc, $out, $err) = as_role('t_b',
	q{SELECT vectorbea.schedule_workflow('report', '0 3 * * *', 'nightly', '{}', '{"workspace": "acme"}')});
like($err, qr/ERROR: .*acme/, "a role may not schedule runs into another tenant's workspace");
($rc, $out, $err) = as_role('t_a',
	q{SELECT vectorbea.schedule_workflow('report', '0 3 * * *', 'nightly', '{"who": "a"}', '{"workspace": "acme"}')});
is($rc, 0, "acme's role schedules into acme") or diag($err);
($rc, $out, $err) = as_role('t_b', q{SELECT vectorbea.schedule_workflow('report', '0 3 * * *', 'nightly', '{"who": "b"}')});
is($rc, 0, 'another role schedules the same name') or diag($err);
is(sql(q{SELECT string_agg(username || ' ' || jobname, ', ' ORDER BY username) FROM cron.job}),
	't_a vectorbea:report, t_b vectorbea:report', 'two jobs, one per role');
# One tick of both jobs, each run as pg_cron runs it: as its role.
for my $role ('t_a', 't_b')
{
	my $command = sql(qq{SELECT command FROM cron.job WHERE username = '$role'});
	($rc, $out, $err) = as_role($role, $command);
	is($rc, 0, "$role\'s job ran") or diag($err);
}
is(sql(q{SELECT string_agg(input->>'who' || ' ' || workspace || ' ' || split_part(idempotency_key, ':', 2), ', '
                           ORDER BY input->>'who')
           FROM vectorbea.runs WHERE idempotency_key LIKE 'schedule:report@%'}),
	'a acme report@t_a, b default report@t_b',
	"the same tick of two roles' schedules of one name started a run each, acme's in acme");
($rc, $out, $err) = as_role('t_b', q{SELECT vectorbea.unschedule_workflow('report')});
is($out, 't', 'a role unschedules its own job');
is(sql(q{SELECT string_agg(username, ', ') FROM cron.job}), 't_a', "and not another role's of the same name");
sql(q{SELECT cron.unschedule(jobid) FROM cron.job});

# ---------------------------------------------------------------------------
# The database owner's search_path does not reach a superuser's job.
# ---------------------------------------------------------------------------
# pg_cron runs a job with the database's search_path, which its owner sets.
# The owner (not a superuser) shadows || and jsonb with objects that make it
# a superuser when a superuser uses them; the job's command names neither.
sql(q{CREATE ROLE dbo LOGIN; ALTER DATABASE postgres OWNER TO dbo;});
$node->safe_psql('postgres', q{
CREATE SCHEMA evil;
CREATE FUNCTION evil.promote() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
	IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
		EXECUTE 'ALTER ROLE dbo SUPERUSER';
	END IF;
	RETURN true;
END $$;
CREATE FUNCTION evil.cat(a text, b text) RETURNS text LANGUAGE sql
	AS $$ SELECT pg_catalog.textcat(a, b) WHERE evil.promote() $$;
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.cat);
CREATE DOMAIN evil.jsonb AS pg_catalog.jsonb CHECK (evil.promote());
CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.promote());
}, extra_params => [ '-U', 'dbo' ]);
$job = sql(q{SELECT vectorbea.schedule_workflow('as-superuser', '0 4 * * *', 'nightly', '{"kind": "su"}')});
$command = sql(qq{SELECT command FROM cron.job WHERE jobid = $job});
($rc, $out, $err) = $node->psql('postgres', "SET search_path = evil, pg_catalog; $command");
is($rc, 0, "the superuser's job ran under the owner's search_path") or diag($err);
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'dbo'}), 'f',
	"the database owner's objects did not run: it is no superuser");
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE input->>'kind' = 'su'}), '1', 'the job started its run');
sql(q{SELECT cron.unschedule(jobid) FROM cron.job});

done_testing();
