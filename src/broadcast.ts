import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import {
  FST_REALTIME_INVALID_BROADCAST_OPTION,
  FST_REALTIME_INVALID_EVENT,
  FST_REALTIME_INVALID_PAYLOAD,
  FST_REALTIME_INVALID_SCOPE
} from './errors.js'
import { skip } from './catchup.js'
import type { RealtimeClock } from './clock.js'
import { ExpiringMap } from './expiring-map.js'
import type { HistoryEntry, HistoryStore, OnceResult, StoredEvent } from './history/store.js'
import type { Instruments } from './metrics.js'
import type { NormalizedOptions } from './options.js'
import { RESERVED_PREFIX, SOCKET_IO_RESERVED, isScope, type Position } from './protocol.js'
import type { BroadcastFn, BroadcastMeta, BroadcastOptions, EventActor, EventMeta, RealtimeServer } from './types.js'
import { cut, isPromiseLike, rateLimitedWarn } from './util.js'

export interface BroadcastContext {
  io: RealtimeServer
  store: HistoryStore | null
  events: NormalizedOptions['events']
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
 * The meta every delivered event carries, built here and nowhere else: `{ id, scope, seq?,
 * epoch?, at, by? }` in this order (a literal per shape, no spread: it runs for every broadcast).
 */
function eventMeta (id: string, scope: string, position: Position | null, at: number, by: BroadcastOptions['by']): EventMeta {
  const meta: EventMeta = position === null
    ? { id, scope, at }
    : { id, scope, seq: position.seq, epoch: position.epoch, at }
  if (by !== undefined) meta.by = by
  return meta
}

/** The meta of an event replayed from the log. */
export function replayMeta (scope: string, epoch: string, stored: StoredEvent): EventMeta {
  const meta = eventMeta(stored.id, scope, { seq: stored.seq, epoch }, stored.at, stored.by)
  meta.replayed = true
  return meta
}

function checkEvent (event: unknown): asserts event is string {
  if (typeof event !== 'string' || event.length === 0 || event.length > 128) {
    throw new FST_REALTIME_INVALID_EVENT(String(event).slice(0, 64), 'it must be a string of 1-128 characters')
  }
  if (event.startsWith(RESERVED_PREFIX) || SOCKET_IO_RESERVED.has(event)) {
    throw new FST_REALTIME_INVALID_EVENT(event, 'it is reserved')
  }
}

/** Bytes `by` may take as JSON. */
const MAX_BY_BYTES = 1024

/**
 * `opts.by` as it is sent and stored: a string or a finite number as given, a plain object as a
 * copy of its JSON (so a later change to the caller's object reaches neither the wire nor the
 * log, and a replay carries what the live event did). At most MAX_BY_BYTES as JSON.
 */
function checkBy (by: unknown): EventActor {
  if (typeof by === 'number') {
    if (Number.isFinite(by)) return by
  } else if (typeof by === 'string') {
    // a UTF-16 unit takes at most 6 bytes as JSON (a \u escape): short ids need no measuring
    if (by.length <= (MAX_BY_BYTES - 2) / 6 || Buffer.byteLength(JSON.stringify(by)) <= MAX_BY_BYTES) return by
    throw new FST_REALTIME_INVALID_BROADCAST_OPTION('by', `must be at most ${MAX_BY_BYTES} bytes as JSON`)
  } else if (by !== null && typeof by === 'object' && !Array.isArray(by)) {
    const proto = Object.getPrototypeOf(by) as unknown
    if (proto === Object.prototype || proto === null) {
      let json: string
      try {
        json = JSON.stringify(by)
      } catch (err) {
        throw new FST_REALTIME_INVALID_BROADCAST_OPTION('by', `cannot be serialised (${(err as Error).message})`)
      }
      if (Buffer.byteLength(json) > MAX_BY_BYTES) throw new FST_REALTIME_INVALID_BROADCAST_OPTION('by', `must be at most ${MAX_BY_BYTES} bytes as JSON`)
      return JSON.parse(json) as EventActor
    }
  }
  throw new FST_REALTIME_INVALID_BROADCAST_OPTION('by', 'must be a string, a number or a plain JSON object')
}

/** Checks the options and returns them with `by` as it is sent and stored. */
function checkOptions (opts: BroadcastOptions): BroadcastOptions {
  if (typeof opts !== 'object') throw new FST_REALTIME_INVALID_BROADCAST_OPTION('(options)', 'must be an object')
  const { by, except, idempotencyKey, volatile } = opts
  const actor = by === undefined ? undefined : checkBy(by)
  if (except !== undefined && (typeof except !== 'string' || except.length === 0)) {
    throw new FST_REALTIME_INVALID_BROADCAST_OPTION('except', 'must be a socket id')
  }
  if (idempotencyKey !== undefined && (typeof idempotencyKey !== 'string' || idempotencyKey.length === 0 || idempotencyKey.length > 256)) {
    throw new FST_REALTIME_INVALID_BROADCAST_OPTION('idempotencyKey', 'must be a string of 1-256 characters')
  }
  if (volatile !== undefined && typeof volatile !== 'boolean') {
    throw new FST_REALTIME_INVALID_BROADCAST_OPTION('volatile', 'must be a boolean')
  }
  return actor === by ? opts : { ...opts, by: actor }
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
  const { io, store, events, log, clock, metrics } = ctx
  const warn = rateLimitedWarn(log, 10_000, clock.now)
  const ttlMs = ctx.ttl * 1000
  /**
   * Idempotency keys used on this node, by `<scope> <key>` (a scope has no space), with the call
   * they were used for: a repeat gets that call's answer. Bounded in time (the ttl) and count.
   * With a store that keeps keys itself (`appendOnce`), this only spares it the repeats from here.
   */
  const seen = new ExpiringMap<string, Promise<BroadcastMeta | null>>(ctx.idempotencyKeys)

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
      throw new FST_REALTIME_INVALID_PAYLOAD(event, `it cannot be serialised (${(err as Error).message})`)
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
    if (!storeFailing) {
      storeFailing = true
      log.warn({ err, scope, event }, 'fastify-realtime: events are not being stored in history; delivering live only until the store is back')
    } else {
      log.debug({ err, scope, event }, 'fastify-realtime: event not stored in history')
    }
    return null
  }

  /** The answer to a repeated idempotency key that the store recognised: the first call's meta; nothing is sent. */
  function repeated (scope: string, { seq, epoch, first }: Required<OnceResult>): BroadcastMeta {
    const meta = eventMeta(first.id, scope, { seq, epoch }, first.at, first.by) as BroadcastMeta
    meta.stored = true
    return meta
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
    const entry: HistoryEntry = opts.by === undefined ? { id, event, payload, at } : { id, event, payload, at, by: opts.by }
    const key = opts.idempotencyKey
    let appended: OnceResult | Promise<OnceResult>
    try {
      appended = key !== undefined && store.appendOnce !== undefined ? store.appendOnce(scope, entry, key) : store.append(scope, entry)
    } catch (err) {
      if (refused(err)) return Promise.reject(err)
      return Promise.resolve(emit(scope, event, payload, opts, id, at, unstored(scope, event, err), started))
    }
    if (!isPromiseLike(appended)) {
      return Promise.resolve(appended.first === undefined
        ? emit(scope, event, payload, opts, id, at, storeFailing ? stored(appended) : appended, started)
        : repeated(scope, appended as Required<OnceResult>))
    }
    return Promise.resolve(appended).then(
      (position) => position.first === undefined
        ? emit(scope, event, payload, opts, id, at, stored(position), started)
        : repeated(scope, position as Required<OnceResult>),
      (err: unknown) => {
        if (refused(err)) throw err
        return emit(scope, event, payload, opts, id, at, unstored(scope, event, err), started)
      }
    )
  }

  function send (scope: string, event: string, payload: unknown, opts: BroadcastOptions): Promise<BroadcastMeta | null> {
    if (!isScope(scope)) return Promise.reject(new FST_REALTIME_INVALID_SCOPE(cut(scope)))
    checkEvent(event)
    opts = checkOptions(opts)
    const validator = events.get(event)
    if (validator !== undefined && !validator.Check(payload)) {
      const [first] = validator.Errors(payload)
      const where = first?.instancePath === '' || first === undefined ? '(root)' : first.instancePath
      return Promise.reject(new FST_REALTIME_INVALID_PAYLOAD(event, `${where} ${first?.message ?? 'is invalid'}`))
    }
    if (!ctx.isOpen()) {
      warn({ scope, event }, 'fastify-realtime: broadcast while the server is not ready or is closing; not sent')
      return Promise.resolve(null)
    }
    if (opts.idempotencyKey === undefined) return deliver(scope, event, payload, opts)
    const key = `${scope} ${opts.idempotencyKey}`
    const now = clock.now()
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
