# The demo's worker (examples/worker.py) fails a task whose completion the
# engine refuses, at once and for good, with the refusal as its error; and
# with --run it waits for a paused run instead of taking it for finished.
#
# assemble spawns write_brief with the run's "writer" as its provider; a
# provider the engine does not know makes complete_task refuse the spawn
# list.  The worker logged the refusal and left the task running: it waited
# out its lease, ran again to the same refusal, three times, and the run
# failed as lease_expired, the real reason recorded nowhere.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('example_worker_refused');
sub sql { return $node->safe_psql('postgres', shift); }
sql(q{CREATE EXTENSION vectorbea CASCADE});
sql(q{SELECT vectorbea.define_workflow('asm', '{"nodes": [{"id": "assemble", "activity": "assemble",
  "retry": {"max_attempts": 3, "initial": "0s", "max": "0s"}}]}')});

my $worker = "$FindBin::Bin/../../examples/worker.py";
my $dsn = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres';

# worker(RUN, TIMEOUT): runs the example worker for one run; (status, output)
sub worker
{
	my ($run, $timeout) = @_;
	my $out = '';
	IPC::Run::run([ '/usr/bin/python3', $worker, '--run', $run, '--workers', '1',
		'--dsn', $dsn, '--timeout', $timeout ], '<', \undef, '>&', \$out,
		IPC::Run::timeout(120));
	return ($? >> 8, $out);
}

my $run = sql(q{SELECT vectorbea.start_run('asm', '{"service": "checkout", "writer": "mistral"}')});
my ($rc, $out) = worker($run, 60);
is($rc, 1, 'the worker exits 1: its run failed');
like($out, qr/assemble#1\s+failed: complete_task refused its result → failed/,
	'the worker failed the task when its completion was refused') or diag($out);
is(sql(qq{SELECT status || ' ' || attempt || ' ' || (error->>'class') FROM vectorbea.nodes WHERE run_id = '$run'}),
	'failed 1 permanent', 'one attempt, failed for good');
like(sql(qq{SELECT error->>'message' FROM vectorbea.nodes WHERE run_id = '$run'}),
	qr/^complete_task refused: invalid spawn list of node "assemble": node "write_brief", field "llm\.provider"/,
	'its error is the refusal');
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$run'}), 'failed', 'the run failed');
is(sql(qq{SELECT count(*) FROM vectorbea.events WHERE run_id = '$run' AND type = 'STEP_STARTED'}), '1',
	'the task was not run again');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$run')}), '0', 'the run agrees with its history');

# A paused run is not finished: the worker waits (here until its timeout).
my $paused = sql(q{SELECT vectorbea.start_run('asm', '{"service": "checkout", "writer": "openai"}')});
sql(qq{SELECT vectorbea.pause_run('$paused', 'held for the test')});
($rc, $out) = worker($paused, 2);
like($out, qr/the run did not finish within 2s/, 'the worker waited for the paused run') or diag($out);
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$paused'}), 'paused', 'which is still paused');

done_testing();
