/*-------------------------------------------------------------------------
 *
 * clock.c
 *	  The engine clock and the ids derived from it.
 *
 * All engine time (leases, backoff, available_at, event timestamps) comes
 * from vb_now(): the wall clock plus vectorbea.test_clock_offset.  Tests move
 * the offset forward instead of sleeping; in production it is zero.  Run ids
 * are UUID version 7 (RFC 9562), whose leading 48 bits are the engine clock
 * in milliseconds, so the runs index stays append-mostly.
 *
 * IDENTIFICATION
 *	  src/clock.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "port.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "clock.h"
#include "duration.h"

char	   *vb_test_clock_offset_text = NULL;
static int64 clock_offset_ms = 0;

bool
vb_check_clock_offset(char **newval, void **extra, GucSource source)
{
	int64		ms;
	int64	   *parsed;

	if (*newval == NULL || !vb_parse_duration(*newval, &ms))
	{
		GUC_check_errdetail("\"%s\" is not a duration; use forms like 0s, 90s, 2h30m or 1d.",
							*newval ? *newval : "");
		return false;
	}
	parsed = malloc(sizeof(int64));
	if (parsed == NULL)
		return false;
	*parsed = ms;
	*extra = parsed;
	return true;
}

void
vb_assign_clock_offset(const char *newval, void *extra)
{
	clock_offset_ms = *(int64 *) extra;
}

/*
 * The engine's notion of "now".  The real clock, not the transaction start:
 * a worker may hold a transaction open while it works, and durations in the
 * history must measure the work, not the transaction.
 */
TimestampTz
vb_now(void)
{
	return GetCurrentTimestamp() + clock_offset_ms * (int64) 1000;
}

pg_uuid_t *
vb_uuid_v7(TimestampTz at)
{
	pg_uuid_t  *uuid = palloc(sizeof(pg_uuid_t));
	/* Unix epoch milliseconds from a PostgreSQL-epoch timestamp. */
	uint64		unix_ms = (uint64) (at / 1000) +
		(uint64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;

	if (!pg_strong_random(uuid->data, UUID_LEN))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes for a run id")));
	uuid->data[0] = (unsigned char) (unix_ms >> 40);
	uuid->data[1] = (unsigned char) (unix_ms >> 32);
	uuid->data[2] = (unsigned char) (unix_ms >> 24);
	uuid->data[3] = (unsigned char) (unix_ms >> 16);
	uuid->data[4] = (unsigned char) (unix_ms >> 8);
	uuid->data[5] = (unsigned char) unix_ms;
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x70;	/* version 7 */
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;	/* RFC 9562 variant */
	return uuid;
}

PG_FUNCTION_INFO_V1(vectorbea_clock);
Datum
vectorbea_clock(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(vb_now());
}

PG_FUNCTION_INFO_V1(vectorbea_uuid_v7);
Datum
vectorbea_uuid_v7(PG_FUNCTION_ARGS)
{
	PG_RETURN_UUID_P(vb_uuid_v7(vb_now()));
}

/*
 * A timestamp as written into event data: ISO 8601 in UTC, whatever the
 * session's TimeZone and DateStyle, so that histories compare byte for byte.
 */
char *
vb_timestamp_iso(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		elog(ERROR, "vectorbea: timestamp out of range");
	return psprintf("%04d-%02d-%02dT%02d:%02d:%02d.%06dZ",
					tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
}

char *
vb_uuid_text(pg_uuid_t *uuid)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(uuid)));
}
