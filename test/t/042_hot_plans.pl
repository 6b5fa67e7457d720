# 042_hot_plans.pl -- the statements of the task path read the engine's
# tables by key, whatever the statistics say.
#
# The engine keeps generic plans for its hot statements, made from the
# statistics of the moment; a plan that scans a table of runs, nodes or
# events sequentially costs each call in proportion to the table, and did
# once without any test noticing (complete_tasks' run lock read every run
# of a table of a few thousand).  With 1,000 runs of ten tasks and 1,800 of
# other shapes (2,800, and 100 children), analysed, one session with auto_explain
# (nested statements included) goes through the task path twice over:
# claims of one and of several activities, of one task and of ten;
# complete_task and complete_tasks, the end of a run, the release of a
# dependent, a spawn; heartbeat, save_checkpoint and fail_task; a decision
# on an approval gate, a signal, the end of a child run that ends its
# parent; and a pass of the scheduler's work (run_due_work: expired leases,
# deadlines, timers, orphaned children, approvals that time out).  Then the
# paths around it: sleep nodes that run_due_work wakes, a quorum gate's two
# votes, a task out of attempts that escalates and the decisions on such
# gates (accept, retry), an attempt in doubt whose expired lease opens a
# gate, requeue and requeue_dead of dead letters, pause_run, resume_run and
# cancel_run, a failed run that compensates, fork_run and diff_runs with
# the history readers (replay, verify_run, graph, timeline), purge_runs,
# claims under a concurrency limit, a run budget crossed by a task's usage
# in a workspace with a budget, the tick of a schedule (the command of
# the pg_cron job schedule_workflow made), and the claims of a worker role
# kept out of a workspace mapped to another role.  No plan of any
# statement it ran, at the door or inside the engine, holds a sequential
# scan of runs, nodes or events.  The same again in a database a fifth
# of that size of ten-task runs and a quarter of the rest (650 runs and
# 25 children), where reading runs whole may rightly be cheaper than its
# index, but nodes and events are still read by key.  And that small database once
# more after a backlog of 20,000 tasks was drained and vacuumed, with the
# statistics the drain left: the queues' indexes recorded as a few entries
# in many pages (043_drained_plans.pl); there no plan may either read a
# run's ready or pending nodes through the wrong index
# (vb_filtered_node_scans).
#
# Not here: llm nodes.  Only the scheduler's background worker claims them
# (vb_llm_claim in src/llm.c, from src/scheduler.c; run_due_work does not,
# and claim_tasks refuses the engine's activity), and rate limits pace
# only those calls, so neither has a statement a session can reach.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

# pg_cron, for schedule_workflow; its job never fires (a 30th of
# February): the rounds run the job's command as a tick would.
my $node = vb_server('hot_plans', qq{autovacuum = off
shared_preload_libraries = 'vectorbea, pg_cron'
cron.database_name = 'postgres'
});

# The command of the pg_cron job, read where pg_cron lives (database
# postgres, the first loaded) and run by the rounds of both databases: a
# tick is that command, whoever runs it.
my $tick_command;

# Two rounds, so that each statement runs on the plan its session keeps;
# round $i decides gate :gate$i and signals run :waiting_run$i, chosen
# before auto_explain starts (so that the test's own lookups are not
# among the plans it checks), and so with the other ids it acts on.
#
# Round $i moves the engine clock on by $i hours and a half (the session's
# own clock: the scheduler of database postgres keeps the wall clock, so
# what comes due is run_due_work's to do): past the timers of two sleep
# nodes and the lease of one attempt in doubt each round, and past the
# end of the runs cancelled before the rounds, for purge_runs, but not of
# those cancel_run ends in round 1 (75 minutes is between the two).
sub round_sql
{
	my ($i) = @_;
	my $offset = (60 * $i + 30) . 'm';
	return qq{
SET vectorbea.test_clock_offset = '$offset';
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
-- A quorum of two: the first vote leaves the gate pending, the second
-- approves it.
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ana' WHERE id = :vote$i;
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ben' WHERE id = :vote$i;
-- A task out of attempts asks a person; two gates of earlier failures
-- are decided, one accepted with an output, one sent back to retry.
SELECT task_id AS t7, lease AS l7 FROM vectorbea.claim_tasks('w', ARRAY['shaky'], 1) \\gset
SELECT vectorbea.fail_task(:t7, :'l7', '{"message": "still down"}');
UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{"by": "hand"}'
 WHERE id = :accept$i;
UPDATE vectorbea.approvals SET status = 'approved', decision = 'retry' WHERE id = :retry$i;
-- Dead letters back to work, one by its task, one by a filter.
SELECT vectorbea.requeue(:dead$i, 'fixed');
SELECT vectorbea.requeue_dead(jsonb_build_object('run', :'deadrun$i'::text), 'fixed');
SELECT vectorbea.pause_run(:'pause$i', 'a look');
SELECT vectorbea.resume_run(:'pause$i');
SELECT vectorbea.cancel_run(:'cancel$i', 'not wanted');
-- A saga's second step fails for good: the run compensates its first,
-- and fails once the compensation is done.
SELECT task_id AS t8, lease AS l8 FROM vectorbea.claim_tasks('w', ARRAY['sg_b'], 1) \\gset
SELECT vectorbea.fail_task(:t8, :'l8', '{"message": "no stock"}');
SELECT task_id AS t9, lease AS l9 FROM vectorbea.claim_tasks('w', ARRAY['sg_undo'], 1) \\gset
SELECT vectorbea.complete_task(:t9, :'l9');
-- A finished run forked from its second node, compared with its fork,
-- and read back from its history.
SELECT vectorbea.fork_run(:'src$i', 'fb') AS fork$i \\gset
SELECT count(*) FROM vectorbea.diff_runs(:'src$i', :'fork$i');
SELECT vectorbea.replay(:'src$i')->>'status' AS replayed$i \\gset
SELECT count(*) AS unverified$i FROM vectorbea.verify_run(:'src$i') \\gset
SELECT vectorbea.graph(:'src$i') LIKE 'flowchart TD%' AS graphed$i \\gset
SELECT count(*) AS lines$i FROM vectorbea.timeline(:'src$i') \\gset
-- Under a limit of one running, a claim of two gets one.
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['limited'], 2) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
-- A run given a budget of 1 USD reports 2.50 (its workspace has a budget
-- too): BUDGET_EXCEEDED, and the run fails.
SELECT task_id AS t10, lease AS l10, run_id AS r10 FROM vectorbea.claim_tasks('w', ARRAY['costly'], 1) \\gset
SELECT vectorbea.set_run_budget(:'r10', 1.0);
SELECT vectorbea.complete_task(:t10, :'l10', '{}', NULL, '{"usd": 2.5, "tokens": 100}');
-- A worker role kept out of a workspace mapped to another role: its
-- claims choose workspaces.
SET ROLE hot_tenant;
SELECT task_id AS t11, lease AS l11 FROM vectorbea.claim_tasks('tw', ARRAY['work'], 1) \\gset
SELECT vectorbea.complete_task(:t11, :'l11');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('tw', ARRAY['other', 'work'], 4) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
RESET ROLE;
$tick_command;
SELECT vectorbea.run_due_work();
-- Retention: the purge's two statements.
SELECT vectorbea.purge_runs('75 minutes', '{cancelled}', 2);
};
}

# Loads database $db with $ten runs of ten tasks and $each runs of each
# other shape, analysed, runs the two rounds under auto_explain, checks
# that they did their work, and returns the plans of the engine's
# statements that auto_explain logged.
sub engine_plans
{
	my ($db, $ten, $each, $backlog) = @_;
	my $sql = sub { return $node->safe_psql($db, $_[0]); };
	my $backlog_runs = ($backlog // 0) / 10;

	$node->safe_psql('postgres', "CREATE DATABASE $db") if $db ne 'postgres';
	$sql->('CREATE EXTENSION vectorbea CASCADE');
	# A worker role, and a workspace mapped to another role (the roles are
	# the cluster's, made by the first database).
	$sql->(q{
DO $$ BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hot_tenant') THEN
		CREATE ROLE hot_tenant;
		CREATE ROLE hot_other;
	END IF;
END $$;
SELECT vectorbea.grant_workspace('walled', 'hot_other');
} . vb_worker_grants_sql('hot_tenant'));
	# A backlog first, drained as workers would and vacuumed, five tasks of
	# an activity no one claims left ready: the queues' indexes keep the
	# backlog's pages with few live entries, and the statistics stay as the
	# drain left them (no ANALYZE after the shapes below), as they do in a
	# big table until its next ANALYZE (043_drained_plans.pl).
	if ($backlog)
	{
		my $backlog_nodes = join(', ', map { qq({"id": "k$_", "activity": "work"}) } 1 .. 10);
		$sql->(qq{
SELECT vectorbea.define_workflow('backlog', '{"nodes": [$backlog_nodes]}');
SELECT vectorbea.define_workflow('spare', '{"nodes": [{"id": "p", "activity": "spare"}]}');
SELECT count(*) FROM vectorbea.start_runs('backlog', array_fill('{}'::jsonb, ARRAY[$backlog_runs]));
SELECT count(*) FROM vectorbea.start_runs('spare', array_fill('{}'::jsonb, ARRAY[5]));
} . vb_drain_sql('work'));
		$sql->('VACUUM ANALYZE');
		$backlog_runs += 5;
	}
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
	# The paths around the task path, a workflow each.
	$sql->(q{SELECT vectorbea.define_workflow('sleeper', '{"nodes": [{"id": "z", "kind": "sleep",
		"sleep": {"until": "{{run.input.at}}"}}, {"id": "z_next", "activity": "nap_next", "depends_on": ["z"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('voted', '{"nodes": [{"id": "v", "kind": "approval",
		"approval": {"gate": "q", "quorum": 2, "approvers": ["ana", "ben", "cy"]}},
		{"id": "v_next", "activity": "vote_next", "depends_on": ["v"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('escalating', '{"nodes": [{"id": "e", "activity": "shaky",
		"retry": {"max_attempts": 1}, "on_exhausted": "escalate"},
		{"id": "e_next", "activity": "shaky_next", "depends_on": ["e"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('doubtful', '{"nodes": [{"id": "d", "activity": "doubt",
		"in_doubt": "ask"}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('fragile', '{"nodes": [{"id": "f", "activity": "fragile",
		"retry": {"max_attempts": 1}}, {"id": "f_next", "activity": "fragile_next", "depends_on": ["f"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('idle', '{"nodes": [{"id": "i", "activity": "idle"}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('saga', '{"nodes": [{"id": "sa", "activity": "sg_a",
		"compensate": {"activity": "sg_undo"}},
		{"id": "sb", "activity": "sg_b", "depends_on": ["sa"], "retry": {"max_attempts": 1}}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('forked', '{"nodes": [{"id": "fa", "activity": "fk_a"},
		{"id": "fb", "activity": "fk_b", "depends_on": ["fa"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('old', '{"nodes": [{"id": "o", "activity": "old"}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('limited', '{"nodes": [{"id": "l", "activity": "limited"}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('costly', '{"nodes": [{"id": "c", "activity": "costly",
		"estimate": {"usd": 0.05}}, {"id": "c_next", "activity": "costly_next", "depends_on": ["c"]}]}')});
	$sql->(q{SELECT vectorbea.define_workflow('ticked', '{"nodes": [{"id": "tk", "activity": "tick"}]}')});
	if ($db eq 'postgres')
	{
		$sql->('CREATE EXTENSION pg_cron');
		$sql->(q{SELECT vectorbea.schedule_workflow('tick', '0 0 30 2 *', 'ticked')});
		$tick_command = $sql->(q{SELECT command FROM cron.job WHERE jobname = 'vectorbea:tick'});
	}
	# run_due_work() starts the children and the signal waits.  Before it,
	# what the rounds find done: four escalated tasks (two decisions a
	# round), four dead letters (two requeues a round), two attempts in
	# doubt (their leases end an hour and two after now), the first steps
	# of the sagas, two forked runs ended, and the runs purge_runs removes,
	# cancelled.  Two sleepers wake at an hour from now, two at two hours.
	$sql->(qq{
SELECT count(*) FROM vectorbea.start_runs('ten', array_fill('{}'::jsonb, ARRAY[$ten]));
SELECT count(*) FROM unnest(ARRAY['one', 'pair', 'grower', 'other', 'gated', 'signalled', 'parent',
		'voted', 'escalating', 'doubtful', 'fragile', 'idle', 'saga', 'forked', 'old', 'limited']) AS w,
	LATERAL vectorbea.start_runs(w, array_fill('{}'::jsonb, ARRAY[$each]));
SELECT count(*) FROM vectorbea.start_runs('sleeper',
	(SELECT array_agg(jsonb_build_object('at', now() + CASE WHEN g <= 2 THEN interval '1 hour'
			WHEN g <= 4 THEN interval '2 hours' ELSE interval '2 days' END) ORDER BY g)
	   FROM generate_series(1, $each) g));
SELECT count(*) FROM vectorbea.start_runs('costly', array_fill('{}'::jsonb, ARRAY[$each]), NULL,
	'{"workspace": "spenders"}');
SELECT count(*) FROM vectorbea.start_runs('ten', array_fill('{}'::jsonb, ARRAY[2]), NULL,
	'{"workspace": "walled"}');
SELECT vectorbea.set_budget('spenders', 1000, 'month');
SELECT vectorbea.set_concurrency_limit('limited', 1);
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['shaky'], 4) \\gset
SELECT count(vectorbea.fail_task(t, l, '{"message": "down"}')) FROM unnest(:'ids'::bigint[], :'leases'::uuid[]) AS u(t, l);
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['fragile'], 4) \\gset
SELECT count(vectorbea.fail_task(t, l, '{"message": "gone"}')) FROM unnest(:'ids'::bigint[], :'leases'::uuid[]) AS u(t, l);
SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['doubt'], 1, '1 hour');
SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['doubt'], 1, '2 hours');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['sg_a'], $each) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['fk_a'], 2) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('w', ARRAY['fk_b'], 2) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT count(vectorbea.cancel_run(id, 'old')) FROM vectorbea.runs WHERE workflow = 'old';
SELECT vectorbea.run_due_work();
} . ($backlog ? '' : 'ANALYZE;'));
	# The scheduler serves postgres: a pass of its own may be starting these
	# waits while run_due_work runs, which then puts off the runs that pass
	# holds.  Wait until no wait is left to start, whoever starts it.
	vb_wait_for($node, q{SELECT count(*) FROM vectorbea.nodes
		WHERE status = 'ready' AND activity IS NULL AND available_at <= now()}, '0', 60)
	  if $db eq 'postgres';
	is($sql->(q{SELECT count(*) FILTER (WHERE parent_run IS NULL), count(*) FILTER (WHERE parent_run IS NOT NULL)
				  FROM vectorbea.runs}), ($ten + 18 * $each + $backlog_runs + 2) . "|$each",
		"$db: the runs and the children are there");

	my $log_start = -s $node->logfile;
	my $out = $sql->(q{
SELECT (array_agg(id ORDER BY id))[1] AS gate1, (array_agg(id ORDER BY id))[2] AS gate2
  FROM vectorbea.approvals WHERE status = 'pending' AND gate = 'g' \gset
SELECT (array_agg(run_id::text ORDER BY run_id))[1] AS waiting_run1,
	   (array_agg(run_id::text ORDER BY run_id))[2] AS waiting_run2
  FROM vectorbea.nodes WHERE node = 's' AND status = 'waiting' \gset
SELECT (array_agg(id ORDER BY id))[1] AS vote1, (array_agg(id ORDER BY id))[2] AS vote2
  FROM vectorbea.approvals WHERE gate = 'q' \gset
SELECT (array_agg(id ORDER BY id))[1] AS accept1, (array_agg(id ORDER BY id))[2] AS retry1,
	   (array_agg(id ORDER BY id))[3] AS accept2, (array_agg(id ORDER BY id))[4] AS retry2
  FROM vectorbea.approvals WHERE kind = 'escalation' \gset
SELECT (array_agg(task_id ORDER BY task_id))[1] AS dead1, (array_agg(task_id ORDER BY task_id))[2] AS dead2,
	   (array_agg(run_id::text ORDER BY task_id))[3] AS deadrun1,
	   (array_agg(run_id::text ORDER BY task_id))[4] AS deadrun2
  FROM vectorbea.dead_letters WHERE workflow = 'fragile' \gset
SELECT (array_agg(id::text ORDER BY id))[1] AS pause1, (array_agg(id::text ORDER BY id))[2] AS pause2,
	   (array_agg(id::text ORDER BY id))[3] AS cancel1, (array_agg(id::text ORDER BY id))[4] AS cancel2
  FROM vectorbea.runs WHERE workflow = 'idle' \gset
SELECT (array_agg(id::text ORDER BY id))[1] AS src1, (array_agg(id::text ORDER BY id))[2] AS src2
  FROM vectorbea.runs WHERE workflow = 'forked' AND status = 'succeeded' \gset
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
} . round_sql(1) . round_sql(2) . q{
\echo forks :src1 :fork1 :src2 :fork2
\echo readers :replayed1 :unverified1 :graphed1 :lines1 :replayed2 :unverified2 :graphed2 :lines2
});
	my $log = substr(PostgreSQL::Test::Utils::slurp_file($node->logfile), $log_start);
	my ($src1, $fork1, $src2, $fork2) = $out =~ /^forks (\S+) (\S+) (\S+) (\S+)$/m
	  or die "the rounds did not say which runs they forked";
	my ($readers) = $out =~ /^readers (.*)$/m;

	# The rounds did what they say (so the plans are those of real work).
	is($sql->(q{SELECT count(*) FILTER (WHERE status = 'succeeded' AND node !~ '^k[0-9]+$') > 30,
					   count(*) FILTER (WHERE node LIKE 'leaf%')
				  FROM vectorbea.nodes}), 't|4', "$db: tasks succeeded, and two spawns added their nodes");
	is($sql->(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded' AND workflow = 'one'}), '2',
		"$db: two one-task runs ended");
	is($sql->(q{SELECT string_agg(n.status, ',' ORDER BY n.status) FROM vectorbea.nodes n
				  JOIN vectorbea.runs r ON r.id = n.run_id
				 WHERE r.workflow = 'pair' AND n.node = 'b' AND n.status <> 'pending'}),
		'succeeded', "$db: the dependent the first round released, the second claimed and completed");
	# (The escalated tasks sent back to retry write STEP_RETRIED too.)
	is($sql->(q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_RETRIED' AND node ~ '^n[0-9]+$'}), '2',
		"$db: two failures will be retried");
	is($sql->(q{SELECT r.workflow, count(*) FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
				 WHERE n.node = 'after' AND n.status = 'ready' GROUP BY 1 ORDER BY 1}),
		"gated|2\nsignalled|2", "$db: two approvals and two signals released what followed them");
	is($sql->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'parent' AND status = 'succeeded'}), '2',
		"$db: two children ended, and with them their parents");
	is($sql->(q{SELECT count(*) FILTER (WHERE node = 'z' AND status = 'succeeded'),
					   count(*) FILTER (WHERE node = 'z_next' AND status = 'ready')
				  FROM vectorbea.nodes WHERE node IN ('z', 'z_next')}),
		'4|4', "$db: four sleep nodes woke, two a round, and released what followed them");
	is($sql->(q{SELECT (SELECT count(*) FROM vectorbea.approval_votes),
					   (SELECT count(*) FROM vectorbea.approvals WHERE gate = 'q' AND status = 'approved'),
					   (SELECT count(*) FROM vectorbea.nodes WHERE node = 'v_next' AND status = 'ready')}),
		'4|2|2', "$db: two quorum gates got their two votes and released what followed them");
	is($sql->(q{SELECT count(*), count(*) FILTER (WHERE status = 'approved' AND decision = 'accept'),
					   count(*) FILTER (WHERE status = 'approved' AND decision = 'retry'),
					   (SELECT count(*) FROM vectorbea.nodes WHERE node = 'e_next' AND status = 'ready'),
					   (SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_RETRIED' AND node = 'e')
				  FROM vectorbea.approvals WHERE kind = 'escalation'}),
		'6|2|2|2|2', "$db: two more tasks escalated; two escalations accepted, two sent back to retry");
	is($sql->(q{SELECT count(*) FROM vectorbea.approvals WHERE kind = 'in_doubt' AND status = 'pending'}), '2',
		"$db: two expired leases put their attempts in doubt, at a gate");
	is($sql->(q{SELECT (SELECT count(*) FROM vectorbea.events WHERE type = 'NODES_REQUEUED'),
					   (SELECT count(*) FROM vectorbea.dead_letters WHERE workflow = 'fragile'),
					   (SELECT count(*) FROM vectorbea.runs WHERE workflow = 'fragile' AND status = 'running')}),
		"4|0|$each", "$db: the four dead letters were requeued, and their runs run again");
	is($sql->(q{SELECT count(*) FILTER (WHERE type = 'RUN_PAUSED'), count(*) FILTER (WHERE type = 'RUN_RESUMED'),
					   count(*) FILTER (WHERE type = 'RUN_CANCELLED')
				  FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id WHERE r.workflow = 'idle'}),
		'2|2|2', "$db: two runs paused and resumed, two cancelled");
	is($sql->(q{SELECT count(*) FROM vectorbea.runs
				 WHERE workflow = 'saga' AND status = 'failed' AND error->>'compensation' = 'completed'}), '2',
		"$db: two failed sagas compensated");
	is($sql->(qq{SELECT n.status, n.node FROM vectorbea.nodes n
				  WHERE n.run_id IN ('$fork1', '$fork2') ORDER BY n.run_id, n.node}),
		"succeeded|fa\nready|fb\nsucceeded|fa\nready|fb", "$db: two forks reused their first node and run the second");
	is($sql->(qq{SELECT string_agg(node || ' ' || what, ', ' ORDER BY node, what)
				   FROM vectorbea.diff_runs('$src1', '$fork1') WHERE what <> 'latency_ms'}),
		'fb attempts, fb status', "$db: diff_runs tells the fork from its source");
	is($sql->(qq{SELECT count(*) FROM unnest(ARRAY['$src1', '$fork1', '$src2', '$fork2']::uuid[]) AS r,
					   LATERAL vectorbea.verify_run(r)}), '0', "$db: the forked runs and their forks verify");
	# Each source's history: six events (a start, two steps started and
	# completed, the end), read back by each reader as the rounds ran it.
	is($readers, join(' ', map { ('succeeded', 0, 't', $sql->(qq{SELECT last_seq FROM vectorbea.runs WHERE id = '$_'})) }
			($src1, $src2)),
		"$db: replay, verify_run, graph and timeline read the forked runs' histories");
	is($sql->(q{SELECT (SELECT count(*) FROM vectorbea.runs WHERE workflow = 'old'),
					   (SELECT count(*) || '/' || sum(runs) FROM vectorbea.purge_batches)}),
		($each - 4) . '|2/4', "$db: two purges removed two cancelled runs each");
	is($sql->(q{SELECT count(*) FROM vectorbea.nodes WHERE activity = 'limited' AND status = 'succeeded'}), '2',
		"$db: claims of two under a limit of one took one each");
	is($sql->(q{SELECT count(*), count(*) FILTER (WHERE r.workspace = 'walled'),
					   count(*) FILTER (WHERE n.status = 'succeeded')
				  FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
				  JOIN vectorbea.nodes n ON n.run_id = e.run_id AND n.node = e.node
				 WHERE e.type = 'STEP_STARTED' AND e.data->>'worker' = 'tw'}),
		'10|0|10', "$db: the worker role claimed and completed five tasks a round, none of the mapped workspace");
	is($sql->(q{SELECT (SELECT count(*) FROM vectorbea.runs WHERE workflow = 'costly' AND status = 'failed'),
					   (SELECT count(*) FROM vectorbea.events WHERE type = 'BUDGET_EXCEEDED')}),
		'2|2', "$db: two runs went over the budget they were given, and failed");
	is($sql->(q{SELECT count(*) BETWEEN 1 AND 2, bool_and(idempotency_key LIKE 'schedule:tick@%')
				  FROM vectorbea.runs WHERE workflow = 'ticked'}),
		't|t', "$db: the schedule's ticks started a run (one a minute)");

	my @engine = grep { /vectorbea\./ } vb_plans_in($log);
	cmp_ok(scalar @engine, '>', 100, "$db: auto_explain logged the plans of the session and of the engine")
	  or diag(substr($log, 0, 2000));
	for my $want ('claim_tasks', 'complete_tasks', 'complete_task', 'fail_task', 'heartbeat',
		'save_checkpoint', 'run_due_work', 'UPDATE vectorbea.approvals', 'send_signal',
		'UPDATE vectorbea.runs', 'INSERT INTO vectorbea.events', 'vectorbea.requeue(',
		'vectorbea.requeue_dead(', 'pause_run', 'resume_run', 'cancel_run', 'fork_run', 'diff_runs',
		'vectorbea.replay(', 'vectorbea.verify_run(', 'vectorbea.graph(', 'vectorbea.timeline(', 'purge_runs',
		'set_run_budget', 'vectorbea.start_run(')
	{
		ok((grep { index($_, $want) >= 0 } @engine), "$db: a plan of $want was logged");
	}
	return @engine;
}

sub no_scans_of
{
	my ($tables, $what, @plans) = @_;
	my @scans = vb_seq_scans($tables, @plans);
	is(scalar @scans, 0, $what)
	  or diag(join("\n----\n", map { substr($_, 0, 3000) } @scans[0 .. ($#scans < 2 ? $#scans : 2)]));
}

no_scans_of('runs|nodes|events', 'no plan of the task path scans runs, nodes or events sequentially',
	engine_plans('postgres', 1000, 100));

# A fifth of the ten-task runs and a quarter of the rest: 650 runs fit in
# a few pages, which the planner may rightly read whole rather than
# through an index; nodes (about 3,000) and events must still be read by
# key.
no_scans_of('nodes|events', 'with 650 runs, no plan scans nodes or events sequentially',
	engine_plans('small', 200, 25));

# The small database's shapes again, after 20,000 tasks were drained and
# vacuumed: the queues' indexes sparse, the statistics the drain's.
my @drained = engine_plans('drained', 200, 25, 20000);
no_scans_of('nodes|events', 'after a drain, no plan scans nodes or events sequentially', @drained);
my @filtered = vb_filtered_node_scans(@drained);
is(scalar @filtered, 0, 'after a drain, no plan reads ready or pending nodes of a run through the wrong index')
  or diag(join("\n----\n", @filtered));

done_testing();
