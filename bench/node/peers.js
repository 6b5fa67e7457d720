#!/usr/bin/env node
// bench/node/peers.js -- the Node.js side of bench/peers: one measurement
// point of vectorbea, pg-boss or graphile-worker, and the report.
//
//   node peers.js point SYSTEM WORKLOAD STYLE WORKERS   (settings in PEERS_*)
//   node peers.js report TSV...
//
// A point resets the system's tables (vectorbea: DROP and CREATE EXTENSION;
// the peers: DROP SCHEMA, then their own migrations), pre-loads a backlog
// with the system's own bulk call, runs VACUUM ANALYZE and CHECKPOINT, then
// starts WORKERS workers in this process as the system's documentation
// has them (bench/README.md, "Side by side with the peers"), lets them warm
// up (0.5 s, or a tenth of the backlog), and measures from then until 90 %
// of the backlog is done or PEERS_SECONDS have passed, whichever comes
// first.  Stopping short of the end keeps the tail (fewer jobs than
// workers) out of the rate.
//
// What is counted comes from the database, read at the start and at the end
// of the window: succeeded nodes (vectorbea), completed jobs (pg-boss), and
// the jobs or chain steps no longer in the table (graphile-worker deletes a
// job when it completes).  The server's CPU is that of every process of the
// PostgreSQL server (/proc: the postmaster, its live children, and what it
// collected from children that exited); the client's is this process's.
// The point prints one JSON object on its last line of output.
//
// Workloads: "noop" (a job that does nothing) and "chain" (five steps, each
// enqueued when the one before it completes).  Styles: "one" (one job at a
// time per worker), "batch" (vectorbea and pg-boss: 10 per claim or fetch;
// graphile-worker: its local queue and batched completion), "pipelined"
// (vectorbea: complete the previous batch and claim the next in one
// transaction), "spawn" (vectorbea chains whose nodes spawn the next one).
'use strict';

const fs = require('node:fs');
const pg = require('pg');

const STEPS = 5;                  // steps of a chain
const BATCH = +(process.env.PEERS_BATCH || 10);   // jobs per claim or fetch in the batch styles
const VB_PER_RUN = 100;           // vectorbea no-op tasks per run, as bench/run

const env = process.env;
const setting = (name, dflt) => (env[name] === undefined || env[name] === '' ? dflt : env[name]);

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

// CPU ticks of the whole server: the postmaster's own, its live children's,
// and what it collected from children that exited.
function serverTicks(postmaster) {
  const fields = (pid) => {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2).split(' ');   // [0] is field 3 (state)
  };
  const pm = fields(postmaster);
  let ticks = +pm[11] + +pm[12] + +pm[13] + +pm[14];             // utime stime cutime cstime
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || name === String(postmaster)) continue;
    let f;
    try { f = fields(name); } catch { continue; }                  // gone meanwhile
    if (f[1] === String(postmaster)) ticks += +f[11] + +f[12];
  }
  return ticks;
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

function connection(db) {
  const host = env.PGHOST, port = env.PGPORT;
  return `postgresql://${encodeURIComponent(env.PEERS_USER || env.USER || 'postgres')}@/${db}` +
    `?host=${encodeURIComponent(host)}&port=${port}`;
}

async function connect(db, name) {
  const c = new pg.Client({ connectionString: connection(db), application_name: name });
  await c.connect();
  return c;
}

// ---------------------------------------------------------------------------
// vectorbea
// ---------------------------------------------------------------------------

// complete_tasks(...) (set-based batch completion) is used when the engine
// has it and PEERS_COMPLETE_TASKS is not "off".  Its argument list is read
// from pg_proc rather than assumed: the task ids go to its first bigint[]
// argument, the leases to its first uuid[], spawn lists (chains that spawn)
// to a jsonb[] argument named like "spawn".  Every other argument must have
// a default.  Returns null, and why, when it cannot be used.
async function findCompleteTasks(c) {
  const { rows } = await c.query(`
    SELECT p.oid::regprocedure::text AS sig, p.pronargs, p.pronargdefaults,
           coalesce(p.proargnames, '{}') AS names, coalesce(p.proargmodes::text[], '{}') AS modes,
           ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) WITH ORDINALITY AS a(t, n)
                 ORDER BY n) AS types
      FROM pg_proc p
     WHERE p.pronamespace = to_regnamespace('vectorbea') AND p.proname = 'complete_tasks'`);
  if (rows.length === 0) return { fn: null, why: 'vectorbea.complete_tasks does not exist' };
  if (rows.length > 1) return { fn: null, why: `several vectorbea.complete_tasks: ${rows.map((r) => r.sig).join(', ')}` };
  const r = rows[0];
  // Names of the input arguments, in the order of proargtypes.
  const names = r.modes.length ? r.names.filter((_, i) => ['i', 'b', 'v'].includes(r.modes[i])) : r.names;
  const args = r.types.map((type, i) => ({ type, name: names[i] || '', required: i < r.pronargs - r.pronargdefaults }));
  const pick = (use, type, re) => {
    const a = args.find((x) => x.type === type && !x.use && (!re || re.test(x.name)));
    if (a) a.use = use;
    return a;
  };
  const ok = pick('ids', 'bigint[]') && pick('leases', 'uuid[]');
  pick('spawns', 'jsonb[]', /spawn/i);
  if (!ok || args.some((a) => a.required && !a.use) || args.some((a) => a.use && !a.name))
    return { fn: null, why: `${r.sig}: arguments not understood` };
  return { fn: { sig: r.sig, args: args.filter((a) => a.use) }, why: r.sig };
}

// How a worker completes what it claimed (rows of claim_tasks), with no
// output (a no-op job has none).  One task: complete_task.  A batch:
// complete_tasks, one call, where the engine has it (and it takes spawn
// lists when the chain needs them); otherwise complete_task once per task,
// in one statement.
function vbCompletion(ct, spawnNeeded) {
  const spawnOf = (t) => {
    const step = +t.node.slice(1);
    return step < STEPS ? JSON.stringify([{ id: `s${step + 1}`, activity: 'step' }]) : null;
  };
  const one = spawnNeeded
    ? { name: 'vb_complete_one', text: 'SELECT vectorbea.complete_task($1, $2, NULL, $3::jsonb)',
      values: (tasks) => [tasks[0].task_id, tasks[0].lease, spawnOf(tasks[0])] }
    : { name: 'vb_complete_one', text: 'SELECT vectorbea.complete_task($1, $2)',
      values: (tasks) => [tasks[0].task_id, tasks[0].lease] };
  const spawnArg = ct && ct.args.find((a) => a.use === 'spawns');
  if (ct && (!spawnNeeded || spawnArg)) {
    const args = ct.args.filter((a) => a.use !== 'spawns' || spawnNeeded);
    return {
      one,
      name: 'vb_complete_tasks',
      text: `SELECT vectorbea.complete_tasks(${args.map((a, i) => `${a.name} => $${i + 1}::${a.type}`).join(', ')})`,
      values: (tasks) => args.map((a) => (a.use === 'ids' ? tasks.map((t) => t.task_id)
        : a.use === 'leases' ? tasks.map((t) => t.lease) : tasks.map(spawnOf))),
      how: 'complete_tasks, one call per batch',
    };
  }
  return {
    one,
    name: 'vb_complete_each',
    text: spawnNeeded
      ? `SELECT vectorbea.complete_task(t.id, t.lease, NULL, t.spawn)
           FROM unnest($1::bigint[], $2::uuid[], $3::jsonb[]) AS t(id, lease, spawn)`
      : 'SELECT vectorbea.complete_task(t.id, t.lease) FROM unnest($1::bigint[], $2::uuid[]) AS t(id, lease)',
    values: (tasks) => [tasks.map((t) => t.task_id), tasks.map((t) => t.lease), ...(spawnNeeded ? [tasks.map(spawnOf)] : [])],
    how: 'complete_task per task, in one statement',
  };
}

const vectorbea = {
  db: 'vbbench',
  activity: (workload) => (workload === 'noop' ? 'noop' : 'step'),

  async load(p) {
    const c = await connect(this.db, 'peers-load');
    try {
      await c.query('SET client_min_messages = warning');
      await c.query('DROP EXTENSION IF EXISTS vectorbea CASCADE');
      await c.query('CREATE EXTENSION vectorbea CASCADE');
      let nodes, runs;
      if (p.workload === 'noop') {
        nodes = Array.from({ length: VB_PER_RUN }, (_, i) => ({ id: `n${i + 1}`, activity: 'noop' }));
        runs = Math.ceil(p.jobs / VB_PER_RUN);
      } else if (p.style === 'spawn') {
        nodes = [{ id: 's1', activity: 'step' }];         // each step spawns the next
        runs = p.chains;
      } else {
        nodes = Array.from({ length: STEPS }, (_, i) =>
          ({ id: `s${i + 1}`, activity: 'step', ...(i ? { depends_on: [`s${i}`] } : {}) }));
        runs = p.chains;
      }
      await c.query('SELECT vectorbea.define_workflow($1, $2::jsonb)', ['peers', JSON.stringify({ nodes })]);
      const many = (await c.query("SELECT to_regprocedure('vectorbea.start_runs(text, jsonb[], text[], jsonb)') IS NOT NULL AS y")).rows[0].y;
      for (let i = 0; i < runs; i += 1000) {
        await c.query(many
          ? "SELECT count(*) FROM vectorbea.start_runs('peers', array_fill('{}'::jsonb, ARRAY[$1::int]))"
          : "SELECT count(vectorbea.start_run('peers')) FROM generate_series(1, $1)", [Math.min(1000, runs - i)]);
      }
      const ct = setting('PEERS_COMPLETE_TASKS', 'auto') === 'off'
        ? { fn: null, why: 'VB_PEERS_COMPLETE_TASKS=off' } : await findCompleteTasks(c);
      await c.query('VACUUM ANALYZE');
      await c.query('CHECKPOINT');
      return { total: p.workload === 'noop' ? runs * VB_PER_RUN : runs * STEPS, ct };
    } finally {
      await c.end();
    }
  },

  async count(c) {
    const { rows } = await c.query("SELECT count(*)::int AS n FROM vectorbea.nodes WHERE status = 'succeeded'");
    return rows[0].n;
  },

  // After the measurement: no task failed, and the history of the first 50
  // runs replays to what the tables hold.
  async check(c) {
    const { rows } = await c.query(`SELECT (SELECT count(*) FROM vectorbea.nodes WHERE status = 'failed')::int AS failed,
      (SELECT count(*) FROM (SELECT id FROM vectorbea.runs ORDER BY id LIMIT 50) r, vectorbea.verify_run(r.id))::int AS diffs`);
    if (rows[0].failed || rows[0].diffs) throw new Error(`check: ${rows[0].failed} failed tasks, ${rows[0].diffs} verify_run differences`);
  },

  // Each worker is a connection of its own, looping: claim, then complete
  // what it claimed (two transactions), or, pipelined, complete the batch in
  // hand and claim the next in one transaction (one round trip: two
  // statements in one simple-protocol query, which PostgreSQL runs as one
  // transaction).
  async start(p, ctx, loaded) {
    const k = p.style === 'one' || p.style === 'spawn' ? 1 : BATCH;
    const completion = vbCompletion(loaded.ct.fn, p.style === 'spawn');
    ctx.note = `claim_tasks(k=${k}); ${k === 1 ? 'complete_task' : completion.how}` +
      (p.style === 'pipelined' ? '; complete + claim in one transaction' : '') +
      (k > 1 && !loaded.ct.fn ? ` (${loaded.ct.why})` : '');
    const activity = this.activity(p.workload);
    const clients = await Promise.all(Array.from({ length: p.workers }, (_, i) => connect(this.db, `peers-${i}`)));
    const claim = { name: 'vb_claim', text: 'SELECT task_id, lease, node FROM vectorbea.claim_tasks($1, $2::text[], $3)' };
    const complete = async (c, tasks) => {
      if (k === 1) {
        await c.query({ name: completion.one.name, text: completion.one.text, values: completion.one.values(tasks) });
      } else {
        await c.query({ name: completion.name, text: completion.text, values: completion.values(tasks) });
      }
    };
    const literal = (tasks) => {            // pipelined: the batch in hand as SQL literals
      for (const t of tasks) {
        if (!/^\d+$/.test(t.task_id) || !/^[0-9a-f-]{36}$/.test(t.lease)) throw new Error(`unexpected task ${t.task_id}`);
      }
      const values = completion.values(tasks);
      return completion.text.replace(/\$(\d+)/g, (_, n) => {
        const elements = values[+n - 1].map((x) => (x === null ? 'NULL' : `"${String(x).replace(/["\\]/g, '\\$&')}"`));
        return `'{${elements.join(',')}}'`.replace(/'/g, (q, at, all) => (at === 0 || at === all.length - 1 ? q : "''"));
      });
    };
    const loop = async (c, i) => {
      const worker = `peers-${i}`;
      let hand = [];
      while (!ctx.stop) {
        let got;
        if (p.style === 'pipelined') {
          const text = (hand.length ? `${literal(hand)};\n` : '') +
            `SELECT task_id, lease, node FROM vectorbea.claim_tasks('${worker}', ARRAY['${activity}'], ${k})`;
          const res = await c.query(text);
          got = (Array.isArray(res) ? res[res.length - 1] : res).rows;
          ctx.done += hand.length;
          hand = got;
        } else {
          got = (await c.query({ ...claim, values: [worker, [activity], k] })).rows;
          if (got.length) {
            await complete(c, got);
            ctx.done += got.length;
          }
        }
        ctx.claims++;
        if (got.length === 0) {
          ctx.empty++;
          await sleep(5);
        }
      }
      if (hand.length) await complete(c, hand);
    };
    const loops = clients.map((c, i) => loop(c, i));
    return {
      done: Promise.all(loops),
      stop: async () => { await Promise.allSettled(loops); await Promise.all(clients.map((c) => c.end())); },
    };
  },
};

// ---------------------------------------------------------------------------
// pg-boss: send/insert to enqueue; workers fetch and complete
// ---------------------------------------------------------------------------
const pgBoss = {
  db: 'peers_pgboss',
  queue: (workload) => (workload === 'noop' ? 'noop' : 'step'),

  async load(p) {
    const c = await connect(this.db, 'peers-load');
    try {
      await c.query('SET client_min_messages = warning');
      await c.query('DROP SCHEMA IF EXISTS pgboss CASCADE');
    } finally {
      await c.end();
    }
    const { PgBoss } = require('pg-boss');
    // One instance, as an application has: its pool serves the workers
    // (one connection each) and pg-boss's own maintenance and monitoring,
    // left at their defaults.
    const boss = new PgBoss({ connectionString: connection(this.db), max: p.workers + 2, application_name: 'peers-pgboss' });
    boss.on('error', (e) => { this.error = this.error || e; });
    await boss.start();
    const q = this.queue(p.workload);
    await boss.createQueue(q);
    const total = p.workload === 'noop' ? p.jobs : p.chains;
    for (let i = 0; i < total; i += 5000) {        // insert(): its bulk enqueue
      const n = Math.min(5000, total - i);
      await boss.insert(q, Array.from({ length: n }, (_, j) =>
        ({ data: p.workload === 'noop' ? {} : { chain: i + j, step: 1 } })));
    }
    const v = await connect(this.db, 'peers-load');
    await v.query('VACUUM ANALYZE');
    await v.query('CHECKPOINT');
    await v.end();
    return { total: p.workload === 'noop' ? total : total * STEPS, boss };
  },

  async count(c, p) {
    const { rows } = await c.query("SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state = 'completed'",
      [this.queue(p.workload)]);
    return rows[0].n;
  },

  async check(c, p) {
    const { rows } = await c.query("SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state IN ('failed', 'retry')",
      [this.queue(p.workload)]);
    if (rows[0].n) throw new Error(`check: ${rows[0].n} jobs failed or waiting for a retry`);
  },

  // Each worker loops: fetch (batchSize 1 or 10), enqueue the next step of a
  // chain (send, or insert for a batch), complete the fetched ids.  work()
  // is not used: its loop waits pollingIntervalSeconds (0.5 s at least)
  // after every batch, so a drain would measure that wait (README).
  async start(p, ctx, loaded) {
    const boss = loaded.boss, q = this.queue(p.workload);
    const k = p.style === 'one' ? 1 : BATCH;
    ctx.note = `fetch(batchSize ${k}) + ${p.workload === 'chain' ? (k === 1 ? 'send + ' : 'insert + ') : ''}complete`;
    const loop = async () => {
      while (!ctx.stop) {
        const jobs = await boss.fetch(q, { batchSize: k });
        ctx.claims++;
        if (!jobs.length) {
          ctx.empty++;
          await sleep(5);
          continue;
        }
        if (p.workload === 'chain') {
          const next = jobs.filter((j) => j.data.step < STEPS).map((j) => ({ chain: j.data.chain, step: j.data.step + 1 }));
          if (k === 1 && next.length) await boss.send(q, next[0]);
          else if (next.length) await boss.insert(q, next.map((data) => ({ data })));
        }
        await boss.complete(q, jobs.map((j) => j.id));
        ctx.done += jobs.length;
        if (this.error) throw this.error;
      }
    };
    const loops = Array.from({ length: p.workers }, loop);
    return {
      done: Promise.all(loops),
      stop: async () => { await Promise.allSettled(loops); await boss.stop({ graceful: false, wait: false }); },
    };
  },
};

// ---------------------------------------------------------------------------
// graphile-worker: addJobs to enqueue; run() with a task list and concurrency
// ---------------------------------------------------------------------------
const graphile = {
  db: 'peers_graphile',

  logger() {
    const { Logger } = require('graphile-worker');
    return new Logger(() => (level, message) => { if (level === 'error') console.error(`graphile-worker: ${message}`); });
  },

  async load(p) {
    const c = await connect(this.db, 'peers-load');
    try {
      await c.query('SET client_min_messages = warning');
      await c.query('DROP SCHEMA IF EXISTS graphile_worker CASCADE');
    } finally {
      await c.end();
    }
    const { runMigrations, makeWorkerUtils } = require('graphile-worker');
    const options = { connectionString: connection(this.db), logger: this.logger() };
    await runMigrations(options);
    const utils = await makeWorkerUtils(options);
    const total = p.workload === 'noop' ? p.jobs : p.chains;
    try {
      for (let i = 0; i < total; i += 5000) {      // addJobs(): its bulk enqueue
        const n = Math.min(5000, total - i);
        await utils.addJobs(Array.from({ length: n }, (_, j) => (p.workload === 'noop'
          ? { identifier: 'noop', payload: {} }
          : { identifier: 'step', payload: { chain: i + j, step: 1 } })));
      }
    } finally {
      await utils.release();
    }
    const v = await connect(this.db, 'peers-load');
    await v.query('VACUUM ANALYZE');
    await v.query('CHECKPOINT');
    await v.end();
    return { total: p.workload === 'noop' ? total : total * STEPS, chains: total };
  },

  // Completed jobs are deleted.  No-op: the jobs gone.  Chains: each
  // chain's highest step still in the table says how many are left (a step
  // whose successor was added counts as done; its deletion may follow a
  // moment later).
  async count(c, p, loaded) {
    if (p.workload === 'noop') {
      const { rows } = await c.query('SELECT count(*)::int AS n FROM graphile_worker._private_jobs');
      return loaded.total - rows[0].n;
    }
    const { rows } = await c.query(`SELECT coalesce(sum(${STEPS + 1} - s), 0)::int AS left
      FROM (SELECT max((payload->>'step')::int) AS s FROM graphile_worker._private_jobs
             GROUP BY payload->>'chain') AS x`);
    return loaded.total - rows[0].left;
  },

  async check(c) {
    const { rows } = await c.query('SELECT count(*)::int AS n FROM graphile_worker._private_jobs WHERE last_error IS NOT NULL');
    if (rows[0].n) throw new Error(`check: ${rows[0].n} jobs failed`);
  },

  // run(): one runner with concurrency = workers and a pool one larger (as
  // in graphile-worker's performance setup).  The batch style adds its
  // batching, with the values of its performance page: a local queue of 500
  // jobs fetched at once, and completions batched (completeJobBatchDelay 0).
  async start(p, ctx) {
    const { run } = require('graphile-worker');
    const batch = p.style === 'batch';
    ctx.note = `run(concurrency ${p.workers})` + (batch ? ' + localQueue 500, completeJobBatchDelay 0' : '') +
      (p.workload === 'chain' ? '; helpers.addJob for the next step' : '');
    const runner = await run({
      connectionString: connection(this.db),
      concurrency: p.workers,
      maxPoolSize: p.workers + 1,
      noHandleSignals: true,
      logger: this.logger(),
      taskList: {
        noop: async () => { ctx.done++; },
        step: async (payload, helpers) => {
          if (payload.step < STEPS) await helpers.addJob('step', { chain: payload.chain, step: payload.step + 1 });
          ctx.done++;
        },
      },
      ...(batch ? { preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } } } : {}),
    });
    runner.events.on('job:error', ({ error }) => { ctx.error = ctx.error || error; });
    return { done: runner.promise, stop: () => runner.stop() };
  },
};

const SYSTEMS = { vectorbea, 'pg-boss': pgBoss, graphile: graphile };

async function point(systemName, workload, style, workers) {
  const sys = SYSTEMS[systemName];
  if (!sys) throw new Error(`unknown system ${systemName}`);
  if (!['noop', 'chain'].includes(workload)) throw new Error(`unknown workload ${workload}`);
  const p = {
    system: systemName, workload, style, workers: +workers,
    jobs: +(['batch', 'pipelined'].includes(style) ? setting('PEERS_BATCH_JOBS', 40000) : setting('PEERS_JOBS', 20000)),
    seconds: +setting('PEERS_SECONDS', 4),
    postmaster: +setting('PEERS_POSTMASTER', 0),
    hz: +setting('PEERS_CLK_TCK', 100),
  };
  p.chains = Math.ceil(p.jobs / STEPS);
  if (!(p.workers >= 1) || !(p.jobs >= 100) || !(p.seconds > 0) || !p.postmaster || !(BATCH >= 1 && BATCH <= 1000))
    throw new Error('need WORKERS >= 1, PEERS_JOBS and PEERS_BATCH_JOBS >= 100, PEERS_SECONDS > 0, PEERS_POSTMASTER, PEERS_BATCH 1 to 1000');
  const styles = { vectorbea: ['one', 'batch', 'pipelined', 'spawn'], 'pg-boss': ['one', 'batch'], graphile: ['one', 'batch'] };
  if (!styles[systemName].includes(style) || (style === 'spawn' && workload !== 'chain'))
    throw new Error(`${systemName} has no style ${style} for ${workload}`);

  const l0 = process.hrtime.bigint();
  const loaded = await sys.load(p);
  const loadSeconds = Number(process.hrtime.bigint() - l0) / 1e9;
  const mon = await connect(sys.db, 'peers-monitor');
  const ctx = { done: 0, claims: 0, empty: 0, stop: false, note: '', error: null };
  const target = Math.floor(loaded.total * 0.9);

  await sleep(300);                         // let the postmaster reap the loaders' backends
  const countStart = await sys.count(mon, p, loaded);
  const now = () => process.hrtime.bigint();
  const w = await sys.start(p, ctx, loaded);
  let failed = null;
  w.done.catch((e) => { failed = failed || e; });
  const running = () => !failed && !ctx.error;
  // Warm-up, outside the window: connecting, starting a runner, the first
  // calls of each connection.  0.5 s, or until a tenth of the backlog is
  // done.
  const warm = now() + 500000000n;
  while (running() && ctx.done < loaded.total / 10 && now() < warm) await sleep(10);
  const count0 = await sys.count(mon, p, loaded);
  const cpu0 = process.cpuUsage(), ticks0 = serverTicks(p.postmaster), t0 = now();
  const deadline = t0 + BigInt(Math.round(p.seconds * 1e9));
  // The window closes when the workers report 90 % of the backlog done (the
  // database has at least what they acknowledged, less completions in
  // flight), or at the deadline.
  while (running() && countStart + ctx.done < target && now() < deadline) await sleep(10);
  const acknowledged = countStart + ctx.done;
  const count1 = await sys.count(mon, p, loaded);
  const t1 = now(), ticks1 = serverTicks(p.postmaster), cpu1 = process.cpuUsage(cpu0);
  ctx.stop = true;
  await w.stop();
  if (failed || ctx.error) throw failed || ctx.error;
  await sys.check(mon, p);
  await mon.end();

  const seconds = Number(t1 - t0) / 1e9, items = count1 - count0;
  return {
    system: systemName, workload, style, workers: p.workers,
    items, seconds: +seconds.toFixed(3), rate: Math.round(items / seconds),
    server_cpu_s: +((ticks1 - ticks0) / p.hz).toFixed(2),
    client_cpu_s: +((cpu1.user + cpu1.system) / 1e6).toFixed(2),
    backlog: loaded.total, load_s: +loadSeconds.toFixed(1), done_at_end: count1, client_done: acknowledged, per_claim: ctx.claims ? +(ctx.done / ctx.claims).toFixed(2) : null,
    empty_claims: ctx.empty, note: ctx.note,
  };
}

// ---------------------------------------------------------------------------
// Report: medians over repeats and files of the rates and CPU per item;
// vectorbea's ratio to each peer is the median of the ratios taken within
// one file (one server, one run).
// ---------------------------------------------------------------------------
const COLUMNS = ['workload', 'style', 'system', 'workers', 'rate', 'items', 'seconds', 'server_cpu_s', 'client_cpu_s', 'status', 'note'];

function report(files) {
  const median = (a) => {
    const s = a.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
    if (!s.length) return NaN;
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const rows = [];
  for (const file of files) {
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
    const head = lines.shift().split('\t');
    for (const line of lines) {
      const f = line.split('\t'), r = { file };
      head.forEach((h, i) => { r[h] = f[i]; });
      for (const n of ['workers', 'rate', 'items', 'seconds', 'server_cpu_s', 'client_cpu_s']) r[n] = +r[n];
      rows.push(r);
    }
  }
  const ok = (r) => r.status === 'ok';
  const pick = (file, workload, style, system, workers) => rows.filter((r) => (file === null || r.file === file) &&
    r.workload === workload && r.style === style && r.system === system && r.workers === workers);
  // The peers' counterpart of each vectorbea row.
  const LINES = [
    { label: 'no-op, one at a time', workload: 'noop', vb: 'one', peer: 'one' },
    { label: 'no-op, batches', workload: 'noop', vb: 'batch', peer: 'batch' },
    { label: 'no-op, pipelined batches', workload: 'noop', vb: 'pipelined', peer: 'batch' },
    { label: 'chain of 5, depends_on', workload: 'chain', vb: 'one', peer: 'one' },
    { label: 'chain of 5, spawn', workload: 'chain', vb: 'spawn', peer: 'one' },
    { label: 'chain of 5, batches', workload: 'chain', vb: 'batch', peer: 'batch' },
  ];
  const workerCounts = [...new Set(rows.map((r) => r.workers).filter((n) => n > 0))].sort((a, b) => a - b);
  const files_ = [...new Set(rows.map((r) => r.file))];
  const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }) : '-');
  const rateOf = (file, w, sys, style, workload) => median(pick(file, workload, style, sys, w).filter(ok).map((r) => r.rate));
  const cpuOf = (w, sys, style, workload, field) =>
    median(pick(null, workload, style, sys, w).filter((r) => ok(r) && r.items > 0).map((r) => (r[field] / r.items) * 1e6));
  const errOf = (w, sys, style, workload) => pick(null, workload, style, sys, w).some((r) => !ok(r));
  const ratio = (w, line, peer) => median(files_.map((f) => rateOf(f, w, 'vectorbea', line.vb, line.workload) /
    rateOf(f, w, peer, line.peer, line.workload)));
  const bare = (w) => median(rows.filter((r) => r.system === 'postgres' && r.workers === w && ok(r)).map((r) => r.rate));
  const bareCpu = (w) => median(rows.filter((r) => r.system === 'postgres' && r.workers === w && ok(r) && r.items > 0)
    .map((r) => (r.server_cpu_s / r.items) * 1e6));

  const out = [];
  const table = (header, body) => {
    const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => String(b[i]).length)));
    const line = (cells) => cells.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
    out.push(line(header), ...body.map(line));
  };
  const cell = (w, sys, style, workload, x) => (errOf(w, sys, style, workload) && !Number.isFinite(x) ? 'error' : fmt(x));
  const present = (line) => rows.some((r) => r.system === 'vectorbea' && r.workload === line.workload && r.style === line.vb);
  const body = [], cpuBody = [];
  for (const line of LINES.filter(present)) {
    for (const w of workerCounts) {
      const vb = median(files_.map((f) => rateOf(f, w, 'vectorbea', line.vb, line.workload)));
      const boss = median(files_.map((f) => rateOf(f, w, 'pg-boss', line.peer, line.workload)));
      const gw = median(files_.map((f) => rateOf(f, w, 'graphile', line.peer, line.workload)));
      const cpu = (sys, style, field) => fmt(cpuOf(w, sys, style, line.workload, field));
      body.push([line.label, w, cell(w, 'vectorbea', line.vb, line.workload, vb),
        cell(w, 'pg-boss', line.peer, line.workload, boss), cell(w, 'graphile', line.peer, line.workload, gw),
        fmt(ratio(w, line, 'pg-boss'), 2), fmt(ratio(w, line, 'graphile'), 2),
        cpu('vectorbea', line.vb, 'server_cpu_s'), cpu('pg-boss', line.peer, 'server_cpu_s'),
        cpu('graphile', line.peer, 'server_cpu_s'), fmt(bare(w)), fmt(bareCpu(w))]);
      cpuBody.push([line.label, w, cpu('vectorbea', line.vb, 'client_cpu_s'), cpu('pg-boss', line.peer, 'client_cpu_s'),
        cpu('graphile', line.peer, 'client_cpu_s')]);
    }
  }
  out.push('Per second: jobs (chains: steps); vb/peer: vectorbea / peer in the same run;',
    'server CPU: of all server processes, microseconds per job; bare commit: rows/s and server CPU per row');
  table(['workload', 'workers', 'vectorbea', 'pg-boss', 'graphile', 'vb/pg-boss', 'vb/graphile',
    'CPU vb', 'CPU pg-boss', 'CPU graphile', 'bare commit', 'CPU bare'], body);
  out.push('', 'Client CPU (the Node.js process), microseconds per job');
  table(['workload', 'workers', 'vectorbea', 'pg-boss', 'graphile'], cpuBody);
  const notes = new Map();
  for (const r of rows) if (r.system !== 'postgres' && r.note) notes.set(`${r.system} ${r.workload} ${r.style}`, r.note);
  out.push('', 'How each system worked (system workload style: calls):');
  for (const [k, v] of [...notes].sort()) out.push(`  ${k}: ${v}`);
  out.push('', 'Batches: vectorbea claim_tasks and pg-boss fetch of k jobs at a time (notes above), each against graphile-worker');
  out.push('with its local queue and batched completion.  Spawn chains are compared with the peers\' chains.');
  out.push('bare commit: pgbench, one-row INSERT per transaction, as many clients as workers.');
  console.log(out.join('\n'));
}

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  if (cmd === 'point' && args.length === 4) {
    const result = await point(...args);
    if (env.PEERS_TSV) {
      fs.appendFileSync(env.PEERS_TSV, `${COLUMNS.map((c) => (c === 'status' ? 'ok' : result[c])).join('\t')}\n`);
    }
    console.log(JSON.stringify(result));
    process.exit(0);
  } else if (cmd === 'report' && args.length) {
    report(args);
  } else {
    console.error('usage: peers.js point SYSTEM WORKLOAD STYLE WORKERS | report TSV...');
    process.exit(2);
  }
}

main().catch((e) => {
  console.error(`peers.js: ${e.stack || e}`);
  process.exit(1);
});
