import type { FastifyBaseLogger } from 'fastify'
import type { ExtendedError } from 'socket.io'
import type { NormalizedOptions } from './options.js'
import { userIdString, type ConnectErrorCode } from './protocol.js'
import type { RealtimeClaims, RealtimeSocket, RealtimeUser } from './types.js'
import { cut, rateLimitedWarn, withTimeout } from './util.js'

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

/** Who a socket is: the verified claims, the app's user, and its id as it appears in `user:<id>`. */
export interface Authenticated {
  claims: RealtimeClaims
  user: RealtimeUser
  userId: string
}

type Handshake = RealtimeSocket['handshake']

// Names under which clients put tokens in URLs (compared lower-cased); such a token is refused,
// it is already in access logs.
const QUERY_TOKEN_NAMES = new Set(['token', 'access_token', 'accesstoken', 'jwt', 'auth', 'authorization', 'bearer', 'id_token'])
const JWT_SHAPE = /^(?:bearer\s+)?([A-Za-z0-9_-]{2,})\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/i

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

/** A JWT has two dots; most query values (EIO=4, transport=websocket) are ruled out by that alone. */
function isJwt (value: unknown): boolean {
  return typeof value === 'string' && value.indexOf('.') !== value.lastIndexOf('.') && looksLikeJwt(value)
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

/**
 * The token of a handshake: `auth.token`, else `Authorization: Bearer`. Throws a ConnectError
 * when there is none, or when a token is in the query string (it is already in access logs).
 */
export function handshakeToken (handshake: Handshake): string {
  if (tokenInQuery(handshake)) {
    throw new ConnectError('AUTH_INVALID', 'Tokens in the query string are refused; send the token as auth.token')
  }
  const fromAuth = (handshake.auth as { token?: unknown } | undefined)?.token
  if (typeof fromAuth === 'string' && fromAuth.length > 0) return fromAuth
  const header = handshake.headers.authorization
  if (typeof header === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header)
    if (match) return match[1]!
  }
  throw new ConnectError('AUTH_REQUIRED', 'A token is required: connect with auth: { token }')
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

/**
 * Token to claims to user, the same for a handshake and for a refresh on a live socket. Every
 * refusal is a ConnectError with the code the client sees.
 */
export class Credentials {
  readonly #options: NormalizedOptions['auth']
  readonly #verify: VerifyToken
  readonly #log: FastifyBaseLogger
  readonly #warn: (details: object, message: string) => void

  constructor (options: NormalizedOptions['auth'], verify: VerifyToken, log: FastifyBaseLogger, now: () => number = Date.now) {
    this.#options = options
    this.#verify = verify
    this.#log = log
    this.#warn = rateLimitedWarn(log, 10_000, now)
  }

  /** Verifies `token` and looks its user up. */
  async check (token: string, socket: RealtimeSocket): Promise<Authenticated> {
    return await this.lookup(await this.claims(token), socket)
  }

  /** The token's claims, verified. */
  async claims (token: string): Promise<RealtimeClaims> {
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

  /** The app's user for `claims` (`auth.user`), within `auth.timeoutMs`. */
  async lookup (claims: RealtimeClaims, socket: RealtimeSocket): Promise<Authenticated> {
    let user: RealtimeUser | null | false | undefined
    try {
      user = await withTimeout(() => this.#options.user(claims, socket), this.#options.timeoutMs, 'auth.user')
    } catch (err) {
      this.#warn({ err }, 'fastify-realtime: user lookup failed')
      throw new ConnectError('UNAVAILABLE', 'The user could not be looked up right now; try again')
    }
    if (!user) throw new ConnectError('USER_REJECTED', 'This user may not connect')
    const userId = userIdString(user.id)
    if (userId === null) {
      this.#log.error({ userId: cut(user.id) }, 'fastify-realtime: auth.user returned a user whose id cannot name a user:<id> scope')
      throw new ConnectError('USER_REJECTED', 'This user may not connect')
    }
    return { claims, user, userId }
  }
}
