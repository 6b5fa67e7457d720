/*-------------------------------------------------------------------------
 *
 * prepared_finish.h
 *	  COMMIT PREPARED and ROLLBACK PREPARED wake the scheduler
 *	  (prepared_finish.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_PREPARED_FINISH_H
#define VB_PREPARED_FINISH_H

extern void vb_prepared_finish_init(void);

#endif							/* VB_PREPARED_FINISH_H */
