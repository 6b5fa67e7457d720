/*-------------------------------------------------------------------------
 *
 * allowlist.h
 *	  vectorbea.llm_allowed_hosts: where the scheduler may send LLM calls
 *	  (allowlist.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_ALLOWLIST_H
#define VB_ALLOWLIST_H

#include "utils/guc.h"

struct sockaddr;

/* The setting, defined by settings.c with this check hook. */
extern char *vb_llm_allowed_hosts;
extern bool vb_check_allowed_hosts(char **newval, void **extra, GucSource source);

extern bool vb_allowlist_host_allowed(const char *host, int port, int default_port);
extern bool vb_allowlist_address_allowed(const struct sockaddr *sa, int default_port);

#endif							/* VB_ALLOWLIST_H */
