import {
  FST_REALTIME_INVALID_BROADCAST_OPTION,
  FST_REALTIME_INVALID_EVENT,
  FST_REALTIME_INVALID_PAYLOAD,
  FST_REALTIME_INVALID_SCOPE
} from './errors.js'
import { ExpiringMap } from './expiring-map.js'
import type { HistoryEntry, HistoryStore, OnceResult, StoredEvent } from './history/store.js'
import type { NormalizedOptions } from './options.js'
import { RESERVED_PREFIX, SOCKET_IO_RESERVED, isScope, type Position } from './protocol.js'
import type { BroadcastMeta, BroadcastOptions, EventActor, EventMeta } from './types.js'
import { cut } from './util.js'

// What a broadcast is, wherever it is sent from: `fastify.broadcast` on a node and the publisher
// of a worker both check, number, store and describe an event here, so that they cannot differ.

/** The payload schemas of `events`, compiled, by event name. */
export type EventSchemas = NormalizedOptions['events']

/**
 * The meta every delivered event carries, built here and nowhere else: `{ id, scope, seq?,
 * epoch?, at, by? }` in this order (a literal per shape, no spread: it runs for every broadcast).
 */
export function eventMeta (id: string, scope: string, position: Position | null, at: number, by: BroadcastOptions['by']): EventMeta {
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

/** The answer to a repeated idempotency key that the store recognised: the first call's meta; nothing is sent. */
export function repeatedMeta (scope: string, { seq, epoch, first }: Required<OnceResult>): BroadcastMeta {
  const meta = eventMeta(first.id, scope, { seq, epoch }, first.at, first.by) as BroadcastMeta
  meta.stored = true
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

/**
 * Checks a broadcast before anything is stored or sent, and returns its options as they are
 * sent and stored. Throws the coded error a programming mistake gets: a bad scope, event name,
 * option, or a payload that fails the event's schema.
 */
export function checkBroadcast (scope: unknown, event: unknown, payload: unknown, opts: BroadcastOptions | null | undefined, events: EventSchemas): BroadcastOptions {
  if (!isScope(scope)) throw new FST_REALTIME_INVALID_SCOPE(cut(scope))
  checkEvent(event)
  const checked = checkOptions(opts ?? NO_OPTIONS)
  const validator = events.get(event)
  if (validator !== undefined && !validator.Check(payload)) {
    const [first] = validator.Errors(payload)
    const where = first?.instancePath === '' || first === undefined ? '(root)' : first.instancePath
    throw new FST_REALTIME_INVALID_PAYLOAD(event, `${where} ${first?.message ?? 'is invalid'}`)
  }
  return checked
}

/** The error a payload that cannot be encoded gets (a BigInt, a cycle): nobody received it. */
export function unserialisable (event: string, err: unknown): Error {
  return new FST_REALTIME_INVALID_PAYLOAD(event, `it cannot be serialised (${(err as Error).message})`)
}

/** A store that says the entry itself is wrong (it cannot be encoded): the caller's error, not an outage. */
export function refused (err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'FST_REALTIME_INVALID_PAYLOAD'
}

/** The log entry of a broadcast. */
export function historyEntry (id: string, event: string, payload: unknown, at: number, by: EventActor | undefined): HistoryEntry {
  return by === undefined ? { id, event, payload, at } : { id, event, payload, at, by }
}

/**
 * Appends to the scope's log: once per idempotency key when the store keeps keys itself
 * (`appendOnce`; `first` is set on a repeat and nothing was appended), plainly otherwise.
 * May throw, or answer synchronously (the memory store).
 */
export function appendEvent (store: HistoryStore, scope: string, entry: HistoryEntry, key: string | undefined): OnceResult | Promise<OnceResult> {
  return key !== undefined && store.appendOnce !== undefined ? store.appendOnce(scope, entry, key) : store.append(scope, entry)
}

/**
 * Idempotency keys used by this process, by `<scope> <key>` (a scope has no space), with the
 * call they were used for: a repeat gets that call's answer. Bounded in time (the history ttl)
 * and count. With a store that keeps keys itself (`appendOnce`), this only spares it the repeats
 * from here.
 */
export class IdempotencyKeys<T> {
  readonly #seen: ExpiringMap<string, Promise<T>>
  readonly #ttlMs: number

  constructor (max: number, ttlMs: number) {
    this.#seen = new ExpiringMap(max)
    this.#ttlMs = ttlMs
  }

  /** `run()`, or the answer of the call that used the same key and scope within the ttl. */
  once (scope: string, key: string, now: number, run: () => Promise<T>): Promise<T> {
    const id = `${scope} ${key}`
    this.#seen.sweep(now)
    const earlier = this.#seen.get(id, now)
    if (earlier !== undefined) return earlier
    const result = run()
    this.#seen.set(id, result, now + this.#ttlMs)
    // a call that failed is not remembered: the same key may be tried again
    result.catch(() => { this.#seen.delete(id) })
    return result
  }
}
