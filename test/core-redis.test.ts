import t from 'tap'
import { Redis } from 'ioredis'
import { RedisHistoryStore } from '../src/index.js'
import { build, collect, flush, request, tokenFor, waitFor } from './helper.js'
import { ownRedis, redisOptions } from './redis-helper.js'

const rejections: unknown[] = []
process.on('unhandledRejection', (reason) => { rejections.push(reason) })

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

t.test('no unhandled rejections', async (t) => {
  t.same(rejections, [])
})
