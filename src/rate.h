/*-------------------------------------------------------------------------
 *
 * rate.h
 *	  Rate limits of llm calls, kept by the scheduler (rate.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_RATE_H
#define VB_RATE_H

#include "datatype/timestamp.h"

extern bool vb_rate_take(int64 task_id, const char *workspace, const char *provider,
						 const char *model, int64 est_tokens, TimestampTz now,
						 TimestampTz *until, char **reason_json);
extern void vb_rate_forget_grant(int64 task_id);
extern void vb_rate_block(const char *workspace, const char *provider, const char *model,
						  TimestampTz until);

#endif							/* VB_RATE_H */
