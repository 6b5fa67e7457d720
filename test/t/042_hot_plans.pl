# 042_hot_plans.pl -- the statements of the task path read the engine's
# tables by key, whatever the statistics say.
#
# The engine keeps generic plans for its hot statements, made from the
# statistics of the moment; a plan that scans a table of runs, nodes or
# events sequentially costs each call in proportion to the table, and did
# once without any test noticing (complete_tasks' run lock read every run
# of a table of a few thousand).  With 1,000 runs of ten tasks and 400 of
# other shapes (1,400 in all), analysed, one session with auto_explain
# (nested statements included) goes through the task path twice over:
# claims of one and of several activities, of one task and of ten;
# complete_task and complete_tasks, the end of a run, the release of a
# dependent, a spawn; heartbeat, save_checkpoint and fail_task; and a pass
# of the scheduler's work (run_due_work: expired leases, deadlines, timers,
# orphaned children, approvals that time out).  No plan of
# any statement it ran, at the door or inside the engine, holds a
# sequential scan of runs, nodes or events.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('hot_plans', "autovacuum = off\n");
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $ten = join(', ', map { qq({"id": "n$_", "activity": "work"}) } 1 .. 10);
sql(qq{SELECT vectorbea.define_workflow('ten', '{"nodes": [$ten]}')});
sql(q{SELECT vectorbea.define_workflow('one', '{"nodes": [{"id": "a", "activity": "solo"}]}')});
sql(q{SELECT vectorbea.define_workflow('pair', '{"nodes": [{"id": "a", "activity": "chain"},
	{"id": "b", "activity": "chain", "depends_on": ["a"]}]}')});
sql(q{SELECT vectorbea.define_workflow('grower', '{"nodes": [{"id": "root", "activity": "grow"}]}')});
sql(q{SELECT vectorbea.define_workflow('other', '{"nodes": [{"id": "x", "activity": "other"}]}')});
sql(q{
SELECT count(*) FROM vectorbea.start_runs('ten', array_fill('{}'::jsonb, ARRAY[1000]));
SELECT count(*) FROM vectorbea.start_runs('one', array_fill('{}'::jsonb, ARRAY[100]));
SELECT count(*) FROM vectorbea.start_runs('pair', array_fill('{}'::jsonb, ARRAY[100]));
SELECT count(*) FROM vectorbea.start_runs('grower', array_fill('{}'::jsonb, ARRAY[100]));
SELECT count(*) FROM vectorbea.start_runs('other', array_fill('{}'::jsonb, ARRAY[100]));
ANALYZE;
});
is(sql('SELECT count(*) FROM vectorbea.runs'), '1400', 'the runs are there');

# Two rounds, so that each statement runs on the plan its session keeps.
my $round = q{
SELECT task_id AS t1, lease AS l1 FROM vectorbea.claim_tasks('w', ARRAY['work'], 1) \gset
SELECT vectorbea.heartbeat(:t1, :'l1');
SELECT vectorbea.save_checkpoint(:t1, :'l1', '{"step": 1}');
SELECT vectorbea.complete_task(:t1, :'l1', '{"ok": true}');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['work'], 10) \gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['other', 'work'], 6) \gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT task_id AS t2, lease AS l2 FROM vectorbea.claim_tasks('w', ARRAY['solo'], 1) \gset
SELECT vectorbea.complete_task(:t2, :'l2');
SELECT task_id AS t3, lease AS l3 FROM vectorbea.claim_tasks('w', ARRAY['chain'], 1) \gset
SELECT vectorbea.complete_task(:t3, :'l3');
SELECT task_id AS t4, lease AS l4 FROM vectorbea.claim_tasks('w', ARRAY['grow'], 1) \gset
SELECT vectorbea.complete_task(:t4, :'l4', NULL,
	'[{"id": "leaf1", "activity": "leaf"}, {"id": "leaf2", "activity": "leaf", "depends_on": ["leaf1"]}]');
SELECT task_id AS t5, lease AS l5 FROM vectorbea.claim_tasks('w', ARRAY['work'], 1) \gset
SELECT vectorbea.fail_task(:t5, :'l5', '{"message": "again"}');
SELECT vectorbea.run_due_work();
};

my $log_start = -s $node->logfile;
my $out = sql(qq{
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
$round
$round
});
my $log = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_start);

# auto_explain writes each plan as one entry: "duration: ... plan:", then
# "Query Text: ..." and the plan's lines, each indented.
my @plans = split /\n(?=\S)/, $log;
@plans = grep { /plan:\n\s+Query Text:/ } @plans;
my @engine = grep { /vectorbea\.|INSERT INTO vectorbea|FROM vectorbea/ } @plans;
cmp_ok(scalar @engine, '>', 100, 'auto_explain logged the plans of the session and of the engine inside it')
  or diag(substr($log, 0, 2000));
my %seen;
for my $want ('claim_tasks', 'complete_tasks', 'complete_task', 'fail_task', 'heartbeat', 'save_checkpoint',
	'UPDATE vectorbea.runs', 'INSERT INTO vectorbea.events')
{
	ok((grep { index($_, $want) >= 0 } @engine), "a plan of $want was logged");
}

my @scans = grep { /Seq Scan on (?:runs|nodes|events)\b/ } @engine;
is(scalar @scans, 0, 'no plan of the task path scans runs, nodes or events sequentially')
  or diag(join("\n----\n", map { substr($_, 0, 3000) } @scans[0 .. ($#scans < 2 ? $#scans : 2)]));

# The rounds did what they say (so the plans are those of real work).
is(sql(q{SELECT count(*) FILTER (WHERE status = 'succeeded') > 30,
				count(*) FILTER (WHERE node LIKE 'leaf%')
		   FROM vectorbea.nodes}), 't|4', 'tasks succeeded, and two spawns added their nodes');
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded' AND workflow = 'one'}), '2',
	'two one-task runs ended');
is(sql(q{SELECT string_agg(n.status, ',' ORDER BY n.status) FROM vectorbea.nodes n
		   JOIN vectorbea.runs r ON r.id = n.run_id
		  WHERE r.workflow = 'pair' AND n.node = 'b' AND n.status <> 'pending'}),
	'succeeded', 'the dependent the first round released, the second claimed and completed');
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_RETRIED'}), '2', 'two failures will be retried');

done_testing();
