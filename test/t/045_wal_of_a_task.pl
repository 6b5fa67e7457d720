# 045_wal_of_a_task.pl -- a completion writes no row lock of its node.
#
# A claim locks the nodes it takes (FOR UPDATE): one Heap LOCK record each
# in the WAL.  A completion only updates them: the trigger that feeds the
# claims' marks (nodes_note_ready) was a BEFORE UPDATE row trigger, and for
# those PostgreSQL locks every row a statement updates before writing it,
# fired or not, so every completed node cost one more WAL record
# (bench/README.md, "A row trigger that locked every updated node").  Here
# pg_walinspect reads what a claim, a completion and a batch completion
# wrote, in a table small enough that no update moves its row to another
# page (which would log a lock of its own): the claims lock their nodes,
# the completions none.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('wal_of_a_task', "autovacuum = off\n");
my $sql = sub { return $node->safe_psql('postgres', $_[0]); };

$sql->(q{
CREATE EXTENSION pg_walinspect;
CREATE EXTENSION vectorbea CASCADE;
SELECT vectorbea.define_workflow('three', '{"nodes": [{"id": "a", "activity": "work"},
	{"id": "b", "activity": "work"}, {"id": "c", "activity": "work"}]}');
SELECT vectorbea.start_run('three', '{}');
});

# The Heap LOCK records on a row of nodes written by $statements (run in
# one session, one transaction each).
sub node_locks_of
{
	my ($statements) = @_;
	my $out = $sql->(qq{
SELECT pg_current_wal_insert_lsn() AS since \\gset
$statements
SELECT count(*) FROM pg_get_wal_records_info(:'since', pg_current_wal_flush_lsn())
 WHERE resource_manager = 'Heap' AND record_type = 'LOCK'
   AND block_ref LIKE '%/' || pg_relation_filenode('vectorbea.nodes') || ' %';
});
	return (split /\n/, $out)[-1];
}

my $locks = node_locks_of(q{
SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['work'], 1);});
is($locks, '1', 'a claim of one task locks its node: one lock record');
my ($t, $l) = split / /, ($sql->(q{SELECT id || ' ' || lease FROM vectorbea.nodes WHERE status = 'running'}));

$locks = node_locks_of(qq{SELECT vectorbea.complete_task($t, '$l', '{"ok": true}');});
is($locks, '0', 'a completion writes no lock record of its node');

$locks = node_locks_of(q{
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases FROM vectorbea.claim_tasks('w', ARRAY['work'], 2) \gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');});
is($locks, '2', 'a claim of two and their completion in a batch: the claim\'s two lock records only');

is($sql->(q{SELECT status FROM vectorbea.runs}), 'succeeded', 'the run finished');
is($sql->(q{SELECT count(*) FROM vectorbea.verify_run((SELECT id FROM vectorbea.runs))}), '0',
	'and verifies');

done_testing();
