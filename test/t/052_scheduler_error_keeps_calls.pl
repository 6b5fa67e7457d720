# 052_scheduler_error_keeps_calls.pl -- an error that escapes the
# scheduler while it waits for llm answers (a cancel, here) leaves the
# calls in flight alone.
#
# The scheduler recovers from such an error in place (051).  It drops the
# calls in flight only when the error was in a step that records them (an
# llm step, or a send), where the rollback may have left a call's memory
# and its history apart.  While it waits for answers it records nothing;
# it used to count that wait as such a place, so a pg_cancel_backend
# there ended every call in flight in doubt, and each was made again (a
# provider may bill both).  Here one call is in flight for three seconds
# when the scheduler is cancelled: the answer is taken, the call was made
# once, and no attempt failed.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my ($node, $base, $port) = vb_llm_server('error_keeps_calls', qq{
vectorbea.llm_request_timeout = '1h'
});
sub sql { return $node->safe_psql('postgres', $_[0]); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
sql(q{SELECT vectorbea.define_workflow('ask', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "hello"}}]}')});
vb_fake_script({ text => 'ok', delay_ms => 3000, times => -1 });

my $run = sql(q{SELECT vectorbea.start_run('ask', '{}')});
my $t0 = time;
my $in_flight = 0;
while (time - $t0 < 30 && !$in_flight)
{
	$in_flight = vb_fake_stats()->{in_flight} == 1;
	usleep(20_000) unless $in_flight;
}
ok($in_flight, 'the call is in flight');

my $pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
my $errors = sql(q{SELECT errors FROM vectorbea.scheduler_status()});
sql(qq{SELECT pg_cancel_backend($pid)});
ok(defined vb_wait_for($node, q{SELECT errors FROM vectorbea.scheduler_status()}, $errors + 1),
	'the cancel is counted as an error');
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'succeeded', 60),
	'the run succeeds');
is(scalar @{ vb_fake_requests() }, 1, 'with the one call: it was not made again');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'}), '0',
	'no attempt ended in doubt');
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}), $pid,
	'in the same scheduler process');

done_testing();
