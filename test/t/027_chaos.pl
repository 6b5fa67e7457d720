# 027_chaos.pl -- every kind of node, eight worker processes, and the server
# killed, its sessions terminated and its workers killed at random moments;
# afterwards only invariants are checked.
#
# The work (VB_CHAOS_TASKS nodes in all, default 10,000; the long mode is
# VB_CHAOS_TASKS=10000, see docs/testing.md):
#
#   chaos_fan    10 worker tasks: a, b1..b6 (fan-out), c (join), d, and s1,
#                which d spawns.  About three quarters of the nodes.
#   chaos_mix    prep (a task with a compensation), think (an llm node, in
#                doubt "retry"), doubt (an llm node, in doubt "ask"), sign (an
#                approval gate), nap (a 1 s timer), hear (a signal), kid (a
#                child run of chaos_child: two tasks), last (a task after all
#                of them).  The driver rejects the gate of every run whose
#                input i is 7 modulo 10: that run fails and compensates prep.
#   chaos_spend  four llm calls, each after a task (t1 p1 t2 p2 ... p4, a
#                chain), in workspace chaos_tight, whose budget pays for
#                about half of the calls of its 10 runs.  The runs begin 2 s
#                apart (not_before) and go first (priority), so the calls
#                come all along the test, the first runs succeed and the
#                last ones fail on the budget.
#
# Every task's output is {"sum": input.k + run input i + the sums of its
# upstream}, so each node's expected output is known (test/workers/
# chaos_worker.py).  The fake provider answers "fake answer: <prompt>" after
# 200 ms (1 s for chaos_spend), so llm calls are in flight whenever the
# server dies.
#
# The chaos, at moments drawn from the seed (as fractions of the nodes
# succeeded): the whole server SIGKILLed 5 times (then started again: crash
# recovery), the scheduler's session terminated 3 times and workers'
# sessions 4 times (pg_terminate_backend), and 4 worker processes SIGKILLed
# (each replaced by a new one); VB_CHAOS_FAULTS=n multiplies these counts.
# Workers claim 6 tasks at a time, work up to 30 ms on each, and hold 3 s
# leases.
#
# Afterwards:
#   - every run finished as its workflow says, with the outputs it says
#     (rejected runs failed with their compensation completed; spend runs
#     succeeded, or failed on the budget);
#   - no node completed twice; every attempt is a distinct STEP_STARTED,
#     1..attempt, and every attempt before the last ended with a recorded,
#     non-final failure that was retried;
#   - every llm call cut before its answer was recorded is in doubt and was
#     retried (in_doubt "retry") or waited for a person (in_doubt "ask"),
#     or its run ended meanwhile; the provider received no call that is not
#     in the history; an "ask" node was never called again;
#   - the budget's workspace never booked more than its budget;
#   - every completion a worker saw commit is in the history;
#   - events are numbered without gaps; verify_run is empty for every run;
#   - the server crashed only when the test killed it.
#
# The seed is printed first; VB_CHAOS_SEED=<seed> replays the same sizes and
# the same schedule of faults (the interleaving of processes still varies).
use strict;
use warnings;
use File::Basename qw(basename);
use FindBin;
use POSIX ();
use Time::HiRes qw(time usleep);

use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $seed = $ENV{VB_CHAOS_SEED} // int(rand(2**31));
diag("chaos seed $seed (replay: VB_CHAOS_SEED=$seed)");
srand($seed);

my $TASKS   = $ENV{VB_CHAOS_TASKS} // 10000;
my $FAULTS  = $ENV{VB_CHAOS_FAULTS} // 1;
my $WORKERS = 8;
my $LEASE   = '3 seconds';
my $SPEND_RUNS  = 10;
my $SPEND_CALL  = 100 * 0.15e-6 + 900 * 0.60e-6;  # one answer of chaos_spend, USD
my $SPEND_BUDGET = 0.0125;                        # about 22 of the 40 calls
my $MIX_RUNS = int(0.2 * $TASKS / 10) || 1;       # 10 nodes each, the child's included
my $FAN_RUNS = int(($TASKS - 8 * $SPEND_RUNS - 10 * $MIX_RUNS) / 10);
BAIL_OUT("VB_CHAOS_TASKS=$TASKS is too small (at least 200)") if $FAN_RUNS < 1;
my $NODES = 10 * $FAN_RUNS + 10 * $MIX_RUNS + 8 * $SPEND_RUNS;
my $DEADLINE = $ENV{VB_CHAOS_DEADLINE} // (120 + int($NODES / 20));    # seconds for the work
diag("$NODES nodes: $FAN_RUNS fan runs, $MIX_RUNS mixed runs (with as many child runs), "
	  . "$SPEND_RUNS spend runs; $WORKERS workers; deadline ${DEADLINE}s");

my $t0 = time;
my $test_name = basename($0, '.pl');
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
BAIL_OUT("$python cannot import psycopg2; install python3-psycopg2")
  if system($python, '-c', 'import psycopg2') != 0;
my $worker_script = "$FindBin::RealBin/../workers/chaos_worker.py";

# ---------------------------------------------------------------------------
# Server, provider, workflows, runs
# ---------------------------------------------------------------------------
my ($node, $base) = vb_llm_server('chaos', qq{
restart_after_crash = on
log_statement = none
log_min_messages = warning
max_connections = 60
});
my $json = vb_json();
sub sql { return $node->safe_psql('postgres', shift); }

vb_store_key($node, 'default', 'openai', 'sk-test-chaos-0001', $base);
vb_store_key($node, 'chaos_tight', 'openai', 'sk-test-chaos-0002', $base);
sql(qq{SELECT vectorbea.set_budget('chaos_tight', $SPEND_BUDGET, 'total')});
vb_fake_script(
	{ match => { contains => 'spend ' }, delay_ms => 1000, usage => { input => 100, output => 900 }, times => -1 },
	{ delay_ms => 200, times => -1 });

my $retry = '{"retry": {"max_attempts": 25, "initial": "0s", "max": "0s"}}';
sql(qq{SELECT vectorbea.define_workflow('chaos_fan', '{"nodes": [
	{"id": "a", "activity": "cw", "input": {"k": 1}},
	{"id": "b1", "activity": "cw", "depends_on": ["a"], "input": {"k": 10}},
	{"id": "b2", "activity": "cw", "depends_on": ["a"], "input": {"k": 11}},
	{"id": "b3", "activity": "cw", "depends_on": ["a"], "input": {"k": 12}},
	{"id": "b4", "activity": "cw", "depends_on": ["a"], "input": {"k": 13}},
	{"id": "b5", "activity": "cw", "depends_on": ["a"], "input": {"k": 14}},
	{"id": "b6", "activity": "cw", "depends_on": ["a"], "input": {"k": 15}},
	{"id": "c", "activity": "cw", "depends_on": ["b1", "b2", "b3", "b4", "b5", "b6"], "input": {"k": 100}},
	{"id": "d", "activity": "cw", "depends_on": ["c"], "input": {"k": 1000,
	  "spawn": [{"id": "s1", "activity": "cw", "depends_on": ["d"], "input": {"k": 5000}}]}}],
	"defaults": $retry}')});
sql(qq{SELECT vectorbea.define_workflow('chaos_child', '{"nodes": [
	{"id": "x", "activity": "cw_kid", "input": {"k": 20}},
	{"id": "y", "activity": "cw_kid", "depends_on": ["x"], "input": {"k": 30}}],
	"defaults": $retry}')});
my $llm = '"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 50';
sql(qq{SELECT vectorbea.define_workflow('chaos_mix', '{"nodes": [
	{"id": "prep", "activity": "cw", "input": {"k": 7}, "compensate": {"activity": "cw_undo"}},
	{"id": "think", "kind": "llm", "depends_on": ["prep"], "in_doubt": "retry",
	 "llm": {$llm, "prompt": "think {{run.input.i}} {{upstream.prep.output.sum}}"}},
	{"id": "doubt", "kind": "llm", "depends_on": ["prep"], "in_doubt": "ask", "escalation": {"gate": "chaos_doubt"},
	 "llm": {$llm, "prompt": "doubt {{run.input.i}}"}},
	{"id": "sign", "kind": "approval", "depends_on": ["prep"], "approval": {"gate": "chaos_sign"}},
	{"id": "nap", "kind": "sleep", "depends_on": ["prep"], "sleep": {"for": "1s"}},
	{"id": "hear", "kind": "signal", "depends_on": ["prep"], "signal": {"name": "go"}},
	{"id": "kid", "kind": "run", "depends_on": ["prep"], "run": {"workflow": "chaos_child"},
	 "input": {"i": "{{run.input.i}}"}},
	{"id": "last", "activity": "cw", "depends_on": ["think", "doubt", "sign", "nap", "hear", "kid"],
	 "input": {"k": 9}}],
	"defaults": $retry}')});
my $spend = '"provider": "openai", "model": "gpt-4o-mini", "max_tokens": 1000';
sql(qq{SELECT vectorbea.define_workflow('chaos_spend', '{"nodes": [
	{"id": "t1", "activity": "cw", "input": {"k": 1}, "not_before": "{{run.input.start}}"},
	{"id": "p1", "kind": "llm", "depends_on": ["t1"], "llm": {$spend, "prompt": "spend {{run.input.i}} step 1"}},
	{"id": "t2", "activity": "cw", "depends_on": ["p1"], "input": {"k": 2}},
	{"id": "p2", "kind": "llm", "depends_on": ["t2"], "llm": {$spend, "prompt": "spend {{run.input.i}} step 2"}},
	{"id": "t3", "activity": "cw", "depends_on": ["p2"], "input": {"k": 3}},
	{"id": "p3", "kind": "llm", "depends_on": ["t3"], "llm": {$spend, "prompt": "spend {{run.input.i}} step 3"}},
	{"id": "t4", "activity": "cw", "depends_on": ["p3"], "input": {"k": 4}},
	{"id": "p4", "kind": "llm", "depends_on": ["t4"], "llm": {$spend, "prompt": "spend {{run.input.i}} step 4"}}],
	"defaults": $retry}')});

sql(qq{
SELECT count(vectorbea.start_run('chaos_fan', jsonb_build_object('i', g))) FROM generate_series(1, $FAN_RUNS) g;
SELECT count(vectorbea.start_run('chaos_mix', jsonb_build_object('i', g))) FROM generate_series(1, $MIX_RUNS) g;
SELECT count(vectorbea.start_run('chaos_spend',
			jsonb_build_object('i', g, 'start', vectorbea.clock() + (g - 1) * interval '2 seconds'),
			NULL, '{"workspace": "chaos_tight", "priority": 100}'))
  FROM generate_series(1, $SPEND_RUNS) g;});
is(sql(q{SELECT count(*) FROM vectorbea.runs}), $FAN_RUNS + $MIX_RUNS + $SPEND_RUNS, 'the runs are started');

# ---------------------------------------------------------------------------
# Worker processes and the driver
# ---------------------------------------------------------------------------
my $log_dir = $PostgreSQL::Test::Utils::log_path;
my $stop_file = $node->basedir . '/chaos.stop';
unlink $stop_file;
my %procs;    # pid -> {name, log}
my $next_worker = 1;

sub start_process
{
	my ($role, $name, @extra) = @_;
	my $log = "$log_dir/${test_name}_$name.log";
	unlink $log;
	my @cmd = ($python, $worker_script, '--role' => $role, '--dsn' => $node->connstr('postgres'),
		'--name' => $name, '--log' => $log, '--stop-file' => $stop_file,
		'--seed' => $seed + $next_worker * 7919, @extra);
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>>', "$log.out");
		open(STDERR, '>>', "$log.out");
		exec(@cmd) or POSIX::_exit(127);
	}
	$procs{$pid} = { name => $name, log => $log, role => $role };
	return $pid;
}

sub start_worker
{
	my $name = sprintf('chaos-w%02d', $next_worker++);
	return start_process('worker', $name, '--activities' => 'cw,cw_kid,cw_undo', '--lease' => $LEASE,
		'--batch' => 6, '--hold-ms' => 30);
}

END
{
	kill 'KILL', keys %procs if %procs;
}

start_worker() for 1 .. $WORKERS;
start_process('driver', 'chaos-driver');
my $t_work = time;

# ---------------------------------------------------------------------------
# The chaos
# ---------------------------------------------------------------------------
my @plan = sort { $a->[0] <=> $b->[0] }
  map { [ 0.05 + rand(0.80), $_ ] }
  (('kill_server') x (5 * $FAULTS), ('terminate_scheduler') x (3 * $FAULTS), ('terminate_worker') x (4 * $FAULTS),
	('kill_worker') x (4 * $FAULTS));
diag('plan: ' . join(', ', map { sprintf('%s@%.2f', $_->[1], $_->[0]) } @plan));

my %done_chaos;
my @worker_kills;    # [name, pid]

sub try_sql
{
	my ($q) = @_;
	my ($out, $timed_out);
	my $rc = $node->psql('postgres', $q, stdout => \$out, timeout => 10, timed_out => \$timed_out);
	return defined $rc && $rc == 0 && !$timed_out ? $out : undef;
}

sub restart_server
{
	vb_kill_server($node);
	my $started = 0;
	for (1 .. 20)
	{
		$started = $node->start(fail_ok => 1);
		last if $started;
		usleep(250_000);
	}
	BAIL_OUT('the server did not start again after SIGKILL') unless $started;
	return;
}

sub live_workers { return grep { $procs{$_}{role} eq 'worker' } keys %procs; }

sub act
{
	my ($what) = @_;
	if ($what eq 'kill_server')
	{
		restart_server();
	}
	elsif ($what eq 'terminate_scheduler')
	{
		return 0 unless defined vb_wait_for($node,
			q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1', 30);
		return 0 unless (try_sql(q{SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE backend_type = 'vectorbea scheduler'}) // '') eq '1';
	}
	elsif ($what eq 'terminate_worker')
	{
		my @names = map { $procs{$_}{name} } live_workers();
		my $name = $names[ int(rand(@names)) ];
		return 0 unless (try_sql(qq{SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = '$name'}) // '') eq '1';
	}
	elsif ($what eq 'kill_worker')
	{
		my @pids = sort { $a <=> $b } live_workers();
		my $pid = $pids[ int(rand(@pids)) ];
		kill 'KILL', $pid;
		waitpid($pid, 0);
		push @worker_kills, [ $procs{$pid}{name}, $pid ];
		delete $procs{$pid};
		start_worker();
	}
	$done_chaos{$what}++;
	note(sprintf('%.1fs: %s', time - $t_work, $what));
	return 1;
}

my $open_runs_sql = q{SELECT count(*) FROM vectorbea.runs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')};
my $finished = 0;
my $last_progress = 0;
while (time - $t_work < $DEADLINE)
{
	my $out = try_sql(qq{SELECT (SELECT count(*) FROM vectorbea.nodes WHERE status = 'succeeded'), ($open_runs_sql)});
	if (defined $out)
	{
		my ($succeeded, $open) = split /\|/, $out;
		$last_progress = $succeeded / $NODES;
		if (@plan && $last_progress >= $plan[0][0])
		{
			usleep(int(rand(300_000)));
			my $step = shift @plan;
			# A step that could not act (a session to terminate was not
			# there) is tried again at the next poll.
			unshift @plan, $step unless act($step->[1]);
			next;
		}
		if ($open eq '0' && !@plan)
		{
			$finished = 1;
			last;
		}
	}
	usleep(100_000);
}
my $t_done = time;
ok($finished, sprintf('every run finished within %ds (%.0fs)', $DEADLINE, $t_done - $t_work))
  or diag("progress " . sprintf('%.2f', $last_progress) . "; steps left: "
	  . join(', ', map { $_->[1] } @plan) . "\nopen runs:\n"
	  . (try_sql(q{SELECT r.workflow, r.status, n.node, n.status, n.attempt, n.kind FROM vectorbea.runs r
			JOIN vectorbea.nodes n ON n.run_id = r.id
		   WHERE r.status NOT IN ('succeeded', 'failed', 'cancelled') AND n.status NOT IN ('succeeded', 'skipped')
		   LIMIT 40}) // ''));
is_deeply(\%done_chaos,
	{ kill_server => 5 * $FAULTS, terminate_scheduler => 3 * $FAULTS, terminate_worker => 4 * $FAULTS,
		kill_worker => 4 * $FAULTS },
	sprintf('all the chaos happened: %d server kills, %d scheduler and %d worker sessions terminated, %d workers killed',
		5 * $FAULTS, 3 * $FAULTS, 4 * $FAULTS, 4 * $FAULTS));

# Stop the processes.
open(my $fh, '>', $stop_file) or die "cannot write $stop_file: $!";
close $fh;
my $until = time + 30;
my %exit;
while (%procs && time < $until)
{
	my $pid = waitpid(-1, POSIX::WNOHANG());
	if ($pid > 0 && $procs{$pid})
	{
		$exit{ $procs{$pid}{name} } = $? >> 8;
		delete $procs{$pid};
		next;
	}
	usleep(50_000);
}
is(scalar(keys %procs), 0, 'every process stopped') or kill 'KILL', keys %procs;
my @bad_exit = map { "$_: $exit{$_}" } grep { $exit{$_} != 0 } sort keys %exit;
is_deeply(\@bad_exit, [], 'the workers and the driver stopped cleanly (exit 0)');

# ---------------------------------------------------------------------------
# What the processes saw
# ---------------------------------------------------------------------------
my (@done, @unexpected, %summary, %claimed_by_killed, %claims);
my %killed = map { $_->[0] => 1 } @worker_kills;
for my $log (glob("$log_dir/${test_name}_chaos-*.log"))
{
	my ($name) = $log =~ /_(chaos-[a-z0-9]+)\.log$/;
	my %claimed;
	for my $line (split /\n/, slurp_file($log))
	{
		my ($kind, @f) = split / /, $line;
		if ($kind eq 'done') { push @done, [@f]; delete $claimed{"$f[0] $f[1]"} }
		elsif ($kind eq 'stale') { delete $claimed{"$f[0] $f[1]"} }
		elsif ($kind eq 'claimed') { $claimed{"$f[0] $f[1]"} = 1; push @{ $claims{"$f[0] $f[1]"} }, $name }
		elsif ($kind eq 'unexpected') { push @unexpected, "$name: @f" }
		elsif ($kind eq 'summary') { $summary{$name} = "@f" }
	}
	$claimed_by_killed{$_} = $name for ($killed{$name} ? keys %claimed : ());
}
is_deeply(\@unexpected, [], 'no process met an error it could not explain');
cmp_ok(scalar(keys %claimed_by_killed), '>', 0,
	'workers were killed holding tasks (' . scalar(keys %claimed_by_killed) . ' tasks)');

# ---------------------------------------------------------------------------
# The history
# ---------------------------------------------------------------------------
sub no_rows
{
	my ($q, $name) = @_;
	my $out = sql($q);
	is($out, '', $name) or diag("offending rows (first 20):\n" . join("\n", grep { defined } (split /\n/, $out)[ 0 .. 19 ]));
	return;
}

is(sql($open_runs_sql), '0', 'no run is left open');
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE status IN ('ready', 'running', 'waiting', 'pending')
	AND run_id IN (SELECT id FROM vectorbea.runs WHERE status = 'succeeded')}), '0',
	'a succeeded run has no open node');

# Fan runs: every node succeeded with the sum its graph gives.
my %fan;
for my $row (split /\n/, sql(q{SELECT (r.input->>'i')::int, r.status, n.node, n.status, n.output->>'sum'
	FROM vectorbea.runs r JOIN vectorbea.nodes n ON n.run_id = r.id WHERE r.workflow = 'chaos_fan'}))
{
	my ($i, $rs, $n, $ns, $sum) = split /\|/, $row;
	$fan{$i}{status} = $rs;
	$fan{$i}{$n} = "$ns $sum";
}
my @fan_wrong;
for my $i (1 .. $FAN_RUNS)
{
	my %want;
	$want{a} = 1 + $i;
	$want{"b$_"} = 9 + $_ + $i + $want{a} for 1 .. 6;
	$want{c} = 100 + $i;
	$want{c} += $want{"b$_"} for 1 .. 6;
	$want{d} = 1000 + $i + $want{c};
	$want{s1} = 5000 + $i + $want{d};
	my $r = $fan{$i} // {};
	push @fan_wrong, "run i=$i: " . ($r->{status} // 'missing') if ($r->{status} // '') ne 'succeeded';
	for my $n (sort keys %want)
	{
		push @fan_wrong, "run i=$i node $n: " . ($r->{$n} // 'missing') . ", expected succeeded $want{$n}"
		  if ($r->{$n} // '') ne "succeeded $want{$n}";
	}
	push @fan_wrong, "run i=$i has " . (scalar(keys %$r) - 1) . ' nodes' if scalar(keys %$r) != 11;
}
is_deeply([ @fan_wrong[ 0 .. ($#fan_wrong < 9 ? $#fan_wrong : 9) ] ], [],
	"fan runs: all $FAN_RUNS succeeded, every node with the sum its graph gives (s1 spawned once)");

# Mixed runs: rejected ones failed and compensated; the others succeeded
# with every output as expected, their child runs too.
my @mix_wrong;
for my $row (split /\n/, sql(q{
SELECT (r.input->>'i')::int, r.status, coalesce(r.error->>'compensation', '-'),
       (SELECT string_agg(n.node || '=' || n.status, ',' ORDER BY n.node) FROM vectorbea.nodes n WHERE n.run_id = r.id),
       (SELECT jsonb_object_agg(n.node, n.output) FROM vectorbea.nodes n WHERE n.run_id = r.id AND n.status = 'succeeded'),
       (SELECT string_agg(c.status || ':' || (SELECT string_agg(x.node || '=' || x.status || '=' || coalesce(x.output->>'sum', ''), ',' ORDER BY x.node)
                                              FROM vectorbea.nodes x WHERE x.run_id = c.id), ' ')
          FROM vectorbea.runs c WHERE c.parent_run = r.id)
  FROM vectorbea.runs r WHERE r.workflow = 'chaos_mix' ORDER BY 1}))
{
	my ($i, $status, $comp, $nodes, $outputs, $children) = split /\|/, $row;
	my $out = $json->decode($outputs || '{}');
	if ($i % 10 == 7)
	{
		push @mix_wrong, "run i=$i (rejected): $status, compensation $comp, $nodes"
		  unless $status eq 'failed' && $comp eq 'completed' && $nodes =~ /(^|,)sign=failed(,|$)/
		  && $nodes =~ /(^|,)prep:compensate=succeeded(,|$)/;
		my $kid_ok = !defined $children || $children eq ''
		  || $children =~ /^(cancelled|failed):/ || $children eq sprintf('succeeded:x=succeeded=%d,y=succeeded=%d', 20 + $i, 50 + 2 * $i);
		push @mix_wrong, "run i=$i (rejected): child $children" unless $kid_ok;
		next;
	}
	my %want = (
		'status'     => 'succeeded',
		'nodes'      => join(',', map { "$_=succeeded" } qw(doubt hear kid last nap prep sign think)),
		'prep'       => 7 + $i,
		'think'      => sprintf('fake answer: think %d %d', $i, 7 + $i),
		'doubt'      => "fake answer: doubt $i",
		'hear'       => 3000 + $i,
		'kid'        => 50 + 2 * $i,
		'last'       => 3059 + 4 * $i,
		'child'      => sprintf('succeeded:x=succeeded=%d,y=succeeded=%d', 20 + $i, 50 + 2 * $i));
	my %got = (
		'status' => $status,
		'nodes'  => $nodes,
		'prep'   => $out->{prep}{sum} // '',
		'think'  => $out->{think}{text} // '',
		'doubt'  => $out->{doubt}{text} // '',
		'hear'   => $out->{hear}{sum} // '',
		'kid'    => $out->{kid}{y}{sum} // '',
		'last'   => $out->{last}{sum} // '',
		'child'  => $children // '');
	for my $k (sort keys %want)
	{
		push @mix_wrong, "run i=$i $k: got '$got{$k}', expected '$want{$k}'" if $got{$k} ne $want{$k};
	}
}
is_deeply([ @mix_wrong[ 0 .. ($#mix_wrong < 9 ? $#mix_wrong : 9) ] ], [],
	"mixed runs: $MIX_RUNS finished as their workflow says (rejected ones compensated), with the expected outputs");

# Spend runs: succeeded with the four answers, or failed on the budget.
my (@spend_wrong, %spend_outcome);
for my $row (split /\n/, sql(q{
SELECT (r.input->>'i')::int, r.status, coalesce(r.error->>'reason', '-'),
       (SELECT string_agg(n.node || '=' || n.status || '=' || coalesce(n.output->>'text', ''), ',' ORDER BY n.node)
          FROM vectorbea.nodes n WHERE n.run_id = r.id)
  FROM vectorbea.runs r WHERE r.workflow = 'chaos_spend' ORDER BY 1}))
{
	my ($i, $status, $reason, $nodes) = split /\|/, $row;
	$spend_outcome{$status}++;
	my $all = join(',', map { "p$_=succeeded=fake answer: spend $i step $_" } 1 .. 4) . ','
	  . join(',', map { "t$_=succeeded=" } 1 .. 4);
	push @spend_wrong, "run i=$i: $status ($reason) $nodes"
	  unless ($status eq 'succeeded' && $nodes eq $all) || ($status eq 'failed' && $reason eq 'budget_exceeded');
}
is_deeply(\@spend_wrong, [], 'spend runs: each succeeded with its four answers or failed on the budget ('
	  . join(', ', map { "$spend_outcome{$_} $_" } sort keys %spend_outcome) . ')');

# The budget: what the workspace booked never went over it.
my $booked = sql(q{SELECT coalesce(sum(usage_usd), 0) FROM vectorbea.runs WHERE workspace = 'chaos_tight'});
cmp_ok($booked, '<=', $SPEND_BUDGET, "the workspace chaos_tight booked $booked USD, within its budget of $SPEND_BUDGET");

# At most one STEP_COMPLETED per node, and a succeeded node's by its last
# attempt.
no_rows(q{SELECT run_id, node, count(*) FROM vectorbea.events WHERE type = 'STEP_COMPLETED'
	GROUP BY run_id, node HAVING count(*) > 1}, 'no node completed twice');
no_rows(q{SELECT n.run_id, n.node, n.kind, n.attempt FROM vectorbea.nodes n WHERE n.status = 'succeeded'
	AND NOT EXISTS (SELECT FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
		AND e.type = 'STEP_COMPLETED' AND (e.attempt = n.attempt OR n.kind NOT IN ('task', 'llm')))},
	'every succeeded node has its STEP_COMPLETED, a task or llm node by its last attempt');

# Attempts of worker tasks and llm nodes: STEP_STARTED 1..attempt, each
# once; every earlier attempt failed (not final) and was retried.
no_rows(q{
SELECT n.run_id, n.node, n.attempt, array_agg(e.attempt ORDER BY e.seq)
  FROM vectorbea.nodes n
  LEFT JOIN vectorbea.events e ON e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_STARTED'
 WHERE n.kind IN ('task', 'llm')
 GROUP BY n.run_id, n.node, n.attempt
HAVING count(e.*) <> n.attempt OR count(DISTINCT e.attempt) <> n.attempt
    OR coalesce(min(e.attempt), 1) <> 1 OR coalesce(max(e.attempt), 0) <> n.attempt},
	'every attempt is a distinct STEP_STARTED, numbered 1..attempt');
no_rows(q{
SELECT n.run_id, n.node, k
  FROM vectorbea.nodes n, generate_series(1, n.attempt - 1) k
 WHERE n.kind IN ('task', 'llm')
   AND (NOT EXISTS (SELECT FROM vectorbea.events f WHERE f.run_id = n.run_id AND f.node = n.node
                      AND f.attempt = k AND f.type = 'STEP_FAILED' AND NOT (f.data->>'final')::boolean)
        OR NOT EXISTS (SELECT FROM vectorbea.events r WHERE r.run_id = n.run_id AND r.node = n.node
                      AND r.attempt = k AND r.type = 'STEP_RETRIED'))},
	'every attempt before the last failed, not for good, and was retried');
my $reasons = sql(q{SELECT string_agg(c || '=' || n, ' ' ORDER BY c) FROM (
	SELECT coalesce(data->>'class', '?') || CASE WHEN (data->'error'->>'in_doubt')::boolean THEN '(in doubt)' ELSE '' END AS c,
	       count(*) AS n FROM vectorbea.events WHERE type = 'STEP_FAILED' GROUP BY 1) t});
diag("failed attempts: $reasons");
like($reasons, qr/lease_expired=\d+/, 'the chaos cost attempts: some leases expired');

# Calls cut before their answer was recorded.
my $cuts = sql(q{
WITH calls AS (
  SELECT e.run_id, e.node, e.attempt,
         count(*) FILTER (WHERE e.type = 'LLM_REQUESTED') AS requested,
         count(*) FILTER (WHERE e.type = 'LLM_CALLED') AS called
    FROM vectorbea.events e
   WHERE e.type IN ('LLM_REQUESTED', 'LLM_CALLED')
   GROUP BY 1, 2, 3)
SELECT c.run_id, c.node, c.attempt, c.requested - c.called,
       coalesce(n.retry->>'in_doubt', 'retry'),
       coalesce((SELECT (f.data->'error'->>'in_doubt') || ',' || (f.data->>'final')
                   FROM vectorbea.events f WHERE f.run_id = c.run_id AND f.node = c.node AND f.attempt = c.attempt
                    AND f.type = 'STEP_FAILED'), '-'),
       (SELECT count(*) FROM vectorbea.events x WHERE x.run_id = c.run_id AND x.node = c.node AND x.attempt = c.attempt
           AND x.type = 'STEP_RETRIED'),
       (SELECT count(*) FROM vectorbea.events x WHERE x.run_id = c.run_id AND x.node = c.node AND x.attempt = c.attempt
           AND x.type = 'APPROVAL_REQUESTED' AND x.data->>'kind' = 'in_doubt'),
       (SELECT count(*) FROM vectorbea.events x WHERE x.run_id = c.run_id AND x.node = c.node AND x.attempt > c.attempt
           AND x.type = 'LLM_REQUESTED'),
       n.status, r.status
  FROM calls c JOIN vectorbea.nodes n ON n.run_id = c.run_id AND n.node = c.node
  JOIN vectorbea.runs r ON r.id = c.run_id
 WHERE c.requested <> c.called});
my (@cut_wrong, %cut_kinds);
for my $row (split /\n/, $cuts)
{
	my ($run, $n, $attempt, $missing, $policy, $failed, $retried, $asked, $later, $nstatus, $rstatus) = split /\|/, $row;
	my $what = "$n attempt $attempt ($policy): missing $missing, failed $failed, retried $retried, asked $asked, "
	  . "later calls $later, node $nstatus, run $rstatus";
	if ($missing ne '1') { push @cut_wrong, "more than one call of one attempt unanswered: $what"; next; }
	if ($failed eq '-')
	{
		# No failure: its run ended while the call was in flight.
		$cut_kinds{'run ended'}++;
		push @cut_wrong, "cut without a failure in a run that goes on: $what"
		  unless $nstatus eq 'cancelled' && $rstatus =~ /^(failed|cancelled)$/;
		next;
	}
	my ($in_doubt, $final) = split /,/, $failed;
	push @cut_wrong, "cut, not in doubt: $what" unless ($in_doubt // '') eq 'true';
	if ($policy eq 'ask')
	{
		$cut_kinds{'asked'}++;
		push @cut_wrong, "in_doubt ask, but no gate or called again: $what" unless $asked eq '1' && $later eq '0';
	}
	else
	{
		$cut_kinds{'retried'}++;
		push @cut_wrong, "in_doubt retry, but not retried: $what" unless $retried eq '1' || $final eq 'true';
	}
}
is_deeply(\@cut_wrong, [], 'every cut llm call is in doubt and was retried or asked about, per its node ('
	  . join(', ', map { "$cut_kinds{$_} $_" } sort keys %cut_kinds) . ')');
cmp_ok(($cut_kinds{retried} // 0) + ($cut_kinds{asked} // 0), '>', 0, 'the chaos cut llm calls in flight');

# The provider saw no call that is not on record.
my %provider;
for my $req (@{ vb_fake_requests() })
{
	my $body = $json->encode($req->{body});
	if ($body =~ /(think|doubt) (\d+)/) { $provider{"chaos_mix $2 $1"}++ }
	elsif ($body =~ /spend (\d+) step (\d)/) { $provider{"chaos_spend $1 p$2"}++ }
	else { $provider{unknown}++ }
}
my %requested = map { my ($k, $v) = split /\|/; ($k => $v) } split /\n/, sql(q{
SELECT r.workflow || ' ' || (r.input->>'i') || ' ' || e.node, count(*)
  FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
 WHERE e.type = 'LLM_REQUESTED' GROUP BY 1});
my @off_record = map { "$_: $provider{$_} received, " . ($requested{$_} // 0) . ' recorded' }
  grep { $provider{$_} > ($requested{$_} // 0) } sort keys %provider;
is_deeply(\@off_record, [], 'the provider received no call that is not recorded (LLM_REQUESTED)');

# What the provider was asked to spend against the budget: a call cut in
# flight is charged at its reserved worst case when its attempt ends in
# doubt, so the budget keeps counting it and no later call spends it again.
my $provider_spend = 0;
$provider_spend += $provider{$_} * $SPEND_CALL for grep { /^chaos_spend / } keys %provider;
diag(sprintf('chaos_tight: booked %.6f USD; the provider received calls worth %.6f USD; budget %.6f',
	$booked, $provider_spend, $SPEND_BUDGET));
cmp_ok($provider_spend, '<=', $SPEND_BUDGET + 1e-9,
	'what the provider was asked to spend for chaos_tight stays within its budget');
cmp_ok($booked, '>=', $provider_spend - 1e-9,
	'what is booked for chaos_tight covers every call the provider received (cut ones at their worst case)');

# Every execution is an attempt of its own: no two claims got the same
# attempt of a task, and each claim is the STEP_STARTED of its attempt, by
# the worker that got it.
my @shared = map { "task/attempt $_: @{ $claims{$_} }" } grep { @{ $claims{$_} } > 1 } sort keys %claims;
is_deeply(\@shared, [], 'no two claims got the same attempt of a task (' . scalar(keys %claims) . ' claims)');
my $claim_values = join(",\n", map { my ($t, $a) = split / /; "($t, $a, '$claims{$_}[0]')" } keys %claims);
no_rows(qq{
WITH claimed(task_id, attempt, worker) AS (VALUES $claim_values)
SELECT c.task_id, c.attempt, c.worker FROM claimed c
 WHERE NOT EXISTS (SELECT FROM vectorbea.nodes n JOIN vectorbea.events e ON e.run_id = n.run_id AND e.node = n.node
                    WHERE n.id = c.task_id AND e.type = 'STEP_STARTED' AND e.attempt = c.attempt
                      AND e.data->>'worker' = c.worker)},
	'every claim a worker got is the recorded STEP_STARTED of its attempt, by that worker');

# What workers saw commit is in the history.
my %seen = map { ("$_->[0] $_->[1]" => 1) } @done;
my $seen_values = join(",\n", map { "($_)" } map { join(', ', split / /) } keys %seen);
no_rows(qq{
WITH seen(task_id, attempt) AS (VALUES $seen_values)
SELECT s.task_id, s.attempt FROM seen s
 WHERE NOT EXISTS (SELECT FROM vectorbea.nodes n JOIN vectorbea.events e ON e.run_id = n.run_id AND e.node = n.node
                    WHERE n.id = s.task_id AND e.type = 'STEP_COMPLETED' AND e.attempt = s.attempt)},
	'every completion a worker saw commit is in the history (' . scalar(keys %seen) . ')');

# Tasks held by killed workers were done by another attempt (or their run ended).
if (%claimed_by_killed)
{
	my $held = join(",\n", map { '(' . join(', ', split / /) . ')' } keys %claimed_by_killed);
	no_rows(qq{
WITH held(task_id, attempt) AS (VALUES $held)
SELECT h.task_id, h.attempt, n.status, n.attempt FROM held h JOIN vectorbea.nodes n ON n.id = h.task_id
 WHERE n.status = 'succeeded' AND n.attempt <= h.attempt
   AND NOT EXISTS (SELECT FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
                    AND e.type = 'STEP_COMPLETED' AND e.attempt = h.attempt)},
		'tasks held by killed workers were completed by a later attempt');
}

no_rows(q{
SELECT r.id, r.last_seq, count(e.*), min(e.seq), max(e.seq)
  FROM vectorbea.runs r LEFT JOIN vectorbea.events e ON e.run_id = r.id
 GROUP BY r.id, r.last_seq
HAVING count(e.*) <> r.last_seq OR min(e.seq) <> 1 OR max(e.seq) <> r.last_seq OR count(DISTINCT e.seq) <> count(e.*)},
	'every run has events 1..last_seq without gaps');
no_rows(q{SELECT r.id, r.workflow, v FROM vectorbea.runs r, vectorbea.verify_run(r.id) v},
	'verify_run is empty for every run');

# The server crashed only when it was killed.
my $log = slurp_file($node->logfile);
my @recoveries = $log =~ /database system was not properly shut down; automatic recovery in progress/g;
is(scalar @recoveries, 5 * $FAULTS, 'crash recovery ran exactly once per kill');
my @signals = $log =~ /(\S+ process \(PID \d+\) was terminated by signal \d+[^\n]*)/g;
is_deeply(\@signals, [], 'no server process died of a signal the test did not send');
my @panics = $log =~ /((?:PANIC|TRAP|server process .* exited with exit code [2-9])[^\n]*)/g;
is_deeply(\@panics, [], 'no PANIC, assertion failure or abnormal exit in the server log');

diag(sprintf("times: setup %.1fs, work under chaos %.1fs, checks %.1fs",
	$t_work - $t0, $t_done - $t_work, time - $t_done));
diag("$_: $summary{$_}") for sort keys %summary;
diag('events: ' . sql(q{SELECT count(*) FROM vectorbea.events}));

$node->stop;
done_testing();
