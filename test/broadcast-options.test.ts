import t from 'tap'
import { MemoryHistoryStore, type HistoryStore } from '../src/index.js'
import { ManualClock } from './clock.js'
import { build, collect, flush, processFaults, tokenFor, until, waitFor } from './helper.js'
import { redisOptions } from './redis-helper.js'

const faults = processFaults()

for (const store of ['memory', 'redis'] as const) {
  t.test(`${store} history: by may be a small JSON object, delivered as meta.by, stored and replayed unchanged`, async (t) => {
    const { app, client, connected } = await build(t, { rooms: () => ['team:1'], ...(store === 'redis' ? { redis: redisOptions(t) } : {}) })
    const { socket, ready } = await connected('u1')
    const live = collect(socket, 'incident:acknowledged')
    const actor = { id: 'u7', name: 'Jane Ünïcødé', roles: ['admin'], team: { id: 42, on: true }, note: null }
    const given = structuredClone(actor)
    const meta = await app.broadcast('team:1', 'incident:acknowledged', { id: 1 }, { by: given })
    given.name = 'changed after the call'
    await app.broadcast('team:1', 'incident:acknowledged', { id: 2 }, { by: 'u8' })
    await app.broadcast('team:1', 'incident:acknowledged', { id: 3 }, { by: 9 })
    await flush(socket)
    t.same(meta?.by, actor, 'broadcast resolves with it')
    t.same(live.map(([, m]) => m.by), [actor, 'u8', 9], 'live: meta.by exactly as given (the call\'s value, not a later change)')

    const later = client({ token: tokenFor('u1'), since: ready.positions })
    const replayed = collect(later, 'incident:acknowledged')
    await waitFor(later, 'realtime:ready')
    t.same(replayed.map(([, m]) => [m.by, m.replayed]), [[actor, true], ['u8', true], [9, true]], 'replayed with the same meta.by')
  })
}

t.test('by past 1 KB as JSON, or not a string, number or plain object: FST_REALTIME_INVALID_BROADCAST_OPTION, nothing sent or stored', async (t) => {
  const { app, connected } = await build(t, { rooms: () => ['team:1'] })
  const { socket } = await connected('u1')
  const seen = collect(socket, 'x')
  const cyclic: Record<string, unknown> = {}
  cyclic.self = cyclic
  class Actor { id = 'u1' }
  const bad: Array<[string, unknown, RegExp]> = [
    ['an object over 1 KB', { id: 'u1', bio: 'x'.repeat(1020) }, /at most 1024 bytes/],
    ['a string over 1 KB', 'é'.repeat(600), /at most 1024 bytes/],
    ['a string that grows past 1 KB as JSON', '\u0001'.repeat(200), /at most 1024 bytes/],
    ['a list', ['u1'], /plain JSON object/],
    ['null', null, /plain JSON object/],
    ['a boolean', true, /plain JSON object/],
    ['NaN', Number.NaN, /plain JSON object/],
    ['a Date', new Date(), /plain JSON object/],
    ['a class instance', new Actor(), /plain JSON object/],
    ['a cycle', cyclic, /cannot be serialised/],
    ['a BigInt inside', { id: 1n }, /cannot be serialised/]
  ]
  for (const [name, by, message] of bad) {
    await t.rejects(app.broadcast('team:1', 'x', 1, { by } as never), { code: 'FST_REALTIME_INVALID_BROADCAST_OPTION', message }, name)
  }
  const fits = { id: 'u1', bio: 'x'.repeat(1004) }
  t.equal(JSON.stringify(fits).length, 1024)
  t.match(await app.broadcast('team:1', 'x', 1, { by: fits }), { seq: 1, by: fits }, 'exactly 1 KB is fine')
  t.match(await app.broadcast('team:1', 'x', 2, { by: Object.assign(Object.create(null) as object, { id: 'u1' }) }), { seq: 2 }, 'an object without a prototype is plain too')
  await flush(socket)
  t.equal(seen.length, 2, 'only the valid ones were sent')
})

t.test('idempotencyKey: per scope, for the history ttl, at most limits.idempotencyKeys of them per node', async (t) => {
  const clock = new ManualClock()
  const { app, connected } = await build(t, { clock, rooms: () => ['team:1', 'team:2'], history: { ttl: 60 }, limits: { idempotencyKeys: 3 } })
  const { socket } = await connected('u1')
  const got = collect(socket, 'x')
  const first = await app.broadcast('team:1', 'x', 1, { idempotencyKey: 'k1', by: { id: 'u9' } })
  t.same(await app.broadcast('team:1', 'x', 1, { idempotencyKey: 'k1' }), first, 'a repeat: the first call\'s meta, nothing sent')
  t.match(await app.broadcast('team:2', 'x', 2, { idempotencyKey: 'k1' }), { scope: 'team:2', seq: 1 }, 'the same key for another scope is another broadcast')
  for (const key of ['k2', 'k3']) await app.broadcast('team:1', 'x', key, { idempotencyKey: key })
  t.match(await app.broadcast('team:1', 'x', 1, { idempotencyKey: 'k1' }), { seq: 4 }, 'past 3 keys the oldest is forgotten: sent again')
  t.match(await app.broadcast('team:1', 'x', 'k3', { idempotencyKey: 'k3' }), { seq: 3 }, 'a recent one is still known')
  clock.advance(60_000)
  t.match(await app.broadcast('team:1', 'x', 'k3', { idempotencyKey: 'k3' }), { seq: 5 }, 'past the history ttl it is forgotten too')
  await flush(socket)
  t.same(got.map(([payload, meta]) => [meta.scope, meta.seq, payload]), [
    ['team:1', 1, 1], ['team:2', 1, 2], ['team:1', 2, 'k2'], ['team:1', 3, 'k3'], ['team:1', 4, 1], ['team:1', 5, 'k3']
  ])
})

t.test('idempotencyKey with a custom store that keeps no keys: remembered on the node', async (t) => {
  const memory = new MemoryHistoryStore()
  t.teardown(() => memory.close())
  const store: HistoryStore = {
    kind: 'custom',
    append: (scope, entry) => memory.append(scope, entry),
    read: (scope, since) => memory.read(scope, since),
    position: (scope) => memory.position(scope)
  }
  const { app, connected } = await build(t, { rooms: () => ['team:1'], history: { store } })
  const { socket } = await connected('u1')
  const got = collect(socket, 'x')
  const metas = await Promise.all([1, 2, 3].map(async () => await app.broadcast('team:1', 'x', 1, { idempotencyKey: 'k1' })))
  await flush(socket)
  t.equal(got.length, 1, 'sent once')
  t.ok(metas.every((meta) => meta === metas[0]), 'every call has the first one\'s meta')
})

t.test('with the Redis history store an idempotency key holds across nodes: a retry on another node is not sent twice', async (t) => {
  const redis = redisOptions(t)
  const a = await build(t, { rooms: () => ['team:1'], redis })
  const b = await build(t, { rooms: () => ['team:1'], redis: { ...redis } })
  const onA = await a.connected('u1')
  const onB = await b.connected('u2')
  const gotA = collect(onA.socket, 'order:paid')
  const gotB = collect(onB.socket, 'order:paid')
  const first = await a.app.broadcast('team:1', 'order:paid', { id: 7 }, { idempotencyKey: 'req-7', by: 'u9' })
  await until(() => gotA.length === 1 && gotB.length === 1, 'the first broadcast on both nodes')
  const retried = await b.app.broadcast('team:1', 'order:paid', { id: 7 }, { idempotencyKey: 'req-7' })
  t.same(retried, first, 'the retry on the other node answers with the first meta')
  const racing = await Promise.all([a, b, a, b].map(async (node) => await node.app.broadcast('team:1', 'order:paid', { id: 8 }, { idempotencyKey: 'req-8' })))
  t.equal(new Set(racing.map((meta) => meta!.id)).size, 1, 'concurrent calls on both nodes agree on one broadcast')
  const fence = waitFor(onA.socket, 'fence')
  const fenceB = waitFor(onB.socket, 'fence')
  await a.app.broadcast('team:1', 'fence', null)
  await Promise.all([fence, fenceB])
  t.same(gotA.map(([payload]) => payload), [{ id: 7 }, { id: 8 }], 'each sent once (node A\'s client)')
  t.same(gotB.map(([payload]) => payload), [{ id: 7 }, { id: 8 }], 'each sent once (node B\'s client)')
  t.equal(gotA[0]![1].by, 'u9')
})

t.test('no unhandled rejections', async (t) => {
  t.same(await faults.since(), [])
})
