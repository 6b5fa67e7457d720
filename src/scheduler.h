/*-------------------------------------------------------------------------
 *
 * scheduler.h
 *	  The background worker (scheduler.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_SCHEDULER_H
#define VB_SCHEDULER_H

extern void vb_register_schedulers(void);

#endif							/* VB_SCHEDULER_H */
