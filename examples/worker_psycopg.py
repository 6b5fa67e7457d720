#!/usr/bin/python3
"""A vectorbea worker with psycopg 3 (docs/workers-python.md).  SIGTERM or SIGINT: finish the
batch in hand, then exit.  Connection settings: --dsn, else $VB_DSN, else libpq's PG* variables."""
import argparse, os, select, signal, socket, time
from datetime import timedelta
from threading import Event, Thread
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
BATCH, POLL_SECONDS = 10, 5             # tasks per claim; claim this often even without NOTIFY

class TaskError(Exception):             # raise TaskError(message): fail, the engine retries;
    cls = "transient"                   # subclass it with cls = "permanent" to fail for good

def flaky(task):                        # fails its first attempt, so that the engine retries it
    if task["attempt"] == 1:
        raise TaskError(f"{task['input']['key']}: service busy, try again")
    return {"key": task["input"]["key"], "attempt": task["attempt"]}

HANDLERS = {"echo": lambda task: task["input"], "flaky": flaky,
            "sleep": lambda task: time.sleep(task["input"]["seconds"]) or {"slept": True}}

def run_task(work, t):                  # run the handler, then complete or fail the task
    try:
        call, arg = "complete_task", Jsonb(HANDLERS[t["activity"]](t))
    except Exception as e:              # a TaskError has a class; anything else is transient
        call, arg = "fail_task", Jsonb({"message": str(e), "class": getattr(e, "cls", "transient")})
    try:
        with work.transaction():        # your own writes go here, to commit with the result
            work.execute(f"SELECT vectorbea.{call}(%s, %s, %s)", (t["task_id"], t["lease"], arg))
        return call
    except psycopg.Error as e:
        if e.sqlstate != "VB001":       # VB001: the lease no longer holds the task
            raise
        return f"VB001, result dropped: {e.diag.message_detail}"

def main():
    env, ap = os.environ.get, argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dsn", default=env("VB_DSN", ""))
    ap.add_argument("--name", default=env("VB_WORKER", f"{socket.gethostname()}:{os.getpid()}"))
    ap.add_argument("--activities", default=env("VB_ACTIVITIES", ",".join(HANDLERS)))
    ap.add_argument("--lease", type=lambda s: timedelta(seconds=float(s)), default="60")
    ap.add_argument("--drain", type=float, default=float("inf"), help="exit after S idle seconds")
    a, stop, done, held, idle_since = ap.parse_args(), Event(), Event(), {}, time.monotonic()
    log = lambda msg: print(time.strftime("%H:%M:%S"), a.name, msg, flush=True)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)    # a signal also ends the wait for work
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    conns = work, listen, beat = [psycopg.connect(a.dsn, autocommit=True, row_factory=dict_row,
                                                  application_name=a.name) for _ in range(3)]
    listen.execute("LISTEN vectorbea_tasks")
    def heartbeats():                   # every third of the lease, renew every held task
        while not done.wait(a.lease.total_seconds() / 3):
            for task_id, lease in held.copy().items():     # held: task_id -> lease
                try:
                    beat.execute("SELECT vectorbea.heartbeat(%s, %s)", (task_id, lease))
                except psycopg.Error as e:  # VB001: run_task() will drop the result
                    log(f"heartbeat of task {task_id}: {e.sqlstate} {e.diag.message_primary}")
    (hb := Thread(target=heartbeats, daemon=True)).start()
    while not stop.is_set():
        tasks = work.execute("SELECT * FROM vectorbea.claim_tasks(%s, %s::text[], %s, %s)",
                             (a.name, a.activities.split(","), BATCH, a.lease)).fetchall()
        held.update((t["task_id"], t["lease"]) for t in tasks)
        for t in tasks:                 # the whole batch, even when asked to stop
            log(f"{t['node']} attempt {t['attempt']}: {run_task(work, t)}")
            del held[t["task_id"]]
        idle_since = time.monotonic() if tasks else idle_since
        if (left := idle_since + a.drain - time.monotonic()) <= 0:
            break
        if not tasks:                   # wait for a NOTIFY, a signal or the poll interval
            select.select([listen.fileno(), wake_r], [], [], min(left, POLL_SECONDS))
            listen.pgconn.consume_input()
            list(iter(listen.pgconn.notifies, None))    # drop them: any payload means "claim"
    done.set(), hb.join(), [conn.close() for conn in conns]
    log("stopped: " + ("signal" if stop.is_set() else "drained"))

if __name__ == "__main__":
    main()
