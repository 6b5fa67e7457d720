# Human approval gates end to end, against a running server with its
# scheduler: the vectorbea_approvals notifications and their payload, the
# incident-briefing shape (other branches go on while a gate waits, the join
# after it becomes ready exactly once, also when the decision races the last
# branch), timeouts escalated, expired and approved by the scheduler itself,
# and a cancelled run closing its gate.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(time usleep);
use VbTest;

my $node = PostgreSQL::Test::Cluster->new('approvals');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{VB_TEST_CONF}))
  if $ENV{VB_TEST_CONF};
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'vectorbea'
vectorbea.database = 'postgres'
# Far longer than the test: the scheduler acts on commit-time wakes and on
# the due times it computes, never on a polling interval.
vectorbea.scheduler_idle_timeout = '1h'
});
$node->start;

sub sql { return $node->safe_psql('postgres', shift); }

# Polls $query until it returns $want (VbTest::vb_wait_for).
sub wait_for { return vb_wait_for($node, @_); }

ok(defined wait_for(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'the scheduler is running');
sql('CREATE EXTENSION vectorbea CASCADE');
ok(defined wait_for(q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'the scheduler serves the new extension');

sql(q{CREATE ROLE editors;
	  CREATE ROLE oncall;
	  CREATE ROLE alice IN ROLE editors;
	  GRANT USAGE ON SCHEMA vectorbea TO editors, oncall;
	  GRANT SELECT, UPDATE (status, reason, decided_by) ON vectorbea.approvals TO editors, oncall;});

# --- Sessions: a listener, an approver (alice) and a worker.
sql(q{SELECT vectorbea.define_workflow('sentinel', '{"nodes":[{"id":"s","activity":"sentinel"}]}')});

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN vectorbea_approvals; LISTEN vectorbea_tasks;');
my $alice = $node->background_psql('postgres');
$alice->query_safe('SET ROLE alice');
my $alice_pid = $alice->query_safe('SELECT pg_backend_pid()');
my $worker = $node->background_psql('postgres');
my $worker_pid = $worker->query_safe('SELECT pg_backend_pid()');

# Every notification the listener has received, in order, as
# {channel, payload, at (when this test saw it)}.
my @inbox;

sub pump_listener
{
	my $out = $listener->query_safe('SELECT 1;');
	my $now = time;
	push @inbox, map { +{ channel => $_->[0], payload => $_->[1], at => $now } } vb_notifications($out);
}

# Takes what arrived since the last call, as [channel, payload].  The
# scheduler relays the engine's notifications a moment after the commit, so
# this first commits a sentinel (a run whose activity is "sentinel") and
# waits for its notification: the relay sends in commit order, so whatever
# the statements before sent has arrived by then.
sub received
{
	$node->safe_psql('postgres', q{SELECT vectorbea.start_run('sentinel')});
	my $t0 = time;
	my $seen;
	while (!$seen && time - $t0 < 30)
	{
		pump_listener();
		$seen = grep { $_->{channel} eq 'vectorbea_tasks' && $_->{payload} eq 'sentinel' } @inbox;
		usleep(20_000) unless $seen;
	}
	die 'the sentinel\'s notification did not arrive within 30 s' unless $seen;
	my @got = map { [ $_->{channel}, $_->{payload} ] }
	  grep { !($_->{channel} eq 'vectorbea_tasks' && $_->{payload} eq 'sentinel') } @inbox;
	@inbox = ();
	return \@got;
}

# The vectorbea_approvals notifications among @$got, decoded.
sub gate_notes
{
	my $got = shift;
	return [ map { decode_json($_->[1]) } grep { $_->[0] eq 'vectorbea_approvals' } @$got ];
}

sub task_notes
{
	my ($got, $activity) = @_;
	return scalar grep { $_->[0] eq 'vectorbea_tasks' && $_->[1] eq $activity } @$got;
}

# Waits (up to $timeout s) for the vectorbea_approvals notification of $run
# with $status; returns [decoded payload, raw payload, time seen] or undef.
# Everything else that arrived meanwhile stays in @inbox.
sub wait_gate_note
{
	my ($run, $status, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < ($timeout // 10))
	{
		pump_listener();
		for my $i (0 .. $#inbox)
		{
			my $n = $inbox[$i];
			next unless $n->{channel} eq 'vectorbea_approvals';
			my $p = decode_json($n->{payload});
			next unless $p->{run} eq $run && $p->{status} eq $status;
			splice(@inbox, $i, 1);
			return [ $p, $n->{payload}, $n->{at} ];
		}
		usleep(20_000);
	}
	return undef;
}

# Sends a statement on a background session without waiting for it.
sub send_async
{
	my ($session, $query) = @_;
	$session->{stdin} .= "$query\n";
	$session->{run}->pump_nb;
}

sub node_state
{
	my ($run, $n) = @_;
	return sql(qq{SELECT status || ' ' || deps_remaining FROM vectorbea.nodes
				   WHERE run_id = '$run' AND node = '$n'});
}

sub gate_of
{
	my $run = shift;
	return sql(qq{SELECT id FROM vectorbea.approvals WHERE run_id = '$run'});
}

sub claim
{
	my ($activity, $max) = @_;
	my $out = sql(qq{SELECT task_id || ' ' || lease || ' ' || node
		FROM vectorbea.claim_tasks('w', ARRAY['$activity'], ${\($max // 1)}) ORDER BY node});
	return [ map { [ split / / ] } grep { $_ ne '' } split /\n/, $out ];
}

sub complete
{
	my $t = shift;
	sql(qq{SELECT vectorbea.complete_task($t->[0], '$t->[1]', '{"node": "$t->[2]"}')});
}

my @runs;

# =====================================================================
# The incident briefing: collect, then three investigations and an editor
# gate side by side, then the brief, which needs all four.
sql(q{SELECT vectorbea.define_workflow('briefing', '{"nodes":[
	{"id":"collect","activity":"collect"},
	{"id":"investigate_logs","activity":"investigate","depends_on":["collect"]},
	{"id":"investigate_metrics","activity":"investigate","depends_on":["collect"]},
	{"id":"investigate_deploys","activity":"investigate","depends_on":["collect"]},
	{"id":"editor","kind":"approval","depends_on":["collect"],
	 "approval":{"gate":"publish","timeout":"1h","approver_role":"editors",
				 "context":{"channel":"#incidents"}}},
	{"id":"brief","activity":"brief",
	 "depends_on":["investigate_logs","investigate_metrics","investigate_deploys","editor"]}]}')});

my $run = sql(q{SELECT vectorbea.start_run('briefing', '{"incident": 1}')});
push @runs, $run;
received();
complete(claim('collect')->[0]);
my $got = received();
my $gate = gate_of($run);
like($gate, qr/^\d+$/, 'collect done: the editor gate has opened');
is(scalar @{ gate_notes($got) }, 1, 'one vectorbea_approvals notification for the opened gate');
my ($raw) = map { $_->[1] } grep { $_->[0] eq 'vectorbea_approvals' } @$got;
like($raw // '', qr/^\{"id":\d+,/, 'the id in the payload is a JSON number');
is_deeply(gate_notes($got)->[0], { id => $gate, run => $run, gate => 'publish', status => 'pending' },
	'payload of the opened gate: id, run, gate, status pending');
is(task_notes($got, 'investigate'), 1, 'the investigations are announced in the same commit');
is(node_state($run, 'editor'), 'waiting 0', 'the editor node waits');

# The investigations run and finish while the gate waits.
my $inv = claim('investigate', 10);
is(scalar @$inv, 3, 'the three investigations are claimed while the gate waits');
is(sql(qq{SELECT string_agg(node || '=' || status, ' ' ORDER BY node) FROM vectorbea.nodes
		   WHERE run_id = '$run' AND node IN ('investigate_logs', 'investigate_metrics', 'investigate_deploys', 'editor')}),
	'editor=waiting investigate_deploys=running investigate_logs=running investigate_metrics=running',
	'investigations running, editor waiting');
for my $t (@$inv)
{
	complete($t);
	is(sql(qq{SELECT a.status || ' ' || n.status FROM vectorbea.approvals a
			   JOIN vectorbea.nodes n ON n.id = a.task_id WHERE a.id = $gate}),
		'pending waiting', "$t->[2] finished; the gate is still pending, its node waiting");
}
is(node_state($run, 'brief'), 'pending 1', 'brief waits for the gate alone');
is(scalar @{ claim('brief', 10) }, 0, 'brief is not claimable before the decision');
$got = received();
is(task_notes($got, 'brief'), 0, 'brief was not announced');

# alice, a member of editors, approves.
is($alice->query_safe(qq{SELECT count(*) FROM vectorbea.approvals WHERE id = $gate}), '1',
	'alice sees the gate');
is($alice->query_safe(qq{UPDATE vectorbea.approvals SET status = 'approved', reason = 'checked',
		decided_by = 'susmit' WHERE id = $gate RETURNING status}),
	'approved', 'alice approves with a plain UPDATE');
$got = received();
is_deeply(gate_notes($got), [ { id => $gate, run => $run, gate => 'publish', status => 'approved' } ],
	'payload of the decided gate: status approved');
is(task_notes($got, 'brief'), 1, 'brief is announced once');
is(sql(qq{SELECT status || ' ' || decided_by || ' ' || decided_role FROM vectorbea.approvals WHERE id = $gate}),
	'approved susmit alice', 'the decision is stamped with the role that made it');
is(node_state($run, 'brief'), 'ready 0', 'brief is ready');
my $brief = claim('brief', 10);
is(scalar @$brief, 1, 'brief is claimed once');
is(scalar @{ claim('brief', 10) }, 0, 'and not again');
complete($brief->[0]);
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}), 'succeeded', 'the briefing run succeeds');

my @timeline = split /\n/, sql(qq{SELECT * FROM vectorbea.timeline('$run')});
diag("timeline of $run:\n" . join("\n", @timeline));
sub line_of
{
	my $re = shift;
	for my $i (0 .. $#timeline) { return $i if $timeline[$i] =~ $re; }
	return -1;
}
my $requested = line_of(qr/APPROVAL_REQUESTED editor gate=publish .* waiting for editors/);
my $granted = line_of(qr/APPROVAL_GRANTED editor by=susmit/);
my $brief_started = line_of(qr/STEP_STARTED brief /);
ok($requested >= 0, 'the timeline shows the gate waiting for editors');
for my $n ('investigate_logs', 'investigate_metrics', 'investigate_deploys')
{
	my $done = line_of(qr/STEP_COMPLETED $n /);
	ok($requested >= 0 && $done > $requested && $done < $granted,
		"$n completed while the gate waited");
}
ok($granted >= 0 && $brief_started > $granted, 'brief started after the approval');
is(scalar(grep { /STEP_STARTED brief / } @timeline), 1, 'brief ran once');

# --- The decision races the last investigation, both ways round: brief
# becomes ready exactly once either way.
sub briefing_to_last_investigation
{
	my $r = sql(q{SELECT vectorbea.start_run('briefing', '{"incident": 2}')});
	push @runs, $r;
	complete(claim('collect')->[0]);
	my $i = claim('investigate', 10);
	complete($_) for @$i[ 0, 1 ];
	received();
	return ($r, $i->[2]);
}

# (a) The last investigation's completion holds the run; alice's UPDATE
# waits for it.
my ($run2, $last2) = briefing_to_last_investigation();
my $gate2 = gate_of($run2);
$worker->query_safe('BEGIN');
$worker->query_safe(qq{SELECT vectorbea.complete_task($last2->[0], '$last2->[1]', '{}')});
send_async($alice, qq{UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'susmit'
	WHERE id = $gate2 RETURNING status;});
# The decision does not wait in the lock manager (no wait_event to see): its
# trigger tries the run every 10 ms, for at most 2 s (src/approvals.c).  The
# UPDATE gets a transaction id when it locks the approval row, just before
# the trigger runs: from then on it is trying the run, and the worker
# commits at once.
ok(defined wait_for(qq{SELECT backend_xid IS NOT NULL FROM pg_stat_activity
		WHERE pid = $alice_pid AND state = 'active' AND query LIKE 'UPDATE%'}, 't', 60),
	'the decision waits while the last investigation holds the run');
$worker->query_safe('COMMIT');
is($alice->query_safe(q{SELECT 'synced'}), "approved\nsynced", 'the decision goes through after the commit');
$got = received();
is(task_notes($got, 'brief'), 1, 'decision after the last branch: brief announced once');
is(node_state($run2, 'brief'), 'ready 0', 'and ready');
$brief = claim('brief', 10);
is(scalar @$brief, 1, 'brief is claimed exactly once');
complete($brief->[0]);
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run2'}), 'succeeded', 'that run succeeds');

# (b) alice's decision holds the run; the last completion waits for it.
my ($run3, $last3) = briefing_to_last_investigation();
my $gate3 = gate_of($run3);
$alice->query_safe('BEGIN');
is($alice->query_safe(qq{UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'susmit'
	WHERE id = $gate3 RETURNING status}), 'approved', 'alice decides in an open transaction');
send_async($worker, qq{SELECT vectorbea.complete_task($last3->[0], '$last3->[1]', '{}');});
ok(defined wait_for(qq{SELECT wait_event_type FROM pg_stat_activity WHERE pid = $worker_pid}, 'Lock', 60),
	'the last completion waits for the decision');
$alice->query_safe('COMMIT');
is($worker->query_safe(q{SELECT 'synced'}), "\nsynced", 'the completion goes through after the commit');
$got = received();
is(task_notes($got, 'brief'), 1, 'last branch after the decision: brief announced once');
is(node_state($run3, 'brief'), 'ready 0', 'and ready');
$brief = claim('brief', 10);
is(scalar @$brief, 1, 'brief is claimed exactly once');
complete($brief->[0]);
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run3'}), 'succeeded', 'that run succeeds');

# =====================================================================
# Timeouts, enforced by the scheduler (nothing here calls run_due_work).
# Its fallback timer is at one hour: a gate handled within the waits below
# was handled at the due time the scheduler planned.  Never before it: the
# events are checked against the due times.
sql(q{SELECT vectorbea.define_workflow('escalating', '{"nodes":[
	{"id":"gate","kind":"approval",
	 "approval":{"gate":"publish","timeout":"1s","on_timeout":"escalate",
				 "approver_role":"editors","escalate_to":["oncall"]}},
	{"id":"after","activity":"esc_after","depends_on":["gate"]}]}')});
my $expired_before = sql(q{SELECT gates_expired FROM vectorbea.scheduler_status()});
received();
my $run4 = sql(q{SELECT vectorbea.start_run('escalating')});
push @runs, $run4;
my $gate4 = gate_of($run4);
my $due1 = sql(qq{SELECT extract(epoch FROM expires_at) FROM vectorbea.approvals WHERE id = $gate4});
my $n = wait_gate_note($run4, 'pending', 60);
is_deeply($n && $n->[0], { id => $gate4, run => $run4, gate => 'publish', status => 'pending' },
	'the 1 s gate opens');

$n = wait_gate_note($run4, 'escalated', 60);
ok($n, 'the gate escalates');
is_deeply($n && $n->[0], { id => $gate4, run => $run4, gate => 'publish', status => 'escalated' },
	'payload of the escalation: status escalated');
note(sprintf('escalation heard %.2f s after its due time', $n ? $n->[2] - $due1 : -1));
# Its next level expires 1 s after the escalation, so the row may be
# expired already; that it stayed pending until then is the 'expired'
# notification below (a gate expires only from pending).
is(sql(qq{SELECT approver_role || ' ' || escalation_level FROM vectorbea.approvals WHERE id = $gate4}),
	'oncall 1', 'the gate passes to oncall');
is(sql(qq{SELECT count(*) FROM vectorbea.events e WHERE run_id = '$run4' AND type = 'APPROVAL_ESCALATED'
		   AND data->>'from' = 'editors' AND data->>'to' = 'oncall'
		   AND e.at >= to_timestamp($due1)}),
	'1', 'APPROVAL_ESCALATED editors -> oncall, recorded once its due time had come');
my $due2 = sql(qq{SELECT extract(epoch FROM (data->>'expires_at')::timestamptz) FROM vectorbea.events
				   WHERE run_id = '$run4' AND type = 'APPROVAL_ESCALATED'});

$n = wait_gate_note($run4, 'expired', 60);
ok($n, 'past the last level the gate expires');
is_deeply($n && $n->[0], { id => $gate4, run => $run4, gate => 'publish', status => 'expired' },
	'payload of the expiry: status expired');
note(sprintf('expiry heard %.2f s after its due time', $n ? $n->[2] - $due2 : -1));
is(sql(qq{SELECT status || ' ' || decided_by FROM vectorbea.approvals WHERE id = $gate4}),
	'expired vectorbea: timeout', 'the approval row is expired');
is(sql(qq{SELECT count(*) FROM vectorbea.events e WHERE run_id = '$run4' AND type = 'APPROVAL_EXPIRED'
		   AND data->>'outcome' = 'rejected'
		   AND e.at >= to_timestamp($due2)}),
	'1', 'APPROVAL_EXPIRED recorded once its due time had come');
is(sql(qq{SELECT status || ' ' || (error->>'class') FROM vectorbea.nodes WHERE run_id = '$run4' AND node = 'gate'}),
	'failed timeout', 'the gate node failed with class timeout');
is(sql(qq{SELECT data->>'class' FROM vectorbea.events WHERE run_id = '$run4' AND type = 'STEP_FAILED'}),
	'timeout', 'STEP_FAILED says timeout');
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run4'}), 'failed', 'the run failed');
is(node_state($run4, 'after'), 'skipped 1', 'the node after the gate is skipped');
diag("timeline of $run4:\n" . sql(qq{SELECT * FROM vectorbea.timeline('$run4')}));

# on_timeout approve: the gate passes by itself.
sql(q{SELECT vectorbea.define_workflow('lenient', '{"nodes":[
	{"id":"gate","kind":"approval","approval":{"gate":"ok","timeout":"1s","on_timeout":"approve"}},
	{"id":"after","activity":"lenient_after","depends_on":["gate"]}]}')});
received();
my $run5 = sql(q{SELECT vectorbea.start_run('lenient')});
push @runs, $run5;
my $gate5 = gate_of($run5);
my $due5 = sql(qq{SELECT extract(epoch FROM expires_at) FROM vectorbea.approvals WHERE id = $gate5});
$n = wait_gate_note($run5, 'approved', 60);
is_deeply($n && $n->[0], { id => $gate5, run => $run5, gate => 'ok', status => 'approved' },
	'an on_timeout approve gate is approved by the scheduler');
note(sprintf('heard %.2f s after its due time', $n ? $n->[2] - $due5 : -1));
is(sql(qq{SELECT count(*) FROM vectorbea.events e WHERE run_id = '$run5' AND type = 'APPROVAL_EXPIRED'
		   AND data->>'outcome' = 'approved' AND e.at >= to_timestamp($due5)}), '1',
	'APPROVAL_EXPIRED with outcome approved, recorded once its due time had come');
is(sql(qq{SELECT status || ' ' || decided_by FROM vectorbea.approvals WHERE id = $gate5}),
	'approved vectorbea: timeout', 'the row says the timeout approved it');
is(node_state($run5, 'gate'), 'succeeded 0', 'the gate node succeeded');
is(node_state($run5, 'after'), 'ready 0', 'the node after it is ready');
is(task_notes([ map { [ $_->{channel}, $_->{payload} ] } @inbox ], 'lenient_after'), 1,
	'and announced');
@inbox = ();
my $after = claim('lenient_after');
is(scalar @$after, 1, 'a worker takes it');
complete($after->[0]);
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run5'}), 'succeeded', 'the lenient run succeeds');
# The pass publishes its counters at its end, after the notifications of
# its gates' step were sent: wait for them.
ok(defined wait_for(qq{SELECT gates_expired - $expired_before FROM vectorbea.scheduler_status()}, '3'),
	'scheduler_status counts the escalation and the two expiries');

# =====================================================================
# Cancelling a run closes its pending gate.
my $run6 = sql(q{SELECT vectorbea.start_run('briefing', '{"incident": 6}')});
push @runs, $run6;
complete(claim('collect')->[0]);
my $gate6 = gate_of($run6);
received();
is(sql(qq{SELECT vectorbea.cancel_run('$run6', 'incident closed')}), 't', 'the run is cancelled');
$got = received();
is_deeply(gate_notes($got), [ { id => $gate6, run => $run6, gate => 'publish', status => 'closed' } ],
	'payload of the closed gate: status closed');
is(sql(qq{SELECT status || ' ' || (decided_at IS NOT NULL) FROM vectorbea.approvals WHERE id = $gate6}),
	'closed true', 'the gate is closed');
is(node_state($run6, 'editor'), 'cancelled 0', 'its node is cancelled');
my ($rc, $out, $err) = $node->psql('postgres',
	qq{SET ROLE alice; UPDATE vectorbea.approvals SET status = 'approved' WHERE id = $gate6});
isnt($rc, 0, 'a later decision fails');
like($err, qr/approval $gate6 is already closed; only a pending gate can be decided/,
	'with the documented message');
is(sql(qq{SELECT status FROM vectorbea.approvals WHERE id = $gate6}), 'closed', 'and changes nothing');
is_deeply(gate_notes(received()), [], 'and notifies nothing');

# =====================================================================
# One statement decides two gates of a run: the first rejection ends the
# run, so the second gate is closed instead, and announced as closed (a
# listener kept showing it pending).
sql(q{SELECT vectorbea.define_workflow('two_gates', '{"nodes":[
	{"id":"legal","kind":"approval","approval":{"gate":"legal"}},
	{"id":"security","kind":"approval","approval":{"gate":"security"}}]}')});
my $run7 = sql(q{SELECT vectorbea.start_run('two_gates')});
push @runs, $run7;
my ($legal, $security) = split /\n/, sql(qq{SELECT id FROM vectorbea.approvals WHERE run_id = '$run7' ORDER BY id});
received();
sql(qq{UPDATE vectorbea.approvals SET status = 'rejected', decided_by = 'cto' WHERE run_id = '$run7'});
is_deeply([ sort { $a->{id} <=> $b->{id} } @{ gate_notes(received()) } ],
	[ { id => $legal, run => $run7, gate => 'legal', status => 'rejected' },
	  { id => $security, run => $run7, gate => 'security', status => 'closed' } ],
	'the gate closed instead is announced as closed');

for my $r (@runs)
{
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$r')}), '0', "run $r verifies");
}

$listener->quit;
$alice->quit;
$worker->quit;
$node->stop;
done_testing();
