# 050_prepared_notifications.pl -- the notifications of a prepared
# transaction reach listeners once COMMIT PREPARED has run, from any
# session, and never after ROLLBACK PREPARED.
#
# PostgreSQL refuses to prepare a transaction that has notified, so the
# engine holds a prepared transaction's notifications in shared memory
# (prepared_notes.c), and the scheduler sends them once it has committed:
# COMMIT PREPARED wakes it (prepared_finish.c).  Its poll, the fallback,
# is set to an hour here, as its idle sleep is, so that every
# notification heard after a COMMIT PREPARED came by that wake.  Here:
# a task made ready, a due-now retry and a run's end, each in a prepared
# transaction; a rollback; a transaction with more notifications than
# the room, whose notifications are dropped and counted; a PREPARE that
# fails, whose notifications leave the room in its abort; a retry that
# falls due while its transaction is prepared; and a transaction prepared
# before a restart.
#
# What a listener got is read up to a sentinel: a run committed the plain
# way, whose notification the relay sends after everything committed
# before it (002).  A prepared transaction's notifications are sent at the
# pass its COMMIT PREPARED wakes, so the test waits for them themselves.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my $node = vb_server('prepared_notifications', q{max_prepared_transactions = 5
vectorbea.prepared_poll_interval = '1h'
});
sub sql { return $node->safe_psql('postgres', shift); }
sql(q{CREATE EXTENSION vectorbea CASCADE;
SELECT vectorbea.define_workflow('pn', '{"nodes": [{"id": "work", "activity": "pn_work",
	"retry": {"max_attempts": 3, "initial": "0s", "max": "0s", "jitter": false}}]}');
SELECT vectorbea.define_workflow('sentinel', '{"nodes": [{"id": "s", "activity": "sentinel"}]}');
SELECT vectorbea.define_workflow('pn_late', '{"nodes": [{"id": "work", "activity": "pn_late_work",
	"retry": {"max_attempts": 2, "initial": "1s", "max": "1s", "jitter": false}}]}');
SELECT vectorbea.define_workflow('pn_restart', '{"nodes": [{"id": "work", "activity": "pn_restart_work"}]}');
});
ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'the scheduler serves the database');

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN vectorbea_tasks; LISTEN vectorbea_runs;');
my @inbox;

sub pump
{
	push @inbox, map { [ $_->[0], $_->[1] ] } vb_notifications($listener->query_safe('SELECT 1;'));
	return;
}

# Waits (at most 30 s) until the listener got [channel, payload]; true if
# it did.  Removes it from the inbox.
sub heard
{
	my ($channel, $payload, $seconds) = @_;
	my $t0 = time;
	while (time - $t0 < ($seconds // 30))
	{
		pump();
		for my $i (0 .. $#inbox)
		{
			next unless $inbox[$i][0] eq $channel && $inbox[$i][1] eq $payload;
			splice(@inbox, $i, 1);
			return 1;
		}
		usleep(20_000);
	}
	return 0;
}

# Everything the listener got up to a sentinel committed now, sentinel left out.
sub received_until_sentinel
{
	sql(q{SELECT vectorbea.start_run('sentinel')});
	die 'the sentinel notification did not arrive within 30 s'
	  unless heard('vectorbea_tasks', 'sentinel');
	my @got = map { "$_->[0] $_->[1]" } @inbox;
	@inbox = ();
	return \@got;
}

sub prepare
{
	my ($gid, $statement) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', qq{BEGIN; $statement; PREPARE TRANSACTION '$gid'});
	die "PREPARE $gid: $err" if $rc != 0;
	return;
}

# --- A task made ready in a prepared transaction.
prepare('start', q{SELECT vectorbea.start_run('pn', '{}', 'one')});
is_deeply(received_until_sentinel(), [], 'nothing is heard while the transaction is prepared');
sql(q{COMMIT PREPARED 'start'});
ok(heard('vectorbea_tasks', 'pn_work'), 'once committed, from another session, its task is announced');

# --- A due-now retry and a run's end, each in a prepared transaction.
my ($task, $lease, $run) = split /\|/,
  sql(q{SELECT task_id, lease, run_id FROM vectorbea.claim_tasks('w', ARRAY['pn_work'], 1)});
prepare('retry', qq{SELECT vectorbea.fail_task($task, '$lease', '{"message": "again"}')});
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE id = $task}), 'running',
	'the failure is not visible while prepared');
sql(q{COMMIT PREPARED 'retry'});
ok(heard('vectorbea_tasks', 'pn_work'), 'the retry due at once is announced once committed');
($task, $lease) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['pn_work'], 1)});
is(sql(qq{SELECT attempt FROM vectorbea.nodes WHERE id = $task}), '2', 'and a worker takes attempt 2');
prepare('finish', qq{SELECT vectorbea.complete_task($task, '$lease', '{}')});
sql(q{COMMIT PREPARED 'finish'});
ok(heard('vectorbea_runs', qq({"run":"$run","status":"succeeded"})), "the run's end is announced once committed");

# --- Rolled back: nothing is sent.  The scheduler has looked after the
# rollback once a pass has begun since (a pass follows its looks).
prepare('undone', q{SELECT vectorbea.start_run('pn', '{}', 'undone')});
sql(q{ROLLBACK PREPARED 'undone'});
ok(vb_scheduler_pass($node), 'the scheduler made a pass after the rollback');
is_deeply(received_until_sentinel(), [], 'a rolled-back prepared transaction announces nothing');

# --- More notifications than the room holds (128, every database
# together): a transaction that ends 130 runs holds none, and they are
# counted as dropped; its commit still does what it did.
sql(q{SELECT count(*) FROM vectorbea.start_runs('pn', array_fill('{}'::jsonb, ARRAY[130]))});
is_deeply(received_until_sentinel(), [ 'vectorbea_tasks pn_work' ], '130 runs started, one notification');
my $dropped = sql(q{SELECT notifications_dropped FROM vectorbea.relay_status()});
prepare('many', q{SELECT count(vectorbea.cancel_run(id)) FROM vectorbea.runs
	WHERE workflow = 'pn' AND status = 'running'});
is(sql(q{SELECT notifications_dropped FROM vectorbea.relay_status()}) - $dropped, 130,
	'relay_status counts the 130 notifications that did not fit as dropped');
sql(q{COMMIT PREPARED 'many'});
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'pn' AND status = 'cancelled'}), '130',
	'the transaction cancelled the 130 runs');
ok(vb_scheduler_pass($node), 'the scheduler made a pass after the commit');
is_deeply(received_until_sentinel(), [], 'and none of their notifications is sent');

# --- Room again once those that fit are sent: a transaction that fits is
# heard, after the one that did not.
prepare('after', q{SELECT vectorbea.start_run('pn', '{}', 'after')});
sql(q{COMMIT PREPARED 'after'});
ok(heard('vectorbea_tasks', 'pn_work'), 'a prepared transaction that fits is announced again');

# --- A PREPARE that fails after its notifications were held (its
# identifier is in use) takes them out in its abort, and nothing wakes the
# scheduler in between: the next transaction's 100 fit in the room at once.
prepare('taken', q{SELECT 1});
sql(q{SELECT count(*) FROM vectorbea.start_runs('pn', array_fill('{}'::jsonb, ARRAY[100]))});
is_deeply(received_until_sentinel(), [ 'vectorbea_tasks pn_work' ], '100 more runs started');
my $cancel_all = q{SELECT count(vectorbea.cancel_run(id)) FROM vectorbea.runs
	WHERE workflow = 'pn' AND status = 'running'};
my ($rc, $out, $err) = $node->psql('postgres', qq{BEGIN; $cancel_all; PREPARE TRANSACTION 'taken'});
like($err, qr/already in use/, 'a PREPARE of 100 run ends whose identifier is in use fails');
$dropped = sql(q{SELECT notifications_dropped FROM vectorbea.relay_status()});
prepare('fits', $cancel_all);
is(sql(q{SELECT notifications_dropped FROM vectorbea.relay_status()}) - $dropped, 0,
	'the next 100 are held: the failed one left no notification in the room');
sql(q{COMMIT PREPARED 'fits'});
my $last = sql(q{SELECT id FROM vectorbea.runs WHERE workflow = 'pn' AND status = 'cancelled'
	ORDER BY finished_at DESC, id DESC LIMIT 1});
ok(heard('vectorbea_runs', qq({"run":"$last","status":"cancelled"})), 'and they are heard once it commits');
sql(q{ROLLBACK PREPARED 'taken'});

# --- A retry that falls due while its transaction is prepared: a pass of
# the scheduler after its due time cannot see it (here one made by a
# reload; the poll makes them at its default interval), and the pass that
# the COMMIT PREPARED wakes announces it (the announcements start again
# from the PREPARE).
sql(q{SELECT vectorbea.start_run('pn_late', '{}')});
ok(heard('vectorbea_tasks', 'pn_late_work'), 'a pn_late task is announced');
($task, $lease) = split /\|/, sql(q{SELECT task_id, lease FROM vectorbea.claim_tasks('w', ARRAY['pn_late_work'], 1)});
prepare('late', qq{SELECT vectorbea.fail_task($task, '$lease', '{"message": "again in a second"}')});
sleep(2);
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE id = $task}), 'running',
	'its retry, due a second after the PREPARE, is not visible while prepared');
ok(vb_scheduler_pass($node), 'the scheduler makes a pass after its due time');
# Only what comes after the commit counts.
pump();
@inbox = ();
sql(q{COMMIT PREPARED 'late'});
ok(heard('vectorbea_tasks', 'pn_late_work'), 'once committed, the retry that fell due meanwhile is announced');

# --- A transaction prepared before a restart: the notifications it held
# are lost with shared memory; once every transaction the server
# recovered has ended, the scheduler announces every activity with ready
# work, as it does at its start, and its task's is among them.
prepare('before_restart', q{SELECT vectorbea.start_run('pn_restart', '{}')});
$listener->quit;
$node->restart;
$listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN vectorbea_tasks; LISTEN vectorbea_runs;');
@inbox = ();
ok(defined vb_wait_for($node, q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'after the restart, the scheduler has made its first pass');
# The first pass announced what was ready then, without this task.
sleep(1);
sql(q{COMMIT PREPARED 'before_restart'});
ok(heard('vectorbea_tasks', 'pn_restart_work'),
	'a task made ready by a transaction prepared before the restart is announced once it commits');

# ---------------------------------------------------------------------------
# A workspace grant prepared in one session and committed from another:
# a backend that had read the mapping before reads it again, and the
# workspace, open while unmapped, is closed to a role not granted it.
sql(q{CREATE ROLE pn_member; CREATE ROLE pn_stranger;
GRANT USAGE ON SCHEMA vectorbea TO pn_stranger;
SELECT vectorbea.grant_workspace('pn_elsewhere', 'pn_member');});
my $stranger = $node->background_psql('postgres');
$stranger->query_safe(q{SET ROLE pn_stranger});
is($stranger->query_safe(q{SELECT vectorbea.workspace_visible('pn_secret')}), 't',
	'an unmapped workspace is open to a role not granted it');
sql(q{BEGIN; SELECT vectorbea.grant_workspace('pn_secret', 'pn_member'); PREPARE TRANSACTION 'grant_secret';});
is($stranger->query_safe(q{SELECT vectorbea.workspace_visible('pn_secret')}), 't',
	'while the grant is prepared, it still is');
sql(q{COMMIT PREPARED 'grant_secret'});
is($stranger->query_safe(q{SELECT vectorbea.workspace_visible('pn_secret')}), 'f',
	'once COMMIT PREPARED has run in another session, the same backend sees it closed');
$stranger->quit;

is(sql(q{SELECT count(*) FROM vectorbea.runs r, LATERAL vectorbea.verify_run(r.id)}), '0',
	'every run agrees with its history');
$listener->quit;
done_testing();
