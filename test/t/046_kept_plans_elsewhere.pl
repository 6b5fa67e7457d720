# 046_kept_plans_elsewhere.pl -- the engine's statements off the task
# path keep their plans too: none is planned again at every call.
#
# 044 counts plans (pg_stat_statements, track_planning) on the task path:
# claims, completions, failures, starts.  This test does the same for the
# engine's other warm paths, each gone through fifteen times in one
# session, in a database the scheduler does not serve (its statements stay
# out of the count; run_due_work does the scheduler's time-driven work):
# approval gates (an approval node decided by an UPDATE of approvals, one
# that a timeout approves, await_approval approved and rejected), signals
# (kept before the wait, delivered during it, a repeated send), a sleep
# node woken by run_due_work once the engine clock passed it, child runs
# (one that finishes, one whose parent is cancelled), a deadline and an
# expired lease ended by run_due_work, final failures (fail_task) brought
# back by requeue and requeue_dead, pause_run / resume_run / cancel_run, a
# compensation, fork_run with diff_runs, replay, verify_run, timeline,
# graph and timeline_chart, a budget that pauses a run and set_run_budget,
# heartbeat, save_checkpoint and append_event, and schedule_workflow
# (pg_cron) with its job's command run as a tick; after the rounds,
# fifteen calls of purge_runs purge the runs they cancelled.  No
# statement the engine ran inside them (not toplevel) may have been
# planned more than six times (the plan cache's five custom plans and the
# generic one), but those planned at every call on purpose, listed below
# by their text with the reason of each (docs/decisions.md, "Which
# statements keep their plans").  The scheduler's own passes are 047's.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('kept_plans_elsewhere', q{autovacuum = off
shared_preload_libraries = 'vectorbea, pg_stat_statements, pg_cron'
pg_stat_statements.track = all
pg_stat_statements.track_planning = on
cron.database_name = 'kept2'
});
# Not the scheduler's database (postgres): its statements stay out of the
# count.  pg_cron serves kept2 (schedule_workflow needs it there): restart
# once the database exists, so that its launcher finds it.
$node->safe_psql('postgres', 'CREATE DATABASE kept2');
$node->restart;
my $sql = sub { return $node->safe_psql('kept2', $_[0]); };

$sql->(q{
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION vectorbea CASCADE;
CREATE EXTENSION pg_cron;
-- What the rounds' functions returned, for the checks after them.
CREATE TABLE tap_results (what text NOT NULL, got text);
SELECT vectorbea.define_workflow('gate', '{"nodes": [
	{"id": "ok", "kind": "approval", "approval": {"gate": "g_ok"}},
	{"id": "late", "kind": "approval", "approval": {"gate": "g_late", "timeout": "1m", "on_timeout": "approve"}},
	{"id": "after", "activity": "gate_after", "depends_on": ["ok", "late"]}]}');
SELECT vectorbea.define_workflow('ask', '{"nodes": [{"id": "ship", "activity": "ask_ship"}]}');
SELECT vectorbea.define_workflow('sig', '{"nodes": [
	{"id": "wait", "kind": "signal", "signal": {"name": "go"}},
	{"id": "after", "activity": "sig_after", "depends_on": ["wait"]}]}');
SELECT vectorbea.define_workflow('nap', '{"nodes": [
	{"id": "nap", "kind": "sleep", "sleep": {"for": "1m"}},
	{"id": "after", "activity": "nap_after", "depends_on": ["nap"]}]}');
SELECT vectorbea.define_workflow('kid', '{"nodes": [{"id": "work", "activity": "kid_work"}]}');
SELECT vectorbea.define_workflow('parent', '{"nodes": [
	{"id": "kid", "kind": "run", "run": {"workflow": "kid"}, "input": {"n": "{{run.input.n}}"}},
	{"id": "after", "activity": "parent_after", "depends_on": ["kid"]}]}');
SELECT vectorbea.define_workflow('kid2', '{"nodes": [{"id": "work", "activity": "kid2_work"}]}');
SELECT vectorbea.define_workflow('orphan', '{"nodes": [{"id": "kid", "kind": "run", "run": {"workflow": "kid2"}}]}');
SELECT vectorbea.define_workflow('slow', '{"nodes": [{"id": "s", "activity": "slow"}]}');
SELECT vectorbea.define_workflow('lapse', '{"nodes": [{"id": "l", "activity": "lapse",
	"retry": {"max_attempts": 3, "backoff": "fixed", "initial": "1s", "jitter": false}}]}');
SELECT vectorbea.define_workflow('flaky', '{"nodes": [
	{"id": "f", "activity": "flaky", "retry": {"max_attempts": 1}},
	{"id": "g", "activity": "flaky_after", "depends_on": ["f"]}]}');
SELECT vectorbea.define_workflow('ctl', '{"nodes": [
	{"id": "a", "activity": "ctl_a"},
	{"id": "b", "activity": "ctl_b", "depends_on": ["a"]}]}');
SELECT vectorbea.define_workflow('undo', '{"nodes": [
	{"id": "a", "activity": "undo_a", "compensate": {"activity": "undo_back"}},
	{"id": "b", "activity": "undo_b", "depends_on": ["a"]}]}');
SELECT vectorbea.define_workflow('costly', '{"nodes": [
	{"id": "a", "activity": "cost_a"},
	{"id": "b", "activity": "cost_b", "depends_on": ["a"]}]}');
SELECT vectorbea.define_workflow('tick', '{"nodes": [{"id": "t", "activity": "tick"}]}');
ANALYZE;
});

# One round.  The engine clock moves on six minutes a round (__B0__ at
# its start, __B2__ and __B3__ later in it), so that the one-minute sleep,
# gate timeout, deadline and lease of a round fall due within it.
my $round = q{
SET vectorbea.test_clock_offset = '__B0__m';

-- Approvals: a gate of an approval node decided by an UPDATE (its other
-- gate times out below); await_approval approved, and rejected, requeued
-- and done.
SELECT vectorbea.start_run('gate', '{}') AS r_gate \gset
SELECT id AS a_ok FROM vectorbea.approvals WHERE run_id = :'r_gate' AND gate = 'g_ok' \gset
UPDATE vectorbea.approvals SET status = 'approved', reason = 'looks good', decided_by = 'tap' WHERE id = :a_ok;
SELECT vectorbea.start_run('ask', '{"n": 1}') AS r_ask \gset
SELECT task_id AS t_ask, lease AS l_ask FROM vectorbea.claim_tasks('w', ARRAY['ask_ship']) \gset
SELECT vectorbea.await_approval(:t_ask, :'l_ask', 'ship_it', '{"diff": "+3 -1"}', '30 minutes') AS a_ask \gset
UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'tap' WHERE id = :a_ask;
SELECT vectorbea.start_run('ask', '{"n": 2}') AS r_ask2 \gset
SELECT task_id AS t_ask2, lease AS l_ask2 FROM vectorbea.claim_tasks('w', ARRAY['ask_ship']) \gset
SELECT vectorbea.await_approval(:t_ask2, :'l_ask2', 'ship_it') AS a_ask2 \gset
UPDATE vectorbea.approvals SET status = 'rejected', reason = 'not yet', decided_by = 'tap' WHERE id = :a_ask2;
INSERT INTO tap_results SELECT 'requeue', vectorbea.requeue(:t_ask2, 'ask again');
SELECT task_id AS t_ask2, lease AS l_ask2 FROM vectorbea.claim_tasks('w', ARRAY['ask_ship']) \gset
SELECT vectorbea.complete_task(:t_ask2, :'l_ask2', '{"shipped": true}');

-- Waits: a signal sent before its node waits (kept), one sent while it
-- waits (and sent again with its key), a sleep, a child run that
-- finishes and one whose parent is cancelled; a deadline and a lease of
-- a minute.
SELECT vectorbea.start_run('sig', '{"n": 1}') AS r_sig1 \gset
SELECT vectorbea.send_signal(:'r_sig1', 'go', '{"early": true}');
SELECT vectorbea.start_run('sig', '{"n": 2}') AS r_sig2 \gset
SELECT vectorbea.start_run('nap', '{}') AS r_nap \gset
SELECT vectorbea.start_run('parent', '{"n": 1}') AS r_parent \gset
SELECT vectorbea.start_run('orphan', '{}') AS r_orphan \gset
SELECT vectorbea.start_run('slow', '{}', NULL, '{"deadline": "1m"}') AS r_slow \gset
SELECT vectorbea.start_run('lapse', '{}') AS r_lapse \gset
SELECT task_id AS t_lapse FROM vectorbea.claim_tasks('w', ARRAY['lapse'], 1, '1 minute') \gset
INSERT INTO tap_results SELECT 'run_due_work 1', vectorbea.run_due_work();
SELECT vectorbea.send_signal(:'r_sig2', 'go', '{"early": false}', 'once') AS s1 \gset
INSERT INTO tap_results SELECT 'send_signal again', vectorbea.send_signal(:'r_sig2', 'go', '{"early": false}', 'once') = :s1;
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, jsonb_build_object('n', run_input->'n'))
                        FROM vectorbea.claim_tasks('w', ARRAY['kid_work'])) c;
INSERT INTO tap_results SELECT 'cancel_run', vectorbea.cancel_run(:'r_orphan', 'no longer needed');

-- Final failures, brought back: requeue, then requeue_dead; the last
-- attempt heartbeats and saves a checkpoint.
SELECT vectorbea.start_run('flaky', '{}') AS r_flaky \gset
SELECT task_id AS t_f, lease AS l_f FROM vectorbea.claim_tasks('w', ARRAY['flaky']) \gset
INSERT INTO tap_results SELECT 'fail_task', vectorbea.fail_task(:t_f, :'l_f', '{"message": "boom"}');
INSERT INTO tap_results SELECT 'requeue', vectorbea.requeue(:t_f, 'try again');
SELECT task_id AS t_f, lease AS l_f FROM vectorbea.claim_tasks('w', ARRAY['flaky']) \gset
INSERT INTO tap_results SELECT 'fail_task', vectorbea.fail_task(:t_f, :'l_f', '{"message": "bad input", "class": "permanent"}', false);
INSERT INTO tap_results SELECT 'requeue_dead', vectorbea.requeue_dead(jsonb_build_object('run', :'r_flaky'::uuid), 'fixed');
SELECT task_id AS t_f, lease AS l_f FROM vectorbea.claim_tasks('w', ARRAY['flaky']) \gset
SELECT vectorbea.heartbeat(:t_f, :'l_f', '2 minutes') IS NOT NULL AS renewed;
SELECT vectorbea.save_checkpoint(:t_f, :'l_f', '{"step": 1}');
SELECT vectorbea.complete_task(:t_f, :'l_f', '{"ok": true}');
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{}')
                        FROM vectorbea.claim_tasks('w', ARRAY['flaky_after'])) c;

-- Kill switches: a run paused (twice), its task completed meanwhile,
-- resumed and finished; a paused run cancelled; a run cancelled with its
-- compensation.
SELECT vectorbea.start_run('ctl', '{}') AS r_ctl \gset
SELECT task_id AS t_c, lease AS l_c FROM vectorbea.claim_tasks('w', ARRAY['ctl_a']) \gset
INSERT INTO tap_results SELECT 'pause_run', vectorbea.pause_run(:'r_ctl', 'hold on');
INSERT INTO tap_results SELECT 'pause_run again', vectorbea.pause_run(:'r_ctl', 'hold on');
SELECT vectorbea.complete_task(:t_c, :'l_c', '{"a": 1}');
INSERT INTO tap_results SELECT 'claim while paused', count(*) FROM vectorbea.claim_tasks('w', ARRAY['ctl_b']);
INSERT INTO tap_results SELECT 'resume_run', vectorbea.resume_run(:'r_ctl');
SELECT vectorbea.append_event(:'r_ctl', 'note.added', '{"by": "tap"}', 'a');
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{"b": 1}')
                        FROM vectorbea.claim_tasks('w', ARRAY['ctl_b'])) c;
SELECT vectorbea.start_run('ctl', '{"n": 2}') AS r_ctl2 \gset
INSERT INTO tap_results SELECT 'pause_run', vectorbea.pause_run(:'r_ctl2');
INSERT INTO tap_results SELECT 'cancel_run', vectorbea.cancel_run(:'r_ctl2', 'stop');
SELECT vectorbea.start_run('undo', '{}') AS r_undo \gset
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{"done": 1}')
                        FROM vectorbea.claim_tasks('w', ARRAY['undo_a'])) c;
INSERT INTO tap_results SELECT 'cancel_run', vectorbea.cancel_run(:'r_undo', 'roll back', true);
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{"undone": 1}')
                        FROM vectorbea.claim_tasks('w', ARRAY['undo_back'])) c;

-- A fork of the finished run, and the pictures and checks of runs.
SELECT vectorbea.fork_run(:'r_ctl', 'b', '{"b": {"input": {"again": true}}}') AS r_fork \gset
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{"b": 2}')
                        FROM vectorbea.claim_tasks('w', ARRAY['ctl_b'])) c;
INSERT INTO tap_results SELECT 'diff_runs output.b', count(*) FROM vectorbea.diff_runs(:'r_ctl', :'r_fork') WHERE what = 'output.b';
INSERT INTO tap_results SELECT 'replay', vectorbea.replay(:'r_ctl')->>'status';
INSERT INTO tap_results SELECT 'replay upto', vectorbea.replay(:'r_fork', 2)->>'upto';
INSERT INTO tap_results SELECT 'verify_run', count(*) FROM vectorbea.verify_run(:'r_fork');
INSERT INTO tap_results SELECT 'timeline', count(*) > 5 FROM vectorbea.timeline(:'r_ctl');
INSERT INTO tap_results SELECT 'graph', vectorbea.graph(:'r_fork') LIKE 'flowchart TD%' AND vectorbea.graph(:'r_fork', 'dot') LIKE 'digraph%';
INSERT INTO tap_results SELECT 'timeline_chart', vectorbea.timeline_chart(:'r_ctl') LIKE 'gantt%';

-- A budget that pauses its run, raised by set_run_budget.
SELECT vectorbea.start_run('costly', '{}', NULL, '{"budget_usd": 0.01, "on_budget": "pause"}') AS r_cost \gset
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{}', NULL, '{"usd": 0.02, "tokens": 10}')
                        FROM vectorbea.claim_tasks('w', ARRAY['cost_a'])) c;
INSERT INTO tap_results SELECT 'set_run_budget', vectorbea.set_run_budget(:'r_cost', 1, 1000);
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{}')
                        FROM vectorbea.claim_tasks('w', ARRAY['cost_b'])) c;

-- A schedule, its job's command run as a tick would, and unscheduled.
SELECT vectorbea.schedule_workflow('tick', '0 3 1 1 *', 'tick', '{"from": "schedule"}') AS job \gset
SELECT command FROM cron.job WHERE jobid = :job \gexec
INSERT INTO tap_results SELECT 'unschedule_workflow', vectorbea.unschedule_workflow('tick');
SELECT count(*) FROM (SELECT vectorbea.complete_task(task_id, lease, '{}')
                        FROM vectorbea.claim_tasks('w', ARRAY['tick'])) c;

-- Two minutes on: the sleep ends, the gate times out (approved), the
-- orphan's child is cancelled, the deadline fails its run, the lease has
-- expired.  A minute more and the retry is due.
SET vectorbea.test_clock_offset = '__B2__m';
INSERT INTO tap_results SELECT 'run_due_work 2', vectorbea.run_due_work();
SET vectorbea.test_clock_offset = '__B3__m';
INSERT INTO tap_results SELECT 'last claim', count(*)
  FROM (SELECT vectorbea.complete_task(task_id, lease, '{}')
          FROM vectorbea.claim_tasks('w', ARRAY['gate_after', 'sig_after', 'nap_after', 'parent_after', 'lapse'], 10)) c;
};

my $rounds = 15;
my $session = "SET client_min_messages = warning;\nSELECT pg_stat_statements_reset();\n";
for my $i (1 .. $rounds)
{
	my $r = $round;
	my $b = 6 * $i;
	$r =~ s/__B0__/$b/g;
	$r =~ s/__B2__/$b + 2/ge;
	$r =~ s/__B3__/$b + 3/ge;
	$session .= $r;
}
# Retention last, a call a round: the runs cancelled in the rounds are
# minutes old by now; each call purges four of them.  (Until the purge
# passed the append-only triggers by a flag of its own, it set
# session_replication_role, which empties the session's plan cache, and
# was listed below.)
$session .= "SET vectorbea.test_clock_offset = '" . (6 * $rounds + 6) . "m';\n"
  . "INSERT INTO tap_results SELECT 'cancelled', workflow || ':' || count(*) FROM vectorbea.runs"
  . " WHERE status = 'cancelled' GROUP BY workflow;\n"
  . ("INSERT INTO tap_results SELECT 'purge_runs', vectorbea.purge_runs('1 minute', '{cancelled}', 4);\n" x $rounds);
my ($ret, $stdout, $stderr) = $node->psql('kept2', $session, on_error_stop => 1);
is($ret, 0, 'the rounds ran without an error') or diag($stderr);

# The counts are taken now: the checks below call engine functions
# (verify_run) in sessions of their own, whose statements would be
# counted, and planned, too.
# The engine's statements of these paths are among those counted.
my $counted = $sql->(q{SELECT count(*) FILTER (WHERE s.query LIKE '%signals%') > 0 AND count(*) FILTER (WHERE s.query LIKE '%approvals%') > 0
				   AND count(*) FILTER (WHERE s.query LIKE '%DELETE FROM vectorbea.events WHERE run_id = ANY%') > 0
			  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
			 WHERE d.datname = 'kept2' AND NOT s.toplevel AND s.calls >= 10});

# Planned at every call, and left so: a person's calls, each once per
# decision or look, whose plans would rarely be used again, and the
# statements whose plan should follow their arguments
# (docs/decisions.md, "Which statements keep their plans").  Matched on
# the statement's text, its white space made single spaces.
# (replay, verify_run and timeline keep theirs: their bodies are PL/pgSQL
# for it, where a SQL function's statements are planned at every call.)
my @planned_per_call = (
	# graph and diff_runs (PL/pgSQL, whose plan cache keeps custom plans)
	'%vectorbea.run_visible(r.id)%', 'WITH n AS ( SELECT x.node, x.kind%',
	# fork_run
	'WITH RECURSIVE spec AS%', 'SELECT node FROM vectorbea.nodes WHERE run_id = $1 AND status = $2 ORDER BY finished_at, id',
	'INSERT INTO vectorbea.runs (id, workflow, % SELECT $1, workflow, %',
	# set_run_budget
	'UPDATE vectorbea.runs SET budget_usd = $2, budget_tokens = $3 %',
	'%array_to_string((pg_catalog.array_agg(n.node ORDER BY n.node))%',
	# filters that choose their plan: requeue_dead's, and the runs a budget
	# paused (of a workspace, or one run)
	'%FROM vectorbea.dead_letters d %', 'SELECT r.id, r.workspace FROM vectorbea.runs r WHERE r.status = %',
	# schedule_workflow and unschedule_workflow (dynamic: pg_cron may be
	# absent), and pg_cron's own
	'%cron.%');
my $cold = join(', ', map { my $p = $_; $p =~ s/'/''/g; "'$p'" } @planned_per_call);

# (Not the foreign keys' checks: PostgreSQL's own statements, one per
# constraint, counted together since their text is the same.)
my $replanned = $sql->(qq{
SELECT coalesce(string_agg(s.calls || ' calls, ' || s.plans || ' plans: ' || left(q.text, 160),
						   E'\\n' ORDER BY s.plans DESC), '')
  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
 CROSS JOIN LATERAL (SELECT btrim(regexp_replace(s.query, '\\s+', ' ', 'g')) AS text) q
 WHERE d.datname = 'kept2' AND NOT s.toplevel AND s.calls >= 10 AND s.plans > 6
   AND s.query NOT LIKE '% FROM ONLY %' AND NOT q.text LIKE ANY (ARRAY[$cold])});
my $exempt = $sql->(qq{
SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
 WHERE d.datname = 'kept2' AND NOT s.toplevel AND s.calls >= 10
   AND btrim(regexp_replace(s.query, '\\s+', ' ', 'g')) LIKE ANY (ARRAY[$cold])});

# What the functions returned, each kind of call over all rounds.
my $r = $rounds;
my %want = (
	'cancel_run' => "true:" . 3 * $r,
	'cancelled' => "ctl:$r:1, kid2:$r:1, orphan:$r:1, undo:$r:1",
	'claim while paused' => "0:$r",
	'diff_runs output.b' => "1:$r",
	'fail_task' => "failed:" . 2 * $r,
	'graph' => "true:$r",
	'last claim' => "6:$r",
	'pause_run' => "true:" . 2 * $r,
	'pause_run again' => "false:$r",
	'purge_runs' => "4:$r",
	'replay' => "succeeded:$r",
	'replay upto' => "2:$r",
	'requeue' => "true:" . 2 * $r,
	'requeue_dead' => "1:$r",
	'resume_run' => "true:$r",
	'run_due_work 1' => '{"errors": 0, "timeouts": 0, "waits_ended": 0, "gates_expired": 0, "waits_started": 5, '
	  . '"leases_expired": 0, "children_cancelled": 0, "deadlines_enforced": 0}' . ":$r",
	'run_due_work 2' => '{"errors": 0, "timeouts": 0, "waits_ended": 1, "gates_expired": 1, "waits_started": 0, '
	  . '"leases_expired": 1, "children_cancelled": 1, "deadlines_enforced": 1}' . ":$r",
	'send_signal again' => "true:$r",
	'set_run_budget' => "true:$r",
	'timeline' => "true:$r",
	'timeline_chart' => "true:$r",
	'unschedule_workflow' => "true:$r",
	'verify_run' => "0:$r",);
my %got = map { my ($w, $g) = split /\|/, $_, 2; ($w => $g) } split /\n/, $sql->(q{
	SELECT what || '|' || string_agg(got || ':' || n, ', ' ORDER BY got)
	  FROM (SELECT what, got, count(*) AS n FROM tap_results GROUP BY 1, 2) s
	 GROUP BY what ORDER BY what});
is_deeply(\%got, \%want, 'every call of the rounds returned what it should');
is($sql->(q{SELECT (SELECT coalesce(sum(got::int), 0) FROM tap_results WHERE what = 'purge_runs') || ' '
				   || (SELECT coalesce(sum(runs), 0) FROM vectorbea.purge_batches)}),
	join(' ', 4 * $r, 4 * $r),
	'purge_runs purged the four runs each round cancelled');

# The runs ended as they should (the cancelled ones, counted above, purged).
is($sql->(q{SELECT string_agg(workflow || '=' || status || ':' || n, ' ' ORDER BY workflow, status)
			  FROM (SELECT workflow, status, count(*) AS n FROM vectorbea.runs
					 WHERE workflow <> 'tick' GROUP BY 1, 2) s}),
	"ask=succeeded:" . 2 * $r . " costly=succeeded:$r ctl=succeeded:" . 2 * $r
	  . " flaky=succeeded:$r gate=succeeded:$r kid=succeeded:$r lapse=succeeded:$r"
	  . " nap=succeeded:$r parent=succeeded:$r sig=succeeded:" . 2 * $r
	  . " slow=failed:$r",
	'every run ended as its round meant it to');
is($sql->(q{SELECT count(*) >= 1 AND bool_and(status = 'succeeded')
				   AND bool_and(idempotency_key LIKE 'schedule:tick@%') AND bool_and(input = '{"from": "schedule"}')
			  FROM vectorbea.runs WHERE workflow = 'tick'}),
	't', "the schedule's command started runs, one per minute, all done");

# Gates decided by people and by their timeout.
is($sql->(q{SELECT string_agg(gate || ' ' || status || ' by ' || decided_by || ':' || n, ', ' ORDER BY gate, status)
			  FROM (SELECT gate, status, decided_by, count(*) AS n FROM vectorbea.approvals GROUP BY 1, 2, 3) s}),
	"g_late approved by vectorbea: timeout:$r, g_ok approved by tap:$r, ship_it approved by tap:$r, ship_it rejected by tap:$r",
	'the gates were decided: by UPDATE, and by a timeout');
is($sql->(q{SELECT count(*) || ' ' || count(delivered_to) || ' ' || count(DISTINCT delivered_to) FROM vectorbea.signals}),
	join(' ', 2 * $r, 2 * $r, 2 * $r), 'two signals a round, each delivered to a node of its own');

# The events of the rounds.
is($sql->(q{SELECT string_agg(type || ':' || n, ' ' ORDER BY type)
			  FROM (SELECT e.type, count(*) AS n FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
					 WHERE e.type IN ('TIMER_STARTED', 'SIGNAL_AWAITED', 'CHILD_RUN_STARTED', 'NODES_REQUEUED',
									  'RUN_PAUSED', 'RUN_RESUMED', 'BUDGET_EXCEEDED', 'RUN_CHECKPOINTED',
									  'note.added')
					   AND r.workflow NOT IN ('orphan', 'undo') AND (r.workflow <> 'ctl' OR r.status = 'succeeded')
					 GROUP BY 1) s}),
	"BUDGET_EXCEEDED:$r CHILD_RUN_STARTED:$r NODES_REQUEUED:" . 3 * $r . " RUN_CHECKPOINTED:$r"
	  . " RUN_PAUSED:" . 2 * $r . " RUN_RESUMED:" . 2 * $r . " SIGNAL_AWAITED:" . 2 * $r
	  . " TIMER_STARTED:$r note.added:$r",
	'timers, signal waits, child runs, requeues, pauses, budgets, checkpoints and custom events, each round');
is($sql->(q{SELECT count(*) FROM vectorbea.events WHERE type = 'RUN_STARTED' AND data ? 'forked_from'}),
	$r, 'one fork a round');
is($sql->(q{SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
			 WHERE r.workflow = 'lapse' AND e.type = 'STEP_FAILED' AND e.data->>'class' = 'lease_expired'}),
	$r, 'one expired lease a round');
is($sql->(q{SELECT count(*) FROM vectorbea.runs r, LATERAL vectorbea.verify_run(r.id)}), '0',
	'every run is consistent');

is($counted, 't', 'the statements of signals, approvals and the purge are among those counted');
ok($exempt >= 10, "the statements planned at every call on purpose were run ($exempt)");
is($replanned, '', 'no other statement of the engine was planned more than six times');

done_testing();
