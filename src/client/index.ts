import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client'
import { isPromiseLike } from '../util.js'
import type { EventMeta, RealtimeEventName, RealtimePayload } from 'fastify-realtime'
import {
  EVENT_AUTH,
  EVENT_AUTH_EXPIRED,
  EVENT_READY,
  EVENT_RESYNC,
  EVENT_SKIP,
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

/** Delays between retries: doubling from `minMs`, never above `maxMs`. */
export interface RetryOptions {
  /** @default 250 */
  minMs?: number
  /** @default 10000 */
  maxMs?: number
}

export interface ConnectOptions {
  /** A fixed token. Use `getToken` when tokens expire. */
  token?: string
  /**
   * Called for every (re)connect and on `realtime:auth_expired`; its token is sent. When it
   * throws or rejects, the error goes to `onError` (code `TOKEN_FAILED`) and it is called again
   * after a backoff.
   */
  getToken?: () => string | Promise<string>
  /** Keeps positions across page reloads, e.g. `localStorage`. Written in the same turn as every change. */
  storage?: PositionStorage
  /** Key under which positions are stored. @default 'fastify-realtime:positions' */
  storageKey?: string
  /** How long a later event waits for a missing one before the client fetches the range. @default 2000 */
  gapWaitMs?: number
  /** How long `subscribe`, `unsubscribe` and a token refresh wait for the server. @default 10000 */
  timeoutMs?: number
  /** Backoff for refused handshakes, re-subscribes, range fetches and token refreshes. @default { minMs: 250, maxMs: 10000 } */
  retry?: RetryOptions
  /** socket.io-client options (transports, path, reconnection delays…). `auth` is set by the client. */
  io?: Partial<ManagerOptions & SocketOptions>
}

/**
 * - `connecting`: the first connection is being made.
 * - `connected`: the server has authenticated the socket and sent `realtime:ready`.
 * - `reconnecting`: the connection was lost or refused for a while; the client tries again.
 * - `disconnected`: closed, or refused for good (see `onError`).
 */
export type ClientState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected'

/**
 * Codes a RealtimeClientError carries: the server's own (`FORBIDDEN`, `INVALID_SCOPE`, `LIMIT`,
 * `RATE_LIMITED`, `UNAVAILABLE`, `AUTH_REQUIRED`, `AUTH_INVALID`, `AUTH_EXPIRED`, `USER_REJECTED`…)
 * and the client's: `TIMEOUT` (no answer within `timeoutMs`), `TOKEN_FAILED` (`getToken` threw),
 * `HANDLER_FAILED` (one of your handlers threw), `DISCONNECTED` (the server closed the connection),
 * `UNSUBSCRIBED` (a pending subscribe was cancelled), `CLOSED` (`close()` was called),
 * `STORAGE_FAILED` (positions could not be saved).
 */
export type ClientErrorCode = string

/** A refusal or failure: `code` is stable (see ClientErrorCode); `scope` is set when it concerns one. */
export class RealtimeClientError extends Error {
  readonly code: ClientErrorCode
  readonly scope: string | undefined
  constructor (code: ClientErrorCode, message: string, options: { scope?: string, cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RealtimeClientError'
    this.code = code
    this.scope = options.scope
  }
}

/**
 * Why the app must refetch a scope: the server's reasons (`gap`, `epoch`, `unavailable`), or
 * `forbidden` when the server refused to restore a subscription (the scope is no longer followed).
 */
export type ClientResyncReason = ResyncReason | 'forbidden'

export interface ResyncNotice {
  scope: string
  reason: ClientResyncReason
}

type Handler = (payload: any, meta: EventMeta) => unknown

/** An event with a place in its scope's log, or a skip (a seq used by an event not sent here). */
interface Entry {
  event: string
  payload: unknown
  meta: EventMeta
  scope: string
  seq: number
  epoch: string
  skip: boolean
}

/**
 * One `realtime:subscribe` in flight for a scope: `subscribe` (asked by the app), `restore`
 * (after a reconnect) or `fetch` (a range the client is missing).
 */
interface Request {
  kind: 'subscribe' | 'restore' | 'fetch'
  since: Position | undefined
  /** A `realtime:resync` for the scope arrived before the answer. */
  resynced: boolean
  timer: ReturnType<typeof setTimeout> | undefined
}

interface Waiter {
  resolve: (position: Position | null) => void
  reject: (error: RealtimeClientError) => void
  timer: ReturnType<typeof setTimeout>
}

interface Handshake {
  since: Record<string, Position>
  resynced: Set<string>
}

interface Ack {
  ok: boolean
  position?: unknown
  error?: { code?: string, message?: string }
}

/** Worth asking again later: the server is busy or did not answer. */
const RETRYABLE = new Set(['UNAVAILABLE', 'RATE_LIMITED', 'TIMEOUT'])
/** A range fetch is tried this many times before the scope is given up with a resync. */
const FETCH_ATTEMPTS = 5

function isAck (value: unknown): value is Ack {
  return value !== null && typeof value === 'object' && typeof (value as Ack).ok === 'boolean'
}

function refusal (ack: unknown, fallback: string, scope?: string): RealtimeClientError {
  const error = isAck(ack) ? ack.error : undefined
  const code = typeof error?.code === 'string' ? error.code : 'UNAVAILABLE'
  return new RealtimeClientError(code, typeof error?.message === 'string' ? error.message : fallback, scope === undefined ? {} : { scope })
}

function messageOf (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/**
 * A connection to a fastify-realtime server that keeps its place in every scope: it sends
 * `since` on every reconnect, restores its subscriptions, drops repeats, and hands events to
 * your handlers in `seq` order per scope — or tells you, through `onResync`, to refetch.
 */
export class RealtimeClient {
  readonly #socket: Socket
  readonly #options: ConnectOptions
  readonly #storageKey: string
  readonly #gapWaitMs: number
  readonly #timeoutMs: number
  readonly #retryMinMs: number
  readonly #retryMaxMs: number

  readonly #positions = new Map<string, Position>()
  readonly #subscriptions = new Set<string>()
  /** Subscriptions the server has accepted at least once: they are restored, never dropped on a busy server. */
  readonly #confirmed = new Set<string>()
  /** Scopes the server joined at connect (`realtime:ready`). */
  #auto = new Set<string>()
  /** Scopes unsubscribed whose events may still be on the wire until the server's ack. */
  readonly #leaving = new Map<string, object>()
  readonly #held = new Map<string, Map<number, Entry>>()
  readonly #gapTimers = new Map<string, ReturnType<typeof setTimeout>>()
  readonly #requests = new Map<string, Request>()
  readonly #retryTimers = new Map<string, ReturnType<typeof setTimeout>>()
  readonly #attempts = new Map<string, number>()
  readonly #waiters = new Map<string, Set<Waiter>>()
  readonly #asks = new Set<(error: RealtimeClientError) => void>()

  readonly #handlers = new Map<string, Set<Handler>>()
  readonly #resyncHandlers = new Set<(notice: ResyncNotice) => unknown>()
  readonly #errorHandlers = new Set<(error: RealtimeClientError) => unknown>()
  readonly #stateHandlers = new Set<(state: ClientState) => unknown>()

  #state: ClientState = 'connecting'
  /** Set from `connect` until `realtime:ready`: every logged event waits for the positions. */
  #handshake: Handshake | null = null
  #sentSince: Record<string, Position> = {}
  #ready = false
  #everReady = false
  #tokenFailed = false
  /** `realtime:auth_expired` came and no refresh has been accepted since. */
  #expired = false
  #connectTimer: ReturnType<typeof setTimeout> | undefined
  #connectAttempts = 0
  #refreshTimer: ReturnType<typeof setTimeout> | undefined
  #refreshAttempts = 0
  /** Bumped on every disconnect, so work begun on one connection stops there. */
  #generation = 0
  #saveQueued = false
  #closed = false

  constructor (url: string, options: ConnectOptions = {}) {
    this.#options = options
    this.#storageKey = options.storageKey ?? 'fastify-realtime:positions'
    this.#gapWaitMs = options.gapWaitMs ?? 2000
    this.#timeoutMs = options.timeoutMs ?? 10_000
    this.#retryMinMs = options.retry?.minMs ?? 250
    this.#retryMaxMs = options.retry?.maxMs ?? 10_000
    this.#load()
    this.#socket = io(url, {
      ...options.io,
      auth: (cb: (data: object) => void) => { this.#auth(cb) }
    })
    this.#wire()
  }

  /** The underlying socket.io-client socket (its `id` is what `broadcast(…, { except })` takes). */
  get socket (): Socket {
    return this.#socket
  }

  /** Where the connection stands (see ClientState). */
  get state (): ClientState {
    return this.#state
  }

  /** Last position seen per scope (a copy). */
  get positions (): Record<string, Position> {
    const copy: Record<string, Position> = {}
    for (const [scope, { seq, epoch }] of this.#positions) copy[scope] = { seq, epoch }
    return copy
  }

  /** Scopes asked for with `subscribe` and not given up (restored after every reconnect). */
  get subscriptions (): string[] {
    return [...this.#subscriptions]
  }

  /** Handles `event`, in seq order per scope; returns a function that removes the handler. */
  on<E extends RealtimeEventName>(event: E, handler: (payload: RealtimePayload<E>, meta: EventMeta) => void): () => void {
    let set = this.#handlers.get(event)
    if (set === undefined) this.#handlers.set(event, set = new Set())
    set.add(handler as Handler)
    return () => { this.off(event, handler) }
  }

  /** Removes a handler added with `on`. */
  off<E extends RealtimeEventName>(event: E, handler: (payload: RealtimePayload<E>, meta: EventMeta) => void): void {
    this.#handlers.get(event)?.delete(handler as Handler)
  }

  /** Called when a scope's missed events cannot be replayed: refetch that scope over HTTP. */
  onResync (handler: (notice: ResyncNotice) => void): () => void {
    this.#resyncHandlers.add(handler)
    return () => { this.#resyncHandlers.delete(handler) }
  }

  /**
   * Called for refusals and failures: the connection refused (`client.state` then says whether
   * the client tries again), a subscription the server no longer restores, a token that could
   * not be fetched or refreshed, a handler of yours that threw. With no onError handler, a
   * handler of yours that throws is logged with `console.error`; nothing else is.
   */
  onError (handler: (error: RealtimeClientError) => void): () => void {
    this.#errorHandlers.add(handler)
    return () => { this.#errorHandlers.delete(handler) }
  }

  /** Called on every change of `state`; returns a function that removes the handler. */
  onState (handler: (state: ClientState) => void): () => void {
    this.#stateHandlers.add(handler)
    return () => { this.#stateHandlers.delete(handler) }
  }

  /**
   * Subscribes to `scope` (restored after every reconnect) and catches up from the last known
   * position; replayed events reach your handlers before this resolves. Resolves with the
   * position; rejects with a RealtimeClientError carrying the ack's code, or `TIMEOUT` when no
   * answer came within `timeoutMs` (counted from the call, connecting included).
   */
  subscribe (scope: string): Promise<Position | null> {
    if (this.#closed) return Promise.reject(new RealtimeClientError('CLOSED', 'The client is closed', { scope }))
    this.#subscriptions.add(scope)
    this.#leaving.delete(scope)
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#dropWaiter(scope, waiter)
          if (!this.#waiters.has(scope) && !this.#confirmed.has(scope)) this.#abandon(scope)
          reject(new RealtimeClientError('TIMEOUT', `No answer to the subscribe to ${scope} within ${this.#timeoutMs} ms`, { scope }))
        }, this.#timeoutMs)
      }
      let waiters = this.#waiters.get(scope)
      if (waiters === undefined) this.#waiters.set(scope, waiters = new Set())
      waiters.add(waiter)
      // sent now when connected; otherwise once, when the server says ready
      if (this.#ready && !this.#requests.has(scope)) this.#send(scope, this.#confirmed.has(scope) ? 'restore' : 'subscribe')
    })
  }

  /** Leaves `scope` and forgets its position; rejects a subscribe to it still waiting (`UNSUBSCRIBED`). */
  async unsubscribe (scope: string): Promise<void> {
    this.#drop(scope)
    this.#rejectWaiters(scope, new RealtimeClientError('UNSUBSCRIBED', `Unsubscribed from ${scope}`, { scope }))
    if (!this.#socket.connected || this.#closed) return
    let ack: unknown
    try {
      ack = await this.#leave(scope)
    } catch (err) {
      // a lost connection leaves every room anyway
      if ((err as RealtimeClientError).code === 'DISCONNECTED') return
      throw err
    }
    if (!isAck(ack) || !ack.ok) throw refusal(ack, 'Unsubscribe refused', scope)
  }

  /** Disconnects and stops every timer; positions are saved as they stand. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    clearTimeout(this.#connectTimer)
    for (const cancel of [...this.#asks]) cancel(new RealtimeClientError('CLOSED', 'The client was closed'))
    this.#reset()
    for (const scope of [...this.#waiters.keys()]) {
      this.#rejectWaiters(scope, new RealtimeClientError('CLOSED', 'The client was closed', { scope }))
    }
    if (this.#saveQueued) this.#save()
    this.#socket.disconnect()
    this.#setState('disconnected')
  }

  // --- connection -------------------------------------------------------------------------

  #auth (cb: (data: object) => void): void {
    const since = this.positions
    this.#sentSince = since
    const send = (token: string | undefined): void => {
      const data: { token?: string, since?: Record<string, Position> } = {}
      if (token !== undefined) data.token = token
      if (Object.keys(since).length > 0) data.since = since
      cb(data)
    }
    const getToken = this.#options.getToken
    if (getToken === undefined) {
      send(this.#options.token)
      return
    }
    const failed = (err: unknown): void => {
      // the server refuses the handshake (AUTH_REQUIRED); that refusal is retried, not final
      this.#tokenFailed = true
      this.#report(new RealtimeClientError('TOKEN_FAILED', `getToken failed: ${messageOf(err)}`, { cause: err }))
      send(undefined)
    }
    let result: string | Promise<string>
    try {
      result = getToken()
    } catch (err) {
      failed(err)
      return
    }
    Promise.resolve(result).then((token) => {
      if (typeof token === 'string' && token.length > 0) send(token)
      else failed(new TypeError('getToken gave no token'))
    }, failed)
  }

  #wire (): void {
    const socket = this.#socket
    socket.on('connect', () => {
      if (this.#closed) return
      this.#handshake = { since: this.#sentSince, resynced: new Set() }
    })
    socket.on('disconnect', (reason: string) => { this.#lost(reason) })
    socket.on('connect_error', (err: Error & { data?: { code?: unknown } }) => { this.#refused(err) })
    socket.io.on('reconnect_attempt', () => {
      if (!this.#closed) this.#setState('reconnecting')
    })
    socket.io.on('reconnect_failed', () => {
      // only with a finite io.reconnectionAttempts: socket.io has stopped trying
      if (this.#closed) return
      this.#setState('disconnected')
      this.#report(new RealtimeClientError('DISCONNECTED', 'The server could not be reached; socket.io stopped reconnecting'))
    })
    socket.on(EVENT_READY, (ready: unknown) => { this.#onReady(ready) })
    socket.on(EVENT_RESYNC, (notice: unknown) => { this.#onResync(notice) })
    socket.on(EVENT_AUTH_EXPIRED, () => { this.#onAuthExpired() })
    socket.onAny((event: string, payload: unknown, meta: unknown) => {
      if (event === EVENT_SKIP) this.#onSkip(payload)
      else if (!event.startsWith(RESERVED_PREFIX)) this.#onEvent(event, payload, meta)
    })
  }

  #refused (err: Error & { data?: { code?: unknown } }): void {
    if (this.#closed) return
    const code = typeof err.data?.code === 'string' ? err.data.code : undefined
    const tokenFailed = this.#tokenFailed
    this.#tokenFailed = false
    if (code === undefined) {
      // transport trouble: socket.io's Manager reconnects by itself
      this.#setState(this.#everReady ? 'reconnecting' : 'connecting')
      return
    }
    // a middleware refusal stops socket.io's own reconnection: retry what can get better
    if (code === 'AUTH_REQUIRED' && tokenFailed) {
      this.#retryConnect()
      return
    }
    const error = new RealtimeClientError(code, err.message)
    if (code === 'UNAVAILABLE' || (code === 'AUTH_EXPIRED' && this.#options.getToken !== undefined)) {
      this.#retryConnect()
      this.#report(error)
      return
    }
    this.#setState('disconnected')
    this.#report(error)
    // subscribes waiting for this connection will not get one
    for (const scope of [...this.#waiters.keys()]) this.#rejectWaiters(scope, new RealtimeClientError(code, err.message, { scope }))
  }

  #retryConnect (): void {
    this.#setState(this.#everReady ? 'reconnecting' : 'connecting')
    clearTimeout(this.#connectTimer)
    this.#connectTimer = setTimeout(() => {
      this.#connectTimer = undefined
      if (!this.#closed) this.#socket.connect()
    }, this.#backoff(this.#connectAttempts++))
  }

  #lost (reason: string): void {
    this.#reset()
    if (this.#closed) return
    if (this.#socket.active && this.#socket.io.reconnection()) {
      this.#setState('reconnecting')
      return
    }
    if (reason === 'io server disconnect') {
      if (this.#expired && this.#options.getToken !== undefined) {
        // the token ran out before a refresh got through: a new handshake gets a new token
        this.#retryConnect()
        return
      }
      this.#setState('disconnected')
      this.#report(new RealtimeClientError('DISCONNECTED', 'The server closed the connection'))
      return
    }
    this.#setState('disconnected')
  }

  /** Drops what belongs to one connection: requests, held events, timers. Positions stay. */
  #reset (): void {
    this.#generation++
    this.#ready = false
    this.#handshake = null
    clearTimeout(this.#refreshTimer)
    this.#refreshTimer = undefined
    for (const request of this.#requests.values()) clearTimeout(request.timer)
    this.#requests.clear()
    for (const timer of this.#retryTimers.values()) clearTimeout(timer)
    this.#retryTimers.clear()
    this.#attempts.clear()
    for (const timer of this.#gapTimers.values()) clearTimeout(timer)
    this.#gapTimers.clear()
    this.#held.clear()
    this.#leaving.clear()
    for (const cancel of [...this.#asks]) cancel(new RealtimeClientError('DISCONNECTED', 'The connection was lost'))
  }

  #onReady (message: unknown): void {
    if (this.#closed) return
    const ready = (message ?? {}) as { scopes?: unknown, positions?: Record<string, unknown> }
    const handshake = this.#handshake ?? { since: {}, resynced: new Set<string>() }
    this.#handshake = null
    this.#ready = true
    this.#everReady = true
    this.#expired = false
    this.#connectAttempts = 0
    this.#auto = new Set(Array.isArray(ready.scopes) ? ready.scopes.filter((s): s is string => typeof s === 'string') : [])
    this.#setState('connected')
    const positions = ready.positions !== null && typeof ready.positions === 'object' ? ready.positions : {}
    for (const scope of [...this.#subscriptions]) {
      // the server restored the auto-joined ones itself (with since); the others are asked for again
      if (!this.#auto.has(scope) && !this.#requests.has(scope)) this.#send(scope, this.#confirmed.has(scope) ? 'restore' : 'subscribe')
    }
    for (const scope of this.#auto) {
      const position = positions[scope]
      this.#settle(scope, isPosition(position) ? position : null, {
        since: handshake.since[scope],
        resynced: handshake.resynced.has(scope)
      })
    }
    for (const scope of [...this.#held.keys()]) {
      if (!this.#auto.has(scope) && !this.#pending(scope)) this.#refeed(scope)
    }
    for (const scope of [...this.#subscriptions]) {
      if (this.#auto.has(scope)) {
        this.#confirmed.add(scope)
        this.#resolveWaiters(scope)
      }
    }
  }

  // --- subscribe, fetch, retry ------------------------------------------------------------

  #pending (scope: string): boolean {
    return this.#requests.has(scope) || this.#retryTimers.has(scope)
  }

  #wants (scope: string): boolean {
    return this.#subscriptions.has(scope) || this.#auto.has(scope)
  }

  /** Sends one `realtime:subscribe` (with since when the position is known); its events wait for the answer. */
  #send (scope: string, kind: Request['kind']): void {
    this.#stopRetry(scope)
    this.#stopGapTimer(scope)
    const position = this.#positions.get(scope)
    const since = position === undefined ? undefined : { seq: position.seq, epoch: position.epoch }
    const request: Request = { kind, since, resynced: false, timer: undefined }
    this.#requests.set(scope, request)
    request.timer = setTimeout(() => {
      if (this.#requests.get(scope) !== request) return
      this.#requests.delete(scope)
      this.#failed(scope, request, new RealtimeClientError('TIMEOUT', `No answer to the subscribe to ${scope} within ${this.#timeoutMs} ms`, { scope }))
    }, this.#timeoutMs)
    this.#socket.emit(EVENT_SUBSCRIBE, since === undefined ? { scope } : { scope, since }, (ack: unknown) => {
      if (this.#closed) return
      if (this.#requests.get(scope) !== request) {
        // a late answer: the server joined a room nobody here wants any more
        if (isAck(ack) && ack.ok && !this.#wants(scope) && this.#socket.connected) this.#leave(scope).catch(() => {})
        return
      }
      clearTimeout(request.timer)
      this.#requests.delete(scope)
      if (isAck(ack) && ack.ok) this.#succeeded(scope, request, ack)
      else this.#failed(scope, request, refusal(ack, `Subscribe to ${scope} refused`, scope))
    })
  }

  #succeeded (scope: string, request: Request, ack: Ack): void {
    this.#attempts.delete(scope)
    if (this.#subscriptions.has(scope)) this.#confirmed.add(scope)
    this.#settle(scope, isPosition(ack.position) ? ack.position : null, request)
    this.#resolveWaiters(scope)
  }

  #failed (scope: string, request: Request, error: RealtimeClientError): void {
    const waited = this.#rejectWaiters(scope, error)
    if (request.kind === 'subscribe' && !this.#confirmed.has(scope)) {
      // a first subscribe: its caller has the error, and the scope was never followed
      this.#subscriptions.delete(scope)
      if (this.#auto.has(scope)) this.#refeed(scope)
      else this.#forget(scope)
      return
    }
    if (RETRYABLE.has(error.code)) {
      const attempt = (this.#attempts.get(scope) ?? 0) + 1
      if (request.kind !== 'fetch' || attempt < FETCH_ATTEMPTS) {
        this.#attempts.set(scope, attempt)
        if (!waited) this.#report(error)
        this.#retryTimers.set(scope, setTimeout(() => {
          this.#retryTimers.delete(scope)
          if (this.#ready && !this.#closed) this.#send(scope, request.kind)
        }, this.#backoff(attempt - 1)))
        return
      }
      // the range could not be had: the app refetches, and delivery starts again from what is held
      this.#attempts.delete(scope)
      this.#report(error)
      this.#positions.delete(scope)
      this.#changed()
      this.#notifyResync({ scope, reason: 'unavailable' })
      this.#refeed(scope)
      return
    }
    // refused for good (FORBIDDEN, INVALID_SCOPE, LIMIT…): the client no longer follows the scope,
    // and leaves its room should the server still have it there
    this.#drop(scope)
    if (this.#socket.connected) this.#leave(scope).catch(() => {})
    this.#report(error)
    this.#notifyResync({ scope, reason: 'forbidden' })
  }

  /** Stops a subscribe nobody waits for any more; a late acceptance is undone by `#send`. */
  #abandon (scope: string): void {
    this.#subscriptions.delete(scope)
    if (this.#auto.has(scope)) return
    this.#cancel(scope)
    this.#forget(scope)
  }

  /** Stops following `scope`: no request, no retry, no position, nothing held. */
  #drop (scope: string): void {
    this.#subscriptions.delete(scope)
    this.#confirmed.delete(scope)
    this.#auto.delete(scope)
    this.#cancel(scope)
    this.#forget(scope)
  }

  #cancel (scope: string): void {
    clearTimeout(this.#requests.get(scope)?.timer)
    this.#requests.delete(scope)
    this.#stopRetry(scope)
    this.#attempts.delete(scope)
  }

  /**
   * Asks the server to take the socket out of `scope`'s room; its events are dropped until the
   * answer. Each leave holds a token of its own, so an earlier answer does not end a later leave.
   */
  async #leave (scope: string): Promise<unknown> {
    const token = {}
    this.#leaving.set(scope, token)
    try {
      return await this.#ask(EVENT_UNSUBSCRIBE, { scope })
    } finally {
      if (this.#leaving.get(scope) === token) this.#leaving.delete(scope)
    }
  }

  /** Asks the server for everything after the position: replayed, or a resync. One at a time per scope. */
  #fetch (scope: string): void {
    if (this.#closed || !this.#ready || this.#pending(scope)) return
    this.#send(scope, 'fetch')
  }

  /**
   * Takes the server's answer for a scope (from `realtime:ready` or a subscribe ack), then hands
   * over the events held meanwhile. Everything the server replayed came before its answer.
   */
  #settle (scope: string, answer: Position | null, request: { since: Position | undefined, resynced: boolean }): void {
    const current = this.#positions.get(scope)
    if (answer !== null) {
      const since = request.since
      const continued = since !== undefined && !request.resynced && current !== undefined &&
        current.seq === since.seq && current.epoch === since.epoch
      if (continued) {
        // the server carried our position on into its log (a scope's first events start a new epoch)
        if (current.epoch !== answer.epoch) this.#positions.set(scope, { seq: current.seq, epoch: answer.epoch })
      } else if (current === undefined || current.epoch !== answer.epoch || current.seq < answer.seq) {
        this.#positions.set(scope, { seq: answer.seq, epoch: answer.epoch })
      }
      this.#changed()
      // sent before the answer, from a log generation the server no longer holds
      const held = this.#held.get(scope)
      if (held !== undefined) for (const [seq, entry] of held) if (entry.epoch !== answer.epoch) held.delete(seq)
      this.#refeed(scope)
      const now = this.#positions.get(scope)
      if (continued && now !== undefined && now.epoch === answer.epoch && now.seq < answer.seq && !this.#pending(scope)) {
        // the server says it replayed more than arrived: never skip it silently
        this.#positions.set(scope, { seq: answer.seq, epoch: answer.epoch })
        this.#changed()
        this.#notifyResync({ scope, reason: 'gap' })
      }
      return
    }
    this.#refeed(scope)
  }

  // --- events -----------------------------------------------------------------------------

  #onEvent (event: string, payload: unknown, rawMeta: unknown): void {
    if (this.#closed) return
    const meta = rawMeta as EventMeta | null | undefined
    if (meta === null || typeof meta !== 'object' || typeof meta.scope !== 'string') {
      this.#emit(event, payload, meta as EventMeta)
      return
    }
    if (this.#leaving.has(meta.scope)) return
    const { seq, epoch } = meta
    if (!Number.isSafeInteger(seq) || (seq as number) < 1 || typeof epoch !== 'string') {
      // outside any log (volatile, or not stored): straight through
      this.#emit(event, payload, meta)
      return
    }
    this.#receive({ event, payload, meta, scope: meta.scope, seq: seq as number, epoch, skip: false })
  }

  #onSkip (message: unknown): void {
    if (this.#closed || message === null || typeof message !== 'object') return
    const { scope, seq, epoch } = message as Record<string, unknown>
    if (typeof scope !== 'string' || !Number.isSafeInteger(seq) || (seq as number) < 1 || typeof epoch !== 'string') return
    if (this.#leaving.has(scope)) return
    this.#receive({ event: EVENT_SKIP, payload: undefined, meta: message as EventMeta, scope, seq: seq as number, epoch, skip: true })
  }

  #receive (entry: Entry): void {
    const { scope } = entry
    if (this.#handshake !== null || this.#pending(scope)) {
      // the position is about to be known (ready, or a subscribe's answer): wait for it
      this.#hold(entry)
      return
    }
    let position = this.#positions.get(scope)
    if (position === undefined) {
      if (entry.skip) return
      // a scope the server joined without a word to this client (`realtime.join`): start here
      position = { seq: entry.seq - 1, epoch: entry.epoch }
      this.#positions.set(scope, position)
    }
    if (entry.epoch !== position.epoch) {
      this.#hold(entry)
      // a skip alone fetches nothing; kept, it still stands for its seq if an event of its epoch
      // makes the client fetch (a scope's first events start a new epoch), so the replay does
      // not hand the excepted event back
      if (!entry.skip) this.#fetch(scope)
      return
    }
    if (entry.seq <= position.seq) return
    if (entry.seq > position.seq + 1) {
      this.#hold(entry)
      if (!this.#gapTimers.has(scope)) {
        this.#gapTimers.set(scope, setTimeout(() => {
          this.#gapTimers.delete(scope)
          this.#fetch(scope)
        }, this.#gapWaitMs))
      }
      return
    }
    this.#deliver(entry)
  }

  /** Delivers one in-order entry, then whatever it unblocks. */
  #deliver (first: Entry): void {
    const { scope } = first
    let next: Entry | undefined = first
    let position: Position | undefined
    while (next !== undefined) {
      position = { seq: next.seq, epoch: next.epoch }
      this.#positions.set(scope, position)
      this.#changed()
      if (!next.skip) this.#emit(next.event, next.payload, next.meta)
      // a handler may have closed the client, left the scope or asked for it again
      if (this.#closed || this.#positions.get(scope) !== position || this.#pending(scope)) return
      const held = this.#held.get(scope)
      next = held?.get(position.seq + 1)
      if (next !== undefined && next.epoch === position.epoch) held!.delete(next.seq)
      else next = undefined
    }
    const held = this.#held.get(scope)
    if (held === undefined || position === undefined) return
    for (const seq of held.keys()) if (seq <= position.seq) held.delete(seq)
    if (held.size === 0) this.#dropHeld(scope)
  }

  #hold (entry: Entry): void {
    let held = this.#held.get(entry.scope)
    if (held === undefined) this.#held.set(entry.scope, held = new Map())
    const known = held.get(entry.seq)
    if (known === undefined || known.epoch !== entry.epoch) held.set(entry.seq, entry)
  }

  /** Hands the held events of a scope to `#receive` again, lowest seq first. */
  #refeed (scope: string): void {
    const held = this.#held.get(scope)
    if (held === undefined) return
    this.#dropHeld(scope)
    for (const entry of [...held.values()].sort((a, b) => a.seq - b.seq)) {
      if (this.#closed) return
      this.#receive(entry)
    }
  }

  #onResync (message: unknown): void {
    if (this.#closed || message === null || typeof message !== 'object') return
    const { scope, reason } = message as { scope?: unknown, reason?: unknown }
    if (typeof scope !== 'string' || typeof reason !== 'string') return
    const request = this.#requests.get(scope)
    if (request !== undefined) request.resynced = true
    this.#handshake?.resynced.add(scope)
    this.#positions.delete(scope)
    this.#changed()
    if (request === undefined && this.#handshake === null) this.#dropHeld(scope)
    this.#notifyResync({ scope, reason: reason as ResyncReason })
  }

  /** Drops the events held for `scope` and stops waiting for the seq they lack. */
  #dropHeld (scope: string): void {
    this.#held.delete(scope)
    this.#stopGapTimer(scope)
  }

  #stopGapTimer (scope: string): void {
    clearTimeout(this.#gapTimers.get(scope))
    this.#gapTimers.delete(scope)
  }

  #stopRetry (scope: string): void {
    clearTimeout(this.#retryTimers.get(scope))
    this.#retryTimers.delete(scope)
  }

  #forget (scope: string): void {
    this.#positions.delete(scope)
    this.#dropHeld(scope)
    this.#changed()
  }

  // --- token refresh ----------------------------------------------------------------------

  #onAuthExpired (): void {
    if (this.#closed) return
    this.#expired = true
    if (this.#options.getToken === undefined) {
      this.#report(new RealtimeClientError('AUTH_EXPIRED', 'The token expired and no getToken was given: the server will disconnect'))
      return
    }
    clearTimeout(this.#refreshTimer)
    this.#refreshTimer = undefined
    this.#refreshAttempts = 0
    this.#refresh().catch((err: unknown) => { this.#report(new RealtimeClientError('TOKEN_FAILED', messageOf(err), { cause: err })) })
  }

  /** Sends a fresh token; a failure is retried with a backoff short enough to fit the server's grace. */
  async #refresh (): Promise<void> {
    const generation = this.#generation
    const live = (): boolean => !this.#closed && this.#generation === generation && this.#socket.connected
    let token: unknown
    try {
      token = await this.#options.getToken!()
      if (typeof token !== 'string' || token.length === 0) throw new TypeError('getToken gave no token')
    } catch (err) {
      if (!live()) return
      this.#report(new RealtimeClientError('TOKEN_FAILED', `getToken failed: ${messageOf(err)}`, { cause: err }))
      this.#retryRefresh(generation)
      return
    }
    if (!live()) return
    let ack: unknown
    try {
      ack = await this.#ask(EVENT_AUTH, { token })
    } catch (err) {
      if (!live()) return
      this.#report(err as RealtimeClientError)
      this.#retryRefresh(generation)
      return
    }
    if (!live()) return
    if (isAck(ack) && ack.ok) {
      this.#expired = false
      this.#refreshAttempts = 0
      return
    }
    const error = refusal(ack, 'Token refresh refused')
    this.#report(error)
    if (RETRYABLE.has(error.code)) this.#retryRefresh(generation)
  }

  #retryRefresh (generation: number): void {
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = undefined
      if (!this.#closed && this.#generation === generation) {
        this.#refresh().catch((err: unknown) => { this.#report(new RealtimeClientError('TOKEN_FAILED', messageOf(err), { cause: err })) })
      }
    }, this.#backoff(this.#refreshAttempts++))
  }

  // --- helpers ----------------------------------------------------------------------------

  /** Emits with an ack; rejects with `TIMEOUT`, or when the connection is lost or the client closed. */
  #ask (event: string, data: object): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const cancel = (error: RealtimeClientError): void => {
        clearTimeout(timer)
        this.#asks.delete(cancel)
        reject(error)
      }
      const timer = setTimeout(() => {
        cancel(new RealtimeClientError('TIMEOUT', `No answer to ${event} within ${this.#timeoutMs} ms`))
      }, this.#timeoutMs)
      this.#asks.add(cancel)
      this.#socket.emit(event, data, (ack: unknown) => {
        if (!this.#asks.has(cancel)) return
        clearTimeout(timer)
        this.#asks.delete(cancel)
        resolve(ack)
      })
    })
  }

  #backoff (attempt: number): number {
    const delay = Math.min(this.#retryMaxMs, this.#retryMinMs * 2 ** Math.min(attempt, 30))
    // spread clients that all lost the same server, so they do not come back at once
    return Math.round(delay * (0.75 + Math.random() / 4))
  }

  #resolveWaiters (scope: string): void {
    const waiters = this.#waiters.get(scope)
    if (waiters === undefined) return
    this.#waiters.delete(scope)
    const position = this.#positions.get(scope)
    for (const waiter of waiters) {
      clearTimeout(waiter.timer)
      waiter.resolve(position === undefined ? null : { seq: position.seq, epoch: position.epoch })
    }
  }

  #rejectWaiters (scope: string, error: RealtimeClientError): boolean {
    const waiters = this.#waiters.get(scope)
    if (waiters === undefined) return false
    this.#waiters.delete(scope)
    for (const waiter of waiters) {
      clearTimeout(waiter.timer)
      waiter.reject(error)
    }
    return true
  }

  #dropWaiter (scope: string, waiter: Waiter): void {
    const waiters = this.#waiters.get(scope)
    waiters?.delete(waiter)
    if (waiters?.size === 0) this.#waiters.delete(scope)
  }

  #emit (event: string, payload: unknown, meta: EventMeta): void {
    const handlers = this.#handlers.get(event)
    if (handlers === undefined) return
    // the hot path: no closure per handler and event unless one fails
    for (const handler of [...handlers]) {
      try {
        const result = handler(payload, meta)
        if (isPromiseLike(result)) result.then(undefined, (err: unknown) => { this.#handlerFailed(`on('${event}')`, meta?.scope, err) })
      } catch (err) {
        this.#handlerFailed(`on('${event}')`, meta?.scope, err)
      }
    }
  }

  #notifyResync (notice: ResyncNotice): void {
    for (const handler of [...this.#resyncHandlers]) this.#call('onResync', notice.scope, () => handler({ ...notice }))
  }

  #setState (state: ClientState): void {
    if (state === this.#state) return
    this.#state = state
    for (const handler of [...this.#stateHandlers]) this.#call('onState', undefined, () => handler(state))
  }

  /** Runs one app handler: a throw (or a rejected promise) is reported, never passed up into the socket. */
  #call (where: string, scope: string | undefined, run: () => unknown): void {
    try {
      const result = run()
      if (isPromiseLike(result)) result.then(undefined, (err: unknown) => { this.#handlerFailed(where, scope, err) })
    } catch (err) {
      this.#handlerFailed(where, scope, err)
    }
  }

  #handlerFailed (where: string, scope: string | undefined, err: unknown): void {
    const error = new RealtimeClientError('HANDLER_FAILED', `A ${where} handler failed: ${messageOf(err)}`, scope === undefined ? { cause: err } : { scope, cause: err })
    if (this.#errorHandlers.size > 0) this.#report(error)
    else console.error(error)
  }

  #report (error: RealtimeClientError): void {
    for (const handler of [...this.#errorHandlers]) {
      try {
        const result = handler(error)
        if (isPromiseLike(result)) result.then(undefined, () => {})
      } catch {
        // an onError handler that throws is not reported again: that would never end
      }
    }
  }

  #load (): void {
    let raw: string | null | undefined
    try {
      raw = this.#options.storage?.getItem(this.#storageKey)
    } catch {
      return
    }
    if (raw === null || raw === undefined) return
    try {
      for (const [scope, position] of Object.entries(JSON.parse(raw) as Record<string, unknown>)) {
        if (isPosition(position)) this.#positions.set(scope, { seq: position.seq, epoch: position.epoch })
      }
    } catch {
      // unreadable storage: start without positions
    }
  }

  /** Saves at the end of the current turn: one write however many events the turn delivered. */
  #changed (): void {
    if (this.#options.storage === undefined || this.#saveQueued) return
    this.#saveQueued = true
    queueMicrotask(() => {
      if (this.#saveQueued) this.#save()
    })
  }

  #save (): void {
    this.#saveQueued = false
    try {
      this.#options.storage?.setItem(this.#storageKey, JSON.stringify(this.positions))
    } catch (err) {
      this.#report(new RealtimeClientError('STORAGE_FAILED', `Positions could not be saved: ${messageOf(err)}`, { cause: err }))
    }
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
