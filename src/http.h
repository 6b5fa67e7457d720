/*-------------------------------------------------------------------------
 *
 * http.h
 *	  libcurl's multi interface driven by the scheduler's waits (http.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef VB_HTTP_H
#define VB_HTTP_H

typedef struct VbHttpCall
{
	struct VbHttpCall *next;	/* in the done queue */
	void	   *owner;			/* the caller's */
	void	   *easy;			/* CURL *, NULL once finished */
	struct curl_slist *headers;
	struct curl_slist *resolve;	/* vectorbea.test_resolve for curl, or NULL */
	char	   *body;			/* the request's body, malloc'd; read by read_cb */
	size_t		body_len;
	size_t		body_sent;		/* how much of it curl has read */
	size_t		max_response;
	int			default_port;	/* of the URL's scheme, for the allow-list */
	/* results */
	int			result;			/* CURLcode */
	long		status;			/* HTTP status, 0 when none */
	int64		elapsed_ms;
	char	   *response;		/* malloc'd, NUL-terminated */
	size_t		response_len;
	size_t		response_cap;
	size_t		header_len;		/* bytes of response headers, all responses */
	bool		too_large;
	bool		connected;		/* a connection was made */
	bool		refused_address;
	char		refused_text[64];
	char		retry_after[64];
	char		requests_remaining[32];	/* x-ratelimit-remaining-requests, or Anthropic's */
	char		requests_reset[64];	/* when they reset: a duration (OpenAI) or a time */
	char		errbuf[256];	/* CURL_ERROR_SIZE */
} VbHttpCall;

extern void vb_http_init(void);
extern void vb_http_keep_header(const char *line, size_t n, const char *name, char *dst,
								size_t dstlen);
extern void vb_http_keep_headers(VbHttpCall *call, const char *line, size_t n);
extern void vb_http_apply_settings(void);
extern char *vb_http_check_url(const char *url);
extern char *vb_http_base_url_problem(const char *url);
extern VbHttpCall *vb_http_start(const char *url, int nheaders, const char *const *headers,
								 const char *body, long timeout_ms, long connect_timeout_ms,
								 size_t max_response, void *owner);
extern void vb_http_abort(VbHttpCall *call);
extern void vb_http_free(VbHttpCall *call);
extern bool vb_http_has_done(void);
extern VbHttpCall *vb_http_next_done(void);
extern bool vb_http_wait(long max_ms);

#endif							/* VB_HTTP_H */
