/*-------------------------------------------------------------------------
 *
 * vectorbea.c
 *	  Module entry point: PG_MODULE_MAGIC and _PG_init.
 *
 * Loading the library defines the settings (settings.c), and hooks the
 * check made before the extension's scripts run (install_guard.c) and the
 * planner's view of the engine's partial indexes (index_costs.c); loading
 * it from shared_preload_libraries also claims shared memory for the
 * schedulers (shmem.c), the claims' marks (claim_marks.c), the relay of
 * notifications (relay.c) and the held notifications of prepared
 * transactions (prepared_notes.c), hooks COMMIT PREPARED to wake the
 * schedulers (prepared_finish.c), and registers one scheduler per
 * database (scheduler.c).  The top of the
 * layers: nothing calls into this file.
 *
 * IDENTIFICATION
 *	  src/vectorbea.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "claim_marks.h"
#include "index_costs.h"
#include "install_guard.h"
#include "prepared_finish.h"
#include "prepared_notes.h"
#include "relay.h"
#include "scheduler.h"
#include "settings.h"
#include "shmem.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	vb_define_settings();
	vb_install_guard_init();
	vb_index_costs_init();
	if (!process_shared_preload_libraries_in_progress)
		return;
	vb_shmem_install_hooks();
	vb_claim_marks_install_hooks();
	vb_relay_install_hooks();
	vb_prepared_notes_install_hooks();
	vb_prepared_finish_init();
	vb_register_schedulers();
}
