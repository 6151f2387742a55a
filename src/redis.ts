import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { Cluster, Redis, type ClusterNode, type ClusterOptions, type RedisOptions } from 'ioredis'
import { FST_REALTIME_INVALID_OPTION, FST_REALTIME_REDIS_UNAVAILABLE } from './errors.js'
import type { FastifyRealtimeOptions } from './types.js'
import { routeSubscriptions, SHARDED_EVENTS, writable, type RedisCall, type SubscribeMethod } from './internals.js'
import { withTimeout } from './util.js'

/** A connection of the plugin's own: one Redis, or a client of a Redis Cluster. */
export type RedisClient = Redis | Cluster

/** What the plugin's connections are for: commands and publishes, or the adapter's subscriptions. */
export type ConnectionRole = 'commands' | 'subscriber'

/**
 * What the plugin's own connections need and an app's client must not be forced into: commands
 * fail at once while Redis is away instead of queueing (a broadcast never waits on Redis),
 * nothing sent before an outage is replayed behind the plugin's back after it, and a connection
 * closed while Redis is gone does not hold the process open for ioredis' default 2 s.
 */
const OWN_CONNECTION: RedisOptions = {
  lazyConnect: true,
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  commandTimeout: 2000,
  disconnectTimeout: 100
}

/**
 * The same for a Redis Cluster, as far as it allows: the cluster client refuses commands at once
 * while it is not ready, or while the master of their slot is not connected; each master's
 * connection gives up a command after 2 s. `shardedSubscribers` gives SSUBSCRIBE one connection
 * per master (ioredis subscribes a sharded channel on the master that owns its slot, and
 * subscribes again when that master comes back). Each node connection keeps ioredis' own offline
 * queue: it only ever holds what the cluster client let through to a node that is connecting.
 */
const OWN_CLUSTER_CONNECTION: ClusterOptions = {
  lazyConnect: true,
  enableOfflineQueue: false,
  shardedSubscribers: true
}
const OWN_CLUSTER_NODE: NonNullable<ClusterOptions['redisOptions']> = {
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  commandTimeout: 2000,
  disconnectTimeout: 100,
  // the cluster client prefixes keys itself (see clusterOptions)
  keyPrefix: ''
}

/** `{ cluster: [{ host, port }, …], options? }`: the plugin opens its own cluster clients. */
export interface ClusterSpec {
  cluster: ClusterNode[]
  options?: ClusterOptions
}

/** Whether `value` is an ioredis `Cluster` (an app's, or one from another copy of ioredis). */
export function isCluster (value: unknown): value is Cluster {
  return value instanceof Cluster || (typeof value === 'object' && value !== null &&
    (value as { isCluster?: unknown }).isCluster === true && typeof (value as { duplicate?: unknown }).duplicate === 'function')
}

// a Redis client has a `cluster` method (the CLUSTER command): only plain data counts here
function isClusterSpec (value: unknown): value is ClusterSpec {
  return typeof value === 'object' && value !== null && 'cluster' in value && typeof (value as { cluster: unknown }).cluster !== 'function'
}

/** The key prefix of a client, wherever its options keep it. */
export function keyPrefixOf (client: RedisClient): string {
  if (!isCluster(client)) return client.options.keyPrefix ?? ''
  return client.options.keyPrefix ?? client.options.redisOptions?.keyPrefix ?? ''
}

/**
 * Throws FST_REALTIME_INVALID_OPTION for a `redis` option of none of its forms: `true`, a URL,
 * ioredis options, an ioredis `Cluster`, or `{ cluster: [{ host, port }, …], options? }`.
 * Checked at `register`, before anything connects.
 */
export function checkRedisSpec (spec: unknown): void {
  if (spec === undefined || spec === true || typeof spec === 'string' || isCluster(spec) || !isClusterSpec(spec)) return
  const { cluster, options, ...rest } = spec as unknown as Record<string, unknown>
  const extra = Object.keys(rest)
  if (extra.length > 0) throw new FST_REALTIME_INVALID_OPTION(`redis.${extra[0]!.slice(0, 50)}`, 'is not an option of { cluster, options }')
  if (!Array.isArray(cluster) || cluster.length === 0) {
    throw new FST_REALTIME_INVALID_OPTION('redis.cluster', 'must be a non-empty array of { host, port } (the startup nodes)')
  }
  cluster.forEach((node: unknown, i) => {
    const { host, port } = (node ?? {}) as { host?: unknown, port?: unknown }
    const portOk = typeof port === 'number' ? Number.isInteger(port) && port > 0 && port < 65536 : typeof port === 'string' && /^\d{1,5}$/.test(port)
    if (typeof node !== 'object' || node === null || (host !== undefined && (typeof host !== 'string' || host.length === 0)) || !portOk) {
      throw new FST_REALTIME_INVALID_OPTION(`redis.cluster.${i}`, 'must be { host, port } with a port number')
    }
  })
  if (options !== undefined && (options === null || typeof options !== 'object' || Array.isArray(options))) {
    throw new FST_REALTIME_INVALID_OPTION('redis.options', 'must be ioredis ClusterOptions')
  }
  const keyPrefix = (options as ClusterOptions | undefined)?.keyPrefix ?? (options as ClusterOptions | undefined)?.redisOptions?.keyPrefix
  if (keyPrefix !== undefined && typeof keyPrefix !== 'string') throw new FST_REALTIME_INVALID_OPTION('redis.options.keyPrefix', 'must be a string')
  checkKeyPrefix(keyPrefix)
}

/**
 * The plugin's options over the app's cluster options. Keys are prefixed by the cluster client
 * alone; the subscriber has no prefix at all, as ioredis would otherwise prefix sharded channel
 * names (they count as keys) on the way out but hand them back as sent, and the adapter would
 * not recognise its own channels. The channel names carry the prefix themselves (see cluster.ts).
 */
function clusterOptions (app: ClusterOptions, role: ConnectionRole): ClusterOptions {
  const keyPrefix = app.keyPrefix ?? app.redisOptions?.keyPrefix ?? ''
  return {
    ...app,
    ...OWN_CLUSTER_CONNECTION,
    keyPrefix: role === 'subscriber' ? '' : keyPrefix,
    redisOptions: { ...app.redisOptions, ...OWN_CLUSTER_NODE }
  }
}

/** Characters Redis reads as a glob in PSUBSCRIBE patterns (the adapter subscribes to `<keyPrefix>…*`). */
const GLOB = /[*?[\]\\]/

/**
 * Throws FST_REALTIME_INVALID_OPTION for a keyPrefix the adapter's channel pattern cannot carry:
 * with a glob character in it, a node would hear other deployments' channels, or none of its own.
 */
export function checkKeyPrefix (keyPrefix: string | undefined): void {
  if (keyPrefix !== undefined && GLOB.test(keyPrefix)) {
    throw new FST_REALTIME_INVALID_OPTION('redis.keyPrefix', `"${keyPrefix.slice(0, 200)}" must not contain * ? [ ] or \\ (it becomes part of a PSUBSCRIBE pattern)`)
  }
}

/** A new connection of the plugin's own for `role`, not connected yet. */
function openClient (fastify: FastifyInstance, spec: NonNullable<FastifyRealtimeOptions['redis']>, role: ConnectionRole): RedisClient {
  let source: unknown = spec
  if (spec === true) {
    source = (fastify as unknown as { redis?: unknown }).redis
    if (source === undefined || typeof (source as { duplicate?: unknown }).duplicate !== 'function') {
      throw new FST_REALTIME_INVALID_OPTION('redis', 'true reuses fastify.redis: register @fastify/redis on the app')
    }
  }
  if (isCluster(source)) return source.duplicate([], clusterOptions(source.options, role))
  if (isClusterSpec(source)) return new Cluster(source.cluster, clusterOptions(source.options ?? {}, role))
  if (spec === true) return (source as Redis).duplicate(OWN_CONNECTION)
  if (typeof source === 'string') return new Redis(source, OWN_CONNECTION)
  return new Redis({ ...(source as RedisOptions), ...OWN_CONNECTION })
}

/**
 * Opens one connection of the plugin's own: duplicated from the app's `fastify.redis` or
 * `Cluster` (the app's client is never closed), or from a URL, ioredis options or cluster nodes.
 * Fails fast with FST_REALTIME_REDIS_UNAVAILABLE when Redis does not answer within `timeoutMs`.
 */
export async function connectRedis (
  fastify: FastifyInstance,
  spec: NonNullable<FastifyRealtimeOptions['redis']>,
  log: FastifyBaseLogger,
  timeoutMs: number,
  role: ConnectionRole = 'commands'
): Promise<RedisClient> {
  const client = openClient(fastify, spec, role)
  try {
    checkKeyPrefix(keyPrefixOf(client))
  } catch (err) {
    client.disconnect()
    throw err
  }

  let down = false
  client.on('error', (err: Error) => {
    if (down) return
    down = true
    log.warn({ err }, 'fastify-realtime: Redis unreachable; delivering live only until it is back')
  })
  client.on('ready', () => {
    if (!down) return
    down = false
    log.info('fastify-realtime: Redis reachable again')
  })

  try {
    await withTimeout(() => client.connect(), timeoutMs, 'Redis')
  } catch (err) {
    client.disconnect()
    throw new FST_REALTIME_REDIS_UNAVAILABLE((err as Error).message)
  }
  return client
}

/** The plugin's own two connections: `pub` for commands and publishes, `sub` for the adapter's subscriptions. */
export interface RedisPair {
  pub: RedisClient
  sub: RedisClient
  /** Closes both, without waiting on a Redis that is gone. */
  close: () => Promise<void>
}

/**
 * Opens both connections and runs `use` with them (wiring the store and the cluster); when
 * either step fails, whatever was opened is closed again before the error is thrown.
 */
export async function connectPair (
  fastify: FastifyInstance,
  spec: NonNullable<FastifyRealtimeOptions['redis']>,
  log: FastifyBaseLogger,
  timeoutMs: number,
  use: (pair: RedisPair) => Promise<void>
): Promise<RedisPair> {
  const opened: RedisClient[] = []
  const close = async (): Promise<void> => { await Promise.all(opened.map(closeRedis)) }
  try {
    opened.push(await connectRedis(fastify, spec, log, timeoutMs, 'commands'))
    opened.push(await connectRedis(fastify, spec, log, timeoutMs, 'subscriber'))
    const pair: RedisPair = { pub: opened[0]!, sub: opened[1]!, close }
    await use(pair)
    return pair
  } catch (err) {
    await close()
    throw err
  }
}

/** Closes a connection the plugin opened, without waiting on a Redis that is gone. */
export async function closeRedis (client: RedisClient): Promise<void> {
  try {
    if (client.status === 'ready') await withTimeout(() => client.quit(), 1000, 'Redis quit')
  } catch {
    // gone already: disconnect below is all that is left to do
  } finally {
    client.disconnect()
  }
}

function namesOf (args: unknown[]): string[] {
  const names: string[] = []
  for (const arg of args.flat()) {
    if (typeof arg === 'string') names.push(arg)
    else if (Buffer.isBuffer(arg)) names.push(arg.toString())
  }
  return names
}

type SubscribeKind = 'subscribe' | 'psubscribe' | 'ssubscribe'
const KIND_OF: Record<SubscribeMethod, SubscribeKind> = {
  subscribe: 'subscribe',
  unsubscribe: 'subscribe',
  psubscribe: 'psubscribe',
  punsubscribe: 'psubscribe',
  ssubscribe: 'ssubscribe',
  sunsubscribe: 'ssubscribe'
}
const KINDS: readonly SubscribeKind[] = ['subscribe', 'psubscribe', 'ssubscribe']

/**
 * The subscriber connection's subscriptions. Every (p|s)subscribe and (p|s)unsubscribe the adapter
 * makes goes through here: a refusal (while Redis is away the plugin's connections have no offline
 * queue, so they fail at once) is logged instead of becoming an unhandled rejection, and whatever
 * is still wanted is subscribed again once the connection is back, including what failed during
 * the outage (ioredis would restore only what had succeeded).
 *
 * On a Redis Cluster the sharded channels live on the masters that own their slots, each with a
 * subscriber connection of its own (`shardedSubscribers`): when one of them drops (`-node`),
 * ioredis connects it again and subscribes what it knew (`subscribersReady`); here each wanted
 * channel is then subscribed again (unsubscribed first, so ioredis keeps one record of it), one
 * command per channel as their slots differ, until every one succeeds. Channels of other masters
 * are not affected by the drop, and a second SSUBSCRIBE of a channel changes nothing on Redis.
 */
export class Subscriptions {
  readonly #sub: RedisClient
  readonly #log: FastifyBaseLogger
  readonly #onRestored: () => void
  readonly #original: Record<SubscribeMethod, RedisCall>
  readonly #wanted: Record<SubscribeKind, Set<string>> = { subscribe: new Set(), psubscribe: new Set(), ssubscribe: new Set() }
  readonly #pending = new Set<Promise<boolean>>()
  readonly #cluster: boolean
  // Redis may lack something wanted: the connection dropped, or a subscribe failed
  #stale = false
  #restoring = false
  #closed = false
  readonly #onClose = (): void => { this.#stale = true }
  readonly #onReady = (): void => { this.restore() }

  constructor (sub: RedisClient, log: FastifyBaseLogger, onRestored: () => void) {
    this.#sub = sub
    this.#log = log
    this.#onRestored = onRestored
    this.#cluster = isCluster(sub)
    this.#original = routeSubscriptions(sub, async (method, args) => {
      const names = namesOf(args)
      const wanted = this.#wanted[KIND_OF[method]]
      if (method === KIND_OF[method]) {
        for (const name of names) wanted.add(name)
      } else {
        if (names.length === 0) wanted.clear()
        for (const name of names) wanted.delete(name)
      }
      return await this.#call(method, args)
    })
    sub.on('close', this.#onClose)
    sub.on('ready', this.#onReady)
    if (this.#cluster) {
      sub.on(SHARDED_EVENTS.dropped, this.#onClose)
      sub.on(SHARDED_EVENTS.reconnected, this.#onReady)
    }
  }

  /** True when the connection is up with every wanted channel subscribed. */
  get current (): boolean {
    return !this.#stale && !this.#restoring && writable(this.#sub)
  }

  /** Resolves once every call made so far has settled: true when nothing wanted is missing. */
  async settled (): Promise<boolean> {
    await Promise.all([...this.#pending])
    return !this.#stale
  }

  /** Subscribes again to everything wanted, when something is missing and the connection is up. */
  restore (): void {
    if (this.#closed || !this.#stale || this.#restoring || !writable(this.#sub)) return
    this.#restoring = true
    // cleared first: a drop or a refusal during the restore marks it stale again for the next one
    this.#stale = false
    Promise.all(this.#cluster ? this.#restoreSharded() : this.#restoreAll()).then((results) => {
      this.#restoring = false
      if (this.#closed) return
      if (!results.every(Boolean)) {
        this.#stale = true
        return
      }
      if (this.#stale) return
      this.#log.info('fastify-realtime: cluster channels subscribed again')
      this.#onRestored()
    })
  }

  close (): void {
    this.#closed = true
    this.#sub.off('close', this.#onClose)
    this.#sub.off('ready', this.#onReady)
    this.#sub.off(SHARDED_EVENTS.dropped, this.#onClose)
    this.#sub.off(SHARDED_EVENTS.reconnected, this.#onReady)
  }

  #restoreAll (): Array<Promise<boolean>> {
    return KINDS.filter((kind) => this.#wanted[kind].size > 0)
      .map(async (kind) => await this.#call(kind, [[...this.#wanted[kind]]]))
  }

  #restoreSharded (): Array<Promise<boolean>> {
    return [...this.#wanted.ssubscribe].map(async (channel) => {
      await this.#call('sunsubscribe', [channel])
      // unsubscribed meanwhile by the adapter: nothing to restore
      if (!this.#wanted.ssubscribe.has(channel)) return true
      return await this.#call('ssubscribe', [channel])
    })
  }

  async #call (method: SubscribeMethod, args: unknown[]): Promise<boolean> {
    const done = this.#original[method](...args).then(() => true, (err: Error) => {
      if (method === KIND_OF[method]) this.#stale = true
      this.#log.debug({ err }, `fastify-realtime: Redis ${method} failed; subscriptions are restored once Redis is back`)
      return false
    })
    this.#pending.add(done)
    done.then(() => this.#pending.delete(done), () => {})
    return await done
  }
}
