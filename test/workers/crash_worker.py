#!/usr/bin/env python3
"""crash_worker.py -- a vectorbea task worker that survives server crashes.

Used by test/t/001_crash_recovery.pl.  It loops

    claim_tasks(name, activities, batch, lease)  -> COMMIT
    for each task: a moment of "work", then complete_task(...) -> COMMIT

one transaction per call, and keeps going while the server is killed and
restarted: a broken connection is re-opened (with retries) until the
deadline.  It exits 0 once no node of any run is open any more, non-zero
when the deadline passes first or something unexpected happens.

What it does with what the crash leaves behind:

  * a claim whose result never arrived is forgotten: if it committed, its
    tasks come back when their lease runs out;
  * tasks claimed but not yet being completed are abandoned (the worker's
    session died, so it cannot heartbeat them): they too come back after
    their lease, as a new attempt -- the re-execution the test expects;
  * the one completion that was in flight when the connection broke is in
    doubt: it is repeated with the same lease and output after reconnecting.
    If the first call had committed, the repeat is a no-op that succeeds; if
    it had not, the repeat completes the task, unless the lease was taken
    over meanwhile, in which case VB001 says to drop the result.

Its log (one line per event, flushed at once) is what the test checks
against the history:

    done TASK_ID ATTEMPT          a complete_task whose COMMIT we saw succeed
    stale TASK_ID ATTEMPT         complete_task refused with VB001 (dropped)
    abandoned TASK_ID ATTEMPT     claimed, then given up with the connection
    summary key=value ...         counters, written at exit

Needs psycopg2 (Debian: python3-psycopg2).
"""

import argparse
import json
import os
import sys
import time

try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - reported to the test, which fails
    sys.stderr.write("crash_worker: psycopg2 is not installed "
                     "(Debian package python3-psycopg2)\n")
    sys.exit(3)

LEASE_LOST = "VB001"

OPEN_NODES_SQL = ("SELECT count(*) FROM vectorbea.nodes"
                  " WHERE status NOT IN ('succeeded', 'failed', 'skipped', 'cancelled')")


class ConnectionLost(Exception):
    """The server went away (or is not accepting connections yet)."""


class DeadlinePassed(Exception):
    pass


def connection_broken(conn, exc):
    """True when exc means the session is gone rather than an SQL error."""
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if conn is None or conn.closed:
        return True
    code = getattr(exc, "pgcode", None)
    if code is None:
        # OperationalError without a SQLSTATE: socket closed, server
        # terminated abnormally, SSL/EOF ...
        return isinstance(exc, psycopg2.OperationalError)
    # 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now
    return code.startswith("57P") or code.startswith("08")


class Worker:
    def __init__(self, args):
        self.args = args
        self.deadline = time.monotonic() + args.deadline
        self.conn = None
        self.generation = 0       # bumped for every new session
        self.log = open(args.log, "a", buffering=1)
        self.counts = dict(claims=0, claimed=0, done=0, repeated=0, stale=0,
                           abandoned=0, reconnects=0, retried_errors=0,
                           idle_polls=0)

    # -- plumbing ---------------------------------------------------------
    def note(self, line):
        self.log.write(line + "\n")
        self.log.flush()

    def say(self, msg):
        sys.stderr.write("%s %s: %s\n" % (time.strftime("%H:%M:%S"), self.args.name, msg))
        sys.stderr.flush()

    def check_deadline(self):
        if time.monotonic() > self.deadline:
            raise DeadlinePassed()

    def drop_connection(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None

    def connect(self):
        """Returns an open connection, retrying until the deadline."""
        if self.conn is not None and not self.conn.closed:
            return self.conn
        self.conn = None
        first = True
        while True:
            self.check_deadline()
            try:
                conn = psycopg2.connect(self.args.dsn, connect_timeout=3,
                                        application_name=self.args.name)
                conn.autocommit = False
                self.conn = conn
                self.generation += 1
                if not first or self.counts["claims"] > 0:
                    self.counts["reconnects"] += 1
                    self.say("connected again")
                return conn
            except psycopg2.Error as exc:
                if first:
                    self.say("cannot connect (%s); retrying"
                             % str(exc).strip().splitlines()[0])
                first = False
                time.sleep(0.1)

    def call(self, sql, params=(), fetch=False):
        """Runs one statement in its own transaction and commits it.

        Raises ConnectionLost when the session broke (the outcome of the
        transaction is then unknown) and psycopg2.Error for SQL errors, after
        rolling back.
        """
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall() if fetch else None
            conn.commit()
            return rows
        except psycopg2.Error as exc:
            if connection_broken(conn, exc):
                self.drop_connection()
                raise ConnectionLost(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            try:
                conn.rollback()
            except psycopg2.Error:
                self.drop_connection()
            raise

    # -- the work ---------------------------------------------------------
    def claim(self):
        rows = self.call(
            "SELECT task_id, lease::text, attempt, node, input"
            "  FROM vectorbea.claim_tasks(%s, %s::text[], %s, %s::interval)",
            (self.args.name, self.args.activities, self.args.batch, self.args.lease),
            fetch=True)
        self.counts["claims"] += 1
        self.counts["claimed"] += len(rows)
        return rows

    def complete(self, task_id, lease, attempt, node, node_input):
        """Completes one task; True when we saw its COMMIT succeed."""
        output = json.dumps({"task": task_id, "attempt": attempt, "node": node})
        spawn = None
        if isinstance(node_input, dict) and "spawn" in node_input:
            spawn = json.dumps(node_input["spawn"])
        tries = 0
        while True:
            tries += 1
            try:
                self.call("SELECT vectorbea.complete_task(%s, %s::uuid, %s::jsonb, %s::jsonb)",
                          (task_id, lease, output, spawn))
                if tries > 1:
                    self.counts["repeated"] += 1
                self.counts["done"] += 1
                self.note("done %d %d" % (task_id, attempt))
                return True
            except ConnectionLost as exc:
                # In doubt: repeat the very same call once the server is back.
                self.say("connection lost completing task %d attempt %d (%s); will repeat"
                         % (task_id, attempt, exc))
                continue
            except psycopg2.Error as exc:
                if exc.pgcode == LEASE_LOST:
                    self.counts["stale"] += 1
                    self.note("stale %d %d" % (task_id, attempt))
                    return False
                if exc.pgcode in ("40001", "40P01"):
                    # Serialization failure or deadlock: say so (the test
                    # counts these) and try again.
                    self.counts["retried_errors"] += 1
                    self.say("retrying task %d after %s: %s"
                             % (task_id, exc.pgcode, exc.pgerror))
                    continue
                raise

    def open_nodes(self):
        return self.call(OPEN_NODES_SQL, fetch=True)[0][0]

    def run(self):
        hold = self.args.hold_ms / 1000.0
        while True:
            self.check_deadline()
            try:
                tasks = self.claim()
            except ConnectionLost as exc:
                self.say("connection lost claiming (%s)" % exc)
                continue
            except psycopg2.Error as exc:
                if exc.pgcode in ("40001", "40P01"):
                    self.counts["retried_errors"] += 1
                    self.say("claim failed with %s: %s" % (exc.pgcode, exc.pgerror))
                    continue
                raise

            if not tasks:
                try:
                    if self.open_nodes() == 0:
                        return 0
                except ConnectionLost as exc:
                    self.say("connection lost polling (%s)" % exc)
                    continue
                self.counts["idle_polls"] += 1
                time.sleep(self.args.idle_ms / 1000.0)
                continue

            generation = self.generation
            for i, (task_id, lease, attempt, node, node_input) in enumerate(tasks):
                if self.generation != generation or self.conn is None:
                    # The session that held these leases is gone: we cannot
                    # heartbeat them, so give them up like a dead worker.
                    for (t, _l, a, _n, _i) in tasks[i:]:
                        self.counts["abandoned"] += 1
                        self.note("abandoned %d %d" % (t, a))
                    break
                time.sleep(hold)          # the "work"
                self.complete(task_id, lease, attempt, node, node_input)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", required=True, help="libpq connection string")
    p.add_argument("--name", required=True, help="worker name given to claim_tasks")
    p.add_argument("--log", required=True, help="file to append done/stale/abandoned lines to")
    p.add_argument("--activities", default="work", help="comma-separated activities")
    p.add_argument("--batch", type=int, default=3, help="max_tasks per claim")
    p.add_argument("--lease", default="3 seconds", help="lease_duration per claim")
    p.add_argument("--hold-ms", type=float, default=5, help="simulated work per task")
    p.add_argument("--idle-ms", type=float, default=50, help="sleep when nothing is ready")
    p.add_argument("--deadline", type=float, default=90, help="give up after this many seconds")
    args = p.parse_args()
    args.activities = [a for a in args.activities.split(",") if a]

    w = Worker(args)
    rc = 0
    try:
        rc = w.run()
    except DeadlinePassed:
        w.say("deadline of %gs passed with work left" % args.deadline)
        rc = 2
    except Exception as exc:  # report, then fail
        w.say("unexpected error: %r" % (exc,))
        rc = 1
    finally:
        w.note("summary " + " ".join("%s=%d" % kv for kv in sorted(w.counts.items())))
        w.say("exit %d: %s" % (rc, " ".join("%s=%d" % kv for kv in sorted(w.counts.items()))))
        w.drop_connection()
    return rc


if __name__ == "__main__":
    sys.exit(main())
