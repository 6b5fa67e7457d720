# Several databases: one scheduler each, each acting on its own database.
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
vectorbea.database = 'postgres, "App Two"'
vectorbea.scheduler_idle_timeout = '1h'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE "App Two"');

sub wait_for
{
	my ($db, $query, $want) = @_;
	my $t0 = time;
	while (time - $t0 < 30)
	{
		my ($rc, $got) = $node->psql($db, $query);
		return 1 if $rc == 0 && $got eq $want;
		usleep(50_000);
	}
	return 0;
}

ok(wait_for('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '2'),
	'one scheduler per listed database, a quoted name included');
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
	FROM vectorbea.scheduler_status()}), 'App Two:idle,postgres:idle', 'scheduler_status lists both');
$node->stop;
done_testing();
