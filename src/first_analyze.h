/*-------------------------------------------------------------------------
 *
 * first_analyze.h
 *	  The engine's tables analysed as soon as they have grown, before
 *	  autovacuum's first visit (first_analyze.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_FIRST_ANALYZE_H
#define VB_FIRST_ANALYZE_H

#include "postgres.h"

/*
 * A never-analysed table of the engine this big (in pages) is analysed by
 * the scheduler: 1 MB of nodes, about 2,000 of them.
 */
#define VB_FIRST_ANALYZE_PAGES	128

extern bool vb_first_analyze_wanted(void);
extern int	vb_first_analyze(void);

#endif							/* VB_FIRST_ANALYZE_H */
