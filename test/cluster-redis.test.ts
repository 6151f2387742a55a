import { once } from 'node:events'
import { createServer } from 'node:http'
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import { Redis as RedisClient } from 'ioredis'
import { createAdapter } from '@socket.io/redis-adapter'
import pino from 'pino'
import { Server } from 'socket.io'
import { io as ioClient } from 'socket.io-client'
import { connect } from '../src/client/index.js'
import { Cluster } from '../src/cluster.js'
import { clientFor, clusterPrefix, outageCluster, poll, RECONNECTING, requestChannel, startNode } from './cluster-helper.js'
import type { FastifyRealtimeOptions } from '../src/index.js'
import { build, collect, gatedRooms, processFaults, tokenFor, waitFor, within, type Built } from './helper.js'
import { clientList, ownRedis, REDIS_HOST, redisClient, redisOptions } from './redis-helper.js'

// Every Redis outage below must stay free of unhandled rejections, whatever test caused it.
const faults = processFaults()

/** Lets `count` turns of the event loop pass, so what was emitted can go out. */
async function ticks (count = 2): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve))
}

/** The rooms (scopes) of each local socket of `userId`, own socket id left out. */
async function roomsOf (app: FastifyInstance, userId: string): Promise<string[][]> {
  const sockets = await app.io.local.in(`user:${userId}`).fetchSockets()
  return sockets.map((socket) => [...socket.rooms].filter((room) => room !== socket.id).sort())
}

async function status (app: FastifyInstance): Promise<number> {
  return (await app.inject('/health/realtime')).statusCode
}

const FAST = { heartbeatMs: 100, nodeTtlMs: 1500 }

t.test('close while Redis is down: no unhandled rejection from the adapter unsubscribing', async (t) => {
  const redis = await ownRedis(t)
  const { app, connected } = await build(t, { rooms: () => ['team:1'], redis: { host: REDIS_HOST, port: redis.port }, cluster: FAST })
  await connected('u1')
  await redis.kill()
  await poll('the plugin sees Redis gone', async () => await status(app), (code) => code === 503)
  const before = faults.count
  await app.close()
  t.same(await faults.since(before), [], 'io.close() ran the adapter close() with nothing rejected unhandled')
})

t.test('a namespace created during an outage fans out once Redis is back', async (t) => {
  const redis = await ownRedis(t)
  const options = { host: REDIS_HOST, port: redis.port, keyPrefix: 'ns:' }
  const a = await build(t, { redis: { ...options }, cluster: FAST })
  const b = await build(t, { redis: { ...options }, cluster: FAST })
  const lateOnB = b.app.io.of('/late')
  await redis.kill()
  await poll('A sees Redis gone', async () => await status(a.app), (code) => code === 503)
  const before = faults.count
  a.app.io.of('/late') // its adapter subscribes now, while Redis refuses
  t.same(await faults.since(before), [], 'the refused subscribe is not an unhandled rejection')

  await redis.start()
  // once A hears Redis again it closes its transports (its clients catch up); connect after that
  await poll('A subscribed again', async () => await status(a.app), (code) => code === 200, 15_000)
  const socket = ioClient(`${a.url}/late`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: tokenFor('u1') } })
  t.teardown(() => { socket.disconnect() })
  await waitFor(socket, 'connect')
  const got = collect(socket, 'hello')
  await poll('an emit on B reaches the client of /late on A', async () => {
    lateOnB.emit('hello', 1)
    await ticks()
    return got.length
  }, (n) => n > 0, 15_000, 200)
  const admin = redisClient(t, redis.port)
  const [, listeners] = await admin.pubsub('NUMSUB', requestChannel('ns:', '/late')) as [string, number]
  t.equal(Number(listeners), 2, 'both nodes listen on the /late request channel')
})

t.test('with Redis down, join, leave and disconnectUser reject at once, after applying on this node', async (t) => {
  const redis = await ownRedis(t)
  // a timeout far beyond the test's own: only failing fast can let these settle
  const { app, connected } = await build(t, {
    rooms: () => ['team:1'],
    redis: { host: REDIS_HOST, port: redis.port },
    clusterTimeoutMs: 600_000,
    cluster: FAST
  })
  const { socket } = await connected('u1')
  await redis.kill()
  await poll('the plugin sees Redis gone', async () => await status(app), (code) => code === 503)

  await t.rejects(app.realtime.join('u1', 'team:9'), { code: 'FST_REALTIME_CLUSTER_UNAVAILABLE', statusCode: 503, message: /join could not be confirmed on every node: Redis is not reachable/ })
  t.same(await roomsOf(app, 'u1'), [['team:1', 'team:9', 'user:u1']], 'joined on this node all the same')
  await t.rejects(app.realtime.leave('u1', 'team:1'), { code: 'FST_REALTIME_CLUSTER_UNAVAILABLE' })
  t.same(await roomsOf(app, 'u1'), [['team:9', 'user:u1']], 'left on this node')
  const closed = waitFor<[string]>(socket, 'disconnect')
  await t.rejects(app.realtime.disconnectUser('u1'), { code: 'FST_REALTIME_CLUSTER_UNAVAILABLE' })
  t.equal((await closed)[0], 'io server disconnect', 'disconnected on this node')
})

/**
 * Two nodes on a redis-server of the test's own, counting each other. B logs in as an ACL user
 * whose channels `deafen` takes away (Redis drops B's subscriber; B lives on and still beats)
 * and `hear` gives back.
 */
async function deafenableB (t: Test, keyPrefix: string, rooms: () => string[]): Promise<{ a: Built, b: Built, deafen: () => Promise<void>, hear: () => Promise<void> }> {
  const redis = await ownRedis(t)
  const admin = redisClient(t, redis.port)
  await admin.call('ACL', 'SETUSER', 'node-b', 'on', '>pw', '~*', '&*', '+@all')
  const options = { host: REDIS_HOST, port: redis.port, keyPrefix }
  const cluster = { heartbeatMs: 100, nodeTtlMs: 5000 }
  const a = await build(t, { rooms, redis: { ...options }, cluster, clusterTimeoutMs: 3000 })
  const b = await build(t, { rooms, redis: { ...options, username: 'node-b', password: 'pw' }, cluster, clusterTimeoutMs: 3000 })
  await poll('A counts both nodes', async () => await a.app.realtime.stats(), (s) => s.cluster?.nodes === 2)
  return {
    a,
    b,
    deafen: async () => {
      await admin.call('ACL', 'SETUSER', 'node-b', 'resetchannels')
      await poll('B reports its subscriber down', async () => await status(b.app), (code) => code === 503)
    },
    hear: async () => { await admin.call('ACL', 'SETUSER', 'node-b', 'allchannels') }
  }
}

t.test('a live node whose subscriber is down: the operation rejects, and works again once it is back', async (t) => {
  const { a, b, deafen, hear } = await deafenableB(t, 'lv:', () => ['team:1'])
  // it reconnects when B, its subscriber back, closes its transports
  const { socket } = await b.connected('u1', { reconnection: true, reconnectionDelay: 20, reconnectionDelayMax: 50 })

  await deafen()
  t.equal((await a.app.realtime.stats()).cluster?.nodes, 2, 'B still counts as a live node')
  await t.rejects(a.app.realtime.join('u1', 'team:9'), {
    code: 'FST_REALTIME_CLUSTER_UNAVAILABLE',
    message: /join could not be confirmed on every node: 1 live node\(s\) did not apply it/
  }, 'join does not report success for a node that never heard it')
  t.same(await roomsOf(b.app, 'u1'), [['team:1', 'user:u1']], 'and B indeed did not apply it')

  const back = waitFor(socket, 'realtime:ready')
  await hear()
  await poll('B subscribed again', async () => await status(b.app), (code) => code === 200)
  await back
  await a.app.realtime.join('u1', 'team:9')
  t.same(await roomsOf(b.app, 'u1'), [['team:1', 'team:9', 'user:u1']], 'the next operation reaches B and resolves')
  await a.app.realtime.leave('u1', 'team:9')
  t.same(await roomsOf(b.app, 'u1'), [['team:1', 'user:u1']])
})

t.test('a node whose subscriber was away has its clients reconnect and catch up on what they missed', async (t) => {
  const members = new Set(['team:1', 'team:2'])
  const { a, b, deafen, hear } = await deafenableB(t, 'away:', () => [...members])
  const client = connect(b.url, { token: tokenFor('u1'), io: { transports: ['websocket'], forceNew: true, reconnectionDelay: 20, reconnectionDelayMax: 50 } })
  t.teardown(() => { client.close() })
  const delivered: Array<[unknown, { scope: string, seq?: number, replayed?: true }]> = []
  client.on('ev' as never, (payload: unknown, meta: { scope: string, seq?: number, replayed?: true }) => { delivered.push([payload, meta]) })
  const [first] = await waitFor<[{ scopes: string[] }]>(client.socket, 'realtime:ready')
  t.same(first.scopes.sort(), ['team:1', 'team:2', 'user:u1'])

  await deafen()
  // while B is deaf: A broadcasts (stored in the shared log) and the user loses team:2
  t.match(await a.app.broadcast('team:1', 'ev', { n: 1 }), { seq: 1, stored: true })
  members.delete('team:2')
  await t.rejects(a.app.realtime.leave('u1', 'team:2'), { code: 'FST_REALTIME_CLUSTER_UNAVAILABLE' })
  t.same(delivered, [], 'B\'s client heard nothing live')

  const again = waitFor<[{ scopes: string[] }]>(client.socket, 'realtime:ready')
  await hear()
  const [ready] = await again
  t.same(ready.scopes.sort(), ['team:1', 'user:u1'], 'granted again from rooms(user): team:2 is gone')
  await poll('the missed event is delivered', async () => delivered.length, (n) => n >= 1)
  t.same(delivered.map(([payload, meta]) => [payload, meta.seq, meta.replayed]), [[{ n: 1 }, 1, true]], 'replayed from the shared log, once')
  const live = waitFor<[unknown]>(client.socket, 'ev')
  await a.app.broadcast('team:1', 'ev', { n: 2 })
  t.same((await live)[0], { n: 2 }, 'and cross-node delivery goes on')
})

t.test('a leave() issued on another node while a subscribe waits on rooms() is not lost', async (t) => {
  const options = redisOptions(t)
  const members = new Set(['u1'])
  const gated = gatedRooms(members)
  const a = await build(t, { rooms: gated.rooms, redis: { ...options }, cluster: FAST })
  const b = await build(t, { rooms: gated.rooms, redis: { ...options }, cluster: FAST })
  await poll('A counts both nodes', async () => await a.app.realtime.stats(), (s) => s.cluster?.nodes === 2)
  const { socket } = await b.connected('u1')
  await b.app.realtime.leave('u1', 'team:1')
  const paused = gated.pause()
  const ack = socket.timeout(10_000).emitWithAck('realtime:subscribe', { scope: 'team:1' })
  await paused.asked
  members.delete('u1')
  await a.app.realtime.leave('u1', 'team:1') // applied on B while B's lookup waits
  paused.release()
  t.match(await ack, { ok: false, error: { code: 'FORBIDDEN' } }, 'the answer from before the leave is not used')
  t.same(await roomsOf(b.app, 'u1'), [['user:u1']])
})

t.test('operations from other nodes are checked: unknown ops, bad user ids and scopes are ignored, never applied', async (t) => {
  const options = redisOptions(t)
  const { app, connected } = await build(t, { rooms: () => ['team:1'], redis: options, cluster: FAST })
  const { socket } = await connected('u1')
  const publisher = redisClient(t)
  const listener = new RedisClient({ host: REDIS_HOST, port: options.port })
  t.teardown(() => { listener.disconnect() })
  const answers = new Map<string, unknown>()
  listener.on('message', (_channel: string, message: string) => {
    const { requestId, data } = JSON.parse(message) as { requestId: string, data: unknown }
    answers.set(requestId, data)
  })
  await listener.subscribe(`${options.keyPrefix}fastify-realtime-response#/#`)

  let n = 0
  // what a crafted (or newer) node could publish, in the adapter's own request format
  const send = async (operation: unknown): Promise<any> => {
    const requestId = `r${++n}`
    const request = { uid: 'elsewhere', requestId, type: 6, data: ['realtime:cluster', operation] }
    await publisher.publish(`${options.keyPrefix}fastify-realtime-request#/#`, JSON.stringify(request))
    return await poll(`answer to ${JSON.stringify(operation)}`, async () => answers.get(requestId), (a) => a !== undefined, 5000, 20)
  }
  const nodeId = (await app.realtime.stats()).node.id
  const refused = { node: nodeId, applied: false }
  t.same(await send({ op: 'remove', userId: 'u1' }), refused, 'an unknown op is not a disconnect')
  t.same(await send({ op: 'Disconnect', userId: 'u1' }), refused)
  t.same(await send({ userId: 'u1' }), refused)
  t.same(await send({ op: 'disconnect', userId: 'u 1' }), refused, 'a user id outside the grammar')
  t.same(await send({ op: 'disconnect', userId: 42 }), refused, 'a user id that is not a string')
  t.same(await send({ op: 'join', userId: 'u1', scope: 'no scope' }), refused, 'a scope outside the grammar')
  t.same(await send({ op: 'join', userId: 'u1', scope: 'user:u2' }), refused, 'another user scope')
  t.same(await send({ op: 'leave', userId: 'u1', scope: 'user:u1' }), refused, 'its own user scope')
  t.same(await send({ op: 'join', userId: 'u1', scope: ['team:2'] }), refused)
  t.same(await send(null), refused)
  t.same(await send('disconnect'), refused)
  t.same(await roomsOf(app, 'u1'), [['team:1', 'user:u1']], 'nothing was applied')
  t.ok(socket.connected, 'the socket is still connected')

  t.same(await send({ op: 'join', userId: 'u1', scope: 'team:2' }), { node: nodeId, applied: true }, 'a well-formed join is applied')
  t.same(await roomsOf(app, 'u1'), [['team:1', 'team:2', 'user:u1']])
  const closed = waitFor<[string]>(socket, 'disconnect')
  t.same(await send({ op: 'disconnect', userId: 'u1' }), { node: nodeId, applied: true })
  t.equal((await closed)[0], 'io server disconnect')
})

t.test('a keyPrefix with glob characters fails ready, naming redis.keyPrefix', async (t) => {
  for (const keyPrefix of ['app*:', 'app?:', 'app[1]:', 'a]:', 'app\\:']) {
    await t.rejects(build(t, { redis: { host: REDIS_HOST, keyPrefix } }), {
      code: 'FST_REALTIME_INVALID_OPTION',
      message: /redis\.keyPrefix/
    }, JSON.stringify(keyPrefix))
  }
  await t.rejects(build(t, { redis: `redis://${REDIS_HOST}:6379?keyPrefix=${encodeURIComponent('x*')}` }), { code: 'FST_REALTIME_INVALID_OPTION', message: /redis\.keyPrefix/ }, 'in a URL too')
})

/** Two apps on `redis` with `options`; each one's client on team:1 gets what the other broadcasts. */
async function crossDelivery (t: Test, options: Record<string, unknown>, more: FastifyRealtimeOptions = {}): Promise<{ a: Built, b: Built }> {
  const a = await build(t, { rooms: () => ['team:1'], redis: { ...options }, history: false, cluster: FAST, ...more })
  const b = await build(t, { rooms: () => ['team:1'], redis: { ...options }, history: false, cluster: FAST, ...more })
  const onA = await a.connected('u1')
  const onB = await b.connected('u2')
  const toA = waitFor<[unknown]>(onA.socket, 'from-b')
  const toB = waitFor<[unknown]>(onB.socket, 'from-a')
  await b.app.broadcast('team:1', 'from-b', 'b')
  await a.app.broadcast('team:1', 'from-a', 'a')
  t.same([(await toA)[0], (await toB)[0]], ['b', 'a'], 'B to A and A to B')
  return { a, b }
}

t.test('without a keyPrefix the channels are the plugin\'s own, not the adapter\'s socket.io default', async (t) => {
  const redis = await ownRedis(t)
  // another deployment on the same Redis: plain Socket.IO with the adapter's defaults
  const foreign = new Server(createServer())
  let foreignOpen = true
  const closeForeign = async (): Promise<void> => {
    if (!foreignOpen) return
    foreignOpen = false
    await foreign.close()
  }
  t.teardown(closeForeign)
  const [pub, sub] = [redisClient(t, redis.port), redisClient(t, redis.port)]
  foreign.adapter(createAdapter(pub, sub))
  const admin = redisClient(t, redis.port)
  const count = async (channel: string): Promise<number> => Number((await admin.pubsub('NUMSUB', channel) as [string, number])[1])
  await poll('the other deployment listens', async () => await count('socket.io-request#/#'), (n) => n === 1)

  const { a } = await crossDelivery(t, { host: REDIS_HOST, port: redis.port }, { clusterTimeoutMs: 2000 })
  t.equal(await count('fastify-realtime-request#/#'), 2, 'the two nodes, on the plugin\'s own channels')
  t.equal(await count('socket.io-request#/#'), 1, 'and only the other deployment on the default ones')
  await a.app.realtime.join('u1', 'team:5')
  t.same(await roomsOf(a.app, 'u1'), [['team:1', 'team:5', 'user:u1']], 'a join does not wait for a server that is not a node')
  // its unsubscribes must be through before its clients are disconnected (that adapter does not catch them)
  await closeForeign()
  await poll('the other deployment is gone', async () => await count('socket.io-request#/#'), (n) => n === 0)
})

t.test('with a keyPrefix the channels carry it', async (t) => {
  const options = redisOptions(t)
  await crossDelivery(t, options)
  const admin = redisClient(t)
  t.equal(Number((await admin.pubsub('NUMSUB', requestChannel(options.keyPrefix)) as [string, number])[1]), 2)
})

t.test('the plugin\'s own connections are closed on close(); a failed ready leaves none open', async (t) => {
  const redis = await ownRedis(t)
  const admin = redisClient(t, redis.port)
  await admin.ping()
  t.same(await clientList(admin), [], 'baseline: only the test\'s own connection')

  const { app } = await build(t, { redis: { host: REDIS_HOST, port: redis.port }, cluster: FAST })
  t.equal((await clientList(admin)).length, 2, 'two connections while running')
  await app.close()
  await poll('connections back to baseline', async () => await clientList(admin), (list) => list.length === 0, 5000)

  // room for exactly one more connection: the first opens, the second is refused
  await admin.config('SET', 'maxclients', '2')
  await t.rejects(build(t, { redis: { host: REDIS_HOST, port: redis.port, retryStrategy: () => null }, clusterTimeoutMs: 1000 }), { code: 'FST_REALTIME_REDIS_UNAVAILABLE' })
  await poll('the first connection was closed', async () => await clientList(admin), (list) => list.length === 0, 5000)
})

t.test('cluster figures are left out once they would be stale; the heartbeat keys expire', async (t) => {
  const redis = await ownRedis(t)
  const { app } = await build(t, { redis: { host: REDIS_HOST, port: redis.port, keyPrefix: 'st:' }, cluster: { heartbeatMs: 100, nodeTtlMs: 1000 } })
  const admin = redisClient(t, redis.port)
  t.same((await app.realtime.stats()).cluster, { nodes: 1, connections: 0 })
  for (const key of ['st:rt:{cluster}:nodes', 'st:rt:{cluster}:node-connections']) {
    const ttl = await admin.pttl(key)
    t.ok(ttl > 0 && ttl <= 1000, `${key} expires within the node ttl (${ttl} ms)`)
  }

  await redis.kill()
  const stats = await poll('stats() drops the cluster figures', async () => await app.realtime.stats(), (s) => s.cluster === undefined)
  t.same(Object.keys(stats), ['node'])
  const health = await app.inject('/health/realtime')
  t.equal(health.statusCode, 503)
  t.notOk('cluster' in health.json(), 'health leaves them out too')
  await redis.start()
  await poll('figures come back with Redis', async () => await app.realtime.stats(), (s) => s.cluster?.nodes === 1, 15_000)
})

t.test('a cluster whose last node was killed leaves no heartbeat keys behind', async (t) => {
  const prefix = clusterPrefix(t)
  const node = await startNode(t, { KEY_PREFIX: prefix, HEARTBEAT_MS: '100', NODE_TTL_MS: '1000' })
  const admin = redisClient(t)
  const keys = [`${prefix}rt:{cluster}:nodes`, `${prefix}rt:{cluster}:node-connections`]
  await poll('heartbeat written', async () => await admin.exists(...keys), (n) => n === 2)
  await node.stop('SIGKILL')
  await poll('both keys gone', async () => await admin.exists(...keys), (n) => n === 0, 10_000)
  t.pass('nothing left')
})

t.test('a node closed during an outage exits by itself: nothing left holding the process', async (t) => {
  const redis = await ownRedis(t)
  const node = await startNode(t, { REDIS_PORT: String(redis.port), KEY_PREFIX: 'ex:', HEARTBEAT_MS: '100', EXIT_BY_ITSELF: '1' })
  await clientFor(t, node.url, 'u1')
  await redis.kill()
  await poll('the node sees Redis gone', async () => await node.get('/health/realtime'), (res) => res.status === 503)
  const exited = once(node.child, 'exit') as Promise<[number | null, string | null]>
  node.child.kill('SIGTERM')
  // a deadline only to fail instead of hanging
  t.same(await within(exited, 30_000, 'the node to exit by itself'), [0, null], 'the process ended by itself with code 0')
})

t.test('after a Redis restart: both nodes counted again, membership both ways, delivery both ways', async (t) => {
  const { redis, a, b } = await outageCluster(t)
  const onA = await clientFor(t, a.url, 'u1', RECONNECTING)
  const onB = await clientFor(t, b.url, 'u2', RECONNECTING)
  const readyAgain = [waitFor(onA.socket, 'realtime:ready'), waitFor(onB.socket, 'realtime:ready')]
  await redis.kill()
  await poll('A sees Redis gone', async () => await a.get('/health/realtime'), (res) => res.status === 503)
  await redis.start()
  await Promise.all(readyAgain)
  t.pass('both clients reconnected and were granted again')

  for (const [name, node] of [['A', a], ['B', b]] as const) {
    // heartbeat figures settle by themselves once both clients are back
    await poll(`${name} healthy with both nodes and both connections`, async () => await node.get('/health/realtime'),
      (res) => res.status === 200 && res.body.cluster?.nodes === 2 && res.body.cluster?.connections === 2, 15_000)
    t.pass(`${name} counts both nodes and both connections`)
  }

  t.same(await b.post('/join', { userId: 'u1', scope: 'team:9' }), { status: 200, body: { ok: true } }, 'join from B')
  t.same((await a.get('/local-rooms/u1')).body, [['team:1', 'team:9', 'user:u1']], 'applied on A')
  t.same(await a.post('/leave', { userId: 'u2', scope: 'team:1' }), { status: 200, body: { ok: true } }, 'leave from A')
  t.same((await b.get('/local-rooms/u2')).body, [['user:u2']], 'applied on B')

  const toA = waitFor<[unknown]>(onA.socket, 'nine')
  await b.post('/broadcast', { scope: 'team:9', event: 'nine', payload: 'b to a' })
  t.same((await toA)[0], 'b to a', 'B to A')
  const toB = waitFor<[unknown]>(onB.socket, 'mine')
  await a.post('/broadcast', { scope: 'user:u2', event: 'mine', payload: 'a to b' })
  t.same((await toB)[0], 'a to b', 'A to B')
})

t.test('Cluster calls onResubscribed once its subscriber is back after an outage, not at the first connect', async (t) => {
  const redis = await ownRedis(t)
  const io = new Server(createServer())
  t.teardown(() => io.close())
  const noop = (): void => {}
  const cluster = new Cluster(io, 'n1', pino({ level: 'silent' }))
  const connection = async (): Promise<Redis> => {
    const client = new RedisClient({ host: REDIS_HOST, port: redis.port, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 50 })
    client.on('error', noop)
    t.teardown(() => { client.disconnect() })
    await client.connect()
    return client
  }
  let calls = 0
  await cluster.connect(await connection(), await connection(), { timeoutMs: 1000, heartbeatMs: 100, nodeTtlMs: 1000, onResubscribed: () => { calls++ } })
  t.teardown(() => cluster.close())
  t.equal(calls, 0, 'not for the first connection')
  await redis.kill()
  await poll('unreachable', async () => await cluster.reachable(), (ok) => !ok)
  await redis.start()
  await poll('called once the subscriber is back', async () => calls, (n) => n === 1, 15_000)
  // the publishing connection reconnects on its own schedule, maybe a retry after the subscriber
  await poll('and the connections work', async () => await cluster.reachable(), (ok) => ok, 15_000)
  t.equal(calls, 1, 'called once for the outage')
})

t.test('no unhandled rejections in this file', async (t) => {
  t.same(await faults.since(), [])
})
