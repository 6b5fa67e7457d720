# 025_rate_limits.pl -- rate limits pace llm calls, and a provider's own
# limits slow them down, against the fake provider on loopback, with the
# real scheduler.
#
# A limit of 600 requests a minute (10 a second: the issue's 60 a minute
# over 3 minutes, scaled to 20 s) with 200 calls queued: the engine gives
# the calls times no faster than the limit (no 10 s window holds more than
# 101 of them), a call that waits is not made before its time, the queue
# takes at least the 19.9 s the limit allows, each waiting call waits once
# (one RATE_LIMITED per wait) and none fails for it.  All by the events'
# own timestamps (a call's time: the "until" of its RATE_LIMITED, or when
# it was made if it did not wait): a busy machine makes calls later, and
# may then bunch them at the provider, which is not what is checked here;
# how long it all takes is its business too.  The provider's view goes to
# the log.
#
# A 429 storm: the provider answers 429 with Retry-After: 2 to the first
# 20 calls; every call waits for it (by the events' own times: at least 2 s
# from its first request to its answer) and is made once more, no more.
# A response saying no requests remain
# (x-ratelimit-remaining-requests: 0, reset in 2 s) holds the next call
# back until then.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my ($node, $base, $port) = vb_llm_server('rate_limits', qq{
vectorbea.llm_max_in_flight = 64
});
sub sql { return $node->safe_psql('postgres', $_[0]); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
sql(q{SELECT vectorbea.define_workflow('ask', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "n={{run.input.n}}", "max_tokens": 50}}]}')});

# ---------------------------------------------------------------------------
# 600 requests a minute, 200 calls queued.
is(sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', 600)}), 'f', 'a rate limit is set');
vb_fake_script({ text => 'ok', times => -1 });
sql(q{SELECT vectorbea.start_run('ask', jsonb_build_object('n', i)) FROM generate_series(1, 200) i});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded'}, '200', 120),
	'every call is made in the end, none fails for the limit');
my @at = sort { $a <=> $b } map { $_->{received_at} } @{ vb_fake_requests() };
is(scalar @at, 200, 'the provider saw 200 requests');
my $max10 = 0;
for my $i (0 .. $#at)
{
	my $n = grep { $_ >= $at[$i] && $_ < $at[$i] + 10 } @at;
	$max10 = $n if $n > $max10;
}
note(sprintf('the provider saw the 200 requests over %.1f s, at most %d in a 10 s window',
	$at[-1] - $at[0], $max10));
# Each call's time, and when it was made, by the engine's clock.
my $times = q{SELECT e.run_id,
	coalesce(max((e.data->>'until')::timestamptz) FILTER (WHERE e.type = 'RATE_LIMITED'),
			 min(e.at) FILTER (WHERE e.type = 'LLM_REQUESTED')) AS given,
	min(e.at) FILTER (WHERE e.type = 'LLM_REQUESTED') AS made
  FROM vectorbea.events e GROUP BY e.run_id};
my ($n_given, $given10, $span) = split /\|/, sql(qq{SELECT count(*), max(n), extract(epoch FROM max(given) - min(given))
	FROM (SELECT given, count(*) OVER (ORDER BY given RANGE BETWEEN CURRENT ROW AND interval '9.999 seconds' FOLLOWING) AS n
			FROM ($times) t) w});
is($n_given, '200', 'each of the 200 calls was given a time');
cmp_ok($given10, '<=', 101, "no 10 s window of the calls' times holds more than the limit allows ($given10)");
cmp_ok($span, '>=', 19.9, sprintf('the calls\' times span %.2f s: not faster than the limit', $span));
is(sql(qq{SELECT count(*) FROM ($times) t WHERE made < given}), '0', 'no call was made before its time');
my ($waits, $waited_nodes) = split /\|/, sql(q{SELECT count(*), count(DISTINCT (run_id, node, attempt))
	FROM vectorbea.events WHERE type = 'RATE_LIMITED'});
is($waits, $waited_nodes, "each wait has one RATE_LIMITED ($waits waits)");
cmp_ok($waits, '>=', 150, 'most calls waited for their time');
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_FAILED' AND data->>'class' <> 'aborted'}), '0',
	'no attempt failed');
sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', NULL)});

# ---------------------------------------------------------------------------
# A 429 storm with Retry-After.
vb_fake_reset();
vb_fake_script({ status => 429, headers => { 'Retry-After' => '2' }, times => 20 }, { text => 'ok', times => -1 });
my $storm = join(', ', map { "'$_'" }
	split /\n/, sql(q{SELECT vectorbea.start_run('ask', jsonb_build_object('n', i)) FROM generate_series(1, 20) i}));
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded'}, '220', 60),
	'after a 429 storm every call succeeds');
is(scalar @{ vb_fake_requests() }, 40, 'each call was refused once and made once: no hammering');
# For each run, from its first LLM_REQUESTED to its LLM_CALLED, by the
# engine's own timestamps.
my $waited = sql(qq{SELECT round(min(w), 3) FROM (
	SELECT extract(epoch FROM max(at) FILTER (WHERE type = 'LLM_CALLED')
							  - min(at) FILTER (WHERE type = 'LLM_REQUESTED')) AS w
	  FROM vectorbea.events WHERE run_id IN ($storm) GROUP BY run_id) s});
cmp_ok($waited, '>=', 2.0,
	"every call waited the 2 s the provider asked for (at least $waited s from its first request to its answer)")
  or diag(sql(qq{SELECT string_agg(run_id || ' ' || type || ' ' || at, E'\n' ORDER BY run_id, seq)
		FROM vectorbea.events WHERE run_id IN ($storm) AND (type LIKE 'LLM%' OR type = 'RATE_LIMITED')}));

# ---------------------------------------------------------------------------
# No requests remaining until a reset.
vb_fake_reset();
vb_fake_script({ text => 'last one', headers => { 'x-ratelimit-remaining-requests' => '0',
	'x-ratelimit-reset-requests' => '2s' } }, { text => 'ok', times => -1 });
my $first = sql(q{SELECT vectorbea.start_run('ask', '{"n": "first"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$first'}, 'succeeded', 60),
	'the call that used the last request succeeds');
my $next = sql(q{SELECT vectorbea.start_run('ask', '{"n": "next"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$next'}, 'succeeded', 60),
	'the next call is made');
my @r = @{ vb_fake_requests() };
cmp_ok($r[1]{received_at} - $r[0]{received_at}, '>=', 1.8, 'but only when the provider\'s requests reset');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$next' AND type = 'RATE_LIMITED'
		   AND data->>'by' = 'provider'}), '1', 'its wait is a RATE_LIMITED by the provider');

# ---------------------------------------------------------------------------
# A model's name is any text: a quote and a backslash in it still make a
# RATE_LIMITED event (its "limit" names the model), and the calls go on.
vb_fake_reset();
vb_fake_script({ text => 'ok', times => -1 });
sql(q{SELECT vectorbea.define_workflow('ask_odd', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "gpt\\"odd\\\\1", "prompt": "n={{run.input.n}}", "max_tokens": 50}}]}')});
sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', 60, NULL, 'gpt"odd\1')});
sql(q{SELECT vectorbea.start_run('ask_odd', jsonb_build_object('n', i)) FROM generate_series(1, 3) i});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'ask_odd' AND status = 'succeeded'}, '3', 20),
	'calls of a model with a quote and a backslash in its name finish under its limit');
is(sql(q{SELECT count(*) > 0, bool_and(data->>'limit' = 'default/openai/gpt"odd\1')
		   FROM vectorbea.events WHERE type = 'RATE_LIMITED' AND run_id IN
		   (SELECT id FROM vectorbea.runs WHERE workflow = 'ask_odd')}), 't|t',
	'their waits are RATE_LIMITED events that name the model as it is');
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'SCHEDULER_ERROR'}), '0', 'and no scheduler error');

# ---------------------------------------------------------------------------
# A correction is a call of its own: under a limit of 6 requests a minute
# (10 s apart), the correction of an answer that does not match the schema
# waits for its time, the conversation kept in the same attempt, and is
# made once.  Its LLM_REQUESTED is written when it leaves, after the wait.
vb_fake_reset();
vb_fake_script({ text => 'not json', times => 1 }, { text => '{"ok": true}', times => -1 });
sql(q{SELECT vectorbea.define_workflow('ask_json', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-json", "prompt": "give json", "max_tokens": 50,
   "output_schema": {"type": "object"}, "max_corrections": 1}}]}')});
sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', 6, NULL, 'gpt-json')});
my $json_run = sql(q{SELECT vectorbea.start_run('ask_json', '{}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$json_run'}, 'succeeded', 30),
	'correction: the run succeeds with the corrected answer');
my @c = @{ vb_fake_requests() };
is(scalar @c, 2, 'correction: the provider saw the first answer\'s request and the correction');
cmp_ok($c[1]{received_at} - $c[0]{received_at}, '>=', 9,
	'correction: it was made about 10 s after the first request, at its time under the limit');
is(sql(qq{SELECT (SELECT max(at) FROM vectorbea.events WHERE run_id = '$json_run' AND type = 'LLM_REQUESTED')
			   >= (SELECT (data->>'until')::timestamptz FROM vectorbea.events
					WHERE run_id = '$json_run' AND type = 'RATE_LIMITED')}), 't',
	'correction: its LLM_REQUESTED is not before the time its RATE_LIMITED gave');
is(sql(qq{SELECT string_agg(type, ', ' ORDER BY seq) FROM vectorbea.events WHERE run_id = '$json_run'
		   AND type IN ('STEP_STARTED', 'SELF_CORRECTION', 'RATE_LIMITED', 'LLM_REQUESTED', 'STEP_COMPLETED')}),
	'STEP_STARTED, LLM_REQUESTED, SELF_CORRECTION, RATE_LIMITED, LLM_REQUESTED, STEP_COMPLETED',
	'correction: one attempt; its wait is a RATE_LIMITED, its conversation kept');
cmp_ok(sql(qq{SELECT extract(epoch FROM max(at) - min(at)) FROM vectorbea.events
			   WHERE run_id = '$json_run' AND type = 'LLM_REQUESTED'}), '>=', 9,
	'correction: its LLM_REQUESTED was written when it left, not while it waited');

# ---------------------------------------------------------------------------
# A call its budget refuses is not made and takes no place: under 6
# requests a minute, the next call of the model goes at once.
vb_fake_reset();
vb_fake_script({ text => 'ok', times => -1 });
sql(q{SELECT vectorbea.define_workflow('ask_costly', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-costly", "prompt": "n={{run.input.n}}", "max_tokens": 50}}]}')});
sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', 6, NULL, 'gpt-costly')});
my $refused = sql(q{SELECT vectorbea.start_run('ask_costly', '{"n": 1}', NULL, '{"budget_tokens": 10}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$refused'}, 'failed', 30),
	'budget: a call over its run\'s budget is not made, the run fails');
my $after = sql(q{SELECT vectorbea.start_run('ask_costly', '{"n": 2}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$after'}, 'succeeded', 30),
	'budget: the next call succeeds');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id IN ('$refused', '$after') AND type = 'RATE_LIMITED'}), '0',
	'budget: the refused call took no place under the limit, the next did not wait');

# A call that waited for its time and is then refused by its budget gives
# that time up: resumed, it takes a new one, after the calls given times
# meanwhile, instead of going at once on the old one.  Under 6 requests a
# minute (10 s apart): a first call, then "late" given the time 10 s on;
# before that, its run's token budget is lowered below the call, so at its
# time the budget pauses the run; raised again, the run resumes and the
# call waits once more, for the time 20 s on.
sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', 6, NULL, 'gpt-late')});
sql(q{SELECT vectorbea.define_workflow('ask_late', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-late", "prompt": "n={{run.input.n}}", "max_tokens": 50}}]}')});
my $early = sql(q{SELECT vectorbea.start_run('ask_late', '{"n": 1}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$early'}, 'succeeded', 30),
	'grant: the first call is made');
my $late = sql(q{SELECT vectorbea.start_run('ask_late', '{"n": 2}', NULL, '{"budget_tokens": 100000, "on_budget": "pause"}')});
ok(defined vb_wait_for($node, qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$late' AND type = 'RATE_LIMITED'}, '1', 30),
	'grant: the second waits for its time');
sql(qq{SELECT vectorbea.set_run_budget('$late', NULL, 10)});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$late'}, 'paused', 30),
	'grant: at its time its budget, lowered meanwhile, pauses its run');
sql(qq{SELECT vectorbea.set_run_budget('$late', NULL, 100000)});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$late'}, 'succeeded', 40),
	'grant: raised again, the run resumes and the call is made');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$late' AND type = 'RATE_LIMITED'}), '2',
	'grant: after the resume it waited for a new time, not the one it gave up');

# A raised limit holds from the next call: under 6 requests a minute, 20
# queued calls take places up to about 3 minutes ahead; raised to 6,000,
# a new call is given a time within a second or so (those 20 places at
# the new pace), not after the old queue.  The calls given times keep them.
sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', 6, NULL, 'gpt-raise')});
sql(q{SELECT vectorbea.define_workflow('ask_raise', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-raise", "prompt": "n={{run.input.n}}", "max_tokens": 50}}]}')});
sql(q{SELECT vectorbea.start_run('ask_raise', jsonb_build_object('n', i)) FROM generate_series(1, 20) i});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
	WHERE r.workflow = 'ask_raise' AND e.type = 'RATE_LIMITED'}, '19', 30),
	'raise: 19 of 20 calls wait for their times under 6 a minute');
cmp_ok(sql(q{SELECT extract(epoch FROM max((e.data->>'until')::timestamptz) - min(e.at)) FROM vectorbea.events e
	JOIN vectorbea.runs r ON r.id = e.run_id WHERE r.workflow = 'ask_raise' AND e.type = 'RATE_LIMITED'}), '>=', 170,
	'raise: the last of them is given a time about 3 minutes ahead');
sql(q{SELECT vectorbea.set_rate_limit('default', 'openai', 6000, NULL, 'gpt-raise')});
my $raised = sql(q{SELECT vectorbea.start_run('ask_raise', '{"n": 21}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$raised'}, 'succeeded', 30),
	'raise: a call started after the limit was raised is made');
cmp_ok(sql(qq{SELECT extract(epoch FROM min(at) FILTER (WHERE type = 'LLM_REQUESTED')
		- min(at) FILTER (WHERE type = 'RUN_STARTED')) FROM vectorbea.events WHERE run_id = '$raised'}), '<', 10,
	'raise: it was made within seconds, not after the queue the old limit built');
sql(q{SELECT count(vectorbea.cancel_run(id, 'done')) FROM vectorbea.runs WHERE workflow = 'ask_raise' AND status = 'running'});

is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id)}), '0', 'verify_run is empty for every run');
$node->stop;
done_testing();
