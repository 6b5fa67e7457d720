# 053_scheduler_behind.pl -- a scheduler that is stuck counts as behind,
# and claims then end expired leases themselves.
#
# Claims skip the expired-lease scan while the database's scheduler keeps
# to its plan, at most two seconds behind its next due time (decisions.md,
# "Claims leave the expired-lease scan to a scheduler that keeps up").  A
# pass woken ahead of that plan (a reload, a commit of earlier work) kept
# the later plan it had published: while the pass waited on another
# transaction's lock, claims trusted it and a dead worker's task stayed
# leased to nobody until the lock went.  Likewise a commit that asked the
# scheduler for work sooner, while it was blocked finishing llm calls
# between passes.  Now a pass lowers the plan to its own start, and such a
# commit lowers it to that work's time: two seconds later the claims scan.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my ($node, $base) = vb_llm_server('scheduler_behind');
sub sql { return $node->safe_psql('postgres', shift); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
sql(q{SELECT vectorbea.define_workflow('chore', '{"nodes": [
	{"id": "chore", "activity": "chore", "retry": {"max_attempts": 5, "initial": "0s", "max": "0s"}}]}')});
sql(q{SELECT vectorbea.define_workflow('brief', '{"nodes": [
	{"id": "write", "kind": "llm",
	 "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Brief on {{run.input.topic}}"}}]}')});

my $scheduler_waits = q{SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'vectorbea scheduler' AND wait_event_type = 'Lock'};

sub diag_state
{
	diag(sql(q{SELECT s::text FROM vectorbea.scheduler_status() s}));
	diag(sql(q{SELECT string_agg(r.workflow || ' ' || n.node || ' ' || n.status || ' ' || n.attempt, E'\n')
		FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id}));
	diag(sql(q{SELECT string_agg(pid || ' ' || coalesce(backend_type, '') || ' ' || state || ' '
		|| coalesce(wait_event_type, '') || ':' || coalesce(wait_event, '') || ' ' || left(query, 80), E'\n')
		FROM pg_stat_activity WHERE datname = 'postgres' OR backend_type LIKE 'vectorbea%'}));
}

# A worker takes run $r's chore with a lease of one second and dies; two
# seconds after the lease's end, with the scheduler still stuck, another
# worker's claim must end the attempt and take the chore's second attempt.
sub retaken_while_stuck
{
	my ($r, $what) = @_;
	my $first = sql(q{SELECT task_id FROM vectorbea.claim_tasks('w1', ARRAY['chore'], 1, '1 second')});
	ok($first, "$what: a worker leased the chore for a second");
	my $retaken = vb_wait_for($node,
		q{SELECT count(*) FROM vectorbea.claim_tasks('w2', ARRAY['chore'], 1, '1 hour') WHERE attempt = 2},
		'1', 20);
	ok(defined $retaken, "$what: another worker's claim ended the expired lease and took the chore again")
	  or diag_state();
	is(sql($scheduler_waits), '1', "$what: while the scheduler was still waiting");
}

ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'the scheduler has made its first pass');

# ---------------------------------------------------------------------------
# A pass woken by a reload, its plan an hour away (the servers here sleep up
# to an hour), waits on a lock another session holds on the approval gates.
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN});
$holder->query_safe(q{LOCK TABLE vectorbea.approvals IN ACCESS EXCLUSIVE MODE});
my $chore = sql(q{SELECT vectorbea.start_run('chore', '{}')});
is(sql(q{SELECT next_due IS NULL OR next_due > vectorbea.clock() + interval '1 minute'
	FROM vectorbea.scheduler_status()}), 't', 'before the pass the scheduler plans nothing soon');
sql(q{SELECT pg_reload_conf()});
ok(defined vb_wait_for($node, $scheduler_waits, '1'), 'the pass the reload woke waits on the lock');
retaken_while_stuck($chore, 'a blocked pass');
$holder->query_safe(q{ROLLBACK});
ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'once the lock has gone the pass ends');

# ---------------------------------------------------------------------------
# Between passes: an llm call is in flight when another session locks its
# run, so the step that records the answer waits.  A claim's commit then
# asks for a pass at its lease's end, which the scheduler cannot make yet.
vb_fake_script({ times => -1, text => 'a brief', delay_ms => 3000 });
my $brief = sql(q{SELECT vectorbea.start_run('brief', '{"topic": "disks"}')});
ok(defined vb_wait_for($node,
		qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$brief' AND type = 'LLM_REQUESTED'}, '1'),
	'the llm call is in flight');
$holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN});
$holder->query_safe(qq{SELECT FROM vectorbea.runs WHERE id = '$brief' FOR UPDATE});
ok(defined vb_wait_for($node, $scheduler_waits, '1'), 'recording its answer waits on the run');
is(sql(q{SELECT state <> 'working' AND (next_due IS NULL OR next_due > vectorbea.clock() + interval '1 minute')
	FROM vectorbea.scheduler_status()}), 't', 'outside a pass, with nothing planned soon')
  or diag_state();
$chore = sql(q{SELECT vectorbea.start_run('chore', '{}')});
retaken_while_stuck($chore, 'a blocked answer');
$holder->query_safe(q{COMMIT});
$holder->quit;
ok(defined vb_wait_for($node,
		qq{SELECT status FROM vectorbea.runs WHERE id = '$brief'}, 'succeeded'),
	'once the run is free the answer is recorded');
is(sql(q{SELECT errors FROM vectorbea.scheduler_status()}), '0', 'the scheduler had no error');

done_testing();
