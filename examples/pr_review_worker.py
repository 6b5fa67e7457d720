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

The worker protocol, as this file follows it:

  * LISTEN vectorbea_tasks: the payload is the activity of a node that just
    became ready, so an idle worker can wait instead of spinning.  A retry
    delayed by backoff is announced when it comes due by the scheduler (the
    background worker); notifications can still be missed (a connection
    drops, no scheduler serves the database), so the worker also claims
    again after a short wait (POLL_SECONDS) without a NOTIFY.
  * claim_tasks(worker, activities, max_tasks, lease_duration) takes up to
    max_tasks ready tasks at once; each comes with a lease token that every
    later call about the task must present.
  * heartbeat(task_id, lease) keeps the lease of a long task alive;
    save_checkpoint(task_id, lease, state) stores progress that the next
    attempt receives as its "checkpoint".
  * complete_task(task_id, lease, output, spawn) finishes the task and adds
    the spawned nodes in the same transaction; fail_task(task_id, lease,
    error) reports a failure and the engine decides whether to retry.
  * SQLSTATE VB001 means the lease no longer holds the task (it expired and
    the task went to another attempt, or the run was cancelled): the result
    is dropped, never retried.

Each worker thread here stands for one worker process: it has its own
connection and name, claims a batch, and runs the tasks of the batch
concurrently.  (The run-status check reads vectorbea.runs, which needs
SELECT on that table; the demo connects as the superuser that created the
cluster.  See docs/operations.md for the grants of a worker role.)
"""

import argparse
import json
import random
import select
import sys
import threading
import time

import psycopg2
from psycopg2.extras import Json

ACTIVITIES = ["scout", "council", "implement", "review", "arbiter", "pr"]
BATCH = 3                  # tasks per claim_tasks call
LEASE = "3 seconds"        # short, so that heartbeats matter
HEARTBEAT_SECONDS = 0.5    # well inside the lease
POLL_SECONDS = 0.25        # claim again after this long even without NOTIFY
LEASE_LOST = "VB001"

T0 = time.monotonic()
_print_lock = threading.Lock()


def log(who, msg):
    with _print_lock:
        print(f"  +{time.monotonic() - T0:6.2f}s  {who:<9} {msg}", flush=True)


class Transient(Exception):
    """A failure worth retrying (the engine applies the node's backoff)."""


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
# One claimed task, and what an activity may do with it
# ---------------------------------------------------------------------------
class Task:
    def __init__(self, worker, row):
        (self.task_id, self.lease, self.run_id, self.node, self.activity,
         self.attempt, self.max_attempts, self.input, self.upstream,
         self.checkpoint, self.run_input) = row
        self.worker = worker
        self.label = f"{self.node}#{self.attempt}"

    def say(self, msg):
        log(self.worker.name, f"{self.label:<13} {msg}")

    def work(self, seconds, heartbeat=False):
        """Simulated work; renews the lease every HEARTBEAT_SECONDS if asked."""
        end = time.monotonic() + seconds
        next_beat = time.monotonic() + HEARTBEAT_SECONDS
        while True:
            now = time.monotonic()
            if now >= end:
                return
            if heartbeat and now >= next_beat:
                expires = self.worker.sql_one(
                    "SELECT to_char(vectorbea.heartbeat(%s, %s::uuid), 'HH24:MI:SS.MS')",
                    (self.task_id, self.lease))
                self.say(f"heartbeat: lease now runs until {expires}")
                next_beat = now + HEARTBEAT_SECONDS
            time.sleep(min(0.05, end - now))

    def save_checkpoint(self, state):
        self.worker.sql_one("SELECT vectorbea.save_checkpoint(%s, %s::uuid, %s)",
                            (self.task_id, self.lease, Json(state)))
        self.say(f"save_checkpoint {json.dumps(state)}")


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


# ---------------------------------------------------------------------------
# A worker: one connection, one name, batches of claimed tasks
# ---------------------------------------------------------------------------
class Worker(threading.Thread):
    def __init__(self, name, dsn, run_id, stop):
        super().__init__(name=name)
        self.dsn = dsn
        self.run_id = run_id
        self.stop = stop
        self.conn = None
        self.error = None

    # psycopg2 connections may be shared by threads (each statement is
    # serialised); with autocommit every call is its own transaction.
    def sql_one(self, query, args=()):
        with self.conn.cursor() as cur:
            cur.execute(query, args)
            row = cur.fetchone()
            return row[0] if row else None

    def run_finished(self):
        if self.run_id is None:
            return False
        status = self.sql_one("SELECT status FROM vectorbea.runs WHERE id = %s::uuid",
                              (self.run_id,))
        return status is None or status not in ("running", "compensating")

    def claim(self):
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT task_id, lease, run_id, node, activity, attempt,"
                "       max_attempts, input, upstream, checkpoint, run_input"
                "  FROM vectorbea.claim_tasks(%s, %s, %s, %s::interval)",
                (self.name, ACTIVITIES, BATCH, LEASE))
            return [Task(self, row) for row in cur.fetchall()]

    def wait_for_work(self, seconds):
        """Sleeps until a NOTIFY arrives or seconds have passed."""
        self.conn.notifies.clear()
        if select.select([self.conn], [], [], seconds)[0]:
            self.conn.poll()
            self.conn.notifies.clear()

    def execute(self, t):
        start = time.monotonic()
        t.say(f"started ({t.activity}, attempt {t.attempt}/{t.max_attempts})")
        try:
            try:
                output, spawn = HANDLERS[t.activity](t)
            except Transient as e:
                result = self.sql_one(
                    "SELECT vectorbea.fail_task(%s, %s::uuid, %s)",
                    (t.task_id, t.lease,
                     Json({"message": str(e), "class": "transient"})))
                t.say(f"failed: {e} → fail_task says '{result}'"
                      + (" (claimed again once the backoff has passed)"
                         if result == "retrying" else ""))
                return
            except psycopg2.Error:
                raise                   # e.g. VB001 from a heartbeat: below
            except Exception as e:      # a bug in the activity: report it
                result = self.sql_one(
                    "SELECT vectorbea.fail_task(%s, %s::uuid, %s)",
                    (t.task_id, t.lease,
                     Json({"message": f"{type(e).__name__}: {e}",
                           "class": "transient"})))
                t.say(f"crashed: {type(e).__name__}: {e} → {result}")
                return
            self.sql_one(
                "SELECT vectorbea.complete_task(%s, %s::uuid,"
                "       output => %s, spawn => %s)",
                (t.task_id, t.lease, Json(output),
                 Json(spawn) if spawn is not None else None))
            t.say("completed" + (f", spawned {len(spawn)} nodes" if spawn else "")
                  + f" → {_short(output)}")
            REVIEWS.on_done(self.name, t.node, start, time.monotonic())
        except psycopg2.Error as e:
            if e.pgcode == LEASE_LOST:
                # Another attempt owns the task now (or the run is over):
                # whatever this attempt produced must not be used.
                t.say("lease lost (VB001): dropping this attempt's result")
                return
            t.say(f"database error: {e.pgerror or e}")
            self.error = e

    def run(self):
        try:
            self.conn = psycopg2.connect(self.dsn,
                                         application_name=f"vectorbea-{self.name}")
            self.conn.autocommit = True
            with self.conn.cursor() as cur:
                cur.execute("LISTEN vectorbea_tasks; LISTEN vectorbea_runs")
            while not self.stop.is_set():
                if self.run_finished():
                    break
                tasks = self.claim()
                if not tasks:
                    self.wait_for_work(POLL_SECONDS)
                    continue
                log(self.name, f"claim_tasks → {len(tasks)}: "
                               + ", ".join(t.label for t in tasks))
                REVIEWS.on_claim(self.name, [t.node for t in tasks])
                runners = [threading.Thread(target=self.execute, args=(t,))
                           for t in tasks]
                for r in runners:
                    r.start()
                for r in runners:
                    r.join()
        except Exception as e:
            log(self.name, f"stopped by an error: {e}")
            self.error = e
        finally:
            if self.conn is not None:
                self.conn.close()


def _short(value, limit=70):
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="exit once this run has finished")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dsn", default="", help="libpq connection string")
    ap.add_argument("--timeout", type=float, default=60,
                    help="give up after this many seconds (with --run)")
    args = ap.parse_args()

    stop = threading.Event()
    workers = [Worker(f"worker-{i + 1}", args.dsn, args.run, stop)
               for i in range(args.workers)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + args.timeout
    try:
        while any(w.is_alive() for w in workers):
            if args.run and time.monotonic() > deadline:
                log("main", f"the run did not finish within {args.timeout:.0f}s")
                stop.set()
                break
            for w in workers:
                w.join(0.1)
    except KeyboardInterrupt:
        stop.set()
    for w in workers:
        w.join()

    if args.run is None:
        return 0
    conn = psycopg2.connect(args.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status FROM vectorbea.runs WHERE id = %s::uuid",
                        (args.run,))
            row = cur.fetchone()
    finally:
        conn.close()
    status = row[0] if row else "missing"
    log("main", f"run {args.run} {status}")
    return 0 if status == "succeeded" and not any(w.error for w in workers) else 1


if __name__ == "__main__":
    sys.exit(main())
