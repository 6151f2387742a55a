// Benchmarks: the plugin against raw Socket.IO 4.8 doing the same work by hand, in one run.
// Usage: node bench/run.js [--quick] [--large] [--only=fanout,scopes,presence,blip,publisher,...] [--presence=fanout,connect] [--sizes=100,1000,5000]
//        [--payload=64] [--groups=20] [--warmup=2] [--workers=1] [--pin=false] [--latency=false] [--cpu-prof] [--out=path]
//        [--blip-clients=2000]
// Needs a build (npx tsup): the server imports ../dist/index.js.
import { execSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { describe as describeBlip, runBlip } from './blip.js'
import {
  REDIS, histQuantile, killChildren, median, mergeHists, quantile, spawn, spread
} from './lib/util.js'
import { sharded } from './sharded.js'

const HERE = dirname(fileURLToPath(import.meta.url))
const ROOT = join(HERE, '..')
const SCENARIOS = ['micro', 'fanout', 'scopes', 'connect', 'memory', 'storm', 'cluster', 'sharded', 'presence', 'blip', 'publisher']

// ---------- options ----------
function parseArgs (argv) {
  const out = {}
  for (const arg of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg)
    if (m === null) throw new Error(`unknown argument ${arg}`)
    out[m[1]] = m[2] ?? true
  }
  return out
}

const args = parseArgs(process.argv.slice(2))
if (args.help) {
  console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(0, 5).join('\n'))
  process.exit(0)
}
const QUICK = args.quick === true
const LARGE = args.large === true
const int = (value, fallback) => value === undefined ? fallback : Number.parseInt(value, 10)
const cfg = {
  quick: QUICK,
  large: LARGE,
  only: args.only === undefined ? SCENARIOS : String(args.only).split(','),
  sizes: args.sizes === undefined ? (QUICK ? [100, 1000] : [100, 1000, 5000]) : String(args.sizes).split(',').map(Number),
  payload: int(args.payload, 64),
  groups: int(args.groups, QUICK ? 5 : 20),
  warmup: int(args.warmup, QUICK ? 1 : 2),
  workers: int(args.workers, 1),
  cpuProf: args['cpu-prof'] === true,
  // the fan-out's latency at half load (paced blocks, the slowest part of the scenario)
  latency: args.latency !== 'false',
  // deliveries per saturation block of the fan-out
  fanoutBlock: QUICK ? 20_000 : 40_000,
  pacedSeconds: QUICK ? 0.25 : 0.3,
  scopes: QUICK ? 300 : 1000,
  scopesRounds: QUICK ? 2 : 3,
  redisConcurrency: 32,
  connectN: QUICK ? 500 : 2000,
  connectWindow: 100,
  memoryN: QUICK ? [1000] : (LARGE ? [5000, 10_000] : [5000]),
  stormN: QUICK ? 200 : 1000,
  stormEvents: 50,
  clusterN: QUICK ? 200 : 1000,
  clusterBlock: QUICK ? 20_000 : 40_000,
  // two nodes on a three-master Redis Cluster (bench/sharded.js): fewer groups, so it stays under a minute or two
  shardedN: QUICK ? 200 : 1000,
  shardedScopes: 6,
  shardedBlock: QUICK ? 20_000 : 40_000,
  shardedGroups: int(args.groups, QUICK ? 5 : 6),
  microMemory: QUICK ? 5000 : 20_000,
  microRedis: QUICK ? 1000 : 3000,
  presenceN: QUICK ? 500 : 1000,
  blipN: int(args['blip-clients'], QUICK ? 500 : 2000),
  // which parts of the presence scenario run: its fan-out, its connection setup, or both
  presenceParts: args.presence === undefined ? ['fanout', 'connect'] : String(args.presence).split(','),
  // the publisher scenario: clients, broadcasts per block, groups (kept short: about a minute)
  publisherN: QUICK ? 100 : 200,
  publisherBlock: QUICK ? 500 : 1000,
  publisherGroups: QUICK ? 3 : 5,
  timeLimitMs: (QUICK ? 10 : 40) * 60_000
}
for (const name of cfg.only) if (!SCENARIOS.includes(name)) throw new Error(`unknown scenario ${name}; one of ${SCENARIOS.join(', ')}`)
for (const part of cfg.presenceParts) if (!['fanout', 'connect'].includes(part)) throw new Error(`unknown presence part ${part}; fanout or connect`)
const FULL = !QUICK && args.only === undefined && args.sizes === undefined && args.groups === undefined && args.presence === undefined
const OUT_DIR = join(HERE, '.results')
const RESULTS_MD = args.out ?? (FULL ? join(HERE, 'RESULTS.md') : join(OUT_DIR, QUICK ? 'RESULTS-quick.md' : 'RESULTS-partial.md'))
const PREFIX = `bench-${randomUUID().slice(0, 8)}:`

// ---------- lifetime: bounded, and never leaves a child behind ----------
const started = Date.now()
const watchdog = setTimeout(() => {
  console.error(`bench: time limit of ${cfg.timeLimitMs / 60_000} min reached; stopping`)
  killChildren()
  process.exit(1)
}, cfg.timeLimitMs)
watchdog.unref()
process.on('exit', killChildren)
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    killChildren()
    process.exit(130)
  })
}

const log = (...parts) => console.error(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)} s]`, ...parts)

// ---------- processes ----------
// With --pin (the default on 2+ cores with taskset), servers run on CPU 0 and client workers on
// the others, so the two sides do not take each other's core mid-block: less noise in the
// per-block server CPU. The two-node scenario leaves its servers unpinned (they would share CPU 0).
const PIN = args.pin === undefined ? os.cpus().length >= 2 && hasTaskset() : args.pin !== 'false'
function hasTaskset () {
  try {
    execSync('command -v taskset', { shell: '/bin/sh', stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}
function pin (child, cpus) {
  if (!PIN || cpus === null) return
  execSync(`taskset -a -p -c ${cpus} ${child.pid}`, { stdio: 'ignore' })
}
const SERVER_CPUS = '0'
const CLIENT_CPUS = `1-${Math.max(1, os.cpus().length - 1)}`

let profileSeq = 0
async function startServer (name, { pinned = true } = {}) {
  const execArgv = ['--expose-gc', '--max-old-space-size=4096']
  if (cfg.cpuProf) {
    mkdirSync(join(OUT_DIR, 'prof'), { recursive: true })
    execArgv.push('--cpu-prof', `--cpu-prof-dir=${join(OUT_DIR, 'prof')}`, `--cpu-prof-name=${name}-${++profileSeq}-${process.pid}.cpuprofile`)
  }
  const server = spawn(join(HERE, 'server.js'), { name, execArgv })
  await server.ready
  pin(server.child, pinned ? SERVER_CPUS : null)
  return server
}

async function startWorkers () {
  const workers = []
  for (let k = 0; k < cfg.workers; k++) {
    workers.push(spawn(join(HERE, 'clients.js'), { name: `clients${k}`, execArgv: ['--max-old-space-size=4096'] }))
  }
  await Promise.all(workers.map((w) => w.ready))
  for (const w of workers) pin(w.child, CLIENT_CPUS)
  return workers
}

/** Users split round robin over the workers. */
function split (users, k) {
  return Array.from({ length: cfg.workers }, (_, w) => users.filter((_, i) => i % cfg.workers === w))[k]
}

async function connect (workers, { group, port, kind, users, window = 200, plain = false, since }) {
  const url = `http://127.0.0.1:${port}`
  const parts = await Promise.all(workers.map((w, k) => w.call('connect', {
    group, url, kind, users: split(users, k), window, plain, since
  }, 300_000)))
  const t0 = Math.min(...parts.map((p) => p.t0))
  const t1 = Math.max(...parts.map((p) => p.t1))
  return { wall: t1 - t0, t0, t1, cpu: parts.reduce((s, p) => s + p.cpu, 0) }
}

async function disconnect (workers, server, group, armNames) {
  await Promise.all(workers.map((w) => w.call('disconnect', { group })))
  await server.call('waitEmpty', { names: armNames })
}

/** Disconnects a group for good: its sockets close and the workers drop what they kept of it. */
async function release (workers, server, group, armNames) {
  await disconnect(workers, server, group, armNames)
  await Promise.all(workers.map((w) => w.call('forget', { group })))
}

/** Asks a server process to close its arms, then stops it. */
async function stopServer (server) {
  await server.call('shutdown').catch(() => {})
  await server.stop()
}

/** Per-worker expected event counts for broadcasts round robin over `scopes`. */
function expectations (users, scopes, count) {
  const per = new Map()
  scopes.forEach((scope, i) => {
    const n = Math.floor(count / scopes.length) + (i < count % scopes.length ? 1 : 0)
    per.set(scope, (per.get(scope) ?? 0) + n)
  })
  return Array.from({ length: cfg.workers }, (_, k) => split(users, k)
    .reduce((sum, user) => sum + user.rooms.reduce((s, room) => s + (per.get(room) ?? 0), 0), 0))
}

/**
 * One measured block: arm the clients, let `sender` issue the broadcasts of `arm`, wait until
 * every expected event has arrived, then read the CPU of every server process.
 */
async function broadcastBlock ({ workers, sender, others = [], arm, plan, expect, latency = false }) {
  await Promise.all(workers.map((w, k) => w.call('expect', { n: expect[k], latency })))
  await Promise.all(others.map((s) => s.call('cpuMark')))
  const start = await sender.call('block', { arm, ...plan }, 300_000)
  const done = await Promise.all(workers.map((w) => w.call('done', { timeoutMs: 120_000 }, 130_000)))
  const end = await sender.call('blockEnd')
  const otherCpu = await Promise.all(others.map((s) => s.call('cpuRead')))
  const lastAt = done.length === 0 ? start.sent : Math.max(...done.map((d) => d.lastAt))
  return {
    arm,
    serverCpu: end.cpu + otherCpu.reduce((s, o) => s + o.cpu, 0),
    serverCpus: [end.cpu, ...otherCpu.map((o) => o.cpu)],
    clientCpu: done.reduce((s, d) => s + d.cpu, 0),
    wall: Math.max(lastAt, start.sent) - start.t0,
    hist: latency ? mergeHists(done.map((d) => d.hist)) : null
  }
}

const AB = (a, b) => [a, b, b, a]

/**
 * Runs `groups` (after `warmup` dropped ones) of ABBA blocks for each pair in `pairs`
 * ([['raw','plugin'], ['raw','raw2']]: the A/B groups and the A/A control, interleaved).
 * `block(arm)` returns one block's figures. Returns, per pair, the measured groups.
 */
async function abba (label, pairs, block, { groups = cfg.groups, warmup = cfg.warmup } = {}) {
  const out = pairs.map(() => [])
  for (let g = 0; g < warmup + groups; g++) {
    for (let p = 0; p < pairs.length; p++) {
      const blocks = []
      for (const arm of AB(...pairs[p])) blocks.push(await block(arm))
      if (g >= warmup) out[p].push(blocks)
    }
    if (g === warmup - 1 || (g >= warmup && (g - warmup + 1) % 5 === 0)) log(`${label}: ${g + 1 - warmup}/${groups} groups`)
  }
  return out
}

/** Per group: f(B blocks) / f(A blocks), summed over the two blocks of each arm. */
function groupRatios (groups, f) {
  return groups.map(([a1, b1, b2, a2]) => (f(b1) + f(b2)) / (f(a1) + f(a2)))
}

function armValues (groups, f) {
  const a = []
  const b = []
  for (const [a1, b1, b2, a2] of groups) {
    a.push(f(a1), f(a2))
    b.push(f(b1), f(b2))
  }
  return { a: median(a), b: median(b) }
}

function utilisation (groups) {
  const blocks = groups.flat()
  return {
    server: median(blocks.map((b) => b.serverCpu * 1000 / b.wall)),
    clients: median(blocks.map((b) => b.clientCpu * 1000 / b.wall))
  }
}

function saturated (u) {
  const side = u.server >= u.clients ? 'server' : 'clients'
  return `server ${u.server.toFixed(2)} / clients ${u.clients.toFixed(2)} cores → ${side}`
}

// ---------- results ----------
const rows = []
const failed = []
const details = []
const raw = { cfg, scenarios: {} }

/** A table row; `ratio` is a spread of plugin/raw per group, `aa` the raw/raw control. */
function row (scenario, metric, { a, b, unit, ratio, aa, target, pass, note }) {
  rows.push({ scenario, metric, a, b, unit, ratio, aa, target, pass, note })
}

const fmt = (v, d = 2) => Number.isFinite(v) ? v.toFixed(d) : '–'
const fmtNum = (v) => !Number.isFinite(v) ? '–' : v >= 100 ? Math.round(v).toLocaleString('en-US') : v >= 10 ? v.toFixed(1) : v.toFixed(2)
const fmtSpread = (s) => s === undefined || s === null ? '–' : `${fmt(s.median)} (${fmt(s.p10)}–${fmt(s.p90)})`

function frameCheck (label, a, b) {
  if (a === null || b === null) return `${label}: frames not captured`
  const shape = (f) => f.replace(/[\w-]/g, 'x')
  const same = shape(a) === shape(b)
  return `${label}: ${same ? 'same shape and length' : 'DIFFERENT'} (${a.length} vs ${b.length} bytes)${same ? '' : `\n    raw:    ${a}\n    plugin: ${b}`}`
}

// ---------- scenarios ----------
function usersFor (n, rooms, prefix = 'u') {
  return Array.from({ length: n }, (_, i) => ({ sub: `${prefix}${i}`, rooms: rooms(i) }))
}

/** 0. The plugin's own per-broadcast path, without sockets: validate, append, build meta. */
async function micro () {
  const server = await startServer('server-micro')
  try {
    await server.call('setup', {
      prefix: PREFIX,
      arms: [
        { name: 'raw', kind: 'raw' },
        { name: 'plugin', kind: 'plugin', history: 'memory' },
        { name: 'rawRedis', kind: 'raw', history: 'redis' },
        { name: 'pluginRedis', kind: 'plugin', history: 'redis' },
        { name: 'rawAdapter', kind: 'raw', history: 'redis', adapter: true },
        { name: 'pluginAdapter', kind: 'plugin', history: 'redis', adapter: true }
      ]
    })
    const scopes = Array.from({ length: 100 }, (_, i) => `team:m${i}`)
    await server.call('matchEpoch', { raw: 'rawRedis', plugin: 'pluginRedis', scope: scopes[0] })
    await server.call('matchEpoch', { raw: 'rawAdapter', plugin: 'pluginAdapter', scope: scopes[0] })
    const block = (count, concurrency) => async (arm) => {
      const s = await server.call('block', { arm, scopes, count, concurrency, bytes: cfg.payload })
      const e = await server.call('blockEnd')
      return { arm, serverCpu: e.cpu, wall: s.sent - s.t0, count }
    }
    const [mem] = await abba('micro memory', [['raw', 'plugin']], block(cfg.microMemory, 1))
    const [red] = await abba('micro redis', [['rawRedis', 'pluginRedis']], block(cfg.microRedis, cfg.redisConcurrency))
    const [ada] = await abba('micro redis + adapter', [['rawAdapter', 'pluginAdapter']], block(cfg.microRedis, cfg.redisConcurrency))
    const perCpu = (b) => b.serverCpu / b.count
    const perWall = (b) => b.wall / 1000 / b.count
    for (const [label, groups] of [['memory store', mem], ['Redis store', red], ['`redis` option (adapter + Redis store)', ada]]) {
      const cpu = armValues(groups, perCpu)
      const own = groups.map(([a1, b1, b2, a2]) => (perCpu(b1) + perCpu(b2) - perCpu(a1) - perCpu(a2)) / 2)
      row('Per-broadcast path, no sockets', `${label}: server CPU µs per broadcast`, {
        a: cpu.a,
        b: cpu.b,
        unit: 'µs',
        ratio: spread(groupRatios(groups, perCpu)),
        note: `plugin's own path: ${fmt(median(own))} µs (p10–p90 ${fmt(quantile(own, 0.1))}–${fmt(quantile(own, 0.9))})`
      })
      if (label !== 'memory store') {
        const wall = armValues(groups, perWall)
        row('Per-broadcast path, no sockets', `${label}: wall µs per broadcast (${cfg.redisConcurrency} in flight)`, {
          a: wall.a, b: wall.b, unit: 'µs', ratio: spread(groupRatios(groups, perWall))
        })
      }
    }
    details.push('**Per-broadcast path (no sockets).** raw = `io.to(scope).emit(event, payload, meta)` with the meta ' +
      'built by hand (Redis: plus one EVAL of INCR + RPUSH + LTRIM + PEXPIRE on a connection with the options the plugin gives its own); ' +
      'plugin = `fastify.broadcast` (Redis store: a `RedisHistoryStore` passed as `history.store`, no adapter; `redis` option: the ' +
      'plugin with its Redis adapter against raw with the same adapter). ' +
      `${cfg.microMemory} (memory) / ` +
      `${cfg.microRedis} (Redis, ${cfg.redisConcurrency} in flight) broadcasts per block over 100 scopes with no sockets joined. ` +
      "\"plugin's own path\" = plugin − raw per broadcast: validation, history append, meta.")
    raw.scenarios.micro = { mem, red, ada }
  } finally {
    await stopServer(server)
  }
}

/**
 * Connects `users` to each of `arms` (a group `<label>-<arm>` each), all in the one `scope`, and
 * returns how a saturation block of broadcasts to that scope runs: `sat(arm)`, with `count`
 * broadcasts per block.
 */
async function oneScope (workers, server, ports, { label, arms, scope, users }) {
  log(`${label} N=${users.length}: connecting ${arms.length} × ${users.length} clients`)
  for (const name of arms) {
    await connect(workers, { group: `${label}-${name}`, port: ports[name].port, kind: ports[name].kind, users })
  }
  const count = Math.max(2, Math.ceil(cfg.fanoutBlock / users.length))
  const expect = expectations(users, [scope], count)
  const sat = (arm) => broadcastBlock({ workers, sender: server, arm, plan: { scopes: [scope], count, bytes: cfg.payload }, expect })
  return { count, sat }
}

/** 1. Fan-out: one scope with N clients. */
async function fanout (workers) {
  for (const N of cfg.sizes) {
    const server = await startServer(`server-fanout-${N}`)
    // The plugin with metrics on is measured with the other arms when four sets of N clients fit
    // the fd limit. Otherwise it is connected once raw2 is released; an arm connected after a
    // release measured 10-20 % more CPU per delivery at N=100 even with metrics off, so that
    // figure is an upper bound.
    const together = 4 * N / cfg.workers + 200 <= fdLimit()
    const arms = together ? ['raw', 'raw2', 'plugin', 'pluginMetrics'] : ['raw', 'raw2', 'plugin']
    try {
      const ports = await server.call('setup', {
        prefix: PREFIX,
        arms: [
          { name: 'raw', kind: 'raw' },
          { name: 'raw2', kind: 'raw' },
          { name: 'plugin', kind: 'plugin', history: 'memory' },
          { name: 'pluginMetrics', kind: 'plugin', history: 'memory', metrics: true }
        ]
      })
      const scope = 'fan:all'
      const users = usersFor(N, () => [scope])
      const { count, sat } = await oneScope(workers, server, ports, { label: 'fan', arms, scope, users })
      const metricsPairs = [['raw', 'pluginMetrics'], ['plugin', 'pluginMetrics']]
      const [ab, aa, ...metricsGroups] = await abba(`fan-out N=${N} saturation`, [['raw', 'plugin'], ['raw', 'raw2'], ...(together ? metricsPairs : [])], sat)
      const perDelivery = (b) => b.serverCpu / (count * N)
      const rate = (b) => count * N / b.wall * 1e9
      const thr = armValues(ab, rate)
      const util = utilisation(ab)
      const cpuRow = (metric, groups) => {
        const cpu = armValues(groups, perDelivery)
        row(`Fan-out N=${N.toLocaleString('en-US')}`, metric, {
          a: cpu.a,
          b: cpu.b,
          unit: 'µs',
          ratio: spread(groupRatios(groups, perDelivery)),
          aa: spread(groupRatios(aa, perDelivery)),
          target: '≤ 1.05',
          pass: median(groupRatios(groups, perDelivery)) <= 1.05
        })
      }
      cpuRow('server CPU µs per delivery (memory history)', ab)
      row(`Fan-out N=${N.toLocaleString('en-US')}`, 'deliveries/s at saturation (wall)', {
        a: thr.a,
        b: thr.b,
        unit: '/s',
        ratio: spread(groupRatios(ab, rate)),
        aa: spread(groupRatios(aa, rate)),
        note: saturated(util)
      })

      // skipped with --latency=false
      const measureLatency = async () => {
        // Latency at half load: start from half the raw arm's burst rate, then scale the pace until
        // the busier side (server or clients) uses about half a core in a paced raw block.
        let paceRate = Math.max(1, thr.a / 2 / N)
        let paced = 0
        let pacedExpect = null
        const lat = (arm) => broadcastBlock({
          workers, sender: server, arm, plan: { scopes: [scope], count: paced, rate: paceRate, bytes: cfg.payload }, expect: pacedExpect, latency: true
        })
        let busiest = 0
        for (let step = 0; step < 5; step++) {
          paced = Math.max(4, Math.round(paceRate * cfg.pacedSeconds))
          pacedExpect = expectations(users, [scope], paced)
          const probe = await lat('raw')
          busiest = Math.max(probe.serverCpu, probe.clientCpu) * 1000 / probe.wall
          if (busiest >= 0.4 && busiest <= 0.6) break
          paceRate = Math.max(1, paceRate * 0.5 / busiest)
        }
        paced = Math.max(4, Math.round(paceRate * cfg.pacedSeconds))
        pacedExpect = expectations(users, [scope], paced)
        log(`fan-out N=${N}: paced at ${fmtNum(paceRate)} broadcasts/s (${fmtNum(paceRate * N)} deliveries/s; busiest side ${fmt(busiest)} core)`)
        const [pab] = await abba(`fan-out N=${N} paced`, [['raw', 'plugin']], lat)
        const pooled = (arm) => mergeHists(pab.flat().filter((b) => b.arm === arm).map((b) => b.hist))
        const rawHist = pooled('raw')
        const pluginHist = pooled('plugin')
        const p99Ratios = pab.map(([a1, b1, b2, a2]) => histQuantile(mergeHists([b1.hist, b2.hist]), 0.99) / histQuantile(mergeHists([a1.hist, a2.hist]), 0.99))
        const p50Ratios = pab.map(([a1, b1, b2, a2]) => histQuantile(mergeHists([b1.hist, b2.hist]), 0.5) / histQuantile(mergeHists([a1.hist, a2.hist]), 0.5))
        const pUtil = utilisation(pab)
        row(`Fan-out N=${N.toLocaleString('en-US')}`, `p50 latency at half load (${fmtNum(paceRate)} broadcasts/s, ${fmtNum(paceRate * N)} deliveries/s)`, {
          a: histQuantile(rawHist, 0.5) / 1e6, b: histQuantile(pluginHist, 0.5) / 1e6, unit: 'ms', ratio: spread(p50Ratios)
        })
        row(`Fan-out N=${N.toLocaleString('en-US')}`, 'p99 latency at half load', {
          a: histQuantile(rawHist, 0.99) / 1e6,
          b: histQuantile(pluginHist, 0.99) / 1e6,
          unit: 'ms',
          ratio: spread(p99Ratios),
          target: '≤ 1.10',
          pass: median(p99Ratios) <= 1.10,
          note: `paced: ${saturated(pUtil)}`
        })
        return { pab, paced, paceRate, busiest }
      }
      const latency = cfg.latency ? await measureLatency() : null
      const [fr, fp] = await Promise.all([workers[0].call('frame', { group: 'fan-raw' }), workers[0].call('frame', { group: 'fan-plugin' })])
      details.push(`**Fan-out N=${N}.** ${count} broadcasts per saturation block (${(count * N).toLocaleString('en-US')} deliveries), ` +
        (latency === null
          ? 'latency not measured (--latency=false). '
          : `${latency.paced} per paced block; half load = the pace at which the busier process used about half a core in a paced raw block ` +
            `(here ${fmt(latency.busiest)}). `) +
        `${frameCheck('frame check', fr, fp)}.`)
      await release(workers, server, 'fan-raw2', ['raw2'])

      // the plugin with metrics on (a prom-client registry of its own), against the same raw arm and
      // against the plugin with metrics off
      let [am, mm] = metricsGroups
      if (!together) {
        log(`fan-out N=${N}: connecting ${N} clients to the plugin with metrics on`)
        await connect(workers, { group: 'fan-pluginMetrics', port: ports.pluginMetrics.port, kind: ports.pluginMetrics.kind, users });
        [am, mm] = await abba(`fan-out N=${N} metrics on`, metricsPairs, sat)
      }
      cpuRow(`server CPU µs per delivery, metrics on (prom-client registry${together ? '' : '; connected after a release: an upper bound'})`, am)
      const own = armValues(mm, perDelivery)
      row(`Fan-out N=${N.toLocaleString('en-US')}`, 'server CPU µs per delivery, metrics on / metrics off (plugin = metrics off)', {
        a: own.a, b: own.b, unit: 'µs', ratio: spread(groupRatios(mm, perDelivery))
      })
      raw.scenarios[`fanout-${N}`] = {
        ab, aa, am, mm, count, pab: latency?.pab.map((g) => g.map(({ hist, ...b }) => b)), paced: latency?.paced, paceRate: latency?.paceRate
      }
      for (const name of ['raw', 'plugin', 'pluginMetrics']) await release(workers, server, `fan-${name}`, [name])
    } finally {
      await stopServer(server)
    }
  }
}

/** 2. Many small scopes: S scopes of 1–2 clients, memory history and Redis history. */
async function scopes (workers) {
  const server = await startServer('server-scopes')
  const arms = ['raw', 'raw2', 'plugin', 'rawRedis', 'pluginRedis']
  try {
    const ports = await server.call('setup', {
      prefix: PREFIX,
      arms: [
        { name: 'raw', kind: 'raw' },
        { name: 'raw2', kind: 'raw' },
        { name: 'plugin', kind: 'plugin', history: 'memory' },
        { name: 'rawRedis', kind: 'raw', history: 'redis' },
        { name: 'pluginRedis', kind: 'plugin', history: 'redis' }
      ]
    })
    const S = cfg.scopes
    const scopeList = Array.from({ length: S }, (_, k) => `team:s${k}`)
    const users = []
    scopeList.forEach((scope, k) => {
      for (let j = 0; j < (k % 2 === 0 ? 2 : 1); j++) users.push({ sub: `s${k}-${j}`, rooms: [scope] })
    })
    log(`small scopes: ${S} scopes, ${users.length} clients per arm`)
    for (const name of arms) {
      await connect(workers, { group: `scopes-${name}`, port: ports[name].port, kind: ports[name].kind, users })
    }
    await server.call('matchEpoch', { raw: 'rawRedis', plugin: 'pluginRedis', scope: scopeList[0] })
    const count = S * cfg.scopesRounds
    const deliveries = users.length * cfg.scopesRounds
    const expect = expectations(users, scopeList, count)
    const block = (concurrency) => (arm) => broadcastBlock({
      workers, sender: server, arm, plan: { scopes: scopeList, count, concurrency, bytes: cfg.payload }, expect
    })
    const [ab, aa] = await abba('small scopes memory', [['raw', 'plugin'], ['raw', 'raw2']], block(1))
    const [rab] = await abba('small scopes Redis', [['rawRedis', 'pluginRedis']], block(cfg.redisConcurrency))
    const perBroadcast = (b) => b.serverCpu / count
    const cpuRate = (b) => count / b.serverCpu * 1e6
    const wallRate = (b) => count / b.wall * 1e9
    for (const [label, groups, control] of [['memory history', ab, aa], ['Redis history', rab, null]]) {
      const cpu = armValues(groups, perBroadcast)
      const wall = armValues(groups, wallRate)
      const util = utilisation(groups)
      const ratios = groupRatios(groups, cpuRate)
      row(`Small scopes (${S} × 1–2)`, `${label}: broadcasts/s per server core (1 / CPU per broadcast)`, {
        a: 1e6 / cpu.a,
        b: 1e6 / cpu.b,
        unit: '/s',
        ratio: spread(ratios),
        aa: control === null ? null : spread(groupRatios(control, cpuRate)),
        target: label === 'memory history' ? '≥ 0.85' : undefined,
        pass: label === 'memory history' ? median(ratios) >= 0.85 : undefined
      })
      row(`Small scopes (${S} × 1–2)`, `${label}: broadcasts/s (wall)`, {
        a: wall.a,
        b: wall.b,
        unit: '/s',
        ratio: spread(groupRatios(groups, wallRate)),
        aa: control === null ? null : spread(groupRatios(control, wallRate)),
        note: saturated(util)
      })
    }
    const [fr, fp, frr, frp] = await Promise.all(['raw', 'plugin', 'rawRedis', 'pluginRedis'].map((a) => workers[0].call('frame', { group: `scopes-${a}` })))
    details.push(`**Small scopes.** ${count} broadcasts per block round robin over ${S} scopes (${deliveries} deliveries); ` +
      `Redis arms keep ${cfg.redisConcurrency} broadcasts in flight; raw Redis = one EVAL (INCR + RPUSH + LTRIM + PEXPIRE) per broadcast. ` +
      `${frameCheck('memory frames', fr, fp)}; ${frameCheck('Redis frames', frr, frp)}.`)
    raw.scenarios.scopes = { ab, aa, rab, count }
    for (const name of arms) await release(workers, server, `scopes-${name}`, [name])
  } finally {
    await stopServer(server)
  }
}

/** 3. Connection setup: N connections per block, JWT auth + rooms. */
async function connections (workers) {
  const server = await startServer('server-connect')
  try {
    const ports = await server.call('setup', {
      prefix: PREFIX,
      arms: [
        { name: 'rawNoAuth', kind: 'raw', auth: 'none' },
        { name: 'rawJwt', kind: 'raw', auth: 'jwt' },
        { name: 'rawJwt2', kind: 'raw', auth: 'jwt' },
        { name: 'rawFastify', kind: 'raw', auth: 'jwt', fastify: true },
        { name: 'plugin', kind: 'plugin', history: 'memory' }
      ]
    })
    const N = cfg.connectN
    const users = usersFor(N, (i) => [`team:${i % 100}`], 'c')
    const block = async (arm) => {
      await server.call('cpuMark')
      const c = await connect(workers, {
        group: `conn-${arm}`, port: ports[arm].port, kind: ports[arm].kind, users, window: cfg.connectWindow, plain: arm === 'rawNoAuth'
      })
      const s = await server.call('cpuRead')
      // the disconnect is part of a connection's life: measured too, in its own mark
      await server.call('cpuMark')
      await disconnect(workers, server, `conn-${arm}`, [arm])
      const d = await server.call('cpuRead')
      return { arm, serverCpu: s.cpu, closeCpu: d.cpu, clientCpu: c.cpu, wall: c.wall }
    }
    const [ab, aa] = await abba('connections', [['rawJwt', 'plugin'], ['rawJwt', 'rawJwt2']], block)
    // the cost of the JWT check itself, for context: raw with it vs raw without it
    const [nab] = await abba('connections no-auth', [['rawJwt', 'rawNoAuth']], block, { groups: Math.max(3, Math.round(cfg.groups / 4)), warmup: 0 })
    // where the gap comes from: raw Socket.IO on a plain http server vs on Fastify's server, and the plugin vs the latter
    const [fab, fpb] = await abba('connections on Fastify', [['rawJwt', 'rawFastify'], ['rawFastify', 'plugin']], block, { groups: Math.max(5, Math.round(cfg.groups / 2)), warmup: 1 })
    const perConn = (b) => b.serverCpu / N
    const lifePerConn = (b) => (b.serverCpu + b.closeCpu) / N
    const closePerConn = (b) => b.closeCpu / N
    const wallRate = (b) => N / b.wall * 1e9
    // one row per view of the same blocks: server CPU µs per connection, plugin (or B) over raw (A)
    const perConnRow = (metric, groups, f, more = {}) => {
      const v = armValues(groups, f)
      row(`Connection setup (N=${N})`, metric, { a: v.a, b: v.b, unit: 'µs', ratio: spread(groupRatios(groups, f)), ...more })
    }
    const ratios = groupRatios(ab, lifePerConn)
    perConnRow('server CPU µs per connection: handshake to ready, and the disconnect (JWT + rooms())', ab, lifePerConn, {
      aa: spread(groupRatios(aa, lifePerConn)), target: '≤ 1.15', pass: median(ratios) <= 1.15
    })
    perConnRow('server CPU µs per connection: handshake to ready only', ab, perConn, { aa: spread(groupRatios(aa, perConn)) })
    perConnRow('server CPU µs per connection: the disconnect only', ab, closePerConn, { aa: spread(groupRatios(aa, closePerConn)) })
    const wall = armValues(ab, wallRate)
    row(`Connection setup (N=${N})`, 'connections/s (wall)', {
      a: wall.a,
      b: wall.b,
      unit: '/s',
      ratio: spread(groupRatios(ab, wallRate)),
      aa: spread(groupRatios(aa, wallRate)),
      note: saturated(utilisation(ab))
    })
    perConnRow('context: raw on Fastify\'s server (no plugin) vs raw on plain http: server CPU µs per connection', fab, lifePerConn, { note: 'what Fastify\'s HTTP server itself adds' })
    perConnRow('context: plugin vs raw on the same Fastify server: server CPU µs per connection', fpb, lifePerConn, { note: 'what the plugin itself adds' })
    perConnRow('raw with JWT vs raw without auth: server CPU µs per connection', nab, lifePerConn, { note: 'B = raw without auth: the cost of the JWT check itself' })
    details.push(`**Connection setup.** ${N} connections per block, ${cfg.connectWindow} handshakes in flight; ` +
      'a block ends when every socket has its ready message (raw: join user + team rooms, emit `ready`; plugin: JWT, user, ' +
      'rooms(), join, history position, `realtime:ready`). The disconnect of every socket is measured after it, in a mark of its own; ' +
      'the headline is the sum of the two, per connection.')
    raw.scenarios.connect = { ab, aa, nab, fab, fpb }
  } finally {
    await stopServer(server)
  }
}

/**
 * 8. Presence: what it costs where it could cost. Fan-out: raw against the plugin with presence on,
 * N clients present in the one scope. Connection setup: the plugin without presence against the
 * plugin with it (every connection a join and, at the disconnect, a leave, written and sent as
 * diffs once per second). Each connection block waits out the coalescing interval after the
 * connects and after the disconnects, inside its own CPU mark, so the deferred writes and diffs
 * are charged to the arm that caused them (both arms wait alike).
 */
async function presence (workers) {
  const server = await startServer('server-presence')
  const settle = () => new Promise((resolve) => setTimeout(resolve, 1500))
  try {
    const ports = await server.call('setup', {
      prefix: PREFIX,
      arms: [
        { name: 'raw', kind: 'raw' },
        { name: 'raw2', kind: 'raw' },
        { name: 'plugin', kind: 'plugin', history: 'memory' },
        { name: 'plugin2', kind: 'plugin', history: 'memory' },
        { name: 'pluginPresence', kind: 'plugin', history: 'memory', presence: true }
      ]
    })
    raw.scenarios.presence = {}
    if (cfg.presenceParts.includes('fanout')) {
      const N = cfg.presenceN
      const fanArms = ['raw', 'raw2', 'pluginPresence']
      const { count, sat } = await oneScope(workers, server, ports, { label: 'pfan', arms: fanArms, scope: 'fan:all', users: usersFor(N, () => ['fan:all'], 'p') })
      await settle()
      const [ab, aa] = await abba(`presence fan-out N=${N}`, [['raw', 'pluginPresence'], ['raw', 'raw2']], sat)
      const perDelivery = (b) => b.serverCpu / (count * N)
      const cpu = armValues(ab, perDelivery)
      row(`Presence on: fan-out N=${N.toLocaleString('en-US')}`, 'server CPU µs per delivery, raw vs the plugin with presence (memory)', {
        a: cpu.a,
        b: cpu.b,
        unit: 'µs',
        ratio: spread(groupRatios(ab, perDelivery)),
        aa: spread(groupRatios(aa, perDelivery)),
        target: '≤ 1.05',
        pass: median(groupRatios(ab, perDelivery)) <= 1.05
      })
      for (const name of fanArms) await release(workers, server, `pfan-${name}`, [name])
      details.push(`**Presence: fan-out.** ${N} clients in one scope, presence on (default options, memory store), ` +
        `${count} broadcasts per block against raw Socket.IO; A/A raw vs raw.`)
      Object.assign(raw.scenarios.presence, { ab, aa, count })
    }
    if (cfg.presenceParts.includes('connect')) {
      const C = cfg.connectN
      const connUsers = usersFor(C, (i) => [`team:${i % 100}`], 'pc')
      const block = async (arm) => {
        await server.call('cpuMark')
        const c = await connect(workers, { group: `pconn-${arm}`, port: ports[arm].port, kind: ports[arm].kind, users: connUsers, window: cfg.connectWindow })
        await settle()
        const s = await server.call('cpuRead')
        await server.call('cpuMark')
        await disconnect(workers, server, `pconn-${arm}`, [arm])
        await settle()
        const d = await server.call('cpuRead')
        return { arm, serverCpu: s.cpu, closeCpu: d.cpu, clientCpu: c.cpu, wall: c.wall }
      }
      const few = { groups: Math.max(5, Math.round(cfg.groups / 2)), warmup: 1 }
      const [cab, caa] = await abba('presence connections', [['plugin', 'pluginPresence'], ['plugin', 'plugin2']], block, few)
      const life = (b) => (b.serverCpu + b.closeCpu) / C
      const open = (b) => b.serverCpu / C
      const close = (b) => b.closeCpu / C
      const connRow = (metric, f, more = {}) => {
        const v = armValues(cab, f)
        row(`Presence on: connection setup (N=${C})`, metric, { a: v.a, b: v.b, unit: 'µs', ratio: spread(groupRatios(cab, f)), aa: spread(groupRatios(caa, f)), ...more })
      }
      connRow('server CPU µs per connection, handshake to disconnect: the plugin without presence (A) vs with it (B)', life, {
        target: '≤ 1.10', pass: median(groupRatios(cab, life)) <= 1.10
      })
      connRow('the same, handshake to ready (and the joins written and sent)', open)
      connRow('the same, the disconnect (and the leaves written and sent)', close)
      details.push(`**Presence: connection setup.** ${C} connections per block ` +
        `(rooms team:0–99, so 100 scopes tracked, up to ${Math.ceil(C / 100)} users each), ${cfg.connectWindow} handshakes in flight; ` +
        'A = the plugin without presence, B = with it, A/A = the plugin vs a second plugin without it. Each block waits ' +
        '1.5 s after the connects and after the disconnects inside its CPU mark, so the coalesced writes and diffs ' +
        '(at most one per scope per second) count for the arm that made them.')
      Object.assign(raw.scenarios.presence, { cab, caa })
    }
  } finally {
    await stopServer(server)
  }
}

/** 4. Memory per connected client, each arm in a fresh server process. */
async function memory (workers) {
  for (const N of cfg.memoryN) {
    const runs = []
    for (const arm of ['raw', 'plugin', 'plugin', 'raw']) {
      const server = await startServer(`server-memory-${arm}`)
      try {
        const spec = arm === 'raw' ? { name: arm, kind: 'raw', auth: 'jwt' } : { name: arm, kind: 'plugin', history: 'memory' }
        const ports = await server.call('setup', { prefix: PREFIX, arms: [spec] })
        const users = usersFor(N, (i) => [`team:${i % 100}`], 'm')
        const before = await server.call('memory')
        await connect(workers, { group: `mem-${arm}`, port: ports[arm].port, kind: ports[arm].kind, users })
        const after = await server.call('memory')
        runs.push({
          arm,
          heap: (after.heapUsed - before.heapUsed) / N,
          rss: (after.rss - before.rss) / N,
          external: (after.external + after.arrayBuffers - before.external - before.arrayBuffers) / N
        })
        await release(workers, server, `mem-${arm}`, [arm])
      } finally {
        await stopServer(server)
      }
      log(`memory N=${N}: ${arm} done`)
    }
    const of = (arm, key) => median(runs.filter((r) => r.arm === arm).map((r) => r[key]))
    const [r1, , , r2] = runs
    const heapDiff = of('plugin', 'heap') - of('raw', 'heap')
    row(`Memory (N=${N.toLocaleString('en-US')})`, 'server heap per connected client', {
      a: of('raw', 'heap'),
      b: of('plugin', 'heap'),
      unit: 'B',
      note: `plugin − raw = ${fmtNum(heapDiff)} B; raw run 1 − run 2 (A/A) = ${fmtNum(r1.heap - r2.heap)} B`,
      target: '≤ raw + 2 KB',
      pass: heapDiff <= 2048
    })
    const rssDiff = of('plugin', 'rss') - of('raw', 'rss')
    row(`Memory (N=${N.toLocaleString('en-US')})`, 'server RSS per connected client', {
      a: of('raw', 'rss'),
      b: of('plugin', 'rss'),
      unit: 'B',
      note: `plugin − raw = ${fmtNum(rssDiff)} B; A/A = ${fmtNum(r1.rss - r2.rss)} B`,
      target: '≤ raw + 2 KB',
      pass: rssDiff <= 2048
    })
    raw.scenarios[`memory-${N}`] = runs
  }
  details.push('**Memory.** Each measurement is a fresh server process holding one arm (raw: hand-written JWT middleware, user + team ' +
    'rooms; plugin: memory history), order raw, plugin, plugin, raw; heap and RSS after 4 × `gc()` before and after connecting N ' +
    'clients (each in `user:<id>` and one of 100 team scopes), divided by N; figures are the median of the two runs per arm.')
}

/** 5. Catch-up storm: N clients reconnect at once and replay 50 events, vs reconnect + 50 live events. */
async function storm (workers) {
  const server = await startServer('server-storm')
  try {
    const ports = await server.call('setup', { prefix: PREFIX, arms: [{ name: 'plugin', kind: 'plugin', history: 'memory' }] })
    const N = cfg.stormN
    const E = cfg.stormEvents
    const scope = 'storm:all'
    const users = usersFor(N, () => [scope], 'r')
    const port = ports.plugin.port
    const n = expectations(users, [scope], E)
    const zero = workers.map(() => 0)
    const block = async (kind) => {
      const since = await server.call('position', { name: 'plugin', scope })
      if (kind === 'replay') {
        // the events the clients missed while they were away (not measured)
        await server.call('send', { arm: 'plugin', scopes: [scope], count: E, bytes: cfg.payload })
      }
      await Promise.all(workers.map((w, k) => w.call('expect', { n: kind === 'base' ? zero[k] : n[k] })))
      await server.call('cpuMark')
      const c = await connect(workers, { group: 'storm', port, kind: 'plugin', users, window: N, since: { [scope]: since } })
      if (kind === 'live') await server.call('send', { arm: 'plugin', scopes: [scope], count: E, bytes: cfg.payload })
      const done = await Promise.all(workers.map((w) => w.call('done', { timeoutMs: 120_000 }, 130_000)))
      const s = await server.call('cpuRead')
      const lastAt = Math.max(c.t1, ...done.map((d) => d.lastAt))
      await disconnect(workers, server, 'storm', ['plugin'])
      return { arm: kind, serverCpu: s.cpu, clientCpu: c.cpu + done.reduce((sum, d) => sum + d.cpu, 0), wall: lastAt - c.t0 }
    }
    const [ab] = await abba('catch-up storm', [['live', 'replay']], block)
    const few = { groups: Math.max(3, Math.round(cfg.groups / 4)), warmup: 0 }
    const [aa] = await abba('catch-up storm A/A', [['live', 'live']], block, few)
    const [base] = await abba('catch-up storm reconnect only', [['base', 'base']], block, few)
    const cpuOf = (b) => b.serverCpu
    const wallOf = (b) => b.wall
    const ratioWall = groupRatios(ab, wallOf)
    const ratioCpu = groupRatios(ab, cpuOf)
    const wall = armValues(ab, wallOf)
    const cpu = armValues(ab, cpuOf)
    const b0 = median(base.flat().map(wallOf))
    const c0 = median(base.flat().map(cpuOf))
    row(`Catch-up storm (${N} × ${E} events)`, 'total time: reconnect + replay (B) vs reconnect + live (A)', {
      a: wall.a / 1e6,
      b: wall.b / 1e6,
      unit: 'ms',
      ratio: spread(ratioWall),
      aa: spread(groupRatios(aa, wallOf)),
      target: '≤ 1.5',
      pass: median(ratioWall) <= 1.5,
      note: `reconnect alone: ${fmtNum(b0 / 1e6)} ms; ${saturated(utilisation(ab))}`
    })
    row(`Catch-up storm (${N} × ${E} events)`, 'server CPU: replay (B) vs live (A)', {
      a: cpu.a / 1000,
      b: cpu.b / 1000,
      unit: 'ms',
      ratio: spread(ratioCpu),
      aa: spread(groupRatios(aa, cpuOf)),
      target: '≤ 1.5',
      pass: median(ratioCpu) <= 1.5,
      note: `reconnect alone: ${fmtNum(c0 / 1000)} ms; events only: replay ${fmtNum((cpu.b - c0) / 1000)} vs live ${fmtNum((cpu.a - c0) / 1000)} ms`
    })
    details.push(`**Catch-up storm.** Plugin only, memory history. Every block reconnects all ${N} clients at once (new sockets, ` +
      `\`auth.since\` on the storm scope). live: since = current position, then ${E} broadcasts once all are ready; replay: the ${E} ` +
      'events were broadcast while the clients were away, since = the position before them; base: reconnect with nothing to deliver. ' +
      'Both figures run from the first connect until every client holds every event; A/A: live vs live.')
    raw.scenarios.storm = { ab, aa, base }
  } finally {
    await stopServer(server)
  }
}

/** 6. Two nodes with the Redis adapter: broadcasts issued on node A, clients split over A and B. */
async function cluster (workers) {
  const nodes = [await startServer('server-node-a', { pinned: false }), await startServer('server-node-b', { pinned: false })]
  try {
    const specs = [
      { name: 'raw', kind: 'raw', adapter: true, history: 'redis' },
      { name: 'plugin', kind: 'plugin', history: 'redis', adapter: true }
    ]
    const ports = await Promise.all(nodes.map((s) => s.call('setup', { prefix: PREFIX, arms: specs })))
    const N = cfg.clusterN
    const scope = 'fan:cluster'
    const halves = [usersFor(N / 2, () => [scope], 'a'), usersFor(N / 2, () => [scope], 'b')]
    for (const arm of ['raw', 'plugin']) {
      for (let i = 0; i < 2; i++) {
        await connect(workers, { group: `cluster-${arm}-${i}`, port: ports[i][arm].port, kind: ports[i][arm].kind, users: halves[i] })
      }
    }
    await nodes[0].call('matchEpoch', { raw: 'raw', plugin: 'plugin', scope })
    const count = Math.max(2, Math.ceil(cfg.clusterBlock / N))
    const all = [...halves[0], ...halves[1]]
    const expect = expectations(all, [scope], count)
    const block = (arm) => broadcastBlock({
      workers, sender: nodes[0], others: [nodes[1]], arm, plan: { scopes: [scope], count, concurrency: 16, bytes: cfg.payload }, expect
    })
    const [ab] = await abba('two nodes', [['raw', 'plugin']], block)
    const perDelivery = (b) => b.serverCpu / (count * N)
    const nodeB = (b) => b.serverCpus[1] / (count * N / 2)
    const rate = (b) => count * N / b.wall * 1e9
    const cpu = armValues(ab, perDelivery)
    const cpuB = armValues(ab, nodeB)
    const thr = armValues(ab, rate)
    row(`Two nodes, Redis adapter (N=${N})`, 'server CPU µs per delivery (both nodes, Redis history)', {
      a: cpu.a, b: cpu.b, unit: 'µs', ratio: spread(groupRatios(ab, perDelivery))
    })
    row(`Two nodes, Redis adapter (N=${N})`, 'receiving node only: CPU µs per delivery', {
      a: cpuB.a, b: cpuB.b, unit: 'µs', ratio: spread(groupRatios(ab, nodeB))
    })
    row(`Two nodes, Redis adapter (N=${N})`, 'deliveries/s (wall)', {
      a: thr.a, b: thr.b, unit: '/s', ratio: spread(groupRatios(ab, rate)), note: saturated(utilisation(ab)) + ' (server = both nodes)'
    })
    const frames = await Promise.all(['raw', 'plugin'].map((a) => workers[0].call('frame', { group: `cluster-${a}-1` })))
    details.push('**Two nodes.** Two server processes, each with a raw arm (official Redis adapter, log kept by hand in Redis) and a ' +
      `plugin arm (\`redis\` option: same adapter, Redis history); ${count} broadcasts per block issued on node A (16 in flight), ` +
      `${N / 2} clients on each node. CPU is the sum of both nodes; Redis's own CPU is not counted. ${frameCheck('frames on node B', ...frames)}.`)
    raw.scenarios.cluster = { ab, count }
    for (const arm of ['raw', 'plugin']) {
      for (let i = 0; i < 2; i++) await release(workers, nodes[i], `cluster-${arm}-${i}`, [arm])
    }
  } finally {
    for (const s of nodes) await stopServer(s)
  }
}

/**
 * 9. Publishing from a worker: broadcasts/s of `fastify-realtime/publisher` in a process of its
 * own against `fastify.broadcast` on the node, and both against raw Socket.IO with the same Redis
 * adapter and a log kept by hand in Redis. Every block waits until the node's clients hold every
 * event, so the publisher's figure includes the trip through Redis to the node.
 */
async function publisher (workers) {
  const server = await startServer('server-publisher')
  // not pinned: in production the worker runs on a machine of its own, not on the node's core
  const worker = spawn(join(HERE, 'publisher.js'), { name: 'publisher' })
  try {
    await worker.ready
    const ports = await server.call('setup', {
      prefix: PREFIX,
      arms: [
        { name: 'raw', kind: 'raw', history: 'redis', adapter: true },
        { name: 'plugin', kind: 'plugin', history: 'redis', adapter: true }
      ]
    })
    // the plugin arm's keys and channels (bench/server.js): the publisher must use the nodes' prefix
    await worker.call('setup', { keyPrefix: `${PREFIX}plugin:` })
    const N = cfg.publisherN
    const scopeList = Array.from({ length: 20 }, (_, i) => `team:p${i}`)
    const users = usersFor(N, (i) => [scopeList[i % scopeList.length]], 'p')
    for (const arm of ['raw', 'plugin']) await connect(workers, { group: `publisher-${arm}`, port: ports[arm].port, kind: ports[arm].kind, users })
    await server.call('matchEpoch', { raw: 'raw', plugin: 'plugin', scope: scopeList[0] })
    const count = cfg.publisherBlock
    const expect = expectations(users, scopeList, count)
    const plan = { scopes: scopeList, count, concurrency: 16, bytes: cfg.payload }
    const block = (arm) => arm === 'publisher'
      ? broadcastBlock({ workers, sender: worker, others: [server], arm, plan, expect })
      : broadcastBlock({ workers, sender: server, arm, plan, expect })
    const opts = { groups: cfg.publisherGroups, warmup: 1 }
    const [rp, bp, rb] = await abba('publisher', [['raw', 'publisher'], ['plugin', 'publisher'], ['raw', 'plugin']], block, opts)
    const rate = (b) => count / b.wall * 1e9
    const perBroadcast = (b) => b.serverCpu / count
    const scenario = `Publishing from a worker (${N} clients, 20 scopes)`
    const plugin = armValues(rb, rate)
    row(scenario, 'fastify.broadcast on the node: broadcasts/s (wall, until delivered)', {
      a: plugin.a, b: plugin.b, unit: '/s', ratio: spread(groupRatios(rb, rate)), note: saturated(utilisation(rb))
    })
    const fromWorker = armValues(rp, rate)
    row(scenario, 'publisher in a worker process: broadcasts/s (wall, until delivered)', {
      a: fromWorker.a, b: fromWorker.b, unit: '/s', ratio: spread(groupRatios(rp, rate))
    })
    const versus = armValues(bp, rate)
    const ratios = groupRatios(bp, rate)
    row(scenario, 'publisher vs fastify.broadcast: broadcasts/s<br><sub>columns: fastify.broadcast | publisher</sub>', {
      a: versus.a, b: versus.b, unit: '/s', ratio: spread(ratios), target: '≥ 0.9', pass: median(ratios) >= 0.9
    })
    const cpu = armValues(rp, perBroadcast)
    row(scenario, 'CPU µs per broadcast (publisher: worker + node; raw: node)', {
      a: cpu.a, b: cpu.b, unit: 'µs', ratio: spread(groupRatios(rp, perBroadcast))
    })
    details.push(`**Publishing from a worker.** ${count} broadcasts per block (16 in flight) over 20 scopes, ${N} clients ` +
      '(5 % of them in each scope), every block until each client has every event. raw = raw Socket.IO with the official Redis ' +
      'adapter and a log kept by hand in Redis; plugin = `fastify.broadcast` with the `redis` option; publisher = ' +
      '`createPublisher()` in a process of its own (unpinned) under the plugin arm\'s key prefix, delivered by the plugin arm. ' +
      `${cfg.publisherGroups} groups after one warm-up group. ${frameCheck('frames', ...await Promise.all(['raw', 'plugin'].map((a) => workers[0].call('frame', { group: `publisher-${a}` }))))}.`)
    raw.scenarios.publisher = { rp, bp, rb, count }
    for (const arm of ['raw', 'plugin']) await release(workers, server, `publisher-${arm}`, [arm])
  } finally {
    await worker.call('shutdown').catch(() => {})
    await worker.stop()
    await stopServer(server)
  }
}

// ---------- report ----------
function table () {
  const head = '| scenario | metric | raw | plugin | plugin/raw median (p10–p90) | A/A raw/raw | target | |\n|---|---|---:|---:|---|---|---|---|'
  const lines = rows.map((r) => {
    const unit = r.unit === undefined ? '' : ` ${r.unit}`
    const pass = r.pass === undefined ? '' : r.pass ? 'ok' : '**MISS**'
    const metric = r.note === undefined ? r.metric : `${r.metric}<br><sub>${r.note}</sub>`
    return `| ${r.scenario} | ${metric} | ${fmtNum(r.a)}${unit} | ${fmtNum(r.b)}${unit} | ${r.ratio === undefined ? '–' : fmtSpread(r.ratio)} | ${fmtSpread(r.aa)} | ${r.target ?? ''} | ${pass} |`
  })
  return [head, ...lines].join('\n')
}

function machine () {
  const cpus = os.cpus()
  const version = (name) => JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')).version
  return [
    `- date: ${new Date().toISOString()}`,
    `- machine: ${cpus.length} cores (${cpus[0]?.model ?? 'unknown'}), ${Math.round(os.totalmem() / 2 ** 30)} GB, ${os.type()} ${os.release()}`,
    `- Node ${process.version}; socket.io ${version('socket.io')}, socket.io-client ${version('socket.io-client')}, fastify ${version('fastify')}`,
    `- mode: ${QUICK ? 'quick' : 'full'}${LARGE ? ' + large' : ''}; scenarios ${cfg.only.join(', ')}; ${cfg.warmup} warm-up + ${cfg.groups} measured groups; ` +
    `${cfg.workers} client worker process(es); payload ${cfg.payload} B of padding; fan-out sizes ${cfg.sizes.join(', ')}; ` +
    (PIN ? `servers pinned to CPU ${SERVER_CPUS}, clients to CPU ${CLIENT_CPUS} (the two-node scenario unpinned)` : 'no CPU pinning'),
    `- load average at the end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; run took ${((Date.now() - started) / 60_000).toFixed(1)} min`
  ].join('\n')
}

const METHOD = `How to read this. Every scenario runs raw Socket.IO 4.8 on a plain \`http\` server (A) and the plugin on
Fastify (B) in the same server process, with the same client worker process(es) (official socket.io-client,
websocket transport), in blocks ordered A B B A; each block starts once every client has the previous one's
events, and the first groups are dropped as warm-up. "plugin/raw" is computed per group (the two B blocks over
the two A blocks) and shown as the median with p10–p90 over the groups. The A/A column runs a second, identical
raw server the same way (raw vs raw) and is the noise floor: a plugin/raw ratio inside it is no difference.
Server CPU is \`process.cpuUsage()\` of the server process across the block (user + system), so it counts only
that process; on 2 cores the clients share the machine, which is why wall-clock rates and latencies are context
and the CPU ratios are the headline. The raw arms do by hand what the plugin does on the measured path: the same
JWT check (fast-jwt, HS256, same secret) in \`io.use\`, the same rooms, and \`io.to(scope).emit\` of a frame with the
same bytes (payload + \`{ id, scope, seq, epoch, at }\`); the raw arms keep no history unless stated.
Both servers run with \`pingInterval\` 10 min so heartbeats do not land in blocks.`

function report () {
  const failures = failed.length === 0 ? '' : `**Scenarios that failed in this run:**\n${failed.map((f) => `- ${f}`).join('\n')}\n\n`
  const md = `# Benchmark results\n\n${machine()}\n\n${failures}${table()}\n\n${details.map((d) => `- ${d}`).join('\n')}\n\n${METHOD}\n`
  mkdirSync(OUT_DIR, { recursive: true })
  writeFileSync(join(OUT_DIR, `results-${new Date().toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify({ ...raw, rows }, null, 1))
  mkdirSync(dirname(RESULTS_MD), { recursive: true })
  writeFileSync(RESULTS_MD, md)
  console.log(md)
  console.error(`written: ${RESULTS_MD}`)
}

// ---------- main ----------
async function redisReachable () {
  const client = new Redis({ ...REDIS, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  try {
    await client.connect()
    await client.ping()
    return true
  } catch {
    return false
  } finally {
    client.disconnect()
  }
}

async function cleanRedis () {
  const client = new Redis({ ...REDIS, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  try {
    await client.connect()
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await client.del(...keys)
    } while (cursor !== '0')
  } catch {
    // nothing reachable to clean
  } finally {
    client.disconnect()
  }
}

function fdLimit () {
  try {
    return Number.parseInt(execSync('ulimit -n', { shell: '/bin/sh' }).toString().trim(), 10)
  } catch {
    return Number.NaN
  }
}

/** 8. A Redis blip on one node's subscriber: raw Socket.IO with the same adapter, then the plugin (bench/blip.js). */
async function blip () {
  const result = await runBlip({ n: cfg.blipN, prefix: `${PREFIX}blip:`, log })
  const { raw: rawArm, plugin } = result
  const scenario = `Subscriber blip, ${plugin.clients} clients on the node`
  row(scenario, 'client reconnects', { a: rawArm.reconnects, b: plugin.reconnects, unit: '', target: '0', pass: plugin.reconnects === 0 })
  row(scenario, `events broadcast during the blip held by every client (${result.during})`, {
    a: 100 * rawArm.heldShare, b: 100 * plugin.heldShare, unit: '%', target: '100 %', pass: plugin.heldShare === 1
  })
  row(scenario, 'ms from the kill until every client holds them all', { a: rawArm.heldMs, b: plugin.heldMs, unit: 'ms', note: 'raw: never (a silent gap)' })
  row(scenario, 'ms for the first live broadcast after the blip to reach every client', {
    a: rawArm.liveMs, b: plugin.liveMs, unit: 'ms', ratio: spread([plugin.liveMs / rawArm.liveMs])
  })
  row(scenario, 'rooms() calls on the node', { a: Number.NaN, b: plugin.roomsCalls, unit: '', target: 'changed users', pass: plugin.roomsCalls === 0 })
  details.push(`**Subscriber blip.** ${describeBlip(result).join(' ').replace(/\s+/g, ' ')} ` +
    'Before this, the plugin closed every transport of the node when its subscriber came back: all ' +
    `${plugin.clients} clients reconnected, each with a JWT check, an auth.user and a rooms() lookup, and caught up with since.`)
  raw.scenarios.blip = result
}

async function main () {
  for (const file of ['index.js', 'publisher/index.js']) {
    if (!existsSync(join(ROOT, 'dist', file))) throw new Error(`dist/${file} is missing: build first (npx tsup)`)
  }
  const fds = fdLimit()
  const need = Math.max(3 * Math.max(...cfg.sizes), ...cfg.memoryN, 5 * cfg.scopes * 1.5) / cfg.workers + 200
  log(`fd limit ${fds}; largest set of sockets in one process about ${Math.round(need)}`)
  if (Number.isFinite(fds) && fds < need) throw new Error(`ulimit -n is ${fds}; this run needs about ${Math.round(need)} (raise it: ulimit -n 65536)`)
  const needsRedis = ['micro', 'scopes', 'cluster', 'blip', 'publisher'].some((s) => cfg.only.includes(s))
  if (needsRedis && !(await redisReachable())) throw new Error(`Redis is not reachable at ${REDIS.host}:${REDIS.port}`)

  const workers = await startWorkers()
  const shared = {
    cfg, PREFIX, log, startServer, stopServer, connect, release, broadcastBlock, abba, expectations, usersFor, row, details, raw, armValues, groupRatios, saturated, utilisation, frameCheck, spread, median
  }
  const plan = { micro, fanout, scopes, connect: connections, memory, storm, cluster, sharded: (w) => sharded(shared, w), presence, blip, publisher }
  try {
    for (const name of SCENARIOS) {
      if (!cfg.only.includes(name)) continue
      log(`scenario ${name}`)
      try {
        await plan[name](workers)
      } catch (err) {
        // one scenario failing must not lose the others' figures: it is reported as failed
        console.error(err)
        failed.push(`${name}: ${String(err?.message ?? err).split('\n')[0]}`)
      }
    }
  } finally {
    for (const w of workers) await w.stop()
    await cleanRedis()
  }
  report()
}

main().then(() => {
  clearTimeout(watchdog)
  process.exit(failed.length === 0 ? 0 : 1)
}, async (err) => {
  console.error(err)
  killChildren()
  await cleanRedis()
  process.exit(1)
})
