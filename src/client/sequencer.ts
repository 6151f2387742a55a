import type { Position, ResyncReason } from '../protocol.js'
import type { Clock, TimerHandle } from './timers.js'

/** One numbered item of a scope's log, as it arrives: an event, or a skip. */
export interface Numbered {
  seq: number
  epoch: string
  /** A `realtime:skip`: its seq carries nothing for this client. It moves the position on and is handed to no one. */
  skip: boolean
}

/** What a sequencer needs from the scope it orders, and tells it. */
export interface SequencerHost<T extends Numbered> {
  /** True while an answer that sets the position is due (`realtime:ready`, a subscribe's ack): everything waits for it. */
  waiting: () => boolean
  /** Hands one event to the app, in seq order. */
  deliver: (item: T) => void
  /** Asks the server for everything after the position: a missing seq did not come in time, or another epoch began. */
  fetch: () => void
  /** The position changed (or was confirmed); a place to save it. */
  moved: () => void
  /** The server says there was more than arrived, with nothing left to wait for: the app must refetch. */
  resync: (reason: ResyncReason) => void
}

export interface SequencerOptions<T extends Numbered> extends SequencerHost<T> {
  clock: Clock
  /** How long a later item waits for a missing one before `fetch` is asked. */
  gapWaitMs: number
}

/**
 * The order of one scope's log, with no socket and no timers of its own: items go to `deliver`
 * once each, in seq order, from the position on. A repeat or an item behind the position is
 * dropped; a later one waits for the missing seq (`gapWaitMs` on the given clock, then `fetch`);
 * one of another epoch waits for the server's answer (`fetch`). The answers (`settle`) say where
 * the scope stands, and what waited is taken again from there.
 */
export class Sequencer<T extends Numbered> {
  readonly #host: SequencerHost<T>
  readonly #clock: Clock
  readonly #gapWaitMs: number
  #position: Position | undefined
  /** Items that came early (or while `waiting`), by seq. */
  readonly #held = new Map<number, T>()
  #gapTimer: TimerHandle | undefined
  #halted = false

  constructor ({ clock, gapWaitMs, ...host }: SequencerOptions<T>) {
    this.#host = host
    this.#clock = clock
    this.#gapWaitMs = gapWaitMs
  }

  /** The last seq handed on (or skipped), in its epoch; undefined until one is known. Do not change it. */
  get position (): Readonly<Position> | undefined {
    return this.#position
  }

  /** True when there is nothing to keep: no position, nothing held, no timer. */
  get idle (): boolean {
    return this.#position === undefined && this.#held.size === 0 && this.#gapTimer === undefined
  }

  /** Starts from a position known from before (the app's storage). */
  restore (position: Position): void {
    this.#position = { seq: position.seq, epoch: position.epoch }
  }

  receive (item: T): void {
    if (this.#halted) return
    if (this.#host.waiting()) {
      this.#hold(item)
      return
    }
    let position = this.#position
    if (position === undefined) {
      // nothing known of this scope (the server joined it without a word): its log starts here
      if (item.skip) return
      position = this.#position = { seq: item.seq - 1, epoch: item.epoch }
    }
    if (item.epoch !== position.epoch) {
      this.#hold(item)
      // a skip alone fetches nothing; kept, it still stands for its seq if an event of its epoch
      // makes the client fetch (a scope's first events start a new epoch), so the replay does
      // not hand the skipped event back
      if (!item.skip) this.#host.fetch()
      return
    }
    if (item.seq <= position.seq) return
    if (item.seq > position.seq + 1) {
      this.#hold(item)
      this.#gapTimer ??= this.#clock.setTimeout(() => {
        this.#gapTimer = undefined
        this.#host.fetch()
      }, this.#gapWaitMs)
      return
    }
    this.#deliver(item)
  }

  /**
   * Takes the server's answer (from `realtime:ready` or a subscribe's ack; null when it gave no
   * position), then what was held meanwhile. `asked` is what was sent: the `since` position, and
   * whether a `realtime:resync` for the scope came before the answer. Everything the server
   * replayed came before its answer.
   */
  settle (answer: Position | null, asked: { since: Position | undefined, resynced: boolean }): void {
    if (answer === null) {
      this.release()
      return
    }
    const current = this.#position
    const { since } = asked
    const continued = since !== undefined && !asked.resynced && current !== undefined &&
      current.seq === since.seq && current.epoch === since.epoch
    if (continued) {
      // the server carried our position on into its log (a scope's first events start a new epoch)
      if (current.epoch !== answer.epoch) this.#position = { seq: current.seq, epoch: answer.epoch }
    } else if (current === undefined || current.epoch !== answer.epoch || current.seq < answer.seq) {
      this.#position = { seq: answer.seq, epoch: answer.epoch }
    }
    this.#host.moved()
    // sent before the answer, from a log generation the server no longer holds
    for (const [seq, item] of this.#held) if (item.epoch !== answer.epoch) this.#held.delete(seq)
    this.release()
    const now = this.#position
    if (continued && now !== undefined && now.epoch === answer.epoch && now.seq < answer.seq && !this.#host.waiting()) {
      // the server says it replayed more than arrived: never skip it silently
      this.#position = { seq: answer.seq, epoch: answer.epoch }
      this.#host.moved()
      this.#host.resync('gap')
    }
  }

  /** Takes what is held again, lowest seq first (after `waiting` ended, or the position was lost). */
  release (): void {
    const items = [...this.#held.values()].sort((a, b) => a.seq - b.seq)
    this.dropHeld()
    for (const item of items) {
      if (this.#halted) return
      this.receive(item)
    }
  }

  /** The position no longer stands (the log could not be replayed from it): the next answer or event sets it. */
  lose (): void {
    this.#position = undefined
    this.#host.moved()
  }

  /** Drops what is held and stops waiting for the seq it lacks. */
  dropHeld (): void {
    this.#held.clear()
    this.stopGapTimer()
  }

  /** Stops waiting for a missing seq: an answer that covers it is on its way. */
  stopGapTimer (): void {
    this.#clock.clearTimeout(this.#gapTimer)
    this.#gapTimer = undefined
  }

  /** For good (the client closed): nothing is held or handed on any more; the position stays readable. */
  halt (): void {
    this.#halted = true
    this.dropHeld()
  }

  /** Hands on one in-order item, then whatever it unblocks. */
  #deliver (first: T): void {
    let item = first
    let position: Position
    for (;;) {
      position = { seq: item.seq, epoch: item.epoch }
      this.#position = position
      this.#host.moved()
      if (!item.skip) this.#host.deliver(item)
      // a handler may have closed the client, left the scope or asked for it again
      if (this.#halted || this.#position !== position || this.#host.waiting()) return
      const next = this.#held.get(position.seq + 1)
      if (next === undefined || next.epoch !== position.epoch) break
      this.#held.delete(next.seq)
      item = next
    }
    for (const seq of this.#held.keys()) if (seq <= position.seq) this.#held.delete(seq)
    if (this.#held.size === 0) this.stopGapTimer()
  }

  #hold (item: T): void {
    const known = this.#held.get(item.seq)
    if (known === undefined || known.epoch !== item.epoch) this.#held.set(item.seq, item)
  }
}
