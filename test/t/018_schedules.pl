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
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'nightly'
		   AND (input->>'kind') = 'tick' AND idempotency_key LIKE 'schedule:every2:%'}),
	sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'nightly'}),
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

done_testing();
