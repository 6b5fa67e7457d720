/*-------------------------------------------------------------------------
 *
 * settings.h
 *	  The settings of vectorbea (settings.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_SETTINGS_H
#define VB_SETTINGS_H

#include "nodes/pg_list.h"

extern int	vb_max_payload_kb;
extern int	vb_max_nodes_per_run;
extern int	vb_max_tree_runs;
extern bool vb_notify_tasks;
extern bool vb_notify_runs;
extern bool vb_early_lock_release;
extern bool vb_test_pause_claim_mark;
extern char *vb_databases;
extern char *vb_master_key_file;
extern int	vb_scheduler_idle_ms;
extern int	vb_prepared_poll_ms;
extern int	vb_llm_max_in_flight;
extern int	vb_llm_request_timeout_ms;
extern int	vb_llm_connect_timeout_ms;
extern int	vb_llm_max_response_kb;
extern int	vb_retention_min;
extern int	vb_retention_batch_events;
extern int	vb_claim_wait_ms;
extern bool vb_live_index_pages;

extern void vb_define_settings(void);
extern List *vb_scheduler_databases(bool warn);

/* The advisory lock a paused claim waits for (vectorbea.test_pause_claim_mark). */
#define VB_TEST_PAUSE_LOCK 86214001

#endif							/* VB_SETTINGS_H */
