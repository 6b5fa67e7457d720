# 051_scheduler_errors.pl -- the scheduler survives an error that escapes
# one of its steps, and the database's session defaults do not reach it.
#
# An error outside the items' own subtransactions (a statement of a batch,
# a commit, a cancel with pg_cancel_backend) ended the background worker:
# the postmaster started another a second later, which lost the llm calls
# in flight, and again every second while the error lasted.  Now the
# scheduler reports the error, rolls back, counts it in scheduler_status()
# and goes on, in the same process, after a pause.  Here a cancel is that
# error: the pid stays, the error is counted, and a sleep started after it
# ends on time.
#
# A database's defaults (ALTER DATABASE ... SET) applied to the scheduler's
# connection too: with default_transaction_read_only = on every step failed,
# and with serializable its locking scans failed on rows changed since
# their snapshot.  The scheduler pins them as it pins search_path; a
# scheduler started under such defaults ends a sleep as usual.  And a
# vectorbea.database no server can serve, written into postgresql.conf by
# hand, stops the server's start instead of being replaced by the default.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('scheduler_errors');
# Every statement of the test runs writable, whatever the database's default.
my $sql = sub { return $node->safe_psql('postgres', "SET default_transaction_read_only = off;\n$_[0]"); };
my $scheduler_pid = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'};

ok(defined vb_wait_for($node, qq{SELECT count(*) FROM ($scheduler_pid) s}, '1'), 'the scheduler is running');
$sql->(q{CREATE EXTENSION vectorbea CASCADE});
$sql->(q{SELECT vectorbea.define_workflow('nap', '{"nodes": [
	{"id": "nap", "kind": "sleep", "sleep": {"for": "1s"}},
	{"id": "after", "activity": "after_nap", "depends_on": ["nap"]}]}')});
ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'the scheduler has made its first pass');

# A sleep ends on time: the node after it becomes ready within 30 s.
my $naps = 0;
my $nap_ends = sub {
	my ($what) = @_;
	$naps++;
	$sql->(qq{SELECT vectorbea.start_run('nap', '{"n": $naps}')});
	ok(defined vb_wait_for($node,
			qq{SELECT count(*) FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
				WHERE r.input->>'n' = '$naps' AND n.node = 'after' AND n.status = 'ready'}, '1', 30),
		"a sleep ends $what");
};

# A cancel: an error outside any item.
my $pid = $sql->($scheduler_pid);
my $errors = $sql->(q{SELECT errors FROM vectorbea.scheduler_status()});
$sql->(qq{SELECT pg_cancel_backend($pid)});
ok(defined vb_wait_for($node, q{SELECT errors FROM vectorbea.scheduler_status()}, $errors + 1),
	'the cancel is counted as an error');
is($sql->(q{SELECT last_error FROM vectorbea.scheduler_status()}), 'canceling statement due to user request',
	'and shown as the last error');
$nap_ends->('after the cancel');
is($sql->($scheduler_pid), $pid, 'in the same scheduler process: it was not restarted');
like(slurp_file($node->logfile), qr/ERROR:  canceling statement due to user request/,
	'the server log has the error');

# A database's session defaults that no step of the scheduler could run
# under; a new scheduler (the old one terminated) connects with them.
$sql->(q{ALTER DATABASE postgres SET default_transaction_read_only = on});
$sql->(q{ALTER DATABASE postgres SET default_transaction_isolation = 'serializable'});
$sql->(qq{SELECT pg_terminate_backend($pid)});
ok(defined vb_wait_for($node, qq{SELECT count(*) FROM ($scheduler_pid) s WHERE pid <> $pid}, '1'),
	'a new scheduler started');
$errors = $sql->(q{SELECT errors FROM vectorbea.scheduler_status()});
$nap_ends->('under read-only and serializable defaults');
is($sql->(q{SELECT errors FROM vectorbea.scheduler_status()}), $errors, 'with no error');
$sql->(q{ALTER DATABASE postgres RESET ALL});

# A vectorbea.database written into postgresql.conf by hand that no server
# can serve (more than 16 databases; a list that is not one) stops the
# start, as documented.  Before, PostgreSQL applied it with a WARNING and
# kept the default: the server started, serving "postgres" only.
my $i = 0;
for my $bad (join(', ', map { "db$_" } 1 .. 17), '"unterminated')
{
	my $other = PostgreSQL::Test::Cluster->new('bad_databases' . $i++);
	$other->init;
	$other->append_conf('postgresql.conf', qq{shared_preload_libraries = 'vectorbea'
vectorbea.database = '$bad'
});
	ok(!$other->start(fail_ok => 1), "a server with vectorbea.database = '$bad' does not start");
	like(slurp_file($other->logfile), qr/FATAL:  (vectorbea.database lists more than 16 databases|invalid list syntax in vectorbea.database)/,
		'and its log says why');
}

done_testing();
