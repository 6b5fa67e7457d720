# The scheduler: visible, woken by commits (not by polling), ending expired
# leases and announcing due retries, quiet when idle, back after
# pg_terminate_backend and after a crash, gone when the postmaster dies.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my $node = PostgreSQL::Test::Cluster->new('scheduler');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'vectorbea, pg_stat_statements'
pg_stat_statements.track = all
vectorbea.database = 'postgres'
# Far longer than any wait below: every wake must come from a commit.
vectorbea.scheduler_idle_timeout = '1h'
log_min_messages = warning
# A crashed worker restarts the cluster, as in production (the test
# framework turns this off by default).
restart_after_crash = on
});
$node->start;

sub sql { return $node->safe_psql('postgres', shift); }

# Polls $query until it returns $want (VbTest::vb_wait_for).
sub wait_for { return vb_wait_for($node, @_); }

# A process that has exited but not been reaped yet (a zombie) is gone.
sub alive
{
	my $pid = shift;
	open(my $fh, '<', "/proc/$pid/stat") or return 0;
	my $stat = <$fh>;
	close $fh;
	return $stat !~ /^\d+ \(.*\) [ZX] /;
}

sub scheduler_pid
{
	return sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'});
}

ok(defined wait_for(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'one scheduler is visible in pg_stat_activity');
sql('CREATE EXTENSION vectorbea CASCADE');
sql('CREATE EXTENSION pg_stat_statements');
ok(defined wait_for(q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'CREATE EXTENSION wakes the waiting scheduler');
is(sql(q{SELECT database || ' ' || (pid IS NOT NULL) || ' ' || (next_due IS NULL)
		   FROM vectorbea.scheduler_status()}),
	'postgres true true', 'scheduler_status: database, pid, nothing due');

sql(q{SELECT vectorbea.define_workflow('sched', '{"nodes":[
		{"id":"a","activity":"sa","retry":{"max_attempts":5,"initial":"0s","max":"0s"}},
		{"id":"b","activity":"sb","depends_on":["a"],
		 "retry":{"max_attempts":5,"backoff":"fixed","initial":"1h","jitter":false}}]}')});

# --- Idle: no statements while nothing is due.
sql('SELECT pg_stat_statements_reset()');
sleep 3;
is(sql(q{SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s
		  JOIN pg_roles r ON r.oid = s.userid
		 WHERE s.query ILIKE '%vectorbea.%' AND s.query NOT ILIKE '%pg_stat_statements%'}),
	'0', 'an idle scheduler issues no statements');

# --- A commit that makes a lease expire soon wakes the scheduler: with the
# fallback timer at one hour, only the claim's commit can have it end the
# lease within the wait.
my $run = sql(q{SELECT vectorbea.start_run('sched')});
my $lost = sql(q{SELECT task_id || ' ' || lease FROM vectorbea.claim_tasks('vanished', ARRAY['sa'], 1, '1 second')});
my ($lost_id, $lost_lease) = split / /, $lost;
my $took = wait_for(qq{SELECT count(*) FROM vectorbea.events
	WHERE run_id = '$run' AND type = 'STEP_FAILED' AND data->>'class' = 'lease_expired'}, '1', 60);
ok(defined $took, 'a 1 s lease is ended by the scheduler, woken by the claim\'s commit');
note(sprintf('the lease ended %.2f s after the claim', $took // -1));

# The task is offered again, another worker completes it, and the vanished
# worker's late result changes nothing.
my $again = sql(q{SELECT task_id || ' ' || lease || ' ' || attempt FROM vectorbea.claim_tasks('w2', ARRAY['sa'])});
my ($again_id, $again_lease, $again_attempt) = split / /, $again;
is($again_attempt, '2', 'the expired task is offered again as attempt 2');
sql(qq{SELECT vectorbea.complete_task($again_id, '$again_lease', '{"by": "w2"}')});
my ($rc, $out, $err) = $node->psql('postgres',
	qq{SELECT vectorbea.complete_task($lost_id, '$lost_lease', '{"by": "vanished"}')});
like($err, qr/VB001|does not hold it/, "the vanished worker's late completion is refused");
is(sql(qq{SELECT output->>'by' FROM vectorbea.nodes WHERE id = $again_id}), 'w2', 'the result of w2 stands');

# --- A retry made due by the test clock is announced within a second, and
# a task whose worker vanished under a one-hour lease is offered again when
# the test clock passes the lease; nobody sleeps for either.
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN vectorbea_tasks');
my $b = sql(q{SELECT task_id || ' ' || lease FROM vectorbea.claim_tasks('w3', ARRAY['sb'])});
my ($b_id, $b_lease) = split / /, $b;
sql(qq{SELECT vectorbea.fail_task($b_id, '$b_lease', '{"message": "later"}')});
my $hour_run = sql(q{SELECT vectorbea.start_run('sched')});
my ($gone_id, $gone_lease) = split / /,
  sql(qq{SELECT task_id || ' ' || lease FROM vectorbea.claim_tasks('vanished4', ARRAY['sa'], 1, '1 hour')
		 WHERE run_id = '$hour_run'});
$listener->query_safe('SELECT 1');	# drain
# Both fall due an hour from now by the real clock, and the fallback timer
# is at one hour: only the reload that moves the test clock can have them
# handled within the waits below.
sql(q{ALTER SYSTEM SET vectorbea.test_clock_offset = '2h'});
sql(q{SELECT pg_reload_conf()});
my $reloaded = time;
ok(defined wait_for(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$hour_run'
	AND type = 'STEP_FAILED' AND data->>'class' = 'lease_expired'}, '1', 60),
	'a one-hour lease is ended once the test clock passes it');
my ($next_id, $next_lease) = split / /,
  sql(q{SELECT task_id || ' ' || lease FROM vectorbea.claim_tasks('w8', ARRAY['sa'])});
is($next_id, $gone_id, 'the task of the vanished worker is offered again');
sql(qq{SELECT vectorbea.complete_task($next_id, '$next_lease', '{"by": "w8"}')});
($rc, $out, $err) = $node->psql('postgres',
	qq{SELECT vectorbea.complete_task($gone_id, '$gone_lease', '{"by": "vanished4"}')});
like($err, qr/does not hold it/, "and the vanished worker's late completion changes nothing");
my $heard = 0;
while (time - $reloaded < 60)
{
	my $o = $listener->query_safe('SELECT 1');
	if ($o =~ /Asynchronous notification "vectorbea_tasks" with payload "sb"/)
	{
		$heard = 1;
		last;
	}
	usleep(20_000);
}
ok($heard, 'a retry made due by the test clock is announced');
note(sprintf('announced %.2f s after the reload', time - $reloaded));
ok(defined wait_for(q{SELECT retries_announced >= 1 AND leases_expired >= 1 FROM vectorbea.scheduler_status()},
		't', 60),
	'scheduler_status counts what it did');
sql(q{ALTER SYSTEM RESET vectorbea.test_clock_offset});
ok(vb_reload($node, { 'vectorbea.test_clock_offset' => '0s' }), 'the test clock is back at 0s');
$listener->quit;

# --- A run deadline is enforced.
my $late = sql(q{SELECT vectorbea.start_run('sched', '{}', NULL, '{"deadline": "1s"}')});
ok(defined wait_for(qq{SELECT status FROM vectorbea.runs WHERE id = '$late'}, 'failed', 60),
	'a run past its deadline fails');
is(sql(qq{SELECT data->>'reason' FROM vectorbea.events WHERE run_id = '$late' AND type = 'RUN_FAILED'}),
	'deadline_exceeded', 'RUN_FAILED says why');

# --- A node timeout ends the attempt with class timeout.
sql(q{SELECT vectorbea.define_workflow('timed', '{"nodes":[
		{"id":"t","activity":"st","timeout":"1s","retry":{"max_attempts":1}}]}')});
my $timed = sql(q{SELECT vectorbea.start_run('timed')});
my $t = sql(q{SELECT task_id || ' ' || lease FROM vectorbea.claim_tasks('w4', ARRAY['st'], 1, '1 hour')});
my ($t_id, $t_lease) = split / /, $t;
is(sql(qq{SELECT vectorbea.heartbeat($t_id, '$t_lease', '1 hour') <= vectorbea.clock() + interval '1 second'}),
	't', 'a heartbeat cannot extend an attempt past its timeout');
ok(defined wait_for(qq{SELECT status FROM vectorbea.runs WHERE id = '$timed'}, 'failed', 60),
	'an attempt past its timeout fails');
is(sql(qq{SELECT data->>'class' FROM vectorbea.events WHERE run_id = '$timed' AND type = 'STEP_FAILED'}),
	'timeout', 'with class timeout');

# --- Wakes race-free: work committed by a transaction that began before a
# pass still wakes the scheduler, and a retry whose time came before its
# transaction committed is announced at the commit.
my $slow = $node->background_psql('postgres');
$slow->query_safe(q{SET vectorbea.notify_tasks = off});
my $first = sql(q{SELECT vectorbea.start_run('sched', '{}', NULL, '{"deadline": "1s"}')});
$slow->query_safe(q{BEGIN});
my $second = $slow->query_safe(q{SELECT vectorbea.start_run('sched', '{}', NULL, '{"deadline": "2s"}')});
$second =~ s/\s+//g;
ok(defined wait_for(qq{SELECT status FROM vectorbea.runs WHERE id = '$first'}, 'failed', 60),
	'the first deadline is enforced while the second transaction is open');
# The second deadline passes before its transaction commits.
my $second_deadline = $slow->query_safe(qq{SELECT deadline FROM vectorbea.runs WHERE id = '$second'});
$second_deadline =~ s/^\s+|\s+$//g;
ok(defined wait_for(qq{SELECT vectorbea.clock() > '$second_deadline'}, 't', 60),
	'the second deadline has passed, its transaction still open');
# Nothing committed would wake the scheduler before its one-hour timer: only
# the commit can have it enforce the deadline within the wait.
ok(defined wait_for(q{SELECT state = 'idle' AND (next_due IS NULL OR next_due > vectorbea.clock() + interval '10 minutes')
		FROM vectorbea.scheduler_status()}, 't', 60),
	'the scheduler sleeps, with nothing due for minutes')
  or diag(sql(q{SELECT s::text FROM vectorbea.scheduler_status() s}));
$slow->query_safe(q{COMMIT});
my $late_took = wait_for(qq{SELECT status FROM vectorbea.runs WHERE id = '$second'}, 'failed', 60);
ok(defined $late_took, 'a deadline committed late still wakes the scheduler');
note(sprintf('the run failed %.2f s after the commit', $late_took // -1));

my $listen2 = $node->background_psql('postgres');
$listen2->query_safe('LISTEN vectorbea_tasks');
sql(q{SELECT vectorbea.define_workflow('late_retry', '{"nodes":[{"id":"r","activity":"late_retry",
	"retry":{"max_attempts":3,"backoff":"fixed","initial":"1s","jitter":false}}]}')});
# Waits (up to $timeout s) until $listener has received vectorbea_tasks
# with $payload: the scheduler relays notifications a moment after the
# commit.
sub heard
{
	my ($listener, $payload, $timeout) = @_;
	my $t0 = time;
	while (time - $t0 < $timeout)
	{
		return 1 if $listener->query_safe('SELECT 1') =~
		  /notification "vectorbea_tasks" with payload "\Q$payload\E"/;
		usleep(20_000);
	}
	return 0;
}

sql(q{SELECT vectorbea.start_run('late_retry')});
ok(heard($listen2, 'late_retry', 60), 'the start is announced');
my $lr = sql(q{SELECT task_id || ' ' || lease FROM vectorbea.claim_tasks('w9', ARRAY['late_retry'])});
my ($lr_id, $lr_lease) = split / /, $lr;
$slow->query_safe(q{BEGIN});
$slow->query_safe(qq{SELECT vectorbea.fail_task($lr_id, '$lr_lease', '{"message": "busy"}')});
# The retry comes due before the failure commits.
my $retry_at = $slow->query_safe(qq{SELECT available_at FROM vectorbea.nodes WHERE id = $lr_id});
$retry_at =~ s/^\s+|\s+$//g;
ok(defined wait_for(qq{SELECT vectorbea.clock() > '$retry_at'}, 't', 60),
	'the retry is due, its failure not committed yet');
$slow->query_safe(q{COMMIT});
# The scheduler sleeps on its one-hour timer meanwhile: hearing it at all
# means the commit had it announced.
ok(heard($listen2, 'late_retry', 60), 'a retry due before its commit is announced by the commit');
$listen2->quit;
$slow->quit;

# --- NOTIFY traffic that is not for the scheduler does not make it work.
# The passes are counted from a moment the scheduler is between passes;
# after the notifications a reload wakes it for one pass, and by the end of
# that pass it has drained them too (it reads its notifications before any
# pass): that pass is the only one.
ok(defined wait_for(q{SELECT state FROM vectorbea.scheduler_status()}, 'idle', 60), 'the scheduler is idle');
my $wakes = sql(q{SELECT wakes FROM vectorbea.scheduler_status()});
sql(q{SELECT pg_notify('unrelated', 'x')}) for 1 .. 5;
sql(q{SELECT pg_reload_conf()});
ok(defined wait_for(qq{SELECT state = 'idle' AND wakes > $wakes FROM vectorbea.scheduler_status()}, 't', 60),
	'a reload after the notifications wakes the scheduler');
is(sql(q{SELECT wakes FROM vectorbea.scheduler_status()}), $wakes + 1,
	'other notifications do not cause passes: the reload\'s pass is the only one')
  or diag(sql(q{SELECT s::text FROM vectorbea.scheduler_status() s}));

# --- One node's error is recorded on that node and the loop goes on; the
# node is tried again later, not on every pass.
sql(q{CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'poisoned node %', NEW.node; END $$;
	  CREATE TRIGGER poison BEFORE INSERT ON vectorbea.events FOR EACH ROW
		WHEN (NEW.type = 'STEP_FAILED' AND NEW.node = 'p') EXECUTE FUNCTION poison()});
sql(q{SELECT vectorbea.define_workflow('poison', '{"nodes":[
		{"id":"p","activity":"sp","retry":{"initial":"0s","max":"0s"}},
		{"id":"q","activity":"sp","retry":{"initial":"0s","max":"0s"}}]}')});
my $poisoned = sql(q{SELECT vectorbea.start_run('poison')});
sql(q{SELECT count(*) FROM vectorbea.claim_tasks('vanished3', ARRAY['sp'], 2, '1 second')});
ok(defined wait_for(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$poisoned'
	AND type = 'STEP_FAILED' AND node = 'q'}, '1', 60), 'the healthy node is acted on');
ok(defined wait_for(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$poisoned'
	AND type = 'SCHEDULER_ERROR' AND node = 'p' AND data->>'message' = 'poisoned node p'}, '1', 60),
	'the failing node gets a SCHEDULER_ERROR event');
# A pass publishes its counters at its end, steps after the event's.
ok(defined wait_for(q{SELECT errors || ' ' || last_error FROM vectorbea.scheduler_status()},
		'1 poisoned node p', 60),
	'scheduler_status shows the error');
# Another pass, begun after the error: it leaves the node for later.
ok(vb_scheduler_pass($node), 'the scheduler makes another pass');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$poisoned' AND type = 'SCHEDULER_ERROR'}),
	'1', 'and does not retry it on every pass');
sql(q{DROP TRIGGER poison ON vectorbea.events});
sql(q{ALTER SYSTEM SET vectorbea.test_clock_offset = '35s'});
sql(q{SELECT pg_reload_conf()});
ok(defined wait_for(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$poisoned'
	AND type = 'STEP_FAILED' AND node = 'p'}, '1', 60), 'once healthy it is acted on at its retry time');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$poisoned')}), '0', 'the poisoned run verifies');

# The same for a gate past its timeout: its own expiry moves, not the run's
# deadline, and it is handled once healthy.
sql(q{CREATE TRIGGER zz_poison BEFORE UPDATE ON vectorbea.approvals FOR EACH ROW
		WHEN (NEW.decided_by = 'vectorbea: timeout') EXECUTE FUNCTION poison()});
sql(q{SELECT vectorbea.define_workflow('poison_gate', '{"nodes":[
		{"id":"g","kind":"approval","approval":{"gate":"g","timeout":"1s","on_timeout":"approve"}}]}')});
my $gated = sql(q{SELECT vectorbea.start_run('poison_gate', '{}', NULL, '{"deadline": "1d"}')});
ok(defined wait_for(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$gated'
	AND type = 'SCHEDULER_ERROR' AND node = 'g'}, '1', 60), 'a failing gate gets a SCHEDULER_ERROR event');
is(sql(qq{SELECT (a.expires_at - vectorbea.clock() > interval '20 s')
		 || ' ' || (r.deadline - r.created_at = interval '1 day')
		FROM vectorbea.approvals a JOIN vectorbea.runs r ON r.id = a.run_id WHERE r.id = '$gated'}),
	'true true', "the gate's expiry moves ahead, the run's deadline does not");
sql(q{DROP TRIGGER zz_poison ON vectorbea.approvals});
sql(q{ALTER SYSTEM SET vectorbea.test_clock_offset = '70s'});
sql(q{SELECT pg_reload_conf()});
ok(defined wait_for(qq{SELECT status FROM vectorbea.approvals WHERE run_id = '$gated'}, 'approved', 60),
	'once healthy the gate is handled at its new time');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$gated')}), '0', 'the gated run verifies');

# --- pg_terminate_backend: the scheduler comes back without a restart, and
# a run in flight finishes.
my $pid = scheduler_pid();
sql(qq{SELECT pg_terminate_backend($pid)});
ok(defined wait_for(qq{SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'vectorbea scheduler' AND pid <> $pid}, '1', 15),
	'the scheduler comes back after pg_terminate_backend');
my $flight = sql(q{SELECT vectorbea.start_run('sched')});
sql(q{SELECT count(*) FROM vectorbea.claim_tasks('vanished2', ARRAY['sa'], 1, '1 second')});
ok(defined wait_for(qq{SELECT count(*) FROM vectorbea.events
	WHERE run_id = '$flight' AND type = 'STEP_RETRIED'}, '1', 60),
	'the new scheduler ends the lease of the run in flight');

# --- SIGKILL: a crash restart of the whole cluster; the run still finishes.
$pid = scheduler_pid();
kill 'KILL', $pid;
ok(defined wait_for(qq{SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'vectorbea scheduler' AND pid <> $pid}, '1', 30),
	'after SIGKILL the cluster restarts with a new scheduler');
for my $act ('sa', 'sb')
{
	wait_for(qq{SELECT count(*) FROM vectorbea.nodes WHERE run_id = '$flight' AND node = '} . ($act eq 'sa' ? 'a' : 'b') . q{' AND status = 'ready'}, '1', 60);
	sql(qq{SELECT vectorbea.complete_task(task_id, lease, '{}') FROM vectorbea.claim_tasks('w5', ARRAY['$act'])});
}
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$flight'}), 'succeeded', 'the run in flight finishes after the crash');

is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$flight')}), '0', 'the run in flight verifies');
is(sql(q{SELECT string_agg(r.id || ': ' || v::text, E'\n') FROM vectorbea.runs r, vectorbea.verify_run(r.id) v}),
	'', 'verify_run finds no difference for any run');

# --- DROP EXTENSION while a pass begins: the pass waits on the extension's
# own lock, which the DROP takes before any table (waiting on a table
# instead is how the two deadlocked), and once the DROP commits the pass
# ends quietly: the same process waits for the extension to come back.
$pid = scheduler_pid();
my $log_offset = -s $node->logfile;
my $dropper = $node->background_psql('postgres');
$dropper->query_safe('BEGIN; DROP EXTENSION vectorbea CASCADE;');
sql('SELECT pg_reload_conf()');		# a reload starts a pass
ok(defined wait_for(qq{SELECT count(*) FROM pg_locks
		WHERE pid = $pid AND NOT granted AND locktype = 'object'
		  AND classid = 'pg_extension'::regclass}, '1', 10),
	'a pass that meets an uncommitted DROP EXTENSION waits on the extension lock');
is(sql(qq{SELECT count(*) FROM pg_locks WHERE pid = $pid AND locktype = 'relation'}), '0',
	'the waiting pass holds no table lock');
$dropper->query_safe('COMMIT');
$dropper->quit;
ok(defined wait_for(qq{SELECT count(*) FROM pg_locks WHERE pid = $pid}, '0', 10),
	'after the DROP commits the pass ends');
sql('CREATE EXTENSION vectorbea CASCADE');
ok(defined wait_for(q{SELECT state FROM vectorbea.scheduler_status()}, 'idle'),
	'CREATE EXTENSION wakes the scheduler again');
is(scheduler_pid(), $pid, 'the scheduler kept its process through the DROP');
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/ERROR|FATAL/, 'no error in the log from the DROP and the pass');

# --- Postmaster death: the scheduler, asleep on its one-hour timer, notices
# it and exits (within the wait, so not at the timer).
$pid = scheduler_pid();
my $postmaster = $node->{_pid};
$node->kill9;
my $t0 = time;
while (alive($pid) && time - $t0 < 60) { usleep(20_000); }
my $gone = time - $t0;
ok(!alive($pid), 'the scheduler exits when the postmaster dies');
note(sprintf('the scheduler exited %.2f s after the postmaster died', $gone));
# The other children go too.  PostgreSQL refuses to start while the old
# postmaster's pid still answers, as an unreaped zombie does for a moment.
$t0 = time;
usleep(100_000) while kill(0, $postmaster) && time - $t0 < 30;
my $started = $node->start(fail_ok => 1);
ok($started, 'the server starts again after the postmaster died');
ok(defined wait_for(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1', 30),
	'the server restarts cleanly with its scheduler');
$node->stop;
done_testing();
