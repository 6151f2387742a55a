import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { Cluster as RedisCluster, Redis } from 'ioredis'
import { Server } from 'socket.io'
import { HandshakeGuard, admission, closeTransports } from './admission.js'
import { Auth } from './auth.js'
import { createBroadcast } from './broadcast.js'
import { CatchUps } from './catchup.js'
import { Cluster } from './cluster.js'
import { Credentials } from './credentials.js'
import { handshake } from './handshake.js'
import { HealthChecks, registerHealth } from './health.js'
import { createStore } from './history/index.js'
import { RedisHistoryStore } from './history/redis.js'
import { checkInternals } from './internals.js'
import { tokenVerifier } from './jwt.js'
import { Lifecycle } from './lifecycle.js'
import { SendBufferWatch, UserConnections, routeEvents, type EventRoute } from './limits.js'
import { Memberships } from './memberships.js'
import { Metrics, NO_INSTRUMENTS, loadPromClient } from './metrics.js'
import { normalizeOptions } from './options.js'
import { limitedParser } from './parser.js'
import { Presence } from './presence/index.js'
import { EVENT_AUTH, EVENT_PRESENCE, EVENT_SUBSCRIBE, EVENT_UNSUBSCRIBE, ackError } from './protocol.js'
import { Recovery } from './recovery.js'
import { connectPair, isCluster, type RedisPair } from './redis.js'
import { Subscriptions } from './subscriptions.js'
import type { FastifyRealtimeOptions, RealtimeApi, RealtimeServer, RealtimeSocket } from './types.js'
import { rateLimitedWarn, reply } from './util.js'

const fastifyRealtime: FastifyPluginAsync<FastifyRealtimeOptions> = async function fastifyRealtime (fastify, opts) {
  // options
  const options = normalizeOptions(opts)
  const { log } = fastify
  const { clock } = options
  const nodeId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`
  const state = { open: false, closing: false }

  // io: on the app's server, with transports admitted at the HTTP level first
  const guard = new HandshakeGuard(options.limits.handshakesPerAddress)
  const parser = options.io.parser ?? limitedParser(options.limits.binaryAttachments, options.io.connectTimeout, clock)
  const io: RealtimeServer = new Server(fastify.server, { ...options.io, parser, allowRequest: admission(options.io, guard, () => state.closing) })
  checkInternals(io, options.redis === null ? null : Redis, options.redis === null ? null : RedisCluster)
  io.engine.on('connection', (conn: Parameters<HandshakeGuard['opened']>[0]) => { guard.opened(conn) })

  // metrics (prom-client is loaded only when they are on), logs and the app's hooks
  const metrics = options.metrics === false ? null : new Metrics(await loadPromClient(), options.metrics, io, options.redis !== null)
  const instruments = metrics ?? NO_INSTRUMENTS
  const lifecycle = new Lifecycle(options.hooks, log, rateLimitedWarn(log, 10_000, clock.now), instruments)
  const onRateLimited = (event: string): void => { instruments.rateLimited(event) }

  // history
  const { store, owned: ownsStore } = createStore(options.history)

  // handshake -> memberships: the verifier (and with it every handshake) waits for `ready`
  const memberships = new Memberships({ ...options, scopesPerSocket: options.limits.scopesPerSocket, timeoutMs: options.auth.timeoutMs }, log, clock)
  const verifier = tokenVerifier(fastify, options.auth)
  let credentials: Credentials | null = null
  let auth: Auth | null = null
  const connections = new UserConnections(options.limits.connectionsPerUser, log)
  const authenticate = lifecycle.handshakes(handshake({ credentials: () => state.closing ? null : credentials, memberships, guard, connections, log }))

  // subscriptions: the protocol's client-to-server events on every namespace; scopes on `/`
  // where each local scope stands, so a Redis blip needs no reconnects (recovery is wired with the cluster below)
  let recovery: Recovery | null = null
  const catchUps = new CatchUps(store, io.encoder, rateLimitedWarn(log, 10_000, clock.now), instruments, (socket, scope, position) => { recovery?.joined(socket, scope, position) })
  const subscriptions = new Subscriptions(memberships, catchUps, options.limits.scopesPerSocket, log)
  const authRoutes: Record<string, EventRoute> = { [EVENT_AUTH]: (socket, message, ack) => { auth?.refresh(socket, message, ack) } }
  const mainRoutes: Record<string, EventRoute> = {
    ...authRoutes,
    [EVENT_SUBSCRIBE]: (socket, message, ack) => {
      const answer = lifecycle.subscribeAck(socket, message, ack)
      // no new scope on an expired token: the client refreshes it first
      if (auth?.expired(socket) === true) reply(answer, ackError('AUTH_EXPIRED', 'The token has expired; refresh it with realtime:auth first'))
      else subscriptions.subscribe(socket, message, answer)
    },
    [EVENT_UNSUBSCRIBE]: (socket, message, ack) => { subscriptions.unsubscribe(socket, message, lifecycle.unsubscribeAck(socket, ack)) },
    [EVENT_PRESENCE]: (socket, message, ack) => { presence.answer(socket, message, ack) }
  }
  const eventLimits = { rate: options.rateLimit, refreshesPerMinute: options.limits.refreshesPerMinute }
  const connected = (socket: RealtimeSocket, routes: Record<string, EventRoute>): boolean => {
    if (auth === null) {
      socket.disconnect(true)
      return false
    }
    connections.connected(socket)
    if (!socket.connected) return false
    routeEvents(socket, eventLimits, routes, clock, onRateLimited)
    auth.attach(socket)
    return true
  }
  io.use(authenticate)
  io.on('connection', (socket: RealtimeSocket) => {
    if (!connected(socket, mainRoutes)) return
    subscriptions.welcome(socket).catch((err: unknown) => {
      log.error({ err }, 'fastify-realtime: connection setup failed')
      socket.disconnect(true)
    })
    lifecycle.connected(socket)
  })
  // every namespace is authenticated, including ones the app creates later (and dynamic children)
  io.on('new_namespace', (namespace) => {
    namespace.use(authenticate)
    namespace.on('connection', (socket: RealtimeSocket) => { if (connected(socket, authRoutes)) lifecycle.connected(socket) })
  })

  // broadcast
  const broadcast = createBroadcast({
    io,
    store,
    events: options.events,
    ttl: options.history === false ? 300 : options.history.ttl,
    idempotencyKeys: options.limits.idempotencyKeys,
    log,
    isOpen: () => state.open,
    clock,
    metrics: instruments
  })

  // cluster: membership changes reach authorizations in flight on this node
  const cluster = new Cluster(io, nodeId, log, (userId, disconnected) => { memberships.removed(userId, disconnected) })
  let redis: RedisPair | null = null
  if (options.redis !== null) {
    // A node whose subscriber was away missed what other nodes broadcast and the membership
    // changes they made: it keeps its sockets and brings its rooms up to date itself.
    recovery = new Recovery({
      io,
      store,
      catchUps,
      applyMissed: async () => await cluster.applyMissed(),
      recheck: async (socket) => { await subscriptions.reauthorize(socket, socket.data.user, () => {}) },
      log,
      clock,
      options: options.recovery
    })
  }

  // presence: counted from room joins and leaves on this node, shared through the store (Redis with `redis`)
  const presence = new Presence(io, nodeId, options.presence, log, clock)
  if (options.presence !== false) metrics?.presenceUsers(() => presence.localUsers)

  // decorators
  const api: RealtimeApi = {
    join: async (userId, scope) => { await cluster.join(userId, scope) },
    leave: async (userId, scope) => { await cluster.leave(userId, scope) },
    disconnectUser: async (userId) => { await cluster.disconnectUser(userId) },
    stats: async () => await cluster.stats(),
    presence: async (scope) => await presence.snapshot(scope),
    history: store
  }
  fastify.decorate('io', io)
  fastify.decorate('realtime', api)
  fastify.decorate('broadcast', broadcast)

  // health, and the gauges read on a scrape: the Redis checks behind both are cached
  const localConnections = (): number => io.of('/').sockets.size
  const checks = new HealthChecks({
    counts: async () => await cluster.counts(),
    store,
    redis: options.redis === null ? null : async () => await cluster.reachable()
  }, options.health === false ? 1000 : options.health.cacheMs, clock.now)
  if (options.health !== false) registerHealth(fastify, { ...options.health, nodeId, connections: localConnections, store, checks })
  metrics?.sources({
    connections: localConnections,
    cluster: async () => options.redis === null ? { nodes: 1, connections: localConnections() } : (await checks.read()).cluster,
    redisUp: options.redis === null ? null : async () => (await checks.read()).redisOk
  })

  // ready: what may come from plugins the app registers after this one
  let sendBuffers: SendBufferWatch | null = null
  fastify.addHook('onReady', async function wireRealtime () {
    const verify = verifier()
    if (options.redis !== null) {
      redis = await connectPair(fastify, options.redis, log, options.clusterTimeoutMs, async ({ pub, sub }) => {
        if (store instanceof RedisHistoryStore) store.attach(pub)
        await cluster.connect(pub, sub, {
          timeoutMs: options.clusterTimeoutMs,
          ...options.cluster,
          operations: options.recovery.operations,
          onAway: () => { recovery?.away() },
          onResubscribed: async () => await recovery?.resubscribed()
        })
        recovery?.attach()
        // one channel per scope on a Redis Cluster: a catch-up waits until the node listens on the
        // channels of the rooms it just joined, so what is published after the log is read arrives live
        if (isCluster(sub)) catchUps.channelsReady = async () => { await cluster.listening() }
      }, nodeId)
    }
    // dead nodes are looked for every second at most: their users leave within a second of the heartbeat expiring
    presence.start(redis === null ? null : { client: redis.pub, liveNodes: async () => await cluster.liveNodes(), sweepMs: Math.min(options.cluster.heartbeatMs, 1000) })
    credentials = new Credentials(options.auth, verify, log, clock.now)
    auth = new Auth(options.auth, credentials, (socket, user, commit) => subscriptions.reauthorize(socket, user, commit), log, clock)
    if (options.limits.sendBufferBytes !== false) sendBuffers = new SendBufferWatch(io, options.limits.sendBufferBytes, log, () => { instruments.slowConsumerClosed() })
    state.open = !state.closing
    log.info({
      nodeId,
      history: store === null ? 'none' : store.kind,
      adapter: redis === null ? 'in-memory' : isCluster(redis.pub) ? 'redis-sharded' : 'redis',
      metrics: options.metrics !== false,
      limits: { ...options.limits, rateLimit: options.rateLimit, connectTimeout: options.io.connectTimeout, maxHttpBufferSize: options.io.maxHttpBufferSize ?? 1e6 }
    }, 'fastify-realtime: ready')
  })

  // close: transports first (clients see a transport close and reconnect, to another node, with
  // `since`), then timers, the cluster, Socket.IO, and what the plugin opened itself
  fastify.addHook('preClose', function closeRealtimeTransports (done) {
    state.open = false
    state.closing = true
    if (options.preClose === null) {
      closeTransports(io)
      done()
      return
    }
    let called = false
    options.preClose.call(fastify, () => {
      if (called) return
      called = true
      closeTransports(io)
      done()
    })
  })
  fastify.addHook('onClose', async function closeRealtime () {
    state.open = false
    state.closing = true
    sendBuffers?.close()
    auth?.close()
    recovery?.close()
    // this node's presence out, while its Redis connection and the adapter still carry the diffs
    await presence.close()
    // leave the cluster figures first, so other nodes stop waiting on this one at once
    await cluster.close()
    await io.close()
    if (ownsStore) await store?.close?.()
    await redis?.close()
    metrics?.close()
  })
}

const plugin = fp(fastifyRealtime, { fastify: '5.x', name: 'fastify-realtime' })

export default plugin
export { plugin as fastifyRealtime }
export type { RealtimeClock } from './clock.js'
export * from './errors.js'
export { MemoryHistoryStore, type MemoryHistoryOptions } from './history/memory.js'
export { RedisHistoryStore, type RedisHistoryOptions } from './history/redis.js'
export type { HistoryEntry, HistoryStore, ReadResult, StoredEvent } from './history/store.js'
export { isScope } from './protocol.js'
export type { AckErrorCode, ConnectErrorCode, Position, ResyncReason } from './protocol.js'
export type * from './types.js'
