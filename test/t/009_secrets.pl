# Provider keys stay secret.
#
# A provider API key is the one secret vectorbea holds.  The engine decrypts
# it in the scheduler, sends it in a header, and must never let it reach
# anything that is kept or shown: the server log, pg_stat_statements, the
# event history, node errors and outputs, a pg_dump, or the settings.  This
# test shows that with a canary key, "sk-CANARY-<random hex>", under the
# most talkative configuration an operator might run (log_statement = all,
# log_min_messages = debug1, pg_stat_statements tracking nested statements):
#
#  - the canary is stored the documented way (vb_store_key: statement
#    logging off for the one transaction that carries it), then used by
#    llm runs that succeed, get a 401 whose provider message quotes the key
#    (as OpenAI's "Incorrect API key provided: sk-..." does: the engine must
#    scrub it), get a 500, and time out;
#  - the key functions are called wrongly: check_provider_key for a
#    workspace with no key, set_provider_key with bad arguments (the canary
#    again, logging off) and rotate_master_key with bad files;
#  - then the canary is searched for everywhere it could have landed, and
#    must be nowhere.  So that this cannot pass vacuously, the test also
#    shows that the fake provider really received the canary, that the 401
#    message was scrubbed ("[redacted]" in its place) and that the log does
#    record statements.
#
# And an ordinary role, given only what the documentation says it may have
# (USAGE on the schema, SELECT on provider_key_info), can neither read nor
# change keys (the table, base_url, the key functions), nor decrypt the
# ciphertext, nor read the master key file or its path; it can see which
# keys are set and their fingerprints, which are not the key.
use strict;
use warnings;
use Digest::SHA qw(sha256_hex);
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my ($node, $base) = vb_llm_server('secrets', qq{
shared_preload_libraries = 'vectorbea, pg_stat_statements'
pg_stat_statements.track = all
log_statement = all
log_min_messages = debug1
});

my $hex = join '', map { sprintf '%02x', int rand 256 } 1 .. 16;
my $canary = "sk-CANARY-$hex";
my $wrong_literal = 'sk-WRONGCALL-' . join '', map { sprintf '%02x', int rand 256 } 1 .. 8;

sub sql { return $node->safe_psql('postgres', shift); }

sql('CREATE EXTENSION pg_stat_statements');
my $master_path = $node->data_dir . '/vb_master_key';

# The documented way: statement logging off for the one transaction.
vb_store_key($node, 'default', 'openai', $canary, $base);
is(sql(q{SELECT vectorbea.check_provider_key('default', 'openai')}), 't',
	'the canary key is stored and decrypts');

# ---------------------------------------------------------------------------
# Use the key: a 200, a 401 quoting the key, a 500 and a timeout, each its
# own run of one attempt.
sql(q{SELECT vectorbea.define_workflow('secret_call', '{"nodes": [
  {"id": "ask", "kind": "llm", "retry": {"max_attempts": 1},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "case {{run.input.case}}"}}]}')});
sql(q{SELECT vectorbea.define_workflow('secret_hang', '{"nodes": [
  {"id": "ask", "kind": "llm", "timeout": "1s", "retry": {"max_attempts": 1},
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "case {{run.input.case}}"}}]}')});

vb_fake_script(
	{ match => { contains => 'case-ok' }, text => 'All good.', usage => { input => 5, output => 3 } },
	{ match => { contains => 'case-401' }, status => 401, error_type => 'invalid_request_error',
	  error_message => "Incorrect API key provided: $canary. You can find your API key at https://platform.openai.com/account/api-keys." },
	{ match => { contains => 'case-500' }, status => 500, error_message => 'The server had an error while processing your request.' },
	{ match => { contains => 'case-hang' }, mode => 'hang' });

my %run;
$run{ok} = sql(q{SELECT vectorbea.start_run('secret_call', '{"case": "case-ok"}')});
$run{401} = sql(q{SELECT vectorbea.start_run('secret_call', '{"case": "case-401"}')});
$run{500} = sql(q{SELECT vectorbea.start_run('secret_call', '{"case": "case-500"}')});
$run{hang} = sql(q{SELECT vectorbea.start_run('secret_hang', '{"case": "case-hang"}')});

sub finished
{
	my ($run) = @_;
	vb_wait_for($node, qq{SELECT status <> 'running' FROM vectorbea.runs WHERE id = '$run'}, 't', 60);
	return sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'});
}
is(finished($run{ok}), 'succeeded', 'the 200 run succeeds');
is(finished($run{401}), 'failed', 'the 401 run fails');
is(finished($run{500}), 'failed', 'the 500 run fails');
is(finished($run{hang}), 'failed', 'the run whose call hangs fails');

note("node errors: " . sql(q{SELECT string_agg(r.input->>'case' || ': ' || n.error::text, E'\n' ORDER BY r.created_at)
  FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id WHERE n.error IS NOT NULL}));
my $err401 = sql(qq{SELECT error->>'message' FROM vectorbea.nodes WHERE run_id = '$run{401}'});
like($err401, qr/401/, 'the 401 node records the provider\'s answer')
  or diag("error: " . sql(qq{SELECT error FROM vectorbea.nodes WHERE run_id = '$run{401}'}));
like($err401, qr/Incorrect API key provided: \[redacted\]/,
	'the key in the provider\'s message was replaced by [redacted]');
like(sql(qq{SELECT error->>'message' FROM vectorbea.nodes WHERE run_id = '$run{500}'}), qr/500/,
	'the 500 node records the provider\'s answer');
like(sql(qq{SELECT error->>'class' FROM vectorbea.nodes WHERE run_id = '$run{hang}'}), qr/^(transient|timeout)$/,
	'the hanging call ended as a transient failure or a timeout');

# The key was really used: the fake provider received it on every call.
my $reqs = vb_fake_requests();
is(scalar @$reqs, 4, 'four calls reached the provider');
is(scalar(grep { ($_->{headers}{authorization} // '') eq "Bearer $canary" } @$reqs), 4,
	'each carried the canary key in its Authorization header');

# ---------------------------------------------------------------------------
# Key functions called wrongly.  Errors must not quote the key.
my ($rc, $out, $err);

# Like vb_store_key, but for a call that fails, with the refusal $refusal:
# logging off in its transaction (an error's STATEMENT line included).
sub store_key_fails
{
	my ($what, $call, $refusal) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', qq{
BEGIN;
SET LOCAL log_statement = 'none';
SET LOCAL log_min_duration_statement = -1;
SET LOCAL log_min_error_statement = 'panic';
$call;
COMMIT;});
	isnt($rc, 0, "$what is refused");
	like($err, $refusal, "$what: refused for that reason") or diag("stderr: $err");
	unlike($err, qr/\Q$hex\E/, "$what: the error does not quote the key");
}
store_key_fails('set_provider_key for an unknown provider',
	qq{SELECT vectorbea.set_provider_key('default', 'mistral', '$canary', '$base')},
	qr/ERROR:  unknown provider "mistral"/);
store_key_fails('set_provider_key with an ftp base_url',
	qq{SELECT vectorbea.set_provider_key('default', 'openai', '$canary', 'ftp://models.example')},
	qr/ERROR:  base_url must start with http:\/\/ or https:\/\//);
store_key_fails('set_provider_key for an invalid workspace',
	qq{SELECT vectorbea.set_provider_key('two words', 'openai', '$canary')},
	qr/ERROR:  invalid workspace name "two words"/);
store_key_fails('set_provider_key with a line break after the key',
	qq{SELECT vectorbea.set_provider_key('default', 'openai', E'$canary\\r\\nX-Evil: 1')},
	qr/ERROR:  api_key must not contain control characters/);

# The same wrong call with a plain literal and normal logging: that literal
# may well be logged (the documentation says not to do this); not asserted.
($rc, $out, $err) = $node->psql('postgres',
	qq{SELECT vectorbea.set_provider_key('default', 'mistral', '$wrong_literal')});
isnt($rc, 0, 'set_provider_key for an unknown provider with a plain literal is refused');

($rc, $out, $err) = $node->psql('postgres', q{\set VERBOSITY verbose
SELECT vectorbea.check_provider_key('nokeys', 'openai')});
like($err, qr/42704/, 'check_provider_key for a workspace with no key: 42704');

my $open_file = $node->data_dir . '/vb_master_open';
open(my $fh, '>', $open_file) or die "cannot write $open_file: $!";
print $fh "readable-master-key-0123456789\n";
close $fh;
chmod(0644, $open_file);
for my $bad ('/nonexistent/vb_master', $open_file, $master_path)
{
	($rc, $out, $err) = $node->psql('postgres', qq{SELECT vectorbea.rotate_master_key('$bad')});
	isnt($rc, 0, "rotate_master_key('$bad') is refused");
}
is(sql(q{SELECT vectorbea.check_provider_key('default', 'openai')}), 't',
	'after all that the stored key still decrypts');
is(sql(q{SELECT fingerprint FROM vectorbea.provider_keys WHERE workspace = 'default' AND provider = 'openai'}),
	substr(sha256_hex($canary), 0, 12), 'and is still the canary');

# ---------------------------------------------------------------------------
# An ordinary role.
sql(q{CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA vectorbea TO app;
GRANT SELECT ON vectorbea.provider_key_info TO app;});

# Runs $sql as app; returns psql's exit status, stdout and stderr.
sub as_app
{
	my ($sql) = @_;
	return $node->psql('postgres', "\\set VERBOSITY verbose\n$sql",
		extra_params => [ '-U', 'app' ], on_error_stop => 1);
}

sub app_refused
{
	my ($sql, $state, $what) = @_;
	my ($rc, $out, $err) = as_app($sql);
	isnt($rc, 0, "app: $what is refused");
	like($err, qr/ERROR:\s+$state/, "app: $what fails with $state") or diag("stderr: $err");
	unlike("$out$err", qr/\Q$hex\E/, "app: $what shows no key");
}

is((as_app('SELECT current_user'))[1], 'app', 'connected as app');
app_refused('SELECT * FROM vectorbea.provider_keys', '42501', 'reading provider_keys');
app_refused('SELECT ciphertext FROM vectorbea.provider_keys', '42501', 'reading the ciphertext');
# pgcrypto is where CASCADE put it (vectorbea's schema, whose functions are
# revoked from PUBLIC); named with its schema so the table is what refuses.
my $pgcrypto = sql(q{SELECT quote_ident(n.nspname) FROM pg_extension e
  JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'});
app_refused(qq{SELECT $pgcrypto.pgp_sym_decrypt(ciphertext, 'guess') FROM vectorbea.provider_keys}, '42501',
	'pgp_sym_decrypt on the ciphertext');
app_refused('SELECT ciphertext FROM vectorbea.provider_key_info', '42703',
	'the ciphertext through provider_key_info');
app_refused(q{UPDATE vectorbea.provider_keys SET base_url = 'https://attacker.example/v1'}, '42501',
	'changing base_url with UPDATE');
app_refused(q{SELECT vectorbea.set_provider_key('default', 'openai', 'sk-mine', 'https://attacker.example/v1')},
	'42501', 'set_provider_key');
app_refused(q{SELECT vectorbea.check_provider_key('default', 'openai')}, '42501', 'check_provider_key');
app_refused(q{SELECT vectorbea.rotate_master_key('/tmp/x')}, '42501', 'rotate_master_key');
app_refused(q{SELECT pg_read_file('vb_master_key')}, '42501', 'pg_read_file of the master key file');
app_refused(qq{SELECT pg_read_file('$master_path')}, '42501', 'pg_read_file of the master key file by full path');
app_refused(q{SELECT pg_read_binary_file('vb_master_key')}, '42501', 'pg_read_binary_file of the master key file');

# PG15: a GUC_SUPERUSER_ONLY setting needs superuser or pg_read_all_settings.
($rc, $out, $err) = as_app('SHOW vectorbea.master_key_file');
isnt($rc, 0, 'app: SHOW vectorbea.master_key_file is refused');
like($err, qr/ERROR:\s+42501: must be superuser or have privileges of pg_read_all_settings to examine "vectorbea.master_key_file"/,
	'app: with 42501, must be superuser or pg_read_all_settings') or diag("stderr: $err");
unlike($out, qr/vb_master_key/, 'app: SHOW does not print the path');
app_refused(q{SELECT current_setting('vectorbea.master_key_file')}, '42501', 'current_setting of master_key_file');
($rc, $out, $err) = as_app(q{SELECT count(*) FROM pg_settings WHERE name = 'vectorbea.master_key_file'});
is($out, '0', 'app: pg_settings hides master_key_file');

($rc, $out, $err) = as_app(q{SELECT workspace || '|' || provider || '|' || coalesce(base_url, '') || '|' || fingerprint
  FROM vectorbea.provider_key_info});
is($rc, 0, 'app: provider_key_info is readable') or diag("stderr: $err");
my ($ws, $prov, $url, $fp) = split /\|/, $out;
is("$ws|$prov|$url", "default|openai|$base", 'app: it shows the workspace, provider and base_url');
like($fp, qr/^[0-9a-f]{12}$/, 'app: the fingerprint is 12 hex digits');
is(index($canary, $fp), -1, 'app: the fingerprint is no part of the key');
isnt($fp, substr($canary, 0, 12), 'app: nor its first 12 characters');
is($fp, substr(sha256_hex($canary), 0, 12), 'app: it is the start of the key\'s SHA-256');
is(sql(q{SELECT base_url FROM vectorbea.provider_keys WHERE workspace = 'default'}), $base,
	'base_url is unchanged');

# ---------------------------------------------------------------------------
# A key that does not decrypt under the current master key (here a
# ciphertext copied to another workspace's row) stops its call with an
# error that names it, not pgcrypto's "Wrong key or corrupt data"; the
# scheduler records it and tries again later.
sql(q{INSERT INTO vectorbea.provider_keys (workspace, provider, ciphertext, fingerprint, set_at, base_url)
  SELECT 'moved', provider, ciphertext, fingerprint, set_at, base_url FROM vectorbea.provider_keys
   WHERE workspace = 'default' AND provider = 'openai'});
my $moved = sql(q{SELECT vectorbea.start_run('secret_call', '{"case": "case-ok"}', NULL, '{"workspace": "moved"}')});
ok(defined vb_wait_for($node, qq{SELECT count(*) > 0 FROM vectorbea.events
	WHERE run_id = '$moved' AND type = 'SCHEDULER_ERROR'}, 't', 30), 'the call of the moved key stops');
my $moved_error = sql(qq{SELECT data->>'message' FROM vectorbea.events
	WHERE run_id = '$moved' AND type = 'SCHEDULER_ERROR' ORDER BY seq LIMIT 1});
is($moved_error,
	'the key of provider "openai" in workspace "moved" does not decrypt under the current master key',
	'its error names the key');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$moved' AND type = 'LLM_REQUESTED'}), '0',
	'and no call was made');
# Its lease runs out (the engine clock a minute on): nothing was sent, so
# nothing is in doubt; the attempt fails as transient, counted, and its
# in_doubt policy has no say (it ended as lease_expired, in doubt).
sql(q{SET vectorbea.test_clock_offset = '1m'; SELECT vectorbea.run_due_work()});
is(sql(qq{SELECT string_agg((data->>'class') || ' ' || coalesce(data->'error'->>'in_doubt', 'not in doubt'), ', ')
		FROM vectorbea.events WHERE run_id = '$moved' AND type = 'STEP_FAILED'}), 'transient not in doubt',
	'its lease ran out: a transient failure, not in doubt');
sql(qq{SELECT vectorbea.cancel_run('$moved', 'key stored under another master key')});

# ---------------------------------------------------------------------------
# The canary is nowhere.
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'running'}), '0', 'every run has ended');
is(sql(q{SELECT string_agg(r.id || ': ' || v::text, E'\n') FROM vectorbea.runs r, vectorbea.verify_run(r.id) v}),
	'', 'verify_run finds no difference for any run');

sub nowhere
{
	my ($where, $text) = @_;
	for my $needle ([ 'the canary', $canary ], [ 'its random part', $hex ])
	{
		my $at = index($text, $needle->[1]);
		ok($at < 0, "$needle->[0] is not in $where")
		  or diag("found in $where: ..." . substr($text, $at < 200 ? 0 : $at - 200, 500) . "...");
	}
}

my $pgss = sql('SELECT string_agg(query, E\'\n\') FROM pg_stat_statements');
like($pgss, qr/set_provider_key/, 'pg_stat_statements saw the set_provider_key calls');
nowhere('pg_stat_statements', $pgss);
nowhere('the events', sql(q{SELECT string_agg(data::text, '') FROM vectorbea.events}));
nowhere('the nodes\' errors and outputs',
	sql(q{SELECT string_agg(coalesce(error::text, '') || coalesce(output::text, ''), '') FROM vectorbea.nodes}));
nowhere('the nodes', sql(q{SELECT string_agg(n::text, '') FROM vectorbea.nodes n}));
nowhere('the runs', sql(q{SELECT string_agg(r::text, '') FROM vectorbea.runs r}));
nowhere('scheduler_status()', sql(q{SELECT string_agg(s::text, '') FROM vectorbea.scheduler_status() s}));
nowhere('pg_settings', sql(q{SELECT string_agg(setting, '') FROM pg_settings}));
nowhere('provider_keys (ciphertext only)', sql(q{SELECT string_agg(k::text || encode(ciphertext, 'escape'), '') FROM vectorbea.provider_keys k}));

my $dump_file = $node->basedir . '/dump.sql';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('postgres'), '-f', $dump_file ], 'pg_dump succeeds');
my $dump = slurp_file($dump_file);
like($dump, qr/CREATE EXTENSION IF NOT EXISTS vectorbea/, 'the dump has the extension');
nowhere('the pg_dump output', $dump);

# Last, so that everything above is in it.
my $log = slurp_file($node->logfile);
like($log, qr/statement: /, 'the server log records statements (log_statement = all)');
like($log, qr/statement: SELECT vectorbea\.start_run/, 'the log has the start_run statements');
like($log, qr/DEBUG:/, 'the log has debug messages');
nowhere('the server log', $log);

done_testing();
