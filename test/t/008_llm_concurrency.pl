# llm calls really run concurrently, and never more of them than
# vectorbea.llm_max_in_flight allows.
#
# The scheduler sends llm calls through libcurl's multi interface, so one
# process keeps many calls in flight at once; the setting bounds them, and
# the connections too (cached ones included), so a burst of runs cannot open
# more sockets to a provider than the operator allowed.  Here 200 runs, each
# one llm call that the fake provider answers after 1 s, are started in one
# statement with a bound of 100: done one at a time they would take 200 s,
# with the bound about 2 s.  The fake counts the requests and connections it
# has open at once, so the test sees both that the bound was used (at least
# half of it at once) and that it was never exceeded.  Timings are not
# checked (the machine is shared): that all 200 finish within the burst's
# wait (120 s, less than the 200 s one at a time would take) and that at
# least half the bound was in flight at once show the concurrency; the real
# numbers go to the log.
# A second phase lowers the bound to 10 with a reload and shows the next
# burst follows the new value.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my ($node, $base) = vb_llm_server('concurrency', "vectorbea.llm_max_in_flight = 100\n");
my $json = vb_json();

sub sql { return $node->safe_psql('postgres', shift); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);

sql(q{SELECT vectorbea.define_workflow('fan', '{"nodes": [
  {"id": "ask", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Question number {{run.input.n}}"}}]}')});
sql(q{SELECT vectorbea.define_workflow('fan_small', '{"nodes": [
  {"id": "ask", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Small question {{run.input.n}}"}}]}')});
vb_fake_script({ delay_ms => 1000, times => -1, text => 'ok' });

# Starts $n runs of $workflow in one statement, waits until none is running
# and returns the seconds from just before the statement to then.
sub burst
{
	my ($workflow, $n) = @_;
	my $t0 = time;
	sql(qq{SELECT count(vectorbea.start_run('$workflow', jsonb_build_object('n', g)))
	         FROM generate_series(1, $n) g});
	my $started = time - $t0;
	my $waited = vb_wait_for($node,
		qq{SELECT count(*) FROM vectorbea.runs WHERE workflow = '$workflow' AND status <> 'running'},
		$n, 120);
	my $elapsed = time - $t0;
	note(sprintf('%s: %d runs started in %.2f s', $workflow, $n, $started));
	ok(defined $waited, "$workflow: all $n runs finished")
	  or diag(sql(qq{SELECT status, count(*) FROM vectorbea.runs WHERE workflow = '$workflow' GROUP BY 1}));
	return $elapsed;
}

sub show_stats
{
	my ($what, $stats, $elapsed) = @_;
	diag(sprintf('%s: elapsed %.2f s; fake provider: requests %d, max_in_flight %d, max_connections %d, '
		  . 'in_flight %d, connections %d',
		$what, $elapsed, @$stats{qw(requests max_in_flight max_connections in_flight connections)}));
	return;
}

# ---------------------------------------------------------------------------
# 200 calls of 1 s, at most 100 at once: about 2 s.
my $elapsed = burst('fan', 200);
my $stats = vb_fake_stats();
show_stats('200 calls, bound 100', $stats, $elapsed);

is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'fan' AND status = 'succeeded'}), '200',
	'all 200 runs succeeded');
is($stats->{requests}, 200, 'the provider saw exactly 200 requests');
cmp_ok($stats->{max_in_flight}, '<=', 100, 'never more than 100 requests in flight at the provider');
cmp_ok($stats->{max_connections}, '<=', 100, 'never more than 100 connections open to the provider');
cmp_ok($stats->{max_in_flight}, '>=', 50, 'at least 50 requests were in flight at once');
is(sql(q{SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
          WHERE r.workflow = 'fan' AND e.type = 'LLM_CALLED'}), '200', 'one LLM_CALLED event per run');
is(sql(q{SELECT count(DISTINCT e.run_id) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
          WHERE r.workflow = 'fan' AND e.type = 'LLM_CALLED'}), '200', 'and every run has one');
is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id) WHERE r.workflow = 'fan'}), '0',
	'verify_run is empty for all 200 runs');
my $prompts = { map { $_->{body}{messages}[-1]{content} => 1 } @{ vb_fake_requests() } };
is(scalar keys %$prompts, 200, 'each request carried its own run\'s prompt');

# ---------------------------------------------------------------------------
# The bound follows the setting: lowered to 10 by a reload.
sql(q{ALTER SYSTEM SET vectorbea.llm_max_in_flight = 10});
# The reload's SIGHUP wakes the scheduler, which reads the file then and,
# with no call in flight, closes the connections cached under the old
# bound; the provider sees them closed a moment later.
ok(vb_reload($node, { 'vectorbea.llm_max_in_flight' => '10' }),
	'the scheduler runs with the new bound');
my $closing = time;
usleep(20_000) while vb_fake_stats()->{connections} > 10 && time - $closing < 30;
my $before = vb_fake_stats();
cmp_ok($before->{connections}, '<=', 10, 'the connections beyond the new bound are closed');
diag(sprintf('before the burst under bound 10: %d connections still open at the provider', $before->{connections}));
vb_fake_reset();
vb_fake_script({ delay_ms => 1000, times => -1, text => 'ok' });

$elapsed = burst('fan_small', 40);
$stats = vb_fake_stats();
show_stats('40 calls, bound 10', $stats, $elapsed);

is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'fan_small' AND status = 'succeeded'}), '40',
	'all 40 runs succeeded');
is($stats->{requests}, 40, 'the provider saw exactly 40 requests');
cmp_ok($stats->{max_in_flight}, '<=', 10, 'never more than 10 requests in flight at the provider');
# Connections cached under the old bound count too: the bound is on what the
# scheduler holds open, not only on what it opens anew.
cmp_ok($stats->{max_connections}, '<=', 10, 'never more than 10 connections open to the provider');
cmp_ok($stats->{max_in_flight}, '>=', 5, 'and still several at once');
is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id) WHERE r.workflow = 'fan_small'}), '0',
	'verify_run is empty for the 40 runs');

my $status = sql(q{SELECT errors || ' ' || coalesce(last_error, '-') FROM vectorbea.scheduler_status()});
note("scheduler errors / last error: $status");

done_testing();
