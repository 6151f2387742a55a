import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import { FST_REALTIME_INVALID_OPTION, FST_REALTIME_REDIS_UNAVAILABLE } from './errors.js'
import type { FastifyRealtimeOptions } from './types.js'
import { routeSubscriptions, writable, type RedisCall, type SubscribeMethod } from './internals.js'
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
 * `connectionName` (CLIENT SETNAME) lets ops and tests find the connection in CLIENT LIST; a name
 * the app gave its client or options is kept instead.
 */
export async function connectRedis (
  fastify: FastifyInstance,
  spec: NonNullable<FastifyRealtimeOptions['redis']>,
  log: FastifyBaseLogger,
  timeoutMs: number,
  connectionName?: string
): Promise<Redis> {
  let client: Redis
  const named = (given: string | undefined): RedisOptions => connectionName === undefined || given !== undefined ? OWN_CONNECTION : { ...OWN_CONNECTION, connectionName }
  const own = named(typeof spec === 'object' ? spec.connectionName : undefined)
  if (spec === true) {
    const appClient = (fastify as unknown as { redis?: Redis }).redis
    if (appClient === undefined || typeof appClient.duplicate !== 'function') {
      throw new FST_REALTIME_INVALID_OPTION('redis', 'true reuses fastify.redis: register @fastify/redis on the app')
    }
    client = appClient.duplicate(named(appClient.options.connectionName))
  } else if (typeof spec === 'string') {
    client = new Redis(spec, own)
  } else {
    client = new Redis({ ...spec, ...own })
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

/** The plugin's own two connections: `pub` for commands and publishes, `sub` for the adapter's subscriptions. */
export interface RedisPair {
  pub: Redis
  sub: Redis
  /** Closes both, without waiting on a Redis that is gone. */
  close: () => Promise<void>
}

/**
 * Opens both connections and runs `use` with them (wiring the store and the cluster); when
 * either step fails, whatever was opened is closed again before the error is thrown. With
 * `nodeId`, they are named `fastify-realtime:pub:<nodeId>` and `fastify-realtime:sub:<nodeId>`.
 */
export async function connectPair (
  fastify: FastifyInstance,
  spec: NonNullable<FastifyRealtimeOptions['redis']>,
  log: FastifyBaseLogger,
  timeoutMs: number,
  use: (pair: RedisPair) => Promise<void>,
  nodeId?: string
): Promise<RedisPair> {
  const opened: Redis[] = []
  const close = async (): Promise<void> => { await Promise.all(opened.map(closeRedis)) }
  try {
    const name = (role: string): string | undefined => nodeId === undefined ? undefined : `fastify-realtime:${role}:${nodeId}`
    opened.push(await connectRedis(fastify, spec, log, timeoutMs, name('pub')))
    opened.push(await connectRedis(fastify, spec, log, timeoutMs, name('sub')))
    const pair: RedisPair = { pub: opened[0]!, sub: opened[1]!, close }
    await use(pair)
    return pair
  } catch (err) {
    await close()
    throw err
  }
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

function namesOf (args: unknown[]): string[] {
  const names: string[] = []
  for (const arg of args.flat()) {
    if (typeof arg === 'string') names.push(arg)
    else if (Buffer.isBuffer(arg)) names.push(arg.toString())
  }
  return names
}

/**
 * The subscriber connection's subscriptions. Every (p)subscribe and (p)unsubscribe the adapter
 * makes goes through here: a refusal (while Redis is away the plugin's connections have no offline
 * queue, so they fail at once) is logged instead of becoming an unhandled rejection, and whatever
 * is still wanted is subscribed again once the connection is back, including what failed during
 * the outage (ioredis would restore only what had succeeded).
 */
export class Subscriptions {
  readonly #sub: Redis
  readonly #log: FastifyBaseLogger
  readonly #onRestored: () => void
  readonly #original: Record<SubscribeMethod, RedisCall>
  readonly #wanted: Record<'subscribe' | 'psubscribe', Set<string>> = { subscribe: new Set(), psubscribe: new Set() }
  readonly #pending = new Set<Promise<boolean>>()
  // Redis may lack something wanted: the connection dropped, or a subscribe failed
  #stale = false
  #restoring = false
  #closed = false
  readonly #onClose = (): void => { this.#stale = true }
  readonly #onReady = (): void => { this.restore() }

  constructor (sub: Redis, log: FastifyBaseLogger, onRestored: () => void) {
    this.#sub = sub
    this.#log = log
    this.#onRestored = onRestored
    this.#original = routeSubscriptions(sub, async (method, args) => {
      const names = namesOf(args)
      if (method === 'subscribe' || method === 'psubscribe') {
        for (const name of names) this.#wanted[method].add(name)
      } else {
        const wanted = this.#wanted[method === 'unsubscribe' ? 'subscribe' : 'psubscribe']
        if (names.length === 0) wanted.clear()
        for (const name of names) wanted.delete(name)
      }
      return await this.#call(method, args)
    })
    sub.on('close', this.#onClose)
    sub.on('ready', this.#onReady)
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
    const calls = (['subscribe', 'psubscribe'] as const)
      .filter((method) => this.#wanted[method].size > 0)
      .map(async (method) => await this.#call(method, [[...this.#wanted[method]]]))
    Promise.all(calls).then((results) => {
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
  }

  async #call (method: SubscribeMethod, args: unknown[]): Promise<boolean> {
    const done = this.#original[method](...args).then(() => true, (err: Error) => {
      if (method === 'subscribe' || method === 'psubscribe') this.#stale = true
      this.#log.debug({ err }, `fastify-realtime: Redis ${method} failed; subscriptions are restored once Redis is back`)
      return false
    })
    this.#pending.add(done)
    done.then(() => this.#pending.delete(done), () => {})
    return await done
  }
}
