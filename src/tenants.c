/*-------------------------------------------------------------------------
 *
 * tenants.c
 *	  Workspaces mapped to roles (grant_workspace, revoke_workspace), and
 *	  what the mapping allows: a mapped workspace belongs to its roles.
 *
 * Row-level security keeps a mapped workspace's rows of runs, nodes,
 * events and approvals, and its lines of the spend and dead_letters views,
 * from the queries of roles that are not members of one of its roles (the
 * policies in the install script, through workspace_visible() and
 * run_visible(), which answer for their caller only).  The engine's SQL
 * doors read the tables as the extension's owner, which row-level
 * security lets by, so they check for themselves here: claim_tasks leaves
 * out the workspaces the caller may not work in
 * (vb_tenant_excluded_workspaces), and the doors that start or steer runs
 * refuse them (vb_require_workspace).  A workspace mapped to no role stays
 * open to every role with the privileges, as before 0.2.0, so that
 * mapping can be adopted one workspace at a time.
 *
 * The caller is the role that called the engine's door (vb_caller, in
 * caller.c), as everywhere the engine records who acted.  Roles that
 * bypass row-level security (superusers, BYPASSRLS) see and act on every
 * workspace, as their queries do.  Membership is PostgreSQL's
 * (is_member_of_role, cached and invalidated by PostgreSQL); the mapping
 * is cached per backend until a change commits (a generation in shared
 * memory), so claims read no table while it is unchanged.
 *
 * IDENTIFICATION
 *	  src/tenants.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "vectorbea.h"
#include "caller.h"
#include "check.h"
#include "clock.h"
#include "shmem.h"
#include "spi_util.h"
#include "tenants.h"

typedef struct WorkspaceRole
{
	char	   *workspace;
	Oid			role;
} WorkspaceRole;

static WorkspaceRole *mapping = NULL;	/* in TopMemoryContext */
static int	mapping_count = 0;
static uint64 mapping_generation = PG_UINT64_MAX;
static bool tenants_pending_bump = false;
static bool callback_registered = false;

/*
 * Reads workspace_roles again when a change has committed since, or while
 * this transaction has one of its own (a savepoint may undo it).  Inside
 * SPI.
 *
 * The rows are read with the latest snapshot, not the caller's: a
 * repeatable-read transaction that began before a grant would otherwise
 * keep the workspace open under the grant's generation.  The generation
 * is read first; a change that commits after that read raises it (the
 * commit is visible before its callback runs), so the next call reads
 * again.
 */
static void
load_mapping(void)
{
	static SPIPlanPtr plan = NULL;
	uint64		generation = vb_shared ? pg_atomic_read_u64(&vb_shared->tenants_generation) : 0;

	if (vb_shared != NULL && generation == mapping_generation)
		return;
	/* The 0.2.0 library on a 0.1.0 schema (before ALTER EXTENSION UPDATE): no mapping. */
	if (!vb_waits_available())
	{
		mapping_count = 0;
		return;
	}
	if (plan == NULL)
		plan = vb_prepare("SELECT workspace, role FROM vectorbea.workspace_roles ORDER BY workspace, role",
						  0, NULL);
	if (SPI_execute_snapshot(plan, NULL, NULL, GetLatestSnapshot(), InvalidSnapshot,
							 true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read workspace_roles");
	for (int i = 0; i < mapping_count; i++)
		pfree(mapping[i].workspace);
	if (mapping)
		pfree(mapping);
	mapping_count = (int) SPI_processed;
	mapping = MemoryContextAlloc(TopMemoryContext, sizeof(WorkspaceRole) * Max(mapping_count, 1));
	for (int i = 0; i < mapping_count; i++)
	{
		bool		isnull;

		/* SPI_getvalue's text in the caller's context; the copy kept for good */
		mapping[i].workspace = MemoryContextStrdup(TopMemoryContext,
												   SPI_getvalue(SPI_tuptable->vals[i],
																SPI_tuptable->tupdesc, 1));
		mapping[i].role = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 2, &isnull));
	}
	mapping_generation = tenants_pending_bump ? PG_UINT64_MAX : generation;
}

static bool
role_bypasses(Oid role)
{
	return superuser_arg(role) || has_bypassrls_privilege(role);
}

static bool
caller_bypasses(void)
{
	return role_bypasses(vb_caller());
}

/*
 * Whether role may see and act on workspace: it is mapped to no role, or
 * role is a member of one of its roles.  mapping is loaded.
 */
static bool
role_may(Oid role, const char *workspace)
{
	bool		mapped = false;

	for (int i = 0; i < mapping_count; i++)
	{
		if (strcmp(mapping[i].workspace, workspace) != 0)
			continue;
		mapped = true;
		if (is_member_of_role(role, mapping[i].role))
			return true;
	}
	return !mapped;
}

static bool
caller_may(const char *workspace)
{
	return role_may(vb_caller(), workspace);
}

/*
 * The workspaces the caller may not claim tasks in, or NULL for none (no
 * mapping at all, or a role that bypasses row-level security).  Inside SPI.
 */
ArrayType *
vb_tenant_excluded_workspaces(void)
{
	Datum	   *names;
	int			n = 0;

	load_mapping();
	if (mapping_count == 0 || caller_bypasses())
		return NULL;
	names = palloc(sizeof(Datum) * mapping_count);
	for (int i = 0; i < mapping_count; i++)
	{
		if (i > 0 && strcmp(mapping[i].workspace, mapping[i - 1].workspace) == 0)
			continue;
		if (!caller_may(mapping[i].workspace))
			names[n++] = CStringGetTextDatum(mapping[i].workspace);
	}
	if (n == 0)
		return NULL;
	return construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT);
}

/*
 * What workspace_visible() and run_visible() answer, for role asking: the
 * workspace of a run given by id (run_id), or the workspace named.
 */
typedef struct VisibleQuestion
{
	Oid			asking;
	const char *workspace;
	Datum		run_id;
	bool		visible;
} VisibleQuestion;

static void
answer_visible(VisibleQuestion *q)
{
	static SPIPlanPtr plan = NULL;

	SPI_connect();
	load_mapping();
	if (mapping_count == 0 || role_bypasses(q->asking))
		q->visible = true;
	else if (q->workspace != NULL)
		q->visible = role_may(q->asking, q->workspace);
	else
	{
		Datum		args[1] = {q->run_id};

		if (plan == NULL)
		{
			Oid			types[1] = {UUIDOID};

			plan = vb_prepare("SELECT workspace FROM vectorbea.runs WHERE id = $1", 1, types);
		}
		if (SPI_execute_plan(plan, args, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "vectorbea: could not read a run's workspace");
		q->visible = SPI_processed == 1 &&
			role_may(q->asking, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	}
	SPI_finish();
}

/*
 * The SQL doors workspace_visible() and run_visible(), which the row-level
 * security policies and the views ask row by row.  They answer for their
 * caller (caller.c), as PostgreSQL's row-level security does: for
 * current_user, which is the owner of a SECURITY DEFINER function whose
 * query reads the tables, not the session that called that function (else
 * another tenant's function, called by a member of a workspace, read that
 * workspace's rows); inside the engine's doors, for the doors' caller.
 * They read the mapping, and a run's workspace, as the extension's owner.
 */
static Datum
workspace_visible_as_owner(PG_FUNCTION_ARGS)
{
	VisibleQuestion q = {vb_caller(), text_to_cstring(PG_GETARG_TEXT_PP(0)), (Datum) 0, false};

	answer_visible(&q);
	PG_RETURN_BOOL(q.visible);
}

/* workspace_visible(workspace text) -> boolean */
PG_FUNCTION_INFO_V1(vectorbea_workspace_visible);
Datum
vectorbea_workspace_visible(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	return vb_door(fcinfo, workspace_visible_as_owner);
}

/*
 * Whether the caller may see workspace; for the doors whose errors would
 * otherwise describe another tenant's rows.  Inside SPI.
 */
bool
vb_workspace_visible(const char *workspace)
{
	load_mapping();
	return mapping_count == 0 || caller_bypasses() || caller_may(workspace);
}

static Datum
run_visible_as_owner(PG_FUNCTION_ARGS)
{
	VisibleQuestion q = {vb_caller(), NULL, PG_GETARG_DATUM(0), false};

	answer_visible(&q);
	PG_RETURN_BOOL(q.visible);
}

/*
 * run_visible(run uuid) -> boolean: workspace_visible of the run's
 * workspace, for the policies of the tables keyed by run (nodes, events,
 * approvals), whatever the caller may read of runs.
 */
PG_FUNCTION_INFO_V1(vectorbea_run_visible);
Datum
vectorbea_run_visible(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	return vb_door(fcinfo, run_visible_as_owner);
}

/* Refuses action (e.g. "start a run in") on a workspace the caller is not in.  Inside SPI. */
void
vb_require_workspace(const char *workspace, const char *action)
{
	load_mapping();
	if (mapping_count == 0 || caller_bypasses() || caller_may(workspace))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not %s workspace \"%s\"",
					vb_caller_name(), action, workspace),
			 errdetail("Workspace \"%s\" belongs to the roles mapped to it in vectorbea.workspace_roles.",
					   workspace),
			 errhint("Act as a member of one of its roles, or ask an administrator to run "
					 "vectorbea.grant_workspace('%s', <role>).", workspace)));
}

/*
 * The workspace of task_id's run, or NULL when there is no such task;
 * refused (vb_require_workspace) when the caller may not act on it.  Read
 * without a lock, before the caller takes any of that workspace's: a run's
 * workspace never changes, and a caller refused here has queued behind
 * none of its transactions.
 */
char *
vb_require_task_workspace(int64 task_id, const char *action)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {Int64GetDatum(task_id)};
	char	   *workspace;

	if (plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		plan = vb_prepare_opts("SELECT r.workspace FROM vectorbea.nodes n"
							   "  JOIN vectorbea.runs r ON r.id = n.run_id WHERE n.id = $1",
							   lengthof(types), types, CURSOR_OPT_GENERIC_PLAN);
	}
	/* Not read-only: a run another session committed a moment ago is found. */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read the workspace of task %ld", (long) task_id);
	if (SPI_processed == 0)
		return NULL;
	workspace = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	vb_require_workspace(workspace, action);
	return workspace;
}

/*
 * vb_require_workspace for the workspace of a run; a run that does not
 * exist is refused as such (42704), as the doors that call this refuse it
 * once they look for it themselves.
 */
void
vb_require_run_workspace(pg_uuid_t *run_id, const char *action)
{
	static SPIPlanPtr plan = NULL;
	Datum		args[1] = {UUIDPGetDatum(run_id)};

	load_mapping();
	if (mapping_count == 0 || caller_bypasses())
		return;
	if (plan == NULL)
	{
		Oid			types[1] = {UUIDOID};

		plan = vb_prepare("SELECT workspace FROM vectorbea.runs WHERE id = $1", 1, types);
	}
	/*
	 * Not read-only, and closed when nothing is found: the door's lock reads
	 * the run with a snapshot of its own, so a check under the calling
	 * statement's snapshot passed any run committed since that statement
	 * began (its id computed meanwhile, from a notification), and the door
	 * then acted on another tenant's run.
	 */
	if (SPI_execute_plan(plan, args, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "vectorbea: could not read a run's workspace");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run %s does not exist", vb_uuid_text(run_id))));
	vb_require_workspace(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), action);
}

/*
 * A change prepared (PREPARE TRANSACTION) commits later, in whatever
 * session runs COMMIT PREPARED: that session bumps the generation
 * (vb_tenants_prepared_committed), and this one forgets the mapping it
 * read with the change in it.
 */
static void
tenants_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && tenants_pending_bump && vb_shared)
		pg_atomic_fetch_add_u64(&vb_shared->tenants_generation, 1);
	if ((event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE) && tenants_pending_bump)
		mapping_generation = PG_UINT64_MAX;	/* it may hold the undone change */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE)
		tenants_pending_bump = false;
}

/*
 * COMMIT PREPARED has ended a transaction, which may have changed the
 * mapping (nothing here can tell): every backend reads it again.
 */
void
vb_tenants_prepared_committed(void)
{
	if (vb_shared)
		pg_atomic_fetch_add_u64(&vb_shared->tenants_generation, 1);
}

/* Every backend reads the mapping again once this transaction commits. */
static void
bump_at_commit(void)
{
	if (!callback_registered)
	{
		RegisterXactCallback(tenants_xact_callback, NULL);
		callback_registered = true;
	}
	tenants_pending_bump = true;
	mapping_generation = PG_UINT64_MAX;		/* and this one at once */
}

/* The arguments of grant_workspace and revoke_workspace. */
static void
workspace_role_args(FunctionCallInfo fcinfo, char **workspace, Oid *role, bool must_exist)
{
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workspace and role must not be null")));
	*workspace = text_to_cstring(PG_GETARG_TEXT_PP(0));
	vb_check_workspace_name(*workspace, false);
	*role = PG_GETARG_OID(1);
	/* a dropped role's mapping can still be revoked, by its OID */
	if (must_exist && !SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(*role)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", *role)));
}

/*
 * workspace_roles_changed() -> trigger, after every statement that
 * changes workspace_roles, whoever runs it: grant_workspace and
 * revoke_workspace, and a superuser's own INSERT, UPDATE, DELETE, TRUNCATE
 * or COPY (a data-only restore among them).  Every backend reads the
 * mapping again once the change commits.  Only the two functions moved
 * the generation before, so a backend kept a mapping the table no longer
 * held (a workspace left open to every role) until the next grant or
 * revoke anywhere.
 */
PG_FUNCTION_INFO_V1(vectorbea_workspace_roles_changed);
Datum
vectorbea_workspace_roles_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trig = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trig->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trig->tg_event))
		elog(ERROR, "vectorbea_workspace_roles_changed must be an AFTER statement trigger");
	bump_at_commit();
	return PointerGetDatum(NULL);
}

/*
 * Runs sql (an INSERT or a DELETE of workspace_roles with $1 workspace,
 * $2 role) for grant_workspace and revoke_workspace; whether it changed a
 * row.  Every backend reads the mapping again once it commits
 * (workspace_roles_changed).
 */
static bool
change_mapping(FunctionCallInfo fcinfo, const char *sql, int expected)
{
	char	   *workspace;
	Oid			role;
	Datum		args[2];
	Oid			types[2] = {TEXTOID, OIDOID};
	bool		changed;

	workspace_role_args(fcinfo, &workspace, &role, expected == SPI_OK_INSERT);
	args[0] = CStringGetTextDatum(workspace);
	args[1] = ObjectIdGetDatum(role);
	SPI_connect();
	if (SPI_execute_with_args(sql, 2, types, args, NULL, false, 0) != expected)
		elog(ERROR, "vectorbea: could not change workspace_roles");
	changed = SPI_processed == 1;
	SPI_finish();
	return changed;				/* the table's trigger moves the generation */
}

/*
 * grant_workspace(workspace text, role regrole) -> boolean: the members of
 * role may see and act on workspace; from the first grant on, no one else
 * may (row-level security and the engine's doors).  Returns false when the
 * grant was there already.
 */
static Datum
grant_workspace_as_owner(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(change_mapping(fcinfo,
								  "INSERT INTO vectorbea.workspace_roles (workspace, role)"
								  " VALUES ($1, $2) ON CONFLICT DO NOTHING", SPI_OK_INSERT));
}

PG_FUNCTION_INFO_V1(vectorbea_grant_workspace);
Datum
vectorbea_grant_workspace(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, grant_workspace_as_owner);
}

/*
 * revoke_workspace(workspace text, role regrole) -> boolean: undoes
 * grant_workspace.  A workspace left with no role is open again.
 */
static Datum
revoke_workspace_as_owner(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(change_mapping(fcinfo,
								  "DELETE FROM vectorbea.workspace_roles"
								  " WHERE workspace = $1 AND role = $2", SPI_OK_DELETE));
}

PG_FUNCTION_INFO_V1(vectorbea_revoke_workspace);
Datum
vectorbea_revoke_workspace(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, revoke_workspace_as_owner);
}
