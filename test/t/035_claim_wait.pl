# A claim that finds its ready work only in a busy run waits for that run
# for at most vectorbea.claim_wait (src/claim.c), then comes back empty,
# having changed nothing; the session's own lock_timeout is untouched; a
# statement_timeout that ends the wait first is the caller's error, not
# swallowed, and a shorter lock_timeout of the session holds; under
# REPEATABLE READ it does not wait.  (Waiting and then claiming: isolation
# spec claim_wait.)
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use VbTest;

my $node = vb_server('claim_wait');
sub sql { return $node->safe_psql('postgres', shift); }

sql(q{CREATE EXTENSION vectorbea CASCADE});
sql(q{SELECT vectorbea.define_workflow('pair',
	'{"nodes":[{"id":"a","activity":"cw"},{"id":"b","activity":"cw"}]}')});
sql(q{SELECT vectorbea.start_run('pair', '{}')});

is(sql(q{SHOW vectorbea.claim_wait}), '100ms', 'claims wait 100 ms by default');

# The holder claims one task and keeps its transaction, and so the run, open.
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN});
is($holder->query_safe(q{SELECT node FROM vectorbea.claim_tasks('holder', ARRAY['cw'], 1)}),
	'a', 'the holder leased a and holds the run');

my $start = time;
my $out = sql(q{SET vectorbea.claim_wait = '400ms';
	SELECT count(*) FROM vectorbea.claim_tasks('waiter', ARRAY['cw'], 1);
	SHOW lock_timeout;});
my $elapsed = time - $start;
is($out, "0\n0", 'the waiter came back empty, and its session\'s lock_timeout is still 0');
cmp_ok($elapsed, '>=', 0.4, 'after waiting vectorbea.claim_wait for the busy run');
is(sql(q{SET vectorbea.claim_wait = 0;
	SELECT count(*) FROM vectorbea.claim_tasks('waiter', ARRAY['cw'], 1)}), 0,
	'with claim_wait 0 the claim skips the busy run');

# Under REPEATABLE READ the claim does not wait: locking the run after its
# holder's commit would be a serialization failure, not a claim.  The wait
# would be claim_wait, at its maximum (60 s) here, and the holder keeps the
# run all along: coming back sooner than that is not waiting.  (The bound
# is the setting itself, not a guess at the machine's speed.)
$start = time;
is(sql(q{SET vectorbea.claim_wait = '60s';
	BEGIN ISOLATION LEVEL REPEATABLE READ;
	SELECT count(*) FROM vectorbea.claim_tasks('waiter', ARRAY['cw'], 1);
	COMMIT;}), 0, 'a claim under REPEATABLE READ skips the busy run');
$elapsed = time - $start;
cmp_ok($elapsed, '<', 60, 'without waiting claim_wait');
note(sprintf('the claim under REPEATABLE READ came back after %.2f s', $elapsed));

# A session's lock_timeout shorter than claim_wait bounds the wait: back
# sooner than claim_wait (60 s, its maximum), which it would otherwise wait.
$start = time;
is(sql(q{SET lock_timeout = '300ms'; SET vectorbea.claim_wait = '60s';
	SELECT count(*) FROM vectorbea.claim_tasks('waiter', ARRAY['cw'], 1)}), 0,
	'with lock_timeout shorter than claim_wait the claim still comes back empty');
$elapsed = time - $start;
cmp_ok($elapsed, '>=', 0.3, 'after waiting lock_timeout');
cmp_ok($elapsed, '<', 60, 'not claim_wait');
note(sprintf('the claim under lock_timeout 300ms came back after %.2f s', $elapsed));

my ($ret, $stdout, $stderr) = $node->psql('postgres', q{SET statement_timeout = '300ms';
	SET vectorbea.claim_wait = '30s';
	SELECT count(*) FROM vectorbea.claim_tasks('waiter', ARRAY['cw'], 1)});
isnt($ret, 0, 'a statement_timeout shorter than the wait ends the claim');
like($stderr, qr/canceling statement due to statement timeout/,
	'with the statement timeout\'s own error');

# The holder commits: what the waiters did left no trace, and the next
# claim takes b at once.
$holder->query_safe(q{COMMIT});
is(sql(q{SELECT string_agg(node || ':' || status || ':' || attempt || ':' || coalesce(worker, '-'),
	',' ORDER BY node) FROM vectorbea.nodes}), 'a:running:1:holder,b:ready:0:-',
	'the waiters changed no node');
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'STEP_STARTED'}), 1,
	'and wrote no event');
is(sql(q{SELECT node FROM vectorbea.claim_tasks('waiter', ARRAY['cw'], 1)}), 'b',
	'once the holder committed, b is claimed');
is(sql(q{SELECT count(*) FROM vectorbea.runs, vectorbea.verify_run(id)}), 0,
	'the run verifies');

$holder->quit;
$node->stop;
done_testing();
