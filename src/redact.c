/*-------------------------------------------------------------------------
 *
 * redact.c
 *	  Keeping a secret out of text that will be stored or shown.
 *
 * A provider's error message may echo the API key it was sent, and not
 * always verbatim: upper-cased, spaced out one character at a time, or cut
 * to a long prefix or suffix.  Any of these lands in events and node errors
 * that application roles can read, so every run of VB_REDACT_MIN_RUN or
 * more consecutive characters of the secret, compared without case and
 * with whitespace between them ignored, is replaced by "[redacted]".
 * Shorter runs are left: eight characters of a key are not enough to use
 * it, and redacting every common short substring would eat ordinary words.
 *
 * IDENTIFICATION
 *	  src/redact.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

#include "redact.h"

#define VB_REDACT_MIN_RUN	8
#define REDACTED			"[redacted]"

static bool
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Length, in bytes of text from start, of the longest match of text (case
 * and whitespace ignored) with the secret read from key position k on;
 * *chars is the number of secret characters matched.
 */
static size_t
match_from(const char *text, size_t start, size_t len, const char *secret,
		   size_t klen, size_t k, size_t *chars)
{
	size_t		i = start;
	size_t		end = start;

	*chars = 0;
	while (i < len && k < klen)
	{
		if (is_space(text[i]) && *chars > 0)
		{
			i++;
			continue;
		}
		if (pg_tolower((unsigned char) text[i]) != pg_tolower((unsigned char) secret[k]))
			break;
		i++;
		k++;
		(*chars)++;
		end = i;
	}
	return end - start;
}

/*
 * text with every run of the secret redacted, cut to at most max_len bytes
 * (on a character boundary) and an ellipsis when longer and max_len > 0.  A secret
 * shorter than the minimum run is redacted only where it appears whole.
 */
char *
vb_redact(const char *text, const char *secret, int max_len)
{
	size_t		len;
	size_t		klen = secret ? strlen(secret) : 0;
	size_t		min_run;
	bool	   *hidden;
	StringInfoData out;
	size_t		i;

	if (text == NULL)
		return NULL;
	len = strlen(text);
	min_run = Min(klen, VB_REDACT_MIN_RUN);
	hidden = palloc0(len + 1);
	if (min_run >= 4)
	{
		for (i = 0; i < len; i++)
		{
			size_t		best = 0;

			if (is_space(text[i]))
				continue;
			for (size_t k = 0; k + min_run <= klen; k++)
			{
				size_t		chars;
				size_t		bytes = match_from(text, i, len, secret, klen, k, &chars);

				if (chars >= min_run && bytes > best)
					best = bytes;
			}
			for (size_t b = 0; b < best; b++)
				hidden[i + b] = true;
		}
	}

	initStringInfo(&out);
	for (i = 0; i < len;)
	{
		if (hidden[i])
		{
			appendStringInfoString(&out, REDACTED);
			while (i < len && hidden[i])
				i++;
		}
		else
			appendStringInfoChar(&out, text[i++]);
	}
	pfree(hidden);
	if (max_len > 0 && out.len > max_len)
	{
		int			cut = pg_mbcliplen(out.data, out.len, max_len);

		out.data[cut] = '\0';
		out.len = cut;
		appendStringInfoString(&out, "…");
	}
	return out.data;
}
