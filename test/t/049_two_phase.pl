# 049_two_phase.pl -- engine calls in a prepared transaction (two-phase
# commit): PREPARE TRANSACTION succeeds although the engine would notify,
# and what the transaction left the scheduler is done once COMMIT PREPARED
# has run in another session.
#
# PostgreSQL refuses to prepare a transaction that has notified; the
# engine holds its notifications for the scheduler (050 listens for
# them).  A plain commit wakes the scheduler for the work it leaves, at
# its end; a prepared transaction ends in the session that runs COMMIT
# PREPARED, whose statement wakes the scheduler while it watches a
# prepared transaction that left it work.  The scheduler also polls then,
# the fallback, which is set to an hour here (as its idle sleep is) until
# the last part, so that every part before shows the wake.  Here a
# run with a task and a sleep is started, and a parent of a child run
# cancelled, each in a prepared transaction committed a moment later.
# Then the claims' marks: off in its database while such a transaction
# is prepared (another database's stay on), and back once it has ended,
# across a restart too (one recovered in another database leaves this
# one's on).  Last, a transaction
# prepared before a restart, which the new scheduler's slot does not name:
# the scheduler watches from its first pass; another application's
# prepared transaction, which the scheduler does not watch and whose end
# wakes nobody; more engine transactions prepared at once than the slot
# names; and the poll, with its interval at a second.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use VbTest;

# The scheduler's idle sleep and its poll for prepared transactions (an
# hour each) are longer than the test waits: only the wake of COMMIT
# PREPARED brings it back.
my $node = vb_server('two_phase', q{max_prepared_transactions = 70
vectorbea.prepared_poll_interval = '1h'
shared_preload_libraries = 'vectorbea, pg_stat_statements'
pg_stat_statements.track = all
});
my $sql = sub { return $node->safe_psql('postgres', $_[0]); };
$sql->(q{
CREATE EXTENSION vectorbea CASCADE;
CREATE EXTENSION pg_stat_statements;
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
	'once committed, its sleep started and ended: the node after it is ready');
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

# The claims' marks (src/claim_marks.c) under a prepared transaction that
# makes nodes ready: off from the PREPARE (its commit comes unseen), and
# back once it has ended.  Under a held snapshot the entries of claimed
# nodes stay in the ready index, and a claim that starts at the front
# reads each of them; one that starts at its activity's mark reads none.
$sql->(q{
SELECT vectorbea.define_workflow('tpm', '{"nodes": [{"id": "work", "activity": "tpm_work"}]}');
SELECT vectorbea.start_run('tpm', '{}') FROM generate_series(1, 5000);
CREATE FUNCTION claim_blocks(activity text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	plan json;
BEGIN
	EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM vectorbea.claim_tasks(%L, ARRAY[%L], 10)',
		'blocks', activity) INTO plan;
	RETURN (plan->0->'Plan'->>'Shared Hit Blocks')::int + (plan->0->'Plan'->>'Shared Read Blocks')::int;
END $$;
});
# The last of three claims in one session: the first pays for the
# session's catalog lookups and kept plans.
sub claim_blocks
{
	my @blocks = split /\n/, $sql->(q{SELECT pg_sleep(0.05);
		SELECT claim_blocks('tpm_work'); SELECT claim_blocks('tpm_work'); SELECT claim_blocks('tpm_work')});
	return $blocks[-1];
}
# Holds a snapshot in a session of its own, then claims and completes
# the ready tpm tasks (5,000); returns that session and how many it did.
sub drain_under_held_snapshot
{
	my $holder = $node->background_psql('postgres');
	$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM vectorbea.runs;');
	my $done = 0;
	for (1 .. 40)
	{
		my $n = $sql->(q{SELECT count(vectorbea.complete_task(c.task_id, c.lease, '{}'))
			FROM vectorbea.claim_tasks('w', ARRAY['tpm_work'], 500) c});
		$done += $n;
		last if $n == 0 && $done >= 5000;
		usleep(20_000);
	}
	return ($holder, $done);
}
my ($holder, $done) = drain_under_held_snapshot();
is($done, 5000, 'the 5,000 tasks are done under a held snapshot');
# Claims move the mark at most every 10 ms: past the last claimed entry.
my $on = claim_blocks();
cmp_ok($on, '<', 100, "with the marks on, a claim reads few blocks ($on)");

($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT vectorbea.start_run('tpm', '{}'); PREPARE TRANSACTION 'tpm_ready'});
is($rc, 0, 'a transaction that made a tpm task ready is prepared');
my $off = claim_blocks();
cmp_ok($off, '>', 400, "while it is prepared, claims start at the front: past the 5,000 claimed entries ($off blocks)");
$sql->(q{COMMIT PREPARED 'tpm_ready'});
is($sql->(q{SELECT count(vectorbea.complete_task(c.task_id, c.lease, '{}'))
	FROM vectorbea.claim_tasks('w', ARRAY['tpm_work'], 5) c}), '1',
	'once committed, its task is claimed');
$on = claim_blocks();
cmp_ok($on, '<', 100, "and the marks are back: a claim reads few blocks again ($on)");

# A prepared transaction of another database that made nodes ready there
# drops that database's marks only: this one's claims keep theirs (a
# prepared transaction used to drop every database's).
$sql->(q{CREATE DATABASE elsewhere});
$node->safe_psql('elsewhere', q{CREATE EXTENSION vectorbea CASCADE;
SELECT vectorbea.define_workflow('tpm', '{"nodes": [{"id": "work", "activity": "tpm_work"}]}')});
($rc, $out, $err) = $node->psql('elsewhere',
	q{BEGIN; SELECT vectorbea.start_run('tpm', '{}'); PREPARE TRANSACTION 'tpm_elsewhere'});
is($rc, 0, 'a transaction of another database that made a tpm task ready is prepared');
$on = claim_blocks();
cmp_ok($on, '<', 100, "this database's claims still start at their mark ($on blocks)");
$node->safe_psql('elsewhere', q{COMMIT PREPARED 'tpm_elsewhere'});
is($node->safe_psql('elsewhere', q{SELECT count(vectorbea.complete_task(c.task_id, c.lease, '{}'))
	FROM vectorbea.claim_tasks('w', ARRAY['tpm_work'], 5) c}), '1',
	'and there, once committed, its task is claimed');

# More prepared at once than the list of them holds (64): the one beyond
# it keeps the marks off as well, by its age.
$sql->(q{SELECT vectorbea.define_workflow('tpo', '{"nodes": [{"id": "work", "activity": "tpo_work"}]}')});
for my $i (1 .. 65)
{
	$sql->(qq{BEGIN; SELECT vectorbea.start_run('tpo', '{}'); PREPARE TRANSACTION 'tpo_$i'});
}
$sql->(qq{COMMIT PREPARED 'tpo_$_'}) for 1 .. 64;
$off = claim_blocks();
cmp_ok($off, '>', 400, "with the 65th still prepared, claims start at the front ($off blocks)");
$sql->(q{COMMIT PREPARED 'tpo_65'});
$on = claim_blocks();
cmp_ok($on, '<', 100, "once it has committed, the marks are back ($on blocks)");
is($sql->(q{SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['tpo_work'], 100)}), '65',
	'and the 65 tasks are claimed');
$holder->quit;

# A transaction prepared before the server restarted commits with no
# trace in the new server's memory: the marks stay off until it has ended.
# Run x's first task is claimed, then completed in a prepared transaction,
# which makes its second ready; after the restart, nothing of x is ready
# in what is committed, and run y (after x in the claims' order) is
# drained: that would move a mark past x.
$sql->(q{
SELECT vectorbea.define_workflow('tpr', '{"nodes": [
	{"id": "first", "activity": "tpr_work"},
	{"id": "second", "activity": "tpr_work", "depends_on": ["first"]}]}');
});
my $x = $sql->(q{SELECT vectorbea.start_run('tpr', '{}')});
my ($task, $lease) = split /\|/,
  $sql->(q{SELECT c.task_id, c.lease FROM vectorbea.claim_tasks('w', ARRAY['tpr_work'], 1) c});
($rc, $out, $err) = $node->psql('postgres', qq{BEGIN;
	SELECT vectorbea.complete_task($task, '$lease', '{}');
	PREPARE TRANSACTION 'tpr_first'});
is($rc, 0, "run x's first task, claimed, is completed in a prepared transaction");
# And a run with a sleep started in one, which leaves the scheduler work.
($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT vectorbea.start_run('tp', '{}', 'after-restart');
	  PREPARE TRANSACTION 'tp_restart'});
is($rc, 0, 'a run with a sleep is started in a prepared transaction');
# And one of another database that made a task ready there.
($rc, $out, $err) = $node->psql('elsewhere',
	q{BEGIN; SELECT vectorbea.start_run('tpm', '{}'); PREPARE TRANSACTION 'tpm_elsewhere_restart'});
is($rc, 0, 'a transaction of another database that made a tpm task ready is prepared');
$node->restart;
is($sql->(q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'tpr_first'}), '1',
	'the prepared transaction outlives the restart');
my $y = $sql->(q{SELECT vectorbea.start_run('tpr', '{}')});
for (1 .. 3)
{
	$sql->(q{SELECT pg_sleep(0.05); SELECT count(vectorbea.complete_task(c.task_id, c.lease, '{}'))
		FROM vectorbea.claim_tasks('w', ARRAY['tpr_work'], 5) c});
}
is($sql->(qq{SELECT status FROM vectorbea.runs WHERE id = '$y'}), 'succeeded', 'run y is drained');
$sql->(q{COMMIT PREPARED 'tpr_first'});
is($sql->(q{SELECT string_agg(c.run_id || '/' || c.node, ',')
	FROM vectorbea.claim_tasks('w', ARRAY['tpr_work'], 5) c}), "$x/second",
	"once committed, run x's second task is claimed");
# The scheduler's slot was made anew at the restart, and names no
# prepared transaction: its first pass lists those of the database.  (Its
# first passes are over before the commit: a pass that finds the run is
# the one the COMMIT PREPARED wakes.)
sleep(2);
$sql->(q{COMMIT PREPARED 'tp_restart'});
ok(defined vb_wait_for($node, q{SELECT n.status FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
		WHERE r.idempotency_key = 'after-restart' AND n.node = 'after'}, 'ready', 20),
	'a sleep started by a transaction prepared before the restart starts and ends once it commits');

# The first claim after the restart lists the transactions the server
# recovered as prepared, each with its database: the one still prepared
# in the other database leaves this database's marks on (the first claim
# used to drop every database's until every transaction older than it
# had ended).  The same measure as above: 5,000 tasks drained under a
# held snapshot, then a claim starts at its mark or reads past them all.
$sql->(q{SELECT vectorbea.start_run('tpm', '{}') FROM generate_series(1, 5000)});
($holder, $done) = drain_under_held_snapshot();
is($done, 5000, 'after the restart, 5,000 more tasks are done under a held snapshot');
is($node->safe_psql('elsewhere', q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'tpm_elsewhere_restart'}),
	'1', "while the other database's transaction prepared before the restart still is");
$on = claim_blocks();
cmp_ok($on, '<', 100, "this database's claims start at their mark ($on blocks)");
$holder->quit;
$node->safe_psql('elsewhere', q{COMMIT PREPARED 'tpm_elsewhere_restart'});
is($node->safe_psql('elsewhere', q{SELECT count(vectorbea.complete_task(c.task_id, c.lease, '{}'))
	FROM vectorbea.claim_tasks('w', ARRAY['tpm_work'], 5) c}), '1',
	'and there, once committed, its task is claimed');

# Another application's two-phase commit, beside the engine: a transaction
# prepared after the scheduler started that did no engine work is not
# watched.  Once what the engine's own prepared transaction left is done,
# the scheduler sleeps (its idle sleep is an hour) though that one is still
# prepared; watching every prepared transaction of the database, it passed
# once a second for as long as the other application kept one prepared.
sub passes { return $sql->(q{SELECT wakes FROM vectorbea.scheduler_status()}); }
sub after_ready
{
	my $like = shift;
	return qq{SELECT count(*) FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
		WHERE r.idempotency_key LIKE '$like' AND n.node = 'after' AND n.status = 'ready'};
}
$sql->(q{CREATE TABLE other_app (x int);
	BEGIN; INSERT INTO other_app VALUES (1); PREPARE TRANSACTION 'other_app'});
($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT vectorbea.start_run('tp', '{}', 'beside-other'); PREPARE TRANSACTION 'tp_beside'});
is($rc, 0, "the engine's transaction is prepared beside the other application's");
$sql->(q{COMMIT PREPARED 'tp_beside'});
ok(defined vb_wait_for($node, after_ready('beside-other'), '1', 20),
	'once committed, its sleep starts and ends');
# The pass that found it ended is over by now; from here on nothing is due.
sleep(2);
my $passes = passes();
sleep(3);
is(passes(), $passes, "no pass while only the other application's transaction is prepared");
is($sql->(q{SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'other_app'}), '1', 'which still is');
$sql->(q{ROLLBACK PREPARED 'other_app'});
sleep(2);
is(passes(), $passes, "nor at its ROLLBACK PREPARED: the scheduler watched no prepared transaction");
# Nor while it watches one: the wake is for a watched transaction that has
# ended, not for every COMMIT PREPARED of the database.
($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT vectorbea.start_run('tp', '{}', 'watched'); PREPARE TRANSACTION 'tp_watched'});
is($rc, 0, 'an engine transaction is prepared and watched');
$sql->(q{BEGIN; INSERT INTO other_app VALUES (2); PREPARE TRANSACTION 'other_app_2'});
# Its PREPARE woke the scheduler, whose pass took it.
sleep(1);
$passes = passes();
$sql->(q{COMMIT PREPARED 'other_app_2'});
sleep(2);
is(passes(), $passes, "another application's COMMIT PREPARED makes no pass while the engine's is watched");
$sql->(q{COMMIT PREPARED 'tp_watched'});
ok(defined vb_wait_for($node, after_ready('watched'), '1', 20), "the engine's, once committed, is done");

# More engine transactions prepared at once than the slot names (64): the
# one beyond is watched by its age, so the scheduler still watches for it
# after the first 64 have committed and their work is done, and its
# COMMIT PREPARED wakes it (those of a database watched by age wake it at
# most every 100 ms).  Once it has ended, the scheduler announces the
# retries due since its PREPARE, not every activity with ready work: a
# listener that came after a task of tp_idle was made ready does not hear
# of it.
$sql->(q{SELECT vectorbea.define_workflow('tp_idle', '{"nodes": [{"id": "work", "activity": "tp_idle_work"}]}');
	SELECT vectorbea.start_run('tp_idle', '{}')});
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN vectorbea_tasks;');
for my $i (1 .. 65)
{
	($rc, $out, $err) = $node->psql('postgres',
		qq{BEGIN; SELECT vectorbea.start_run('tp', '{}', 'many-$i'); PREPARE TRANSACTION 'many_$i'});
	die "PREPARE many_$i: $err" if $rc != 0;
}
$sql->(qq{COMMIT PREPARED 'many_$_'}) for 1 .. 64;
ok(defined vb_wait_for($node, after_ready('many-%'), '64', 30),
	'64 prepared runs with a sleep, committed: each sleep starts and ends');
sleep(2);
$sql->(q{COMMIT PREPARED 'many_65'});
ok(defined vb_wait_for($node, after_ready('many-%'), '65', 20),
	'the 65th, beyond the ids the slot names, is done once it commits');
# Its end was seen by then: the pass that started its sleep came after
# it, and the one that ended it a second later.
my @heard = map { $_->[1] } vb_notifications($listener->query_safe('SELECT 1;'));
ok((grep { $_ eq 'tp_after' } @heard), 'the listener heard the sleeps end');
ok(!(grep { $_ eq 'tp_idle_work' } @heard), 'and not of tp_idle, which nothing made ready since');
$listener->quit;

# The poll, the fallback should a wake be missed (none can be made to miss
# here): with its interval at a second, an engine transaction left
# prepared makes the scheduler pass every second, until it has ended.
$sql->(q{ALTER SYSTEM SET vectorbea.prepared_poll_interval = '1s'});
$sql->(q{SELECT pg_reload_conf()});
($rc, $out, $err) = $node->psql('postgres',
	q{BEGIN; SELECT vectorbea.start_run('tp', '{}', 'polled'); PREPARE TRANSACTION 'tp_polled'});
is($rc, 0, 'an engine transaction is prepared with the poll at a second');
# Its PREPARE woke the scheduler, whose pass took it: count from then.
# Those passes do not look for orphaned child runs: a prepared
# transaction's come when it has ended, and the look at every running
# child run (the statements counted here) waits for that (it came at
# every poll, a lingering prepared transaction's for ever).
my $looks = sub {
	return $sql->(q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
		WHERE query LIKE '%FROM vectorbea.runs c WHERE c.parent_run IS NOT NULL%'});
};
sleep(1);
$passes = passes();
my $looked = $looks->();
sleep(5);
cmp_ok(passes() - $passes, '>=', 2, 'the scheduler passes every second while it is prepared');
is($looks->() - $looked, 0, 'and looks for orphaned child runs nowhere meanwhile');
$sql->(q{COMMIT PREPARED 'tp_polled'});
ok(defined vb_wait_for($node, after_ready('polled'), '1', 20), 'once committed, its sleep starts and ends');
cmp_ok($looks->() - $looked, '>', 0, 'and the look at every running child run came once it had ended');

is($sql->(q{SELECT count(*) FROM vectorbea.runs r, LATERAL vectorbea.verify_run(r.id)}), '0',
	'every run agrees with its history');

done_testing();
