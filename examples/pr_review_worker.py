#!/usr/bin/python3
"""examples/pr_review_worker.py -- the worker of examples/demo-pr-review.

It does the activities of the workflow "pr_review" (see
examples/demo-pr-review): scout, council, implement, review, arbiter and
pr.  Each one is simulated with a short sleep and a small JSON result.  The
graph between them is not in the definition: the llm node "plan", which
the scheduler runs, answers with the nodes to add, and they become the
tasks these workers claim.  (examples/worker.py is the worker of the main
demo, examples/demo.)

    /usr/bin/python3 examples/pr_review_worker.py [--run RUN_ID] [--workers 2]
                                                  [--dsn "dbname=postgres"]

Connection settings come from --dsn and the usual libpq environment
(PGHOST, PGPORT, PGUSER, ...).  With --run it exits once that run has
finished (exit status 0 if it succeeded); without it, it serves until
interrupted.

The loop, the leases, heartbeats and checkpoints are examples/worker.py's
(imported; its docstring walks through the worker protocol): this file has
only the activities and a note of how the two reviews ran.
"""

import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import worker                                   # noqa: E402  the loop
from worker import Transient, log               # noqa: E402


# ---------------------------------------------------------------------------
# What happened to the two reviews: claimed together? ran concurrently?
# ---------------------------------------------------------------------------
class ReviewTracker:
    def __init__(self):
        self.lock = threading.Lock()
        self.claimed = {}     # node -> (worker, time of the claim)
        self.spans = {}       # node -> (start, end)

    def on_claim(self, worker, nodes):
        reviews = [n for n in nodes if n in ("reviewer", "sec-review")]
        if not reviews:
            return
        with self.lock:
            for n in reviews:
                self.claimed[n] = (worker, time.monotonic())
            if len(reviews) == 2:
                log(worker, "reviewer and sec-review were claimable together: "
                            "both became ready when implement finished, "
                            "and one claim_tasks call took both")
            elif len(self.claimed) == 2:
                (w1, t1), (w2, t2) = (self.claimed["reviewer"],
                                      self.claimed["sec-review"])
                log(worker, "reviewer and sec-review were claimable together: "
                            f"{w1} took reviewer, {w2} took sec-review, "
                            f"{abs(t1 - t2) * 1000:.0f} ms apart")

    def on_done(self, worker, node, start, end):
        if node not in ("reviewer", "sec-review"):
            return
        with self.lock:
            self.spans[node] = (start, end)
            if len(self.spans) == 2:
                (s1, e1), (s2, e2) = self.spans.values()
                overlap = min(e1, e2) - max(s1, s2)
                if overlap > 0:
                    log(worker, f"reviewer and sec-review ran concurrently "
                                f"({overlap * 1000:.0f} ms overlap)")
                else:
                    log(worker, "reviewer and sec-review ran one after the other")


REVIEWS = ReviewTracker()


# ---------------------------------------------------------------------------
# The activities (simulated)
# ---------------------------------------------------------------------------
def scout(t):
    # "input" is the node's own input (none here: the definition gives scout
    # none); "run_input" is what the run was started with.
    run_input = t.run_input
    t.work(0.2)
    output = {"repo": run_input.get("repo", "acme/api"),
              "issue": run_input.get("issue"),
              "finding": "HTTP client retries non-idempotent POSTs",
              "files": ["http/client.py", "http/retry.py"]}
    t.say("found work; the llm planner decides what happens next")
    return output, None


def council(t):
    t.work(0.3)
    # The planner's output: its answer as text and, parsed against its
    # output schema, as "json".
    plan = (t.upstream.get("plan") or {}).get("json") or {}
    summary = plan.get("summary", "fix the finding")
    return {"plan": summary,
            "votes": {m: "yes" for m in t.input.get("members", ["architect"])}}, None


def implement(t):
    if t.attempt == 1:
        t.work(0.2)
        t.save_checkpoint({"branch": "vb/idempotent-retries",
                           "done": ["http/retry.py"]})
        t.work(0.1)
        raise Transient("CI runner lost its connection while pushing")
    if t.checkpoint:
        t.say(f"resuming from checkpoint {json.dumps(t.checkpoint)}")
    t.work(1.2, heartbeat=True)   # the long one: keeps its lease alive
    done = list((t.checkpoint or {}).get("done", [])) + ["http/client.py"]
    return {"branch": "vb/idempotent-retries", "files_changed": done,
            "tests": "142 passed"}, None


def review(t):
    t.work(0.3 + random.random() * 0.1)
    focus = t.input.get("focus", "general")
    return {"focus": focus, "verdict": "approve",
            "comments": 2 if focus == "correctness" else 0}, None


def arbiter(t):
    t.work(0.1)
    verdicts = {n: out.get("verdict", "approve")
                for n, out in sorted(t.upstream.items())}
    decision = "merge" if all(v == "approve" for v in verdicts.values()) else "hold"
    t.say(f"verdicts {json.dumps(verdicts)} → {decision}")
    return {"decision": decision, "verdicts": verdicts}, None


def pr(t):
    t.work(0.15)
    return {"url": "https://git.example.com/acme/api/pull/128",
            "title": "Retry only idempotent HTTP methods"}, None


HANDLERS = {"scout": scout, "council": council, "implement": implement,
            "review": review, "arbiter": arbiter, "pr": pr}


if __name__ == "__main__":
    worker.ACTIVITIES = ["scout", "council", "implement", "review", "arbiter", "pr"]
    worker.HANDLERS = HANDLERS
    worker.LABEL_WIDTH = 13
    worker.on_claim = REVIEWS.on_claim
    worker.on_done = REVIEWS.on_done
    sys.exit(worker.main(__doc__))
