import type { EventActor, Position } from '../protocol.js'

/** What `broadcast` hands a store; the store assigns `seq` and `epoch`. */
export interface HistoryEntry {
  id: string
  event: string
  payload: unknown
  /** Milliseconds since the Unix epoch. */
  at: number
  /** Who did it: a string, a number or a small JSON object, given back as it was given. */
  by?: EventActor
}

/** An entry as a store gives it back, with its place in the scope's log. */
export interface StoredEvent extends HistoryEntry {
  seq: number
}

/** What `appendOnce` answers: where the entry went, or where the first entry under its key did. */
export interface OnceResult extends Position {
  /**
   * Set when the key was used for the scope within the ttl: the first entry's id, time and `by`
   * (`seq` and `epoch` are its place). Nothing was appended then.
   */
  first?: Pick<HistoryEntry, 'id' | 'at' | 'by'>
}

/** The outcome of reading a scope's log from a client's position. */
export type ReadResult =
  | { ok: true, events: StoredEvent[], position: Position }
  | { ok: false, reason: 'gap' | 'epoch' }

/**
 * A bounded, per-scope event log: the plugin's promise "every event of a scope, in order, or an
 * explicit resync" rests on it. Rules a store keeps (the contract suite in the repository's
 * test/history/contract.ts checks them):
 *
 * - `seq` grows by one per appended event of a scope, from 1, with no gap and no repeat, even
 *   with appends from many processes at once.
 * - `epoch` names one unbroken log of the scope. It stays the same for as long as the log goes
 *   on, and changes whenever the log may have lost an event: the store restarted or was
 *   flushed, or an event was delivered but not stored. Never reuse an epoch.
 * - A scope keeps its position (epoch and seq) longer than its events, so a client still at the
 *   head after a quiet spell reads `ok` and goes on in the same epoch, while one behind the
 *   expired events reads `gap`. The shipped stores keep it a day after the newest append, or
 *   the ttl when longer; then the scope is released, and its next append begins a new epoch.
 * - A scope with nothing stored has a position too: `{ seq: 0, epoch }`, and a read from it
 *   returns whatever was appended since it was taken, if the store can tell that nothing was
 *   lost in between; otherwise it is not ok.
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
  /**
   * Stores `entry` as the scope's next event and returns its place. One atomic step. Rejects
   * (or throws) when the event could not be stored: the plugin then delivers it live only, calls
   * `lost(scope)`, and the store must give the scope a new epoch before it reads as `ok` again
   * from a position taken before that event. An entry the store cannot encode is the caller's mistake, not an
   * outage: reject with `FST_REALTIME_INVALID_PAYLOAD`, leave the log as it was, and `broadcast`
   * rejects with it too.
   */
  append: (scope: string, entry: HistoryEntry) => Promise<Position> | Position
  /**
   * Optional: `append`, once per idempotency `key` and scope within the ttl, decided by the store
   * itself, so a key is honoured by every process sharing it (the Redis store: one Lua script).
   * A key used before appends nothing and answers with the first entry (`first`) and its place.
   * Without it, `broadcast` remembers keys per process.
   */
  appendOnce?: (scope: string, entry: HistoryEntry, key: string) => Promise<OnceResult> | OnceResult
  /**
   * The events after `since`, oldest first, with `position` the scope's head, when every one of
   * them is still stored; otherwise why not: `gap` (the same log, but some expired, were
   * evicted or cannot be read), `epoch` (another log: an unknown or older epoch, or a `since.seq`
   * ahead of the log). Never a partial list. A stored entry that cannot be decoded makes a read
   * that needs it a `gap`, not a rejection; reject only when the store cannot be reached.
   */
  read: (scope: string, since: Position) => Promise<ReadResult> | ReadResult
  /** The scope's current position; a scope with no stored events still has one (`seq: 0`). */
  position: (scope: string) => Promise<Position> | Position
  /**
   * Called by the plugin after an `append` of `scope` failed and the event went out live all the
   * same: from now on the store owes that scope a new epoch (see `append`). Optional for a store
   * whose appends never fail, or that gives the new epoch by itself.
   */
  lost?: (scope: string) => void
  /** Whether the store can be used right now (health route). */
  ping?: () => Promise<boolean> | boolean
  /** Releases timers, listeners and connections the store owns. */
  close?: () => Promise<void> | void
}

export interface HistoryLimits {
  /** Seconds an event stays replayable. */
  ttl: number
  /** Events kept per scope. */
  max: number
}
