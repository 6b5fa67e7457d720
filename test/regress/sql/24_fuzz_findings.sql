-- What the fuzz campaigns (test/fuzz, docs/testing.md) found, as the user
-- meets it.  Each case failed before its fix; the inputs that found them
-- are replayed by test/fuzz/run replay from test/fuzz/regressions/.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

-- Target template: {{run.input}} (and {{input}}) name a whole object.  As a
-- string value it keeps its type; inside a text it is the object's JSON.
-- The text form used to copy nothing of the object and fail with an
-- internal error ("unknown type of jsonb container").
SELECT vectorbea.define_workflow('leaf', '{"nodes":[{"id":"leaf","activity":"w_leaf"}]}');
SELECT vectorbea.define_workflow('whole', $${"nodes":[
	{"id":"kid","kind":"run","run":{"workflow":"leaf"},
	 "input":{"text":"all of it: {{run.input}}","whole":"{{run.input}}","who":"{{ run.input.who }}"}}]}$$);
SELECT vectorbea.start_run('whole', '{"who": "ada", "n": [1, {"deep": null}]}') AS whole_run \gset
SELECT vectorbea.run_due_work()->'waits_started' AS started;
SELECT jsonb_pretty(input) AS child_input FROM vectorbea.runs WHERE parent_run = :'whole_run';
SELECT node, status FROM vectorbea.nodes WHERE run_id = :'whole_run';
SELECT * FROM check_run(:'whole_run');

