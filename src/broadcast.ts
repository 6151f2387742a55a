import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import {
  FST_REALTIME_INVALID_BROADCAST_OPTION,
  FST_REALTIME_INVALID_EVENT,
  FST_REALTIME_INVALID_PAYLOAD,
  FST_REALTIME_INVALID_SCOPE
} from './errors.js'
import { skip } from './catchup.js'
import { ExpiringMap } from './expiring-map.js'
import type { HistoryStore } from './history/store.js'
import type { NormalizedOptions } from './options.js'
import { RESERVED_PREFIX, SOCKET_IO_RESERVED, isScope, type Position } from './protocol.js'
import type { BroadcastFn, BroadcastMeta, BroadcastOptions, RealtimeServer } from './types.js'
import { isPromiseLike } from './util.js'

export interface BroadcastContext {
  io: RealtimeServer
  store: HistoryStore | null
  events: NormalizedOptions['events']
  /** Seconds an idempotency key is remembered (the history ttl). */
  ttl: number
  log: FastifyBaseLogger
  /** False before `ready` and from the start of `close`. */
  isOpen: () => boolean
}

function checkEvent (event: unknown): asserts event is string {
  if (typeof event !== 'string' || event.length === 0 || event.length > 128) {
    throw new FST_REALTIME_INVALID_EVENT(String(event).slice(0, 64), 'it must be a string of 1-128 characters')
  }
  if (event.startsWith(RESERVED_PREFIX) || SOCKET_IO_RESERVED.has(event)) {
    throw new FST_REALTIME_INVALID_EVENT(event, 'it is reserved')
  }
}

function checkOptions (opts: BroadcastOptions): void {
  if (typeof opts !== 'object') throw new FST_REALTIME_INVALID_BROADCAST_OPTION('(options)', 'must be an object')
  const { by, except, idempotencyKey, volatile } = opts
  if (by !== undefined && typeof by !== 'string' && !(typeof by === 'number' && Number.isFinite(by))) {
    throw new FST_REALTIME_INVALID_BROADCAST_OPTION('by', 'must be a string or a number')
  }
  if (except !== undefined && (typeof except !== 'string' || except.length === 0)) {
    throw new FST_REALTIME_INVALID_BROADCAST_OPTION('except', 'must be a socket id')
  }
  if (idempotencyKey !== undefined && (typeof idempotencyKey !== 'string' || idempotencyKey.length === 0 || idempotencyKey.length > 256)) {
    throw new FST_REALTIME_INVALID_BROADCAST_OPTION('idempotencyKey', 'must be a string of 1-256 characters')
  }
  if (volatile !== undefined && typeof volatile !== 'boolean') {
    throw new FST_REALTIME_INVALID_BROADCAST_OPTION('volatile', 'must be a boolean')
  }
}

const NO_OPTIONS: BroadcastOptions = Object.freeze({})

/** A store that says the entry itself is wrong (it cannot be encoded): the caller's error, not an outage. */
function refused (err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'FST_REALTIME_INVALID_PAYLOAD'
}

/**
 * `fastify.broadcast`: validate (programming errors reject), append to the log, emit
 * `(payload, meta)` to the scope. Transport trouble never rejects: it logs and resolves.
 */
export function createBroadcast (ctx: BroadcastContext): BroadcastFn {
  const { io, store, events, log } = ctx
  const ttlMs = ctx.ttl * 1000
  const seen = new ExpiringMap<string, Promise<BroadcastMeta | null>>()

  /** Whether the last append failed: the warning is logged once per outage, not per broadcast. */
  let storeFailing = false

  /**
   * Emits to the scope and returns the meta; `position` is null when the event is not in the
   * log. A socket left out by `except` is told the seq moved on (`realtime:skip`), so it does
   * not wait for, or fetch, an event it was meant not to get.
   */
  function emit (scope: string, event: string, payload: unknown, opts: BroadcastOptions, id: string, at: number, position: Position | null): BroadcastMeta {
    // one literal per shape, no spread: this runs for every broadcast
    const meta = (position === null
      ? { id, scope, at }
      : { id, scope, seq: position.seq, epoch: position.epoch, at }) as BroadcastMeta
    if (opts.by !== undefined) meta.by = opts.by
    const target = opts.except === undefined ? io.to(scope) : io.to(scope).except(opts.except)
    try {
      target.emit(event, payload, meta)
    } catch (err) {
      // the payload cannot be encoded (a BigInt, a cycle): nobody got it, so the seq it took in
      // the log is skipped for everyone rather than left as a hole
      if (position !== null) skip(io.to(scope), scope, position)
      throw new FST_REALTIME_INVALID_PAYLOAD(event, `it cannot be serialised (${(err as Error).message})`)
    }
    if (opts.except !== undefined && position !== null) {
      // on this node: straight to it, without a message to every other node through the adapter
      skip(io.of('/').sockets.get(opts.except) ?? io.to(opts.except), scope, position)
    }
    // encoded by now: `stored` is for the caller, not the wire
    meta.stored = position !== null
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
    if (!storeFailing) {
      storeFailing = true
      log.warn({ err, scope, event }, 'fastify-realtime: events are not being stored in history; delivering live only until the store is back')
    } else {
      log.debug({ err, scope, event }, 'fastify-realtime: event not stored in history')
    }
    return null
  }

  /** Appends, then emits. A store that answers synchronously (memory) costs no extra promise turn. */
  function deliver (scope: string, event: string, payload: unknown, opts: BroadcastOptions): Promise<BroadcastMeta> {
    const id = randomUUID()
    const at = Date.now()
    if (store === null || opts.volatile === true) return Promise.resolve(emit(scope, event, payload, opts, id, at, null))
    let appended: Position | Promise<Position>
    try {
      appended = store.append(scope, opts.by === undefined ? { id, event, payload, at } : { id, event, payload, at, by: opts.by })
    } catch (err) {
      if (refused(err)) return Promise.reject(err)
      return Promise.resolve(emit(scope, event, payload, opts, id, at, unstored(scope, event, err)))
    }
    if (!isPromiseLike(appended)) return Promise.resolve(emit(scope, event, payload, opts, id, at, storeFailing ? stored(appended) : appended))
    return Promise.resolve(appended).then(
      (position) => emit(scope, event, payload, opts, id, at, stored(position)),
      (err: unknown) => {
        if (refused(err)) throw err
        return emit(scope, event, payload, opts, id, at, unstored(scope, event, err))
      }
    )
  }

  function send (scope: string, event: string, payload: unknown, opts: BroadcastOptions): Promise<BroadcastMeta | null> {
    if (!isScope(scope)) return Promise.reject(new FST_REALTIME_INVALID_SCOPE(String(scope).slice(0, 200)))
    checkEvent(event)
    checkOptions(opts)
    const validator = events.get(event)
    if (validator !== undefined && !validator.Check(payload)) {
      const [first] = validator.Errors(payload)
      const where = first?.instancePath === '' || first === undefined ? '(root)' : first.instancePath
      return Promise.reject(new FST_REALTIME_INVALID_PAYLOAD(event, `${where} ${first?.message ?? 'is invalid'}`))
    }
    if (!ctx.isOpen()) {
      log.warn({ scope, event }, 'fastify-realtime: broadcast while the server is not ready or is closing; not sent')
      return Promise.resolve(null)
    }
    const key = opts.idempotencyKey
    if (key === undefined) return deliver(scope, event, payload, opts)
    const now = Date.now()
    seen.sweep(now)
    const earlier = seen.get(key, now)
    if (earlier !== undefined) return earlier
    const result = deliver(scope, event, payload, opts)
    seen.set(key, result, now + ttlMs)
    // a call that failed is not remembered: the same key may be tried again
    result.catch(() => { seen.delete(key) })
    return result
  }

  /** Never throws: every failure is a rejection, so a route can always `await` it. */
  function broadcast (scope: string, event: string, payload: unknown, opts?: BroadcastOptions | null): Promise<BroadcastMeta | null> {
    try {
      return send(scope, event, payload, opts ?? NO_OPTIONS)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  return broadcast as BroadcastFn
}
