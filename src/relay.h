/*-------------------------------------------------------------------------
 *
 * relay.h
 *	  Notifications handed to the database's scheduler at commit, which
 *	  sends them (relay.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_RELAY_H
#define VB_RELAY_H

/* The engine's channels. */
typedef enum VbChannel
{
	VB_CHANNEL_TASKS,			/* vectorbea_tasks: an activity has ready tasks */
	VB_CHANNEL_RUNS,			/* vectorbea_runs: a run finished */
	VB_CHANNEL_APPROVALS		/* vectorbea_approvals: a gate changed */
} VbChannel;

/* One notification of a transaction; level is the subtransaction's (notify.c). */
typedef struct VbNotification
{
	VbChannel	channel;
	int			level;
	char	   *payload;
} VbNotification;

/* Longer payloads are sent directly, in the committing transaction. */
#define VB_RELAY_PAYLOAD_MAX	256

extern void vb_relay_install_hooks(void);
extern const char *vb_channel_name(VbChannel channel);

/* A committing backend (notify.c) */
extern bool vb_relay_reserve(int n, bool fits);
extern void vb_relay_fill(const VbNotification *notes);
extern void vb_relay_release(void);
extern void vb_relay_forget_prepared(TransactionId xid);
extern bool vb_relay_hold_prepared(TransactionId xid, const VbNotification *notes, int n);

/* The scheduler */
extern void vb_relay_attach(int slot);
extern bool vb_relay_pending(void);
extern int	vb_relay_send(bool may_wait);

#endif							/* VB_RELAY_H */
