#!/usr/bin/python3
"""examples/worker.py -- an example vectorbea worker in Python (psycopg2).

It does the activities of the demo workflow "incident_briefing" (see
examples/demo), a morning incident briefing for an on-call team:

    collect_escalations, pull_metrics, prepare_outline   the preparation
    investigate                                          one check each
    assemble                                             the findings, once
                                                         the editor approved
    publish                                              the written brief

Each one is simulated with a short sleep and a small JSON result.  Most of
the graph is not in the definition: the llm node "plan", which the
scheduler runs, answers with the investigations to make and "assemble",
which joins them with the editor's approval gate; "assemble" spawns the llm
node "write_brief" and "publish" when it completes.  Spawned task nodes are
like defined ones: these workers claim them.

    /usr/bin/python3 examples/worker.py [--run RUN_ID] [--workers 2]
                                        [--dsn "dbname=postgres"]

Connection settings come from --dsn and the usual libpq environment
(PGHOST, PGPORT, PGUSER, ...).  With --run it exits once that run has
finished, exit status 0 if it succeeded (a paused run has not finished: it
waits for it); without it, it serves until interrupted.

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
  * A completion the engine refuses (a bad spawn list, an output over the
    size limit) leaves the task this worker's: it fails it for good, with
    the refusal as the error, instead of leaving it to wait out its lease
    and run again to the same refusal.
  * SQLSTATE VB001 means the lease no longer holds the task (it expired and
    the task went to another attempt, or the run was cancelled): the result
    is dropped, never retried.

Each worker thread here stands for one worker process: it has its own
connection and name, listens on it, claims a batch, and runs the tasks of
the batch concurrently.  That keeps the demo's steps plain to read; a
process with many workers should listen once and wake one idle worker per
notification, as examples/worker_psycopg.py does
(docs/worker-protocol.md, "Many workers in one process").  (The run-status check reads vectorbea.runs, which needs
SELECT on that table; the demo connects as the superuser that created the
cluster.  See docs/operations.md for the grants of a worker role.)
"""

import argparse
import json
import select
import sys
import threading
import time

import psycopg2
from psycopg2.extras import Json

ACTIVITIES = ["collect_escalations", "pull_metrics", "prepare_outline",
              "investigate", "assemble", "publish"]
BATCH = 3                  # tasks per claim_tasks call
LEASE = "3 seconds"        # short, so that heartbeats matter
HEARTBEAT_SECONDS = 0.5    # well inside the lease
POLL_SECONDS = 0.25        # claim again after this long even without NOTIFY
LEASE_LOST = "VB001"
LABEL_WIDTH = 28           # the column of "node#attempt" in the log

# Hooks another worker file may replace (examples/pr_review_worker.py does):
# called with the worker's name and the nodes of each batch it claims, and
# with the worker, node and monotonic start and end of each completed task.
def on_claim(worker, nodes):
    pass


def on_done(worker, node, start, end):
    pass


T0 = time.monotonic()
_print_lock = threading.Lock()


def log(who, msg):
    with _print_lock:
        print(f"  +{time.monotonic() - T0:6.2f}s  {who:<9} {msg}", flush=True)


class Transient(Exception):
    """A failure worth retrying (the engine applies the node's backoff)."""


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
        log(self.worker.name, f"{self.label:<{LABEL_WIDTH}} {msg}")

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
# The activities (simulated).  Each returns (output, spawn list or None).
# ---------------------------------------------------------------------------
def collect_escalations(t):
    # "input" is the node's own input (none here); "run_input" is what the
    # run was started with.
    t.work(0.3)
    return {"count": 14,
            "summary": "14 escalations overnight: 9 about slow checkout in the EU, "
                       "3 about declined cards, 2 about refunds",
            "top": ["ESC-4411 checkout times out at payment step (EU)",
                    "ESC-4415 cards declined at a major retailer",
                    "ESC-4420 refund stuck for 2 days"]}, None


def pull_metrics(t):
    t.work(0.4)
    service = t.run_input.get("service", "checkout")
    return {"service": service,
            "summary": f"{service} p95 latency 2.4 s since 02:10 UTC (baseline 0.8 s); "
                       "card authorisation rate 91.2% (baseline 97.0%); "
                       "support tickets 62 an hour (baseline 20)",
            "p95_ms": 2400, "baseline_p95_ms": 800,
            "auth_rate": 0.912, "baseline_auth_rate": 0.970,
            "tickets_per_hour": 62}, None


def prepare_outline(t):
    t.work(0.2)
    return {"sections": ["What happened", "Customer impact", "What we know",
                         "What we do next"]}, None


# What each investigation finds; an unknown one (a real model may name its
# own) gets a generic answer.
FINDINGS = {
    "latency": "p95 rose from 0.8 s to 2.4 s at 02:10 UTC, when the EU pool "
               "of checkout-api was scaled from 12 to 6 pods by a schedule "
               "meant for the weekend",
    "auth": "the authorisation rate fell for cards of one issuer only "
            "(\"do not honour\" from the issuer, since 01:40 UTC); our "
            "gateway is healthy",
    "support": "41 of the 62 tickets an hour are about slow or failed "
               "checkout; the rest is the usual level",
}


def investigate(t):
    check = t.input.get("check", "")
    if check == "auth" and t.attempt == 1:
        # The first attempt gets halfway, keeps what it has, and hits a
        # passing outage: fail_task with class "transient" and the engine
        # retries after the node's backoff, with the checkpoint.
        t.work(0.5)
        t.save_checkpoint({"pulled": "gateway decline codes 00:00-06:00 UTC"})
        t.work(0.2)
        raise Transient("the payment gateway's reporting API answered 503")
    if t.checkpoint:
        t.say(f"resuming from checkpoint {json.dumps(t.checkpoint)}")
    if check == "latency":
        t.work(1.6, heartbeat=True)   # the long one: keeps its lease alive
    else:
        t.work(0.8 if check == "support" else 0.6)
    finding = FINDINGS.get(check, f"checked: {t.input.get('question', t.node)}")
    return {"question": t.input.get("question", t.node), "finding": finding,
            "confirmed": True}, None


def assemble(t):
    t.work(0.3)
    editor = t.upstream.get("editor") or {}
    findings = [f"{node}: {out.get('finding')}"
                for node, out in sorted(t.upstream.items())
                if isinstance(out, dict) and "finding" in out]
    output = {"findings": "; ".join(findings),
              "sections": len(findings),
              "approved_by": editor.get("decided_by"),
              "editor_note": editor.get("reason") or "none"}
    # The brief itself is written by a model: an llm node, spawned here
    # (llm nodes are done by the scheduler, not by these workers), and a
    # publish task after it.  The model is the run's: its input names it as
    # "provider/model".
    provider, _, model = t.run_input.get("writer", "openai/gpt-4o-mini").partition("/")
    spawn = [
        {"id": "write_brief", "kind": "llm", "depends_on": ["assemble"],
         "retry": {"max_attempts": 3, "initial": "1s"},
         "llm": {"provider": provider, "model": model,
                 "system": "You write short, factual incident briefings for an on-call team.",
                 "prompt": "Write the morning incident briefing for {{run.input.service}} "
                           "on {{run.input.date}}, in at most 120 words, from these findings: "
                           "{{upstream.assemble.output.findings}}. "
                           "Editor's note: {{upstream.assemble.output.editor_note}}",
                 "max_tokens": 400, "temperature": 0}},
        {"id": "publish", "activity": "publish", "depends_on": ["write_brief"]},
    ]
    return output, spawn


def publish(t):
    t.work(0.2)
    brief = (t.upstream.get("write_brief") or {}).get("text", "")
    headline = brief.strip().splitlines()[0] if brief.strip() else ""
    date = t.run_input.get("date", "today")
    return {"channel": "#incident-briefing",
            "url": f"https://wiki.example.com/briefings/{date}",
            "words": len(brief.split()), "headline": headline[:80]}, None


HANDLERS = {"collect_escalations": collect_escalations,
            "pull_metrics": pull_metrics, "prepare_outline": prepare_outline,
            "investigate": investigate, "assemble": assemble,
            "publish": publish}


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
        return status is None or status not in ("running", "compensating", "paused")

    def claim(self):
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT task_id, lease, run_id, node, activity, attempt,"
                "       max_attempts, input, upstream, checkpoint, run_input"
                "  FROM vectorbea.claim_tasks(%s, %s, %s, %s::interval)",
                (self.name, ACTIVITIES, BATCH, LEASE))
            return [Task(self, row) for row in cur.fetchall()]

    def wait_for_work(self, seconds):
        """Sleeps until a NOTIFY arrives or seconds have passed.  One that
        arrived while the last claim ran (psycopg2 read it with the claim's
        result) ends the wait at once: the claim may have come too early."""
        self.conn.poll()
        if not self.conn.notifies:
            if select.select([self.conn], [], [], seconds)[0]:
                self.conn.poll()
        self.conn.notifies.clear()

    def execute(self, t):
        t.say(f"started ({t.activity}, attempt {t.attempt}/{t.max_attempts})")
        start = time.monotonic()
        completing = False
        try:
            try:
                output, spawn = HANDLERS[t.activity](t)
            except Transient as e:
                result = self.fail(t, str(e), "transient")
                t.say(f"failed: {e} → fail_task says '{result}'"
                      + (" (claimed again once the backoff has passed)"
                         if result == "retrying" else ""))
                return
            except psycopg2.Error:
                raise                   # e.g. VB001 from a heartbeat: below
            except Exception as e:      # a bug in the activity: report it
                result = self.fail(t, f"{type(e).__name__}: {e}", "transient")
                t.say(f"crashed: {type(e).__name__}: {e} → {result}")
                return
            completing = True
            self.sql_one(
                "SELECT vectorbea.complete_task(%s, %s::uuid,"
                "       output => %s, spawn => %s)",
                (t.task_id, t.lease, Json(output),
                 Json(spawn) if spawn is not None else None))
            t.say("completed"
                  + (f", spawned {', '.join(s['id'] for s in spawn)}" if spawn else "")
                  + f" → {_short(output)}")
            on_done(self.name, t.node, start, time.monotonic())
        except psycopg2.Error as e:
            if e.pgcode == LEASE_LOST:
                # Another attempt owns the task now (or the run is over):
                # whatever this attempt produced must not be used.
                t.say("lease lost (VB001): dropping this attempt's result")
                return
            t.say(f"database error: {e.pgerror or e}")
            self.error = e
            if completing and e.pgcode and e.pgcode[:2] in ("22", "23", "54"):
                self.fail_refused(t, e)

    def fail(self, t, message, cls, retryable=True):
        # fail_task: the engine retries a retryable failure while attempts
        # are left, and answers what it did ("retrying" or "failed").
        return self.sql_one(
            "SELECT vectorbea.fail_task(%s, %s::uuid, %s, retryable => %s)",
            (t.task_id, t.lease, Json({"message": message, "class": cls}), retryable))

    def fail_refused(self, t, e):
        # complete_task refused what the activity produced (a bad spawn
        # list, an output over the size limit): the task is still this
        # worker's, so it is failed, for good, with the reason, rather
        # than left to wait out its lease and be run again to the same end.
        try:
            result = self.fail(t, f"complete_task refused: {e.diag.message_primary}",
                               "permanent", retryable=False)
            t.say(f"failed: complete_task refused its result → {result}")
        except psycopg2.Error as again:
            t.say(f"could not fail the task either: {again.pgerror or again}")

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
                on_claim(self.name, [t.node for t in tasks])
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


def main(description=__doc__):
    ap = argparse.ArgumentParser(description=description.split("\n\n")[0])
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
