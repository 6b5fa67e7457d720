#!/usr/bin/env python3
"""check_listings.py -- the guides' listings of the example workers are the files.

docs/workers-python.md and docs/workers-node.md print each example worker whole,
under a line naming it (`examples/worker_psycopg.py`:), so that a reader can
read the guide alone.  The tests run the files; this check keeps the printed
copies equal to them, so that the code a guide shows is the code the tests run.
Exit status 1 names each listing that differs (and how), or a guide whose
listing is missing."""
import difflib, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTINGS = {"docs/workers-python.md": "examples/worker_psycopg.py",
            "docs/workers-node.md": "examples/worker_node.js"}

def main():
    bad = 0
    for doc, example in LISTINGS.items():
        text = (ROOT / doc).read_text()
        m = re.search(r"^`%s`:\n\n```\w*\n(.*?)^```$" % re.escape(example), text, re.S | re.M)
        if not m:
            print(f"{doc}: no listing of {example} (a line `{example}`: then a fenced block)")
            bad += 1
            continue
        want = (ROOT / example).read_text()
        if m.group(1) != want:
            print(f"{doc}: its listing of {example} differs from the file:")
            sys.stdout.writelines(difflib.unified_diff(
                m.group(1).splitlines(True), want.splitlines(True), f"{doc} (listing)", example))
            bad += 1
    print(f"{len(LISTINGS) - bad} of {len(LISTINGS)} listings equal their examples")
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
