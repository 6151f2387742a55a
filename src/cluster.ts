import type { FastifyBaseLogger } from 'fastify'
import { createAdapter } from '@socket.io/redis-adapter'
import type { Redis } from 'ioredis'
import { FST_REALTIME_CLUSTER_TIMEOUT } from './errors.js'
import { userScope } from './protocol.js'
import type { RealtimeServer } from './types.js'
import { TimeoutError, withTimeout } from './util.js'

/** Server-side event the nodes exchange for membership operations. */
const CLUSTER_EVENT = 'realtime:cluster'

type Operation =
  | { op: 'join', userId: string, scope: string }
  | { op: 'leave', userId: string, scope: string }
  | { op: 'disconnect', userId: string }

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
}

// Heartbeats, under the client's keyPrefix: a sorted set of node ids by last beat (Redis TIME)
// and a hash of their connection counts. Reading them costs O(nodes), never a fetchSockets().
const NODES_KEY = 'rt:nodes'
const COUNTS_KEY = 'rt:node-connections'

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`
// KEYS: nodes, counts. ARGV: node id, connections, node ttl ms.
const HEARTBEAT = `${NOW}
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if #stale > 0 then
  redis.call('ZREM', KEYS[1], unpack(stale))
  redis.call('HDEL', KEYS[2], unpack(stale))
end
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

interface ClusterClient extends Redis {
  realtimeHeartbeat: (nodes: string, counts: string, nodeId: string, connections: number, ttlMs: number) => Promise<number>
  realtimeCounts: (nodes: string, counts: string, ttlMs: number) => Promise<[number, number]>
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
  #redis: ClusterClient | null = null
  #options: ClusterOptions | null = null
  #heartbeat: NodeJS.Timeout | undefined
  #lastCounts: ClusterCounts | undefined

  constructor (io: RealtimeServer, nodeId: string, log: FastifyBaseLogger) {
    this.#io = io
    this.#nodeId = nodeId
    this.#log = log
    io.of('/').on(CLUSTER_EVENT, (operation: Operation, ack?: (result: string) => void) => {
      this.#apply(operation)
      if (typeof ack === 'function') ack(this.#nodeId)
    })
  }

  /**
   * Joins the cluster: `pub` carries broadcasts, heartbeats and requests; `sub` listens.
   * Both are the plugin's own connections.
   */
  async connect (pub: Redis, sub: Redis, options: ClusterOptions): Promise<void> {
    const keyPrefix = pub.options.keyPrefix ?? ''
    // The adapter publishes without handling a refusal; while Redis is away that refusal must
    // not become an unhandled rejection (local delivery goes on regardless).
    const publish = pub.publish.bind(pub)
    pub.publish = ((...args: Parameters<Redis['publish']>) => publish(...args).catch((err: Error) => {
      this.#log.debug({ err }, 'fastify-realtime: cluster publish failed')
      return 0
    })) as Redis['publish']
    pub.defineCommand('realtimeHeartbeat', { numberOfKeys: 2, lua: HEARTBEAT })
    pub.defineCommand('realtimeCounts', { numberOfKeys: 2, lua: COUNTS })
    this.#redis = pub as ClusterClient
    this.#options = options
    this.#io.adapter(createAdapter(pub, sub, { key: `${keyPrefix}socket.io`, requestsTimeout: options.timeoutMs }))
    await this.#beat()
    this.#heartbeat = setInterval(() => { this.#beat().catch(() => {}) }, options.heartbeatMs)
    this.#heartbeat.unref()
  }

  async join (userId: string, scope: string): Promise<void> {
    await this.#run({ op: 'join', userId, scope })
  }

  async leave (userId: string, scope: string): Promise<void> {
    await this.#run({ op: 'leave', userId, scope })
  }

  async disconnectUser (userId: string): Promise<void> {
    await this.#run({ op: 'disconnect', userId })
  }

  /** Live nodes and their connections from the heartbeats; undefined on a single node. */
  async counts (): Promise<ClusterCounts | undefined> {
    if (this.#redis === null || this.#options === null) return undefined
    try {
      const [nodes, connections] = await this.#redis.realtimeCounts(NODES_KEY, COUNTS_KEY, this.#options.nodeTtlMs)
      this.#lastCounts = { nodes: Number(nodes), connections: Number(connections) }
    } catch (err) {
      this.#log.debug({ err }, 'fastify-realtime: cluster counts unavailable; reporting the last known')
    }
    return this.#lastCounts
  }

  /** Stops the heartbeat and takes this node out of the counts (best effort). */
  async close (): Promise<void> {
    clearInterval(this.#heartbeat)
    const redis = this.#redis
    this.#redis = null
    if (redis === null || redis.status !== 'ready') return
    try {
      await redis.multi().zrem(NODES_KEY, this.#nodeId).hdel(COUNTS_KEY, this.#nodeId).exec()
    } catch {
      // the node drops out of the counts by itself after nodeTtlMs
    }
  }

  async #beat (): Promise<void> {
    if (this.#redis === null || this.#options === null) return
    const connections = this.#io.of('/').sockets.size
    await this.#redis.realtimeHeartbeat(NODES_KEY, COUNTS_KEY, this.#nodeId, connections, this.#options.nodeTtlMs)
  }

  async #run (operation: Operation): Promise<void> {
    this.#apply(operation)
    if (this.#redis === null || this.#options === null) return
    const { timeoutMs } = this.#options
    try {
      await withTimeout(() => new Promise<void>((resolve, reject) => {
        this.#io.serverSideEmit(CLUSTER_EVENT, operation, (err: Error | null) => {
          if (err) reject(err)
          else resolve()
        })
      }), timeoutMs, `realtime.${operation.op}`)
    } catch (err) {
      if (!(err instanceof TimeoutError)) this.#log.warn({ err }, 'fastify-realtime: cluster operation incomplete')
      throw new FST_REALTIME_CLUSTER_TIMEOUT(operation.op, timeoutMs)
    }
  }

  #apply (operation: Operation): void {
    const sockets = this.#io.local.in(userScope(operation.userId))
    if (operation.op === 'join') sockets.socketsJoin(operation.scope)
    else if (operation.op === 'leave') sockets.socketsLeave(operation.scope)
    else sockets.disconnectSockets(true)
  }
}
