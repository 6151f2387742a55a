// Type tests: compiled by `npm run test:types` against the built package (dist), as users see it.
// Each @ts-expect-error line must fail to compile, or tsc reports an unused directive.
import Fastify from 'fastify'
import { Type } from 'typebox'
import realtime, {
  fastifyRealtime,
  FST_REALTIME_INVALID_SCOPE,
  MemoryHistoryStore,
  type BroadcastMeta,
  type HistoryStore,
  type RealtimeStats
} from 'fastify-realtime'

interface Incident { id: string, title: string }

declare module 'fastify-realtime' {
  interface RealtimeEvents {
    'incident:created': Incident
    'incident:resolved': { id: string }
  }
  interface RealtimeUser {
    role: 'admin' | 'member'
  }
}

/** Compiles only when `value` is a T. */
function expectType<T> (value: T): T {
  return value
}

const app = Fastify()

await app.register(realtime, {
  auth: { secret: 'x', user: async (claims) => ({ id: String(claims.sub), role: 'member' as const }) },
  rooms: async (user) => [`team:${user.id}`],
  canSubscribe: (user, scope) => user.role === 'admin' && scope === 'incidents:all',
  history: { store: 'memory', ttl: 60, max: 10 },
  events: { 'incident:created': Type.Object({ id: Type.String(), title: Type.String() }) },
  io: { cors: { origin: ['https://app.example'] }, maxHttpBufferSize: 1e5 },
  preClose: (done) => { done() }
})
await app.register(fastifyRealtime, { history: false, health: false, rateLimit: false })

// @ts-expect-error rooms must return scopes
await app.register(realtime, { rooms: async () => 42 })
// @ts-expect-error history.store is 'memory' | 'redis' | HistoryStore
await app.register(realtime, { history: { store: 'disk' } })

const meta: BroadcastMeta | null = await app.broadcast('team:42', 'incident:created', { id: '1', title: 'Disk full' }, { by: 'u1' })
if (meta !== null) {
  const seq: number | undefined = meta.seq
  const stored: boolean = meta.stored
  expectType(seq)
  expectType(stored)
}
// @ts-expect-error payload does not match RealtimeEvents['incident:created']
await app.broadcast('team:42', 'incident:created', { id: 1 })
// @ts-expect-error event name not declared in RealtimeEvents
await app.broadcast('team:42', 'incident:unknown', {})
// @ts-expect-error opts.by is a string or number
await app.broadcast('team:42', 'incident:resolved', { id: '1' }, { by: {} })

app.io.on('connection', (socket) => {
  const role: 'admin' | 'member' = socket.data.user.role
  const userId: string = socket.data.userId
  expectType(role)
  expectType(userId)
})

const stats: RealtimeStats = await app.realtime.stats()
expectType(stats.node.connections)
await app.realtime.join('u1', 'team:1')
await app.realtime.leave(42, 'team:1')
await app.realtime.disconnectUser('u1')
// @ts-expect-error user ids are strings or numbers
await app.realtime.join({ id: 1 }, 'team:1')

const custom: HistoryStore = new MemoryHistoryStore({ ttl: 1, max: 1, now: () => 0 })
expectType(custom)
const err = new FST_REALTIME_INVALID_SCOPE('x')
expectType(err.code)
