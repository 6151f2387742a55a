import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { connect, createServer, type Socket as TcpSocket } from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { CHANNEL_KEY } from '../src/cluster.js'
import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client'
import { SECRET, tokenFor, uniq, waitFor, type ReadyPayload, type Teardown } from './helper.js'
import { deleteKeys, ownRedis, REDIS_HOST, REDIS_PORT, type OwnRedis } from './redis-helper.js'

const FIXTURE = fileURLToPath(new URL('./fixtures/node.ts', import.meta.url))
// tsx as a loader in the node process itself (its CLI would put the app in a grandchild that a kill misses)
const TSX_LOADER = new URL('../node_modules/tsx/dist/loader.mjs', import.meta.url).href

export interface NodeProcess {
  port: number
  url: string
  child: ChildProcess
  /** POSTs JSON to one of the fixture's routes and resolves with the parsed reply. */
  post: (path: string, body: unknown) => Promise<{ status: number, body: any }>
  get: (path: string) => Promise<{ status: number, body: any }>
  /** Sends `signal` and resolves once the process has exited. */
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

/** Runs an example on src/ rather than on the built package (see test/fixtures/src-package.mjs). */
const SRC_PACKAGE = new URL('./fixtures/src-package-register.mjs', import.meta.url).href

/**
 * Starts test/fixtures/node.ts (or `script`, a file that prints `{"port":N}` once listening) in its
 * own process with `env`; stopped (SIGKILL) at teardown.
 */
export async function startNode (t: Teardown, env: Record<string, string>, script = FIXTURE): Promise<NodeProcess> {
  const child = spawn(process.execPath, ['--import', TSX_LOADER, '--import', SRC_PACKAGE, script], {
    env: { ...process.env, SECRET, ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const stop = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill(signal)
    await exited
  }
  t.teardown(() => stop())
  const port = await new Promise<number>((resolve, reject) => {
    let buffered = ''
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const line = buffered.split('\n').find((l) => l.startsWith('{"port"'))
      if (line !== undefined) resolve((JSON.parse(line) as { port: number }).port)
    })
    child.once('exit', (code) => reject(new Error(`node exited with ${code} before listening`)))
  })
  const url = `http://127.0.0.1:${port}`
  const call = async (method: string, path: string, body?: unknown): Promise<{ status: number, body: any }> => {
    const res = await fetch(url + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await res.text()
    return { status: res.status, body: text.length > 0 ? JSON.parse(text) : null }
  }
  return {
    port,
    url,
    child,
    post: async (path, body) => await call('POST', path, body),
    get: async (path) => await call('GET', path),
    stop
  }
}

/**
 * Calls `read` every `everyMs` until `ok` accepts its value and resolves with that value; rejects
 * after `withinMs` with the last value seen. For figures that settle by themselves (heartbeats,
 * a Redis reconnect), never for asserting how long something took.
 */
export async function poll<T> (what: string, read: () => Promise<T>, ok: (value: T) => boolean, withinMs = 10_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + withinMs
  let last: T | undefined
  let error: unknown
  while (Date.now() < deadline) {
    try {
      last = await read()
      error = undefined
      if (ok(last)) return last
    } catch (err) {
      error = err
    }
    await delay(everyMs)
  }
  throw new Error(`${what}: not reached within ${withinMs} ms; last ${error === undefined ? JSON.stringify(last) : String(error)}`)
}

/** The adapter's request channel for a namespace (channels carry no ioredis keyPrefix, so the plugin adds it). */
export function requestChannel (keyPrefix: string, nsp = '/'): string {
  return `${keyPrefix}${CHANNEL_KEY}-request#${nsp}#`
}

/** Resolves once `count` nodes listen on the cluster's request channel (their adapters subscribed). */
export async function subscribed (port: number, keyPrefix: string, count: number): Promise<void> {
  const client = new Redis({ host: REDIS_HOST, port, lazyConnect: true, maxRetriesPerRequest: 1 })
  client.on('error', () => {})
  try {
    await client.connect()
    await poll(`${count} nodes subscribed`, async () => {
      const reply = await client.pubsub('NUMSUB', requestChannel(keyPrefix)) as [string, number]
      return Number(reply[1])
    }, (n) => n === count, 10_000, 20)
  } finally {
    client.disconnect()
  }
}

/** Starts `count` nodes with the same env and waits until each one's adapter is subscribed. */
export async function startCluster (t: Teardown, count: number, env: Record<string, string>): Promise<NodeProcess[]> {
  const nodes = await Promise.all(Array.from({ length: count }, async () => await startNode(t, env)))
  await subscribed(Number(env.REDIS_PORT ?? REDIS_PORT), env.KEY_PREFIX ?? '', count)
  return nodes
}

export interface Balancer {
  url: string
  /** New connections wait (accepted, not forwarded) until `release`. */
  hold: () => void
  release: () => void
  /** Closes every connection open through it (both sides), as a network that drops would. */
  cut: () => void
}

/**
 * A tiny TCP load balancer on 127.0.0.1:0: each incoming connection goes to the first of
 * `ports` that accepts it (a killed node refuses, so the next one gets it), piped both ways;
 * when either side closes, the other is closed too. Closed at teardown.
 */
export async function balancer (t: Teardown, ports: number[]): Promise<Balancer> {
  const open = new Set<TcpSocket>()
  let held: TcpSocket[] | null = null
  const track = (socket: TcpSocket): void => {
    open.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => { open.delete(socket) })
  }
  const forward = (client: TcpSocket, rest: number[]): void => {
    const [port, ...next] = rest
    if (port === undefined || client.destroyed) {
      client.destroy()
      return
    }
    const upstream = connect(port, '127.0.0.1')
    const refused = (): void => { forward(client, next) }
    upstream.once('error', refused)
    upstream.once('connect', () => {
      upstream.off('error', refused)
      track(upstream)
      upstream.on('close', () => client.destroy())
      client.on('close', () => upstream.destroy())
      client.pipe(upstream)
      upstream.pipe(client)
    })
  }
  const server = createServer({ pauseOnConnect: true }, (client) => {
    track(client)
    if (held !== null) held.push(client)
    else forward(client, ports)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const socket of open) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  const { port } = server.address() as { port: number }
  return {
    url: `http://127.0.0.1:${port}`,
    hold: () => { held ??= [] },
    release: () => {
      const waiting = held ?? []
      held = null
      for (const client of waiting) forward(client, ports)
    },
    cut: () => {
      for (const socket of open) if (!held?.includes(socket)) socket.destroy()
    }
  }
}

/** A socket.io-client socket for `sub` on `url` (no reconnection unless asked), once `realtime:ready`. */
export async function clientFor (t: Teardown, url: string, sub: string, opts: Partial<ManagerOptions & SocketOptions> = {}): Promise<{ socket: Socket, ready: ReadyPayload }> {
  const socket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: tokenFor(sub) }, ...opts })
  t.teardown(() => { socket.disconnect() })
  const [ready] = await waitFor<[ReadyPayload]>(socket, 'realtime:ready')
  return { socket, ready }
}

/** Resolves with the first `count` `event`s a socket receives from now on, as [payload, meta]. */
export async function nextEvents (socket: Socket, event: string, count: number): Promise<Array<[unknown, any]>> {
  const seen: Array<[unknown, any]> = []
  return await new Promise((resolve) => {
    const onEvent = (payload: unknown, meta: unknown): void => {
      seen.push([payload, meta])
      if (seen.length < count) return
      socket.off(event, onEvent)
      resolve(seen)
    }
    socket.on(event, onEvent)
  })
}

/** A key prefix of the test's own on the Redis at `port`; its keys are deleted at teardown (after the nodes are gone). */
export function clusterPrefix (t: Teardown, port = REDIS_PORT): string {
  const prefix = `${uniq('cl')}:`
  t.teardown(() => deleteKeys(port, prefix))
  return prefix
}

/**
 * Client options for sockets that must come back by themselves: a node that hears Redis again
 * after an outage closes its transports, so its clients reconnect and catch up.
 */
export const RECONNECTING = { reconnection: true, reconnectionDelay: 20, reconnectionDelayMax: 100 } as const

/**
 * Two nodes on a redis-server of the test's own (the test may kill and restart it), with 100 ms
 * heartbeats, and users u1 and u2 both granted team:1.
 */
export async function outageCluster (t: Teardown): Promise<{ redis: OwnRedis, a: NodeProcess, b: NodeProcess }> {
  const redis = await ownRedis(t)
  const env = {
    REDIS_PORT: String(redis.port),
    KEY_PREFIX: clusterPrefix(t, redis.port),
    ROOMS: JSON.stringify({ u1: ['team:1'], u2: ['team:1'] }),
    HEARTBEAT_MS: '100'
  }
  const [a, b] = await startCluster(t, 2, env) as [NodeProcess, NodeProcess]
  return { redis, a, b }
}
