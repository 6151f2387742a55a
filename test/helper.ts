import { randomUUID } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { createSigner } from 'fast-jwt'
import { io as ioClient, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client'
import realtime, { type FastifyRealtimeOptions, type PresenceDiff } from '../src/index.js'

export const SECRET = 'test-secret-for-fastify-realtime-0123456789'

const signer = createSigner({ key: SECRET, algorithm: 'HS256' })

/** A real HS256 token for `sub`, valid for `expiresIn` seconds (default 600). */
export function sign (claims: Record<string, unknown> = {}, expiresIn = 600): string {
  const now = Math.floor(Date.now() / 1000)
  return signer({ iat: now, exp: now + expiresIn, ...claims })
}

export function tokenFor (sub: string, extra: Record<string, unknown> = {}): string {
  return sign({ sub, ...extra })
}

/** A unique prefix for keys and names one test owns. */
export function uniq (label = 't'): string {
  return `${label}-${randomUUID().slice(0, 8)}`
}

/** What a helper needs from a test to clean up after it: tap's `t`, or any subtest's. */
export interface Teardown {
  teardown: (fn: () => unknown) => void
}

export interface Built {
  app: FastifyInstance
  url: string
  /** A socket.io-client socket over websocket with `auth`; disconnected at teardown. */
  client: (auth?: Record<string, unknown> | null, opts?: Partial<ManagerOptions & SocketOptions>) => Socket
  /** Connects as `sub` and waits for `realtime:ready`. */
  connected: (sub: string, opts?: Partial<ManagerOptions & SocketOptions>) => Promise<{ socket: Socket, ready: ReadyPayload }>
}

export interface ReadyPayload {
  userId: string
  scopes: string[]
  positions: Record<string, { seq: number, epoch: string }>
}

export interface BuildOptions {
  /** Runs before the plugin is registered (e.g. register @fastify/jwt first). */
  before?: (app: FastifyInstance) => void | Promise<void>
  /** Runs after the plugin is registered, before listen (routes, later plugins). */
  after?: (app: FastifyInstance) => void | Promise<void>
  fastify?: FastifyServerOptions
}

/** A listening app on 127.0.0.1:0 with the plugin registered; closed at teardown. */
export async function build (t: Teardown, opts: FastifyRealtimeOptions = {}, more: BuildOptions = {}): Promise<Built> {
  const app = Fastify({ logger: false, ...more.fastify })
  t.teardown(() => app.close())
  await more.before?.(app)
  await app.register(realtime, { ...opts, auth: { secret: SECRET, ...opts.auth } })
  await more.after?.(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  const url = `http://127.0.0.1:${port}`

  const client: Built['client'] = (auth, clientOpts) => {
    const socket = ioClient(url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      ...(auth === null || auth === undefined ? {} : { auth }),
      ...clientOpts
    })
    t.teardown(() => { socket.disconnect() })
    return socket
  }
  const connected: Built['connected'] = async (sub, clientOpts) => {
    const socket = client({ token: tokenFor(sub) }, clientOpts)
    const [ready] = await waitFor<[ReadyPayload]>(socket, 'realtime:ready')
    return { socket, ready }
  }
  return { app, url, client, connected }
}

/** Resolves with the arguments of the next `event`; rejects on connect_error (unless awaited). */
export function waitFor<T extends unknown[] = unknown[]> (socket: Socket, event: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onEvent = (...args: unknown[]): void => {
      socket.off('connect_error', onError)
      resolve(args as T)
    }
    const onError = (err: Error): void => {
      socket.off(event, onEvent)
      reject(err)
    }
    socket.once(event, onEvent)
    if (event !== 'connect_error') socket.once('connect_error', onError)
  })
}

/** The `connect_error` a refused handshake produces. */
export async function refusal (socket: Socket): Promise<Error & { data?: { code?: string } }> {
  const [err] = await waitFor<[Error & { data?: { code?: string } }]>(socket, 'connect_error')
  return err
}

/** Emits with an ack and resolves with the ack's value. */
export function request<T = any> (socket: Socket, event: string, ...args: unknown[]): Promise<T> {
  return socket.timeout(10_000).emitWithAck(event, ...args) as Promise<T>
}

/** Collects every `event` a socket receives, as [payload, meta] pairs. */
export function collect (socket: Socket, event: string): Array<[unknown, any]> {
  const seen: Array<[unknown, any]> = []
  socket.on(event, (payload: unknown, meta: unknown) => { seen.push([payload, meta]) })
  return seen
}

/** Every `realtime:presence_diff` a socket receives from now on. */
export function diffsOf (socket: Socket): PresenceDiff[] {
  const seen: PresenceDiff[] = []
  socket.on('realtime:presence_diff', (diff: PresenceDiff) => { seen.push(diff) })
  return seen
}

/** A round trip through the server: everything the server sent this socket before it has arrived. */
export async function flush (socket: Socket): Promise<void> {
  await request(socket, 'realtime:unsubscribe', { scope: 'flush:x' })
}

let examplesResolveToSrc = false

/**
 * Imports an example (path from the repo root, e.g. 'examples/tasks/app.ts') with its
 * `import … from 'fastify-realtime'` resolved to src/ (the code under test) instead of dist/:
 * the test then needs no build and cannot pass or fail on a stale one. A module resolve hook
 * (test/fixtures/src-package.mjs), registered once per test process, maps the package's self-reference.
 */
export async function importExample<T> (path: string): Promise<T> {
  if (!examplesResolveToSrc) {
    examplesResolveToSrc = true
    const { register } = await import('node:module')
    register(new URL('./fixtures/src-package.mjs', import.meta.url))
  }
  return await import(new URL(`../${path}`, import.meta.url).href) as T
}

/**
 * A `rooms(user)` backed by a set of member ids (members get `scope`), that can be made to wait
 * after it has read the membership: `pause()` holds the next lookups, and resolves `asked` once
 * one of them has read its answer, so a test can change membership while that answer is in flight.
 */
export function gatedRooms (members: Set<string>, scope = 'team:1'): {
  rooms: (user: { id: string | number }) => Promise<string[]>
  pause: () => { asked: Promise<void>, release: () => void }
} {
  let gate: { wait: Promise<void>, entered: () => void } | null = null
  return {
    rooms: async (user) => {
      const answer = members.has(String(user.id)) ? [scope] : []
      const current = gate
      if (current !== null) {
        current.entered()
        await current.wait
      }
      return answer
    },
    pause: () => {
      let release!: () => void
      let entered!: () => void
      const wait = new Promise<void>((resolve) => { release = resolve })
      const asked = new Promise<void>((resolve) => { entered = resolve })
      gate = { wait, entered }
      return {
        asked,
        release: () => {
          gate = null
          release()
        }
      }
    }
  }
}

/** Resolves once `condition` holds (checked every few ms); throws, naming `what`, after `ms`. */
export async function until (condition: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`still waiting after ${ms} ms: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Rejects after `ms`: a wait on an event that fails instead of hanging when the event never comes. */
export async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms: ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** What `processFaults()` has seen, for the checks that nothing went unhandled. */
export interface Faults {
  /** How many so far: pass it to `since` later to see only what came after. */
  readonly count: number
  /** Each fault after the first `from`, as `kind: stack`, once pending rejections have surfaced. */
  since: (from?: number) => Promise<string[]>
}

/**
 * Collects every `unhandledRejection` of this test process from now on (and, with
 * `uncaughtExceptions`, every uncaught exception, which then no longer ends the process), so that
 * a file can check none happened: `t.same(await faults.since(), [])`. Call it once, at the top of a file.
 */
export function processFaults (opts: { uncaughtExceptions?: boolean } = {}): Faults {
  const seen: string[] = []
  const record = (kind: string) => (error: unknown): void => {
    seen.push(`${kind}: ${String((error as Error | undefined)?.stack ?? error)}`)
  }
  process.on('unhandledRejection', record('unhandledRejection'))
  if (opts.uncaughtExceptions === true) process.on('uncaughtException', record('uncaughtException'))
  return {
    get count () { return seen.length },
    async since (from = 0) {
      // 'unhandledRejection' is emitted after the microtasks of a turn: let two turns pass first
      for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve))
      return seen.slice(from)
    }
  }
}
