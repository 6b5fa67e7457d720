/*-------------------------------------------------------------------------
 *
 * caller.h
 *	  The role the engine acts for, and the doors' switch to the
 *	  extension's owner.
 *
 * IDENTIFICATION
 *	  src/caller.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_CALLER_H
#define VB_CALLER_H

#include "postgres.h"

#include "fmgr.h"

/* What vb_door_enter changed, for vb_door_leave to put back. */
typedef struct VbDoorSave
{
	Oid			userid;
	int			sec_context;
	Oid			caller;
	Oid			as;
} VbDoorSave;

extern Datum vb_door(FunctionCallInfo fcinfo, PGFunction as_owner);
extern void vb_door_enter(Oid owner, Oid caller, VbDoorSave *save);
extern void vb_door_leave(const VbDoorSave *save);
extern Oid	vb_caller(void);
extern char *vb_caller_name(void);

#endif							/* VB_CALLER_H */
