/*-------------------------------------------------------------------------
 *
 * allowlist.c
 *	  vectorbea.llm_allowed_hosts: where the scheduler may send LLM calls.
 *
 * The setting is a comma-separated list of entries, each a host name
 * ("api.openai.com"), a wildcard for the subdomains of a name
 * ("*.openai.azure.com"), an IP address, or an address range in CIDR form
 * ("10.0.0.0/8", "fd00::/8").
 *
 * A call is checked twice.  Before it starts, the host of its URL must
 * match a name entry or, when the host is an address, lie in an address
 * entry.  Then, when libcurl is about to connect, the address it actually
 * connects to is checked: it must lie in an address entry, or be a public
 * address.  A name entry therefore never reaches loopback, private,
 * link-local or other internal addresses, whatever its DNS says at the
 * moment of the call (DNS rebinding); internal endpoints such as a vLLM
 * server or the test suite's fake provider are allowed by address.
 *
 * IDENTIFICATION
 *	  src/allowlist.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "vectorbea.h"

#define MAX_ENTRIES		64
#define MAX_ENTRY_LEN	255

typedef struct AllowEntry
{
	bool		is_range;
	char		name[MAX_ENTRY_LEN + 1];	/* lower case; "*.x" for wildcards */
	int			family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int			prefix;			/* bits */
} AllowEntry;

typedef struct AllowList
{
	int			n;
	AllowEntry	entries[MAX_ENTRIES];
} AllowList;

static AllowList current;
static char *current_source = NULL;	/* the setting current was parsed from */

/* Parses "a.b.c.d", "v6", with an optional "/bits"; false if not an address. */
static bool
parse_range(const char *text, AllowEntry *e)
{
	char		buf[MAX_ENTRY_LEN + 1];
	char	   *slash;
	int			maxbits;

	strlcpy(buf, text, sizeof(buf));
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, e->addr) == 1)
	{
		e->family = AF_INET;
		maxbits = 32;
	}
	else if (inet_pton(AF_INET6, buf, e->addr) == 1)
	{
		e->family = AF_INET6;
		maxbits = 128;
	}
	else
		return false;
	e->prefix = maxbits;
	if (slash)
	{
		char	   *end;
		long		bits = strtol(slash + 1, &end, 10);

		if (*end != '\0' || slash[1] == '\0' || bits < 0 || bits > maxbits)
			return false;
		e->prefix = (int) bits;
	}
	e->is_range = true;
	return true;
}

static bool
valid_host_name(const char *s)
{
	if (*s == '\0' || strlen(s) > MAX_ENTRY_LEN)
		return false;
	for (; *s; s++)
		if (!(isalnum((unsigned char) *s) || *s == '-' || *s == '.'))
			return false;
	return true;
}

/*
 * Parses the setting into list; false with *problem when an entry is
 * neither a host name, a wildcard, nor an address range.
 */
static bool
parse_list(const char *value, AllowList *list, char **problem)
{
	const char *p = value ? value : "";

	list->n = 0;
	while (*p)
	{
		const char *start;
		size_t		len;
		char		entry[MAX_ENTRY_LEN + 1];
		AllowEntry *e;

		while (*p == ',' || isspace((unsigned char) *p))
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p && *p != ',' && !isspace((unsigned char) *p))
			p++;
		len = p - start;
		if (len > MAX_ENTRY_LEN)
		{
			*problem = psprintf("entry \"%.40s…\" is longer than %d characters", start, MAX_ENTRY_LEN);
			return false;
		}
		if (list->n >= MAX_ENTRIES)
		{
			*problem = psprintf("more than %d entries", MAX_ENTRIES);
			return false;
		}
		memcpy(entry, start, len);
		entry[len] = '\0';
		e = &list->entries[list->n];
		memset(e, 0, sizeof(*e));
		if (!parse_range(entry, e))
		{
			const char *name = strncmp(entry, "*.", 2) == 0 ? entry + 2 : entry;

			if (!valid_host_name(name) || strchr(entry, '/'))
			{
				*problem = psprintf("entry \"%s\" is not a host name, \"*.domain\", an IP address or a CIDR range",
									entry);
				return false;
			}
			for (size_t i = 0; i < len; i++)
				e->name[i] = pg_ascii_tolower((unsigned char) entry[i]);
			e->name[len] = '\0';
		}
		list->n++;
	}
	return true;
}

/* GUC check: the setting must parse. */
bool
vb_allowlist_valid(const char *value, char **problem)
{
	AllowList	scratch;

	return parse_list(value, &scratch, problem);
}

static AllowList *
allowlist(void)
{
	char	   *problem;

	if (current_source == NULL || strcmp(current_source, vb_llm_allowed_hosts) != 0)
	{
		if (!parse_list(vb_llm_allowed_hosts, &current, &problem))
			current.n = 0;		/* the check hook makes this unreachable */
		if (current_source)
			free(current_source);
		current_source = strdup(vb_llm_allowed_hosts);
	}
	return &current;
}

static bool
in_range(const AllowEntry *e, int family, const unsigned char *addr)
{
	int			full = e->prefix / 8;
	int			rest = e->prefix % 8;

	if (e->family != family)
		return false;
	if (memcmp(e->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((e->addr[full] ^ addr[full]) & (0xff << (8 - rest))) == 0;
}

static bool
v4_public(const unsigned char *a)
{
	if (a[0] == 0 || a[0] == 10 || a[0] == 127 || a[0] >= 224)
		return false;			/* this network, private, loopback, multicast, reserved */
	if (a[0] == 100 && (a[1] & 0xc0) == 64)
		return false;			/* shared address space (carrier NAT) */
	if (a[0] == 169 && a[1] == 254)
		return false;			/* link-local, cloud metadata services */
	if (a[0] == 172 && (a[1] & 0xf0) == 16)
		return false;
	if (a[0] == 192 && a[1] == 168)
		return false;
	if (a[0] == 192 && a[1] == 0 && a[2] == 0)
		return false;			/* IETF protocol assignments */
	if (a[0] == 198 && (a[1] & 0xfe) == 18)
		return false;			/* benchmarking */
	return true;
}

static bool
v6_public(const unsigned char *a)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	bool		all_zero_but_last = true;

	if (memcmp(a, mapped, 12) == 0)
		return v4_public(a + 12);
	for (int i = 0; i < 15; i++)
		if (a[i] != 0)
			all_zero_but_last = false;
	if (all_zero_but_last)
		return false;			/* :: and ::1 */
	if ((a[0] & 0xfe) == 0xfc)
		return false;			/* unique local */
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
		return false;			/* link-local */
	if (a[0] == 0xff)
		return false;			/* multicast */
	return true;
}

/*
 * Whether a call to host (a name or an address literal, as in the URL) may
 * start.  Names must match a name entry; addresses must be in a range.
 */
bool
vb_allowlist_host_allowed(const char *host)
{
	AllowList  *list = allowlist();
	AllowEntry	literal;
	char		lower[MAX_ENTRY_LEN + 1];
	size_t		len = strlen(host);

	memset(&literal, 0, sizeof(literal));
	if (parse_range(host, &literal) && !strchr(host, '/'))
	{
		for (int i = 0; i < list->n; i++)
			if (list->entries[i].is_range &&
				in_range(&list->entries[i], literal.family, literal.addr))
				return true;
		return false;
	}
	if (len > MAX_ENTRY_LEN)
		return false;
	for (size_t i = 0; i <= len; i++)
		lower[i] = pg_ascii_tolower((unsigned char) host[i]);
	if (len > 0 && lower[len - 1] == '.')
		lower[--len] = '\0';	/* a fully qualified name's final dot */
	for (int i = 0; i < list->n; i++)
	{
		const char *name = list->entries[i].name;

		if (list->entries[i].is_range)
			continue;
		if (strcmp(name, lower) == 0)
			return true;
		if (strncmp(name, "*.", 2) == 0)
		{
			size_t		sl = strlen(name + 1);	/* ".domain" */

			if (len > sl && strcmp(lower + len - sl, name + 1) == 0)
				return true;
		}
	}
	return false;
}

/*
 * Whether the scheduler may connect to this address (called by libcurl
 * just before it connects): inside an address entry, or public.
 */
bool
vb_allowlist_address_allowed(const struct sockaddr *sa)
{
	AllowList  *list = allowlist();
	const unsigned char *addr;
	int			family = sa->sa_family;

	if (family == AF_INET)
		addr = (const unsigned char *) &((const struct sockaddr_in *) sa)->sin_addr;
	else if (family == AF_INET6)
		addr = (const unsigned char *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
	else
		return false;
	for (int i = 0; i < list->n; i++)
		if (list->entries[i].is_range && in_range(&list->entries[i], family, addr))
			return true;
	return family == AF_INET ? v4_public(addr) : v6_public(addr);
}
