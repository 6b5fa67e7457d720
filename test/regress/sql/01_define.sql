-- define_workflow: versions, and every validation error, each with nothing
-- written.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
SELECT vectorbea.define_workflow('triage', '{"nodes":[{"id":"scout","activity":"scout"}]}');
SELECT vectorbea.define_workflow('triage', '{"nodes":[{"id":"scout","activity":"scout"},
	{"id":"fix","activity":"fix","depends_on":["scout"]}]}');
SELECT name, version, jsonb_array_length(definition->'nodes') AS nodes
  FROM vectorbea.workflows ORDER BY name, version;

-- A stored version is immutable.
UPDATE vectorbea.workflows SET definition = '{}' WHERE name = 'triage';

-- validate_workflow shows the nodes with every default applied.
SELECT jsonb_pretty(vectorbea.validate_workflow('{
	"nodes": [{"id": "plan", "activity": "planner", "depends_on": [], "input": {"depth": 2},
			   "retry": {"max_attempts": 5, "backoff": "exponential", "initial": "1s", "max": "1m"},
			   "timeout": "10m"},
			  {"id": "act", "activity": "actor", "depends_on": ["plan"]}],
	"defaults": {"retry": {"max_attempts": 4, "jitter": false, "initial": "250ms"},
				 "timeout": "1h30m"}}'));

-- A backoff multiplier is kept to the last digit it was given.
SELECT vectorbea.validate_workflow('{"nodes": [{"id": "a", "activity": "a", "retry": {"multiplier": 1.0000001}}]}') #> '{0,retry,multiplier}' AS a_multiplier,
	   vectorbea.validate_workflow('{"nodes": [{"id": "b", "activity": "b", "retry": {"multiplier": 1.23456789}}]}') #> '{0,retry,multiplier}' AS b_multiplier;

-- Each refusal prints its SQLSTATE after the message.
-- Names.
SELECT vectorbea.define_workflow('', '{"nodes":[{"id":"a","activity":"a"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('has space', '{"nodes":[{"id":"a","activity":"a"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow(NULL, '{"nodes":[{"id":"a","activity":"a"}]}'); \echo SQLSTATE :SQLSTATE
-- Shape.
SELECT vectorbea.define_workflow('w', '[]'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": {}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": []}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [1]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a"}], "extra": true}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","colour":"red"}]}'); \echo SQLSTATE :SQLSTATE
-- Ids and activities.
SELECT vectorbea.define_workflow('w', '{"nodes": [{"activity":"a"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":7,"activity":"a"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a b","activity":"a"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a"}]}'); \echo SQLSTATE :SQLSTATE
-- Duplicate node ids.
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"x"},{"id":"b","activity":"x"},{"id":"a","activity":"y"}]}'); \echo SQLSTATE :SQLSTATE
-- Unknown kind, and kinds this version refuses rather than ignores.
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","kind":"robot"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","kind":"llm"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","kind":"approval"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","timeout":"0s"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","timeout":600}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","compensate":{"activity":"undo","sleep":{}}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","estimate":{"usd":"cheap"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a"}], "defaults": {"llm": {}}}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a"}], "defaults": {"timeout": "forever"}}'); \echo SQLSTATE :SQLSTATE
-- Unknown dependency.
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","depends_on":["ghost"]}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","depends_on":"b"}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a"},{"id":"b","activity":"b","depends_on":["a","a"]}]}'); \echo SQLSTATE :SQLSTATE
-- Cycles: self, two nodes, and a long one behind an acyclic entry.
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","depends_on":["a"]}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","depends_on":["b"]},{"id":"b","activity":"b","depends_on":["a"]}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [
	{"id":"start","activity":"s"},
	{"id":"n1","activity":"x","depends_on":["start","n4"]},
	{"id":"n2","activity":"x","depends_on":["n1"]},
	{"id":"n3","activity":"x","depends_on":["n2"]},
	{"id":"n4","activity":"x","depends_on":["n3"]},
	{"id":"end","activity":"e","depends_on":["n4"]}]}'); \echo SQLSTATE :SQLSTATE
-- Durations.
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"initial":"5 parsecs"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"max":"1y"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"initial":30}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a"}], "defaults": {"retry": {"max": "soon"}}}'); \echo SQLSTATE :SQLSTATE
-- Retry policies.
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"max_attempts":0}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"max_attempts":2.5}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"max_attempts":"3"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"backoff":"linear"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"initial":"1m","max":"1s"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"multiplier":0.5}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"jitter":"yes"}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":{"attempts":3}}]}'); \echo SQLSTATE :SQLSTATE
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","retry":[]}]}'); \echo SQLSTATE :SQLSTATE
-- Input must be an object.
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a","input":[1,2]}]}'); \echo SQLSTATE :SQLSTATE
-- Payload size limit (a setting, default 1 MB).
SET vectorbea.max_payload_size = '1kB';
SELECT vectorbea.define_workflow('w', jsonb_build_object('nodes', jsonb_build_array(
	jsonb_build_object('id', 'a', 'activity', 'a', 'input', jsonb_build_object('blob', repeat('x', 2000)))))); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_payload_size;
-- Node count limit (a setting).
SET vectorbea.max_nodes_per_run = 3;
SELECT vectorbea.define_workflow('w', '{"nodes": [{"id":"a","activity":"a"},{"id":"b","activity":"a"},
	{"id":"c","activity":"a"},{"id":"d","activity":"a"}]}'); \echo SQLSTATE :SQLSTATE
RESET vectorbea.max_nodes_per_run;

-- None of the refused definitions left anything behind.
SELECT count(*) AS workflows_named_w FROM vectorbea.workflows WHERE name = 'w';

-- The limits are superuser-only: a role cannot lift them for itself.
SET ROLE vb_plain_user;
SET vectorbea.max_payload_size = '1GB';
SET vectorbea.max_nodes_per_run = 1000000;
RESET ROLE;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
