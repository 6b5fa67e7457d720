/*-------------------------------------------------------------------------
 *
 * controls.h
 *	  Kill switches: paused workspaces and disabled models (controls.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_CONTROLS_H
#define VB_CONTROLS_H

#include "events.h"

extern bool vb_workspace_paused(const char *workspace, char **reason, char **by);
extern bool vb_pause_if_workspace_paused(VbRun *run, const char *workspace, TimestampTz at);
extern bool vb_model_disabled(const char *provider, const char *model);

#endif							/* VB_CONTROLS_H */
