"""doc_checks.py -- what the checks of the docs against the code share.

test/check_reference.py (the SQL reference against the install script) and
test/check_settings.py (the settings tables against the C) each read a
language of their own into tokens; the walk over brackets, the paths they
print and the way their self-tests run the checker and compare its lines
are the same, and live here.

Tokens are objects with .kind ("op" for punctuation) and .text.
"""

import subprocess
import sys
from pathlib import Path

OPENING = "([{"
CLOSING = ")]}"


def is_op(tok, text):
    return tok.kind == "op" and tok.text == text


def closing(tokens, i):
    """Index of the bracket closing the one at tokens[i]; len(tokens) if none."""
    depth = 0
    for k in range(i, len(tokens)):
        if tokens[k].kind == "op" and tokens[k].text in OPENING:
            depth += 1
        elif tokens[k].kind == "op" and tokens[k].text in CLOSING:
            depth -= 1
            if depth == 0:
                return k
    return len(tokens)


def split_top(tokens, separator=","):
    """tokens split at each separator outside brackets (a list of lists)."""
    pieces, current, depth = [], [], 0
    for tok in tokens:
        if tok.kind == "op" and tok.text in OPENING:
            depth += 1
        elif tok.kind == "op" and tok.text in CLOSING:
            depth -= 1
        if depth == 0 and is_op(tok, separator):
            pieces.append(current)
            current = []
        else:
            current.append(tok)
    if current or pieces:
        pieces.append(current)
    return pieces


def display(path, root):
    """path relative to root when it is inside it, as the checks print it."""
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def line_of(text, needle):
    """The line number (from 1) of needle's first place in text."""
    return text[:text.index(needle)].count("\n") + 1


def run_checker(script, *args):
    """(exit status, stdout and stderr) of the checker script run on args."""
    result = subprocess.run([sys.executable, str(script), *map(str, args)],
                            capture_output=True, text=True)
    return result.returncode, result.stdout + result.stderr


def expect_lines(kind, outcome, want):
    """Fails the self-test unless outcome (from run_checker) is exit status 1
    with exactly the lines want, in any order."""
    status, output = outcome
    assert status == 1 and sorted(output.splitlines()) == sorted(want), \
        f"self-test: {kind} page: exit {status}, output:\n{output}\nwanted:\n" + "\n".join(want)
