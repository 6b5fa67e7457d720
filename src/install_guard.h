/*-------------------------------------------------------------------------
 *
 * install_guard.h
 *	  The check before vectorbea's install and upgrade scripts run
 *	  (install_guard.c).  Called by _PG_init only.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_INSTALL_GUARD_H
#define VB_INSTALL_GUARD_H

extern void vb_install_guard_init(void);

#endif							/* VB_INSTALL_GUARD_H */
