/*-------------------------------------------------------------------------
 *
 * gate_writes.c
 *	  Marks the engine's own UPDATEs of vectorbea.approvals (closing gates
 *	  with their run, expiring, escalating and postponing them), so that
 *	  the decision trigger (approvals.c) lets exactly those pass.
 *
 * The trigger used to recognise the engine by what it wrote (decided_at,
 * escalation_level or expires_at, as the table's owner), and so took a
 * superuser's hand-written decision that also set decided_at for one of
 * the engine's writes: the gate read approved while its node waited on,
 * with no event.  A mark kept by this backend while the engine's own
 * statement runs, and cleared however it ends, cannot be set by anyone
 * else's UPDATE.  A leaf: it runs the statements it is given.
 *
 * IDENTIFICATION
 *	  src/gate_writes.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"

#include "gate_writes.h"

/* How many of the engine's UPDATEs of approvals are running in this backend. */
static int	gate_updates_running = 0;

/* SPI_execute_plan of one of the engine's UPDATEs of approvals. */
int
vb_gate_update_plan(SPIPlanPtr plan, Datum *args, const char *nulls)
{
	volatile int rc = 0;

	gate_updates_running++;
	PG_TRY();
	{
		rc = SPI_execute_plan(plan, args, nulls, false, 0);
	}
	PG_FINALLY();
	{
		gate_updates_running--;
	}
	PG_END_TRY();
	return rc;
}

/* Whether the UPDATE of approvals now running is one of the engine's. */
bool
vb_gate_update_active(void)
{
	return gate_updates_running > 0;
}
