import type { FastifyInstance } from 'fastify'
import { Type } from 'typebox'
import type { HistoryStore } from './history/store.js'
import type { RealtimeStats } from './types.js'
import { withTimeout } from './util.js'

const Count = Type.Integer({ minimum: 0 })

/** The health body; `websocket` keeps the shape ops scripts already read. */
export const HealthSchema = Type.Object({
  websocket: Type.Object({ enabled: Type.Boolean(), connections: Count }),
  node: Type.Object({ id: Type.String(), connections: Count }),
  cluster: Type.Optional(Type.Object({ nodes: Count, connections: Count })),
  history: Type.Object({ store: Type.String(), ok: Type.Boolean() })
})

export interface HealthContext {
  path: string
  stats: () => Promise<RealtimeStats>
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
 * `GET <path>`: 200 when every configured part works, 503 (same shape) when one does not: the
 * history store, and Redis whenever it is configured, whatever holds the history.
 * `history.ok` is about the store alone.
 */
export function registerHealth (fastify: FastifyInstance, ctx: HealthContext): void {
  fastify.get(ctx.path, {
    schema: { response: { 200: HealthSchema, 503: HealthSchema } }
  }, async (_request, reply) => {
    const [stats, ok, redisOk] = await Promise.all([
      ctx.stats(),
      ctx.store === null ? true : storeOk(ctx.store),
      ctx.redis === null ? true : ctx.redis().catch(() => false)
    ])
    const body: Record<string, unknown> = {
      websocket: { enabled: true, connections: stats.node.connections },
      node: stats.node,
      history: { store: ctx.store === null ? 'none' : ctx.store.kind, ok }
    }
    if (stats.cluster !== undefined) body.cluster = stats.cluster
    reply.header('cache-control', 'no-store')
    reply.code(ok && redisOk ? 200 : 503)
    return body
  })
}
