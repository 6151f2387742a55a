import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client'
import type { EventMeta, RealtimeEventName, RealtimePayload } from 'fastify-realtime'
import {
  EVENT_AUTH,
  EVENT_AUTH_EXPIRED,
  EVENT_READY,
  EVENT_RESYNC,
  EVENT_SUBSCRIBE,
  EVENT_UNSUBSCRIBE,
  RESERVED_PREFIX,
  isPosition,
  type Position,
  type ResyncReason
} from '../protocol.js'

/** A `localStorage`-like place to keep positions across page reloads. */
export interface PositionStorage {
  getItem: (key: string) => string | null
  setItem: (key: string, value: string) => void
}

export interface ConnectOptions {
  /** A fixed token. Use `getToken` when tokens expire. */
  token?: string
  /** Called for every (re)connect and on `realtime:auth_expired`; its token is sent. */
  getToken?: () => string | Promise<string>
  /** Keeps positions across page reloads, e.g. `localStorage`. */
  storage?: PositionStorage
  /** Key under which positions are stored. @default 'fastify-realtime:positions' */
  storageKey?: string
  /** How long a later event waits for a missing one before the client fetches the range. @default 2000 */
  gapWaitMs?: number
  /** socket.io-client options (transports, path, reconnection delays…). `auth` is set by the client. */
  io?: Partial<ManagerOptions & SocketOptions>
}

export type ClientState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected'

/** A refusal from the server: `code` is the wire code (`FORBIDDEN`, `AUTH_INVALID`, `UNAVAILABLE`…). */
export class RealtimeClientError extends Error {
  readonly code: string
  constructor (code: string, message: string) {
    super(message)
    this.name = 'RealtimeClientError'
    this.code = code
  }
}

export interface ResyncNotice {
  scope: string
  reason: ResyncReason
}

type Handler = (payload: any, meta: EventMeta) => void
type Pending = [event: string, payload: unknown, meta: EventMeta]

interface Ack {
  ok: boolean
  position?: Position | null
  error?: { code: string, message: string }
  exp?: number | null
}

const RETRY_CODES = new Set(['UNAVAILABLE', 'AUTH_EXPIRED'])

/**
 * A connection to a fastify-realtime server that keeps its place in every scope: it sends
 * `since` on every reconnect, restores its subscriptions, drops repeats, and hands events to
 * your handlers in `seq` order per scope — or tells you, through `onResync`, to refetch.
 */
export class RealtimeClient {
  readonly #socket: Socket
  readonly #options: ConnectOptions
  readonly #storageKey: string
  readonly #positions = new Map<string, Position>()
  readonly #subscriptions = new Set<string>()
  readonly #held = new Map<string, Map<number, Pending>>()
  readonly #gapTimers = new Map<string, ReturnType<typeof setTimeout>>()
  readonly #handlers = new Map<string, Set<Handler>>()
  readonly #resyncHandlers = new Set<(notice: ResyncNotice) => void>()
  readonly #errorHandlers = new Set<(error: RealtimeClientError) => void>()
  readonly #stateHandlers = new Set<(state: ClientState) => void>()
  #state: ClientState = 'connecting'
  #retryTimer: ReturnType<typeof setTimeout> | undefined
  #saveTimer: ReturnType<typeof setTimeout> | undefined
  #retries = 0
  #everConnected = false
  #closed = false

  constructor (url: string, options: ConnectOptions) {
    this.#options = options
    this.#storageKey = options.storageKey ?? 'fastify-realtime:positions'
    this.#load()
    this.#socket = io(url, {
      ...options.io,
      auth: (cb: (data: object) => void) => {
        this.#handshake().then(cb, (err: unknown) => {
          this.#report(new RealtimeClientError('AUTH_REQUIRED', `getToken failed: ${String(err)}`))
          cb({})
        })
      }
    })
    this.#wire()
  }

  /** The underlying socket.io-client socket. */
  get socket (): Socket {
    return this.#socket
  }

  get state (): ClientState {
    return this.#state
  }

  /** Last position seen per scope (a copy). */
  get positions (): Record<string, Position> {
    return Object.fromEntries([...this.#positions].map(([scope, p]) => [scope, { ...p }]))
  }

  /** Handles `event`, in seq order per scope; returns a function that removes the handler. */
  on<E extends RealtimeEventName>(event: E, handler: (payload: RealtimePayload<E>, meta: EventMeta) => void): () => void {
    let set = this.#handlers.get(event)
    if (set === undefined) this.#handlers.set(event, set = new Set())
    set.add(handler as Handler)
    return () => { this.off(event, handler) }
  }

  off<E extends RealtimeEventName>(event: E, handler: (payload: RealtimePayload<E>, meta: EventMeta) => void): void {
    this.#handlers.get(event)?.delete(handler as Handler)
  }

  /** Called when a scope's missed events cannot be replayed: refetch that scope over HTTP. */
  onResync (handler: (notice: ResyncNotice) => void): () => void {
    this.#resyncHandlers.add(handler)
    return () => this.#resyncHandlers.delete(handler)
  }

  /** Called for refusals the client cannot fix by itself (bad token, user rejected, no getToken). */
  onError (handler: (error: RealtimeClientError) => void): () => void {
    this.#errorHandlers.add(handler)
    return () => this.#errorHandlers.delete(handler)
  }

  onState (handler: (state: ClientState) => void): () => void {
    this.#stateHandlers.add(handler)
    return () => this.#stateHandlers.delete(handler)
  }

  /**
   * Subscribes to `scope` (restored after every reconnect) and catches up from the last known
   * position. Resolves with the position; rejects with a RealtimeClientError carrying the ack's code.
   */
  async subscribe (scope: string): Promise<Position | null> {
    this.#subscriptions.add(scope)
    const ack = await this.#subscribeAck(scope)
    if (!ack.ok) {
      this.#subscriptions.delete(scope)
      throw new RealtimeClientError(ack.error?.code ?? 'UNAVAILABLE', ack.error?.message ?? 'Subscribe refused')
    }
    return this.#positions.get(scope) ?? ack.position ?? null
  }

  async unsubscribe (scope: string): Promise<void> {
    this.#subscriptions.delete(scope)
    this.#forget(scope)
    const ack = await this.#socket.timeout(10_000).emitWithAck(EVENT_UNSUBSCRIBE, { scope }) as Ack
    if (!ack.ok) throw new RealtimeClientError(ack.error?.code ?? 'UNAVAILABLE', ack.error?.message ?? 'Unsubscribe refused')
  }

  /** Disconnects and stops every timer; positions are saved first. */
  close (): void {
    this.#closed = true
    clearTimeout(this.#retryTimer)
    for (const timer of this.#gapTimers.values()) clearTimeout(timer)
    this.#gapTimers.clear()
    this.#held.clear()
    if (this.#saveTimer !== undefined) {
      clearTimeout(this.#saveTimer)
      this.#save()
    }
    this.#socket.disconnect()
    this.#setState('disconnected')
  }

  async #handshake (): Promise<object> {
    const token = this.#options.getToken === undefined ? this.#options.token : await this.#options.getToken()
    const since = this.positions
    return Object.keys(since).length === 0 ? { token } : { token, since }
  }

  #wire (): void {
    const socket = this.#socket
    socket.on('connect', () => {
      this.#retries = 0
      this.#setState('connected')
      if (this.#everConnected) {
        for (const scope of this.#subscriptions) {
          this.#subscribeAck(scope).catch(() => {})
        }
      }
      this.#everConnected = true
    })
    socket.on('disconnect', (reason: string) => {
      const final = reason === 'io client disconnect' || reason === 'io server disconnect'
      this.#setState(final || this.#closed ? 'disconnected' : 'reconnecting')
    })
    socket.on('connect_error', (err: Error & { data?: { code?: string } }) => {
      const code = err.data?.code
      if (code === undefined) {
        // transport trouble: the socket.io Manager reconnects by itself
        this.#setState(this.#everConnected ? 'reconnecting' : 'connecting')
        return
      }
      if (RETRY_CODES.has(code) && (code !== 'AUTH_EXPIRED' || this.#options.getToken !== undefined)) {
        // a middleware refusal stops socket.io's own reconnection: retry with a bounded backoff
        this.#setState('reconnecting')
        const delay = Math.min(10_000, 250 * 2 ** this.#retries++)
        this.#retryTimer = setTimeout(() => { if (!this.#closed) socket.connect() }, delay)
        return
      }
      this.#setState('disconnected')
      this.#report(new RealtimeClientError(code, err.message))
    })
    socket.on(EVENT_READY, (ready: { positions?: Record<string, Position> }) => {
      for (const [scope, position] of Object.entries(ready.positions ?? {})) this.#adopt(scope, position)
    })
    socket.on(EVENT_RESYNC, (notice: ResyncNotice) => { this.#resync(notice) })
    socket.on(EVENT_AUTH_EXPIRED, () => { this.#refresh().catch(() => {}) })
    socket.onAny((event: string, payload: unknown, meta: unknown) => {
      if (!event.startsWith(RESERVED_PREFIX)) this.#receive(event, payload, meta)
    })
  }

  async #refresh (): Promise<void> {
    if (this.#options.getToken === undefined) {
      this.#report(new RealtimeClientError('AUTH_EXPIRED', 'The token expired and no getToken was given'))
      return
    }
    const token = await this.#options.getToken()
    const ack = await this.#socket.timeout(10_000).emitWithAck(EVENT_AUTH, { token }) as Ack
    if (!ack.ok) this.#report(new RealtimeClientError(ack.error?.code ?? 'AUTH_INVALID', ack.error?.message ?? 'Token refresh refused'))
  }

  async #subscribeAck (scope: string): Promise<Ack> {
    const since = this.#positions.get(scope)
    const ack = await this.#socket.timeout(10_000).emitWithAck(EVENT_SUBSCRIBE, since === undefined ? { scope } : { scope, since }) as Ack
    if (ack.ok && ack.position) this.#adopt(scope, ack.position)
    return ack
  }

  #receive (event: string, payload: unknown, rawMeta: unknown): void {
    const meta = rawMeta as EventMeta | undefined
    if (meta === undefined || meta === null || typeof meta.scope !== 'string' || typeof meta.seq !== 'number' || typeof meta.epoch !== 'string') {
      this.#emit(event, payload, meta as EventMeta) // outside any log (volatile): straight through
      return
    }
    const { scope, seq, epoch } = meta
    const position = this.#positions.get(scope)
    if (position === undefined) {
      this.#advance(scope, { seq, epoch }, [event, payload, meta])
      return
    }
    if (epoch !== position.epoch) {
      // a new log generation continues an empty position; anything else cannot be trusted
      if (position.seq === 0 && seq === 1) this.#advance(scope, { seq, epoch }, [event, payload, meta])
      else this.#fetch(scope)
      return
    }
    if (seq <= position.seq) return
    if (seq === position.seq + 1) {
      this.#advance(scope, { seq, epoch }, [event, payload, meta])
      return
    }
    let held = this.#held.get(scope)
    if (held === undefined) this.#held.set(scope, held = new Map())
    held.set(seq, [event, payload, meta])
    if (!this.#gapTimers.has(scope)) {
      this.#gapTimers.set(scope, setTimeout(() => {
        this.#gapTimers.delete(scope)
        this.#fetch(scope)
      }, this.#options.gapWaitMs ?? 2000))
    }
  }

  /** Delivers one in-order event, then whatever it unblocks. */
  #advance (scope: string, position: Position, pending: Pending): void {
    this.#positions.set(scope, position)
    this.#emit(...pending)
    const held = this.#held.get(scope)
    if (held !== undefined) {
      for (let next = held.get(position.seq + 1); next !== undefined; next = held.get(position.seq + 1)) {
        held.delete(position.seq + 1)
        position.seq += 1
        this.#emit(...next)
      }
      for (const seq of held.keys()) if (seq <= position.seq) held.delete(seq)
      if (held.size === 0) {
        this.#held.delete(scope)
        clearTimeout(this.#gapTimers.get(scope))
        this.#gapTimers.delete(scope)
      }
    }
    this.#scheduleSave()
  }

  /** Asks the server for everything after our position (replayed, or a resync). */
  #fetch (scope: string): void {
    if (this.#closed) return
    this.#subscribeAck(scope).then((ack) => {
      if (!ack.ok) this.#resync({ scope, reason: 'unavailable' })
    }, () => { this.#resync({ scope, reason: 'unavailable' }) })
  }

  #adopt (scope: string, position: Position): void {
    if (!isPosition(position)) return
    const current = this.#positions.get(scope)
    if (current === undefined || current.epoch !== position.epoch || current.seq < position.seq) {
      this.#positions.set(scope, { seq: position.seq, epoch: position.epoch })
      const held = this.#held.get(scope)
      if (held !== undefined) for (const seq of held.keys()) if (seq <= position.seq) held.delete(seq)
      this.#scheduleSave()
    }
  }

  #resync (notice: ResyncNotice): void {
    this.#forget(notice.scope)
    for (const handler of this.#resyncHandlers) handler(notice)
  }

  #forget (scope: string): void {
    this.#positions.delete(scope)
    this.#held.delete(scope)
    clearTimeout(this.#gapTimers.get(scope))
    this.#gapTimers.delete(scope)
    this.#scheduleSave()
  }

  #emit (event: string, payload: unknown, meta: EventMeta): void {
    const handlers = this.#handlers.get(event)
    if (handlers === undefined) return
    for (const handler of handlers) handler(payload, meta)
  }

  #report (error: RealtimeClientError): void {
    for (const handler of this.#errorHandlers) handler(error)
  }

  #setState (state: ClientState): void {
    if (state === this.#state) return
    this.#state = state
    for (const handler of this.#stateHandlers) handler(state)
  }

  #load (): void {
    const raw = this.#options.storage?.getItem(this.#storageKey)
    if (raw === null || raw === undefined) return
    try {
      for (const [scope, position] of Object.entries(JSON.parse(raw) as Record<string, unknown>)) {
        if (isPosition(position)) this.#positions.set(scope, { seq: position.seq, epoch: position.epoch })
      }
    } catch {
      // unreadable storage: start without positions
    }
  }

  #scheduleSave (): void {
    if (this.#options.storage === undefined || this.#saveTimer !== undefined) return
    this.#saveTimer = setTimeout(() => {
      this.#saveTimer = undefined
      this.#save()
    }, 100)
  }

  #save (): void {
    this.#options.storage?.setItem(this.#storageKey, JSON.stringify(this.positions))
  }
}

/**
 * Connects to a fastify-realtime server.
 *
 * @example
 * import { connect } from 'fastify-realtime/client'
 *
 * const client = connect('https://api.example.com', { getToken: () => auth.token(), storage: localStorage })
 * client.on('incident:created', (incident, meta) => render(incident))
 * client.onResync(({ scope }) => refetch(scope))
 * await client.subscribe('incidents:all')
 */
export function connect (url: string, options: ConnectOptions = {}): RealtimeClient {
  return new RealtimeClient(url, options)
}

export type { EventMeta, Position, ResyncReason }
