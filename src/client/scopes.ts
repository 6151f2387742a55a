import {
  EVENT_SKIP,
  EVENT_SUBSCRIBE,
  EVENT_UNSUBSCRIBE,
  isPosition,
  type EventMeta,
  type Position,
  type ResyncReason
} from '../protocol.js'
import { RETRYABLE, RealtimeClientError, accepted, refusal, type Ack } from './errors.js'
import type { Listeners } from './listeners.js'
import type { Settings } from './options.js'
import { ScopeState, type Entry, type SubscribeRequest } from './scope-state.js'
import { Sequencer } from './sequencer.js'
import { backoff, type Clock } from './timers.js'

/** What the scopes need of the connection. */
export interface Link {
  /** `realtime:ready` came on the current connection. */
  readonly ready: boolean
  readonly connected: boolean
  readonly closed: boolean
  emit: (event: string, data: object, ack: (answer: unknown) => void) => void
  /** Emits with an ack; rejects with `TIMEOUT`, or when the connection is lost or the client closed. */
  ask: (event: string, data: object) => Promise<unknown>
}

export interface ScopesOptions {
  link: Link
  listeners: Listeners
  settings: Settings
  clock: Clock
  /** A position changed. */
  moved: () => void
  /** The server accepted a subscribe to the scope (the app's, or a restore) on the current connection. */
  joined: (scope: string) => void
}

/** The `since` sent with the current handshake, and the scopes resynced before `realtime:ready`. */
interface Handshake {
  since: Record<string, Position>
  resynced: Set<string>
}

/** A range fetch is tried this many times before the scope is given up with a resync. */
const FETCH_ATTEMPTS = 5

function isLogged (seq: unknown, epoch: unknown): seq is number {
  return Number.isSafeInteger(seq) && (seq as number) >= 1 && typeof epoch === 'string'
}

/**
 * Every scope the client follows or has a position in, one ScopeState each: the subscribes,
 * restores and range fetches sent for it (with their retries), the app's `subscribe()` calls
 * waiting for an answer, and its events on their way through its sequencer.
 */
export class Scopes {
  readonly #states = new Map<string, ScopeState>()
  readonly #link: Link
  readonly #listeners: Listeners
  readonly #settings: Settings
  readonly #clock: Clock
  readonly #moved: () => void
  readonly #joined: (scope: string) => void
  /** Set from the transport's connect until `realtime:ready`: every logged event waits for the positions. */
  #handshake: Handshake | null = null

  constructor ({ link, listeners, settings, clock, moved, joined }: ScopesOptions) {
    this.#link = link
    this.#listeners = listeners
    this.#settings = settings
    this.#clock = clock
    this.#moved = moved
    this.#joined = joined
  }

  /** Last position per scope (a copy). */
  positions (): Record<string, Position> {
    const copy: Record<string, Position> = {}
    for (const { scope, sequencer: { position } } of this.#states.values()) {
      if (position !== undefined) copy[scope] = { seq: position.seq, epoch: position.epoch }
    }
    return copy
  }

  subscriptions (): string[] {
    return [...this.#states.values()].filter((state) => state.subscribed).map((state) => state.scope)
  }

  /** Starts from positions kept from before. */
  restore (positions: Map<string, Position>): void {
    for (const [scope, position] of positions) this.#get(scope).sequencer.restore(position)
  }

  // --- the app's calls --------------------------------------------------------------------

  subscribe (scope: string): Promise<Position | null> {
    if (this.#link.closed) return Promise.reject(new RealtimeClientError('CLOSED', 'The client is closed', { scope }))
    const state = this.#get(scope)
    if (!state.subscribed) {
      // last in the table: subscriptions are listed, and restored, in the order they were asked for
      this.#states.delete(scope)
      this.#states.set(scope, state)
      state.subscribed = true
    }
    state.leaving = undefined
    const { timeoutMs } = this.#settings
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        timer: this.#clock.setTimeout(() => {
          state.waiters.delete(waiter)
          if (state.waiters.size === 0 && !state.confirmed) this.#abandon(state)
          reject(new RealtimeClientError('TIMEOUT', `No answer to the subscribe to ${scope} within ${timeoutMs} ms`, { scope }))
          this.#tidy(state)
        }, timeoutMs)
      }
      state.waiters.add(waiter)
      // sent now when connected; otherwise once, when the server says ready
      if (this.#link.ready && state.request === undefined) this.#send(state, state.confirmed ? 'restore' : 'subscribe')
    })
  }

  async unsubscribe (scope: string): Promise<void> {
    const state = this.#get(scope)
    this.#drop(state)
    state.rejectWaiters(new RealtimeClientError('UNSUBSCRIBED', `Unsubscribed from ${scope}`, { scope }))
    this.#tidy(state)
    if (!this.#link.connected || this.#link.closed) return
    let ack: unknown
    try {
      ack = await this.#leave(scope)
    } catch (err) {
      // a lost connection leaves every room anyway
      if ((err as RealtimeClientError).code === 'DISCONNECTED') return
      throw err
    }
    if (!accepted(ack)) throw refusal(ack, 'Unsubscribe refused', scope)
  }

  /** For good: every request and timer stops, waiting subscribes reject (`CLOSED`); positions stay. */
  close (): void {
    this.reset()
    for (const state of [...this.#states.values()]) {
      state.sequencer.halt()
      state.rejectWaiters(new RealtimeClientError('CLOSED', 'The client was closed', { scope: state.scope }))
    }
  }

  // --- the connection ---------------------------------------------------------------------

  /** A handshake went out with `since`: logged events wait for `realtime:ready`. */
  handshake (since: Record<string, Position>): void {
    this.#handshake = { since, resynced: new Set() }
  }

  /** Drops what belongs to one connection: requests, retries, held events, leaves. Positions stay. */
  reset (): void {
    this.#handshake = null
    for (const state of [...this.#states.values()]) {
      state.cancel()
      state.sequencer.dropHeld()
      state.leaving = undefined
      this.#tidy(state)
    }
  }

  /** The server refused the connection for good: subscribes waiting for it will not get one. */
  refused (code: string, message: string): void {
    for (const state of [...this.#states.values()]) {
      state.rejectWaiters(new RealtimeClientError(code, message, { scope: state.scope }))
    }
  }

  ready (message: unknown): void {
    const ready = (message ?? {}) as { scopes?: unknown, positions?: Record<string, unknown> }
    const handshake = this.#handshake ?? { since: {}, resynced: new Set<string>() }
    this.#handshake = null
    const auto = new Set(Array.isArray(ready.scopes) ? ready.scopes.filter((s): s is string => typeof s === 'string') : [])
    for (const state of this.#states.values()) state.auto = auto.has(state.scope)
    for (const scope of auto) this.#get(scope).auto = true
    const positions = ready.positions !== null && typeof ready.positions === 'object' ? ready.positions : {}
    for (const state of [...this.#states.values()]) {
      // the server restored the auto-joined ones itself (with since); the others are asked for again
      if (state.subscribed && !state.auto && state.request === undefined) this.#send(state, state.confirmed ? 'restore' : 'subscribe')
    }
    for (const scope of auto) {
      const state = this.#states.get(scope)
      // a handler called for an earlier scope may have left this one meanwhile
      if (state?.auto !== true) continue
      const position = positions[scope]
      state.sequencer.settle(isPosition(position) ? position : null, {
        since: handshake.since[scope],
        resynced: handshake.resynced.has(scope)
      })
    }
    for (const state of [...this.#states.values()]) {
      if (!state.auto && !state.pending) state.sequencer.release()
    }
    for (const state of [...this.#states.values()]) {
      if (state.subscribed && state.auto) {
        state.confirmed = true
        state.resolveWaiters()
      }
      this.#tidy(state)
    }
  }

  // --- from the server --------------------------------------------------------------------

  event (event: string, payload: unknown, rawMeta: unknown): void {
    if (this.#link.closed) return
    const meta = rawMeta as EventMeta | null | undefined
    if (meta === null || typeof meta !== 'object' || typeof meta.scope !== 'string') {
      this.#listeners.event(event, payload, meta as EventMeta)
      return
    }
    if (this.#states.get(meta.scope)?.leaving !== undefined) return
    const { seq, epoch } = meta
    if (!isLogged(seq, epoch)) {
      // outside any log (volatile, or not stored): straight through
      this.#listeners.event(event, payload, meta)
      return
    }
    this.#receive(meta.scope, { event, payload, meta, seq, epoch: epoch as string, skip: false })
  }

  skip (message: unknown): void {
    if (this.#link.closed || message === null || typeof message !== 'object') return
    const { scope, seq, epoch } = message as Record<string, unknown>
    if (typeof scope !== 'string' || !isLogged(seq, epoch)) return
    if (this.#states.get(scope)?.leaving !== undefined) return
    this.#receive(scope, { event: EVENT_SKIP, payload: undefined, meta: message as EventMeta, seq, epoch: epoch as string, skip: true })
  }

  /** `realtime:revoked`: the server took the socket out of the scope; the client stops following it. */
  revoked (message: unknown): void {
    if (this.#link.closed || message === null || typeof message !== 'object') return
    const { scope } = message as { scope?: unknown }
    if (typeof scope !== 'string') return
    const state = this.#states.get(scope)
    if (state !== undefined) {
      this.#drop(state)
      state.rejectWaiters(new RealtimeClientError('FORBIDDEN', `No longer allowed in ${scope}`, { scope }))
      this.#tidy(state)
    }
    this.#listeners.resync({ scope, reason: 'revoked' })
  }

  resync (message: unknown): void {
    if (this.#link.closed || message === null || typeof message !== 'object') return
    const { scope, reason } = message as { scope?: unknown, reason?: unknown }
    if (typeof scope !== 'string' || typeof reason !== 'string') return
    const state = this.#get(scope)
    const request = state.request
    if (request !== undefined) request.resynced = true
    this.#handshake?.resynced.add(scope)
    state.sequencer.lose()
    if (request === undefined && this.#handshake === null) state.sequencer.dropHeld()
    this.#listeners.resync({ scope, reason: reason as ResyncReason })
    this.#tidy(state)
  }

  // --- requests ---------------------------------------------------------------------------

  /** Sends one `realtime:subscribe` (with since when the position is known); its events wait for the answer. */
  #send (state: ScopeState, kind: SubscribeRequest['kind']): void {
    const { scope } = state
    state.stopRetry()
    state.sequencer.stopGapTimer()
    const position = state.sequencer.position
    const since = position === undefined ? undefined : { seq: position.seq, epoch: position.epoch }
    const request: SubscribeRequest = { kind, since, resynced: false, timer: undefined }
    state.request = request
    const { timeoutMs } = this.#settings
    request.timer = this.#clock.setTimeout(() => {
      if (state.request !== request) return
      state.request = undefined
      this.#failed(state, request, new RealtimeClientError('TIMEOUT', `No answer to the subscribe to ${scope} within ${timeoutMs} ms`, { scope }))
      this.#tidy(state)
    }, timeoutMs)
    this.#link.emit(EVENT_SUBSCRIBE, since === undefined ? { scope } : { scope, since }, (ack: unknown) => {
      if (this.#link.closed) return
      if (state.request !== request) {
        // a late answer: the server joined a room nobody here wants any more
        if (accepted(ack) && this.#states.get(scope)?.wanted !== true && this.#link.connected) this.#leaveQuietly(scope)
        return
      }
      this.#clock.clearTimeout(request.timer)
      state.request = undefined
      if (accepted(ack)) this.#succeeded(state, request, ack)
      else this.#failed(state, request, refusal(ack, `Subscribe to ${scope} refused`, scope))
      this.#tidy(state)
    })
  }

  #succeeded (state: ScopeState, request: SubscribeRequest, ack: Ack): void {
    state.attempts = 0
    if (state.subscribed) state.confirmed = true
    state.sequencer.settle(isPosition(ack.position) ? ack.position : null, request)
    state.resolveWaiters()
    if (request.kind !== 'fetch') this.#joined(state.scope)
  }

  #failed (state: ScopeState, request: SubscribeRequest, error: RealtimeClientError): void {
    const { scope } = state
    const waited = state.rejectWaiters(error)
    if (request.kind === 'subscribe' && !state.confirmed) {
      // a first subscribe: its caller has the error, and the scope was never followed
      state.subscribed = false
      if (state.auto) state.sequencer.release()
      else state.forget()
      return
    }
    if (RETRYABLE.has(error.code)) {
      const attempt = state.attempts + 1
      if (request.kind !== 'fetch' || attempt < FETCH_ATTEMPTS) {
        state.attempts = attempt
        if (!waited) this.#listeners.error(error)
        state.retryTimer = this.#clock.setTimeout(() => {
          state.retryTimer = undefined
          if (this.#link.ready && !this.#link.closed) this.#send(state, request.kind)
          this.#tidy(state)
        }, backoff(attempt - 1, this.#settings.retryMinMs, this.#settings.retryMaxMs))
        return
      }
      // the range could not be had: the app refetches, and delivery starts again from what is held
      state.attempts = 0
      this.#listeners.error(error)
      state.sequencer.lose()
      this.#listeners.resync({ scope, reason: 'unavailable' })
      state.sequencer.release()
      return
    }
    // refused for good (FORBIDDEN, INVALID_SCOPE, LIMIT…): the client no longer follows the scope,
    // and leaves its room should the server still have it there
    this.#drop(state)
    if (this.#link.connected) this.#leaveQuietly(scope)
    this.#listeners.error(error)
    this.#listeners.resync({ scope, reason: 'forbidden' })
  }

  /** Asks the server for everything after the position: replayed, or a resync. One at a time per scope. */
  #fetch (state: ScopeState): void {
    if (this.#link.closed || !this.#link.ready || state.pending) return
    this.#send(state, 'fetch')
  }

  /**
   * Asks the server to take the socket out of `scope`'s room; its events are dropped until the
   * answer. Each leave holds a token of its own, so an earlier answer does not end a later leave.
   */
  async #leave (scope: string): Promise<unknown> {
    const state = this.#get(scope)
    const token = {}
    state.leaving = token
    try {
      return await this.#link.ask(EVENT_UNSUBSCRIBE, { scope })
    } finally {
      if (state.leaving === token) state.leaving = undefined
      this.#tidy(state)
    }
  }

  /** A leave nobody waits for: a refusal or a lost connection changes nothing here. */
  #leaveQuietly (scope: string): void {
    this.#leave(scope).catch(() => {})
  }

  /** Stops a subscribe nobody waits for any more; a late acceptance is undone by `#send`. */
  #abandon (state: ScopeState): void {
    state.subscribed = false
    if (state.auto) return
    state.cancel()
    state.forget()
  }

  /** Stops following the scope: no request, no retry, no position, nothing held. */
  #drop (state: ScopeState): void {
    state.subscribed = false
    state.confirmed = false
    state.auto = false
    state.cancel()
    state.forget()
  }

  // --- the records ------------------------------------------------------------------------

  #receive (scope: string, entry: Entry): void {
    const state = this.#get(scope)
    state.sequencer.receive(entry)
    this.#tidy(state)
  }

  #get (scope: string): ScopeState {
    let state = this.#states.get(scope)
    if (state === undefined) this.#states.set(scope, state = new ScopeState(scope, this.#clock, (state) => this.#sequencerOf(state)))
    return state
  }

  /** Drops the record of a scope once nothing is left in it. */
  #tidy (state: ScopeState): void {
    if (state.idle && this.#states.get(state.scope) === state) this.#states.delete(state.scope)
  }

  #sequencerOf (state: ScopeState): Sequencer<Entry> {
    return new Sequencer<Entry>({
      clock: this.#clock,
      gapWaitMs: this.#settings.gapWaitMs,
      waiting: () => this.#handshake !== null || state.pending,
      deliver: (entry) => { this.#listeners.event(entry.event, entry.payload, entry.meta) },
      fetch: () => { this.#fetch(state) },
      moved: this.#moved,
      resync: (reason) => { this.#listeners.resync({ scope: state.scope, reason }) }
    })
  }
}
