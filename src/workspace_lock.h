/*-------------------------------------------------------------------------
 *
 * workspace_lock.h
 *	  The workspace lock, which orders a workspace's kill switch against
 *	  everything that sets its runs going (workspace_lock.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_WORKSPACE_LOCK_H
#define VB_WORKSPACE_LOCK_H

#include "postgres.h"

#include "utils/uuid.h"

extern void vb_workspace_share(const char *workspace);
extern bool vb_workspace_try_share(const char *workspace);
extern char *vb_workspace_share_of_run(pg_uuid_t *run_id);
extern void vb_workspace_lock(const char *workspace);

#endif							/* VB_WORKSPACE_LOCK_H */
