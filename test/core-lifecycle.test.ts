import t from 'tap'
import type { Socket } from 'socket.io-client'
import type { HistoryStore } from '../src/index.js'
import { MemoryHistoryStore } from '../src/index.js'
import { build, collect, flush, refusal, request, tokenFor, waitFor } from './helper.js'

type Meta = { seq?: number, epoch?: string, replayed?: true }

/** Everything `socket` receives, in arrival order, as [event, payload, meta]. */
function record (socket: Socket): Array<[string, unknown, Meta]> {
  const seen: Array<[string, unknown, Meta]> = []
  socket.onAny((event: string, payload: unknown, meta: Meta) => { seen.push([event, payload, meta]) })
  return seen
}

t.test('reconnect with since: the missed events, in order, before ready, then live', async (t) => {
  const { app, client, connected } = await build(t, { rooms: () => ['team:1'] })
  const first = await connected('u1')
  const since = first.ready.positions
  first.socket.disconnect()
  for (let i = 1; i <= 5; i++) await app.broadcast('team:1', 'n', i)
  const again = client({ token: tokenFor('u1'), since })
  const seen = record(again)
  await waitFor(again, 'realtime:ready')
  await app.broadcast('team:1', 'n', 6)
  await flush(again)
  const events = seen.filter(([e]) => e === 'n')
  t.same(events.map(([, p]) => p), [1, 2, 3, 4, 5, 6])
  t.same(events.map(([, , m]) => m.replayed ?? false), [true, true, true, true, true, false])
  t.ok(seen.findIndex(([e]) => e === 'realtime:ready') === 5, 'ready after the replay')
})

t.test('subscribe with since replays; gap, epoch and malformed since', async (t) => {
  const { app, connected } = await build(t, { rooms: () => ['team:1', 'team:2'], history: { max: 3 } })
  const { socket, ready } = await connected('u1')
  const start = ready.positions['team:1']!
  for (let i = 1; i <= 2; i++) await app.broadcast('team:1', 'n', i)
  const replay = collect(socket, 'n')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1', since: start }), { ok: true, replayed: 2, position: { seq: 2 } })
  // live while joined, then the same two again as asked for: the client drops repeats by (scope, seq)
  t.same(replay.map(([p, m]) => [p, m.replayed]), [[1, undefined], [2, undefined], [1, true], [2, true]])

  for (let i = 3; i <= 6; i++) await app.broadcast('team:1', 'n', i)
  const resyncs = collect(socket, 'realtime:resync')
  const epoch = replay[0]![1].epoch as string
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1', since: { seq: 1, epoch } }), { ok: true, replayed: 0, position: { seq: 6 } })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1', since: { seq: 6, epoch: 'someone.else' } }), { ok: true, replayed: 0 })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1', since: { seq: 99, epoch } }), { ok: true, replayed: 0 })
  t.same(resyncs.map(([m]) => m), [{ scope: 'team:1', reason: 'gap' }, { scope: 'team:1', reason: 'epoch' }, { scope: 'team:1', reason: 'epoch' }])
  for (const since of ['x', { seq: -1, epoch: 'e' }, [1], { seq: 1 }]) {
    t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1', since }), { ok: false, error: { code: 'BAD_REQUEST' } })
  }
})

t.test('catch-up is authorized like live delivery; history off gives unavailable', async (t) => {
  const { app, client, connected } = await build(t, { rooms: (user) => user.id === 'in' ? ['team:1'] : [] })
  const insider = await connected('in')
  const position = insider.ready.positions['team:1']!
  await app.broadcast('team:1', 'secret', 1)
  const outsider = client({ token: tokenFor('out'), since: { 'team:1': position } })
  const seen = record(outsider)
  const [ready] = await waitFor<[{ scopes: string[] }]>(outsider, 'realtime:ready')
  t.same(ready.scopes, ['user:out'])
  t.same(seen.map(([e]) => e), ['realtime:ready'], 'no replay and no resync for an ungranted scope')

  const off = await build(t, { rooms: () => ['team:1'], history: false })
  const one = await off.connected('u1')
  t.same(one.ready.positions, {})
  const meta = await off.app.broadcast('team:1', 'x', 1)
  t.match(meta, { stored: false })
  t.notOk('seq' in meta!)
  const resync = waitFor<[unknown]>(one.socket, 'realtime:resync')
  t.match(await request(one.socket, 'realtime:subscribe', { scope: 'team:1', since: { seq: 0, epoch: 'x.1' } }), { ok: true, position: null })
  t.same((await resync)[0], { scope: 'team:1', reason: 'unavailable' })
})

t.test('an event broadcast during a replay arrives exactly once, in order', async (t) => {
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  const inner = new MemoryHistoryStore()
  // a custom store whose read waits, so a live broadcast lands in the middle of the catch-up
  const slow: HistoryStore = {
    kind: 'slow-memory',
    append: (scope, entry) => inner.append(scope, entry),
    position: (scope) => inner.position(scope),
    read: async (scope, since) => {
      const result = inner.read(scope, since)
      await gate
      return result
    }
  }
  t.teardown(() => inner.close())
  const { app, connected } = await build(t, { canSubscribe: () => true, history: { store: slow } })
  const { socket } = await connected('u1')
  const since = await app.realtime.history!.position('team:1')
  await app.broadcast('team:1', 'n', 1)
  await app.broadcast('team:1', 'n', 2)
  const seen = collect(socket, 'n')
  const ack = request(socket, 'realtime:subscribe', { scope: 'team:1', since })
  await flush(socket)
  await app.broadcast('team:1', 'n', 3)
  release()
  t.match(await ack, { ok: true, replayed: 2 })
  const bySeq = new Map<number, number>()
  for (const [, meta] of seen) bySeq.set(meta.seq, (bySeq.get(meta.seq) ?? 0) + 1)
  t.same([...bySeq.keys()].sort(), [1, 2, 3], 'none missing')
  t.same([...bySeq.values()], [1, 1, 1], 'none twice')
})

t.test('health route: shape, counts, path, off, 503', async (t) => {
  const { app, connected } = await build(t)
  const empty = (await app.inject('/health/realtime')).json()
  t.same(Object.keys(empty).sort(), ['history', 'node', 'websocket'])
  t.same(empty.websocket, { enabled: true, connections: 0 })
  t.same(empty.history, { store: 'memory', ok: true })
  const a = await connected('u1')
  await connected('u2')
  const two = await app.inject('/health/realtime')
  t.equal(two.statusCode, 200)
  t.same(two.json().websocket, { enabled: true, connections: 2 })
  t.equal(two.json().node.connections, 2)
  const gone = waitFor(a.socket, 'disconnect')
  a.socket.disconnect()
  await gone
  let connections = 2
  for (let i = 0; i < 200 && connections !== 1; i++) {
    connections = (await app.inject('/health/realtime')).json().websocket.connections
    await new Promise((resolve) => setImmediate(resolve))
  }
  t.equal(connections, 1, 'count goes back down')

  const moved = await build(t, { health: { path: '/ops/rt' } })
  t.equal((await moved.app.inject('/ops/rt')).statusCode, 200)
  t.equal((await moved.app.inject('/health/realtime')).statusCode, 404)
  const off = await build(t, { health: false })
  t.equal((await off.app.inject('/health/realtime')).statusCode, 404)

  const inner = new MemoryHistoryStore()
  t.teardown(() => inner.close())
  const sick: HistoryStore = { kind: 'sick', append: (s, e) => inner.append(s, e), read: (s, p) => inner.read(s, p), position: (s) => inner.position(s), ping: () => false }
  const down = await build(t, { history: { store: sick } })
  const res = await down.app.inject('/health/realtime')
  t.equal(res.statusCode, 503)
  t.same(res.json().history, { store: 'sick', ok: false })
  t.same(res.json().websocket, { enabled: true, connections: 0 })
})

t.test('close with 300 open sockets: transport close, reconnect attempts refused, promptly done', async (t) => {
  let hookCalled = false
  const { app, client } = await build(t, {
    preClose (done) {
      hookCalled = true
      done()
      done() // a second call is harmless
    }
  })
  const sockets = Array.from({ length: 300 }, () => client({ token: tokenFor('u1') }, { reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100 }))
  await Promise.all(sockets.map((s) => waitFor(s, 'realtime:ready')))
  const reasons = Promise.all(sockets.map((s) => waitFor<[string]>(s, 'disconnect')))
  await app.close()
  t.ok(hookCalled, 'preClose option called')
  t.same(new Set((await reasons).map(([r]) => r)), new Set(['transport close']))
  for (const s of sockets) s.disconnect()
  t.equal(await app.broadcast('team:1', 'x', 1), null)
})

t.test('no handshake accepted once closing', async (t) => {
  let finish!: () => void
  const { app, client } = await build(t, { preClose: (done) => { finish = done } })
  const closing = app.close()
  const err = await refusal(client({ token: tokenFor('u1') }))
  t.ok(err instanceof Error, 'refused while closing')
  finish()
  await closing
})
