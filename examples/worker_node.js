#!/usr/bin/env node
// A vectorbea worker with node-postgres (docs/workers-node.md).  SIGTERM or SIGINT: finish the
// batch in hand, then exit.  Connection: --dsn URL, else $VB_DSN, else the PG* variables.
//   node worker_node.js [--dsn URL] [--name N] [--activities a,b] [--lease S] [--drain S]
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

async function runTask(db, t) {         // run the handler, then complete or fail the task
  let fn = 'complete_task', arg;
  try { arg = await HANDLERS[t.activity](t); } catch (e) {  // TaskError: its class, else transient
    [fn, arg] = ['fail_task', { message: e.message, class: e.cls ?? 'transient' }];
  }
  try {
    await db.query('BEGIN');            // your own writes go here, to commit with the result
    await db.query(`SELECT vectorbea.${fn}($1, $2, $3::jsonb)`,  // JSON goes as text
                   [t.task_id, t.lease, JSON.stringify(arg ?? null)]);
    await db.query('COMMIT');
    return fn;
  } catch (e) {
    await db.query('ROLLBACK');
    if (e.code !== 'VB001') throw e;    // VB001: the lease no longer holds the task
    return `VB001, result dropped: ${e.detail}`;
  }
}

async function main() {
  const env = process.env, { values: a } = parseArgs({ options: {
    dsn: { type: 'string', default: env.VB_DSN ?? '' },
    name: { type: 'string', default: env.VB_WORKER ?? `${os.hostname()}:${process.pid}` },
    activities: { type: 'string', default: env.VB_ACTIVITIES ?? Object.keys(HANDLERS).join(',') },
    lease: { type: 'string', default: '60' }, drain: { type: 'string', default: 'Infinity' } } });
  const log = (msg) => console.log(new Date().toISOString().slice(11, 19), a.name, msg);
  const clients = [0, 1, 2].map(() =>
    new pg.Client({ connectionString: a.dsn || undefined, application_name: a.name }));
  const [db, listen, beat] = await Promise.all(clients.map((c) => c.connect().then(() => c)));
  let stop = false, notified = false, wake = () => {}, idleSince = Date.now();
  listen.on('notification', () => { notified = true; wake(); });   // any payload: claim again
  await listen.query('LISTEN vectorbea_tasks');
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { stop = true; wake(); });
  const held = new Map();               // task_id -> lease; every third of the lease, renew them
  const timer = setInterval(() => held.forEach((lease, id) =>
    beat.query('SELECT vectorbea.heartbeat($1, $2)', [id, lease])    // VB001: runTask drops it
      .catch((e) => log(`heartbeat of task ${id}: ${e.code} ${e.message}`))), a.lease * 1000 / 3);
  while (!stop) {
    notified = false;
    const { rows: tasks } = await db.query('SELECT * FROM vectorbea.claim_tasks($1, $2, $3, $4)',
      [a.name, a.activities.split(','), BATCH, `${a.lease} seconds`]);
    tasks.forEach((t) => held.set(t.task_id, t.lease));
    for (const t of tasks) {            // the whole batch, even when asked to stop
      log(`${t.node} attempt ${t.attempt}: ${await runTask(db, t)}`);
      held.delete(t.task_id);
    }
    if (tasks.length) idleSince = Date.now();
    const left = idleSince + a.drain * 1000 - Date.now();
    if (left <= 0) break;
    if (!tasks.length && !notified && !stop)  // wait for a NOTIFY, a signal or the poll interval
      await new Promise((resolve) => { const t = setTimeout(resolve, Math.min(left, POLL_MS));
                                        wake = () => { clearTimeout(t); resolve(); }; });
  }
  clearInterval(timer);
  await Promise.all(clients.map((c) => c.end()));
  log(`stopped: ${stop ? 'signal' : 'drained'}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
