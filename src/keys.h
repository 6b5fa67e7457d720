/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  Provider keys (BYOK) and the master key (keys.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_KEYS_H
#define VB_KEYS_H

extern char *vb_read_master_key(const char *path);
extern void vb_forget(char *secret);
extern const char *vb_pgcrypto_schema(void);
extern char *vb_provider_key_plaintext(const char *workspace, const char *provider,
									   const char *master);

#endif							/* VB_KEYS_H */
