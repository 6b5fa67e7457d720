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

-- Target schema: an output schema is refused when the answer check could
-- not load it: integers beyond 64 bits (PostgreSQL keeps them, and writes
-- 1e20 out as one; the JSON parser of the check does not), numbers beyond
-- a double, values nested deeper than it goes.  Such a schema used to be accepted and then failed the
-- check of every answer with an internal error.
CREATE FUNCTION try_schema(schema text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	PERFORM vectorbea.validate_workflow(format(
		'{"nodes": [{"id": "x", "kind": "llm", "llm": {"provider": "openai", "model": "m", "prompt": "p", "output_schema": %s}}]}',
		schema)::jsonb);
	RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ' ' || SQLERRM || coalesce(nullif(' / ' || detail, ' / '), '');
END $$;
SELECT try_schema(s) FROM (VALUES
  ('{"enum": [1e400]}'),
  ('{"enum": [1e20]}'),
  ('{"properties": {"n": {"enum": [1, 123456789012345678901234567890]}}}'),
  ('{"enum": [-1e309]}'),
  ('{"enum": [' || repeat('[', 2100) || repeat(']', 2100) || ']}'),
  -- what the check can load stays accepted
  ('{"enum": [9223372036854775807, -9223372036854775808, 2.5, 1.5e-300, 1e-400, [[["deep", "enough"]]]]}')
) AS v(s);

-- Target validate: a long value quoted in a message is cut between two
-- characters, not inside one (the cut used to split "é" and leave a message
-- that is not valid UTF-8).
SELECT vectorbea.validate_workflow(format(
	'{"nodes": [{"id": "x", "kind": "llm", "llm": {"provider": "openai", "model": "m", "prompt": "p", "on_exhausted": "a%s"}}]}',
	repeat('é', 40))::jsonb); \echo SQLSTATE :SQLSTATE

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
