# 037_busy_parent.pl -- the scheduler does not wait for a parent run that a
# worker's open transaction holds.
#
# A child run's end settles its parent's run node in the same transaction,
# so it needs the parent's row.  Here a worker has claimed a task of the
# parent "mom" in a transaction it keeps open (holding mom's row) when the
# sleep of its child "kid" ends.  The scheduler puts that item off and goes
# on: a run "tick" whose sleep ends a second later still ends on time, and
# the child's end leaves no SCHEDULER_ERROR.  Once the worker commits, the
# scheduler comes back to the child within moments: kid succeeds, mom's run
# node succeeds with kid's output, and verify_run finds nothing.  Before
# this, the whole scheduler waited behind the worker's transaction.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use VbTest;

my $node = vb_server('busy_parent');
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'the scheduler is running');
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{SELECT vectorbea.define_workflow('kid', '{"nodes":[
	{"id":"nap","kind":"sleep","sleep":{"for":"2s"}}]}')});
sql(q{SELECT vectorbea.define_workflow('mom', '{"nodes":[
	{"id":"kid","kind":"run","run":{"workflow":"kid"}},
	{"id":"side","activity":"mom_side"}]}')});
sql(q{SELECT vectorbea.define_workflow('tick', '{"nodes":[
	{"id":"nap","kind":"sleep","sleep":{"for":"3s"}}]}')});

my $mom = sql(q{SELECT vectorbea.start_run('mom', '{}')});
ok(defined vb_wait_for($node, qq{
SELECT count(*) FROM vectorbea.runs k JOIN vectorbea.events e ON e.run_id = k.id
 WHERE k.parent_run = '$mom' AND e.type = 'TIMER_STARTED'}, '1'),
	"the scheduler started mom's child and its sleep");
my $kid = sql(qq{SELECT id FROM vectorbea.runs WHERE parent_run = '$mom'});

# A worker claims mom's other task and keeps its transaction open.
my $worker = $node->background_psql('postgres');
$worker->query_safe(q{BEGIN});
is($worker->query_safe(q{SELECT node FROM vectorbea.claim_tasks('w', ARRAY['mom_side'])}),
	'side', "a worker claimed mom's task in a transaction it keeps open");
my $tick = sql(q{SELECT vectorbea.start_run('tick', '{}')});
ok(defined vb_wait_for($node, qq{
SELECT count(*) FROM vectorbea.events WHERE run_id = '$tick' AND type = 'TIMER_STARTED'}, '1'),
	"the scheduler started tick's sleep");
my $tick_due = sql(qq{
SELECT (data->>'until')::timestamptz FROM vectorbea.events
 WHERE run_id = '$tick' AND type = 'TIMER_STARTED'});
my $kid_due = sql(qq{
SELECT (data->>'until')::timestamptz FROM vectorbea.events
 WHERE run_id = '$kid' AND type = 'TIMER_STARTED'});

# kid's sleep ends first: the item that would end kid meets mom's row held.
ok(defined vb_wait_for($node, qq{SELECT status FROM vectorbea.runs WHERE id = '$tick'},
		'succeeded', 20),
	"tick's sleep ended while the worker held mom, after kid's came due");
is(sql(qq{SELECT '$kid_due'::timestamptz < '$tick_due'::timestamptz}), 't',
	"kid's sleep was due before tick's");
is(sql(qq{
SELECT (SELECT status FROM vectorbea.runs WHERE id = '$kid') || ', '
       || (SELECT status FROM vectorbea.nodes WHERE run_id = '$mom' AND node = 'kid')}),
	'running, waiting', "kid's end waits for mom's row: kid running, mom's run node waiting");
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'SCHEDULER_ERROR'}), '0',
	'putting the item off recorded no SCHEDULER_ERROR');

my $t = time;
$worker->query_safe(q{COMMIT});
ok(defined vb_wait_for($node, qq{
SELECT (SELECT status FROM vectorbea.runs WHERE id = '$kid') || ', '
       || (SELECT status || ' ' || (output -> 'nap' ? 'slept_until') FROM vectorbea.nodes
            WHERE run_id = '$mom' AND node = 'kid')},
		'succeeded, succeeded true', 10),
	"once the worker committed, kid succeeded and mom's run node took its output")
  or diag(sql(qq{SELECT string_agg(type || ' ' || coalesce(node, ''), ', ' ORDER BY seq)
                   FROM vectorbea.events WHERE run_id IN ('$kid', '$mom')}));
# Within 10 s: a put-off item comes back after 100 ms (an item that failed,
# after 30 s).
diag(sprintf('the scheduler came back to kid %.2fs after the commit', time - $t));
is(sql(qq{
SELECT count(*) FROM vectorbea.events
 WHERE run_id = '$kid' AND type IN ('STEP_COMPLETED', 'RUN_COMPLETED')}), '2',
	"kid's sleep and kid completed once each");
is(sql(qq{SELECT (output->>'slept_until')::timestamptz = '$kid_due'::timestamptz
            FROM vectorbea.nodes WHERE run_id = '$kid' AND node = 'nap'}), 't',
	"kid's sleep says it slept until its TIMER_STARTED's time, not the time it was put off to");
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'SCHEDULER_ERROR'}), '0',
	'no SCHEDULER_ERROR in any run');
is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id)}), '0',
	'verify_run finds no difference in any run');

$worker->quit;

# ---------------------------------------------------------------------------
# An approval node held by its not_before, whose run a worker holds when
# the time comes: the pass that meets the held run puts the node off, and
# the scheduler comes back for it shortly after, not at its next wake for
# something else (nothing else is due here; the idle timeout is minutes).
sql(q{SELECT vectorbea.define_workflow('later', '{"nodes":[
	{"id":"ok","kind":"approval","approval":{"gate":"ok"},"not_before":"{{run.input.at}}"},
	{"id":"side","activity":"later_side"}]}')});
my $later = sql(q{SELECT vectorbea.start_run('later', jsonb_build_object('at', clock_timestamp() + interval '10 s'))});
ok(defined vb_wait_for($node, qq{
SELECT available_at < 'infinity' FROM vectorbea.nodes WHERE run_id = '$later' AND node = 'ok'}, 't'),
	"the scheduler read the approval's not_before");
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN});
is($holder->query_safe(q{SELECT node FROM vectorbea.claim_tasks('w', ARRAY['later_side'])}),
	'side', "a worker holds the run before the approval's time");
my $due = sql(qq{SELECT extract(epoch FROM available_at) FROM vectorbea.nodes WHERE run_id = '$later' AND node = 'ok'});
sleep(1) while time < $due + 1.5;
is(sql(qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$later' AND node = 'ok'}), 'ready',
	'past its time, the approval waits for the held run');
# Rolled back: the worker's end wakes nobody.
$holder->query_safe(q{ROLLBACK});
$holder->quit;
ok(defined vb_wait_for($node, qq{
SELECT count(*) FROM vectorbea.events WHERE run_id = '$later' AND type = 'APPROVAL_REQUESTED'}, '1', 10),
	'once the run is free, the scheduler comes back and opens the gate');

$node->stop;
done_testing();
