# 017_example_workers.pl -- the two example workers, examples/worker_psycopg.py
# (psycopg 3) and examples/worker_node.js (node-postgres), run unchanged
# against one server, side by side, as a role with only the worker grants.
#
# Workflows:
#   ex_long    "long" sleeps 5 s under a 3 s lease, then "after" echoes;
#   ex_mix     (4 runs) "hello" echoes, "flaky" fails its first attempt
#              (transient), "nap" sleeps 0.2 s, "join" waits for all three;
#   ex_cancel  "doomed" sleeps 2 s; its run is cancelled once a worker has
#              claimed it, so that the worker's completion gets VB001.
# ex_long starts first: one worker takes "long" and sleeps in it, so the
# other one takes the rest, and both do some of the work.  The Python worker
# exits by --drain once idle; the Node worker is stopped with SIGTERM.
#
# Afterwards: every run but the cancelled one succeeded; no attempt was
# started twice; "long" finished in attempt 1, more than a lease after it
# started (only heartbeats can keep a lease that long); each "flaky" took
# exactly 2 attempts; both workers show up in STEP_STARTED; the doomed
# result was dropped on VB001; verify_run finds nothing for any run.
#
# Node.js and npm must be installed (test/lib/common.sh installs them);
# `pg` is installed with npm from examples/package-lock.json into a
# directory of this test.

use strict;
use warnings;

use File::Copy qw(copy);
use FindBin;
use IPC::Run;
use Time::HiRes qw(time usleep);

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $LEASE    = 3;    # seconds, for both workers
my $LONG     = 5;    # seconds "long" sleeps: longer than its lease
my $RUNS     = 4;    # runs of ex_mix
my $EXAMPLES = "$FindBin::RealBin/../../examples";
my $t0       = time;

# ---------------------------------------------------------------------------
# Python with psycopg 3; Node.js with pg from npm
# ---------------------------------------------------------------------------
my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
BAIL_OUT("$python cannot import psycopg (psycopg 3); install python3-psycopg")
  if system($python, '-c', 'import psycopg') != 0;

sub in_path
{
	my ($cmd) = @_;
	my ($found) = grep { -x "$_/$cmd" } split /:/, ($ENV{PATH} // '');
	return defined $found ? "$found/$cmd" : undef;
}
my ($nodejs, $npm) = (in_path('node'), in_path('npm'));
BAIL_OUT('node or npm is not in PATH; install the Debian packages nodejs and npm')
  unless $nodejs && $npm;

my $npm_dir = PostgreSQL::Test::Utils::tempdir('npm');
for my $f (qw(package.json package-lock.json))
{
	copy("$EXAMPLES/$f", "$npm_dir/$f") or die "cannot copy $EXAMPLES/$f: $!";
}
my $npm_out = '';
my $npm_ok = eval {
	IPC::Run::run(
		[ $npm, qw(install --no-audit --no-fund --prefer-offline --no-update-notifier) ],
		'<', \undef, '>', \$npm_out, '2>&1',
		init => sub { chdir $npm_dir or die "chdir $npm_dir: $!" },
		IPC::Run::timeout(45));
};
$npm_out .= "\n$@" if $@;
my $t_npm = time - $t0;
ok($npm_ok && -f "$npm_dir/node_modules/pg/package.json",
	sprintf('npm installed pg (%.1fs)', $t_npm))
  or do { diag("npm install in $npm_dir failed:\n$npm_out"); BAIL_OUT('npm install failed') };

# ---------------------------------------------------------------------------
# Server, worker role, workflows
# ---------------------------------------------------------------------------
my $pg = vb_server('examples');
ok( defined vb_wait_for($pg,
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'the scheduler is running');
$pg->safe_psql(
	'postgres', q{
CREATE EXTENSION vectorbea CASCADE;
CREATE ROLE vb_worker LOGIN;
GRANT USAGE ON SCHEMA vectorbea TO vb_worker;
GRANT EXECUTE ON FUNCTION
    vectorbea.claim_tasks(text, text[], integer, interval),
    vectorbea.heartbeat(bigint, uuid, interval),
    vectorbea.complete_task(bigint, uuid, jsonb, jsonb, jsonb),
    vectorbea.fail_task(bigint, uuid, jsonb, boolean)
  TO vb_worker;
});
my %workflows = (
	ex_long => qq{{"nodes": [
	  {"id": "long", "activity": "sleep", "input": {"seconds": $LONG}},
	  {"id": "after", "activity": "echo", "depends_on": ["long"], "input": {"after": "long"}}]}},
	ex_mix => q{{"nodes": [
	  {"id": "hello", "activity": "echo", "input": {"hello": "world"}},
	  {"id": "flaky", "activity": "flaky", "input": {"key": "k1"}},
	  {"id": "nap", "activity": "sleep", "input": {"seconds": 0.2}},
	  {"id": "join", "activity": "echo", "depends_on": ["hello", "flaky", "nap"],
	   "input": {"joined": 3}}]}},
	ex_cancel => q{{"nodes": [
	  {"id": "doomed", "activity": "sleep", "input": {"seconds": 2}}]}});
$pg->safe_psql('postgres',
	"SELECT vectorbea.define_workflow('$_', \$d\$$workflows{$_}\$d\$)")
  for sort keys %workflows;

# ---------------------------------------------------------------------------
# The workers: Python configured on the command line, Node by environment
# ---------------------------------------------------------------------------
my $log_dir = $PostgreSQL::Test::Utils::log_path;
my %w = (
	'py-worker'   => { log => "$log_dir/017_py-worker.log" },
	'node-worker' => { log => "$log_dir/017_node-worker.log" });
$w{'py-worker'}{h} = IPC::Run::start(
	[
		$python, "$EXAMPLES/worker_psycopg.py",
		'--dsn'        => $pg->connstr('postgres') . ' user=vb_worker',
		'--name'       => 'py-worker',
		'--activities' => 'echo,sleep,flaky',
		'--lease'      => $LEASE,
		'--drain'      => 3
	],
	'<', \undef, '>', $w{'py-worker'}{log}, '2>&1', IPC::Run::timeout(90));
{
	my $host = $pg->host;
	$host =~ s/([^A-Za-z0-9\/._~-])/sprintf('%%%02X', ord $1)/ge;
	local $ENV{NODE_PATH}     = "$npm_dir/node_modules";
	local $ENV{VB_DSN}        = "postgresql://vb_worker@/postgres?host=$host&port=" . $pg->port;
	local $ENV{VB_WORKER}     = 'node-worker';
	local $ENV{VB_ACTIVITIES} = 'echo,sleep,flaky';
	$w{'node-worker'}{h} = IPC::Run::start(
		[ $nodejs, "$EXAMPLES/worker_node.js", '--lease' => $LEASE, '--drain' => 60 ],
		'<', \undef, '>', $w{'node-worker'}{log}, '2>&1', IPC::Run::timeout(90));
}

END
{
	for my $name (keys %w)
	{
		my $h = $w{$name}{h} or next;
		eval { $h->kill_kill(grace => 2) if $h->pumpable; 1 };
	}
}

sub logs
{
	return join '', map { "----- $_:\n" . (-f $w{$_}{log} ? slurp_file($w{$_}{log}) : '') }
	  sort keys %w;
}

ok( defined vb_wait_for($pg, q{
SELECT count(DISTINCT application_name) FROM pg_stat_activity
 WHERE application_name IN ('py-worker', 'node-worker') AND query = 'LISTEN vectorbea_tasks'},
		'2', 30),
	'both workers are listening on vectorbea_tasks')
  or diag(logs());
my $t_workers = time;

# ---------------------------------------------------------------------------
# The work
# ---------------------------------------------------------------------------
sub query { return $pg->safe_psql('postgres', shift) }

query(q{SELECT vectorbea.start_run('ex_long', '{}')});
ok( defined vb_wait_for($pg,
		q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_STARTED' AND node = 'long'}, '1',
		20),
	'a worker claimed "long"') or diag(logs());
my $cancel_run = query(qq{
SELECT count(vectorbea.start_run('ex_mix', jsonb_build_object('i', g))) FROM generate_series(1, $RUNS) g;
SELECT vectorbea.start_run('ex_cancel', '{}');});
($cancel_run) = reverse split /\n/, $cancel_run;
ok( defined vb_wait_for($pg,
		q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_STARTED' AND node = 'doomed'}, '1',
		20),
	'a worker claimed "doomed"') or diag(logs());
is(query("SELECT vectorbea.cancel_run('$cancel_run', 'test: the holder must get VB001')"),
	't', 'the run of "doomed" is cancelled while a worker holds it');

ok( defined vb_wait_for($pg,
		q{SELECT count(*) FROM vectorbea.runs WHERE status IN ('running', 'compensating')}, '0', 40),
	'every run finished');
is( query(q{
SELECT count(*) FILTER (WHERE status = 'succeeded') || '/' || count(*)
  FROM vectorbea.runs WHERE workflow <> 'ex_cancel'}),
	($RUNS + 1) . '/' . ($RUNS + 1),
	'every run succeeded (but the cancelled one)')
  or diag(query('SELECT workflow, status, error FROM vectorbea.runs') . "\n" . logs());
my $t_done = time;

# ---------------------------------------------------------------------------
# Stopping: Node by SIGTERM, Python by --drain
# ---------------------------------------------------------------------------
my $node_h = $w{'node-worker'}{h};
$node_h->signal('TERM');
my $t_term = time;
for my $name (sort keys %w)
{
	my $h = $w{$name}{h};
	my $finished = eval { $h->finish; 1 };
	is($finished ? $h->full_result(0) : 'timeout', 0, "$name exited with status 0")
	  or diag(logs());
	$w{$name}{text} = slurp_file($w{$name}{log});
	delete $w{$name}{h};
}
my $t_term_secs = time - $t_term;
like($w{'node-worker'}{text}, qr/node-worker stopped: signal$/m, 'node-worker stopped on SIGTERM');
like($w{'py-worker'}{text}, qr/py-worker stopped: drained$/m, 'py-worker stopped after --drain');

# ---------------------------------------------------------------------------
# What the history says
# ---------------------------------------------------------------------------
sub no_rows
{
	my ($sql, $name) = @_;
	my $out = query($sql);
	is($out, '', $name) or diag("offending rows:\n$out");
}

no_rows(q{
SELECT run_id, node, array_agg(attempt ORDER BY seq)
  FROM vectorbea.events WHERE type = 'STEP_STARTED'
 GROUP BY run_id, node HAVING count(*) <> count(DISTINCT attempt)},
	'every STEP_STARTED of a node has an attempt of its own');

is( query(q{
SELECT n.status || ' attempt ' || n.attempt
       || ', started ' || (SELECT count(*) FROM vectorbea.events e
                            WHERE e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_STARTED')
       || ', failed ' || (SELECT count(*) FROM vectorbea.events e
                           WHERE e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_FAILED')
       || ', completed by attempt ' || coalesce((SELECT string_agg(e.attempt::text, ',')
                           FROM vectorbea.events e
                           WHERE e.run_id = n.run_id AND e.node = n.node AND e.type = 'STEP_COMPLETED'),
                           'none')
  FROM vectorbea.nodes n WHERE n.node = 'long'}),
	'succeeded attempt 1, started 1, failed 0, completed by attempt 1',
	'"long" finished in its first attempt');
my $held = query(q{
SELECT extract(epoch FROM c.at - s.at)::numeric(10, 1)
  FROM vectorbea.events s JOIN vectorbea.events c ON c.run_id = s.run_id AND c.node = s.node
 WHERE s.node = 'long' AND s.type = 'STEP_STARTED' AND c.type = 'STEP_COMPLETED'});
cmp_ok($held || 0, '>', $LEASE,
	"\"long\" held its ${LEASE}s lease for ${held}s: heartbeats renewed it");

is( query(q{
SELECT count(*) FROM vectorbea.nodes n
 WHERE n.node = 'flaky' AND n.status = 'succeeded' AND n.attempt = 2
   AND EXISTS (SELECT 1 FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
                  AND e.type = 'STEP_FAILED' AND e.attempt = 1 AND e.data->>'class' = 'transient'
                  AND e.data->'error'->>'message' = 'k1: service busy, try again')
   AND EXISTS (SELECT 1 FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
                  AND e.type = 'STEP_RETRIED' AND e.attempt = 1)
   AND EXISTS (SELECT 1 FROM vectorbea.events e WHERE e.run_id = n.run_id AND e.node = n.node
                  AND e.type = 'STEP_COMPLETED' AND e.attempt = 2)}),
	$RUNS, 'every "flaky" failed once (transient), was retried, and succeeded in attempt 2');
is(query(q{SELECT count(*) FROM vectorbea.nodes WHERE node = 'flaky' AND attempt <> 2}),
	'0', 'no "flaky" took other than 2 attempts');

is( query(q{
SELECT count(*) FROM vectorbea.nodes
 WHERE (node = 'hello' AND output = '{"hello": "world"}')
    OR (node = 'join' AND output = '{"joined": 3}')
    OR (node = 'nap' AND output = '{"slept": true}')}),
	3 * $RUNS, 'the handlers\' outputs were recorded');

my %by_worker = map { split /\|/ } split /\n/, query(q{
SELECT data->>'worker', count(*) FROM vectorbea.events WHERE type = 'STEP_STARTED'
 GROUP BY 1 ORDER BY 1});
is(join(',', sort keys %by_worker), 'node-worker,py-worker', 'both workers started tasks')
  or diag(explain \%by_worker);

like(logs(), qr/ doomed attempt 1: VB001, result dropped/,
	'the holder of "doomed" dropped its result on VB001');
is( query(qq{
SELECT r.status || ', ' || count(e.*) FILTER (WHERE e.type = 'STEP_COMPLETED')
  FROM vectorbea.runs r LEFT JOIN vectorbea.events e ON e.run_id = r.id
 WHERE r.id = '$cancel_run' GROUP BY r.status}),
	'cancelled, 0', 'the cancelled run recorded no completion');

no_rows(q{SELECT r.id, v FROM vectorbea.runs r, vectorbea.verify_run(r.id) v},
	'verify_run finds no difference for any run');

unlike(logs(), qr/Traceback|Error:|ERROR/, 'no worker printed an unexpected error')
  or diag(logs());

diag(sprintf(
	'tasks started: %s; npm %.1fs, setup %.1fs, work %.1fs, stop %.1fs, total %.1fs',
	join(', ', map { "$_ $by_worker{$_}" } sort keys %by_worker),
	$t_npm, $t_workers - $t0 - $t_npm, $t_done - $t_workers, $t_term_secs, time - $t0));

$pg->stop;
done_testing();
