# 001_crash_recovery.pl -- the whole server dies with SIGKILL in the middle
# of a busy run, comes back, and nothing is lost or done twice.
#
# 100 runs of 20 task nodes each (2,000 tasks; half of the runs a plain
# fan-out, half a graph with fan-out, pairwise and four-way fan-in, a chain
# and one spawned node) are worked by 4 concurrent worker processes
# (test/workers/crash_worker.py).  When a quarter of the tasks are done, one
# more "worker" claims a few tasks and never reports, and then every process
# of the server is killed with SIGKILL at the same instant (postmaster
# stopped first so that it cannot react, then all of its children and the
# postmaster itself).  The server is started again (crash recovery); the
# workers reconnect and carry on; the leases that died with the crash run
# out and their tasks are claimed again as new attempts.
#
# Afterwards:
#   - every node and every run succeeded;
#   - every node has exactly one STEP_COMPLETED, by its last attempt, and its
#     STEP_STARTED attempts are exactly 1..attempt; every earlier attempt
#     ended as lease_expired and was retried (extra executions are visible
#     only as distinct attempts);
#   - every completion a worker saw commit is in the history (no event
#     lost), each task was seen completed exactly once, results refused
#     with VB001 and work abandoned with the crash were redone by a later
#     attempt;
#   - no node started before all of its dependencies had completed;
#   - every run's events are numbered 1..last_seq without gaps and end with
#     RUN_COMPLETED; verify_run() finds nothing; replay() is stable;
#   - at least one task was executed a second time because of the crash.

use strict;
use warnings;

use File::Basename qw(basename);
use FindBin;
use IPC::Run;
use Time::HiRes qw(usleep time);

use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $RUNS_PER_WORKFLOW = 50;
my $NODES_PER_RUN     = 20;
my $TASKS             = 2 * $RUNS_PER_WORKFLOW * $NODES_PER_RUN;    # 2,000
my $WORKERS           = 4;
my $LEASE             = '3 seconds';
my $KILL_AT           = int($TASKS / 4);    # kill when this many are done
my $DOOMED_TASKS      = 5;
my $WORKER_DEADLINE   = 75;                 # seconds, enforced by the worker

my $t0 = time;
my $test_name = basename($0, '.pl');

# ---------------------------------------------------------------------------
# The worker program and its interpreter
# ---------------------------------------------------------------------------
my $worker_script = "$FindBin::RealBin/../workers/crash_worker.py";
die "worker program $worker_script is missing" unless -f $worker_script;
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
if (system($python, '-c', 'import psycopg2') != 0)
{
	BAIL_OUT("$python cannot import psycopg2; install python3-psycopg2");
}

# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------
my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'vectorbea'
fsync = on
log_statement = none
max_connections = 30
});
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');

# ---------------------------------------------------------------------------
# Workflows and runs
# ---------------------------------------------------------------------------
# Retries are immediate and plentiful: a task whose lease died with the
# server is offered again as soon as its lease has run out.
my $retry = '{"max_attempts": 10, "initial": "0s", "max": "0s"}';

my @fanout = map { sprintf('{"id": "t%02d", "activity": "work"}', $_) }
  1 .. $NODES_PER_RUN;

# a -> b1..b8 -> c1..c4 (pairwise fan-in) -> d (four-way fan-in) -> e1..e5
# (a chain); d spawns s1, which depends on d.  19 defined + 1 spawned = 20.
my @graph = ('{"id": "a", "activity": "work"}');
push @graph, qq({"id": "b$_", "activity": "work", "depends_on": ["a"]})
  for 1 .. 8;
push @graph, sprintf(
	'{"id": "c%d", "activity": "work", "depends_on": ["b%d", "b%d"]}',
	$_, 2 * $_ - 1, 2 * $_)
  for 1 .. 4;
push @graph,
  '{"id": "d", "activity": "work", "depends_on": ["c1", "c2", "c3", "c4"],'
  . ' "input": {"spawn": [{"id": "s1", "activity": "work", "depends_on": ["d"],'
  . qq( "retry": $retry}]}});
push @graph,
  sprintf('{"id": "e%d", "activity": "work", "depends_on": ["%s"]}',
	$_, $_ == 1 ? 'd' : 'e' . ($_ - 1))
  for 1 .. 5;
is(scalar(@graph), $NODES_PER_RUN - 1, 'graph workflow: 19 defined nodes + 1 spawned');

for my $wf ([ 'crash_fanout', \@fanout ], [ 'crash_graph', \@graph ])
{
	my $def = sprintf('{"nodes": [%s], "defaults": {"retry": %s}}',
		join(', ', @{ $wf->[1] }), $retry);
	$node->safe_psql('postgres',
		"SELECT vectorbea.define_workflow('$wf->[0]', \$def\$$def\$def\$)");
}

$node->safe_psql(
	'postgres', qq{
SELECT count(vectorbea.start_run('crash_fanout', jsonb_build_object('i', g)))
  FROM generate_series(1, $RUNS_PER_WORKFLOW) g;
SELECT count(vectorbea.start_run('crash_graph', jsonb_build_object('i', g)))
  FROM generate_series(1, $RUNS_PER_WORKFLOW) g;
});
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM vectorbea.runs WHERE status = 'running'"),
	2 * $RUNS_PER_WORKFLOW,
	'100 runs started');

# ---------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------
my $log_dir = $PostgreSQL::Test::Utils::log_path;
my @workers;
for my $i (1 .. $WORKERS)
{
	my $log = "$log_dir/${test_name}_worker$i.log";
	my $err = "$log_dir/${test_name}_worker$i.stderr";
	unlink $log, $err;
	my @cmd = (
		$python, $worker_script,
		'--dsn'      => $node->connstr('postgres'),
		'--name'     => "worker-$i",
		'--log'      => $log,
		'--batch'    => 3,
		'--lease'    => $LEASE,
		'--hold-ms'  => 5,
		'--deadline' => $WORKER_DEADLINE);
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>', $err, '2>&1',
		IPC::Run::timeout($WORKER_DEADLINE + 20));
	push @workers, { name => "worker-$i", h => $h, log => $log, err => $err };
}
my $t_workers = time;

# Stop the workers if the test dies early.
END
{
	for my $w (@workers)
	{
		eval { $w->{h}->kill_kill(grace => 2) if $w->{h}->pumpable; 1 };
	}
}

# ---------------------------------------------------------------------------
# Crash
# ---------------------------------------------------------------------------
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) >= $KILL_AT FROM vectorbea.nodes WHERE status = 'succeeded'"
	),
	"workers completed $KILL_AT tasks before the crash");

# A worker that claims and dies with the server: its tasks can only come
# back through lease expiry, so at least these are executed twice.
# claim_tasks may hand out fewer tasks than asked for (it skips ready nodes
# whose run is locked by another transaction), so claim until it has them.
my %doomed;
for my $try (1 .. 100)
{
	my $want = $DOOMED_TASKS - scalar(keys %doomed);
	last if $want <= 0;
	my $got = $node->safe_psql(
		'postgres', qq{
SELECT task_id || ' ' || attempt
  FROM vectorbea.claim_tasks('doomed-worker', ARRAY['work'], $want, '$LEASE')});
	%doomed = (%doomed, map { split / / } grep { length } split /\n/, $got);
}
is(scalar(keys %doomed), $DOOMED_TASKS, "doomed worker holds $DOOMED_TASKS tasks");

my $done_before = $node->safe_psql('postgres',
	"SELECT count(*) FROM vectorbea.nodes WHERE status = 'succeeded'");
my $t_kill = time;
vb_kill_server($node);
my $t_killed = time;
ok($done_before > 0 && $done_before < $TASKS,
	"server killed with SIGKILL in the middle: $done_before of $TASKS tasks had succeeded");

# Crash recovery: start again.  The workers keep trying to connect.
my $started = 0;
for my $try (1 .. 10)
{
	$started = $node->start(fail_ok => 1);
	last if $started;
	usleep(500_000);
}
ok($started, 'server restarted after the crash');
BAIL_OUT('server did not restart') unless $started;
my $t_restart = time;
like(
	slurp_file($node->logfile),
	qr/database system was (interrupted|not properly shut down)/,
	'the restart ran crash recovery');

my ($done_after, $open_after) = split /\|/,
  $node->safe_psql(
	'postgres', q{
SELECT count(*) FILTER (WHERE status = 'succeeded'),
       count(*) FILTER (WHERE status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled'))
  FROM vectorbea.nodes});
cmp_ok($done_after, '>=', $done_before,
	'no completion committed before the crash was lost');
cmp_ok($open_after, '>', 0, 'the crash happened mid-run: open nodes are left');

# ---------------------------------------------------------------------------
# Let the workers finish
# ---------------------------------------------------------------------------
my %counts;
for my $w (@workers)
{
	my $ok = eval { $w->{h}->finish; 1 };
	my $rc = $ok ? $w->{h}->result(0) : 'timeout';
	is($rc, 0, "$w->{name} finished: no open nodes left");
	if (!$ok || $rc ne '0')
	{
		diag("$w->{name} output:\n" . slurp_file($w->{err}));
		$w->{h}->kill_kill(grace => 2) unless $ok;
	}
}
my $t_done = time;

# ---------------------------------------------------------------------------
# What the workers saw
# ---------------------------------------------------------------------------
my (@done, @stale, @abandoned, %seen_done, %per_worker);
for my $w (@workers)
{
	for my $line (split /\n/, slurp_file($w->{log}))
	{
		my ($kind, @f) = split / /, $line;
		if ($kind eq 'done')
		{
			push @done, [@f];
			push @{ $seen_done{ $f[0] } }, "$w->{name}:$f[1]";
		}
		elsif ($kind eq 'stale')     { push @stale,     [@f] }
		elsif ($kind eq 'abandoned') { push @abandoned, [@f] }
		elsif ($kind eq 'summary')   { $per_worker{ $w->{name} } = "@f" }
	}
}

my @twice = grep { @{ $seen_done{$_} } > 1 } sort keys %seen_done;
is_deeply(\@twice, [], 'no task was seen completed by two calls')
  or diag(join("\n", map { "task $_: @{ $seen_done{$_} }" } @twice));
is(scalar(keys %seen_done), $TASKS,
	'every task has one completion that a worker saw commit');

# ---------------------------------------------------------------------------
# The tables and the history
# ---------------------------------------------------------------------------
sub query { return $node->safe_psql('postgres', shift) }

sub no_rows
{
	my ($sql, $name) = @_;
	my $out = query($sql);
	is($out, '', $name) or diag("offending rows (first 20):\n"
		  . join("\n", grep { defined } (split /\n/, $out)[ 0 .. 19 ]));
}

is(query("SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'succeeded') FROM vectorbea.nodes"),
	"$TASKS $TASKS", "all $TASKS nodes succeeded");
is( query(
		q{SELECT count(*) || ' ' || count(*) FILTER (WHERE status = 'succeeded'
		  AND open_nodes = 0 AND node_count = 20 AND finished_at IS NOT NULL) FROM vectorbea.runs}),
	'100 100',
	'all 100 runs succeeded with 20 nodes each');
is(query("SELECT count(*) FROM vectorbea.nodes WHERE spawned_by = 'd' AND node = 's1'"),
	$RUNS_PER_WORKFLOW, 'every graph run spawned s1 exactly once');

no_rows(
	q{
SELECT n.id, n.node, count(e.*)
  FROM vectorbea.nodes n
  LEFT JOIN vectorbea.events e
    ON e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_COMPLETED'
 GROUP BY n.id, n.node, n.attempt
HAVING count(e.*) <> 1 OR min(e.attempt) <> n.attempt},
	'every node has exactly one STEP_COMPLETED, by its last attempt');

no_rows(
	q{
SELECT n.id, n.node, n.attempt, array_agg(e.attempt ORDER BY e.seq)
  FROM vectorbea.nodes n
  LEFT JOIN vectorbea.events e
    ON e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_STARTED'
 GROUP BY n.id, n.node, n.attempt
HAVING count(e.*) <> n.attempt OR count(DISTINCT e.attempt) <> n.attempt
    OR min(e.attempt) <> 1 OR max(e.attempt) <> n.attempt
    OR array_agg(e.attempt ORDER BY e.seq) <> array_agg(e.attempt ORDER BY e.attempt)},
	'every node was started as attempts 1..attempt, each once, in order');

no_rows(
	q{
SELECT n.id, n.node, k
  FROM vectorbea.nodes n, generate_series(1, n.attempt - 1) k
 WHERE NOT EXISTS (SELECT 1 FROM vectorbea.events f
                    WHERE f.run_id = n.run_id AND f.node = n.node AND f.attempt = k
                      AND f.type = 'STEP_FAILED' AND f.data->>'class' = 'lease_expired'
                      AND NOT (f.data->>'final')::boolean)
    OR NOT EXISTS (SELECT 1 FROM vectorbea.events r
                    WHERE r.run_id = n.run_id AND r.node = n.node AND r.attempt = k
                      AND r.type = 'STEP_RETRIED' AND (r.data->>'next_attempt')::int = k + 1)
UNION ALL
SELECT n.id, n.node, f.attempt
  FROM vectorbea.nodes n
  JOIN vectorbea.events f ON f.run_id = n.run_id AND f.node = n.node
 WHERE f.type = 'STEP_FAILED' AND (f.attempt >= n.attempt OR f.data->>'class' <> 'lease_expired')},
	'every earlier attempt ended as lease_expired and was retried; the last one did not fail');

no_rows(
	q{
SELECT n.id, n.node, n.output
  FROM vectorbea.nodes n
 WHERE n.output IS DISTINCT FROM jsonb_build_object('task', n.id, 'attempt', n.attempt, 'node', n.node)},
	'every node kept the output of its last attempt');

no_rows(
	q{
SELECT n.run_id, n.node, dep
  FROM vectorbea.nodes n, unnest(n.depends_on) dep
 WHERE (SELECT min(s.seq) FROM vectorbea.events s
         WHERE s.run_id = n.run_id AND s.node = n.node AND s.type = 'STEP_STARTED')
       <= (SELECT max(c.seq) FROM vectorbea.events c
            WHERE c.run_id = n.run_id AND c.node = dep AND c.type = 'STEP_COMPLETED')},
	'no node started before all of its dependencies had completed');

# No event lost: each completion a worker saw commit is in the history.
my $seen_values = join(",\n", map { "($_->[0], $_->[1])" } @done);
no_rows(
	qq{
WITH seen(task_id, attempt) AS (VALUES $seen_values)
SELECT s.task_id, s.attempt
  FROM seen s
 WHERE NOT EXISTS (SELECT 1 FROM vectorbea.nodes n
                     JOIN vectorbea.events e ON e.run_id = n.run_id AND e.node = n.node
                    WHERE n.id = s.task_id AND e.type = 'STEP_COMPLETED'
                      AND e.attempt = s.attempt AND n.attempt = s.attempt)},
	'every completion a worker saw commit is in the history');

# Refused and abandoned work was done again by a later attempt.
my @redo = (@stale, @abandoned, map { [ $_, $doomed{$_} ] } keys %doomed);
if (@redo)
{
	my $redo_values = join(",\n", map { "($_->[0], $_->[1])" } @redo);
	no_rows(
		qq{
WITH lost(task_id, attempt) AS (VALUES $redo_values)
SELECT l.task_id, l.attempt, n.attempt
  FROM lost l LEFT JOIN vectorbea.nodes n ON n.id = l.task_id
 WHERE n.id IS NULL OR n.attempt <= l.attempt},
		'refused, abandoned and doomed attempts were redone by a later attempt');
}
my $doomed_list = join(',', keys %doomed);
is( query(
		qq{
SELECT count(*) FROM vectorbea.events e JOIN vectorbea.nodes n
    ON n.run_id = e.run_id AND n.node = e.node
 WHERE n.id IN ($doomed_list) AND e.type = 'STEP_STARTED' AND e.data->>'worker' = 'doomed-worker'}),
	$DOOMED_TASKS,
	"the doomed worker's attempts are in the history");

# Gap-free sequences and complete histories.
no_rows(
	q{
SELECT r.id, r.last_seq, count(e.*), min(e.seq), max(e.seq), count(DISTINCT e.seq)
  FROM vectorbea.runs r LEFT JOIN vectorbea.events e ON e.run_id = r.id
 GROUP BY r.id, r.last_seq
HAVING count(e.*) <> r.last_seq OR min(e.seq) <> 1 OR max(e.seq) <> r.last_seq
    OR count(DISTINCT e.seq) <> count(e.*)},
	'every run has events 1..last_seq without gaps');
no_rows(
	q{
SELECT r.id, array_agg(e.type ORDER BY e.seq)
  FROM vectorbea.runs r JOIN vectorbea.events e ON e.run_id = r.id
 WHERE e.type IN ('RUN_STARTED', 'RUN_COMPLETED', 'RUN_FAILED', 'RUN_CANCELLED')
    OR e.seq IN (1, r.last_seq)
 GROUP BY r.id
HAVING array_agg(e.type ORDER BY e.seq) <> ARRAY['RUN_STARTED', 'RUN_COMPLETED']},
	'every run starts with RUN_STARTED and ends with its only RUN_COMPLETED');
no_rows(
	q{SELECT r.id, v FROM vectorbea.runs r, vectorbea.verify_run(r.id) v},
	'verify_run finds no difference for any run');

my $replay_sql = q{
SELECT r.id, md5(vectorbea.replay(r.id)::text), vectorbea.replay(r.id)->>'status'
  FROM vectorbea.runs r ORDER BY r.id};
my $replay1 = query($replay_sql);
my $replay2 = query($replay_sql);
is($replay1, $replay2, 'replay gives the same state twice');
is(scalar(grep { /\|succeeded$/ } split /\n/, $replay1),
	100, 'replay says every run succeeded');

# The crash made work run twice, and it shows as attempts.
my ($reexecuted, $max_attempt) = split /\|/,
  query("SELECT count(*) FILTER (WHERE attempt > 1), max(attempt) FROM vectorbea.nodes");
cmp_ok($reexecuted, '>=', $DOOMED_TASKS,
	'tasks held at the crash were executed again as a later attempt');

# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------
my $events = query('SELECT count(*) FROM vectorbea.events');
my $by_type = query(
	q{SELECT string_agg(type || '=' || n, ' ' ORDER BY type)
	    FROM (SELECT type, count(*) n FROM vectorbea.events GROUP BY type) t});
diag(sprintf(
	"%d tasks in 100 runs, %d workers; killed after %d done (%d seen after restart); "
	  . "%d re-executed (max attempt %d); %d stale results, %d abandoned, %d doomed",
	$TASKS, $WORKERS, $done_before, $done_after, $reexecuted, $max_attempt,
	scalar(@stale), scalar(@abandoned), $DOOMED_TASKS));
diag("events: $events ($by_type)");
diag("$_: $per_worker{$_}") for sort keys %per_worker;
diag(sprintf(
	"times: setup %.1fs, until kill %.1fs, processes gone %.1fs, restart %.1fs, after restart %.1fs, checks %.1fs",
	$t_workers - $t0, $t_kill - $t_workers, $t_killed - $t_kill, $t_restart - $t_killed,
	$t_done - $t_restart, time - $t_done));

$node->stop;
done_testing();
