/*-------------------------------------------------------------------------
 *
 * caller.c
 *	  The role the engine acts for, and the doors' switch to the
 *	  extension's owner.
 *
 * Every SQL function of the engine is a door: SECURITY INVOKER, so that
 * PostgreSQL calls it as the role that called it (current_user, which is
 * the owner of a SECURITY DEFINER function in between, as everywhere in
 * PostgreSQL), and it switches to the extension's owner itself, for the
 * engine's reads and writes.  The role it was called as is the caller:
 * the role whose workspaces the engine lets it see and steer, and whose
 * name it records as having acted.  A SECURITY DEFINER door could not
 * know it: PostgreSQL keeps the role it switched from on its own stack,
 * so the engine could only ask for the session's role, and a function of
 * one tenant, called by a member of another, acted for that member
 * (docs/decisions.md, "Who the engine's functions act for").
 *
 * A door called by the engine itself (current_user is the role another
 * door switched to) keeps the caller of the outermost door.  Outside
 * every door (the scheduler, triggers on the tables) the caller is
 * current_user.  A door whose SQL function is still SECURITY DEFINER (a
 * 0.1.0 definition, before ALTER EXTENSION vectorbea UPDATE) has been
 * switched already, and takes the session's role, as 0.1.0 did.
 *
 * IDENTIFICATION
 *	  src/caller.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "jit/jit.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "caller.h"

/*
 * The caller of the outermost door open, and the role the innermost one
 * switched to (InvalidOid: no door is open).
 */
static Oid	door_caller = InvalidOid;
static Oid	door_as = InvalidOid;

/*
 * Switches to owner, recording caller as the role the engine acts for, or
 * keeping the caller of the door already open when this door is called by
 * the engine from inside it: caller is then the role that door switched
 * to.  (Not this door's owner: after an update run by another superuser,
 * functions of one extension have two owners, and a door of the one
 * called from a door of the other took the engine for its caller.)
 * vb_door_leave(save) undoes it, on error too.
 */
void
vb_door_enter(Oid owner, Oid caller, VbDoorSave *save)
{
	GetUserIdAndSecContext(&save->userid, &save->sec_context);
	save->caller = door_caller;
	save->as = door_as;
	if (caller != door_as)
		door_caller = caller;
	door_as = owner;
	SetUserIdAndSecContext(owner, save->sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
vb_door_leave(const VbDoorSave *save)
{
	SetUserIdAndSecContext(save->userid, save->sec_context);
	door_caller = save->caller;
	door_as = save->as;
}

/*
 * Runs as_owner(fcinfo) as the owner of the SQL function being called,
 * for the role that called it, with JIT off.
 *
 * JIT never pays for the engine's statements, and it cost dearly: over a
 * big run's history the estimates pass jit_above_cost, and compiling took
 * longer than running (verify_run of 10,000 nodes: 1.8 s against 0.3 s),
 * on every execution of a kept plan.  The scheduler runs without it too.
 * On error the (sub)transaction's abort restores the setting, as it does
 * for a function's SET clause.
 */
Datum
vb_door(FunctionCallInfo fcinfo, PGFunction as_owner)
{
	HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
	Oid			owner;
	Oid			caller;
	VbDoorSave	save;
	Datum		result;
	int			guc_level = -1;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "vectorbea: cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
	owner = ((Form_pg_proc) GETSTRUCT(tup))->proowner;
	caller = ((Form_pg_proc) GETSTRUCT(tup))->prosecdef ? GetOuterUserId() : GetUserId();
	ReleaseSysCache(tup);

	if (jit_enabled)
	{
		guc_level = NewGUCNestLevel();
		(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	}
	vb_door_enter(owner, caller, &save);
	PG_TRY();
	{
		result = as_owner(fcinfo);
	}
	PG_FINALLY();
	{
		vb_door_leave(&save);
	}
	PG_END_TRY();
	if (guc_level >= 0)
		AtEOXact_GUC(true, guc_level);
	return result;
}

/*
 * The role the engine acts for: the caller of the outermost door, or
 * current_user outside every door.
 */
Oid
vb_caller(void)
{
	return OidIsValid(door_as) ? door_caller : GetUserId();
}

/* vb_caller's name, for messages and the events that record who acted. */
char *
vb_caller_name(void)
{
	return GetUserNameFromId(vb_caller(), false);
}
