import { EVENT_PRESENCE, type PresenceDiff } from '../protocol.js'
import { RETRYABLE, RealtimeClientError, accepted, refusal } from './errors.js'
import type { Listeners } from './listeners.js'
import type { Settings } from './options.js'
import { PresenceList, type PresenceSnapshotAck, type PresenceState } from './presence-list.js'
import type { Link } from './scopes.js'
import { backoff, type Clock, type TimerHandle } from './timers.js'

type PresenceHandler = (state: PresenceState) => unknown

/** A scope whose presence the app follows. */
interface Followed {
  list: PresenceList
  handlers: Set<PresenceHandler>
  /** A `realtime:presence` is in flight. */
  asking: boolean
  /** Asked for again while one was in flight. */
  again: boolean
  /** Waiting for a missing diff before asking for a snapshot instead. */
  gapTimer: TimerHandle | undefined
  retryTimer: TimerHandle | undefined
  attempts: number
}

export interface PresenceOptions {
  link: Link
  listeners: Listeners
  settings: Settings
  clock: Clock
}

function isSnapshot (ack: unknown): ack is PresenceSnapshotAck {
  const { count, version, users } = ack as Partial<PresenceSnapshotAck>
  return Number.isSafeInteger(count) && typeof version === 'number' && Array.isArray(users) &&
    users.every((user) => typeof user?.userId === 'string')
}

function isDiff (message: unknown): message is PresenceDiff {
  if (message === null || typeof message !== 'object') return false
  const { scope, joins, leaves, count, version } = message as Partial<PresenceDiff>
  return typeof scope === 'string' && Array.isArray(joins) && Array.isArray(leaves) &&
    Number.isSafeInteger(count) && typeof version === 'number' &&
    joins.every((join) => typeof join?.userId === 'string') && leaves.every((userId) => typeof userId === 'string')
}

/**
 * The presence of the scopes the app follows (`client.presence(scope)`, `onPresence`): a snapshot
 * asked for once the scope is joined on the current connection (after every reconnect too),
 * kept up to date by `realtime:presence_diff`, a fresh snapshot when a diff went missing.
 */
export class Presence {
  readonly #followed = new Map<string, Followed>()
  /** Scopes joined on the current connection: `realtime:ready`'s, then each subscribe accepted. */
  readonly #joined = new Set<string>()
  readonly #link: Link
  readonly #listeners: Listeners
  readonly #settings: Settings
  readonly #clock: Clock

  constructor ({ link, listeners, settings, clock }: PresenceOptions) {
    this.#link = link
    this.#listeners = listeners
    this.#settings = settings
    this.#clock = clock
  }

  /** The scope's list, once known; following starts with the first call. */
  state (scope: string): PresenceState | undefined {
    const followed = this.#follow(scope)
    return followed.list.known ? followed.list.state() : undefined
  }

  on (scope: string, handler: PresenceHandler): () => void {
    const followed = this.#follow(scope)
    followed.handlers.add(handler)
    return () => { followed.handlers.delete(handler) }
  }

  /** `realtime:ready`: its scopes are joined. */
  ready (message: unknown): void {
    const scopes = (message as { scopes?: unknown } | null)?.scopes
    for (const scope of Array.isArray(scopes) ? scopes : []) {
      if (typeof scope === 'string') this.joined(scope)
    }
  }

  /** `scope` was joined on the current connection (a subscribe, or a restore, accepted). */
  joined (scope: string): void {
    this.#joined.add(scope)
    const followed = this.#followed.get(scope)
    if (followed !== undefined) this.#ask(scope, followed)
  }

  /** The app left `scope`: its list is unknown until it is joined again. */
  left (scope: string): void {
    this.#joined.delete(scope)
    const followed = this.#followed.get(scope)
    if (followed === undefined) return
    this.#stop(followed)
    followed.list.reset()
  }

  /** The connection went: lists stay as they were until the next snapshot; nothing is asked meanwhile. */
  lost (): void {
    this.#joined.clear()
    for (const followed of this.#followed.values()) {
      this.#stop(followed)
      followed.asking = false
      followed.again = false
      followed.list.dropHeld()
    }
  }

  close (): void {
    this.lost()
  }

  diff (message: unknown): void {
    if (this.#link.closed || !isDiff(message)) return
    const followed = this.#followed.get(message.scope)
    if (followed === undefined) return
    const outcome = followed.list.apply(message)
    if (outcome === 'applied') this.#notify(followed)
    this.#settle(message.scope, followed)
  }

  #follow (scope: string): Followed {
    let followed = this.#followed.get(scope)
    if (followed === undefined) {
      followed = { list: new PresenceList(scope), handlers: new Set(), asking: false, again: false, gapTimer: undefined, retryTimer: undefined, attempts: 0 }
      this.#followed.set(scope, followed)
      this.#ask(scope, followed)
    }
    return followed
  }

  /** Asks for a snapshot, once the scope is joined; one request at a time per scope. */
  #ask (scope: string, followed: Followed): void {
    if (this.#link.closed || !this.#link.ready || !this.#joined.has(scope)) return
    if (followed.asking) {
      followed.again = true
      return
    }
    this.#stop(followed)
    followed.asking = true
    this.#link.ask(EVENT_PRESENCE, { scope }).then((ack) => {
      followed.asking = false
      // the app left the scope while the answer was on its way: it must not bring the list back
      if (!this.#joined.has(scope)) {
        followed.again = false
        return
      }
      if (accepted(ack) && isSnapshot(ack)) {
        followed.attempts = 0
        followed.list.snapshot(ack)
        this.#notify(followed)
        this.#settle(scope, followed)
      } else {
        this.#refused(scope, followed, refusal(ack, `Presence of ${scope} refused`, scope))
      }
      if (followed.again) {
        followed.again = false
        this.#ask(scope, followed)
      }
    }, (error: RealtimeClientError) => {
      followed.asking = false
      followed.again = false
      // a lost connection asks again at the next ready
      if (error.code === 'TIMEOUT') this.#retry(scope, followed)
    })
  }

  #refused (scope: string, followed: Followed, error: RealtimeClientError): void {
    if (RETRYABLE.has(error.code)) {
      this.#retry(scope, followed)
      return
    }
    if (error.code === 'FORBIDDEN') {
      // no longer in the scope on the server: asked again when it is joined again
      this.#joined.delete(scope)
      followed.list.reset()
      return
    }
    this.#listeners.error(error)
  }

  #retry (scope: string, followed: Followed): void {
    const delay = backoff(followed.attempts++, this.#settings.retryMinMs, this.#settings.retryMaxMs)
    followed.retryTimer = this.#clock.setTimeout(() => {
      followed.retryTimer = undefined
      this.#ask(scope, followed)
    }, delay)
  }

  /** A diff is missing: it has `gapWaitMs` to arrive, then a snapshot replaces the list. */
  #settle (scope: string, followed: Followed): void {
    if (!followed.list.waiting || !followed.list.known) {
      this.#clock.clearTimeout(followed.gapTimer)
      followed.gapTimer = undefined
      return
    }
    if (followed.gapTimer !== undefined) return
    followed.gapTimer = this.#clock.setTimeout(() => {
      followed.gapTimer = undefined
      this.#ask(scope, followed)
    }, this.#settings.gapWaitMs)
  }

  #stop (followed: Followed): void {
    this.#clock.clearTimeout(followed.gapTimer)
    this.#clock.clearTimeout(followed.retryTimer)
    followed.gapTimer = undefined
    followed.retryTimer = undefined
  }

  #notify (followed: Followed): void {
    if (followed.handlers.size === 0) return
    const state = followed.list.state()
    for (const handler of [...followed.handlers]) this.#listeners.call('onPresence', state.scope, handler, state)
  }
}
