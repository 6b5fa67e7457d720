/*-------------------------------------------------------------------------
 *
 * clock.h
 *	  The one engine clock, time-ordered ids and the engine's timestamp
 *	  format (clock.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_CLOCK_H
#define VB_CLOCK_H

#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

extern TimestampTz vb_now(void);
extern pg_uuid_t *vb_uuid_v7(TimestampTz at);
extern char *vb_uuid_text(pg_uuid_t *uuid);
extern char *vb_timestamp_iso(TimestampTz ts);

/* vectorbea.test_clock_offset, defined by settings.c. */
extern char *vb_test_clock_offset_text;
extern bool vb_check_clock_offset(char **newval, void **extra, GucSource source);
extern void vb_assign_clock_offset(const char *newval, void *extra);

#endif							/* VB_CLOCK_H */
