# fork_run() with llm nodes against the fake provider (issue 15): a run of
# a workflow with three worker steps, an llm planner checked by an output
# schema that spawns investigations, an llm brief and a publish step; then
#  - a fork from the brief with a changed prompt, which reuses every node
#    before it (the planner's spawn included): one new provider call, the
#    brief's, with the new prompt rendered from the reused outputs; no
#    worker can claim a reused node; diff_runs shows what changed, and
#  - a fork from the planner with no change, which calls the planner again
#    and lets its new answer decide the spawn (the source's investigations
#    are not copied).
# Workers are simulated with claim_tasks/complete_task; verify_run holds for
# every run.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my ($node, $base) = vb_llm_server('fork_llm');
my $json = vb_json();

sub sql { return $node->safe_psql('postgres', shift); }
sub jsql { return $json->decode(sql(shift)); }

vb_store_key($node, 'default', 'openai', 'sk-test-fork-0001', $base);

sub finished
{
	my ($run) = @_;
	vb_wait_for($node, qq{SELECT status <> 'running' FROM vectorbea.runs WHERE id = '$run'}, 't');
	return sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'});
}

sub wait_status
{
	my ($run, $n, $status) = @_;
	return defined vb_wait_for($node,
		qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = '$n'}, $status);
}

# Claims up to $max tasks of @$acts; returns them as hashes.
sub claim
{
	my ($acts, $max) = @_;
	my $list = join(',', map { "'$_'" } @$acts);
	$max //= 10;
	return jsql(qq{SELECT coalesce(jsonb_agg(jsonb_build_object('task_id', task_id, 'lease', lease,
			'run_id', run_id, 'node', node, 'input', input, 'upstream', upstream) ORDER BY node), '[]')
		FROM vectorbea.claim_tasks('w', ARRAY[$list], $max)});
}

sub complete
{
	my ($task, $output) = @_;
	my $out = $json->encode($output);
	sql(qq{SELECT vectorbea.complete_task($task->{task_id}, '$task->{lease}', \$j\$$out\$j\$)});
}

# node:status:attempt:spawned_by for every node of a run.
sub nodes_of
{
	my ($run) = @_;
	return sql(qq{SELECT string_agg(node || ':' || status || ':' || attempt || ':' || coalesce(spawned_by, '-'), ' '
		ORDER BY node) FROM vectorbea.nodes WHERE run_id = '$run'});
}

sub verified
{
	my ($run, $what) = @_;
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', "$what: verify_run is empty");
}

# The user message of a recorded request.
sub prompt_of { return $_[0]{body}{messages}[-1]{content}; }

# ---------------------------------------------------------------------------
# The workflow.  plan waits for the three workers, answers JSON checked by
# its schema and spawns investigations; brief reads plan and outline;
# publish reads brief.
sql(<<'EOF');
SELECT vectorbea.define_workflow('incident_brief', $wf${"nodes": [
  {"id": "collect", "activity": "collect"},
  {"id": "metrics", "activity": "metrics"},
  {"id": "outline", "activity": "outline"},
  {"id": "plan", "kind": "llm", "depends_on": ["collect", "metrics", "outline"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini",
           "prompt": "PLANNER for {{run.input.incident}}: {{upstream.collect.output.summary}}; p99 {{upstream.metrics.output.p99_ms}} ms; sections {{upstream.outline.output.sections}}. Answer JSON {\"plan\": ..., \"spawn\": [...]}",
           "output_schema": {"type": "object", "required": ["plan", "spawn"], "additionalProperties": false,
                             "properties": {"plan": {"type": "string"},
                                            "spawn": {"type": "array", "minItems": 1, "maxItems": 3}}},
           "allow_spawn": {"activities": ["investigate"], "max_nodes": 3}}},
  {"id": "brief", "kind": "llm", "depends_on": ["plan", "outline"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini",
           "prompt": "BRIEFER: write the brief of {{run.input.incident}} in sections {{upstream.outline.output.sections}} following: {{upstream.plan.output.json.plan}}"}},
  {"id": "publish", "activity": "publish", "depends_on": ["brief"]}]}$wf$);
EOF

my %answer = (
	plan_v1 => { plan => 'check db and network', spawn => [
		{ id => 'inv_db', activity => 'investigate', input => { area => 'db' } },
		{ id => 'inv_net', activity => 'investigate', input => { area => 'network' } } ] },
	plan_v2 => { plan => 'check the cache', spawn => [
		{ id => 'inv_cache', activity => 'investigate', input => { area => 'cache' } } ] },
	brief_v1 => 'INC-7 brief: the db pool was exhausted; the network was fine.',
	brief_short => 'INC-7: db pool. Fixed.',
	brief_v2 => 'INC-7 brief: a cache stampede.');
my $sections = '["impact", "timeline"]';    # jsonb's text of the outline's array
my $plan_prompt = "PLANNER for INC-7: checkout errors since 10:02; p99 870 ms; sections $sections."
  . ' Answer JSON {"plan": ..., "spawn": [...]}';

# ---------------------------------------------------------------------------
# 1. The source run.
vb_fake_reset();
vb_fake_script(
	{ match => { contains => 'PLANNER' }, text => $json->encode($answer{plan_v1}),
		usage => { input => 400, output => 60 } },
	{ match => { contains => 'BRIEFER: write' }, text => $answer{brief_v1},
		usage => { input => 300, output => 40 } });
my $src = sql(q{SELECT vectorbea.start_run('incident_brief', '{"incident": "INC-7"}')});

my $workers = claim([qw(collect metrics outline)], 3);
is(join(',', map { $_->{node} } @$workers), 'collect,metrics,outline', 'source: the three workers run in parallel');
my %work_output = (
	collect => { summary => 'checkout errors since 10:02' },
	metrics => { p99_ms => 870 },
	outline => { sections => [qw(impact timeline)] });
complete($_, $work_output{ $_->{node} }) for @$workers;

ok(wait_status($src, 'inv_db', 'ready') && wait_status($src, 'inv_net', 'ready'),
	'source: the planner spawned two investigations');
my $plan_out = jsql(qq{SELECT output FROM vectorbea.nodes WHERE run_id = '$src' AND node = 'plan'});
is_deeply($plan_out->{json}, $answer{plan_v1}, 'source: the plan output holds the answer checked by the schema');
is($plan_out->{corrections}, 0, 'source: the answer matched the schema at once');
my $inv = claim(['investigate'], 10);
is(join(',', map { "$_->{node}:$_->{input}{area}" } @$inv), 'inv_db:db,inv_net:network',
	'source: workers claim the two investigations with the planner\'s inputs');
complete($_, { finding => "$_->{input}{area} checked" }) for @$inv;

ok(wait_status($src, 'publish', 'ready'), 'source: publish is ready after the brief');
my ($pub) = @{ claim(['publish']) };
is($pub->{upstream}{brief}{text}, $answer{brief_v1}, 'source: publish gets the brief\'s answer');
complete($pub, { published => $pub->{upstream}{brief}{text} });
is(finished($src), 'succeeded', 'source: the run succeeds');
is(nodes_of($src),
	'brief:succeeded:1:- collect:succeeded:1:- inv_db:succeeded:1:plan inv_net:succeeded:1:plan '
	  . 'metrics:succeeded:1:- outline:succeeded:1:- plan:succeeded:1:- publish:succeeded:1:-',
	'source: eight nodes, the investigations spawned by plan');

my $reqs = vb_fake_requests();
is(scalar @$reqs, 2, 'source: two llm calls');
is(prompt_of($reqs->[0]), $plan_prompt, 'source: the planner\'s prompt rendered from the three workers\' outputs');
is(prompt_of($reqs->[1]),
	"BRIEFER: write the brief of INC-7 in sections $sections following: check db and network",
	'source: the brief\'s prompt rendered from the plan\'s answer');
verified($src, 'source');

# ---------------------------------------------------------------------------
# 2. Fork from brief with a changed prompt: everything before brief is
#    reused, brief and publish run again.
vb_fake_reset();
vb_fake_script({ match => { contains => 'BRIEFER: two lines' }, text => $answer{brief_short},
	usage => { input => 200, output => 10 } });
my $fork = sql(q{SELECT vectorbea.fork_run('} . $src . q{', 'brief', $c${"brief": {"llm": {"prompt":
	"BRIEFER: two lines on {{run.input.incident}}, sections {{upstream.outline.output.sections}}, plan {{upstream.plan.output.json.plan}}"}}}$c$)});
is_deeply(jsql(qq{SELECT data->'forked_from' FROM vectorbea.events WHERE run_id = '$fork' AND type = 'RUN_STARTED'}),
	{ run => $src, version => 1, node => 'brief', changes => { brief => { llm => { prompt =>
		'BRIEFER: two lines on {{run.input.incident}}, sections {{upstream.outline.output.sections}}, plan {{upstream.plan.output.json.plan}}' } } } },
	'fork from brief: RUN_STARTED says where the fork came from, with the change');
is_deeply(claim([qw(collect metrics outline investigate)], 10), [],
	'fork from brief: no worker can claim a reused node');
is(sql(qq{SELECT string_agg(node || ':' || attempt, ',' ORDER BY node) FROM vectorbea.nodes
	WHERE run_id = '$fork' AND node NOT IN ('brief', 'publish')}),
	'collect:0,inv_db:0,inv_net:0,metrics:0,outline:0,plan:0',
	'fork from brief: the six nodes before brief are there, none attempted');
is(sql(qq{SELECT count(*) FROM vectorbea.nodes f JOIN vectorbea.nodes s ON s.run_id = '$src' AND s.node = f.node
	WHERE f.run_id = '$fork' AND f.node NOT IN ('brief', 'publish')
	  AND f.status = 'succeeded' AND f.output = s.output
	  AND f.spawned_by IS NOT DISTINCT FROM s.spawned_by}), '6',
	'fork from brief: each succeeded with its recorded output (the planner\'s spawn kept as spawned by plan)');
is(sql(qq{SELECT string_agg(e.node, ',' ORDER BY e.node) FROM vectorbea.events e JOIN vectorbea.nodes s
	ON s.run_id = '$src' AND s.node = e.node
	WHERE e.run_id = '$fork' AND e.type = 'STEP_COMPLETED'
	  AND e.data->'reused' = jsonb_build_object('run', '$src'::text, 'task_id', s.id)}),
	'collect,inv_db,inv_net,metrics,outline,plan',
	'fork from brief: their STEP_COMPLETED names the source run and task');

ok(wait_status($fork, 'publish', 'ready'), 'fork from brief: the brief reruns and publish becomes ready');
($pub) = @{ claim(['publish']) };
is($pub->{run_id}, $fork, 'fork from brief: publish is claimed in the fork');
is($pub->{upstream}{brief}{text}, $answer{brief_short}, 'fork from brief: publish gets the new brief');
complete($pub, { published => $pub->{upstream}{brief}{text} });
is(finished($fork), 'succeeded', 'fork from brief: the fork succeeds');

$reqs = vb_fake_requests();
is(scalar @$reqs, 1, 'fork from brief: exactly one new llm call');
is(prompt_of($reqs->[0]),
	"BRIEFER: two lines on INC-7, sections $sections, plan check db and network",
	'fork from brief: it is the brief\'s, with the changed prompt rendered from the reused outputs');
is(sql(qq{SELECT string_agg(DISTINCT node, ',') FROM vectorbea.events
	WHERE run_id = '$fork' AND type IN ('STEP_STARTED', 'LLM_REQUESTED', 'LLM_CALLED')}),
	'brief,publish', 'fork from brief: only brief and publish were started');
is(sql(qq{SELECT usage_tokens FROM vectorbea.runs WHERE id = '$fork'}), '210',
	'fork from brief: the fork booked the one new call only');
verified($fork, 'fork from brief');

# What differs, latency aside (timing), reasoned from the construction:
#  - the six reused nodes: nothing (a node a fork reused is compared by
#    status and output only, and those are the recorded ones);
#  - brief: its answer, usage and cost (gpt-4o-mini at 0.15 / 0.60 USD per
#    million tokens); attempts (1), calls, corrections and model are equal;
#  - publish: what it published, the new brief.
my @rows = split /\n/, sql(qq{SELECT string_agg(node || ' ' || what || ' ' || coalesce(a::text, '-') || ' '
		|| coalesce(b::text, '-'), E'\n' ORDER BY node, what)
	FROM vectorbea.diff_runs('$src', '$fork') WHERE what <> 'latency_ms'});
note("diff_runs(source, fork from brief), latency aside:\n" . join("\n", @rows));
my %changed = map { (split / /)[0] => 1 } @rows;
is(join(',', sort keys %changed), 'brief,publish',
	'diff from brief: only the changed node and its dependent differ');
is_deeply([ grep { /^(brief|publish) / } @rows ], [
	'brief cost_usd 0.00006900 0.00003600',
	'brief output.cost_usd 0.00006900 0.00003600',
	"brief output.text \"$answer{brief_v1}\" \"$answer{brief_short}\"",
	'brief output.usage {"input_tokens": 300, "output_tokens": 40} {"input_tokens": 200, "output_tokens": 10}',
	'brief tokens 340 210',
	"publish output.published \"$answer{brief_v1}\" \"$answer{brief_short}\"" ],
	'diff from brief: brief\'s answer, usage and cost; publish\'s output');
is(sql(qq{SELECT count(*) FROM vectorbea.diff_runs('$src', '$fork')
	WHERE node IN ('collect', 'inv_db', 'inv_net', 'metrics', 'outline', 'plan')}), '0',
	'diff from brief: the reused nodes show no difference (not even attempts or latency)');

# ---------------------------------------------------------------------------
# 3. Fork from plan, no change: the planner is asked again and its new
#    answer spawns one investigation; the source's two are not copied.
vb_fake_reset();
vb_fake_script(
	{ match => { contains => 'PLANNER' }, text => $json->encode($answer{plan_v2}),
		usage => { input => 400, output => 30 } },
	{ match => { contains => 'BRIEFER: write' }, text => $answer{brief_v2},
		usage => { input => 300, output => 20 } });
# Read the fork's nodes in the transaction that creates it, before the
# scheduler can act on them.
my ($fork2, $at_start) = split /\n/, sql(qq{
BEGIN;
CREATE TEMP TABLE f AS SELECT vectorbea.fork_run('$src', 'plan') AS id;
SELECT id FROM f;
SELECT string_agg(node || ':' || status || ':' || attempt, ' ' ORDER BY node)
  FROM vectorbea.nodes WHERE run_id = (SELECT id FROM f);
COMMIT;});
is($at_start, 'brief:pending:0 collect:succeeded:0 metrics:succeeded:0 outline:succeeded:0 plan:ready:0 publish:pending:0',
	'fork from plan: the three workers reused, plan ready, no investigation copied');
is_deeply(claim([qw(collect metrics outline)], 10), [], 'fork from plan: no worker can claim a reused node');

ok(wait_status($fork2, 'inv_cache', 'ready'), 'fork from plan: the planner\'s new answer spawns inv_cache');
my $spawned = jsql(qq{SELECT jsonb_agg(jsonb_build_object('node', node, 'attempt', attempt, 'ids',
	(SELECT jsonb_agg(x->>'id') FROM jsonb_array_elements(data->'nodes') x))) FROM vectorbea.events
	WHERE run_id = '$fork2' AND type = 'NODES_SPAWNED'});
is_deeply($spawned, [ { node => 'plan', attempt => 1, ids => ['inv_cache'] } ],
	'fork from plan: one spawn, by plan\'s new attempt, of exactly the new answer\'s node');
$inv = claim(['investigate'], 10);
is(join(',', map { "$_->{node}:$_->{input}{area}" } @$inv), 'inv_cache:cache',
	'fork from plan: workers find one investigation, with the new input');
complete($_, { finding => 'cache stampede' }) for @$inv;

ok(wait_status($fork2, 'publish', 'ready'), 'fork from plan: brief reruns and publish becomes ready');
($pub) = @{ claim(['publish']) };
is($pub->{upstream}{brief}{text}, $answer{brief_v2}, 'fork from plan: publish gets the brief of the new plan');
complete($pub, { published => $pub->{upstream}{brief}{text} });
is(finished($fork2), 'succeeded', 'fork from plan: the fork succeeds');
# LLM_REQUESTED records a hash of each request: the planner was asked the
# same thing as in the source, the brief (from another plan) was not.
my %hash_of = map { my ($run, $node, $h) = split / /; ("$run $node" => $h) } split /\n/, sql(qq{
	SELECT CASE run_id WHEN '$src' THEN 'src' ELSE 'fork2' END || ' ' || node || ' ' || (data->>'request_sha256')
	  FROM vectorbea.events WHERE run_id IN ('$src', '$fork2') AND type = 'LLM_REQUESTED'});
like($hash_of{'src plan'}, qr/^[0-9a-f]{64}$/, 'LLM_REQUESTED carries the request\'s SHA-256');
is($hash_of{'fork2 plan'}, $hash_of{'src plan'}, 'fork from plan: the planner\'s request is the same one (same hash)');
isnt($hash_of{'fork2 brief'}, $hash_of{'src brief'}, 'fork from plan: the brief\'s request is not');
is(nodes_of($fork2),
	'brief:succeeded:1:- collect:succeeded:0:- inv_cache:succeeded:1:plan metrics:succeeded:0:- '
	  . 'outline:succeeded:0:- plan:succeeded:1:- publish:succeeded:1:-',
	'fork from plan: its nodes follow the new answer');

$reqs = vb_fake_requests();
is(scalar @$reqs, 2, 'fork from plan: two new llm calls');
is(prompt_of($reqs->[0]), $plan_prompt,
	'fork from plan: first the planner\'s, rendered from the reused outputs as in the source');
is(prompt_of($reqs->[1]),
	"BRIEFER: write the brief of INC-7 in sections $sections following: check the cache",
	'fork from plan: then the brief\'s, from the new plan');
is(sql(qq{SELECT string_agg(node || ' ' || what, ',' ORDER BY node, what) FROM vectorbea.diff_runs('$src', '$fork2')
	WHERE what LIKE 'only in %'}),
	'inv_cache only in b,inv_db only in a,inv_net only in a',
	'fork from plan: diff_runs shows the old investigations gone and the new one added');
is(sql(qq{SELECT usage_tokens FROM vectorbea.runs WHERE id = '$fork2'}), '750',
	'fork from plan: the fork booked its two calls (430 + 320 tokens)');
verified($fork2, 'fork from plan');
verified($src, 'source, after two forks');

done_testing();
