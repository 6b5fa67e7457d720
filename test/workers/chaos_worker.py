#!/usr/bin/env python3
"""chaos_worker.py -- the external processes of test/t/027_chaos.pl.

Two roles, both of which keep going while the server is killed and
restarted and while their sessions are terminated (a broken connection is
opened again, with retries), until the stop file appears:

  worker   claims tasks of its activities (claim_tasks, a transaction of its
           own), "works" a random moment on each, and completes it with an
           output computed from what it was given:

               {"sum": input.k + run_input.i + the "sum" values found in
                       upstream (at any depth), "node", "attempt", "worker"}

           and, when the node's input has "spawn", that spawn list.  A
           completion whose connection broke is in doubt: it is repeated,
           with the same lease and output, once a session is back; VB001 then
           means the lease was taken over (the task came back to another
           attempt) and the result is dropped.
  driver   the people and systems outside: decides approval gates (rejects
           the gate of every run whose input i is 7 modulo 10, approves the
           others), accepts the in-doubt gates of llm nodes with the output
           the provider gives for their prompt, and sends each mixed run
           its signal "go" (with an idempotency key, so a send repeated
           after a broken connection is the same send).

Log (one line per fact, flushed at once), read by the test:

    claimed TASK ATTEMPT        a claim returned this task
    done TASK ATTEMPT           a complete_task whose COMMIT we saw
    stale TASK ATTEMPT          complete_task refused with VB001
    decided GATE STATUS         a decision we saw commit
    signalled RUN               a send_signal we saw commit
    unexpected CODE TEXT        an error none of the above explains
    summary key=value ...       counters, at exit

Needs psycopg2 (Debian: python3-psycopg2).
"""

import argparse
import json
import os
import random
import sys
import time

import psycopg2

LEASE_LOST = "VB001"
# Errors after which the same call is simply made again.
RETRY_CODES = {"40001", "40P01", "55P03"}


class ConnectionLost(Exception):
    pass


class Stop(Exception):
    pass


def broken(conn, exc):
    """True when exc means the session is gone rather than an SQL error."""
    if isinstance(exc, psycopg2.InterfaceError) or conn is None or conn.closed:
        return True
    code = getattr(exc, "pgcode", None)
    if code is None:
        return isinstance(exc, psycopg2.OperationalError)
    # 57P01 admin_shutdown (pg_terminate_backend), 57P02 crash_shutdown,
    # 57P03 cannot_connect_now, 08xxx connection exceptions
    return code.startswith("57P") or code.startswith("08")


def deep_sum(value):
    """The sum of the numbers under keys named "sum", at any depth."""
    total = 0
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "sum" and isinstance(v, (int, float)) and not isinstance(v, bool):
                total += v
            else:
                total += deep_sum(v)
    elif isinstance(value, list):
        for v in value:
            total += deep_sum(v)
    return total


class Process:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.conn = None
        self.log = open(args.log, "a", buffering=1)
        self.counts = {}

    def count(self, key, n=1):
        self.counts[key] = self.counts.get(key, 0) + n

    def note(self, line):
        self.log.write(line + "\n")
        self.log.flush()

    def check_stop(self):
        if os.path.exists(self.args.stop_file):
            raise Stop()

    def connect(self):
        while self.conn is None or self.conn.closed:
            self.check_stop()
            try:
                self.conn = psycopg2.connect(self.args.dsn, connect_timeout=3,
                                             application_name=self.args.name)
                self.count("connections")
            except psycopg2.Error:
                self.conn = None
                time.sleep(0.1)
        return self.conn

    def drop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None

    def call(self, sql, params=(), fetch=False):
        """One statement in a transaction of its own, committed."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall() if fetch else None
            conn.commit()
            return rows
        except psycopg2.Error as exc:
            if broken(conn, exc):
                self.drop()
                raise ConnectionLost(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            try:
                conn.rollback()
            except psycopg2.Error:
                self.drop()
            raise

    def call_until_done(self, sql, params=(), fetch=False, what="call"):
        """call(), repeated while its outcome is unknown or a retry is due.

        Returns the rows, or the psycopg2.Error that ended it."""
        while True:
            self.check_stop()
            try:
                return self.call(sql, params, fetch)
            except ConnectionLost:
                self.count("lost_" + what)
                time.sleep(0.05)
            except psycopg2.Error as exc:
                if exc.pgcode in RETRY_CODES:
                    self.count("retried_" + exc.pgcode)
                    time.sleep(0.05)
                    continue
                return exc

    def unexpected(self, exc):
        self.count("unexpected")
        text = " ".join((exc.pgerror or str(exc)).split())[:300]
        self.note("unexpected %s %s" % (exc.pgcode, text))

    # -- worker -------------------------------------------------------------
    def work(self):
        while True:
            self.check_stop()
            try:
                tasks = self.call(
                    "SELECT task_id, lease::text, attempt, node, input, upstream, run_input"
                    "  FROM vectorbea.claim_tasks(%s, %s::text[], %s, %s::interval)",
                    (self.args.name, self.args.activities, self.args.batch, self.args.lease),
                    fetch=True)
            except ConnectionLost:
                self.count("lost_claim")
                continue
            except psycopg2.Error as exc:
                if exc.pgcode not in RETRY_CODES:
                    self.unexpected(exc)
                time.sleep(0.05)
                continue
            if not tasks:
                self.count("idle")
                time.sleep(self.args.idle_ms / 1000.0)
                continue
            for (task_id, _lease, attempt, _node, _input, _up, _run) in tasks:
                self.note("claimed %d %d" % (task_id, attempt))
            for (task_id, lease, attempt, node, node_input, upstream, run_input) in tasks:
                time.sleep(self.rng.uniform(0, self.args.hold_ms) / 1000.0)   # the work
                self.complete(task_id, lease, attempt, node, node_input or {}, upstream or {},
                              run_input or {})

    def complete(self, task_id, lease, attempt, node, node_input, upstream, run_input):
        total = node_input.get("k", 0) + run_input.get("i", 0) + deep_sum(upstream)
        output = json.dumps({"sum": total, "node": node, "attempt": attempt,
                             "worker": self.args.name})
        spawn = json.dumps(node_input["spawn"]) if "spawn" in node_input else None
        res = self.call_until_done(
            "SELECT vectorbea.complete_task(%s, %s::uuid, %s::jsonb, %s::jsonb)",
            (task_id, lease, output, spawn), what="complete")
        if isinstance(res, psycopg2.Error):
            if res.pgcode == LEASE_LOST:
                self.count("stale")
                self.note("stale %d %d" % (task_id, attempt))
            else:
                self.unexpected(res)
            return
        self.count("done")
        self.note("done %d %d" % (task_id, attempt))

    # -- driver -------------------------------------------------------------
    def drive(self):
        signalled = set()
        while True:
            self.check_stop()
            try:
                gates = self.call(
                    "SELECT a.id, a.kind, a.node, (r.input->>'i')::int"
                    "  FROM vectorbea.approvals a JOIN vectorbea.runs r ON r.id = a.run_id"
                    " WHERE a.status = 'pending' ORDER BY a.id", fetch=True)
                runs = self.call(
                    "SELECT id::text, (input->>'i')::int FROM vectorbea.runs"
                    " WHERE workflow = 'chaos_mix' AND status = 'running'", fetch=True)
            except ConnectionLost:
                self.count("lost_poll")
                continue
            except psycopg2.Error as exc:
                self.unexpected(exc)
                time.sleep(0.1)
                continue
            self.rng.shuffle(gates)
            for (gate_id, kind, node, i) in gates[:self.args.batch]:
                self.decide(gate_id, kind, node, i)
            pending = [r for r in runs if r[0] not in signalled]
            self.rng.shuffle(pending)
            for (run_id, i) in pending[:self.args.batch]:
                res = self.call_until_done(
                    "SELECT vectorbea.send_signal(%s::uuid, 'go', %s::jsonb, 'chaos-go')",
                    (run_id, json.dumps({"sum": 3000 + i})), what="signal")
                if isinstance(res, psycopg2.Error):
                    if res.pgcode != "55000":      # the run ended meanwhile
                        self.unexpected(res)
                        continue
                else:
                    self.note("signalled %s" % run_id)
                signalled.add(run_id)
            time.sleep(self.rng.uniform(0, self.args.idle_ms) / 1000.0)

    def decide(self, gate_id, kind, node, i):
        if kind == "approval":
            status = "rejected" if i % 10 == 7 else "approved"
            sql = ("UPDATE vectorbea.approvals SET status = %s, decided_by = 'chaos-driver',"
                   " reason = 'policy' WHERE id = %s")
            params = (status, gate_id)
        elif kind == "in_doubt" and node == "doubt":
            # Someone checked with the provider: the call was answered.
            status = "approved"
            sql = ("UPDATE vectorbea.approvals SET status = 'approved', decision = 'accept',"
                   " output = %s::jsonb, decided_by = 'chaos-driver' WHERE id = %s")
            params = (json.dumps({"text": "fake answer: doubt %d" % i, "checked": True}), gate_id)
        else:
            self.count("left_gates")
            return
        res = self.call_until_done(sql, params, what="decide")
        if isinstance(res, psycopg2.Error):
            # 55000: decided meanwhile (our own decision that committed
            # before the connection broke), or its run ended.
            if res.pgcode != "55000":
                self.unexpected(res)
            return
        self.note("decided %d %s" % (gate_id, status))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=("worker", "driver"), default="worker")
    p.add_argument("--dsn", required=True)
    p.add_argument("--name", required=True, help="worker name and application_name")
    p.add_argument("--log", required=True)
    p.add_argument("--stop-file", required=True, help="exit 0 once this file exists")
    p.add_argument("--activities", default="cw", help="comma-separated activities")
    p.add_argument("--batch", type=int, default=4, help="tasks per claim; gates and signals per pass")
    p.add_argument("--lease", default="3 seconds")
    p.add_argument("--hold-ms", type=float, default=8, help="longest simulated work per task")
    p.add_argument("--idle-ms", type=float, default=50, help="pause when there is nothing to do")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.activities = [a for a in args.activities.split(",") if a]

    proc = Process(args)
    rc = 0
    try:
        proc.work() if args.role == "worker" else proc.drive()
    except Stop:
        rc = 0
    except Exception as exc:
        proc.note("unexpected python %r" % (exc,))
        rc = 1
    finally:
        proc.note("summary " + " ".join("%s=%d" % kv for kv in sorted(proc.counts.items())))
        proc.drop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
