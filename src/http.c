/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The scheduler's outbound HTTP: libcurl's multi interface driven from
 *	  PostgreSQL's WaitEventSet.
 *
 * Many calls are in flight at once and none blocks the scheduler: curl
 * tells us which sockets it wants watched (socket callback) and when it
 * wants to be called back (timer callback); vb_http_wait() waits on those
 * sockets, the process latch and postmaster death together, and hands the
 * ready sockets back to curl.  Finished calls queue up for the caller.
 * The caller never has a transaction open while it waits here.
 *
 * Outbound safety is enforced for every call: http and https only, no
 * redirects, no proxy from the environment, connect and total timeouts, a
 * cap on the response size, the allow-list checked on the address curl is
 * about to connect to (allowlist.c), and no verbose output.  The names
 * pinned by vectorbea.test_resolve (resolve.c) go to curl's resolver
 * cache; what they resolve to is checked like any address.  Header values
 * are checked for CR and LF by whoever builds them (llm.c).
 *
 * Callbacks run inside curl, so they never raise PostgreSQL errors or use
 * palloc: buffers are malloc'd and failures are recorded on the call.
 *
 * IDENTIFICATION
 *	  src/http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "vectorbea.h"
#include "allowlist.h"
#include "http.h"
#include "jsonb_util.h"
#include "resolve.h"
#include "settings.h"

#define MAX_SOCKETS		1024

typedef struct WatchedSocket
{
	curl_socket_t sock;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
} WatchedSocket;

static CURLM *multi = NULL;
static WatchedSocket sockets[MAX_SOCKETS];
static int	nsockets = 0;
static TimestampTz timer_due = 0;	/* 0: curl wants no timer call */
static VbHttpCall *done_head = NULL;
static VbHttpCall *done_tail = NULL;
static int	in_flight = 0;
static int	applied_bound = 0;	/* vectorbea.llm_max_in_flight as curl knows it */

/*
 * The allow-list and the pinned names that the cached connections were
 * opened under (malloc'd).  opensocket_cb checks an address only when curl
 * opens a connection, so after a reload changes either, no call may reuse
 * a connection of the old settings: calls connect afresh until the multi
 * handle, with its cache, can be replaced.
 */
static char *opened_under_allowlist = NULL;
static char *opened_under_resolve = NULL;
static bool cache_predates_settings = false;

static void apply_limits(void);

static int
socket_cb(CURL *easy, curl_socket_t sock, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < nsockets; i++)
		if (sockets[i].sock == sock)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsockets)
			sockets[i] = sockets[--nsockets];
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets >= MAX_SOCKETS)
			return -1;			/* curl fails the transfer */
		sockets[nsockets++].sock = sock;
	}
	sockets[i].what = what;
	return 0;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		timer_due = 0;
	else
		timer_due = GetCurrentTimestamp() + (TimestampTz) timeout_ms * 1000;
	return 0;
}

static size_t
write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	VbHttpCall *call = userp;
	size_t		n = size * nmemb;

	if (call->response_len + n > call->max_response)
	{
		call->too_large = true;
		return 0;				/* curl ends the transfer: CURLE_WRITE_ERROR */
	}
	if (call->response_len + n + 1 > call->response_cap)
	{
		size_t		cap = Max(call->response_cap * 2, call->response_len + n + 1);
		char	   *grown = realloc(call->response, Max(cap, 4096));

		if (grown == NULL)
			return 0;
		call->response = grown;
		call->response_cap = Max(cap, 4096);
	}
	memcpy(call->response + call->response_len, data, n);
	call->response_len += n;
	call->response[call->response_len] = '\0';
	return n;
}

/*
 * Hands curl the request's body.  There is deliberately no seek callback:
 * curl sends a request again on a new connection when a reused one turns
 * out dead after the request went out, and such a request may have been
 * received (an llm call charged twice, one recorded).  To send again curl
 * must rewind the body, which it cannot without one: the call fails with
 * CURLE_SEND_FAIL_REWIND instead, visibly, and the engine's retry policy
 * decides.  A request refused before any byte went out needs no rewind.
 */
static size_t
read_cb(char *buffer, size_t size, size_t nitems, void *userp)
{
	VbHttpCall *call = userp;
	size_t		n = Min(size * nitems, call->body_len - call->body_sent);

	memcpy(buffer, call->body + call->body_sent, n);
	call->body_sent += n;
	return n;
}

/*
 * Copies the value of header line (n bytes, as libcurl hands it over) into
 * dst if the line is header name ("retry-after:").
 */
void
vb_http_keep_header(const char *line, size_t n, const char *name, char *dst, size_t dstlen)
{
	size_t		namelen = strlen(name);
	size_t		start = namelen;
	size_t		len;

	if (n <= namelen || pg_strncasecmp(line, name, namelen) != 0)
		return;
	while (start < n && (line[start] == ' ' || line[start] == '\t'))
		start++;
	len = n - start;
	while (len > 0 && (line[start + len - 1] == '\r' || line[start + len - 1] == '\n' ||
					   line[start + len - 1] == ' '))
		len--;
	if (len >= dstlen)
		len = dstlen - 1;
	memcpy(dst, line + start, len);
	dst[len] = '\0';
}

/*
 * Keeps Retry-After and the providers' remaining-requests headers of one
 * header line; no other.  The fuzz target of the answer parser feeds its
 * headers through this too.
 */
void
vb_http_keep_headers(VbHttpCall *call, const char *line, size_t n)
{
	vb_http_keep_header(line, n, "retry-after:", call->retry_after, sizeof(call->retry_after));
	vb_http_keep_header(line, n, "x-ratelimit-remaining-requests:", call->requests_remaining,
						sizeof(call->requests_remaining));
	vb_http_keep_header(line, n, "anthropic-ratelimit-requests-remaining:", call->requests_remaining,
						sizeof(call->requests_remaining));
	vb_http_keep_header(line, n, "x-ratelimit-reset-requests:", call->requests_reset,
						sizeof(call->requests_reset));
	vb_http_keep_header(line, n, "anthropic-ratelimit-requests-reset:", call->requests_reset,
						sizeof(call->requests_reset));
}

static size_t
header_cb(char *line, size_t size, size_t nitems, void *userp)
{
	VbHttpCall *call = userp;
	size_t		n = size * nitems;

	/* The headers are held to the cap as the body is, on their own. */
	call->header_len += n;
	if (call->header_len > call->max_response)
	{
		call->too_large = true;
		return 0;				/* curl ends the transfer: CURLE_WRITE_ERROR */
	}
	vb_http_keep_headers(call, line, n);
	return n;
}

/* Checks the address curl is about to connect to against the allow-list. */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	VbHttpCall *call = clientp;

	if (purpose != CURLSOCKTYPE_IPCXN ||
		!vb_allowlist_address_allowed(&address->addr, call->default_port))
	{
		char		text[64] = "?";

		if (address->family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *) &address->addr)->sin_addr,
					  text, sizeof(text));
		else if (address->family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *) &address->addr)->sin6_addr,
					  text, sizeof(text));
		call->refused_address = true;
		strlcpy(call->refused_text, text, sizeof(call->refused_text));
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

static void
create_multi(void)
{
	multi = curl_multi_init();
	if (multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl multi handle")));
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	applied_bound = 0;
}

void
vb_http_init(void)
{
	if (multi)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not initialise libcurl")));
	create_multi();
}

/* A part of a parsed URL, copied into palloc'd memory; NULL when absent. */
static char *
url_part(CURLU *u, CURLUPart which, unsigned int flags)
{
	char	   *part = NULL;
	char	   *copy;

	if (curl_url_get(u, which, &part, flags) != CURLUE_OK || part == NULL)
		return NULL;
	copy = pstrdup(part);
	curl_free(part);
	return copy;
}

/*
 * Checks a URL before a call to it is made: NULL when it may be called,
 * else why not.  The address connected to is checked again later.
 */
char *
vb_http_check_url(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *scheme;
	char	   *host;
	char	   *port;
	char	   *problem = NULL;

	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory checking a URL")));
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		(scheme = url_part(u, CURLUPART_SCHEME, 0)) == NULL ||
		(host = url_part(u, CURLUPART_HOST, 0)) == NULL ||
		(port = url_part(u, CURLUPART_PORT, CURLU_DEFAULT_PORT)) == NULL)
		problem = strchr(url, '@') ? pstrdup("the base_url is not a valid URL") :
			psprintf("\"%s\" is not a valid URL", vb_short_text(url));
	else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
		problem = psprintf("the URL scheme \"%s\" is not allowed; use http or https",
						   vb_short_text(scheme));
	else
	{
		char	   *bare = host;
		size_t		len = strlen(host);
		int			default_port = strcmp(scheme, "https") == 0 ? 443 : 80;

		/* An IPv6 literal comes back bracketed. */
		if (len > 2 && host[0] == '[' && host[len - 1] == ']')
			bare = pnstrdup(host + 1, len - 2);

		if (!vb_allowlist_host_allowed(bare, -1, default_port))
			problem = psprintf("the host \"%s\" is not in vectorbea.llm_allowed_hosts", bare);
		else if (!vb_allowlist_host_allowed(bare, atoi(port), default_port))
			problem = psprintf("port %s of host \"%s\" is not allowed by vectorbea.llm_allowed_hosts (an entry without a port allows port %d only)",
							   port, bare, default_port);
	}
	curl_url_cleanup(u);
	return problem;
}

/*
 * Why url cannot be a provider's base_url, or NULL when it can: http or
 * https, a host, a port from 1 to 65535 if one is given, and nothing else
 * in the authority or after the path.  Credentials in the URL would be
 * stored and shown in the clear (provider_key_info), a query or fragment
 * would be glued to every endpoint path.  The allow-list is not consulted
 * here: it is checked on every call, against the setting in force then.
 */
char *
vb_http_base_url_problem(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *problem = NULL;
	char	   *scheme;
	char	   *host;
	char	   *port;
	CURLUcode	rc;
	const char *authority = strstr(url, "://");
	size_t		authority_len;

	if (u == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory checking a URL")));
	/* libcurl would also read user:password@ from the authority: refuse it first. */
	authority = authority ? authority + 3 : url;
	authority_len = strcspn(authority, "/?#");
	if (authority_len == 0)
		problem = pstrdup("it has no host");
	else if (memchr(authority, '@', authority_len) != NULL)
		problem = pstrdup("it carries a user name or password; a provider's credential belongs in api_key, never in the URL");
	else if ((rc = curl_url_set(u, CURLUPART_URL, url, 0)) != CURLUE_OK)
		problem = psprintf("it is not a valid URL (%s)", curl_url_strerror(rc));
	else if ((scheme = url_part(u, CURLUPART_SCHEME, 0)) == NULL ||
			 (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0))
		problem = psprintf("the scheme \"%s\" is not allowed; use http or https",
						   scheme ? scheme : "");
	else if ((host = url_part(u, CURLUPART_HOST, 0)) == NULL || host[0] == '\0')
		problem = pstrdup("it has no host");
	else if (url_part(u, CURLUPART_QUERY, 0) != NULL)
		problem = pstrdup("it has a query string (\"?...\"); give the endpoint's base path only");
	else if (url_part(u, CURLUPART_FRAGMENT, 0) != NULL)
		problem = pstrdup("it has a fragment (\"#...\"); give the endpoint's base path only");
	else if ((port = url_part(u, CURLUPART_PORT, 0)) != NULL &&
			 (atoi(port) < 1 || atoi(port) > 65535))
		problem = psprintf("port %s is not a port from 1 to 65535", port);
	curl_url_cleanup(u);
	return problem;
}

/*
 * Never more connections than calls allowed in flight, cached ones
 * included.  curl closes no open connection when its limits go down, so
 * after a reload lowers vectorbea.llm_max_in_flight the multi handle, with
 * its cache, is replaced as soon as no call is in flight; so it is after a
 * reload that changes the allow-list or the pinned names.  The scheduler
 * calls this after every reload.
 */
void
vb_http_apply_settings(void)
{
	if (multi != NULL)
		apply_limits();
}

/* Whether the setting's value differs from *seen; if so, *seen becomes it. */
static bool
setting_changed(char **seen, const char *value)
{
	const char *now = value ? value : "";

	if (*seen != NULL && strcmp(*seen, now) == 0)
		return false;
	free(*seen);
	*seen = strdup(now);
	if (*seen == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory noting the settings of the LLM connections")));
	return true;
}

static void
apply_limits(void)
{
	bool		first = opened_under_allowlist == NULL;
	bool		new_allowlist = setting_changed(&opened_under_allowlist, vb_llm_allowed_hosts);
	bool		new_resolve = setting_changed(&opened_under_resolve, vb_test_resolve);
	bool		lowered;

	if ((new_allowlist || new_resolve) && !first)
		cache_predates_settings = true;
	lowered = applied_bound > vb_llm_max_in_flight;
	if ((lowered || cache_predates_settings) && in_flight == 0)
	{
		curl_multi_cleanup(multi);
		nsockets = 0;
		timer_due = 0;
		create_multi();
		cache_predates_settings = false;
	}
	else if (lowered)
		return;
	if (applied_bound == vb_llm_max_in_flight)
		return;
	curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long) vb_llm_max_in_flight);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) vb_llm_max_in_flight);
	applied_bound = vb_llm_max_in_flight;
}

/*
 * The names vectorbea.test_resolve has ever pinned ("name:port"),
 * malloc'd.  curl keeps a pinned address in the multi handle's cache for
 * good, so a name taken out of the setting is unpinned ("-name:port").
 */
static char **pinned = NULL;
static int	npinned = 0;

static bool
is_line_of(const char *line, const char *key)
{
	size_t		len = strlen(key);

	return strncmp(line, key, len) == 0 && line[len] == ':';
}

/* curl's CURLOPT_RESOLVE list for a call, or NULL when nothing is pinned. */
static struct curl_slist *
resolve_list(void)
{
	List	   *lines = vb_test_resolve_lines();
	struct curl_slist *list = NULL;
	ListCell   *lc;

	foreach(lc, lines)
	{
		char	   *line = lfirst(lc);
		size_t		keylen = strchr(strchr(line, ':') + 1, ':') - line;
		bool		known = false;

		list = curl_slist_append(list, line);
		for (int i = 0; i < npinned && !known; i++)
			known = strlen(pinned[i]) == keylen && strncmp(pinned[i], line, keylen) == 0;
		if (!known)
		{
			char	  **grown = realloc(pinned, (npinned + 1) * sizeof(char *));
			char	   *key = strndup(line, keylen);

			if (grown == NULL || key == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory pinning a name of vectorbea.test_resolve")));
			pinned = grown;
			pinned[npinned++] = key;
		}
	}
	for (int i = 0; i < npinned; i++)
	{
		bool		listed = false;

		foreach(lc, lines)
			listed = listed || is_line_of(lfirst(lc), pinned[i]);
		if (!listed)
			list = curl_slist_append(list, psprintf("-%s", pinned[i]));
	}
	return list;
}

static void
queue_done(VbHttpCall *call)
{
	call->next = NULL;
	if (done_tail)
		done_tail->next = call;
	else
		done_head = call;
	done_tail = call;
}

/*
 * Starts a POST of body to url with the given header lines.  The call is
 * returned at once; it finishes later through vb_http_next_done().  A call
 * curl refuses to start (a malformed URL) is finished at once with its
 * error.
 */
VbHttpCall *
vb_http_start(const char *url, int nheaders, const char *const *headers,
			  const char *body, long timeout_ms, long connect_timeout_ms,
			  size_t max_response, void *owner)
{
	VbHttpCall *call = calloc(1, sizeof(VbHttpCall));
	CURL	   *easy;
	CURLMcode	mc;

	if (call != NULL)
	{
		call->body_len = strlen(body);
		call->body = malloc(call->body_len + 1);
		if (call->body)
			memcpy(call->body, body, call->body_len + 1);
	}
	if (call == NULL || call->body == NULL || (easy = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory starting an HTTP call")));
	apply_limits();
	call->easy = easy;
	call->owner = owner;
	call->max_response = max_response;
	call->default_port = pg_strncasecmp(url, "https:", 6) == 0 ? 443 : 80;
	for (int i = 0; i < nheaders; i++)
		call->headers = curl_slist_append(call->headers, headers[i]);
	/* No "Expect: 100-continue" round trip before larger bodies. */
	call->headers = curl_slist_append(call->headers, "Expect:");
	call->headers = curl_slist_append(call->headers, "Content-Type: application/json");
	call->resolve = resolve_list();

	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_VERBOSE, 0L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) max_response);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, call->headers);
	if (call->resolve)
		curl_easy_setopt(easy, CURLOPT_RESOLVE, call->resolve);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) call->body_len);
	curl_easy_setopt(easy, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(easy, CURLOPT_READDATA, call);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "vectorbea/" VB_VERSION);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, call);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, call);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, call);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, call->errbuf);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, call);
	/* No connection opened under the settings before the last reload. */
	if (cache_predates_settings)
		curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, 1L);

	mc = curl_multi_add_handle(multi, easy);
	if (mc != CURLM_OK)
	{
		call->result = CURLE_FAILED_INIT;
		strlcpy(call->errbuf, curl_multi_strerror(mc), sizeof(call->errbuf));
		/* Finished, never in flight: as collect_finished leaves a call. */
		curl_easy_cleanup(easy);
		call->easy = NULL;
		queue_done(call);
		return call;
	}
	in_flight++;
	return call;
}

static void
release(VbHttpCall *call)
{
	if (call->easy)
		curl_easy_cleanup(call->easy);
	/* Header lines carry the API key: zero curl's copies before freeing. */
	for (struct curl_slist *h = call->headers; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(call->headers);
	curl_slist_free_all(call->resolve);
	if (call->body)
	{
		/* The body carries the prompt. */
		explicit_bzero(call->body, call->body_len);
		free(call->body);
	}
	if (call->response)
	{
		/* Answers may quote prompts; leave nothing behind in freed memory. */
		explicit_bzero(call->response, call->response_len);
		free(call->response);
	}
	free(call);
}

/*
 * Drops a call (its run was cancelled, its lease lost): in flight, or
 * finished and waiting in the done queue for a step that did not come.
 */
void
vb_http_abort(VbHttpCall *call)
{
	if (call->easy)
	{
		curl_multi_remove_handle(multi, call->easy);
		in_flight--;
	}
	else
	{
		VbHttpCall *prev = NULL;

		for (VbHttpCall *q = done_head; q; prev = q, q = q->next)
			if (q == call)
			{
				if (prev)
					prev->next = q->next;
				else
					done_head = q->next;
				if (done_tail == q)
					done_tail = prev;
				break;
			}
	}
	release(call);
}

void
vb_http_free(VbHttpCall *call)
{
	release(call);
}

/* Moves the transfers curl has finished to the done queue. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		VbHttpCall *call;
		curl_off_t	total_us = 0;
		curl_off_t	pretransfer_us = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &call);
		call->result = msg->data.result;
		/*
		 * A Content-Length over the cap ends the call before any byte; so
		 * do headers over curl's own bound (300 kB in all), below a larger
		 * cap.
		 */
		if (call->result == CURLE_FILESIZE_EXCEEDED ||
			(call->result == CURLE_RECV_ERROR &&
			 strncmp(call->errbuf, "Too large response headers", 27) == 0))
			call->too_large = true;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &call->status);
		curl_easy_getinfo(msg->easy_handle, CURLINFO_TOTAL_TIME_T, &total_us);
		/* Set once the request could be sent: on a reused connection too. */
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRETRANSFER_TIME_T, &pretransfer_us);
		call->connected = pretransfer_us > 0;
		call->elapsed_ms = (int64) (total_us / 1000);
		if (call->errbuf[0] == '\0')
			strlcpy(call->errbuf, curl_easy_strerror(call->result), sizeof(call->errbuf));
		curl_multi_remove_handle(multi, msg->easy_handle);
		curl_easy_cleanup(msg->easy_handle);
		call->easy = NULL;
		in_flight--;
		queue_done(call);
	}
}

bool
vb_http_has_done(void)
{
	return done_head != NULL;
}

/* The next finished call, or NULL; the caller frees it with vb_http_free. */
VbHttpCall *
vb_http_next_done(void)
{
	VbHttpCall *call = done_head;

	if (call)
	{
		done_head = call->next;
		if (done_head == NULL)
			done_tail = NULL;
	}
	return call;
}

/*
 * Waits up to max_ms for the latch, postmaster death (which ends the
 * process) or curl's sockets and timer, and lets curl do what is due.
 * Returns true when the latch was set.
 */
bool
vb_http_wait(long max_ms)
{
	WaitEventSet *set;
	WaitEvent	events[MAX_SOCKETS + 2];
	int			n;
	long		timeout = max_ms;
	bool		latch = false;
	bool		timer_fired = false;
	int			running;

	apply_limits();
	if (done_head != NULL)
		timeout = 0;			/* a call finished at start: no waiting */
	if (timer_due != 0)
	{
		long		until_timer = (long) ((timer_due - GetCurrentTimestamp()) / 1000);

		if (until_timer < timeout)
			timeout = Max(until_timer, 0);
	}
	set = CreateWaitEventSet(CurrentMemoryContext, nsockets + 2);
	AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsockets; i++)
	{
		uint32		ev = 0;

		if (sockets[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (sockets[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		if (ev)
			AddWaitEventToSet(set, ev, sockets[i].sock, NULL, NULL);
	}
	n = WaitEventSetWait(set, timeout, events, lengthof(events), PG_WAIT_EXTENSION);
	FreeWaitEventSet(set);

	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			latch = true;
		}
		else if (events[i].events & (WL_SOCKET_READABLE | WL_SOCKET_WRITEABLE))
		{
			int			mask = 0;

			if (events[i].events & WL_SOCKET_READABLE)
				mask |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				mask |= CURL_CSELECT_OUT;
			curl_multi_socket_action(multi, events[i].fd, mask, &running);
		}
	}
	if (timer_due != 0 && GetCurrentTimestamp() >= timer_due)
	{
		timer_due = 0;
		timer_fired = true;
	}
	if (timer_fired)
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	collect_finished();
	return latch;
}
