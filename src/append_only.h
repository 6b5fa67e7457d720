/*-------------------------------------------------------------------------
 *
 * append_only.h
 *	  The history's append-only trigger and the purge's one way past it
 *	  (append_only.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_APPEND_ONLY_H
#define VB_APPEND_ONLY_H

#include "executor/spi.h"

extern void vb_execute_purge(SPIPlanPtr plan, Datum *args);

#endif							/* VB_APPEND_ONLY_H */
