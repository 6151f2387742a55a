import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import { Redis as RedisClient } from 'ioredis'
import type { TSchema } from 'typebox'
import { EVENT_SKIP } from '../protocol.js'
import {
  FST_REALTIME_INVALID_OPTION,
  FST_REALTIME_PUBLISHER_CLOSED,
  FST_REALTIME_REDIS_UNAVAILABLE
} from '../errors.js'
import {
  appendEvent,
  checkBroadcast,
  eventMeta,
  historyEntry,
  IdempotencyKeys,
  refused,
  repeatedMeta,
  unserialisable
} from '../event.js'
import { RedisHistoryStore } from '../history/redis.js'
import { compileEvents } from '../options.js'
import type { Position, RealtimeEventName, RealtimePayload, SkipMessage } from '../protocol.js'
import { checkKeyPrefix, checkRedisSpec, closeRedis, connectRedis, isCluster, keyPrefixOf, type RedisClient as OwnClient } from '../redis.js'
import type { BroadcastMeta, BroadcastOptions, FastifyRealtimeOptions, RealtimeRedisCluster, RealtimeRedisClusterOptions, RealtimeRedisOptions } from '../types.js'
import { roomMessage, shardedRoomMessage, type RoomMessage, type WireMessage } from './wire.js'

export type { BroadcastMeta, BroadcastOptions, EventActor, EventMeta, RealtimeEventName, RealtimeEvents, RealtimePayload, RealtimeRedisCluster, RealtimeRedisClusterOptions, RealtimeRedisOptions } from '../types.js'

/**
 * An ioredis client to take the connection settings from (an ioredis `Redis` is one). The
 * publisher opens its own connection from it (`duplicate()`) and never uses or closes it.
 */
export interface PublisherRedisClient {
  duplicate (override?: any): unknown
}

export interface PublisherOptions {
  /**
   * The Redis the app's nodes use, in any form of the plugin's `redis` option but `true`: a URL,
   * ioredis options, a Redis Cluster (`{ cluster: [{ host, port }, …], options? }`), or an ioredis
   * client or `Cluster` whose settings the publisher's own connection copies (that client is never
   * used or closed). On a cluster, events go out by sharded pub/sub, as the nodes' do.
   * @example 'redis://127.0.0.1:6379'
   */
  redis: string | RealtimeRedisOptions | RealtimeRedisClusterOptions | RealtimeRedisCluster | PublisherRedisClient
  /**
   * The nodes' key prefix (their ioredis `keyPrefix`): keys and channels live under it. A
   * publisher with another prefix reaches no node. Overrides a `keyPrefix` given in `redis`.
   * @default the one in `redis`, or none
   */
  keyPrefix?: string
  /** Payload schemas by event name, as the plugin's `events` option: a payload that fails its schema rejects. @default none */
  events?: Partial<Record<RealtimeEventName, TSchema>>
  /**
   * The nodes' history settings (`ttl`, `max`): events are appended to the shared log with
   * them, and an idempotency key is kept for `ttl`. `false` when the nodes run `history: false`:
   * every event is then volatile. @default { ttl: 300, max: 50 }
   */
  history?: false | { ttl?: number, max?: number }
  /** How long the first broadcast (and one after Redis was away at startup) waits for the connection. @default 10000 */
  connectTimeoutMs?: number
  /** Idempotency keys remembered in this process at most (Redis keeps every key too). @default 10000 */
  idempotencyKeys?: number
}

/**
 * Sends an event to every socket in `scope`, on whichever node it is connected, through the
 * history log: the same checks, errors, meta, `seq`/`epoch` and idempotency as `fastify.broadcast`.
 * Unlike `fastify.broadcast` it rejects when nothing was delivered: with
 * `FST_REALTIME_REDIS_UNAVAILABLE` while Redis cannot be reached (retry later), with
 * `FST_REALTIME_PUBLISHER_CLOSED` after `close()`.
 */
export type PublishFn = <E extends RealtimeEventName>(
  scope: string,
  event: E,
  payload: RealtimePayload<E>,
  opts?: BroadcastOptions
) => Promise<BroadcastMeta>

export interface Publisher {
  broadcast: PublishFn
  /** Closes the publisher's Redis connection; idempotent. Broadcasts in flight settle first. */
  close: () => Promise<void>
}

/** Nothing to say: a worker learns about Redis from the rejections. */
const silent = {
  level: 'silent',
  fatal () {},
  error () {},
  warn () {},
  info () {},
  debug () {},
  trace () {},
  silent () {},
  child () { return silent }
} as unknown as FastifyBaseLogger

function isClient (value: unknown): value is PublisherRedisClient {
  return typeof (value as PublisherRedisClient | null)?.duplicate === 'function'
}

/**
 * The settings the publisher's connection is made from, as an unconnected ioredis client:
 * `connectRedis` duplicates it with the plugin's own-connection options, as it does
 * `fastify.redis` for `redis: true`.
 */
interface Source {
  /** What `connectRedis` takes: `true` for `app.redis`, or the plugin's `redis` option. */
  spec: NonNullable<FastifyRealtimeOptions['redis']>
  app?: Redis
  /** A client made here only to be duplicated: never connected, disconnected at close. */
  template?: { disconnect: () => void }
}

/**
 * What `connectRedis` opens the publisher's connection from, as it does for the plugin. A single
 * Redis (URL, options, client) becomes an unconnected ioredis client that it duplicates with the
 * plugin's own-connection options, as it does `fastify.redis` for `redis: true`; a cluster is
 * handed over as it is, with `keyPrefix` merged into its options.
 */
function sourceOf (spec: PublisherOptions['redis'], keyPrefix: string | undefined): Source {
  const prefix = keyPrefix === undefined ? {} : { keyPrefix }
  if (isCluster(spec)) {
    if (keyPrefix === undefined) return { spec: spec as RealtimeRedisCluster }
    const template = (spec as unknown as Cluster).duplicate(undefined, { ...(spec as unknown as Cluster).options, ...prefix, lazyConnect: true })
    return { spec: template as unknown as RealtimeRedisCluster, template }
  }
  // an ioredis Redis has a `cluster` method: only a plain object is a cluster's options
  if (!isClient(spec) && typeof spec === 'object' && spec !== null && 'cluster' in spec) {
    return { spec: { ...spec, options: { ...spec.options, ...prefix } } as RealtimeRedisClusterOptions }
  }
  let app: Redis
  if (isClient(spec)) app = (keyPrefix === undefined ? spec : spec.duplicate({ ...prefix, lazyConnect: true })) as Redis
  else if (typeof spec === 'string') app = new RedisClient(spec, { ...prefix, lazyConnect: true })
  else app = new RedisClient({ ...(spec as RealtimeRedisOptions), ...prefix, lazyConnect: true })
  return { spec: true, app, ...(app === spec ? {} : { template: app }) }
}

/** The ioredis `keyPrefix` that `redis` (a URL, options, cluster options or a client) carries, if any. */
function prefixIn (redis: PublisherOptions['redis']): string | undefined {
  if (typeof redis === 'string') return undefined
  if (isClient(redis) || isCluster(redis)) return keyPrefixOf(redis as OwnClient)
  if ('cluster' in redis) return (redis.options as { keyPrefix?: string } | undefined)?.keyPrefix
  return (redis as { keyPrefix?: string }).keyPrefix
}

function checkPublisherOptions (options: PublisherOptions): void {
  const fail = (path: string, message: string): never => { throw new FST_REALTIME_INVALID_OPTION(path, message) }
  if (options === null || typeof options !== 'object') fail('(publisher)', 'must be an object with redis')
  const { redis, keyPrefix, history, connectTimeoutMs, idempotencyKeys, events } = options
  if (typeof redis !== 'string' && (redis === null || typeof redis !== 'object')) {
    fail('redis', 'must be a URL, ioredis options, { cluster, options? } or an ioredis client')
  }
  if (!isClient(redis)) checkRedisSpec(redis)
  if (keyPrefix !== undefined && typeof keyPrefix !== 'string') fail('keyPrefix', 'must be a string')
  // the prefix the connection will carry, as the plugin checks its own: the option, else the one in `redis`
  checkKeyPrefix(keyPrefix ?? prefixIn(redis))
  if (events !== undefined && (events === null || typeof events !== 'object')) fail('events', 'must be an object of schemas')
  if (history !== undefined && history !== false) {
    if (history === null || typeof history !== 'object') fail('history', 'must be false or { ttl, max }')
    for (const name of ['ttl', 'max'] as const) {
      const value = history[name]
      if (value !== undefined && (!Number.isSafeInteger(value) || value < 1)) fail(`history.${name}`, 'must be a positive integer')
    }
  }
  for (const [name, value] of [['connectTimeoutMs', connectTimeoutMs], ['idempotencyKeys', idempotencyKeys]] as const) {
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 1)) fail(name, 'must be a positive integer')
  }
}

/**
 * A publisher for processes with no Socket.IO server (queue workers, cron jobs, scripts): events
 * it broadcasts reach every node of the app through Redis and are stored in the shared log, so
 * a client catching up gets them like any other. One Redis connection, opened at the first
 * broadcast; no HTTP server.
 *
 * @example
 * const publisher = createPublisher({ redis: process.env.REDIS_URL, events })
 * await publisher.broadcast('team:42', 'incident:created', incident, { by: 'scheduler' })
 * await publisher.close()
 */
export function createPublisher (options: PublisherOptions): Publisher {
  checkPublisherOptions(options)
  const events = compileEvents(options.events)
  const history = options.history === false ? null : { ttl: options.history?.ttl ?? 300, max: options.history?.max ?? 50 }
  const store = history === null ? null : new RedisHistoryStore(history)
  const connectTimeoutMs = options.connectTimeoutMs ?? 10_000
  const seen = new IdempotencyKeys<BroadcastMeta>(options.idempotencyKeys ?? 10_000, (history?.ttl ?? 300) * 1000)
  const source = sourceOf(options.redis, options.keyPrefix)
  // the connection's own keyPrefix (checked by connectRedis): channels carry it, keys get it from ioredis
  let keyPrefix = ''
  let client: Promise<OwnClient> | null = null
  let sharded = false
  let closed: Promise<void> | null = null
  const inFlight = new Set<Promise<unknown>>()

  function connection (): Promise<OwnClient> {
    client ??= connectRedis({ redis: source.app } as unknown as FastifyInstance, source.spec, silent, connectTimeoutMs).then((redis) => {
      keyPrefix = keyPrefixOf(redis)
      sharded = isCluster(redis)
      store?.attach(redis)
      return redis
    }, (err: unknown) => {
      // not connected: the next broadcast tries again
      client = null
      throw err
    })
    return client
  }

  function unavailable (err: unknown): Error {
    const code = (err as { code?: unknown } | null)?.code
    // a coded error of the package (a bad option found on connecting) stays what it is: retrying cannot help
    return typeof code === 'string' && code.startsWith('FST_REALTIME_') ? err as Error : new FST_REALTIME_REDIS_UNAVAILABLE((err as Error).message)
  }

  /** The message for `room` in the nodes' format: sharded pub/sub on a Redis Cluster. */
  function toRoom (message: RoomMessage): WireMessage {
    return sharded ? shardedRoomMessage(keyPrefix, message) : roomMessage(keyPrefix, message)
  }

  /** A `realtime:skip` for `scope` at `position`, to the sockets in `room` (the scope's, or one socket's). */
  function skipMessage (room: string, position: Position, scope = room): WireMessage {
    return toRoom({ room, data: [EVENT_SKIP, { scope, seq: position.seq, epoch: position.epoch } satisfies SkipMessage] })
  }

  async function publish (redis: OwnClient, messages: WireMessage[]): Promise<void> {
    for (const { channel, body } of messages) {
      if (isCluster(redis)) {
        // ioredis counts a sharded channel as a key and puts the key prefix in front: the name has it already
        await redis.spublish(keyPrefix !== '' && channel.startsWith(keyPrefix) ? channel.slice(keyPrefix.length) : channel, body)
      } else {
        await redis.publish(channel, body)
      }
    }
  }

  async function deliver (scope: string, event: string, payload: unknown, opts: BroadcastOptions): Promise<BroadcastMeta> {
    let redis: OwnClient
    try {
      redis = await connection()
    } catch (err) {
      throw unavailable(err)
    }
    const id = randomUUID()
    const at = Date.now()
    let position: Position | null = null
    if (store !== null && opts.volatile !== true) {
      try {
        const appended = await appendEvent(store, scope, historyEntry(id, event, payload, at, opts.by), opts.idempotencyKey)
        if (appended.first !== undefined) return repeatedMeta(scope, appended as Required<typeof appended>)
        position = appended
      } catch (err) {
        if (refused(err)) throw err
        throw unavailable(err)
      }
    }
    const meta = eventMeta(id, scope, position, at, opts.by) as BroadcastMeta
    const messages: WireMessage[] = []
    try {
      messages.push(toRoom({ room: scope, data: [event, payload, meta], except: opts.except }))
    } catch (err) {
      // as on a node: nobody gets it, so the seq it took in the log is skipped for everyone
      if (position !== null) await publish(redis, [skipMessage(scope, position)]).catch(() => {})
      throw unserialisable(event, err)
    }
    // the socket left out is told the seq moved on, on whichever node it is
    if (opts.except !== undefined && position !== null) messages.push(skipMessage(opts.except, position, scope))
    try {
      await publish(redis, messages)
    } catch (err) {
      throw unavailable(err)
    }
    meta.stored = position !== null
    return meta
  }

  function send (scope: string, event: string, payload: unknown, options: BroadcastOptions | null | undefined): Promise<BroadcastMeta> {
    if (closed !== null) return Promise.reject(new FST_REALTIME_PUBLISHER_CLOSED())
    const opts = checkBroadcast(scope, event, payload, options, events)
    const key = opts.idempotencyKey
    const result = key === undefined
      ? deliver(scope, event, payload, opts)
      : seen.once(scope, key, Date.now(), async () => await deliver(scope, event, payload, opts))
    inFlight.add(result)
    result.then(() => inFlight.delete(result), () => inFlight.delete(result))
    return result
  }

  /** Never throws: every failure is a rejection. */
  function broadcast (scope: string, event: string, payload: unknown, opts?: BroadcastOptions | null): Promise<BroadcastMeta> {
    try {
      return send(scope, event, payload, opts)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  async function shutdown (): Promise<void> {
    await Promise.allSettled([...inFlight])
    store?.close()
    const redis = await client?.catch(() => null)
    if (redis != null) await closeRedis(redis)
    // the template never connected; the app's own client (a duplicate was taken from it) is not ours to close
    source.template?.disconnect()
  }

  return {
    broadcast: broadcast as PublishFn,
    close: async () => {
      closed ??= shutdown()
      await closed
    }
  }
}
