import { randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { hostname } from 'node:os'
import fastifyJwt, { type JWT } from '@fastify/jwt'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import type { Redis } from 'ioredis'
import { Server, type ServerOptions } from 'socket.io'
import { Auth, ConnectError, type Authenticated, type VerifyToken } from './auth.js'
import { createBroadcast } from './broadcast.js'
import { Cluster } from './cluster.js'
import { FST_REALTIME_INVALID_OPTION, FST_REALTIME_INVALID_SCOPE, FST_REALTIME_INVALID_USER_ID } from './errors.js'
import { registerHealth } from './health.js'
import { MemoryHistoryStore } from './history/memory.js'
import { RedisHistoryStore } from './history/redis.js'
import type { HistoryStore } from './history/store.js'
import { normalizeOptions, type NormalizedOptions } from './options.js'
import { EVENT_AUTH, EVENT_SUBSCRIBE, EVENT_UNSUBSCRIBE, isScope, userIdString } from './protocol.js'
import { HandshakeGuard, SendBufferWatch, routeEvents, type EventRoute } from './limits.js'
import { closeRedis, connectRedis } from './redis.js'
import { isPromiseLike } from './util.js'
import { Rooms, disconnectedMeanwhile } from './rooms.js'
import type { FastifyRealtimeOptions, RealtimeApi, RealtimeClaims, RealtimeServer, RealtimeSocket, RealtimeStats } from './types.js'

type AllowRequest = NonNullable<ServerOptions['allowRequest']>
type Origin = string | RegExp

/** Origins a browser handshake may come from, when `io.cors.origin` names them; null: any. */
function allowedOrigins (io: Partial<ServerOptions>): ((origin: string) => boolean) | null {
  const origin = (io.cors as { origin?: unknown } | undefined)?.origin
  if (origin === undefined || origin === true || origin === '*') return null
  if (origin === false) return () => false
  const list = (Array.isArray(origin) ? origin : [origin]) as unknown[]
  if (!list.every((o) => typeof o === 'string' || o instanceof RegExp)) return null
  return (value) => (list as Origin[]).some((o) => typeof o === 'string' ? o === value : o.test(value))
}

/** Secrets that are not PEM keys or functions get HS256 pinned unless `auth.verify.algorithms` says otherwise. */
function defaultAlgorithms (secret: NormalizedOptions['auth']['secret']): string[] | undefined {
  if (typeof secret === 'string' || Buffer.isBuffer(secret)) {
    return secret.toString().startsWith('-----BEGIN') ? undefined : ['HS256']
  }
  return undefined
}

function userIdOf (userId: unknown): string {
  const id = userIdString(userId)
  if (id === null) throw new FST_REALTIME_INVALID_USER_ID(String(userId).slice(0, 200))
  return id
}

function memberScope (scope: unknown): string {
  // user scopes are fixed: every socket is in its own and no other
  if (!isScope(scope) || scope.startsWith('user:')) throw new FST_REALTIME_INVALID_SCOPE(String(scope).slice(0, 200))
  return scope
}

const fastifyRealtime: FastifyPluginAsync<FastifyRealtimeOptions> = async function fastifyRealtime (fastify, opts) {
  const options = normalizeOptions(opts)
  const log = fastify.log
  const nodeId = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`
  const state = { open: false, closing: false }
  let auth: Auth | null = null

  // Refuses at the HTTP level, before any Socket.IO work: closing (clients go on reconnecting,
  // to another node), too many handshakes pending from one address, or a browser origin that
  // `io.cors` does not name (CORS headers alone do not stop a WebSocket). Before `ready`,
  // handshakes get through to the middleware, which refuses them with UNAVAILABLE.
  const originOk = allowedOrigins(options.io)
  const userAllowRequest = options.io.allowRequest
  const handshakes = new HandshakeGuard(options.limits.handshakesPerAddress)
  const allowRequest: AllowRequest = (req: IncomingMessage, callback) => {
    // engine.io's callback takes a reason string where Node callbacks take an error
    /* eslint-disable n/no-callback-literal */
    if (state.closing) return callback('Server is closing', false)
    if (!handshakes.admits(req.socket.remoteAddress)) return callback('Too many pending handshakes from this address', false)
    const origin = req.headers.origin
    if (originOk !== null && origin !== undefined && !originOk(origin)) return callback('Origin not allowed', false)
    /* eslint-enable n/no-callback-literal */
    if (userAllowRequest !== undefined) return userAllowRequest(req, callback)
    callback(null, true)
  }
  const io: RealtimeServer = new Server(fastify.server, { ...options.io, allowRequest })
  io.engine.on('connection', (conn: Parameters<HandshakeGuard['opened']>[0]) => handshakes.opened(conn))
  let sendBuffers: SendBufferWatch | null = null

  let store: HistoryStore | null = null
  let ownsStore = true
  if (options.history !== false) {
    const { ttl, max } = options.history
    if (options.history.store === 'memory') store = new MemoryHistoryStore({ ttl, max })
    else if (options.history.store === 'redis') store = new RedisHistoryStore({ ttl, max })
    else {
      store = options.history.store
      ownsStore = false
    }
  }
  let redis: Redis | null = null
  let redisSub: Redis | null = null
  const rooms = new Rooms({ ...options, timeoutMs: options.auth.timeoutMs }, store, log, (io as unknown as { encoder?: unknown }).encoder)
  const cluster = new Cluster(io, nodeId, log, (userId, disconnected) => { rooms.revoke(userId, disconnected) })

  const stats = async (): Promise<RealtimeStats> => {
    const node = { id: nodeId, connections: io.of('/').sockets.size }
    const counts = await cluster.counts()
    return counts === undefined ? { node } : { node, cluster: counts }
  }
  const api: RealtimeApi = {
    join: async (userId, scope) => await cluster.join(userIdOf(userId), memberScope(scope)),
    leave: async (userId, scope) => await cluster.leave(userIdOf(userId), memberScope(scope)),
    disconnectUser: async (userId) => await cluster.disconnectUser(userIdOf(userId)),
    stats,
    history: store
  }

  fastify.decorate('io', io)
  fastify.decorate('realtime', api)
  fastify.decorate('broadcast', createBroadcast({
    io,
    store,
    events: options.events,
    ttl: options.history === false ? 300 : options.history.ttl,
    log,
    isOpen: () => state.open
  }))
  if (options.health !== false) registerHealth(fastify, { path: options.health.path, stats, store, redis: options.redis === null ? null : async () => await cluster.reachable() })

  // Our own @fastify/jwt lives in a child context, so an app that registers @fastify/jwt
  // after this plugin does not collide with it (and is preferred at ready).
  let ownJwt: JWT | undefined
  if (options.auth.secret !== undefined && !fastify.hasDecorator('jwt')) {
    const algorithms = defaultAlgorithms(options.auth.secret)
    const verify = { ...(algorithms === undefined ? {} : { algorithms }), ...options.auth.verify }
    fastify.register(async function realtimeJwt (child) {
      await child.register(fastifyJwt, { secret: options.auth.secret as string, verify: verify as never })
      ownJwt = child.jwt
    })
  }

  /** Authenticates a handshake on any namespace; on `/` it also asks for the scopes to join. */
  const granted = new WeakMap<RealtimeSocket, string[]>()
  const authenticate = (socket: RealtimeSocket, next: (err?: Error) => void): void => {
    const conn = socket.conn
    const main = socket.nsp.name === '/'
    if (auth === null || state.closing) {
      next(new ConnectError('UNAVAILABLE', 'The server is not accepting connections right now'))
      return
    }
    // a second CONNECT for a namespace whose first one is still being checked: a protocol
    // violation (the official client never does it) that would double the lookups
    if (!handshakes.begin(conn, socket.nsp.name)) {
      conn.close(true)
      // the transport is gone, so nothing is sent; this lets Socket.IO drop the socket
      next(new ConnectError('UNAVAILABLE', 'A second CONNECT arrived during the handshake'))
      return
    }
    const verified = auth
    // disconnectUser() calls from here on refuse this handshake: it would join after its user's sockets were closed
    const mark = rooms.mark()
    const admitted = (authenticated: Authenticated): void | Promise<void> => {
      socket.data.claims = authenticated.claims
      socket.data.user = authenticated.user
      socket.data.userId = authenticated.userId
      if (!main) return
      const scopes = rooms.granted(authenticated.user, authenticated.userId, mark)
      if (!isPromiseLike(scopes)) {
        granted.set(socket, scopes)
        return
      }
      return Promise.resolve(scopes).then((answer) => { granted.set(socket, answer) })
    }
    const passed = (): void => {
      handshakes.end(conn, socket.nsp.name)
      handshakes.authenticated(conn)
      next()
    }
    const refused = (err: unknown): void => {
      handshakes.end(conn, socket.nsp.name)
      if (err instanceof ConnectError) return next(err)
      log.error({ err }, 'fastify-realtime: handshake failed')
      next(new ConnectError('UNAVAILABLE', 'The server could not complete the handshake; try again'))
    }
    // synchronous from end to end when the verifier and the app's lookups are: no promise per handshake
    let outcome: void | Promise<void>
    try {
      const authenticated = verified.authenticate(socket)
      outcome = isPromiseLike(authenticated) ? Promise.resolve(authenticated).then(admitted) : admitted(authenticated)
    } catch (err) {
      refused(err)
      return
    }
    if (!isPromiseLike(outcome)) {
      // nothing ran in between: no disconnect can have landed
      passed()
      return
    }
    Promise.resolve(outcome).then(() => {
      if (main && rooms.disconnectedSince(socket.data.userId, mark)) refused(disconnectedMeanwhile())
      else passed()
    }, refused)
  }
  io.use(authenticate)
  // the protocol's client-to-server events; `auth` is set by the time any socket is connected
  const authRoutes: Record<string, EventRoute> = {
    [EVENT_AUTH]: (socket, message, ack) => { auth?.refresh(socket, message, ack) }
  }
  const mainRoutes: Record<string, EventRoute> = {
    ...authRoutes,
    [EVENT_SUBSCRIBE]: (socket, message, ack) => { rooms.subscribe(socket, message, ack) },
    [EVENT_UNSUBSCRIBE]: (socket, message, ack) => { rooms.unsubscribe(socket, message, ack) }
  }
  // every namespace is authenticated, including ones the app creates later (and dynamic children)
  io.on('new_namespace', (namespace) => {
    namespace.use(authenticate)
    namespace.on('connection', (socket: RealtimeSocket) => {
      if (auth === null) return
      routeEvents(socket, options.rateLimit, authRoutes)
      auth.attach(socket)
    })
  })
  // From the grant to this join nothing waits on I/O (a next tick at most), so no membership
  // change can land in between: the grant is still current.
  io.on('connection', (socket: RealtimeSocket) => {
    const scopes = granted.get(socket)
    granted.delete(socket)
    if (auth === null || scopes === undefined) {
      socket.disconnect(true)
      return
    }
    routeEvents(socket, options.rateLimit, mainRoutes)
    auth.attach(socket)
    const setupFailed = (err: unknown): void => {
      log.error({ err }, 'fastify-realtime: connection setup failed')
      socket.disconnect(true)
    }
    try {
      rooms.attach(socket, scopes)?.catch(setupFailed)
    } catch (err) {
      setupFailed(err)
    }
  })

  fastify.addHook('onReady', async function wireRealtime () {
    const jwt: JWT | undefined = fastify.hasDecorator('jwt') ? fastify.jwt : ownJwt
    if (jwt === undefined || typeof jwt.verify !== 'function') {
      throw new FST_REALTIME_INVALID_OPTION('auth.secret', 'is required when the app does not register @fastify/jwt')
    }
    const perCall = jwt === ownJwt ? undefined : options.auth.verify
    const verify: VerifyToken = (token) =>
      (perCall === undefined ? jwt.verify(token) : jwt.verify(token, perCall as never)) as RealtimeClaims | Promise<RealtimeClaims>
    if (options.redis !== null) {
      redis = await connectRedis(fastify, options.redis, log, options.clusterTimeoutMs)
      try {
        redisSub = await connectRedis(fastify, options.redis, log, options.clusterTimeoutMs)
        if (store instanceof RedisHistoryStore) store.attach(redis)
        await cluster.connect(redis, redisSub, { timeoutMs: options.clusterTimeoutMs, ...options.cluster, onResubscribed: missedWhileAway })
      } catch (err) {
        // a failed ready leaves no connection open
        await Promise.all([redis, redisSub].map(async (client) => { if (client !== null) await closeRedis(client) }))
        redis = null
        redisSub = null
        throw err
      }
    }
    auth = new Auth(options.auth, verify, log)
    if (options.limits.sendBufferBytes !== false) sendBuffers = new SendBufferWatch(io, options.limits.sendBufferBytes, log)
    state.open = !state.closing
  })

  // Closing the transport (not a Socket.IO disconnect) lets clients reconnect, to another node,
  // with `since`: they authenticate again, are granted again and catch up from the log.
  const closeAll = (): number => {
    const { clients } = io.engine as unknown as { clients: Record<string, { close: () => void }> }
    let closed = 0
    for (const id in clients) {
      clients[id]!.close()
      closed++
    }
    return closed
  }
  // While this node's Redis subscriber was away, its sockets missed what other nodes broadcast
  // and the membership changes they made: reconnecting them is what brings both back, from the
  // shared log and from rooms(user).
  const missedWhileAway = (): void => {
    const closed = closeAll()
    if (closed > 0) log.info({ transports: closed }, 'fastify-realtime: Redis subscriber back; clients reconnect to catch up on what they missed')
  }

  fastify.addHook('preClose', function closeTransports (done) {
    state.open = false
    state.closing = true
    if (options.preClose === null) {
      closeAll()
      done()
      return
    }
    let called = false
    options.preClose.call(fastify, () => {
      if (called) return
      called = true
      closeAll()
      done()
    })
  })

  fastify.addHook('onClose', async function closeRealtime () {
    state.open = false
    state.closing = true
    sendBuffers?.close()
    auth?.close()
    // leave the cluster figures first, so other nodes stop waiting on this one at once
    await cluster.close()
    await io.close()
    if (ownsStore) await store?.close?.()
    await Promise.all([redis, redisSub].map(async (client) => { if (client !== null) await closeRedis(client) }))
  })
}

const plugin = fp(fastifyRealtime, { fastify: '5.x', name: 'fastify-realtime' })

export default plugin
export { plugin as fastifyRealtime }
export * from './errors.js'
export { MemoryHistoryStore, type MemoryHistoryOptions } from './history/memory.js'
export { RedisHistoryStore, type RedisHistoryOptions } from './history/redis.js'
export type { HistoryEntry, HistoryStore, ReadResult, StoredEvent } from './history/store.js'
export { isScope } from './protocol.js'
export type { AckErrorCode, ConnectErrorCode, Position, ResyncReason } from './protocol.js'
export type * from './types.js'
