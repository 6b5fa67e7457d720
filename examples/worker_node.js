#!/usr/bin/env node
// vectorbea workers with node-postgres (docs/workers-node.md): --workers async workers in one
// process, one listener that wakes one idle worker per notification.  SIGTERM or SIGINT: finish
// the batches in hand, then exit.  Connection: --dsn URL, else $VB_DSN, else the PG* variables.
//   node worker_node.js [--dsn URL] [--name N] [--workers N] [--activities a,b] [--lease S]
//                       [--drain S]
const os = require('node:os');
const { parseArgs } = require('node:util');
const pg = require('pg');
const BATCH = 10, POLL_MS = 5000;       // tasks per claim; claim this often even without NOTIFY

class TaskError extends Error {         // throw new TaskError(message, cls) to fail with a class
  constructor(message, cls = 'transient') { super(message); this.cls = cls; }
}
const HANDLERS = {
  echo: async (task) => task.input,
  sleep: (task) => new Promise((ok) => setTimeout(ok, 1000 * task.input.seconds, { slept: true })),
  flaky: async (task) => {              // fails its first attempt, so that the engine retries it
    if (task.attempt === 1) throw new TaskError(`${task.input.key}: service busy, try again`);
    return { key: task.input.key, attempt: task.attempt };
  },
};
const json = (value) => {               // JSON goes as text, checked here, so that a value
  const text = JSON.stringify(value ?? null);  // jsonb refuses fails its own task, not the batch
  if (text === undefined || /\\u(0000|d[89a-f])/i.test(text.replaceAll('\\\\', '')))
    throw new Error('the output is not JSON that jsonb can store (a function, the character ' +
                    'U+0000, or half a surrogate pair)');
  return text;
};
const errorOf = (e) => {                // the error, as text jsonb takes, cut to a size it keeps
  let message = String(e?.message ?? e).replaceAll('\0', '\\0');
  if (message.length > 2000) message = `${message.slice(0, 2000)}... (${message.length} characters)`;
  message = message.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
                            '\uFFFD');        // half a surrogate pair (toWellFormed from Node 20)
  return json({ message, class: e?.cls ?? 'transient' });
};

async function runHandler(t) {          // -> [the call that reports the task, its JSON text]
  try { return ['complete_task', json(await HANDLERS[t.activity](t))]; } catch (e) {
    return ['fail_task', errorOf(e)];   // a TaskError has a class; anything else is transient
  }
}

async function report(db, t, fn, arg) {       // one result, in a transaction of its own
  try {
    const { rows } = await db.query(`SELECT vectorbea.${fn}($1, $2, $3::jsonb) AS r`,
                                    [t.task_id, t.lease, arg]);
    return fn === 'complete_task' ? 'completed' : `failed, ${rows[0].r}`;
  } catch (e) {
    if (e.code !== 'VB001') throw e;    // VB001: the lease no longer holds the task
    return `VB001, result dropped: ${e.detail}`;
  }
}

async function finish(db, outputs, claim, say) {  // complete a batch, claim the next: one commit
  if (!outputs.length) return claim();
  try {
    await db.query('BEGIN');            // all or nothing: one lost lease refuses the whole call
    await db.query('SELECT vectorbea.complete_tasks($1::bigint[], $2::uuid[], $3::jsonb[])',
      [outputs.map(([t]) => t.task_id), outputs.map(([t]) => t.lease),
       outputs.map(([, output]) => output)]);
    const tasks = await claim();        // the next batch, in the same transaction
    await db.query('COMMIT');
    outputs.forEach(([t]) => say(t, 'completed'));
    return tasks;
  } catch (e) {                         // VB001: roll back, then complete each task on its own
    await db.query('ROLLBACK');
    if (e.code !== 'VB001') throw e;
    say(null, `complete_tasks refused (VB001, ${e.message}): one at a time`);
  }
  for (const [t, output] of outputs) say(t, await report(db, t, 'complete_task', output));
  return claim();
}

async function main() {
  const env = process.env, { values: a } = parseArgs({ options: {
    dsn: { type: 'string', default: env.VB_DSN ?? '' },
    name: { type: 'string', default: env.VB_WORKER ?? `${os.hostname()}:${process.pid}` },
    workers: { type: 'string', default: env.VB_WORKERS ?? '4' },
    activities: { type: 'string', default: env.VB_ACTIVITIES ?? Object.keys(HANDLERS).join(',') },
    lease: { type: 'string', default: '60' }, drain: { type: 'string', default: 'Infinity' } } });
  const log = (msg, name = a.name) =>
    console.log(new Date().toISOString().slice(11, 19), name, msg);
  const clients = Array.from({ length: Number(a.workers) + 2 }, () =>
    new pg.Client({ connectionString: a.dsn || undefined, application_name: a.name }));
  const [listen, beat, ...dbs] = await Promise.all(clients.map((c) => c.connect().then(() => c)));
  let stop = false, drained = false, missed = false;
  const idle = [];                      // the wake() of each idle worker
  const wakeOne = () => {               // none idle: the next worker to go idle claims once more,
    if (idle.length) idle[0](); else missed = true;   // as its last claim may have come too early
  };
  const stopAll = () => { stop = true; [...idle].forEach((wake) => wake()); };
  const waitForWork = (ms) => new Promise((resolve) => {   // until wakeOne(), a signal or ms
    if (stop || missed) { missed = false; resolve(); return; }
    const wake = () => { clearTimeout(timer); idle.splice(idle.indexOf(wake), 1); resolve(); };
    const timer = setTimeout(wake, ms);
    idle.push(wake);
  });
  listen.on('notification', wakeOne);   // one listener for all workers: see the guide
  await listen.query('LISTEN vectorbea_tasks');
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, stopAll);
  const held = new Map();               // task_id -> lease of every worker's batch; every third
  const lost = new Set();               // of the lease, renew them, one round after the other
  let beating = Promise.resolve();
  const timer = setInterval(() => { beating = beating.then(async () => {
    for (const [id, lease] of [...held]) {
      await beat.query('SELECT vectorbea.heartbeat($1, $2)', [id, lease]).catch((e) => {
        if (e.code !== 'VB001') {       // the connection or the server: end the process
          console.error(e);
          process.exit(1);
        }                               // VB001: the task is gone; renewed no more, and left
        log(`heartbeat of task ${id}: ${e.code} ${e.message}`);
        held.delete(id);                // out of its batch's complete_tasks, which it would
        lost.add(id);                   // refuse whole
      });
    }
  }); }, a.lease * 1000 / 3);
  const idleSince = new Map();          // for --drain: since when each worker has found nothing
  async function worker(k, db) {
    const name = `${a.name}/${k}`;
    const say = (t, outcome) =>
      log(t ? `${t.node} attempt ${t.attempt}: ${outcome}` : outcome, name);
    const claim = async () => (stop ? [] : (await db.query(
      'SELECT * FROM vectorbea.claim_tasks($1, $2, $3, $4)',
      [name, a.activities.split(','), BATCH, `${a.lease} seconds`])).rows);
    for (let tasks = []; tasks.length || !stop;) {
      const outputs = [];               // [task, output] of the handlers that succeeded
      for (const t of tasks) {          // the whole batch, even when asked to stop
        const [fn, arg] = await runHandler(t);
        if (fn === 'complete_task') { outputs.push([t, arg]); continue; }
        held.delete(t.task_id);         // no heartbeat for a task while it is being reported
        await beating;
        say(t, await report(db, t, fn, arg));   // a failure at once, alone: see the guide
      }
      tasks.forEach((t) => held.delete(t.task_id));   // this worker's batch; the others' stay
      await beating;
      const kept = outputs.filter(([t]) => {   // a heartbeat found its lease gone: drop it
        if (!lost.has(t.task_id)) return true;
        say(t, 'VB001 at its heartbeat, result dropped');
        return false;
      });
      tasks.forEach((t) => lost.delete(t.task_id));
      tasks = await finish(db, kept, claim, say);   // after a signal: complete, claim nothing
      tasks.forEach((t) => held.set(t.task_id, t.lease));
      if (tasks.length) idleSince.delete(k);
      else if (!idleSince.has(k)) idleSince.set(k, Date.now());
      if (tasks.length === BATCH) wakeOne();   // a full claim: more may be ready, wake one more
      if (tasks.length) continue;
      const left = idleSince.size < dbs.length ? POLL_MS   // drained: every worker idle --drain s
        : Math.max(...idleSince.values()) + a.drain * 1000 - Date.now();
      if (left <= 0 && !stop) { drained = true; stopAll(); }
      await waitForWork(Math.min(left, POLL_MS));
    }
  }
  await Promise.all(dbs.map((db, k) => worker(k + 1, db)));
  clearInterval(timer);
  await beating;
  await Promise.all(clients.map((c) => c.end()));
  log(`stopped: ${drained ? 'drained' : 'signal'}`);
}

module.exports = { HANDLERS, TaskError, main };   // to add handlers from a module of your own
if (require.main === module) main().catch((e) => { console.error(e); process.exit(1); });
