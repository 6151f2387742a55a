import type { FastifyInstance, RouteShorthandOptions } from 'fastify'
import { Type } from 'typebox'
import type { ClusterCounts } from './cluster.js'
import type { HistoryStore } from './history/store.js'
import { withTimeout } from './util.js'

const Count = Type.Integer({ minimum: 0 })
const WebSocket = Type.Object({ enabled: Type.Boolean(), connections: Count })

/** The health body; `websocket` keeps the shape ops scripts already read. */
export const HealthSchema = Type.Object({
  websocket: WebSocket,
  node: Type.Object({ id: Type.String(), connections: Count }),
  cluster: Type.Optional(Type.Object({ nodes: Count, connections: Count })),
  history: Type.Object({ store: Type.String(), ok: Type.Boolean() })
})

/** The body with `health.details: false`: the status code says the rest. */
export const PublicHealthSchema = Type.Object({ websocket: WebSocket })

/** What the checks behind the route found: the parts that cost Redis a command. */
export interface Checked {
  /** Undefined on a single node, and while Redis cannot say. */
  cluster: ClusterCounts | undefined
  storeOk: boolean
  redisOk: boolean
}

export interface CheckSources {
  counts: () => Promise<ClusterCounts | undefined>
  store: HistoryStore | null
  /**
   * With `redis` configured: whether the plugin's own Redis connections work (it must answer
   * within its own short bound). Null without `redis`.
   */
  redis: (() => Promise<boolean>) | null
}

async function storeOk (store: HistoryStore): Promise<boolean> {
  if (store.ping === undefined) return true
  try {
    return await withTimeout(() => store.ping!(), 2000, 'history ping')
  } catch {
    return false
  }
}

/**
 * The Redis checks behind the health route and the metrics' gauges, run at most once per
 * `cacheMs`: requests in between, and those that arrive while a round runs, share its answer,
 * so a probe storm costs Redis one round of commands per period.
 */
export class HealthChecks {
  readonly #sources: CheckSources
  readonly #cacheMs: number
  readonly #now: () => number
  #last: Promise<Checked> | null = null
  #lastAt = 0
  #running = false

  constructor (sources: CheckSources, cacheMs: number, now: () => number) {
    this.#sources = sources
    this.#cacheMs = cacheMs
    this.#now = now
  }

  async read (): Promise<Checked> {
    if (this.#last === null || (!this.#running && this.#now() - this.#lastAt >= this.#cacheMs)) {
      this.#lastAt = this.#now()
      this.#running = true
      const round = this.#check()
      this.#last = round
      round.finally(() => {
        if (this.#last !== round) return
        this.#running = false
        // the period starts when the answer is in: a slow check is not repeated at once
        this.#lastAt = this.#now()
      }).catch(() => {})
    }
    return await this.#last
  }

  async #check (): Promise<Checked> {
    const { counts, store, redis } = this.#sources
    const [cluster, ok, redisOk] = await Promise.all([
      counts().catch(() => undefined),
      store === null ? true : storeOk(store),
      redis === null ? true : redis().catch(() => false)
    ])
    return { cluster, storeOk: ok, redisOk }
  }
}

export interface HealthContext {
  path: string
  routeOptions: RouteShorthandOptions
  details: boolean
  nodeId: string
  /** This node's connections, read on every request (it costs nothing). */
  connections: () => number
  store: HistoryStore | null
  checks: HealthChecks
}

/**
 * `GET <path>`: 200 when every configured part works, 503 (same shape) when one does not: the
 * history store, and Redis whenever it is configured, whatever holds the history.
 * `history.ok` is about the store alone. `routeOptions` are the app's (auth, log level, config).
 */
export function registerHealth (fastify: FastifyInstance, ctx: HealthContext): void {
  const { routeOptions } = ctx
  const body = ctx.details ? HealthSchema : PublicHealthSchema
  fastify.get(ctx.path, {
    ...routeOptions,
    schema: { ...routeOptions.schema, response: { 200: body, 503: body } }
  }, async (_request, reply) => {
    const checked = await ctx.checks.read()
    const connections = ctx.connections()
    reply.header('cache-control', 'no-store')
    reply.code(checked.storeOk && checked.redisOk ? 200 : 503)
    const websocket = { enabled: true, connections }
    if (!ctx.details) return { websocket }
    const result: Record<string, unknown> = {
      websocket,
      node: { id: ctx.nodeId, connections },
      history: { store: ctx.store === null ? 'none' : ctx.store.kind, ok: checked.storeOk }
    }
    if (checked.cluster !== undefined) result.cluster = checked.cluster
    return result
  })
}
