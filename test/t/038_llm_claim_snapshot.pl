# An llm node that becomes ready while the scheduler's claim is under way is
# called, not lost.
#
# The scheduler's step pushes one snapshot at its start, and its claim runs
# with fresh ones (it may wait for a lock, here a concurrency limit's table
# held by a session that then starts a run).  The claim took the new run's
# node; the read of the call's prompt and key then used the step's older
# snapshot, which did not see the node: "llm node N vanished", no call, the
# attempt lost until its lease ran out (and with max_attempts 1, the run
# failed).  The reads of a claimed call (its node and key, its price, the
# rate limits) now see what the claim saw.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my ($node, $base) = vb_llm_server('llm_claim_snapshot');
sub sql { return $node->safe_psql('postgres', shift); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
vb_fake_script({ times => -1, text => 'an answer' });
sql(q{SELECT vectorbea.define_workflow('one_call', '{"nodes": [{"id": "m", "kind": "llm",
  "retry": {"max_attempts": 1},
  "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Say {{run.input.word}}"}}]}')});
# Any concurrency limit makes the llm claim read concurrency_limits.
sql(q{SELECT vectorbea.set_concurrency_limit('other_work', 5)});
# A ready llm node in a paused run: every pass of the scheduler goes into
# its llm claim, and claims nothing there.
my $paused = sql(q{BEGIN;
	SELECT vectorbea.start_run('one_call', '{"word": "held"}') AS r \gset
	SELECT vectorbea.pause_run(:'r', 'kept ready') ;
	COMMIT;
	SELECT id FROM vectorbea.runs WHERE input->>'word' = 'held'});
$paused = (split /\n/, $paused)[-1];
like($paused, qr/^[0-9a-f-]{36}$/, 'a paused run keeps an llm node ready');

my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN});
$holder->query_safe(q{LOCK TABLE vectorbea.concurrency_limits IN ACCESS EXCLUSIVE MODE});
my $run = $holder->query_safe(q{SELECT vectorbea.start_run('one_call', '{"word": "now"}')});
$run =~ s/\s+//g;
sql(q{SELECT pg_reload_conf()});    # wakes the scheduler
ok(defined vb_wait_for($node, q{SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'vectorbea scheduler' AND wait_event_type = 'Lock'}, '1', 20),
	'the scheduler\'s claim waits for the held table');
$holder->query_safe(q{COMMIT});
$holder->quit;

ok(defined vb_wait_for($node,
	qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_CALLED'}, '1', 20),
	'the node ready while the claim waited was called');
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}), 'succeeded', 'its run succeeded');
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'SCHEDULER_ERROR'}), '0',
	'the scheduler met no error');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'the run agrees with its history');

sql(qq{SELECT vectorbea.cancel_run('$paused', 'done')});
done_testing();
