import { userScope } from './protocol.js'
import type { RealtimeServer } from './types.js'

/**
 * Membership operations and counts across every node. This one acts on this node's sockets
 * only; the Redis-backed cluster implements the same interface across nodes.
 */
export interface Cluster {
  join: (userId: string, scope: string) => Promise<void>
  leave: (userId: string, scope: string) => Promise<void>
  disconnectUser: (userId: string) => Promise<void>
  /** Cluster-wide figures, or undefined on a single node. */
  counts: () => Promise<{ nodes: number, connections: number } | undefined>
  close: () => Promise<void>
}

export class LocalCluster implements Cluster {
  readonly #io: RealtimeServer

  constructor (io: RealtimeServer) {
    this.#io = io
  }

  async join (userId: string, scope: string): Promise<void> {
    this.#io.local.in(userScope(userId)).socketsJoin(scope)
  }

  async leave (userId: string, scope: string): Promise<void> {
    this.#io.local.in(userScope(userId)).socketsLeave(scope)
  }

  async disconnectUser (userId: string): Promise<void> {
    this.#io.local.in(userScope(userId)).disconnectSockets(true)
  }

  async counts (): Promise<undefined> {
    return undefined
  }

  async close (): Promise<void> {}
}
