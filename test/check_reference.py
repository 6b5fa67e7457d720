#!/usr/bin/env python3
"""check_reference.py -- docs/sql-reference.md documents the SQL surface a fresh install makes.

What it checks
    The functions, views and tables that sql/vectorbea--0.2.0.sql (generated
    from vectorbea--0.1.0.sql and the upgrade script; @extschema@ is the
    schema vectorbea) leaves behind, against the "## Functions" and
    "## Tables" chapters of docs/sql-reference.md:
    - every function a user calls has a section: a "### name" heading whose
      signature block (the fenced block right under it) names it; the block
      may hold several signatures (overloads, or schedule_workflow's
      unschedule_workflow);
    - every section names a function, view or table that exists ("### name
      (view)" a view; a heading of the Tables chapter a table or a view);
    - each signature against the overload it documents: the arguments'
      names, types, modes and defaults in order, and the result (its type,
      SETOF, and the columns of "-> SETOF (...)" or "-> TABLE (...)");
    - every view and table is documented: a section of its own, or named
      as vectorbea.name in the Functions or Tables chapter (the reference
      does that for provider_key_info and workspace_roles).
    The script is read as PostgreSQL runs it: the last CREATE [OR REPLACE]
    of a function's signature (name and input argument types) counts, a
    DROP FUNCTION, DROP VIEW or DROP TABLE removes, ALTER ... RENAME TO
    renames, and an overload is a function of its own.  Types compare as
    PostgreSQL resolves them: int and int4 are integer, bool boolean,
    timestamptz timestamp with time zone, ...; typmods such as numeric(10,2)
    do not count, as in a function's signature.

Which functions need no section (internal_reason, below)
    - trigger functions (RETURNS trigger or event_trigger): nobody can call
      them; the reference describes them with their tables (approvals, the
      Conventions' note_ready_node);
    - functions whose COMMENT says "not for direct use": the SQL's own mark
      for the queries behind the C doors (timeline_body, replay_body, ...,
      replay_parts), which only the owner may execute (the Conventions,
      docs/architecture.md).
    REVOKE from PUBLIC is no mark: the install revokes EXECUTE on every
    function, and roles get the API by explicit grants.  Everything else in
    the schema is the API and has a section.

Why
    The reference is how users learn the API; a function added without a
    section, an argument renamed in the SQL but not in the docs (named
    notation breaks), or a section left over from a removed function, each
    misleads them.  The SQL is the truth; the docs follow it.

How to read the output
    One line per problem: what, which object, the docs line and the SQL line
    (file:line, "-" for none), and what differs; then the internal functions
    left out, and a last line "reference: ..." with the counts.  Exit status
    1 when any problem is found, 2 when a file cannot be read.

Usage
    test/check_reference.py [--sql FILE] [--doc FILE] [--self-test]
      --sql FILE   the install script (default: sql/vectorbea--0.2.0.sql)
      --doc FILE   the reference (default: docs/sql-reference.md)
      --self-test  check the checker on a small generated script and page
"""

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from doc_checks import closing, display as display_under, expect_lines, line_of, run_checker, split_top  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQL = ROOT / "sql" / "vectorbea--0.2.0.sql"
DEFAULT_DOC = ROOT / "docs" / "sql-reference.md"
SQL_SOURCES = ("vectorbea--0.1.0.sql", "vectorbea--0.1.0--0.2.0.sql")    # make joins them
SCHEMAS = {"@extschema@", "vectorbea"}      # the extension's schema, as written
INTERNAL_COMMENT = "not for direct use"
INTERNAL_RESULTS = {"trigger", "event_trigger"}

# ---- tokens -----------------------------------------------------------------

TOKEN_RE = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>--[^\n]*)
  | (?P<block>/\*)
  | (?P<string>[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*')
  | (?P<ident>"(?:[^"]|"")*")
  | (?P<dollar>\$(?:[A-Za-z_]\w*)?\$)
  | (?P<word>@extschema@|[A-Za-z_][\w$]*)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<op>::|->>|->|<>|<=|>=|!=|\|\||\S)
""", re.X | re.S)


class Token:
    __slots__ = ("kind", "text", "line", "col")

    def __init__(self, kind, text, line, col):
        self.kind, self.text, self.line, self.col = kind, text, line, col

    def is_word(self, *words):
        return self.kind == "word" and (not words or self.text.upper() in words)

    def is_op(self, op):
        return self.kind == "op" and self.text == op

    def name(self):
        """The identifier as PostgreSQL folds it."""
        if self.kind == "ident":
            return self.text[1:-1].replace('""', '"')
        return self.text.lower()


def tokenize(text, first_line=1):
    """Tokens of SQL text without comments; strings, dollar-quoted bodies
    and quoted identifiers are single tokens, so nothing inside a function
    body or a literal is read as a statement.  psql's backslash commands
    (\\echo ... \\quit) are skipped."""
    tokens, pos, line, line_start, n = [], 0, first_line, 0, len(text)

    def advance(to):
        nonlocal line, line_start
        k = text.rfind("\n", pos, to)
        if k >= 0:
            line += text.count("\n", pos, to)
            line_start = k + 1
    while pos < n:
        if text[pos] == "\\" and not text[line_start:pos].strip():
            end = text.find("\n", pos)
            end = n if end < 0 else end
            advance(end)
            pos = end
            continue
        m = TOKEN_RE.match(text, pos)
        kind = m.lastgroup
        end = m.end()
        if kind == "block":            # /* ... */, nested as PostgreSQL nests them
            depth, end = 1, pos + 2
            while depth and end < n:
                if text.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif text.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
        elif kind == "dollar":
            close = text.find(m.group(), end)
            end = n if close < 0 else close + len(m.group())
            kind = "string"
        if kind not in ("space", "comment", "block"):
            tokens.append(Token(kind, text[pos:end], line, pos - line_start))
        advance(end)
        pos = end
    return tokens


def statements(tokens):
    """Token lists between top-level semicolons."""
    current = []
    for tok in tokens:
        if tok.is_op(";"):
            if current:
                yield current
            current = []
        else:
            current.append(tok)
    if current:
        yield current


def join(tokens):
    """Tokens as one line of text, spaced as people write SQL."""
    out = ""
    for tok in tokens:
        glue = out and not (out[-1] in "(.[" or tok.text in ",.)[]" or
                            (tok.text == "(" and out[-1].isalnum()) or
                            tok.text == "::" or out.endswith("::"))
        out += (" " if glue else "") + tok.text
    return out


# ---- types, arguments, results ---------------------------------------------

TYPE_ALIASES = {
    "int": "integer", "int4": "integer", "integer": "integer",
    "int8": "bigint", "bigint": "bigint", "int2": "smallint", "smallint": "smallint",
    "bool": "boolean", "boolean": "boolean",
    "float8": "double precision", "float": "double precision",
    "double precision": "double precision", "float4": "real", "real": "real",
    "decimal": "numeric", "numeric": "numeric",
    "timestamptz": "timestamp with time zone",
    "timestamp with time zone": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "timestamp without time zone": "timestamp without time zone",
    "timetz": "time with time zone", "time with time zone": "time with time zone",
    "time": "time without time zone", "time without time zone": "time without time zone",
    "varchar": "character varying", "char varying": "character varying",
    "character varying": "character varying",
    "char": "character", "character": "character", "bpchar": "character",
    "varbit": "bit varying", "bit varying": "bit varying",
}
# Type names of more than one word: an argument "double precision" is a type
# without a name, an argument "name text" a name and a type.
MULTIWORD_TYPES = {"double precision", "timestamp with time zone", "timestamp without time zone",
                   "time with time zone", "time without time zone", "character varying",
                   "char varying", "bit varying", "national character", "national char",
                   "national character varying", "national char varying"}
MODES = {"IN", "OUT", "INOUT", "VARIADIC"}


def norm_type(text):
    """A type as PostgreSQL identifies it in a signature: aliases resolved,
    schema, typmods and array bounds dropped (int4[3] is integer[])."""
    t = " ".join(text.replace('"', "").lower().split())
    t = re.sub(r"\s*([().,\[\]])\s*", r"\1", t)
    t = re.sub(r"^(pg_catalog|@extschema@|vectorbea)\.", "", t)
    array = False
    while True:
        m = re.search(r"(\[\d*\]| array(\[\d*\])?)$", t)
        if not m:
            break
        array, t = True, t[:m.start()]
    t = " ".join(re.sub(r"\(\d+(,\d+)*\)", " ", t).split())
    t = TYPE_ALIASES.get(t, t)
    return t + ("[]" if array else "")


def norm_default(tokens):
    """A default for comparison: words folded, schemas and a trailing cast
    dropped (pg_catalog.now() is now(), '{}'::jsonb is '{}')."""
    k = next((i for i, tok in enumerate(tokens) if tok.is_op("::")), len(tokens))
    text = " ".join(tok.text.lower() if tok.kind == "word" else tok.text for tok in tokens[:k])
    return re.sub(r"(?<![\w@])(pg_catalog|vectorbea|@extschema@) \. ", "", text)


class Arg:
    def __init__(self, mode, name, type_text, default, line):
        self.mode = mode                    # IN, OUT, INOUT or VARIADIC
        self.name = name                    # None when unnamed
        self.type_text = type_text          # as written
        self.type = norm_type(type_text)
        self.default = default              # tokens, or None
        self.line = line

    def show(self):
        text = ("" if self.mode == "IN" else self.mode + " ") + \
               (self.name + " " if self.name else "") + self.type_text
        return text + (" DEFAULT " + join(self.default) if self.default else "")


def parse_arg(tokens):
    """[mode] [name] type [DEFAULT expr | = expr], as CREATE FUNCTION and
    the reference write it."""
    if not tokens:
        return None
    mode = "IN"
    if len(tokens) > 1 and tokens[0].is_word(*MODES):              # OUT name type
        mode, tokens = tokens[0].text.upper(), tokens[1:]
    elif len(tokens) > 2 and tokens[1].is_word(*MODES):            # name OUT type
        mode, tokens = tokens[1].text.upper(), tokens[:1] + tokens[2:]
    default = None
    depth = 0
    for k, tok in enumerate(tokens):
        if tok.kind == "op" and tok.text in "([":
            depth += 1
        elif tok.kind == "op" and tok.text in ")]":
            depth -= 1
        elif depth == 0 and (tok.is_word("DEFAULT") or tok.is_op("=")):
            default, tokens = tokens[k + 1:], tokens[:k]
            break
    # The words outside brackets ("numeric(10,2)" is one word, "x.y" one).
    words, depth = [], 0
    for k, tok in enumerate(tokens):
        if tok.kind == "op" and tok.text in "([":
            depth += 1
        elif tok.kind == "op" and tok.text in ")]":
            depth -= 1
        elif depth == 0 and tok.kind in ("word", "ident") and not tok.is_word("ARRAY") \
                and not (k and tokens[k - 1].is_op(".")):
            words.append(k)
    phrase = " ".join(tokens[k].text.lower() for k in words)
    if len(words) <= 1 or phrase in MULTIWORD_TYPES:
        name, type_tokens = None, tokens
    else:
        name, type_tokens = tokens[0].name(), tokens[1:]
    return Arg(mode, name, join(type_tokens), default, tokens[0].line)


def parse_args(tokens):
    return [a for a in (parse_arg(piece) for piece in split_top(tokens)) if a]


class Result:
    """What a function returns: setof, and a type or columns."""

    def __init__(self, setof=False, type_text=None, columns=None):
        self.setof, self.columns = setof, columns
        self.type_text = type_text
        self.type = norm_type(type_text) if type_text else None

    def show(self):
        if self.columns is not None:
            inner = ", ".join(f"{c.name} {c.type_text}" for c in self.columns)
            return ("SETOF " if self.setof else "") + f"({inner})"
        return ("SETOF " if self.setof else "") + (self.type_text or "?")


def parse_result(tokens):
    """The tokens after RETURNS (or the docs' arrow): [SETOF] type,
    [SETOF] (columns) or TABLE (columns)."""
    if tokens and tokens[0].is_word("TABLE") and len(tokens) > 1 and tokens[1].is_op("("):
        return Result(True, columns=parse_args(tokens[2:closing(tokens, 1)]))
    setof = bool(tokens) and tokens[0].is_word("SETOF")
    rest = tokens[1:] if setof else tokens
    if rest and rest[0].is_op("("):
        return Result(setof, columns=parse_args(rest[1:closing(rest, 0)]))
    return Result(setof, type_text=join(rest)) if rest else None


def split_out(args, result):
    """Input arguments, and the result with OUT arguments as its columns."""
    inputs = [a for a in args if a.mode != "OUT"]
    outs = [a for a in args if a.mode in ("OUT", "INOUT")]
    if outs and (result is None or result.columns is None and result.type in ("record", None)):
        result = Result(bool(result and result.setof), columns=outs)
    return inputs, result


def identity(inputs):
    return tuple(a.type for a in inputs)


def show_signature(name, inputs):
    return f"{name}({', '.join(a.type_text for a in inputs)})"


# ---- the SQL script ---------------------------------------------------------

class Function:
    def __init__(self, name, inputs, result, line):
        self.name, self.inputs, self.result, self.line = name, inputs, result, line
        self.comment = None

    def key(self):
        return (self.name, identity(self.inputs))


def qualified_name(tokens, i):
    """(name, next index) of a possibly schema-qualified name at tokens[i];
    name is None when the schema is not the extension's."""
    if i >= len(tokens) or tokens[i].kind not in ("word", "ident"):
        return None, i
    if i + 2 < len(tokens) and tokens[i + 1].is_op("."):
        schema = tokens[i].text if tokens[i].text == "@extschema@" else tokens[i].name()
        return (tokens[i + 2].name() if schema in SCHEMAS else None), i + 3
    return tokens[i].name(), i + 1


def function_reference(tokens, i):
    """(name, input identity or None, next index) of "name[(args)]" as
    DROP, ALTER and COMMENT ON FUNCTION write it."""
    name, i = qualified_name(tokens, i)
    if i < len(tokens) and tokens[i].is_op("("):
        end = closing(tokens, i)
        inputs, _ = split_out(parse_args(tokens[i + 1:end]), None)
        return name, identity(inputs), end + 1
    return name, None, i


def string_value(tok):
    if tok.text.startswith("$"):
        return tok.text[tok.text.index("$", 1) + 1:tok.text.rindex("$", 0, len(tok.text) - 1)]
    body = tok.text[2:-1] if tok.text[0] in "eE" else tok.text[1:-1]
    return body.replace("''", "'")


def skip_words(tokens, i, *words):
    while i < len(tokens) and tokens[i].is_word(*words):
        i += 1
    return i


class Surface:
    """The functions, views and tables the script leaves in the schema."""

    def __init__(self):
        self.functions = {}      # (name, identity) -> Function
        self.relations = {}      # name -> (kind, line)

    def drop_functions(self, name, ident):
        for key in [k for k in self.functions if k[0] == name and ident in (None, k[1])]:
            del self.functions[key]

    def statement(self, toks):
        words = [t.text.upper() if t.kind == "word" else t.text for t in toks[:8]]
        if words[:1] == ["CREATE"]:
            i = 3 if words[1:3] == ["OR", "REPLACE"] else 1
            i = skip_words(toks, i, "GLOBAL", "LOCAL", "TEMP", "TEMPORARY", "UNLOGGED",
                           "RECURSIVE", "MATERIALIZED")
            if i < len(toks) and toks[i].is_word("FUNCTION", "PROCEDURE"):
                self.create_function(toks, i + 1)
            elif i < len(toks) and toks[i].is_word("VIEW", "TABLE"):
                kind = toks[i].text.lower()
                i = i + 4 if toks[i + 1].is_word("IF") else i + 1    # IF NOT EXISTS
                name, _ = qualified_name(toks, i)
                if name:
                    self.relations[name] = ("view" if "MATERIALIZED" in words or kind == "view"
                                            else "table", toks[0].line)
        elif words[:2] == ["DROP", "FUNCTION"] or words[:2] == ["DROP", "PROCEDURE"]:
            i = 4 if words[2:4] == ["IF", "EXISTS"] else 2
            for piece in split_top(toks[i:]):
                name, ident, _ = function_reference(piece, 0)
                if name:
                    self.drop_functions(name, ident)
        elif words[:1] == ["DROP"] and words[1:2] in (["TABLE"], ["VIEW"]) or \
                words[:3] == ["DROP", "MATERIALIZED", "VIEW"]:
            i = 3 if words[1] == "MATERIALIZED" else 2
            i = i + 2 if words[i:i + 2] == ["IF", "EXISTS"] else i
            for piece in split_top(toks[i:]):
                name, _ = qualified_name(piece, 0)
                self.relations.pop(name, None)
        elif words[:2] in (["ALTER", "FUNCTION"], ["ALTER", "PROCEDURE"]):
            name, ident, i = function_reference(toks, 2)
            if name and i + 2 < len(toks) and toks[i].is_word("RENAME") and toks[i + 1].is_word("TO"):
                for key in [k for k in self.functions if k[0] == name and ident in (None, k[1])]:
                    fn = self.functions.pop(key)
                    fn.name = toks[i + 2].name()
                    self.functions[fn.key()] = fn
        elif words[:1] == ["ALTER"] and words[1:2] in (["TABLE"], ["VIEW"]):
            i = skip_words(toks, 2, "IF", "EXISTS", "ONLY")
            name, i = qualified_name(toks, i)
            if name in self.relations and i + 2 < len(toks) and toks[i].is_word("RENAME") \
                    and toks[i + 1].is_word("TO"):
                self.relations[toks[i + 2].name()] = self.relations.pop(name)
        elif words[:3] == ["COMMENT", "ON", "FUNCTION"] or words[:3] == ["COMMENT", "ON", "PROCEDURE"]:
            name, ident, i = function_reference(toks, 3)
            fn = self.functions.get((name, ident))
            if fn and i + 1 < len(toks) and toks[i].is_word("IS"):
                fn.comment = string_value(toks[i + 1]) if toks[i + 1].kind == "string" else None

    def create_function(self, toks, i):
        name, i = qualified_name(toks, i)
        if not name or i >= len(toks) or not toks[i].is_op("("):
            return
        end = closing(toks, i)
        args = parse_args(toks[i + 1:end])
        result = None
        if end + 1 < len(toks) and toks[end + 1].is_word("RETURNS"):
            k = end + 2
            stop = k + 1 if k < len(toks) and toks[k].is_word("SETOF") else k
            if stop < len(toks) and toks[stop].is_word("TABLE"):
                stop = closing(toks, stop + 1) + 1
            while stop < len(toks) and not toks[stop].is_word(
                    "LANGUAGE", "AS", "SET", "IMMUTABLE", "STABLE", "VOLATILE", "STRICT",
                    "CALLED", "RETURNS", "SECURITY", "EXTERNAL", "PARALLEL", "COST", "ROWS",
                    "WINDOW", "LEAKPROOF", "NOT", "TRANSFORM", "SUPPORT", "BEGIN", "RETURN"):
                stop += 1
            result = parse_result(toks[k:stop])
        inputs, result = split_out(args, result)
        fn = Function(name, inputs, result, toks[0].line)
        old = self.functions.get(fn.key())
        if old:                           # CREATE OR REPLACE: the last one counts,
            fn.comment = old.comment      # and the function keeps its comment
        self.functions[fn.key()] = fn


def read_sql(path):
    surface = Surface()
    for toks in statements(tokenize(Path(path).read_text())):
        surface.statement(toks)
    return surface


def internal_reason(fn):
    """Why a function needs no section, or None: see the header."""
    if fn.result and fn.result.columns is None and fn.result.type in INTERNAL_RESULTS:
        return "trigger function"
    if fn.comment and INTERNAL_COMMENT in fn.comment.lower():
        return f'COMMENT says "{INTERNAL_COMMENT}"'
    return None


# ---- the reference ----------------------------------------------------------

class Signature:
    def __init__(self, name, inputs, result, line):
        self.name, self.inputs, self.result, self.line = name, inputs, result, line


class Section:
    def __init__(self, name, kind, chapter, line):
        self.name, self.kind, self.chapter, self.line = name, kind, chapter, line
        self.signatures = []
        self.has_block = False


HEADING_RE = re.compile(r"^### +`?([A-Za-z_]\w*)`?(?:\(\))?(?: +\((\w+)\))? *$")


def parse_block(text, first_line):
    """The signatures of a fenced block: each starts at column 0 with
    [vectorbea.]name( and runs to the next; "-> ..." (or RETURNS) after
    the closing parenthesis is the result."""
    tokens = tokenize(text, first_line)
    starts = [k for k, tok in enumerate(tokens) if tok.col == 0 and tok.kind in ("word", "ident")]
    signatures = []
    for n, start in enumerate(starts):
        toks = tokens[start:starts[n + 1] if n + 1 < len(starts) else len(tokens)]
        i = 2 if len(toks) > 2 and toks[1].is_op(".") and toks[0].name() in SCHEMAS else 0
        if i + 1 >= len(toks) or not toks[i + 1].is_op("("):
            continue
        end = closing(toks, i + 1)
        args = parse_args(toks[i + 2:end])
        rest = toks[end + 1:]
        result = None
        if rest and (rest[0].text in ("→", "->") or rest[0].is_word("RETURNS")):
            result = parse_result(rest[1:])
        inputs, result = split_out(args, result)
        signatures.append(Signature(toks[i].name(), inputs, result, toks[i].line))
    return signatures


def read_reference(path):
    """(sections, mentions): the ### sections of the Functions and Tables
    chapters, and the names written vectorbea.name in them (first line)."""
    lines = Path(path).read_text().split("\n")
    sections, mentions, chapter, fence = [], {}, None, False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("## "):
            chapter = line[3:].strip()
        if chapter not in ("Functions", "Tables"):
            i += 1
            continue
        for m in re.finditer(r"\bvectorbea\.([a-z_]\w*)\b", line if not fence else ""):
            mentions.setdefault(m.group(1), i + 1)
        m = HEADING_RE.match(line) if not fence else None
        if line.startswith("### ") and not fence and not m:
            sections.append(Section(line[4:].strip(), "unreadable", chapter, i + 1))
        elif m:
            kind = m.group(2) or ("function" if chapter == "Functions" else "relation")
            section = Section(m.group(1), kind, chapter, i + 1)
            sections.append(section)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and lines[j].startswith("```"):
                k = j + 1
                while k < len(lines) and not lines[k].startswith("```"):
                    k += 1
                section.has_block = True
                section.signatures = parse_block("\n".join(lines[j + 1:k]), j + 2)
        i += 1
    return sections, mentions


# ---- the comparison ---------------------------------------------------------

class Report:
    def __init__(self, doc, sql):
        self.doc, self.sql, self.problems = doc, sql, []

    def add(self, what, name, doc_line, sql_line, detail):
        where = (f"docs {self.doc}:{doc_line}" if doc_line else "docs -") + ", " + \
                (f"SQL {self.sql}:{sql_line}" if sql_line else "SQL -")
        self.problems.append(f"{what}: {name} ({where}): {detail}")


def compare_signature(report, sig, fn):
    """A documented signature against the overload it documents."""
    label = show_signature(fn.name, fn.inputs)
    if len(sig.inputs) != len(fn.inputs):
        report.add("arguments differ", label, sig.line, fn.line,
                   f"the docs list {len(sig.inputs)} ({', '.join(a.show() for a in sig.inputs)}), "
                   f"the SQL {len(fn.inputs)} ({', '.join(a.show() for a in fn.inputs)})")
    else:
        for n, (d, s) in enumerate(zip(sig.inputs, fn.inputs), 1):
            if d.name != s.name:
                report.add("argument name differs", label, d.line, s.line,
                           f"argument {n} is {d.name or '(unnamed)'} in the docs, "
                           f"{s.name or '(unnamed)'} in the SQL")
            if d.type != s.type:
                report.add("argument type differs", label, d.line, s.line,
                           f"argument {n} ({s.name or d.name or 'unnamed'}) is {d.type_text} "
                           f"in the docs, {s.type_text} in the SQL")
            if d.mode != s.mode:
                report.add("argument mode differs", label, d.line, s.line,
                           f"argument {n} ({s.name or 'unnamed'}) is {d.mode} in the docs, "
                           f"{s.mode} in the SQL")
            dd = norm_default(d.default) if d.default else None
            sd = norm_default(s.default) if s.default else None
            if dd != sd:
                report.add("argument default differs", label, d.line, s.line,
                           f"argument {n} ({s.name or 'unnamed'}) has "
                           f"{'DEFAULT ' + join(d.default) if d.default else 'no default'} in the docs, "
                           f"{'DEFAULT ' + join(s.default) if s.default else 'no default'} in the SQL")
    compare_result(report, label, sig, fn)


def compare_result(report, label, sig, fn):
    d, s = sig.result, fn.result
    if d is None:
        report.add("result missing", label, sig.line, fn.line,
                   f"the docs give no result (→ ...); the SQL returns {s.show() if s else 'nothing'}")
        return
    if s is None:
        report.add("result differs", label, sig.line, fn.line,
                   f"the docs return {d.show()}, the SQL nothing (a procedure?)")
        return
    if d.setof == s.setof and d.columns is not None and s.columns is not None \
            and len(d.columns) == len(s.columns):
        for n, (dc, sc) in enumerate(zip(d.columns, s.columns), 1):
            if (dc.name, dc.type) != (sc.name, sc.type):
                report.add("result column differs", label, dc.line, sc.line,
                           f"column {n} is {dc.name} {dc.type_text} in the docs, "
                           f"{sc.name} {sc.type_text} in the SQL")
    elif d.setof != s.setof or (d.columns is None) != (s.columns is None) or d.type != s.type:
        report.add("result differs", label, sig.line, fn.line,
                   f"the docs return {d.show()}, the SQL {s.show()}")


def pair(signatures, overloads):
    """Pairs (signature, function), then the signatures and the overloads
    left alone: first by input types, then by argument names, then the last
    one of each."""
    sigs, fns, pairs = list(signatures), list(overloads), []
    for match in (lambda g, f: identity(g.inputs) == identity(f.inputs),
                  lambda g, f: [a.name for a in g.inputs] == [a.name for a in f.inputs]):
        for g in list(sigs):
            f = next((f for f in fns if match(g, f)), None)
            if f:
                pairs.append((g, f))
                sigs.remove(g)
                fns.remove(f)
    if len(sigs) == 1 and len(fns) == 1:
        pairs.append((sigs.pop(), fns.pop()))
    return pairs, sigs, fns


def check_sections(report, sections, surface, by_name):
    """Each section names what exists; returns (documented, signatures):
    the section of each function name the docs cover, and the signatures
    given for each name."""
    documented, signatures = {}, {}
    for sec in sections:
        if sec.kind == "unreadable":
            report.add("unreadable heading", sec.name, sec.line, None,
                       "a heading is ### name, ### name (view) or ### name (table)")
        elif sec.kind == "function":
            sql_line = by_name[sec.name][0].line if sec.name in by_name else None
            if not sec.signatures:
                report.add("no signature", sec.name, sec.line, sql_line,
                           "the block under the heading holds no vectorbea.name(arguments) line"
                           if sec.has_block else "no fenced block right under the heading with "
                           "vectorbea.name(arguments) → result")
            names = list(dict.fromkeys(g.name for g in sec.signatures)) or [sec.name]
            if sec.name not in names:
                report.add("heading differs from signature", sec.name, sec.line, sql_line,
                           f"the heading names {sec.name}, the signature {', '.join(names)}")
            for g in sec.signatures:
                signatures.setdefault(g.name, []).append(g)
            for name in names:
                documented.setdefault(name, sec)
                if name not in by_name:
                    kind = surface.relations.get(name, (None,))[0]
                    report.add("no such function", name, sec.line, None,
                               "the section names a function the SQL does not create"
                               + (f" ({name} is a {kind}: head it ### {name} ({kind}))" if kind else ""))
        else:
            want = {"view": ("view",), "table": ("table",), "relation": ("table", "view")}.get(sec.kind)
            rel = surface.relations.get(sec.name)
            if want is None:
                report.add("unknown section kind", sec.name, sec.line, None,
                           f"({sec.kind}): a section is a function, (view) or (table)")
            elif rel is None or rel[0] not in want:
                report.add(f"no such {' or '.join(want)}", sec.name, sec.line, rel and rel[1],
                           "the section names " + (f"a {rel[0]}" if rel else
                                                   f"no {' or '.join(want)} the SQL creates"))
    return documented, signatures


def check_functions(report, by_name, internal, documented, signatures):
    """Every function users call has a section, each signature matches its overload."""
    for name, fns in sorted(by_name.items()):
        public = [f for f in fns if f.key() not in internal]
        if name not in documented:
            for fn in public:
                report.add("no section", show_signature(name, fn.inputs), None, fn.line,
                           "a function users call (not a trigger function, COMMENT without "
                           f'"{INTERNAL_COMMENT}") has no ### section')
            continue
        sigs = signatures.get(name, [])
        if not sigs:
            continue                        # reported as "no signature"
        pairs, lone_sigs, lone_fns = pair(sigs, public or fns)
        for g, fn in pairs:
            compare_signature(report, g, fn)
        for g in lone_sigs:
            report.add("signature matches no overload", show_signature(name, g.inputs), g.line,
                       fns[0].line, "the SQL has " + "; ".join(show_signature(name, f.inputs)
                                                               for f in fns))
        for fn in lone_fns:
            report.add("overload not documented", show_signature(name, fn.inputs),
                       documented[name].line, fn.line,
                       f"the section of {name} gives no signature for this overload")


def check_relations(report, relations, covered):
    for name, (kind, line) in sorted(relations.items()):
        if name not in covered:
            report.add(f"{kind} not documented", name, None, line, "no ### section, and the "
                       f"Functions and Tables chapters never name vectorbea.{name}")


def stale_or_missing(sql_path, doc_path):
    """Why the files cannot be checked, or None."""
    for path in (sql_path, doc_path):
        if not Path(path).is_file():
            return f"cannot read {path}" + (" (generated: run make)" if Path(path) == DEFAULT_SQL else "")
    if Path(sql_path) == DEFAULT_SQL:
        sources = [DEFAULT_SQL.with_name(n) for n in SQL_SOURCES]
        if any(s.is_file() and s.stat().st_mtime > DEFAULT_SQL.stat().st_mtime for s in sources):
            return f"{display(sql_path)} is older than its sources ({', '.join(SQL_SOURCES)}): run make"
    return None


def check(sql_path, doc_path):
    trouble = stale_or_missing(sql_path, doc_path)
    if trouble:
        print(f"check_reference: {trouble}", file=sys.stderr)
        return 2
    surface = read_sql(sql_path)
    sections, mentions = read_reference(doc_path)
    report = Report(display(doc_path), display(sql_path))
    by_name = {}
    for fn in sorted(surface.functions.values(), key=lambda f: f.line):
        by_name.setdefault(fn.name, []).append(fn)
    internal = {fn.key(): internal_reason(fn) for fn in surface.functions.values()
                if internal_reason(fn)}

    documented, signatures = check_sections(report, sections, surface, by_name)
    check_functions(report, by_name, internal, documented, signatures)
    covered = {sec.name for sec in sections if sec.kind != "function"} | set(mentions)
    check_relations(report, surface.relations, covered)

    for problem in report.problems:
        print(problem)
    reasons = {}
    for key, reason in sorted(internal.items()):
        reasons.setdefault(reason, []).append(key[0])
    for reason, names in reasons.items():
        print(f"internal ({reason}): {', '.join(names)}")
    public = {f.name for f in surface.functions.values() if f.key() not in internal}
    counts = []
    for kind in ("view", "table"):
        names = [n for n, (k, _) in surface.relations.items() if k == kind]
        counts.append(f"{sum(n in covered for n in names)} of {len(names)} {kind}s")
    summary = (f"reference: {sum(n in documented for n in public)} of {len(public)} functions, "
               f"{counts[0]}, {counts[1]} documented")
    if report.problems:
        summary += f"; {len(report.problems)} problem{'s' if len(report.problems) > 1 else ''}"
    print(summary)
    return 1 if report.problems else 0


def display(path):
    return display_under(path, ROOT)


# ---- self-test --------------------------------------------------------------

SELF_TEST_SQL = r"""
\echo Use "CREATE EXTENSION t" to load this file. \quit
/* a comment /* nested */ CREATE FUNCTION @extschema@.in_comment() RETURNS void */
CREATE TABLE @extschema@.things (id int);
CREATE VIEW @extschema@.thing_view AS SELECT 1;
CREATE VIEW @extschema@.gone AS SELECT 1;
DROP VIEW @extschema@.gone;
CREATE FUNCTION @extschema@.price(amount numeric(10,2),
        currency text DEFAULT 'EUR', -- a comment, with (parentheses
        at timestamp with time zone DEFAULT pg_catalog.now(),
        VARIADIC tags text[] DEFAULT '{a,b}')
    RETURNS numeric LANGUAGE sql AS $$ SELECT 1; CREATE FUNCTION @extschema@.in_body() $$;
CREATE FUNCTION @extschema@.price(int4, double precision) RETURNS SETOF record
    LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION @extschema@.old(x int) RETURNS int LANGUAGE sql AS 'SELECT 1';
DROP FUNCTION @extschema@.old(int);
CREATE FUNCTION @extschema@.moved(a int) RETURNS int LANGUAGE sql AS 'SELECT 1';
DROP FUNCTION IF EXISTS @extschema@.moved;
CREATE FUNCTION @extschema@.moved(a int, b int) RETURNS int LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION @extschema@.rows(IN run uuid, node OUT text, OUT n bigint)
    RETURNS SETOF record LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION @extschema@.to_rename(int) RETURNS int LANGUAGE sql AS 'SELECT 1';
ALTER FUNCTION @extschema@.to_rename(integer) RENAME TO renamed;
CREATE TABLE @extschema@.snapshot AS SELECT 1;
CREATE FUNCTION @extschema@.things_trigger() RETURNS trigger LANGUAGE plpgsql AS $t$ BEGIN END $t$;
CREATE FUNCTION @extschema@.rows_body(run uuid) RETURNS int LANGUAGE sql AS 'SELECT 1';
COMMENT ON FUNCTION @extschema@.rows_body(uuid) IS 'The query of rows(); not for direct use.';
CREATE OR REPLACE FUNCTION @extschema@.rows_body(run uuid) RETURNS int LANGUAGE sql AS 'SELECT 2';
CREATE FUNCTION @extschema@.undocumented() RETURNS int LANGUAGE sql AS E'SELECT \'1\'::int';
"""

SELF_TEST_DOC = """\
# Reference

## Functions

### price

```sql
vectorbea.price(amount numeric, currency text DEFAULT 'EUR',
                at timestamptz DEFAULT now(), VARIADIC tags text[] DEFAULT '{a,b}') → numeric
vectorbea.price(integer, float8) → SETOF record
```

### moved

```sql
vectorbea.moved(a int, %s int) → integer
```

### rows

```sql
vectorbea.rows(run uuid) → SETOF (node text, n int8)
```

### renamed

```sql
vectorbea.renamed(int4) → int
```

### gone (view)

### thing_view (view)

## Tables

### things

Its rows are copied into `vectorbea.snapshot`.
"""


def self_test():
    """The checker on SELF_TEST_SQL and SELF_TEST_DOC: the page is right but
    for two problems (a dropped view it documents, a function it does not);
    with an argument renamed, a third."""
    script = Path(__file__).resolve()

    with tempfile.TemporaryDirectory(prefix="check_reference.") as tmp:
        sql = Path(tmp) / "t.sql"
        sql.write_text(SELF_TEST_SQL)
        outputs = {}
        for kind, second in (("clean", "b"), ("broken", "c")):
            doc = Path(tmp) / f"{kind}.md"
            doc.write_text(SELF_TEST_DOC % second)
            outputs[kind] = run_checker(script, "--sql", sql, "--doc", doc)
        doc_text = SELF_TEST_DOC % "b"
        common = [
            f"no such view: gone (docs {tmp}/%s.md:{line_of(doc_text, '### gone')}, SQL -): "
            "the section names no view the SQL creates",
            f"no section: undocumented() (docs -, SQL {sql}:"
            f"{line_of(SELF_TEST_SQL, 'CREATE FUNCTION @extschema@.undocumented')}): a function users "
            'call (not a trigger function, COMMENT without "not for direct use") has no ### section',
            'internal (COMMENT says "not for direct use"): rows_body',
            "internal (trigger function): things_trigger"]
        renamed = (f"argument name differs: moved(int, int) (docs {tmp}/broken.md:"
                   f"{line_of(doc_text, ', b int')}, SQL {sql}:"
                   f"{line_of(SELF_TEST_SQL, 'moved(a int, b int)')}): argument 2 is c in the docs, "
                   "b in the SQL")
        summary = "reference: 4 of 5 functions, 1 of 1 views, 2 of 2 tables documented; %d problems"
        for kind, want in (("clean", [common[0] % "clean"] + common[1:] + [summary % 2]),
                           ("broken", [common[0] % "broken", renamed] + common[1:] + [summary % 3])):
            expect_lines(kind, outputs[kind], want)
    print("self-test: ok")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Check that docs/sql-reference.md documents the extension's SQL surface.")
    parser.add_argument("--sql", default=str(DEFAULT_SQL),
                        help="the install script (default: %(default)s)")
    parser.add_argument("--doc", default=str(DEFAULT_DOC),
                        help="the SQL reference (default: %(default)s)")
    parser.add_argument("--self-test", action="store_true", help="test the checker itself")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    return check(args.sql, args.doc)


if __name__ == "__main__":
    sys.exit(main())
