/*-------------------------------------------------------------------------
 *
 * template.h
 *	  {{placeholders}} of llm prompts, of the input of run nodes and of
 *	  times: checked at definition, rendered at run time (template.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_TEMPLATE_H
#define VB_TEMPLATE_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

extern char *vb_template_check(const char *template, List *depends_on);
extern char *vb_template_render(const char *template, Jsonb *input, Jsonb *upstream,
								Jsonb *run_input, char **problem);
extern char *vb_template_check_json(JsonbContainer *tmpl, List *depends_on);
extern Jsonb *vb_template_render_json(Jsonb *tmpl, Jsonb *upstream, Jsonb *run_input,
									  char **problem);

#endif							/* VB_TEMPLATE_H */
