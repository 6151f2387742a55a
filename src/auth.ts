import type { FastifyBaseLogger } from 'fastify'
import type { RealtimeClock } from './clock.js'
import { ConnectError, type Authenticated, type Credentials } from './credentials.js'
import type { NormalizedOptions } from './options.js'
import { EVENT_AUTH_EXPIRED, ackError } from './protocol.js'
import type { RealtimeSocket, RealtimeUser } from './types.js'
import { reply } from './util.js'

/**
 * Token expiry for every connected socket on one timer: sockets sit in buckets by their `exp`
 * second, and a one-second tick (running only while some socket is watched) takes the buckets
 * that are due. A socket costs a Set entry, not a timer of its own.
 */
class ExpiryWatch {
  /** Sockets by the second their token expires: one socket alone (the usual case) or a Set. */
  readonly #buckets = new Map<number, RealtimeSocket | Set<RealtimeSocket>>()
  readonly #bucketOf = new WeakMap<RealtimeSocket, number>()
  readonly #onExpired: (socket: RealtimeSocket) => void
  readonly #clock: RealtimeClock
  #timer: unknown
  /** The next second not yet handled. */
  #cursor = 0

  constructor (clock: RealtimeClock, onExpired: (socket: RealtimeSocket) => void) {
    this.#clock = clock
    this.#onExpired = onExpired
  }

  watch (socket: RealtimeSocket, exp: number): void {
    this.unwatch(socket)
    // a token already past its exp is due at the next tick, like any other bucket
    this.#add(socket, Math.max(Math.floor(exp), this.#second()))
  }

  unwatch (socket: RealtimeSocket): void {
    const second = this.#bucketOf.get(socket)
    if (second === undefined) return
    this.#bucketOf.delete(socket)
    const bucket = this.#buckets.get(second)
    if (bucket === socket) this.#buckets.delete(second)
    else if (bucket instanceof Set) {
      bucket.delete(socket)
      if (bucket.size === 0) this.#buckets.delete(second)
    }
    if (this.#buckets.size === 0) this.stop()
  }

  stop (): void {
    if (this.#timer === undefined) return
    this.#clock.clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #second (): number {
    return Math.floor(this.#clock.now() / 1000)
  }

  #add (socket: RealtimeSocket, second: number): void {
    const bucket = this.#buckets.get(second)
    if (bucket === undefined) this.#buckets.set(second, socket)
    else if (bucket instanceof Set) bucket.add(socket)
    else this.#buckets.set(second, new Set([bucket, socket]))
    this.#bucketOf.set(socket, second)
    if (this.#timer === undefined) {
      this.#cursor = Math.min(second, this.#second())
      this.#schedule()
    }
  }

  #schedule (): void {
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined
      this.#tick()
      if (this.#buckets.size > 0 && this.#timer === undefined) this.#schedule()
    }, 1000)
  }

  #tick (): void {
    // a token is valid through its exp second: it has expired once the clock is past it
    const now = this.#second()
    for (; this.#cursor < now; this.#cursor++) {
      const bucket = this.#buckets.get(this.#cursor)
      if (bucket === undefined) continue
      this.#buckets.delete(this.#cursor)
      for (const socket of bucket instanceof Set ? bucket : [bucket]) {
        this.#bucketOf.delete(socket)
        this.#onExpired(socket)
      }
    }
  }
}

/**
 * Checks the scopes `socket` holds against `user`, a refreshed token's, and calls `commit` once
 * the answers are in (see Subscriptions.reauthorize); rejects when the app could not answer.
 */
export type Reauthorize = (socket: RealtimeSocket, user: RealtimeUser, commit: () => void) => Promise<void>

/**
 * The life of a token on a connected socket: `realtime:auth_expired` once its `exp` has passed,
 * the disconnect `auth.refreshGraceMs` later, and `realtime:auth` to refresh it in between. A
 * refresh takes effect once the scopes the socket holds have been checked against it.
 */
export class Auth {
  readonly #options: NormalizedOptions['auth']
  readonly #credentials: Credentials
  readonly #log: FastifyBaseLogger
  readonly #clock: RealtimeClock
  readonly #expiry: ExpiryWatch
  readonly #reauthorize: Reauthorize
  /** Disconnect timers of sockets told `realtime:auth_expired` (few at a time). */
  readonly #grace = new Map<RealtimeSocket, unknown>()
  /** Shared by every socket (`this` is the socket): no closure per connection. */
  readonly #onDisconnect: (this: RealtimeSocket) => void

  constructor (options: NormalizedOptions['auth'], credentials: Credentials, reauthorize: Reauthorize, log: FastifyBaseLogger, clock: RealtimeClock) {
    this.#options = options
    this.#credentials = credentials
    this.#reauthorize = reauthorize
    this.#log = log
    this.#clock = clock
    this.#expiry = new ExpiryWatch(clock, (socket) => { this.#expired(socket) })
    const auth = this
    this.#onDisconnect = function onDisconnect () {
      auth.#expiry.unwatch(this)
      auth.#clearGrace(this)
    }
  }

  /** Starts the expiry watch of a connected socket. */
  attach (socket: RealtimeSocket): void {
    const exp = socket.data.claims.exp
    if (typeof exp === 'number') this.#expiry.watch(socket, exp)
    socket.on('disconnect', this.#onDisconnect)
  }

  /** True once the socket's token has expired and no refresh has been accepted since. */
  expired (socket: RealtimeSocket): boolean {
    if (this.#grace.has(socket)) return true
    // past its exp second, told or not yet (the expiry watch ticks once a second)
    const exp = socket.data.claims.exp
    return typeof exp === 'number' && Math.floor(this.#clock.now() / 1000) > exp
  }

  /** Answers `realtime:auth { token }`: a fresh token for the same user keeps the socket. */
  refresh (socket: RealtimeSocket, message: unknown, ack: unknown): void {
    this.#refresh(socket, message).then(
      (answer) => { reply(ack, answer) },
      (err: unknown) => {
        this.#log.error({ err }, 'fastify-realtime: token refresh failed')
        reply(ack, ackError('UNAVAILABLE', 'The token could not be checked right now'))
      }
    )
  }

  /** Stops every timer (the plugin is closing). */
  close (): void {
    this.#expiry.stop()
    for (const timer of this.#grace.values()) this.#clock.clearTimeout(timer)
    this.#grace.clear()
  }

  async #refresh (socket: RealtimeSocket, message: unknown): Promise<unknown> {
    const token = (message as { token?: unknown } | null)?.token
    if (typeof token !== 'string' || token.length === 0) {
      return ackError('AUTH_INVALID', 'Send { token } with a fresh token')
    }
    let next: Authenticated
    try {
      const claims = await this.#credentials.claims(token)
      if (claims.sub !== socket.data.claims.sub) {
        return ackError('AUTH_INVALID', 'The token is for another subject')
      }
      next = await this.#credentials.lookup(claims, socket)
    } catch (err) {
      if (!(err instanceof ConnectError)) throw err
      if (err.data.code === 'USER_REJECTED') {
        // the user may no longer connect: the socket goes now, not when the old token runs out
        setImmediate(() => socket.disconnect(true))
        return ackError('USER_REJECTED', err.message)
      }
      return ackError(err.data.code === 'UNAVAILABLE' ? 'UNAVAILABLE' : 'AUTH_INVALID', err.message)
    }
    if (next.userId !== socket.data.userId) {
      return ackError('AUTH_INVALID', 'The token is for another user')
    }
    if (!socket.connected) return ackError('AUTH_INVALID', 'The socket is closed')
    try {
      await this.#reauthorize(socket, next.user, () => {
        if (!socket.connected) return
        socket.data.claims = next.claims
        socket.data.user = next.user
        this.#clearGrace(socket)
        if (typeof next.claims.exp === 'number') this.#expiry.watch(socket, next.claims.exp)
        else this.#expiry.unwatch(socket)
      })
    } catch (err) {
      if (err instanceof ConnectError) return ackError('UNAVAILABLE', err.message)
      throw err
    }
    if (!socket.connected) return ackError('AUTH_INVALID', 'The socket is closed')
    return { ok: true, exp: next.claims.exp ?? null }
  }

  #expired (socket: RealtimeSocket): void {
    if (!socket.connected) return
    socket.emit(EVENT_AUTH_EXPIRED)
    this.#grace.set(socket, this.#clock.setTimeout(() => {
      this.#grace.delete(socket)
      socket.disconnect(true)
    }, this.#options.refreshGraceMs))
  }

  #clearGrace (socket: RealtimeSocket): void {
    const timer = this.#grace.get(socket)
    if (timer === undefined) return
    this.#clock.clearTimeout(timer)
    this.#grace.delete(socket)
  }
}
