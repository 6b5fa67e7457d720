/*-------------------------------------------------------------------------
 *
 * redact.h
 *	  Keeping a secret out of stored text (redact.c).  A leaf: it calls
 *	  nothing else of vectorbea.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_REDACT_H
#define VB_REDACT_H

extern char *vb_redact(const char *text, const char *secret, int max_len);

#endif							/* VB_REDACT_H */
