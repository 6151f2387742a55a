import type { Socket } from 'socket.io-client'
import {
  EVENT_PRESENCE_DIFF,
  EVENT_RESYNC,
  EVENT_REVOKED,
  EVENT_SKIP,
  RESERVED_PREFIX,
  type EventMeta,
  type Position,
  type RealtimeEventName,
  type RealtimePayload
} from '../protocol.js'
import { Connection } from './connection.js'
import type { RealtimeClientError } from './errors.js'
import { Listeners, type ClientState, type EventHandler, type ResyncNotice } from './listeners.js'
import { settingsOf, type ConnectOptions } from './options.js'
import { Presence } from './presence.js'
import type { PresenceState } from './presence-list.js'
import { Scopes } from './scopes.js'
import { SavedPositions } from './storage.js'
import { realClock } from './timers.js'

/**
 * A connection to a fastify-realtime server that keeps its place in every scope: it sends
 * `since` on every reconnect, restores its subscriptions, drops repeats, and hands events to
 * your handlers in `seq` order per scope — or tells you, through `onResync`, to refetch.
 */
export class RealtimeClient {
  readonly #listeners = new Listeners()
  readonly #saved: SavedPositions
  readonly #connection: Connection
  readonly #scopes: Scopes
  readonly #presence: Presence

  constructor (url: string, options: ConnectOptions = {}) {
    const settings = settingsOf(options)
    const listeners = this.#listeners
    this.#saved = new SavedPositions(options.storage, settings.storageKey, () => this.positions, (error) => { listeners.error(error) })
    this.#connection = new Connection(url, options, settings, realClock, listeners, {
      since: () => this.positions,
      connected: (since) => { this.#scopes.handshake(since) },
      ready: (message) => {
        this.#scopes.ready(message)
        this.#presence.ready(message)
      },
      lost: () => {
        this.#scopes.reset()
        this.#presence.lost()
      },
      refused: (code, message) => { this.#scopes.refused(code, message) }
    })
    this.#presence = new Presence({ link: this.#connection, listeners, settings, clock: realClock })
    this.#scopes = new Scopes({
      link: this.#connection,
      listeners,
      settings,
      clock: realClock,
      moved: () => { this.#saved.changed() },
      joined: (scope) => { this.#presence.joined(scope) }
    })
    this.#scopes.restore(this.#saved.load())
    const socket = this.#connection.socket
    socket.on(EVENT_RESYNC, (notice: unknown) => { this.#scopes.resync(notice) })
    socket.on(EVENT_REVOKED, (notice: unknown) => { this.#scopes.revoked(notice) })
    socket.on(EVENT_PRESENCE_DIFF, (diff: unknown) => { this.#presence.diff(diff) })
    socket.onAny((event: string, payload: unknown, meta: unknown) => {
      if (event === EVENT_SKIP) this.#scopes.skip(payload)
      else if (!event.startsWith(RESERVED_PREFIX)) this.#scopes.event(event, payload, meta)
    })
  }

  /** The underlying socket.io-client socket (its `id` is what `broadcast(…, { except })` takes). */
  get socket (): Socket {
    return this.#connection.socket
  }

  /** Where the connection stands (see ClientState). */
  get state (): ClientState {
    return this.#connection.state
  }

  /** Last position seen per scope (a copy). */
  get positions (): Record<string, Position> {
    return this.#scopes.positions()
  }

  /** Scopes asked for with `subscribe` and not given up (restored after every reconnect). */
  get subscriptions (): string[] {
    return this.#scopes.subscriptions()
  }

  /** Handles `event`, in seq order per scope; returns a function that removes the handler. */
  on<E extends RealtimeEventName>(event: E, handler: (payload: RealtimePayload<E>, meta: EventMeta) => void): () => void {
    this.#listeners.on(event, handler as EventHandler)
    return () => { this.off(event, handler) }
  }

  /** Removes a handler added with `on`. */
  off<E extends RealtimeEventName>(event: E, handler: (payload: RealtimePayload<E>, meta: EventMeta) => void): void {
    this.#listeners.off(event, handler as EventHandler)
  }

  /**
   * Called when a scope's missed events cannot be replayed (`gap`, `epoch`, `unavailable`):
   * refetch that scope over HTTP; or when the client no longer follows it (`forbidden`: a
   * restore was refused; `revoked`: a refreshed token no longer grants it): stop showing it.
   */
  onResync (handler: (notice: ResyncNotice) => void): () => void {
    return this.#listeners.onResync(handler)
  }

  /**
   * Called for refusals and failures: the connection refused (`client.state` then says whether
   * the client tries again), a subscription the server no longer restores, a token that could
   * not be fetched or refreshed, a handler of yours that threw. With no onError handler, a
   * handler of yours that throws is logged with `console.error`; nothing else is.
   */
  onError (handler: (error: RealtimeClientError) => void): () => void {
    return this.#listeners.onError(handler)
  }

  /** Called on every change of `state`; returns a function that removes the handler. */
  onState (handler: (state: ClientState) => void): () => void {
    return this.#listeners.onState(handler)
  }

  /**
   * Subscribes to `scope` (restored after every reconnect) and catches up from the last known
   * position; replayed events reach your handlers before this resolves. Resolves with the
   * position; rejects with a RealtimeClientError carrying the ack's code, or `TIMEOUT` when no
   * answer came within `timeoutMs` (counted from the call, connecting included).
   */
  subscribe (scope: string): Promise<Position | null> {
    return this.#scopes.subscribe(scope)
  }

  /** Leaves `scope` and forgets its position; rejects a subscribe to it still waiting (`UNSUBSCRIBED`). */
  async unsubscribe (scope: string): Promise<void> {
    this.#presence.left(scope)
    await this.#scopes.unsubscribe(scope)
  }

  /**
   * Who is in `scope` (a scope the client is in, whose presence the server tracks), kept up to
   * date by the server's diffs; undefined until the first snapshot. The first call starts
   * following the scope: a snapshot is asked for at once (or when the scope is joined), and again
   * after every reconnect.
   *
   * @example
   * const team = client.presence('team:42') // undefined at first
   * team?.users.map((user) => user.info)
   */
  presence (scope: string): PresenceState | undefined {
    return this.#presence.state(scope)
  }

  /**
   * Calls `handler` with the scope's presence every time it changes (the first snapshot included),
   * following the scope from now on; returns a function that removes the handler.
   *
   * @example
   * client.onPresence('team:42', ({ count, users }) => render(users, count))
   */
  onPresence (scope: string, handler: (state: PresenceState) => void): () => void {
    return this.#presence.on(scope, handler)
  }

  /** Disconnects and stops every timer; positions are saved as they stand. */
  close (): void {
    if (this.#connection.closed) return
    this.#connection.close()
    this.#scopes.close()
    this.#presence.close()
    this.#saved.flush()
    this.#connection.disconnect()
  }
}
