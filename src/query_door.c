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
#include "lib/stringinfo.h"
#include "nodes/makefuncs.h"
#include "parser/parse_func.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "caller.h"

/* The body of a door: how to call it, and its name. */
typedef struct DoorBody
{
	FmgrInfo	flinfo;
	char	   *name;
} DoorBody;

/*
 * The body of the door being called, found once per call site and kept in
 * the door's fn_extra.  (Not inlined into call_body, whose PG_TRY its
 * locals would straddle.)
 */
static pg_noinline DoorBody *
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
		DoorBody   *body;

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

		body = MemoryContextAllocZero(door->fn_mcxt, sizeof(DoorBody));
		fmgr_info_cxt(body_oid, &body->flinfo, door->fn_mcxt);
		/* the body resolves its result type and set mode from the call */
		body->flinfo.fn_expr = door->fn_expr;
		body->name = MemoryContextStrdup(door->fn_mcxt, body_name);
		door->fn_extra = body;
	}
	return (DoorBody *) door->fn_extra;
}

/*
 * An error's context without the lines of the body's frame and of the
 * frames inside it: everything up to the first line that names the body
 * ("PL/pgSQL function vectorbea.graph_body(uuid,text) line 9 at RAISE";
 * every body is PL/pgSQL; the lines go from the innermost frame out).
 * The door is what the caller called, and the lines of the caller's own
 * functions, after it, stay, whatever their names.  NULL when none is
 * left; the context as it was when no line names the body.
 */
static char *
context_without_body(char *context, const char *body_name)
{
	char	   *as_plpgsql = psprintf(".%s(", body_name);
	char	   *line = context;

	while (*line != '\0')
	{
		char	   *end = strchr(line, '\n');
		char	   *one = end ? pnstrdup(line, end - line) : line;

		if (strstr(one, as_plpgsql) != NULL)
			return end ? pstrdup(end + 1) : NULL;
		if (end == NULL)
			break;
		line = end + 1;
	}
	return context;
}

/*
 * Calls the body with the door's arguments, result info and context.  An
 * error other than an internal one loses the context lines of the body,
 * which the caller never called.
 */
static Datum
call_body(PG_FUNCTION_ARGS)
{
	FmgrInfo   *door = fcinfo->flinfo;
	DoorBody   *body = door_body(fcinfo);
	MemoryContext caller_cxt = CurrentMemoryContext;
	Datum		result;

	fcinfo->flinfo = &body->flinfo;
	PG_TRY();
	{
		result = FunctionCallInvoke(fcinfo);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		fcinfo->flinfo = door;
		MemoryContextSwitchTo(caller_cxt);
		edata = CopyErrorData();
		if (edata->context != NULL &&
			ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_INTERNAL_ERROR)
		{
			FlushErrorState();
			edata->context = context_without_body(edata->context, body->name);
			ReThrowError(edata);
		}
		PG_RE_THROW();
	}
	PG_END_TRY();
	fcinfo->flinfo = door;
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
