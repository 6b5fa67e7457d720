# LLM calls from databases that are not UTF-8 (issue 16, bad input):
# providers speak JSON in UTF-8, a LATIN1 database holds "é" as one byte,
# and a SQL_ASCII database holds any bytes at all.  Before, jansson built
# no JSON string from text that is not UTF-8 and the request went out
# without that message (the provider got no prompt, and the node
# "succeeded" on an answer to nothing), answers were stored as UTF-8 bytes
# in a LATIN1 database, and an output schema with an accent failed every
# attempt with an internal error.  Now the prompt reaches the provider as
# the same characters in UTF-8, the answer comes back in the database's
# encoding, an answer with a character the encoding lacks fails the node
# with a clear permanent error, and a prompt that is not UTF-8 in a
# SQL_ASCII database fails before anything is sent.
use strict;
use warnings;
use utf8;
use Encode qw(decode encode);
use FindBin;
use lib $FindBin::Bin;
use HTTP::Tiny;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my ($node, $base, $port) = vb_llm_server('encodings');
my $json = JSON::PP->new->canonical->ascii;
my $http = HTTP::Tiny->new(timeout => 30);

# The fake provider's rules, sent as ASCII JSON (the texts are not ASCII).
sub script
{
	my $res = $http->request('POST', "http://127.0.0.1:$port/_fake/script",
		{ content => $json->encode({ rules => [@_] }), headers => { 'content-type' => 'application/json' } });
	die "fake provider: $res->{status} $res->{content}" unless $res->{success};
}

# A statement in database $db with client_encoding $enc; the result decoded.
sub dbq
{
	my ($db, $enc, $sql) = @_;
	my $out = $node->safe_psql($db, "SET client_encoding = '$enc';\n" . encode($enc eq 'UTF8' ? 'UTF-8' : 'latin1', $sql));
	return $enc eq 'UTF8' ? decode('UTF-8', $out) : $out;
}

sub finished
{
	my ($db, $run) = @_;
	my $t0 = time;
	while (time - $t0 < 30)
	{
		my ($rc, $out) = $node->psql($db, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'});
		return $out if $rc == 0 && $out ne 'running';
		select(undef, undef, undef, 0.05);
	}
	return 'running';
}

sub scheduler_pids
{
	return $node->safe_psql('postgres',
		q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
}

$node->safe_psql('postgres', q{
	CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
	CREATE DATABASE raw ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;});
for my $db (qw(latin raw))
{
	$node->safe_psql($db, qq{CREATE EXTENSION vectorbea CASCADE;
		SET log_statement = 'none';
		SELECT vectorbea.set_provider_key('default', 'openai', 'sk-encodings-0123456789', '$base');});
}
# The databases exist before their schedulers start.
$node->append_conf('postgresql.conf', "vectorbea.database = 'postgres, latin, raw'\n");
$node->restart;
ok(defined vb_wait_for($node, q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '3'),
	'a scheduler serves each of the three databases');
my $pids = scheduler_pids();

# ---------------------------------------------------------------------------
# LATIN1: the prompt and the answer keep their characters.
dbq('latin', 'UTF8', q{SELECT vectorbea.define_workflow('menu', '{"nodes": [{"id": "ask", "kind": "llm", "retry": {"max_attempts": 1},
	"llm": {"provider": "openai", "model": "gpt-4o-mini", "system": "Répondez en français.",
			"prompt": "Le plat: {{run.input.plat}}", "max_tokens": 50}}]}');
	SELECT vectorbea.define_workflow('menu_json', '{"nodes": [{"id": "ask", "kind": "llm", "retry": {"max_attempts": 1},
	"llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Un dessert, en JSON",
			"output_schema": {"type": "object", "required": ["plat"],
							  "properties": {"plat": {"type": "string", "description": "le plat préféré"}}}}}]}')});
script({ match => { contains => 'Le plat' }, times => 1, text => 'Réponse: crème brûlée, à point' },
	{ match => { contains => 'Le plat' }, times => 1, text => 'Trop tard → demain' },
	{ match => { contains => 'Un dessert' }, times => 1, text => '{"plat": "crêpe"}' });

my $run = dbq('latin', 'UTF8', q{SELECT vectorbea.start_run('menu', '{"plat": "pâté naïf"}')});
is(finished('latin', $run), 'succeeded', 'LATIN1: an llm node with accents in its prompt succeeds');
# Whatever arrived: before, a message jansson could not encode was left out.
my @messages = map { $_->{content} } @{ vb_fake_requests()->[-1]{body}{messages} // [] };
is_deeply(\@messages, [ 'Répondez en français.', 'Le plat: pâté naïf' ],
	'LATIN1: the provider got the system prompt and the prompt in UTF-8, characters intact');
is(dbq('latin', 'UTF8', qq{SELECT output->>'text' FROM vectorbea.nodes WHERE run_id = '$run'}), 'Réponse: crème brûlée, à point',
	'LATIN1: the answer is stored in the database\'s encoding, characters intact');

$run = dbq('latin', 'UTF8', q{SELECT vectorbea.start_run('menu', '{"plat": "soupe"}')});
is(finished('latin', $run), 'failed', 'LATIN1: an answer with a character LATIN1 lacks fails the node');
is(dbq('latin', 'UTF8', qq{SELECT data->>'class' || ': ' || (data->'error'->>'message') FROM vectorbea.events
						  WHERE run_id = '$run' AND type = 'STEP_FAILED'}),
	'permanent: the answer has a character that the database\'s encoding LATIN1 cannot hold (at byte 10)',
	'LATIN1: with a clear permanent error');

$run = dbq('latin', 'UTF8', q{SELECT vectorbea.start_run('menu_json')});
is(finished('latin', $run), 'succeeded', 'LATIN1: an output schema with accents checks the answer');
is(dbq('latin', 'UTF8', qq{SELECT output->'json'->>'plat' FROM vectorbea.nodes WHERE run_id = '$run'}), 'crêpe',
	'LATIN1: and its JSON is stored, characters intact');
is(dbq('latin', 'UTF8', qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'LATIN1: verify_run is empty');

# ---------------------------------------------------------------------------
# SQL_ASCII: UTF-8 goes through; bytes that are not UTF-8 are refused
# before anything is sent.
$node->safe_psql('raw', q{SELECT vectorbea.define_workflow('echo', '{"nodes": [{"id": "ask", "kind": "llm", "retry": {"max_attempts": 1},
	"llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Echo {{run.input.word}}", "max_tokens": 50}}]}')});
script({ match => { contains => 'Echo' }, times => 1, text => 'écho' });
my $requests = scalar @{ vb_fake_requests() };
$run = dbq('raw', 'UTF8', q{SELECT vectorbea.start_run('echo', '{"word": "déjà"}')});
is(finished('raw', $run), 'succeeded', 'SQL_ASCII: a UTF-8 prompt succeeds');
@messages = map { $_->{content} } @{ vb_fake_requests()->[-1]{body}{messages} // [] };
is_deeply(\@messages, [ 'Echo déjà' ], 'SQL_ASCII: the provider got it as written');
is(dbq('raw', 'UTF8', qq{SELECT output->>'text' FROM vectorbea.nodes WHERE run_id = '$run'}), 'écho',
	'SQL_ASCII: the answer is stored as the provider wrote it');
$requests = scalar @{ vb_fake_requests() };
$run = $node->safe_psql('raw', q{SET client_encoding = 'SQL_ASCII'; SELECT vectorbea.start_run('echo', E'{"word": "caf\xe9 \xff"}')});
is(finished('raw', $run), 'failed', 'SQL_ASCII: a prompt that is not UTF-8 fails the node');
is($node->safe_psql('raw', qq{SELECT data->>'class' || ': ' || (data->'error'->>'message') FROM vectorbea.events
							   WHERE run_id = '$run' AND type = 'STEP_FAILED'}),
	'permanent: node "ask": the prompt is not valid UTF-8 (byte 0xe9 at offset 8); the database\'s encoding is SQL_ASCII, which stores bytes as given, and providers take UTF-8',
	'SQL_ASCII: with a clear permanent error naming the byte');
is(scalar @{ vb_fake_requests() }, $requests, 'SQL_ASCII: nothing was sent');
is($node->safe_psql('raw', qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'LLM_REQUESTED'}), '0',
	'SQL_ASCII: no request is on record');

# ---------------------------------------------------------------------------
# A NUL in an answer: text cannot hold it, and the answer is refused as
# not valid JSON (a transient failure, here the last attempt).
script({ match => { contains => 'Echo' }, times => 1, text => "before\x{0}after" });
$run = dbq('raw', 'UTF8', q{SELECT vectorbea.start_run('echo', '{"word": "nul"}')});
is(finished('raw', $run), 'failed', 'an answer with a NUL fails the node');
like(dbq('raw', 'UTF8', qq{SELECT data->>'class' || ': ' || (data->'error'->>'message') FROM vectorbea.events
						   WHERE run_id = '$run' AND type = 'STEP_FAILED'}),
	qr/^transient: the provider's answer is not valid JSON/, 'as an answer that is not valid JSON');

# ---------------------------------------------------------------------------
is(scheduler_pids(), $pids, 'no scheduler was restarted');
unlike(slurp_file($node->logfile), qr/terminated by signal|server process .* was terminated|internal error/,
	'the server log shows no crash');

done_testing();
