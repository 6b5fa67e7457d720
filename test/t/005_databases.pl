# Several databases: one scheduler each, each acting on its own database.
# A listed database that does not exist yet is tried again with a growing
# pause (not every second, filling the log), and served once it exists.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'vectorbea'
vectorbea.database = 'postgres, "App Two", later, postgres'
vectorbea.scheduler_idle_timeout = '1h'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE "App Two"');

sub wait_for
{
	my ($db, $query, $want, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < ($timeout // 30))
	{
		my ($rc, $got) = $node->psql($db, $query);
		return 1 if $rc == 0 && $got eq $want;
		usleep(50_000);
	}
	return 0;
}

ok(wait_for('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '2'),
	'one scheduler per listed database, a quoted name included');
like(slurp_file($node->logfile), qr/WARNING:  vectorbea.database lists "postgres" more than once; it gets one scheduler/,
	'a database listed twice is named in a warning');
is($node->safe_psql('postgres', q{SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_stat_activity
	WHERE backend_type = 'vectorbea scheduler'}), 'App Two,postgres', 'each connected to its database');

my %runs;
for my $db ('postgres', 'App Two')
{
	$node->safe_psql($db, 'CREATE EXTENSION vectorbea CASCADE');
	$node->safe_psql($db, q{SELECT vectorbea.define_workflow('w', '{"nodes":[{"id":"a","activity":"a",
		"retry":{"initial":"0s","max":"0s"}}]}')});
	$runs{$db} = $node->safe_psql($db, q{SELECT vectorbea.start_run('w')});
	$node->safe_psql($db, q{SELECT count(*) FROM vectorbea.claim_tasks('gone', ARRAY['a'], 1, '1 second')});
}
for my $db ('postgres', 'App Two')
{
	ok(wait_for($db, qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$runs{$db}'
		AND type = 'STEP_RETRIED'}, '1'), "the scheduler of \"$db\" ends its expired lease");
}
# A scheduler is "working" until the end of the pass that ended the lease.
ok( wait_for('postgres', q{SELECT string_agg(database || ':' || state, ',' ORDER BY database)
	FROM vectorbea.scheduler_status() WHERE database <> 'later'}, 'App Two:idle,postgres:idle'),
	'scheduler_status lists both');

# "later" does not exist: its scheduler backs off between tries, 2 s before
# the second, 4 s before the third (the postmaster's restart delay comes on
# top).  The gaps are taken from the log's own timestamps, and only their
# lower bounds checked: a busy machine makes them longer, never shorter.
my @tries;
my $t0 = time;
while (time - $t0 < 60)
{
	@tries = slurp_file($node->logfile) =~
	  /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+) \[\d+\] FATAL:  database "later" does not exist/mg;
	last if @tries >= 3;
	usleep(100_000);
}
cmp_ok(scalar @tries, '>=', 3, 'a missing database is tried again, three times within a minute');
my @at = map { $node->safe_psql('postgres', qq{SELECT extract(epoch FROM '$_'::timestamptz)}) } @tries[0 .. 2];
my ($gap1, $gap2) = ($at[1] - $at[0], $at[2] - $at[1]);
note(sprintf('the first tries of "later": %s; gaps %.2f s, %.2f s', join(', ', @tries), $gap1, $gap2));
cmp_ok($gap1, '>=', 2, sprintf('the second try waits 2 s or more (%.2f s), not one', $gap1));
cmp_ok($gap2, '>=', 4, sprintf('the third waits longer, 4 s or more (%.2f s)', $gap2));
like($node->safe_psql('postgres', q{SELECT state FROM vectorbea.scheduler_status() WHERE database = 'later'}),
	qr/^(waiting to connect|connecting|stopped)$/, 'scheduler_status shows it waiting to connect');
$node->safe_psql('postgres', 'CREATE DATABASE later');
ok(wait_for('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'
	AND datname = 'later'}, '1', 90), 'once created, the database gets its scheduler');
for my $db ('postgres', 'App Two')
{
	is($node->safe_psql($db, q{SELECT string_agg(r.id || ': ' || v::text, E'\n')
		FROM vectorbea.runs r, vectorbea.verify_run(r.id) v}), '',
		"verify_run finds no difference for any run of \"$db\"");
}
$node->stop;
done_testing();
