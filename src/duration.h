/*-------------------------------------------------------------------------
 *
 * duration.h
 *	  Durations as the definitions write them ("90s", "2h30m") and as
 *	  interval arguments (duration.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_DURATION_H
#define VB_DURATION_H

#include "datatype/timestamp.h"

extern bool vb_parse_duration(const char *text, int64 *ms);
extern char *vb_format_duration(int64 ms);
extern int64 vb_interval_ms(Interval *iv, const char *what);
extern bool vb_parse_timestamp(const char *text, TimestampTz *result);

#endif							/* VB_DURATION_H */
