/*-------------------------------------------------------------------------
 *
 * oracle.c
 *	  What the fuzz driver counts as a finding, beyond a crash or a
 *	  sanitizer report: the checks every target shares.
 *
 * The product may refuse any input, but the refusal must be a proper
 * error: a SQLSTATE of its own class (never XX000, which elog(ERROR) gives
 * "cannot happen" paths), no running out of memory or stack (a bound was
 * missing) and, since the input was valid UTF-8, messages that are too.
 * What the product builds to store or send (event data, node outputs,
 * normalised definitions, request bodies) must be what it claims: JSON
 * that jsonb_in takes, in valid UTF-8.  A finding prints what went wrong
 * and aborts, which libFuzzer reports with the input that did it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "jsonb_util.h"
#include "subxact.h"

#include "fuzz.h"

void
vb_fuzz_finding(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "\n==vb-fuzz== FINDING: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	fflush(stderr);
	abort();
}

static bool
valid_utf8(const char *s)
{
	return s == NULL || pg_verifymbstr(s, strlen(s), true);
}

/* Text the product hands on (a message, a rendered prompt) is valid UTF-8. */
void
vb_fuzz_check_text(const char *what, const char *text)
{
	if (!valid_utf8(text))
		vb_fuzz_finding("%s is not valid UTF-8: %s", what, text);
}

/* A refusal is a proper error. */
void
vb_fuzz_check_error(ErrorData *edata)
{
	const char *state = unpack_sql_state(edata->sqlerrcode);

	if (edata->sqlerrcode == ERRCODE_INTERNAL_ERROR)
		vb_fuzz_finding("an internal error (XX000) instead of a proper refusal: %s", edata->message);
	if (strncmp(state, "53", 2) == 0 || edata->sqlerrcode == ERRCODE_STATEMENT_TOO_COMPLEX)
		vb_fuzz_finding("SQLSTATE %s (no bound on the input's size or depth?): %s",
						state, edata->message);
	vb_fuzz_check_text("an error message", edata->message);
	vb_fuzz_check_text("an error detail", edata->detail);
	vb_fuzz_check_text("an error hint", edata->hint);
}

/* JSON text the product stores or sends: valid UTF-8 that jsonb_in takes. */
Jsonb *
vb_fuzz_check_json(const char *what, const char *json)
{
	VbFuzzStage stage = vb_fuzz_stage;
	Jsonb	   *jb;

	if (json == NULL)
		vb_fuzz_finding("%s is NULL", what);
	vb_fuzz_check_text(what, json);
	vb_fuzz_stage = VB_FUZZ_ORACLE;
	jb = vb_jsonb_from_cstring(json);
	vb_fuzz_stage = stage;
	return jb;
}

/*
 * The input as jsonb, as a client would pass it: text without NUL in
 * valid UTF-8 (the protocol refuses anything else), then jsonb_in.
 * Anything else is not an input of the target (an error at stage INPUT).
 */
Jsonb *
vb_fuzz_parse_input(const char *text, size_t len)
{
	Jsonb	   *jb;

	vb_fuzz_stage = VB_FUZZ_INPUT;
	if (strlen(text) != len || !pg_verifymbstr(text, len, true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("fuzz input is not text a client could send")));
	jb = vb_jsonb_from_cstring(text);
	vb_fuzz_stage = VB_FUZZ_PRODUCT;
	return jb;
}

/*
 * Runs a product step that may refuse, in a subtransaction, and goes on:
 * returns its error (checked to be a proper one) or NULL.
 */
ErrorData *
vb_fuzz_try(void (*fn) (void *), void *arg)
{
	ErrorData  *edata;

	vb_fuzz_stage = VB_FUZZ_PRODUCT;
	edata = vb_try_in_subxact(fn, arg);
	if (edata && vb_fuzz_stage == VB_FUZZ_ORACLE)
		vb_fuzz_finding("the oracle's own step failed: %s (%s)", edata->message,
						edata->detail ? edata->detail : "no detail");
	if (edata)
		vb_fuzz_check_error(edata);
	vb_fuzz_stage = VB_FUZZ_PRODUCT;
	return edata;
}

/* The input is not one the target reads (it is dropped, not kept). */
void
vb_fuzz_reject(const char *why)
{
	vb_fuzz_stage = VB_FUZZ_INPUT;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("fuzz input rejected: %s", why)));
}

/* Element i of a jsonb array as a jsonb of its own; NULL past the end. */
Jsonb *
vb_fuzz_element(Jsonb *array, int i)
{
	JsonbValue *v;

	if (!JsonContainerIsArray(&array->root) || JsonContainerIsScalar(&array->root) ||
		i >= (int) JsonContainerSize(&array->root))
		return NULL;
	v = getIthJsonbValueFromContainer(&array->root, i);
	return JsonbValueToJsonb(v);
}
