/*-------------------------------------------------------------------------
 *
 * llm.h
 *	  llm nodes, run by the scheduler (llm.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_LLM_H
#define VB_LLM_H

#include "datatype/timestamp.h"
#include "shmem.h"

extern void vb_llm_init(void);
extern void vb_llm_recover(VbSweepCounters *counters);
extern void vb_llm_forget_all(void);
extern void vb_llm_check_leases(void);
extern bool vb_llm_claim(VbSweepCounters *counters);
extern void vb_llm_send(void);
extern void vb_llm_finish(VbSweepCounters *counters);
extern bool vb_llm_busy(void);
extern TimestampTz vb_llm_next_send(void);
extern void vb_llm_record_held(void);

#endif							/* VB_LLM_H */
