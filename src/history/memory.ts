import { randomBytes } from 'node:crypto'
import type { Position } from '../protocol.js'
import { emptyPosition, epochOf, keepFor, planRead, type LogView, type ReadContext } from './plan.js'
import type { HistoryEntry, HistoryStore, ReadResult, StoredEvent } from './store.js'

export interface MemoryHistoryOptions {
  /** Seconds an event stays replayable. @default 300 */
  ttl?: number
  /** Events kept per scope. @default 50 */
  max?: number
  /** Milliseconds clock; inject one in tests. It must never go back. @default Date.now */
  now?: () => number
}

/**
 * One generation of a scope's log: a ring of the newest `max` events, slot `(seq - 1) % max`,
 * grown as filled, emptied by the sweep once its newest event has expired.
 */
interface Log {
  epoch: string
  startedAt: number
  /** See LogView.floor. */
  floor: number
  seq: number
  /** Store ms of the newest append: the events are gone a ttl later, the position a keep later. */
  last: number
  events: Array<StoredEvent | undefined>
  storedAt: number[]
}

/** The entry with its seq, built field by field: an object spread here costs more than the rest of the append. */
function withSeq (entry: HistoryEntry, seq: number): StoredEvent {
  return entry.by === undefined
    ? { id: entry.id, event: entry.event, payload: entry.payload, at: entry.at, seq }
    : { id: entry.id, event: entry.event, payload: entry.payload, at: entry.at, by: entry.by, seq }
}

/**
 * The embedded store: per-scope logs in this process, bounded by `max` events and `ttl`
 * seconds. An append is a few field writes into a fixed ring.
 *
 * A scope's position (epoch and seq) outlives its events: for a day after the newest append
 * (or the ttl, when longer), so a client still at the head after a quiet spell goes on in the
 * same epoch, and one behind the expired events is told `gap`. The one sweep timer of the store
 * releases the events of a scope once they have expired and the scope itself once its position
 * has, so memory follows the scopes in use, not every scope ever seen.
 *
 * Epochs are `<store id>.<generation start ms>`: a restart gives a new store id, so every
 * position from before it reads as `epoch`, and a scope released and begun again gets a new
 * start time.
 */
export class MemoryHistoryStore implements HistoryStore {
  readonly kind = 'memory'
  readonly #id = randomBytes(6).toString('base64url')
  readonly #ttlMs: number
  readonly #keepMs: number
  readonly #max: number
  readonly #now: () => number
  readonly #logs = new Map<string, Log>()
  readonly #sweeper: NodeJS.Timeout

  constructor (options: MemoryHistoryOptions = {}) {
    this.#ttlMs = (options.ttl ?? 300) * 1000
    this.#keepMs = keepFor(this.#ttlMs)
    this.#max = options.max ?? 50
    this.#now = options.now ?? Date.now
    this.#sweeper = setInterval(() => this.#sweep(this.#now()), Math.min(this.#ttlMs, 60_000))
    this.#sweeper.unref()
  }

  /** Scopes that currently hold a position, expired ones not yet swept included (for tests and diagnostics). */
  get scopes (): number {
    return this.#logs.size
  }

  /** Events held in memory, expired ones not yet swept included (for tests and diagnostics). */
  get events (): number {
    let held = 0
    for (const log of this.#logs.values()) {
      for (const stored of log.events) if (stored !== undefined) held++
    }
    return held
  }

  append (scope: string, entry: HistoryEntry): Position {
    const now = this.#now()
    let log = this.#live(scope, now)
    if (log === undefined) {
      log = { epoch: epochOf(this.#id, now), startedAt: now, floor: now - this.#keepMs, seq: 0, last: now, events: [], storedAt: [] }
      this.#logs.set(scope, log)
    }
    const seq = ++log.seq
    const slot = (seq - 1) % this.#max
    log.events[slot] = withSeq(entry, seq)
    log.storedAt[slot] = now
    log.last = now
    return { seq, epoch: log.epoch }
  }

  read (scope: string, since: Position): ReadResult {
    const now = this.#now()
    const log = this.#live(scope, now)
    return planRead(log === undefined ? undefined : this.#view(log), since, this.#context(now))
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

  /** The scope's log, or undefined when it has none or its position has expired. */
  #live (scope: string, now: number): Log | undefined {
    const log = this.#logs.get(scope)
    if (log === undefined) return undefined
    if (now - log.last < this.#keepMs) return log
    this.#logs.delete(scope)
    return undefined
  }

  /** The ring as planRead reads a log: the events held, oldest first (slots the sweep emptied are skipped). */
  #view (log: Log): LogView {
    const events: LogView['events'] = []
    for (let seq = Math.max(1, log.seq - this.#max + 1); seq <= log.seq; seq++) {
      const slot = (seq - 1) % this.#max
      const stored = log.events[slot]
      if (stored !== undefined && stored.seq === seq) events.push({ storedAt: log.storedAt[slot]!, stored })
    }
    return { epoch: log.epoch, startedAt: log.startedAt, floor: log.floor, seq: log.seq, events }
  }

  #sweep (now: number): void {
    for (const [scope, log] of this.#logs) {
      const idle = now - log.last
      if (idle >= this.#keepMs) {
        this.#logs.delete(scope)
      } else if (idle >= this.#ttlMs && log.events.length > 0) {
        // every event has expired: only the position is left to keep
        log.events = []
        log.storedAt = []
      }
    }
  }

  #context (now: number): ReadContext {
    return { storeId: this.#id, now, ttlMs: this.#ttlMs, keepMs: this.#keepMs }
  }
}
