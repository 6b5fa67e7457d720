#!/usr/bin/python3
"""bench/steady.py -- load generator and monitor of bench/steady.

Run by bench/steady, which starts the server, creates the extension and
the workflow and passes the settings in the environment (VB_STEADY_*).
Not meant to be run alone.

Processes (fork), all on the same machine as the server:

  producer   starts runs of the one-node workflow "steady" at a fixed rate:
             every CHUNK_MS, start_runs() of as many runs as the rate owes
             so far (each run's input carries the wall-clock time of the
             call, so workers can measure latencies from it)
  worker x N the pipelined loop of docs/worker-protocol.md: in one
             transaction complete_tasks() of the batch in hand, then
             claim_tasks(..., BATCH); commit.  An empty claim waits for a
             NOTIFY vectorbea_tasks, at most POLL_MS.  The work itself is
             a no-op.
  waker      (WAKE=one only) the one listener: each notification wakes one
             idle worker, instead of every worker listening and waking on
             every notification (WAKE=all); a worker whose claim came back
             full wakes one more
  sampler    pg_stat_activity every 100 ms: the wait event (or "CPU") of
             each active backend of the database, and what it runs
  holder     (hold mode only) after BEFORE seconds, a REPEATABLE READ
             transaction takes a snapshot and stays idle for HOLD seconds,
             pinning the xmin horizon; then commits
  diagnose   at set points (early and late; in hold mode near the end of
             each phase): one claim_tasks and complete_tasks in a session
             with auto_explain (ANALYZE, BUFFERS, nested statements), in a
             transaction rolled back: the plans of the engine's statements

The main process reports every INTERVAL seconds and writes the final
report.  Everything is measured; nothing is compared with a fixed number
except the stall rule printed with the report.
"""

import json
import multiprocessing as mp
import os
import queue
import select
import sys
import time

import psycopg2

ENV = os.environ


def setting(name, default, kind=int):
    value = ENV.get("VB_STEADY_" + name, "")
    return kind(value) if value != "" else default


RATE = setting("RATE", 400.0, float)
WORKERS = setting("WORKERS", 8)
BATCH = setting("BATCH", 32)
CHUNK_MS = setting("CHUNK_MS", 50)
INTERVAL = setting("INTERVAL", 10)
POLL_MS = setting("POLL_MS", 100)
WAKE = setting("WAKE", "all", str)
CLAIM_WAIT = setting("CLAIM_WAIT", "", str)
LEASE = setting("LEASE", "1 minute", str)
HOLD = setting("HOLD", 0)
BEFORE = setting("BEFORE", 0)
AFTER = setting("AFTER", 0)
DURATION = BEFORE + HOLD + AFTER if HOLD > 0 else setting("SECONDS", 600)
STATEMENTS = setting("STATEMENTS", 1)
DIAGNOSE = setting("DIAGNOSE", 1)
STALL_MS = setting("STALL_MS", 100.0, float)
RESULTS = ENV["VB_STEADY_RESULTS"]
POSTMASTER = int(ENV["VB_STEADY_POSTMASTER"])
DSN = ENV.get("VB_STEADY_DSN", "dbname=vbsteady")
CLK_TCK = os.sysconf("SC_CLK_TCK")
GRACE = 1.5           # seconds after an interval's end before it is reported
FLUSH = 0.5           # how often the processes send what they measured


def interval_of(t, t0):
    return int((t - t0) // INTERVAL)


def phase_of(t_rel):
    """before / held / after, by seconds since the start (hold mode only)."""
    if HOLD <= 0:
        return "steady"
    if t_rel < BEFORE:
        return "before"
    if t_rel < BEFORE + HOLD:
        return "held"
    return "after"


def connect(name):
    return psycopg2.connect(DSN, application_name=name)


def sleep_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


# ---------------------------------------------------------------------------
# producer
# ---------------------------------------------------------------------------
def producer(t0, end, out):
    conn = connect("steady-producer")
    conn.autocommit = True
    cur = conn.cursor()
    started = 0
    acc = {}
    last_flush = time.time()
    k = 0
    sleep_until(t0)
    while True:
        now = time.time()
        if now >= end:
            break
        due = int(RATE * (now - t0)) - started
        if due > 0:
            n = min(due, 10000)
            inputs = [json.dumps({"t": now})] * n
            cur.execute("SELECT count(*) FROM vectorbea.start_runs('steady', %s::jsonb[])",
                        (inputs,))
            cur.fetchone()
            done = time.time()
            started += n
            a = acc.setdefault(interval_of(done, t0), {"started": 0, "start_ms": []})
            a["started"] += n
            a["start_ms"].append((done - now) * 1000)
        if time.time() - last_flush >= FLUSH:
            out.put(("producer", acc))
            acc = {}
            last_flush = time.time()
        k += 1
        sleep_until(t0 + k * CHUNK_MS / 1000)
        while t0 + k * CHUNK_MS / 1000 < time.time() - CHUNK_MS / 1000:
            k += 1            # fell behind: the next call catches up
    out.put(("producer", acc))
    conn.close()


# ---------------------------------------------------------------------------
# worker: the pipelined loop
# ---------------------------------------------------------------------------
def new_worker_acc():
    return {"claims": 0, "empty": 0, "claimed": 0, "done": 0, "claim_ms": [],
            "txn_ms": [], "complete_ms": [], "pickup_ms": [], "e2e_ms": [],
            "lost": 0, "errors": []}


def waker(end, tokens):
    """WAKE=one: one notification, one idle worker woken."""
    conn = connect("steady-waker")
    conn.autocommit = True
    conn.cursor().execute("LISTEN vectorbea_tasks")
    while time.time() < end:
        if select.select([conn], [], [], 0.5)[0]:
            conn.poll()
            for _ in conn.notifies:
                tokens.put(1)
            conn.notifies.clear()


def wait_for_work(conn, tokens):
    """After an empty claim: a notification (or a waker's token), at most POLL_MS."""
    if tokens is not None:
        try:
            tokens.get(timeout=POLL_MS / 1000)
        except queue.Empty:
            pass
    elif conn.notifies:
        conn.notifies.clear()
    elif select.select([conn], [], [], POLL_MS / 1000)[0]:
        conn.poll()
        conn.notifies.clear()


def worker(i, t0, end, out, tokens):
    name = f"steady-{i + 1}"
    conn = connect("steady-worker")
    conn.autocommit = True
    cur = conn.cursor()
    if CLAIM_WAIT:
        cur.execute("SET vectorbea.claim_wait = %s", (CLAIM_WAIT,))
    if tokens is None:
        cur.execute("LISTEN vectorbea_tasks")
    conn.autocommit = False
    ids, leases, starts = [], [], []
    acc = {}
    last_flush = time.time()
    sleep_until(t0)
    while True:
        finishing = time.time() >= end
        t_begin = time.time()
        try:
            if ids:
                cur.execute("SELECT vectorbea.complete_tasks(%s::bigint[], %s::uuid[])",
                            (ids, leases))
            t_claim = time.time()
            rows = []
            if not finishing:
                cur.execute("SELECT task_id, lease, run_input"
                            "  FROM vectorbea.claim_tasks(%s, ARRAY['work'], %s, %s::interval)",
                            (name, BATCH, LEASE))
                rows = cur.fetchall()
            t_claimed = time.time()
            conn.commit()
            t_end = time.time()
        except psycopg2.Error as e:
            conn.rollback()
            a = acc.setdefault(interval_of(time.time(), t0), new_worker_acc())
            if e.pgcode == "VB001":
                # The batch's leases are gone (the whole call rolled back):
                # its tasks are another attempt's now.
                a["lost"] += len(ids)
            else:
                a["errors"].append(f"{e.pgcode}: {str(e).strip()[:200]}")
                time.sleep(0.1)
            ids, leases, starts = [], [], []
            if finishing:
                break
            continue
        a = acc.setdefault(interval_of(t_end, t0), new_worker_acc())
        if ids:
            a["done"] += len(ids)
            a["complete_ms"].append((t_claim - t_begin) * 1000)
            a["e2e_ms"].extend((t_end - s) * 1000 for s in starts)
        if not finishing:
            a["claims"] += 1
            a["claim_ms"].append((t_claimed - t_claim) * 1000)
            a["txn_ms"].append((t_end - t_begin) * 1000)
            a["claimed"] += len(rows)
            a["pickup_ms"].extend((t_claimed - r[2]["t"]) * 1000 for r in rows)
        ids = [r[0] for r in rows]
        leases = [r[1] for r in rows]
        starts = [r[2]["t"] for r in rows]
        if time.time() - last_flush >= FLUSH:
            out.put(("worker", acc))
            acc = {}
            last_flush = time.time()
        if finishing:
            break
        if not rows:
            a["empty"] += 1
            wait_for_work(conn, tokens)
        elif tokens is not None and len(rows) == BATCH:
            tokens.put(1)     # more may be ready than one claim takes
    out.put(("worker", acc))
    conn.close()


# ---------------------------------------------------------------------------
# sampler: wait events
# ---------------------------------------------------------------------------
def what_runs(app, btype, query):
    if btype == "autovacuum worker":
        return "autovacuum"
    if app == "steady-worker":
        if "claim_tasks" in query:
            return "claim"
        if "complete_tasks" in query:
            return "complete"
        return "worker"
    if app == "steady-producer":
        return "start_runs"
    if btype and btype != "client backend":
        return btype
    return app or "other"


def sampler(t0, end, out):
    conn = connect("steady-sampler")
    conn.autocommit = True
    cur = conn.cursor()
    acc = {}
    last_flush = time.time()
    sleep_until(t0)
    while time.time() < end:
        cur.execute("SELECT application_name, backend_type,"
                    "       coalesce(wait_event_type || ':' || wait_event, 'CPU'), left(query, 200)"
                    "  FROM pg_stat_activity"
                    " WHERE datname = current_database() AND state = 'active'"
                    "   AND pid <> pg_backend_pid()")
        k = interval_of(time.time(), t0)
        a = acc.setdefault(k, {"samples": 0, "waits": {}})
        a["samples"] += 1
        for app, btype, wait, query in cur.fetchall():
            label = f"{wait} in {what_runs(app, btype, query or '')}"
            a["waits"][label] = a["waits"].get(label, 0) + 1
        if time.time() - last_flush >= FLUSH:
            out.put(("sampler", acc))
            acc = {}
            last_flush = time.time()
        time.sleep(0.1)
    out.put(("sampler", acc))
    conn.close()


# ---------------------------------------------------------------------------
# holder: a snapshot held open (issue 16)
# ---------------------------------------------------------------------------
def holder(t0, out):
    sleep_until(t0 + BEFORE)
    conn = connect("steady-holder")
    conn.set_session(isolation_level="REPEATABLE READ")
    cur = conn.cursor()
    # The first statement of a REPEATABLE READ transaction takes its
    # snapshot; the transaction then stays "idle in transaction".
    cur.execute("SELECT 1 FROM vectorbea.workflows LIMIT 1")
    cur.execute("SELECT backend_xmin::text FROM pg_stat_activity WHERE pid = pg_backend_pid()")
    xmin = cur.fetchone()[0]
    out.put(("hold", {"event": "taken", "at": time.time() - t0, "xmin": xmin}))
    sleep_until(t0 + BEFORE + HOLD)
    conn.commit()
    out.put(("hold", {"event": "released", "at": time.time() - t0}))
    conn.close()


# ---------------------------------------------------------------------------
# diagnose: the plans of the claim's statements, as the engine runs them
# ---------------------------------------------------------------------------
def diagnose(label, path):
    """One claim_tasks call in a session of its own with auto_explain
    loaded (LOAD, this session only) and log_min_duration 0: every
    statement the claim runs inside the engine is explained with ANALYZE
    and BUFFERS, and the plans come back as LOG messages.  The transaction
    is rolled back, so the claimed tasks stay ready."""
    lines = [f"-- {label}: {time.strftime('%H:%M:%S')}"]
    conn = connect("steady-diagnose")
    conn.notices = []          # keep them all (the default keeps 50)
    try:
        cur = conn.cursor()
        # The plans come back to this session as LOG messages; keep them
        # out of the server log (LOG ranks above WARNING there), where
        # slow-plans.log collects the workers' slow statements.
        cur.execute("LOAD 'auto_explain'")
        cur.execute("SET auto_explain.log_min_duration = 0;"
                    " SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on;"
                    " SET auto_explain.log_timing = on; SET auto_explain.log_nested_statements = on;"
                    " SET auto_explain.sample_rate = 1;"
                    " SET client_min_messages = log; SET log_min_messages = panic")
        conn.commit()
        claim = ("SELECT count(*) FROM vectorbea.claim_tasks('steady-explain', ARRAY['work'], %s,"
                 " %s::interval)")
        # A first call fills this session's caches (catalogs, prepared
        # plans), as a worker's session has them; not explained.
        cur.execute("SET auto_explain.log_min_duration = -1")
        cur.execute(claim, (BATCH, LEASE))
        conn.rollback()
        # BATCH ready tasks of its own, so that the claim has rows to take
        # even when the workers keep the backlog at zero; the claim takes
        # the oldest ready tasks, these or the producer's.
        cur.execute("SELECT count(*) FROM vectorbea.start_runs('steady',"
                    " array_fill('{}'::jsonb, ARRAY[%s]))", (BATCH,))
        cur.execute("SET auto_explain.log_min_duration = 0")
        del conn.notices[:]
        t = time.time()
        cur.execute("SELECT task_id, lease FROM vectorbea.claim_tasks('steady-explain', ARRAY['work'],"
                    " %s, %s::interval)", (BATCH, LEASE))
        claimed = cur.fetchall()
        ms = (time.time() - t) * 1000
        lines.append(f"-- claim_tasks(..., {BATCH}) claimed {len(claimed)} in {ms:.1f} ms (after start_runs"
                     f" of {BATCH} in the same transaction); the plans of its statements:")
        lines.extend(x.rstrip() for x in conn.notices)
        del conn.notices[:]
        t = time.time()
        cur.execute("SELECT vectorbea.complete_tasks(%s::bigint[], %s::uuid[])",
                    ([r[0] for r in claimed], [r[1] for r in claimed]))
        ms = (time.time() - t) * 1000
        conn.rollback()
        lines.append(f"-- complete_tasks of those {len(claimed)} in {ms:.1f} ms (then all rolled back);"
                     " the plans of its statements:")
        lines.extend(x.rstrip() for x in conn.notices)
        cur.execute("SET client_min_messages = warning")
        cur.execute("SELECT count(*) FROM vectorbea.nodes WHERE status = 'ready'")
        lines.append(f"-- ready nodes now: {cur.fetchone()[0]}")
        conn.rollback()
    except psycopg2.Error as e:
        lines.append(f"diagnosis failed: {e}")
        conn.rollback()
    finally:
        conn.close()
    with open(path, "a") as f:
        f.write("\n".join(lines) + "\n\n")


def diagnoser(t0, out):
    if HOLD > 0:
        # Near the end of each phase (15 s before, or half way in a short one).
        points = [(name, start + max(length - 15, length / 2))
                  for name, start, length in (("before", 0, BEFORE), ("held", BEFORE, HOLD),
                                              ("after", BEFORE + HOLD, AFTER))]
        # and a third of the way into the hold
        points.insert(1, ("held, early", BEFORE + HOLD / 3))
    else:
        # Early (before the first ANALYZE of the new tables), and near the end.
        points = [("early", min(15, DURATION / 4)), ("end", max(DURATION - 15, DURATION / 2))]
    for name, at in points:
        sleep_until(t0 + at)
        t = time.time()
        diagnose(f"{name} (t={at:.0f} s)", os.path.join(RESULTS, "explain.txt"))
        out.put(("diag", {"phase": name, "at": at, "seconds": time.time() - t}))


# ---------------------------------------------------------------------------
# main: per-interval report
# ---------------------------------------------------------------------------
def server_ticks():
    """CPU ticks of the server: live processes plus those reaped."""
    with open(f"/proc/{POSTMASTER}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = int(fields[13]) + int(fields[14])     # cutime + cstime
    total += int(fields[11]) + int(fields[12])    # the postmaster's own
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(st[1]) == POSTMASTER:
            total += int(st[11]) + int(st[12])
    return total


def client_ticks(pids):
    total = sum(os.times()[:2]) * CLK_TCK
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            total += int(st[11]) + int(st[12])
        except OSError:
            pass
    return total


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


TABLES = ("nodes", "events", "runs")


def db_sample(cur):
    cur.execute("SELECT count(*) FILTER (WHERE status = 'ready'),"
                "       count(*) FILTER (WHERE status = 'running')"
                "  FROM vectorbea.nodes WHERE status IN ('ready', 'running')")
    ready, running = cur.fetchone()
    cur.execute("SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count,"
                "       last_autovacuum IS NOT NULL, last_autoanalyze IS NOT NULL"
                "  FROM pg_stat_user_tables WHERE schemaname = 'vectorbea'"
                "   AND relname IN ('nodes', 'events', 'runs')")
    stats = {r[0]: {"live": r[1], "dead": r[2], "vacuums": r[3], "analyzes": r[4]}
             for r in cur.fetchall()}
    cur.execute("SELECT coalesce(max(age(backend_xmin)), 0) FROM pg_stat_activity"
                " WHERE backend_xmin IS NOT NULL")
    xmin_age = cur.fetchone()[0]
    return {"ready": ready, "running": running, "stats": stats, "xmin_age": xmin_age}


def pss_snapshot(cur):
    if not STATEMENTS:
        return {}
    cur.execute("SELECT queryid, left(regexp_replace(query, '\\s+', ' ', 'g'), 110), calls,"
                "       total_exec_time, rows, shared_blks_hit + shared_blks_read"
                "  FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())")
    return {r[0]: r[1:] for r in cur.fetchall()}


def pss_diff(a, b, top=12):
    rows = []
    for qid, (text, calls, total, nrows, blks) in b.items():
        c0, t0_, r0, b0 = (a[qid][1:] if qid in a else (0, 0.0, 0, 0))
        dc = calls - c0
        if dc <= 0:
            continue
        rows.append((total - t0_, dc, (total - t0_) / dc, (nrows - r0) / dc, (blks - b0) / dc, text))
    rows.sort(reverse=True)
    out = [f"{'calls':>8} {'total ms':>10} {'mean ms':>9} {'rows/call':>9} {'blocks/call':>11}  statement"]
    for total, calls, mean, nrows, blks, text in rows[:top]:
        out.append(f"{calls:8d} {total:10.0f} {mean:9.3f} {nrows:9.1f} {blks:11.1f}  {text}")
    return out


def fmt(v, spec=".0f"):
    return "-" if v is None else format(v, spec)


def main():
    mp.set_start_method("fork")
    out = mp.Queue()
    t0 = time.time() + 1.0
    end = t0 + DURATION
    if WAKE not in ("all", "one"):
        sys.exit(f"VB_STEADY_WAKE must be all or one ({WAKE})")
    tokens = mp.Queue() if WAKE == "one" else None
    procs = [mp.Process(target=producer, args=(t0, end, out), name="producer")]
    procs += [mp.Process(target=worker, args=(i, t0, end, out, tokens), name=f"worker-{i}")
              for i in range(WORKERS)]
    if tokens is not None:
        procs.append(mp.Process(target=waker, args=(end, tokens), name="waker"))
    procs.append(mp.Process(target=sampler, args=(t0, end, out), name="sampler"))
    if HOLD > 0:
        procs.append(mp.Process(target=holder, args=(t0, out), name="holder"))
    if DIAGNOSE:
        procs.append(mp.Process(target=diagnoser, args=(t0, out), name="diagnose"))

    mon = connect("steady-monitor")
    mon.autocommit = True
    cur = mon.cursor()
    pss = {"start": pss_snapshot(cur)}

    for p in procs:
        p.start()
    pids = [p.pid for p in procs]

    prod, work, samp = {}, {}, {}
    notes = []

    def merge(store, acc):
        for k, a in acc.items():
            s = store.setdefault(k, {})
            for key, v in a.items():
                if isinstance(v, list):
                    s.setdefault(key, []).extend(v)
                elif isinstance(v, dict):
                    d = s.setdefault(key, {})
                    for kk, vv in v.items():
                        d[kk] = d.get(kk, 0) + vv
                else:
                    s[key] = s.get(key, 0) + v

    def drain(block_until):
        while True:
            timeout = block_until - time.time()
            try:
                kind, acc = out.get(timeout=max(0.0, timeout)) if timeout > 0 else out.get_nowait()
            except queue.Empty:
                return
            if kind == "producer":
                merge(prod, acc)
            elif kind == "worker":
                merge(work, acc)
            elif kind == "sampler":
                merge(samp, acc)
            elif kind == "hold":
                notes.append(("hold", acc))
                print(f"   hold: snapshot {acc['event']} at t={acc['at']:.1f} s"
                      + (f" (backend_xmin {acc['xmin']})" if "xmin" in acc else ""), flush=True)
            elif kind == "diag":
                notes.append(("diag", acc))
                print(f"   diagnosis of phase {acc['phase']} took {acc['seconds']:.1f} s"
                      " (explain.txt)", flush=True)

    n_int = (DURATION + INTERVAL - 1) // INTERVAL
    rows = []
    cpu0, ccpu0, tcpu0 = server_ticks(), client_ticks(pids), time.time()
    prev_stats = None
    header = (f"{'t':>5} {'phase':>6} {'started':>7} {'done':>7} {'backlog':>7} {'run':>4}"
              f" {'claim p50':>9} {'p99':>7} {'max':>7} {'txn p99':>7} {'pickup p99':>10}"
              f" {'e2e p99':>8} {'srv CPU':>7} {'us/task':>7} {'dead nodes':>10} {'events':>7}"
              f" {'runs':>6} {'xmin age':>8}  vacuum/analyze")
    print(header, flush=True)
    first_analyze = {}
    for k in range(n_int):
        t_rep = t0 + min((k + 1) * INTERVAL, DURATION)
        drain(t_rep)
        sleep_until(t_rep)
        # The database's view at the interval's end.
        s = db_sample(cur)
        cpu1, ccpu1, tcpu1 = server_ticks(), client_ticks(pids), time.time()
        if HOLD > 0:
            for b in (BEFORE, BEFORE + HOLD):
                if (k + 1) * INTERVAL == b:
                    pss[f"t{b}"] = pss_snapshot(cur)
        drain(t_rep + GRACE)
        w = work.get(k, {})
        pr = prod.get(k, {})
        sm = samp.get(k, {})
        seconds = tcpu1 - tcpu0
        srv = (cpu1 - cpu0) / CLK_TCK
        cli = (ccpu1 - ccpu0) / CLK_TCK
        cpu0, ccpu0, tcpu0 = cpu1, ccpu1, tcpu1
        done = w.get("done", 0)
        events = []
        for t in TABLES:
            cur_t = s["stats"].get(t, {})
            prev_t = (prev_stats or {}).get(t, {"vacuums": 0, "analyzes": 0})
            dv = cur_t.get("vacuums", 0) - prev_t["vacuums"]
            da = cur_t.get("analyzes", 0) - prev_t["analyzes"]
            if dv:
                events.append(f"V {t}")
            if da:
                events.append(f"A {t}")
                first_analyze.setdefault(t, k)
        prev_stats = s["stats"]
        row = {
            "k": k, "t": min((k + 1) * INTERVAL, DURATION),
            "phase": phase_of(k * INTERVAL + INTERVAL / 2),
            "started": pr.get("started", 0), "done": done,
            "claimed": w.get("claimed", 0), "claims": w.get("claims", 0), "empty": w.get("empty", 0),
            "ready": s["ready"], "running": s["running"],
            "claim_p50": pct(w.get("claim_ms", []), 50), "claim_p99": pct(w.get("claim_ms", []), 99),
            "claim_max": max(w.get("claim_ms", []), default=None),
            "txn_p99": pct(w.get("txn_ms", []), 99),
            "complete_p99": pct(w.get("complete_ms", []), 99),
            "pickup_p99": pct(w.get("pickup_ms", []), 99),
            "e2e_p99": pct(w.get("e2e_ms", []), 99),
            "start_p99": pct(pr.get("start_ms", []), 99),
            "server_cores": srv / seconds, "client_cores": cli / seconds,
            "server_us_per_task": srv / done * 1e6 if done else None,
            "dead": {t: s["stats"].get(t, {}).get("dead") for t in TABLES},
            "live": {t: s["stats"].get(t, {}).get("live") for t in TABLES},
            "xmin_age": s["xmin_age"], "events": events,
            "lost": w.get("lost", 0), "errors": w.get("errors", []),
            "waits": sm.get("waits", {}), "samples": sm.get("samples", 0),
        }
        rows.append(row)
        print(f"{row['t']:5d} {row['phase']:>6} {row['started']:7d} {done:7d} {row['ready']:7d}"
              f" {row['running']:4d} {fmt(row['claim_p50'], '9.1f')} {fmt(row['claim_p99'], '7.1f')}"
              f" {fmt(row['claim_max'], '7.0f')} {fmt(row['txn_p99'], '7.1f')}"
              f" {fmt(row['pickup_p99'], '10.0f')} {fmt(row['e2e_p99'], '8.0f')}"
              f" {row['server_cores']:7.2f} {fmt(row['server_us_per_task'], '7.0f')}"
              f" {fmt(row['dead']['nodes'], '10d')} {fmt(row['dead']['events'], '7d')}"
              f" {fmt(row['dead']['runs'], '6d')} {row['xmin_age']:8d}  {' '.join(events)}"
              + (f"  lost {row['lost']}" if row['lost'] else "")
              + (f"  ERRORS {len(row['errors'])}: {row['errors'][0]}" if row['errors'] else ""),
              flush=True)
    # The processes finish their last transaction; one that is still
    # inside a claim a minute later (it happens under a held snapshot) is
    # terminated and reported, its backend left to the server's shutdown.
    give_up = time.time() + 60
    for p in procs:
        p.join(timeout=max(0.0, give_up - time.time()))
    drain(time.time() + 0.5)
    for p in procs:
        if p.is_alive():
            p.terminate()
            notes.append(("stuck", {"name": p.name}))
    bad_exit = [p.name for p in procs if p.exitcode not in (0, None)]
    # Completions of the final batches land after the last interval.
    late_done = sum(v.get("done", 0) for kk, v in work.items() if kk >= n_int)
    pss["end"] = pss_snapshot(cur)
    report(cur, rows, pss, notes, first_analyze, late_done, bad_exit)
    mon.close()
    return 1 if bad_exit else 0


def report(cur, rows, pss, notes, first_analyze, late_done, bad_exit):
    started = sum(r["started"] for r in rows)
    done = sum(r["done"] for r in rows) + late_done
    cur.execute("SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'ready'),"
                "       count(*) FILTER (WHERE status = 'running'), count(*) FROM vectorbea.nodes")
    db_done, db_ready, db_running, db_nodes = cur.fetchone()
    cur.execute("SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') FROM vectorbea.runs")
    db_runs, db_runs_done = cur.fetchone()
    cur.execute("SELECT count(*) FROM vectorbea.events")
    db_events = cur.fetchone()[0]
    cur.execute("SELECT c.relname, pg_total_relation_size(c.oid), pg_table_size(c.oid),"
                "       pg_indexes_size(c.oid), s.n_live_tup, s.n_dead_tup,"
                "       s.autovacuum_count, s.autoanalyze_count,"
                "       to_char(s.last_autovacuum, 'HH24:MI:SS'), to_char(s.last_autoanalyze, 'HH24:MI:SS')"
                "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'vectorbea'"
                "  JOIN pg_stat_user_tables s ON s.relid = c.oid"
                " WHERE c.relname IN ('nodes', 'events', 'runs') ORDER BY c.relname")
    sizes = cur.fetchall()
    cur.execute("SELECT t.relname, i.relname, pg_relation_size(i.oid)"
                "  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                "  JOIN pg_class t ON t.oid = x.indrelid"
                "  JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = 'vectorbea'"
                " WHERE t.relname IN ('nodes', 'events', 'runs') ORDER BY t.relname, i.relname")
    indexes = cur.fetchall()
    total = {r[0]: r[1] for r in sizes}
    # What a row holds (pg_column_size of the row; heap pages add a 24-byte
    # tuple header, a 4-byte line pointer, and free space).
    cur.execute("SELECT type, count(*), avg(pg_column_size(e.*))::int, avg(pg_column_size(e.data))::int"
                "  FROM vectorbea.events e GROUP BY type ORDER BY count(*) DESC, type")
    event_types = cur.fetchall()
    cur.execute("SELECT (SELECT avg(pg_column_size(n.*))::int FROM vectorbea.nodes n),"
                "       (SELECT avg(pg_column_size(r.*))::int FROM vectorbea.runs r)")
    node_width, run_width = cur.fetchone()

    claim_all = [r for r in rows if r["claim_p99"] is not None]
    stalled = [r for r in rows if r["claim_p99"] is not None and r["claim_p99"] > STALL_MS]
    backlog_limit = max(RATE, 1.0)   # one second of arrivals
    grown = [r for r in rows if r["ready"] > backlog_limit]
    L = []
    L.append(f"vectorbea steady-load bench (bench/steady){' with a held snapshot' if HOLD else ''}")
    L.append(f"settings: {RATE:.0f} runs/s of one task (start_runs every {CHUNK_MS} ms), {WORKERS} workers,"
             f" claim_tasks(..., {BATCH}, '{LEASE}') pipelined with complete_tasks in one transaction,"
             f" an empty claim waits for NOTIFY at most {POLL_MS} ms"
             + (" (one waker: each notification wakes one worker)" if WAKE == "one" else "")
             + f"; {DURATION} s"
             + (f" ({BEFORE} s before, {HOLD} s held, {AFTER} s after)" if HOLD else "")
             + f"; report every {INTERVAL} s")
    L.append("")
    L.append("columns: started/done = runs started, tasks completed (committed) in the interval;"
             " backlog = ready nodes, run = running")
    L.append("nodes at the interval's end; claim = the claim_tasks statement as the worker sees it"
             " (ms); txn = complete_tasks + claim_tasks + COMMIT;")
    L.append("pickup = start_runs call -> claimed, e2e = start_runs call -> completion committed"
             " (ms); srv CPU = server cores used; us/task = server")
    L.append("CPU per completed task; dead = n_dead_tup; xmin age = age of the oldest backend_xmin;"
             " V/A = autovacuum/autoanalyze of a table in the interval")
    L.append("")
    L.append(f"{'t':>5} {'phase':>6} {'started':>7} {'done':>7} {'backlog':>7} {'run':>4} {'claims':>6}"
             f" {'empty':>5} {'claim p50':>9} {'p99':>7} {'max':>7} {'txn p99':>7} {'pickup p99':>10}"
             f" {'e2e p99':>8} {'srv CPU':>7} {'us/task':>7} {'dead nodes':>10} {'events':>7}"
             f" {'runs':>6} {'xmin age':>8}  vacuum/analyze")
    for r in rows:
        L.append(f"{r['t']:5d} {r['phase']:>6} {r['started']:7d} {r['done']:7d} {r['ready']:7d}"
                 f" {r['running']:4d} {r['claims']:6d} {r['empty']:5d} {fmt(r['claim_p50'], '9.1f')}"
                 f" {fmt(r['claim_p99'], '7.1f')} {fmt(r['claim_max'], '7.0f')}"
                 f" {fmt(r['txn_p99'], '7.1f')} {fmt(r['pickup_p99'], '10.0f')}"
                 f" {fmt(r['e2e_p99'], '8.0f')} {r['server_cores']:7.2f}"
                 f" {fmt(r['server_us_per_task'], '7.0f')} {fmt(r['dead']['nodes'], '10d')}"
                 f" {fmt(r['dead']['events'], '7d')} {fmt(r['dead']['runs'], '6d')}"
                 f" {r['xmin_age']:8d}  {' '.join(r['events'])}")
    L.append("")
    L.append("wait events of the database's active backends (pg_stat_activity every 100 ms;"
             " the top 4 per interval, samples of backends):")
    for r in rows:
        top = sorted(r["waits"].items(), key=lambda x: -x[1])[:4]
        L.append(f"{r['t']:5d} {r['samples']:4d} samples: " + ", ".join(f"{n} {c}" for c, n in
                                                                   [(c, n) for c, n in top]))
    L.append("")

    def phase_summary(name, rs):
        if not rs:
            return
        secs = len(rs) * INTERVAL
        claims = [r for r in rs if r["claim_p99"] is not None]
        d = sum(r["done"] for r in rs)
        srv = sum(r["server_cores"] for r in rs) * INTERVAL
        L.append(f"  {name:>6}: {sum(r['started'] for r in rs) / secs:6.0f} started/s,"
                 f" {d / secs:6.0f} done/s, claim p99 median {fmt(pct([r['claim_p99'] for r in claims], 50), '.1f')}"
                 f" ms, worst {fmt(max((r['claim_p99'] for r in claims), default=None), '.1f')} ms,"
                 f" e2e p99 worst {fmt(max((r['e2e_p99'] or 0 for r in rs), default=None), '.0f')} ms,"
                 f" backlog max {max(r['ready'] for r in rs)},"
                 f" server CPU {srv / d * 1e6 if d else 0:.0f} us/task,"
                 f" dead nodes/events/runs at the end {rs[-1]['dead']['nodes']}/{rs[-1]['dead']['events']}/{rs[-1]['dead']['runs']}"
                 f" (max {max(r['dead']['nodes'] or 0 for r in rs)}/{max(r['dead']['events'] or 0 for r in rs)}/"
                 f"{max(r['dead']['runs'] or 0 for r in rs)})")

    L.append("summary:")
    L.append(f"  runs started {started}, tasks completed {done} (succeeded nodes in the database: {db_done};"
             f" left ready {db_ready}, running {db_running}); runs {db_runs} ({db_runs_done} succeeded),"
             f" events {db_events}, nodes {db_nodes}")
    lost = sum(r["lost"] for r in rows)
    errors = [e for r in rows for e in r["errors"]]
    L.append(f"  leases lost (VB001): {lost}; other errors: {len(errors)}"
             + (f" (first: {errors[0]})" if errors else ""))
    if bad_exit:
        L.append(f"  PROCESSES FAILED: {', '.join(bad_exit)}")
    if HOLD:
        for name in ("before", "held", "after"):
            phase_summary(name, [r for r in rows if r["phase"] == name])
    else:
        phase_summary("all", rows)
    for name, acc in notes:
        if name == "hold":
            L.append(f"  snapshot {acc['event']} at t={acc['at']:.1f} s")
    L.append("  first autoanalyze (interval end, s): " + ", ".join(
        f"{t} {rows[k]['t']}" for t, k in sorted(first_analyze.items(), key=lambda x: x[1]))
        + ("; never: " + ", ".join(t for t in TABLES if t not in first_analyze)
           if any(t not in first_analyze for t in TABLES) else ""))
    L.append(f"  stall rule: claim p99 above {STALL_MS:.0f} ms in an interval, or more than"
             f" {backlog_limit:.0f} ready tasks (one second of arrivals) at an interval's end")
    L.append(f"  intervals with claim p99 > {STALL_MS:.0f} ms: {len(stalled)} of {len(claim_all)}"
             + (" (t = " + ", ".join(str(r['t']) for r in stalled) + ")" if stalled else ""))
    L.append(f"  intervals ending with a backlog > {backlog_limit:.0f}: {len(grown)}"
             + (" (t = " + ", ".join(f"{r['t']}: {r['ready']}" for r in grown) + ")" if grown else ""))
    L.append(f"  CLAIMS STALLED: {'yes' if stalled or grown else 'no'}")
    L.append("")
    L.append("sizes at the end (pg_total_relation_size = heap with TOAST and maps + indexes):")
    L.append(f"  {'table':<7} {'total':>10} {'heap':>10} {'indexes':>10} {'live rows':>10} {'dead rows':>10}"
             f" {'autovacuums':>11} {'autoanalyzes':>12} {'last autovacuum':>15} {'last autoanalyze':>16}")
    for name, tot, heap, idx, live, dead, av, aa, lav, laa in sizes:
        L.append(f"  {name:<7} {tot:10d} {heap:10d} {idx:10d} {live:10d} {dead:10d} {av:11d} {aa:12d}"
                 f" {lav or '-':>15} {laa or '-':>16}")
    for t, i, sz in indexes:
        L.append(f"    {t}.{i}: {sz} bytes")
    if db_done:
        ne = total.get("nodes", 0) + total.get("events", 0)
        L.append(f"  bytes per finished task: nodes + events {ne / db_done:.0f}"
                 f" (nodes {total.get('nodes', 0) / db_done:.0f}, events {total.get('events', 0) / db_done:.0f});"
                 f" with runs {(ne + total.get('runs', 0)) / db_done:.0f}  (aim: nodes + events <= 1024)")
        L.append(f"  row sizes (pg_column_size, average): node {node_width}, run {run_width} bytes; events"
                 " by type (count, row, data): " + ", ".join(f"{t} {c} {w} {d}" for t, c, w, d in event_types))
    L.append("")
    if STATEMENTS and pss.get("end"):
        if HOLD:
            bounds = [("before", "start", f"t{BEFORE}"), ("held", f"t{BEFORE}", f"t{BEFORE + HOLD}"),
                      ("after", f"t{BEFORE + HOLD}", "end")]
        else:
            bounds = [("the whole run", "start", "end")]
        for name, a, b in bounds:
            if a in pss and b in pss:
                L.append(f"pg_stat_statements, {name} (top statements by execution time;"
                         " nested statements included; blocks = shared hit + read):")
                L.extend("  " + x for x in pss_diff(pss[a], pss[b]))
                L.append("")
    text = "\n".join(L) + "\n"
    with open(os.path.join(RESULTS, "report.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(RESULTS, "intervals.tsv"), "w") as f:
        keys = ["t", "phase", "started", "done", "claimed", "claims", "empty", "ready", "running",
                "claim_p50", "claim_p99", "claim_max", "txn_p99", "complete_p99", "pickup_p99",
                "e2e_p99", "start_p99", "server_cores", "client_cores", "server_us_per_task",
                "xmin_age", "lost"]
        f.write("\t".join(keys + ["dead_nodes", "dead_events", "dead_runs", "live_nodes",
                                  "live_events", "live_runs", "events"]) + "\n")
        for r in rows:
            vals = ["" if r[k] is None else (f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]))
                    for k in keys]
            vals += [str(r["dead"][t]) for t in TABLES] + [str(r["live"][t]) for t in TABLES]
            vals.append(" ".join(r["events"]))
            f.write("\t".join(vals) + "\n")
    print()
    print(text[text.index("summary:"):])


if __name__ == "__main__":
    sys.exit(main())
