/*-------------------------------------------------------------------------
 *
 * allowlist.c
 *	  vectorbea.llm_allowed_hosts: where the scheduler may send LLM calls.
 *
 * The setting is a comma-separated list of entries, each a host name
 * ("api.openai.com"), a wildcard for the subdomains of a name
 * ("*.openai.azure.com"), an IP address, or an address range in CIDR form
 * ("10.0.0.0/8", "fd00::/8"), each with an optional port or port range
 * after a colon ("127.0.0.1:11434", "10.0.0.0/8:8000-8099"; an IPv6
 * address with a port in brackets: "[fd00::1]:8000").  An entry without a
 * port allows only the default port of the call's scheme (443 for https,
 * 80 for http): allowing 127.0.0.1 for a local model must not let a call
 * POST to the database's own port on the same address.
 *
 * A call is checked twice.  Before it starts, the host of its URL must
 * match a name entry or, when the host is an address, lie in an address
 * entry.  Then, when libcurl is about to connect, the address it actually
 * connects to is checked: it must lie in an address entry, or be a public
 * address.  A name entry therefore never reaches loopback, private,
 * link-local or other internal addresses, whatever its DNS says at the
 * moment of the call (DNS rebinding); internal endpoints such as a vLLM
 * server or the test suite's fake provider are allowed by address.  IPv6
 * addresses that carry an IPv4 address (mapped, IPv4-compatible,
 * IPv4-translated, NAT64, 6to4, Teredo) are judged by the IPv4 address
 * they reach.  An address of this machine is never public, whatever its
 * range: a public address of the database host would otherwise let a name
 * entry reach the host's own services.
 *
 * IDENTIFICATION
 *	  src/allowlist.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/inet.h"

#include "allowlist.h"

#define MAX_ENTRIES		64
#define MAX_ENTRY_LEN	255

typedef struct AllowEntry
{
	bool		is_range;
	char		name[MAX_ENTRY_LEN + 1];	/* lower case; "*.x" for wildcards */
	int			family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];
	int			prefix;			/* bits */
	int			port_lo;		/* 0: the default port of the call's scheme */
	int			port_hi;
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

/* Parses "N" or "N-M" (1 to 65535, N <= M) into e; false if not that. */
static bool
parse_ports(const char *text, AllowEntry *e)
{
	char	   *end;
	long		lo;
	long		hi;

	if (!isdigit((unsigned char) text[0]))
		return false;
	lo = strtol(text, &end, 10);
	hi = lo;
	if (*end == '-')
	{
		if (!isdigit((unsigned char) end[1]))
			return false;
		hi = strtol(end + 1, &end, 10);
	}
	if (*end != '\0' || lo < 1 || hi > 65535 || lo > hi)
		return false;
	e->port_lo = (int) lo;
	e->port_hi = (int) hi;
	return true;
}

/*
 * Splits "host:ports", "[v6]:ports" or a bare entry into the part before
 * the port (copied to host) and e's ports; false when the port is invalid.
 * An unbracketed entry with more than one colon is an IPv6 address
 * without a port.
 */
static bool
split_port(const char *entry, char *host, size_t hostsize, AllowEntry *e, char **problem)
{
	const char *colon = NULL;

	if (entry[0] == '[')
	{
		const char *close = strchr(entry, ']');

		if (close == NULL || (close[1] != '\0' && close[1] != ':'))
		{
			*problem = psprintf("entry \"%s\" has an unclosed \"[\"", entry);
			return false;
		}
		strlcpy(host, entry + 1, Min(hostsize, (size_t) (close - entry)));
		colon = close[1] == ':' ? close + 1 : NULL;
	}
	else
	{
		colon = strchr(entry, ':');
		if (colon && strchr(colon + 1, ':'))
			colon = NULL;		/* bare IPv6 */
		strlcpy(host, entry, colon ? Min(hostsize, (size_t) (colon - entry + 1)) : hostsize);
	}
	if (colon && !parse_ports(colon + 1, e))
	{
		*problem = psprintf("entry \"%s\" has an invalid port \"%s\"; give a port from 1 to 65535 or a range such as 8000-8099",
							entry, colon + 1);
		return false;
	}
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
		char		host[MAX_ENTRY_LEN + 1];
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
		if (!split_port(entry, host, sizeof(host), e, problem))
			return false;
		if (!parse_range(host, e))
		{
			const char *name = strncmp(host, "*.", 2) == 0 ? host + 2 : host;

			if (!valid_host_name(name) || strchr(host, '/') || entry[0] == '[')
			{
				*problem = psprintf("entry \"%s\" is not a host name, \"*.domain\", an IP address or a CIDR range, with an optional \":port\"",
									entry);
				return false;
			}
			for (size_t i = 0; host[i]; i++)
				e->name[i] = pg_ascii_tolower((unsigned char) host[i]);
		}
		list->n++;
	}
	return true;
}

char	   *vb_llm_allowed_hosts = NULL;

/* GUC check hook: the setting must parse. */
bool
vb_check_allowed_hosts(char **newval, void **extra, GucSource source)
{
	AllowList	scratch;
	char	   *problem;

	if (parse_list(*newval, &scratch, &problem))
		return true;
	GUC_check_errdetail("%s.", problem);
	GUC_check_errhint("List host names, \"*.domain\" wildcards, IP addresses or CIDR ranges, each with an optional \":port\" or \":low-high\", separated by commas.");
	return false;
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

/*
 * Whether e allows port, for a call whose scheme's port is default_port;
 * port -1 asks whether e allows the host at any port.
 */
static bool
port_allowed(const AllowEntry *e, int port, int default_port)
{
	if (port == -1)
		return true;
	if (e->port_lo == 0)
		return port == default_port;
	return port >= e->port_lo && port <= e->port_hi;
}

/*
 * Whether addr (family AF_INET or AF_INET6) is an address of one of this
 * machine's interfaces.  Called by libcurl's connect callback, so it
 * raises no error and uses no palloc; when the interfaces cannot be read
 * it answers true, so that the address is refused rather than trusted.
 */
static bool
own_address(int family, const unsigned char *addr)
{
	struct ifaddrs *ifs;
	bool		found = false;

	if (getifaddrs(&ifs) != 0)
		return true;
	for (struct ifaddrs *i = ifs; i != NULL && !found; i = i->ifa_next)
	{
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != family)
			continue;
		if (family == AF_INET)
			found = memcmp(&((struct sockaddr_in *) i->ifa_addr)->sin_addr, addr, 4) == 0;
		else
			found = memcmp(&((struct sockaddr_in6 *) i->ifa_addr)->sin6_addr, addr, 16) == 0;
	}
	freeifaddrs(ifs);
	return found;
}

/*
 * Whether an IPv4 address is public: not in a range the IANA registry of
 * special-purpose addresses marks as not globally reachable, and not this
 * machine's own.
 */
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
	if (a[0] == 192 && a[1] == 0 && (a[2] == 0 || a[2] == 2))
		return false;			/* IETF protocol assignments, TEST-NET-1 */
	if (a[0] == 192 && a[1] == 88 && a[2] == 99)
		return false;			/* 6to4 relay anycast */
	if (a[0] == 198 && (a[1] & 0xfe) == 18)
		return false;			/* benchmarking */
	if ((a[0] == 198 && a[1] == 51 && a[2] == 100) || (a[0] == 203 && a[1] == 0 && a[2] == 113))
		return false;			/* TEST-NET-2 and -3 */
	return !own_address(AF_INET, a);
}

static bool
v6_public(const unsigned char *a)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char compat[12] = {0};
	static const unsigned char translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
	static const unsigned char discard[8] = {0x01, 0, 0, 0, 0, 0, 0, 0};
	bool		all_zero_but_last = true;

	for (int i = 0; i < 15; i++)
		if (a[i] != 0)
			all_zero_but_last = false;
	if (all_zero_but_last)
		return false;			/* :: and ::1 */
	/* Addresses that reach an IPv4 address are as public as it is. */
	if (memcmp(a, mapped, 12) == 0 || memcmp(a, compat, 12) == 0 ||
		memcmp(a, translated, 12) == 0 || memcmp(a, nat64, 12) == 0)
		return v4_public(a + 12);	/* ::ffff:a.b.c.d, ::a.b.c.d, ::ffff:0:a.b.c.d,
									 * 64:ff9b::a.b.c.d */
	if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b)
		return false;			/* 64:ff9b:1::/48, NAT64 for local use */
	if (memcmp(a, discard, 8) == 0)
		return false;			/* 100::/64, discard only */
	if (a[0] == 0x20 && a[1] == 0x02)
		return v4_public(a + 2);	/* 6to4: 2002:AABB:CCDD::/48 */
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0)
	{
		/* Teredo: the server's address, then the client's, inverted. */
		unsigned char client[4];

		for (int i = 0; i < 4; i++)
			client[i] = a[12 + i] ^ 0xff;
		return v4_public(a + 4) && v4_public(client);
	}
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
		return false;			/* 2001:db8::/32, documentation */
	if (a[0] == 0x3f && a[1] == 0xff && (a[2] & 0xf0) == 0)
		return false;			/* 3fff::/20, documentation */
	if ((a[0] & 0xfe) == 0xfc)
		return false;			/* unique local */
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
		return false;			/* link-local */
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
		return false;			/* site-local (deprecated, still routed by some) */
	if (a[0] == 0xff)
		return false;			/* multicast */
	return !own_address(AF_INET6, a);
}

/*
 * Whether a call to host (a name or an address literal, as in the URL) may
 * start.  Names must match a name entry; addresses must be in a range.
 */
bool
vb_allowlist_host_allowed(const char *host, int port, int default_port)
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
				in_range(&list->entries[i], literal.family, literal.addr) &&
				port_allowed(&list->entries[i], port, default_port))
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

		if (list->entries[i].is_range || !port_allowed(&list->entries[i], port, default_port))
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
 * Whether the scheduler may connect to this address and port (called by
 * libcurl just before it connects): inside an address entry that allows
 * the port, or public.  A public address was reached through a name
 * entry, whose port vb_allowlist_host_allowed has checked.
 */
bool
vb_allowlist_address_allowed(const struct sockaddr *sa, int default_port)
{
	AllowList  *list = allowlist();
	const unsigned char *addr;
	int			family = sa->sa_family;
	int			port;

	if (family == AF_INET)
	{
		addr = (const unsigned char *) &((const struct sockaddr_in *) sa)->sin_addr;
		port = ntohs(((const struct sockaddr_in *) sa)->sin_port);
	}
	else if (family == AF_INET6)
	{
		addr = (const unsigned char *) &((const struct sockaddr_in6 *) sa)->sin6_addr;
		port = ntohs(((const struct sockaddr_in6 *) sa)->sin6_port);
	}
	else
		return false;
	for (int i = 0; i < list->n; i++)
		if (list->entries[i].is_range && in_range(&list->entries[i], family, addr) &&
			port_allowed(&list->entries[i], port, default_port))
			return true;
	return family == AF_INET ? v4_public(addr) : v6_public(addr);
}

/*
 * llm_address_allowed(address inet, port integer, scheme text) -> boolean
 *
 * Whether the scheduler would connect to this address and port for a call
 * of this scheme under the allow-list in force: the check made at connect
 * time, for an operator to try before pointing a name at a model server.
 */
PG_FUNCTION_INFO_V1(vectorbea_llm_address_allowed);
Datum
vectorbea_llm_address_allowed(PG_FUNCTION_ARGS)
{
	inet	   *address = PG_GETARG_INET_PP(0);
	int32		port = PG_GETARG_INT32(1);
	char	   *scheme = text_to_cstring(PG_GETARG_TEXT_PP(2));
	struct sockaddr_storage ss;

	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 /* not quoted when long: a leaf, without vb_short_text */
				 strlen(scheme) > 40 ?
				 errmsg("unknown scheme of %d characters", pg_mbstrlen(scheme)) :
				 errmsg("unknown scheme \"%s\"", scheme),
				 errhint("LLM calls use http or https.")));
	if (port < 1 || port > 65535)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("port must be from 1 to 65535"),
				 errdetail("Found %d.", port)));
	/* a network is many addresses, which the list may treat differently */
	if (ip_bits(address) != (ip_family(address) == PGSQL_AF_INET ? 32 : 128))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("address must be one host, not a network"),
				 errdetail("Found %s.",
						   DatumGetCString(DirectFunctionCall1(inet_out, InetPGetDatum(address)))),
				 errhint("Pass one address, such as '10.0.0.1'; a connection goes to one.")));
	memset(&ss, 0, sizeof(ss));
	if (ip_family(address) == PGSQL_AF_INET)
	{
		struct sockaddr_in *sin = (struct sockaddr_in *) &ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16) port);
		memcpy(&sin->sin_addr, ip_addr(address), 4);
	}
	else
	{
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *) &ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16) port);
		memcpy(&sin6->sin6_addr, ip_addr(address), 16);
	}
	PG_RETURN_BOOL(vb_allowlist_address_allowed((struct sockaddr *) &ss,
												strcmp(scheme, "https") == 0 ? 443 : 80));
}
