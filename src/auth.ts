import type { FastifyBaseLogger } from 'fastify'
import type { ExtendedError } from 'socket.io'
import type { NormalizedOptions } from './options.js'
import { EVENT_AUTH_EXPIRED, ackError, userIdString, type ConnectErrorCode } from './protocol.js'
import type { RealtimeClaims, RealtimeSocket, RealtimeUser } from './types.js'
import { isPromiseLike, reply, withTimeout } from './util.js'

/** Turns a token into verified claims (a promise for a key fetched on demand), or throws the verifier's error. */
export type VerifyToken = (token: string) => RealtimeClaims | Promise<RealtimeClaims>

/** A refused handshake: Socket.IO sends `message` and `data` to the client's `connect_error`. */
export class ConnectError extends Error implements ExtendedError {
  readonly data: { code: ConnectErrorCode }
  constructor (code: ConnectErrorCode, message: string) {
    super(message)
    this.data = { code }
  }
}

// Names under which clients put tokens in URLs (compared lower-cased); such a token is refused,
// it is already in access logs.
const QUERY_TOKEN_NAMES = new Set(['token', 'access_token', 'accesstoken', 'jwt', 'auth', 'authorization', 'bearer', 'id_token'])
const JWT_SHAPE = /^(?:bearer\s+)?([A-Za-z0-9_-]{2,})\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/i

type Handshake = RealtimeSocket['handshake']

/** True when `value` is a JWT: three base64url parts, the first a JSON header naming an `alg`. */
function looksLikeJwt (value: string): boolean {
  const match = JWT_SHAPE.exec(value)
  if (match === null) return false
  try {
    const header: unknown = JSON.parse(Buffer.from(match[1]!, 'base64url').toString('utf8'))
    return header !== null && typeof header === 'object' && typeof (header as { alg?: unknown }).alg === 'string'
  } catch {
    return false
  }
}

function tokenInQuery (handshake: Handshake): boolean {
  const query = handshake.query as Record<string, unknown> | undefined
  for (const name in query) {
    if (QUERY_TOKEN_NAMES.has(name.toLowerCase())) return true
    const value = query[name]
    if (typeof value === 'string' ? isJwt(value) : Array.isArray(value) && value.some(isJwt)) return true
  }
  return false
}

/** A JWT has two dots; most query values (EIO=4, transport=websocket) are ruled out by that alone. */
function isJwt (value: unknown): boolean {
  return typeof value === 'string' && value.indexOf('.') !== value.lastIndexOf('.') && looksLikeJwt(value)
}

/** The token from `auth.token`, else from `Authorization: Bearer`; null when neither is there. */
function tokenOf (handshake: Handshake): string | null {
  const fromAuth = (handshake.auth as { token?: unknown } | undefined)?.token
  if (typeof fromAuth === 'string' && fromAuth.length > 0) return fromAuth
  const header = handshake.headers.authorization
  if (typeof header === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (match) return match[1]!
  }
  return null
}

/** Maps a verifier error (fast-jwt or @fastify/jwt) to the code the client sees. */
function verifyFailure (err: unknown): ConnectError {
  const code = (err as { code?: unknown } | null)?.code
  if (code === 'FAST_JWT_EXPIRED' || code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED') {
    return new ConnectError('AUTH_EXPIRED', 'The token has expired; get a new one and connect again')
  }
  if (code === 'FAST_JWT_KEY_FETCHING_ERROR') {
    return new ConnectError('UNAVAILABLE', 'The server could not check the token right now; try again')
  }
  return new ConnectError('AUTH_INVALID', 'The token is not valid')
}

export interface Authenticated {
  claims: RealtimeClaims
  user: RealtimeUser
  userId: string
}

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
  #timer: NodeJS.Timeout | undefined
  /** The next second not yet handled. */
  #cursor = 0

  constructor (onExpired: (socket: RealtimeSocket) => void) {
    this.#onExpired = onExpired
  }

  watch (socket: RealtimeSocket, exp: number): void {
    this.unwatch(socket)
    const second = Math.floor(exp)
    const now = Math.floor(Date.now() / 1000)
    if (second < now) {
      // already past: due at the next tick, like any other bucket
      this.#add(socket, now)
      return
    }
    this.#add(socket, second)
  }

  unwatch (socket: RealtimeSocket): void {
    const second = this.#bucketOf.get(socket)
    if (second === undefined) return
    this.#bucketOf.delete(socket)
    const bucket = this.#buckets.get(second)
    if (bucket === undefined) return
    if (bucket === socket) this.#buckets.delete(second)
    else if (bucket instanceof Set) {
      bucket.delete(socket)
      if (bucket.size === 0) this.#buckets.delete(second)
    }
    if (this.#buckets.size === 0) this.stop()
  }

  stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  #add (socket: RealtimeSocket, second: number): void {
    const bucket = this.#buckets.get(second)
    if (bucket === undefined) this.#buckets.set(second, socket)
    else if (bucket instanceof Set) bucket.add(socket)
    else this.#buckets.set(second, new Set([bucket, socket]))
    this.#bucketOf.set(socket, second)
    if (this.#timer === undefined) {
      this.#cursor = Math.min(second, Math.floor(Date.now() / 1000))
      this.#timer = setInterval(() => this.#tick(), 1000)
      this.#timer.unref()
    }
  }

  #tick (): void {
    // a token is valid through its exp second: it has expired once the clock is past it
    const now = Math.floor(Date.now() / 1000)
    for (; this.#cursor < now; this.#cursor++) {
      const bucket = this.#buckets.get(this.#cursor)
      if (bucket === undefined) continue
      this.#buckets.delete(this.#cursor)
      for (const socket of bucket instanceof Set ? bucket : [bucket]) {
        this.#bucketOf.delete(socket)
        this.#onExpired(socket)
      }
    }
    if (this.#buckets.size === 0) this.stop()
  }
}

/**
 * Handshake authentication and the life of a token on a connected socket.
 * Built once `ready` has run, so the verifier can be the app's own `fastify.jwt`.
 */
export class Auth {
  readonly #options: NormalizedOptions['auth']
  readonly #verify: VerifyToken
  readonly #log: FastifyBaseLogger
  readonly #expiry: ExpiryWatch
  /** Disconnect timers of sockets told `realtime:auth_expired` (few at a time). */
  readonly #grace = new Map<RealtimeSocket, NodeJS.Timeout>()
  /** Shared by every socket (`this` is the socket): no closure per connection. */
  readonly #onDisconnect: (this: RealtimeSocket) => void

  constructor (options: NormalizedOptions['auth'], verify: VerifyToken, log: FastifyBaseLogger) {
    this.#options = options
    this.#verify = verify
    this.#log = log
    this.#expiry = new ExpiryWatch((socket) => this.#expired(socket))
    const auth = this
    this.#onDisconnect = function onDisconnect () {
      auth.#clear(this)
    }
  }

  /**
   * Verifies the handshake and looks the user up; throws (or rejects with) a ConnectError to
   * refuse. Answers synchronously when the verifier and the lookup do, as they usually do: a
   * handshake then costs no promise.
   */
  authenticate (socket: RealtimeSocket): Authenticated | Promise<Authenticated> {
    if (tokenInQuery(socket.handshake)) {
      throw new ConnectError('AUTH_INVALID', 'Tokens in the query string are refused; send the token as auth.token')
    }
    const token = tokenOf(socket.handshake)
    if (token === null) {
      throw new ConnectError('AUTH_REQUIRED', 'A token is required: connect with auth: { token }')
    }
    const claims = this.#claims(token)
    return isPromiseLike(claims)
      ? Promise.resolve(claims).then((verified) => this.#lookup(verified, socket))
      : this.#lookup(claims, socket)
  }

  /** Starts the expiry watch of a connected socket. */
  attach (socket: RealtimeSocket): void {
    const exp = socket.data.claims.exp
    if (typeof exp === 'number') this.#expiry.watch(socket, exp)
    socket.on('disconnect', this.#onDisconnect)
  }

  /** Answers `realtime:auth { token }`: a fresh token for the same user keeps the socket. */
  refresh (socket: RealtimeSocket, message: unknown, ack: unknown): void {
    this.#refresh(socket, message).then(
      (answer) => reply(ack, answer),
      (err: unknown) => {
        this.#log.error({ err }, 'fastify-realtime: token refresh failed')
        reply(ack, ackError('UNAVAILABLE', 'The token could not be checked right now'))
      }
    )
  }

  /** Stops every timer (the plugin is closing). */
  close (): void {
    this.#expiry.stop()
    for (const timer of this.#grace.values()) clearTimeout(timer)
    this.#grace.clear()
  }

  /** The token's claims, checked; a promise only when the verifier gives one (a key fetched on demand). */
  #claims (token: string): RealtimeClaims | Promise<RealtimeClaims> {
    let claims: RealtimeClaims | Promise<RealtimeClaims>
    try {
      claims = this.#verify(token)
    } catch (err) {
      throw verifyFailure(err)
    }
    if (isPromiseLike(claims)) {
      return Promise.resolve(claims).then((verified) => this.#checked(verified), (err: unknown) => { throw verifyFailure(err) })
    }
    return this.#checked(claims)
  }

  #checked (claims: RealtimeClaims): RealtimeClaims {
    if (claims === null || typeof claims !== 'object') {
      throw new ConnectError('AUTH_INVALID', 'The token is not valid')
    }
    if (this.#options.requireExp && typeof claims.exp !== 'number') {
      throw new ConnectError('AUTH_INVALID', 'The token has no exp claim')
    }
    return claims
  }

  #lookup (claims: RealtimeClaims, socket: RealtimeSocket): Authenticated | Promise<Authenticated> {
    const user = withTimeout(() => this.#options.user(claims, socket), this.#options.timeoutMs, 'auth.user')
    if (!isPromiseLike(user)) return this.#accepted(claims, user)
    return Promise.resolve(user).then((found) => this.#accepted(claims, found), (err: unknown) => {
      this.#log.warn({ err }, 'fastify-realtime: user lookup failed')
      throw new ConnectError('UNAVAILABLE', 'The user could not be looked up right now; try again')
    })
  }

  #accepted (claims: RealtimeClaims, user: RealtimeUser | null | false | undefined): Authenticated {
    if (!user) throw new ConnectError('USER_REJECTED', 'This user may not connect')
    const userId = userIdString(user.id)
    if (userId === null) {
      this.#log.error({ userId: user.id }, 'fastify-realtime: auth.user returned a user whose id cannot name a user:<id> scope')
      throw new ConnectError('USER_REJECTED', 'This user may not connect')
    }
    return { claims, user, userId }
  }

  async #refresh (socket: RealtimeSocket, message: unknown): Promise<unknown> {
    const token = (message as { token?: unknown } | null)?.token
    if (typeof token !== 'string' || token.length === 0) {
      return ackError('AUTH_INVALID', 'Send { token } with a fresh token')
    }
    let next: Authenticated
    try {
      const claims = await this.#claims(token)
      if (claims.sub !== socket.data.claims.sub) {
        return ackError('AUTH_INVALID', 'The token is for another subject')
      }
      next = await this.#lookup(claims, socket)
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
    socket.data.claims = next.claims
    socket.data.user = next.user
    this.#clearGrace(socket)
    if (typeof next.claims.exp === 'number') this.#expiry.watch(socket, next.claims.exp)
    else this.#expiry.unwatch(socket)
    return { ok: true, exp: next.claims.exp ?? null }
  }

  #expired (socket: RealtimeSocket): void {
    if (!socket.connected) return
    socket.emit(EVENT_AUTH_EXPIRED)
    this.#grace.set(socket, setTimeout(() => {
      this.#grace.delete(socket)
      socket.disconnect(true)
    }, this.#options.refreshGraceMs))
  }

  #clearGrace (socket: RealtimeSocket): void {
    const timer = this.#grace.get(socket)
    if (timer === undefined) return
    clearTimeout(timer)
    this.#grace.delete(socket)
  }

  #clear (socket: RealtimeSocket): void {
    this.#expiry.unwatch(socket)
    this.#clearGrace(socket)
  }
}
