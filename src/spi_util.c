/*-------------------------------------------------------------------------
 *
 * spi_util.c
 *	  Prepared statements kept for the life of the backend, and the schema
 *	  version they may count on.
 *
 * Every engine statement is prepared once per backend into a static plan
 * pointer of the function that runs it, and kept (SPI_keepplan), so the
 * hot paths never parse or plan per call unless the plan cache decides to.
 *
 * IDENTIFICATION
 *	  src/spi_util.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "executor/spi.h"
#include "utils/lsyscache.h"

#include "spi_util.h"

SPIPlanPtr
vb_prepare(const char *sql, int nargs, Oid *argtypes)
{
	return vb_prepare_opts(sql, nargs, argtypes, 0);
}

/*
 * As vb_prepare, with cursor options: CURSOR_OPT_GENERIC_PLAN for a hot
 * statement whose generic plan is known to be right, so that it is never
 * planned again per call.
 */
SPIPlanPtr
vb_prepare_opts(const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

	if (plan == NULL)
		elog(ERROR, "vectorbea: could not prepare statement: %s\n%s",
			 SPI_result_code_string(SPI_result), sql);
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "vectorbea: could not keep prepared statement");
	return plan;
}

/*
 * Whether this database's schema has timers, signals and child runs (0.2.0):
 * a 0.2.0 library serves a 0.1.0 schema between its restart and ALTER
 * EXTENSION UPDATE, and must not touch columns that are not there yet.
 */
bool
vb_waits_available(void)
{
	return OidIsValid(get_relname_relid("signals", get_namespace_oid("vectorbea", true)));
}
