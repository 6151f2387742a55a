import { io, type Socket } from 'socket.io-client'
import { EVENT_AUTH, EVENT_AUTH_EXPIRED, EVENT_READY, type Position } from '../protocol.js'
import { RETRYABLE, RealtimeClientError, accepted, messageOf, refusal, tokenFailed } from './errors.js'
import type { ClientState, Listeners } from './listeners.js'
import type { ConnectOptions, Settings } from './options.js'
import type { Link } from './scopes.js'
import { backoff, type Clock, type TimerHandle } from './timers.js'

/** What the connection tells the rest of the client. */
export interface ConnectionHooks {
  /** The positions to send as `since` with the next handshake. */
  since: () => Record<string, Position>
  /** The transport is up and the handshake went out with `since`; `realtime:ready` follows. */
  connected: (since: Record<string, Position>) => void
  /** `realtime:ready`: the server has authenticated the socket, joined its scopes and caught them up. */
  ready: (message: unknown) => void
  /** The connection is gone (or closing): drop what belonged to it. */
  lost: () => void
  /** The server refused the connection for good. */
  refused: (code: string, message: string) => void
}

type ConnectError = Error & { data?: { code?: unknown } }

/**
 * The socket.io-client socket and its life: a token for every handshake, refusals (retried when
 * they can get better), lost connections, token refresh on `realtime:auth_expired`, and requests
 * that wait for an answer.
 */
export class Connection implements Link {
  readonly socket: Socket
  readonly #options: ConnectOptions
  readonly #settings: Settings
  readonly #clock: Clock
  readonly #listeners: Listeners
  readonly #hooks: ConnectionHooks
  /** Requests waiting for an answer, each with the way to give up on it. */
  readonly #asks = new Set<(error: RealtimeClientError) => void>()

  #state: ClientState = 'connecting'
  #sentSince: Record<string, Position> = {}
  #ready = false
  #everReady = false
  #tokenFailed = false
  /** `realtime:auth_expired` came and no refresh has been accepted since. */
  #expired = false
  #connectTimer: TimerHandle | undefined
  #connectAttempts = 0
  #refreshTimer: TimerHandle | undefined
  #refreshAttempts = 0
  /** Bumped on every disconnect, so work begun on one connection stops there. */
  #generation = 0
  #closed = false

  constructor (url: string, options: ConnectOptions, settings: Settings, clock: Clock, listeners: Listeners, hooks: ConnectionHooks) {
    this.#options = options
    this.#settings = settings
    this.#clock = clock
    this.#listeners = listeners
    this.#hooks = hooks
    this.socket = io(url, {
      ...options.io,
      auth: (cb: (data: object) => void) => { this.#auth(cb) }
    })
    this.#wire()
  }

  get state (): ClientState {
    return this.#state
  }

  get ready (): boolean {
    return this.#ready
  }

  get connected (): boolean {
    return this.socket.connected
  }

  get closed (): boolean {
    return this.#closed
  }

  emit (event: string, data: object, ack: (answer: unknown) => void): void {
    this.socket.emit(event, data, ack)
  }

  ask (event: string, data: object): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const cancel = (error: RealtimeClientError): void => {
        this.#clock.clearTimeout(timer)
        this.#asks.delete(cancel)
        reject(error)
      }
      const timer = this.#clock.setTimeout(() => {
        cancel(new RealtimeClientError('TIMEOUT', `No answer to ${event} within ${this.#settings.timeoutMs} ms`))
      }, this.#settings.timeoutMs)
      this.#asks.add(cancel)
      this.socket.emit(event, data, (ack: unknown) => {
        if (!this.#asks.has(cancel)) return
        this.#clock.clearTimeout(timer)
        this.#asks.delete(cancel)
        resolve(ack)
      })
    })
  }

  /** Stops every retry, refresh and request (`CLOSED`); `disconnect()` then ends the socket. */
  close (): void {
    this.#closed = true
    this.#clock.clearTimeout(this.#connectTimer)
    this.#cancelAsks(new RealtimeClientError('CLOSED', 'The client was closed'))
    this.#reset()
  }

  disconnect (): void {
    this.socket.disconnect()
    this.#setState('disconnected')
  }

  /** Gives socket.io the handshake's `auth`; never rejects. */
  async #auth (cb: (data: object) => void): Promise<void> {
    const since = this.#hooks.since()
    this.#sentSince = since
    const data: { token?: string, since?: Record<string, Position> } = {}
    const token = await this.#token()
    if (token !== undefined) data.token = token
    if (Object.keys(since).length > 0) data.since = since
    cb(data)
  }

  async #token (): Promise<string | undefined> {
    const getToken = this.#options.getToken
    if (getToken === undefined) return this.#options.token
    try {
      const token = await getToken()
      if (typeof token === 'string' && token.length > 0) return token
      throw new TypeError('getToken gave no token')
    } catch (err) {
      // the server refuses the handshake (AUTH_REQUIRED); that refusal is retried, not final
      this.#tokenFailed = true
      this.#listeners.error(tokenFailed(err))
      return undefined
    }
  }

  #wire (): void {
    const socket = this.socket
    socket.on('connect', () => {
      if (!this.#closed) this.#hooks.connected(this.#sentSince)
    })
    socket.on('disconnect', (reason: string) => { this.#lost(reason) })
    socket.on('connect_error', (err: ConnectError) => { this.#refused(err) })
    socket.io.on('reconnect_attempt', () => {
      if (!this.#closed) this.#setState('reconnecting')
    })
    socket.io.on('reconnect_failed', () => {
      // only with a finite io.reconnectionAttempts: socket.io has stopped trying
      if (this.#closed) return
      this.#setState('disconnected')
      this.#listeners.error(new RealtimeClientError('DISCONNECTED', 'The server could not be reached; socket.io stopped reconnecting'))
    })
    socket.on(EVENT_READY, (message: unknown) => { this.#onReady(message) })
    socket.on(EVENT_AUTH_EXPIRED, () => { this.#onAuthExpired() })
  }

  #onReady (message: unknown): void {
    if (this.#closed) return
    this.#ready = true
    this.#everReady = true
    this.#expired = false
    this.#connectAttempts = 0
    this.#setState('connected')
    this.#hooks.ready(message)
  }

  #refused (err: ConnectError): void {
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
    // LIMIT: the user holds every connection the server allows it; one may close (or time out) soon
    if (code === 'UNAVAILABLE' || code === 'LIMIT' || (code === 'AUTH_EXPIRED' && this.#options.getToken !== undefined)) {
      this.#retryConnect()
      this.#listeners.error(error)
      return
    }
    this.#setState('disconnected')
    this.#listeners.error(error)
    // subscribes waiting for this connection will not get one
    this.#hooks.refused(code, err.message)
  }

  #retryConnect (): void {
    this.#setState(this.#everReady ? 'reconnecting' : 'connecting')
    this.#clock.clearTimeout(this.#connectTimer)
    this.#connectTimer = this.#clock.setTimeout(() => {
      this.#connectTimer = undefined
      if (!this.#closed) this.socket.connect()
    }, this.#backoff(this.#connectAttempts++))
  }

  #lost (reason: string): void {
    this.#reset()
    if (this.#closed) return
    if (this.socket.active && this.socket.io.reconnection()) {
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
      this.#listeners.error(new RealtimeClientError('DISCONNECTED', 'The server closed the connection'))
      return
    }
    this.#setState('disconnected')
  }

  /** Drops what belongs to one connection. */
  #reset (): void {
    this.#generation++
    this.#ready = false
    this.#clock.clearTimeout(this.#refreshTimer)
    this.#refreshTimer = undefined
    this.#hooks.lost()
    this.#cancelAsks(new RealtimeClientError('DISCONNECTED', 'The connection was lost'))
  }

  #cancelAsks (error: RealtimeClientError): void {
    for (const cancel of [...this.#asks]) cancel(error)
  }

  // --- token refresh ----------------------------------------------------------------------

  #onAuthExpired (): void {
    if (this.#closed) return
    this.#expired = true
    if (this.#options.getToken === undefined) {
      this.#listeners.error(new RealtimeClientError('AUTH_EXPIRED', 'The token expired and no getToken was given: the server will disconnect'))
      return
    }
    this.#clock.clearTimeout(this.#refreshTimer)
    this.#refreshTimer = undefined
    this.#refreshAttempts = 0
    this.#startRefresh()
  }

  #startRefresh (): void {
    this.#refresh().catch((err: unknown) => { this.#listeners.error(new RealtimeClientError('TOKEN_FAILED', messageOf(err), { cause: err })) })
  }

  /** Sends a fresh token; a failure is retried with a backoff short enough to fit the server's grace. */
  async #refresh (): Promise<void> {
    const generation = this.#generation
    const live = (): boolean => !this.#closed && this.#generation === generation && this.socket.connected
    let token: unknown
    try {
      token = await this.#options.getToken!()
      if (typeof token !== 'string' || token.length === 0) throw new TypeError('getToken gave no token')
    } catch (err) {
      if (!live()) return
      this.#listeners.error(tokenFailed(err))
      this.#retryRefresh(generation)
      return
    }
    if (!live()) return
    let ack: unknown
    try {
      ack = await this.ask(EVENT_AUTH, { token })
    } catch (err) {
      if (!live()) return
      this.#listeners.error(err as RealtimeClientError)
      this.#retryRefresh(generation)
      return
    }
    if (!live()) return
    if (accepted(ack)) {
      this.#expired = false
      this.#refreshAttempts = 0
      return
    }
    const error = refusal(ack, 'Token refresh refused')
    this.#listeners.error(error)
    if (RETRYABLE.has(error.code)) this.#retryRefresh(generation)
  }

  #retryRefresh (generation: number): void {
    this.#refreshTimer = this.#clock.setTimeout(() => {
      this.#refreshTimer = undefined
      if (!this.#closed && this.#generation === generation) this.#startRefresh()
    }, this.#backoff(this.#refreshAttempts++))
  }

  #backoff (attempt: number): number {
    return backoff(attempt, this.#settings.retryMinMs, this.#settings.retryMaxMs)
  }

  #setState (state: ClientState): void {
    if (state === this.#state) return
    this.#state = state
    this.#listeners.state(state)
  }
}
