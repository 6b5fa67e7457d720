# 020_waits.pl -- timers, signals and child runs under the real scheduler,
# across a SIGKILL of the whole server.
#
# Runs of three workflows wait without a worker: "nap" sleeps one hour
# (test clock) between two tasks, "ci" waits for a signal, "parent" waits
# for a child run of "child".  Some signals are sent before their node
# waits (kept, delivered when it does), some while it waits.  With every
# wait in place, the server is killed with SIGKILL; after crash recovery
# the scheduler, on its own (nothing calls run_due_work), ends the sleeps
# when the test clock passes them, delivers the signals sent after the
# restart, and finishes the parents when their children finish.
#
# Afterwards: every run succeeded; every wait started once (one
# TIMER_STARTED, SIGNAL_AWAITED or CHILD_RUN_STARTED per node, attempt 1);
# every node completed once; one child per run node, linked both ways;
# every signal delivered to exactly one node; verify_run() finds nothing
# for any run, children included.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my $RUNS = 10;    # of each workflow

my $node = vb_server('waits');
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'the scheduler is running');
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{SELECT vectorbea.define_workflow('nap', '{"nodes":[
	{"id":"before","activity":"nap_before"},
	{"id":"nap","kind":"sleep","sleep":{"for":"1h"},"depends_on":["before"]},
	{"id":"after","activity":"nap_after","depends_on":["nap"]}]}')});
sql(q{SELECT vectorbea.define_workflow('ci', '{"nodes":[
	{"id":"wait","kind":"signal","signal":{"name":"ci_done"}},
	{"id":"after","activity":"ci_after","depends_on":["wait"]}]}')});
sql(q{SELECT vectorbea.define_workflow('child', '{"nodes":[
	{"id":"work","activity":"child_work"}]}')});
sql(q{SELECT vectorbea.define_workflow('parent', '{"nodes":[
	{"id":"kid","kind":"run","run":{"workflow":"child"},"input":{"n":"{{run.input.n}}"}},
	{"id":"after","activity":"parent_after","depends_on":["kid"]}]}')});

sql(qq{SELECT vectorbea.start_run(w, jsonb_build_object('n', i))
		 FROM unnest(ARRAY['nap', 'ci', 'parent']) w, generate_series(1, $RUNS) i});

# Half of the signals are sent before the scheduler could start their
# nodes' waits: kept, then delivered.
sql(q{SELECT vectorbea.send_signal(id, 'ci_done', jsonb_build_object('early', true, 'n', input->'n'), 'early')
		FROM vectorbea.runs WHERE workflow = 'ci' AND (input->>'n')::int % 2 = 0});

# The first task of every nap run, so that its sleep starts.
sql(qq{SELECT vectorbea.complete_task(task_id, lease, '{}')
		 FROM vectorbea.claim_tasks('w', ARRAY['nap_before'], $RUNS)});

ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'nap' AND status = 'waiting'}, $RUNS),
	'the scheduler starts every sleep');
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'kid' AND status = 'waiting'}, $RUNS),
	'and every child run');
ok(defined vb_wait_for($node,
		q{SELECT count(*) FILTER (WHERE status = 'waiting') || ' ' || count(*) FILTER (WHERE status = 'succeeded')
			FROM vectorbea.nodes WHERE node = 'wait'}, ($RUNS / 2) . ' ' . ($RUNS / 2)),
	'signal nodes wait, those whose signal came first took it');
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'child' AND status = 'running'}), $RUNS,
	"$RUNS child runs are running");
is(sql(q{SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['nap_after'], 100)}), '0',
	'nothing after a sleep can be claimed while it sleeps');

vb_kill_server($node);
my ($rc) = $node->psql('postgres', 'SELECT 1');
isnt($rc, 0, 'the server is down');
$node->start;
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'after crash recovery the scheduler runs again');

# Everything waits as it did.
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE node IN ('nap', 'kid') AND status = 'waiting'}),
	2 * $RUNS, 'sleeps and child waits survived the crash');

# The rest of the signals, after the restart (one of them twice).
sql(q{SELECT vectorbea.send_signal(id, 'ci_done', jsonb_build_object('early', false, 'n', input->'n'), 'late')
		FROM vectorbea.runs WHERE workflow = 'ci' AND (input->>'n')::int % 2 = 1});
sql(q{SELECT vectorbea.send_signal(id, 'ci_done', jsonb_build_object('early', false, 'n', input->'n'), 'late')
		FROM vectorbea.runs WHERE workflow = 'ci' AND (input->>'n')::int = 1});
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'wait' AND status = 'succeeded'}), $RUNS,
	'signals sent after the restart are delivered at once');

# The children's work; the parents finish their waits.
is(sql(qq{SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease,
			jsonb_build_object('n', run_input->'n')) FROM vectorbea.claim_tasks('w', ARRAY['child_work'], 100)) c}),
	$RUNS, 'each child has its one task');
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'kid' AND status = 'succeeded'}, $RUNS, 10),
	'every parent took its child\'s output');

# One hour passes on the engine clock: the scheduler ends the sleeps.
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'nap' AND status = 'waiting'}), $RUNS,
	'until then every sleep still waits');
sql(q{ALTER SYSTEM SET vectorbea.test_clock_offset = '61m'});
sql(q{SELECT pg_reload_conf()});
my $t0 = time;
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'nap' AND status = 'succeeded'}, $RUNS, 10),
	sprintf('the scheduler ends every sleep once the test clock passes it (%.1f s)', time - $t0));

for my $activity (qw(nap_after ci_after parent_after))
{
	is(sql(qq{SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, upstream)
				FROM vectorbea.claim_tasks('w', ARRAY['$activity'], 100)) c}),
		$RUNS, "$activity: $RUNS tasks");
}
sql(q{ALTER SYSTEM RESET vectorbea.test_clock_offset});
sql(q{SELECT pg_reload_conf()});

is(sql(q{SELECT string_agg(workflow || '=' || status || ':' || n, ' ' ORDER BY workflow, status)
		   FROM (SELECT workflow, status, count(*) AS n FROM vectorbea.runs GROUP BY 1, 2) s}),
	"child=succeeded:$RUNS ci=succeeded:$RUNS nap=succeeded:$RUNS parent=succeeded:$RUNS",
	'every run succeeded');
is(sql(q{SELECT count(*) FROM vectorbea.nodes n
		  WHERE (SELECT count(*) FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
				   AND e.type IN ('TIMER_STARTED', 'SIGNAL_AWAITED', 'CHILD_RUN_STARTED')) <> 1
			AND n.kind IN ('sleep', 'signal', 'run')}),
	'0', 'every wait started exactly once');
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE kind IN ('sleep', 'signal', 'run') AND attempt <> 1}),
	'0', 'every wait is attempt 1');
is(sql(q{SELECT count(*) FROM vectorbea.nodes n
		  WHERE (SELECT count(*) FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
				   AND e.type = 'STEP_COMPLETED') <> 1}),
	'0', 'every node completed exactly once');
is(sql(q{SELECT count(*) FROM vectorbea.nodes k
		  WHERE k.node = 'kid'
			AND (SELECT count(*) FROM vectorbea.runs c WHERE c.parent_run = k.run_id AND c.parent_node = 'kid'
					AND c.id = k.lease) <> 1}),
	'0', 'each run node has one child, the one its lease names');
is(sql(q{SELECT count(*) FROM vectorbea.runs c JOIN vectorbea.nodes k
			ON k.run_id = c.parent_run AND k.node = c.parent_node
		  WHERE k.output <> jsonb_build_object('work', jsonb_build_object('n', c.input->'n'))}),
	'0', "each parent's node holds its own child's output");
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT delivered_to) || ' ' || count(*) FILTER (WHERE delivered_to IS NULL)
		   FROM vectorbea.signals}),
	"$RUNS $RUNS 0", 'each signal was delivered to one node, and each node took one signal');
is(sql(q{SELECT count(*) FROM vectorbea.nodes n JOIN vectorbea.signals s ON s.delivered_to = n.id
		  WHERE n.output <> s.payload}),
	'0', 'a signal node\'s output is its signal\'s payload');
is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id)}), '0',
	'verify_run finds nothing for any run, children included');

$node->stop;
done_testing();
