# 047_scheduler_plans.pl -- the scheduler's own statements keep their
# plans: none is planned again at every pass.
#
# 044 and 046 count plans in sessions; the scheduler's passes run
# statements no session runs (the next due time of the waits), and whether
# the plan cache keeps a generic plan depends on the data: with a few
# hundred nodes waiting, a plan made for the pass's time always looked
# cheaper than the generic one, and two statements of every pass were
# planned again at each (0.7 and 0.25 ms; bench/README.md, "The
# scheduler's own statements").  Here the scheduler serves a database with
# 1,000 nodes asleep for an hour, and sleeps of a second end one after the
# other, each a pass; pg_stat_statements (track_planning) then counts the
# plans of the statements the scheduler ran (top-level statements in its
# background worker, told apart from this test's by the role: the test
# drives the runs as another one), and the buffers its next due time of
# the waits and its scan of the nodes to start read a pass, beside 2,000
# tasks nobody claims.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use VbTest;

my $node = vb_server('scheduler_plans', q{autovacuum = off
shared_preload_libraries = 'vectorbea, pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.track_planning = on
});
my $sql = sub { return $node->safe_psql('postgres', $_[0]); };
my $as_driver = sub { return $node->safe_psql('postgres', $_[0], extra_params => [ '-U', 'driver' ]); };

$sql->(q{
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION vectorbea CASCADE;
CREATE ROLE driver LOGIN SUPERUSER;
SELECT vectorbea.define_workflow('long', '{"nodes": [{"id": "nap", "kind": "sleep", "sleep": {"for": "1h"}}]}');
SELECT vectorbea.define_workflow('short', '{"nodes": [
	{"id": "nap", "kind": "sleep", "sleep": {"for": "1s"}},
	{"id": "after", "activity": "after_nap", "depends_on": ["nap"]}]}');
SELECT count(*) FROM vectorbea.start_runs('long', array_fill('{}'::jsonb, ARRAY[1000]));
SELECT vectorbea.define_workflow('idle', '{"nodes": [{"id": "work", "activity": "idle_work"}]}');
SELECT count(*) FROM vectorbea.start_runs('idle', array_fill('{}'::jsonb, ARRAY[2000]));
});
# The scheduler starts the 1,000 sleeps (each node waiting for an hour).
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1000 FROM vectorbea.nodes WHERE status = 'waiting'}),
	'the scheduler started the long sleeps');
$sql->('ANALYZE; SELECT pg_stat_statements_reset();');

# Forty sleeps of a second, started a quarter of a second apart: their
# ends keep the scheduler passing.
my $naps = 40;
for my $i (1 .. $naps)
{
	$as_driver->(q{SELECT vectorbea.start_run('short', '{}')});
	usleep(250_000);
}
ok( $node->poll_query_until('postgres',
		qq{SELECT count(*) = $naps FROM vectorbea.nodes WHERE node = 'after' AND status = 'ready'}),
	'every short sleep ended and let its task be claimed');

my $sched = q{FROM pg_stat_statements s JOIN pg_roles u ON u.oid = s.userid
			   JOIN pg_database d ON d.oid = s.dbid
			  WHERE d.datname = 'postgres' AND u.rolname <> 'driver' AND s.toplevel
				AND s.query NOT LIKE '%pg_stat_statements%' AND s.query NOT LIKE '%FROM ONLY%'};
my $passes = $sql->(qq{SELECT max(s.calls) $sched});
ok($passes >= 20, "the scheduler ran its statements over many passes ($passes calls)");
is($sql->(qq{SELECT count(*) $sched AND s.query LIKE '%n.attempt_deadline <= \$1%'}), '1',
	'the scan of waits that came due is among them');
is($sql->(qq{SELECT count(*) $sched AND s.calls >= 10 AND s.query LIKE '%vectorbea.approvals%expires_at <= \$1%'}), '1',
	'the scan for expired gates is among them');
# The next due time of the waits is the first entry of the waiting nodes'
# index whose run runs: as a minimum over every waiting node joined to its
# run, each pass read all 1,000 and their runs (500 buffers a pass here,
# against about 20; 8 ms a pass with 5,000 waiting, bench/README.md).
my $blocks = $sql->(qq{SELECT round((s.shared_blks_hit + s.shared_blks_read)::numeric / s.calls)
						 $sched AND s.query LIKE '%attempt_deadline IS NOT NULL%'});
ok($blocks ne '' && $blocks < 50,
	"the next due time of the waits reads a few buffers a pass, not every waiting node ($blocks)");
# The ready nodes the scheduler starts itself have an index of their own
# (nodes_engine_ready_idx): without it, the scan that starts them read
# every node of the table at every pass, or hashed every run: 62 buffers
# a pass here, and 88 for the next due time (its part for those nodes was
# a minimum over the same join), against 11 and 9.  The 2,000 unclaimed
# tasks make ready nodes common enough for the planner to expect many
# ready nodes without an activity.  The bound is twice what a pass
# reads here, not a near fit: a full run, beside another test, measured 18
# once (11 alone), which a bound of 15 failed; the plan it guards against
# reads 62.
my $start_blocks = $sql->(qq{SELECT round((s.shared_blks_hit + s.shared_blks_read)::numeric / s.calls)
							   $sched AND s.query LIKE '%n.activity IS NULL AND n.available_at <= \$1%'});
ok($start_blocks ne '' && $start_blocks < 30,
	"the scan of the nodes to start reads a few buffers a pass, not every node ($start_blocks)");
# The scheduler's statements that ran ten times or more and were planned
# more than $most times.  Left to the plan cache, a statement is planned
# for its parameters at its first calls, and at every call when those
# plans look cheaper, which depends on the data: the scan for due retries
# once was, in a CI run; the scan for expired gates, left to it, was
# planned four times here.  The statements of a pass are generic from
# their first call, so each is planned once (twice after an invalidation).
my $replanned = sub {
	my ($most) = @_;
	return $sql->(
		qq{SELECT coalesce(string_agg(s.calls || ' calls, ' || s.plans || ' plans: '
									  || left(regexp_replace(s.query, '\\s+', ' ', 'g'), 160), E'\\n'), '')
			 $sched AND s.calls >= 10 AND s.plans > $most});
};
is($replanned->(2), '',
	"no statement of the scheduler's passes was planned more than twice");

# With vectorbea.retention set, the scheduler purges a batch of finished
# runs at the end of its passes.  Until the purge passed the append-only
# triggers by a flag of its own (src/append_only.c), it set
# session_replication_role, and changing that setting empties the plan
# cache: every statement of the pass after a purge was planned again,
# which under a steady load is every pass.  10,000 runs finished more than
# an hour ago (by the engine clock) are purged here in 20 passes.
my $finished = 10_000;
$as_driver->(qq{
SELECT vectorbea.define_workflow('done', '{"nodes": [{"id": "work", "activity": "done_work"}]}');
SELECT count(*) FROM vectorbea.start_runs('done', array_fill('{}'::jsonb, ARRAY[$finished]));
});
for (1 .. $finished / 1000)
{
	$as_driver->(q{SELECT count(vectorbea.complete_task(task_id, lease, '{}'))
					 FROM vectorbea.claim_tasks('w', ARRAY['done_work'], 1000)});
}
is($sql->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'done' AND status = 'succeeded'}),
	$finished, "$finished runs finished");
$sql->(q{ALTER SYSTEM SET vectorbea.test_clock_offset = '2h'});
ok(vb_reload($node, { 'vectorbea.test_clock_offset' => '2h' }), 'the engine clock is two hours on');
# From here the test's own statements run as the driver, so that only the
# scheduler's are counted.
$sql->('SELECT pg_stat_statements_reset()');
$as_driver->(q{ALTER SYSTEM SET vectorbea.retention = '1h'});
$as_driver->(q{SELECT pg_reload_conf()});
my $left;
for (1 .. 1200)
{
	$left = $as_driver->(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'done'});
	last if $left eq '0';
	usleep(100_000);
}
is($left, '0', 'the scheduler purged the runs finished two hours ago');
my $batches = $sql->(q{SELECT count(*) || ' ' || sum(runs) FROM vectorbea.purge_batches
						WHERE purged_by = 'vectorbea scheduler'});
is($batches, ($finished / 500) . " $finished", 'in batches of 500, one a pass');
is($sql->(qq{SELECT s.calls >= 20 $sched AND s.query LIKE '%DELETE FROM vectorbea.events WHERE run_id = ANY%'}), 't',
	'the purge is among the statements the scheduler ran');
is($replanned->(6), '', "purging, no statement of the scheduler's passes was planned more than six times");

done_testing();
