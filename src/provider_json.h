/*-------------------------------------------------------------------------
 *
 * provider_json.h
 *	  Provider request and answer bodies and output schemas, with jansson
 *	  (provider_json.c).  A leaf.
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_PROVIDER_JSON_H
#define VB_PROVIDER_JSON_H

typedef struct VbLlmAnswer
{
	char	   *text;
	char	   *model;			/* as the provider reports it */
	int64		tokens_in;
	int64		tokens_out;
	char	   *refusal;		/* the model declined to answer: its words ("" when
								 * it gave none); NULL when it answered */
	bool		truncated;		/* the answer stopped at max_tokens */
} VbLlmAnswer;

extern char *vb_json_chat_request(const char *provider, const char *model,
								  const char *system, int nmessages,
								  const char *const *roles,
								  const char *const *contents, int max_tokens,
								  const char *temperature);
extern bool vb_json_parse_answer(const char *provider, const char *body, size_t len,
								 VbLlmAnswer *answer, char **problem);
extern char *vb_json_error_message(const char *body, size_t len);
extern char *vb_json_schema_problem(const char *schema_text);
extern char *vb_json_check_answer(const char *schema_text, const char *answer,
								  char **json_out);

#endif							/* VB_PROVIDER_JSON_H */
