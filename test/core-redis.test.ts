import t from 'tap'
import fastifyRedis from '@fastify/redis'
import { Redis } from 'ioredis'
import { RedisHistoryStore, type ReadResult } from '../src/index.js'
import { build, collect, flush, processFaults, request, tokenFor, uniq, until, waitFor } from './helper.js'
import { durableRedis } from './history/redis-server.js'
import { ownRedis, redisOptions } from './redis-helper.js'

const faults = processFaults()

t.test('Redis store: shared gap-free seq across instances, flush gives a new epoch', async (t) => {
  const options = redisOptions(t)
  const clients = [new Redis(options), new Redis(options), new Redis(options)]
  t.teardown(() => { for (const c of clients) c.disconnect() })
  const stores = clients.map((client) => {
    const store = new RedisHistoryStore({ ttl: 60, max: 500 })
    store.attach(client)
    return store
  })
  const positions = await Promise.all(Array.from({ length: 300 }, (_, i) =>
    stores[i % 3]!.append('team:1', { id: `e${i}`, event: 'n', payload: i, at: Date.now() })))
  t.same(positions.map((p) => p.seq).sort((a, b) => a - b), Array.from({ length: 300 }, (_, i) => i + 1))
  t.equal(new Set(positions.map((p) => p.epoch)).size, 1)
  const { epoch } = positions[0]!
  const all = await stores[1]!.read('team:1', { seq: 0, epoch })
  t.ok(all.ok && all.events.length === 300 && all.events.every((e, i) => e.seq === i + 1))

  const keys = await clients[0]!.keys(`${options.keyPrefix}*`)
  await clients[0]!.del(...keys.map((k) => k.slice(options.keyPrefix.length)))
  const after = await stores[2]!.append('team:1', { id: 'x', event: 'n', payload: 'x', at: Date.now() })
  t.equal(after.seq, 1)
  t.not(after.epoch, epoch)
  t.same(await stores[0]!.read('team:1', { seq: 300, epoch }), { ok: false, reason: 'epoch' })
  t.same(await stores[0]!.read('team:1', { seq: 0, epoch }), { ok: false, reason: 'epoch' }, 'a position from the old store id never replays')
})

t.test('plugin on Redis: catch-up across two instances sharing the log', async (t) => {
  const redis = redisOptions(t)
  const a = await build(t, { rooms: () => ['team:1'], redis })
  const b = await build(t, { rooms: () => ['team:1'], redis: { ...redis } })
  const first = await a.connected('u1')
  first.socket.disconnect()
  for (let i = 1; i <= 5; i++) await a.app.broadcast('team:1', 'n', i)
  const moved = b.client({ token: tokenFor('u1'), since: first.ready.positions })
  const got = collect(moved, 'n')
  await waitFor(moved, 'realtime:ready')
  t.same(got.map(([p, m]) => [p, m.seq, m.replayed]), [1, 2, 3, 4, 5].map((i) => [i, i, true]))
  t.match((await b.app.inject('/health/realtime')).json(), { history: { store: 'redis', ok: true }, cluster: { nodes: 2 } })
})

t.test('several app instances broadcasting to one scope at once keep seq unique and gap-free', async (t) => {
  const redis = redisOptions(t)
  const nodes = await Promise.all([0, 1, 2].map(async () => await build(t, { rooms: () => ['team:1'], redis: { ...redis }, history: { max: 500 } })))
  const { socket, ready } = await nodes[0]!.connected('u1')
  const live = collect(socket, 'n')
  const count = 150
  const metas = await Promise.all(Array.from({ length: count }, async (_, i) => await nodes[i % 3]!.app.broadcast('team:1', 'n', i)))
  t.ok(metas.every((meta) => meta?.stored === true), 'every broadcast stored')
  t.same(metas.map((meta) => meta!.seq).sort((a, b) => a! - b!), Array.from({ length: count }, (_, i) => i + 1), 'seq 1…150, once each, across the three nodes')
  t.equal(new Set(metas.map((meta) => meta!.epoch)).size, 1, 'one epoch')
  const payloadAt = new Map(metas.map((meta, i) => [meta!.seq, i]))

  await until(() => live.length === count, 'a client on one node hears every node', 20_000)
  t.pass('a client on one node hears every node')
  t.same(live.map(([, meta]) => meta.seq).sort((a, b) => a - b), [...payloadAt.keys()].sort((a, b) => a! - b!), 'live: each seq once')
  t.ok(live.every(([payload, meta]) => payloadAt.get(meta.seq) === payload), 'live: each seq carries the payload its broadcast was told')

  const late = nodes[2]!.client({ token: tokenFor('u2'), since: ready.positions })
  const replayed = collect(late, 'n')
  await waitFor(late, 'realtime:ready')
  t.same(replayed.map(([payload, meta]) => [meta.seq, payload]), Array.from({ length: count }, (_, i) => [i + 1, payloadAt.get(i + 1)]), 'catch-up on another node: all of them, in seq order')
})

t.test('redis: true duplicates the app\'s own client and leaves it open on close', async (t) => {
  const options = redisOptions(t)
  const name = uniq('app')
  const appClient = new Redis({ ...options, connectionName: name })
  t.teardown(() => { appClient.disconnect() })
  const { app } = await build(t, { rooms: () => ['team:1'], redis: true }, {
    // registered after the plugin, with a client @fastify/redis does not own (so never closes)
    after: async (app) => { await app.register(fastifyRedis, { client: appClient }) }
  })
  t.equal(app.redis, appClient)
  const named = async (): Promise<number> => (await appClient.client('LIST') as string).split('\n').filter((line) => line.includes(` name=${name} `)).length
  t.equal(await named(), 3, 'the app\'s connection, and two of the plugin\'s own made from it')
  t.match(await app.broadcast('team:1', 'n', 1), { stored: true, seq: 1 })
  t.equal(await appClient.exists('rt:m:{team:1}'), 1, 'the duplicates keep the app client\'s options (its key prefix)')

  await app.close()
  t.equal(appClient.status, 'ready', 'the app\'s client is still ready after close')
  t.equal(await appClient.ping(), 'PONG')
  await until(async () => await named() === 1, 'the plugin closed its own connections, and only those', 20_000)
  t.pass('the plugin closed its own connections, and only those')
})

t.test('Redis restarted with its data: unstored broadcasts give their scopes a new generation, on every node, before a client can skip them', async (t) => {
  const server = await durableRedis(t)
  const redis = { host: '127.0.0.1', port: server.port, retryStrategy: () => 50 }
  const a = await build(t, { rooms: () => ['team:1', 'team:2'], redis })
  const b = await build(t, { rooms: () => ['team:1', 'team:2'], redis: { ...redis } })
  const { ready } = await a.connected('u1')
  const fresh = ready.positions['team:1']!
  t.equal(fresh.seq, 0, 'team:1 has never had a broadcast')
  const before = await a.app.broadcast('team:2', 'n', 'kept')
  t.match(before, { stored: true, seq: 1 })
  const held = { seq: 1, epoch: before!.epoch! }

  await server.kill()
  t.match(await a.app.broadcast('team:1', 'n', 'lost-1'), { stored: false })
  t.match(await a.app.broadcast('team:2', 'n', 'lost-2'), { stored: false })
  await server.start()

  // node B lost nothing and is told nothing; node A drops the logs by itself once its
  // connection is ready again, without waiting for its next broadcast or read
  const history = b.app.realtime.history!
  const readB = async (): Promise<ReadResult | null> => await Promise.resolve(history.read('team:2', held)).catch(() => null)
  await until(async () => (await readB())?.ok === false, 'the log team:2 had before the outage is gone, seen from node B', 20_000)
  t.pass('the log team:2 had before the outage is gone, seen from node B')
  t.same(await readB(), { ok: false, reason: 'epoch' })

  t.match(await b.app.broadcast('team:1', 'n', 'after'), { stored: true, seq: 1 })
  t.same(await history.read('team:1', fresh), { ok: false, reason: 'epoch' }, 'the seq-0 position from before the outage does not cover the new log')

  const late = b.client({ token: tokenFor('u1'), since: { 'team:1': fresh, 'team:2': held } })
  const replayed = collect(late, 'n')
  const resyncs = collect(late, 'realtime:resync')
  await waitFor(late, 'realtime:ready')
  t.same(resyncs.map(([message]) => message).sort((x: any, y: any) => x.scope < y.scope ? -1 : 1), [
    { scope: 'team:1', reason: 'epoch' },
    { scope: 'team:2', reason: 'epoch' }
  ], 'a client holding both old positions is told to resync both')
  t.same(replayed, [], 'and is replayed nothing that would skip the lost broadcasts')
})

t.test('Redis missing at start fails ready fast', async (t) => {
  await t.rejects(build(t, { redis: { host: '127.0.0.1', port: 1, retryStrategy: () => null }, clusterTimeoutMs: 500 }), { code: 'FST_REALTIME_REDIS_UNAVAILABLE' })
})

t.test('Redis dies mid-run: live delivery, stored false, 503; back: stored again, skipped scopes get a new epoch', async (t) => {
  const server = await ownRedis(t)
  const { app, connected, client } = await build(t, { rooms: () => ['team:1'], redis: { host: '127.0.0.1', port: server.port, retryStrategy: () => 50 } })
  const { socket, ready } = await connected('u1')
  await app.broadcast('team:1', 'n', 1)
  const held = { 'team:1': { seq: 1, epoch: ready.positions['team:1']!.epoch } }
  const got = collect(socket, 'n')
  await server.kill()
  const meta = await app.broadcast('team:1', 'n', 2)
  await flush(socket)
  t.match(meta, { stored: false })
  t.notOk('seq' in meta!)
  t.same(got.map(([p]) => p), [1, 2].slice(got.length === 2 ? 0 : 1), 'live delivery goes on')
  const down = await app.inject('/health/realtime')
  t.equal(down.statusCode, 503)
  t.match(down.json(), { websocket: { enabled: true }, history: { store: 'redis', ok: false } })

  await server.start()
  let status = 503
  for (let i = 0; i < 200 && status !== 200; i++) {
    status = (await app.inject('/health/realtime')).statusCode
    if (status !== 200) await new Promise((resolve) => setTimeout(resolve, 25))
  }
  t.equal(status, 200, 'healthy again by itself')
  const stored = await app.broadcast('team:1', 'n', 3)
  t.match(stored, { stored: true, seq: 1 })
  t.not(stored!.epoch, held['team:1'].epoch, 'new epoch after unstored broadcasts')
  const behind = client({ token: tokenFor('u1'), since: held })
  const [resync] = await waitFor<[{ scope: string, reason: string }]>(behind, 'realtime:resync')
  t.match(resync, { scope: 'team:1' })
  t.ok(resync.reason === 'epoch' || resync.reason === 'gap')
  t.match(await request(behind, 'realtime:subscribe', { scope: 'team:1' }), { ok: true })
})

t.test('close while Redis is down still finishes', async (t) => {
  const server = await ownRedis(t)
  const { app, connected } = await build(t, { rooms: () => ['team:1'], redis: { host: '127.0.0.1', port: server.port } })
  await connected('u1')
  await server.kill()
  await app.close()
  t.pass('closed')
})

t.test('Redis store: a payload that cannot be encoded rejects and leaves the log as it was', async (t) => {
  const { app, connected } = await build(t, { rooms: () => ['team:1'], redis: redisOptions(t) })
  const { socket } = await connected('u1')
  const first = await app.broadcast('team:1', 'n', 1)
  await t.rejects(app.broadcast('team:1', 'n', { big: 10n } as never), { code: 'FST_REALTIME_INVALID_PAYLOAD', message: /serialised/ })
  const next = await app.broadcast('team:1', 'n', 2)
  t.match(next, { seq: 2, epoch: first!.epoch, stored: true }, 'same log, next seq: not mistaken for an outage')
  t.equal((await app.inject('/health/realtime')).statusCode, 200)
  await flush(socket)
})

t.test('no unhandled rejections', async (t) => {
  t.same(await faults.since(), [])
})
