# The llm path's security fixes of 0.2.0 (issue 9), against the fake
# provider: a provider's error that echoes the key in other forms (upper
# case, spaced out, a long prefix or suffix) is redacted wherever it is
# stored; negative or absurd token counts are an invalid answer, not a
# booking; the allow-list's ports keep a call to 127.0.0.1 off the
# database's own port; scheduler_status() shows its last error only to
# roles that may read settings.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my ($node, $base, $port) = vb_llm_server('llmsec');
my $json = vb_json();

sub sql { return $node->safe_psql('postgres', shift); }

sub finished
{
	my ($run) = @_;
	vb_wait_for($node, qq{SELECT status <> 'running' FROM vectorbea.runs WHERE id = '$run'}, 't');
	return sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'});
}

sub consistent
{
	my ($run, $what) = @_;
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', "$what: verify_run is empty");
}

# Everything a run stored that an application role can read.
sub stored_text
{
	my ($run) = @_;
	return sql(qq{SELECT string_agg(data::text, E'\\n') FROM vectorbea.events WHERE run_id = '$run'})
	  . "\n" . sql(qq{SELECT string_agg(coalesce(error::text, ''), E'\\n') FROM vectorbea.nodes WHERE run_id = '$run'})
	  . "\n" . sql(qq{SELECT coalesce(error::text, '') FROM vectorbea.runs WHERE id = '$run'})
	  . "\n" . join("\n", split(/\n/, sql(qq{SELECT vectorbea.timeline('$run')})));
}

my $key = 'sk-proj-Canary7Q2w9Zr4Xt8Lm3Np6Vb1Hy5Kd0';
vb_store_key($node, 'default', 'openai', $key, $base);
sql(q{SELECT vectorbea.define_workflow('one', '{"nodes": [
  {"id": "ask", "kind": "llm", "retry": {"max_attempts": 1},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "hello", "max_tokens": 50}}]}')});

# ---------------------------------------------------------------------------
# Redaction: every run of eight or more characters of the key, any case,
# whitespace between them ignored.
my %forms = (
	'verbatim' => $key,
	'upper-cased' => uc $key,
	'spaced out' => join(' ', split(//, $key)),
	'a long prefix' => substr($key, 0, 20),
	'a long suffix' => substr($key, -12),
	'eight characters from the middle' => substr($key, 10, 8),
	'split by a line break' => substr($key, 0, 15) . "\n" . substr($key, 15));
for my $form (sort keys %forms)
{
	vb_fake_reset();
	vb_fake_script({ status => 401,
		error_message => "Incorrect API key provided: $forms{$form}. You can find your API key at https://platform.example/keys." });
	my $run = sql(q{SELECT vectorbea.start_run('one')});
	is(finished($run), 'failed', "redaction, $form: the 401 fails the node");
	my $stored = stored_text($run);
	like($stored, qr/Incorrect API key provided: \[redacted\]/, "redaction, $form: the message is kept, the key redacted");
	my $hits = 0;
	my $squeezed = $stored =~ s/\s+//gr;
	for my $i (0 .. length($key) - 8)
	{
		my $piece = substr($key, $i, 8);
		$hits++ if index(lc $squeezed, lc $piece) >= 0;
	}
	is($hits, 0, "redaction, $form: no eight characters of the key are stored in any case or spacing");
	consistent($run, "redaction, $form");
}
# Short runs are not words of the key: ordinary text is left alone.
vb_fake_reset();
vb_fake_script({ status => 400, error_message => 'model sk-proj not found; try another' });
my $run = sql(q{SELECT vectorbea.start_run('one')});
finished($run);
like(stored_text($run), qr/model sk-proj not found; try another/, 'redaction: fewer than eight characters of the key are not redacted');
# A 200 whose JSON breaks at a string holding part of the key: the JSON
# parser's message quotes that token, and the quote is redacted too (found
# by test/fuzz, target answer).
vb_fake_reset();
vb_fake_script({ mode => 'invalid_json', text => '{"model": "m" "' . substr($key, 8, 17) . '"}' });
$run = sql(q{SELECT vectorbea.start_run('one')});
is(finished($run), 'failed', 'redaction, a garbled answer: the node fails');
my $garbled = stored_text($run);
like($garbled, qr/not valid JSON \('\}' expected near '\\?"\[redacted\]\\?"'/,
	'redaction, a garbled answer: the parser\'s message is kept, the key in its quote redacted');
unlike(lc($garbled =~ s/\s+//gr), qr/\Q${\ lc substr($key, 8, 8)}\E/,
	'redaction, a garbled answer: no eight characters of the key are stored');
consistent($run, 'redaction, a garbled answer');
# A 200 whose answer and model name echo the key (a proxy in front of the
# provider reflecting the request's header): the answer is kept, the key
# redacted, in the output and in LLM_CALLED's model_used; a model name is
# cut to 200 bytes.
vb_fake_reset();
vb_fake_script({ text => "the header said Bearer $key, as asked", model => "gpt-4o-mini $key " . ('m' x 300) });
$run = sql(q{SELECT vectorbea.start_run('one')});
is(finished($run), 'succeeded', 'redaction, an echoing answer: the node succeeds');
is(sql(qq{SELECT output->>'text' FROM vectorbea.nodes WHERE run_id = '$run'}),
	'the header said Bearer [redacted], as asked', 'redaction, an echoing answer: the answer is kept, the key redacted');
like(sql(qq{SELECT data->>'model_used' FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_CALLED'}),
	qr/^gpt-4o-mini \[redacted\] m+…$/, 'redaction, an echoing answer: model_used is redacted and cut');
cmp_ok(length(sql(qq{SELECT data->>'model_used' FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_CALLED'})),
	'<=', 203, 'redaction, an echoing answer: model_used is cut to 200 bytes and the ellipsis');
unlike(lc(stored_text($run) =~ s/\s+//gr), qr/\Q${\ lc substr($key, 8, 8)}\E/,
	'redaction, an echoing answer: no eight characters of the key are stored');
consistent($run, 'redaction, an echoing answer');

# ---------------------------------------------------------------------------
# Token counts a provider cannot have used are an invalid answer.
for my $case ([ 'negative', { input => -1000000, output => 5 } ],
	[ 'absurd', { input => 5, output => 5_000_000_000 } ])
{
	my ($what, $usage) = @$case;
	vb_fake_reset();
	vb_fake_script({ text => 'fine', usage => $usage });
	$run = sql(q{SELECT vectorbea.start_run('one')});
	is(finished($run), 'failed', "$what token count: the node fails");
	my $failed = $json->decode(sql(qq{SELECT data FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'}));
	like($failed->{error}{message}, qr/impossible token count \(usage\.(prompt|completion)_tokens = -?\d+; allowed 0 to 1000000000\)/,
		"$what token count: the error says which count and what is allowed");
	is($failed->{class}, 'transient', "$what token count: classed as a garbled answer");
	my $called = $json->decode(sql(qq{SELECT data FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_CALLED'}));
	is("$called->{tokens_in} $called->{tokens_out}", '0 0', "$what token count: nothing of it is recorded");
	is(sql(qq{SELECT usage_tokens || ' ' || usage_usd FROM vectorbea.runs WHERE id = '$run'}), '0 0',
		"$what token count: nothing is booked");
	consistent($run, "$what token count");
}
# A whole count written as a real (1e10) or an integer beyond 64 bits is
# impossible too, said so, not "not a whole number" or "not valid JSON".
for my $raw ('1e10', '18446744073709551615')
{
	vb_fake_reset();
	vb_fake_script({ mode => 'invalid_json', text => '{"id": "x", "object": "chat.completion", "model": "gpt-4o-mini",'
		  . ' "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],'
		  . qq( "usage": {"prompt_tokens": $raw, "completion_tokens": 1, "total_tokens": 2}}) });
	$run = sql(q{SELECT vectorbea.start_run('one')});
	is(finished($run), 'failed', "token count $raw: the node fails");
	my $failed = $json->decode(sql(qq{SELECT data FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'}));
	like($failed->{error}{message}, qr/impossible token count \(usage\.prompt_tokens = [0-9.e+]+; allowed 0 to 1000000000\)/,
		"token count $raw: the error says it is impossible");
	is($failed->{class}, 'transient', "token count $raw: classed as a garbled answer");
	consistent($run, "token count $raw");
}

# ---------------------------------------------------------------------------
# The allow-list's ports: 127.0.0.1 without a port allows port 80 only, so
# a base_url pointing at the database's own port is refused before any
# connection; the fake provider's port is allowed by naming it.
my $pg_port = $node->port;
vb_store_key($node, 'pgport', 'openai', 'sk-pgport-test', "http://127.0.0.1:$pg_port/v1");
$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = '127.0.0.1, 127.0.0.1:$port'\n");
$node->reload;
ok(defined vb_wait_for($node, q{SHOW vectorbea.llm_allowed_hosts}, "127.0.0.1, 127.0.0.1:$port"), 'allow-list: reloaded');
my $log_offset = -s $node->logfile;
$run = sql(q{SELECT vectorbea.start_run('one', options => '{"workspace": "pgport"}')});
is(finished($run), 'failed', 'allow-list: a call to the database port fails the node');
like($json->decode(sql(qq{SELECT data FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'}))->{error}{message},
	qr/port $pg_port of host "127\.0\.0\.1" is not allowed by vectorbea\.llm_allowed_hosts \(an entry without a port allows port 80 only\)/,
	'allow-list: the error names the port and the rule');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_REQUESTED'}), '0',
	'allow-list: no request was recorded as sent');
unlike(slurp_file($node->logfile, $log_offset), qr/invalid length of startup packet|unsupported frontend protocol|incomplete startup packet/,
	'allow-list: the database port saw no HTTP request');
vb_fake_reset();
$run = sql(q{SELECT vectorbea.start_run('one')});
is(finished($run), 'succeeded', 'allow-list: the port named in an entry is allowed');
is(scalar @{ vb_fake_requests() }, 1, 'allow-list: and the call reached the provider');

# ---------------------------------------------------------------------------
# A reload that narrows the allow-list holds for connections curl already
# has open: the address is checked when a connection opens, so a call may
# not reuse one opened under the old list.  A name pinned to 127.0.0.1 is
# allowed by name, its address by the entry the reload then takes away.
vb_store_key($node, 'pinned', 'openai', 'sk-pinned-test', "http://fakehost.test:$port/v1");
$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = 'fakehost.test:$port, 127.0.0.1:$port'\n"
	  . "vectorbea.test_resolve = 'fakehost.test:$port:127.0.0.1'\n");
$node->reload;
ok(defined vb_wait_for($node, q{SHOW vectorbea.test_resolve}, "fakehost.test:$port:127.0.0.1"), 'reused connections: pinned');
vb_fake_reset();
$run = sql(q{SELECT vectorbea.start_run('one', options => '{"workspace": "pinned"}')});
is(finished($run), 'succeeded', 'reused connections: a call through the pinned name succeeds');
$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = 'fakehost.test:$port'\n");
$node->reload;
ok(defined vb_wait_for($node, q{SHOW vectorbea.llm_allowed_hosts}, "fakehost.test:$port"), 'reused connections: the address entry is gone');
$run = sql(q{SELECT vectorbea.start_run('one', options => '{"workspace": "pinned"}')});
is(finished($run), 'failed', 'reused connections: the next call fails');
like($json->decode(sql(qq{SELECT data FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_FAILED'}))->{error}{message},
	qr/^the connection to 127\.0\.0\.1 was refused: the address is not allowed by vectorbea\.llm_allowed_hosts$/,
	'reused connections: refused at connect, not sent over the open connection');
is(scalar @{ vb_fake_requests() }, 1, 'reused connections: the provider saw the first call only');
consistent($run, 'reused connections');
$node->append_conf('postgresql.conf', "vectorbea.llm_allowed_hosts = '127.0.0.1, 127.0.0.1:$port'\nvectorbea.test_resolve = ''\n");
$node->reload;
ok(defined vb_wait_for($node, q{SHOW vectorbea.llm_allowed_hosts}, "127.0.0.1, 127.0.0.1:$port"), 'reused connections: the list is back');

# ---------------------------------------------------------------------------
# scheduler_status().last_error may name the master key file: only roles
# that may read settings see it.
sql(q{CREATE ROLE vb_viewer LOGIN; CREATE ROLE vb_settings_reader LOGIN IN ROLE pg_read_all_settings;
	  GRANT USAGE ON SCHEMA vectorbea TO vb_viewer, vb_settings_reader;
	  GRANT EXECUTE ON FUNCTION vectorbea.scheduler_status() TO vb_viewer, vb_settings_reader;});
my $keyfile = $node->data_dir . '/vb_master_key';
chmod(0644, $keyfile);
$run = sql(q{SELECT vectorbea.start_run('one')});
ok(defined vb_wait_for($node, q{SELECT last_error LIKE '%master key file%vb_master_key%' FROM vectorbea.scheduler_status()}, 't'),
	'last_error: a superuser sees the master key error with its path');
my $viewer = $node->safe_psql('postgres', q{SET ROLE vb_viewer; SELECT errors > 0, last_error FROM vectorbea.scheduler_status()});
is($viewer, 't|(hidden: visible to members of pg_read_all_settings)',
	'last_error: a role that may not read settings sees that there is an error, not what it says');
like($node->safe_psql('postgres', q{SET ROLE vb_settings_reader; SELECT last_error FROM vectorbea.scheduler_status()}),
	qr/master key file "vb_master_key"/, 'last_error: a member of pg_read_all_settings sees it');
chmod(0600, $keyfile);
$node->reload;		# a reload wakes the scheduler, which reads the file again
is(finished($run), 'succeeded', 'last_error: once the file is fixed the node runs');

done_testing();
