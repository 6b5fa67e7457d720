# 022_compensation_crash.pl -- a server SIGKILLed while runs compensate:
# after crash recovery the remaining compensations run, in order, none
# twice.
#
# 20 runs of a saga (reserve, charge, book, then ship, which fails for
# good) begin to compensate: void_booking, then refund, then release.  The
# first compensation of every run is done; the second is claimed by a
# worker that never reports for half of the runs; then every process of
# the server is killed.  After the restart the claimed compensations come
# back when their leases run out, and a worker finishes the rest.
#
# Afterwards: every run failed with its compensation completed; every
# compensation completed exactly once, and after the one before it
# (reverse order of completion of the originals); the attempts cut by the
# crash are distinct recorded attempts; verify_run is empty for every run.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use VbTest;

my $RUNS = 20;
my $node = vb_server('compensation');
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');

sub sql { return $node->safe_psql('postgres', $_[0]); }

# Claims up to $n tasks of $activity and completes them; returns how many.
sub work
{
	my ($activity, $n) = @_;
	return sql(qq{SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['$activity'], $n) c,
				  LATERAL vectorbea.complete_task(c.task_id, c.lease, '{"done": true}') d});
}

sql(q{SELECT vectorbea.define_workflow('saga', '{"nodes":[
	{"id":"reserve","activity":"reserve","compensate":{"activity":"release"}},
	{"id":"charge","activity":"charge","depends_on":["reserve"],"compensate":{"activity":"refund"}},
	{"id":"book","activity":"book","depends_on":["charge"],"compensate":{"activity":"void_booking"}},
	{"id":"ship","activity":"ship","depends_on":["book"],"retry":{"max_attempts":1}}]}')});
sql(qq{SELECT vectorbea.start_run('saga', jsonb_build_object('n', i)) FROM generate_series(1, $RUNS) i});
for my $a (qw(reserve charge book))
{
	is(work($a, $RUNS), $RUNS, "$a: $RUNS tasks done");
}
is(sql(qq{SELECT count(*) FROM vectorbea.claim_tasks('w', ARRAY['ship'], $RUNS) c,
		   LATERAL vectorbea.fail_task(c.task_id, c.lease, '{"message": "no courier", "class": "permanent"}') f}),
	$RUNS, 'every shipment fails for good');
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'compensating'}), $RUNS, 'every run compensates');
is(work('void_booking', $RUNS), $RUNS, 'the first compensation of every run is done');
is(sql(q{SELECT count(*) FROM vectorbea.claim_tasks('doomed', ARRAY['refund'], 10, '2 seconds')}), '10',
	'half of the refunds are claimed by a worker that will never report');

vb_kill_server($node);
$node->start;
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'compensating'}), $RUNS,
	'after the restart every run is still compensating');

# A worker finishes the compensations; the doomed claims come back when
# their leases (2 s) run out.
my $t0 = time;
while (time - $t0 < 30)
{
	work('refund', 100);
	work('release', 100);
	last if sql(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'compensating'}) eq '0';
	usleep(200_000);
}
is(sql(q{SELECT status || ':' || (error->>'compensation') || ':' || count(*) FROM vectorbea.runs
		   GROUP BY status, error->>'compensation'}),
	"failed:completed:$RUNS", 'every run failed with its compensation completed');
is(sql(q{SELECT count(*) FROM vectorbea.nodes n
		  WHERE n.compensation_of IS NOT NULL
			AND (SELECT count(*) FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
					AND e.type = 'STEP_COMPLETED') <> 1}),
	'0', 'every compensation completed exactly once');
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE compensation_of IS NOT NULL}), 3 * $RUNS,
	'three compensations per run');
is(sql(q{SELECT count(*) FROM (
		   SELECT run_id, array_agg(compensation_of ORDER BY finished_at, id) AS done
			 FROM vectorbea.nodes WHERE compensation_of IS NOT NULL GROUP BY run_id) r
		  WHERE done <> ARRAY['book', 'charge', 'reserve']}),
	'0', 'each run undid book, then charge, then reserve');
is(sql(q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'charge:compensate' AND attempt = 2}), '10',
	'the refunds cut by the crash ran again as second attempts');
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE node = 'charge:compensate' AND type = 'STEP_FAILED'
		   AND data->>'class' = 'lease_expired'}), '10',
	'and their first attempts are recorded as lease_expired');
is(sql(q{SELECT count(*) FROM vectorbea.runs r, vectorbea.verify_run(r.id)}), '0',
	'verify_run is empty for every run');

$node->stop;
done_testing();
