import type { FastifyBaseLogger } from 'fastify'
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter'
import type { Cluster as RedisCluster, Redis } from 'ioredis'
import {
  FST_REALTIME_CLUSTER_TIMEOUT,
  FST_REALTIME_CLUSTER_UNAVAILABLE,
  FST_REALTIME_INVALID_SCOPE,
  FST_REALTIME_INVALID_USER_ID,
  FST_REALTIME_REDIS_UNAVAILABLE
} from './errors.js'
import { isScope, userIdString, userScope } from './protocol.js'
import type { RealtimeServer, RealtimeStats } from './types.js'
import { SHARDED_EVENTS, writable } from './internals.js'
import { compareIds, OperationsLog } from './ops-log.js'
import { isCluster, keyPrefixOf, Subscriptions, type RedisClient } from './redis.js'
import { cut, withTimeout } from './util.js'

/** Server-side event the nodes exchange for membership operations. */
const CLUSTER_EVENT = 'realtime:cluster'

/**
 * The adapter's channel key, under the client's keyPrefix: `<keyPrefix>fastify-realtime#/#…` and
 * `<keyPrefix>fastify-realtime-request#/#`. Not the adapter's default `socket.io`, which another
 * Socket.IO deployment on the same Redis would share (its servers would count as nodes). On a
 * Redis Cluster it is the sharded adapter's `channelPrefix`: `<keyPrefix>fastify-realtime#/#`,
 * and one channel per scope with sockets, `<keyPrefix>fastify-realtime#/#<scope>#`.
 */
export const CHANNEL_KEY = 'fastify-realtime'

/** The SPEC's bound on how old the cluster figures may be. */
const STALE_LIMIT_MS = 10_000

type Operation =
  | { op: 'join', userId: string, scope: string }
  | { op: 'leave', userId: string, scope: string }
  | { op: 'disconnect', userId: string }

/** What a node answers to an operation: its id, and whether it applied it. */
interface Answer {
  node: string
  applied: boolean
}

export interface ClusterCounts {
  nodes: number
  connections: number
}

export interface ClusterOptions {
  /** How long an operation waits for every other node. */
  timeoutMs: number
  /** How often this node writes its connection count. */
  heartbeatMs: number
  /** A node silent for this long no longer counts. */
  nodeTtlMs: number
  /**
   * Called when this node's Redis subscriber is back after being down (connection lost, or a
   * subscribe refused) and every channel is subscribed again. Membership operations other nodes
   * issued meanwhile never reached this node: the callee re-checks its local sockets' scopes.
   * Not called for the first connection. A throw or rejection is logged.
   */
  onResubscribed?: () => unknown
  /** Called when this node's Redis subscriber connection closes: from now on it may miss what other nodes send. */
  onAway?: () => void
  /** Membership operations kept in the shared record (a capped Redis stream). @default 10000 */
  operations?: number
}

/** A Redis stream id, as the record of operations gives them. */
const STREAM_ID = /^\d{1,20}-\d{1,20}$/

// Heartbeats, under the client's keyPrefix: a sorted set of node ids by last beat (Redis TIME)
// and a hash of their connection counts. Reading them costs O(nodes), never a fetchSockets().
// One hash tag: on a Redis Cluster both are in one slot, so each script touches one master.
const NODES_KEY = 'rt:{cluster}:nodes'
const COUNTS_KEY = 'rt:{cluster}:node-connections'

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`
// KEYS: nodes, counts. ARGV: node id, connections, node ttl ms.
// Both keys expire a node ttl after the last beat of any node, so a cluster that is gone leaves nothing.
const HEARTBEAT = `${NOW}
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if #stale > 0 then
  redis.call('ZREM', KEYS[1], unpack(stale))
  redis.call('HDEL', KEYS[2], unpack(stale))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
`
// KEYS: nodes, counts. ARGV: node ttl ms.
const COUNTS = `${NOW}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
local total = 0
if #live > 0 then
  for _, count in ipairs(redis.call('HMGET', KEYS[2], unpack(live))) do
    total = total + (tonumber(count) or 0)
  end
end
return { #live, total }
`
// KEYS: nodes. ARGV: node ttl ms.
const LIVE = `${NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
`

type ClusterClient = RedisClient & {
  realtimeHeartbeat: (nodes: string, counts: string, nodeId: string, connections: number, ttlMs: number) => Promise<number>
  realtimeCounts: (nodes: string, counts: string, ttlMs: number) => Promise<[number, number]>
  realtimeLiveNodes: (nodes: string, ttlMs: number) => Promise<string[]>
}

/** An operation from another node, or null when it is not one this node knows. */
function parseOperation (value: unknown): Operation | null {
  if (value === null || typeof value !== 'object') return null
  const { op, userId, scope } = value as Record<string, unknown>
  if (typeof userId !== 'string' || userIdString(userId) !== userId) return null
  if (op === 'disconnect') return { op, userId }
  if (op !== 'join' && op !== 'leave') return null
  // user scopes are fixed, whatever another node asks
  if (!isScope(scope) || scope.startsWith('user:')) return null
  return { op, userId, scope }
}

/** What an operation acts on: a later operation on the same subject supersedes it. */
function subjectOf (operation: Operation): string {
  return operation.op === 'disconnect' ? operation.userId : `${operation.userId}\u0000${operation.scope}`
}

function userIdOf (userId: unknown): string {
  const id = userIdString(userId)
  if (id === null) throw new FST_REALTIME_INVALID_USER_ID(cut(userId))
  return id
}

function memberScope (scope: unknown): string {
  // user scopes are fixed: every socket is in its own and no other
  if (!isScope(scope) || scope.startsWith('user:')) throw new FST_REALTIME_INVALID_SCOPE(cut(scope))
  return scope
}

/** The node id in an answer that says the operation was applied, or null. */
function appliedBy (answer: unknown): string | null {
  if (answer === null || typeof answer !== 'object') return null
  const { node, applied } = answer as Partial<Answer>
  return typeof node === 'string' && applied === true ? node : null
}

interface Link {
  pub: ClusterClient
  subscriptions: Subscriptions
  /** The shared record of membership operations, for a node whose subscriber was away. */
  ops: OperationsLog
  /** Stops listening for the subscriber's close. */
  unwatch: () => void
  options: ClusterOptions
  /** How old the last good read of the counts may be and still be reported. */
  staleAfterMs: number
}

/**
 * Membership operations (join, leave, disconnect a user) and counts across every node.
 * Alone it acts on this node; once `connect`ed to Redis it fans out through the official
 * Socket.IO Redis adapter and resolves only when every live node has applied the operation.
 */
export class Cluster {
  readonly #io: RealtimeServer
  readonly #nodeId: string
  readonly #log: FastifyBaseLogger
  #link: Link | null = null
  /**
   * From an outage of the subscriber until the operations missed in it are applied: the newest id
   * applied live per user and scope (per user for a disconnect), so a missed operation never
   * undoes a later one that arrived first (a missed join after a live leave).
   */
  #appliedLive: Map<string, string> | null = null
  #heartbeat: NodeJS.Timeout | undefined
  #lastCounts: ClusterCounts | undefined
  #lastCountsAt = 0
  readonly #onRemoved: (userId: string, disconnected: boolean) => void

  /**
   * `onRemoved` hears every leave and disconnect applied on this node (issued here or on another
   * node), so authorizations still in flight for that user are not answered from stale grants.
   */
  constructor (io: RealtimeServer, nodeId: string, log: FastifyBaseLogger, onRemoved: (userId: string, disconnected: boolean) => void = () => {}) {
    this.#io = io
    this.#nodeId = nodeId
    this.#log = log
    this.#onRemoved = onRemoved
    // Called by the adapter with whatever another node (or anything else that can publish on
    // the channel) sent: checked here, and nothing thrown back into the adapter.
    io.of('/').on(CLUSTER_EVENT, (message: unknown, ack?: unknown) => {
      let applied = false
      let joined = false
      try {
        const operation = parseOperation(message)
        if (operation === null) {
          const op = (message as { op?: unknown } | null)?.op
          this.#log.debug({ op: typeof op === 'string' ? cut(op) : typeof op }, 'fastify-realtime: ignored a cluster operation it does not know')
        } else {
          this.#apply(operation)
          applied = true
          joined = operation.op === 'join'
          const id = (message as { id?: unknown }).id
          if (typeof id === 'string' && STREAM_ID.test(id)) this.#seen(operation, id)
        }
      } catch (err) {
        this.#log.warn({ err }, 'fastify-realtime: a cluster operation failed on this node')
      }
      if (typeof ack !== 'function') return
      const answer = (): void => {
        try {
          ack({ node: this.#nodeId, applied } satisfies Answer)
        } catch (err) {
          this.#log.debug({ err }, 'fastify-realtime: could not answer a cluster operation')
        }
      }
      // a join is applied once this node listens on the scope's channel (one per room on a cluster)
      if (joined) this.listening().then(answer, answer)
      else answer()
    })
  }

  /**
   * Resolves once this node listens on the channels of the rooms joined so far (at once with one
   * channel for every room), or after the operations' timeout with a Redis master away.
   */
  async listening (): Promise<void> {
    const link = this.#link
    if (link === null) return
    await withTimeout(async () => { await link.subscriptions.settled() }, link.options.timeoutMs, 'Redis channels').catch(() => {})
  }

  /**
   * Joins the cluster: `pub` carries broadcasts, heartbeats and requests; `sub` listens.
   * Both are the plugin's own connections (their key prefix checked by `connectRedis`), and both must be ready. Rejects (leaving nothing
   * running) when the channels cannot be subscribed or the first heartbeat cannot be written.
   */
  async connect (pub: RedisClient, sub: RedisClient, options: ClusterOptions): Promise<void> {
    const keyPrefix = keyPrefixOf(pub)
    const sharded = isCluster(pub)
    if (sharded) this.#guardShardedPublish(pub, keyPrefix)
    else this.#guardPublish(pub)
    pub.defineCommand('realtimeHeartbeat', { numberOfKeys: 2, lua: HEARTBEAT })
    pub.defineCommand('realtimeCounts', { numberOfKeys: 2, lua: COUNTS })
    pub.defineCommand('realtimeLiveNodes', { numberOfKeys: 1, lua: LIVE })
    const subscriptions = new Subscriptions(sub, this.#log, () => { this.#resubscribed(options) })
    const ops = new OperationsLog(pub, options.operations ?? 10_000)
    const onAway = (): void => {
      ops.away()
      this.#appliedLive ??= new Map()
      options.onAway?.()
    }
    sub.on('close', onAway)
    // a Cluster's subscriber may lose one master's connection alone (its shard channels)
    if (sharded) sub.on(SHARDED_EVENTS.dropped, onAway)
    const link: Link = {
      pub: pub as ClusterClient,
      subscriptions,
      ops,
      unwatch: () => {
        sub.off('close', onAway)
        sub.off(SHARDED_EVENTS.dropped, onAway)
      },
      options,
      // the figures a node writes are up to heartbeatMs old already
      staleAfterMs: Math.max(0, Math.min(2 * options.heartbeatMs, STALE_LIMIT_MS - options.heartbeatMs))
    }
    this.#link = link
    try {
      this.#io.adapter(sharded
        // 'dynamic': one channel per scope, so a broadcast reaches only the nodes with sockets in
        // it, and the channels of all scopes spread over every master (operations and requests
        // keep to the namespace's own channel, which every node subscribes)
        ? createShardedAdapter(pub, sub, { channelPrefix: `${keyPrefix}${CHANNEL_KEY}`, subscriptionMode: 'dynamic' })
        : createAdapter(pub as Redis, sub as Redis, { key: `${keyPrefix}${CHANNEL_KEY}`, requestsTimeout: options.timeoutMs }))
      if (!await subscriptions.settled()) throw new FST_REALTIME_REDIS_UNAVAILABLE('the cluster channels could not be subscribed')
      // where this node stands in the record of operations: it hears every later one
      await ops.start()
      // subscribed before the first beat: a node that others count as live hears their operations
      await this.#beat()
    } catch (err) {
      subscriptions.close()
      link.unwatch()
      this.#link = null
      if ((err as { code?: string }).code === 'FST_REALTIME_REDIS_UNAVAILABLE') throw err
      throw new FST_REALTIME_REDIS_UNAVAILABLE((err as Error).message)
    }
    this.#heartbeat = setInterval(() => {
      subscriptions.restore()
      this.#beat().catch((err: unknown) => { this.#log.debug({ err }, 'fastify-realtime: heartbeat not written') })
    }, options.heartbeatMs)
    this.#heartbeat.unref()
  }

  /** Joins every socket of `userId` to `scope`, on every node. Rejects with a coded error for a bad id or scope. */
  async join (userId: unknown, scope: unknown): Promise<void> {
    await this.#run({ op: 'join', userId: userIdOf(userId), scope: memberScope(scope) })
  }

  async leave (userId: unknown, scope: unknown): Promise<void> {
    await this.#run({ op: 'leave', userId: userIdOf(userId), scope: memberScope(scope) })
  }

  async disconnectUser (userId: unknown): Promise<void> {
    await this.#run({ op: 'disconnect', userId: userIdOf(userId) })
  }

  /**
   * After this node's subscriber was away: applies on this node, oldest first, the operations other
   * nodes recorded meanwhile that it has not applied (each is idempotent on local sockets).
   * Resolves with how many were applied, or null when the record no longer reaches back to where
   * the outage began (trimmed, or lost with Redis): the caller must re-check memberships then.
   * Rejects when Redis does not answer.
   */
  async applyMissed (): Promise<number | null> {
    const link = this.#link
    if (link === null) return 0
    try {
      const missed = await link.ops.missed()
      if (missed === null) return null
      let applied = 0
      for (const { id, data } of missed) {
        let operation: Operation | null = null
        try {
          operation = parseOperation(JSON.parse(data))
        } catch {
          operation = null
        }
        link.ops.seen(id)
        if (operation === null) continue
        const later = this.#appliedLive?.get(subjectOf(operation))
        if (later !== undefined && compareIds(later, id) > 0) continue
        this.#apply(operation)
        applied++
      }
      return applied
    } finally {
      this.#appliedLive = null
    }
  }

  /** An operation applied here, with its id in the shared record. */
  #seen (operation: Operation, id: string): void {
    this.#link?.ops.seen(id)
    const live = this.#appliedLive
    if (live === null) return
    const subject = subjectOf(operation)
    const known = live.get(subject)
    if (known === undefined || compareIds(id, known) > 0) live.set(subject, id)
  }

  /** This node's connections, and the cluster's figures when there is a cluster (the figures health shows). */
  async stats (): Promise<RealtimeStats> {
    const node = { id: this.#nodeId, connections: this.#io.of('/').sockets.size }
    const counts = await this.counts()
    return counts === undefined ? { node } : { node, cluster: counts }
  }

  /**
   * Live nodes and their connections from the heartbeats; undefined on a single node, and when
   * Redis has not answered for longer than the figures may be stale.
   */
  async counts (): Promise<ClusterCounts | undefined> {
    const link = this.#link
    if (link === null) return undefined
    try {
      const [nodes, connections] = await link.pub.realtimeCounts(NODES_KEY, COUNTS_KEY, link.options.nodeTtlMs)
      this.#lastCounts = { nodes: Number(nodes), connections: Number(connections) }
      this.#lastCountsAt = Date.now()
      return this.#lastCounts
    } catch (err) {
      this.#log.debug({ err }, 'fastify-realtime: cluster counts unavailable')
    }
    // a blip keeps the last figures; a longer outage leaves them out rather than report them stale
    if (this.#lastCounts !== undefined && Date.now() - this.#lastCountsAt <= link.staleAfterMs) return this.#lastCounts
    return undefined
  }

  /**
   * Ids of the live nodes: those whose heartbeat is younger than `nodeTtlMs` (Redis's clock).
   * Null on a single node; rejects when Redis does not answer.
   */
  async liveNodes (): Promise<string[] | null> {
    const link = this.#link
    if (link === null) return null
    return (await link.pub.realtimeLiveNodes(NODES_KEY, link.options.nodeTtlMs)).map(String)
  }

  /**
   * Whether this node's own Redis connections work: both up, every cluster channel subscribed,
   * and a PING answered within a second. False before `connect` and after `close`.
   */
  async reachable (): Promise<boolean> {
    const link = this.#link
    if (link === null || !writable(link.pub) || !link.subscriptions.current) return false
    // on a Redis Cluster, every master: a scope whose master is away has neither history nor fan-out
    const targets: Array<Redis | RedisCluster> = isCluster(link.pub) ? link.pub.nodes('master') : [link.pub]
    if (targets.length === 0) return false
    try {
      const answers = await Promise.all(targets.map(async (target) => await withTimeout(() => target.ping(), 1000, 'Redis ping')))
      return answers.every((answer) => answer === 'PONG')
    } catch {
      return false
    }
  }

  /** Stops the heartbeat and takes this node out of the counts (best effort). */
  async close (): Promise<void> {
    clearInterval(this.#heartbeat)
    const link = this.#link
    this.#link = null
    if (link === null) return
    link.subscriptions.close()
    link.unwatch()
    if (!writable(link.pub)) return
    try {
      await withTimeout(() => link.pub.multi().zrem(NODES_KEY, this.#nodeId).hdel(COUNTS_KEY, this.#nodeId).exec(), 1000, 'Redis')
    } catch {
      // the node drops out of the counts by itself after nodeTtlMs
    }
  }

  /**
   * The adapter publishes without handling a refusal; while Redis is away that refusal must
   * not become an unhandled rejection (local delivery goes on regardless).
   */
  #guardPublish (pub: Redis): void {
    const publish = pub.publish.bind(pub)
    pub.publish = ((...args: Parameters<Redis['publish']>) => publish(...args).catch((err: Error) => {
      this.#log.debug({ err }, 'fastify-realtime: cluster publish failed')
      return 0
    })) as Redis['publish']
  }

  /**
   * The same for SPUBLISH on a Redis Cluster, where ioredis counts the channel as a key and puts
   * the key prefix in front of it: the channel names carry the prefix already (the subscriber,
   * which has none, must see them as the adapter named them), so it is taken off first.
   */
  #guardShardedPublish (pub: RedisCluster, keyPrefix: string): void {
    const spublish = pub.spublish.bind(pub) as (channel: string, message: string | Buffer) => Promise<number>
    const unprefixed = (channel: string): string => keyPrefix !== '' && channel.startsWith(keyPrefix) ? channel.slice(keyPrefix.length) : channel
    pub.spublish = ((channel: string, message: string | Buffer) => spublish(unprefixed(String(channel)), message).catch((err: Error) => {
      this.#log.debug({ err }, 'fastify-realtime: cluster publish failed')
      return 0
    })) as RedisCluster['spublish']
  }

  async #beat (): Promise<void> {
    const link = this.#link
    if (link === null) return
    const connections = this.#io.of('/').sockets.size
    await link.pub.realtimeHeartbeat(NODES_KEY, COUNTS_KEY, this.#nodeId, connections, link.options.nodeTtlMs)
  }

  #resubscribed (options: ClusterOptions): void {
    if (options.onResubscribed === undefined) return
    const failed = (err: unknown): void => { this.#log.error({ err }, 'fastify-realtime: re-check after the Redis subscriber came back failed') }
    try {
      Promise.resolve(options.onResubscribed()).catch(failed)
    } catch (err) {
      failed(err)
    }
  }

  async #run (operation: Operation): Promise<void> {
    this.#apply(operation)
    if (operation.op === 'join') await this.listening()
    const link = this.#link
    if (link === null) return
    const { timeoutMs, nodeTtlMs } = link.options
    // not ready: the request could not go out, or this node could not hear the answers
    if (!writable(link.pub) || !link.subscriptions.current) {
      throw new FST_REALTIME_CLUSTER_UNAVAILABLE(operation.op, 'Redis is not reachable from this node')
    }
    let id: string
    let live: string[]
    try {
      // both before the request goes out: recorded, so a node that does not hear it reads it from
      // the record later; and the live nodes, as a node that has beaten by now had subscribed
      // before, so it hears it. One round trip for the two.
      const [recorded, nodes] = await Promise.all([link.ops.append(JSON.stringify(operation)), link.pub.realtimeLiveNodes(NODES_KEY, nodeTtlMs)])
      id = recorded
      live = nodes.map(String)
    } catch (err) {
      this.#log.debug({ err }, 'fastify-realtime: cluster operation not recorded, or live nodes unavailable')
      throw new FST_REALTIME_CLUSTER_UNAVAILABLE(operation.op, 'Redis is not reachable from this node')
    }
    this.#seen(operation, id)
    let answers: unknown[]
    try {
      answers = await withTimeout(() => this.#io.serverSideEmitWithAck(CLUSTER_EVENT, { ...operation, id }) as Promise<unknown[]>, timeoutMs, `realtime.${operation.op}`)
    } catch (err) {
      this.#log.debug({ err }, 'fastify-realtime: cluster operation incomplete')
      throw new FST_REALTIME_CLUSTER_TIMEOUT(operation.op, timeoutMs)
    }
    // The adapter waits for as many answers as Redis counts subscribers: a live node that is not
    // subscribed right now (its subscriber is reconnecting) is simply not waited for.
    const applied = new Set(answers.map(appliedBy))
    const missing = live.filter((node) => node !== this.#nodeId && !applied.has(node))
    if (missing.length > 0) {
      this.#log.warn({ op: operation.op, nodes: missing }, 'fastify-realtime: live nodes did not apply a cluster operation')
      throw new FST_REALTIME_CLUSTER_UNAVAILABLE(operation.op,
        `${missing.length} live node(s) did not apply it (${missing.slice(0, 5).join(', ')}): not listening on Redis right now`)
    }
  }

  #apply (operation: Operation): void {
    if (operation.op !== 'join') this.#onRemoved(operation.userId, operation.op === 'disconnect')
    const sockets = this.#io.local.in(userScope(operation.userId))
    if (operation.op === 'join') sockets.socketsJoin(operation.scope)
    else if (operation.op === 'leave') sockets.socketsLeave(operation.scope)
    else if (operation.op === 'disconnect') sockets.disconnectSockets(true)
  }
}
