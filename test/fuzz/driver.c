/*-------------------------------------------------------------------------
 *
 * driver.c
 *	  The libFuzzer driver of vectorbea's parsers, run inside a throwaway
 *	  single-user backend: SELECT vb_fuzz_run('validate', ARRAY[argv...])
 *	  hands the backend to LLVMFuzzerRunDriver, which calls one_input()
 *	  for every input it makes.
 *
 * The code under test reads jsonb, pallocs and reports with ereport, so
 * it runs where those are real: in a backend, against the instrumented
 * vectorbea.so that shared_preload_libraries loaded (test/fuzz/run builds
 * both; neither is ever installed).  Each input runs in a subtransaction
 * of its own (vb_try_in_subxact, the product's own way of surviving an
 * error), with a malloc'd memory context current (malloc_context.c) that
 * is reset afterwards, so nothing of one input reaches the next.  An
 * error is an outcome the oracle judges (oracle.c); a crash, a sanitizer
 * report, an abort from the oracle or a hang is a finding, which
 * libFuzzer saves as a crash file.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "subxact.h"

#include "fuzz.h"

PG_MODULE_MAGIC;

/* In libFuzzer (clang >= 13), preloaded by test/fuzz/run. */
extern int	LLVMFuzzerRunDriver(int *argc, char ***argv,
								int (*user_cb) (const uint8_t *data, size_t size));

VbFuzzStage vb_fuzz_stage;

static const struct
{
	const char *name;
	VbFuzzTarget fn;
}			targets[] =
{
	{"validate", vb_fuzz_validate},
	{"template", vb_fuzz_template},
	{"answer", vb_fuzz_answer},
	{"schema", vb_fuzz_schema},
};

static VbFuzzTarget target;
static MemoryContext input_cxt;

typedef struct OneInput
{
	const char *text;
	size_t		len;
} OneInput;

static void
run_target(void *arg)
{
	OneInput   *in = arg;

	target(in->text, in->len);
}

/*
 * One input.  Returns -1 when the input is not what the target reads, so
 * that libFuzzer does not keep it in the corpus.
 */
static int
one_input(const uint8_t *data, size_t size)
{
	MemoryContext old = MemoryContextSwitchTo(input_cxt);
	char	   *buf = palloc(size + 1);
	OneInput	in;
	ErrorData  *edata;
	int			rc = 0;

	memcpy(buf, data, size);
	buf[size] = '\0';
	in.text = buf;
	in.len = size;
	vb_fuzz_stage = VB_FUZZ_INPUT;
	edata = vb_try_in_subxact(run_target, &in);
	if (edata)
	{
		switch (vb_fuzz_stage)
		{
			case VB_FUZZ_INPUT:
				rc = -1;
				break;
			case VB_FUZZ_PRODUCT:
				vb_fuzz_check_error(edata);
				break;
			case VB_FUZZ_ORACLE:
				vb_fuzz_finding("the oracle's own step failed: %s (%s)", edata->message,
								edata->detail ? edata->detail : "no detail");
		}
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(input_cxt);
	return rc;
}

PG_FUNCTION_INFO_V1(vb_fuzz_run);

/* vb_fuzz_run(target text, argv text[]) -- libFuzzer's argv, argv[0] first. */
Datum
vb_fuzz_run(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(1);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			argc;
	char	  **argv;
	MemoryContext old;

	target = NULL;
	for (int i = 0; i < lengthof(targets); i++)
		if (strcmp(targets[i].name, name) == 0)
			target = targets[i].fn;
	if (target == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown fuzz target \"%s\"", name),
				 errhint("Targets: validate, template, answer, schema.")));

	/* libFuzzer keeps argv to the end; so does TopMemoryContext. */
	old = MemoryContextSwitchTo(TopMemoryContext);
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	argv = palloc0(sizeof(char *) * (n + 1));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			elog(ERROR, "argv[%d] is null", i);
		argv[i] = TextDatumGetCString(elems[i]);
	}
	argc = n;
	input_cxt = vb_fuzz_malloc_context(TopMemoryContext, "vb fuzz input");
	MemoryContextSwitchTo(old);

	/* Fuzzing and replays end the process with exit(); -help returns. */
	PG_RETURN_INT32(LLVMFuzzerRunDriver(&argc, &argv, one_input));
}
