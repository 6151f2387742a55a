// Shared by the bench driver, the server process and the client workers.
import { fork } from 'node:child_process'

export const SECRET = 'bench-secret-for-fastify-realtime-0123456789'
export const EVENT = 'tick'
export const REDIS = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT ?? 6379) }

/** Nanoseconds on CLOCK_MONOTONIC: the same clock in every process of this machine. */
export const now = () => Number(process.hrtime.bigint())

/** user + system CPU in microseconds since `since` (a process.cpuUsage() snapshot). */
export function cpuSince (since) {
  const { user, system } = process.cpuUsage(since)
  return user + system
}

// ---------- statistics ----------

export function quantile (values, q) {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const pos = (sorted.length - 1) * q
  const lo = Math.floor(pos)
  const hi = Math.ceil(pos)
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo)
}

export const median = (values) => quantile(values, 0.5)

/** { median, p10, p90, n } of a list of numbers. */
export function spread (values) {
  return { median: median(values), p10: quantile(values, 0.1), p90: quantile(values, 0.9), n: values.length }
}

// Latency histogram with 1 % wide buckets from 1 µs to ~100 s: a few KB whatever the sample count.
const BASE = Math.log(1.01)
const MIN_NS = 1000
export const HIST_BUCKETS = 2600

export function newHist () {
  return new Float64Array(HIST_BUCKETS)
}

export function record (hist, ns) {
  const i = ns <= MIN_NS ? 0 : Math.min(HIST_BUCKETS - 1, Math.floor(Math.log(ns / MIN_NS) / BASE))
  hist[i]++
}

export function mergeHists (hists) {
  const out = newHist()
  for (const h of hists) for (let i = 0; i < HIST_BUCKETS; i++) out[i] += h[i]
  return out
}

/** The q-quantile of a histogram in nanoseconds (bucket midpoint, within 1 %). */
export function histQuantile (hist, q) {
  let total = 0
  for (let i = 0; i < HIST_BUCKETS; i++) total += hist[i]
  if (total === 0) return Number.NaN
  const want = q * total
  let seen = 0
  for (let i = 0; i < HIST_BUCKETS; i++) {
    seen += hist[i]
    if (seen >= want) return MIN_NS * Math.exp((i + 0.5) * BASE)
  }
  return Number.NaN
}

// ---------- IPC: request / reply between the driver and its children ----------

/** In a child: answers `{ id, cmd, args }` with `{ id, ok, result | error }`; exits when the driver goes away. */
export function serve (handlers) {
  process.on('message', (msg) => {
    if (msg === null || typeof msg !== 'object' || msg.id === undefined) return
    const handler = handlers[msg.cmd]
    Promise.resolve()
      .then(() => {
        if (handler === undefined) throw new Error(`unknown command ${msg.cmd}`)
        return handler(msg.args ?? {})
      })
      .then(
        (result) => process.send({ id: msg.id, ok: true, result }),
        (err) => process.send({ id: msg.id, ok: false, error: String(err?.stack ?? err) })
      )
  })
  // the driver died or closed the channel: nothing left to serve
  process.on('disconnect', () => process.exit(0))
}

const children = new Set()

/** Kills every child still running (SIGKILL); safe to call more than once. */
export function killChildren () {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  children.clear()
}

/**
 * Forks `file` with an IPC channel; `call(cmd, args, timeoutMs)` resolves with the child's
 * answer, rejects on its error, its exit or the timeout, so nothing waits forever.
 */
export function spawn (file, { name, execArgv = [], env = {} } = {}) {
  const child = fork(file, [], {
    execArgv,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced'
  })
  children.add(child)
  const pending = new Map()
  let next = 0
  let started
  const ready = new Promise((resolve, reject) => {
    started = resolve
    child.once('exit', (code, signal) => reject(new Error(`${name} exited (${signal ?? code}) before it was ready`)))
  })
  ready.catch(() => {})
  child.on('message', (msg) => {
    if (msg?.ready === true) started()
    const entry = pending.get(msg?.id)
    if (entry === undefined) return
    pending.delete(msg.id)
    clearTimeout(entry.timer)
    if (msg.ok) entry.resolve(msg.result)
    else entry.reject(new Error(`${name}.${entry.cmd}: ${msg.error}`))
  })
  child.on('exit', (code, signal) => {
    children.delete(child)
    for (const entry of pending.values()) {
      clearTimeout(entry.timer)
      entry.reject(new Error(`${name} exited (${signal ?? code}) during ${entry.cmd}`))
    }
    pending.clear()
  })
  return {
    name,
    child,
    pid: child.pid,
    /** Resolves once the child has said it is serving. */
    ready,
    call (cmd, args = {}, timeoutMs = 120_000) {
      return new Promise((resolve, reject) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          reject(new Error(`${name} is not running (${cmd})`))
          return
        }
        const id = next++
        const timer = setTimeout(() => {
          pending.delete(id)
          reject(new Error(`${name}.${cmd} timed out after ${timeoutMs} ms`))
        }, timeoutMs)
        pending.set(id, { resolve, reject, timer, cmd })
        child.send({ id, cmd, args })
      })
    },
    async stop () {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.disconnect()
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    }
  }
}

// ---------- sending: the broadcasts of one block, from a server arm or a publisher ----------

export function sleep (ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/**
 * Issues `count` broadcasts of `target` (anything with `broadcast(scope, payload)`) round robin over `scopes`: as fast as possible (`rate` 0)
 * with up to `concurrency` awaited at once, or paced at `rate` per second. Each payload carries
 * its index and the CLOCK_MONOTONIC time it was handed to the arm, for the clients' latency.
 */
export async function send (target, { scopes, count, rate = 0, concurrency = 1, bytes = 64 }) {
  const pad = 'x'.repeat(bytes)
  const one = (i) => target.broadcast(scopes[i % scopes.length], { n: i, t: now(), pad })
  if (rate > 0) {
    const start = now()
    const interval = 1e9 / rate
    for (let i = 0; i < count; i++) {
      const wait = (start + i * interval - now()) / 1e6
      if (wait >= 1) await sleep(Math.floor(wait))
      await one(i)
    }
    return
  }
  if (concurrency <= 1) {
    for (let i = 0; i < count; i++) await one(i)
    return
  }
  await new Promise((resolve, reject) => {
    let next = 0
    let inflight = 0
    const pump = () => {
      for (; inflight < concurrency && next < count; next++) {
        inflight++
        Promise.resolve(one(next)).then(() => {
          inflight--
          if (next >= count && inflight === 0) resolve()
          else pump()
        }, reject)
      }
    }
    pump()
  })
}
