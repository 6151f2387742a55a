import type { FastifyBaseLogger } from 'fastify'
import type { ExtendedError } from 'socket.io'
import type { NormalizedOptions } from './options.js'
import { EVENT_AUTH, EVENT_AUTH_EXPIRED, ackError, userIdString, type ConnectErrorCode } from './protocol.js'
import type { RealtimeClaims, RealtimeSocket, RealtimeUser } from './types.js'
import { MAX_TIMER_MS, reply, withTimeout } from './util.js'

/** Turns a token into verified claims, or throws the verifier's error. */
export type VerifyToken = (token: string) => Promise<RealtimeClaims>

/** A refused handshake: Socket.IO sends `message` and `data` to the client's `connect_error`. */
export class ConnectError extends Error implements ExtendedError {
  readonly data: { code: ConnectErrorCode }
  constructor (code: ConnectErrorCode, message: string) {
    super(message)
    this.data = { code }
  }
}

// Names under which clients put tokens in URLs; such a token is refused, it is already in access logs.
const QUERY_TOKEN_NAMES = ['token', 'access_token', 'accessToken', 'jwt', 'auth', 'authorization', 'bearer']
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/

type Handshake = RealtimeSocket['handshake']

function tokenInQuery (handshake: Handshake): boolean {
  for (const [name, value] of Object.entries(handshake.query ?? {})) {
    if (QUERY_TOKEN_NAMES.includes(name)) return true
    const values = Array.isArray(value) ? value : [value]
    if (values.some((v) => typeof v === 'string' && JWT_SHAPE.test(v))) return true
  }
  return false
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

interface SocketTimers {
  expire?: NodeJS.Timeout
  grace?: NodeJS.Timeout
}

export interface Authenticated {
  claims: RealtimeClaims
  user: RealtimeUser
  userId: string
}

/**
 * Handshake authentication and the life of a token on a connected socket.
 * Built once `ready` has run, so the verifier can be the app's own `fastify.jwt`.
 */
export class Auth {
  readonly #options: NormalizedOptions['auth']
  readonly #verify: VerifyToken
  readonly #log: FastifyBaseLogger
  readonly #timers = new WeakMap<RealtimeSocket, SocketTimers>()

  constructor (options: NormalizedOptions['auth'], verify: VerifyToken, log: FastifyBaseLogger) {
    this.#options = options
    this.#verify = verify
    this.#log = log
  }

  /** Verifies the handshake and looks the user up; throws a ConnectError to refuse. */
  async authenticate (socket: RealtimeSocket): Promise<Authenticated> {
    if (tokenInQuery(socket.handshake)) {
      throw new ConnectError('AUTH_INVALID', 'Tokens in the query string are refused; send the token as auth.token')
    }
    const token = tokenOf(socket.handshake)
    if (token === null) {
      throw new ConnectError('AUTH_REQUIRED', 'A token is required: connect with auth: { token }')
    }
    const claims = await this.#claims(token)
    return await this.#lookup(claims, socket)
  }

  /** Starts the expiry watch and answers `realtime:auth` refreshes. */
  attach (socket: RealtimeSocket): void {
    this.#schedule(socket, socket.data.claims.exp)
    socket.on(EVENT_AUTH, (message: unknown, ack: unknown) => {
      this.#refresh(socket, message).then(
        (answer) => reply(ack, answer),
        (err: unknown) => {
          this.#log.error({ err }, 'fastify-realtime: token refresh failed')
          reply(ack, ackError('UNAVAILABLE', 'The token could not be checked right now'))
        }
      )
    })
    socket.once('disconnect', () => this.#clear(socket))
  }

  async #claims (token: string): Promise<RealtimeClaims> {
    let claims: RealtimeClaims
    try {
      claims = await this.#verify(token)
    } catch (err) {
      throw verifyFailure(err)
    }
    if (claims === null || typeof claims !== 'object') {
      throw new ConnectError('AUTH_INVALID', 'The token is not valid')
    }
    if (this.#options.requireExp && typeof claims.exp !== 'number') {
      throw new ConnectError('AUTH_INVALID', 'The token has no exp claim')
    }
    return claims
  }

  async #lookup (claims: RealtimeClaims, socket: RealtimeSocket): Promise<Authenticated> {
    let user: RealtimeUser | null | false | undefined
    try {
      user = await withTimeout(() => this.#options.user(claims, socket), this.#options.timeoutMs, 'auth.user')
    } catch (err) {
      this.#log.warn({ err }, 'fastify-realtime: user lookup failed')
      throw new ConnectError('UNAVAILABLE', 'The user could not be looked up right now; try again')
    }
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
      const code = err.data.code === 'USER_REJECTED' || err.data.code === 'UNAVAILABLE' ? err.data.code : 'AUTH_INVALID'
      return ackError(code, err.message)
    }
    if (next.userId !== socket.data.userId) {
      return ackError('AUTH_INVALID', 'The token is for another user')
    }
    if (!socket.connected) return ackError('AUTH_INVALID', 'The socket is closed')
    socket.data.claims = next.claims
    socket.data.user = next.user
    this.#schedule(socket, next.claims.exp)
    return { ok: true, exp: next.claims.exp ?? null }
  }

  #schedule (socket: RealtimeSocket, exp: number | undefined): void {
    this.#clear(socket)
    if (typeof exp !== 'number') return
    const timers: SocketTimers = {}
    this.#timers.set(socket, timers)
    const fire = (): void => {
      const left = exp * 1000 - Date.now()
      if (left > 0) {
        timers.expire = setTimeout(fire, Math.min(left, MAX_TIMER_MS))
        return
      }
      timers.expire = undefined
      socket.emit(EVENT_AUTH_EXPIRED)
      timers.grace = setTimeout(() => socket.disconnect(true), this.#options.refreshGraceMs)
    }
    timers.expire = setTimeout(fire, Math.min(Math.max(exp * 1000 - Date.now(), 0), MAX_TIMER_MS))
  }

  #clear (socket: RealtimeSocket): void {
    const timers = this.#timers.get(socket)
    if (timers === undefined) return
    clearTimeout(timers.expire)
    clearTimeout(timers.grace)
    this.#timers.delete(socket)
  }
}
