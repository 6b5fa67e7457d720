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

my ($node, $base, $port) = vb_llm_server('llm', qq{
vectorbea.llm_max_response_size = '256kB'
restart_after_crash = on
});
my $json = vb_json();

sub sql { return $node->safe_psql('postgres', shift); }

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

# Costs are decimal, rounded to 8 places per call: 1 token at 0.125 USD per
# million is 0.000000125, which rounds to 0.00000013 (a double rounded it
# down), and the output's cost is the sum of its calls' (two here).
sql(q{INSERT INTO vectorbea.model_prices VALUES ('openai', 'tiny-model', 0.125, 0)});
sql(q{SELECT vectorbea.define_workflow('tiny', '{"nodes": [
  {"id": "t", "kind": "llm",
   "llm": {"provider": "openai", "model": "tiny-model", "prompt": "one word",
           "output_schema": {"type": "object"}, "max_corrections": 1}}]}')});
vb_fake_reset();
vb_fake_script({ text => 'not json', usage => { input => 1, output => 0 } },
	{ text => '{}', usage => { input => 1, output => 0 } });
$run = sql(q{SELECT vectorbea.start_run('tiny')});
is(finished($run), 'succeeded', 'tiny costs: the run succeeds');
is(sql(qq{SELECT string_agg(data->>'cost_usd', ' ' ORDER BY seq) FROM vectorbea.events
		WHERE run_id = '$run' AND type = 'LLM_CALLED'}), '0.00000013 0.00000013',
	'tiny costs: each call is rounded half up to 8 decimals');
is(sql(qq{SELECT usage_usd FROM vectorbea.runs WHERE id = '$run'}), '0.00000026', 'tiny costs: the run booked their sum');
is(sql(qq{SELECT output->>'cost_usd' FROM vectorbea.nodes WHERE run_id = '$run'}), '0.00000026',
	'tiny costs: and the output says the same');

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
# Anthropic's refusal: "stop_reason": "refusal", here with no words.
vb_fake_reset();
vb_fake_script({ refusal => '', usage => { input => 10, output => 1 } });
$run = sql(q{SELECT vectorbea.start_run('haiku', '{"name": "Eve"}')});
is(finished($run), 'failed', 'an anthropic refusal fails the node');
is(sql(qq{SELECT error->>'class' || ': ' || (error->>'message') FROM vectorbea.nodes WHERE run_id = '$run'}),
	'permanent: the model refused to answer and gave no reason', 'permanent, saying so');
is(scalar @{ vb_fake_requests() }, 1, 'and it is not asked again');
consistent($run, 'anthropic refusal');

# ---------------------------------------------------------------------------
# Failure classes and their retry behaviour.  Each case is one run of a
# one-node workflow allowing two attempts; the first call meets the
# scripted failure, a second (if the class retries) gets a good answer.
sql(q{SELECT vectorbea.define_workflow('once', '{"nodes": [
  {"id": "ask", "kind": "llm", "timeout": "2s",
   "retry": {"max_attempts": 2, "initial": "100ms", "jitter": false},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "case {{run.input.case}}"}}]}')});

sub failure_case
{
	my ($name, $rule, $class, $retried, $message_like, $requests) = @_;
	vb_fake_reset();
	vb_fake_script({ %$rule, match => { contains => "case $name" } },
		{ match => { contains => "case $name" }, text => 'recovered' });
	my $run = sql(qq{SELECT vectorbea.start_run('once', '{"case": "$name"}')});
	my $status = finished($run, 40);
	my $failed = events($run, 'STEP_FAILED');
	is($failed->[0]{error}{class} // $failed->[0]{class}, $class, "$name: the attempt fails as $class");
	like($failed->[0]{error}{message}, $message_like, "$name: with a clear message");
	if ($retried)
	{
		is($status, 'succeeded', "$name: retried, and the second call succeeds");
		is(scalar @{ vb_fake_requests() }, $requests // 2, "$name: two calls");
	}
	else
	{
		is($status, 'failed', "$name: not retried, the run fails");
		is(scalar @{ events($run, 'STEP_STARTED') }, 1, "$name: one attempt only");
	}
	consistent($run, $name);
	return $run;
}

my $rl = failure_case('ratelimit', { status => 429, headers => { 'Retry-After' => '1' },
	error_message => 'Rate limit reached' }, 'rate_limited', 1, qr/429.*Rate limit reached/);
is(events($rl, 'STEP_FAILED')->[0]{error}{retry_after}, '1000ms', 'ratelimit: the error carries retry_after, exactly');
# Seconds from a run's failed attempt to its retry.
sub retry_gap
{
	my ($run) = @_;
	return sql(qq{SELECT extract(epoch FROM (SELECT at FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_STARTED' ORDER BY seq DESC LIMIT 1)
	- (SELECT at FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'))});
}
cmp_ok(retry_gap($rl), '>=', 0.9, 'ratelimit: the retry waited for Retry-After (1 s), not the 100 ms backoff');
# Retry-After as an HTTP date: the retry waits for that time.
{
	my @day = qw(Sun Mon Tue Wed Thu Fri Sat);
	my @mon = qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec);
	my @g = gmtime(int(time) + 8);
	my $http_date = sprintf('%s, %02d %s %04d %02d:%02d:%02d GMT',
		$day[$g[6]], $g[3], $mon[$g[4]], $g[5] + 1900, $g[2], $g[1], $g[0]);
	my $run = failure_case('ratelimit_date', { status => 429, headers => { 'Retry-After' => $http_date } },
		'rate_limited', 1, qr/429/);
	my ($wait_ms) = (events($run, 'STEP_FAILED')->[0]{error}{retry_after} // '') =~ /^([0-9]+)ms$/;
	ok(defined $wait_ms && $wait_ms >= 100 && $wait_ms <= 8000,
		"ratelimit_date: Retry-After: $http_date is read as a wait of at most 8 s ("
		  . ($wait_ms // 'none') . ' ms)');
	cmp_ok(retry_gap($run), '>=', ($wait_ms // 0) / 1000 - 0.05, 'ratelimit_date: the retry waited for that date');
	# Neither seconds nor a date: not a wait, the retry follows the backoff.
	$run = failure_case('ratelimit_odd', { status => 429, headers => { 'Retry-After' => 'soon' } },
		'rate_limited', 1, qr/429/);
	ok(!exists events($run, 'STEP_FAILED')->[0]{error}{retry_after},
		'ratelimit_odd: an unreadable Retry-After is no wait');
}
failure_case('server', { status => 500, error_message => 'The server had an error' }, 'transient', 1,
	qr/answered 500: The server had an error/);
failure_case('overloaded', { status => 503 }, 'transient', 1, qr/answered 503/);
# The reset meets a kept-alive connection after the request went out.  curl
# would send it again on a new connection, unrecorded (the provider charging
# twice, the history showing one call): it is not sent again, the attempt
# fails saying so, and the retry is a recorded call of its own.
my $reset = failure_case('reset', { mode => 'reset' }, 'transient', 1,
	qr/the connection was lost after the request was sent .*it was not sent again/);
is(scalar @{ events($reset, 'LLM_REQUESTED') }, 2, 'reset: each call the provider received was recorded');
failure_case('truncated', { mode => 'truncate' }, 'transient', 1, qr/call failed/);
# A count that is there but not a whole number is not booked as 0.
failure_case('textcount', { raw_usage => { prompt_tokens => 500, completion_tokens => '900' } }, 'transient', 1,
	qr/reports a token count that is not a whole number \(usage.completion_tokens = "900"\)/);
# A refusal is not asked again (the same no, paid for each time), and it is
# paid for: its tokens and cost are booked like an answer's.
my $refused = failure_case('refused', { refusal => "I can't help with that.", usage => { input => 1000, output => 500 } },
	'permanent', 0, qr/^the model refused to answer: I can't help with that\.$/);
my $refused_call = events($refused, 'LLM_CALLED')->[0];
is_deeply([ @$refused_call{qw(outcome tokens_in tokens_out)}, $refused_call->{priced} ? 'priced' : 'not priced' ],
	[ 'permanent', 1000, 500, 'priced' ],
	'refused: LLM_CALLED books the tokens and prices them');
is(sql(qq{SELECT usage_tokens || ' ' || usage_usd FROM vectorbea.runs WHERE id = '$refused'}), '1500 0.00045000',
	'refused: the run booked the refusal\'s tokens and cost');
failure_case('garbled', { mode => 'invalid_json' }, 'transient', 1, qr/not valid JSON/);
failure_case('hang', { mode => 'hang' }, 'transient', 1, qr/did not answer within 1[45]\d\d ms/);
failure_case('unauthorized', { status => 401, error_message => 'Incorrect API key provided' }, 'permanent', 0,
	qr/answered 401: Incorrect API key provided/);
failure_case('forbidden', { status => 403 }, 'permanent', 0, qr/answered 403/);
failure_case('badrequest', { status => 400, error_message => 'max_tokens is too large' }, 'permanent', 0,
	qr/answered 400: max_tokens is too large/);
failure_case('huge', { mode => 'huge', huge_bytes => 1_000_000 }, 'permanent', 0,
	qr/exceeded vectorbea.llm_max_response_size/);
# Headers count toward the cap too (on their own): 300 kB of them, in lines
# curl takes, against 256 kB.  They were read in full and the call failed
# transient, to be asked again.
failure_case('bigheaders', { headers => { map { ("X-Pad-$_" => 'a' x 50_000) } 1 .. 6 } }, 'permanent', 0,
	qr/exceeded vectorbea.llm_max_response_size/);
failure_case('redirect', { mode => 'redirect', location => "http://127.0.0.1:$port/v1/chat/completions" },
	'permanent', 0, qr/answered 302/);
is(scalar @{ vb_fake_requests() }, 1, 'redirect: not followed');

# An answer too large to store (vectorbea.max_payload_size) fails the node
# permanently instead of leaving it to lease expiry.
sql(q{ALTER SYSTEM SET vectorbea.max_payload_size = '16kB'});
ok(vb_reload($node, { 'vectorbea.max_payload_size' => '16kB' }), 'max_payload_size is 16kB, for the scheduler too');
failure_case('toolarge', { text => 'x' x 20000 }, 'permanent', 0,
	qr/the node's output was refused: the task output is too large/);
# The last answer that an error keeps (error.answer, for the person an
# escalation asks) is cut to half of it: the error is a payload too.
sql(q{SELECT vectorbea.define_workflow('typed_big', '{"nodes": [
  {"id": "t", "kind": "llm", "retry": {"max_attempts": 1},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "json please",
           "output_schema": {"type": "object"}, "max_corrections": 0}}]}')});
vb_fake_reset();
vb_fake_script({ text => 'y' x 20000 });
$run = sql(q{SELECT vectorbea.start_run('typed_big')});
is(finished($run), 'failed', 'a long answer that is not JSON fails the node');
my $cut = events($run, 'STEP_FAILED')->[0]{error};
is($cut->{class}, 'invalid_output', 'as invalid_output');
is(length($cut->{answer}), 8192, 'its error keeps the first half of max_payload_size of the answer');
ok($cut->{answer_cut} && $cut->{answer_bytes} == 20000, 'and says it was cut, from how much');
sql(q{ALTER SYSTEM RESET vectorbea.max_payload_size});
ok(vb_reload($node, { 'vectorbea.max_payload_size' => '1MB' }), 'max_payload_size is back at 1MB');

# ---------------------------------------------------------------------------
# Self-correction against an output schema.
sql(q{SELECT vectorbea.define_workflow('typed', '{"nodes": [
  {"id": "t", "kind": "llm", "retry": {"max_attempts": 3},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "title for {{run.input.topic}}",
           "output_schema": {"type": "object", "required": ["title"],
                             "properties": {"title": {"type": "string"}}},
           "max_corrections": 1}}]}')});
vb_fake_reset();
vb_fake_script({ text => 'Sure! Here is a title: Disk full' },
	{ text => "```json\n{\"title\": \"Disk full\"}\n```" });
$run = sql(q{SELECT vectorbea.start_run('typed', '{"topic": "disk"}')});
is(finished($run), 'succeeded', 'self-correction: the second answer is accepted');
my $sc = events($run, 'SELF_CORRECTION');
is(scalar @$sc, 1, 'self-correction: one SELF_CORRECTION event');
like($sc->[0]{error}, qr/not valid JSON/, 'self-correction: it carries the validation error');
$reqs = vb_fake_requests();
is(scalar @$reqs, 2, 'self-correction: two calls');
my $msgs = $reqs->[1]{body}{messages};
is($msgs->[1]{role}, 'assistant', 'the second call carries the first answer');
like($msgs->[2]{content}, qr/does not match the required JSON schema: the answer is not valid JSON/,
	'and the validation error');
$out = $json->decode(sql(qq{SELECT output FROM vectorbea.nodes WHERE run_id = '$run'}));
is_deeply($out->{json}, { title => 'Disk full' }, 'the parsed JSON is in the output');
is($out->{corrections}, 1, 'the output counts the correction');
is(scalar @{ events($run, 'LLM_CALLED') }, 2, 'each call has its LLM_CALLED');
consistent($run, 'self-correction');

# An answer that matches its schema but that jsonb cannot store (a number
# beyond numeric, which the checker's parser reads as 0) is corrected like
# a mismatch.  It was lost before: storing the output failed the whole step.
vb_fake_reset();
vb_fake_script({ text => '{"title": "Disk full", "ratio": 2e-400000}' },
	{ text => '{"title": "Disk full", "ratio": 0}' });
$run = sql(q{SELECT vectorbea.start_run('typed', '{"topic": "disk"}')});
is(finished($run), 'succeeded', 'unstorable answer: the corrected answer is accepted');
$sc = events($run, 'SELF_CORRECTION');
is(scalar @$sc, 1, 'unstorable answer: one SELF_CORRECTION event');
like($sc->[0]{error}, qr/the answer is JSON that PostgreSQL cannot store: value overflows numeric format/,
	'unstorable answer: the correction says why');
is(scalar @{ events($run, 'LLM_CALLED') }, 2, 'unstorable answer: both calls recorded');
$out = $json->decode(sql(qq{SELECT output FROM vectorbea.nodes WHERE run_id = '$run'}));
is_deeply($out->{json}, { title => 'Disk full', ratio => 0 }, 'unstorable answer: the output is the corrected one');
consistent($run, 'unstorable answer');

vb_fake_reset();
vb_fake_script({ text => '{"title": 7}' }, { text => '{"name": "x"}' });
$run = sql(q{SELECT vectorbea.start_run('typed', '{"topic": "cpu"}')});
is(finished($run), 'failed', 'self-correction: gives up after max_corrections');
my $f = events($run, 'STEP_FAILED');
is($f->[0]{error}{class}, 'invalid_output', 'the node fails as invalid_output');
like($f->[0]{error}{message}, qr/after 1 correction: \$ is missing the required property "title"/,
	'naming the last problem');
is(scalar @$f, 1, 'invalid_output is not retried');
is(scalar @{ vb_fake_requests() }, 2, 'one call plus one correction');
like(events($run, 'SELF_CORRECTION')->[0]{error}, qr/\$\.title must be a string, found a number/,
	'the first problem named the field');
consistent($run, 'invalid output');

# "enum" compares numbers by value: 1.0 is the 1 of [1, 2], and an answer
# with an integer beyond 64 bits (read with every number a real) still
# matches; a long enum is cut in the message.
sql(q{SELECT vectorbea.define_workflow('picked', '{"nodes": [
  {"id": "t", "kind": "llm", "retry": {"max_attempts": 1},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "pick",
           "output_schema": {"type": "object", "required": ["k"],
                             "properties": {"k": {"enum": [1, 2, [1, {"a": 2}]]}}},
           "max_corrections": 0}}]}')});
for my $answer ('{"k": 1.0}', '{"k": 2, "id": 98765432109876543210}', '{"k": [1.0, {"a": 2.0}]}')
{
	vb_fake_reset();
	vb_fake_script({ text => $answer });
	$run = sql(q{SELECT vectorbea.start_run('picked')});
	is(finished($run), 'succeeded', "enum: $answer matches");
}
my $many = join(', ', map { "\"choice number $_\"" } 1 .. 100);
sql(qq{SELECT vectorbea.define_workflow('picked_long', '{"nodes": [
  {"id": "t", "kind": "llm", "retry": {"max_attempts": 1},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "pick",
           "output_schema": {"enum": [$many]}, "max_corrections": 0}}]}')});
vb_fake_reset();
vb_fake_script({ text => '"none of them"' });
$run = sql(q{SELECT vectorbea.start_run('picked_long')});
is(finished($run), 'failed', 'enum: an answer outside it fails');
like(events($run, 'STEP_FAILED')->[0]{error}{message}, qr/\$ must be one of \["choice number 1",.*… \(100 values\)/,
	'enum: a long list is cut in the message, with its count');
cmp_ok(length(events($run, 'STEP_FAILED')->[0]{error}{message}), '<', 600, 'enum: the message stays short');

# An answer cut at max_tokens says so: in the output when it is taken as it
# is, and in the correction when the cut broke the schema.
vb_fake_reset();
vb_fake_script({ text => '{"title": "Disk fu', truncated => JSON::PP::true() }, { text => '{"title": "Disk full"}' });
$run = sql(q{SELECT vectorbea.start_run('typed', '{"topic": "disk"}')});
is(finished($run), 'succeeded', 'truncated: corrected');
like(events($run, 'SELF_CORRECTION')->[0]{error}, qr/cut off at max_tokens/, 'truncated: the correction says the answer was cut');
like(vb_fake_requests()->[1]{body}{messages}[2]{content}, qr/cut off at max_tokens: write it shorter/,
	'truncated: and so does the message to the model');
ok(!exists $json->decode(sql(qq{SELECT output FROM vectorbea.nodes WHERE run_id = '$run'}))->{truncated},
	'truncated: the whole second answer is not marked');
vb_fake_reset();
vb_fake_script({ text => 'Hi Ad', truncated => JSON::PP::true(), usage => { input => 10, output => 3 } });
$run = sql(q{SELECT vectorbea.start_run('haiku', '{"name": "Ada"}')});
is(finished($run), 'succeeded', 'truncated without a schema: taken as it is');
is($json->decode(sql(qq{SELECT output FROM vectorbea.nodes WHERE run_id = '$run'}))->{truncated}, 1,
	'truncated: the output says it was cut (anthropic stop_reason max_tokens)');
consistent($run, 'truncated answer');

# A correction gets what is left of the node's timeout, so a slow second
# answer is still the provider's failure (transient), not the engine's.
sql(q{SELECT vectorbea.define_workflow('typed_quick', '{"nodes": [
  {"id": "t", "kind": "llm", "timeout": "3s", "retry": {"max_attempts": 1},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "quick title",
           "output_schema": {"type": "object", "required": ["title"]}, "max_corrections": 1}}]}')});
vb_fake_reset();
vb_fake_script({ delay_ms => 1500, text => 'no json' }, { mode => 'hang' });
$run = sql(q{SELECT vectorbea.start_run('typed_quick')});
is(finished($run), 'failed', 'correction timeout: the run fails');
$f = events($run, 'STEP_FAILED');
is($f->[0]{error}{class}, 'transient', 'correction timeout: as the provider\'s failure');
like($f->[0]{error}{message}, qr/did not answer within \d+ ms/, 'correction timeout: the call timed out');
my ($second_timeout) = $f->[0]{error}{message} =~ /within (\d+) ms/;
cmp_ok($second_timeout, '<', 1500, 'correction timeout: the second call had only what was left');
consistent($run, 'correction timeout');

# ---------------------------------------------------------------------------
# A planner grows the graph: its answer spawns three investigations, which
# external workers do; a summary waits for the planner.
sql(q{SELECT vectorbea.define_workflow('investigate', '{"nodes": [
  {"id": "plan", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini",
           "prompt": "Plan investigations of {{run.input.incident}}",
           "allow_spawn": {"activities": ["investigate"], "max_nodes": 3}}}]}')});
vb_fake_reset();
vb_fake_script({ text => $json->encode({ plan => 'three checks', spawn => [
	map { { id => "check_$_", activity => 'investigate', input => { area => $_ } } } qw(db network app) ] }) });
$run = sql(q{SELECT vectorbea.start_run('investigate', '{"incident": "INC-42"}')});
ok(defined vb_wait_for($node, qq{SELECT count(*) FROM vectorbea.nodes WHERE run_id = '$run' AND status = 'ready'}, '3'),
	'planner: three investigation nodes are ready');
is(sql(qq{SELECT string_agg(node || ':' || spawned_by, ',' ORDER BY node) FROM vectorbea.nodes WHERE run_id = '$run' AND node <> 'plan'}),
	'check_app:plan,check_db:plan,check_network:plan', 'spawned by the planner');
for my $i (1 .. 3)
{
	my ($t, $l, $in) = split /\|/, sql(q{SELECT task_id, lease, input->>'area' FROM vectorbea.claim_tasks('inv', ARRAY['investigate'])});
	sql(qq{SELECT vectorbea.complete_task($t, '$l', '{"finding": "$in ok"}')});
}
is(finished($run), 'succeeded', 'planner: workers complete the spawned nodes and the run succeeds');
consistent($run, 'planner');

sql(q{SELECT vectorbea.define_workflow('investigate_deep', '{"nodes": [
  {"id": "plan", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Plan {{run.input.incident}}",
           "allow_spawn": {"activities": ["investigate", "vectorbea:llm"], "max_nodes": 1}}}]}')});
for my $bad (
	[ 'too many', [ map { { id => "n$_", activity => 'investigate' } } 1 .. 4 ], qr/adds 4 nodes; "allow_spawn.max_nodes" allows 3/ ],
	[ 'wrong activity', [ { id => 'deploy', activity => 'deploy' } ], qr/activity "deploy", which "allow_spawn.activities" does not list/ ],
	[ 'llm node', [ { id => 'again', kind => 'llm', llm => { provider => 'openai', model => 'm', prompt => 'p' } } ], qr/is an llm node, which "allow_spawn.activities" does not allow/ ],
	[ 'invalid node', [ { id => 'x', activity => 'investigate', depends_on => ['ghost'] } ], qr/spawn list was refused: .*ghost/ ],
	[ 'long activity', [ { id => 'x', activity => 'd' x 300 } ], qr/activity "d{20}… \(300 characters\)", which/ ],
	# Every part that runs work is checked, and none may ask a person.
	[ 'compensation of another activity', [ { id => 'x', activity => 'investigate', compensate => { activity => 'deploy' } } ],
	  qr/spawn\[0\]\.compensate has activity "deploy", which "allow_spawn.activities" does not list/ ],
	[ 'llm compensation', [ { id => 'x', activity => 'investigate',
	  compensate => { kind => 'llm', llm => { provider => 'openai', model => 'gpt-4o', prompt => 'p' } } } ],
	  qr/spawn\[0\]\.compensate is an llm node, which "allow_spawn.activities" does not allow/ ],
	[ 'escalation', [ { id => 'x', activity => 'investigate', on_exhausted => 'escalate' } ], qr/spawn\[0\] asks for a person/ ],
	[ 'in-doubt gate', [ { id => 'x', activity => 'investigate', in_doubt => 'ask' } ], qr/spawn\[0\] asks for a person/ ],
	[ 'escalating compensation', [ { id => 'x', activity => 'investigate', compensate => { activity => 'investigate',
	  escalation => { timeout => '1h' } } } ], qr/spawn\[0\]\.compensate asks for a person/ ],
	# A planner that may add planners: they may add no more than it may.
	[ 'wider sub-planner', [ { id => 'sub', kind => 'llm', llm => { provider => 'openai', model => 'gpt-4o-mini', prompt => 'p',
	  allow_spawn => { activities => ['deploy'], max_nodes => 1 } } } ],
	  qr/spawn\[0\] has "llm.allow_spawn" with activity "deploy", which "allow_spawn.activities" does not list/, 'investigate_deep' ],
	[ 'larger sub-planner', [ { id => 'sub', kind => 'llm', llm => { provider => 'openai', model => 'gpt-4o-mini', prompt => 'p',
	  allow_spawn => { activities => ['investigate'], max_nodes => 3 } } } ],
	  qr/spawn\[0\] has "llm.allow_spawn.max_nodes" 3; "allow_spawn.max_nodes" allows 1/, 'investigate_deep' ])
{
	my ($what, $spawn, $like, $workflow) = @$bad;
	vb_fake_reset();
	vb_fake_script({ text => $json->encode({ spawn => $spawn }) });
	$run = sql(qq{SELECT vectorbea.start_run('@{[ $workflow // 'investigate' ]}', '{"incident": "INC-43"}')});
	is(finished($run), 'failed', "planner, $what: the node fails");
	like(events($run, 'STEP_FAILED')->[0]{error}{message}, $like, "planner, $what: saying why");
	is(sql(qq{SELECT count(*) FROM vectorbea.nodes WHERE run_id = '$run'}), '1', "planner, $what: nothing added");
	consistent($run, "planner, $what");
}

# ---------------------------------------------------------------------------
# The answer's JSON is the model's own text: numbers stay exactly as written
# (0.1 is not 0.10000000000000001, an integer beyond 64 bits is kept), in
# the node's output and in the input of a node it spawns.
sql(q{SELECT vectorbea.define_workflow('exact', '{"nodes": [
  {"id": "ask", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "exact {{run.input.n}}",
           "allow_spawn": {"activities": ["investigate"], "max_nodes": 1}}}]}')});
vb_fake_reset();
vb_fake_script({ text => '{"score": 0.1, "id": 12345678901234567890, '
	  . '"spawn": [{"id": "a", "activity": "investigate", "input": {"x": 0.1}}]}' });
$run = sql(q{SELECT vectorbea.start_run('exact', '{"n": 1}')});
ok(defined vb_wait_for($node, qq{SELECT count(*) FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'a'}, '1'),
	'exact numbers: the answer spawned its node');
is(sql(qq{SELECT (output->'json'->>'score') || ' ' || (output->'json'->>'id') FROM vectorbea.nodes
           WHERE run_id = '$run' AND node = 'ask'}),
	'0.1 12345678901234567890', "exact numbers: the output's json keeps 0.1 and a 20-digit integer");
is(sql(qq{SELECT input->>'x' FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'a'}), '0.1',
	"exact numbers: and so does the spawned node's input");
sql(qq{SELECT vectorbea.cancel_run('$run', 'done')});
consistent($run, 'exact numbers');

# With allow_spawn and a schema of one's own that lets an array through,
# the answer must still be an object.
sql(q{SELECT vectorbea.define_workflow('spawn_any', '{"nodes": [
  {"id": "ask", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "any {{run.input.n}}",
           "output_schema": {"description": "anything"},
           "allow_spawn": {"activities": ["investigate"], "max_nodes": 1}}}]}')});
vb_fake_reset();
vb_fake_script({ text => '[{"id": "a", "activity": "investigate"}]' });
$run = sql(q{SELECT vectorbea.start_run('spawn_any', '{"n": 1}')});
is(finished($run), 'failed', 'spawn, array answer: the node fails');
is(events($run, 'STEP_FAILED')->[0]{error}{message}, 'the answer is a JSON array; with "allow_spawn" it must be an object',
	'spawn, array answer: saying why');
is(sql(qq{SELECT count(*) FROM vectorbea.nodes WHERE run_id = '$run'}), '1', 'spawn, array answer: nothing added');
consistent($run, 'spawn, array answer');

# A property name the schema does not allow is cut in the correction's error.
sql(q{SELECT vectorbea.define_workflow('closed', '{"nodes": [
  {"id": "ask", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "closed {{run.input.n}}", "max_corrections": 1,
           "output_schema": {"type": "object", "additionalProperties": false}}}]}')});
vb_fake_reset();
vb_fake_script({ times => -1, text => $json->encode({ 'k' x 5000 => 1 }) });
$run = sql(q{SELECT vectorbea.start_run('closed', '{"n": 1}')});
is(finished($run), 'failed', 'long property: the node fails after its correction');
my $correction = events($run, 'SELF_CORRECTION')->[0]{error};
like($correction, qr/^\$ has the property "k{200}…", which the schema does not allow$/,
	'long property: its name is cut in the error');
consistent($run, 'long property');

# ---------------------------------------------------------------------------
# Budgets: a call that could cross the run's budget is not made; a call
# whose actual usage crosses it stops the run after it.
vb_fake_reset();
$run = sql(q{SELECT vectorbea.start_run('incident', '{"team": "payments"}', options => '{"budget_usd": 0.0001}')});
($tid, $lease) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w1', ARRAY['collect'])});
sql(qq{SELECT vectorbea.complete_task($tid, '$lease', '{"summary": "s", "severity": 1}')});
is(finished($run), 'failed', 'budget: a call estimated over the budget fails the run');
my $be = events($run, 'BUDGET_EXCEEDED');
is($be->[0]{call_not_made}, JSON::PP::true, 'budget: BUDGET_EXCEEDED says the call was not made');
cmp_ok($be->[0]{estimated_usd}, '>', 0.0001, 'budget: with the estimate (max_tokens priced)');
is(scalar @{ vb_fake_requests() }, 0, 'budget: nothing reached the provider');
is(scalar @{ events($run, 'LLM_REQUESTED') }, 0, 'budget: no call was recorded');
consistent($run, 'budget estimate');

vb_fake_reset();
vb_fake_script({ text => 'not json', usage => { input => 100, output => 150 } });
$run = sql(q{SELECT vectorbea.start_run('typed', '{"topic": "tokens"}', options => '{"budget_tokens": 1300}')});
is(finished($run), 'failed', 'budget: a correction that could cross the token budget is not made');
is(scalar @{ vb_fake_requests() }, 1, 'budget: one call made, the correction not');
is(scalar @{ events($run, 'SELF_CORRECTION') }, 1, 'budget: the correction was decided');
is(events($run, 'BUDGET_EXCEEDED')->[0]{usage_tokens}, 250, 'budget: after booking the first call');
consistent($run, 'budget on a correction');

vb_fake_reset();
vb_fake_script({ text => '{"title": "big"}', usage => { input => 2000, output => 10 } });
$run = sql(q{SELECT vectorbea.start_run('typed', '{"topic": "big"}', options => '{"budget_tokens": 1200}')});
is(finished($run), 'failed', 'budget: actual usage over the budget stops the run');
is(events($run, 'LLM_CALLED')->[0]{tokens_in}, 2000, 'budget: the call is recorded');
is(events($run, 'BUDGET_EXCEEDED')->[0]{usage_tokens}, 2010, 'budget: then BUDGET_EXCEEDED with the usage');
is(sql(qq{SELECT usage_tokens FROM vectorbea.runs WHERE id = '$run'}), '2010', 'budget: booked on the run');
consistent($run, 'budget after a call');

# ---------------------------------------------------------------------------
# Failures before any call: a template path that leads nowhere, no key.
sql(q{SELECT vectorbea.define_workflow('missing', '{"nodes": [
  {"id": "m", "kind": "llm", "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "{{run.input.ticket.title}}"}}]}')});
vb_fake_reset();
$run = sql(q{SELECT vectorbea.start_run('missing', '{"ticket": {"id": 1}}')});
is(finished($run), 'failed', 'a missing template path fails the node');
like(events($run, 'STEP_FAILED')->[0]{error}{message},
	qr/node "m", field "llm.prompt": \{\{run.input.ticket.title\}\} leads nowhere: there is no key "title"/,
	'naming the placeholder and the missing key');
is(events($run, 'STEP_FAILED')->[0]{error}{class}, 'permanent', 'permanently');
is(scalar @{ vb_fake_requests() }, 0, 'and no call is made');
$run = sql(q{SELECT vectorbea.start_run('missing', '{"ticket": {"title": "t"}}', options => '{"workspace": "nokey"}')});
is(finished($run), 'failed', 'a workspace without a key fails the node');
like(events($run, 'STEP_FAILED')->[0]{error}{message}, qr/no key is stored for provider "openai" in workspace "nokey"/,
	'saying which key is missing');

# ---------------------------------------------------------------------------
# The allow-list: a host name not listed is refused before connecting; a
# listed name whose address is internal is refused at connect time.
vb_store_key($node, 'lan', 'openai', 'sk-test-lan', "http://localhost:$port/v1");
$run = sql(q{SELECT vectorbea.start_run('missing', '{"ticket": {"title": "t"}}', options => '{"workspace": "lan"}')});
is(finished($run), 'failed', 'allow-list: an unlisted host fails the node');
like(events($run, 'STEP_FAILED')->[0]{error}{message}, qr/host "localhost" is not in vectorbea.llm_allowed_hosts/,
	'allow-list: naming the host');
$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = 'localhost:$port'\n");
ok(vb_reload($node, { 'vectorbea.llm_allowed_hosts' => "localhost:$port" }), 'allow-list: localhost is listed');
$run = sql(q{SELECT vectorbea.start_run('missing', '{"ticket": {"title": "t"}}', options => '{"workspace": "lan"}')});
is(finished($run), 'failed', 'allow-list: a listed name resolving to loopback is refused');
like(events($run, 'STEP_FAILED')->[0]{error}{message}, qr/connection to (127\.0\.0\.1|::1) was refused: the address is not allowed/,
	'allow-list: checked on the address connected to');
is(scalar @{ vb_fake_requests() }, 0, 'allow-list: nothing reached the provider');
$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = '127.0.0.1:$port'\n");
ok(vb_reload($node, { 'vectorbea.llm_allowed_hosts' => "127.0.0.1:$port" }), 'allow-list: back to 127.0.0.1');

# ---------------------------------------------------------------------------
# OpenAI's reasoning models take max_completion_tokens; a base_url with a
# trailing slash names the same endpoint.
vb_store_key($node, 'reasoning', 'openai', 'sk-test-reasoning', "http://127.0.0.1:$port/v1/");
sql(q{SELECT vectorbea.define_workflow('think', '{"nodes": [
  {"id": "r", "kind": "llm", "llm": {"provider": "openai", "model": "o4-mini", "prompt": "think", "max_tokens": 2000}}]}')});
vb_fake_reset();
$run = sql(q{SELECT vectorbea.start_run('think', options => '{"workspace": "reasoning"}')});
is(finished($run), 'succeeded', 'a reasoning model answers');
$r = vb_fake_requests()->[0];
is($r->{path}, '/v1/chat/completions', 'the trailing slash of base_url is not doubled');
is($r->{body}{max_completion_tokens}, 2000, 'max_tokens is sent as max_completion_tokens');
ok(!exists $r->{body}{max_tokens}, 'and not as max_tokens');

# ---------------------------------------------------------------------------
# A master key file the server may not use: llm nodes wait, the scheduler
# keeps running and says why; once it is fixed they run.
my $keyfile = $node->data_dir . '/vb_master_key';
chmod(0644, $keyfile);
my $sched_pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
$run = sql(q{SELECT vectorbea.start_run('haiku', '{"name": "Grace"}')});
ok(defined vb_wait_for($node, q{SELECT last_error LIKE '%master key file%' FROM vectorbea.scheduler_status()}, 't'),
	'master key: the scheduler reports the unreadable file');
ok(vb_scheduler_pass($node), 'master key: the scheduler makes another pass');
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run'}), 'ready', 'master key: the llm node waits, ready');
is(sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}), $sched_pid,
	'master key: the scheduler did not restart');
chmod(0600, $keyfile);
$node->reload;
is(finished($run), 'succeeded', 'master key: once fixed, the node runs');

# ---------------------------------------------------------------------------
# Cancelling a run aborts its call in flight.  The call hangs at the
# provider, and only vectorbea.llm_request_timeout (2 min) would end it
# otherwise: a call gone within the wait below was aborted by the cancel.
vb_fake_reset();
vb_fake_script({ mode => 'hang' });
$run = sql(q{SELECT vectorbea.start_run('typed', '{"topic": "slow"}')});
ok(defined vb_wait_for($node, 'SELECT 1', '1') && defined(
	(sub { my $t0 = time; while (time - $t0 < 20) { return 1 if vb_fake_stats()->{in_flight} == 1; usleep(50_000); } undef })->()),
	'cancel: the call is in flight');
sql(qq{SELECT vectorbea.cancel_run('$run', 'no longer needed')});
my $t0 = time;
1 while (vb_fake_stats()->{in_flight} > 0 && time - $t0 < 60 && usleep(50_000) >= 0);
is(vb_fake_stats()->{in_flight}, 0, 'cancel: the call was aborted, before its request timeout');
note(sprintf('cancel: the call was gone %.2f s after the cancel', time - $t0));
is(scalar @{ events($run, 'LLM_CALLED') }, 0, 'cancel: no result recorded');
consistent($run, 'cancelled');

# ---------------------------------------------------------------------------
# A crash while a call is in flight leaves it in doubt, visibly.
vb_fake_reset();
vb_fake_script({ delay_ms => 30000, text => 'lost' }, { text => '{"title": "after the crash"}' });
$run = sql(q{SELECT vectorbea.start_run('typed', '{"topic": "crash"}')});
$t0 = time;
usleep(50_000) until (vb_fake_stats()->{in_flight} == 1 || time - $t0 > 20);
my $sched = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
kill 'KILL', $sched;
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'succeeded', 60),
	'in doubt: after the crash the node is retried and the run succeeds');
my $doubt = events($run, 'STEP_FAILED');
is($doubt->[0]{error}{in_doubt}, JSON::PP::true, 'in doubt: the interrupted attempt is marked in_doubt');
is(scalar @{ events($run, 'LLM_REQUESTED') }, 2, 'in doubt: both calls were recorded before they left');
is(scalar @{ events($run, 'LLM_CALLED') }, 1, 'in doubt: only the second has a result');
consistent($run, 'in doubt');

# A call in doubt whose run is closed before the next scheduler gets to it:
# that scheduler finds the attempt running, waits for the run's lock, and
# finds the run compensating (still active) and the node closed. It leaves
# the node alone; it used to retry it inside the closing run, which then
# ended with a node open that it did not count.
sql(q{SELECT vectorbea.define_workflow('undoable', '{"nodes": [
  {"id": "a", "activity": "undo_me", "compensate": {"activity": "undo_it"}},
  {"id": "t", "kind": "llm", "depends_on": ["a"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "title"}}]}')});
vb_fake_reset();
vb_fake_script({ delay_ms => 30000, text => 'lost' });
$run = sql(q{SELECT vectorbea.start_run('undoable')});
sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['undo_me'])});
# (The fake provider may still hold the call cut above, so wait for this
# run's own call, recorded before it leaves.)
ok(defined vb_wait_for($node, qq{SELECT count(*) FROM vectorbea.events
		WHERE run_id = '$run' AND type = 'LLM_REQUESTED'}, '1', 20),
	'in doubt, run closing: the call is recorded as sent');
my $canceller = $node->background_psql('postgres');
$canceller->query_safe(qq{BEGIN; SELECT vectorbea.cancel_run('$run', 'closed meanwhile', true);});
$sched = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
kill 'TERM', $sched;
ok(defined vb_wait_for($node, qq{SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE a.backend_type = 'vectorbea scheduler' AND a.pid <> $sched AND NOT l.granted}, '1', 30),
	'in doubt, run closing: the next scheduler waits for the run the cancellation holds');
$canceller->query_safe('COMMIT');
$canceller->quit;
ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle', 30),
	'in doubt, run closing: the scheduler goes on');
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = 't'}), 'cancelled',
	'in doubt, run closing: the node the cancellation closed stays closed');
is(scalar @{ events($run, 'STEP_FAILED') }, 0, 'in doubt, run closing: no failure is recorded after the run closed');
sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w', ARRAY['undo_it'])});
is(sql(qq{SELECT status || ' ' || open_nodes FROM vectorbea.runs WHERE id = '$run'}), 'cancelled 0',
	'in doubt, run closing: compensated, the run ends cancelled with nothing open');
consistent($run, 'in doubt, run closing');

# ---------------------------------------------------------------------------
# Postmaster death while calls are in flight: the scheduler, waiting on
# curl's sockets, notices it and exits.  The calls hang until their request
# timeout (2 min) and its timer is at one hour, so exiting within the wait
# below is noticing the death while waiting.
vb_fake_reset();
vb_fake_script({ mode => 'hang', times => -1 });
sql(q{SELECT vectorbea.start_run('typed', jsonb_build_object('topic', g)) FROM generate_series(1, 3) g});
$t0 = time;
usleep(50_000) until (vb_fake_stats()->{in_flight} >= 3 || time - $t0 > 20);
cmp_ok(vb_fake_stats()->{in_flight}, ">=", 3, "postmaster death: three calls in flight");
$sched = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
$node->kill9;
$t0 = time;
sub alive
{
	open(my $fh, '<', "/proc/$_[0]/stat") or return 0;
	my $stat = <$fh>;
	return $stat !~ /^\d+ \(.*\) [ZX] /;
}
usleep(20_000) while (alive($sched) && time - $t0 < 60);
ok(!alive($sched), 'postmaster death: the scheduler exits, its calls still in flight');
note(sprintf('postmaster death: the scheduler exited after %.2f s', time - $t0));

done_testing();
