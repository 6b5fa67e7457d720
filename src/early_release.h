/*-------------------------------------------------------------------------
 *
 * early_release.h
 *	  Run locks released before the commit's flush (early_release.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_EARLY_RELEASE_H
#define VB_EARLY_RELEASE_H

extern void vb_early_release_arm(void);

#endif							/* VB_EARLY_RELEASE_H */
