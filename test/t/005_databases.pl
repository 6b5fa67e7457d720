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
is($node->safe_psql('postgres', q{SELECT string_agg(database || ':' || state, ',' ORDER BY database)
	FROM vectorbea.scheduler_status() WHERE database <> 'later'}), 'App Two:idle,postgres:idle',
	'scheduler_status lists both');

# "later" does not exist: its scheduler backs off between tries.
my $t_start = $node->safe_psql('postgres', q{SELECT extract(epoch FROM pg_postmaster_start_time())});
sleep 1 while time - $t_start < 8;
my $tries = () = slurp_file($node->logfile) =~ /database "later" does not exist/g;
ok($tries >= 1 && $tries <= 4, "a missing database is tried $tries times in 8 s, not 8");
like($node->safe_psql('postgres', q{SELECT state FROM vectorbea.scheduler_status() WHERE database = 'later'}),
	qr/^(waiting to connect|connecting|stopped)$/, 'scheduler_status shows it waiting to connect');
$node->safe_psql('postgres', 'CREATE DATABASE later');
ok(wait_for('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'
	AND datname = 'later'}, '1', 70), 'once created, the database gets its scheduler');
$node->stop;
done_testing();
