/*-------------------------------------------------------------------------
 *
 * retry.h
 *	  The delay before a node's next attempt (retry.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_RETRY_H
#define VB_RETRY_H

#include "utils/jsonb.h"

extern int64 vb_backoff_delay_ms(Jsonb *retry, int attempt);

#endif							/* VB_RETRY_H */
