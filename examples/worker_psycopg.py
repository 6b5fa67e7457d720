#!/usr/bin/python3
"""vectorbea workers with psycopg 3 (docs/workers-python.md): --workers threads in one process,
one listener that wakes one idle worker per notification.  SIGTERM or SIGINT: finish the batches
in hand, then exit.  Connection settings: --dsn, else $VB_DSN, else libpq's PG* variables."""
import argparse, json, os, select, signal, socket, threading, time, traceback
from datetime import timedelta
from threading import Event, Lock, Thread
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

def as_jsonb(value):                    # checked here, so that a value jsonb refuses (NaN, a NUL
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)  # character, half a surrogate
    if "\\u0000" in text.replace("\\\\", ""):    # pair) fails its own task, not the batch
        raise ValueError("the output holds the character U+0000, which jsonb cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the output holds half a surrogate pair, which jsonb cannot store") from None
    return Jsonb(value, dumps=lambda _: text)

def error_of(e):                        # the error, as text jsonb takes, cut to a size it keeps
    message = str(e).replace("\0", "\\0").encode("utf-8", "replace").decode("utf-8")
    if len(message) > 2000:
        message = f"{message[:2000]}... ({len(message)} characters)"
    return Jsonb({"message": message, "class": getattr(e, "cls", "transient")})

def run_handler(t):                     # -> (the call that reports the task, its JSON argument)
    try:
        return "complete_task", as_jsonb(HANDLERS[t["activity"]](t))
    except Exception as e:              # a TaskError has a class; anything else is transient
        return "fail_task", error_of(e)

def report(work, t, call, arg):         # one result, in a transaction of its own
    try:
        r = work.execute(f"SELECT vectorbea.{call}(%s, %s, %s) AS r", (t["task_id"], t["lease"], arg))
        return "completed" if call == "complete_task" else f"failed, {r.fetchone()['r']}"
    except psycopg.Error as e:
        if e.sqlstate != "VB001":       # VB001: the lease no longer holds the task
            raise
        return f"VB001, result dropped: {e.diag.message_detail}"

def finish(work, outputs, claim, say):  # complete a batch and claim the next: one commit
    if not outputs:
        return claim()
    try:
        with work.transaction():        # all or nothing: one lost lease refuses the whole call
            work.execute("SELECT vectorbea.complete_tasks(%s::bigint[], %s::uuid[], %s::jsonb[])",
                         [[t["task_id"] for t, _ in outputs], [t["lease"] for t, _ in outputs],
                          [output for _, output in outputs]])
            tasks = claim()             # the next batch, in the same transaction
        for t, _ in outputs:
            say(t, "completed")
        return tasks
    except psycopg.Error as e:          # VB001: roll back, then complete each task on its own
        if e.sqlstate != "VB001":
            raise
        say(None, f"complete_tasks refused (VB001, {e.diag.message_primary}): one at a time")
    for t, output in outputs:
        say(t, report(work, t, "complete_task", output))
    return claim()

def main():
    env, ap = os.environ.get, argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dsn", default=env("VB_DSN", ""))
    ap.add_argument("--name", default=env("VB_WORKER", f"{socket.gethostname()}:{os.getpid()}"))
    ap.add_argument("--workers", type=int, default=env("VB_WORKERS", "4"))
    ap.add_argument("--activities", default=env("VB_ACTIVITIES", ",".join(HANDLERS)))
    ap.add_argument("--lease", type=lambda s: timedelta(seconds=float(s)), default="60")
    ap.add_argument("--drain", type=float, default=float("inf"), help="exit after S idle seconds")
    a, stop, done, held, lost, lock = ap.parse_args(), Event(), Event(), {}, set(), Lock()
    log = lambda msg, name=a.name: print(time.strftime("%H:%M:%S"), name, msg, flush=True)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK)    # a signal also ends the waker's select
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # an error in a worker ends the process, rather than leave it running with a worker less
    threading.excepthook = lambda e: (traceback.print_exception(e.exc_value), os._exit(1))
    conns = listen, beat, *works = [psycopg.connect(a.dsn, autocommit=True, row_factory=dict_row,
                                    application_name=a.name) for _ in range(a.workers + 2)]
    listen.execute("LISTEN vectorbea_tasks")    # one listener for all workers: see the guide
    def heartbeats():                   # every third of the lease, renew every held task
        while not done.wait(a.lease.total_seconds() / 3):
            with lock:                  # held: task_id -> lease, of every worker's batch
                for task_id, lease in list(held.items()):
                    try:
                        beat.execute("SELECT vectorbea.heartbeat(%s, %s)", (task_id, lease))
                    except psycopg.Error as e:  # VB001: the task is gone; its worker drops it
                        if e.sqlstate != "VB001":   # the connection or the server: end the process
                            raise
                        log(f"heartbeat of task {task_id}: {e.sqlstate} {e.diag.message_primary}")
                        del held[task_id]   # renewed no more, and left out of its batch's
                        lost.add(task_id)   # complete_tasks, which it would refuse whole
    idle, idle_since, missed, wakes = set(), {}, False, Lock()   # idle: the Events of idle workers
    def wake_one():                     # none idle: the next worker to go idle claims once more,
        nonlocal missed                 # as its last claim may have come before these tasks
        with wakes:
            if idle:
                idle.pop().set()
            else:
                missed = True
    def wait_for_work():                # until wake_one(), a signal or the poll interval
        nonlocal missed
        with wakes:
            if stop.is_set() or missed:
                missed = False
                return
            idle.add(woken := Event())
        woken.wait(POLL_SECONDS)
        with wakes:
            idle.discard(woken)
    def worker(k, work):
        name = f"{a.name}/{k}"
        say = lambda t, outcome: log(f"{t['node']} attempt {t['attempt']}: {outcome}"
                                     if t else outcome, name)
        claim = lambda: [] if stop.is_set() else work.execute(
            "SELECT * FROM vectorbea.claim_tasks(%s, %s::text[], %s, %s)",
            (name, a.activities.split(","), BATCH, a.lease)).fetchall()
        tasks = []
        while tasks or not stop.is_set():
            outputs = []                # (task, output) of the handlers that succeeded
            for t in tasks:             # the whole batch, even when asked to stop
                call, arg = run_handler(t)
                if call == "complete_task":
                    outputs.append((t, arg))
                    continue
                with lock:              # no heartbeat for a task while it is being reported
                    held.pop(t["task_id"], None)
                say(t, report(work, t, call, arg))  # a failure at once, alone: see the guide
            with lock:                  # this worker's batch leaves held, the others' stay
                [held.pop(t["task_id"], None) for t in tasks]
                gone = lost.intersection(t["task_id"] for t in tasks)
                lost.difference_update(gone)
            for t, _ in outputs:        # a heartbeat found its lease gone: nothing to report
                if t["task_id"] in gone:
                    say(t, "VB001 at its heartbeat, result dropped")
            outputs = [(t, output) for t, output in outputs if t["task_id"] not in gone]
            tasks = finish(work, outputs, claim, say)   # after a signal: complete, claim nothing
            with lock:
                held.update((t["task_id"], t["lease"]) for t in tasks)
            with wakes:                 # for --drain: since when each worker has found nothing
                idle_since.pop(k, None) if tasks else idle_since.setdefault(k, time.monotonic())
            if len(tasks) == BATCH:     # a full claim: more may be ready, wake one more worker
                wake_one()
            if not tasks:
                wait_for_work()
    threads = [Thread(target=heartbeats, daemon=True)] + [
        Thread(target=worker, args=(k, work), daemon=True) for k, work in enumerate(works, 1)]
    [thread.start() for thread in threads]
    while not stop.is_set():            # the waker
        with wakes:                     # drained: every worker idle for --drain seconds
            left = (max(idle_since.values()) + a.drain - time.monotonic()
                    if len(idle_since) == a.workers else a.drain)
        if left <= 0:
            break
        select.select([listen.fileno(), wake_r], [], [], min(left, POLL_SECONDS))
        listen.pgconn.consume_input()
        for _ in iter(listen.pgconn.notifies, None):    # any payload means "claim"
            wake_one()
    why = "signal" if stop.is_set() else "drained"
    with wakes:                         # idle workers exit, busy ones finish their batch
        stop.set(), [woken.set() for woken in idle]
    [thread.join() for thread in threads[1:]]
    done.set(), threads[0].join(), [conn.close() for conn in conns]
    log("stopped: " + why)

if __name__ == "__main__":
    main()
