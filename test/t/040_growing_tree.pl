# 040_growing_tree.pl -- a workflow that starts itself twice does not stall
# the scheduler, and cancelling its root stops the whole tree.
#
# "tree" has two run nodes, each starting "tree" again: with
# vectorbea.max_tree_runs raised here (so that a fast machine cannot reach
# it before the checks), a tree of up to 2^17 - 1 runs, grown by the
# scheduler (every child's run nodes are due as soon as it starts).  Before each scheduler
# step was bounded, one step built the whole tree in one transaction: for
# minutes no run of it was visible, cancel_run of its root waited for that
# transaction, and every other timer of the database waited behind it.  Here, with the real
# scheduler and nothing calling run_due_work:
#
# - the tree's runs become visible while it grows (steps commit);
# - a run "tick" started meanwhile ends its 2-second sleep and its next
#   task becomes ready while the tree is still growing;
# - cancel_run of the root gets the root's row within a step, about a
#   second (a step that counted a start holds it until it commits;
#   lock_timeout 10 s), and the tree then stops: no run of it is left
#   running, its size no longer changes, every run of it is cancelled or
#   failed at one of the limits, and verify_run finds nothing in the root
#   or a sample of others;
# - the scheduler recorded no SCHEDULER_ERROR.

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('growing_tree', "vectorbea.max_tree_runs = 1000000\n");
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'the scheduler is running');
$node->safe_psql('postgres', 'CREATE EXTENSION vectorbea CASCADE');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{SELECT vectorbea.define_workflow('tree', '{"nodes":[
	{"id":"left","kind":"run","run":{"workflow":"tree"}},
	{"id":"right","kind":"run","run":{"workflow":"tree"}}]}')});
sql(q{SELECT vectorbea.define_workflow('tick', '{"nodes":[
	{"id":"nap","kind":"sleep","sleep":{"for":"2s"}},
	{"id":"after","activity":"tick_after","depends_on":["nap"]}]}')});

my $root = sql(q{SELECT vectorbea.start_run('tree', '{}')});

ok(defined vb_wait_for($node,
		q{SELECT count(*) >= 300 FROM vectorbea.runs WHERE workflow = 'tree'}, 't', 60),
	'the tree\'s runs become visible while it grows');

my $tick = sql(q{SELECT vectorbea.start_run('tick', '{}')});
ok(defined vb_wait_for($node,
		qq{SELECT status FROM vectorbea.nodes WHERE run_id = '$tick' AND node = 'after'}, 'ready', 60),
	'another run\'s sleep ends while the tree grows');
is(sql(q{SELECT count(*) > 0 FROM vectorbea.runs WHERE workflow = 'tree' AND status = 'running'}),
	't', 'the tree was still growing then');

my ($rc, $out, $err) = $node->psql('postgres',
	qq{SET lock_timeout = '10s'; SELECT vectorbea.cancel_run('$root', 'runaway tree')});
is($rc, 0, 'cancel_run of the root gets its row within a step') or diag($err);

ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'tree' AND status = 'running'}, '0', 180),
	'no run of the tree is left running');
my $size = sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'tree'});
ok(vb_scheduler_pass($node), 'the scheduler made another pass');
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE workflow = 'tree'}), $size,
	"the tree stopped at $size runs");
is(sql(qq{SELECT status FROM vectorbea.runs WHERE id = '$root'}), 'cancelled', 'the root is cancelled');
is(sql(q{SELECT count(*) FROM vectorbea.runs r
		  WHERE r.workflow = 'tree' AND r.status <> 'cancelled'
			AND NOT (r.status = 'failed' AND EXISTS (SELECT FROM vectorbea.events e
					  WHERE e.run_id = r.id AND e.type = 'STEP_FAILED'
						AND ((e.data #>> '{error,depth_limit}')::boolean
							 OR (e.data #>> '{error,tree_limit}')::boolean)))}),
	'0', 'every other run of the tree is cancelled, or failed at a limit of child runs');
is(sql(qq{SELECT count(*) FROM vectorbea.verify_run('$root')}), '0', 'verify_run finds nothing in the root');
is(sql(q{SELECT count(*) FROM (SELECT id FROM vectorbea.runs WHERE workflow = 'tree'
		  ORDER BY id DESC LIMIT 20) r, vectorbea.verify_run(r.id)}),
	'0', 'nor in the 20 runs started last');
is(sql(q{SELECT count(*) FROM vectorbea.events WHERE type = 'SCHEDULER_ERROR'}), '0',
	'the scheduler recorded no SCHEDULER_ERROR');

$node->stop;
done_testing();
