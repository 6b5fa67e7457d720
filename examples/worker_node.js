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
const json = (value) => JSON.stringify(value ?? null);     // JSON goes as text

async function runHandler(t) {          // -> [the call that reports the task, its argument]
  try { return ['complete_task', await HANDLERS[t.activity](t)]; } catch (e) {
    return ['fail_task', { message: e.message, class: e.cls ?? 'transient' }];
  }                                     // a TaskError has a class; anything else is transient
}

async function report(db, t, fn, arg) {       // one result, in a transaction of its own
  try {
    const { rows } = await db.query(`SELECT vectorbea.${fn}($1, $2, $3::jsonb) AS r`,
                                    [t.task_id, t.lease, json(arg)]);
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
       outputs.map(([, output]) => json(output))]);
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
    activities: { type: 'string', default: env.VB_ACTIVITIES ?? Object.keys(HANDLERS).join(',') },
    lease: { type: 'string', default: '60' }, drain: { type: 'string', default: 'Infinity' } } });
  const log = (msg) => console.log(new Date().toISOString().slice(11, 19), a.name, msg);
  const say = (t, outcome) => log(t ? `${t.node} attempt ${t.attempt}: ${outcome}` : outcome);
  const clients = [0, 1, 2].map(() =>
    new pg.Client({ connectionString: a.dsn || undefined, application_name: a.name }));
  const [db, listen, beat] = await Promise.all(clients.map((c) => c.connect().then(() => c)));
  let stop = false, notified = false, wake = () => {}, idleSince = Date.now();
  listen.on('notification', () => { notified = true; wake(); });   // any payload: claim again
  await listen.query('LISTEN vectorbea_tasks');
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { stop = true; wake(); });
  const held = new Map();               // task_id -> lease; every third of the lease, renew them
  let beating = Promise.resolve();      // the rounds of heartbeats, one after the other
  const timer = setInterval(() => { beating = beating.then(async () => {
    for (const [id, lease] of held) {   // VB001: finish() drops the result
      await beat.query('SELECT vectorbea.heartbeat($1, $2)', [id, lease])
        .catch((e) => log(`heartbeat of task ${id}: ${e.code} ${e.message}`));
    }
  }); }, a.lease * 1000 / 3);
  const claim = async () => (stop ? [] : (await db.query(
    'SELECT * FROM vectorbea.claim_tasks($1, $2, $3, $4)',
    [a.name, a.activities.split(','), BATCH, `${a.lease} seconds`])).rows);
  for (let tasks = [];;) {
    notified = false;
    const outputs = [];                 // [task, output] of the handlers that succeeded
    for (const t of tasks) {            // the whole batch, even when asked to stop
      const [fn, arg] = await runHandler(t);
      if (fn === 'complete_task') { outputs.push([t, arg]); continue; }
      held.delete(t.task_id);           // no heartbeat for a task while it is being reported
      await beating;
      say(t, await report(db, t, fn, arg));   // a failure at once, alone: see the guide
    }
    held.clear();
    await beating;
    if (tasks.length) idleSince = Date.now();
    tasks = await finish(db, outputs, claim, say);   // after a signal: complete, claim nothing
    tasks.forEach((t) => held.set(t.task_id, t.lease));
    if (tasks.length) continue;
    const left = idleSince + a.drain * 1000 - Date.now();
    if (stop || left <= 0) break;
    if (!notified)                      // wait for a NOTIFY, a signal or the poll interval
      await new Promise((resolve) => { const t = setTimeout(resolve, Math.min(left, POLL_MS));
                                        wake = () => { clearTimeout(t); resolve(); }; });
  }
  clearInterval(timer);
  await beating;
  await Promise.all(clients.map((c) => c.end()));
  log(`stopped: ${stop ? 'signal' : 'drained'}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
