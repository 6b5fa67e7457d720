# 041_early_lock_release.pl -- vectorbea.early_lock_release: a commit that
# wrote events releases its run locks before its WAL flush, and is answered
# only once the flush is done.
#
# With the setting on (and the WAL writer slowed to 10 s, autovacuum off,
# so that nothing else flushes the WAL for us):
# - each of 20 completions, and each claim before it, is flushed by the time
#   its COMMIT returns (the flush position has passed the WAL position read
#   just before the COMMIT), and the session's synchronous_commit is still
#   "on" after each (the setting's change is the commit's own);
# - four workers drain one run of 400 tasks and a join concurrently: every
#   node succeeds once, the run succeeds, its events are numbered 1..last
#   without gaps and verify_run() finds nothing;
# - with synchronous_standby_names set (a standby that never comes), a
#   completion's commit waits for the standby as before: the setting never
#   skips synchronous replication.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);
use VbTest;

my $node = vb_server('early_lock_release', qq{
vectorbea.early_lock_release = on
wal_writer_delay = '10s'
autovacuum = off
wal_level = replica
max_wal_senders = 2
});
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');

sub sql { return $node->safe_psql('postgres', $_[0]); }

my @nodes = map { qq({"id": "t$_", "activity": "elr"}) } 1 .. 400;
my $deps = join(', ', map { qq("t$_") } 1 .. 400);
sql(qq{SELECT vectorbea.define_workflow('wide', '{"nodes": [@{[ join(', ', @nodes) ]},
	{"id": "join", "activity": "elr", "depends_on": [$deps]}]}')});
sql(q{SELECT vectorbea.define_workflow('one', '{"nodes": [{"id": "a", "activity": "flush"}]}')});

# --- Every commit that wrote events is flushed before it is answered.
sql(q{
CREATE PROCEDURE public.claim_complete_check(n int, INOUT flushed int, INOUT done int,
											 INOUT setting_kept int)
LANGUAGE plpgsql AS $$
DECLARE
	t record;
	before pg_lsn;
BEGIN
	flushed := 0;
	done := 0;
	setting_kept := 0;
	FOR i IN 1 .. n LOOP
		SELECT * INTO t FROM vectorbea.claim_tasks('checker', ARRAY['flush'], 1);
		before := pg_current_wal_insert_lsn();
		COMMIT;
		IF pg_current_wal_flush_lsn() > before THEN flushed := flushed + 1; END IF;
		PERFORM vectorbea.complete_task(t.task_id, t.lease, '{}');
		before := pg_current_wal_insert_lsn();
		COMMIT;
		IF pg_current_wal_flush_lsn() > before THEN flushed := flushed + 1; END IF;
		IF current_setting('synchronous_commit') = 'on' THEN setting_kept := setting_kept + 1; END IF;
		done := done + 1;
	END LOOP;
END $$});
sql(q{SELECT count(*) FROM vectorbea.start_runs('one', array_fill('{}'::jsonb, ARRAY[20]))});
is(sql(q{CALL public.claim_complete_check(20, NULL, NULL, NULL)}), '40|20|20',
	'20 claims and 20 completions: each flushed by the time its COMMIT returned, '
	  . "and the session's synchronous_commit still on after each");
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'one' AND status = 'succeeded'}), '20',
	'the 20 runs succeeded');

# --- Four workers drain one wide run concurrently.
sql(q{
CREATE PROCEDURE public.drain(worker text)
LANGUAGE plpgsql AS $$
DECLARE
	t record;
	idle int := 0;
BEGIN
	WHILE idle < 500 LOOP
		SELECT * INTO t FROM vectorbea.claim_tasks(worker, ARRAY['elr'], 1);
		COMMIT;
		IF t.task_id IS NULL THEN
			IF NOT EXISTS (SELECT FROM vectorbea.nodes WHERE activity = 'elr'
			                AND status IN ('pending', 'ready', 'running')) THEN
				RETURN;
			END IF;
			idle := idle + 1;
			PERFORM pg_sleep(0.01);
			CONTINUE;
		END IF;
		idle := 0;
		PERFORM vectorbea.complete_task(t.task_id, t.lease, jsonb_build_object('by', worker));
		COMMIT;
	END LOOP;
END $$});
my $run = sql(q{SELECT vectorbea.start_run('wide', '{}')});
my @workers;
for my $w (1 .. 4)
{
	my ($out, $err) = ('', '');
	push @workers, [ IPC::Run::start(
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		  '-c', "CALL public.drain('w$w')" ],
		'<', \undef, '>', \$out, '2>', \$err), \$err ];
}
for my $w (@workers)
{
	$w->[0]->finish;
	is($w->[0]->result(0), 0, 'a drain worker ended without error') or diag(${ $w->[1] });
}
is(sql(qq{SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempt = 1), count(*)
		  FROM vectorbea.nodes WHERE run_id = '$run'}), '401|401',
	'every node of the wide run succeeded, each at its first attempt');
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}), 'succeeded', 'the wide run succeeded');
is(sql(qq{SELECT count(*) = max(seq) AND min(seq) = 1 AND max(seq) = (SELECT last_seq FROM vectorbea.runs WHERE id = '$run')
		  FROM vectorbea.events WHERE run_id = '$run'}), 't',
	"the wide run's events are numbered 1..last_seq without gaps");
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_COMPLETED'}), '401',
	'one STEP_COMPLETED per node');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'verify_run finds nothing');

# --- Synchronous replication is never skipped.
my $sync_run = sql(q{SELECT vectorbea.start_run('one', '{}')});
my ($task, $lease) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('sync', ARRAY['flush'], 1)});
sql(q{CREATE TABLE sync_probe (at timestamptz)});
sql(q{ALTER SYSTEM SET synchronous_standby_names = 'nobody'});
$node->reload;
ok(defined vb_wait_for($node, q{SELECT current_setting('synchronous_standby_names')}, 'nobody'),
	'a synchronous standby is named');
# The checkpointer tells the backends that standbys are named; until it
# has, commits do not wait.  A throw-away row is inserted until its commit
# waits (one that wrote no WAL would not), and that one is then let go
# (cancelled, it stays committed).
my $probe_waits = 0;
my $probing = time;
while (!$probe_waits && time - $probing < 30)
{
	$node->psql('postgres', 'INSERT INTO sync_probe VALUES (now())', timeout => 1,
		timed_out => \$probe_waits);
	usleep(100_000) unless $probe_waits;
}
ok($probe_waits, 'a commit waits for the named standby');
$node->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'}, '0'),
	'the probe no longer waits');
my $timed_out;
$node->psql('postgres', qq{SELECT vectorbea.complete_task($task, '$lease', '{}')},
	timeout => 3, timed_out => \$timed_out);
ok($timed_out, 'with a synchronous standby named, the completion waits for it');
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'}, '1'),
	'the completion waits in SyncRep');
sql(q{ALTER SYSTEM RESET synchronous_standby_names});
$node->reload;
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'}, '0'),
	'released when the standby is no longer named');
# The wait ends a moment before the commit is visible (SyncRep comes
# before the transaction leaves the proc array).
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$sync_run'}, 'succeeded'),
	'the completion committed');

$node->stop;
done_testing();
