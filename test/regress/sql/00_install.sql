-- The installed extension: its version and schema, its settings, the
-- search_path and grants of its functions, the engine clock and UUIDv7.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql

SELECT extname, extversion, extrelocatable, n.nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'vectorbea';

-- Loaded by shared_preload_libraries, with every setting defined.
SELECT name, setting, unit, context, vartype
  FROM pg_settings WHERE name LIKE 'vectorbea.%' ORDER BY name;

-- Settings live under a reserved prefix: a typo is an error, not a new GUC.
SET vectorbea.no_such_setting = 1;

-- The extension's own objects (pgcrypto, installed by CASCADE, may share
-- the schema).
CREATE VIEW vb_functions AS
	SELECT p.oid, p.proname, p.proconfig, p.prosecdef FROM pg_proc p
	  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
	 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'vectorbea');

-- Every function pins its search_path.
SELECT p.proname
  FROM vb_functions p
 WHERE NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
 ORDER BY 1;

-- No function is executable by PUBLIC but the two that the row-level
-- security policies call as the querying role (they answer for their
-- caller only); the tables are closed to PUBLIC.
SELECT p.proname FROM vb_functions p
 WHERE has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;
SELECT count(*) AS functions FROM vb_functions;
-- No function is SECURITY DEFINER: each door switches to the extension's
-- owner itself, so that it knows the role that called it (src/caller.c).
SELECT p.proname FROM vb_functions p WHERE p.prosecdef ORDER BY 1;
-- The functions written in SQL are C doors over a body of the same
-- arguments (src/query_door.c) that no role but the owner may execute.
SELECT d.proname AS door, l.lanname AS body_language, d.prosrc AS door_symbol,
	   b.proowner = d.proowner AS same_owner,
	   (SELECT count(*) FROM aclexplode(b.proacl) a WHERE a.grantee <> b.proowner) AS body_grants
  FROM pg_proc b
  JOIN vb_functions bf ON bf.oid = b.oid
  JOIN pg_language l ON l.oid = b.prolang
  LEFT JOIN pg_proc d ON d.pronamespace = b.pronamespace AND d.proname || '_body' = b.proname
					 AND d.proargtypes = b.proargtypes
 WHERE b.proname LIKE '%\_body'
 ORDER BY 1;
-- The other functions not for direct use: only the owner may execute them.
SELECT p.proname, (SELECT count(*) FROM aclexplode(b.proacl) a WHERE a.grantee <> b.proowner) AS grants
  FROM vb_functions p JOIN pg_proc b ON b.oid = p.oid
 WHERE obj_description(p.oid, 'pg_proc') LIKE '%not for direct use%' AND p.proname !~ '_body$'
 ORDER BY 1;
-- pgcrypto, installed into the same schema by CASCADE, keeps its grants.
SELECT has_function_privilege('public', 'vectorbea.digest(text, text)', 'EXECUTE') AS pgcrypto_public;
SELECT c.relname FROM pg_class c
 WHERE c.relnamespace = 'vectorbea'::regnamespace AND c.relkind IN ('r', 'v')
   AND has_table_privilege('public', c.oid, 'SELECT')
 ORDER BY 1;

-- The engine clock is the wall clock plus the test offset.
SELECT abs(extract(epoch FROM vectorbea.clock() - clock_timestamp())) < 5 AS clock_is_now;
SET vectorbea.test_clock_offset = '1h';
SELECT round(extract(epoch FROM vectorbea.clock() - clock_timestamp()) / 60) AS minutes_ahead;
SET vectorbea.test_clock_offset = 'soon';
RESET vectorbea.test_clock_offset;

-- Test crash points take a list of known names (docs/testing.md); an
-- unknown one is refused.  Nothing here reaches a named point.
SET vectorbea.test_crash_point = 'spawning, approval_applying';
SHOW vectorbea.test_crash_point;
SET vectorbea.test_crash_point = 'spawning, after_lunch';
SHOW vectorbea.test_crash_point;
RESET vectorbea.test_crash_point;

-- Run ids are UUID version 7: time-ordered.
WITH u AS (SELECT vectorbea.uuid_v7() AS id)
SELECT substr(id::text, 15, 1) AS version_digit,
	   substr(id::text, 20, 1) IN ('8', '9', 'a', 'b') AS rfc_variant,
	   abs(('x' || substr(replace(id::text, '-', ''), 1, 12))::bit(48)::bigint
		   - (extract(epoch FROM clock_timestamp()) * 1000)::bigint) < 5000 AS leads_with_unix_ms
  FROM u;

-- Only superusers move the clock.
SET ROLE vb_plain_user;
SET vectorbea.test_clock_offset = '1h';
SET vectorbea.test_crash_point = 'spawning';
-- ... and a role without grants cannot even reach the schema.
SELECT vectorbea.clock();
RESET ROLE;

-- The engine's functions run their statements without JIT, whatever the
-- session says (src/caller.c): a trigger of ours on the history sees jit
-- off inside start_run, and the session's setting is back afterwards.
CREATE TABLE public.jit_seen (setting text);
CREATE FUNCTION public.note_jit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.jit_seen VALUES (current_setting('jit'));
	RETURN NULL;
END $$;
CREATE TRIGGER note_jit AFTER INSERT ON vectorbea.events FOR EACH ROW EXECUTE FUNCTION public.note_jit();
SELECT vectorbea.define_workflow('jit_probe', '{"nodes":[{"id":"t","activity":"jit_probe"}]}');
SET jit = on;
SELECT vectorbea.start_run('jit_probe', '{}') IS NOT NULL AS started;
SELECT setting, count(*) FROM public.jit_seen GROUP BY 1;
SHOW jit;
-- ... and after an error inside, too.
SELECT vectorbea.start_run('jit_probe', '[1]'); \echo SQLSTATE :SQLSTATE
SHOW jit;
RESET jit;
DROP TRIGGER note_jit ON vectorbea.events;
DROP FUNCTION public.note_jit();
DROP TABLE public.jit_seen;
