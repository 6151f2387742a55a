import { performance } from 'node:perf_hooks'
import type { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { FST_REALTIME_INVALID_OPTION, FST_REALTIME_MISSING_DEPENDENCY } from './errors.js'
import type { RealtimeServer } from './types.js'

/**
 * What the instrumented modules call, one short call per site. Counters are plain numbers here,
 * added to prom-client's counters when the registry is scraped: a broadcast costs a few field
 * writes and one histogram observation, never a label lookup, and a delivery costs nothing of
 * its own (deliveries are counted as the room's size when the event is emitted).
 */
export interface Instruments {
  /** A start time for `broadcast` (0 when metrics are off). */
  now: () => number
  /** An event emitted to `scope` on this node, `except` left out, since `started`. */
  broadcast: (scope: string, except: string | undefined, stored: boolean, started: number) => void
  /** A handshake (every namespace): `ok` or the refusal code. */
  handshake: (result: string) => void
  /** A `realtime:subscribe` answered: `ok` or the ack's code. */
  subscribe: (result: string) => void
  replayed: (events: number) => void
  resync: (reason: string) => void
  /** A client-to-server event dropped by the rate limit. */
  rateLimited: (event: string) => void
  slowConsumerClosed: () => void
}

const noop = (): void => {}

/** Metrics off: every call does nothing. */
export const NO_INSTRUMENTS: Instruments = Object.freeze({
  now: () => 0,
  broadcast: noop,
  handshake: noop,
  subscribe: noop,
  replayed: noop,
  resync: noop,
  rateLimited: noop,
  slowConsumerClosed: noop
})

/** What the gauges read when the registry is scraped. */
export interface GaugeSources {
  /** This node's connections on `/`. */
  connections: () => number
  /** Cluster figures (cached like the health route's); undefined while unknown. */
  cluster: () => Promise<{ nodes: number, connections: number } | undefined>
  /** Whether the plugin's Redis works (cached like the health route's); null without `redis`. */
  redisUp: (() => Promise<boolean>) | null
}

type PromClient = typeof import('prom-client')

/** prom-client, loaded only when metrics are on (an optional peer dependency). */
export async function loadPromClient (): Promise<PromClient> {
  let mod: PromClient & { default?: PromClient }
  try {
    mod = await import('prom-client')
  } catch (err) {
    const missing = new FST_REALTIME_MISSING_DEPENDENCY('metrics', 'prom-client', 'prom-client')
    missing.cause = err
    throw missing
  }
  return mod.default ?? mod
}

const BROADCAST_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]

/** The counters without labels, kept as plain numbers between scrapes. */
type PlainCount = 'deliveries' | 'replayed' | 'rateLimited' | 'slowClosed'

/** Counts by one bounded label (a result, a reason), added to a prom-client counter on scrape. */
class Tally {
  readonly #counts = new Map<string, number>()

  add (label: string, n = 1): void {
    this.#counts.set(label, (this.#counts.get(label) ?? 0) + n)
  }

  flush (counter: Counter<string>, labelName: string): void {
    for (const [label, n] of this.#counts) counter.inc({ [labelName]: label }, n)
    this.#counts.clear()
  }
}

/**
 * The plugin's Prometheus metrics on the app's registry (prom-client's global one by default),
 * named `<prefix><name>`. No scope, user or socket id is ever a label. `close` takes them off the
 * registry again, so an app that is built anew (tests, a restart in-process) can register them.
 */
export class Metrics implements Instruments {
  readonly #client: PromClient
  readonly #registry: Registry
  readonly #prefix: string
  /** The main namespace, whose rooms are the scopes (its adapter changes when Redis is wired). */
  readonly #main: ReturnType<RealtimeServer['of']>
  readonly #names: string[] = []
  readonly #broadcastSeconds: Histogram<string>
  #sources: GaugeSources | null = null
  #presence: (() => number | Promise<number>) | null = null
  // counted here, added to prom-client's counters on scrape
  #stored = 0
  #unstored = 0
  readonly #plain: Record<PlainCount, number> = { deliveries: 0, replayed: 0, rateLimited: 0, slowClosed: 0 }
  readonly #handshakes = new Tally()
  readonly #subscribes = new Tally()
  readonly #resyncs = new Tally()

  readonly now = (): number => performance.now()

  constructor (client: PromClient, options: { registry: unknown, prefix: string }, io: RealtimeServer, withRedis: boolean) {
    this.#client = client
    this.#registry = (options.registry ?? client.register) as Registry
    this.#prefix = options.prefix
    this.#main = io.of('/')
    const metrics = this
    this.#counter('handshakes_total', 'Socket.IO handshakes by result: ok, or the refusal code', ['result'], function () {
      metrics.#handshakes.flush(this, 'result')
    }).inc({ result: 'ok' }, 0)
    const broadcasts = this.#counter('broadcasts_total', 'Events broadcast from this node, by whether the history log stored them', ['stored'], function () {
      this.inc({ stored: 'true' }, metrics.#stored)
      this.inc({ stored: 'false' }, metrics.#unstored)
      metrics.#stored = metrics.#unstored = 0
    })
    broadcasts.inc({ stored: 'true' }, 0)
    broadcasts.inc({ stored: 'false' }, 0)
    this.#broadcastSeconds = this.#track(this.#name('broadcast_seconds'), new client.Histogram({
      name: this.#name('broadcast_seconds'),
      help: 'Time from a broadcast call to its emit on this node, in seconds',
      buckets: BROADCAST_BUCKETS,
      registers: []
    }))
    this.#plainCounter('deliveries_total', "Events written to this node's sockets by broadcasts from this node", 'deliveries')
    this.#plainCounter('replayed_events_total', 'Events replayed from the history log on catch-up', 'replayed')
    this.#counter('resyncs_total', 'realtime:resync sent, by reason', ['reason'], function () {
      metrics.#resyncs.flush(this, 'reason')
    })
    this.#counter('subscribes_total', 'realtime:subscribe answered, by result: ok, or the ack code', ['result'], function () {
      metrics.#subscribes.flush(this, 'result')
    }).inc({ result: 'ok' }, 0)
    this.#plainCounter('rate_limited_total', 'Client-to-server events dropped by the rate limit', 'rateLimited')
    this.#plainCounter('slow_consumer_closes_total', 'Transports closed because the client did not read what it was sent', 'slowClosed')
    this.#gauge('connections', 'Sockets connected to this node (namespace /)', async function () {
      this.set(metrics.#sources?.connections() ?? 0)
    })
    this.#gauge('cluster_nodes', 'Live nodes, from the heartbeats in Redis (1 without Redis; 0 while unknown)', async function () {
      this.set((await metrics.#cluster())?.nodes ?? 0)
    })
    this.#gauge('cluster_connections', 'Connections on every live node, from the heartbeats in Redis (this node alone without Redis)', async function () {
      this.set((await metrics.#cluster())?.connections ?? 0)
    })
    if (withRedis) {
      this.#gauge('redis_up', "1 while the plugin's Redis connections work, else 0", async function () {
        const up = metrics.#sources?.redisUp
        this.set(up == null ? 0 : (await up()) ? 1 : 0)
      })
    }
  }

  /** Wires the gauges to what they read (once the parts they read exist). */
  sources (sources: GaugeSources): void {
    this.#sources = sources
  }

  /**
   * `<prefix>presence_users`, for the presence module: `count` is read on every scrape. Calling
   * it again replaces the reader.
   */
  presenceUsers (count: () => number | Promise<number>): void {
    if (this.#presence === null) {
      const metrics = this
      this.#gauge('presence_users', 'Users present on this node, once per user and tracked scope', async function () {
        this.set(await metrics.#presence?.() ?? 0)
      })
    }
    this.#presence = count
  }

  /** Takes every metric of this plugin off the registry. */
  close (): void {
    for (const name of this.#names) this.#registry.removeSingleMetric(name)
    this.#names.length = 0
  }

  broadcast (scope: string, except: string | undefined, stored: boolean, started: number): void {
    this.#broadcastSeconds.observe((performance.now() - started) / 1000)
    if (stored) this.#stored++
    else this.#unstored++
    const room = this.#main.adapter.rooms.get(scope)
    if (room === undefined) return
    this.#plain.deliveries += except !== undefined && room.has(except) ? room.size - 1 : room.size
  }

  handshake (result: string): void {
    this.#handshakes.add(result)
  }

  subscribe (result: string): void {
    this.#subscribes.add(result)
  }

  replayed (events: number): void {
    this.#plain.replayed += events
  }

  resync (reason: string): void {
    this.#resyncs.add(reason)
  }

  rateLimited (event: string): void {
    this.#plain.rateLimited++
    if (event === 'realtime:subscribe') this.#subscribes.add('RATE_LIMITED')
  }

  slowConsumerClosed (): void {
    this.#plain.slowClosed++
  }

  async #cluster (): Promise<{ nodes: number, connections: number } | undefined> {
    return await this.#sources?.cluster()
  }

  #name (name: string): string {
    return `${this.#prefix}${name}`
  }

  /** Registers `metric`, refusing a name the registry already holds (another app on the same registry). */
  #track<M> (name: string, metric: M): M {
    if (this.#registry.getSingleMetric(name) !== undefined) {
      this.close()
      throw new FST_REALTIME_INVALID_OPTION('metrics', `the registry already has a metric ${name}: give each app its own registry or prefix`)
    }
    this.#registry.registerMetric(metric as never)
    this.#names.push(name)
    return metric
  }

  #counter (name: string, help: string, labelNames: string[], collect: (this: Counter<string>) => void): Counter<string> {
    return this.#track(this.#name(name), new this.#client.Counter({ name: this.#name(name), help, labelNames, registers: [], collect }))
  }

  /** A counter without labels, counted in `#plain[key]` and handed to prom-client on a scrape. */
  #plainCounter (name: string, help: string, key: PlainCount): void {
    const plain = this.#plain
    this.#counter(name, help, [], function () {
      this.inc(plain[key])
      plain[key] = 0
    })
  }

  #gauge (name: string, help: string, collect: (this: Gauge<string>) => Promise<void>): Gauge<string> {
    return this.#track(this.#name(name), new this.#client.Gauge({ name: this.#name(name), help, registers: [], collect }))
  }
}
