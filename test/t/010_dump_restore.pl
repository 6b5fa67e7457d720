# A logical backup keeps everything: pg_dump marks the extension's data
# tables as configuration, so their rows (workflows, runs, nodes, events,
# approvals, encrypted provider keys, the identity sequences and the prices
# users added or edited) are in the dump, and a restore into another
# database gives runs that replay and verify exactly as before and go on
# where they stopped: an open lease is still honoured, a pending gate can
# still be decided, new ids do not collide, and the stored key still
# decrypts under the same master key.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my ($node, $base) = vb_llm_server('dump');
my $json = vb_json();

sub sql
{
	my ($sql, $db) = @_;
	return $node->safe_psql($db // 'postgres', $sql);
}

vb_store_key($node, 'default', 'openai', 'sk-test-dump-0001', $base);

# Some of everything: a finished run with an llm node, a run waiting at a
# gate, a run with a task held by a worker, edited and added prices.
sql(q{SELECT vectorbea.define_workflow('brief', '{"nodes": [
  {"id": "collect", "activity": "collect"},
  {"id": "brief", "kind": "llm", "depends_on": ["collect"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Summarise {{upstream.collect.output.s}}"}}]}')});
sql(q{SELECT vectorbea.define_workflow('gated', '{"nodes": [
  {"id": "draft", "activity": "draft"},
  {"id": "ok", "kind": "approval", "depends_on": ["draft"], "approval": {"gate": "publish"}},
  {"id": "publish", "activity": "publish", "depends_on": ["ok"]}]}')});
vb_fake_script({ text => 'A brief.', times => -1 });
my $done = sql(q{SELECT vectorbea.start_run('brief')});
my ($t, $l) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['collect'])});
sql(qq{SELECT vectorbea.complete_task($t, '$l', '{"s": "disk full"}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$done'}, 'succeeded'),
	'a run with an llm node finished');
my $gated = sql(q{SELECT vectorbea.start_run('gated')});
($t, $l) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['draft'])});
sql(qq{SELECT vectorbea.complete_task($t, '$l', '{"text": "draft"}')});
my $held = sql(q{SELECT vectorbea.start_run('gated')});
my ($held_task, $held_lease) = split /\|/,
  sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['draft'], lease_duration => '1 day')});
sql(q{UPDATE vectorbea.model_prices SET input_usd_per_mtok = 0.11 WHERE provider = 'openai' AND model = 'gpt-4o-mini';
	  INSERT INTO vectorbea.model_prices VALUES ('openai', 'my-finetune', 1, 2)});

# A workspace mapped to a role: the dump names the role, so a restore maps
# it to the role of that name wherever it is restored (it kept the OID, and
# in another cluster the number names another role, or none).
sql(q{CREATE ROLE vb_tenant_a; SELECT vectorbea.grant_workspace('ws_a', 'vb_tenant_a')});

# model_prices: the user's rows (the list is seeded by CREATE EXTENSION).
my %rows = (map({ $_ => "SELECT count(*) FROM vectorbea.$_" } qw(workflows runs nodes events approvals provider_keys)),
	model_prices => q{SELECT count(*) FROM vectorbea.model_prices WHERE source = 'user'});
my @tables = sort keys %rows;
my %before = map { $_ => sql($rows{$_}) } @tables;
my %replay = map { $_ => sql("SELECT vectorbea.replay('$_')") } ($done, $gated, $held);

# Dump, and restore into a new database.
my $dump = $node->basedir . '/vectorbea.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump succeeds');
my $mapping = '';
IPC::Run::run([ 'pg_restore', '--data-only', '--table=workspace_roles', '-f', '-', $dump ], '>', \$mapping);
like($mapping, qr/^ws_a\tvb_tenant_a\t/m, 'the dump names the role of a workspace, not its OID');
# The role made again, as in another cluster: same name, another OID.
my $old_oid = sql(q{SELECT 'vb_tenant_a'::regrole::oid});
sql(q{DROP ROLE vb_tenant_a; CREATE ROLE vb_tenant_a});
isnt(sql(q{SELECT 'vb_tenant_a'::regrole::oid}), $old_oid, 'the role made again has another OID');
sql('CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ],
	'pg_restore succeeds, with no error');

for my $table (@tables)
{
	is(sql($rows{$table}, 'restored'), $before{$table}, "$table: every row restored");
}
for my $run ($done, $gated, $held)
{
	is(sql("SELECT count(*) FROM vectorbea.verify_run('$run')", 'restored'), '0', "run $run: verify_run is empty");
	is(sql("SELECT vectorbea.replay('$run')", 'restored'), $replay{$run}, "run $run: replays as before");
}
is(sql(q{SELECT string_agg(model || ':' || source || ':' || input_usd_per_mtok, ',' ORDER BY model, source)
	FROM vectorbea.model_prices WHERE model IN ('gpt-4o-mini', 'my-finetune')}, 'restored'),
	'gpt-4o-mini:list:0.15,gpt-4o-mini:user:0.11,my-finetune:user:1',
	'prices: the list is seeded again, the user rows are restored');
is(sql(q{SELECT vectorbea.check_provider_key('default', 'openai')}, 'restored'), 't',
	'the restored key decrypts under the same master key');
is(sql(q{SELECT workspace || ' ' || role FROM vectorbea.workspace_roles}, 'restored'), 'ws_a vb_tenant_a',
	'the restored mapping names the role');
is(sql(q{GRANT USAGE ON SCHEMA vectorbea TO vb_tenant_a; SET ROLE vb_tenant_a;
	SELECT vectorbea.workspace_visible('ws_a')}, 'restored'), 't',
	'and the role of that name, made after the dump, has the workspace');

# The restored runs go on.
sql(qq{SELECT vectorbea.complete_task($held_task, '$held_lease', '{"text": "late draft"}')}, 'restored');
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$held' AND node = 'ok'}, 'restored'), 'waiting',
	'a lease taken before the dump completes its task after the restore');
sql(qq{UPDATE vectorbea.approvals SET status = 'approved' WHERE run_id = '$gated'}, 'restored');
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$gated' AND node = 'publish'}, 'restored'), 'ready',
	'a gate pending at the dump is decided after the restore');
my $new = sql(q{SELECT vectorbea.start_run('gated')}, 'restored');
cmp_ok(sql(qq{SELECT min(id) FROM vectorbea.nodes WHERE run_id = '$new'}, 'restored'), '>',
	sql(qq{SELECT max(id) FROM vectorbea.nodes WHERE run_id <> '$new'}, 'restored'),
	'new node ids continue after the restored ones');
for my $run ($gated, $held, $new)
{
	is(sql("SELECT count(*) FROM vectorbea.verify_run('$run')", 'restored'), '0',
		"run $run: still consistent after going on");
}

done_testing();
