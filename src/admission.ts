import type { IncomingMessage } from 'node:http'
import type { ServerOptions } from 'socket.io'
import { transports, type EngineConnection } from './internals.js'
import type { RealtimeServer } from './types.js'

type AllowRequest = NonNullable<ServerOptions['allowRequest']>
type OriginAnswer = (err: Error | null, allowed?: unknown) => void

/** Whether `allowed` (a `cors.origin` value, or a callback's answer) lets `origin` in, as the `cors` package reads it. */
function matches (allowed: unknown, origin: string): boolean {
  if (Array.isArray(allowed)) return allowed.some((one) => matches(one, origin))
  if (typeof allowed === 'string') return allowed === '*' || allowed === origin
  if (allowed instanceof RegExp) {
    allowed.lastIndex = 0
    return allowed.test(origin)
  }
  return allowed === true
}

/**
 * Asks `ask` (a callback origin, or a `cors` options delegate) and calls `done` once with its
 * answer: an error or a throw refuses. (One that never answers holds the request in the `cors`
 * middleware already, which engine.io runs first.)
 */
function askOnce (ask: (answer: OriginAnswer) => void, done: (allowed: unknown) => void): void {
  let answered = false
  const answer = (allowed: unknown): void => {
    if (answered) return
    answered = true
    done(allowed)
  }
  try {
    ask((err, allowed) => { answer(err === null || err === undefined ? allowed : false) })
  } catch {
    answer(false)
  }
}

type OriginCheck = (origin: string, req: IncomingMessage, done: (allowed: boolean) => void) => void

/**
 * How a browser handshake's origin is checked when `io.cors` names origins (a string, a RegExp, a
 * list, or a callback asked for each handshake, like the `cors` package asks it for HTTP); null:
 * any origin (no `cors`, `origin` unset, `true` or `'*'`).
 */
function originCheck (io: Partial<ServerOptions>): OriginCheck | null {
  const cors = io.cors as unknown
  const decide = (allowed: unknown, origin: string, done: (allowed: boolean) => void): void => {
    if (typeof allowed !== 'function') return done(matches(allowed, origin))
    askOnce((answer) => { allowed(origin, answer) }, (answer) => { done(matches(answer, origin)) })
  }
  if (typeof cors === 'function') {
    // a delegate answers with the options for this request
    return (origin, req, done) => {
      askOnce((answer) => { cors(req, answer) }, (options) => {
        decide((options as { origin?: unknown } | null | undefined)?.origin ?? '*', origin, done)
      })
    }
  }
  const allowed = (cors as { origin?: unknown } | undefined)?.origin
  if (cors === undefined || cors === null || allowed === undefined || allowed === true || allowed === '*') return null
  return (origin, _req, done) => { decide(allowed, origin, done) }
}

/**
 * Engine.io's `allowRequest`: refuses at the HTTP level, before any Socket.IO work, while the
 * server is closing (clients go on reconnecting, to another node), when too many handshakes are
 * pending from one address, or for a browser origin that `io.cors` does not allow (CORS headers
 * alone do not stop a WebSocket; a callback origin is asked here too). Then
 * the app's own `io.allowRequest`, if any. Before `ready`, handshakes get through to the
 * middleware, which refuses them with UNAVAILABLE.
 */
export function admission (io: Partial<ServerOptions>, guard: HandshakeGuard, closing: () => boolean): AllowRequest {
  const check = originCheck(io)
  const userAllowRequest = io.allowRequest
  return (req: IncomingMessage, callback) => {
    // engine.io's callback takes a reason string where Node callbacks take an error
    /* eslint-disable n/no-callback-literal */
    if (closing()) return callback('Server is closing', false)
    if (!guard.admits(req.socket.remoteAddress)) return callback('Too many pending handshakes from this address', false)
    const allow = (): void => {
      if (userAllowRequest !== undefined) userAllowRequest(req, callback)
      else callback(null, true)
    }
    const origin = req.headers.origin
    if (check === null || origin === undefined) return allow()
    check(origin, req, (allowed) => {
      if (allowed) allow()
      else callback('Origin not allowed', false)
    })
    /* eslint-enable n/no-callback-literal */
  }
}

/**
 * Transports per client address that are open but not yet authenticated. A flood of idle or
 * slow handshakes from one address is refused at the HTTP level once `max` are pending; each
 * one is released when a namespace handshake on it succeeds or the transport closes (Socket.IO
 * closes one that has not connected a namespace within `connectTimeout`). A refused CONNECT
 * keeps its place.
 */
export class HandshakeGuard {
  readonly #max: number | false
  readonly #pending = new Map<string, number>()
  readonly #open = new WeakSet<object>()
  /** Namespaces with a handshake running, per transport (nearly always just `/`): a second CONNECT meanwhile is refused. */
  readonly #running = new WeakMap<object, string | Set<string>>()

  /** One listener for every transport (`this` is the transport): no closure per connection. */
  readonly #onClose: (this: EngineConnection) => void

  constructor (max: number | false) {
    this.#max = max
    const guard = this
    this.#onClose = function onClose () { guard.authenticated(this) }
  }

  /** False when `address` is at its cap (for `allowRequest`). */
  admits (address: string | undefined): boolean {
    return this.#max === false || address === undefined || (this.#pending.get(address) ?? 0) < this.#max
  }

  /** Counts a new transport (engine.io `connection`). */
  opened (conn: EngineConnection): void {
    if (this.#max === false) return
    const address = conn.remoteAddress
    this.#pending.set(address, (this.#pending.get(address) ?? 0) + 1)
    this.#open.add(conn)
    conn.on('close', this.#onClose)
  }

  /** Releases the transport's place; later calls for it do nothing. */
  authenticated (conn: { remoteAddress: string }): void {
    if (!this.#open.has(conn)) return
    this.#open.delete(conn)
    const address = conn.remoteAddress
    const left = (this.#pending.get(address) ?? 1) - 1
    if (left <= 0) this.#pending.delete(address)
    else this.#pending.set(address, left)
  }

  /** Marks a namespace handshake as running on `conn`; false when one already is. */
  begin (conn: object, namespace: string): boolean {
    const running = this.#running.get(conn)
    if (running === undefined) {
      this.#running.set(conn, namespace)
      return true
    }
    if (running === namespace || (typeof running !== 'string' && running.has(namespace))) return false
    if (typeof running === 'string') this.#running.set(conn, new Set([running, namespace]))
    else running.add(namespace)
    return true
  }

  end (conn: object, namespace: string): void {
    const running = this.#running.get(conn)
    if (running === undefined) return
    if (running === namespace) {
      this.#running.delete(conn)
      return
    }
    if (typeof running === 'string') return
    running.delete(namespace)
    if (running.size === 0) this.#running.delete(conn)
  }
}

/**
 * Closes every open transport (not a Socket.IO disconnect): clients see a transport close and
 * reconnect, to another node, with `since`. Returns how many were closed.
 */
export function closeTransports (io: RealtimeServer): number {
  let closed = 0
  for (const conn of transports(io)) {
    conn.close()
    closed++
  }
  return closed
}
