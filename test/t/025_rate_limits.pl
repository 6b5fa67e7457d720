# 025_rate_limits.pl -- rate limits pace llm calls, and a provider's own
# limits slow them down, against the fake provider on loopback, with the
# real scheduler.
#
# A limit of 600 requests a minute (10 a second: the issue's 60 a minute
# over 3 minutes, scaled to 20 s) with 200 calls queued: the provider
# never sees them faster than the limit (no 10 s window holds more than
# 105), the queue drains at the limit's pace (within 1.3 times the 19.9 s
# it allows), each waiting call waits once (one RATE_LIMITED per wait) and
# none fails for it.
#
# A 429 storm: the provider answers 429 with Retry-After: 2 to the first
# 20 calls; every call waits for it and all finish within 1.5 times the
# 2 s the provider asked for.  A response saying no requests remain
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
my $t0 = time;
sql(q{SELECT vectorbea.start_run('ask', jsonb_build_object('n', i)) FROM generate_series(1, 200) i});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded'}, '200', 60),
	'every call is made in the end, none fails for the limit');
my @at = sort { $a <=> $b } map { $_->{received_at} } @{ vb_fake_requests() };
is(scalar @at, 200, 'the provider saw 200 requests');
my $span = $at[-1] - $at[0];
my $max10 = 0;
for my $i (0 .. $#at)
{
	my $n = grep { $_ >= $at[$i] && $_ < $at[$i] + 10 } @at;
	$max10 = $n if $n > $max10;
}
cmp_ok($max10, '<=', 105, "no 10 s window held more than the limit allows (at most $max10 in one)");
cmp_ok($span, '>=', 19.9 * 0.95, sprintf('the queue took %.1f s: not faster than the limit', $span));
cmp_ok($span, '<=', 19.9 * 1.3, sprintf('and drained at its pace (%.1f s for 19.9 s)', $span));
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
$t0 = time;
sql(q{SELECT vectorbea.start_run('ask', jsonb_build_object('n', i)) FROM generate_series(1, 20) i});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded'}, '220', 30),
	'after a 429 storm every call succeeds');
my $took = time - $t0;
cmp_ok($took, '<=', 3.0, sprintf('within 1.5 times the 2 s the provider asked for (%.2f s)', $took));
is(scalar @{ vb_fake_requests() }, 40, 'each call was refused once and made once: no hammering');

# ---------------------------------------------------------------------------
# No requests remaining until a reset.
vb_fake_reset();
vb_fake_script({ text => 'last one', headers => { 'x-ratelimit-remaining-requests' => '0',
	'x-ratelimit-reset-requests' => '2s' } }, { text => 'ok', times => -1 });
my $first = sql(q{SELECT vectorbea.start_run('ask', '{"n": "first"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$first'}, 'succeeded', 10),
	'the call that used the last request succeeds');
$t0 = time;
my $next = sql(q{SELECT vectorbea.start_run('ask', '{"n": "next"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$next'}, 'succeeded', 10),
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

is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id)}), '0', 'verify_run is empty for every run');
$node->stop;
done_testing();
