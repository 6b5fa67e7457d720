# 049_two_phase.pl -- engine calls in a prepared transaction (two-phase
# commit): PREPARE TRANSACTION succeeds although the engine would notify,
# and what the transaction left the scheduler is done once COMMIT PREPARED
# has run in another session, which wakes nobody.
#
# PostgreSQL refuses to prepare a transaction that has notified; the
# engine drops its notifications when the transaction is prepared (they
# are hints: workers poll).  A plain commit wakes the scheduler for the
# work it leaves; COMMIT PREPARED cannot, so the scheduler passes once a
# second while a prepared transaction that left it work is left.  Here a
# run with a task and a sleep is started, and a parent of a child run
# cancelled, each in a prepared transaction committed a moment later.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use VbTest;

# The scheduler's idle sleep (an hour in the tests) is longer than the
# test waits: only the poll for prepared transactions brings it back.
my $node = vb_server('two_phase', q{max_prepared_transactions = 2
});
my $sql = sub { return $node->safe_psql('postgres', $_[0]); };
$sql->(q{
CREATE EXTENSION vectorbea CASCADE;
SELECT vectorbea.define_workflow('tp', '{"nodes": [
	{"id": "work", "activity": "tp_work"},
	{"id": "nap", "kind": "sleep", "sleep": {"for": "1s"}},
	{"id": "after", "activity": "tp_after", "depends_on": ["nap"]}]}');
SELECT vectorbea.define_workflow('tp_kid', '{"nodes": [{"id": "work", "activity": "tp_kid_work"}]}');
SELECT vectorbea.define_workflow('tp_mom', '{"nodes": [{"id": "kid", "kind": "run", "run": {"workflow": "tp_kid"}}]}');
});
is($sql->(q{SHOW vectorbea.notify_tasks}), 'on', 'notifications are on');

# Let the scheduler finish its first passes and go to sleep.
sleep(2);
my ($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT vectorbea.start_run('tp', '{}'); PREPARE TRANSACTION 'start_tp'});
is($rc, 0, 'a transaction that started a run (a ready task) is prepared');
is($err, '', 'without an error about NOTIFY');
is($sql->(q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'start_tp'}), '1', 'and waits to be committed');
usleep(1_500_000);
$sql->(q{COMMIT PREPARED 'start_tp'});
my $run = $sql->(q{SELECT id FROM vectorbea.runs WHERE workflow = 'tp'});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$run' AND node = 'after'},
		'ready', 20),
	'once committed, its sleep started and ended without a wake: the node after it is ready');
is($sql->(q{SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['tp_work', 'tp_after'], 5)}), '2',
	'a worker claims its two tasks');

# A parent cancelled in a prepared transaction: its child is cancelled
# once the cancel has committed.
my $mom = $sql->(q{SELECT vectorbea.start_run('tp_mom', '{}')});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE parent_run = '$mom'}, 'running'),
	'a child runs');
sleep(2);
($rc, $out, $err) = $node->psql('postgres',
	qq{BEGIN; SELECT vectorbea.cancel_run('$mom', 'two-phase'); PREPARE TRANSACTION 'cancel_mom'});
is($rc, 0, 'a cancel is prepared');
usleep(1_500_000);
is($sql->(qq{SELECT status FROM vectorbea.runs WHERE parent_run = '$mom'}), 'running',
	'while it is prepared, the child runs');
$sql->(q{COMMIT PREPARED 'cancel_mom'});
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE parent_run = '$mom'}, 'cancelled', 20),
	'once committed, the child is cancelled');

is($sql->(q{SELECT count(*) FROM vectorbea.runs r, LATERAL vectorbea.verify_run(r.id)}), '0',
	'every run agrees with its history');

done_testing();
