/*-------------------------------------------------------------------------
 *
 * template.c
 *	  Templates: {{input.x}}, {{run.input.x}} and
 *	  {{upstream.<node>.output.x}} in llm prompts, in the input of run nodes
 *	  (a JSON template, whose one-placeholder strings keep their type) and
 *	  in the times of sleep nodes and not_before.
 *
 * A template is checked when its workflow is defined (or its node spawned):
 * every placeholder must be closed, name one of the three roots, use plain
 * path segments, and an upstream placeholder must name a node the llm node
 * depends on, so that its output exists when the prompt is rendered.
 *
 * Rendering happens when the scheduler has claimed or started the node, from the same
 * input, upstream outputs and run input a worker would receive.  A string
 * value is inserted as it is, anything else as its JSON text.  A path that
 * leads nowhere is a permanent error that names the placeholder and the
 * segment that was missing: asking again would find the same data.
 *
 * IDENTIFICATION
 *	  src/template.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "vectorbea.h"
#include "jsonb_util.h"
#include "template.h"

#define MAX_PLACEHOLDER_LEN		512

/* Splits "a.b.0.c" into segments; false when a segment is empty or odd. */
static bool
split_path(const char *expr, List **segments)
{
	const char *p = expr;

	*segments = NIL;
	for (;;)
	{
		const char *start = p;

		while (*p && *p != '.')
		{
			if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '-' || *p == ':'))
				return false;
			p++;
		}
		if (p == start)
			return false;
		*segments = lappend(*segments, pnstrdup(start, p - start));
		if (*p == '\0')
			return true;
		p++;
	}
}

/* Why a JSON template (a run node's input) cannot read {{input...}}. */
#define TEMPLATE_ITSELF "a run node's input is the template itself, not yet rendered; " \
	"read the run's input ({{run.input.<path>}}) or a dependency's output " \
	"({{upstream.<node>.output.<path>}})"

/* A placeholder as messages show it: cut when long, like any value. */
static char *
shown(const char *expr)
{
	return vb_short_text(psprintf("{{%s}}", expr));
}

/*
 * Checks the placeholder expression expr (already trimmed).  Returns NULL
 * when it is well formed, else why not.  *upstream_node is set to the node
 * an upstream placeholder names.
 */
static char *
check_expression(const char *expr, char **upstream_node)
{
	List	   *seg;
	const char *root;

	*upstream_node = NULL;
	if (!split_path(expr, &seg))
		return "a placeholder is a dotted path of letters, digits, \"_\", \"-\" and \":\"";
	root = linitial(seg);
	if (strcmp(root, "input") == 0)
		return NULL;
	if (strcmp(root, "run") == 0)
	{
		if (list_length(seg) < 2 || strcmp(lsecond(seg), "input") != 0)
			return "\"run\" placeholders read the run's input: {{run.input.<path>}}";
		return NULL;
	}
	if (strcmp(root, "upstream") == 0)
	{
		if (list_length(seg) < 3 || strcmp(lthird(seg), "output") != 0)
			return "\"upstream\" placeholders read a dependency's output: {{upstream.<node>.output.<path>}}";
		*upstream_node = lsecond(seg);
		return NULL;
	}
	return "placeholders start with input, run.input or upstream.<node>.output";
}

/* Calls fn for each placeholder; returns NULL or the first problem. */
typedef char *(*PlaceholderFn) (const char *expr, void *arg);

static char *
scan(const char *template, StringInfo out, PlaceholderFn fn, void *arg)
{
	const char *p = template;

	for (;;)
	{
		const char *open = strstr(p, "{{");
		const char *close;
		char	   *expr;
		char	   *problem;
		size_t		len;

		if (open == NULL)
		{
			if (out)
				appendStringInfoString(out, p);
			return NULL;
		}
		if (out)
			appendBinaryStringInfo(out, p, open - p);
		close = strstr(open + 2, "}}");
		if (close == NULL)
			return psprintf("\"{{\" at offset %d is never closed with \"}}\"",
							(int) (open - template));
		len = close - (open + 2);
		if (len > MAX_PLACEHOLDER_LEN)
			return psprintf("the placeholder at offset %d is longer than %d characters",
							(int) (open - template), MAX_PLACEHOLDER_LEN);
		/* Surrounding blanks are allowed: {{ input.x }}. */
		while (len > 0 && isspace((unsigned char) open[2]))
			open++, len--;
		while (len > 0 && isspace((unsigned char) open[2 + len - 1]))
			len--;
		expr = pnstrdup(open + 2, len);
		problem = fn(expr, arg);
		if (problem)
			return problem;
		p = close + 2;
	}
}

typedef struct CheckArg
{
	List	   *depends_on;
	bool		own_input;		/* {{input...}} may be read */
} CheckArg;

static char *
check_one(const char *expr, void *arg)
{
	CheckArg   *ca = arg;
	char	   *node;
	char	   *problem = check_expression(expr, &node);
	ListCell   *lc;

	if (problem)
		return psprintf("%s: %s", shown(expr), problem);
	if (!ca->own_input && strncmp(expr, "input", 5) == 0 && (expr[5] == '\0' || expr[5] == '.'))
		return psprintf("%s: %s", shown(expr), TEMPLATE_ITSELF);
	if (node == NULL)
		return NULL;
	foreach(lc, ca->depends_on)
		if (strcmp(lfirst(lc), node) == 0)
			return NULL;
	return psprintf("%s reads node \"%s\", which is not in \"depends_on\"", shown(expr),
					vb_short_text(node));
}

/*
 * Checks a template against the node's dependencies; NULL when it is good,
 * else a description of the first problem.
 */
char *
vb_template_check(const char *template, List *depends_on)
{
	CheckArg	ca = {depends_on, true};

	return scan(template, NULL, check_one, &ca);
}

typedef struct RenderArg
{
	Jsonb	   *input;
	Jsonb	   *upstream;
	Jsonb	   *run_input;
	StringInfo	out;
} RenderArg;

/*
 * Follows seg from index first on, from start; false with *missing set when
 * absent.
 */
static bool
follow(JsonbValue *start, List *seg, int first, JsonbValue *result, char **missing)
{
	JsonbValue	cur = *start;

	for (int i = first; i < list_length(seg); i++)
	{
		const char *key = list_nth(seg, i);
		JsonbContainer *cc;

		if (cur.type != jbvBinary)
		{
			*missing = psprintf("\"%s\" is %s, not an object or array", (char *) list_nth(seg, i - 1),
								vb_jsonb_type_name(&cur));
			return false;
		}
		cc = cur.val.binary.data;
		if (JsonContainerIsObject(cc))
		{
			if (!vb_jsonb_get(cc, key, &cur))
			{
				*missing = psprintf("there is no key \"%s\"", vb_short_text(key));
				return false;
			}
		}
		else if (JsonContainerIsArray(cc) && !JsonContainerIsScalar(cc))
		{
			char	   *end;
			long		idx = strtol(key, &end, 10);
			JsonbValue *elem;

			if (*end != '\0' || idx < 0 || idx >= (long) JsonContainerSize(cc) ||
				(elem = getIthJsonbValueFromContainer(cc, (uint32) idx)) == NULL)
			{
				*missing = psprintf("there is no element [%s]", key);
				return false;
			}
			cur = *elem;
		}
		else
		{
			*missing = psprintf("\"%s\" is a scalar", key);
			return false;
		}
	}
	*result = cur;
	return true;
}

/*
 * jb as a value, with its length: {{input}} and {{run.input}} name the whole
 * of it, and its text (vb_jsonb_value_text) copies that many bytes.
 */
static JsonbValue *
whole(Jsonb *jb, JsonbValue *v)
{
	v->type = jbvBinary;
	v->val.binary.data = &jb->root;
	v->val.binary.len = VARSIZE(jb) - VARHDRSZ;
	return v;
}

/* Finds the value a placeholder names; NULL, or why there is none. */
static char *
resolve(const char *expr, RenderArg *ra, JsonbValue *v)
{
	List	   *seg;
	char	   *node;
	char	   *missing = NULL;
	bool		found;
	JsonbValue	root;

	if (check_expression(expr, &node) != NULL || !split_path(expr, &seg))
		return psprintf("%s is not a valid placeholder", shown(expr));
	if (node)
	{
		JsonbValue	out;

		if (!vb_jsonb_get(&ra->upstream->root, node, &out) || out.type == jbvNull)
			return psprintf("%s: upstream node \"%s\" has no output", shown(expr),
							vb_short_text(node));
		if (list_length(seg) == 3)
		{
			*v = out;
			found = true;
		}
		else if (out.type != jbvBinary)
			return psprintf("%s: the output of upstream node \"%s\" is %s, not an object",
							shown(expr), vb_short_text(node), vb_jsonb_type_name(&out));
		else
			found = follow(&out, seg, 3, v, &missing);
	}
	else if (strcmp(linitial(seg), "run") == 0)
		found = follow(whole(ra->run_input, &root), seg, 2, v, &missing);
	else if (ra->input == NULL)
		return psprintf("%s: %s", shown(expr), TEMPLATE_ITSELF);
	else
		found = follow(whole(ra->input, &root), seg, 1, v, &missing);
	if (!found)
		return psprintf("%s leads nowhere: %s", shown(expr), missing);
	return NULL;
}

static char *
render_one(const char *expr, void *arg)
{
	RenderArg  *ra = arg;
	JsonbValue	v;
	char	   *problem = resolve(expr, ra, &v);

	if (problem)
		return problem;
	if (v.type == jbvString)
		appendBinaryStringInfo(ra->out, v.val.string.val, v.val.string.len);
	else
		appendStringInfoString(ra->out, vb_jsonb_value_text(&v));
	return NULL;
}

/*
 * Renders template; returns the text, or NULL with *problem set when a
 * placeholder leads nowhere.  input is NULL for a string of a run node's
 * input, which has no {{input...}} to read.
 */
char *
vb_template_render(const char *template, Jsonb *input, Jsonb *upstream,
				   Jsonb *run_input, char **problem)
{
	StringInfoData out;
	RenderArg	ra;

	initStringInfo(&out);
	ra.input = input;
	ra.upstream = upstream;
	ra.run_input = run_input;
	ra.out = &out;
	*problem = scan(template, &out, render_one, &ra);
	if (*problem)
		return NULL;
	return out.data;
}

/*
 * The expression of a string that is one placeholder and nothing else
 * ("{{ upstream.a.output.items }}"), or NULL.
 */
static char *
whole_placeholder(const char *s)
{
	size_t		len = strlen(s);
	const char *inner;

	if (len < 4 || strncmp(s, "{{", 2) != 0 || strcmp(s + len - 2, "}}") != 0)
		return NULL;
	inner = s + 2;
	if (strstr(inner, "{{") != NULL || strstr(inner, "}}") != s + len - 2)
		return NULL;
	while (isspace((unsigned char) *inner))
		inner++;
	len = (s + len - 2) - inner;
	while (len > 0 && isspace((unsigned char) inner[len - 1]))
		len--;
	return pnstrdup(inner, len);
}

/*
 * Checks every string of a JSON template (a run node's input) against the
 * node's dependencies; NULL when all are good, else the first problem.
 * {{input...}} is refused: the node's input is this template.
 */
char *
vb_template_check_json(JsonbContainer *tmpl, List *depends_on)
{
	JsonbIterator *it = JsonbIteratorInit(tmpl);
	JsonbValue	v;
	JsonbIteratorToken tok;
	CheckArg	ca = {depends_on, false};

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		char	   *problem;

		if ((tok != WJB_VALUE && tok != WJB_ELEM) || v.type != jbvString)
			continue;
		problem = scan(pnstrdup(v.val.string.val, v.val.string.len), NULL, check_one, &ca);
		if (problem)
			return problem;
	}
	return NULL;
}

/*
 * Renders a JSON template: a string that is one placeholder becomes the
 * value it names, with its type ("{{upstream.a.output.items}}" an array);
 * any other string with placeholders is rendered as text; keys and other
 * values stay.  Returns NULL with *problem set when a placeholder leads
 * nowhere.  It has no {{input...}}: it is a run node's input itself.
 */
Jsonb *
vb_template_render_json(Jsonb *tmpl, Jsonb *upstream, Jsonb *run_input, char **problem)
{
	JsonbIterator *it = JsonbIteratorInit(&tmpl->root);
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res = NULL;
	JsonbIteratorToken tok;
	RenderArg	ra = {NULL, upstream, run_input, NULL};

	*problem = NULL;
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if ((tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvString &&
			memchr(v.val.string.val, '{', v.val.string.len) != NULL)
		{
			char	   *text = pnstrdup(v.val.string.val, v.val.string.len);
			char	   *expr = whole_placeholder(text);
			JsonbValue	value;

			if (expr)
			{
				*problem = resolve(expr, &ra, &value);
				if (*problem)
					return NULL;
			}
			else
			{
				char	   *rendered = vb_template_render(text, NULL, upstream, run_input,
														  problem);

				if (*problem)
					return NULL;
				value.type = jbvString;
				value.val.string.val = rendered;
				value.val.string.len = strlen(rendered);
			}
			res = pushJsonbValue(&state, tok, &value);
		}
		else
			res = pushJsonbValue(&state, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	return JsonbValueToJsonb(res);
}
