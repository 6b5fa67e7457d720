/*-------------------------------------------------------------------------
 *
 * encoding.c
 *	  Text between the database's encoding and the providers' UTF-8.
 *
 * Provider requests and answers are JSON in UTF-8, and jansson refuses a
 * string that is not UTF-8 (json_pack then gives back NULL).  A database
 * in LATIN1 holds "é" as one byte, and a SQL_ASCII database holds any
 * bytes at all.  So what the engine sends is converted to UTF-8 first, and
 * what comes back is converted to the database's encoding before it is
 * stored.  A conversion that cannot be made is reported, never guessed:
 * SQL_ASCII text that is not UTF-8 has no meaning to convert from, and a
 * character the database's encoding lacks ("→" in LATIN1) has no place to
 * go.  Text from the network that no parser checked (libcurl's error text,
 * a parser's quote of a body) is made valid in the database's encoding
 * before it is stored (vb_valid_text).
 *
 * IDENTIFICATION
 *	  src/encoding.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"

#include "encoding.h"

/*
 * s (in the database's encoding) in UTF-8, or NULL with *problem when it
 * cannot be: only SQL_ASCII text that is not UTF-8.  what names s for the
 * message.
 */
char *
vb_to_utf8(const char *s, const char *what, char **problem)
{
	int			encoding = GetDatabaseEncoding();
	int			len = strlen(s);
	int			valid;

	if (encoding == PG_UTF8)
		return (char *) s;
	if (encoding != PG_SQL_ASCII)
		return (char *) pg_server_to_any(s, len, PG_UTF8);
	valid = pg_encoding_verifymbstr(PG_UTF8, s, len);
	if (valid == len)
		return (char *) s;
	*problem = psprintf("%s is not valid UTF-8 (byte 0x%02x at offset %d); the database's encoding is SQL_ASCII, which stores bytes as given, and providers take UTF-8",
						what, (unsigned char) s[valid], valid);
	return NULL;
}

/*
 * The UTF-8 text s of len bytes in the database's encoding, palloc'd, or
 * NULL with *problem when it has a character the encoding lacks.
 */
char *
vb_from_utf8(const char *s, size_t len, const char *what, char **problem)
{
	int			encoding = GetDatabaseEncoding();
	Oid			proc;
	size_t		cap;
	char	   *out;
	int			converted;

	if (encoding == PG_UTF8 || encoding == PG_SQL_ASCII || len == 0)
		return pnstrdup(s, len);
	proc = FindDefaultConversionProc(PG_UTF8, encoding);
	if (!OidIsValid(proc))
	{
		*problem = psprintf("%s cannot be stored: there is no conversion from UTF8 to the database's encoding %s",
							what, GetDatabaseEncodingName());
		return NULL;
	}
	if (len >= MaxAllocSize / MAX_CONVERSION_GROWTH)
	{
		*problem = psprintf("%s is too long to convert to the database's encoding", what);
		return NULL;
	}
	cap = len * MAX_CONVERSION_GROWTH + 1;
	out = palloc(cap);
	converted = pg_do_encoding_conversion_buf(proc, PG_UTF8, encoding,
											  (unsigned char *) s, (int) len,
											  (unsigned char *) out, (int) cap, true);
	if ((size_t) converted < len)
	{
		*problem = psprintf("%s has a character that the database's encoding %s cannot hold (at byte %d)",
							what, GetDatabaseEncodingName(), converted);
		pfree(out);
		return NULL;
	}
	return out;
}

/*
 * A message (UTF-8) in the database's encoding, for the history: a
 * character the encoding lacks becomes "?", since the message is worth
 * keeping anyway.
 */
char *
vb_from_utf8_lossy(const char *s)
{
	char	   *problem = NULL;
	char	   *converted = vb_from_utf8(s, strlen(s), "a message", &problem);

	if (converted == NULL)
	{
		converted = pstrdup(s);
		for (char *p = converted; *p; p++)
			if ((unsigned char) *p >= 0x80)
				*p = '?';
	}
	return converted;
}

/*
 * s with every byte that does not start a valid character of the database
 * encoding replaced by U+FFFD (in UTF-8; "?" in other encodings).  Text that
 * comes off the network without passing a parser that checks it (libcurl's
 * error text, a JSON parser's quote of the body near its error) is stored
 * in events and errors, and clients and jsonb expect valid text there.
 */
char *
vb_valid_text(const char *s)
{
	int			encoding = GetDatabaseEncoding();
	int			len = strlen(s);
	StringInfoData buf;

	if (pg_verifymbstr(s, len, true))
		return pstrdup(s);
	initStringInfo(&buf);
	while (len > 0)
	{
		int			n = pg_encoding_verifymbchar(encoding, s, len);

		if (n > 0)
			appendBinaryStringInfo(&buf, s, n);
		else
		{
			appendStringInfoString(&buf, encoding == PG_UTF8 ? "\xef\xbf\xbd" : "?");
			n = 1;
		}
		s += n;
		len -= n;
	}
	return buf.data;
}
