/*-------------------------------------------------------------------------
 *
 * fuzz.h
 *	  The libFuzzer driver that runs inside a throwaway single-user
 *	  backend (driver.c), its malloc'd memory context (malloc_context.c),
 *	  the checks every target shares (oracle.c) and the targets
 *	  (target_*.c).  Test code: built by test/fuzz/run only, never
 *	  installed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_FUZZ_H
#define VB_FUZZ_H

#include "postgres.h"

#include "utils/elog.h"
#include "utils/jsonb.h"

/*
 * What an error raised at this stage of an input means: INPUT, the fuzz
 * input is not what the target reads (not JSON, say), so the input is
 * dropped; PRODUCT, the product refused it, which is a fine outcome when
 * the error is a proper one (oracle.c); ORACLE, the product produced
 * something it cannot itself store or send, which is a finding.
 */
typedef enum VbFuzzStage
{
	VB_FUZZ_INPUT,
	VB_FUZZ_PRODUCT,
	VB_FUZZ_ORACLE
} VbFuzzStage;

extern VbFuzzStage vb_fuzz_stage;

/* A target: runs one input; may raise errors (the driver catches them). */
typedef void (*VbFuzzTarget) (const char *text, size_t len);

extern void vb_fuzz_validate(const char *text, size_t len);
extern void vb_fuzz_template(const char *text, size_t len);
extern void vb_fuzz_answer(const char *text, size_t len);
extern void vb_fuzz_schema(const char *text, size_t len);

/* malloc_context.c */
extern MemoryContext vb_fuzz_malloc_context(MemoryContext parent, const char *name);

/* oracle.c */
extern void vb_fuzz_finding(const char *fmt,...) pg_attribute_printf(1, 2) pg_attribute_noreturn();
extern void vb_fuzz_check_error(ErrorData *edata);
extern void vb_fuzz_check_text(const char *what, const char *text);
extern Jsonb *vb_fuzz_check_json(const char *what, const char *json);
extern Jsonb *vb_fuzz_parse_input(const char *text, size_t len);
extern void vb_fuzz_reject(const char *why) pg_attribute_noreturn();
extern Jsonb *vb_fuzz_element(Jsonb *array, int i);
extern ErrorData *vb_fuzz_try(void (*fn) (void *), void *arg);

#endif							/* VB_FUZZ_H */
