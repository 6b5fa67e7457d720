# 044_kept_plans.pl -- the engine's statements keep their plans: none is
# planned again at every call.
#
# The engine prepares its statements once per session; PostgreSQL's plan
# cache then plans a statement afresh at each call for as long as a plan
# made for the call's values looks cheaper than the generic one.  For
# the claim that cost more than running it: the claims that choose
# workspaces (a worker role kept out of a workspace mapped to another
# role, a claim under a concurrency limit) were planned at every call,
# and a tenant's worker paid three times the owner's CPU per claim
# (docs/decisions.md, "Every variant of the claim keeps its generic
# plan").  No timing shows it in a test, but pg_stat_statements counts
# plans: here one session goes fifteen times through the task path, as
# the owner and as a worker role of a database with a mapped workspace
# (claims of one and several activities, of one task and of several, a
# claim under a limit, heartbeat, complete_task, complete_tasks, a
# failure to retry), starts runs (start_run, start_runs), completes a task
# that spawns nodes, and runs a pass of run_due_work, and no statement the
# engine ran inside them may have been planned more than six times (the
# plan cache's five custom plans and the generic one).

use strict;
use warnings;
use FindBin;
use lib $FindBin::Bin;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use VbTest;

my $node = vb_server('kept_plans', q{autovacuum = off
shared_preload_libraries = 'vectorbea, pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.track_planning = on
});
# Not the scheduler's database (postgres): its statements stay out of the count.
$node->safe_psql('postgres', 'CREATE DATABASE kept');
my $sql = sub { return $node->safe_psql('kept', $_[0]); };

$sql->(q{
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION vectorbea CASCADE;
CREATE ROLE tenant_worker;
CREATE ROLE other_tenant;
SELECT vectorbea.grant_workspace('elsewhere', 'other_tenant');
SELECT vectorbea.define_workflow('ten', jsonb_build_object('nodes',
	(SELECT jsonb_agg(jsonb_build_object('id', 'n' || i,
	                                     'activity', CASE WHEN i <= 6 THEN 'work' WHEN i <= 8 THEN 'other' ELSE 'limited' END,
	                                     'retry', jsonb_build_object('max_attempts', 3)))
	   FROM generate_series(1, 10) i)));
SELECT count(*) FROM vectorbea.start_runs('ten', array_fill('{}'::jsonb, ARRAY[200]));
SELECT count(*) FROM vectorbea.start_runs('ten', array_fill('{}'::jsonb, ARRAY[20]), NULL,
                                          '{"workspace": "elsewhere"}');
SELECT vectorbea.define_workflow('grower', '{"nodes": [{"id": "root", "activity": "grow"}]}');
SELECT count(*) FROM vectorbea.start_runs('grower', array_fill('{}'::jsonb, ARRAY[40]));
SELECT vectorbea.set_concurrency_limit('limited', 1);
ANALYZE;
} . vb_worker_grants_sql('tenant_worker'));

# One round of claims by the worker named $name.
sub round_as
{
	my ($name) = @_;
	return qq{
SELECT task_id AS t1, lease AS l1 FROM vectorbea.claim_tasks('$name', ARRAY['work'], 1) \\gset
SELECT vectorbea.heartbeat(:t1, :'l1');
SELECT vectorbea.complete_task(:t1, :'l1', '{"ok": true}');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('$name', ARRAY['work'], 5) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('$name', ARRAY['other', 'work'], 3) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
SELECT task_id AS t2, lease AS l2 FROM vectorbea.claim_tasks('$name', ARRAY['work'], 1) \\gset
SELECT vectorbea.fail_task(:t2, :'l2', '{"message": "again"}');
SELECT array_agg(task_id) AS ids, array_agg(lease) AS leases
  FROM vectorbea.claim_tasks('$name', ARRAY['limited'], 2) \\gset
SELECT vectorbea.complete_tasks(:'ids', :'leases');
};
}

my $rounds = 15;
# Each round also starts runs, one and three at a time, and completes a
# task with a spawn list (the living graph's new nodes).
my $starts = q{
SELECT vectorbea.start_run('grower', '{"n": 1}');
SELECT count(*) FROM vectorbea.start_runs('grower', array_fill('{}'::jsonb, ARRAY[3]));
SELECT task_id AS t3, lease AS l3 FROM vectorbea.claim_tasks('owner', ARRAY['grow'], 1) \gset
SELECT vectorbea.complete_task(:t3, :'l3', NULL,
	'[{"id": "leaf1", "activity": "leaf"}, {"id": "leaf2", "activity": "leaf", "depends_on": ["leaf1"]}]');
};
my $session = "SET client_min_messages = warning;\nSELECT pg_stat_statements_reset();\n"
  . ((round_as('owner') . $starts . "SET ROLE tenant_worker;\n" . round_as('tenant')
	  . "RESET ROLE;\nSELECT vectorbea.run_due_work();\n") x $rounds);
my ($ret, $stdout, $stderr) = $node->psql('kept', $session, on_error_stop => 1);
is($ret, 0, 'the rounds ran without an error') or diag($stderr);

# The rounds did their work (each claim's STEP_STARTED names its
# worker), and the worker role's claims kept out of the mapped workspace.
is($sql->(q{SELECT count(*) FILTER (WHERE e.data->>'worker' = 'owner'),
				   count(*) FILTER (WHERE e.data->>'worker' = 'tenant'),
				   count(*) FILTER (WHERE e.data->>'worker' = 'tenant' AND r.workspace = 'elsewhere'),
				   count(*) FILTER (WHERE e.node IN ('n9', 'n10'))
			  FROM vectorbea.events e JOIN vectorbea.runs r ON r.id = e.run_id
			 WHERE e.type = 'STEP_STARTED'}),
	join('|', 12 * $rounds, 11 * $rounds, 0, 2 * $rounds),
	'owner and worker role started twelve and eleven attempts a round, none of the worker role in the mapped workspace; the limit let one through a claim');
is($sql->(q{SELECT count(*) FILTER (WHERE workflow = 'grower'),
				   (SELECT count(*) FROM vectorbea.nodes WHERE node IN ('leaf1', 'leaf2'))
			  FROM vectorbea.runs}),
	join('|', 40 + 4 * $rounds, 2 * $rounds), 'four runs started a round, and each spawn added its two nodes');

# The claims chose workspaces: the worker role's, and the ones under the limit.
my $filtered = $sql->(q{SELECT count(*) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
						 WHERE d.datname = 'kept' AND NOT s.toplevel AND s.query LIKE '%r.workspace <> ALL%'});
ok($filtered >= 2, "the filtered claims are among the statements counted ($filtered)");

# (Not the foreign keys' checks: PostgreSQL's own statements, one per
# constraint, counted together since their text is the same.)
my $replanned = $sql->(q{
SELECT coalesce(string_agg(s.calls || ' calls, ' || s.plans || ' plans: '
						   || left(regexp_replace(s.query, '\s+', ' ', 'g'), 160), E'\n'), '')
  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
 WHERE d.datname = 'kept' AND NOT s.toplevel AND s.calls >= 10 AND s.plans > 6
   AND s.query NOT LIKE '% FROM ONLY %'});
is($replanned, '', 'no statement of the engine was planned more than six times');

done_testing();
