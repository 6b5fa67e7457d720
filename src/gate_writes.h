/*-------------------------------------------------------------------------
 *
 * gate_writes.h
 *	  The engine's own UPDATEs of vectorbea.approvals, marked as such for
 *	  the gates' decision trigger (gate_writes.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_GATE_WRITES_H
#define VB_GATE_WRITES_H

#include "executor/spi.h"

extern int	vb_gate_update_plan(SPIPlanPtr plan, Datum *args, const char *nulls);
extern bool vb_gate_update_active(void);

#endif							/* VB_GATE_WRITES_H */
