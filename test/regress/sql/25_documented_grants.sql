-- The grants of docs/operations.md ("Roles and grants"), run as written,
-- with the role names prefixed (roles are cluster-wide) and pg_cron's and
-- the tenants' lines left out (no pg_cron here; the tenants are
-- 23_tenants').  Each role then reads every table and view it was given.
-- A view's functions and a policy's subqueries run with the reader's
-- rights, so a list that misses one (EXECUTE on clock() for spend, SELECT
-- on approvals for approval_votes' policy) fails here, not for a user.
\getenv abs_srcdir PG_ABS_SRCDIR
\i :abs_srcdir/sql/include/setup.psql
DROP ROLE IF EXISTS vbdoc_worker, vbdoc_app, vbdoc_reader, vbdoc_ops, vbdoc_editors,
	vbdoc_oncall, vbdoc_alice;

CREATE TEMP TABLE doc_statements AS
SELECT row_number() OVER () AS ord,
	   regexp_replace(regexp_replace(btrim(s, E' \n\t'), '\mvb_(worker|app|reader|ops)\M',
									 'vbdoc_\1', 'g'),
					  '\m(editors|oncall|alice)\M', 'vbdoc_\1', 'g') AS stmt
  FROM regexp_matches(substring(pg_read_file(:'abs_srcdir' || '/../../docs/operations.md')
								FROM '\n## Roles and grants\n(.*?)\n## '),
					  '```sql\n(.*?)```', 'g') AS block,
	   regexp_split_to_table(regexp_replace(block[1], '--[^\n]*', '', 'g'), ';') AS s
 WHERE btrim(s, E' \n\t') <> '';
SELECT count(*) > 10 AS found_grants FROM doc_statements;
-- what is left out, and why
SELECT ord, left(stmt, 60) AS left_out FROM doc_statements
 WHERE stmt ~ '\mcron\M' OR stmt ~ 'acme'
 ORDER BY ord;
SELECT count(*) AS run
  FROM doc_statements
 WHERE NOT (stmt ~ '\mcron\M' OR stmt ~ 'acme');
DO $$
DECLARE
	s record;
BEGIN
	FOR s IN SELECT stmt FROM doc_statements WHERE NOT (stmt ~ '\mcron\M' OR stmt ~ 'acme') ORDER BY ord
	LOOP
		EXECUTE s.stmt;
	END LOOP;
END
$$;

-- Every table and view of the schema the caller may read, read.
CREATE FUNCTION public.doc_reads() RETURNS TABLE (readable text, failed text)
LANGUAGE plpgsql AS $$
DECLARE
	r record;
	ok text[] := '{}';
	bad text[] := '{}';
BEGIN
	FOR r IN SELECT c.oid::regclass AS rel
			   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			  WHERE n.nspname = 'vectorbea' AND c.relkind IN ('r', 'v')
				AND pg_catalog.has_any_column_privilege(c.oid, 'SELECT')
			  ORDER BY c.relname
	LOOP
		BEGIN
			EXECUTE format('SELECT count(*) FROM %s', r.rel);
			ok := ok || r.rel::text;
		EXCEPTION WHEN OTHERS THEN
			bad := bad || (r.rel::text || ': ' || SQLERRM);
		END;
	END LOOP;
	RETURN QUERY SELECT array_to_string(ok, ', '), array_to_string(bad, '; ');
END
$$;
GRANT EXECUTE ON FUNCTION public.doc_reads() TO PUBLIC;
SET ROLE vbdoc_worker;
SELECT 'worker' AS role, * FROM public.doc_reads();
SET ROLE vbdoc_app;
SELECT 'app' AS role, * FROM public.doc_reads();
SET ROLE vbdoc_reader;
SELECT 'reader' AS role, * FROM public.doc_reads();
SET ROLE vbdoc_ops;
SELECT 'ops' AS role, * FROM public.doc_reads();
SET ROLE vbdoc_alice;
SELECT 'approver' AS role, * FROM public.doc_reads();
RESET ROLE;

DROP FUNCTION public.doc_reads();
DROP OWNED BY vbdoc_worker, vbdoc_app, vbdoc_reader, vbdoc_ops, vbdoc_editors, vbdoc_oncall, vbdoc_alice;
DROP ROLE vbdoc_worker, vbdoc_app, vbdoc_reader, vbdoc_ops, vbdoc_editors, vbdoc_oncall, vbdoc_alice;

-- Every run the file left agrees with its history.
SELECT * FROM inconsistent_runs();
