/*-------------------------------------------------------------------------
 *
 * duration.c
 *	  The duration syntax of definitions and settings: "500ms", "30s",
 *	  "1m30s", "2h", "1d"; and the timestamps they name.
 *
 * Durations are parsed here and nowhere else, so that a definition, a spawn
 * list and a setting all accept exactly the same spellings.  Values are
 * milliseconds.  Timestamps (a run's deadline, a timer's "until", a node's
 * not_before) are parsed here too, without throwing, so that the caller's
 * error can name the field, and the scheduler can fail one node cleanly.
 *
 * IDENTIFICATION
 *	  src/duration.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "duration.h"

/* One year: far beyond any sensible backoff, lease or timeout. */
#define VB_MAX_DURATION_MS	((int64) 366 * 24 * 3600 * 1000)

/*
 * Parses a duration; returns false (never throws) on anything else, so that
 * callers can name the offending field in their own error.
 */
bool
vb_parse_duration(const char *text, int64 *ms)
{
	const char *p = text;
	double		total = 0;
	bool		any = false;

	if (text == NULL)
		return false;
	while (*p)
	{
		double		value = 0;
		double		scale = 1;
		bool		digits = false;
		double		unit_ms;

		while (isdigit((unsigned char) *p))
		{
			value = value * 10 + (*p++ - '0');
			digits = true;
		}
		if (*p == '.')
		{
			p++;
			while (isdigit((unsigned char) *p))
			{
				scale /= 10;
				value += (*p++ - '0') * scale;
				digits = true;
			}
		}
		if (!digits)
			return false;

		if (p[0] == 'm' && p[1] == 's')
		{
			unit_ms = 1;
			p += 2;
		}
		else if (*p == 's')
			unit_ms = 1000, p++;
		else if (*p == 'm')
			unit_ms = 60 * 1000, p++;
		else if (*p == 'h')
			unit_ms = 3600 * 1000, p++;
		else if (*p == 'd')
			unit_ms = 24 * 3600 * 1000, p++;
		else
			return false;

		total += value * unit_ms;
		if (total > (double) VB_MAX_DURATION_MS)
			return false;
		any = true;
	}
	if (!any)
		return false;
	*ms = (int64) llround(total);
	return true;
}

/* The shortest spelling of a duration, for timelines and messages. */
char *
vb_format_duration(int64 ms)
{
	if (ms < 1000)
		return psprintf("%ldms", (long) ms);
	if (ms < 60 * 1000)
		return psprintf("%.2fs", ms / 1000.0);
	if (ms < 3600 * 1000)
		return psprintf("%ldm%02lds", (long) (ms / 60000), (long) (ms % 60000) / 1000);
	return psprintf("%ldh%02ldm", (long) (ms / 3600000), (long) (ms % 3600000) / 60000);
}

/*
 * An interval argument as milliseconds; it must be positive, and so must
 * each of its parts: the engine adds the interval to a time as PostgreSQL
 * does, a month as a calendar month, so "1 mon -30 days 1 second", a
 * second by this count, ends two days before it starts in February.
 */
int64
vb_interval_ms(Interval *iv, const char *what)
{
	/* Months and days as 30 and 24 h, as interval comparison does. */
	double		days = (double) iv->month * DAYS_PER_MONTH + iv->day +
		(double) iv->time / USECS_PER_DAY;
	int64		ms;

	if (days > 0 && (iv->month < 0 || iv->day < 0 || iv->time < 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not have negative parts", what),
				 errdetail("Found %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)))),
				 errhint("Pass an interval such as '5 minutes'.")));
	if (days <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be positive", what),
				 errhint("Pass an interval such as '5 minutes'.")));
	if (days > 366)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most 366 days", what)));
	ms = (int64) (days * 86400.0 * 1000.0);
	return Max(ms, 1);		/* a positive interval under 1 ms is 1 ms */
}

/*
 * Parses a finite date and time that starts with its date
 * ("2026-12-01T09:00:00Z"; without a zone, the session's TimeZone applies);
 * false on anything else, "now", "tomorrow" and "infinity" included: a
 * definition's time must not move.  Never throws.
 */
bool
vb_parse_timestamp(const char *text, TimestampTz *result)
{
	char		workbuf[MAXDATELEN + MAXDATEFIELDS];
	char	   *field[MAXDATEFIELDS];
	int			ftype[MAXDATEFIELDS];
	int			nf;
	int			dtype;
	int			tz;
	struct pg_tm tm;
	fsec_t		fsec;

	/*
	 * A date first: PostgreSQL also reads "now", "today" and "tomorrow",
	 * which would move with the wall clock, not the engine's.
	 */
	if (text == NULL || strlen(text) >= MAXDATELEN ||
		!(isdigit((unsigned char) text[0]) && isdigit((unsigned char) text[1]) &&
		  isdigit((unsigned char) text[2]) && isdigit((unsigned char) text[3]) && text[4] == '-'))
		return false;
	if (ParseDateTime(text, workbuf, sizeof(workbuf), field, ftype, MAXDATEFIELDS, &nf) != 0)
		return false;

	/*
	 * A zone name ("Europe/Paris") that PostgreSQL does not know makes
	 * DecodeDateTime throw, not return an error code: look such names up
	 * first, so that an unknown one is "not a timestamp" like any other
	 * bad text (a run's template may give it long after the definition).
	 */
	for (int i = 0; i < nf; i++)
		if (ftype[i] == DTK_DATE && isalpha((unsigned char) field[i][0]) &&
			pg_tzset(field[i]) == NULL)
			return false;
	if (DecodeDateTime(field, ftype, nf, &dtype, &tm, &fsec, &tz) != 0 ||
		dtype != DTK_DATE)
		return false;
	if (tm2timestamp(&tm, fsec, &tz, result) != 0 || TIMESTAMP_NOT_FINITE(*result))
		return false;
	return true;
}
