# 043_drained_plans.pl -- after a drain, the claims still find ready
# nodes through the index of ready nodes.
#
# A queue's index holds the entries of its backlog: nodes_ready_run_idx
# grows to the largest backlog it has held and keeps its pages after the
# backlog is gone.  VACUUM then records a few live entries in many pages,
# and the planner, which prices an index lookup at its share of the
# index's pages, found a run's ready nodes cheaper through the unique
# index on (run_id, node): every node of the run read and sorted, at each
# claim (runs of 10,000 nodes: 151-172 tasks a second instead of
# 1,250-1,374, bench/run drained).  src/index_costs.c tells the planner
# no more pages than the live entries fill.  Here 30,000 tasks are
# drained through the engine and vacuumed, five left ready; a wide run
# and some small ones start; then a session with auto_explain claims (one
# activity and two, one task and ten) and completes twice over, a
# completion releasing a dependent, and fails a task to be retried, with
# a pass of the scheduler's work.  With vectorbea.live_index_pages off
# (PostgreSQL's own pricing) the claims read whole runs, which shows that
# the state is the one the hook is for; in a second session, with it on,
# no plan reads a run's ready or pending nodes through the wrong index
# (vb_filtered_node_scans), or scans runs, nodes or events whole.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('drained_plans', "autovacuum = off\n");
my $sql = sub { return $node->safe_psql('postgres', $_[0]); };

$sql->('CREATE EXTENSION vectorbea CASCADE');
my $ten_nodes = join(', ', map { qq({"id": "n$_", "activity": "work"}) } 1 .. 10);
$sql->(qq{SELECT vectorbea.define_workflow('ten', '{"nodes": [$ten_nodes]}')});
$sql->(q{SELECT vectorbea.define_workflow('wide', jsonb_build_object('nodes',
	(SELECT jsonb_agg(jsonb_build_object('id', 'w' || i, 'activity', 'work')) FROM generate_series(1, 2000) i)))});
$sql->(q{SELECT vectorbea.define_workflow('left', '{"nodes": [{"id": "l", "activity": "left"}]}')});
$sql->(q{SELECT vectorbea.define_workflow('pair', '{"nodes": [{"id": "a", "activity": "chain"},
	{"id": "b", "activity": "after", "depends_on": ["a"]}]}')});

# The backlog, drained a thousand at a time as workers would.
$sql->(q{
SELECT count(*) FROM vectorbea.start_runs('ten', array_fill('{}'::jsonb, ARRAY[3000]));
SELECT count(*) FROM vectorbea.start_runs('left', array_fill('{}'::jsonb, ARRAY[5]));
} . vb_drain_sql('work'));
$sql->('VACUUM ANALYZE');
is($sql->(q{SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'ready')
			  FROM vectorbea.nodes}), '30000|5', 'the backlog was drained, five nodes of another activity left');

# New work after the drain; VACUUM and ANALYZE run later in a big table.
$sql->(q{
SELECT vectorbea.start_run('wide', '{}');
SELECT count(*) FROM vectorbea.start_runs('ten', array_fill('{}'::jsonb, ARRAY[20]));
SELECT count(*) FROM vectorbea.start_runs('pair', array_fill('{}'::jsonb, ARRAY[20]));
});
my ($pages, $tuples) = split /\|/, $sql->(q{SELECT relpages, reltuples FROM pg_class
											  WHERE oid = 'vectorbea.nodes_ready_run_idx'::regclass});
cmp_ok($pages, '>', 10 * $tuples,
	"the index of ready nodes is recorded as sparse ($tuples entries in $pages pages), as after a drain");

my $round = q{
SELECT task_id AS t1, lease AS l1 FROM vectorbea.claim_tasks('w', ARRAY['work'], 1) \gset
SELECT vectorbea.complete_task(:t1, :'l1');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['work'], 10) \gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['left', 'work'], 6) \gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT task_id AS t2, lease AS l2 FROM vectorbea.claim_tasks('w', ARRAY['chain'], 1) \gset
SELECT vectorbea.complete_task(:t2, :'l2');
SELECT task_id AS t3, lease AS l3 FROM vectorbea.claim_tasks('w', ARRAY['work'], 1) \gset
SELECT vectorbea.heartbeat(:t3, :'l3');
SELECT vectorbea.fail_task(:t3, :'l3', '{"message": "again"}');
SELECT vectorbea.run_due_work();
};

# Two rounds in a session of their own with vectorbea.live_index_pages
# set as given; returns the plans auto_explain logged.
sub plans_with
{
	my ($setting) = @_;
	my $log_start = -s $node->logfile;
	$sql->(qq{
SET vectorbea.live_index_pages = $setting;
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
} . $round . $round);
	my $log = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_start);
	my @plans = vb_plans_in($log);
	cmp_ok(scalar(grep { /Query Text: WITH (?:RECURSIVE ready_runs|acts) AS/ } @plans), '>=', 6,
		"live_index_pages $setting: auto_explain logged the plans of the claims")
	  or diag(substr($log, 0, 2000));
	return @plans;
}

# As PostgreSQL alone plans them, the claims read a run's nodes through
# the unique index: the state is the one the hook is for.
my @unpriced = vb_filtered_node_scans(plans_with('off'));
cmp_ok(scalar @unpriced, '>', 0,
	'live_index_pages off: the claims read whole runs through another index, keeping the ready nodes by filter');

my @plans = plans_with('on');
my @filtered = vb_filtered_node_scans(@plans);
is(scalar @filtered, 0, 'no plan reads ready or pending nodes of a run through the wrong index')
  or diag(join("\n----\n", @filtered));
my @scans = vb_seq_scans('runs|nodes|events', grep { /vectorbea\./ } @plans);
is(scalar @scans, 0, 'no plan scans runs, nodes or events sequentially')
  or diag(join("\n----\n", map { substr($_, 0, 3000) } @scans[0 .. ($#scans < 1 ? $#scans : 1)]));

is($sql->(q{SELECT count(*) FROM vectorbea.nodes WHERE status = 'succeeded'}), 30000 + 4 * 18,
	'the rounds claimed and completed their tasks');
is($sql->(q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'b' AND status = 'ready'}), '4',
	'each round released a dependent');
is($sql->(q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_RETRIED'}), '4',
	'each round failed a task, to be retried');

done_testing();
