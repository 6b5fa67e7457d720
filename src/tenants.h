/*-------------------------------------------------------------------------
 *
 * tenants.h
 *	  Workspaces mapped to roles, and what the mapping allows.
 *
 * IDENTIFICATION
 *	  src/tenants.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_TENANTS_H
#define VB_TENANTS_H

#include "postgres.h"

#include "utils/array.h"
#include "utils/uuid.h"

extern ArrayType *vb_tenant_excluded_workspaces(void);
extern bool vb_workspace_visible(const char *workspace);
extern void vb_require_workspace(const char *workspace, const char *action);
extern void vb_require_run_workspace(pg_uuid_t *run_id, const char *action);
extern char *vb_require_task_workspace(int64 task_id, const char *action);
extern void vb_tenants_prepared_committed(void);

#endif							/* VB_TENANTS_H */
