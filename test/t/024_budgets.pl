# 024_budgets.pl -- budgets stop a runaway agent before it spends, against
# the fake provider on loopback, with the real scheduler.
#
# A run budget with on_budget "pause": a planner llm node spawns 30 llm
# nodes (allow_spawn lists vectorbea:llm); the
# calls whose worst case would cross the budget are not made, the run
# pauses, and its usage stays within the budget; raising the budget
# (set_run_budget) resumes it and every node is called.
#
# A workspace budget shared by two runs of 20 llm nodes each, all calls in
# flight at once (the provider answers after a delay): the worst cases are
# reserved under the budget's lock, so the two runs together never spend
# more than the budget; calls that would cross it fail their runs
# (on_exceed "fail").
#
# A running worker task's estimate holds room in its workspace's budget.
#
# Under a budget in USD, a call to a model without a price is refused, not
# made for free.
#
# A runaway agent that starts itself from a run node stays within its
# root's budget: the budget covers the whole tree of child runs.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my ($node, $base, $port) = vb_llm_server('budgets', qq{
vectorbea.llm_max_in_flight = 100
});
my $json = vb_json();

sub sql { return $node->safe_psql('postgres', $_[0]); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
vb_store_key($node, 'shared', 'openai', 'sk-test-openai-0002', $base);

# gpt-4o-mini: 0.15 USD per million tokens in, 0.60 out.  max_tokens 1000:
# a call's worst case is about 0.0006 USD; each answer costs 0.00006.
my $llm = '{"provider": "openai", "model": "gpt-4o-mini", "prompt": "Look at {{input.n}}", "max_tokens": 1000}';

# ---------------------------------------------------------------------------
# A run budget that pauses: 0.0015 USD, about 25 answers but only
# 2 worst cases.
sql(q{SELECT vectorbea.define_workflow('planner', '{"nodes": [{"id": "plan", "kind": "llm",
  "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Plan the looks", "max_tokens": 1000,
          "allow_spawn": {"activities": ["vectorbea:llm"], "max_nodes": 30}}}]}')});
my $spawn = $json->encode({ spawn => [ map { { id => "look_$_", kind => 'llm', input => { n => $_ },
	llm => $json->decode($llm) } } 1 .. 30 ] });
vb_fake_script({ match => { contains => 'Plan the looks' }, text => $spawn, usage => { input => 100, output => 75 } },
	{ text => 'looked', usage => { input => 100, output => 75 }, times => -1 });
my $run = sql(q{SELECT vectorbea.start_run('planner', '{}', NULL, '{"budget_usd": 0.0015, "on_budget": "pause"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'paused', 30),
	'run budget: the run pauses at its budget');
my ($usage, $calls) = split /\|/, sql(qq{SELECT usage_usd, (SELECT count(*) FROM vectorbea.events
	WHERE run_id = '$run' AND type = 'LLM_CALLED') FROM vectorbea.runs WHERE id = '$run'});
cmp_ok($usage, "<=", 0.0015, "run budget: its usage ($usage USD after $calls calls) stays within the budget");
cmp_ok($calls, '>=', 4, 'run budget: the calls that fitted were made');
cmp_ok($calls, '<', 30, 'run budget: not all of them');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'BUDGET_EXCEEDED'
		   AND (data->>'call_not_made')::boolean}), '1', 'run budget: one BUDGET_EXCEEDED, for a call not made');
is(sql(qq{SELECT paused->>'scope' FROM vectorbea.runs WHERE id = '$run'}), 'budget', 'run budget: paused by its budget');
my $before = scalar @{ vb_fake_requests() };
my $requested = sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_REQUESTED'});
ok(vb_scheduler_pass($node), 'run budget: the scheduler made a pass after the pause');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_REQUESTED'}) . ' '
	  . scalar @{ vb_fake_requests() }, "$requested $before", 'run budget: nothing is called while it is paused');
is(sql(qq{SELECT vectorbea.set_run_budget('$run', 1.0)}), 't', 'run budget: raising the budget resumes the run');
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'succeeded', 60),
	'run budget: every spawned node is called and the run succeeds');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_COMPLETED'
		   AND node LIKE 'look_%'}), '30', 'run budget: all 30 llm nodes completed once');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'run budget: verify_run is empty');

# ---------------------------------------------------------------------------
# A workspace budget shared by two runs with all their calls in flight.
vb_fake_reset();
vb_fake_script({ text => 'ok', delay_ms => 1500, usage => { input => 100, output => 900 }, times => -1 });
sql(q{SELECT vectorbea.set_budget('shared', 0.006, 'total')});
sql(qq{SELECT vectorbea.define_workflow('wide', jsonb_build_object('nodes',
	(SELECT jsonb_agg(jsonb_build_object('id', 'q' || i, 'kind', 'llm', 'input', jsonb_build_object('n', i),
										 'llm', '$llm'::jsonb)) FROM generate_series(1, 20) i)))});
my @runs = split /\n/, sql(q{SELECT vectorbea.start_run('wide', '{}', NULL, '{"workspace": "shared"}')
							   FROM generate_series(1, 2)});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE workspace = 'shared' AND status = 'running'},
		'0', 60), 'workspace budget: both runs end');
my $spent = sql(q{SELECT sum(usage_usd) FROM vectorbea.runs WHERE workspace = 'shared'});
cmp_ok($spent, '<=', 0.006, "workspace budget: together they spent $spent USD, within the budget");
my $made = scalar @{ vb_fake_requests() };
# A worst case is 0.0006075 USD, an answer costs 0.000555: 9 calls fit at
# once, a tenth once they have settled, never an eleventh.
cmp_ok($made, '>=', 9, "workspace budget: the calls that fitted were made ($made)");
cmp_ok($made, '<=', 10, 'workspace budget: and no more than its budget allows');
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workspace = 'shared' AND status = 'failed'
		   AND error->>'reason' = 'budget_exceeded'}), '2', 'workspace budget: both runs failed at the budget');
is(sql(q{SELECT count(*) FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
		  WHERE r.workspace = 'shared' AND e.type = 'BUDGET_EXCEEDED' AND e.data->>'scope' = 'workspace'}), '2',
	'workspace budget: BUDGET_EXCEEDED names the workspace budget');
is(sql(q{SELECT booked_usd || ':' || reserved_usd || ':' || budget_usd FROM vectorbea.spend
		  WHERE scope = 'workspace' AND workspace = 'shared'}), "$spent:0:0.006",
	'workspace budget: the spend view shows booked, reserved and budget');
# ---------------------------------------------------------------------------
# A running task's estimate holds budget room: an llm call of the same
# workspace that would not fit beside it waits until the task ends.
vb_fake_reset();
vb_fake_script({ text => 'fits now', times => -1 });
vb_store_key($node, 'est', 'openai', 'sk-test-openai-0003', $base);
sql(q{SELECT vectorbea.set_budget('est', 0.001, 'total')});
sql(q{SELECT vectorbea.define_workflow('costly', '{"nodes": [{"id": "t", "activity": "costly", "estimate": {"usd": 0.0008}}]}')});
sql(q{SELECT vectorbea.start_run('costly', '{}', NULL, '{"workspace": "est"}')});
my ($etid, $elease) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['costly'])});
$run = sql(qq{SELECT vectorbea.start_run('wide', '{}', NULL, '{"workspace": "est"}')});
ok(defined vb_wait_for($node, qq{SELECT count(*) > 0 FROM vectorbea.events WHERE run_id = '$run'
		AND type = 'STEP_FAILED' AND data->>'class' = 'aborted'}, 't', 60),
	'estimate: the calls wait (aborted, uncounted)');
# The pass that held them back has ended, and one more after it.
ok(vb_scheduler_pass($node), 'estimate: the scheduler made another pass');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_REQUESTED'}) . ' '
	  . scalar @{ vb_fake_requests() }, '0 0', 'estimate: no call fits beside the running task\'s estimate');
sql(qq{SELECT vectorbea.complete_task($etid, '$elease', '{}', usage => '{"usd": 0}')});
ok(defined vb_wait_for($node, q{SELECT count(*) > 0 FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
		WHERE r.workspace = 'est' AND e.type = 'LLM_CALLED'}, 't', 20),
	'estimate: once the task has ended, calls are made');
sql(qq{SELECT vectorbea.cancel_run('$run')});

# ---------------------------------------------------------------------------
# Under a budget in USD, a model without a price is never a free call.
vb_fake_reset();
vb_fake_script({ text => 'free?', times => -1 });
sql(q{SELECT vectorbea.define_workflow('unpriced', '{"nodes": [
  {"id": "q", "kind": "llm", "llm": {"provider": "openai", "model": "no-such-price", "prompt": "hi"}}]}')});
$run = sql(q{SELECT vectorbea.start_run('unpriced', '{}', NULL, '{"budget_usd": 1}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'failed', 30),
	'unpriced model under a budget: the run fails');
like(sql(qq{SELECT error->>'message' FROM vectorbea.nodes WHERE run_id = '$run'}), qr/has no price/,
	'unpriced model under a budget: the node says the model has no price');
is(scalar @{ vb_fake_requests() }, 0, 'unpriced model under a budget: no call was made');
$run = sql(q{SELECT vectorbea.start_run('unpriced', '{}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'succeeded', 30),
	'unpriced model without a budget: the call is made (priced false in LLM_CALLED)');

# ---------------------------------------------------------------------------
# A compensation is not stopped by the budget (failures.md, "While a run
# compensates"): an llm compensation of a run over its budget is called,
# the run is not paused, and it ends with its compensation completed.
vb_fake_reset();
vb_fake_script({ text => 'undone', usage => { input => 100, output => 75 }, times => -1 });
sql(q{SELECT vectorbea.define_workflow('undo_llm', '{"nodes": [
  {"id": "book", "activity": "b_book",
   "compensate": {"kind": "llm", "llm": {"provider": "openai", "model": "gpt-4o-mini",
                  "prompt": "Cancel booking {{input.original.output.ref}}", "max_tokens": 1000}}},
  {"id": "pay", "activity": "b_pay", "depends_on": ["book"], "retry": {"max_attempts": 1}}]}')});
for my $policy ('pause', 'fail')
{
	my $r = sql(qq{SELECT vectorbea.start_run('undo_llm', '{}', NULL, '{"budget_usd": 0.0001, "on_budget": "$policy"}')});
	# book reports more than the whole budget: under "fail" the run fails
	# (and compensates) at once; under "pause" the work stands, the run is
	# paused, and a cancel with compensation undoes it.
	sql(q{SELECT vectorbea.complete_task(task_id, lease, '{"ref": "B-7"}', NULL, '{"usd": 0.001}')
	  FROM vectorbea.claim_tasks('w', ARRAY['b_book'])});
	if ($policy eq 'pause')
	{
		is(sql(qq{SELECT status || ' ' || (paused->>'scope') FROM vectorbea.runs WHERE id = '$r'}), 'paused budget',
			'compensation over the budget (pause): the overrun paused the run');
		sql(qq{SELECT vectorbea.cancel_run('$r', 'over budget', compensate => true)});
	}
	my $end = $policy eq 'pause' ? 'cancelled completed' : 'failed completed';
	ok(defined vb_wait_for($node, qq{SELECT status || ' ' || (error->>'compensation')
		FROM vectorbea.runs WHERE id = '$r'}, $end, 30),
		"compensation over the budget ($policy): the run ends with its compensation completed")
	  or diag(sql(qq{SELECT string_agg(seq || ' ' || type || ' ' || coalesce(node, ''), E'\n' ORDER BY seq)
		FROM vectorbea.events WHERE run_id = '$r'}));
	is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$r' AND type = 'LLM_CALLED'
		AND node = 'book:compensate'}), '1', "compensation over the budget ($policy): its call was made");
	is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$r' AND type = 'RUN_PAUSED'
		AND seq > (SELECT seq FROM vectorbea.events WHERE run_id = '$r' AND type = 'COMPENSATION_STARTED')}), '0',
		"compensation over the budget ($policy): the compensating run was never paused");
	cmp_ok(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$r' AND type = 'BUDGET_EXCEEDED'}), '>=', 1,
		"compensation over the budget ($policy): the overrun is on record");
}

# A running run whose llm answer crosses its budget fails and begins to
# compensate: the answer is void (its lease revoked), not completed, and
# nothing is recorded as the scheduler's error.
vb_fake_reset();
vb_fake_script({ text => 'costly', usage => { input => 1000000, output => 10 }, times => -1 });
sql(q{SELECT vectorbea.define_workflow('over_then_undo', '{"nodes": [
  {"id": "book", "activity": "ou_book", "compensate": {"activity": "ou_undo"}},
  {"id": "ask", "kind": "llm", "depends_on": ["book"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "hi", "max_tokens": 10}}]}')});
my $ou = sql(q{SELECT vectorbea.start_run('over_then_undo', '{}', NULL, '{"budget_usd": 0.001}')});
sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['ou_book'])});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$ou'}, 'compensating', 30),
	'answer over the budget: the running run begins to compensate');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$ou' AND type = 'SCHEDULER_ERROR'}), '0',
	'answer over the budget: no scheduler error');
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$ou' AND node = 'ask'}), 'cancelled',
	'answer over the budget: the llm node is not completed');
sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['ou_undo'])});
is(sql(qq{SELECT status || ' ' || (error->>'compensation') FROM vectorbea.runs WHERE id = '$ou'}),
	'failed completed', 'answer over the budget: the run ends failed, compensated');

# ---------------------------------------------------------------------------
# A runaway agent that starts itself: an llm node, then a run node of the
# same workflow.  The root's budget covers its whole tree: each child gets
# what its parent has left, so the calls stop where the root's budget
# would be crossed.  Without that, each child had no budget, and the
# chain made a call at every one of its 17 levels: 0.00102 USD, over the
# root's 0.0009.
vb_fake_reset();
vb_fake_script({ text => 'thought', usage => { input => 100, output => 75 }, times => -1 });
sql(q{SELECT vectorbea.define_workflow('deeper', '{"nodes": [
  {"id": "think", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Think again", "max_tokens": 1000}},
  {"id": "again", "kind": "run", "run": {"workflow": "deeper"}, "depends_on": ["think"],
   "retry": {"max_attempts": 1}}]}')});
my $root = sql(q{SELECT vectorbea.start_run('deeper', '{}', NULL, '{"budget_usd": 0.0009}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$root'}, 'failed', 60),
	'runaway tree: the root fails');
my $tree = qq{WITH RECURSIVE t AS (SELECT id FROM vectorbea.runs WHERE id = '$root'
	UNION ALL SELECT r.id FROM vectorbea.runs r JOIN t ON r.parent_run = t.id) SELECT r.* FROM vectorbea.runs r JOIN t USING (id)};
my ($spent, $runs, $open) = split /\|/, sql(qq{SELECT sum(usage_usd), count(*), count(*) FILTER (WHERE status <> 'failed') FROM ($tree) x});
cmp_ok($spent, '<=', 0.0009, "runaway tree: its $runs runs spent $spent USD, within the root's budget");
cmp_ok($runs, '<', 17, 'runaway tree: it stopped before the nesting limit');
is($open, '0', 'runaway tree: every run of it failed');
is(sql(qq{SELECT count(*) FROM vectorbea.events e JOIN ($tree) x ON x.id = e.run_id
		   WHERE e.type = 'BUDGET_EXCEEDED' AND (e.data->>'call_not_made')::boolean}), '1',
	'runaway tree: the deepest call that would cross the budget was not made');
is(sql(qq{SELECT (usage_usd + child_usage_usd = $spent) FROM vectorbea.runs WHERE id = '$root'}), 't',
	'runaway tree: the root booked what every run below it spent');
is(sql(qq{SELECT count(*) FROM ($tree) x WHERE x.parent_run IS NOT NULL
		   AND x.budget_usd IS DISTINCT FROM (SELECT p.budget_usd - p.usage_usd FROM vectorbea.runs p WHERE p.id = x.parent_run)}),
	'0', "runaway tree: each child's budget is what its parent had left");

# A parent's own call that does not fit beside what its child was given
# meets the policy at once: it does not wait for the child, which may run
# for hours (each wait would be an aborted attempt on record, every
# second).
sql(q{SELECT vectorbea.define_workflow('slow_kid', '{"nodes": [{"id": "work", "activity": "slow_kid_work"}]}')});
sql(q{SELECT vectorbea.define_workflow('hold_then_ask', '{"nodes": [
  {"id": "kid", "kind": "run", "run": {"workflow": "slow_kid"}},
  {"id": "go", "activity": "hold_go"},
  {"id": "ask", "kind": "llm", "depends_on": ["go"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Ask now", "max_tokens": 1000}}]}')});
my $holder = sql(q{SELECT vectorbea.start_run('hold_then_ask', '{}', NULL, '{"budget_usd": 0.001}')});
ok(defined vb_wait_for($node, qq{SELECT count(*) FROM vectorbea.runs WHERE parent_run = '$holder'}, '1', 30),
	'held budget: the child starts with the whole budget');
sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['hold_go'])});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$holder'}, 'failed', 30),
	'held budget: the call that does not fit fails the run');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$holder' AND node = 'ask'
		   AND type = 'STEP_FAILED' AND data->>'class' = 'aborted'}), '0',
	'held budget: the call did not wait for the child');
is(sql(qq{SELECT data->>'reserved_usd' || ' ' || (data->>'call_not_made') FROM vectorbea.events
		   WHERE run_id = '$holder' AND type = 'BUDGET_EXCEEDED'}), '0.001 true',
	"held budget: BUDGET_EXCEEDED counts the child's budget as reserved");

is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id)}), '0',
	'verify_run is empty for every run');

$node->stop;
done_testing();
