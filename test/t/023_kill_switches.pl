# 023_kill_switches.pl -- disable_model and pause_workspace stop calls in
# flight at once, against the fake provider on loopback, with the real
# scheduler.
#
# 100 llm calls hang at the provider, and vectorbea.llm_request_timeout is
# an hour: nothing but a switch ends them.  disable_model: after the commit
# no call to it is in flight, and no new request is made while it is
# disabled (checked after a pass of the scheduler that began after the
# switch); the aborted attempts are recorded (STEP_FAILED
# class aborted) and do not count against the nodes' attempts;
# enable_model sends them again.  pause_workspace: the same for a
# workspace, whose runs are paused; resume_workspace sends them again.
# A call of a node with in_doubt "ask" is not sent again after a switch:
# it waits for a person at an in_doubt gate.
# verify_run is empty for every run.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my $CALLS = 100;
my ($node, $base, $port) = vb_llm_server('kill_switches', qq{
vectorbea.llm_max_in_flight = 200
vectorbea.llm_request_timeout = '1h'
});

sub sql { return $node->safe_psql('postgres', $_[0]); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
vb_store_key($node, 'acme', 'openai', 'sk-test-openai-0002', $base);
sql(q{SELECT vectorbea.define_workflow('ask', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "n={{run.input.n}}"}}]}')});

# Calls recorded as sent (LLM_REQUESTED is written before a call leaves).
sub requested
{
	return sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'LLM_REQUESTED'});
}

sub wait_in_flight
{
	my ($want, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < $timeout)
	{
		return time - $t0 if vb_fake_stats()->{in_flight} == $want;
		usleep(20_000);
	}
	return undef;
}

# ---------------------------------------------------------------------------
# disable_model
vb_fake_script({ mode => 'hang', times => -1 });
sql(qq{SELECT vectorbea.start_run('ask', jsonb_build_object('n', i)) FROM generate_series(1, $CALLS) i});
ok(defined wait_in_flight($CALLS, 30), "$CALLS calls are in flight");
my $sent = scalar @{ vb_fake_requests() };
my $recorded = requested();
my $t0 = time;
is(sql(q{SELECT vectorbea.disable_model('openai', 'gpt-4o-mini', 'incident at the provider')}), $CALLS,
	'disable_model aborts every call in flight');
ok(defined wait_in_flight(0, 60), 'no call is in flight after the commit');
note(sprintf('the last call ended %.2f s after the commit', time - $t0));
ok(vb_scheduler_pass($node), 'the scheduler made a pass after the switch');
is(requested() . ' ' . scalar @{ vb_fake_requests() }, "$recorded $sent",
	'and no call was made while the model is disabled');
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_FAILED' AND data->>'class' = 'aborted'}),
	$CALLS, 'each aborted attempt is recorded');
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE status = 'ready' AND available_at = 'infinity'}), $CALLS,
	'the nodes wait, held, for the model');
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE max_attempts = attempt + 3}), $CALLS,
	'the aborted attempts do not count against the nodes');
# A node that becomes ready after the switch is held at its claim, and its
# attempt says why.
my $late = sql(q{SELECT vectorbea.start_run('ask', '{"n": 0}')});
ok(vb_scheduler_pass($node), 'the scheduler made a pass after a run started while the model is disabled');
is(sql(qq{SELECT status || ', ' || (error->>'message') || ', ' || available_at FROM vectorbea.nodes WHERE run_id = '$late'}),
	'ready, openai/gpt-4o-mini is disabled, infinity', 'its node waits, held, saying the model is disabled');
is(requested() . ' ' . scalar @{ vb_fake_requests() }, "$recorded $sent", 'and it made no call');

vb_fake_reset();
vb_fake_script({ text => 'ok', times => -1 });
sql(q{SELECT vectorbea.enable_model('openai', 'gpt-4o-mini')});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded'}, $CALLS + 1, 60),
	'enable_model: every call is made again and every run succeeds');

# ---------------------------------------------------------------------------
# pause_workspace
vb_fake_reset();
vb_fake_script({ mode => 'hang', times => -1 });
sql(qq{SELECT vectorbea.start_run('ask', jsonb_build_object('n', i), NULL, '{"workspace": "acme"}')
		 FROM generate_series(1, $CALLS) i});
ok(defined wait_in_flight($CALLS, 30), "$CALLS calls of workspace acme are in flight");
$sent = scalar @{ vb_fake_requests() };
$recorded = requested();
$t0 = time;
is(sql(q{SELECT vectorbea.pause_workspace('acme', 'runaway spend')}), $CALLS, 'pause_workspace pauses every run');
ok(defined wait_in_flight(0, 60), 'no call is in flight after the commit');
note(sprintf('the last call ended %.2f s after the commit', time - $t0));
ok(vb_scheduler_pass($node), 'the scheduler made a pass after the pause');
is(requested() . ' ' . scalar @{ vb_fake_requests() }, "$recorded $sent",
	'and no call was made while the workspace is paused');
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workspace = 'acme' AND status = 'paused'}), $CALLS,
	'its runs are paused');
is(sql(q{SELECT control || ':' || target || ':' || reason FROM vectorbea.controls}),
	'workspace paused:acme:runaway spend', 'vectorbea.controls says what is paused and why');

vb_fake_reset();
vb_fake_script({ text => 'ok', times => -1 });
is(sql(q{SELECT vectorbea.resume_workspace('acme')}), $CALLS, 'resume_workspace resumes them');
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE workspace = 'acme' AND status = 'succeeded'},
		$CALLS, 60), 'every run of the workspace succeeds');
# ---------------------------------------------------------------------------
# A call in flight of a node that asks about attempts in doubt is not sent
# again after the switch: it waits for a person.
vb_fake_reset();
vb_fake_script({ mode => 'hang', times => -1 });
sql(q{SELECT vectorbea.define_workflow('careful', '{"nodes": [
  {"id": "q", "kind": "llm", "in_doubt": "ask", "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "pay"}}]}')});
my $careful = sql(q{SELECT vectorbea.start_run('careful', '{}')});
ok(defined wait_in_flight(1, 30), 'in doubt: the call is in flight');
sql(qq{SELECT vectorbea.pause_run('$careful', 'look first')});
ok(defined wait_in_flight(0, 60), 'in doubt: the pause stops it');
is(sql(qq{SELECT n.status || ':' || a.kind FROM vectorbea.nodes n JOIN vectorbea.approvals a ON a.task_id = n.id
		   WHERE n.run_id = '$careful'}), 'waiting:in_doubt', 'in doubt: the node waits at an in_doubt gate');
sql(qq{SELECT vectorbea.resume_run('$careful')});
ok(vb_scheduler_pass($node), 'in doubt: the scheduler made a pass after the resume');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$careful' AND type = 'LLM_REQUESTED'}) . ' '
	  . scalar @{ vb_fake_requests() }, '1 1', 'in doubt: after the resume the call is not sent again');
sql(qq{UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept', output = '{"paid": true}'
	   WHERE run_id = '$careful'});
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$careful'}), 'succeeded', 'in doubt: a person settles it');

# ---------------------------------------------------------------------------
# A node held by its not_before while its model is disabled: its time is
# not read while the switch holds it, and enable_model, which has no other
# node to release, must still wake the scheduler to read it (nothing else
# is due here; the idle timeout is minutes).
vb_fake_reset();
vb_fake_script({ text => 'ok', times => -1 });
sql(q{SELECT vectorbea.define_workflow('timed', '{"nodes": [
  {"id": "q", "kind": "llm", "not_before": "2026-01-01T00:00:00Z",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "later"}}]}')});
sql(q{SELECT vectorbea.disable_model('openai', 'gpt-4o-mini', 'again')});
my $timed = sql(q{SELECT vectorbea.start_run('timed', '{}')});
ok(vb_scheduler_pass($node), 'not_before: the scheduler made a pass while the model is disabled');
is(sql(qq{SELECT status || ' ' || available_at FROM vectorbea.nodes WHERE run_id = '$timed'}), 'ready infinity',
	'not_before: the node is held, its time unread');
sql(q{SELECT vectorbea.enable_model('openai', 'gpt-4o-mini')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$timed'}, 'succeeded', 10),
	'not_before: enable_model wakes the scheduler, which makes the call');

# ---------------------------------------------------------------------------
# A node that asks about attempts in doubt, stopped while it holds a
# correction for its time under a rate limit: no call is out (the last one
# was answered), so nothing is in doubt, and the attempt is aborted like
# any other.
vb_fake_reset();
vb_fake_script({ text => 'not json', times => 1 }, { text => '{"ok": true}', times => -1 });
sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', 6, NULL, 'gpt-held')});
sql(q{SELECT vectorbea.define_workflow('careful_json', '{"nodes": [
  {"id": "q", "kind": "llm", "in_doubt": "ask",
   "llm": {"provider": "openai", "model": "gpt-held", "prompt": "json please",
           "output_schema": {"type": "object"}, "max_corrections": 1}}]}')});
my $held = sql(q{SELECT vectorbea.start_run('careful_json', '{}')});
ok(defined vb_wait_for($node, qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$held' AND type = 'RATE_LIMITED'},
		'1', 30), 'held: the correction waits for its time under the limit');
sql(q{SELECT vectorbea.disable_model('openai', 'gpt-held', 'stop it')});
is(sql(qq{SELECT count(*) FROM vectorbea.approvals WHERE run_id = '$held'}), '0',
	'held: the switch opens no in_doubt gate: no call was out');
is(sql(qq{SELECT status || ' ' || available_at FROM vectorbea.nodes WHERE run_id = '$held'}), 'ready infinity',
	'held: the attempt is aborted and the node held for the model');
sql(q{SELECT vectorbea.enable_model('openai', 'gpt-held')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$held'}, 'succeeded', 40),
	'held: enabled again, the node runs again and succeeds');

is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id)}), '0',
	'verify_run is empty for every run');

$node->stop;
done_testing();
