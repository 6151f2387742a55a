import type { Position } from '../protocol.js'
import type { ReadResult, StoredEvent } from './store.js'

/** One generation of a scope's log as a store holds it, oldest event first. */
export interface LogView {
  epoch: string
  /** Store-clock ms when this generation began. */
  startedAt: number
  /**
   * A seq-0 position taken after this store ms (and no later than `startedAt`) has seen
   * everything before this generation. `startedAt - keepMs` for a generation begun on an
   * empty scope; `startedAt` for one begun because a log was lost, so no earlier seq-0
   * position can pass for it.
   */
  floor: number
  seq: number
  /** The events still held, oldest first; a store may leave out ones it cannot read. */
  events: Array<{ storedAt: number, stored: StoredEvent }>
}

export interface ReadContext {
  /** The store's identity; part of every epoch, new after a restart or a flush. */
  storeId: string
  now: number
  /** How long an event stays replayable. */
  ttlMs: number
  /** How long a scope's position outlives its newest event (see `keepFor`). */
  keepMs: number
}

const DAY_MS = 24 * 60 * 60 * 1000

/**
 * How long a scope's position (epoch and seq) is kept after its newest append: a day, or the
 * ttl when that is longer. A client still at the head after a quiet night continues in the same
 * epoch instead of being told to resync; a day of positions costs a few hundred bytes per scope
 * that had a broadcast that day, as the events themselves are released after the ttl.
 */
export function keepFor (ttlMs: number): number {
  return Math.max(ttlMs, DAY_MS)
}

/** Epochs are `<store id>.<generation start ms>`. */
export function epochOf (storeId: string, startedAt: number): string {
  return `${storeId}.${startedAt}`
}

function parseEpoch (epoch: string): [string, number] {
  const dot = epoch.lastIndexOf('.')
  return dot < 0 ? ['', Number.NaN] : [epoch.slice(0, dot), Number(epoch.slice(dot + 1))]
}

/** The position of a scope with no log: seq 0, stamped with the time it was taken. */
export function emptyPosition (ctx: ReadContext): Position {
  return { seq: 0, epoch: epochOf(ctx.storeId, ctx.now) }
}

/**
 * Decides what a client at `since` may be replayed from `log` (undefined: the scope has no log).
 * Shared by every store so they all keep one promise: every missed event, or a reason.
 */
export function planRead (log: LogView | undefined, since: Position, ctx: ReadContext): ReadResult {
  const [storeId, takenAt] = parseEpoch(since.epoch)
  // A position taken while the scope had no log ({ seq: 0 } with a time-stamped epoch) has
  // seen nothing, and missed nothing, as long as no generation can have begun and been lost
  // after it was taken: a generation that ends by idling needs a full keepMs to do so, and
  // one lost any other way leaves a floor behind (or a new store id).
  const seenNothing = since.seq === 0 && storeId === ctx.storeId && takenAt <= ctx.now
  if (log === undefined) {
    if (seenNothing && ctx.now - takenAt < ctx.keepMs) return { ok: true, events: [], position: emptyPosition(ctx) }
    return storeId === ctx.storeId ? { ok: false, reason: 'gap' } : { ok: false, reason: 'epoch' }
  }
  const sameLog = since.epoch === log.epoch || (seenNothing && log.floor < takenAt && takenAt <= log.startedAt)
  if (!sameLog || since.seq > log.seq) return { ok: false, reason: 'epoch' }
  const wanted = log.seq - since.seq
  if (wanted === 0) return { ok: true, events: [], position: { seq: log.seq, epoch: log.epoch } }
  const cutoff = ctx.now - ctx.ttlMs
  const events: StoredEvent[] = []
  for (const { storedAt, stored } of log.events) {
    if (stored.seq > since.seq && storedAt > cutoff) events.push(stored)
  }
  // exactly since.seq+1 … seq, each once: a store may have lost, skipped or garbled part of a log
  if (events.length !== wanted) return { ok: false, reason: 'gap' }
  for (let i = 0; i < wanted; i++) {
    if (events[i]!.seq !== since.seq + 1 + i) return { ok: false, reason: 'gap' }
  }
  return { ok: true, events, position: { seq: log.seq, epoch: log.epoch } }
}
