# 054_cut_calls_charged.pl -- an llm call cut in flight is charged its
# worst case whatever cut it: a kill switch, or the end of its run.
#
# A call cut by a crash was charged the worst case reserved for it
# (LLM_CHARGED), so that what budgets see never lags behind what may have
# been spent.  One cut by pause_run, cancel_run or its run's failure was
# dropped with nothing booked, though the provider may have answered and
# billed just the same: a paused runaway agent, resumed, called again on a
# budget that had not counted the first call.  Now each is charged once,
# before the event that cuts it, and a requeue that asks a person about
# the attempt does not charge it again.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my ($node, $base) = vb_llm_server('cut_calls_charged');
sub sql { return $node->safe_psql('postgres', shift); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
sql(q{SELECT vectorbea.define_workflow('brief', '{"nodes": [
	{"id": "write", "kind": "llm", "in_doubt": "ask", "escalation": {"gate": "write_in_doubt"},
	 "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Brief on {{run.input.topic}}",
	         "max_tokens": 500}},
	{"id": "check", "activity": "cut_check", "retry": {"max_attempts": 1}}]}')});
sql(q{SELECT vectorbea.define_workflow('plain', '{"nodes": [
	{"id": "write", "kind": "llm",
	 "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Plain {{run.input.topic}}",
	         "max_tokens": 500}}]}')});
vb_fake_script({ times => -1, text => 'a brief', delay_ms => 4000 });

# The run's calls that were charged, each as "attempt:charged = reserved".
sub charges
{
	my ($run) = @_;
	return sql(qq{SELECT coalesce(string_agg(e.attempt || ':' || ((e.data->'usage'->>'usd')::numeric = n.reserved_usd),
				' ' ORDER BY e.seq), '')
			FROM vectorbea.events e JOIN vectorbea.nodes n ON n.run_id = e.run_id AND n.node = e.node
		   WHERE e.run_id = '$run' AND e.type = 'LLM_CHARGED'});
}

# Starts a run of $workflow (brief by default) and waits until its call is in flight.
sub in_flight
{
	my ($topic, $workflow) = @_;
	$workflow //= 'brief';
	my $run = sql(qq{SELECT vectorbea.start_run('$workflow', '{"topic": "$topic"}')});
	ok(defined vb_wait_for($node,
			qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_REQUESTED'}, '1'),
		"$topic: the call is in flight");
	return $run;
}

# pause_run: the attempt is aborted and the cut call charged.
my $run = in_flight('pause', 'plain');
sql(qq{SELECT vectorbea.pause_run('$run', 'runaway')});
is(sql(qq{SELECT status || ' ' || (error->>'class') FROM vectorbea.nodes WHERE run_id = '$run'}), 'ready aborted',
	'pause: the attempt is aborted');
is(charges($run), '1:true', 'pause: the cut call is charged its reserved worst case, once');
is(sql(qq{SELECT usage_usd = (SELECT reserved_usd FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'write')
		FROM vectorbea.runs WHERE id = '$run'}), 't', 'pause: the run booked it');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'pause: the run agrees with its history');
sql(qq{SELECT vectorbea.cancel_run('$run', 'done')});
is(charges($run), '1:true', 'pause, then cancel: not charged again');

# pause_run of a node that asks about attempts in doubt: a gate opens,
# and the cut call is charged.
$run = in_flight('pause and ask');
sql(qq{SELECT vectorbea.pause_run('$run', 'runaway')});
is(sql(qq{SELECT kind FROM vectorbea.approvals WHERE run_id = '$run'}), 'in_doubt', 'pause and ask: a gate opens');
is(charges($run), '1:true', 'pause and ask: the cut call is charged');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'pause and ask: the run agrees with its history');
sql(qq{SELECT vectorbea.cancel_run('$run', 'done')});

# cancel_run: the call is revoked and charged.
$run = in_flight('cancel');
sql(qq{SELECT vectorbea.cancel_run('$run', 'enough')});
is(charges($run), '1:true', 'cancel: the cut call is charged');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'cancel: the run agrees with its history');

# The run fails (check fails for good): the call is revoked and charged;
# the requeue asks a person about the attempt (in_doubt "ask") and does not
# charge it again.
$run = in_flight('failure');
sql(qq{SELECT vectorbea.fail_task(task_id, lease, '{"message": "no", "class": "permanent"}')
		FROM vectorbea.claim_tasks('w', ARRAY['cut_check'])});
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}), 'failed', 'failure: the run failed');
is(charges($run), '1:true', 'failure: the cut call is charged');
sql(qq{SELECT vectorbea.requeue(id, 'fixed') FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'check'});
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'write'}), 'waiting',
	'failure, then requeue: the attempt in doubt waits for a person');
is(charges($run), '1:true', 'failure, then requeue: not charged again');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'failure: the run agrees with its history');
sql(qq{SELECT vectorbea.cancel_run('$run', 'done')});

# The node's timeout ends the attempt while its call is in flight (the
# engine clock two minutes on, past the node's one-minute timeout): the
# cut call is charged, as any cut.
sql(q{SELECT vectorbea.define_workflow('timed', '{"nodes": [
	{"id": "write", "kind": "llm", "timeout": "1m",
	 "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Timed {{run.input.topic}}",
	         "max_tokens": 500}}]}')});
$run = in_flight('timeout', 'timed');
sql(q{SET vectorbea.test_clock_offset = '2m'; SELECT vectorbea.run_due_work()});
is(sql(qq{SELECT string_agg(data->>'class', ', ') FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'}),
	'timeout', 'timeout: the attempt ran past the node\'s timeout');
is(charges($run), '1:true', 'timeout: the cut call is charged');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'timeout: the run agrees with its history');
sql(qq{SELECT vectorbea.cancel_run('$run', 'done')});
is(charges($run), '1:true', 'timeout, then cancel: not charged again');

# Two llm nodes of one run claimed in one step: the first is recorded
# (LLM_REQUESTED), the second cannot be prepared (no key for its
# provider) and fails the run, which revokes the first before the step
# commits. That call was never sent: it is not charged, and a node that
# compensates attempts in doubt is not compensated for it.
sql(q{SELECT vectorbea.define_workflow('pair', '{"nodes": [
	{"id": "first", "kind": "llm", "in_doubt": "compensate", "compensate": {"activity": "undo_first"},
	 "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "First {{run.input.topic}}",
	         "max_tokens": 500}},
	{"id": "second", "kind": "llm",
	 "llm": {"provider": "anthropic", "model": "claude-sonnet-4", "prompt": "Second {{run.input.topic}}",
	         "max_tokens": 500}}]}')});
$run = sql(q{SELECT vectorbea.start_run('pair', '{"topic": "pair"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'failed'),
	'pair: the node without a key fails the run');
# The claim takes a run's ready nodes in the order they were added: first, then second.
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND node = 'first' AND type = 'LLM_REQUESTED'}),
	'1', 'pair: the first call was recorded before the second failed the run');
is(sql(qq{SELECT string_agg(data->>'outcome', ', ') FROM vectorbea.events
		WHERE run_id = '$run' AND node = 'first' AND type = 'LLM_CALLED'}), 'not_sent',
	'pair: the recorded call says it was not sent');
is(charges($run), '', 'pair: it is not charged');
is(sql(qq{SELECT usage_usd FROM vectorbea.runs WHERE id = '$run'}), '0', 'pair: the run booked nothing');
is(sql(qq{SELECT count(*) FROM vectorbea.nodes WHERE run_id = '$run' AND compensation_of IS NOT NULL}), '0',
	'pair: nothing is compensated for it');
sleep(1);
is(scalar(grep { ($_->{body}{messages}[-1]{content} // '') eq 'First pair' } @{ vb_fake_requests() }), 0,
	'pair: the provider never got the call');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'pair: the run agrees with its history');

done_testing();
