# 026_crash_points.pl -- the engine dies at the moments that matter, one at
# a time, and comes back consistent.
#
# vectorbea.test_crash_point (superuser-only) names points at which the
# process that reaches them kills itself with SIGKILL; the postmaster then
# runs crash recovery as after any crash.  One subtest per point:
#
#   claim_committed        a worker's claim has committed and is durable, the
#                          worker never got the answer: the task stays
#                          running under the lost lease, comes back when the
#                          lease runs out as attempt 2, and is completed once.
#   llm_answered           the provider has answered two llm calls of one run
#                          (the scheduler dies with the first answer): nothing
#                          of the answers is recorded; the call of the node
#                          with in_doubt "retry" is in doubt and called again,
#                          the one with in_doubt "ask" waits at a gate and is
#                          never called again.
#   approval_applying      a decision was applied, not committed: the gate is
#                          still pending and nothing of the decision is in the
#                          history; decided again, it applies once.
#   spawning               a completion with a spawn list was validated and its
#                          nodes added, not committed: no node and no event of
#                          it; the worker repeats the completion with the same
#                          lease and all of the spawned nodes come, once.
#   compensation_starting  a final failure started the run's compensation, not
#                          committed: the run is still running and the failure
#                          is absent; reported again, the compensation starts;
#                          then the server dies again after a compensation's
#                          claim committed, and every compensation still runs
#                          to success exactly once, in order.
#
# After each: the server died at the point (its log names the point and the
# pid that was killed by signal 9), crash recovery ran, verify_run is empty,
# and the run ends as its workflow says with one STEP_COMPLETED per node.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my ($node, $base, $port) = vb_llm_server('crash_points', qq{
restart_after_crash = on
});
my $json = vb_json();
vb_store_key($node, 'default', 'openai', 'sk-test-crash-points-0001', $base);

sub sql { return $node->safe_psql('postgres', shift); }

# The server is up and out of recovery.
sub wait_up
{
	my ($what) = @_;
	ok(defined vb_wait_for($node, 'SELECT NOT pg_is_in_recovery()', 't', 90), "$what: the server is back");
	return;
}

# The server log from byte $offset on.
sub log_since { return slurp_file($node->logfile, $_[0]); }

# The log from $offset shows that a process ($who) died at $point by its
# own SIGKILL; returns its pid.
sub check_died_at
{
	my ($point, $offset, $who) = @_;
	$node->wait_for_log(qr/crash point "$point" reached; process \d+ kills itself/, $offset);
	my ($pid) = log_since($offset) =~ /crash point "$point" reached; process (\d+) kills itself/;
	ok($pid, "$point: the process reached the point");
	$node->wait_for_log(qr/\(PID $pid\) was terminated by signal 9/, $offset);
	like(log_since($offset), qr/\Q$who\E \(PID $pid\) was terminated by signal 9/,
		"$point: the postmaster saw the $who killed by signal 9");
	return $pid;
}

# ... and that the server came back through crash recovery.
sub check_recovered
{
	my ($point, $offset) = @_;
	$node->wait_for_log(qr/database system is ready to accept connections/, $offset);
	like(log_since($offset), qr/database system was not properly shut down; automatic recovery in progress/,
		"$point: the restart ran crash recovery");
	return;
}

# Runs $sql in a session that names $point; the session must die there.
sub crash_session
{
	my ($point, $sql) = @_;
	my $offset = -s $node->logfile;
	my ($rc, $out, $err) = $node->psql('postgres', "SET vectorbea.test_crash_point = '$point';\n$sql");
	isnt($rc, 0, "$point: the session died");
	is($out, '', "$point: the client got no answer");
	like($err, qr/server closed the connection unexpectedly|connection to server was lost/,
		"$point: the connection broke");
	check_died_at($point, $offset, 'server process');
	check_recovered($point, $offset);
	wait_up($point);
	return;
}

sub verify_empty
{
	my ($run, $what) = @_;
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', "$what: verify_run is empty");
	return;
}

sub run_status { return sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$_[0]'}); }

sub node_row
{
	my ($run, $n) = @_;
	return sql(qq{SELECT status || ' ' || attempt FROM vectorbea.nodes WHERE run_id = '$run' AND node = '$n'});
}

sub count_events
{
	my ($run, $type, $n) = @_;
	return sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = '$type'}
		  . (defined $n ? " AND node = '$n'" : ''));
}

# Nodes of the run that did not succeed exactly once (by their last attempt).
sub not_completed_once
{
	my ($run) = @_;
	return sql(qq{SELECT string_agg(n.node, ', ' ORDER BY n.node) FROM vectorbea.nodes n
		WHERE n.run_id = '$run' AND n.status = 'succeeded'
		  AND (SELECT count(*) || ':' || coalesce(min(e.attempt), 0) FROM vectorbea.events e
				WHERE e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_COMPLETED')
			  <> '1:' || n.attempt});
}

# Claims and completes every ready task of $activity in the run; returns
# how many.
sub work
{
	my ($run, $activity, $output) = @_;
	$output //= '{"done": true}';
	return sql(qq{SELECT count(vectorbea.complete_task(c.task_id, c.lease, '$output'))
		FROM vectorbea.claim_tasks('w', ARRAY['$activity'], 10) c WHERE c.run_id = '$run'});
}

# ---------------------------------------------------------------------------
subtest 'claim_committed' => sub {
	sql(q{SELECT vectorbea.define_workflow('cp_claim', '{"nodes": [
		{"id": "a", "activity": "cp_claim_a", "retry": {"max_attempts": 3, "initial": "0s", "max": "0s"}},
		{"id": "b", "activity": "cp_claim_b", "depends_on": ["a"]}]}')});
	my $run = sql(q{SELECT vectorbea.start_run('cp_claim', '{}')});

	# A claim that does not commit, or whose subtransaction rolls back,
	# reaches no point.
	my ($rc, $out) = $node->psql('postgres', q{SET vectorbea.test_crash_point = 'claim_committed';
		BEGIN; SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['cp_claim_a'], 1); ROLLBACK;
		BEGIN; SAVEPOINT s; SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['cp_claim_a'], 1);
		ROLLBACK TO s; COMMIT; SELECT 'alive';});
	is("$rc|$out", "0|1\n1\nalive", 'claim_committed: a claim rolled back, or in a rolled back subtransaction, lives');
	is(node_row($run, 'a'), 'ready 0', 'claim_committed: and its task is still ready');

	crash_session('claim_committed',
		q{SELECT task_id FROM vectorbea.claim_tasks('doomed', ARRAY['cp_claim_a'], 1, '2 seconds');});

	# Attempt 1 proves the claim kept; the restarted scheduler ends its 2 s
	# lease when it runs out, which a slow recovery may pass.
	like(node_row($run, 'a'), qr/^(running|ready) 1$/,
		'claim_committed: the claim is kept: a is at attempt 1 (running, or ready once its lease ran out)');
	is(sql(qq{SELECT data->>'worker' FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_STARTED'}),
		'doomed', 'claim_committed: its STEP_STARTED names the worker that never got the answer');
	verify_empty($run, 'claim_committed: after recovery');

	# The lost lease runs out; a claim of the activity ends the attempt and
	# takes the task again as attempt 2.
	my $t0 = time;
	my $got = '';
	while (time - $t0 < 30)
	{
		$got = sql(qq{SELECT attempt FROM vectorbea.claim_tasks('w', ARRAY['cp_claim_a'], 1) WHERE run_id = '$run'});
		last if $got ne '';
		usleep(200_000);
	}
	is($got, '2', 'claim_committed: after its lease the task comes back as attempt 2');
	is(sql(qq{SELECT data->>'class' FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'}),
		'lease_expired', 'claim_committed: attempt 1 ended as lease_expired');
	sql(qq{SELECT vectorbea.complete_task(n.id, n.lease, '{"a": 2}') FROM vectorbea.nodes n
		WHERE n.run_id = '$run' AND n.node = 'a'});
	is(work($run, 'cp_claim_b'), '1', 'claim_committed: b is done');
	is(run_status($run), 'succeeded', 'claim_committed: the run succeeds');
	is(not_completed_once($run), '', 'claim_committed: every node completed once, by its last attempt');
	verify_empty($run, 'claim_committed: at the end');
};

# ---------------------------------------------------------------------------
subtest 'llm_answered' => sub {
	# The scheduler reads the setting from the configuration; without a
	# restart after the crash it would die again at its next answer, so the
	# postmaster stops after this crash and the test starts it again.
	$node->append_conf('postgresql.conf', qq{
restart_after_crash = off
vectorbea.test_crash_point = 'llm_answered'
});
	$node->restart;
	wait_up('llm_answered: configured');

	sql(q{SELECT vectorbea.define_workflow('cp_llm', '{"nodes": [
		{"id": "r", "kind": "llm", "in_doubt": "retry", "retry": {"max_attempts": 3, "initial": "0s", "max": "0s"},
		 "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "node R: {{run.input.topic}}"}},
		{"id": "k", "kind": "llm", "in_doubt": "ask", "escalation": {"gate": "cp_k_in_doubt"},
		 "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "node K: {{run.input.topic}}"}},
		{"id": "join", "activity": "cp_llm_join", "depends_on": ["r", "k"]}]}')});
	vb_fake_reset();
	# Both calls are in flight before either answer arrives.
	vb_fake_script(
		{ match => { contains => 'node R' }, delay_ms => 500, text => 'first R (never recorded)' },
		{ match => { contains => 'node K' }, delay_ms => 500, text => 'first K (never recorded)' },
		{ match => { contains => 'node R' }, text => 'second R' },
		{ match => { contains => 'node K' }, text => 'second K (must not be asked)' });

	my $pidfile = $node->data_dir . '/postmaster.pid';
	my ($pm) = split /\n/, slurp_file($pidfile);
	my $offset = -s $node->logfile;
	my $run = sql(q{SELECT vectorbea.start_run('cp_llm', '{"topic": "crash"}')});
	check_died_at('llm_answered', $offset, 'background worker "vectorbea scheduler"');
	my $t0 = time;
	usleep(50_000) while (vb_alive($pm) && time - $t0 < 60);
	ok(!vb_alive($pm), 'llm_answered: the postmaster stopped (restart_after_crash is off)');
	$node->_update_pid(-1);
	my @requests = @{ vb_fake_requests() };
	is(scalar @requests, 2, 'llm_answered: both calls had reached the provider');

	$node->append_conf('postgresql.conf', qq{
restart_after_crash = on
vectorbea.test_crash_point = ''
});
	$node->start;
	check_recovered('llm_answered', $offset);
	wait_up('llm_answered');

	is(sql(qq{SELECT string_agg(node, ' ' ORDER BY node) FROM vectorbea.events
		WHERE run_id = '$run' AND type = 'LLM_REQUESTED' AND attempt = 1}), 'k r',
		'llm_answered: the two calls recorded before sending are kept');
	my $cut = sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_CALLED' AND attempt = 1});
	is($cut, '0', 'llm_answered: nothing of the answers that came before the crash is recorded');

	ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'r'},
			'succeeded', 60), 'llm_answered: in_doubt retry: r succeeds');
	is(node_row($run, 'r'), 'succeeded 2', 'llm_answered: in_doubt retry: by a second attempt');
	my ($failed_attempt, $failed) = split /\|/, sql(qq{SELECT attempt, data FROM vectorbea.events
		WHERE run_id = '$run' AND node = 'r' AND type = 'STEP_FAILED'});
	is($failed_attempt, '1', 'llm_answered: in_doubt retry: attempt 1 failed, once');
	# Each cut call is charged its reserved worst case, once, and replay counts it.
	is(sql(qq{SELECT string_agg(e.node || ':' || ((e.data->'usage'->>'usd')::numeric = n.reserved_usd), ' '
					ORDER BY e.node)
				FROM vectorbea.events e JOIN vectorbea.nodes n ON n.run_id = e.run_id AND n.node = e.node
			   WHERE e.run_id = '$run' AND e.type = 'LLM_CHARGED' AND e.attempt = 1}), 'k:true r:true',
		'llm_answered: each cut call is charged once, at the worst case reserved for it');
	$failed = $json->decode($failed);
	ok($failed->{error}{in_doubt} && !$failed->{final}, 'llm_answered: in_doubt retry: in doubt, not final')
	  or diag(explain $failed);
	is(sql(qq{SELECT output->>'text' FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'r'}), 'second R',
		'llm_answered: in_doubt retry: the output is the second answer');

	ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'k'},
			'waiting', 60), 'llm_answered: in_doubt ask: k waits for a person');
	my $gate = $json->decode(sql(qq{SELECT row_to_json(a) FROM vectorbea.approvals a WHERE run_id = '$run'}));
	is($gate->{kind}, 'in_doubt', 'llm_answered: in_doubt ask: at a gate of kind in_doubt');
	ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle', 30),
		'llm_answered: the scheduler is idle');
	my @r = grep { $json->encode($_->{body}) =~ /node R/ } @{ vb_fake_requests() };
	my @k = grep { $json->encode($_->{body}) =~ /node K/ } @{ vb_fake_requests() };
	is(scalar @r, 2, 'llm_answered: in_doubt retry: the provider was called twice for r');
	is(scalar @k, 1, 'llm_answered: in_doubt ask: and once only for k');

	sql(qq{UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept',
			output = '{"text": "K was done"}', decided_by = 'ops' WHERE id = $gate->{id}});
	my $upstream = sql(qq{SELECT upstream FROM vectorbea.claim_tasks('w', ARRAY['cp_llm_join']) WHERE run_id = '$run'});
	my $up = $json->decode($upstream);
	is($up->{k}{text}, 'K was done', 'llm_answered: the decided output goes downstream');
	is($up->{r}{text}, 'second R', 'llm_answered: and the retried answer');
	sql(qq{SELECT vectorbea.complete_task(n.id, n.lease, '{}') FROM vectorbea.nodes n
		WHERE n.run_id = '$run' AND n.node = 'join'});
	is(run_status($run), 'succeeded', 'llm_answered: the run succeeds');
	is(not_completed_once($run), '', 'llm_answered: every node completed once, by its last attempt');
	verify_empty($run, 'llm_answered');
};

# ---------------------------------------------------------------------------
subtest 'approval_applying' => sub {
	sql(q{SELECT vectorbea.define_workflow('cp_gate', '{"nodes": [
		{"id": "sign", "kind": "approval", "approval": {"gate": "cp_sign"}},
		{"id": "after", "activity": "cp_after", "depends_on": ["sign"]}]}')});
	my $run = sql(q{SELECT vectorbea.start_run('cp_gate', '{}')});
	my $id = sql(qq{SELECT id FROM vectorbea.approvals WHERE run_id = '$run'});

	crash_session('approval_applying',
		qq{UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ops', reason = 'ok' WHERE id = $id;});

	is(sql(qq{SELECT status || ' ' || (decided_at IS NULL) FROM vectorbea.approvals WHERE id = $id}), 'pending true',
		'approval_applying: the gate is still pending and undecided');
	is(node_row($run, 'sign'), 'waiting 0', 'approval_applying: the gate node still waits');
	is(node_row($run, 'after'), 'pending 0', 'approval_applying: its dependent is still pending');
	is(count_events($run, 'APPROVAL_GRANTED') + count_events($run, 'STEP_COMPLETED'), 0,
		'approval_applying: nothing of the decision is in the history');
	verify_empty($run, 'approval_applying: after recovery');

	sql(qq{UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'ops', reason = 'ok' WHERE id = $id});
	is(count_events($run, 'APPROVAL_GRANTED'), '1', 'approval_applying: decided again, it applies once');
	is(work($run, 'cp_after'), '1', 'approval_applying: the dependent runs');
	is(run_status($run), 'succeeded', 'approval_applying: the run succeeds');
	is(not_completed_once($run), '', 'approval_applying: every node completed once');
	verify_empty($run, 'approval_applying');
};

# ---------------------------------------------------------------------------
subtest 'spawning' => sub {
	sql(q{SELECT vectorbea.define_workflow('cp_spawn', '{"nodes": [
		{"id": "plan", "activity": "cp_plan"}]}')});
	my $run = sql(q{SELECT vectorbea.start_run('cp_spawn', '{}')});
	my ($tid, $lease) = split /\|/,
	  sql(qq{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['cp_plan'], 1, '10 minutes') WHERE run_id = '$run'});
	ok($tid, 'spawning: the planner is claimed');
	my $spawn = '[{"id": "s1", "activity": "cp_step"}, {"id": "s2", "activity": "cp_step"},'
	  . ' {"id": "s3", "activity": "cp_step", "depends_on": ["s1", "s2"]}]';
	my $complete = qq{SELECT vectorbea.complete_task($tid, '$lease', '{"planned": 3}', '$spawn');};

	crash_session('spawning', $complete);

	is(node_row($run, 'plan'), 'running 1', 'spawning: the planner is still running under its lease');
	is(sql(qq{SELECT count(*) || ' ' || (SELECT node_count FROM vectorbea.runs WHERE id = '$run')
		FROM vectorbea.nodes WHERE run_id = '$run'}), '1 1', 'spawning: no spawned node is left');
	is(count_events($run, 'NODES_SPAWNED') + count_events($run, 'STEP_COMPLETED'), 0,
		'spawning: nothing of the completion is in the history');
	verify_empty($run, 'spawning: after recovery');

	# The worker saw its call cut and repeats it, with the same lease.
	sql($complete);
	is(sql(qq{SELECT string_agg(node || ':' || status, ' ' ORDER BY node) FROM vectorbea.nodes
		WHERE run_id = '$run' AND spawned_by = 'plan'}), 's1:ready s2:ready s3:pending',
		'spawning: repeated, the completion adds all the spawned nodes');
	is(count_events($run, 'NODES_SPAWNED'), '1', 'spawning: one NODES_SPAWNED');
	is(work($run, 'cp_step'), '2', 'spawning: s1 and s2 are done');
	is(work($run, 'cp_step'), '1', 'spawning: then s3');
	is(run_status($run), 'succeeded', 'spawning: the run succeeds');
	is(not_completed_once($run), '', 'spawning: every node completed once');
	verify_empty($run, 'spawning');
};

# ---------------------------------------------------------------------------
subtest 'compensation_starting' => sub {
	sql(q{SELECT vectorbea.define_workflow('cp_saga', '{"nodes": [
		{"id": "reserve", "activity": "cp_reserve", "compensate": {"activity": "cp_release"}},
		{"id": "charge", "activity": "cp_charge", "depends_on": ["reserve"],
		 "compensate": {"activity": "cp_refund", "retry": {"max_attempts": 3, "initial": "0s", "max": "0s"}}},
		{"id": "ship", "activity": "cp_ship", "depends_on": ["charge"], "retry": {"max_attempts": 1}}]}')});
	my $run = sql(q{SELECT vectorbea.start_run('cp_saga', '{}')});
	is(work($run, 'cp_reserve') + work($run, 'cp_charge'), 2, 'compensation_starting: reserve and charge are done');
	my ($tid, $lease) = split /\|/,
	  sql(qq{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['cp_ship'], 1, '10 minutes') WHERE run_id = '$run'});
	my $fail = qq{SELECT vectorbea.fail_task($tid, '$lease', '{"message": "no courier", "class": "permanent"}');};

	crash_session('compensation_starting', $fail);

	is(run_status($run), 'running', 'compensation_starting: the run is still running');
	is(node_row($run, 'ship'), 'running 1', 'compensation_starting: the failure is absent: ship still runs');
	is(sql(qq{SELECT count(*) FROM vectorbea.nodes WHERE run_id = '$run' AND compensation_of IS NOT NULL}), '0',
		'compensation_starting: no compensation node is left');
	is(count_events($run, 'COMPENSATION_STARTED') + count_events($run, 'STEP_FAILED'), 0,
		'compensation_starting: nothing of it is in the history');
	verify_empty($run, 'compensation_starting: after recovery');

	# The worker reports the failure again; the compensation starts.
	sql($fail);
	is(run_status($run), 'compensating', 'compensation_starting: reported again, the run compensates');
	is(count_events($run, 'COMPENSATION_STARTED'), '1', 'compensation_starting: once');

	# The server dies again once the claim of the refund has committed.
	crash_session('claim_committed',
		q{SELECT task_id FROM vectorbea.claim_tasks('doomed', ARRAY['cp_refund'], 1, '2 seconds');});
	like(node_row($run, 'charge:compensate'), qr/^(running|ready) 1$/,
		'compensation_starting: the refund is at attempt 1, taken by the lost claim (running, or ready once its lease ran out)');
	verify_empty($run, 'compensation_starting: after the second recovery');

	my $t0 = time;
	while (time - $t0 < 30 && run_status($run) eq 'compensating')
	{
		work($run, 'cp_refund');
		work($run, 'cp_release');
		usleep(200_000);
	}
	is(sql(qq{SELECT status || ' ' || (error->>'compensation') FROM vectorbea.runs WHERE id = '$run'}),
		'failed completed', 'compensation_starting: the run failed with its compensation completed');
	is(node_row($run, 'charge:compensate'), 'succeeded 2', 'compensation_starting: the refund ran again as attempt 2');
	is(sql(qq{SELECT string_agg(compensation_of, ' ' ORDER BY finished_at, id) FROM vectorbea.nodes
		WHERE run_id = '$run' AND compensation_of IS NOT NULL}), 'charge reserve',
		'compensation_starting: charge was undone, then reserve');
	is(not_completed_once($run), '', 'compensation_starting: every compensation completed once');
	verify_empty($run, 'compensation_starting');
};

$node->stop;
done_testing();
