/*-------------------------------------------------------------------------
 *
 * encoding.h
 *	  Text between the database's encoding and the providers' UTF-8
 *	  (encoding.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_ENCODING_H
#define VB_ENCODING_H

extern char *vb_to_utf8(const char *s, const char *what, char **problem);
extern char *vb_from_utf8(const char *s, size_t len, const char *what, char **problem);
extern char *vb_from_utf8_lossy(const char *s);
extern char *vb_valid_text(const char *s);

#endif							/* VB_ENCODING_H */
