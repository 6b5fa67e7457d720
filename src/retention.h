/*-------------------------------------------------------------------------
 *
 * retention.h
 *	  Purging finished runs with their history (retention.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_RETENTION_H
#define VB_RETENTION_H

#include "utils/array.h"
#include "utils/timestamp.h"

extern bool vb_retention_available(void);
extern int	vb_purge_batch(ArrayType *statuses, TimestampTz before, int max_runs,
						   int64 max_events, const char *by, TimestampTz at, bool *more);
extern ArrayType *vb_finished_statuses(void);

#endif							/* VB_RETENTION_H */
