# 021_llm_escalation.pl -- an llm node calls a person when it cannot go on,
# against the fake provider on loopback, with the real scheduler.
#
# Escalation: an llm node whose answers keep failing its output schema
# exhausts its self-corrections; with on_exhausted "escalate" it opens an
# escalation gate that shows the last error and the last answer; a person
# supplies a corrected output, which the node downstream receives.
#
# In doubt, "ask": the scheduler is killed (SIGKILL) while a call is in
# flight; after the restart the node does not call again but waits at an
# in_doubt gate; a person says it was done, with the output, and the run
# goes on.  The fake provider saw exactly one request.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my ($node, $base, $port) = vb_llm_server('llm_escalation', qq{
restart_after_crash = on
});
my $json = vb_json();

sub sql { return $node->safe_psql('postgres', shift); }

vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);

sub events
{
	my ($run, $type) = @_;
	return [ map { $json->decode($_) } split /\n/,
		sql(qq{SELECT data FROM vectorbea.events WHERE run_id = '$run' AND type = '$type' ORDER BY seq}) ];
}

# ---------------------------------------------------------------------------
# Escalation after the self-corrections run out.
sql(q{SELECT vectorbea.define_workflow('headline', '{"nodes": [
  {"id": "title", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini",
           "prompt": "A title for: {{run.input.topic}}",
           "output_schema": {"type": "object", "required": ["title"],
                             "properties": {"title": {"type": "string"}}},
           "max_corrections": 1, "on_exhausted": "escalate"},
   "escalation": {"gate": "fix_title"}},
  {"id": "publish", "activity": "publish", "depends_on": ["title"]}]}')});
vb_fake_script({ text => '{"headline": "Disk full"}' }, { text => '{"name": "Disk full"}' });
my $run = sql(q{SELECT vectorbea.start_run('headline', '{"topic": "disk full"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'title'},
		'waiting'), 'escalation: out of corrections, the llm node waits for a person');
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}), 'running', 'escalation: the run is still running');
my $gate = $json->decode(sql(qq{SELECT row_to_json(a) FROM vectorbea.approvals a WHERE run_id = '$run'}));
is($gate->{kind}, 'escalation', 'escalation: a gate of kind escalation');
is($gate->{gate}, 'fix_title', 'escalation: named as the node says');
is($gate->{context}{error}{class}, 'invalid_output', 'escalation: the gate shows the last error');
is($gate->{context}{error}{answer}, '{"name": "Disk full"}', 'escalation: and the last answer');
is(scalar @{ vb_fake_requests() }, 2, 'escalation: two calls (the answer and one correction)');
is(scalar @{ events($run, 'SELF_CORRECTION') }, 1, 'escalation: one self-correction before it');

sql(qq{UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept',
		output = '{"title": "Disk full on db-1"}', decided_by = 'editor'
	   WHERE id = $gate->{id}});
my ($tid, $lease, $upstream) = split /\|/,
  sql(q{SELECT task_id, lease, upstream FROM vectorbea.claim_tasks('w', ARRAY['publish'])});
is_deeply($json->decode($upstream), { title => { title => 'Disk full on db-1' } },
	'escalation: the node downstream receives the corrected output');
sql(qq{SELECT vectorbea.complete_task($tid, '$lease', '{}')});
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}), 'succeeded', 'escalation: the run succeeds');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'escalation: verify_run is empty');

# ---------------------------------------------------------------------------
# In doubt, ask: the scheduler dies with a call in flight.
vb_fake_reset();
sql(q{SELECT vectorbea.define_workflow('wire', '{"nodes": [
  {"id": "order", "kind": "llm", "in_doubt": "ask",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Place the order {{run.input.order}}"}},
  {"id": "confirm", "activity": "confirm", "depends_on": ["order"]}]}')});
vb_fake_script({ delay_ms => 30000, text => 'placed (never seen)' }, { text => 'placed twice!' });
$run = sql(q{SELECT vectorbea.start_run('wire', '{"order": 42}')});
my $t0 = time;
usleep(50_000) until (vb_fake_stats()->{in_flight} == 1 || time - $t0 > 20);
is(vb_fake_stats()->{in_flight}, 1, 'in doubt: the call is in flight');
my $sched = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
kill 'KILL', $sched;
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'order'},
		'waiting', 60), 'in doubt: after the crash the node waits for a person');
$gate = $json->decode(sql(qq{SELECT row_to_json(a) FROM vectorbea.approvals a WHERE run_id = '$run'}));
is($gate->{kind}, 'in_doubt', 'in doubt: a gate of kind in_doubt');
is($gate->{context}{error}{in_doubt}, JSON::PP::true, 'in doubt: its context says the call was in doubt');
# The scheduler is back and idle; nothing calls the provider again, not even
# after another pass.
ok(defined vb_wait_for($node,
		q{SELECT state FROM vectorbea.scheduler_status()}, 'idle', 30), 'in doubt: the scheduler is back');
ok(vb_scheduler_pass($node), 'in doubt: the new scheduler made another pass');
is(scalar @{ events($run, 'LLM_REQUESTED') } . ' ' . scalar @{ vb_fake_requests() }, '1 1',
	'in doubt: one call recorded, and the provider saw exactly one request');

sql(qq{UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept',
		output = '{"text": "placed", "checked": "order system"}', decided_by = 'ops'
	   WHERE id = $gate->{id}});
($tid, $lease, $upstream) = split /\|/,
  sql(q{SELECT task_id, lease, upstream FROM vectorbea.claim_tasks('w', ARRAY['confirm'])});
is($json->decode($upstream)->{order}{checked}, 'order system', 'in doubt: the person\'s output goes downstream');
sql(qq{SELECT vectorbea.complete_task($tid, '$lease', '{}')});
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}), 'succeeded', 'in doubt: the run succeeds');
is(scalar @{ vb_fake_requests() }, 1, 'in doubt: still one request in all');
is(scalar @{ events($run, 'LLM_REQUESTED') }, 1, 'in doubt: one call recorded');
is(scalar @{ events($run, 'LLM_CALLED') }, 0, 'in doubt: with no result');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'in doubt: verify_run is empty');

$node->stop;
done_testing();
