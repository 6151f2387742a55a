import type { Position } from '../protocol.js'
import type { ReadResult, StoredEvent } from './store.js'

/** One generation of a scope's log as a store holds it, oldest event first. */
export interface LogView {
  epoch: string
  /** Store-clock ms when this generation began. */
  startedAt: number
  seq: number
  events: Array<{ storedAt: number, stored: StoredEvent }>
}

export interface ReadContext {
  /** The store's identity; part of every epoch, new after a restart or a flush. */
  storeId: string
  now: number
  ttlMs: number
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
  // A position taken while the scope had no log ({ seq: 0 } with a time-stamped epoch) still
  // covers a generation begun less than one ttl later: an earlier generation begun after it
  // would have needed a full ttl to expire, so nothing can have been missed in between.
  const seenNothing = since.seq === 0 && storeId === ctx.storeId && takenAt <= ctx.now
  if (log === undefined) {
    if (seenNothing && ctx.now - takenAt < ctx.ttlMs) return { ok: true, events: [], position: emptyPosition(ctx) }
    return { ok: false, reason: storeId === ctx.storeId ? 'gap' : 'epoch' }
  }
  const sameLog = since.epoch === log.epoch ||
    (seenNothing && takenAt <= log.startedAt && log.startedAt - takenAt < ctx.ttlMs)
  if (!sameLog || since.seq > log.seq) return { ok: false, reason: 'epoch' }
  const cutoff = ctx.now - ctx.ttlMs
  const wanted = log.seq - since.seq
  const kept = log.events.filter((e) => e.storedAt > cutoff)
  if (kept.length < wanted) return { ok: false, reason: 'gap' }
  const events = kept.slice(kept.length - wanted).map((e) => e.stored)
  // the log must hold since.seq+1 … seq without a hole (a store may lose part of a log)
  if (events.length > 0 && (events[0]!.seq !== since.seq + 1 || events[events.length - 1]!.seq !== log.seq)) {
    return { ok: false, reason: 'gap' }
  }
  return { ok: true, events, position: { seq: log.seq, epoch: log.epoch } }
}
