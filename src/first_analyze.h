/*-------------------------------------------------------------------------
 *
 * first_analyze.h
 *	  The engine's tables analysed as soon as they have outgrown their
 *	  statistics, before autovacuum's next visit (first_analyze.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_FIRST_ANALYZE_H
#define VB_FIRST_ANALYZE_H

#include "postgres.h"

/*
 * A table of the engine that has outgrown its statistics is analysed by
 * the scheduler once it is this big (in pages): 1 MB of nodes, about 2,000
 * of them.
 */
#define VB_FIRST_ANALYZE_PAGES	128

extern bool vb_first_analyze_wanted(void);
extern int	vb_first_analyze(void);

#endif							/* VB_FIRST_ANALYZE_H */
