/*-------------------------------------------------------------------------
 *
 * resolve.c
 *	  vectorbea.test_resolve: host names pinned to addresses, for tests.
 *
 * The allow-list promises that a name entry never reaches an internal
 * address, whatever the name resolves to at the moment of the call.  A
 * test of that promise needs names that resolve to loopback aliases,
 * 0.0.0.0, IPv4-mapped IPv6, link-local and metadata addresses, and a
 * test cannot edit /etc/hosts or run the machine's DNS.  This setting is
 * its resolver: entries "name:port:address" (an IPv6 address in
 * brackets), as curl's --resolve takes them, handed to libcurl for every
 * call (http.c), so that a call to name at port connects to address.
 *
 * It cannot widen what the scheduler may reach: the address is checked
 * at connect time like any address DNS returns (allowlist.c), and a
 * name's own entry is still required before the call.  It is set in the
 * configuration files only (PGC_SIGHUP), like the allow-list.
 *
 * IDENTIFICATION
 *	  src/resolve.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>

#include "resolve.h"

#define MAX_RESOLVE_ENTRIES	64
#define MAX_RESOLVE_ENTRY	300

char	   *vb_test_resolve = NULL;

static bool
valid_name(const char *s, size_t len)
{
	if (len == 0 || len > 253)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!(isalnum((unsigned char) s[i]) || s[i] == '-' || s[i] == '.'))
			return false;
	return true;
}

/*
 * Parses one entry into curl's form ("name:port:address", the name in
 * lower case) and its key ("name:port"); false with *problem if it is not
 * "name:port:address".
 */
static bool
parse_entry(const char *entry, char *line, size_t linesize, char *key, size_t keysize,
			char **problem)
{
	const char *c1 = strchr(entry, ':');
	const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
	char		addr[INET6_ADDRSTRLEN + 2];
	unsigned char bin[16];
	char	   *end;
	long		port;
	size_t		namelen;
	size_t		addrlen;

	if (c1 == NULL || c2 == NULL)
	{
		*problem = psprintf("entry \"%s\" is not \"name:port:address\"", entry);
		return false;
	}
	namelen = c1 - entry;
	if (!valid_name(entry, namelen))
	{
		*problem = psprintf("entry \"%s\" does not start with a host name", entry);
		return false;
	}
	port = strtol(c1 + 1, &end, 10);
	if (end != c2 || !isdigit((unsigned char) c1[1]) || port < 1 || port > 65535)
	{
		*problem = psprintf("entry \"%s\" has no port from 1 to 65535", entry);
		return false;
	}
	addrlen = strlen(c2 + 1);
	if (addrlen >= sizeof(addr))
	{
		*problem = psprintf("entry \"%s\" has no IPv4 address or [IPv6] address", entry);
		return false;
	}
	if (c2[1] == '[' && addrlen > 2 && c2[addrlen] == ']')
	{
		memcpy(addr, c2 + 2, addrlen - 2);
		addr[addrlen - 2] = '\0';
		if (inet_pton(AF_INET6, addr, bin) != 1)
			addrlen = 0;
	}
	else if (inet_pton(AF_INET, c2 + 1, bin) != 1)
		addrlen = 0;
	if (addrlen == 0)
	{
		*problem = psprintf("entry \"%s\" has no IPv4 address or [IPv6] address", entry);
		return false;
	}
	snprintf(key, keysize, "%.*s:%ld", (int) namelen, entry, port);
	for (char *k = key; *k; k++)
		*k = pg_ascii_tolower((unsigned char) *k);
	snprintf(line, linesize, "%s:%s", key, c2 + 1);
	return true;
}

/*
 * Calls fn for each entry of value, with curl's line and the entry's key;
 * false with *problem at the first entry that does not parse, or when a
 * name and port come twice.
 */
static bool
walk(const char *value, void (*fn) (const char *line, const char *key, void *arg), void *arg,
	 char **problem)
{
	const char *p = value ? value : "";
	char		keys[MAX_RESOLVE_ENTRIES][MAX_RESOLVE_ENTRY];
	int			n = 0;

	while (*p)
	{
		const char *start;
		size_t		len;
		char		entry[MAX_RESOLVE_ENTRY];
		char		line[MAX_RESOLVE_ENTRY + 8];

		while (*p == ',' || isspace((unsigned char) *p))
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p && *p != ',' && !isspace((unsigned char) *p))
			p++;
		len = p - start;
		if (len >= sizeof(entry))
		{
			*problem = psprintf("entry \"%.40s…\" is too long", start);
			return false;
		}
		if (n >= MAX_RESOLVE_ENTRIES)
		{
			*problem = psprintf("more than %d entries", MAX_RESOLVE_ENTRIES);
			return false;
		}
		memcpy(entry, start, len);
		entry[len] = '\0';
		if (!parse_entry(entry, line, sizeof(line), keys[n], sizeof(keys[n]), problem))
			return false;
		for (int i = 0; i < n; i++)
			if (strcmp(keys[i], keys[n]) == 0)
			{
				*problem = psprintf("\"%s\" is listed twice", keys[n]);
				return false;
			}
		if (fn)
			fn(line, keys[n], arg);
		n++;
	}
	return true;
}

/* GUC check hook: the setting must parse. */
bool
vb_check_test_resolve(char **newval, void **extra, GucSource source)
{
	char	   *problem;

	if (walk(*newval, NULL, NULL, &problem))
		return true;
	GUC_check_errdetail("%s.", problem);
	GUC_check_errhint("List entries \"name:port:address\" separated by commas, an IPv6 address in brackets: 'model.test:8000:127.0.0.1, v6.test:8000:[::1]'.");
	return false;
}

static void
collect(const char *line, const char *key, void *arg)
{
	List	  **lines = arg;

	*lines = lappend(*lines, pstrdup(line));
}

/*
 * The setting as curl's resolve lines ("name:port:address"), palloc'd, in
 * the order written; NIL when it is empty.
 */
List *
vb_test_resolve_lines(void)
{
	List	   *lines = NIL;
	char	   *problem;

	if (!walk(vb_test_resolve, collect, &lines, &problem))
		return NIL;				/* the check hook makes this unreachable */
	return lines;
}
