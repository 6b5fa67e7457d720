# vectorbea.retention: the scheduler purges finished runs older than the
# setting on its own, one bounded batch a pass, counts each batch in
# purge_batches, and leaves running runs alone.  A batch is bounded by its
# events too (vectorbea.retention_batch_events), the oldest runs first: a
# batch of 500 runs of ten thousand tasks each lasted minutes, and the
# scheduler's leases and timers waited for it.
use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('retention');
sub sql { return $node->safe_psql('postgres', shift); }
ok(defined vb_wait_for($node,
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'vectorbea scheduler'}, '1'),
	'the scheduler is running');
sql('CREATE EXTENSION vectorbea CASCADE');
sql(q{SELECT vectorbea.define_workflow('ret', '{"nodes":[{"id":"work","activity":"ret_work"}]}')});
sql(q{SELECT vectorbea.start_run('ret', jsonb_build_object('n', i)) FROM generate_series(1, 1200) i});
# 1,000 finish; 200 stay running.
sql(q{SELECT count(vectorbea.complete_task(task_id, lease, '{}'))
		FROM vectorbea.claim_tasks('w', ARRAY['ret_work'], 1000)});
is(sql(q{SELECT count(*) FILTER (WHERE status = 'succeeded') || ' ' || count(*) FILTER (WHERE status = 'running')
		   FROM vectorbea.runs}), '1000 200', '1,000 runs finished, 200 running');

# Off by default: with the engine clock moved two hours on, the finished
# runs are two hours old, and a pass of the scheduler (begun after the
# scheduler read the new clock) purges nothing.
is(sql(q{SHOW vectorbea.retention}), '0', 'retention is not set');
sql(q{ALTER SYSTEM SET vectorbea.test_clock_offset = '2h'});
ok(vb_reload($node, { 'vectorbea.test_clock_offset' => '2h' }), 'the engine clock is two hours on');
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded'
		   AND finished_at < vectorbea.clock() - interval '1 hour 59 minutes'}), '1000',
	'the finished runs are two hours old');
is(sql(q{SELECT count(*) FROM vectorbea.purge_batches}) . ' '
	  . sql(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded'}), '0 1000',
	'retention is off by default: nothing was purged');

# Keep finished runs one hour.
sql(q{ALTER SYSTEM SET vectorbea.retention = '1h'});
sql(q{SELECT pg_reload_conf()});
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE status = 'succeeded'}, '0', 60),
	'the scheduler purged every finished run');
is(sql(q{SELECT count(*) FROM vectorbea.runs WHERE status = 'running'}), '200', 'running runs are left');
is(sql(q{SELECT count(*) FROM vectorbea.events e
		   WHERE NOT EXISTS (SELECT FROM vectorbea.runs r WHERE r.id = e.run_id)}), '0',
	'no event of a purged run is left');
is(sql(q{SELECT sum(runs) || ' ' || max(runs) || ' ' || count(*) || ' ' || min(purged_by)
		   FROM vectorbea.purge_batches}), '1000 500 2 vectorbea scheduler',
	'two batches of at most 500 runs, recorded as the scheduler\'s');
is(sql(q{SELECT count(*) FROM vectorbea.runs r, LATERAL vectorbea.verify_run(r.id)}), '0',
	'every run left is consistent');
# Autovacuum learns of the purged rows from the statistics: the scheduler
# reports them after the purge, not at its next pass (an hour away here).
ok(defined vb_wait_for($node, q{SELECT n_tup_del FROM pg_stat_user_tables
		WHERE relid = 'vectorbea.runs'::regclass}, '1000', 30),
	'the statistics count the 1,000 purged runs at once');

# ---------------------------------------------------------------------------
# Batches bounded by events.  Seven runs finish one after another, the
# fourth wider than the bound; with room for two one-task runs in a batch,
# the scheduler purges them two, one (the next does not fit), the wide one
# alone, two, one.
sql(q{SELECT vectorbea.define_workflow('ret_one', '{"nodes":[{"id":"a","activity":"ret_batch"}]}')});
sql(q{SELECT vectorbea.define_workflow('ret_wide', '{"nodes":[
	{"id":"a","activity":"ret_batch"}, {"id":"b","activity":"ret_batch"},
	{"id":"c","activity":"ret_batch"}, {"id":"d","activity":"ret_batch"}]}')});
my $batches_before = sql(q{SELECT count(*) FROM vectorbea.purge_batches});
for my $i (1 .. 7)
{
	my $workflow = $i == 4 ? 'ret_wide' : 'ret_one';
	sql(qq{SELECT vectorbea.start_run('$workflow', '{"batch": $i}')});
	sql(q{SELECT count(vectorbea.complete_task(task_id, lease, '{}'))
			FROM vectorbea.claim_tasks('w', ARRAY['ret_batch'], 10)});
}
is(sql(q{SELECT string_agg(workflow || ' ' || status, ',' ORDER BY finished_at)
		   FROM vectorbea.runs WHERE input ? 'batch'}),
	join(',', map { $_ == 4 ? 'ret_wide succeeded' : 'ret_one succeeded' } 1 .. 7),
	'seven runs finished one after another, the fourth of four tasks');
my $one = sql(q{SELECT min(last_seq) FROM vectorbea.runs WHERE input ? 'batch'});
my $wide = sql(q{SELECT max(last_seq) FROM vectorbea.runs WHERE input ? 'batch'});
my $bound = 2 * $one + 1;
cmp_ok($wide, '>', $bound, "the wide run has more events ($wide) than the bound ($bound)");
sql(qq{ALTER SYSTEM SET vectorbea.retention_batch_events = $bound});
sql(q{ALTER SYSTEM SET vectorbea.test_clock_offset = '4h'});
ok(vb_reload($node, { 'vectorbea.retention_batch_events' => $bound, 'vectorbea.test_clock_offset' => '4h' }),
	'the bound is set and the runs are two hours old');
ok(defined vb_wait_for($node, q{SELECT count(*) FROM vectorbea.runs WHERE input ? 'batch'}, '0', 60),
	'the scheduler purged them all');
is(sql(qq{SELECT string_agg(runs || ':' || events, ' ' ORDER BY id)
		   FROM (SELECT * FROM vectorbea.purge_batches ORDER BY id OFFSET $batches_before) b}),
	join(' ', '2:' . 2 * $one, "1:$one", "1:$wide", '2:' . 2 * $one, "1:$one"),
	'in batches of at most the bound\'s events, oldest first, the wide run alone');

sql(q{ALTER SYSTEM RESET vectorbea.retention});
sql(q{ALTER SYSTEM RESET vectorbea.retention_batch_events});
sql(q{ALTER SYSTEM RESET vectorbea.test_clock_offset});
sql(q{SELECT pg_reload_conf()});
done_testing();
