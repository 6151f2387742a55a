// Type tests: compiled by `npm run test:types` against the built package (dist), as users see it.
// Each @ts-expect-error line must fail to compile, or tsc reports an unused directive.
import Fastify from 'fastify'
import { Type } from 'typebox'
import realtime, {
  fastifyRealtime,
  FST_REALTIME_INVALID_SCOPE,
  MemoryHistoryStore,
  RedisHistoryStore,
  type BroadcastMeta,
  type HistoryStore,
  type PresenceDiff,
  type PresenceSnapshot,
  type RealtimeStats
} from 'fastify-realtime'
import { createPublisher } from 'fastify-realtime/publisher'

interface Incident { id: string, title: string }

declare module 'fastify-realtime' {
  interface RealtimeEvents {
    'incident:created': Incident
    'incident:resolved': { id: string }
  }
  interface RealtimeUser {
    role: 'admin' | 'member'
  }
  interface RealtimePresenceInfo {
    id: string
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
await app.register(realtime, { io: { cors: { origin: (origin, cb) => { cb(null, origin === 'https://app.example') }, credentials: true, allowAnyOriginWithCredentials: true } } })
await app.register(realtime, { limits: { binaryAttachments: 1, connectionsPerUser: false, refreshesPerMinute: 10 } })
// @ts-expect-error allowAnyOriginWithCredentials is a boolean
await app.register(realtime, { io: { cors: { origin: true, credentials: true, allowAnyOriginWithCredentials: 'yes' } } })

// operations: metrics on a registry of the app's own, the hooks, the health route's options
const registry = { registerMetric: (_metric: unknown) => {}, getSingleMetric: (_name: string) => undefined, removeSingleMetric: (_name: string) => {} }
await app.register(realtime, {
  metrics: { registry, prefix: 'chat_' },
  hooks: {
    connect: (socket) => { expectType<string>(socket.data.userId) },
    disconnect: async (socket, reason) => { expectType<string>(reason); expectType<'admin' | 'member'>(socket.data.user.role) },
    subscribe: (_socket, scope) => { expectType<string>(scope) },
    unsubscribe: async () => {}
  },
  health: { cacheMs: 0, details: false, routeOptions: { logLevel: 'warn', onRequest: async () => {}, config: { probe: true } } }
})
await app.register(realtime, { metrics: true })
// @ts-expect-error metrics.registry must be a registry
await app.register(realtime, { metrics: { registry: {} } })
// @ts-expect-error hooks are the four named ones
await app.register(realtime, { hooks: { connected: () => {} } })
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
await app.broadcast('team:42', 'incident:resolved', { id: '1' }, { by: { id: 'u7', name: 'Jane', roles: ['admin'] } })
// @ts-expect-error opts.by is a string, a number or a JSON object, not a list
await app.broadcast('team:42', 'incident:resolved', { id: '1' }, { by: ['u7'] })
// @ts-expect-error opts.by holds JSON values only
await app.broadcast('team:42', 'incident:resolved', { id: '1' }, { by: { at: new Date() } })

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

await app.register(realtime, { presence: true })
await app.register(realtime, {
  presence: { kinds: ['team'], user: (user) => ({ id: String(user.id), role: user.role }), maxListed: 50, intervalMs: 500 }
})
// @ts-expect-error kinds is a list of scope kinds
await app.register(realtime, { presence: { kinds: 'team' } })
// @ts-expect-error presence.user answers the declared RealtimePresenceInfo
await app.register(realtime, { presence: { user: (user) => ({ id: user.id }) } })
const present: PresenceSnapshot = await app.realtime.presence('team:1')
expectType<number>(present.count)
expectType<boolean>(present.truncated)
expectType<'admin' | 'member' | undefined>(present.users[0]?.info.role)
const diff = {} as PresenceDiff
expectType<string[]>(diff.leaves)
expectType<string | undefined>(diff.joins[0]?.info.id)

// redis: a URL, options written inline (any ioredis option), or an ioredis RedisOptions value
{
  const app = Fastify()
  app.register(realtime, { redis: 'redis://127.0.0.1:6379' })
  app.register(realtime, { redis: { host: '127.0.0.1', port: 6379, keyPrefix: 'app:', retryStrategy: (times: number) => times * 100 } })
  const options: import('ioredis').RedisOptions = { host: '127.0.0.1', lazyConnect: false }
  app.register(realtime, { redis: options })
  // @ts-expect-error a port is a number
  app.register(realtime, { redis: { port: '6379' } })
  // an ioredis client is what the Redis history store attaches to
  new RedisHistoryStore().attach(new (await import('ioredis')).Redis({ lazyConnect: true }))
}

// redis: a Redis Cluster, by its startup nodes or as an ioredis Cluster
{
  const app = Fastify()
  app.register(realtime, { redis: { cluster: [{ host: '127.0.0.1', port: 7000 }], options: { keyPrefix: 'app:', redisOptions: { password: 'pw' } } } })
  app.register(realtime, { redis: new (await import('ioredis')).Cluster([{ host: '127.0.0.1', port: 7000 }], { lazyConnect: true }) })
  // @ts-expect-error a startup node needs a port
  app.register(realtime, { redis: { cluster: [{ host: '127.0.0.1' }] } })
}

// fastify-realtime/publisher: typed by the same RealtimeEvents; resolves with the meta, never null
{
  const publisher = createPublisher({ redis: 'redis://127.0.0.1:6379', keyPrefix: 'app:', events: { 'incident:created': Type.Object({ id: Type.String(), title: Type.String() }) }, history: { ttl: 600 } })
  expectType<BroadcastMeta>(await publisher.broadcast('team:42', 'incident:created', { id: '1', title: 't' }, { by: 'cron', idempotencyKey: 'k' }))
  // @ts-expect-error payload does not match RealtimeEvents['incident:created']
  await publisher.broadcast('team:42', 'incident:created', { id: 1 })
  // @ts-expect-error event name not declared in RealtimeEvents
  await publisher.broadcast('team:42', 'incident:unknown', {})
  createPublisher({ redis: { host: '127.0.0.1', port: 6379 }, history: false })
  // an ioredis client, whose settings the publisher's own connection copies
  createPublisher({ redis: new (await import('ioredis')).Redis({ lazyConnect: true }), connectTimeoutMs: 5000 })
  // @ts-expect-error redis is required
  createPublisher({ keyPrefix: 'app:' })
  await publisher.close()
}
