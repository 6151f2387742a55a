import type { EventMeta, ResyncReason } from '../protocol.js'
import { RealtimeClientError, messageOf } from './errors.js'

/**
 * - `connecting`: the first connection is being made.
 * - `connected`: the server has authenticated the socket and sent `realtime:ready`.
 * - `reconnecting`: the connection was lost or refused for a while; the client tries again.
 * - `disconnected`: closed, or refused for good (see `onError`).
 */
export type ClientState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected'

/**
 * Why the app must refetch a scope: the server's reasons (`gap`, `epoch`, `unavailable`), or why
 * the client no longer follows it: `forbidden` when the server refused to restore a subscription,
 * `revoked` when the server took the socket out of the scope because a refreshed token (or the
 * user looked up again) is no longer granted it. For those two, stop showing the scope: a
 * refetch would be refused too.
 */
export type ClientResyncReason = ResyncReason | 'forbidden' | 'revoked'

export interface ResyncNotice {
  scope: string
  reason: ClientResyncReason
}

export type EventHandler = (payload: any, meta: EventMeta) => unknown
type Handler<T> = (value: T) => unknown

function isThenable (value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function'
}

function added<T> (handlers: Set<T>, handler: T): () => void {
  handlers.add(handler)
  return () => { handlers.delete(handler) }
}

/**
 * The app's handlers, and the one way to call them: a handler that throws (or rejects) is
 * reported through `onError`, never passed up into the socket or the client's own work.
 */
export class Listeners {
  readonly #events = new Map<string, Set<EventHandler>>()
  readonly #resync = new Set<Handler<ResyncNotice>>()
  readonly #error = new Set<Handler<RealtimeClientError>>()
  readonly #state = new Set<Handler<ClientState>>()

  on (event: string, handler: EventHandler): void {
    let handlers = this.#events.get(event)
    if (handlers === undefined) this.#events.set(event, handlers = new Set())
    handlers.add(handler)
  }

  off (event: string, handler: EventHandler): void {
    this.#events.get(event)?.delete(handler)
  }

  onResync (handler: Handler<ResyncNotice>): () => void {
    return added(this.#resync, handler)
  }

  onError (handler: Handler<RealtimeClientError>): () => void {
    return added(this.#error, handler)
  }

  onState (handler: Handler<ClientState>): () => void {
    return added(this.#state, handler)
  }

  /** Hands an event to its handlers. */
  event (event: string, payload: unknown, meta: EventMeta): void {
    const handlers = this.#events.get(event)
    if (handlers === undefined) return
    // the hot path: no promise or closure per handler and event unless a handler returns a promise
    for (const handler of [...handlers]) {
      try {
        const result = handler(payload, meta)
        if (isThenable(result)) this.#settled(result, `on('${event}')`, meta?.scope)
      } catch (err) {
        this.#failed(`on('${event}')`, meta?.scope, err)
      }
    }
  }

  /** Calls one of the app's handlers; `where` names it in the report should it throw. */
  call<T> (where: string, scope: string | undefined, handler: Handler<T>, value: T): void {
    this.#call(where, scope, handler, value)
  }

  resync (notice: ResyncNotice): void {
    for (const handler of [...this.#resync]) this.#call('onResync', notice.scope, handler, { ...notice })
  }

  state (state: ClientState): void {
    for (const handler of [...this.#state]) this.#call('onState', undefined, handler, state)
  }

  /** Tells every onError handler; one that throws is not told again of its own throw (that would never end). */
  error (error: RealtimeClientError): void {
    for (const handler of [...this.#error]) this.#tell(handler, error)
  }

  // #call, #settled and #tell never reject: they are not awaited

  async #call<T> (where: string, scope: string | undefined, handler: Handler<T>, value: T): Promise<void> {
    try {
      await handler(value)
    } catch (err) {
      this.#failed(where, scope, err)
    }
  }

  async #settled (result: PromiseLike<unknown>, where: string, scope: string | undefined): Promise<void> {
    try {
      await result
    } catch (err) {
      this.#failed(where, scope, err)
    }
  }

  async #tell (handler: Handler<RealtimeClientError>, error: RealtimeClientError): Promise<void> {
    try {
      await handler(error)
    } catch {
      // not reported: an onError handler would be told of its own throw, again and again
    }
  }

  #failed (where: string, scope: string | undefined, err: unknown): void {
    const error = new RealtimeClientError('HANDLER_FAILED', `A ${where} handler failed: ${messageOf(err)}`, scope === undefined ? { cause: err } : { scope, cause: err })
    if (this.#error.size > 0) this.error(error)
    else console.error(error)
  }
}
