/*-------------------------------------------------------------------------
 *
 * text_escape.c
 *	  Free text shown on one line: timeline() and other one-line reports.
 *
 * Reasons, names of who decided, worker names and provider messages are
 * written by people and programs outside the engine.  Printed raw, a line
 * feed in a reason starts what looks like a new event line, and an escape
 * sequence rewrites the reader's terminal.  escape_text() shows every
 * control character (C0, DEL, C1) and the Unicode line and paragraph
 * separators as a visible escape instead: \n, \r, \t, or \xNN / \uNNNN,
 * in every server encoding (the C1 controls are two bytes in UTF-8, one in
 * LATIN1; a SQL_ASCII database may hold bytes that are no UTF-8 at all).
 * Everything else, backslashes included, is shown as it is.
 *
 * IDENTIFICATION
 *	  src/text_escape.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "text_escape.h"

/*
 * Whether the database's encoding is one of the ISO 8859 family, where the
 * bytes 0x80 to 0x9f are the C1 control characters (0x9b is CSI, which
 * starts a terminal's escape sequences).  The Windows and KOI8 encodings
 * put printable characters there.
 */
static bool
iso_8859(int encoding)
{
	return (encoding >= PG_LATIN1 && encoding <= PG_LATIN10) ||
		(encoding >= PG_ISO_8859_5 && encoding <= PG_ISO_8859_8);
}

/*
 * Appends s to buf with every line-breaking or control character escaped.
 * A UTF-8 database holds valid UTF-8 only.  A SQL_ASCII database holds any
 * byte: what is valid UTF-8 there is read as UTF-8 (most clients write
 * it), and every other byte of 0x80 or above is shown as \xNN, since a
 * terminal could read it as a control.
 */
void
vb_append_escaped_line(StringInfo buf, const char *s)
{
	int			encoding = GetDatabaseEncoding();
	bool		utf8 = encoding == PG_UTF8 || encoding == PG_SQL_ASCII;

	while (*s)
	{
		unsigned char c = (unsigned char) *s;

		if (c == '\n')
			appendStringInfoString(buf, "\\n");
		else if (c == '\r')
			appendStringInfoString(buf, "\\r");
		else if (c == '\t')
			appendStringInfoString(buf, "\\t");
		else if (c < 0x20 || c == 0x7f)
			appendStringInfo(buf, "\\x%02x", c);
		else if (utf8 && c >= 0x80)
		{
			int			len = pg_utf_mblen((const unsigned char *) s);
			pg_wchar	code;

			/* Checked before it is decoded: SQL_ASCII text need not be UTF-8. */
			if (encoding != PG_UTF8 &&
				(strnlen(s, len) < (size_t) len || !pg_utf8_islegal((const unsigned char *) s, len)))
			{
				appendStringInfo(buf, "\\x%02x", c);
				s++;
				continue;
			}
			code = utf8_to_unicode((const unsigned char *) s);
			/* C1 controls (NEL among them), LINE and PARAGRAPH SEPARATOR */
			if ((code >= 0x80 && code <= 0x9f) || code == 0x2028 || code == 0x2029)
				appendStringInfo(buf, "\\u%04x", (unsigned int) code);
			else
				appendBinaryStringInfo(buf, s, len);
			s += len;
			continue;
		}
		else if (c >= 0x80 && c <= 0x9f && iso_8859(encoding))
			appendStringInfo(buf, "\\x%02x", c);
		else
			appendStringInfoChar(buf, (char) c);
		s++;
	}
}

/*
 * escape_text(text) -> text
 */
PG_FUNCTION_INFO_V1(vectorbea_escape_text);
Datum
vectorbea_escape_text(PG_FUNCTION_ARGS)
{
	char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(0));
	StringInfoData buf;

	initStringInfo(&buf);
	vb_append_escaped_line(&buf, s);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
