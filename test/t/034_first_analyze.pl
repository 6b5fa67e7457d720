# The engine's tables are analysed by the scheduler as soon as they have
# outgrown their statistics (src/first_analyze.c), not at autovacuum's next
# visit: a worker session that prepared its claim while the tables were
# empty, or analysed but small, keeps a plan that reads them whole until
# something invalidates it.  Autovacuum is off here, so only the engine
# and the test analyse.  The scheduler analyses, first thing in each pass,
# whatever has outgrown its statistics: that something is NOT analysed is
# checked after a pass that began later (vb_scheduler_pass).
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use VbTest;

my $node = vb_server('first_analyze', "autovacuum = off\n");
sub sql { return $node->safe_psql('postgres', shift); }

sql(q{CREATE EXTENSION vectorbea CASCADE});
sql(q{SELECT vectorbea.define_workflow('one', '{"nodes":[{"id":"a","activity":"fa"}]}')});

# A task leased for 30 minutes: the scheduler's next due time, which the
# claims below (leases of an hour) do not move, so only the engine's ask
# for an analysis wakes it.
sql(q{SELECT vectorbea.define_workflow('other', '{"nodes":[{"id":"a","activity":"ot"}]}')});
sql(q{SELECT vectorbea.start_run('other', '{}')});
is(sql(q{SELECT count(*) FROM vectorbea.claim_tasks('o', ARRAY['ot'], 1, '30 minutes')}), 1,
	'a task leased for 30 minutes');
ok(defined vb_wait_for($node, q{SELECT next_due > now() + interval '29 minutes'
		FROM vectorbea.scheduler_status()}, 't', 30),
	'the scheduler plans its next pass at that lease\'s end');

sub analyses
{
	return sql(q{SELECT coalesce(sum(analyze_count), 0) FROM pg_stat_user_tables
		WHERE schemaname = 'vectorbea' AND relname IN ('nodes', 'runs')});
}

# Blocks a claim of one task reads in the worker's session, its engine
# statements included (EXPLAIN counts the buffers of the whole call).
my $worker = $node->background_psql('postgres');
sub claim_blocks
{
	my $session = shift // $worker;
	my $plan = $session->query_safe(q{EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)
		SELECT * FROM vectorbea.claim_tasks('w', ARRAY['fa'], 1, '1 hour')});
	my $json = vb_json()->decode($plan);
	my $top = $json->[0]{Plan};
	return ($top->{'Actual Rows'}, $top->{'Shared Hit Blocks'} + $top->{'Shared Read Blocks'});
}

# The worker's plans are made now, on empty tables.
my ($rows, $blocks) = claim_blocks();
is($rows, 0, 'nothing to claim yet');
ok(vb_scheduler_pass($node), 'the scheduler made a pass after the claim');
is(analyses(), 0, 'empty tables are left to autovacuum');

# 20,000 runs of one node: nodes and runs grow far past 128 pages.
sql(q{SELECT count(*) FROM generate_series(1, 20) b,
	vectorbea.start_runs('one', array_fill(jsonb_build_object('b', b), ARRAY[1000]))});
cmp_ok(sql(q{SELECT pg_relation_size('vectorbea.nodes') / 8192}), '>=', 128,
	'nodes has grown past the threshold');

# A start of runs looks too (at most once a second per session), so a
# backlog loaded before any worker claims is analysed as well.
usleep(1_100_000);
sql(q{SELECT vectorbea.start_run('one', '{}')});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM pg_stat_user_tables
		WHERE schemaname = 'vectorbea' AND relname IN ('nodes', 'runs') AND analyze_count > 0}, '2', 30),
	'the scheduler analysed nodes and runs after a start on the grown tables');
ok($node->log_contains(qr/vectorbea scheduler: analysed vectorbea\.nodes/),
	'and said so in the log');

# The ANALYZE invalidated the worker's plans made on empty tables: its
# claims plan again, with statistics, and read a few dozen blocks.
claim_blocks();
my ($fresh_rows, $fresh_blocks) = claim_blocks();
is($fresh_rows, 1, 'a claim after the analysis');
note("blocks read by a claim planned with statistics: $fresh_blocks");
cmp_ok($fresh_blocks, '<', 100, 'the claim no longer reads the tables');

# Once analysed, the tables are autoanalyze's again: growth asks for nothing.
sql(q{SELECT count(*) FROM generate_series(1, 5) b,
	vectorbea.start_runs('one', array_fill(jsonb_build_object('b', b), ARRAY[1000]))});
usleep(1_100_000);	# so that the claim looks (once a second per session)
claim_blocks();
ok(vb_scheduler_pass($node), 'the scheduler made a pass after the growth');
is(sql(q{SELECT sum(analyze_count) FROM pg_stat_user_tables
	WHERE schemaname = 'vectorbea' AND relname IN ('nodes', 'runs')}), 2,
	'analysed tables are not analysed again');

$worker->quit;

# Analysed while small, then grown in a burst by a planner that spawns
# thousands of nodes into tables that held a few dozen (no start of runs
# to notice it): the plans made on those few pages read the grown tables
# whole, and the next claim asks the scheduler to analyse again.
sql(q{DROP EXTENSION vectorbea CASCADE});
sql(q{CREATE EXTENSION vectorbea CASCADE});
sql(q{SELECT vectorbea.define_workflow('one', '{"nodes":[{"id":"a","activity":"fa"}]}')});
sql(q{SELECT vectorbea.define_workflow('plan', '{"nodes":[{"id":"p","activity":"planner"}]}')});
sql(q{SELECT vectorbea.start_runs('one', array_fill('{}'::jsonb, ARRAY[50]))});
sql(q{SELECT vectorbea.start_runs('plan', array_fill('{}'::jsonb, ARRAY[20]))});
sql(q{ANALYZE vectorbea.nodes, vectorbea.runs});
is(analyses(), 2, 'nodes and runs analysed with 70 runs');
my $spawner = $node->background_psql('postgres');
($rows) = claim_blocks($spawner);
is($rows, 1, 'a claim planned on the small tables');
ok(vb_scheduler_pass($node), 'the scheduler made a pass after that claim');
is(analyses(), 2, 'small analysed tables are left to autovacuum');

my $spawn_log = -s $node->logfile;
# Each planner spawns 1,000 nodes: 20,000 in all.  (Leased for longer
# than the scheduler's idle hour, so that the claim does not wake it: any
# pass of the scheduler would analyse the grown table.)
is(sql(q{SELECT count(vectorbea.complete_task(t.task_id, t.lease, '{}',
			(SELECT jsonb_agg(jsonb_build_object('id', 's' || i, 'activity', 'fa'))
			   FROM generate_series(1, 1000) i)))
		   FROM vectorbea.claim_tasks('planner', ARRAY['planner'], 20, '2 hours') t}), 20,
	'20 planners spawned their nodes');
cmp_ok(sql(q{SELECT pg_relation_size('vectorbea.nodes') / 8192}), '>=', 128,
	'nodes has grown past the threshold');
is(analyses(), 2, 'spawning analyses nothing');
usleep(1_100_000);
my ($stale_rows, $stale_blocks) = claim_blocks($spawner);
is($stale_rows, 1, 'a claim on nodes grown from 70 to 20,070');
note("blocks read by a claim planned on the small tables: $stale_blocks");
ok(defined vb_wait_for($node, q{SELECT count(*) FROM pg_stat_user_tables
		WHERE schemaname = 'vectorbea' AND relname = 'nodes' AND analyze_count > 1}, '1', 30),
	'the scheduler analysed nodes again');
# The line of this analysis, not the first part's: from the spawn on.  It
# is written after ANALYZE has counted itself, so it is waited for.
ok($node->wait_for_log(qr/vectorbea scheduler: analysed vectorbea\.nodes, which had outgrown its statistics/,
		$spawn_log),
	'and said why in the log');
claim_blocks($spawner);
($fresh_rows, $fresh_blocks) = claim_blocks($spawner);
note("blocks read by a claim planned again: $fresh_blocks");
cmp_ok($fresh_blocks, '<', 100, 'the claim no longer reads the tables');
cmp_ok($stale_blocks, '>', 3 * $fresh_blocks, 'the plan of the small tables read far more');

$spawner->quit;
is(sql(q{SELECT string_agg(r.id || ': ' || v::text, E'\n') FROM vectorbea.runs r, vectorbea.verify_run(r.id) v}),
	'', 'verify_run finds no difference for any run');
$node->stop;
done_testing();
