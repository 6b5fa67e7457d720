# A ready llm node whose run another transaction holds when the scheduler
# claims is not left waiting for an unrelated wake; nor is one that waited
# for a concurrency limit that is then raised; nor, under a limit with
# room, one whose own row is held.
#
# The scheduler claims llm nodes with SKIP LOCKED, like any worker: a run
# held at that moment (a worker's heartbeat or completion of another node, an
# operator's lock) is passed over.  Its holder's commit may not wake the
# scheduler at all, and the servers here sleep up to an hour when idle, so
# the scheduler must look again shortly by itself (src/llm.c,
# probe_busy_llm_runs).  It must not do so for llm nodes held back by a
# concurrency limit: those wait for a call's end, which wakes it anyway, and
# looking again every 100 ms would only burn passes.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my ($node, $base) = vb_llm_server('llm_busy_run');
sub sql { return $node->safe_psql('postgres', shift); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
sql(q{SELECT vectorbea.define_workflow('brief', '{"nodes": [
  {"id": "collect", "activity": "collect"},
  {"id": "write", "kind": "llm", "depends_on": ["collect"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Brief on {{run.input.topic}}"}}]}')});
vb_fake_script({ times => -1, text => 'a brief' });

# What a failure here needs to be understood: the scheduler's state, the
# run's nodes and history, and who holds what.
sub diag_state
{
	my ($r) = @_;
	diag(sql(q{SELECT s::text FROM vectorbea.scheduler_status() s}));
	diag(sql(qq{SELECT string_agg(node || ' ' || status || ' ' || available_at, E'\n')
		FROM vectorbea.nodes WHERE run_id = '$r'}));
	diag(sql(qq{SELECT string_agg(seq || ' ' || type || ' ' || coalesce(node, '') || ' ' || data::text,
		E'\n' ORDER BY seq) FROM vectorbea.events WHERE run_id = '$r'}));
	diag(sql(q{SELECT string_agg(pid || ' ' || coalesce(backend_type, '') || ' ' || state || ' '
		|| coalesce(wait_event_type, '') || ':' || coalesce(wait_event, '') || ' ' || left(query, 80), E'\n')
		FROM pg_stat_activity WHERE datname = 'postgres' OR backend_type LIKE 'vectorbea%'}));
	diag(sql(q{SELECT string_agg(activity || '=' || max_running, ', ') FROM vectorbea.concurrency_limits}));
}

# Locks a row with $lock in a session of its own, then $wake makes the
# scheduler pass: that pass must leave run $r's write ready.  The holder
# then commits, which wakes nobody, and the scheduler must call for write
# by itself.  Returns how long the call took to follow the commit (undef:
# not within 60 s).
sub hold_across_a_pass
{
	my ($r, $lock, $wake, $what) = @_;
	my $holder = $node->background_psql('postgres');
	$holder->query_safe(q{BEGIN});
	$holder->query_safe($lock);
	# A pass that starts from here on starts with the row held.
	my $held_since = sql(q{SELECT vectorbea.clock()});
	$wake->();
	ok(defined vb_wait_for($node, qq{SELECT last_wake >= '$held_since' FROM vectorbea.scheduler_status()}, 't'),
		"$what: the scheduler made a pass while the row was held");
	is(sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$r' AND node = 'write'}), 'ready',
		"$what: that pass left write ready");
	$holder->query_safe(q{COMMIT});
	$holder->quit;
	my $waited = vb_wait_for($node,
		qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$r' AND type = 'LLM_REQUESTED'}, '1', 60);
	ok(defined $waited, "$what: once the holder committed, the scheduler called for write by itself")
	  or diag_state($r);
	return $waited;
}

my $scheduler = sql(q{SELECT pid FROM vectorbea.scheduler_status()});
like($scheduler, qr/^\d+$/, 'the scheduler is running');

# ---------------------------------------------------------------------------
# The run is held when the scheduler's pass claims.  The scheduler is stopped
# while "write" becomes ready and the holder locks the run, so its next pass
# runs with the run held whatever the timing.
my $run = sql(q{SELECT vectorbea.start_run('brief', '{"topic": "disk"}')});
my ($tid, $lease) = split /\|/,
  sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', ARRAY['collect'])});
ok($tid, 'a worker leased collect');

kill 'STOP', $scheduler;
sql(qq{SELECT vectorbea.complete_task($tid, '$lease', '{}')});
my $waited = hold_across_a_pass($run, qq{SELECT FROM vectorbea.runs WHERE id = '$run' FOR NO KEY UPDATE},
	sub { kill 'CONT', $scheduler }, 'the run held');
note(sprintf('the call followed the commit after %.2f s', $waited // -1));
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'succeeded'),
	'and the run succeeded');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'verify_run is empty');

# ---------------------------------------------------------------------------
# Held back by a concurrency limit, not by a busy run: one call in flight (the
# fake never answers it) fills a limit of one, and the second run's ready
# "write" waits for it without the scheduler looking again every 100 ms.
sql(q{SELECT vectorbea.set_concurrency_limit('vectorbea:llm', 1)});
vb_fake_reset();
vb_fake_script({ mode => 'hang', times => -1 });
my @runs;
for my $topic ('cpu', 'memory')
{
	my $r = sql(qq{SELECT vectorbea.start_run('brief', '{"topic": "$topic"}')});
	my ($t, $l) = split /\|/,
	  sql(qq{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', ARRAY['collect'])});
	sql(qq{SELECT vectorbea.complete_task($t, '$l', '{}')});
	push @runs, $r;
}
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.nodes
	WHERE activity = 'vectorbea:llm' AND status = 'running'}, '1'), 'one call is in flight');
ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'the scheduler is idle between passes');
# A pass that begins now sees the other write ready behind the limit.  A
# scheduler that meant to look again for it shortly would end that pass
# with its next due time at once (src/scheduler.c: the pass's own time);
# this one plans nothing sooner than the call's request timeout.
ok(vb_scheduler_pass($node), 'the scheduler made a pass with the other write waiting');
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE activity = 'vectorbea:llm' AND status = 'ready'}),
	'1', 'the other write waits, ready, behind the limit');
is(sql(q{SELECT next_due IS NULL OR next_due > last_wake + interval '1 minute' FROM vectorbea.scheduler_status()}),
	't', 'and the scheduler does not plan to look for it again')
  or diag(sql(q{SELECT s::text FROM vectorbea.scheduler_status() s}));
note('the next pass is planned ' . sql(q{SELECT coalesce((next_due - last_wake)::text, 'never')
	FROM vectorbea.scheduler_status()}) . ' after the last one');

# ---------------------------------------------------------------------------
# Both at once: the limit is raised while the waiting node's run is held.
# The raise wakes the scheduler (nothing else would: the call in flight
# never ends); its pass finds the run busy, which with a limit in place it
# learns by trying to lock the run, and it looks again until the holder
# commits.
my ($waiting_run) = grep {
	sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$_' AND node = 'write'}) eq 'ready' } @runs;
ok($waiting_run, 'the run whose write waits for the limit');
hold_across_a_pass($waiting_run, qq{SELECT FROM vectorbea.runs WHERE id = '$waiting_run' FOR NO KEY UPDATE},
	sub { sql(q{SELECT vectorbea.set_concurrency_limit('vectorbea:llm', 5)}) }, 'the limit raised');

# ---------------------------------------------------------------------------
# Under a limit with room, the node's own row held, not its run: the claim
# passes the node over while the probe, which locks runs, finds its run
# free.  Such a run counts as busy all the same (a run released between
# the claim and the probe looks the same): before, only a run the probe
# could not lock counted, and the node waited for the next unrelated wake.
my $row_run = sql(q{SELECT vectorbea.start_run('brief', '{"topic": "rows"}')});
($tid, $lease) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', ARRAY['collect'])});
kill 'STOP', $scheduler;
sql(qq{SELECT vectorbea.complete_task($tid, '$lease', '{}')});
hold_across_a_pass($row_run,
	qq{SELECT FROM vectorbea.nodes WHERE run_id = '$row_run' AND node = 'write' FOR UPDATE},
	sub { kill 'CONT', $scheduler }, 'the node row held');

is(sql(q{SELECT string_agg(r.id || ': ' || v::text, E'\n') FROM vectorbea.runs r, vectorbea.verify_run(r.id) v}),
	'', 'verify_run finds no difference for any run');

done_testing();
