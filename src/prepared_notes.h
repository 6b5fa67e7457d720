/*-------------------------------------------------------------------------
 *
 * prepared_notes.h
 *	  The notifications of prepared transactions, held until they end
 *	  (prepared_notes.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_PREPARED_NOTES_H
#define VB_PREPARED_NOTES_H

#include "relay.h"

extern void vb_prepared_notes_install_hooks(void);

/* A backend, just before PREPARE (through relay.c) */
extern bool vb_prepared_notes_hold(TransactionId xid, const VbNotification *notes, int n);
extern void vb_prepared_notes_forget(TransactionId xid);

/* The scheduler (relay.c) */
extern bool vb_prepared_notes_ended(void);
extern int	vb_prepared_notes_take(VbNotification **committed);

#endif							/* VB_PREPARED_NOTES_H */
