import { randomBytes } from 'node:crypto'
import { ExpiringMap } from '../expiring-map.js'
import type { Position } from '../protocol.js'
import { emptyPosition, epochOf, planRead, type LogView, type ReadContext } from './plan.js'
import type { HistoryEntry, HistoryStore, ReadResult } from './store.js'

export interface MemoryHistoryOptions {
  /** Seconds an event stays replayable. @default 300 */
  ttl?: number
  /** Events kept per scope. @default 50 */
  max?: number
  /** Milliseconds clock; inject one in tests. It must never go back. @default Date.now */
  now?: () => number
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
  readonly #logs = new ExpiringMap<string, LogView>()
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
    // releases expired scopes as the store is used, not only at the next timer tick;
    // O(expired), as logs sit in expiry order
    this.#logs.sweep(now)
    let log = this.#live(scope, now)
    if (log === undefined) {
      log = { epoch: epochOf(this.#id, now), startedAt: now, seq: 0, events: [] }
    }
    log.seq += 1
    log.events.push({ storedAt: now, stored: { ...entry, seq: log.seq } })
    if (log.events.length > this.#max) log.events.shift()
    this.#logs.set(scope, log, now + this.#ttlMs)
    return { seq: log.seq, epoch: log.epoch }
  }

  read (scope: string, since: Position): ReadResult {
    const now = this.#now()
    return planRead(this.#live(scope, now), since, this.#context(now))
  }

  position (scope: string): Position {
    const now = this.#now()
    const log = this.#live(scope, now)
    return log === undefined ? emptyPosition(this.#context(now)) : { seq: log.seq, epoch: log.epoch }
  }

  ping (): boolean {
    return true
  }

  close (): void {
    clearInterval(this.#sweeper)
    this.#logs.clear()
  }

  /** The scope's log with expired events dropped, or undefined when nothing is left. */
  #live (scope: string, now: number): LogView | undefined {
    const log = this.#logs.get(scope, now)
    if (log === undefined) return undefined
    const cutoff = now - this.#ttlMs
    let expired = 0
    while (expired < log.events.length && log.events[expired]!.storedAt <= cutoff) expired++
    if (expired > 0) log.events.splice(0, expired)
    return log
  }

  #context (now: number): ReadContext {
    return { storeId: this.#id, now, ttlMs: this.#ttlMs }
  }
}
