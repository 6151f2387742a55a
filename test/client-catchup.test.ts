// fastify-realtime/client keeping its place: since on every reconnect, restored subscriptions,
// exact replays, duplicates, events out of order or missing, epochs, resyncs, storage and page
// reloads, events before the position is known, and skips for the socket a broadcast excepted.
// Out-of-order and missing frames are sent by hand to one socket, with metas from the real log.
import t from 'tap'
import { build, tokenFor } from './helper.js'
import {
  Gate,
  MemoryStorage,
  SteeredStore,
  dropTransport,
  incoming,
  on,
  open,
  ready,
  roomsOf,
  roundTrip,
  send,
  serverSocket,
  store,
  subscribes,
  until
} from './client-helper.js'

const rooms = () => ['team:1']
const canSubscribe = (_user: unknown, scope: string) => scope.startsWith('extra:')

/** Holds handshakes (in auth.user) while `held` is set, so the test decides when a client is back. */
function handshakeGate () {
  const gate = new Gate()
  gate.open()
  return {
    gate,
    user: async (claims: { sub?: unknown }) => {
      await gate.pass()
      return { id: String(claims.sub) }
    }
  }
}

t.test('missed events come once, in order, with since on every reconnect; then live ones', async (t) => {
  const { gate, user } = handshakeGate()
  t.teardown(() => gate.open())
  const { app, url } = await build(t, { rooms, auth: { user } })
  const handshakes: any[] = []
  app.io.on('connection', (socket) => { handshakes.push(socket.handshake.auth) })
  const { client, events, resyncs } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  await app.broadcast('team:1', 'tick', { i: 1 })
  await app.broadcast('team:1', 'tick', { i: 2 })
  await until(() => events.length === 2, 'two live events')
  const epoch = events[0]!.meta.epoch

  for (const round of [0, 1]) {
    gate.close()
    const calls = gate.calls
    dropTransport(app, client)
    await until(() => gate.calls > calls, 'the client is handshaking again')
    const from = events.length
    for (let i = 1; i <= 3; i++) await app.broadcast('team:1', 'tick', { i: from + i })
    gate.open()
    await until(() => events.length === from + 3, `round ${round}: the missed events`)
    t.same(handshakes.at(-1).since?.['team:1'], { seq: from, epoch }, `round ${round}: since is the last position`)
    t.ok(events.slice(from).every((e) => e.meta.replayed === true), 'they are replays')
  }
  await app.broadcast('team:1', 'tick', { i: 9 })
  await until(() => events.length === 9, 'the live event')
  t.same(events.map((e) => e.meta.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9], 'each seq once, in order')
  t.notOk(events[8]!.meta.replayed)
  t.same(resyncs, [])
})

t.test('subscriptions are restored after a reconnect, with since', async (t) => {
  const { gate, user } = handshakeGate()
  t.teardown(() => gate.open())
  const { app, url } = await build(t, { rooms, canSubscribe, auth: { user } })
  await app.broadcast('extra:1', 'tick', { i: 0 })
  const log = incoming(app)
  const { client, events } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  await client.subscribe('extra:1')
  await app.broadcast('extra:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'first event')

  gate.close()
  dropTransport(app, client)
  await until(() => gate.calls === 2, 'handshaking again')
  await app.broadcast('extra:1', 'tick', { i: 2 })
  await app.broadcast('extra:1', 'tick', { i: 3 })
  gate.open()
  await until(() => events.length === 3, 'the missed events')
  const restore = subscribes(log, 'extra:1')[1]
  t.match(restore?.data, { scope: 'extra:1', since: { seq: 2, epoch: events[0]!.meta.epoch } })
  t.ok(roomsOf(app, client).has('extra:1'))
  await app.broadcast('extra:1', 'tick', { i: 4 })
  await until(() => events.length === 4, 'live')
  t.same(events.map((e) => [e.payload.i, e.meta.replayed === true]), [[1, false], [2, true], [3, true], [4, false]])
})

t.test('a repeated (scope, seq) is dropped', async (t) => {
  const { app, url } = await build(t, { rooms })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const { client, events } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  const meta = await app.broadcast('team:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'the event')
  const { stored, ...wire } = meta!
  t.ok(stored)
  send(app, client.socket.id!, ['tick', { i: 1 }, wire as unknown as Record<string, unknown>])
  send(app, client.socket.id!, ['tick', { i: 1 }, { ...wire, replayed: true }])
  await app.broadcast('team:1', 'tick', { i: 2 })
  await until(() => events.length >= 2, 'the next event')
  await roundTrip(client)
  t.same(events.map((e) => e.payload.i), [1, 2])
})

t.test('a later seq waits for the missing one, then both go in order', async (t) => {
  const { app, url } = await build(t, { rooms })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const log = incoming(app)
  const { client, events } = open(t, url, { token: tokenFor('alice'), gapWaitMs: 60_000 })
  await ready(client)
  const frames = [await store(app, 'team:1', 'tick', { i: 1 }), await store(app, 'team:1', 'tick', { i: 2 }), await store(app, 'team:1', 'tick', { i: 3 })]
  const id = client.socket.id!
  send(app, id, frames[0]!)
  send(app, id, frames[2]!)
  await roundTrip(client)
  t.same(events.map((e) => e.payload.i), [1], 'seq 3 is held')
  send(app, id, frames[1]!)
  await until(() => events.length === 3, 'released')
  t.same(events.map((e) => e.meta.seq), [2, 3, 4])
  t.equal(subscribes(log, 'team:1').length, 0, 'no fetch was needed')
})

t.test('a missing seq that never comes is fetched with since and delivered', async (t) => {
  const { app, url } = await build(t, { rooms })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const log = incoming(app)
  const { client, events, resyncs } = open(t, url, { token: tokenFor('alice'), gapWaitMs: 50 })
  await ready(client)
  const frames = [await store(app, 'team:1', 'tick', { i: 1 }), await store(app, 'team:1', 'tick', { i: 2 }), await store(app, 'team:1', 'tick', { i: 3 })]
  send(app, client.socket.id!, frames[0]!)
  send(app, client.socket.id!, frames[2]!)
  await until(() => events.length === 3, 'the range fetched')
  t.same(events.map((e) => e.payload.i), [1, 2, 3])
  t.same(subscribes(log, 'team:1').map((e) => e.data.since?.seq), [2], 'one fetch, from the last delivered seq')
  t.same(resyncs, [])
  t.same(client.positions['team:1']?.seq, 4)
})

t.test('a missing seq beyond the log: resync gap, then live from the new position', async (t) => {
  const { app, url } = await build(t, { rooms, history: { max: 2 } })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const { client, events, resyncs } = open(t, url, { token: tokenFor('alice'), gapWaitMs: 50 })
  await ready(client)
  const frames = []
  for (let i = 1; i <= 4; i++) frames.push(await store(app, 'team:1', 'tick', { i }))
  send(app, client.socket.id!, frames[3]!)
  await until(() => resyncs.length === 1, 'resync')
  t.same(resyncs, [{ scope: 'team:1', reason: 'gap' }])
  t.same(events, [], 'nothing from the broken range')
  t.same(client.positions['team:1']?.seq, 5, 'the position the server gave')
  await app.broadcast('team:1', 'tick', { i: 5 })
  await until(() => events.length === 1, 'live')
  t.same(events[0]?.meta.seq, 6)
})

t.test('an event of another epoch: one fetch, events held meanwhile, the server decides (resync epoch)', async (t) => {
  const history = new SteeredStore()
  t.teardown(() => history.close())
  const { app, url } = await build(t, { rooms, history: { store: history } })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const log = incoming(app)
  const { client, events, resyncs } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  await app.broadcast('team:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'first event')

  history.restart() // the scope's log is lost: the next events start a new epoch
  const gate = new Gate()
  history.gate = gate
  for (let i = 2; i <= 4; i++) await app.broadcast('team:1', 'tick', { i })
  await until(() => gate.calls >= 1, 'the fetch reached the store')
  await roundTrip(client)
  t.equal(subscribes(log, 'team:1').length, 1, 'one fetch for three events')
  t.same(events.length, 1, 'held while the fetch is out')
  history.gate = null
  gate.open()
  await until(() => resyncs.length === 1, 'the resync')
  t.same(resyncs, [{ scope: 'team:1', reason: 'epoch' }])
  await roundTrip(client)
  t.same(events.map((e) => e.payload.i), [1], 'what the app refetches is not delivered on top')
  t.match(client.positions['team:1'], { seq: 3, epoch: history.current.position('team:1').epoch })

  await app.broadcast('team:1', 'tick', { i: 5 })
  await until(() => events.length === 2, 'live again')
  t.same(events[1]?.meta.seq, 4)
  t.equal(subscribes(log, 'team:1').length, 1)
})

t.test('the first event of an empty scope is fetched, not assumed (the server says it follows)', async (t) => {
  const { app, url } = await build(t, { rooms })
  const log = incoming(app)
  const { client, events, resyncs } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  t.equal(client.positions['team:1']?.seq, 0)
  await app.broadcast('team:1', 'tick', { i: 1 })
  await app.broadcast('team:1', 'tick', { i: 2 })
  await until(() => events.length === 2, 'both')
  t.same(events.map((e) => e.meta.seq), [1, 2])
  t.same(subscribes(log, 'team:1').map((e) => e.data.since?.seq), [0], 'one fetch from seq 0')
  t.same(resyncs, [])
})

t.test('resync unavailable when the log cannot be read at the reconnect', async (t) => {
  const history = new SteeredStore()
  t.teardown(() => history.close())
  const { app, url } = await build(t, { rooms, history: { store: history } })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const { client, events, resyncs } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  await app.broadcast('team:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'first event')
  history.failing = true
  dropTransport(app, client)
  await until(() => resyncs.length === 2, 'the resyncs')
  t.same(resyncs.sort((a, b) => a.scope.localeCompare(b.scope)), [
    { scope: 'team:1', reason: 'unavailable' },
    { scope: 'user:alice', reason: 'unavailable' }
  ], 'every scope sent with since')
  await ready(client)
  history.failing = false
  await app.broadcast('team:1', 'tick', { i: 2 })
  await until(() => events.length === 2, 'live after')
  t.same(events.map((e) => e.payload.i), [1, 2])
})

t.test('events before realtime:ready wait for the position: a lower seq is not lost', async (t) => {
  const history = new SteeredStore()
  t.teardown(() => history.close())
  const { app, url } = await build(t, { rooms, history: { store: history } })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const gate = new Gate()
  history.gate = gate // holds the catch-up of the handshake, so ready waits
  let socketId = ''
  app.io.on('connection', (socket) => { socketId = socket.id })
  const { client, events } = open(t, url, { token: tokenFor('alice'), gapWaitMs: 60_000 })
  await until(() => gate.calls >= 2, 'the handshake catch-up reached the store')
  const two = await store(app, 'team:1', 'tick', { i: 1 })
  const three = await store(app, 'team:1', 'tick', { i: 2 })
  send(app, socketId, three)
  send(app, socketId, two)
  history.gate = null
  gate.open()
  await until(() => events.length === 2, 'both delivered')
  t.same(events.map((e) => e.meta.seq), [2, 3], 'in seq order')
  t.equal(client.positions['team:1']?.seq, 3)
})

t.test('events before a subscribe is answered wait too, and what the answer covers is dropped', async (t) => {
  const history = new SteeredStore()
  t.teardown(() => history.close())
  const { app, url } = await build(t, { rooms, canSubscribe, history: { store: history } })
  const old = await store(app, 'extra:1', 'tick', { i: 0 })
  const { client, events } = open(t, url, { token: tokenFor('alice'), gapWaitMs: 60_000 })
  await ready(client)
  const gate = new Gate()
  history.gate = gate // the answer (seq 1) is taken, then held while more events come
  const subscribed = client.subscribe('extra:1')
  await until(() => gate.calls >= 1, 'joined, position read')
  const two = await store(app, 'extra:1', 'tick', { i: 1 })
  const three = await store(app, 'extra:1', 'tick', { i: 2 })
  const id = client.socket.id!
  send(app, id, three)
  send(app, id, old)
  send(app, id, two)
  history.gate = null
  gate.open()
  const position = await subscribed
  t.same(events.map((e) => e.meta.seq), [2, 3], 'after the answer, in order; the covered seq 1 dropped')
  t.equal(position?.seq, 3, 'subscribe resolves with the position after what it delivered')
})

t.test('storage: positions are written in the turn of the event, and a reload catches up from them', async (t) => {
  const { app, url } = await build(t, { rooms })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const storage = new MemoryStorage()
  const first = open(t, url, { token: tokenFor('alice'), storage, storageKey: 'positions:alice' })
  const stored: Array<string | null> = []
  on(first.client, 'tick', () => {
    // what a page unloaded right after this handler would have left behind
    queueMicrotask(() => { stored.push(storage.getItem('positions:alice')) })
  })
  await ready(first.client)
  await app.broadcast('team:1', 'tick', { i: 1 })
  await app.broadcast('team:1', 'tick', { i: 2 })
  await until(() => stored.length === 2, 'two events')
  const seqs = stored.map((raw) => JSON.parse(raw!)['team:1'].seq as number)
  t.ok(seqs[0]! >= 2 && seqs[1] === 3, 'each event saved before its turn ended')
  t.ok(storage.writes <= 3, 'at most one write per turn (ready, then the events)')

  // the page goes away without close(); two events happen while it is gone
  first.client.socket.disconnect()
  await app.broadcast('team:1', 'tick', { i: 3 })
  await app.broadcast('team:1', 'tick', { i: 4 })
  const reloaded = open(t, url, { token: tokenFor('alice'), storage, storageKey: 'positions:alice' })
  await until(() => reloaded.events.length === 2, 'the reloaded page catches up')
  await app.broadcast('team:1', 'tick', { i: 5 })
  await until(() => reloaded.events.length === 3, 'then live')
  t.same(reloaded.events.map((e) => [e.payload.i, e.meta.replayed === true]), [[3, true], [4, true], [5, false]], 'nothing seen before the reload again')
  t.same(JSON.parse(storage.getItem('positions:alice')!)['team:1'].seq, 6)
})

t.test('storage: an explicit subscription catches up after a reload too', async (t) => {
  const { app, url } = await build(t, { rooms, canSubscribe })
  await app.broadcast('extra:1', 'tick', { i: 0 })
  const storage = new MemoryStorage()
  const first = open(t, url, { token: tokenFor('alice'), storage })
  await first.client.subscribe('extra:1')
  await app.broadcast('extra:1', 'tick', { i: 1 })
  await until(() => first.events.length === 1, 'first event')
  first.client.close()
  await app.broadcast('extra:1', 'tick', { i: 2 })
  const reloaded = open(t, url, { token: tokenFor('alice'), storage })
  await ready(reloaded.client)
  await reloaded.client.subscribe('extra:1')
  t.same(reloaded.events.map((e) => e.payload.i), [2], 'replayed before subscribe resolved')
})

t.test('close() while a fetch is out: no resync, the stored position stays', async (t) => {
  const history = new SteeredStore()
  t.teardown(() => history.close())
  const { app, url } = await build(t, { rooms, history: { store: history } })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const storage = new MemoryStorage()
  const { client, events, resyncs, errors } = open(t, url, { token: tokenFor('alice'), storage, gapWaitMs: 20 })
  await ready(client)
  await app.broadcast('team:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'first event')
  const gate = new Gate()
  history.gate = gate
  await store(app, 'team:1', 'tick', { i: 2 })
  send(app, client.socket.id!, await store(app, 'team:1', 'tick', { i: 3 }))
  await until(() => gate.calls >= 1, 'the fetch is out')
  client.close()
  history.gate = null
  gate.open()
  await until(() => app.io.of('/').sockets.size === 0, 'the server saw the client go')
  t.same(resyncs, [])
  t.same(errors, [])
  t.same(JSON.parse(storage.getItem('fastify-realtime:positions')!)['team:1']?.seq, 2, 'still stored')
})

t.test('broadcast with except: the excepted client moves on by realtime:skip, no handler, no fetch', async (t) => {
  const { app, url } = await build(t, { rooms })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const log = incoming(app)
  const alice = open(t, url, { token: tokenFor('alice'), gapWaitMs: 60_000 })
  const bob = open(t, url, { token: tokenFor('bob'), gapWaitMs: 60_000 })
  await Promise.all([ready(alice.client), ready(bob.client)])
  const aliceId = alice.client.socket.id!

  // alice is sent realtime:skip { scope, seq, epoch } instead of the event
  const meta = await app.broadcast('team:1', 'tick', { i: 1 }, { except: aliceId })
  await app.broadcast('team:1', 'tick', { i: 2 })
  await until(() => alice.events.length === 1 && bob.events.length === 2, 'delivered')
  t.same(alice.events.map((e) => e.payload.i), [2], 'the excepted event is not handed to alice')
  t.same(bob.events.map((e) => e.payload.i), [1, 2])
  t.equal(alice.client.positions['team:1']?.seq, 3)

  // skips that move nothing: unknown scope, another epoch (kept aside, nothing fetched), old seq
  send(app, aliceId, ['realtime:skip', { scope: 'team:77', seq: 1, epoch: meta!.epoch }])
  send(app, aliceId, ['realtime:skip', { scope: 'team:1', seq: 4, epoch: 'another.1' }])
  send(app, aliceId, ['realtime:skip', { scope: 'team:1', seq: 2, epoch: meta!.epoch }])
  await roundTrip(alice.client)
  t.same(alice.client.positions['team:1'], { seq: 3, epoch: meta!.epoch })
  t.notOk('team:77' in alice.client.positions)
  await app.broadcast('team:1', 'tick', { i: 3 })
  await until(() => alice.events.length === 2, 'next live')
  t.equal(subscribes(log, 'team:1').filter((e) => e.socketId === aliceId).length, 0, 'never fetched')
})

t.test('except on the first events of an empty scope: the fetch for the new epoch does not hand them back', async (t) => {
  const { app, url } = await build(t, { rooms })
  const log = incoming(app)
  const alice = open(t, url, { token: tokenFor('alice') })
  await ready(alice.client)
  t.equal(alice.client.positions['team:1']?.seq, 0, 'no log yet: the first event starts a new epoch')
  const aliceId = alice.client.socket.id!
  await app.broadcast('team:1', 'tick', { i: 1 }, { except: aliceId })
  await app.broadcast('team:1', 'tick', { i: 2 }, { except: aliceId })
  await roundTrip(alice.client)
  t.equal(subscribes(log, 'team:1').length, 0, 'skips alone fetch nothing')
  await app.broadcast('team:1', 'tick', { i: 3 })
  await until(() => alice.events.length === 1, 'the third event')
  t.equal(subscribes(log, 'team:1').length, 1, 'the new epoch is fetched once')
  await roundTrip(alice.client)
  t.same(alice.events.map((e) => e.payload.i), [3], 'the replay of the excepted events is not delivered')
  t.equal(alice.client.positions['team:1']?.seq, 3)
})

t.test('a skip that arrives before the event it follows is held like one', async (t) => {
  const { app, url } = await build(t, { rooms })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const log = incoming(app)
  const { client, events } = open(t, url, { token: tokenFor('alice'), gapWaitMs: 60_000 })
  await ready(client)
  const id = client.socket.id!
  const two = await store(app, 'team:1', 'tick', { i: 1 })
  const skipped = await store(app, 'team:1', 'tick', { i: 2 })
  const four = await store(app, 'team:1', 'tick', { i: 3 })
  send(app, id, four)
  send(app, id, ['realtime:skip', { scope: 'team:1', seq: skipped[2].seq, epoch: skipped[2].epoch }])
  send(app, id, two)
  await until(() => events.length === 2, 'released')
  t.same(events.map((e) => e.payload.i), [1, 3])
  t.equal(subscribes(log, 'team:1').length, 0)
  t.ok(serverSocket(app, client).connected)
})

t.test('storage: a reload holding the seq-0 position of an empty scope gets the scope\'s first events, never a resync', async (t) => {
  const { app, url } = await build(t, { rooms })
  const storage = new MemoryStorage()
  const first = open(t, url, { token: tokenFor('alice'), storage })
  await ready(first.client)
  const empty = first.client.positions['team:1']
  t.equal(empty?.seq, 0, 'the scope has no events yet')
  // the page goes away; the scope's first events happen while it is gone
  first.client.close()
  const meta = await app.broadcast('team:1', 'tick', { i: 1 })
  await app.broadcast('team:1', 'tick', { i: 2 })
  t.not(meta?.epoch, empty?.epoch, 'the first event starts a log of its own epoch')
  const reloaded = open(t, url, { token: tokenFor('alice'), storage })
  await until(() => reloaded.events.length === 2, 'the reloaded page catches up')
  t.same(reloaded.events.map((e) => [e.payload.i, e.meta.seq, e.meta.replayed === true]), [[1, 1, true], [2, 2, true]])
  t.same(reloaded.resyncs, [], 'no resync')
  t.same(reloaded.client.positions['team:1'], { seq: 2, epoch: meta?.epoch })
})
