/*-------------------------------------------------------------------------
 *
 * text_escape.h
 *	  Free text shown on one line (text_escape.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_TEXT_ESCAPE_H
#define VB_TEXT_ESCAPE_H

#include "lib/stringinfo.h"

extern void vb_append_escaped_line(StringInfo buf, const char *s);

#endif							/* VB_TEXT_ESCAPE_H */
