// Shared by the test/client*.test.ts files: the real bundled client against a real plugin app.
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import {
  connect,
  type ClientState,
  type ConnectOptions,
  type PositionStorage,
  type RealtimeClient,
  type RealtimeClientError,
  type ResyncNotice
} from '../src/client/index.js'
import { MemoryHistoryStore } from '../src/index.js'
import type { HistoryEntry, HistoryStore, ReadResult } from '../src/history/store.js'
import type { Position } from '../src/protocol.js'
import { flush, until, type Teardown } from './helper.js'

export interface Seen {
  event: string
  payload: any
  meta: any
}

export interface Opened {
  client: RealtimeClient
  /** Every event handed to the `listen` handlers, in order. */
  events: Seen[]
  resyncs: ResyncNotice[]
  errors: RealtimeClientError[]
  states: ClientState[]
}

/**
 * A client over websocket with fast reconnects and retries, recording what it hands the app;
 * closed at teardown. `listen` names the events it handles.
 */
export function open (t: Teardown, url: string, options: ConnectOptions, listen: string[] = ['tick']): Opened {
  const client = connect(url, {
    retry: { minMs: 20, maxMs: 200 },
    ...options,
    io: { transports: ['websocket'], forceNew: true, reconnectionDelay: 20, reconnectionDelayMax: 100, ...options.io }
  })
  t.teardown(() => { client.close() })
  const opened: Opened = { client, events: [], resyncs: [], errors: [], states: [] }
  for (const event of listen) {
    on(client, event, (payload, meta) => { opened.events.push({ event, payload, meta }) })
  }
  client.onResync((notice) => { opened.resyncs.push(notice) })
  client.onError((error) => { opened.errors.push(error) })
  client.onState((state) => { opened.states.push(state) })
  return opened
}

/**
 * `client.on` for the tests' own event names: the type-checked program also holds the examples'
 * `RealtimeEvents` declarations, which `on()` then (rightly) holds every name to.
 */
export function on (client: RealtimeClient, event: string, handler: (payload: any, meta: any) => unknown): () => void {
  return client.on(event as never, handler as never)
}

export { until }

/** Resolves once the client has had `realtime:ready` (state `connected`). */
export async function ready (client: RealtimeClient): Promise<void> {
  await until(() => client.state === 'connected', 'client connected')
}

/** A round trip through the client's socket: every frame the server sent it before has arrived. */
/** Resolves once the server has handled everything the client sent before it. */
export async function roundTrip (client: RealtimeClient): Promise<void> {
  await flush(client.socket)
}

export interface Incoming {
  socketId: string
  event: string
  data: any
}

/** Records every client-to-server event of every socket (register before clients connect). */
export function incoming (app: FastifyInstance): Incoming[] {
  const seen: Incoming[] = []
  app.io.on('connection', (socket) => {
    socket.onAny((event: string, data: unknown) => { seen.push({ socketId: socket.id, event, data }) })
  })
  return seen
}

/** The subscribes sent for `scope` (`data` is `{ scope, since? }`). */
export function subscribes (log: Incoming[], scope: string): Incoming[] {
  return log.filter((entry) => entry.event === 'realtime:subscribe' && entry.data?.scope === scope)
}

/** The server side of a client's socket. */
export function serverSocket (app: FastifyInstance, client: RealtimeClient) {
  const id = client.socket.id
  const socket = id === undefined ? undefined : app.io.of('/').sockets.get(id)
  if (socket === undefined) throw new Error('the client has no socket on the server')
  return socket
}

/** The server-side rooms of a client's socket; empty while it has none. */
export function roomsOf (app: FastifyInstance, client: RealtimeClient): Set<string> {
  const id = client.socket.id
  return (id === undefined ? undefined : app.io.of('/').sockets.get(id)?.rooms) ?? new Set()
}

/** Closes the engine transport under the client's socket: it sees `transport close` and reconnects. */
export function dropTransport (app: FastifyInstance, client: RealtimeClient): void {
  serverSocket(app, client).conn.close()
}

/** A `localStorage` stand-in that counts its writes. */
export class MemoryStorage implements PositionStorage {
  readonly items = new Map<string, string>()
  writes = 0
  getItem (key: string): string | null {
    return this.items.get(key) ?? null
  }

  setItem (key: string, value: string): void {
    this.writes++
    this.items.set(key, value)
  }
}

/** A promise to hold a server callback on, released by the test (and at teardown). */
export class Gate {
  #open!: () => void
  #promise = this.#reset()
  /** How many callers are waiting or have passed. */
  calls = 0

  #reset (): Promise<void> {
    return new Promise<void>((resolve) => { this.#open = resolve })
  }

  async pass (): Promise<void> {
    this.calls++
    await this.#promise
  }

  open (): void {
    this.#open()
  }

  close (): void {
    this.#promise = this.#reset()
  }
}

/**
 * A real memory store behind a wrapper the test steers: `restart()` swaps in a new store (a new
 * epoch for every scope, as after a server restart), `failing` makes reads and positions throw,
 * `gate` (when set) holds the answer of a read or position, taken at the call, until opened.
 */
export class SteeredStore implements HistoryStore {
  readonly kind = 'memory'
  current: MemoryHistoryStore
  failing = false
  gate: Gate | null = null
  readonly #options: { max?: number }

  constructor (options: { max?: number } = {}) {
    this.#options = options
    this.current = new MemoryHistoryStore(options)
  }

  restart (): void {
    this.current.close()
    this.current = new MemoryHistoryStore(this.#options)
  }

  append (scope: string, entry: HistoryEntry): Position {
    return this.current.append(scope, entry)
  }

  async read (scope: string, since: Position): Promise<ReadResult> {
    if (this.failing) throw new Error('store down')
    const result = this.current.read(scope, since)
    await this.gate?.pass()
    return result
  }

  async position (scope: string): Promise<Position> {
    if (this.failing) throw new Error('store down')
    const result = this.current.position(scope)
    await this.gate?.pass()
    return result
  }

  close (): void {
    this.gate?.open()
    this.current.close()
  }
}

/** Puts an event in the app's log without sending it; returns the frame a broadcast would send. */
export async function store (app: FastifyInstance, scope: string, event: string, payload: unknown): Promise<[string, unknown, Record<string, unknown>]> {
  const history = app.realtime.history
  if (history === null) throw new Error('no history')
  const id = randomUUID()
  const at = Date.now()
  const { seq, epoch } = await history.append(scope, { id, event, payload, at })
  return [event, payload, { id, scope, seq, epoch, at }]
}

/** Sends a frame by hand to one socket. */
export function send (app: FastifyInstance, socketId: string, frame: [string, unknown, Record<string, unknown>] | [string, unknown]): void {
  app.io.to(socketId).emit(...(frame as [string, unknown]))
}

/**
 * Builds the browser bundle from src/ with the package's own build options (tsup.config.ts)
 * into a directory of the test's, so a test of the page never runs a stale dist/.
 */
export async function buildBrowserBundle (t: Teardown): Promise<string> {
  const { build } = await import('tsup')
  const { browserBundle } = await import('../tsup.config.js')
  const dir = await mkdtemp(join(tmpdir(), 'frt-browser-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await build({
    ...browserBundle,
    entry: { 'client/browser': fileURLToPath(new URL('../src/client/index.ts', import.meta.url)) },
    outDir: dir,
    sourcemap: false,
    silent: true,
    config: false
  })
  return join(dir, 'client/browser.global.js')
}
