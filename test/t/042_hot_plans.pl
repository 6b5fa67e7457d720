# 042_hot_plans.pl -- the statements of the task path read the engine's
# tables by key, whatever the statistics say.
#
# The engine keeps generic plans for its hot statements, made from the
# statistics of the moment; a plan that scans a table of runs, nodes or
# events sequentially costs each call in proportion to the table, and did
# once without any test noticing (complete_tasks' run lock read every run
# of a table of a few thousand).  With 1,000 runs of ten tasks and 700 of
# other shapes (1,700, and 100 children), analysed, one session with auto_explain
# (nested statements included) goes through the task path twice over:
# claims of one and of several activities, of one task and of ten;
# complete_task and complete_tasks, the end of a run, the release of a
# dependent, a spawn; heartbeat, save_checkpoint and fail_task; a decision
# on an approval gate, a signal, the end of a child run that ends its
# parent; and a pass of the scheduler's work (run_due_work: expired leases,
# deadlines, timers, orphaned children, approvals that time out).  No plan of
# any statement it ran, at the door or inside the engine, holds a
# sequential scan of runs, nodes or events.  The same again in a database
# a fifth of that size (340 runs and 20 children), where reading runs whole
# may rightly be cheaper than its index, but nodes and events are still
# read by key.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('hot_plans', "autovacuum = off\n");

# Two rounds, so that each statement runs on the plan its session keeps;
# round $i decides gate :gate$i and signals run :waiting_run$i, chosen
# before auto_explain starts (so that the test's own lookups are not
# among the plans it checks).
sub round_sql
{
	my ($i) = @_;
	return qq{
SELECT task_id AS t1, lease AS l1 FROM vectorbea.claim_tasks('w', ARRAY['work'], 1) \\gset
SELECT vectorbea.heartbeat(:t1, :'l1');
SELECT vectorbea.save_checkpoint(:t1, :'l1', '{"step": 1}');
SELECT vectorbea.complete_task(:t1, :'l1', '{"ok": true}');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['work'], 10) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['other', 'work'], 6) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT task_id AS t2, lease AS l2 FROM vectorbea.claim_tasks('w', ARRAY['solo'], 1) \\gset
SELECT vectorbea.complete_task(:t2, :'l2');
SELECT task_id AS t3, lease AS l3 FROM vectorbea.claim_tasks('w', ARRAY['chain'], 1) \\gset
SELECT vectorbea.complete_task(:t3, :'l3');
SELECT task_id AS t4, lease AS l4 FROM vectorbea.claim_tasks('w', ARRAY['grow'], 1) \\gset
SELECT vectorbea.complete_task(:t4, :'l4', NULL,
	'[{"id": "leaf1", "activity": "leaf"}, {"id": "leaf2", "activity": "leaf", "depends_on": ["leaf1"]}]');
SELECT task_id AS t5, lease AS l5 FROM vectorbea.claim_tasks('w', ARRAY['work'], 1) \\gset
SELECT vectorbea.fail_task(:t5, :'l5', '{"message": "again"}');
UPDATE vectorbea.approvals SET status = 'approved' WHERE id = :gate$i;
SELECT vectorbea.send_signal(:'waiting_run$i', 'go');
SELECT task_id AS t6, lease AS l6 FROM vectorbea.claim_tasks('w', ARRAY['kidwork'], 1) \\gset
SELECT vectorbea.complete_task(:t6, :'l6');
SELECT vectorbea.run_due_work();
};
}

# Loads database $db with $ten runs of ten tasks and $each runs of each
# other shape, analysed, runs the two rounds under auto_explain, checks
# that they did their work, and returns the plans of the engine's
# statements that auto_explain logged.
sub engine_plans
{
	my ($db, $ten, $each) = @_;
	my $sql = sub { return $node->safe_psql($db, $_[0]); };

	$node->safe_psql('postgres', "CREATE DATABASE $db") if $db ne 'postgres';
	$sql->('CREATE EXTENSION vectorbea CASCADE');
	my $ten_nodes = join(', ', map { qq({"id": "n$_", "activity": "work"}) } 1 .. 10);
	$sql->(qq{SELECT vectorbea.define_workflow('ten', '{"nodes": [$ten_nodes]}')});
	$sql->(q{SELECT vectorbea.define_workflow('one', '{"nodes": [{"id": "a", "activity": "solo"}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('pair', '{"nodes": [{"id": "a", "activity": "chain"},
		{"id": "b", "activity": "chain", "depends_on": ["a"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('grower', '{"nodes": [{"id": "root", "activity": "grow"}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('other', '{"nodes": [{"id": "x", "activity": "other"}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('gated', '{"nodes": [{"id": "g", "kind": "approval",
		"approval": {"gate": "g"}}, {"id": "after", "activity": "next", "depends_on": ["g"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('signalled', '{"nodes": [{"id": "s", "kind": "signal",
		"signal": {"name": "go"}}, {"id": "after", "activity": "next", "depends_on": ["s"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('kid', '{"nodes": [{"id": "k", "activity": "kidwork"}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('parent', '{"nodes": [{"id": "kid", "kind": "run",
		"run": {"workflow": "kid"}}]}')});
	# run_due_work() starts the children and the signal waits.
	$sql->(qq{
SELECT count(*) FROM vectorbea.start_runs('ten', array_fill('{}'::jsonb, ARRAY[$ten]));
SELECT count(*) FROM unnest(ARRAY['one', 'pair', 'grower', 'other', 'gated', 'signalled', 'parent']) AS w,
	LATERAL vectorbea.start_runs(w, array_fill('{}'::jsonb, ARRAY[$each]));
SELECT vectorbea.run_due_work();
ANALYZE;
});
	is($sql->(q{SELECT count(*) FILTER (WHERE parent_run IS NULL), count(*) FILTER (WHERE parent_run IS NOT NULL)
				  FROM vectorbea.runs}), ($ten + 7 * $each) . "|$each", "$db: the runs and the children are there");

	my $log_start = -s $node->logfile;
	$sql->(q{
SELECT (array_agg(id ORDER BY id))[1] AS gate1, (array_agg(id ORDER BY id))[2] AS gate2
  FROM vectorbea.approvals WHERE status = 'pending' \gset
SELECT (array_agg(run_id::text ORDER BY run_id))[1] AS waiting_run1,
	   (array_agg(run_id::text ORDER BY run_id))[2] AS waiting_run2
  FROM vectorbea.nodes WHERE node = 's' AND status = 'waiting' \gset
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
} . round_sql(1) . round_sql(2));
	my $log = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_start);

	# The rounds did what they say (so the plans are those of real work).
	is($sql->(q{SELECT count(*) FILTER (WHERE status = 'succeeded') > 30,
					   count(*) FILTER (WHERE node LIKE 'leaf%')
				  FROM vectorbea.nodes}), 't|4', "$db: tasks succeeded, and two spawns added their nodes");
	is($sql->(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded' AND workflow = 'one'}), '2',
		"$db: two one-task runs ended");
	is($sql->(q{SELECT string_agg(n.status, ',' ORDER BY n.status) FROM vectorbea.nodes n
				  JOIN vectorbea.runs r ON r.id = n.run_id
				 WHERE r.workflow = 'pair' AND n.node = 'b' AND n.status <> 'pending'}),
		'succeeded', "$db: the dependent the first round released, the second claimed and completed");
	is($sql->(q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_RETRIED'}), '2',
		"$db: two failures will be retried");
	is($sql->(q{SELECT r.workflow, count(*) FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
				 WHERE n.node = 'after' AND n.status = 'ready' GROUP BY 1 ORDER BY 1}),
		"gated|2\nsignalled|2", "$db: two approvals and two signals released what followed them");
	is($sql->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'parent' AND status = 'succeeded'}), '2',
		"$db: two children ended, and with them their parents");

	# auto_explain writes each plan as one entry: "duration: ... plan:",
	# then "Query Text: ..." and the plan's lines, each indented.
	my @plans = grep { /plan:\n\s+Query Text:/ } split /\n(?=\S)/, $log;
	my @engine = grep { /vectorbea\./ } @plans;
	cmp_ok(scalar @engine, '>', 100, "$db: auto_explain logged the plans of the session and of the engine")
	  or diag(substr($log, 0, 2000));
	for my $want ('claim_tasks', 'complete_tasks', 'complete_task', 'fail_task', 'heartbeat',
		'save_checkpoint', 'run_due_work', 'UPDATE vectorbea.approvals', 'send_signal',
		'UPDATE vectorbea.runs', 'INSERT INTO vectorbea.events')
	{
		ok((grep { index($_, $want) >= 0 } @engine), "$db: a plan of $want was logged");
	}
	return @engine;
}

sub no_scans_of
{
	my ($tables, $what, @plans) = @_;
	my @scans = grep { /Seq Scan on (?:$tables)\b/ } @plans;
	is(scalar @scans, 0, $what)
	  or diag(join("\n----\n", map { substr($_, 0, 3000) } @scans[0 .. ($#scans < 2 ? $#scans : 2)]));
}

no_scans_of('runs|nodes|events', 'no plan of the task path scans runs, nodes or events sequentially',
	engine_plans('postgres', 1000, 100));

# A fifth of that: 340 runs fit in a few pages, which the planner may
# rightly read whole rather than through an index; nodes (about 2,300) and
# events must still be read by key.
no_scans_of('nodes|events', 'with 340 runs, no plan scans nodes or events sequentially',
	engine_plans('small', 200, 25));

done_testing();
