/*-------------------------------------------------------------------------
 *
 * llm_call.h
 *	  One llm call as the scheduler holds it, shared by the phases of the
 *	  llm driver: building the request (llm_request.c), pricing and budgets
 *	  (llm_cost.c), classifying the answer (llm_answer.c), crash recovery
 *	  (llm_recover.c), and the driver that claims, sends and finishes calls
 *	  (llm.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_LLM_CALL_H
#define VB_LLM_CALL_H

#include "events.h"
#include "http.h"
#include "provider_json.h"

#define SCHEDULER_WORKER		"vectorbea scheduler"
#define LEASE_MARGIN_MS			(60 * 1000)
#define NODE_TIMEOUT_MARGIN_MS	500
#define MAX_MESSAGES			(2 * 10 + 1)	/* the prompt, then answer/correction pairs */
#define MAX_PROVIDER_MESSAGE	500

typedef struct LlmCall
{
	struct LlmCall *next;
	MemoryContext cxt;			/* everything of this call */
	int64		task_id;
	pg_uuid_t	lease;
	pg_uuid_t	run_id;
	char	   *node;
	char	   *workspace;		/* its run's: whose key, budget and rate limits */
	int			attempt;
	/* the node's llm object */
	char	   *provider;
	char	   *model;
	char	   *model_utf8;		/* as the request names it */
	char	   *system;			/* in UTF-8, as it is sent */
	char	   *schema;			/* NULL: any text is an answer */
	char	   *allow_spawn;	/* NULL: no spawning */
	char	   *temperature;
	int			max_tokens;
	int			max_corrections;
	/* this attempt so far */
	int			corrections;
	int			calls;
	int64		tokens_in;
	int64		tokens_out;
	double		cost_usd;
	int			nmessages;
	char	   *roles[MAX_MESSAGES];
	char	   *contents[MAX_MESSAGES];	/* in UTF-8, as they are sent */
	/* the request */
	char	   *url;
	char	   *secret;			/* the API key; zeroed when the call ends */
	char	   *auth_header;	/* holds the key too */
	long		timeout_ms;
	bool		send;			/* to be sent after the current transaction */
	TimestampTz held_until;		/* a correction held for its time under a rate limit; 0: none */
	VbHttpCall *http;			/* while in flight */
} LlmCall;

/* A claimed llm node, as the claim returned it. */
typedef struct VbClaimedLlm
{
	int64		task_id;
	pg_uuid_t	lease;
	pg_uuid_t	run_id;
	char	   *node;
	int			attempt;
	Jsonb	   *input;
	Jsonb	   *upstream;
	Jsonb	   *run_input;
} VbClaimedLlm;

/* What became of a finished call. */
typedef struct VbLlmOutcome
{
	const char *err_class;		/* NULL: the provider answered */
	char	   *message;
	int64		retry_after_ms;
	TimestampTz blocked_until;	/* the provider said no request remains until then; 0: no */
	VbLlmAnswer answer;
} VbLlmOutcome;

/* llm_request.c */
extern LlmCall *vb_llm_build_call(MemoryContext parent, VbClaimedLlm *claimed,
								  const char *master, char **problem);
extern void vb_llm_add_message(LlmCall *c, const char *role, const char *content);
extern char *vb_llm_request_body(LlmCall *c);

/* llm_cost.c */
extern double vb_llm_price_call(const char *provider, const char *model,
								int64 tokens_in, int64 tokens_out);
extern bool vb_llm_stop_if_over_budget(VbRun *run, LlmCall *c, size_t body_len,
									   TimestampTz at);
extern bool vb_llm_record_call(VbRun *run, LlmCall *c, VbHttpCall *h, VbLlmOutcome *o,
							   TimestampTz at);

/* llm_answer.c */
extern void vb_llm_classify(LlmCall *c, VbHttpCall *h, VbLlmOutcome *o);
extern char *vb_llm_check_spawn(LlmCall *c, const char *spawn_text);
extern char *vb_llm_answer_spawn(LlmCall *c, const char *json, char **spawn);
extern char *vb_llm_output_json(LlmCall *c, VbLlmOutcome *o, const char *json);
extern char *vb_llm_error_json(const char *err_class, const char *message, const char *extra);

#endif							/* VB_LLM_CALL_H */
