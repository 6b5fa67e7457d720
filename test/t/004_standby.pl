# A standby runs no scheduler and changes nothing; once promoted, its
# scheduler takes over and the run in flight finishes there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $conf = qq{
shared_preload_libraries = 'vectorbea'
vectorbea.database = 'postgres'
vectorbea.scheduler_idle_timeout = '1h'
};

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', $conf);
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');
$primary->safe_psql('postgres', q{SELECT vectorbea.define_workflow('ha', '{"nodes":[
	{"id":"a","activity":"ha","retry":{"max_attempts":3,"initial":"0s","max":"0s"}},
	{"id":"b","activity":"ha","depends_on":["a"]}]}')});
my $run = $primary->safe_psql('postgres', q{SELECT vectorbea.start_run('ha')});

$primary->backup('backup');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'backup', has_streaming => 1);
$standby->start;

# A worker takes the task with a short lease and vanishes; the primary goes
# down before the lease runs out, so only the standby can act on it.
$primary->safe_psql('postgres',
	q{SELECT count(*) FROM vectorbea.claim_tasks('vanished', ARRAY['ha'], 1, '2 seconds')});
$primary->wait_for_catchup($standby);
$primary->stop('immediate');

sub count_schedulers
{
	my $node = shift;
	return $node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
}

is(count_schedulers($standby), '0', 'a standby runs no scheduler');
sleep 3;	# the lease has now run out
is($standby->safe_psql('postgres', qq{SELECT status || ' ' || attempt FROM vectorbea.nodes
	WHERE run_id = '$run' AND node = 'a'}), 'running 1', 'the standby changes nothing');

$standby->promote;
my $t0 = time;
my $seen = 0;
while (time - $t0 < 30)
{
	if (count_schedulers($standby) eq '1') { $seen = 1; last; }
	usleep(50_000);
}
ok($seen, 'after promotion the scheduler starts');

# The promoted server's scheduler ends the expired lease; a worker finishes.
my $done = 0;
$t0 = time;
while (time - $t0 < 30 && !$done)
{
	$standby->safe_psql('postgres', q{SELECT vectorbea.complete_task(task_id, lease, '{}')
		FROM vectorbea.claim_tasks('survivor', ARRAY['ha'], 10)});
	$done = $standby->safe_psql('postgres',
		qq{SELECT status = 'succeeded' FROM vectorbea.runs WHERE id = '$run'}) eq 't';
	usleep(100_000) unless $done;
}
ok($done, 'the promoted server finishes the run');
is($standby->safe_psql('postgres', qq{SELECT count(*) FROM vectorbea.events
	WHERE run_id = '$run' AND type = 'STEP_FAILED' AND data->>'class' = 'lease_expired'}),
	'1', 'the lost attempt is in the history as lease_expired');
is($standby->safe_psql('postgres', qq{SELECT count(*) FROM vectorbea.verify_run('$run')}),
	'0', 'the run verifies on the promoted server');

$standby->stop;
done_testing();
