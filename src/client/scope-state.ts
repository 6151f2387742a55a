import type { EventMeta, Position } from '../protocol.js'
import type { RealtimeClientError } from './errors.js'
import type { Numbered, Sequencer } from './sequencer.js'
import type { Clock, TimerHandle } from './timers.js'

/** An event (or a skip) with its place in the scope's log. */
export interface Entry extends Numbered {
  event: string
  payload: unknown
  meta: EventMeta
}

/**
 * One `realtime:subscribe` in flight for a scope: `subscribe` (asked by the app), `restore`
 * (after a reconnect) or `fetch` (a range the client is missing).
 */
export interface SubscribeRequest {
  kind: 'subscribe' | 'restore' | 'fetch'
  since: Position | undefined
  /** A `realtime:resync` for the scope arrived before the answer. */
  resynced: boolean
  timer: TimerHandle | undefined
}

/** A `subscribe()` call waiting for the server's answer. */
export interface Waiter {
  resolve: (position: Position | null) => void
  reject: (error: RealtimeClientError) => void
  timer: TimerHandle
}

/**
 * Everything the client keeps about one scope. A record with nothing in it is the same as no
 * record: it is dropped when idle, and anything that can still fire (a request, a timer, a
 * leave, a waiting subscribe) keeps it from being idle.
 */
export class ScopeState {
  readonly scope: string
  /** The position, and the events waiting for their turn. */
  readonly sequencer: Sequencer<Entry>
  /** Asked for with `subscribe` and not given up: restored after every reconnect. */
  subscribed = false
  /** The server has accepted the subscription at least once: it is restored, never dropped on a busy server. */
  confirmed = false
  /** Joined by the server itself at connect (`realtime:ready`). */
  auto = false
  /** An unsubscribe whose answer is due: the scope's events are dropped until then. Each leave has a token of its own. */
  leaving: object | undefined = undefined
  request: SubscribeRequest | undefined = undefined
  /** The next try of a request the server could not answer. */
  retryTimer: TimerHandle | undefined = undefined
  /** Tries of the current request that failed for a reason worth retrying. */
  attempts = 0
  readonly waiters = new Set<Waiter>()
  readonly #clock: Clock

  constructor (scope: string, clock: Clock, sequencerOf: (state: ScopeState) => Sequencer<Entry>) {
    this.scope = scope
    this.#clock = clock
    this.sequencer = sequencerOf(this)
  }

  /** An answer that sets the position is due, or will be asked for again. */
  get pending (): boolean {
    return this.request !== undefined || this.retryTimer !== undefined
  }

  /** Followed by this client: asked for, or joined by the server. */
  get wanted (): boolean {
    return this.subscribed || this.auto
  }

  get idle (): boolean {
    return !this.subscribed && !this.confirmed && !this.auto && this.leaving === undefined && !this.pending &&
      this.attempts === 0 && this.waiters.size === 0 && this.sequencer.idle
  }

  /** Stops the request in flight and its retries. */
  cancel (): void {
    this.#clock.clearTimeout(this.request?.timer)
    this.request = undefined
    this.stopRetry()
    this.attempts = 0
  }

  stopRetry (): void {
    this.#clock.clearTimeout(this.retryTimer)
    this.retryTimer = undefined
  }

  /** Forgets the position and what is held. */
  forget (): void {
    this.sequencer.dropHeld()
    this.sequencer.lose()
  }

  /** Resolves every subscribe waiting for the scope, with the position. */
  resolveWaiters (): void {
    const position = this.sequencer.position
    for (const waiter of this.#takeWaiters()) waiter.resolve(position === undefined ? null : { seq: position.seq, epoch: position.epoch })
  }

  /** Rejects every subscribe waiting for the scope; false when none was. */
  rejectWaiters (error: RealtimeClientError): boolean {
    const waiters = this.#takeWaiters()
    for (const waiter of waiters) waiter.reject(error)
    return waiters.length > 0
  }

  #takeWaiters (): Waiter[] {
    const waiters = [...this.waiters]
    this.waiters.clear()
    for (const waiter of waiters) this.#clock.clearTimeout(waiter.timer)
    return waiters
  }
}
