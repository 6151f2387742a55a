import t from 'tap'
import Fastify from 'fastify'
import { register as globalRegister } from 'prom-client'
import { Server } from 'socket.io'
import realtime from '../src/index.js'
import { Metrics } from '../src/metrics.js'
import { build, flush, processFaults, refusal, request, sign, SECRET, tokenFor, until, waitFor, within } from './helper.js'
import { registry, scrape } from './metrics-helper.js'
import { openRaw } from './raw-client.js'
import { ownRedis, REDIS_HOST } from './redis-helper.js'

const faults = processFaults()

const grants = {
  rooms: (user: { id: string | number }) => user.id === 'out' ? [] : ['team:1'],
  canSubscribe: (user: { id: string | number }, scope: string) => user.id !== 'out' && scope === 'team:2'
}

t.test('handshakes by result and the connections gauge follow real connects, refusals and disconnects', async (t) => {
  const reg = registry()
  const { client, connected } = await build(t, { ...grants, metrics: { registry: reg } })
  const before = await scrape(reg)
  t.equal(before.value('realtime_handshakes_total', { result: 'ok' }), 0, 'ok starts at 0')
  t.equal(before.value('realtime_connections'), 0)

  const a = await connected('u1')
  await connected('u2')
  t.equal((await refusal(client())).data?.code, 'AUTH_REQUIRED')
  t.equal((await refusal(client({ token: 'not.a.jwt' }))).data?.code, 'AUTH_INVALID')
  t.equal((await refusal(client({ token: sign({ sub: 'u3' }, -60) }))).data?.code, 'AUTH_EXPIRED')
  t.equal((await refusal(client({ token: tokenFor('u4') }, { query: { token: tokenFor('u4') } }))).data?.code, 'AUTH_INVALID')

  const m = await scrape(reg)
  t.equal(m.value('realtime_handshakes_total', { result: 'ok' }), 2)
  t.equal(m.value('realtime_handshakes_total', { result: 'AUTH_REQUIRED' }), 1)
  t.equal(m.value('realtime_handshakes_total', { result: 'AUTH_INVALID' }), 2)
  t.equal(m.value('realtime_handshakes_total', { result: 'AUTH_EXPIRED' }), 1)
  t.equal(m.value('realtime_connections'), 2)

  a.socket.disconnect()
  await until(async () => (await scrape(reg)).value('realtime_connections') === 1, 'the gauge drops to 1')
  t.equal((await scrape(reg)).value('realtime_handshakes_total', { result: 'ok' }), 2, 'a scrape does not count twice')
})

t.test('broadcasts by stored, deliveries as room sizes, and the broadcast histogram', async (t) => {
  const reg = registry()
  const { app, connected } = await build(t, { ...grants, metrics: { registry: reg } })
  const sockets = await Promise.all(['u1', 'u2', 'u3'].map(async (u) => (await connected(u)).socket))
  const except = [...app.io.of('/').sockets.values()].find((s) => s.data.userId === 'u1')!.id

  await app.broadcast('team:1', 'note', { n: 1 })                          // 3 deliveries
  await app.broadcast('team:1', 'note', { n: 2 }, { except })              // 2
  await app.broadcast('team:1', 'note', { n: 3 }, { volatile: true })      // 3, not stored
  await app.broadcast('team:9', 'note', { n: 4 })                          // nobody there
  await app.broadcast('user:u2', 'note', { n: 5 })                         // 1
  await t.rejects(app.broadcast('team:1', 'realtime:nope', {}), { code: 'FST_REALTIME_INVALID_EVENT' })
  await Promise.all(sockets.map(flush))

  const m = await scrape(reg)
  t.equal(m.value('realtime_broadcasts_total', { stored: 'true' }), 4)
  t.equal(m.value('realtime_broadcasts_total', { stored: 'false' }), 1)
  t.equal(m.value('realtime_deliveries_total'), 9, '3 + 2 + 3 + 0 + 1')
  t.equal(m.value('realtime_broadcast_seconds_count'), 5, 'one observation per broadcast sent, none for a refused one')
  t.ok(m.value('realtime_broadcast_seconds_bucket', { le: '+Inf' }) === 5)
  t.ok((m.value('realtime_broadcast_seconds_sum') ?? -1) >= 0)

  // bounded cardinality: no scope, user or socket id anywhere in a label
  const ids = ['team:1', 'team:9', 'user:u2', 'u1', 'u2', 'u3', ...[...app.io.of('/').sockets.keys()]]
  const labelValues = m.samples.flatMap((s) => Object.values(s.labels))
  t.same(labelValues.filter((v) => ids.some((id) => v.includes(id))), [], 'no id is a label value')
})

t.test('replays, resyncs by reason, subscribes by result, and the rate limit', async (t) => {
  const reg = registry()
  const built = await build(t, { ...grants, history: { max: 3 }, rateLimit: { max: 8, windowMs: 60_000 }, metrics: { registry: reg } })
  const { app, connected } = built
  const first = await app.broadcast('team:1', 'note', 1)
  for (let n = 2; n <= 5; n++) await app.broadcast('team:1', 'note', n)

  // replayed: since seq 3 -> 4 and 5
  const back = built.client({ token: tokenFor('u1'), since: { 'team:1': { seq: 3, epoch: first!.epoch } } })
  await waitFor(back, 'realtime:ready')
  // resyncs: a gap (seq 1 has been trimmed away) and another epoch
  const gap = built.client({ token: tokenFor('u2'), since: { 'team:1': { seq: 0, epoch: first!.epoch } } })
  t.same((await waitFor(gap, 'realtime:resync'))[0], { scope: 'team:1', reason: 'gap' })
  const other = built.client({ token: tokenFor('u3'), since: { 'team:1': { seq: 1, epoch: 'another-log' } } })
  t.same((await waitFor(other, 'realtime:resync'))[0], { scope: 'team:1', reason: 'epoch' })

  const { socket } = await connected('u4')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:2' }), { ok: true })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:3' }), { ok: false, error: { code: 'FORBIDDEN' } })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'no good' }), { ok: false, error: { code: 'INVALID_SCOPE' } })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:2', since: { seq: -1 } }), { ok: false, error: { code: 'BAD_REQUEST' } })
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:2' }), { ok: true })
  // 5 events so far: 3 more pass, then 3 are dropped (2 subscribes, 1 unsubscribe)
  for (let i = 0; i < 3; i++) t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:2' }), { ok: true })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:2' }), { ok: false, error: { code: 'RATE_LIMITED' } })
  // the rest of the window's refusals are dropped without an answer, and still counted
  socket.emit('realtime:subscribe', { scope: 'team:2' }, () => { t.fail('a second RATE_LIMITED ack in the window') })
  socket.emit('realtime:unsubscribe', { scope: 'team:2' }, () => { t.fail('a third RATE_LIMITED ack in the window') })
  await until(async () => (await scrape(reg)).value('realtime_rate_limited_total') === 3, 'every refusal is counted')

  const m = await scrape(reg)
  t.equal(m.value('realtime_replayed_events_total'), 2)
  t.equal(m.value('realtime_resyncs_total', { reason: 'gap' }), 1)
  t.equal(m.value('realtime_resyncs_total', { reason: 'epoch' }), 1)
  t.equal(m.value('realtime_subscribes_total', { result: 'ok' }), 1)
  t.equal(m.value('realtime_subscribes_total', { result: 'FORBIDDEN' }), 1)
  t.equal(m.value('realtime_subscribes_total', { result: 'INVALID_SCOPE' }), 1)
  t.equal(m.value('realtime_subscribes_total', { result: 'BAD_REQUEST' }), 1)
  t.equal(m.value('realtime_subscribes_total', { result: 'RATE_LIMITED' }), 2)
  t.equal(m.value('realtime_rate_limited_total'), 3)
  t.equal(m.value('realtime_connections'), 4)
})

t.test('history: false resyncs with reason unavailable', async (t) => {
  const reg = registry()
  const built = await build(t, { ...grants, history: false, metrics: { registry: reg } })
  const socket = built.client({ token: tokenFor('u1'), since: { 'team:1': { seq: 1, epoch: 'e' } } })
  t.same((await waitFor(socket, 'realtime:resync'))[0], { scope: 'team:1', reason: 'unavailable' })
  t.equal((await scrape(reg)).value('realtime_resyncs_total', { reason: 'unavailable' }), 1)
})

t.test('a slow consumer whose transport is closed is counted once', async (t) => {
  const reg = registry()
  const { app, url, connected } = await build(t, { rooms: () => ['team:1'], limits: { sendBufferBytes: 256 * 1024 }, metrics: { registry: reg } })
  const { socket: normal } = await connected('normal')
  const raw = await openRaw(t, url)
  await raw.ready(tokenFor('slow'))
  raw.pause()
  const chunk = 'x'.repeat(128 * 1024)
  for (let sent = 0; sent < 512 && app.io.engine.clientsCount === 2; sent++) {
    const arrived = waitFor(normal, 'bulk')
    await app.broadcast('team:1', 'bulk', { chunk }, { volatile: true })
    await within(arrived, 10_000, 'a broadcast at the normal client')
  }
  await until(() => app.io.engine.clientsCount === 1, 'the slow transport is closed')
  await until(async () => (await scrape(reg)).value('realtime_slow_consumer_closes_total') === 1, 'the close is counted')
  t.equal((await scrape(reg)).value('realtime_slow_consumer_closes_total'), 1, 'once')
})

t.test('cluster gauges on one node, and realtime_redis_up only with redis', async (t) => {
  const reg = registry()
  const { connected } = await build(t, { metrics: { registry: reg } })
  await connected('u1')
  const m = await scrape(reg)
  t.equal(m.value('realtime_cluster_nodes'), 1, 'a node alone is a cluster of one')
  t.equal(m.value('realtime_cluster_connections'), 1)
  t.equal(m.value('realtime_redis_up'), undefined, 'no redis, no redis_up')
})

t.test('with redis: realtime_redis_up and the cluster figures follow Redis going away', async (t) => {
  const redis = await ownRedis(t)
  const reg = registry()
  const { connected } = await build(t, {
    redis: { host: REDIS_HOST, port: redis.port, keyPrefix: 'm:' },
    cluster: { heartbeatMs: 100, nodeTtlMs: 1000 },
    health: { cacheMs: 0 },
    metrics: { registry: reg }
  })
  await connected('u1')
  await until(async () => (await scrape(reg)).value('realtime_cluster_connections') === 1, 'the heartbeat carries the connection')
  const up = await scrape(reg)
  t.equal(up.value('realtime_redis_up'), 1)
  t.equal(up.value('realtime_cluster_nodes'), 1)
  await redis.kill()
  await until(async () => (await scrape(reg)).value('realtime_redis_up') === 0, 'redis_up drops to 0')
  t.pass('realtime_redis_up is 0 while Redis is gone')
})

t.test('metrics: true uses prom-client\'s global registry; close takes the metrics off it', async (t) => {
  const app = Fastify()
  await app.register(realtime, { auth: { secret: SECRET }, metrics: true })
  await app.ready()
  t.ok(globalRegister.getSingleMetric('realtime_connections'), 'on the global registry')
  await app.close()
  t.equal(globalRegister.getSingleMetric('realtime_connections'), undefined, 'gone after close')
})

t.test('a prefix names every metric; a second app on the same registry and prefix is refused clearly', async (t) => {
  const reg = registry()
  await build(t, { metrics: { registry: reg, prefix: 'chat_' } })
  const names = new Set((await scrape(reg)).samples.map((s) => s.name))
  t.ok(names.has('chat_connections') && names.has('chat_handshakes_total'), 'prefixed')
  t.notOk([...names].some((n) => n.startsWith('realtime_')), 'nothing under the default prefix')

  const second = Fastify()
  t.teardown(() => second.close())
  await t.rejects(async () => { await second.register(realtime, { auth: { secret: SECRET }, metrics: { registry: reg, prefix: 'chat_' } }) }, {
    code: 'FST_REALTIME_INVALID_OPTION', message: /metrics: the registry already has a metric chat_/
  })
  t.ok(reg.getSingleMetric('chat_connections'), 'the first app keeps its metrics')
})

t.test('bad metrics options fail register with the path', async (t) => {
  for (const [metrics, path] of [
    [{ registry: {} }, 'metrics.registry'],
    [{ prefix: 'bad-prefix' }, 'metrics.prefix'],
    [{ registry: registry(), other: 1 }, 'metrics'],
    ['yes', 'metrics']
  ] as const) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(realtime, { auth: { secret: SECRET }, metrics: metrics as never }) }, { code: 'FST_REALTIME_INVALID_OPTION', message: new RegExp(path.replace('.', '\\.')) }, path)
  }
})

t.test('realtime_presence_users: the gauge the presence module reads through presenceUsers()', async (t) => {
  const reg = registry()
  // not attached to an HTTP server: it holds nothing to close
  const io = new Server()
  const metrics = new Metrics(await import('prom-client'), { registry: reg, prefix: 'realtime_' }, io, false)
  t.equal((await scrape(reg)).value('realtime_presence_users'), undefined, 'absent until presence registers it')
  let present = 3
  metrics.presenceUsers(() => present)
  t.equal((await scrape(reg)).value('realtime_presence_users'), 3)
  present = 5
  metrics.presenceUsers(async () => present)
  t.equal((await scrape(reg)).value('realtime_presence_users'), 5, 'read on every scrape; a later reader replaces the first')
  metrics.close()
  t.equal((await reg.getMetricsAsJSON()).length, 0, 'close leaves the registry empty')
})

t.test('no unhandledRejection in this file', async (t) => {
  t.same(await faults.since(), [])
})

t.test('realtime_presence_users: present users on this node, once per user and tracked scope; absent without presence', async (t) => {
  const reg = registry()
  const { connected } = await build(t, { rooms: () => ['team:1', 'team:2'], presence: true, metrics: { registry: reg } })
  t.equal((await scrape(reg)).value('realtime_presence_users'), 0, 'nobody yet')
  const a = await connected('u1')
  await connected('u1')
  await connected('u2')
  // u1 (two tabs) and u2, each in team:1 and team:2; user: scopes are not tracked
  t.equal((await scrape(reg)).value('realtime_presence_users'), 4)
  a.socket.disconnect()
  await flush((await connected('u3')).socket)
  t.equal((await scrape(reg)).value('realtime_presence_users'), 6, 'u1 is still present through its other tab; u3 came')

  const off = registry()
  await build(t, { metrics: { registry: off } })
  t.equal((await scrape(off)).value('realtime_presence_users'), undefined, 'no presence, no gauge')
})
