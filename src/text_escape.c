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
 * separators as a visible escape instead: \n, \r, \t, or \xNN / \uNNNN.
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

/* Appends s to buf with every line-breaking or control character escaped. */
void
vb_append_escaped_line(StringInfo buf, const char *s)
{
	bool		utf8 = GetDatabaseEncoding() == PG_UTF8;

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
			pg_wchar	code = utf8_to_unicode((const unsigned char *) s);

			/* C1 controls (NEL among them), LINE and PARAGRAPH SEPARATOR */
			if ((code >= 0x80 && code <= 0x9f) || code == 0x2028 || code == 0x2029)
				appendStringInfo(buf, "\\u%04x", (unsigned int) code);
			else
				appendBinaryStringInfo(buf, s, len);
			s += len;
			continue;
		}
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
