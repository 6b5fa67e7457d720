# LISTEN/NOTIFY: vectorbea_tasks is sent once per activity per transaction
# when tasks become ready, vectorbea_runs when a run finishes, nothing on a
# rollback (of the transaction or of a subtransaction), nothing for a retry
# that is not due yet, and nothing when the notify settings are off.
#
# The relay (src/relay.c): with a scheduler serving the database, the
# notifications are sent by the scheduler's process after the commit; a
# transaction with more notifications than the relay's ring holds, and a
# database no scheduler serves, send them themselves, at their commit.
#
# Relayed notifications arrive a moment after the commit, so each check
# first commits a sentinel (a run whose activity is "sentinel") and waits
# for its notification: the relay sends in commit order, so whatever the
# checked statement sent has arrived by then.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use FindBin;
use lib $FindBin::RealBin;
use VbTest;

my $node = PostgreSQL::Test::Cluster->new('notify');
$node->init;
$node->append_conf('postgresql.conf', slurp_file($ENV{VB_TEST_CONF}))
  if $ENV{VB_TEST_CONF};
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'vectorbea'");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');
$node->safe_psql('postgres', q{
	SELECT vectorbea.define_workflow('notify', '{"nodes":[
		{"id":"a","activity":"alpha"},
		{"id":"b","activity":"alpha"},
		{"id":"c","activity":"beta","depends_on":["a","b"],
		 "retry":{"max_attempts":3,"initial":"1h","max":"1h"}}]}');
	SELECT vectorbea.define_workflow('sentinel', '{"nodes":[{"id":"s","activity":"sentinel"}]}');
	SELECT vectorbea.define_workflow('many', '{"nodes":[{"id":"m","activity":"many"}]}');
	SELECT vectorbea.define_workflow('again', '{"nodes":[{"id":"g","activity":"again",
		"retry":{"max_attempts":5,"initial":"1h","max":"1h","jitter":false}}]}')});
ok(defined vb_wait_for($node, q{SELECT count(pid) FROM vectorbea.scheduler_status()}, '1'),
	'the scheduler is running');
my $scheduler_pid = $node->safe_psql('postgres', q{SELECT pid FROM vectorbea.scheduler_status()});

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN vectorbea_tasks; LISTEN vectorbea_runs;');

my @pids;    # the sending processes of what received() returned last

# What the listener has received since the last call, as [channel,
# payload], up to the sentinel committed here (the sentinel itself left
# out); the senders' pids go to @pids.
sub received
{
	$node->safe_psql('postgres', q{SELECT vectorbea.start_run('sentinel')});
	my @got;
	my $t0 = time;
	until (grep { $_->[0] eq 'vectorbea_tasks' && $_->[1] eq 'sentinel' } @got)
	{
		die 'the sentinel notification did not arrive within 30 s' if time - $t0 > 30;
		usleep(10_000);
		push @got, vb_notifications($listener->query_safe('SELECT 1;'));
	}
	my @before;
	for my $n (@got)
	{
		last if $n->[0] eq 'vectorbea_tasks' && $n->[1] eq 'sentinel';
		push @before, $n;
	}
	@pids = map { $_->[2] } @before;
	return [ map { [ $_->[0], $_->[1] ] } @before ];
}

sub sql { return $node->safe_psql('postgres', shift); }

my $run = sql(q{SELECT vectorbea.start_run('notify')});
is_deeply(received(), [ [ 'vectorbea_tasks', 'alpha' ] ],
	'two ready nodes of one activity: one notification with the activity');
is_deeply(\@pids, [$scheduler_pid], 'sent by the scheduler, which relays it');

sql(q{CREATE TABLE held AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['alpha'], 10)});
is_deeply(received(), [], 'claiming sends nothing');

sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM held WHERE node = 'a'});
is_deeply(received(), [], 'a join with a parent left sends nothing');

sql(q{BEGIN; SELECT vectorbea.complete_task(task_id, lease, '{}') FROM held WHERE node = 'b'; ROLLBACK;});
is_deeply(received(), [], 'a rolled-back completion sends nothing');

sql(q{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM held WHERE node = 'b'});
is_deeply(received(), [ [ 'vectorbea_tasks', 'beta' ] ],
	'the join becoming ready announces its activity');

sql(q{SELECT vectorbea.fail_task(task_id, lease, '{"message": "later"}')
		FROM vectorbea.claim_tasks('w', ARRAY['beta'])});
is_deeply(received(), [], 'a retry that is not due yet is not announced');

sql(q{SET vectorbea.test_clock_offset = '2h';
	  SELECT vectorbea.complete_task(task_id, lease, '{}')
		FROM vectorbea.claim_tasks('w', ARRAY['beta'])});
is_deeply(received(), [ [ 'vectorbea_runs', qq({"run":"$run","status":"succeeded"}) ] ],
	'a finished run is announced with its id and status');

my $run2 = sql(q{SELECT vectorbea.start_run('notify')});
received();
sql(qq{SELECT vectorbea.cancel_run('$run2', 'stop')});
is_deeply(received(), [ [ 'vectorbea_runs', qq({"run":"$run2","status":"cancelled"}) ] ],
	'a cancelled run is announced');

# --- Subtransactions: what a rolled-back savepoint sent is dropped, what a
# released one sent is the transaction's.
sql(q{BEGIN; SAVEPOINT s; SELECT vectorbea.start_run('notify'); ROLLBACK TO SAVEPOINT s; COMMIT;});
is_deeply(received(), [], 'a start rolled back to its savepoint sends nothing');
my $run4 = sql(q{BEGIN; SAVEPOINT s; SELECT vectorbea.start_run('notify'); RELEASE SAVEPOINT s;
	SAVEPOINT t; SELECT vectorbea.start_run('many'); ROLLBACK TO SAVEPOINT t; COMMIT;});
($run4) = split /\n/, $run4;
is_deeply(received(), [ [ 'vectorbea_tasks', 'alpha' ] ],
	'a released savepoint keeps its notification, a rolled-back one beside it drops its own');
sql(qq{DO \$\$ BEGIN PERFORM vectorbea.start_run('many'); RAISE division_by_zero;
	EXCEPTION WHEN division_by_zero THEN NULL; END \$\$});
is_deeply(received(), [], 'nor does a start undone by a PL/pgSQL exception block');

# --- A retry whose time has come by the commit (the test clock moved in
# the transaction) is announced by it; one failed inside a savepoint that
# was rolled back is not.
sql(q{SELECT vectorbea.start_run('again')});
received();
sql(q{BEGIN;
	  SELECT vectorbea.fail_task(task_id, lease, '{"message": "once more"}')
		FROM vectorbea.claim_tasks('w', ARRAY['again']);
	  SET LOCAL vectorbea.test_clock_offset = '2h';
	  COMMIT;});
is_deeply(received(), [ [ 'vectorbea_tasks', 'again' ] ], 'a retry due by the commit is announced at the commit');
sql(q{SET vectorbea.test_clock_offset = '2h';
	  CREATE TABLE held_again AS SELECT * FROM vectorbea.claim_tasks('w', ARRAY['again'])});
sql(q{BEGIN; SAVEPOINT s;
	  SELECT vectorbea.fail_task(task_id, lease, '{"message": "undone"}') FROM held_again;
	  ROLLBACK TO SAVEPOINT s;
	  SET LOCAL vectorbea.test_clock_offset = '4h';
	  COMMIT;});
is_deeply(received(), [], 'a retry failed in a rolled-back savepoint is not announced');
sql(q{SET vectorbea.test_clock_offset = '2h';
	  SELECT vectorbea.complete_task(task_id, lease, '{}') FROM held_again});
received();

# --- More notifications in one transaction than the relay holds (256):
# the transaction sends them itself, at its commit, all of them.
# relay_status() counts each way.
sub relay_counts
{
	my ($settled) = @_;
	# The relay counts a batch just after the commit that sends it
	# (relay.c), so a listener may hear it before it is counted: a pass
	# that begins now ends after that count.
	vb_scheduler_pass($node) or die 'no scheduler pass' if $settled;
	return sql(q{SELECT pid || ' ' || waiting || ' ' || notifications_relayed || ' '
		|| notifications_direct || ' ' || notifications_dropped
		FROM vectorbea.relay_status() WHERE database = 'postgres'});
}
my ($relay_pid, $waiting, $relayed, $direct, $dropped) = split / /, relay_counts(1);
is($relay_pid, $scheduler_pid, 'relay_status names the scheduler that relays');
ok($relayed > 0 && $waiting == 0 && $direct == 0 && $dropped == 0,
	"relay_status: everything so far relayed, none waiting ($relayed relayed)");
my $actor = $node->background_psql('postgres');
my $actor_pid = $actor->query_safe('SELECT pg_backend_pid()');
$actor->query_safe(q{SELECT count(*) FROM vectorbea.start_runs('many', array_fill('{}'::jsonb, ARRAY[300]))});
is_deeply(received(), [ [ 'vectorbea_tasks', 'many' ] ], '300 runs started in one call: one notification');
$actor->query_safe(q{SELECT count(vectorbea.cancel_run(id)) FROM vectorbea.runs WHERE workflow = 'many'});
my $got = received();
is(scalar(@$got), 300, '300 runs cancelled in one statement: 300 notifications');
is(scalar(grep { $_->[0] eq 'vectorbea_runs' && $_->[1] =~ /"status":"cancelled"/ } @$got), 300,
	'each a cancelled run');
is_deeply([ sort { $a <=> $b } keys %{ { map { $_ => 1 } @pids } } ], [$actor_pid],
	'sent by the cancelling backend itself, past the relay\'s room');
$actor->quit;
my @after = split / /, relay_counts(1);
# Relayed since: the start and the sentinels of the two received() calls.
is(join(' ', $after[1], $after[2] - $relayed, $after[3] - $direct, $after[4]), '0 3 300 0',
	'relay_status: the start relayed, the 300 cancellations counted as sent directly');

# --- The ring full of other transactions' entries.  With the scheduler
# stopped (SIGSTOP), 256 committed cancellations wait in the ring; the next
# transaction finds no room and sends its own notification at once; the
# scheduler, running again, sends the 256 in the order they committed.
sql(q{SELECT count(*) FROM vectorbea.start_runs('notify', array_fill('{}'::jsonb, ARRAY[257]))});
received();
my @fill = split /\n/, sql(q{SELECT id FROM vectorbea.runs WHERE workflow = 'notify' AND status = 'running' ORDER BY id DESC LIMIT 257});
($relay_pid, $waiting, $relayed, $direct, $dropped) = split / /, relay_counts(1);
kill 'STOP', $scheduler_pid;
my $canceller = $node->background_psql('postgres');
my $canceller_pid = $canceller->query_safe('SELECT pg_backend_pid()');
$canceller->query_safe(join('', map { "SELECT vectorbea.cancel_run('$_');\n" } @fill));
my @full = split / /, relay_counts();
is(join(' ', $full[1], $full[2] - $relayed, $full[3] - $direct), '256 0 1',
	'a stopped scheduler: 256 notifications wait in the ring, the 257th is sent directly');
my @direct_got;
my $t0 = time;
while (!@direct_got && time - $t0 < 10)
{
	push @direct_got, vb_notifications($listener->query_safe('SELECT 1;'));
	usleep(10_000) unless @direct_got;
}
is_deeply(\@direct_got, [ [ 'vectorbea_runs', qq({"run":"$fill[-1]","status":"cancelled"}), $canceller_pid ] ],
	'the transaction that found the ring full sent its notification itself, at once');
kill 'CONT', $scheduler_pid;
my @relayed_got;
$t0 = time;
while (@relayed_got < 256 && time - $t0 < 30)
{
	push @relayed_got, vb_notifications($listener->query_safe('SELECT 1;'));
	usleep(10_000) if @relayed_got < 256;
}
is_deeply([ map { $_->[1] } @relayed_got ],
	[ map { qq({"run":"$_","status":"cancelled"}) } @fill[0 .. 255] ],
	'the scheduler, running again, sends the 256 waiting, in commit order');
is_deeply([ sort { $a <=> $b } keys %{ { map { $_->[2] => 1 } @relayed_got } } ], [$scheduler_pid],
	'all from the scheduler');
my @drained = split / /, relay_counts(1);
is(join(' ', $drained[1], $drained[2] - $relayed, $drained[3] - $direct), '0 256 1',
	'relay_status: the ring empty again, 256 relayed, 1 sent directly');

# --- What a scheduler leaves in the ring, the next one sends.  Stopped
# with three waiting and then terminated, it exits before sending them
# (interrupts come first in its loop); its successor, started a second
# later on the same ring, sends them in commit order.
my @left = split /\n/, sql(q{SELECT vectorbea.start_run('notify') FROM generate_series(1, 3)});
received();
kill 'STOP', $scheduler_pid;
$canceller->query_safe(join('', map { "SELECT vectorbea.cancel_run('$_');\n" } @left));
is((split / /, relay_counts())[1], '3', 'three notifications wait for the stopped scheduler');
kill 'TERM', $scheduler_pid;
kill 'CONT', $scheduler_pid;
my $successor = '';
$t0 = time;
while ($successor eq '' && time - $t0 < 30)
{
	$successor = sql(qq{SELECT pid FROM vectorbea.relay_status()
		WHERE database = 'postgres' AND pid <> $scheduler_pid});
	usleep(20_000) if $successor eq '';
}
isnt($successor, '', 'a new scheduler reads the ring');
# (It also announces the ready activities on vectorbea_tasks, as every new
# scheduler does.)
my @left_got;
$t0 = time;
while (@left_got < 3 && time - $t0 < 30)
{
	push @left_got, grep { $_->[0] eq 'vectorbea_runs' } vb_notifications($listener->query_safe('SELECT 1;'));
	usleep(10_000) if @left_got < 3;
}
is_deeply(\@left_got, [ map { [ 'vectorbea_runs', qq({"run":"$_","status":"cancelled"}), $successor ] } @left ],
	'the new scheduler sends what the old one left, in commit order');
$scheduler_pid = $successor;
# Its first pass's announcements are not this test's: let them pass.
vb_wait_for($node, qq{SELECT pid || ' ' || state FROM vectorbea.scheduler_status()}, "$successor idle");
received();
$canceller->quit;

# --- A database no scheduler serves: the committing backend sends.
sql(q{CREATE DATABASE quiet});
$node->safe_psql('quiet', q{CREATE EXTENSION vectorbea CASCADE;
	SELECT vectorbea.define_workflow('q', '{"nodes":[{"id":"a","activity":"quiet_work"}]}')});
my $quiet_listener = $node->background_psql('quiet');
$quiet_listener->query_safe('LISTEN vectorbea_tasks');
my $quiet_actor = $node->background_psql('quiet');
my $quiet_pid = $quiet_actor->query_safe('SELECT pg_backend_pid()');
$quiet_actor->query_safe(q{SELECT vectorbea.start_run('q')});
my @quiet;
$t0 = time;
while (!@quiet && time - $t0 < 10)
{
	push @quiet, vb_notifications($quiet_listener->query_safe('SELECT 1;'));
	usleep(10_000) unless @quiet;
}
is_deeply(\@quiet, [ [ 'vectorbea_tasks', 'quiet_work', $quiet_pid ] ],
	'without a scheduler the starting backend sends the notification itself');
is($node->safe_psql('quiet', q{SELECT count(*) FROM vectorbea.relay_status() WHERE database = 'quiet'}), '0',
	'relay_status has no row for a database no scheduler serves');
$quiet_actor->quit;
$quiet_listener->quit;

sql(q{ALTER SYSTEM SET vectorbea.notify_tasks = off;
	  ALTER SYSTEM SET vectorbea.notify_runs = off;});
# (New sessions have the values once the postmaster has read the file.)
ok(vb_reload($node, { 'vectorbea.notify_tasks' => 'off', 'vectorbea.notify_runs' => 'off' }),
	'the notify settings are off');
my $run3 = sql(q{SELECT vectorbea.start_run('notify')});
sql(qq{SELECT vectorbea.cancel_run('$run3')});
sql(q{ALTER SYSTEM RESET vectorbea.notify_tasks;
	  ALTER SYSTEM RESET vectorbea.notify_runs;});
ok(vb_reload($node, { 'vectorbea.notify_tasks' => 'on', 'vectorbea.notify_runs' => 'on' }),
	'the notify settings are on again');
is_deeply(received(), [], 'with the notify settings off nothing is sent');

for my $r ($run, $run2, $run3, $run4)
{
	is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$r')}), '0', "run $r verifies");
}
for my $db ('postgres', 'quiet')
{
	is($node->safe_psql($db, q{SELECT string_agg(r.id || ': ' || v::text, E'\n')
		FROM vectorbea.runs r, vectorbea.verify_run(r.id) v}), '',
		"verify_run finds no difference for any run of $db");
}

$listener->quit;
$node->stop;
done_testing();
