import type { FastifyBaseLogger } from 'fastify'
import type { RedisClient } from '../redis.js'
import type { Namespace } from 'socket.io'
import type { RealtimeClock } from '../clock.js'
import { FST_REALTIME_INVALID_SCOPE, FST_REALTIME_PRESENCE_UNAVAILABLE, FST_REALTIME_PRESENCE_UNTRACKED } from '../errors.js'
import type { NormalizedPresence } from '../options.js'
import { EVENT_PRESENCE_DIFF, ackError, isScope, type PresenceAnswer, type PresenceDiff, type PresenceSnapshot } from '../protocol.js'
import type { RealtimeServer, RealtimeSocket, RealtimeUser } from '../types.js'
import { cut, rateLimitedWarn, reply, withTimeout } from '../util.js'
import { KEY_TTL_MS, RedisPresenceStore } from './redis.js'
import { MemoryPresenceStore, type NodeCount, type PresenceChange, type PresenceStore, type StoredPresence } from './store.js'

/** What `presence.user(user)` may return, serialised. */
const MAX_INFO_BYTES = 1024

/** One scope as this node sees it: its own sockets there. */
interface LocalScope {
  /** Each local socket in the scope, with its user id. */
  sockets: Map<string, string>
  /** Each local user in the scope: their sockets on this node, and what others see of them (JSON). */
  users: Map<string, { sockets: number, info: string }>
  /** When this node last wrote the scope's Redis keys (system clock): they are refreshed before they expire. */
  writtenAt: number
}

/** With `redis`: the plugin's connection and the cluster's view of which nodes are alive. */
export interface PresenceLink {
  client: RedisClient
  /** Ids of the nodes whose heartbeat is fresh; null when there is no cluster. */
  liveNodes: () => Promise<string[] | null>
  /** How often to look for nodes that died. */
  sweepMs: number
}

/**
 * Who is in each tracked scope. This node counts its own sockets per scope and user, from the
 * adapter's `join-room`/`leave-room` events (so every way a socket comes and goes counts: connect,
 * subscribe, unsubscribe, `join`/`leave`, disconnect); changes are written to the store at most
 * once per `intervalMs`, and the store answers who joined or left, sent to the scope as one
 * `realtime:presence_diff`. With Redis, the counts of a node that dies are taken out by the
 * others once its heartbeat has expired.
 */
export class Presence {
  readonly #io: RealtimeServer
  readonly #nsp: Namespace
  readonly #nodeId: string
  readonly #options: NormalizedPresence | false
  readonly #log: FastifyBaseLogger
  readonly #clock: RealtimeClock
  readonly #warn: (details: object, message: string) => void
  #store: PresenceStore | null = null
  #redis: RedisPresenceStore | null = null
  readonly #local = new Map<string, LocalScope>()
  /** Users whose counts changed since the last write, by scope. */
  #dirty = new Map<string, Set<string>>()
  #timer: unknown
  #lastWrite = -Infinity
  #writing: Promise<void> | null = null
  /** Reads in flight by scope: a reconnect storm asking for one scope reads it once. */
  readonly #reading = new Map<string, Promise<StoredPresence>>()
  #sweeper: NodeJS.Timeout | undefined
  #sweeping: Promise<void> | null = null
  #closed = false

  constructor (io: RealtimeServer, nodeId: string, options: NormalizedPresence | false, log: FastifyBaseLogger, clock: RealtimeClock) {
    this.#io = io
    this.#nsp = io.of('/')
    this.#nodeId = nodeId
    this.#options = options
    this.#log = log
    this.#clock = clock
    this.#warn = rateLimitedWarn(log, 10_000, clock.now)
  }

  /** Whether presence is tracked for `scope`. */
  tracks (scope: string): boolean {
    const options = this.#options
    if (options === false) return false
    const colon = scope.indexOf(':')
    if (colon <= 0) return false
    const kind = scope.slice(0, colon)
    return (options.kinds === null ? kind !== 'user' : options.kinds.has(kind)) && isScope(scope)
  }

  /** Starts counting, at `ready`, once the adapter is in place (with `link`, the Redis one). */
  start (link: PresenceLink | null): void {
    if (this.#options === false) return
    if (link === null) {
      this.#store = new MemoryPresenceStore(this.#clock.now)
    } else {
      this.#store = this.#redis = new RedisPresenceStore(link.client, this.#nodeId)
      this.#sweep(link)
      this.#sweeper = setInterval(() => { this.#sweep(link) }, link.sweepMs)
      this.#sweeper.unref()
    }
    const adapter = this.#nsp.adapter
    adapter.on('join-room', (room: string, id: string) => { this.#joined(room, id) })
    adapter.on('leave-room', (room: string, id: string) => { this.#left(room, id) })
  }

  /** Answers `realtime:presence { scope }`: a snapshot, for a scope the socket is in. */
  answer (socket: RealtimeSocket, message: unknown, ack: unknown): void {
    const scope = (message as { scope?: unknown } | null)?.scope
    if (!isScope(scope)) return reply(ack, ackError('INVALID_SCOPE', 'A scope is kind:id, e.g. team:42'))
    if (!socket.rooms.has(scope)) return reply(ack, ackError('FORBIDDEN', `Not in ${scope}: subscribe to it first`))
    if (!this.tracks(scope)) return reply(ack, ackError('BAD_REQUEST', `Presence is not tracked for ${scope}`))
    this.#read(scope).then((stored) => {
      const answer: PresenceAnswer = { ok: true, ...this.#snapshot(scope, stored), version: stored.version }
      reply(ack, answer)
    }, (err: unknown) => {
      this.#warn({ err }, 'fastify-realtime: presence could not be read')
      reply(ack, ackError('UNAVAILABLE', 'Presence could not be read right now'))
    })
  }

  /** `fastify.realtime.presence(scope)`. */
  /** Users present on this node, one per user and tracked scope (the `presence_users` metric). */
  get localUsers (): number {
    let count = 0
    for (const local of this.#local.values()) count += local.users.size
    return count
  }

  async snapshot (scope: unknown): Promise<PresenceSnapshot> {
    if (!isScope(scope)) throw new FST_REALTIME_INVALID_SCOPE(cut(scope))
    if (this.#options === false) throw new FST_REALTIME_PRESENCE_UNTRACKED(scope, 'the presence option is off')
    if (!this.tracks(scope)) throw new FST_REALTIME_PRESENCE_UNTRACKED(scope, 'its kind is not in presence.kinds')
    let stored: StoredPresence
    try {
      stored = await this.#read(scope)
    } catch (err) {
      throw new FST_REALTIME_PRESENCE_UNAVAILABLE(scope, (err as Error).message)
    }
    return this.#snapshot(scope, stored)
  }

  /**
   * Stops writing; with Redis, takes this node's counts out at once (its users on other nodes
   * stay), so they need not wait for the heartbeat to expire.
   */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#clock.clearTimeout(this.#timer)
    clearInterval(this.#sweeper)
    await this.#writing
    await this.#sweeping
    if (this.#redis !== null) {
      try {
        await withTimeout(async () => { await this.#purge(this.#redis!, this.#nodeId) }, 2000, 'presence')
      } catch (err) {
        this.#log.debug({ err }, 'fastify-realtime: presence not taken out at close; other nodes do it once the heartbeat expires')
      }
    }
    this.#local.clear()
    this.#dirty.clear()
  }

  #joined (room: string, id: string): void {
    if (this.#closed || !this.tracks(room)) return
    const socket = this.#nsp.sockets.get(id) as RealtimeSocket | undefined
    const userId = socket?.data.userId
    if (socket === undefined || userId === undefined) return
    let local = this.#local.get(room)
    if (local === undefined) this.#local.set(room, local = { sockets: new Map(), users: new Map(), writtenAt: 0 })
    if (local.sockets.has(id)) return
    local.sockets.set(id, userId)
    const user = local.users.get(userId)
    if (user !== undefined) user.sockets++
    else local.users.set(userId, { sockets: 1, info: this.#info(socket.data.user, userId) })
    this.#mark(room, userId)
  }

  #left (room: string, id: string): void {
    const local = this.#local.get(room)
    const userId = local?.sockets.get(id)
    if (local === undefined || userId === undefined) return
    local.sockets.delete(id)
    const user = local.users.get(userId)
    if (user !== undefined && --user.sockets <= 0) local.users.delete(userId)
    if (local.sockets.size === 0) this.#local.delete(room)
    this.#mark(room, userId)
  }

  /** What others may see of `user`, as JSON: `presence.user(user)`, or `{ id }` when that is not usable. */
  #info (user: RealtimeUser, userId: string): string {
    try {
      const info = (this.#options as NormalizedPresence).user(user)
      if (info !== null && typeof info === 'object' && !Array.isArray(info)) {
        const json = JSON.stringify(info)
        if (Buffer.byteLength(json) <= MAX_INFO_BYTES) return json
      }
      this.#warn({ userId: cut(userId) }, 'fastify-realtime: presence.user(user) must return a JSON object of at most 1 KB; { id } is shown instead')
    } catch (err) {
      this.#warn({ err, userId: cut(userId) }, 'fastify-realtime: presence.user(user) failed; { id } is shown instead')
    }
    return JSON.stringify({ id: user.id })
  }

  #snapshot (scope: string, { count, users }: StoredPresence): PresenceSnapshot {
    return { scope, count, users, truncated: users.length < count }
  }

  #read (scope: string): Promise<StoredPresence> {
    const store = this.#store
    if (store === null) return Promise.reject(new Error('presence starts at ready'))
    let reading = this.#reading.get(scope)
    if (reading === undefined) {
      reading = store.read(scope, (this.#options as NormalizedPresence).maxListed)
      this.#reading.set(scope, reading)
      const done = (): void => { this.#reading.delete(scope) }
      reading.then(done, done)
    }
    return reading
  }

  // --- writes: at most one per intervalMs -------------------------------------------------

  #mark (scope: string, userId: string): void {
    let users = this.#dirty.get(scope)
    if (users === undefined) this.#dirty.set(scope, users = new Set())
    users.add(userId)
    this.#schedule()
  }

  #schedule (): void {
    if (this.#closed || this.#timer !== undefined || this.#writing !== null || this.#dirty.size === 0) return
    const wait = Math.max(0, this.#lastWrite + (this.#options as NormalizedPresence).intervalMs - this.#clock.now())
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined
      this.#flush()
    }, wait)
  }

  #flush (): void {
    if (this.#closed) return
    const batch = this.#dirty
    this.#dirty = new Map()
    this.#lastWrite = this.#clock.now()
    this.#writing = Promise.all([...batch].map(async ([scope, users]) => { await this.#write(scope, users) })).then(() => {
      this.#writing = null
      this.#schedule()
    })
  }

  /** Writes this node's counts of `users` in `scope`; on failure they are written again at the next turn. */
  async #write (scope: string, users: Set<string>): Promise<void> {
    const local = this.#local.get(scope)
    const counts: NodeCount[] = []
    for (const userId of users) {
      const user = local?.users.get(userId)
      counts.push({ userId, connections: user?.sockets ?? 0, info: user?.info ?? '{}' })
    }
    try {
      const change = await this.#store!.write(scope, this.#nodeId, counts, local !== undefined)
      if (local !== undefined) local.writtenAt = Date.now()
      if (change !== null) this.#emit(scope, change)
    } catch (err) {
      this.#warn({ err }, 'fastify-realtime: presence could not be written; trying again')
      for (const userId of users) this.#mark(scope, userId)
    }
  }

  #emit (scope: string, change: PresenceChange): void {
    const max = (this.#options as NormalizedPresence).maxListed
    const diff: PresenceDiff = {
      scope,
      joins: change.joins.length > max ? change.joins.slice(0, max) : change.joins,
      leaves: change.leaves,
      count: change.count,
      version: change.version
    }
    if (change.fromEmpty) diff.fromEmpty = true
    this.#io.to(scope).emit(EVENT_PRESENCE_DIFF, diff)
  }

  // --- Redis: nodes that died -------------------------------------------------------------

  /**
   * Takes out the counts of every node that holds presence but no longer has a fresh heartbeat,
   * and keeps this node's own keys from expiring. One sweep at a time.
   */
  #sweep (link: PresenceLink): void {
    if (this.#sweeping !== null || this.#closed) return
    this.#sweeping = this.#sweepOnce(link).catch((err: unknown) => {
      this.#log.debug({ err }, 'fastify-realtime: presence sweep incomplete; tried again at the next one')
    }).finally(() => { this.#sweeping = null })
  }

  async #sweepOnce (link: PresenceLink): Promise<void> {
    const redis = this.#redis!
    // the nodes are listed before the live ones are read: a node that registers in between has beaten already
    const { readded, nodes } = await redis.enlist()
    if (readded) this.#rewrite()
    const live = await link.liveNodes()
    if (live !== null) {
      const alive = new Set(live)
      for (const node of nodes) {
        if (node !== this.#nodeId && !alive.has(node)) await this.#purge(redis, node)
      }
    }
    const due = Date.now() - KEY_TTL_MS / 3
    const stale = [...this.#local].filter(([, local]) => local.writtenAt < due)
    if (stale.length === 0) return
    await redis.touch(stale.map(([scope]) => scope))
    const now = Date.now()
    for (const [, local] of stale) local.writtenAt = now
  }

  /** Another node took this one for dead and took its counts out: write them all again. */
  #rewrite (): void {
    for (const [scope, local] of this.#local) {
      for (const userId of local.users.keys()) this.#mark(scope, userId)
    }
  }

  async #purge (redis: RedisPresenceStore, node: string): Promise<void> {
    const scopes = await redis.scopesOf(node)
    await Promise.all(scopes.map(async (scope) => {
      const change = await redis.purge(scope, node)
      if (change !== null) this.#emit(scope, change)
    }))
    await redis.forget(node)
    if (node !== this.#nodeId && scopes.length > 0) this.#log.info({ node: cut(node), scopes: scopes.length }, 'fastify-realtime: presence of a node that stopped beating taken out')
  }
}
