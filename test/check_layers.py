#!/usr/bin/env python3
"""check_layers.py -- fail when the C files of src/ depend on each other in a cycle.

What it checks
    The file dependency graph of src/, derived from the code itself: an edge
    a.c -> b.c means a.c calls, takes the address of, or reads a non-static
    function or global variable that is *defined* in b.c.  Definitions are
    non-static functions at file scope, PG_FUNCTION_INFO_V1(name) functions
    and non-static, non-extern global variables.  Uses are identifiers of
    a.c, outside comments and string literals, that name such a symbol of
    another file.  Macros and static inline functions of headers belong to
    no .c file and make no edge; which headers each .c includes is printed
    only for information.

Why
    The files form layers that call downward only: leaves (clock, duration,
    jsonb_util, json, redact, ...), then run state and events, then the
    operations (claim, complete, fail, approvals, llm, ...), and on top the
    scheduler and _PG_init.  A lower file that calls a higher one makes a
    cycle, and a cycle means a layer calls upward: the files can no longer be
    understood, changed or tested from the bottom up.

How to read the output
    includes: a.c: x.h, y.h        project headers a.c includes (information)
    a.c -> b.c (symbols: f, g)     a.c uses f and g, which b.c defines
    layers: no cycle (N files, M edges)                         exit status 0
  or, for each group of files that all reach each other (a strongly
  connected component found with Tarjan's algorithm), one shortest cycle
  through it, found by breadth-first search, with the symbols of each step:
    cycle: a.c -> b.c -> a.c
      a.c -> b.c: f
      b.c -> a.c: vb_counter
      component: a.c, b.c, c.c (3 files)     only when larger than the cycle,
      also: c.c -> b.c -> c.c                then a cycle through each file
                                             not yet on one (symbols: above)
    layers: K cycles (N files, M edges)                         exit status 1
  To break a cycle, move or invert one of the listed uses: usually the call
  from the lower file upward (pass a callback, or move the function down).
  Exit status 2: the source folder could not be read.

Usage
    test/check_layers.py [--src DIR] [--dot] [--self-test]
      --src DIR    the C sources (default: src/ of this checkout)
      --dot        print the graph as Graphviz dot instead, the edges that
                   lie on a cycle in red (same exit status):
                   test/check_layers.py --dot | dot -Tsvg > layers.svg
      --self-test  check the checker on two tiny generated trees

It parses C only as far as PostgreSQL's coding style needs; see the limits
listed in parse_file's docstring.
"""

import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TOKEN_RE = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|->|\S")
IDENT_RE = re.compile(r"[A-Za-z_]\w*\Z")
DIRECTIVE_RE = re.compile(r"^[ \t]*#(?:[^\n\\]|\\.|\\\n)*", re.M)
INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"', re.M)
C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern
    float for goto if inline int long register restrict return short signed
    sizeof static struct switch typedef union unsigned void volatile while
    _Bool _Noreturn _Static_assert
""".split())


def strip_comments_and_literals(text, keep_strings=False):
    """Blank out comments and (unless keep_strings) string and character
    literals, keeping every newline so that offsets and line numbers stay
    those of the file: a symbol named in a comment or a message is no use."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        two = text[i:i + 2]
        if two == "/*":
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif two == "//":
            end = i
            while end < n and not (text[end] == "\n" and text[end - 1] != "\\"):
                end += 1
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c in "\"'":
            end = i + 1
            while end < n and text[end] != c and text[end] != "\n":
                end += 2 if text[end] == "\\" else 1
            end = min(end + 1, n)
            literal = text[i:end]
            if keep_strings:
                out.append(literal)
            else:
                out.append(c + re.sub(r"[^\n]", " ", literal[1:-1]) + c)
            i = end
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Token:
    __slots__ = ("text", "pos", "in_directive", "in_include")

    def __init__(self, text, pos):
        self.text = text
        self.pos = pos
        self.in_directive = False
        self.in_include = False


def tokenize(code):
    """Tokens of comment- and literal-free code; each knows whether it sits
    in a preprocessor directive (no declaration there) and whether in an
    #include (no use there either)."""
    tokens = [Token(m.group(), m.start()) for m in TOKEN_RE.finditer(code)]
    spans = [(m.start(), m.end(), re.match(r"\s*#\s*include\b", m.group()) is not None)
             for m in DIRECTIVE_RE.finditer(code)]
    starts = [s for s, _, _ in spans]
    for tok in tokens:
        k = bisect.bisect_right(starts, tok.pos) - 1
        if k >= 0 and tok.pos < spans[k][1]:
            tok.in_directive = True
            tok.in_include = spans[k][2]
    return tokens


def matching(texts, i, opening, closing, step):
    """Index of the bracket matching texts[i], scanning forward (step 1) or
    backward (step -1); len(texts) or -1 when unbalanced."""
    depth = 0
    while 0 <= i < len(texts):
        if texts[i] == opening:
            depth += 1
        elif texts[i] == closing:
            depth -= 1
            if depth == 0:
                return i
        i += step
    return i


def split_top_level(items, separator):
    """items (index, text) split at separator outside () and []."""
    pieces, current, depth = [], [], 0
    for item in items:
        text = item[1]
        if text in "([":
            depth += 1
        elif text in ")]":
            depth -= 1
        if text == separator and depth == 0:
            pieces.append(current)
            current = []
        else:
            current.append(item)
    pieces.append(current)
    return pieces


def declarator_name(piece, first):
    """(token index, is_function) of the name a declarator declares, or None.
    piece is (index, text) pairs with any initializer already cut off."""
    texts = [t for _, t in piece]
    # A pointer to function: "( * name )", possibly "( * const name )".
    for k in range(len(texts) - 2):
        if texts[k] == "(" and texts[k + 1] == "*":
            rest = [j for j in range(k + 2, len(texts)) if texts[j] not in ("const", "volatile")]
            if rest and IDENT_RE.match(texts[rest[0]]) and rest[0] + 1 < len(texts) \
                    and texts[rest[0] + 1] == ")":
                return piece[rest[0]][0], False
    depth = 0
    for k, text in enumerate(texts):
        if text == "(" and depth == 0:
            if k > 0 and IDENT_RE.match(texts[k - 1]) and texts[k - 1] not in C_KEYWORDS:
                return piece[k - 1][0], True
            return None
        if text in "([":
            depth += 1
        elif text in ")]":
            depth -= 1
    # A variable: the last identifier outside [], unless a tag ("struct X").
    idents = []
    depth = 0
    for k, text in enumerate(texts):
        if text in "([":
            depth += 1
        elif text in ")]":
            depth -= 1
        elif depth == 0 and IDENT_RE.match(text) and text not in C_KEYWORDS:
            idents.append(k)
    if not idents:
        return None
    k = idents[-1]
    if k > 0 and texts[k - 1] in ("struct", "union", "enum"):
        return None
    if first and k == 0:
        return None  # a lone macro such as PG_MODULE_MAGIC, not a declaration
    return piece[k][0], False


class ParsedFile:
    def __init__(self, name):
        self.name = name
        self.functions = {}     # defined non-static function -> line
        self.variables = {}     # defined non-static global variable -> line
        self.includes = []      # quoted #include targets, in order
        self.uses = collections.Counter()   # identifier -> occurrences


def parse_file(path):
    """Definitions, uses and includes of one C file.

    Known limits (it reads tokens, it does not preprocess or type-check):
    - Macros are not expanded.  A use hidden in a header macro counts for no
      file; a use written in a macro body of a .c counts for that .c.
    - A local variable or parameter declared with the name of another
      file's symbol counts as a use of it (member accesses a.x and a->x and
      fields of file-scope structs do not).  The vb_ prefix makes this
      unlikely.  Writes to a global count like reads.
    - Calls through function pointers count where the function's name is
      written (the address is taken), not where the pointer is called.
    - All branches of #if/#ifdef are read, #if 0 included.
    - A definition written through a macro (other than PG_FUNCTION_INFO_V1)
      or with attributes between ")" and "{" is not recognised.
    """
    raw = Path(path).read_text(encoding="utf-8", errors="replace")
    parsed = ParsedFile(Path(path).name)
    parsed.includes = INCLUDE_RE.findall(strip_comments_and_literals(raw, keep_strings=True))
    code = strip_comments_and_literals(raw)
    line_starts = [0] + [m.end() for m in re.finditer(r"\n", code)]

    def line_of(tok):
        return bisect.bisect_right(line_starts, tok.pos)

    tokens = tokenize(code)
    # The file-scope walk sees no preprocessor lines: a #define is no declaration.
    scope = [k for k, tok in enumerate(tokens) if not tok.in_directive]
    texts = [tokens[k].text for k in scope]
    declared_here = set()       # token indexes that name what they declare

    def declaration(decl):
        """A file-scope declaration ending in ";"; decl is (index, text)."""
        words = [t for _, t in decl]
        if not words:
            return
        if words[0] == "PG_FUNCTION_INFO_V1" and len(words) >= 4 and words[1] == "(":
            parsed.functions.setdefault(words[2], line_of(tokens[decl[2][0]]))
            declared_here.add(decl[2][0])
            return
        not_a_definition = any(w in ("typedef", "extern", "static") for w in words)
        for n, piece in enumerate(split_top_level(decl, ",")):
            cut = next((k for k, (_, t) in enumerate(piece) if t == "="), len(piece))
            found = declarator_name(piece[:cut], first=(n == 0))
            if found is None:
                continue
            index, is_function = found
            declared_here.add(index)
            if not (is_function or not_a_definition):
                parsed.variables.setdefault(tokens[index].text, line_of(tokens[index]))

    def members(start, end):
        """Mark the field names of a struct or union body as declared: a
        field that shares a global's name is no use of it."""
        member, k = [], start
        while k < end:
            if texts[k] == "{":
                k = matching(texts, k, "{", "}", 1) + 1
                member.append((-1, "{}"))
                continue
            if texts[k] == ";":
                for n, piece in enumerate(split_top_level(member, ",")):
                    cut = next((j for j, (_, t) in enumerate(piece) if t in ("=", ":")), len(piece))
                    found = declarator_name(piece[:cut], first=(n == 0))
                    if found is not None:
                        declared_here.add(found[0])
                member = []
            else:
                member.append((scope[k], texts[k]))
            k += 1

    decl = []
    i = 0
    while i < len(texts):
        text = texts[i]
        if text == ";":
            declaration(decl)
            decl = []
            i += 1
        elif text == "{":
            end = matching(texts, i, "{", "}", 1)
            words = [t for _, t in decl]
            if words and words[-1] == ")" and "=" not in words:
                # A function definition: name ( parameters ) { body }.
                open_paren = matching(words, len(words) - 1, ")", "(", -1)
                name_at = open_paren - 1
                if name_at >= 0 and words[name_at] == ")":
                    # A function returning a function pointer: (*name(args))(args).
                    inner = matching(words, name_at, ")", "(", -1)
                    name_at = next((k for k in range(inner, name_at)
                                    if IDENT_RE.match(words[k]) and words[k + 1] == "("), -1)
                if name_at >= 0 and IDENT_RE.match(words[name_at]):
                    index = decl[name_at][0]
                    declared_here.add(index)
                    if "static" not in words:
                        parsed.functions.setdefault(words[name_at], line_of(tokens[index]))
                decl = []
            else:
                # An initializer or a struct, union or enum body: part of the
                # declaration that the next ";" ends.
                if "=" not in words and any(w in ("struct", "union") for w in words[-2:]):
                    members(i + 1, end)
                decl.append((-1, "{}"))
            i = end + 1
        elif text == "}":
            i += 1      # unbalanced, e.g. braces split by #if branches
        else:
            decl.append((scope[i], text))
            i += 1

    for k, tok in enumerate(tokens):
        if tok.in_include or k in declared_here or not IDENT_RE.match(tok.text):
            continue
        if k > 0 and tokens[k - 1].text in (".", "->"):
            continue    # a struct member, not a symbol
        parsed.uses[tok.text] += 1
    return parsed


def build_graph(src):
    """(files, edges, includes, warnings): edges maps (a, b) to the sorted
    symbols that make a.c depend on b.c."""
    src = Path(src)
    sources = sorted(src.glob("*.c"))
    headers = {p.name for p in src.glob("*.h")}
    parsed = [parse_file(p) for p in sources]
    warnings = []

    owners = collections.defaultdict(set)
    sites = collections.defaultdict(list)
    for f in parsed:
        for symbol, line in list(f.functions.items()) + list(f.variables.items()):
            owners[symbol].add(f.name)
            sites[symbol].append(f"{f.name}:{line}")
    for symbol, files in sorted(owners.items()):
        if len(files) > 1:
            warnings.append(f"{symbol} is defined in more than one file: {', '.join(sites[symbol])}")

    # A header that defines a non-static symbol gives it to every includer.
    for h in sorted(src.glob("*.h")):
        hp = parse_file(h)
        for symbol in sorted(set(hp.functions) | set(hp.variables)):
            warnings.append(f"{h.name} defines non-static {symbol}; it belongs in a .c file")

    edges = collections.defaultdict(set)
    for f in parsed:
        for symbol in f.uses:
            for owner in owners.get(symbol, ()):
                if owner != f.name:
                    edges[(f.name, owner)].add(symbol)
    edges = {e: sorted(s) for e, s in edges.items()}
    includes = {f.name: [h for h in f.includes if Path(h).name in headers and "/" not in h]
                for f in parsed}
    return [f.name for f in parsed], edges, includes, warnings


def strongly_connected(files, edges):
    """Tarjan's algorithm, iteratively; components with more than one file,
    each sorted, in the order of their first file."""
    succ = collections.defaultdict(list)
    for a, b in sorted(edges):
        succ[a].append(b)
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for root in files:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def shortest_cycle(component, edges, through=None):
    """A shortest cycle inside the component (through one given file, if
    any), as [a, b, ..., a]; among equally short ones the alphabetically
    first, so the output is stable."""
    members = set(component)
    succ = collections.defaultdict(list)
    for a, b in sorted(edges):
        if a in members and b in members:
            succ[a].append(b)
    best = None
    for start in ([through] if through else component):
        parent = {start: None}
        queue = collections.deque([start])
        closing = None
        while queue and closing is None:
            node = queue.popleft()
            for nxt in succ[node]:
                if nxt == start:
                    closing = node
                    break
                if nxt not in parent:
                    parent[nxt] = node
                    queue.append(nxt)
        if closing is None:
            continue
        path = [start]
        node = closing
        while node != start:
            path.insert(1, node)
            node = parent[node]
        path.append(start)
        if best is None or (len(path), path) < (len(best), best):
            best = path
    return best


def print_text(files, edges, includes, components):
    for name in files:
        print(f"includes: {name}: {', '.join(includes[name]) or '(none)'}")
    for (a, b), symbols in sorted(edges.items()):
        print(f"{a} -> {b} (symbols: {', '.join(symbols)})")
    summary = f"({len(files)} files, {len(edges)} edges)"
    if not components:
        print(f"layers: no cycle {summary}")
        return
    for component in components:
        path = shortest_cycle(component, edges)
        print(f"cycle: {' -> '.join(path)}")
        for a, b in zip(path, path[1:]):
            print(f"  {a} -> {b}: {', '.join(edges[(a, b)])}")
        if len(component) > len(path) - 1:
            print(f"  component: {', '.join(component)} ({len(component)} files)")
            # Cutting one cycle of a large component leaves the others; show
            # a shortest cycle through each file not yet on a shown one.
            covered = set(path)
            for name in component:
                if name not in covered:
                    more = shortest_cycle(component, edges, through=name)
                    covered.update(more)
                    print(f"  also: {' -> '.join(more)}")
    print(f"layers: {len(components)} cycle{'s' if len(components) > 1 else ''} {summary}")


def print_dot(files, edges, components):
    # An edge lies on some cycle exactly when both its files are in one
    # strongly connected component.
    component_of = {name: n for n, component in enumerate(components) for name in component}
    on_cycle = {(a, b) for a, b in edges
                if a in component_of and component_of[a] == component_of.get(b)}
    print("digraph layers {")
    print("  rankdir=BT;")
    print("  node [shape=box, fontname=\"monospace\"];")
    for name in files:
        print(f"  \"{name}\";")
    for (a, b), symbols in sorted(edges.items()):
        label = "\\n".join(symbols)
        colour = ", color=red, fontcolor=red, penwidth=2" if (a, b) in on_cycle else ""
        print(f"  \"{a}\" -> \"{b}\" [label=\"{label}\"{colour}];")
    print("}")


def check(src, dot=False):
    if not Path(src).is_dir() or not any(Path(src).glob("*.c")):
        print(f"check_layers: no C files in {src}", file=sys.stderr)
        return 2
    files, edges, includes, warnings = build_graph(src)
    for warning in warnings:
        print(f"check_layers: warning: {warning}", file=sys.stderr)
    components = strongly_connected(files, edges)
    if dot:
        print_dot(files, edges, components)
    else:
        print_text(files, edges, includes, components)
    return 1 if components else 0


# ---- self-test ------------------------------------------------------------

SELF_TEST_HEADER = """\
#ifndef T_H
#define T_H
extern int vb_a_limit;
extern int vb_b_step(int n);
/* Header code belongs to no .c file: b.c calling this makes no b.c -> a.c. */
static inline int vb_twice_limit(void) { return 2 * vb_a_limit; }
#define VB_A_HELPER(x) vb_a_helper(x)
#endif
"""

SELF_TEST_A = """\
#include "t.h"

int			vb_a_limit = 3;
static int	hidden_count;

PG_FUNCTION_INFO_V1(vectorbea_a_sql);

char *
vb_a_helper(int n)
{
	return n > vb_a_limit ? "vb_b_step" : 0;	/* not vb_b_step() */
}

Datum
vectorbea_a_sql(PG_FUNCTION_ARGS)
{
	return vb_b_step(hidden_count);
}
"""

SELF_TEST_B = """\
#include "t.h"

struct holder { int vb_a_limit; };

static int
private_step(struct holder *h)
{
	return h->vb_a_limit;	/* a member, not a.c's variable */
}

int vb_b_step(int n)
{
	// vb_a_helper(n) would be a use, but it is in a comment
	return n + private_step(0) + vb_twice_limit() + VB_A_HELPER(n)%s;
}
"""


def self_test():
    script = Path(__file__).resolve()

    def run(tree):
        result = subprocess.run([sys.executable, str(script), "--src", str(tree)],
                                capture_output=True, text=True)
        return result.returncode, result.stdout + result.stderr

    with tempfile.TemporaryDirectory(prefix="check_layers.") as tmp:
        trees = {}
        for kind, b_extra in (("cycle", " + vb_a_limit"), ("clean", "")):
            tree = Path(tmp) / kind
            tree.mkdir()
            (tree / "t.h").write_text(SELF_TEST_HEADER)
            (tree / "a.c").write_text(SELF_TEST_A)
            (tree / "b.c").write_text(SELF_TEST_B % b_extra)
            trees[kind] = tree

        status, output = run(trees["cycle"])
        assert status == 1, f"cycle tree: exit {status}, not 1\n{output}"
        for expected in ("a.c -> b.c (symbols: vb_b_step)",
                         "b.c -> a.c (symbols: vb_a_limit)",
                         "cycle: a.c -> b.c -> a.c",
                         "  a.c -> b.c: vb_b_step",
                         "  b.c -> a.c: vb_a_limit",
                         "includes: a.c: t.h"):
            assert expected in output.splitlines(), f"cycle tree: no line {expected!r}\n{output}"

        status, output = run(trees["clean"])
        assert status == 0, f"clean tree: exit {status}, not 0\n{output}"
        for expected in ("a.c -> b.c (symbols: vb_b_step)",
                         "layers: no cycle (2 files, 1 edges)"):
            assert expected in output.splitlines(), f"clean tree: no line {expected!r}\n{output}"
        assert "b.c -> a.c" not in output, f"clean tree: a comment, member or header made an edge\n{output}"
    print("self-test: ok")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Fail when the C files of src/ depend on each other in a cycle.")
    parser.add_argument("--src", default=str(Path(__file__).resolve().parent.parent / "src"),
                        help="folder with the .c and .h files (default: %(default)s)")
    parser.add_argument("--dot", action="store_true", help="print the graph in Graphviz dot")
    parser.add_argument("--self-test", action="store_true", help="test the checker itself")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    return check(args.src, dot=args.dot)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:     # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
