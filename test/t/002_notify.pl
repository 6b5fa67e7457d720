# LISTEN/NOTIFY: vectorbea_tasks is sent once per activity per transaction
# when tasks become ready, vectorbea_runs when a run finishes, nothing on a
# rollback, nothing for a retry that is not due yet, and nothing when the
# notify settings are off.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('notify');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{VB_TEST_CONF}))
  if $ENV{VB_TEST_CONF};
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'vectorbea'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');
$node->safe_psql('postgres', q{
	SELECT vectorbea.define_workflow('notify', '{"nodes":[
		{"id":"a","activity":"alpha"},
		{"id":"b","activity":"alpha"},
		{"id":"c","activity":"beta","depends_on":["a","b"],
		 "retry":{"max_attempts":3,"initial":"1h","max":"1h"}}]}')});

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN vectorbea_tasks; LISTEN vectorbea_runs;');

# What the listener has received since the last call, as [channel, payload].
sub received
{
	my $out = $listener->query_safe('SELECT 1;');
	my @got;
	while ($out =~ /Asynchronous notification "([^"]+)" with payload "(.*?)" received/g)
	{
		push @got, [ $1, $2 ];
	}
	return \@got;
}

sub sql { return $node->safe_psql('postgres', shift); }

my $run = sql(q{SELECT vectorbea.start_run('notify')});
is_deeply(received(), [ [ 'vectorbea_tasks', 'alpha' ] ],
	'two ready nodes of one activity: one notification with the activity');

sql(q{CREATE TABLE held AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['alpha'], 10)});
is_deeply(received(), [], 'claiming sends nothing');

sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM held WHERE node = 'a'});
is_deeply(received(), [], 'a join with a parent left sends nothing');

sql(q{BEGIN; SELECT vectorbea.complete_task(task_id, lease, '{}') FROM held WHERE node = 'b'; ROLLBACK;});
is_deeply(received(), [], 'a rolled-back completion sends nothing');

sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM held WHERE node = 'b'});
is_deeply(received(), [ [ 'vectorbea_tasks', 'beta' ] ],
	'the join becoming ready announces its activity');

sql(q{SELECT vectorbea.fail_task(task_id, lease, '{"message": "later"}')
		FROM vectorbea.claim_tasks('w', ARRAY['beta'])});
is_deeply(received(), [], 'a retry that is not due yet is not announced');

sql(q{SET vectorbea.test_clock_offset = '2h';
	  SELECT vectorbea.complete_task(task_id, lease, '{}')
		FROM vectorbea.claim_tasks('w', ARRAY['beta'])});
is_deeply(received(), [ [ 'vectorbea_runs', qq({"run":"$run","status":"succeeded"}) ] ],
	'a finished run is announced with its id and status');

my $run2 = sql(q{SELECT vectorbea.start_run('notify')});
received();
sql(qq{SELECT vectorbea.cancel_run('$run2', 'stop')});
is_deeply(received(), [ [ 'vectorbea_runs', qq({"run":"$run2","status":"cancelled"}) ] ],
	'a cancelled run is announced');

sql(q{ALTER SYSTEM SET vectorbea.notify_tasks = off;
	  ALTER SYSTEM SET vectorbea.notify_runs = off;});
sql(q{SELECT pg_reload_conf()});
my $run3 = sql(q{SELECT vectorbea.start_run('notify')});
sql(qq{SELECT vectorbea.cancel_run('$run3')});
is_deeply(received(), [], 'with the notify settings off nothing is sent');

for my $r ($run, $run2, $run3)
{
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$r')}), '0', "run $r verifies");
}

$listener->quit;
$node->stop;
done_testing();
