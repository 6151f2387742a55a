import type { FastifyBaseLogger } from 'fastify'
import type { Instruments } from './metrics.js'
import type { RealtimeHooks, RealtimeSocket } from './types.js'
import { cut, isPromiseLike } from './util.js'

type Middleware = (socket: RealtimeSocket, next: (err?: Error) => void) => void
type Ack = (answer: unknown) => void
type Warn = (details: object, message: string) => void

/** The code of a refused handshake or a negative ack, or null. */
function codeOf (value: unknown): string | null {
  const holder = value as { data?: { code?: unknown }, error?: { code?: unknown } } | null | undefined
  const code = holder?.data?.code ?? holder?.error?.code
  return typeof code === 'string' ? code : null
}

/** A scope as a client sent it, fit for a log line. */
function scopeOf (message: unknown): string {
  const scope = (message as { scope?: unknown } | null | undefined)?.scope
  return typeof scope === 'string' ? cut(scope) : `(${scope === null ? 'null' : typeof scope})`
}

/**
 * What happens to each connection, told to the three who want to know: the log (at `debug`,
 * with ids cut to 200 characters and never a token, a claim or a payload), the metrics, and the
 * app's `hooks`, called after the fact and never awaited. Every method is one call at its site.
 */
export class Lifecycle {
  readonly #hooks: RealtimeHooks
  readonly #log: FastifyBaseLogger
  readonly #warn: Warn
  readonly #metrics: Instruments
  /** Shared by every socket (`this` is the socket): no closure per connection. */
  readonly #onDisconnect: (this: RealtimeSocket, reason: string) => void

  constructor (hooks: RealtimeHooks, log: FastifyBaseLogger, warn: Warn, metrics: Instruments) {
    this.#hooks = hooks
    this.#log = log
    this.#warn = warn
    this.#metrics = metrics
    const lifecycle = this
    this.#onDisconnect = function onDisconnect (reason) {
      lifecycle.#log.debug({ userId: cut(this.data.userId), namespace: this.nsp.name, reason, durationMs: Date.now() - this.handshake.issued }, 'fastify-realtime: socket disconnected')
      lifecycle.#call('disconnect', this, reason)
    }
  }

  /** Wraps the handshake middleware: every outcome is counted, and a refusal logged with its code. */
  handshakes (middleware: Middleware): Middleware {
    return (socket, next) => {
      middleware(socket, (err) => {
        const code = err === undefined ? null : codeOf(err) ?? 'UNAVAILABLE'
        this.#metrics.handshake(code ?? 'ok')
        if (code !== null) this.#log.debug({ code, namespace: socket.nsp.name, address: socket.handshake.address }, 'fastify-realtime: handshake refused')
        next(err)
      })
    }
  }

  /** A socket is connected (and on `/`, joined to its granted scopes). */
  connected (socket: RealtimeSocket): void {
    this.#log.debug({
      userId: cut(socket.data.userId),
      namespace: socket.nsp.name,
      transport: socket.conn.transport.name,
      address: socket.handshake.address
    }, 'fastify-realtime: socket connected')
    socket.on('disconnect', this.#onDisconnect)
    this.#call('connect', socket)
  }

  /** The ack for a `realtime:subscribe`, seen on its way to the client. */
  subscribeAck (socket: RealtimeSocket, message: unknown, ack: unknown): Ack {
    return (answer) => {
      const code = codeOf(answer)
      this.#metrics.subscribe(code ?? 'ok')
      if (code === null) {
        this.#call('subscribe', socket, (answer as { scope: string }).scope)
      } else {
        this.#log.debug({ userId: cut(socket.data.userId), scope: scopeOf(message), code }, 'fastify-realtime: subscribe refused')
      }
      if (typeof ack === 'function') ack(answer)
    }
  }

  /** The ack for a `realtime:unsubscribe`, seen on its way to the client. */
  unsubscribeAck (socket: RealtimeSocket, ack: unknown): Ack {
    return (answer) => {
      if (codeOf(answer) === null) this.#call('unsubscribe', socket, (answer as { scope: string }).scope)
      if (typeof ack === 'function') ack(answer)
    }
  }

  /** Calls a hook without waiting for it; a throw or a rejection is logged, nothing else. */
  #call<K extends keyof RealtimeHooks> (name: K, ...args: Parameters<NonNullable<RealtimeHooks[K]>>): void {
    const hook = this.#hooks[name] as ((...a: unknown[]) => unknown) | undefined
    if (hook === undefined) return
    const failed = (err: unknown): void => { this.#warn({ err, hook: name }, `fastify-realtime: the ${name} hook failed`) }
    try {
      const result = hook(...args)
      if (isPromiseLike(result)) Promise.resolve(result).catch(failed)
    } catch (err) {
      failed(err)
    }
  }
}
