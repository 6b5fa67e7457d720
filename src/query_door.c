/*-------------------------------------------------------------------------
 *
 * query_door.c
 *	  The doors of the engine's functions written in SQL and PL/pgSQL
 *	  (timeline, replay, verify_run, graph, timeline_chart, diff_runs).
 *
 * Their queries read the tables as the extension's owner and ask
 * run_visible() which runs the caller may see.  A function in SQL cannot
 * switch roles, and as SECURITY DEFINER it would hide its caller from
 * run_visible() (caller.c).  So each is a C door, SECURITY INVOKER, whose
 * query is a function of the same name and arguments with "_body"
 * appended, executable by the owner only; the door calls it as the owner,
 * for its caller, passing its arguments and its set-returning protocol
 * through unchanged.
 *
 * IDENTIFICATION
 *	  src/query_door.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "caller.h"

/*
 * The FmgrInfo of the body of the door being called, found once per call
 * site and kept in the door's fn_extra.
 */
static FmgrInfo *
door_body(FunctionCallInfo fcinfo)
{
	FmgrInfo   *door = fcinfo->flinfo;

	if (door->fn_extra == NULL)
	{
		HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(door->fn_oid));
		Form_pg_proc proc;
		char	   *body_name;
		List	   *qualified;
		Oid			body_oid;
		FmgrInfo   *body;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "vectorbea: cache lookup failed for function %u", door->fn_oid);
		proc = (Form_pg_proc) GETSTRUCT(tup);
		body_name = psprintf("%s_body", NameStr(proc->proname));
		qualified = list_make2(makeString(get_namespace_name(proc->pronamespace)),
							   makeString(body_name));
		body_oid = LookupFuncName(qualified, proc->pronargs, proc->proargtypes.values, true);
		ReleaseSysCache(tup);
		if (!OidIsValid(body_oid))
			elog(ERROR, "vectorbea: function %s has no body %s",
				 format_procedure(door->fn_oid), body_name);

		body = MemoryContextAllocZero(door->fn_mcxt, sizeof(FmgrInfo));
		fmgr_info_cxt(body_oid, body, door->fn_mcxt);
		/* the body resolves its result type and set mode from the call */
		body->fn_expr = door->fn_expr;
		door->fn_extra = body;
	}
	return (FmgrInfo *) door->fn_extra;
}

/* Calls the body with the door's arguments, result info and context. */
static Datum
call_body(PG_FUNCTION_ARGS)
{
	FmgrInfo   *door = fcinfo->flinfo;
	Datum		result;

	fcinfo->flinfo = door_body(fcinfo);
	PG_TRY();
	{
		result = FunctionCallInvoke(fcinfo);
	}
	PG_FINALLY();
	{
		fcinfo->flinfo = door;
	}
	PG_END_TRY();
	return result;
}

/*
 * The C function of every such door: the body, as the owner of the door,
 * for the role that called it.
 */
PG_FUNCTION_INFO_V1(vectorbea_query_door);
Datum
vectorbea_query_door(PG_FUNCTION_ARGS)
{
	return vb_door(fcinfo, call_body);
}
