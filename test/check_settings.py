#!/usr/bin/env python3
"""check_settings.py -- docs/operations.md documents every setting as the C code defines it.

What it checks
    The settings (GUCs) that src/*.c defines with DefineCustomBoolVariable,
    DefineCustomIntVariable, DefineCustomRealVariable,
    DefineCustomStringVariable and DefineCustomEnumVariable, against the
    table of the "## Settings" chapter of docs/operations.md (a table whose
    header has a "setting" column; one row a setting):
    - every setting has a row, and every row names a setting;
    - the default (the "default" column) is the boot value;
    - the range, where the docs give one (a "range" column, or else a
      "(low to high)" in the "meaning" column), is the minimum and maximum;
    - who can set it and when it takes effect (a "who can set it" column)
      is the context.  The cell is read by its words, the first that
      occurs in this order: "restart" PGC_POSTMASTER, "reload" PGC_SIGHUP,
      "read only" PGC_INTERNAL, "superuser, at connection start"
      PGC_SU_BACKEND, "connection start" PGC_BACKEND, "superuser"
      PGC_SUSET, "anyone", "any session" or "per session" PGC_USERSET (a
      PGC_ name written out counts as itself); a cell with none of them is
      reported as unreadable;
    - the type and unit, where the docs give them (a "type" column such as
      "integer, ms", as docs/sql-reference.md writes it).
    A column the table lacks is not checked, so --doc docs/sql-reference.md
    checks that page's Settings table (type, default, range) too.

How values compare
    As PostgreSQL reads them.  An integer with a unit (GUC_UNIT_KB,
    GUC_UNIT_MS, ...) compares in bytes or milliseconds: with GUC_UNIT_MS,
    1000, "1s", "1000ms" and "1000 ms" are the same default, and a bare
    number is in the setting's own unit; a unit given for a setting without
    one, or a memory unit for a time, differs.  Ranges may also use long
    units (days, years) and "about": "about 24 days" agrees with a value
    within 10% of it (INT_MAX ms is 24.9 days).  Booleans: on, off, true,
    false, yes, no, 1, 0.  Strings: a NULL boot value is the empty string
    (SHOW prints it so), and `''`, `""` and "(none)" are the empty string;
    'quoted' values lose their quotes.  Enums: any name of the options table
    that has the boot value, case-insensitively.  The default is the first
    code span of the cell (or the text before a parenthesis); a parenthesis
    after it, such as "`1MB` (1024 kB)", must agree as well when it reads as
    a number ("`0` (off)" is a gloss).

How the C is read
    Each call's arguments, split at its top-level commas, outside comments
    and strings: the name, boot value, minimum and maximum, options table,
    context and flags by position.  Object-like #defines of the same file
    or of src/*.h are expanded, so are gettext_noop(), _(), N_(),
    CppAsString() and CppAsString2(); adjacent string literals are joined;
    integer and real expressions (5 * 60 * 1000, 1024 * 1024) are evaluated,
    with INT_MAX and friends known.  Enum constants come from enum { }
    declarations of src/, an options table from its config_enum_entry
    array.  Anything else (a variable, a function call) is reported as
    unreadable rather than guessed.

The rules chosen (look for RULE in the code)
    - No setting is exempt.  The docs give the test settings
      (vectorbea.test_*, some of them GUC_NOT_IN_SAMPLE) rows of their own,
      saying they are for tests: a reserved-prefix setting that changes
      what the engine does must be explained even when nobody should set it
      in production.  So a vectorbea.test_* setting needs a row like any
      other, and its row must say "test".  GUC_NO_SHOW_ALL (no setting has
      it today) exempts nothing either: it hides a setting from SHOW ALL,
      not from SET or postgresql.conf.
    - A context written as `process_shared_preload_libraries_in_progress ?
      A : B` counts as A: the context of a server that preloads the library,
      the only one where such a setting is read (vectorbea.database is
      PGC_POSTMASTER there and an inert PGC_SIGHUP elsewhere; the docs say
      "restart" and explain the other in prose).  Any other conditional
      context is unreadable.

Why
    Operators learn the settings from docs/operations.md.  A default that
    changed in C but not in the docs, a setting added without a row, a row
    left over from a removed one, or a setting that became PGC_USERSET
    while the docs say only superusers can set it, each misleads them about
    what a server does.  The C is the truth; the docs follow it.

How to read the output
    One line per problem: what, which setting, the docs line and the source
    line (file:line, "-" for none), and what differs; then the test
    settings (information), and a last line "settings: N of M documented",
    with "; K problems" when there are any.  Exit status 1 when any problem
    is found, 2 when a file cannot be read (or holds no settings or no
    settings table).

Usage
    test/check_settings.py [--src DIR] [--doc FILE] [--self-test]
      --src DIR    the C sources (default: src/)
      --doc FILE   the page documenting the settings (default: docs/operations.md)
      --self-test  check the checker on a small generated source and page
"""

import argparse
import ast
import math
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "lib"))
from doc_checks import closing, display as display_under, expect_lines, line_of, run_checker, split_top  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = ROOT / "src"
DEFAULT_DOC = ROOT / "docs" / "operations.md"
CHAPTER = "Settings"                      # the "## " heading the table is under

# The definers: the type, and the position of each argument we read.
DEFINERS = {
    "DefineCustomBoolVariable": ("bool", dict(boot=4, context=5, flags=6), 10),
    "DefineCustomIntVariable": ("int", dict(boot=4, min=5, max=6, context=7, flags=8), 12),
    "DefineCustomRealVariable": ("real", dict(boot=4, min=5, max=6, context=7, flags=8), 12),
    "DefineCustomStringVariable": ("string", dict(boot=4, context=5, flags=6), 10),
    "DefineCustomEnumVariable": ("enum", dict(boot=4, options=5, context=6, flags=7), 11),
}
# Constants of the C library and PostgreSQL that defaults and ranges use
# (MAX_KILOBYTES as on 64-bit Linux).
BUILTINS = {"INT_MAX": 2**31 - 1, "INT_MIN": -2**31, "PG_INT32_MAX": 2**31 - 1,
            "PG_INT32_MIN": -2**31, "MAX_KILOBYTES": 2**31 - 1, "DBL_MAX": sys.float_info.max,
            "FLT_MAX": 3.4028234663852886e38, "true": 1, "false": 0, "TRUE": 1, "FALSE": 0}
# RULE: a context that depends on this is the one of a preloading server (header).
PRELOAD_FLAG = "process_shared_preload_libraries_in_progress"
CONTEXTS = ("PGC_INTERNAL", "PGC_POSTMASTER", "PGC_SIGHUP", "PGC_SU_BACKEND",
            "PGC_BACKEND", "PGC_SUSET", "PGC_USERSET")
# RULE: test settings are documented like the others, and say so (header).
TEST_NAME_RE = re.compile(r"^vectorbea\.test_")

# Units: what one of the setting's unit is, in bytes or milliseconds, and
# its name (blocks of BLCKSZ and XLOG_BLCKSZ as built by default).
GUC_UNITS = {"GUC_UNIT_BYTE": ("memory", 1, "B"), "GUC_UNIT_KB": ("memory", 1024, "kB"),
             "GUC_UNIT_MB": ("memory", 1024 ** 2, "MB"),
             "GUC_UNIT_BLOCKS": ("memory", 8192, "blocks of 8kB"),
             "GUC_UNIT_XBLOCKS": ("memory", 8192, "WAL blocks of 8kB"),
             "GUC_UNIT_MS": ("time", 1, "ms"), "GUC_UNIT_S": ("time", 1000, "s"),
             "GUC_UNIT_MIN": ("time", 60 * 1000, "min")}
# The units the docs may write: PostgreSQL's, then long forms for ranges.
DOC_UNITS = {"B": ("memory", 1), "kB": ("memory", 1024), "MB": ("memory", 1024 ** 2),
             "GB": ("memory", 1024 ** 3), "TB": ("memory", 1024 ** 4),
             "us": ("time", 0.001), "ms": ("time", 1), "s": ("time", 1000),
             "min": ("time", 60000), "h": ("time", 3600000), "d": ("time", 86400000)}
LONG_UNITS = {"byte": "B", "bytes": "B", "KB": "kB", "sec": "s", "second": "s", "seconds": "s",
              "minute": "min", "minutes": "min", "mins": "min", "hour": "h", "hours": "h",
              "day": "d", "days": "d"}
YEAR_MS = 365 * 86400000
ABOUT = 0.10                              # how far "about X" may be from the value
# How PostgreSQL's SHOW prints a value: the largest unit it divides exactly.
SHOW_UNITS = {"memory": (("TB", 1024 ** 4), ("GB", 1024 ** 3), ("MB", 1024 ** 2),
                         ("kB", 1024), ("B", 1)),
              "time": (("d", 86400000), ("h", 3600000), ("min", 60000), ("s", 1000), ("ms", 1))}
BOOLS = {"on": True, "true": True, "yes": True, "1": True,
         "off": False, "false": False, "no": False, "0": False}
EMPTY = {"''", '""', "(none)", "(empty)"}
TYPE_WORDS = (("bool", "bool"), ("integer", "int"), ("int", "int"), ("real", "real"),
              ("float", "real"), ("floating", "real"), ("enum", "enum"), ("string", "string"))


class Unreadable(Exception):
    """A C argument the checker does not evaluate (a variable, a call)."""


# ---- C tokens ---------------------------------------------------------------

C_TOKEN_RE = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>(?:u8|[uUL])?"(?:[^"\\\n]|\\.)*")
  | (?P<char>'(?:[^'\\\n]|\\.)*')
  | (?P<word>[A-Za-z_]\w*)
  | (?P<number>\.?\d(?:[eEpP][-+]|[\w.])*)
  | (?P<op><<|>>|&&|\|\||[-+*/%&|^~!<>=?:]=?|\S)
""", re.X | re.S)


class Token:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind, self.text, self.line = kind, text, line

    def __repr__(self):
        return self.text


def tokenize(text):
    """Tokens of C text without comments; the lines of preprocessor
    directives must already be blank."""
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        m = C_TOKEN_RE.match(text, pos)
        if m.lastgroup not in ("space", "comment"):
            tokens.append(Token(m.lastgroup, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    return tokens


def read_c(path):
    """(tokens, defines) of a C file: the object-like #defines as token
    lists (function-like ones as None), the directive lines blanked."""
    lines = Path(path).read_text().split("\n")
    defines, out, i = {}, [], 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith("#"):
            out.append(line)
            i += 1
            continue
        directive = line
        out.append("")
        while directive.endswith("\\") and i + 1 < len(lines):
            i += 1
            directive = directive[:-1] + " " + lines[i]
            out.append("")
        i += 1
        m = re.match(r"\s*#\s*define\s+([A-Za-z_]\w*)(\()?(.*)$", directive)
        if m:
            body = re.sub(r"/\*.*?\*/|//.*$", " ", m.group(3))
            defines[m.group(1)] = None if m.group(2) else tokenize(body)
    return tokenize("\n".join(out)), defines


def show_c(tokens):
    return " ".join(t.text for t in tokens)


def c_string(text):
    """The value of one C string literal."""
    body = re.sub(r'^(u8|[uUL])?"', "", text)[:-1]
    simple = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
    return re.sub(r"\\(x[0-9a-fA-F]+|[0-7]{1,3}|.)",
                  lambda m: simple.get(m.group(1)) or
                  (chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x" else
                   chr(int(m.group(1), 8)) if m.group(1)[0].isdigit() else m.group(1)), body)


class Source:
    """The C of src/: defines, enum constants and options tables."""

    def __init__(self):
        self.header_defines = {}              # from src/*.h
        self.enum_constants = {}              # name -> int
        self.options = {}                     # config_enum_entry array -> [(name, value tokens)]

    def expand(self, tokens, defines, depth=0):
        """tokens with object-like macros and the string macros expanded."""
        if depth > 20:
            raise Unreadable(f"{show_c(tokens)} (macros nest too deep)")
        out, i = [], 0
        while i < len(tokens):
            tok = tokens[i]
            call = tok.kind == "word" and i + 1 < len(tokens) and tokens[i + 1].text == "("
            if call and tok.text in ("gettext_noop", "_", "N_", "CppAsString", "CppAsString2"):
                end = closing(tokens, i + 1)
                inner = tokens[i + 2:end]
                if tok.text == "CppAsString2":
                    inner = self.expand(inner, defines, depth + 1)
                if tok.text.startswith("CppAsString"):
                    text = "".join(t.text for t in inner).replace("\\", "\\\\").replace('"', '\\"')
                    out.append(Token("string", f'"{text}"', tok.line))
                else:
                    out.extend(self.expand(inner, defines, depth + 1))
                i = end + 1
                continue
            body = defines.get(tok.text, self.header_defines.get(tok.text)) \
                if tok.kind == "word" else None
            if body is not None:
                out.extend(self.expand(body, defines, depth + 1))
            else:
                out.append(tok)
            i += 1
        return out

    def string(self, tokens, defines):
        """A string argument: adjacent literals joined; NULL is None."""
        tokens = self.expand(tokens, defines)
        if [t.text for t in tokens] in (["NULL"], ["(", "NULL", ")"]):
            return None
        if not tokens or any(t.kind != "string" for t in tokens):
            raise Unreadable(show_c(tokens) or "(nothing)")
        return "".join(c_string(t.text) for t in tokens)

    def number(self, tokens, defines):
        """An integer or real expression of constants, as C computes it."""
        tokens = self.expand(tokens, defines)
        text = []
        for k, tok in enumerate(tokens):
            if tok.kind == "word":
                value = BUILTINS.get(tok.text, self.enum_constants.get(tok.text))
                if value is None:
                    # a cast such as (int) or (double): drop it
                    if 0 < k < len(tokens) - 1 and tokens[k - 1].text == "(" and \
                            tokens[k + 1].text == ")" and tok.text in ("int", "long", "double", "float"):
                        text.append("CAST")
                        continue
                    raise Unreadable(show_c(tokens))
                text.append(repr(value))
            elif tok.kind == "number":
                hex_digits = tok.text[:2].lower() == "0x"     # its F is a digit
                text.append(re.sub(r"[uUlL]+$" if hex_digits else r"(?<=[\d.])[uUlLfF]+$", "", tok.text))
            elif tok.kind == "op" and tok.text in ("+", "-", "*", "/", "%", "(", ")", "<<", ">>",
                                                    "|", "&", "^", "~"):
                text.append(tok.text)
            else:
                raise Unreadable(show_c(tokens))
        expr = re.sub(r"\( CAST \)", "", " ".join(text)).strip()
        try:
            return evaluate(ast.parse(expr, mode="eval").body)
        except (SyntaxError, ValueError, ZeroDivisionError):
            raise Unreadable(show_c(tokens)) from None

    def words(self, tokens, defines):
        return [t.text for t in self.expand(tokens, defines) if t.kind == "word"]


def evaluate(node):
    """A constant expression's value, with C's integer division."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.UnaryOp):
        v = evaluate(node.operand)
        ops = {ast.USub: lambda: -v, ast.UAdd: lambda: v, ast.Invert: lambda: ~v}
        if type(node.op) in ops:
            return ops[type(node.op)]()
    if isinstance(node, ast.BinOp):
        a, b = evaluate(node.left), evaluate(node.right)
        if isinstance(node.op, ast.Div):
            return int(a / b) if isinstance(a, int) and isinstance(b, int) else a / b
        if isinstance(node.op, ast.Mod) and isinstance(a, int) and isinstance(b, int):
            return int(math.fmod(a, b))
        ops = {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
               ast.LShift: lambda: a << b, ast.RShift: lambda: a >> b,
               ast.BitOr: lambda: a | b, ast.BitAnd: lambda: a & b, ast.BitXor: lambda: a ^ b}
        if type(node.op) in ops:
            return ops[type(node.op)]()
    raise ValueError("not a constant expression")


def scan_declarations(source, tokens, defines):
    """Enum constants and config_enum_entry arrays of one file."""
    for i, tok in enumerate(tokens):
        if tok.text == "enum" and tok.kind == "word":
            k = i + 1 + (i + 1 < len(tokens) and tokens[i + 1].kind == "word")
            if k < len(tokens) and tokens[k].text == "{":
                value = -1
                for item in split_top(tokens[k + 1:closing(tokens, k)]):
                    if not item or item[0].kind != "word":
                        continue
                    try:
                        value = source.number(item[2:], defines) if len(item) > 2 else value + 1
                    except Unreadable:
                        break
                    source.enum_constants[item[0].text] = value
        elif tok.text == "config_enum_entry" and i + 4 < len(tokens) and tokens[i + 1].kind == "word":
            k = i + 2                         # name [ ... ] = {
            if tokens[k].text == "[":
                k = closing(tokens, k) + 1
            if k + 1 >= len(tokens) or tokens[k].text != "=" or tokens[k + 1].text != "{":
                continue
            k += 1
            entries = []
            for item in split_top(tokens[k + 1:closing(tokens, k)]):
                if item and item[0].text == "{":
                    fields = split_top(item[1:closing(item, 0)])
                    if len(fields) >= 2 and fields[0] and fields[0][0].kind == "string":
                        entries.append((c_string(fields[0][0].text), fields[1]))
            source.options[tokens[i + 1].text] = (entries, defines)


# ---- the settings the C defines ---------------------------------------------

class Setting:
    def __init__(self, name, kind, path, line):
        self.name, self.kind, self.path, self.line = name, kind, path, line
        self.default = self.min = self.max = None
        self.context = None
        self.flags = []
        self.unit = None                      # GUC_UNITS' (kind, size of one, name) or None
        self.enum_names = []                  # for enums: the names of the boot value
        self.unreadable = []                  # (argument, expression)


def read_settings(src_dir):
    """The settings of src/*.c, in file and line order."""
    source = Source()
    files = []
    for path in sorted(Path(src_dir).glob("*.h")):
        tokens, defines = read_c(path)
        source.header_defines.update({k: v for k, v in defines.items() if v is not None})
        files.append((path, tokens, defines, False))
    for path in sorted(Path(src_dir).glob("*.c")):
        tokens, defines = read_c(path)
        files.append((path, tokens, defines, True))
    for path, tokens, defines, _ in files:
        scan_declarations(source, tokens, defines)
    settings = []
    for path, tokens, defines, is_c in files:
        for i, tok in enumerate(tokens):
            if is_c and tok.kind == "word" and tok.text in DEFINERS and \
                    i + 1 < len(tokens) and tokens[i + 1].text == "(":
                args = split_top(tokens[i + 2:closing(tokens, i + 1)])
                settings.append(read_definition(source, defines, tok, args, path))
    return settings


def read_definition(source, defines, tok, args, path):
    kind, where, count = DEFINERS[tok.text]
    try:
        name = source.string(args[0], defines) if args else None
    except Unreadable:
        name = None
    s = Setting(name or show_c(args[0] if args else []), kind, path, tok.line)
    if len(args) != count:
        s.unreadable.append(("arguments", f"{len(args)} of {count}"))
        return s
    if name is None:
        s.unreadable.append(("name", show_c(args[0])))

    def read(what, fn):
        try:
            return fn(args[where[what]], defines)
        except Unreadable as e:
            s.unreadable.append((what, str(e)))
            return None

    s.flags = read("flags", source.words) or []
    units = [GUC_UNITS[f] for f in s.flags if f in GUC_UNITS]
    s.unit = units[0] if units else None
    s.context = read("context", lambda a, d: read_context(source, a, d))
    if kind == "bool":
        boot = read("boot", source.number)
        s.default = None if boot is None else bool(boot)
    elif kind in ("int", "real"):
        s.default, s.min, s.max = (read(w, source.number) for w in ("boot", "min", "max"))
    elif kind == "string":
        s.default = read("boot", source.string) or ""      # SHOW prints NULL as ''
    else:
        s.default = read("boot", lambda a, d: enum_default(source, a, d, args[where["options"]]))
        s.enum_names = s.default or []
    return s


def read_context(source, tokens, defines):
    """A PGC_ constant.  RULE: `process_shared_preload_libraries_in_progress
    ? A : B` is A (header)."""
    texts = [t.text for t in source.expand(tokens, defines) if t.text not in "()"]
    if len(texts) == 1 and texts[0] in CONTEXTS:
        return texts[0]
    if len(texts) == 5 and texts[0] == PRELOAD_FLAG and texts[1] == "?" and texts[3] == ":" \
            and texts[2] in CONTEXTS and texts[4] in CONTEXTS:
        return texts[2]
    raise Unreadable(show_c(tokens))


def enum_default(source, boot, defines, options):
    """The names of the options table that have the boot value, the first
    (the one SHOW prints) first."""
    table = [t.text for t in options if t.kind == "word"]
    if len(table) != 1 or table[0] not in source.options:
        raise Unreadable(f"{show_c(boot)}; no config_enum_entry array {show_c(options)} in the sources")
    entries, table_defines = source.options[table[0]]
    try:
        value = source.number(boot, defines)
        names = [n for n, v in entries if source.number(v, table_defines) == value]
    except Unreadable:
        text = show_c(source.expand(boot, defines))
        names = [n for n, v in entries if show_c(source.expand(v, table_defines)) == text]
    if not names:
        raise Unreadable(f"{show_c(boot)} (no entry of {table[0]} has it)")
    return names


# ---- the docs ---------------------------------------------------------------

class Row:
    def __init__(self, name, cells, line):
        self.name, self.cells, self.line = name, cells, line


COLUMNS = {"setting": "name", "name": "name", "default": "default", "range": "range",
           "type": "type", "who can set it": "context", "context": "context",
           "meaning": "meaning", "description": "meaning"}


def split_row(line):
    """The cells of a table line; | inside a code span or escaped stays."""
    cells, current, code = [], "", False
    body = line.strip()
    body = body[1:] if body.startswith("|") else body
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and body[i + 1:i + 2] == "|":
            current += "|"
            i += 2
            continue
        if c == "`":
            code = not code
        if c == "|" and not code:
            cells.append(current.strip())
            current = ""
        else:
            current += c
        i += 1
    if current.strip():
        cells.append(current.strip())
    return cells


def read_docs(path):
    """The rows of the tables with a "setting" column in the "## Settings"
    chapter; None when there is no such table."""
    lines = Path(path).read_text().split("\n")
    rows, chapter, fence, header, found = [], None, False, None, False
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence = not fence
        if fence:
            continue
        if re.match(r"#{1,2} ", line):
            chapter = line.lstrip("#").strip()
        if chapter != CHAPTER or not line.lstrip().startswith("|"):
            header = None
            continue
        cells = split_row(line)
        if header is None:
            names = [COLUMNS.get(c.lower()) for c in cells]
            header = names if "name" in names else []
            found = found or bool(header)
        elif header and not all(re.fullmatch(r":?-+:?", c) for c in cells):
            row = dict(zip(header, cells))
            row.pop(None, None)
            name = row.get("name", "").strip("`").strip()
            if name and "." not in name:
                name = "vectorbea." + name
            rows.append(Row(name, row, n))
    return rows if found else None


def code_text(text):
    return text.replace("`", "").strip()


def split_default(cell):
    """(value, gloss): the first code span (or the text before a
    parenthesis), and what a parenthesis after it says."""
    m = re.match(r"\s*`([^`]*)`\s*(?:\((.*)\))?", cell)
    if m:
        return m.group(1).strip(), m.group(2)
    m = re.match(r"\s*([^(]*?)\s*(?:\((.*)\))?\s*$", cell)
    value = m.group(1) if m.group(1) or not m.group(2) else f"({m.group(2)})"
    return value, m.group(2) if m.group(1) else None


QUANTITY_RE = re.compile(r"^(about\s+|~)?([-+]?(?:\d{1,3}(?:,\d{3})+|\d*\.?\d+)(?:[eE][-+]?\d+)?)"
                         r"\s*([A-Za-z]+)?$")
RANGE_RE = r"(?:about\s+)?[-+]?[\d.,]+(?:\s*[A-Za-z]+)?"
MEANING_RANGE_RE = re.compile(rf"\(({RANGE_RE}) to ({RANGE_RE})[);,]")


def quantity(text, setting):
    """(value in the setting's measure, about?) of a number with an optional
    unit, or a string saying why it does not read."""
    m = QUANTITY_RE.match(code_text(text))
    if not m:
        return f"{text!r} is not a number"
    number = float(m.group(2).replace(",", ""))
    unit = m.group(3)
    if unit is None:
        scale = setting.unit[1] if setting.unit else 1
        return number * scale, bool(m.group(1))
    if unit in ("year", "years"):
        kind, size = "time", YEAR_MS
    else:
        unit = LONG_UNITS.get(unit, unit)
        if unit not in DOC_UNITS:
            return f"{text!r}: unknown unit {unit!r}"
        kind, size = DOC_UNITS[unit]
    if setting.unit is None:
        return f"{text!r} has a unit, the setting has none"
    if kind != setting.unit[0]:
        return f"{text!r} is a {kind}, the setting a {setting.unit[0]}"
    return number * size, bool(m.group(1))


def measure(setting, value):
    """A C value in bytes or milliseconds (as is without a unit)."""
    return value * setting.unit[1] if setting.unit else value


def show(setting, value):
    """A C value as SHOW prints it, and in the setting's own unit when
    that differs: 5min (300000 ms)."""
    if setting.kind == "bool":
        return "on" if value else "off"
    if setting.kind == "string":
        return f"'{value}'"
    if setting.kind == "enum":
        return value[0]
    if setting.kind == "real" or not setting.unit:
        return repr(value) if setting.kind == "real" else str(value)
    kind, size, name = setting.unit
    amount = value * size
    for unit, unit_size in SHOW_UNITS[kind]:
        if unit_size >= size and amount % unit_size == 0:
            if unit == name:
                return f"{value}{name}"
            return f"{amount // unit_size}{unit} ({value} {name})"
    return f"{value} {name}"


def agrees(doc_value, about, real):
    if about:
        return abs(doc_value - real) <= ABOUT * max(abs(real), 1)
    return abs(doc_value - real) <= 1e-9 * max(abs(real), 1)


# ---- the comparison ---------------------------------------------------------

class Report:
    def __init__(self, doc):
        self.doc, self.problems = doc, []

    def add(self, what, name, doc_line, setting, detail):
        where = (f"docs {self.doc}:{doc_line}" if doc_line else "docs -") + ", " + \
                (f"source {display(setting.path)}:{setting.line}" if setting else "source -")
        self.problems.append(f"{what}: {name} ({where}): {detail}")


def check_default(report, s, row):
    cell = row.cells["default"]
    if not cell.strip():
        report.add("default missing", s.name, row.line, s, f"the source's is {show(s, s.default)}")
        return
    value, gloss = split_default(cell)
    if s.kind == "bool":
        ok = BOOLS.get(value.lower()) == s.default
    elif s.kind == "string":
        text = "" if value in EMPTY or cell.strip() in EMPTY else value
        if len(text) > 1 and text[0] == text[-1] == "'":
            text = text[1:-1].replace("''", "'")
        ok = text == s.default
    elif s.kind == "enum":
        ok = value.lower() in {n.lower() for n in s.enum_names}
    else:
        q = quantity(value, s)
        if isinstance(q, str):
            report.add("default differs", s.name, row.line, s, f"{q}; the source's is {show(s, s.default)}")
            return
        ok = agrees(q[0], q[1], measure(s, s.default))
        g = quantity(gloss, s) if gloss else None
        if ok and isinstance(g, tuple) and not agrees(g[0], g[1], measure(s, s.default)):
            ok = False
    if not ok:
        report.add("default differs", s.name, row.line, s,
                   f"the docs say {cell.strip()}, the source {show(s, s.default)}")


def documented_range(row):
    """(low, high, where) the docs give, or None."""
    if "range" in row.cells:
        cell = code_text(row.cells["range"])
        if not cell:
            return None
        m = re.fullmatch(rf"({RANGE_RE}) to ({RANGE_RE})", cell)
        return (m.group(1), m.group(2), "range") if m else (cell, None, "range")
    m = MEANING_RANGE_RE.search(row.cells.get("meaning", ""))
    return (m.group(1), m.group(2), "meaning") if m else None


def check_range(report, s, row):
    if s.kind not in ("int", "real") or s.min is None or s.max is None:
        return
    given = documented_range(row)
    if not given:
        return
    low, high, where = given
    real = f"{show(s, s.min)} to {show(s, s.max)}"
    if high is None:
        report.add("unreadable range", s.name, row.line, s,
                   f"the {where} column says {low!r}, not \"low to high\"; the source's is {real}")
        return
    for label, text, value in (("minimum", low, s.min), ("maximum", high, s.max)):
        q = quantity(text, s)
        if isinstance(q, str) or not agrees(q[0], q[1], measure(s, value)):
            report.add(f"{label} differs", s.name, row.line, s,
                       f"the docs say {text}" + (f" ({q})" if isinstance(q, str) else "") +
                       f", the source {show(s, value)} (range {real})")


# Who can set it, by the words of the cell, first match: (words, context).
CONTEXT_WORDS = (("restart", "PGC_POSTMASTER"), ("reload", "PGC_SIGHUP"),
                 ("read only", "PGC_INTERNAL"), ("superuser, at connection start", "PGC_SU_BACKEND"),
                 ("connection start", "PGC_BACKEND"), ("superuser", "PGC_SUSET"),
                 ("anyone", "PGC_USERSET"), ("any session", "PGC_USERSET"),
                 ("per session", "PGC_USERSET"))
CONTEXT_SAYS = {"PGC_POSTMASTER": "restart", "PGC_SIGHUP": "reload", "PGC_SUSET": "superuser",
                "PGC_USERSET": "anyone, per session", "PGC_SU_BACKEND": "superuser, at connection start",
                "PGC_BACKEND": "at connection start", "PGC_INTERNAL": "read only"}


def documented_context(cell):
    text = " ".join(code_text(cell).lower().split())
    named = [c for c in CONTEXTS if c.lower() in text]
    if named:
        return named[0]
    return next((c for words, c in CONTEXT_WORDS if words in text), None)


def check_context(report, s, row):
    cell = row.cells["context"]
    if not cell.strip() or not s.context:
        return
    documented = documented_context(cell)
    if documented is None:
        report.add("unreadable context", s.name, row.line, s,
                   f"who can set it is {cell!r}; the source's {s.context} reads "
                   f"\"{CONTEXT_SAYS[s.context]}\"")
    elif documented != s.context:
        report.add("context differs", s.name, row.line, s,
                   f"the docs say {cell!r} ({documented}), the source {s.context} "
                   f"(\"{CONTEXT_SAYS[s.context]}\")")


def check_type(report, s, row):
    """"integer, ms": the type, then the unit if it has one."""
    cell = code_text(row.cells["type"])
    if not cell:
        return
    base, _, unit = cell.partition(",")
    kind = next((k for word, k in TYPE_WORDS if re.search(rf"\b{word}", base.lower())), None)
    unit = LONG_UNITS.get(unit.strip(), unit.strip())
    doc_unit = DOC_UNITS.get(unit, ("?", unit)) if unit else None
    if kind != s.kind or doc_unit != (s.unit[:2] if s.unit else None):
        report.add("type differs", s.name, row.line, s,
                   f"the docs say {row.cells['type']!r}, the source {s.kind}"
                   + (f", in {s.unit[2]}" if s.unit else ""))


def check_test_mark(report, s, row):
    """RULE: a test setting's row says it is one (header)."""
    text = " ".join(v for k, v in row.cells.items() if k != "name")
    if TEST_NAME_RE.match(s.name) and not re.search(r"\btests?\b", text, re.I):
        report.add("test setting not marked", s.name, row.line, s,
                   "its row does not say it is for tests")


def check(src_dir, doc_path):
    for path, what in ((src_dir, "a folder"), (doc_path, "a file")):
        if not (Path(path).is_dir() if what == "a folder" else Path(path).is_file()):
            print(f"check_settings: cannot read {path} (not {what})", file=sys.stderr)
            return 2
    settings = read_settings(src_dir)
    rows = read_docs(doc_path)
    if not settings:
        print(f"check_settings: no DefineCustom*Variable call in {src_dir}/*.c", file=sys.stderr)
        return 2
    if rows is None:
        print(f"check_settings: {doc_path} has no table with a \"setting\" column "
              f"under \"## {CHAPTER}\"", file=sys.stderr)
        return 2
    report = Report(display(doc_path))
    by_name = {}
    for row in rows:
        if row.name in by_name:
            report.add("documented twice", row.name, row.line, None,
                       f"also on line {by_name[row.name].line}")
        else:
            by_name[row.name] = row
    defined = {}
    for s in settings:
        if s.name in defined:
            report.add("defined twice", s.name, None, s,
                       f"also at {display(defined[s.name].path)}:{defined[s.name].line}")
            continue
        defined[s.name] = s
        for what, expr in s.unreadable:
            report.add("unreadable definition", s.name, None, s,
                       f"its {what} ({expr}) is not a constant this checker reads")
        row = by_name.get(s.name)
        if row is None:
            report.add("not documented", s.name, None, s,
                       f"no row in the {CHAPTER} table ({s.kind}, {s.context or 'context unread'})")
            continue
        if "default" in row.cells and s.default is not None:
            check_default(report, s, row)
        check_range(report, s, row)
        if "context" in row.cells:
            check_context(report, s, row)
        if "type" in row.cells:
            check_type(report, s, row)
        check_test_mark(report, s, row)
    for row in rows:
        if row.name not in defined and by_name.get(row.name) is row:
            report.add("no such setting", row.name, row.line, None,
                       "the row names a setting no DefineCustom*Variable call defines")

    for problem in report.problems:
        print(problem)
    tests = [s.name for s in defined.values() if TEST_NAME_RE.match(s.name)]
    if tests:
        print(f"test settings (a row each, marked for tests): {', '.join(tests)}")
    summary = f"settings: {sum(n in by_name for n in defined)} of {len(defined)} documented"
    if report.problems:
        summary += f"; {len(report.problems)} problem{'s' if len(report.problems) > 1 else ''}"
    print(summary)
    return 1 if report.problems else 0


def display(path):
    return display_under(path, ROOT)


# ---- self-test --------------------------------------------------------------

SELF_TEST_H = """\
#define T_PAUSE_LOCK 42
#define T_PREFIX "vectorbea."
#define T_MAX_WAIT (60 * 1000)
#define T_OFFSET 0
typedef enum { T_MODE_OFF, T_MODE_ON = 5, T_MODE_AUTO } TMode;
"""

SELF_TEST_C = r"""
#include "t.h"
#define T_DEFAULT_KB 1024
static const struct config_enum_entry t_mode_options[] = {
	{"off", T_MODE_OFF, false},
	{"on", T_MODE_ON, false},
	{"auto", T_MODE_AUTO, false},
	{"automatic", T_MODE_AUTO, true},
	{NULL, 0, false}
};
/* DefineCustomIntVariable("vectorbea.in_comment", ...) is no definition */
void
t_define(void)
{
	DefineCustomIntVariable(T_PREFIX "max_size",
							gettext_noop("Largest (size), in kB."),
							"Two " "parts, " CppAsString2(T_PAUSE_LOCK) ".",
							&t_max_kb,
							T_DEFAULT_KB, 1, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("vectorbea.wait", "Wait.", NULL, &t_wait_ms,
							5 * 60 * 1000, 0, T_MAX_WAIT * 10,
							PGC_USERSET, GUC_NOT_IN_SAMPLE | GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("vectorbea.forever", "Forever.", NULL, &t_min,
							0, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_MIN, NULL, NULL, NULL);
	DefineCustomBoolVariable("vectorbea.notify", "Notify.", NULL, &t_notify, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("vectorbea.ratio", "Ratio.", NULL, &t_ratio, 0.5, 0.0, 1.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("vectorbea.database", "Databases, \"quoted\".", NULL, &t_db,
							   "postgres",
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP,
							   0, NULL, NULL, NULL);
	DefineCustomStringVariable("vectorbea.key_file", "Key file.", NULL, &t_key, NULL,
							   PGC_SUSET, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomEnumVariable("vectorbea.mode", "Mode.", NULL, &t_mode, T_MODE_AUTO,
							 t_mode_options, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("vectorbea.test_offset", "For tests.", NULL, &t_off, CppAsString2(T_OFFSET) "s",
							   PGC_SUSET, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);
	DefineCustomBoolVariable("vectorbea.test_pause", "For tests.", NULL, &t_pause, false,
							 PGC_SUSET, GUC_NO_SHOW_ALL, NULL, NULL, NULL);
	DefineCustomIntVariable("vectorbea.undocumented", "Nobody wrote it down.", NULL, &t_u,
							t_computed_default, 0, 10, PGC_SIGHUP, 0, NULL, NULL, NULL);
}
"""

SELF_TEST_DOC = """\
# Operations

## Settings

| setting | default | who can set it | meaning |
| --- | --- | --- | --- |
| `vectorbea.max_size` | `1MB` (1024 kB) | superuser | largest size (1 kB to 1 GB) |
| `vectorbea.wait` | `%s` | anyone, per session | how long (0 to 10 min) |
| `vectorbea.forever` | `0` (off) | `postgresql.conf`, reload | kept (0 to about 4,000 years) |
| `vectorbea.notify` | on | superuser | notifies |
| `vectorbea.ratio` | `0.5` | anyone, per session | a ratio, `a|b` one cell (0 to %s) |
| `vectorbea.database` | `postgres` | `postgresql.conf`, restart | the databases |
| `vectorbea.key_file` | `''` | superuser | the key file |
| `vectorbea.mode` | `AUTOMATIC` | superuser | the mode |
| `vectorbea.test_offset` | `'0s'` | superuser | moves the clock; tests only |
| `vectorbea.test_pause` | `off` | superuser | pauses a claim |
| `vectorbea.removed` | `1` | superuser | a setting no longer defined |

```
| setting | default |
| `vectorbea.in_a_block` | 1 |
```

## Monitoring

| setting | default |
| --- | --- |
| `vectorbea.elsewhere` | `1` |
"""


def self_test():
    """The checker on SELF_TEST_C and SELF_TEST_DOC: the page is right but
    for four problems (an unreadable default, a setting without a row, a
    row without a setting, a test setting not marked); with a default and
    a maximum changed, six."""
    script = Path(__file__).resolve()

    with tempfile.TemporaryDirectory(prefix="check_settings.") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / "t.h").write_text(SELF_TEST_H)
        (src / "t.c").write_text(SELF_TEST_C)
        outputs = {}
        for kind in ("clean", "broken"):
            doc = Path(tmp) / f"{kind}.md"
            doc.write_text(SELF_TEST_DOC % (("300000", "1") if kind == "clean" else ("4min", "2")))
            outputs[kind] = run_checker(script, "--src", src, "--doc", doc)
        doc_text = SELF_TEST_DOC % ("300000", "1")
        c = f"{src}/t.c"
        common = [
            f"unreadable definition: vectorbea.undocumented (docs -, source {c}:"
            f"{line_of(SELF_TEST_C, 'vectorbea.undocumented')}): its boot (t_computed_default) "
            "is not a constant this checker reads",
            f"not documented: vectorbea.undocumented (docs -, source {c}:"
            f"{line_of(SELF_TEST_C, 'vectorbea.undocumented')}): no row in the Settings table "
            "(int, PGC_SIGHUP)",
            f"test setting not marked: vectorbea.test_pause (docs {tmp}/%s.md:"
            f"{line_of(doc_text, '`vectorbea.test_pause`')}, source {c}:"
            f"{line_of(SELF_TEST_C, 'vectorbea.test_pause')}): its row does not say it is for tests",
            f"no such setting: vectorbea.removed (docs {tmp}/%s.md:"
            f"{line_of(doc_text, '`vectorbea.removed`')}, source -): the row names a setting "
            "no DefineCustom*Variable call defines",
            "test settings (a row each, marked for tests): vectorbea.test_offset, vectorbea.test_pause"]
        changed = [f"default differs: vectorbea.wait (docs {tmp}/broken.md:"
                   f"{line_of(doc_text, '`vectorbea.wait`')}, source {c}:"
                   f"{line_of(SELF_TEST_C, 'vectorbea.wait')}): the docs say `4min`, "
                   "the source 5min (300000 ms)",
                   f"maximum differs: vectorbea.ratio (docs {tmp}/broken.md:"
                   f"{line_of(doc_text, '`vectorbea.ratio`')}, source {c}:"
                   f"{line_of(SELF_TEST_C, 'vectorbea.ratio')}): the docs say 2, "
                   "the source 1.0 (range 0.0 to 1.0)"]
        summary = "settings: 10 of 11 documented; %d problems"
        for kind, extra, count in (("clean", [], 4), ("broken", changed, 6)):
            want = [line % kind if "%s" in line else line for line in common] + extra + [summary % count]
            expect_lines(kind, outputs[kind], want)
    print("self-test: ok")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Check that docs/operations.md documents the extension's settings as defined.")
    parser.add_argument("--src", default=str(DEFAULT_SRC),
                        help="the C sources (default: %(default)s)")
    parser.add_argument("--doc", default=str(DEFAULT_DOC),
                        help="the page documenting the settings (default: %(default)s)")
    parser.add_argument("--self-test", action="store_true", help="test the checker itself")
    args = parser.parse_args(argv)
    if args.self_test:
        return self_test()
    return check(args.src, args.doc)


if __name__ == "__main__":
    sys.exit(main())
