import type { Position } from '../protocol.js'

/** What `broadcast` hands a store; the store assigns `seq` and `epoch`. */
export interface HistoryEntry {
  id: string
  event: string
  payload: unknown
  /** Milliseconds since the Unix epoch. */
  at: number
  by?: string | number
}

/** An entry as a store gives it back, with its place in the scope's log. */
export interface StoredEvent extends HistoryEntry {
  seq: number
}

/** The outcome of reading a scope's log from a client's position. */
export type ReadResult =
  | { ok: true, events: StoredEvent[], position: Position }
  | { ok: false, reason: 'gap' | 'epoch' }

/**
 * A bounded, per-scope event log. Each scope has a sequence that grows by one per appended
 * event and an epoch that changes whenever the scope's log is lost, so a position taken from a
 * lost log can never be confused with one from the current log.
 *
 * @example
 * class MyStore implements HistoryStore {
 *   readonly kind = 'my-store'
 *   async append (scope, entry) { ... return { seq, epoch } }
 *   async read (scope, since) { ... }
 *   async position (scope) { ... }
 * }
 */
export interface HistoryStore {
  /** Shown as `history.store` in the health route. */
  readonly kind: string
  /** Stores `entry` as the scope's next event and returns its place. One atomic step. */
  append: (scope: string, entry: HistoryEntry) => Promise<Position> | Position
  /**
   * The events after `since`, oldest first, when every one of them is still stored;
   * otherwise why not: `gap` (some expired or were evicted), `epoch` (another log).
   */
  read: (scope: string, since: Position) => Promise<ReadResult> | ReadResult
  /** The scope's current position; a scope with no stored events still has one. */
  position: (scope: string) => Promise<Position> | Position
  /** Whether the store can be used right now (health route). */
  ping?: () => Promise<boolean> | boolean
  /** Releases timers and connections the store owns. */
  close?: () => Promise<void> | void
}

export interface HistoryLimits {
  /** Seconds an event stays replayable. */
  ttl: number
  /** Events kept per scope. */
  max: number
}
