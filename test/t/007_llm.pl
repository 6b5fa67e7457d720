# llm nodes end to end, against the fake provider on loopback: a two-step
# workflow whose llm node the scheduler runs, both wire formats with the
# stored key in the right header, usage and cost in the events, every
# failure class with its retry behaviour, self-correction, a planner that
# spawns the nodes workers then do, cancellation, the allow-list, and a call
# left in doubt by a crash.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my $node = vb_server('llm', qq{
vectorbea.llm_allowed_hosts = '127.0.0.1/32'
vectorbea.llm_max_response_size = '256kB'
restart_after_crash = on
});
my $port = vb_fake_start($node->basedir);
my $base = "http://127.0.0.1:$port/v1";
my $json = vb_json();

sub sql { return $node->safe_psql('postgres', shift); }

ok(defined vb_wait_for($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'the scheduler is running');
sql('CREATE EXTENSION vectorbea CASCADE');
vb_master_key($node);
vb_store_key($node, 'default', 'openai', 'sk-test-openai-0001', $base);
vb_store_key($node, 'default', 'anthropic', 'sk-ant-test-0002', $base);

# Waits for a run to finish; returns its status.
sub finished
{
	my ($run, $timeout) = @_;
	vb_wait_for($node, qq{SELECT status <> 'running' FROM vectorbea.runs WHERE id = '$run'}, 't', $timeout // 30);
	return sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'});
}

sub events
{
	my ($run, $type) = @_;
	return [ map { $json->decode($_) } split /\n/,
		sql(qq{SELECT data FROM vectorbea.events WHERE run_id = '$run' AND type = '$type' ORDER BY seq}) ];
}

sub consistent
{
	my ($run, $what) = @_;
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', "$what: verify_run is empty");
}

# ---------------------------------------------------------------------------
# A two-step workflow: a worker collects, the scheduler writes the brief.
sql(q{SELECT vectorbea.define_workflow('incident', '{"nodes": [
  {"id": "collect", "activity": "collect"},
  {"id": "brief", "kind": "llm", "depends_on": ["collect"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini",
           "system": "You write incident briefs for {{run.input.team}}.",
           "prompt": "Summarise: {{upstream.collect.output.summary}} (severity {{upstream.collect.output.severity}})",
           "max_tokens": 300, "temperature": 0.1}}]}')});
vb_fake_script({ match => { contains => 'disk full' }, text => 'Disk full on db-1; cleaned up.',
	usage => { input => 1000, output => 200 } });
my $run = sql(q{SELECT vectorbea.start_run('incident', '{"team": "payments"}')});
my ($tid, $lease) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', ARRAY['collect'])});
sql(qq{SELECT vectorbea.complete_task($tid, '$lease', '{"summary": "disk full on db-1", "severity": 2}')});
is(finished($run), 'succeeded', 'the run with an llm node succeeds');

my $reqs = vb_fake_requests();
is(scalar @$reqs, 1, 'one call was made');
my $r = $reqs->[0];
is($r->{path}, '/v1/chat/completions', 'OpenAI path under the key\'s base_url');
is($r->{headers}{authorization}, 'Bearer sk-test-openai-0001', 'the stored key, as a Bearer token');
is($r->{body}{model}, 'gpt-4o-mini', 'the model');
is($r->{body}{max_tokens}, 300, 'max_tokens');
is_deeply($r->{body}{messages}, [
	{ role => 'system', content => 'You write incident briefs for payments.' },
	{ role => 'user', content => 'Summarise: disk full on db-1 (severity 2)' } ],
	'system and prompt rendered from the run input and the upstream output');

my $out = $json->decode(sql(qq{SELECT output FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'brief'}));
is($out->{text}, 'Disk full on db-1; cleaned up.', 'the output carries the answer');
is($out->{usage}{input_tokens}, 1000, 'and the input tokens');
is($out->{usage}{output_tokens}, 200, 'and the output tokens');
my $called = events($run, 'LLM_CALLED');
is(scalar @$called, 1, 'one LLM_CALLED event');
is($called->[0]{tokens_in}, 1000, 'LLM_CALLED has tokens in');
is($called->[0]{tokens_out}, 200, 'LLM_CALLED has tokens out');
# gpt-4o-mini: 0.15 / 0.60 USD per million tokens
is($called->[0]{cost_usd} + 0, 0.00027, 'LLM_CALLED has the cost from model_prices');
ok(defined $called->[0]{latency_ms}, 'LLM_CALLED has the latency');
is(scalar @{ events($run, 'LLM_REQUESTED') }, 1, 'the call was recorded before it left');
is(sql(qq{SELECT usage_tokens || ' ' || usage_usd FROM vectorbea.runs WHERE id = '$run'}), '1200 0.00027000',
	'the run booked the tokens and the cost');
consistent($run, 'two-step run');

# ---------------------------------------------------------------------------
# Anthropic's wire format.
vb_fake_reset();
sql(q{SELECT vectorbea.define_workflow('haiku', '{"nodes": [
  {"id": "h", "kind": "llm", "llm": {"provider": "anthropic", "model": "claude-3-5-haiku-latest",
   "system": "Be brief.", "prompt": "Say hi to {{run.input.name}}"}}]}')});
vb_fake_script({ text => 'Hi Ada.', usage => { input => 10, output => 3 } });
$run = sql(q{SELECT vectorbea.start_run('haiku', '{"name": "Ada"}')});
is(finished($run), 'succeeded', 'an anthropic node succeeds');
$r = vb_fake_requests()->[0];
is($r->{path}, '/v1/messages', 'Anthropic path');
is($r->{headers}{'x-api-key'}, 'sk-ant-test-0002', 'the stored key in x-api-key');
ok(!exists $r->{headers}{authorization}, 'and no Authorization header');
is($r->{headers}{'anthropic-version'}, '2023-06-01', 'anthropic-version header');
is($r->{body}{system}, 'Be brief.', 'system is top-level');
is_deeply($r->{body}{messages}, [ { role => 'user', content => 'Say hi to Ada' } ], 'one user message');
is($json->decode(sql(qq{SELECT output FROM vectorbea.nodes WHERE run_id = '$run'}))->{text}, 'Hi Ada.',
	'the answer is the output');
consistent($run, 'anthropic run');

done_testing();
