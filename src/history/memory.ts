import { randomBytes } from 'node:crypto'
import { ExpiringMap } from '../expiring-map.js'
import type { Position } from '../protocol.js'
import type { HistoryEntry, HistoryStore, ReadResult, StoredEvent } from './store.js'

export interface MemoryHistoryOptions {
  /** Seconds an event stays replayable. @default 300 */
  ttl?: number
  /** Events kept per scope. @default 50 */
  max?: number
  /** Milliseconds clock; inject one in tests. It must never go back. @default Date.now */
  now?: () => number
}

interface ScopeLog {
  epoch: string
  /** When this generation of the log began. */
  startedAt: number
  seq: number
  /** Oldest first, each with the store-clock time it was appended (what `ttl` counts from). */
  events: Array<{ storedAt: number, stored: StoredEvent }>
}

/**
 * The embedded store: per-scope logs in this process, bounded by `max` events and `ttl`
 * seconds. A scope whose newest event has expired is dropped whole, so memory follows the
 * scopes that are active, not every scope ever seen. One sweep timer for the whole store.
 *
 * Epochs are `<store id>.<generation start ms>`: a restart gives a new store id, and a scope
 * dropped and begun again gets a new start time.
 */
export class MemoryHistoryStore implements HistoryStore {
  readonly kind = 'memory'
  readonly #id = randomBytes(6).toString('base64url')
  readonly #ttlMs: number
  readonly #max: number
  readonly #now: () => number
  readonly #logs = new ExpiringMap<string, ScopeLog>()
  readonly #sweeper: NodeJS.Timeout

  constructor (options: MemoryHistoryOptions = {}) {
    this.#ttlMs = (options.ttl ?? 300) * 1000
    this.#max = options.max ?? 50
    this.#now = options.now ?? Date.now
    this.#sweeper = setInterval(() => this.#logs.sweep(this.#now()), Math.min(this.#ttlMs, 60_000))
    this.#sweeper.unref()
  }

  /** Scopes that currently hold a log (for tests and diagnostics). */
  get scopes (): number {
    return this.#logs.size
  }

  append (scope: string, entry: HistoryEntry): Position {
    const now = this.#now()
    let log = this.#live(scope, now)
    if (log === undefined) {
      log = { epoch: `${this.#id}.${now}`, startedAt: now, seq: 0, events: [] }
    }
    log.seq += 1
    log.events.push({ storedAt: now, stored: { ...entry, seq: log.seq } })
    if (log.events.length > this.#max) log.events.shift()
    this.#logs.set(scope, log, now + this.#ttlMs)
    return { seq: log.seq, epoch: log.epoch }
  }

  read (scope: string, since: Position): ReadResult {
    const now = this.#now()
    const log = this.#live(scope, now)
    const [storeId, startedAt] = this.#parseEpoch(since.epoch)
    // A position taken while the scope had no log ({ seq: 0 } with a time-stamped epoch) still
    // covers a generation begun less than one ttl later: an earlier generation begun after it
    // would have needed a full ttl to expire, so nothing can have been missed in between.
    const seenNothing = since.seq === 0 && storeId === this.#id && startedAt <= now
    if (log === undefined) {
      if (seenNothing && now - startedAt < this.#ttlMs) {
        return { ok: true, events: [], position: this.#emptyPosition(now) }
      }
      return { ok: false, reason: storeId === this.#id ? 'gap' : 'epoch' }
    }
    const sameLog = since.epoch === log.epoch ||
      (seenNothing && startedAt <= log.startedAt && log.startedAt - startedAt < this.#ttlMs)
    if (!sameLog || since.seq > log.seq) return { ok: false, reason: 'epoch' }
    const first = log.events.length > 0 ? log.events[0]!.stored.seq : log.seq + 1
    if (since.seq < first - 1) return { ok: false, reason: 'gap' }
    const events = log.events.slice(log.events.length - (log.seq - since.seq)).map((e) => e.stored)
    return { ok: true, events, position: { seq: log.seq, epoch: log.epoch } }
  }

  position (scope: string): Position {
    const now = this.#now()
    const log = this.#live(scope, now)
    return log === undefined ? this.#emptyPosition(now) : { seq: log.seq, epoch: log.epoch }
  }

  ping (): boolean {
    return true
  }

  close (): void {
    clearInterval(this.#sweeper)
    this.#logs.clear()
  }

  /** The scope's log with expired events dropped, or undefined when nothing is left. */
  #live (scope: string, now: number): ScopeLog | undefined {
    const log = this.#logs.get(scope, now)
    if (log === undefined) return undefined
    const cutoff = now - this.#ttlMs
    let expired = 0
    while (expired < log.events.length && log.events[expired]!.storedAt <= cutoff) expired++
    if (expired > 0) log.events.splice(0, expired)
    return log
  }

  #emptyPosition (now: number): Position {
    return { seq: 0, epoch: `${this.#id}.${now}` }
  }

  #parseEpoch (epoch: string): [string, number] {
    const dot = epoch.lastIndexOf('.')
    return dot < 0 ? ['', Number.NaN] : [epoch.slice(0, dot), Number(epoch.slice(dot + 1))]
  }
}
