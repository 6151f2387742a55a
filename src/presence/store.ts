import type { PresenceInfo, PresenceJoin, PresenceUser } from '../protocol.js'

/** One user's sockets in a scope on one node, as a flush writes them. */
export interface NodeCount {
  userId: string
  /** The node's sockets of the user in the scope: 0 when it has none left. */
  connections: number
  /** What others may see of the user: `presence.user(user)` as JSON. */
  info: string
}

/** What a write changed, when someone joined or left. */
export interface PresenceChange {
  joins: PresenceJoin[]
  leaves: string[]
  /** Present users after the change. */
  count: number
  /** One more than the scope's previous change; above every earlier version when the scope was empty. */
  version: number
  /** The scope was empty before the change. */
  fromEmpty: boolean
}

/** A scope as the store holds it. */
export interface StoredPresence {
  count: number
  /** The version of the latest change; for an empty scope, one that every later change is above. */
  version: number
  /** The first `max` users asked for, longest present first. */
  users: PresenceUser[]
}

/**
 * Where presence lives: every node's count of each user's sockets per scope. A user is present
 * while any node counts a socket of theirs. Nothing is kept for a scope nobody is in.
 */
export interface PresenceStore {
  /**
   * Sets `node`'s counts of some users of `scope` (absolute, so a write can be repeated). `held`:
   * whether `node` still has anyone in the scope after it.
   */
  write: (scope: string, node: string, counts: NodeCount[], held: boolean) => Promise<PresenceChange | null>
  /** Takes every count of `node` out of `scope` (the node died or is closing). */
  purge: (scope: string, node: string) => Promise<PresenceChange | null>
  read: (scope: string, max: number) => Promise<StoredPresence>
}

interface Present {
  info: PresenceInfo
  since: number
  /** Sockets per node. */
  nodes: Map<string, number>
}

interface Scope {
  version: number
  /** In the order they became present. */
  users: Map<string, Present>
}

/** Presence in this process: one node's scopes, for an app without Redis. */
export class MemoryPresenceStore implements PresenceStore {
  readonly #scopes = new Map<string, Scope>()
  readonly #now: () => number
  /** The highest version given out for any scope: a scope that empties and fills again starts above it. */
  #version = 0

  constructor (now: () => number) {
    this.#now = now
  }

  async write (scope: string, node: string, counts: NodeCount[]): Promise<PresenceChange | null> {
    let state = this.#scopes.get(scope)
    const joins: PresenceJoin[] = []
    const leaves: string[] = []
    for (const { userId, connections, info } of counts) {
      const present = state?.users.get(userId)
      if (present === undefined) {
        if (connections <= 0) continue
        if (state === undefined) this.#scopes.set(scope, state = { version: 0, users: new Map() })
        const since = this.#now()
        const join: PresenceJoin = { userId, info: JSON.parse(info) as PresenceInfo, since }
        state.users.set(userId, { info: join.info, since, nodes: new Map([[node, connections]]) })
        joins.push(join)
      } else if (connections > 0) {
        present.nodes.set(node, connections)
      } else {
        present.nodes.delete(node)
        if (present.nodes.size === 0) {
          state!.users.delete(userId)
          leaves.push(userId)
        }
      }
    }
    return this.#changed(scope, state, joins, leaves)
  }

  async purge (scope: string, node: string): Promise<PresenceChange | null> {
    const state = this.#scopes.get(scope)
    const leaves: string[] = []
    for (const [userId, present] of state?.users ?? []) {
      if (!present.nodes.delete(node) || present.nodes.size > 0) continue
      state!.users.delete(userId)
      leaves.push(userId)
    }
    return this.#changed(scope, state, [], leaves)
  }

  async read (scope: string, max: number): Promise<StoredPresence> {
    const state = this.#scopes.get(scope)
    if (state === undefined) return { count: 0, version: this.#version, users: [] }
    const users: PresenceUser[] = []
    for (const [userId, { info, since, nodes }] of state.users) {
      if (users.length >= max) break
      let connections = 0
      for (const count of nodes.values()) connections += count
      users.push({ userId, info, connections, since })
    }
    return { count: state.users.size, version: state.version, users }
  }

  #changed (scope: string, state: Scope | undefined, joins: PresenceJoin[], leaves: string[]): PresenceChange | null {
    if (state === undefined || joins.length + leaves.length === 0) return null
    const fromEmpty = state.version === 0
    state.version = fromEmpty ? this.#version + 1 : state.version + 1
    this.#version = Math.max(this.#version, state.version)
    if (state.users.size === 0) this.#scopes.delete(scope)
    return { joins, leaves, count: state.users.size, version: state.version, fromEmpty }
  }
}
