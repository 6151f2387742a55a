import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { skip } from './catchup.js'
import type { RealtimeClock } from './clock.js'
import {
  appendEvent,
  checkBroadcast,
  eventMeta,
  historyEntry,
  IdempotencyKeys,
  refused,
  repeatedMeta,
  unserialisable,
  type EventSchemas
} from './event.js'
import type { HistoryStore, OnceResult } from './history/store.js'
import type { Instruments } from './metrics.js'
import type { Position } from './protocol.js'
import type { BroadcastFn, BroadcastMeta, BroadcastOptions, RealtimeServer } from './types.js'
import { isPromiseLike, rateLimitedWarn } from './util.js'

// catchup.ts builds a replay's meta with it

export interface BroadcastContext {
  io: RealtimeServer
  store: HistoryStore | null
  events: EventSchemas
  /** Seconds an idempotency key is remembered (the history ttl). */
  ttl: number
  /** Idempotency keys remembered on this node at most (the oldest go first). */
  idempotencyKeys: number
  log: FastifyBaseLogger
  /** False before `ready` and from the start of `close`. */
  isOpen: () => boolean
  clock: RealtimeClock
  metrics: Pick<Instruments, 'now' | 'broadcast'>
}

/**
 * `fastify.broadcast`: validate (programming errors reject), append to the log, emit
 * `(payload, meta)` to the scope. Transport trouble never rejects: it logs and resolves.
 */
export function createBroadcast (ctx: BroadcastContext): BroadcastFn {
  const { io, store, events, log, clock, metrics } = ctx
  const warn = rateLimitedWarn(log, 10_000, clock.now)
  const ttlMs = ctx.ttl * 1000
  const seen = new IdempotencyKeys<BroadcastMeta | null>(ctx.idempotencyKeys, ttlMs)

  /** Whether the last append failed: the warning is logged once per outage, not per broadcast. */
  let storeFailing = false

  /**
   * Emits to the scope and returns the meta; `position` is null when the event is not in the
   * log. A socket left out by `except` is told the seq moved on (`realtime:skip`), so it does
   * not wait for, or fetch, an event it was meant not to get.
   */
  function emit (scope: string, event: string, payload: unknown, opts: BroadcastOptions, id: string, at: number, position: Position | null, started: number): BroadcastMeta {
    const meta = eventMeta(id, scope, position, at, opts.by) as BroadcastMeta
    const target = opts.except === undefined ? io.to(scope) : io.to(scope).except(opts.except)
    try {
      target.emit(event, payload, meta)
    } catch (err) {
      // the payload cannot be encoded (a BigInt, a cycle): nobody got it, so the seq it took in
      // the log is skipped for everyone rather than left as a hole
      if (position !== null) skip(io.to(scope), scope, position)
      throw unserialisable(event, err)
    }
    if (opts.except !== undefined && position !== null) {
      // on this node: straight to it, without a message to every other node through the adapter
      skip(io.of('/').sockets.get(opts.except) ?? io.to(opts.except), scope, position)
    }
    // encoded by now: `stored` is for the caller, not the wire
    meta.stored = position !== null
    metrics.broadcast(scope, opts.except, meta.stored, started)
    return meta
  }

  function stored (position: Position): Position {
    if (storeFailing) {
      storeFailing = false
      log.info('fastify-realtime: history store reachable again; events are stored')
    }
    return position
  }

  function unstored (scope: string, event: string, err: unknown): null {
    // delivered live without a place in the log: the store owes the scope a new epoch
    store?.lost?.(scope)
    if (!storeFailing) {
      storeFailing = true
      log.warn({ err, scope, event }, 'fastify-realtime: events are not being stored in history; delivering live only until the store is back')
    } else {
      log.debug({ err, scope, event }, 'fastify-realtime: event not stored in history')
    }
    return null
  }

  /**
   * Appends (once per idempotency key, when the store keeps keys itself), then emits. A store
   * that answers synchronously (memory) costs no extra promise turn.
   */
  function deliver (scope: string, event: string, payload: unknown, opts: BroadcastOptions): Promise<BroadcastMeta> {
    const id = randomUUID()
    const at = clock.now()
    const started = metrics.now()
    if (store === null || opts.volatile === true) return Promise.resolve(emit(scope, event, payload, opts, id, at, null, started))
    let appended: OnceResult | Promise<OnceResult>
    try {
      appended = appendEvent(store, scope, historyEntry(id, event, payload, at, opts.by), opts.idempotencyKey)
    } catch (err) {
      if (refused(err)) return Promise.reject(err)
      return Promise.resolve(emit(scope, event, payload, opts, id, at, unstored(scope, event, err), started))
    }
    if (!isPromiseLike(appended)) {
      return Promise.resolve(appended.first === undefined
        ? emit(scope, event, payload, opts, id, at, storeFailing ? stored(appended) : appended, started)
        : repeatedMeta(scope, appended as Required<OnceResult>))
    }
    return Promise.resolve(appended).then(
      (position) => position.first === undefined
        ? emit(scope, event, payload, opts, id, at, stored(position), started)
        : repeatedMeta(scope, position as Required<OnceResult>),
      (err: unknown) => {
        if (refused(err)) throw err
        return emit(scope, event, payload, opts, id, at, unstored(scope, event, err), started)
      }
    )
  }

  function send (scope: string, event: string, payload: unknown, options: BroadcastOptions | null | undefined): Promise<BroadcastMeta | null> {
    const opts = checkBroadcast(scope, event, payload, options, events)
    if (!ctx.isOpen()) {
      warn({ scope, event }, 'fastify-realtime: broadcast while the server is not ready or is closing; not sent')
      return Promise.resolve(null)
    }
    const key = opts.idempotencyKey
    if (key === undefined) return deliver(scope, event, payload, opts)
    return seen.once(scope, key, clock.now(), () => deliver(scope, event, payload, opts))
  }

  /** Never throws: every failure is a rejection, so a route can always `await` it. */
  function broadcast (scope: string, event: string, payload: unknown, opts?: BroadcastOptions | null): Promise<BroadcastMeta | null> {
    try {
      return send(scope, event, payload, opts)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  return broadcast as BroadcastFn
}
