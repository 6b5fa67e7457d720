# ALTER EXTENSION vectorbea UPDATE from the released 0.1.0, with runs in
# flight: a task held under a lease (and an llm node waiting for it), an
# approval gate open, a retry waiting out its backoff, and an llm call on
# the wire while the upgrade commits.  Afterwards the database's extension
# is the same as a fresh CREATE EXTENSION's, object by object (a catalog
# listing, and pg_dump --binary-upgrade, the one pg_dump mode that writes
# out an extension's members), and every run goes on to succeed, with its
# history intact: verify_run is empty, and the events written under 0.1.0
# replay and read as they did before.  An empty database takes the same
# path and compares the same.
#
# A fresh CREATE EXTENSION runs vectorbea--0.2.0.sql, which the Makefile
# makes of the install guard's prelude, the 0.1.0 script and the upgrade
# script without its copy of the prelude (checked here, on the installed
# file).  Both paths so run the same statements, and what the comparison
# catches is whatever an upgrade does differently from a fresh install
# (work that depends on the rows present or on the database's settings),
# or a generated script that lost or doubled something; once a release
# ships a hand-written install script, it compares that script with the
# upgrade path.  An edit of the released script would reach both sides
# alike, so that script is pinned by its hash.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use Digest::SHA;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my $old = '0.1.0';
my $new = '0.2.0';
# How long the fake provider sits on the call that spans the upgrade: far
# longer than an ALTER EXTENSION on a handful of rows takes, with the
# replays and timelines read before it, on a loaded machine too.
my $in_flight_ms = 10_000;

# sha256 of sql/vectorbea--0.1.0.sql as released.
my $released_sha256 = 'bf5fae336ef7751d2364c06fece12990772adbf265c5bd985e9c2989d59979a5';

is(Digest::SHA->new(256)->addfile("$FindBin::Bin/../../sql/vectorbea--$old.sql", 'b')->hexdigest,
	$released_sha256, "sql/vectorbea--$old.sql is the released script (changes go into an upgrade script)");

# The installed vectorbea--0.2.0.sql: the prelude of the upgrade script,
# once, then the 0.1.0 script, then the rest of the upgrade script, each
# without its \echo line.
{
	my $sharedir = `pg_config --sharedir`;
	chomp $sharedir;
	my $installed = slurp_file("$sharedir/extension/vectorbea--$new.sql");
	my ($install, $upgrade) =
	  map { slurp_file("$FindBin::Bin/../../sql/vectorbea--$_.sql") } ($old, "$old--$new");
	s/^\\echo .*\\quit\n//m for $install, $upgrade;
	my ($prelude) = $upgrade =~ /^(-- BEGIN install guard prelude.*?^-- END install guard prelude[^\n]*\n)/ms;
	ok(defined $prelude && $prelude =~ /^SELECT \@extschema\@\.install_check\(\);$/m,
		'the upgrade script has the install guard prelude, which calls the check');
	(my $upgrade_body = $upgrade) =~ s/\Q$prelude\E//;
	my @at = map { index($installed, $_) } ($prelude, $install, $upgrade_body);
	ok($at[0] >= 0 && $at[1] > $at[0] && $at[2] > $at[1],
		"vectorbea--$new.sql holds the prelude, the $old script and the upgrade script, in that order");
	is(scalar(() = $installed =~ /^-- BEGIN install guard prelude/mg), 1, "vectorbea--$new.sql has the prelude once");
	unlike(substr($installed, 0, $at[0]), qr/^(?!\\echo )[^\s\/*]/m,
		"vectorbea--$new.sql has no statement before the prelude");
}

my ($node, $base) = vb_llm_server('upgrade', undef, $old);

sub sql
{
	my ($sql, $db) = @_;
	return $node->safe_psql($db // 'postgres', $sql);
}

sub refusal
{
	my ($sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	return $rc == 0 ? "accepted: $out" : $err;
}

sub extversion
{
	return sql(q{SELECT extversion FROM pg_extension WHERE extname = 'vectorbea'}, shift);
}

is(extversion(), $old, "the extension starts at $old");

# The 0.1.0 definitions are SECURITY DEFINER: under them the new library
# acts for the session's role, as 0.1.0 did (src/caller.c), until the
# update makes them doors that act for current_user.  A workflow defined
# by an application role belongs to that role, not to the extension's
# owner, and another role may not add a version of it.
sql(q{CREATE ROLE vb_up_app; CREATE ROLE vb_up_other;
	  GRANT USAGE ON SCHEMA vectorbea TO vb_up_app, vb_up_other;
	  GRANT EXECUTE ON FUNCTION vectorbea.define_workflow(text, jsonb) TO vb_up_app, vb_up_other});
sql(q{SET ROLE vb_up_app; SELECT vectorbea.define_workflow('apps', '{"nodes": [{"id": "a", "activity": "a"}]}')});
is(sql(q{SELECT created_by FROM vectorbea.workflows WHERE name = 'apps'}), 'vb_up_app',
	"under ${old}'s definitions a workflow belongs to the role that defined it");
like(refusal(q{SET ROLE vb_up_other; SELECT vectorbea.define_workflow('apps', '{"nodes": [{"id": "b", "activity": "b"}]}')}),
	qr/42501.*vb_up_other/s, 'and another role may not add a version of it');
# Gone again, so that the grants do not tell the upgraded extension from a fresh one.
sql(q{REVOKE EXECUTE ON FUNCTION vectorbea.define_workflow(text, jsonb) FROM vb_up_app, vb_up_other;
	  REVOKE USAGE ON SCHEMA vectorbea FROM vb_up_app, vb_up_other;
	  DROP ROLE vb_up_app, vb_up_other});
vb_store_key($node, 'default', 'openai', 'sk-test-upgrade-0001', $base);

# ---------------------------------------------------------------------------
# Runs left in flight under 0.1.0.
sql(q{SELECT vectorbea.define_workflow('held', '{"nodes": [
  {"id": "work", "activity": "work"},
  {"id": "summary", "kind": "llm", "depends_on": ["work"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Summarise {{upstream.work.output.note}}"}}]}')});
sql(q{SELECT vectorbea.define_workflow('gated', '{"nodes": [
  {"id": "ok", "kind": "approval", "approval": {"gate": "publish"}},
  {"id": "publish", "activity": "publish", "depends_on": ["ok"]}]}')});
sql(q{SELECT vectorbea.define_workflow('retried', '{"nodes": [
  {"id": "call", "activity": "call", "retry": {"max_attempts": 3, "initial": "1h", "max": "1h", "jitter": false}}]}')});
sql(q{SELECT vectorbea.define_workflow('asking', '{"nodes": [
  {"id": "ask", "kind": "llm",
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Answer while the upgrade is in flight"}}]}')});
vb_fake_script(
	{ match => { contains => 'upgrade is in flight' }, delay_ms => $in_flight_ms, text => 'answered across the upgrade' },
	{ match => { contains => 'Summarise' }, text => 'a summary', times => -1 });

# A task held by a worker, under a lease of a day; the llm node after it
# waits.
my $held = sql(q{SELECT vectorbea.start_run('held')});
my ($held_task, $held_lease) = split /\|/,
  sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['work'], lease_duration => '1 day')});
ok($held_task && $held_lease, 'a task is held under a lease');

# An approval gate, open.
my $gated = sql(q{SELECT vectorbea.start_run('gated')});
is(sql(qq{SELECT status FROM vectorbea.approvals WHERE run_id = '$gated'}), 'pending', 'a gate is open');

# A retry waiting out an hour's backoff.
my $retried = sql(q{SELECT vectorbea.start_run('retried')});
my ($t, $l) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['call'])});
is(sql(qq{SELECT vectorbea.fail_task($t, '$l', '{"message": "try later", "class": "transient"}')}),
	'retrying', 'a failed attempt waits for its retry');

# An llm call on the wire: recorded as sent, and held by the fake provider.
my $asking = sql(q{SELECT vectorbea.start_run('asking')});
ok(defined vb_wait_for($node,
		qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$asking' AND type = 'LLM_REQUESTED'}, '1'),
	'an llm call was recorded as sent');
my $t0 = time;
usleep(20_000) until vb_fake_stats()->{in_flight} == 1 || time - $t0 > 10;
is(vb_fake_stats()->{in_flight}, 1, 'and it is in flight');

# What the library has and the 0.1.0 schema cannot hold is refused before
# anything is written (0A000), not taken and then dropped or failed later:
# a quorum (the gate would open without it, and one person decides it) and
# a pause at the budget (a 0.1.0 run cannot be paused).
my $versions_before = sql(q{SELECT count(*) FROM vectorbea.workflows});
like(refusal(q{SELECT vectorbea.define_workflow('two_sign', '{"nodes": [{"id": "sign", "kind": "approval",
	 "approval": {"gate": "big_spend", "quorum": 2, "approvers": ["ana", "ben"]}}]}')}),
	qr/0A000: invalid workflow definition: node "sign" uses "approval.approvers", which this database's vectorbea does not have yet/,
	"a quorum is refused on the $old schema");
like(refusal(q{SELECT vectorbea.define_workflow('napping', '{"nodes": [{"id": "nap", "kind": "sleep", "sleep": {"for": "1h"}}]}')}),
	qr/0A000: invalid workflow definition: node "nap" uses kind "sleep"/, "a sleep node is refused on the $old schema");
is(sql(q{SELECT count(*) FROM vectorbea.workflows}), $versions_before, 'and neither definition was stored');
my $runs_before = sql(q{SELECT count(*) FROM vectorbea.runs});
like(refusal(q{SELECT vectorbea.start_run('retried', '{}', NULL, '{"budget_tokens": 5, "on_budget": "pause"}')}),
	qr/0A000: invalid run options: field "on_budget" uses "pause", which this database's vectorbea does not have yet/,
	"a pause at the budget is refused on the $old schema");
is(sql(q{SELECT count(*) FROM vectorbea.runs}), $runs_before, 'and no run was started');

my @runs = ($held, $gated, $retried, $asking);
my %name = ($held => 'held task', $gated => 'open gate', $retried => 'waiting retry', $asking => 'llm call');
my %replay = map { $_ => sql("SELECT vectorbea.replay('$_')") } @runs;
my %timeline = map { $_ => sql("SELECT string_agg(line, E'\\n') FROM vectorbea.timeline('$_') AS line") } @runs;
my %last_seq = map { $_ => sql("SELECT last_seq FROM vectorbea.runs WHERE id = '$_'") } @runs;

# ---------------------------------------------------------------------------
# The upgrade.
sql('ALTER EXTENSION vectorbea UPDATE');
is(extversion(), $new, "ALTER EXTENSION UPDATE brings it to $new");
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$asking' AND type = 'LLM_CALLED'})
	  . ' ' . vb_fake_stats()->{in_flight},
	'0 1', 'the llm call is still in flight after the upgrade committed');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}), '1',
	'the scheduler is still running');

# ---------------------------------------------------------------------------
# The upgraded extension against a fresh one.

# Every member of the extension with its definition, one item a line:
# functions (pg_get_functiondef), relations (kind, row security, columns
# with types, defaults and identity, constraints, indexes, triggers,
# policies, view definitions, sequence parameters), grants on them and on
# their columns and schema (aclexplode), initial privileges, comments, the
# tables pg_dump dumps, and the price list CREATE EXTENSION seeds.
my $catalog_sql = <<'SQL';
WITH ext AS (
	SELECT e.* FROM pg_extension e WHERE e.extname = 'vectorbea'
), member AS (
	SELECT d.classid, d.objid, pg_describe_object(d.classid, d.objid, 0) AS obj
	  FROM pg_depend d, ext
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
), fn AS (
	SELECT m.obj, p.* FROM member m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
), rel AS (
	SELECT m.obj, c.* FROM member m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
), acl(obj, what, acl) AS (
	-- privileges as granted, or the defaults where none were (a NULL acl)
	SELECT 'schema ' || n.nspname, 'grant', coalesce(n.nspacl, acldefault('n', n.nspowner))
	  FROM ext JOIN pg_namespace n ON n.oid = ext.extnamespace
	UNION ALL
	SELECT obj, 'grant', coalesce(proacl, acldefault('f', proowner)) FROM fn
	UNION ALL
	SELECT obj, 'grant', coalesce(relacl, acldefault(CASE relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", relowner))
	  FROM rel
	UNION ALL
	SELECT rel.obj, 'grant on column ' || at.attname, at.attacl
	  FROM rel JOIN pg_attribute at ON at.attrelid = rel.oid AND at.attnum > 0 AND NOT at.attisdropped
	 WHERE at.attacl IS NOT NULL
), line(obj, what, def) AS (
	SELECT acl.obj, acl.what,
		   CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END || ' ' || x.privilege_type
		   || CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END || ' (by ' || x.grantor::regrole || ')'
	  FROM acl, LATERAL aclexplode(acl.acl) x
	UNION ALL
	SELECT 'extension vectorbea', 'extension',
		   format('version %s, schema %s, relocatable %s, owner %s, requires %s', extversion,
				  extnamespace::regnamespace, extrelocatable, extowner::regrole,
				  (SELECT string_agg(r.extname, ', ' ORDER BY r.extname) FROM pg_depend d
					 JOIN pg_extension r ON r.oid = d.refobjid
					WHERE d.classid = 'pg_extension'::regclass AND d.objid = ext.oid
					  AND d.refclassid = 'pg_extension'::regclass))
	  FROM ext
	UNION ALL
	SELECT 'extension vectorbea', 'dumped table', c.oid::regclass || ' ' || x.cond
	  FROM ext, unnest(ext.extconfig, ext.extcondition) AS x(oid, cond) JOIN pg_class c ON c.oid = x.oid
	UNION ALL
	SELECT 'schema ' || n.nspname, 'schema', 'owner ' || n.nspowner::regrole
	  FROM ext JOIN pg_namespace n ON n.oid = ext.extnamespace
	UNION ALL
	SELECT obj, 'member', '' FROM member
	UNION ALL
	SELECT obj, 'definition',
		   CASE prokind WHEN 'a' THEN E'an aggregate (the dump shows it)\n' ELSE pg_get_functiondef(oid) END
		   || 'owner ' || proowner::regrole
	  FROM fn
	UNION ALL
	SELECT obj, 'relation', format('kind %s, persistence %s, row security %s, forced %s, options %s, owner %s',
								   relkind, relpersistence, relrowsecurity, relforcerowsecurity,
								   reloptions, relowner::regrole)
	  FROM rel
	UNION ALL
	SELECT rel.obj, 'column ' || lpad(at.attnum::text, 3, '0'),
		   format('%s %s%s%s%s%s%s', at.attname, format_type(at.atttypid, at.atttypmod),
				  CASE WHEN at.attnotnull THEN ' NOT NULL' ELSE '' END,
				  ' DEFAULT ' || pg_get_expr(ad.adbin, ad.adrelid),
				  CASE at.attidentity WHEN 'a' THEN ' GENERATED ALWAYS AS IDENTITY'
									  WHEN 'd' THEN ' GENERATED BY DEFAULT AS IDENTITY' ELSE '' END,
				  CASE at.attgenerated WHEN 's' THEN ' GENERATED STORED' ELSE '' END,
				  ' COLLATE ' || nullif(at.attcollation, 0)::regcollation)
	  FROM rel JOIN pg_attribute at ON at.attrelid = rel.oid AND at.attnum > 0 AND NOT at.attisdropped
	  LEFT JOIN pg_attrdef ad ON ad.adrelid = at.attrelid AND ad.adnum = at.attnum
	 WHERE rel.relkind <> 'S'
	UNION ALL
	SELECT rel.obj, 'constraint', co.conname || ' ' || pg_get_constraintdef(co.oid)
	  FROM rel JOIN pg_constraint co ON co.conrelid = rel.oid
	UNION ALL
	SELECT rel.obj, 'index', pg_get_indexdef(i.indexrelid)
	  FROM rel JOIN pg_index i ON i.indrelid = rel.oid
	UNION ALL
	SELECT rel.obj, 'trigger',
		   pg_get_triggerdef(t.oid) || CASE t.tgenabled WHEN 'O' THEN '' ELSE ' (enabled ' || t.tgenabled::text || ')' END
	  FROM rel JOIN pg_trigger t ON t.tgrelid = rel.oid AND NOT t.tgisinternal
	UNION ALL
	SELECT rel.obj, 'policy', format('%s %s %s TO %s USING (%s) WITH CHECK (%s)', p.polname, p.polcmd,
		   CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
		   (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END, ', ' ORDER BY 1)
			  FROM unnest(p.polroles) r),
		   pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
	  FROM rel JOIN pg_policy p ON p.polrelid = rel.oid
	UNION ALL
	SELECT obj, 'view', pg_get_viewdef(oid) FROM rel WHERE relkind IN ('v', 'm')
	UNION ALL
	SELECT rel.obj, 'sequence', format('%s start %s increment %s min %s max %s cache %s cycle %s owned by %s',
		   s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
		   (SELECT string_agg(pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid), ', ')
			  FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = rel.oid
			   AND d.deptype IN ('a', 'i') AND d.refclassid = 'pg_class'::regclass))
	  FROM rel JOIN pg_sequence s ON s.seqrelid = rel.oid
	UNION ALL
	SELECT m.obj, 'comment', d.description
	  FROM member m JOIN pg_description d ON d.classoid = m.classid AND d.objoid = m.objid AND d.objsubid = 0
	UNION ALL
	SELECT rel.obj, 'comment on column ' || at.attname, d.description
	  FROM rel JOIN pg_description d ON d.classoid = 'pg_class'::regclass AND d.objoid = rel.oid AND d.objsubid > 0
	  JOIN pg_attribute at ON at.attrelid = rel.oid AND at.attnum = d.objsubid
	UNION ALL
	SELECT m.obj, 'initial privileges' || CASE WHEN ip.objsubid > 0 THEN ' of column ' || ip.objsubid ELSE '' END,
		   ip.privtype::text || ' ' || ip.initprivs::text
	  FROM member m JOIN pg_init_privs ip ON ip.classoid = m.classid AND ip.objoid = m.objid
	UNION ALL
	SELECT 'table model_prices', 'listed price',
		   format('%s %s %s %s', provider, model, input_usd_per_mtok, output_usd_per_mtok)
	  FROM vectorbea.model_prices WHERE source = 'list'
)
SELECT obj || ' | ' || what || ' | ' || def FROM line ORDER BY obj, what, def;
SQL

sub catalog { return sql($catalog_sql, shift) . "\n"; }

# pg_dump leaves an extension's members out of a dump, except in
# --binary-upgrade mode, where it writes each one out (with ALTER
# EXTENSION ... ADD, its grants and initial privileges).  What differs
# between two databases by nature is masked: the OIDs and relfilenodes it
# pins, relfrozenxid, the LSNs of the attribute versions, where the
# sequences stand (rows, not definitions), and the random key of
# \restrict.  The OIDs of the dumped tables are named.
sub schema_dump
{
	my $db = shift;
	my ($out, $err);
	IPC::Run::run([ 'pg_dump', '--schema-only', '--binary-upgrade', '-d', $node->connstr($db) ],
		'>', \$out, '2>', \$err)
	  or die "pg_dump of $db failed: $err";
	my %relname = map { split / /, $_, 2 } split /\n/,
	  sql(q{SELECT c.oid || ' ' || c.oid::regclass FROM pg_class c
			 WHERE c.relnamespace = 'vectorbea'::regnamespace}, $db);
	my @lines;
	for (split /\n/, $out)
	{
		next if /^\\(un)?restrict /;
		s/^(SELECT pg_catalog\.binary_upgrade_set_next_\w+)\(.*\);$/$1(...);/;
		if (/^(SELECT pg_catalog\.binary_upgrade_create_empty_extension\((?:'[^']*', ){2}\w+, '[^']*', )'\{([\d,]*)\}'(.*)$/)
		{
			my ($head, $oids, $tail) = ($1, $2, $3);
			$_ = $head . "'{" . join(',', map { $relname{$_} // $_ } split(/,/, $oids)) . "}'" . $tail;
		}
		s/^SET relfrozenxid = '\d+', relminmxid = '\d+'$/SET relfrozenxid = ..., relminmxid = .../;
		s/^(SELECT pg_catalog\.setval\('[^']+', )\d+, (true|false)\);$/$1...);/;
		s/^WHERE oid = '\d+';$/WHERE oid = ...;/;
		push @lines, $_;
	}
	return join("\n", @lines) . "\n";
}

# Whether $got (from database $db) equals $want (from the fresh one); a
# unified diff when not.
sub same_as_fresh
{
	my ($got, $want, $db, $what) = @_;
	return pass("$db: $what as in a fresh install") if $got eq $want;
	(my $stem = $node->basedir . "/$what") =~ s/ /_/g;
	my @files = ("$stem.$db.txt", "$stem.fresh.txt");
	for my $f ([ $files[0], $got ], [ $files[1], $want ])
	{
		open(my $fh, '>', $f->[0]) or die "cannot write $f->[0]: $!";
		print $fh $f->[1];
		close $fh;
	}
	my ($diff, $err);
	IPC::Run::run([ 'diff', '-u', '--label', "$db (upgraded from $old)", '--label', "fresh ($new)", @files ],
		'>', \$diff, '2>', \$err);
	fail("$db: $what as in a fresh install");
	diag($diff);
	return;
}

sql('CREATE DATABASE fresh');
sql('CREATE EXTENSION vectorbea CASCADE', 'fresh');
is(extversion('fresh'), $new, "a fresh CREATE EXTENSION installs $new");
my $fresh_catalog = catalog('fresh');
my $fresh_dump = schema_dump('fresh');
cmp_ok(scalar(() = $fresh_catalog =~ /\| member \|/g), '>', 30, 'the catalog listing sees the members');
like($fresh_dump, qr/ALTER EXTENSION vectorbea ADD FUNCTION vectorbea\.claim_tasks/,
	'the dump writes out the members');

same_as_fresh(catalog('postgres'), $fresh_catalog, 'postgres', 'catalog');
same_as_fresh(schema_dump('postgres'), $fresh_dump, 'postgres', 'schema dump');

# The same path with no runs at all.
sql('CREATE DATABASE empty');
sql("CREATE EXTENSION vectorbea VERSION '$old' CASCADE", 'empty');
is(extversion('empty'), $old, "an empty database at $old");
sql('ALTER EXTENSION vectorbea UPDATE', 'empty');
is(extversion('empty'), $new, "and updated to $new");
same_as_fresh(catalog('empty'), $fresh_catalog, 'empty', 'catalog');
same_as_fresh(schema_dump('empty'), $fresh_dump, 'empty', 'schema dump');

# 0.1.0 took any price; 0.2.0 bounds them.  A price above the bound stops
# the update with the rows to correct, and the database stays at 0.1.0
# until they are.
sql('CREATE DATABASE priced');
sql("CREATE EXTENSION vectorbea VERSION '$old' CASCADE", 'priced');
sql(q{INSERT INTO vectorbea.model_prices VALUES ('openai', 'my-finetune', 2000000, 1)}, 'priced');
my ($rc, $out, $err) = $node->psql('priced', "\\set VERBOSITY verbose\nALTER EXTENSION vectorbea UPDATE");
like($err, qr/23514: vectorbea 0\.2\.0 takes prices of at most 1000000 USD per million tokens, and model_prices has some above it\n.*DETAIL:  Above the bound: openai\/my-finetune \(user source, input 2000000, output 1\)\.\n.*HINT:  Correct or delete those rows/s,
	'a price above the bound stops the update, naming the row');
is(extversion('priced'), $old, 'and the database stays at the old version');
sql(q{UPDATE vectorbea.model_prices SET input_usd_per_mtok = 20 WHERE model = 'my-finetune'}, 'priced');
sql('ALTER EXTENSION vectorbea UPDATE', 'priced');
is(extversion('priced'), $new, 'once the price is corrected, the update goes through');

# ---------------------------------------------------------------------------
# The runs go on under 0.2.0.

# The lease taken under 0.1.0 still holds; completing the task readies
# the llm node, which the scheduler calls.
like(sql(qq{SELECT vectorbea.heartbeat($held_task, '$held_lease')}), qr/^\d{4}-/,
	'held task: its lease still holds after the upgrade');
sql(qq{SELECT vectorbea.complete_task($held_task, '$held_lease', '{"note": "upgraded"}')});

# The gate is decided by UPDATE, and the task after it done.
sql(qq{UPDATE vectorbea.approvals SET status = 'approved', decided_by = 'upgrade-test', reason = 'after the upgrade'
		WHERE run_id = '$gated'});
is(sql(qq{SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['publish']) t,
		LATERAL vectorbea.complete_task(t.task_id, t.lease, '{"published": true}') c}), '1',
	'open gate: decided, and the task after it completed');

# The retry comes due (the engine clock two hours on) and succeeds.
is(sql(q{SET vectorbea.test_clock_offset = '2h';
		 SELECT t.attempt FROM vectorbea.claim_tasks('w', ARRAY['call']) t,
		 LATERAL vectorbea.complete_task(t.task_id, t.lease, '{"on": "retry"}') c}), '2',
	'waiting retry: attempt 2 came due and completed');

for my $run (@runs)
{
	ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}, 'succeeded', 30),
		"$name{$run}: the run succeeds");
}
is(sql(qq{SELECT output->>'text' FROM vectorbea.nodes WHERE run_id = '$asking'}), 'answered across the upgrade',
	'llm call: the answer that came back after the upgrade is the output');
is(sql(qq{SELECT string_agg(type, ',' ORDER BY seq) FROM vectorbea.events
		   WHERE run_id = '$asking' AND type LIKE 'LLM_%'}),
	'LLM_REQUESTED,LLM_CALLED', 'llm call: sent under the old version, answered under the new');
is(sql(qq{SELECT output->>'text' FROM vectorbea.nodes WHERE run_id = '$held' AND node = 'summary'}), 'a summary',
	'held task: the llm node queued behind it ran after the upgrade');

for my $run (@runs)
{
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', "$name{$run}: verify_run is empty");
	# 0.2.0's replay adds the keys "gates" and "child_usage"; every key
	# 0.1.0 gave is as it was.
	is(sql(qq{SELECT vectorbea.replay('$run', $last_seq{$run}) - 'gates' - 'child_usage'}), $replay{$run},
		"$name{$run}: the events written under $old replay as they did");
	is(sql(qq{SELECT string_agg(line, E'\\n') FROM (SELECT line FROM vectorbea.timeline('$run') AS line
				LIMIT (SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND seq <= $last_seq{$run})) s}),
		$timeline{$run}, "$name{$run}: and read the same in its timeline");
	is(sql(qq{SELECT vectorbea.replay('$run') = vectorbea.replay('$run')
				AND vectorbea.replay('$run')->>'status' = 'succeeded'}), 't',
		"$name{$run}: the whole history replays to the succeeded run");
}

# The 0.2.0 library wrote the held run's specs with every field (its
# schema was 0.1.0's); runs of 0.2.0 leave the defaults out.  A fork of it
# with another version still reruns only what changed: the work node,
# the same in both versions, is reused.
is(sql(qq{SELECT data->'nodes'->0 ? 'retry' FROM vectorbea.events WHERE run_id = '$held' AND seq = 1}), 't',
	'held task: its RUN_STARTED has every field of its specs');
sql(q{SELECT vectorbea.define_workflow('held', '{"nodes": [
  {"id": "work", "activity": "work"},
  {"id": "summary", "kind": "llm", "depends_on": ["work"],
   "llm": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Summarise again {{upstream.work.output.note}}"}}]}')});
my $fork = sql(qq{SELECT vectorbea.fork_run('$held', 'summary', '{}', 2)});
is(sql(qq{SELECT data->'nodes'->0 ? 'retry' FROM vectorbea.events WHERE run_id = '$fork' AND seq = 1}), 'f',
	'fork with version 2: its RUN_STARTED leaves the defaults out');
is(sql(qq{SELECT status || ' ' || (output->>'note') FROM vectorbea.nodes WHERE run_id = '$fork' AND node = 'work'}),
	'succeeded upgraded', 'fork with version 2: the unchanged node is reused, not run again');
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$fork'}, 'succeeded', 30),
	'fork with version 2: the changed llm node runs and the fork succeeds');

done_testing();
