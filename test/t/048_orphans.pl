# 048_orphans.pl -- the scheduler cancels the child runs nobody waits for
# any more, and looks for them only when a commit says there may be some.
#
# A child run is left running when its parent's run node stops waiting for
# it: the parent ended (cancelled here), or the node's timeout passed.
# Finding such children reads every running child run, and a parent fanned
# out to a thousand children made that most of every pass of the
# scheduler (bench/README.md, "The scheduler's own statements"); the
# transactions that leave children behind now tell the scheduler so at
# commit (notify.c), and it looks only then, and only at the runs the
# commits named: the children of a parent that stopped waiting, a child
# that came back to life.  Here 200 children run for parents that keep
# waiting for them while sleeps of a second end one after the other, each
# a pass; then a parent is cancelled, and a run node's timeout passes,
# and the looks read those parents' children, not the 150 others; then 70
# parents are cancelled in one transaction, more than a commit can name,
# and the scheduler looks at every running child run (049_two_phase
# cancels a parent in a prepared transaction, whose commit tells nobody).
# pg_stat_statements counts how often the scheduler looked and what it
# read (its statements are top-level in its background worker; the
# test's own run as another role).

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use VbTest;

my $node = vb_server('orphans', q{shared_preload_libraries = 'vectorbea, pg_stat_statements'
pg_stat_statements.track = all
});
my $sql = sub { return $node->safe_psql('postgres', $_[0]); };
my $as_driver = sub { return $node->safe_psql('postgres', $_[0], extra_params => [ '-U', 'driver' ]); };
my $until = sub {
	my ($query, $want, $seconds) = @_;
	my $got;
	for (1 .. 10 * ($seconds // 60))
	{
		$got = $as_driver->($query);
		return $got if $got eq $want;
		usleep(100_000);
	}
	return $got;
};

$sql->(q{
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION vectorbea CASCADE;
CREATE ROLE driver LOGIN SUPERUSER;
SELECT vectorbea.define_workflow('kid', '{"nodes": [{"id": "work", "activity": "kid_work"}]}');
SELECT vectorbea.define_workflow('nap', '{"nodes": [{"id": "nap", "kind": "sleep", "sleep": {"for": "1s"}}]}');
SELECT vectorbea.define_workflow('late', '{"nodes": [
	{"id": "kid", "kind": "run", "run": {"workflow": "kid"}, "timeout": "3s", "retry": {"max_attempts": 1}}]}');
});
my $fan = join(', ', map { qq{{"id": "k$_", "kind": "run", "run": {"workflow": "kid"}}} } 1 .. 50);
$sql->(qq{SELECT vectorbea.define_workflow('mom', '{"nodes": [$fan]}')});
$sql->(q{SELECT count(*) FROM vectorbea.start_runs('mom', array_fill('{}'::jsonb, ARRAY[4]))});
is($until->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'kid' AND status = 'running'}, '200'),
	'200', 'the scheduler started 200 child runs for four parents');

# Sleeps of a second, started a tenth of a second apart, keep the
# scheduler passing; the children still have parents waiting for them.
$sql->('SELECT pg_stat_statements_reset()');
my $naps = 30;
for (1 .. $naps)
{
	$as_driver->(q{SELECT vectorbea.start_run('nap', '{}')});
	usleep(100_000);
}
is($until->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'nap' AND status = 'succeeded'}, $naps),
	$naps, 'every sleep ended');
my $sched = q{FROM pg_stat_statements s JOIN pg_roles u ON u.oid = s.userid
			  WHERE u.rolname <> 'driver' AND s.toplevel};
my $looks = qq{SELECT coalesce(sum(s.calls), 0) $sched AND s.query LIKE '%c.parent_run IS NOT NULL%'};
# A look at every running child run (the first pass's, or after too many
# runs were named), and a look at named runs only.
my $everywhere = qq{SELECT coalesce(sum(s.calls), 0) $sched AND s.query LIKE '%WHERE c.parent_run IS NOT NULL%'};
my $named_blocks =
  qq{SELECT coalesce(sum(s.shared_blks_hit + s.shared_blks_read) / nullif(sum(s.calls), 0), 0)::int
	 $sched AND s.query LIKE '%k.parent_run = p.id%'};
my $passes = $as_driver->(qq{SELECT max(s.calls) $sched AND s.query LIKE '%attempt_deadline IS NOT NULL%'});
ok($passes >= 20, "the scheduler passed many times ($passes)");
is($as_driver->($looks), '0', 'and never looked for children nobody waits for: no commit left any');

# A parent cancelled: its 50 children are cancelled by the scheduler.
my $mom = $as_driver->(q{SELECT id FROM vectorbea.runs WHERE workflow = 'mom' ORDER BY id LIMIT 1});
$as_driver->(qq{SELECT vectorbea.cancel_run('$mom', 'not needed')});
is( $until->(
		qq{SELECT count(*) FROM vectorbea.runs WHERE parent_run = '$mom' AND status = 'cancelled'}, '50', 30),
	'50', "the cancelled parent's 50 children are cancelled");
is($as_driver->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'kid' AND status = 'running'}),
	'150', "the other parents' children run on");
my $after_cancel = $as_driver->($looks);
ok($after_cancel >= 1 && $after_cancel <= 6,
	"the scheduler looked for them after the cancel committed ($after_cancel statements)");
is($as_driver->($everywhere), '0', 'it looked at the cancelled parent\'s children only');

# A run node's timeout passes: the node fails, and its child, no longer
# waited for, is cancelled.
my $late = $as_driver->(q{SELECT vectorbea.start_run('late', '{}')});
is($until->(qq{SELECT status FROM vectorbea.runs WHERE id = '$late'}, 'failed', 30),
	'failed', "the run node's timeout failed its run");
is( $until->(
		qq{SELECT status FROM vectorbea.runs WHERE parent_run = '$late'}, 'cancelled', 30),
	'cancelled', 'its child, no longer waited for, is cancelled');
is($as_driver->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'kid' AND status = 'running'}),
	'150', 'no other child was touched');
# Its looks read the failed run's child, not the 150 children of the
# other parents (a look at all of them read 600 blocks and more).
$sql->('SELECT pg_stat_statements_reset()');
my $late2 = $as_driver->(q{SELECT vectorbea.start_run('late', '{}')});
is( $until->(
		qq{SELECT status FROM vectorbea.runs WHERE parent_run = '$late2'}, 'cancelled', 30),
	'cancelled', 'another timeout, another child cancelled');
my $blocks = $as_driver->($named_blocks);
ok($blocks > 0 && $blocks < 60, "a look at one run's children read $blocks blocks");
is($as_driver->($everywhere), '0', 'and never every running child run');

# More parents than a commit names at once: the scheduler looks at every
# running child run, and cancels all 70 children.
$sql->(q{SELECT vectorbea.define_workflow('mom_one', '{"nodes": [{"id": "kid", "kind": "run", "run": {"workflow": "kid"}}]}')});
$sql->(q{SELECT count(*) FROM vectorbea.start_runs('mom_one', array_fill('{}'::jsonb, ARRAY[70]))});
is( $until->(
		q{SELECT count(*) FROM vectorbea.runs c JOIN vectorbea.runs p ON p.id = c.parent_run
		   WHERE p.workflow = 'mom_one' AND c.status = 'running'}, '70'),
	'70', 'seventy parents of one child each');
$as_driver->(q{SELECT count(vectorbea.cancel_run(id, 'all at once')) FROM vectorbea.runs WHERE workflow = 'mom_one'});
is( $until->(
		q{SELECT count(*) FROM vectorbea.runs c JOIN vectorbea.runs p ON p.id = c.parent_run
		   WHERE p.workflow = 'mom_one' AND c.status = 'cancelled'}, '70', 30),
	'70', 'cancelled in one transaction: all seventy children are cancelled');
ok($as_driver->($everywhere) > 0, 'by a look at every running child run');
is($as_driver->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'kid' AND status = 'running'}),
	'150', 'and the other children run on');
# A child that comes back to life after its parent stopped waiting for it
# is cancelled again: a failed child requeued, and a paused child resumed
# after its parent was cancelled.
$sql->(q{
SELECT vectorbea.define_workflow('kid_b', '{"nodes": [{"id": "work", "activity": "kid_b_work"}]}');
SELECT vectorbea.define_workflow('mom_b', '{"nodes": [
	{"id": "kid", "kind": "run", "run": {"workflow": "kid_b"}, "retry": {"max_attempts": 1}}]}');
SELECT vectorbea.define_workflow('kid_c', '{"nodes": [{"id": "work", "activity": "kid_c_work"}]}');
SELECT vectorbea.define_workflow('mom_c', '{"nodes": [{"id": "kid", "kind": "run", "run": {"workflow": "kid_c"}}]}');
});
my $mom_b = $as_driver->(q{SELECT vectorbea.start_run('mom_b', '{}')});
my $mom_c = $as_driver->(q{SELECT vectorbea.start_run('mom_c', '{}')});
is($until->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow IN ('kid_b', 'kid_c') AND status = 'running'}, '2'),
	'2', 'two more children run');
my $kid_task = $as_driver->(q{SELECT task_id || ' ' || lease FROM vectorbea.claim_tasks('w', ARRAY['kid_b_work'], 1)});
my ($task, $lease) = split / /, $kid_task;
$as_driver->(qq{SELECT vectorbea.fail_task($task, '$lease', '{"message": "no"}', false)});
is($until->(qq{SELECT status FROM vectorbea.runs WHERE id = '$mom_b'}, 'failed', 30),
	'failed', 'a child failed for good, and its parent with it');
is($as_driver->(qq{SELECT vectorbea.requeue($task, 'try the child again')}), 't', 'the child is requeued');
is( $until->(qq{SELECT status FROM vectorbea.runs WHERE parent_run = '$mom_b'}, 'cancelled', 30),
	'cancelled', 'and cancelled: its parent no longer waits for it');
my $kid_c = $as_driver->(qq{SELECT id FROM vectorbea.runs WHERE parent_run = '$mom_c'});
$as_driver->(qq{SELECT vectorbea.pause_run('$kid_c', 'hold on')});
# The scheduler looks after the cancel, finds the paused child (not
# running), and is not asked again until the child is resumed.
my $before_cancel = $as_driver->($looks);
$as_driver->(qq{SELECT vectorbea.cancel_run('$mom_c', 'not needed')});
is($until->(qq{SELECT ($looks) > $before_cancel}, 't', 30), 't', 'the scheduler looked after the cancel');
is($as_driver->(qq{SELECT status FROM vectorbea.runs WHERE id = '$kid_c'}), 'paused', 'a paused child stays paused');
$as_driver->(qq{SELECT vectorbea.resume_run('$kid_c')});
is($until->(qq{SELECT status FROM vectorbea.runs WHERE id = '$kid_c'}, 'cancelled', 30),
	'cancelled', 'resumed, the child is cancelled');

is($as_driver->(q{SELECT count(*) FROM vectorbea.runs r, LATERAL vectorbea.verify_run(r.id)}), '0',
	'every run agrees with its history');

done_testing();
