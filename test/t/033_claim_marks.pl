# Claims start at a mark (src/claim_marks.c): under concurrent load, where
# nodes keep becoming ready before the marks that claims keep moving up
# (runs of higher priority started later, retries in older runs,
# dependents released in older runs, transactions rolled back), no ready
# node is ever passed for good: once the load stops, claims alone drain
# every run to success.  A held snapshot (the marks' reason) is open
# throughout, and a second phase checks the same with no marks at all
# (the trigger disabled), which must also drain.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('marks');
sub sql { return $node->safe_psql('postgres', shift); }

sql(q{CREATE EXTENSION vectorbea CASCADE});
sql(q{SELECT vectorbea.define_workflow('stress', '{"nodes":[
	{"id":"a","activity":"st"},
	{"id":"b","activity":"st","depends_on":["a"]},
	{"id":"c","activity":"st","depends_on":["a"]},
	{"id":"d","activity":"st","depends_on":["b","c"]}],
	"defaults":{"retry":{"max_attempts":100,"initial":"200ms","max":"200ms"}}}')});

# A snapshot held from the start pins every dead entry in the indexes.
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM vectorbea.runs;');

my %scripts = (
	'033_start' => q{
\set p random(0, 3)
SELECT vectorbea.start_run('stress', '{}', NULL, jsonb_build_object('priority', :p));
},
	'033_start_rolled_back' => q{
\set p random(0, 3)
BEGIN;
SELECT vectorbea.start_run('stress', '{}', NULL, jsonb_build_object('priority', :p));
ROLLBACK;
},
	'033_work' => q{
SELECT count(*) FROM (
  SELECT CASE WHEN random() < 0.25
              THEN vectorbea.fail_task(c.task_id, c.lease,
                                       '{"message":"flaky","class":"transient"}')
              ELSE (vectorbea.complete_task(c.task_id, c.lease, '{}'))::text END
    FROM vectorbea.claim_tasks('w', ARRAY['st'], 3, '1 hour') c) x;
});

sub load
{
	my ($label) = @_;
	$node->pgbench('--no-vacuum --client=6 --jobs=2 --time=6', 0,
		[qr{processed: [1-9]}], [qr{^$}], "load with the marks $label",
		{ "033_start_$label\@2" => $scripts{'033_start'},
		  "033_start_rolled_back_$label\@1" => $scripts{'033_start_rolled_back'},
		  "033_work_$label\@6" => $scripts{'033_work'} });
}

# Claims without completing (nothing becomes ready, so no commit lowers a
# mark), with the clock past every backoff, until one finds nothing; then
# the ready nodes left are those the claims passed.
sub passed_over
{
	for (1 .. 2000)
	{
		last if sql(q{SET vectorbea.test_clock_offset = '1h';
			SELECT count(*) FROM vectorbea.claim_tasks('sweep', ARRAY['st'], 100, '1 hour')}) == 0;
	}
	return sql(q{SELECT count(*) FROM vectorbea.nodes n JOIN vectorbea.runs r ON r.id = n.run_id
		WHERE n.status = 'ready' AND r.status = 'running'});
}

# Claims and completes (with the clock past every backoff and every
# lease passed_over took) until a claim finds nothing.
sub drain
{
	my $total = 0;
	for (1 .. 2000)
	{
		my $n = sql(q{SET vectorbea.test_clock_offset = '4h';
			SELECT count(*) FROM (
			  SELECT vectorbea.complete_task(c.task_id, c.lease, '{}')
			    FROM vectorbea.claim_tasks('drain', ARRAY['st'], 50, '1 hour') c) x});
		return $total if $n == 0;
		$total += $n;
	}
	return $total;
}

sub left_over
{
	return sql(q{SELECT (SELECT count(*) FROM vectorbea.runs WHERE status <> 'succeeded') || ' runs, '
		|| (SELECT count(*) FROM vectorbea.nodes WHERE status <> 'succeeded') || ' nodes not succeeded; '
		|| (SELECT count(*) FROM vectorbea.runs) || ' runs'});
}

load('kept');
is(passed_over(), '0', 'with the marks, claims leave no ready node behind');
sql(q{SET vectorbea.test_clock_offset = '3h';
	SELECT count(*) FROM vectorbea.run_due_work()});
my $drained = drain();
note("drained $drained tasks after the load; " . left_over());
like(left_over(), qr/^0 runs, 0 nodes not succeeded; [1-9]\d* runs$/,
	'with the marks, claims alone finish every run: no ready node was passed');
is(sql(q{SELECT count(*) FROM vectorbea.runs r
	WHERE (SELECT count(*) FROM vectorbea.verify_run(r.id)) > 0}), '0',
	'every run verifies');

# With the trigger disabled no mark is used (claims start at the front).
sql(q{ALTER TABLE vectorbea.nodes DISABLE TRIGGER nodes_note_ready});
load('off');
is(passed_over(), '0', 'without the marks, the same');
sql(q{SET vectorbea.test_clock_offset = '3h';
	SELECT count(*) FROM vectorbea.run_due_work()});
drain();
like(left_over(), qr/^0 runs, 0 nodes not succeeded/, 'without the marks, every run finishes');
sql(q{ALTER TABLE vectorbea.nodes ENABLE ALWAYS TRIGGER nodes_note_ready});

$holder->query_safe('COMMIT');
$holder->quit;
$node->stop;
done_testing();
