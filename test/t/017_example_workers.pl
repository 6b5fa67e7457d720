# 017_example_workers.pl -- the two example workers, examples/worker_psycopg.py
# (psycopg 3) and examples/worker_node.js (node-postgres), run unchanged
# against one server as a role with only the worker grants.
#
# Both use the pipelined loop (docs/worker-protocol.md#batches-complete_tasks-and-the-pipelined-loop):
# claim a batch, run its handlers (reporting a failure at once, alone), then
# complete the batch with complete_tasks and claim the next batch in one
# transaction; on VB001 roll back and complete the batch one task at a time.
#
# Each process runs several workers (--workers; VB_WORKERS for Node), worker k
# claiming as "<name>/k", with one work connection each, one connection that
# LISTENs and wakes one idle worker per notification, and one connection for
# the heartbeats of every task the process holds.
#
# Part 1, side by side, the Python process with 3 workers, the Node one with 2:
#   ex_long    "long" sleeps 5 s under a 3 s lease, then "after" echoes;
#   ex_hold    (4 runs) "hold" sleeps 5 s, like "long";
#   ex_mix     (4 runs) "hello" echoes, "flaky" fails its first attempt
#              (transient), "nap" sleeps 0.2 s, "join" waits for all three;
#   ex_cancel  "doomed" sleeps 2 s; its run is cancelled once a worker has
#              claimed it, so that the worker's completion gets VB001.
# "long" and then the 4 runs of ex_hold start one after the other, each once
# the task before it was claimed: a worker sleeping in one cannot claim
# another, so the 5 tasks go to the 5 workers, one each, and both processes
# and every worker of each do some of the work.  Checked: each process holds
# exactly workers + 2 sessions, one of them LISTENing; each of the 5 workers
# started one of the 5 sleeping tasks; every run but the cancelled one
# succeeded; "long" and every "hold" finished in attempt 1, more than a lease
# after it started (only heartbeats keep a lease that long, and one heartbeat
# connection per process serves all its workers); each "flaky" took exactly 2
# attempts, each failure reported in a transaction of its own; the doomed
# result was dropped on VB001.  The Python process exits by --drain once all
# its workers are idle; the Node one, idle, on SIGTERM, at once (the signal
# wakes its idle workers; they do not wait for their poll).
#
# Part 2, each language alone with one worker (--workers 1: the exact
# transaction counts below need a single worker), a Node process, then a
# Python one, with runs tagged with the process's name:
#   pipelined  3 runs of ex_chain (s1 -> s2 -> s3 -> s4), started together
#              by start_runs: the worker's events fall in exactly 5
#              transactions for its 4 batches, and the STEP_COMPLETED of each
#              step share one transaction with the STEP_STARTED of the next;
#   fallback   ex_lost ("lost" sleeps 8 s under a 1 s timeout, one attempt)
#              and 4 runs of ex_one (one echo), started in one transaction,
#              so one batch; the engine ends "lost" while the worker holds
#              it, so complete_tasks gets VB001: the worker rolls back,
#              completes the 4 others one at a time (4 transactions) and
#              drops "lost";
#   stopping   ex_term: "t1" sleeps 1.5 s, then "t2" echoes; SIGTERM while
#              "t1" runs: the worker completes "t1" in a transaction that
#              claims nothing, never starts "t2", and exits with status 0.
# A last Python process (2 workers) finishes the "t2" left over and, idle,
# exits on SIGTERM at once.  Part 2's workers have a 600 s lease, so that no
# heartbeat comes in its few seconds.
#
# Part 3, each language alone again, under the 3 s lease: the fallback's
# batch once more, but a heartbeat (every second) finds "lost" gone while its
# handler sleeps: the worker drops its result and completes the 4 others in
# one batch, no complete_tasks refused.
#
# Then each language once more, with the 5 s poll of the example set to an
# hour (and nothing else changed): every worker idle, SIGTERM still ends
# the process, as it wakes the idle workers instead of leaving them to their
# poll.
#
# At the end, for every run: each node that succeeded has exactly one
# STEP_COMPLETED and no other node has one, no attempt was started twice,
# and verify_run finds nothing.
#
# Node.js and npm must be installed (test/lib/common.sh installs them);
# `pg` is installed with npm from examples/package-lock.json into a
# directory of this test.

use strict;
use warnings;

use File::Copy qw(copy);
use FindBin;
use IPC::Run;
use Time::HiRes qw(time usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $LEASE    = 3;    # seconds, for both workers
my $LONG     = 5;    # seconds "long" and "hold" sleep: longer than the lease
my $HOLDS    = 4;    # runs of ex_hold: with "long", one for each worker of part 1
my $RUNS     = 4;    # runs of ex_mix
my %WORKERS  = ('py-worker' => 3, 'node-worker' => 2);    # workers in part 1
my $EXAMPLES = "$FindBin::RealBin/../../examples";
my $t0       = time;

# ---------------------------------------------------------------------------
# Python with psycopg 3; Node.js with pg from npm
# ---------------------------------------------------------------------------
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
BAIL_OUT("$python cannot import psycopg (psycopg 3); install python3-psycopg")
  if system($python, '-c', 'import psycopg') != 0;

sub in_path
{
	my ($cmd) = @_;
	my ($found) = grep { -x "$_/$cmd" } split /:/, ($ENV{PATH} // '');
	return defined $found ? "$found/$cmd" : undef;
}
my ($nodejs, $npm) = (in_path('node'), in_path('npm'));
BAIL_OUT('node or npm is not in PATH; install the Debian packages nodejs and npm')
  unless $nodejs && $npm;

my $npm_dir = PostgreSQL::Test::Utils::tempdir('npm');
for my $f (qw(package.json package-lock.json))
{
	copy("$EXAMPLES/$f", "$npm_dir/$f") or die "cannot copy $EXAMPLES/$f: $!";
}
my $npm_out = '';
my $npm_ok = eval {
	IPC::Run::run(
		[ $npm, qw(install --no-audit --no-fund --prefer-offline --no-update-notifier) ],
		'<', \undef, '>', \$npm_out, '2>&1',
		init => sub { chdir $npm_dir or die "chdir $npm_dir: $!" },
		IPC::Run::timeout(45));
};
$npm_out .= "\n$@" if $@;
my $t_npm = time - $t0;
ok($npm_ok && -f "$npm_dir/node_modules/pg/package.json",
	sprintf('npm installed pg (%.1fs)', $t_npm))
  or do { diag("npm install in $npm_dir failed:\n$npm_out"); BAIL_OUT('npm install failed') };

# ---------------------------------------------------------------------------
# Server, worker role, workflows
# ---------------------------------------------------------------------------
my $pg = vb_server('examples');
ok( defined vb_wait_for($pg,
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'the scheduler is running');
$pg->safe_psql(
	'postgres', q{
CREATE EXTENSION vectorbea CASCADE;
CREATE ROLE vb_worker LOGIN;
GRANT USAGE ON SCHEMA vectorbea TO vb_worker;
GRANT EXECUTE ON FUNCTION
    vectorbea.claim_tasks(text, text[], integer, interval),
    vectorbea.heartbeat(bigint, uuid, interval),
    vectorbea.complete_task(bigint, uuid, jsonb, jsonb, jsonb),
    vectorbea.complete_tasks(bigint[], uuid[], jsonb[], jsonb[], jsonb[]),
    vectorbea.fail_task(bigint, uuid, jsonb, boolean)
  TO vb_worker;
});
my %workflows = (
	ex_long => qq{{"nodes": [
	  {"id": "long", "activity": "sleep", "input": {"seconds": $LONG}},
	  {"id": "after", "activity": "echo", "depends_on": ["long"], "input": {"after": "long"}}]}},
	ex_hold => qq{{"nodes": [
	  {"id": "hold", "activity": "sleep", "input": {"seconds": $LONG}}]}},
	ex_mix => q{{"nodes": [
	  {"id": "hello", "activity": "echo", "input": {"hello": "world"}},
	  {"id": "flaky", "activity": "flaky", "input": {"key": "k1"}},
	  {"id": "nap", "activity": "sleep", "input": {"seconds": 0.2}},
	  {"id": "join", "activity": "echo", "depends_on": ["hello", "flaky", "nap"],
	   "input": {"joined": 3}}]}},
	ex_cancel => q{{"nodes": [
	  {"id": "doomed", "activity": "sleep", "input": {"seconds": 2}}]}},
	ex_chain => q{{"nodes": [
	  {"id": "s1", "activity": "echo", "input": {"step": 1}},
	  {"id": "s2", "activity": "echo", "input": {"step": 2}, "depends_on": ["s1"]},
	  {"id": "s3", "activity": "echo", "input": {"step": 3}, "depends_on": ["s2"]},
	  {"id": "s4", "activity": "echo", "input": {"step": 4}, "depends_on": ["s3"]}]}},
	ex_lost => q{{"nodes": [
	  {"id": "lost", "activity": "sleep", "input": {"seconds": 8}, "timeout": "1s",
	   "retry": {"max_attempts": 1}}]}},
	ex_one => q{{"nodes": [{"id": "one", "activity": "echo", "input": {"one": 1}}]}},
	ex_fine => q{{"nodes": [{"id": "fine", "activity": "echo", "input": {"fine": true}}]}},
	ex_poison1 => q{{"nodes": [{"id": "bad", "activity": "poison", "retry": {"max_attempts": 1},
	  "input": {"kind": "first"}}]}},
	ex_poison2 => q{{"nodes": [{"id": "bad", "activity": "poison", "retry": {"max_attempts": 1},
	  "input": {"kind": "second"}}]}},
	ex_poison3 => q{{"nodes": [{"id": "bad", "activity": "poison", "retry": {"max_attempts": 1},
	  "input": {"kind": "third"}}]}},
	ex_poison4 => q{{"nodes": [{"id": "bad", "activity": "poison", "retry": {"max_attempts": 1},
	  "input": {"kind": "fourth"}}]}},
	ex_term => q{{"nodes": [
	  {"id": "t1", "activity": "sleep", "input": {"seconds": 1.5}},
	  {"id": "t2", "activity": "echo", "input": {"after": "t1"}, "depends_on": ["t1"]}]}});
$pg->safe_psql('postgres',
	"SELECT vectorbea.define_workflow('$_', \$d\$$workflows{$_}\$d\$)")
  for sort keys %workflows;

# ---------------------------------------------------------------------------
# The workers: Python configured on the command line, Node by environment
# ---------------------------------------------------------------------------
my $log_dir = $PostgreSQL::Test::Utils::log_path;
my %w;    # name -> {h => harness, log => file, text => output once it exited}

# Starts a worker process with $workers workers, named $name.
sub start_worker
{
	my ($name, $workers, $drain, $lease, $script, $activities) = @_;
	$lease //= $LEASE;
	$activities //= 'echo,sleep,flaky';
	my $log = "$log_dir/017_$name.log";
	my $h;
	if ($name =~ /^py/)
	{
		$h = IPC::Run::start(
			[
				$python, $script // "$EXAMPLES/worker_psycopg.py",
				'--dsn'        => $pg->connstr('postgres') . ' user=vb_worker',
				'--name'       => $name,
				'--workers'    => $workers,
				'--activities' => $activities,
				'--lease'      => $lease,
				'--drain'      => $drain
			],
			'<', \undef, '>', $log, '2>&1', IPC::Run::timeout(90));
	}
	else
	{
		my $host = $pg->host;
		$host =~ s/([^A-Za-z0-9\/._~-])/sprintf('%%%02X', ord $1)/ge;
		local $ENV{NODE_PATH}     = "$npm_dir/node_modules";
		local $ENV{VB_DSN}        = "postgresql://vb_worker@/postgres?host=$host&port=" . $pg->port;
		local $ENV{VB_WORKER}     = $name;
		local $ENV{VB_WORKERS}    = $workers;
		local $ENV{VB_ACTIVITIES} = $activities;
		$h = IPC::Run::start(
			[ $nodejs, $script // "$EXAMPLES/worker_node.js", '--lease' => $lease, '--drain' => $drain ],
			'<', \undef, '>', $log, '2>&1', IPC::Run::timeout(90));
	}
	$w{$name} = { h => $h, log => $log };
	return;
}

END
{
	for my $name (keys %w)
	{
		my $h = $w{$name}{h} or next;
		eval { $h->kill_kill(grace => 2) if $h->pumpable; 1 };
	}
}

sub logs
{
	return join '', map { "----- $_:\n" . (-f $w{$_}{log} ? slurp_file($w{$_}{log}) : '') }
	  sort keys %w;
}

sub query { return $pg->safe_psql('postgres', shift) }

sub no_rows
{
	my ($sql, $name) = @_;
	my $out = query($sql);
	is($out, '', $name) or diag("offending rows:\n$out");
}

# The sessions of the process named $name, as "5 sessions, 1 listening".
sub sessions_sql
{
	my ($name) = @_;
	return qq{
SELECT count(*) || ' sessions, '
       || count(*) FILTER (WHERE query = 'LISTEN vectorbea_tasks') || ' listening'
  FROM pg_stat_activity WHERE application_name = '$name'};
}

# Waits until the process has connected and listens.
sub wait_ready
{
	my ($name, $workers) = @_;
	ok( defined vb_wait_for($pg, qq{
SELECT count(*) >= $workers + 2 AND bool_or(query = 'LISTEN vectorbea_tasks')
  FROM pg_stat_activity WHERE application_name = '$name'}, 't', 30),
		"$name connected and listening") or diag(logs());
}

# Once every worker has claimed (so every connection is open): the process
# holds a session per worker, one that listens, one for heartbeats.
sub check_sessions
{
	my ($name, $workers) = @_;
	is(query(sessions_sql($name)), ($workers + 2) . ' sessions, 1 listening',
		"$name ($workers worker" . ($workers == 1 ? '' : 's')
		  . '): a session per worker, one listener, one for heartbeats');
}

# Waits for the worker to exit; checks its status and its last line.
sub worker_exits
{
	my ($name, $how) = @_;
	my $h = $w{$name}{h};
	my $finished = eval { $h->finish; 1 };
	is($finished ? $h->full_result(0) : 'timeout', 0, "$name exited with status 0")
	  or diag(logs());
	$w{$name}{text} = slurp_file($w{$name}{log});
	delete $w{$name}{h};
	like($w{$name}{text}, qr/\Q$name\E stopped: $how\n\z/, "$name stopped: $how, its last line");
}

# SIGTERM to a process whose workers are all idle: it exits (that its idle
# workers are woken, not left to sleep out their poll interval, part 3 shows
# with a poll of an hour).
sub stop_idle
{
	my ($name) = @_;
	my $t = time;
	$w{$name}{h}->signal('TERM');
	worker_exits($name, 'signal');
	note(sprintf('%s, idle, exited %.1fs after SIGTERM', $name, time - $t));
}

# ---------------------------------------------------------------------------
# Part 1: both processes side by side
# ---------------------------------------------------------------------------
start_worker('py-worker',   $WORKERS{'py-worker'},   3);
start_worker('node-worker', $WORKERS{'node-worker'}, 120);
wait_ready($_, $WORKERS{$_}) for sort keys %WORKERS;
my $t_workers = time;

# "long", then each "hold" once the task before it was claimed: each goes to
# a worker that is not sleeping in one already.
query(q{SELECT vectorbea.start_run('ex_long', '{}')});
ok( defined vb_wait_for($pg,
		q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_STARTED' AND node = 'long'}, '1',
		20),
	'a worker claimed "long"') or diag(logs());
my $holds = 0;
for my $i (1 .. $HOLDS)
{
	query(qq{SELECT vectorbea.start_run('ex_hold', '{"i": $i}')});
	last unless defined vb_wait_for($pg, q{
SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_STARTED' AND node = 'hold'}, $i, 20);
	$holds = $i;
}
is($holds, $HOLDS, 'workers claimed each "hold" before the next one started') or diag(logs());
is( query(q{
SELECT string_agg(data->>'worker', ',' ORDER BY data->>'worker') FROM vectorbea.events
 WHERE type = 'STEP_STARTED' AND node IN ('long', 'hold')}),
	'node-worker/1,node-worker/2,py-worker/1,py-worker/2,py-worker/3',
	'each worker of the two processes started one of "long" and the 4 "hold"')
  or diag(logs());
check_sessions($_, $WORKERS{$_}) for sort keys %WORKERS;
my $cancel_run = query(qq{
SELECT count(vectorbea.start_run('ex_mix', jsonb_build_object('i', g))) FROM generate_series(1, $RUNS) g;
SELECT vectorbea.start_run('ex_cancel', '{}');});
($cancel_run) = reverse split /\n/, $cancel_run;
ok( defined vb_wait_for($pg,
		q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_STARTED' AND node = 'doomed'}, '1',
		20),
	'a worker claimed "doomed"') or diag(logs());
is(query("SELECT vectorbea.cancel_run('$cancel_run', 'test: the holder must get VB001')"),
	't', 'the run of "doomed" is cancelled while a worker holds it');

ok( defined vb_wait_for($pg,
		q{SELECT count(*) FROM vectorbea.runs WHERE status IN ('running', 'compensating')}, '0', 40),
	'every run of part 1 finished');
is( query(q{
SELECT count(*) FILTER (WHERE status = 'succeeded') || '/' || count(*)
  FROM vectorbea.runs WHERE workflow IN ('ex_long', 'ex_hold', 'ex_mix')}),
	($RUNS + $HOLDS + 1) . '/' . ($RUNS + $HOLDS + 1),
	'every run succeeded (but the cancelled one)')
  or diag(query('SELECT workflow, status, error FROM vectorbea.runs') . "\n" . logs());
my $t_part1 = time;
worker_exits('py-worker', 'drained');

is( query(q{
SELECT n.status || ' attempt ' || n.attempt
       || ', started ' || (SELECT count(*) FROM vectorbea.events e
                            WHERE e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_STARTED')
       || ', failed ' || (SELECT count(*) FROM vectorbea.events e
                           WHERE e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_FAILED')
       || ', completed by attempt ' || coalesce((SELECT string_agg(e.attempt::text, ',')
                           FROM vectorbea.events e
                           WHERE e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_COMPLETED'),
                           'none')
  FROM vectorbea.nodes n WHERE n.node = 'long'}),
	'succeeded attempt 1, started 1, failed 0, completed by attempt 1',
	'"long" finished in its first attempt');
my $held = query(q{
SELECT extract(epoch FROM c.at - s.at)::numeric(10, 1)
  FROM vectorbea.events s JOIN vectorbea.events c ON c.run_id = s.run_id AND c.node = s.node
 WHERE s.node = 'long' AND s.type = 'STEP_STARTED' AND c.type = 'STEP_COMPLETED'});
cmp_ok($held || 0, '>', $LEASE,
	"\"long\" held its ${LEASE}s lease for ${held}s: heartbeats renewed it");
# Held by 4 workers of two processes at once: each process's one heartbeat
# connection renewed the tasks of all its workers.
is( query(qq{
SELECT count(*) FROM vectorbea.nodes n
  JOIN vectorbea.events s ON s.run_id = n.run_id AND s.node = n.node AND s.type = 'STEP_STARTED'
  JOIN vectorbea.events c ON c.run_id = n.run_id AND c.node = n.node AND c.type = 'STEP_COMPLETED'
 WHERE n.node = 'hold' AND n.status = 'succeeded' AND n.attempt = 1 AND s.attempt = 1
   AND c.at - s.at > interval '$LEASE seconds'}),
	$HOLDS, "every \"hold\" finished in its first attempt, held longer than its ${LEASE}s lease");

is( query(q{
SELECT count(*) FROM vectorbea.nodes n
 WHERE n.node = 'flaky' AND n.status = 'succeeded' AND n.attempt = 2
   AND EXISTS (SELECT 1 FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
                  AND e.type = 'STEP_FAILED' AND e.attempt = 1 AND e.data->>'class' = 'transient'
                  AND e.data->'error'->>'message' = 'k1: service busy, try again')
   AND EXISTS (SELECT 1 FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
                  AND e.type = 'STEP_RETRIED' AND e.attempt = 1)
   AND EXISTS (SELECT 1 FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
                  AND e.type = 'STEP_COMPLETED' AND e.attempt = 2)}),
	$RUNS, 'every "flaky" failed once (transient), was retried, and succeeded in attempt 2');
is(query(q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'flaky' AND attempt <> 2}),
	'0', 'no "flaky" took other than 2 attempts');
no_rows(q{
SELECT xmin::text, array_agg(type || ' ' || node ORDER BY run_id, seq) FROM vectorbea.events
 GROUP BY xmin::text
HAVING bool_or(type = 'STEP_FAILED' AND data->>'class' = 'transient') AND bool_or(type IN ('STEP_COMPLETED', 'STEP_STARTED'))},
	'each failure was reported alone, in a transaction without completions or claims');

is( query(q{
SELECT count(*) FROM vectorbea.nodes
 WHERE (node = 'hello' AND output = '{"hello": "world"}')
    OR (node = 'join' AND output = '{"joined": 3}')
    OR (node = 'nap' AND output = '{"slept": true}')}),
	3 * $RUNS, 'the handlers\' outputs were recorded');

my %by_worker = map { split /\|/ } split /\n/, query(q{
SELECT e.data->>'worker', count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE e.type = 'STEP_STARTED' AND r.workflow IN ('ex_long', 'ex_hold', 'ex_mix', 'ex_cancel')
 GROUP BY 1 ORDER BY 1});

# Dropped at its completion (VB001), or before it, by a heartbeat that found it gone.
# Nothing above waited for the worker that holds it (its handler sleeps
# 2 s; the other runs can finish first): wait for its line.
my $doomed = qr/ doomed attempt 1: VB001(, | at its heartbeat, )result dropped/;
my $t_doomed = time;
usleep(100_000) until logs() =~ $doomed || time - $t_doomed > 30;
like(logs(), $doomed, 'the holder of "doomed" dropped its result on VB001');
is( query(qq{
SELECT r.status || ', ' || count(e.*) FILTER (WHERE e.type = 'STEP_COMPLETED')
  FROM vectorbea.runs r LEFT JOIN vectorbea.events e ON e.run_id = r.id
 WHERE r.id = '$cancel_run' GROUP BY r.status}),
	'cancelled, 0', 'the cancelled run recorded no completion');

stop_idle('node-worker');

# ---------------------------------------------------------------------------
# Part 2: each language alone, one worker
# ---------------------------------------------------------------------------

# The events of $name's runs of @$workflows, grouped by the transaction that
# wrote them (xmin: events are only ever inserted), in commit order (one
# worker alone commits one transaction after the other), each transaction
# as "completed s1 x3 + started s2 x3".
sub transactions
{
	my ($name, $workflows, $types) = @_;
	my $in = join ', ', map { "'$_'" } @$workflows;
	return query(qq{
WITH g AS (
  SELECT e.xmin::text::bigint AS x, lower(substr(e.type, 6)) AS what, e.node, count(*) AS n
    FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
   WHERE r.workflow IN ($in) AND r.input->>'w' = '$name' AND e.type IN ($types)
   GROUP BY 1, 2, 3),
t AS (SELECT x, string_agg(what || ' ' || node || ' x' || n, ' + ' ORDER BY what, node) AS d
        FROM g GROUP BY x)
SELECT string_agg(d, ' | ' ORDER BY x) FROM t});
}

# Starts, in one transaction, "lost" (sleeps 4 s under a 1 s timeout) and
# 4 runs of "one", tagged with the worker's name, and waits for "lost" to be
# claimed.
sub start_lost_batch
{
	my ($name, $kind) = @_;
	my $tag = qq{"w": "$name"};
	query(qq{
BEGIN;
SELECT vectorbea.start_run('ex_lost', '{$tag}');
SELECT count(*) FROM vectorbea.start_runs('ex_one',
	ARRAY['{$tag, "i": 1}', '{$tag, "i": 2}', '{$tag, "i": 3}', '{$tag, "i": 4}']::jsonb[]);
COMMIT;});
	ok( defined vb_wait_for($pg, qq{
SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.input->>'w' = '$name' AND e.node = 'lost' AND e.type = 'STEP_STARTED'}, '1', 20),
		"$kind: claimed \"lost\"") or diag(logs());
	return;
}

# Waits for that batch's end: "lost" failed, the 4 others succeeded.
sub lost_batch_ended
{
	my ($name, $kind) = @_;
	ok( defined vb_wait_for($pg, qq{
SELECT string_agg(workflow || ' ' || status, ', ' ORDER BY workflow, status)
  FROM (SELECT workflow, status, count(*) FROM vectorbea.runs
         WHERE workflow IN ('ex_lost', 'ex_one') AND input->>'w' = '$name'
         GROUP BY 1, 2) s},
			'ex_lost failed, ex_one succeeded', 20),
		"$kind: the run of \"lost\" failed, the 4 others succeeded") or diag(logs());
	return;
}

# The engine ends the attempt of "lost" at its 1 s timeout, while the worker
# still sleeps in its handler (8 s): the scheduler does at the timeout, and
# run_due_work here makes sure once the engine clock has passed it.  The
# scheduler is due at that same moment, and its pass may hold the run while
# run_due_work looks, which then skips it (SKIP LOCKED): so wait until the
# attempt has ended, whoever ended it.
sub lost_times_out
{
	my ($name, $kind) = @_;
	my $lost = qq{FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
 WHERE r.workflow = 'ex_lost' AND r.input->>'w' = '$name'};
	ok( defined vb_wait_for($pg, qq{
SELECT bool_and(n.status <> 'running' OR vectorbea.clock() >= n.attempt_deadline) $lost}, 't', 60),
		"$kind: the attempt of \"lost\" is past its timeout") or diag(logs());
	query('SELECT vectorbea.run_due_work()');
	ok(defined vb_wait_for($pg, qq{SELECT count(*) $lost AND n.status = 'running'}, '0', 60),
		"$kind: the attempt of \"lost\" has ended") or diag(logs());
	return;
}

sub alone
{
	my ($name, $kind) = @_;
	my $tag = qq{"w": "$name"};

	# The pipelined loop: the completion of a batch and the next claim commit together.
	query(qq{SELECT count(*) FROM vectorbea.start_runs('ex_chain',
		ARRAY['{$tag, "i": 1}', '{$tag, "i": 2}', '{$tag, "i": 3}']::jsonb[])});
	ok( defined vb_wait_for($pg, qq{
SELECT count(*) FROM vectorbea.runs
 WHERE workflow = 'ex_chain' AND input->>'w' = '$name' AND status = 'succeeded'}, '3', 20),
		"$kind: the 3 chains succeeded") or diag(logs());
	check_sessions($name, 1);
	is( transactions($name, ['ex_chain'], q{'STEP_STARTED', 'STEP_COMPLETED'}),
		'started s1 x3 | completed s1 x3 + started s2 x3 | completed s2 x3 + started s3 x3'
		  . ' | completed s3 x3 + started s4 x3 | completed s4 x3',
		"$kind: 4 batches in 5 transactions, each completing a batch and claiming the next")
	  or diag(logs());

	# VB001: the engine ends "lost" while the worker holds it in a batch of 5.
	start_lost_batch($name, $kind);
	is(transactions($name, [ 'ex_lost', 'ex_one' ], q{'STEP_STARTED'}),
		'started lost x1 + started one x4', "$kind: the 5 tasks were claimed in one batch");
	lost_times_out($name, $kind);
	is( query(qq{
SELECT string_agg(concat_ws(' ', e.type, e.data->>'class'), ', ' ORDER BY e.seq)
  FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.workflow = 'ex_lost' AND r.input->>'w' = '$name' AND e.node = 'lost'})
		  . '; completed so far: '
		  . query(qq{
SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.workflow = 'ex_one' AND r.input->>'w' = '$name' AND e.type = 'STEP_COMPLETED'}),
		'STEP_STARTED, STEP_FAILED timeout; completed so far: 0',
		"$kind: the attempt of \"lost\" ended (timeout) while the worker held its batch");
	lost_batch_ended($name, $kind);
	is( transactions($name, ['ex_one'], q{'STEP_STARTED', 'STEP_COMPLETED'}),
		'started one x4 | completed one x1 | completed one x1 | completed one x1 | completed one x1',
		"$kind: after VB001, the 4 others were completed one at a time, claiming nothing with them");
	is( query(qq{
SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.workflow = 'ex_lost' AND r.input->>'w' = '$name' AND e.type = 'STEP_COMPLETED'}),
		'0', "$kind: no completion of \"lost\" was recorded");
	my $text = slurp_file($w{$name}{log});
	like($text, qr/\Q$name\E\/1 complete_tasks refused \(VB001, cannot complete task \d+/,
		"$kind: logged the refused batch");
	like($text, qr/\Q$name\E\/1 lost attempt 1: VB001, result dropped: /,
		"$kind: dropped the result of \"lost\"");

	# Stopping: SIGTERM while "t1" runs.
	query(qq{SELECT vectorbea.start_run('ex_term', '{$tag}')});
	ok( defined vb_wait_for($pg, qq{
SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE r.input->>'w' = '$name' AND e.node = 't1' AND e.type = 'STEP_STARTED'}, '1', 20),
		"$kind: claimed \"t1\"") or diag(logs());
	$w{$name}{h}->signal('TERM');
	worker_exits($name, 'signal');
	is( transactions($name, ['ex_term'], q{'STEP_STARTED', 'STEP_COMPLETED'})
		  . '; t2 ' . query(qq{
SELECT n.status FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
 WHERE r.input->>'w' = '$name' AND n.node = 't2'}),
		'started t1 x1 | completed t1 x1; t2 ready',
		"$kind: on SIGTERM, completed the batch in hand, claimed nothing, exited");
	return;
}

# Part 2's leases are long (600 s: a heartbeat every 200 s), so that no heartbeat
# finds "lost" gone before complete_tasks does (part 3 has the heartbeats).
start_worker('node-alone', 1, 120, 600);
wait_ready('node-alone', 1);
alone('node-alone', 'Node');
start_worker('py-alone', 1, 60, 600);
wait_ready('py-alone', 1);
# It first finishes the Node worker's "t2".
ok( defined vb_wait_for($pg, q{
SELECT status FROM vectorbea.runs WHERE workflow = 'ex_term' AND input->>'w' = 'node-alone'},
		'succeeded', 20),
	'the new Python worker finished the run the Node worker left') or diag(logs());
alone('py-alone', 'Python');
start_worker('py-last', 2, 120);
ok( defined vb_wait_for($pg, q{
SELECT status FROM vectorbea.runs WHERE workflow = 'ex_term' AND input->>'w' = 'py-alone'},
		'succeeded', 20),
	'a last Python process finished the run the Python worker left') or diag(logs());
stop_idle('py-last');
my $t_part2 = time;

# ---------------------------------------------------------------------------
# Part 3: a heartbeat finds a lease gone
# ---------------------------------------------------------------------------
# The batch of part 2's fallback ("lost" and 4 "one"), under a 3 s lease: a
# heartbeat every second finds "lost" gone before its handler ends (8 s), so
# the worker drops its result and completes the 4 others in one batch, with
# no refused complete_tasks and no fallback.
sub heartbeat_lost
{
	my ($name, $kind) = @_;
	start_worker($name, 1, 120);
	wait_ready($name, 1);
	start_lost_batch($name, $kind);
	lost_times_out($name, $kind);
	lost_batch_ended($name, $kind);
	is( transactions($name, [ 'ex_lost', 'ex_one' ], q{'STEP_STARTED', 'STEP_COMPLETED'}),
		'started lost x1 + started one x4 | completed one x4',
		"$kind: the 4 others were completed in one batch, without \"lost\"") or diag(logs());
	stop_idle($name);
	my $text = $w{$name}{text};
	like($text, qr/heartbeat of task \d+: VB001 /, "$kind: a heartbeat got VB001");
	like($text, qr/\Q$name\E\/1 lost attempt 1: VB001 at its heartbeat, result dropped\n/,
		"$kind: dropped the result of \"lost\" as its heartbeat had found it gone");
	unlike($text, qr/complete_tasks refused/, "$kind: no complete_tasks was refused");
	return;
}
heartbeat_lost('node-beat', 'Node');
heartbeat_lost('py-beat',   'Python');

# SIGTERM wakes idle workers.  The examples claim every 5 s even without a
# notification; here that poll is an hour (Python: the module's POLL_SECONDS,
# set by a wrapper; Node: the constant POLL_MS, in a copy of the file), and
# --drain an hour too: with every worker idle, only the signal waking them
# lets the process exit before its harness gives up (90 s).
my $slow_poll = PostgreSQL::Test::Utils::tempdir('slow_poll');
my %idle_script = ('py-idle' => "$slow_poll/worker_psycopg_idle.py",
	'node-idle' => "$slow_poll/worker_node_idle.js");
{
	open(my $fh, '>', $idle_script{'py-idle'}) or die "cannot write $idle_script{'py-idle'}: $!";
	print $fh qq{import sys
sys.path.insert(0, "$EXAMPLES")
import worker_psycopg as w
assert w.POLL_SECONDS == 5
w.POLL_SECONDS = 3600
w.main()
};
	close $fh;
	my $js = slurp_file("$EXAMPLES/worker_node.js");
	$js =~ s/\bPOLL_MS = 5000\b/POLL_MS = 3600000/ or die "worker_node.js: no POLL_MS = 5000";
	open($fh, '>', $idle_script{'node-idle'}) or die "cannot write $idle_script{'node-idle'}: $!";
	print $fh $js;
	close $fh;
}
for my $name ('py-idle', 'node-idle')
{
	start_worker($name, 2, 3600, undef, $idle_script{$name});
	wait_ready($name, 2);
	ok( defined vb_wait_for($pg, qq{
SELECT count(*) FROM pg_stat_activity
 WHERE application_name = '$name' AND state = 'idle' AND query LIKE '%claim_tasks%'}, '2', 30),
		"$name: both workers found nothing to claim") or diag(logs());
	stop_idle($name);
}
my $t_part3 = time;

# ---------------------------------------------------------------------------
# Part 4: an output jsonb refuses
# ---------------------------------------------------------------------------
# A handler added from a module of the user's own (as the guides show)
# returns what PostgreSQL's jsonb refuses: NaN, a BigInt, a NUL character,
# half a surrogate pair (what os.fsdecode makes of a file name that is not
# UTF-8); or raises an error of 2 MB with half a surrogate pair.
# The worker checks each output on its own, so that task fails (its retry
# policy decides) and the others of its batch complete; the batch's
# complete_tasks used to be refused whole, the process exited, and the
# other tasks lost their leases and an attempt, again at every restart.
# The error is cut and made valid text, or fail_task refused it the same
# way.
my $wrappers = PostgreSQL::Test::Utils::tempdir('wrappers');
my %poison = (
	Python => {
		name => 'py-poison', script => "$wrappers/poison.py",
		kinds => [ 'NaN', 'NUL', 'half a surrogate pair', 'a long error' ],
		errors => [ 'Out of range float values are not JSON compliant',
			'the output holds the character U+0000, which jsonb cannot store',
			'the output holds half a surrogate pair, which jsonb cannot store',
			'caf? [2024 characters]... (2000005 characters)' ],
		code => qq{import sys
sys.path.insert(0, "$EXAMPLES")
import worker_psycopg as w
def poison(task):
    kind = task["input"]["kind"]
    if kind == "fourth":
        raise RuntimeError("caf\\udce9 " + "x" * 2_000_000)
    return {"first": {"ratio": float("nan")}, "second": {"text": "a\\0b"},
            "third": {"file": "caf\\udce9.csv"}}[kind]
w.HANDLERS["poison"] = poison
w.main()
} },
	Node => {
		name => 'node-poison', script => "$wrappers/poison.js",
		kinds => [ 'BigInt', 'NUL', 'half a surrogate pair', 'a long error' ],
		errors => [ 'Do not know how to serialize a BigInt',
			'the output is not JSON that jsonb can store (a function, the character U+0000, or half a surrogate pair)',
			'the output is not JSON that jsonb can store (a function, the character U+0000, or half a surrogate pair)',
			"caf\xEF\xBF\xBD [2024 characters]... (2000005 characters)" ],
		code => qq{const w = require("$EXAMPLES/worker_node.js");
w.HANDLERS.poison = async (task) => {
  if (task.input.kind === 'fourth') throw new Error('caf\\udce9 ' + 'x'.repeat(2000000));
  return { first: { n: 10n }, second: { text: 'a\\u0000b' }, third: { file: 'caf\\udce9.csv' } }[task.input.kind];
};
w.main().catch((e) => { console.error(e); process.exit(1); });
} });
for my $kind ('Python', 'Node')
{
	my $p = $poison{$kind};
	open(my $fh, '>', $p->{script}) or die "cannot write $p->{script}: $!";
	print $fh $p->{code};
	close $fh;
	# One batch: two runs of each, started together.
	my @runs = split /\n/, query(qq{
SELECT vectorbea.start_run(w)
  FROM unnest(ARRAY['ex_poison1', 'ex_poison2', 'ex_poison3', 'ex_poison4', 'ex_fine', 'ex_fine']) w});
	my $ids = join(',', map { "'$_'" } @runs);
	start_worker($p->{name}, 1, 2, undef, $p->{script}, 'echo,poison');
	worker_exits($p->{name}, 'drained');
	is( query(qq{SELECT string_agg(workflow || ' ' || status, ', ' ORDER BY workflow, id)
  FROM vectorbea.runs WHERE id IN ($ids)}),
		'ex_fine succeeded, ex_fine succeeded, ex_poison1 failed, ex_poison2 failed, '
		  . 'ex_poison3 failed, ex_poison4 failed',
		"$kind poison: the bad outputs failed their runs, the others of the batch succeeded");
	# a long message as its first 5 characters, its length and its last 24
	my @messages = split /\n/, query(qq{
SELECT string_agg(CASE WHEN length(m) > 200 THEN left(m, 5) || '[' || length(m) || ' characters]' || right(m, 24)
                       ELSE m END, E'\n' ORDER BY id)
  FROM (SELECT n.id, n.error->>'message' AS m FROM vectorbea.nodes n
         WHERE n.run_id IN ($ids) AND n.node = 'bad') bad});
	for my $i (0 .. 3)
	{
		is($messages[$i], $p->{errors}[$i], "$kind poison: the failure of $p->{kinds}[$i] says what went wrong");
	}
	is( query(qq{SELECT count(*) FROM vectorbea.events
  WHERE run_id IN ($ids) AND type = 'STEP_STARTED' AND attempt <> 1}), '0',
		"$kind poison: no task needed a second attempt");
	unlike($w{ $p->{name} }{text}, qr/complete_tasks refused/, "$kind poison: no complete_tasks was refused");
}

# ---------------------------------------------------------------------------
# Every run
# ---------------------------------------------------------------------------
is( query(q{
SELECT string_agg(workflow || ' ' || status || ' x' || n, ', ' ORDER BY workflow, status)
  FROM (SELECT workflow, status, count(*) AS n FROM vectorbea.runs GROUP BY 1, 2) s}),
	"ex_cancel cancelled x1, ex_chain succeeded x6, ex_fine succeeded x4, ex_hold succeeded x$HOLDS, "
	  . "ex_long succeeded x1, ex_lost failed x4, ex_mix succeeded x$RUNS, ex_one succeeded x16, "
	  . "ex_poison1 failed x2, ex_poison2 failed x2, ex_poison3 failed x2, ex_poison4 failed x2, "
	  . "ex_term succeeded x2",
	'every run ended as its workflow says');
no_rows(q{
SELECT n.run_id, n.node, n.status, count(e.*) AS completions
  FROM vectorbea.nodes n
  LEFT JOIN vectorbea.events e ON e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_COMPLETED'
 GROUP BY n.run_id, n.node, n.status
HAVING count(e.*) <> (n.status = 'succeeded')::int},
	'every node that succeeded was completed exactly once, and no other node was');
no_rows(q{
SELECT run_id, node, array_agg(attempt ORDER BY seq)
  FROM vectorbea.events WHERE type = 'STEP_STARTED'
 GROUP BY run_id, node HAVING count(*) <> count(DISTINCT attempt)},
	'every STEP_STARTED of a node has an attempt of its own');
no_rows(q{SELECT r.id, v FROM vectorbea.runs r, vectorbea.verify_run(r.id) v},
	'verify_run finds no difference for any run');

# A heartbeat finds a lease gone where the engine ended the attempt ("lost",
# and "doomed" if a round came before its handler ended), never for a task
# being reported: the worker stops renewing a task before it reports it.
my @refused = logs() =~ /heartbeat of task (\d+): VB001/g;
is( query(q{SELECT coalesce(string_agg(DISTINCT node, ',' ORDER BY node), 'none')
  FROM vectorbea.nodes WHERE node <> 'doomed' AND id IN (} . join(',', @refused, 0) . ')'),
	'lost', 'heartbeats were refused for "lost" (and "doomed"), for no task being reported');

unlike(logs(), qr/Traceback|Error:|ERROR|Warning/, 'no worker printed an unexpected error or warning')
  or diag(logs());

diag(sprintf(
	'part 1 tasks started: %s; npm %.1fs, setup %.1fs, part 1 %.1fs, part 2 %.1fs, part 3 %.1fs, total %.1fs',
	join(', ', map { "$_ $by_worker{$_}" } sort keys %by_worker),
	$t_npm, $t_workers - $t0 - $t_npm, $t_part1 - $t_workers, $t_part2 - $t_part1, $t_part3 - $t_part2, time - $t0));

$pg->stop;
done_testing();
