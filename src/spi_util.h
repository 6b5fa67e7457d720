/*-------------------------------------------------------------------------
 *
 * spi_util.h
 *	  Prepared statements kept for the life of the backend, and which
 *	  version of the schema they may use (spi_util.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_SPI_UTIL_H
#define VB_SPI_UTIL_H

#include "executor/spi.h"

extern SPIPlanPtr vb_prepare(const char *sql, int nargs, Oid *argtypes);
extern SPIPlanPtr vb_prepare_opts(const char *sql, int nargs, Oid *argtypes,
								  int cursor_options);
extern bool vb_waits_available(void);

#endif							/* VB_SPI_UTIL_H */
