/*-------------------------------------------------------------------------
 *
 * retry.c
 *	  The delay before the next attempt of a node, by its retry policy.
 *
 * Backoff is exponential (or fixed) with "equal jitter": half the delay is
 * fixed, half is random.  The delay actually drawn is written into
 * STEP_RETRIED by the state machine, so replay never draws a random
 * number.  A leaf.
 *
 * IDENTIFICATION
 *	  src/retry.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/pg_prng.h"
#include "utils/jsonb.h"

#include "jsonb_util.h"
#include "retry.h"
#include "validate.h"

/*
 * The delay before attempt + 1, by the node's normalised retry policy; NULL
 * is the default policy (validate.h).
 */
int64
vb_backoff_delay_ms(Jsonb *retry, int attempt)
{
	JsonbValue	v;
	bool		exponential = true;
	double		initial = VB_DEFAULT_INITIAL_MS,
				max = VB_DEFAULT_MAX_MS,
				multiplier = VB_DEFAULT_MULTIPLIER,
				delay;
	bool		jitter = true;

	if (retry != NULL)
	{
		if (vb_jsonb_get(&retry->root, "backoff", &v) && v.type == jbvString)
			exponential = (strncmp(v.val.string.val, "exponential", v.val.string.len) == 0);
		if (vb_jsonb_get(&retry->root, "initial_ms", &v) && v.type == jbvNumeric)
			initial = vb_numeric_double(v.val.numeric);
		if (vb_jsonb_get(&retry->root, "max_ms", &v) && v.type == jbvNumeric)
			max = vb_numeric_double(v.val.numeric);
		if (vb_jsonb_get(&retry->root, "multiplier", &v) && v.type == jbvNumeric)
			multiplier = vb_numeric_double(v.val.numeric);
		if (vb_jsonb_get(&retry->root, "jitter", &v) && v.type == jbvBool)
			jitter = v.val.boolean;
	}

	/* max caps the exponential growth; a fixed backoff is what it says. */
	delay = exponential ? Min(initial * pow(multiplier, attempt - 1), max) : initial;
	if (jitter)
		delay = delay / 2 + pg_prng_double(&pg_global_prng_state) * (delay / 2);
	return (int64) llround(delay);
}

