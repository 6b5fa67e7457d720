-- llm nodes: what a definition may say, what is refused and why, and what
-- is stored.  Calls themselves are made by the scheduler (TAP 007, 008).
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

-- A complete llm node, normalised with its defaults.
SELECT vectorbea.define_workflow('brief', $${"nodes": [
  {"id": "plan", "activity": "planner"},
  {"id": "brief", "kind": "llm", "depends_on": ["plan"],
   "input": {"tone": "dry"},
   "llm": {"provider": "openai", "model": "gpt-4o-mini",
           "system": "You write {{input.tone}} incident briefs.",
           "prompt": "Summarise: {{upstream.plan.output.summary}} for {{run.input.team}}",
           "max_tokens": 600, "temperature": 0.2,
           "output_schema": {"type": "object", "required": ["title"],
                             "properties": {"title": {"type": "string"},
                                            "severity": {"enum": ["low", "high"]},
                                            "steps": {"type": "array", "items": {"type": "string"}, "maxItems": 5}}},
           "max_corrections": 1}}]}$$);
SELECT vectorbea.start_run('brief', '{"team": "payments"}') AS run \gset
SELECT node, kind, activity, status, jsonb_pretty(llm) FROM vectorbea.nodes WHERE run_id = :'run' ORDER BY id;
-- The history records the normalised node, so replay needs no defaults.
SELECT data->'nodes'->1->'llm' = (SELECT llm FROM vectorbea.nodes WHERE run_id = :'run' AND node = 'brief')
  AS recorded FROM vectorbea.events WHERE run_id = :'run' AND type = 'RUN_STARTED';

-- Defaults: max_tokens 1024, no corrections without a schema, a spawn
-- allowance implies a JSON object answer with 2 corrections.
SELECT vectorbea.define_workflow('plain', '{"nodes": [{"id": "a", "kind": "llm",
  "llm": {"provider": "anthropic", "model": "claude-3-5-haiku-latest", "prompt": "hi"}}]}');
SELECT definition FROM vectorbea.workflows WHERE name = 'plain';
SELECT vectorbea.define_workflow('planner', '{"nodes": [{"id": "p", "kind": "llm",
  "llm": {"provider": "openai", "model": "m", "prompt": "plan",
          "allow_spawn": {"activities": ["investigate"], "max_nodes": 3}}}]}');
SELECT vectorbea.start_run('planner') AS prun \gset
SELECT llm->'output_schema' AS schema, llm->'max_corrections' AS corrections, llm->'allow_spawn' AS allow
  FROM vectorbea.nodes WHERE run_id = :'prun';

-- Every refusal names the node and the field.
CREATE FUNCTION try_llm(llm text, extra text DEFAULT '') RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	PERFORM vectorbea.validate_workflow(format(
		'{"nodes": [{"id": "up", "activity": "a"}, {"id": "x", "kind": "llm", "depends_on": ["up"], "llm": %s%s}]}',
		llm, extra)::jsonb);
	RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ' ' || SQLERRM || coalesce(nullif(' / ' || detail, ' / '), '');
END $$;
SELECT try_llm(t) FROM (VALUES
  ('"gpt"'),
  ('{}'),
  ('{"provider": "openai", "model": "m"}'),
  ('{"provider": "mistral", "model": "m", "prompt": "p"}'),
  ('{"provider": "openai", "model": "", "prompt": "p"}'),
  ('{"provider": "openai", "model": 4, "prompt": "p"}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "max_tokens": 0}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "max_tokens": 1.5}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "temperature": 3}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "temperature": "hot"}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "top_p": 1}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "max_corrections": 2}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"type": "object"}, "max_corrections": 11}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "on_exhausted": "escalate", "output_schema": {}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "on_exhausted": "ignore"}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"type": "object", "pattern": "x"}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"type": "thing"}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"properties": {"a": {"type": ["string", 1]}}}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"required": "title"}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"enum": []}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"additionalProperties": {"type": "string"}}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "allow_spawn": {"activities": []}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "allow_spawn": {"activities": ["a"]}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "allow_spawn": {"activities": ["vectorbea:other"], "max_nodes": 2}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "allow_spawn": {"activities": ["a"], "max_nodes": 2, "kinds": []}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"type": "array"}, "allow_spawn": {"activities": ["a"], "max_nodes": 2}}'),
  ('{"provider": "openai", "model": "m", "prompt": "p", "output_schema": {"type": ["object", "array"]}, "allow_spawn": {"activities": ["a"], "max_nodes": 2}}'),
  ('{"provider": "openai", "model": "m", "prompt": "{{input.x"}'),
  ('{"provider": "openai", "model": "m", "prompt": "{{ secrets.key }}"}'),
  ('{"provider": "openai", "model": "m", "prompt": "{{run.output}}"}'),
  ('{"provider": "openai", "model": "m", "prompt": "{{upstream.up.input.x}}"}'),
  ('{"provider": "openai", "model": "m", "prompt": "{{upstream.other.output.x}}"}'),
  ('{"provider": "openai", "model": "m", "prompt": "{{input..x}}"}'),
  ('{"provider": "openai", "model": "m", "system": "{{input.$x}}", "prompt": "p"}'),
  ('{"provider": "openai", "model": "m", "prompt": "{{ upstream.up.output }} and {{input.a.0.b}}"}')
) AS v(t);
SELECT try_llm('{"provider": "openai", "model": "m", "prompt": "p"}', ', "activity": "a"');
SELECT try_llm('{"provider": "openai", "model": "m", "prompt": "p"}', ', "approval": {}');
SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "a", "llm": {}}]}'); \echo SQLSTATE :SQLSTATE

-- The engine's activity names are reserved: not for task nodes, and no
-- worker may claim llm nodes.
SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "vectorbea:llm"}]}'); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('sneaky', ARRAY['vectorbea:llm']); \echo SQLSTATE :SQLSTATE
SELECT * FROM vectorbea.claim_tasks('sneaky', ARRAY['planner', 'vectorbea:llm']); \echo SQLSTATE :SQLSTATE
SELECT status FROM vectorbea.nodes WHERE run_id = :'prun';

-- Prices: seeded, editable, matched by the longest model prefix.
SELECT provider, count(*) > 0 AS seeded FROM vectorbea.model_prices GROUP BY provider ORDER BY 1;
SELECT model FROM vectorbea.model_prices
 WHERE provider = 'openai' AND starts_with('gpt-4o-mini-2024-07-18', model)
 ORDER BY length(model) DESC LIMIT 1;
SET ROLE vb_plain_user;
SELECT count(*) FROM vectorbea.model_prices; \echo SQLSTATE :SQLSTATE
RESET ROLE;
-- Editing a listed price makes it the user's; user rows win over the list
-- for the same model, and only they are dumped (CREATE EXTENSION seeds the
-- list again on restore).
UPDATE vectorbea.model_prices SET input_usd_per_mtok = 0.10 WHERE provider = 'openai' AND model = 'gpt-4o-mini';
INSERT INTO vectorbea.model_prices VALUES ('openai', 'gpt-4o', 2.00, 8.00);
SELECT provider, model, input_usd_per_mtok, output_usd_per_mtok, source
  FROM vectorbea.model_prices WHERE model IN ('gpt-4o', 'gpt-4o-mini') ORDER BY model, source;
SELECT model, source FROM vectorbea.model_prices
 WHERE provider = 'openai' AND starts_with('gpt-4o-2024-08-06', model)
 ORDER BY length(model) DESC, source = 'user' DESC LIMIT 1;
-- gpt-4o has a user row now: editing its list row too is refused, clearly,
-- and changes nothing; the user row is edited as usual.
UPDATE vectorbea.model_prices SET output_usd_per_mtok = 9 WHERE provider = 'openai' AND model = 'gpt-4o';
\echo SQLSTATE :SQLSTATE
UPDATE vectorbea.model_prices SET output_usd_per_mtok = 9
 WHERE provider = 'openai' AND model = 'gpt-4o' AND source = 'user';
SELECT model, output_usd_per_mtok, source FROM vectorbea.model_prices
 WHERE provider = 'openai' AND model = 'gpt-4o' ORDER BY source;
-- A provider no node can name is refused; nothing is written.
INSERT INTO vectorbea.model_prices VALUES ('opneai', 'my-model', 1, 1);
\echo SQLSTATE :SQLSTATE
UPDATE vectorbea.model_prices SET provider = 'azure' WHERE provider = 'openai' AND model = 'gpt-4o' AND source = 'user';
\echo SQLSTATE :SQLSTATE
SELECT count(*) FROM vectorbea.model_prices WHERE provider NOT IN ('openai', 'anthropic') OR model = 'my-model';
SELECT c.relname, x.cond
  FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(oid, cond)
  JOIN pg_class c ON c.oid = x.oid
 WHERE e.extname = 'vectorbea' ORDER BY 1;

SELECT * FROM check_run(:'run');
SELECT * FROM check_run(:'prun');

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
