import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import { FST_REALTIME_INVALID_OPTION, FST_REALTIME_REDIS_UNAVAILABLE } from './errors.js'
import type { FastifyRealtimeOptions } from './types.js'
import { withTimeout } from './util.js'

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

/**
 * Opens one connection of the plugin's own: duplicated from the app's `fastify.redis`
 * (`redis: true`; the app's client is never closed), or from a URL / ioredis options.
 * Fails fast with FST_REALTIME_REDIS_UNAVAILABLE when Redis does not answer within `timeoutMs`.
 */
export async function connectRedis (
  fastify: FastifyInstance,
  spec: NonNullable<FastifyRealtimeOptions['redis']>,
  log: FastifyBaseLogger,
  timeoutMs: number
): Promise<Redis> {
  let client: Redis
  if (spec === true) {
    const appClient = (fastify as unknown as { redis?: Redis }).redis
    if (appClient === undefined || typeof appClient.duplicate !== 'function') {
      throw new FST_REALTIME_INVALID_OPTION('redis', 'true reuses fastify.redis: register @fastify/redis on the app')
    }
    client = appClient.duplicate(OWN_CONNECTION)
  } else if (typeof spec === 'string') {
    client = new Redis(spec, OWN_CONNECTION)
  } else {
    client = new Redis({ ...spec, ...OWN_CONNECTION })
  }
  try {
    checkKeyPrefix(client.options.keyPrefix)
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

/** Closes a connection the plugin opened, without waiting on a Redis that is gone. */
export async function closeRedis (client: Redis): Promise<void> {
  try {
    if (client.status === 'ready') await withTimeout(() => client.quit(), 1000, 'Redis quit')
  } catch {
    // gone already: disconnect below is all that is left to do
  } finally {
    client.disconnect()
  }
}
