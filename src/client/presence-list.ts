import type { PresenceDiff, PresenceInfo } from '../protocol.js'

/** A user present in a scope, as the client keeps them. */
export interface PresenceMember {
  userId: string
  /** What the server's `presence.user(user)` shows of them. */
  info: PresenceInfo
  /** When they became present (ms since the Unix epoch, the server's clock). */
  since: number
}

/** Who is in a scope, as `client.presence(scope)` and `onPresence` give it. */
export interface PresenceState {
  scope: string
  /** Every present user, listed or not (exact). */
  count: number
  /** Those the server listed (at most its `presence.maxListed`), longest present first. */
  users: PresenceMember[]
  /** True when `users` does not list everyone. */
  truncated: boolean
}

/** A snapshot as `realtime:presence` answers it (checked by the caller). */
export interface PresenceSnapshotAck {
  count: number
  version: number
  users: Array<{ userId: string, info: PresenceInfo, since: number }>
}

/** What became of a diff or a snapshot: the list changed, nothing changed, or a diff before it is missing. */
export type PresenceOutcome = 'applied' | 'old' | 'ahead'

/** Diffs held for a missing one before it; beyond this, the oldest go (a snapshot replaces them anyway). */
const MAX_HELD = 64

/**
 * One scope's presence list: a snapshot, kept up to date by diffs applied in version order.
 * A diff applies to the list whose version is one below its own (or, marked `fromEmpty`, to an
 * empty list of any lower version); older ones are dropped, later ones held until the missing
 * one comes or the caller asks for a snapshot. No socket, no timers.
 */
export class PresenceList {
  readonly scope: string
  /** Whether a snapshot has arrived: until then every diff is held. */
  known = false
  #version = 0
  #count = 0
  /** In the order they became present. */
  readonly #users = new Map<string, PresenceMember>()
  readonly #held = new Map<number, PresenceDiff>()

  constructor (scope: string) {
    this.scope = scope
  }

  /** True when diffs wait for one that has not come. */
  get waiting (): boolean {
    return this.#held.size > 0
  }

  state (): PresenceState {
    const users = [...this.#users.values()].map((member) => ({ ...member }))
    return { scope: this.scope, count: this.#count, users, truncated: users.length < this.#count }
  }

  /** Replaces the list with a snapshot, then applies what was held after it. */
  snapshot (ack: PresenceSnapshotAck): PresenceOutcome {
    this.known = true
    this.#version = ack.version
    this.#count = ack.count
    this.#users.clear()
    for (const { userId, info, since } of ack.users) this.#users.set(userId, { userId, info, since })
    this.#drain()
    return this.waiting ? 'ahead' : 'applied'
  }

  apply (diff: PresenceDiff): PresenceOutcome {
    if (!this.known) {
      this.#hold(diff)
      return 'ahead'
    }
    if (diff.version <= this.#version) return 'old'
    if (!this.#follows(diff)) {
      this.#hold(diff)
      return 'ahead'
    }
    this.#apply(diff)
    this.#drain()
    return 'applied'
  }

  /** Forgets everything: the list is unknown until the next snapshot. */
  reset (): void {
    this.known = false
    this.#held.clear()
  }

  /** Drops the held diffs (a snapshot is on its way, or the connection went). */
  dropHeld (): void {
    this.#held.clear()
  }

  #follows (diff: PresenceDiff): boolean {
    return diff.version === this.#version + 1 || (diff.fromEmpty === true && this.#count === 0)
  }

  #apply (diff: PresenceDiff): void {
    for (const userId of diff.leaves) this.#users.delete(userId)
    for (const { userId, info, since } of diff.joins) this.#users.set(userId, { userId, info, since })
    this.#count = diff.count
    this.#version = diff.version
  }

  #hold (diff: PresenceDiff): void {
    this.#held.set(diff.version, diff)
    if (this.#held.size > MAX_HELD) this.#held.delete(Math.min(...this.#held.keys()))
  }

  #drain (): void {
    for (;;) {
      for (const version of [...this.#held.keys()]) {
        if (version <= this.#version) this.#held.delete(version)
      }
      const next = [...this.#held.values()].sort((a, b) => a.version - b.version).find((diff) => this.#follows(diff))
      if (next === undefined) return
      this.#held.delete(next.version)
      this.#apply(next)
    }
  }
}
