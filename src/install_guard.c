/*-------------------------------------------------------------------------
 *
 * install_guard.c
 *	  Refuses to run vectorbea's install or upgrade scripts where another
 *	  role's objects could be called in place of the built-in ones.
 *
 * CREATE EXTENSION runs the scripts as a superuser with search_path set to
 * the extension's schema and the schemas of the extensions it requires
 * (pgcrypto's), pg_catalog implicitly first.  What the scripts run then
 * (the CHECK constraints and the seeded prices, a DO block, views, index
 * predicates) resolves functions and operators through that path, and a
 * look-alike with a better match than pg_catalog's (public.>=(numeric,
 * integer) for a "numeric >= 0", public.=(oid, regclass), public.->>(jsonb,
 * jsonb) for a "jsonb ->> 'key'") wins: it runs as the superuser during
 * the install, and a constraint or view keeps calling it afterwards.
 * With pgcrypto in public, every role that may create objects in public
 * (the database owner, since PostgreSQL 15) can plant one.  The released
 * 0.1.0 script cannot be changed, so the check is made here, before the
 * script runs:
 *
 *	 - the extension's schema, if it exists, belongs to a superuser, and no
 *	   other role may create objects in it or owns one there;
 *	 - no schema on the script's path (the extension's, pgcrypto's) holds
 *	   an operator, or a function or aggregate named like one of
 *	   pg_catalog's or pgcrypto's, owned by a role that is not a superuser.
 *
 * The check runs from a ProcessUtility hook at CREATE EXTENSION vectorbea
 * and ALTER EXTENSION vectorbea, so with the library preloaded (as the
 * scheduler needs) nothing of the script has run when it refuses.  A
 * library loaded by the script itself (not preloaded) installs the hook at
 * the script's first C function and checks at its next statement: the
 * install still fails, but statements before that point have run.
 *
 * IDENTIFICATION
 *	  src/install_guard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "install_guard.h"

#define VB_EXTENSION	"vectorbea"

static ProcessUtility_hook_type prev_utility = NULL;
static LocalTransactionId checked_lxid = InvalidLocalTransactionId;

/*
 * What the scripts could call in place of a built-in, first one first:
 * kind, object, schema, owner.  Run with search_path pinned, so that its
 * own operators are pg_catalog's.
 */
static const char *const hazards_sql =
"WITH searched AS ("
"  SELECT n.oid, n.nspname, true AS own FROM pg_namespace n WHERE n.nspname = $1"
"  UNION ALL"
"  SELECT n.oid, n.nspname, false FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
"   WHERE e.extname = 'pgcrypto' AND n.nspname <> $1),"
" builtin AS ("
"  SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace"
"  UNION"
"  SELECT p.proname FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass"
"     AND d.objid = p.oid AND d.deptype = 'e'"
"   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pgcrypto'),"
" untrusted AS (SELECT r.oid, r.rolname FROM pg_roles r WHERE NOT r.rolsuper),"
" found AS ("
"  SELECT 1 AS o, 'schema' AS kind, s.nspname::text AS what, s.nspname, u.rolname, 'owns' AS how"
"    FROM searched s JOIN pg_namespace n ON n.oid = s.oid JOIN untrusted u ON u.oid = n.nspowner"
"   WHERE s.own"
"  UNION ALL"
"  SELECT 2, 'schema', s.nspname::text, s.nspname, coalesce(u.rolname, 'PUBLIC'), 'may create objects in'"
"    FROM searched s JOIN pg_namespace n ON n.oid = s.oid, aclexplode(n.nspacl) x"
"    LEFT JOIN pg_roles u ON u.oid = x.grantee"
"   WHERE s.own AND x.privilege_type = 'CREATE' AND (x.grantee = 0 OR NOT u.rolsuper)"
"  UNION ALL"
"  SELECT 3, 'operator', o.oid::regoperator::text, s.nspname, u.rolname, 'owns'"
"    FROM pg_operator o JOIN searched s ON s.oid = o.oprnamespace JOIN untrusted u ON u.oid = o.oprowner"
"  UNION ALL"
"  SELECT 4, CASE p.prokind WHEN 'a' THEN 'aggregate' ELSE 'function' END,"
"         p.oid::regprocedure::text, s.nspname, u.rolname, 'owns'"
"    FROM pg_proc p JOIN searched s ON s.oid = p.pronamespace JOIN untrusted u ON u.oid = p.proowner"
"   WHERE s.own OR p.proname IN (SELECT proname FROM builtin)"
"  UNION ALL"
"  SELECT 5, CASE WHEN c.relkind IN ('v', 'm') THEN 'view' ELSE 'relation' END,"
"         c.oid::regclass::text, s.nspname, u.rolname, 'owns'"
"    FROM pg_class c JOIN searched s ON s.oid = c.relnamespace JOIN untrusted u ON u.oid = c.relowner"
"   WHERE s.own"
"  UNION ALL"
"  SELECT 6, 'type', t.oid::regtype::text, s.nspname, u.rolname, 'owns'"
"    FROM pg_type t JOIN searched s ON s.oid = t.typnamespace JOIN untrusted u ON u.oid = t.typowner"
"   WHERE s.own)"
"SELECT kind, what, nspname::text, rolname::text, how, count(*) OVER () FROM found"
" ORDER BY o, what LIMIT 1";

/* Refuses with the first hazard, if there is one. */
static void
check_scripts_path(void)
{
	int			nestlevel;
	bool		pushed = false;
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {CStringGetTextDatum(VB_EXTENSION)};
	char	   *kind = NULL;
	char	   *what = NULL;
	char	   *schema = NULL;
	char	   *role = NULL;
	char	   *how = NULL;
	int64		count = 0;

	/* The query's own names must be pg_catalog's, whatever the caller's path. */
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (!ActiveSnapshotSet())
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pushed = true;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "vectorbea: SPI_connect failed");
	if (SPI_execute_with_args(hazards_sql, 1, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: the install check failed");
	if (SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		kind = SPI_getvalue(tup, desc, 1);
		what = SPI_getvalue(tup, desc, 2);
		schema = SPI_getvalue(tup, desc, 3);
		role = SPI_getvalue(tup, desc, 4);
		how = SPI_getvalue(tup, desc, 5);
		count = DatumGetInt64(SPI_getbinval(tup, desc, 6, &isnull));
		/* Copied out of SPI's memory before it is released. */
		kind = MemoryContextStrdup(TopTransactionContext, kind);
		what = MemoryContextStrdup(TopTransactionContext, what);
		schema = MemoryContextStrdup(TopTransactionContext, schema);
		role = MemoryContextStrdup(TopTransactionContext, role);
		how = MemoryContextStrdup(TopTransactionContext, how);
	}
	SPI_finish();
	if (pushed)
		PopActiveSnapshot();
	AtEOXact_GUC(true, nestlevel);

	if (kind == NULL)
		return;
	if (strcmp(kind, "schema") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 strcmp(how, "owns") == 0 ?
				 errmsg("cannot install or upgrade vectorbea: schema \"%s\" belongs to role \"%s\", which is not a superuser",
						schema, role) :
				 errmsg("cannot install or upgrade vectorbea: role \"%s\", which is not a superuser, may create objects in schema \"%s\"",
						role, schema),
				 errdetail("The extension's scripts and the scheduler run as a superuser; a role that owns or may create objects in the extension's schema could put its own objects in their way."),
				 errhint("Make a superuser the schema's owner and revoke CREATE from the others (ALTER SCHEMA %s OWNER TO ...; REVOKE CREATE ON SCHEMA %s FROM ...), or drop the schema and let CREATE EXTENSION create it.",
						 schema, schema)));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("cannot install or upgrade vectorbea: schema \"%s\" holds %s %s, owned by role \"%s\", which is not a superuser",
					schema, kind, what, role),
			 errdetail("The extension's scripts run as a superuser with schema \"%s\" on their search_path, where an object named like a built-in one and owned by another role could be called in place of the built-in; %lld such object(s) in all.",
					   schema, (long long) count),
			 errhint("Drop those objects or move them to a schema off the path, or keep pgcrypto in a schema that only superusers can create objects in (ALTER EXTENSION pgcrypto SET SCHEMA ...).")));
}

/* Whether the statement is CREATE or ALTER EXTENSION vectorbea that runs a script. */
static bool
runs_our_scripts(Node *stmt)
{
	if (IsA(stmt, CreateExtensionStmt))
		return strcmp(((CreateExtensionStmt *) stmt)->extname, VB_EXTENSION) == 0 &&
			!OidIsValid(get_extension_oid(VB_EXTENSION, true));
	if (IsA(stmt, AlterExtensionStmt))
		return strcmp(((AlterExtensionStmt *) stmt)->extname, VB_EXTENSION) == 0;
	return false;
}

/*
 * Whether the statement comes from our own script, run by a library that
 * was loaded by that script (not preloaded) and has not checked yet.
 */
static bool
inside_our_script(void)
{
	char	   *name;

	if (!creating_extension || !OidIsValid(CurrentExtensionObject))
		return false;
	name = get_extension_name(CurrentExtensionObject);
	return name != NULL && strcmp(name, VB_EXTENSION) == 0;
}

static void
guard_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
			  ProcessUtilityContext context, ParamListInfo params,
			  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	/*
	 * Every CREATE or ALTER EXTENSION of ours is checked, even a second one
	 * in the same transaction: other sessions' objects become visible to
	 * catalog lookups as they commit.  Inside our script, only the first
	 * statement after the library was loaded needs it.
	 */
	if (runs_our_scripts(pstmt->utilityStmt) ||
		(checked_lxid != MyProc->lxid && inside_our_script()))
	{
		check_scripts_path();
		checked_lxid = MyProc->lxid;
	}
	if (prev_utility)
		prev_utility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv,
								dest, qc);
}

/* Called once, from _PG_init. */
void
vb_install_guard_init(void)
{
	prev_utility = ProcessUtility_hook;
	ProcessUtility_hook = guard_utility;
}
