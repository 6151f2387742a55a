import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Socket } from 'socket.io-client'
import { MemoryHistoryStore, type BroadcastMeta, type EventMeta as Meta, type HistoryStore, type Position } from '../src/index.js'
import { build, flush, request, tokenFor, waitFor, type Built, type ReadyPayload } from './helper.js'
import { redisOptions } from './redis-helper.js'

type Seen = Array<[string, unknown, Meta]>

/** Everything `socket` receives, in arrival order, as [event, first arg, second arg]. */
function record (socket: Socket): Seen {
  const seen: Seen = []
  socket.onAny((event: string, payload: unknown, meta: Meta) => { seen.push([event, payload, meta]) })
  return seen
}

const named = (seen: Seen, event: string): Seen => seen.filter(([e]) => e === event)
const eventIndex = (seen: Seen, event: string): number => seen.findIndex(([e]) => e === event)

/** u1..: granted team:1 at connect and team:2 on request; `out` is granted nothing. */
const grants = {
  rooms: (user: { id: string | number }) => user.id === 'out' ? [] : ['team:1'],
  canSubscribe: (user: { id: string | number }, scope: string) => user.id !== 'out' && scope === 'team:2'
}

/** Connects as `sub` with `since` in the handshake; resolves once ready, with all it received. */
async function reconnect (built: Built, sub: string, since: unknown): Promise<{ socket: Socket, seen: Seen, ready: ReadyPayload }> {
  const socket = built.client({ token: tokenFor(sub), since })
  const seen = record(socket)
  const [ready] = await waitFor<[ReadyPayload]>(socket, 'realtime:ready')
  return { socket, seen, ready }
}

/** The position `sub` is handed for `scope` at connect, then disconnected. */
async function positionThenLeave (built: Built, sub: string, scope: string): Promise<Position> {
  const { socket, ready } = await built.connected(sub)
  socket.disconnect()
  const position = ready.positions[scope]
  if (position === undefined) throw new Error(`no position for ${scope}`)
  return position
}

async function broadcastN (built: Built, scope: string, from: number, to: number): Promise<BroadcastMeta[]> {
  const metas: BroadcastMeta[] = []
  for (let n = from; n <= to; n++) metas.push((await built.app.broadcast(scope, 'task:updated', { n }, { by: `author-${n}` }))!)
  return metas
}

t.test('reconnect with since: exactly the missed events, in order, replayed, before ready, then live', async (t) => {
  const built = await build(t, grants)
  const position = await positionThenLeave(built, 'u1', 'team:1')
  t.equal(position.seq, 0, 'a fresh scope starts at seq 0')
  const sent = await broadcastN(built, 'team:1', 1, 5)
  await built.app.broadcast('team:other', 'task:updated', { n: 'elsewhere' })

  const { socket, seen, ready } = await reconnect(built, 'u1', { 'team:1': position })
  const readyAt = eventIndex(seen, 'realtime:ready')
  const replayed = seen.slice(0, readyAt)
  t.same(replayed.map(([e]) => e), Array(5).fill('task:updated'), 'five events, nothing else, before ready')
  t.same(replayed.map(([, payload]) => payload), [1, 2, 3, 4, 5].map((n) => ({ n })), 'payloads in order')
  t.same(replayed.map(([, , meta]) => meta), sent.map(({ stored, ...meta }) => ({ ...meta, replayed: true })),
    'meta as broadcast (id, scope, seq, epoch, at, by) plus replayed: true')
  t.same(ready.positions['team:1'], { seq: 5, epoch: sent[0]!.epoch }, 'ready carries the new position')

  const live = await built.app.broadcast('team:1', 'task:updated', { n: 6 })
  await flush(socket)
  const after = seen.slice(readyAt + 1)
  t.equal(after.length, 1, 'one live event after ready')
  t.same(after[0]![1], { n: 6 })
  t.equal(after[0]![2].seq, 6)
  t.equal(after[0]![2].id, live!.id)
  t.notOk('replayed' in after[0]![2], 'live events carry no replayed flag')
})

t.test('reconnect from the head or with no since: nothing replayed, no resync', async (t) => {
  const built = await build(t, grants)
  await broadcastN(built, 'team:1', 1, 2)
  const head = await positionThenLeave(built, 'u1', 'team:1')
  t.equal(head.seq, 2)
  const fromHead = await reconnect(built, 'u1', { 'team:1': head })
  t.same(fromHead.seen.map(([e]) => e), ['realtime:ready'])
  const without = await reconnect(built, 'u1', undefined)
  t.same(without.seen.map(([e]) => e), ['realtime:ready'])
  t.same(without.ready.positions['team:1'], head)
})

t.test('subscribe with since replays, then acks { ok, scope, replayed, position }', async (t) => {
  const built = await build(t, grants)
  const { socket } = await built.connected('u1')
  const first = await request(socket, 'realtime:subscribe', { scope: 'team:2' })
  t.match(first, { ok: true, scope: 'team:2', replayed: 0, position: { seq: 0 } })
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:2' }), { ok: true })
  const sent = await broadcastN(built, 'team:2', 1, 5)

  const seen = record(socket)
  const ack = await request(socket, 'realtime:subscribe', { scope: 'team:2', since: first.position })
  t.same(ack, { ok: true, scope: 'team:2', replayed: 5, position: { seq: 5, epoch: sent[0]!.epoch } })
  t.same(seen.map(([, payload]) => payload), [1, 2, 3, 4, 5].map((n) => ({ n })), 'replayed before the ack, in order')
  t.same(seen.map(([, , meta]) => meta), sent.map(({ stored, ...meta }) => ({ ...meta, replayed: true })))

  await built.app.broadcast('team:2', 'task:updated', { n: 6 })
  await flush(socket)
  t.equal(seen.length, 6, 'then live')
  t.match(seen[5], ['task:updated', { n: 6 }, { seq: 6 }])
  t.notOk('replayed' in seen[5]![2])
})

t.test('a gap is a resync with reason gap, and nothing is replayed', async (t) => {
  const built = await build(t, { ...grants, history: { max: 3 } })
  const position = await positionThenLeave(built, 'u1', 'team:1')
  await broadcastN(built, 'team:1', 1, 5)

  const { socket, seen, ready } = await reconnect(built, 'u1', { 'team:1': position })
  t.same(seen.map(([e, message]) => [e, e === 'realtime:resync' ? message : null]), [
    ['realtime:resync', { scope: 'team:1', reason: 'gap' }],
    ['realtime:ready', null]
  ], 'resync before ready, no replay')
  t.equal(ready.positions['team:1']!.seq, 5, 'ready gives the current position to restart from')

  const sub = record(socket)
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1', since: position }),
    { ok: true, scope: 'team:1', replayed: 0, position: { seq: 5 } })
  t.same(sub.map(([e, message]) => [e, message]), [['realtime:resync', { scope: 'team:1', reason: 'gap' }]],
    'subscribe: resync, no replay')
  const twoBack = ready.positions['team:1']!
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1', since: { seq: twoBack.seq - 3, epoch: twoBack.epoch } }),
    { ok: true, replayed: 3 }, 'exactly max events back is still replayable')
})

t.test('an unknown epoch or a since.seq ahead of the log is a resync with reason epoch', async (t) => {
  const built = await build(t, grants)
  await broadcastN(built, 'team:1', 1, 3)
  const head = await positionThenLeave(built, 'u1', 'team:1')
  const cases: Array<[string, Position]> = [
    ['unknown epoch', { seq: 1, epoch: 'another-store.1700000000000' }],
    ['since.seq ahead', { seq: head.seq + 1, epoch: head.epoch }]
  ]
  for (const [label, since] of cases) {
    const { socket, seen } = await reconnect(built, 'u1', { 'team:1': since })
    t.same(seen.map(([e, message]) => [e, e === 'realtime:resync' ? message : null]), [
      ['realtime:resync', { scope: 'team:1', reason: 'epoch' }],
      ['realtime:ready', null]
    ], `handshake, ${label}`)
    const sub = record(socket)
    t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1', since }),
      { ok: true, replayed: 0, position: head }, `subscribe ack, ${label}`)
    t.same(sub.map(([e, message]) => [e, message]), [['realtime:resync', { scope: 'team:1', reason: 'epoch' }]],
      `subscribe, ${label}`)
  }
})

t.test('history: false: positions are {} and any since is a resync with reason unavailable', async (t) => {
  const built = await build(t, { ...grants, history: false })
  const first = await built.connected('u1')
  t.same(first.ready.positions, {})
  first.socket.disconnect()
  const meta = await built.app.broadcast('team:1', 'task:updated', { n: 1 })
  t.match(meta, { scope: 'team:1', stored: false })
  t.notOk('seq' in meta!, 'no seq without history')

  const since = { seq: 0, epoch: 'x.1700000000000' }
  const { socket, seen, ready } = await reconnect(built, 'u1', { 'team:1': since })
  t.same(ready.positions, {})
  t.same(seen.map(([e, message]) => [e, e === 'realtime:resync' ? message : null]), [
    ['realtime:resync', { scope: 'team:1', reason: 'unavailable' }],
    ['realtime:ready', null]
  ])
  const sub = record(socket)
  t.same(await request(socket, 'realtime:subscribe', { scope: 'team:2', since }),
    { ok: true, scope: 'team:2', replayed: 0, position: null })
  t.same(sub.map(([e, message]) => [e, message]), [['realtime:resync', { scope: 'team:2', reason: 'unavailable' }]])
  const plain = record(socket)
  t.same(await request(socket, 'realtime:subscribe', { scope: 'team:2' }),
    { ok: true, scope: 'team:2', replayed: 0, position: null }, 'no since: no resync')
  t.same(plain, [])
})

t.test('since for a scope the user is not granted: nothing replayed, no resync', async (t) => {
  const built = await build(t, grants)
  const team1 = await positionThenLeave(built, 'u1', 'team:1')
  const { socket: insider } = await built.connected('u1')
  const team2 = (await request(insider, 'realtime:subscribe', { scope: 'team:2' })).position as Position
  await broadcastN(built, 'team:1', 1, 3)
  await broadcastN(built, 'team:2', 1, 3)
  await built.app.broadcast('user:u1', 'task:updated', { n: 'private' })

  const since = {
    'team:1': team1,
    'team:2': team2,
    'user:u1': { seq: 0, epoch: team1.epoch },
    'team:3': { seq: 0, epoch: 'bogus' },
    'user:out': { seq: 0, epoch: 'bogus' }
  }
  const { socket, seen, ready } = await reconnect(built, 'out', since)
  t.same(ready.scopes, ['user:out'])
  t.same(seen.map(([e, message]) => [e, e === 'realtime:resync' ? message : null]), [
    ['realtime:resync', { scope: 'user:out', reason: 'epoch' }],
    ['realtime:ready', null]
  ], 'no replay and no resync for scopes not granted (only for its own scope, which it holds)')
  t.same(Object.keys(ready.positions), ['user:out'], 'positions only for granted scopes')

  const sub = record(socket)
  for (const [scope, position, code] of [['team:1', team1, 'FORBIDDEN'], ['team:2', team2, 'FORBIDDEN'], ['user:u1', team1, 'INVALID_SCOPE']] as const) {
    t.match(await request(socket, 'realtime:subscribe', { scope, since: position }),
      { ok: false, error: { code } }, `subscribe ${scope} with since is refused`)
  }
  await flush(socket)
  t.same(sub, [], 'a refused subscribe replays nothing and sends no resync')
})

t.test('malformed since in the handshake is ignored', async (t) => {
  const built = await build(t, grants)
  const position = await positionThenLeave(built, 'u1', 'team:1')
  await broadcastN(built, 'team:1', 1, 2)
  const malformed: unknown[] = [
    'team:1',
    ['team:1', position],
    [position],
    42,
    { 'team:1': 'x' },
    { 'team:1': { seq: -1, epoch: position.epoch } },
    { 'team:1': { seq: 0.5, epoch: position.epoch } },
    { 'team:1': { seq: '0', epoch: position.epoch } },
    { 'team:1': { seq: 0 } },
    { 'team:1': { seq: 0, epoch: '' } },
    { 'team:1': { seq: 0, epoch: 7 } },
    { 'team:1': [0, position.epoch] },
    { 'team:1': null },
    { 'not a scope': position }
  ]
  for (const since of malformed) {
    const { seen, ready } = await reconnect(built, 'u1', since)
    t.same(seen.map(([e]) => e), ['realtime:ready'], `ignored: ${JSON.stringify(since)}`)
    t.equal(ready.positions['team:1']?.seq, 2)
  }
  const mixed = await reconnect(built, 'u1', { 'team:1': position, 'team:2': 'x', '#': position })
  t.same(mixed.seen.map(([e]) => e), ['task:updated', 'task:updated', 'realtime:ready'],
    'the well-formed entry next to malformed ones still replays')
})

t.test('malformed since at subscribe is BAD_REQUEST and joins nothing', async (t) => {
  const built = await build(t, grants)
  const { socket } = await built.connected('u1')
  const { position } = await request(socket, 'realtime:subscribe', { scope: 'team:2' })
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:2' }), { ok: true })
  const malformed: unknown[] = [
    'x',
    null,
    42,
    [position],
    [0, position.epoch],
    { seq: -1, epoch: position.epoch },
    { seq: 1.5, epoch: position.epoch },
    { seq: '1', epoch: position.epoch },
    { seq: Number.MAX_SAFE_INTEGER + 2, epoch: position.epoch },
    { seq: 1 },
    { epoch: position.epoch },
    { seq: 1, epoch: '' },
    { seq: 1, epoch: 'e'.repeat(10_000) }
  ]
  for (const since of malformed) {
    t.match(await request(socket, 'realtime:subscribe', { scope: 'team:2', since }),
      { ok: false, error: { code: 'BAD_REQUEST' } }, JSON.stringify(since).slice(0, 60))
  }
  const seen = record(socket)
  await built.app.broadcast('team:2', 'task:updated', { n: 1 })
  await flush(socket)
  t.same(seen, [], 'still not in team:2')
})

/**
 * Broadcasts to `scope` one event per event-loop turn until `stop()`; resolves with every meta.
 * Real concurrency: the broadcasts interleave with whatever the server does for the client.
 */
function pump (built: Built, scope: string, from: number): { stop: () => Promise<BroadcastMeta[]> } {
  const state = { running: true }
  const metas: BroadcastMeta[] = []
  const done = (async () => {
    for (let n = from; state.running; n++) {
      metas.push((await built.app.broadcast(scope, 'task:updated', { n }))!)
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  return { stop: async () => { state.running = false; await done; return metas } }
}

/** Resolves once `socket` has received `count` more live (not replayed) events. */
function liveEvents (socket: Socket, count: number): Promise<void> {
  return new Promise((resolve) => {
    let left = count
    const on = (_payload: unknown, meta: Meta): void => {
      if (meta.replayed === true) return
      if (--left === 0) {
        socket.off('task:updated', on)
        resolve()
      }
    }
    socket.on('task:updated', on)
  })
}

function checkExactlyOnce (t: Test, seen: Seen, last: number, label: string): void {
  const seqs = named(seen, 'task:updated').map(([, , meta]) => meta.seq!)
  t.same(seqs, Array.from({ length: last }, (_, i) => i + 1), `${label}: every seq once, in order, none missing`)
  const flags = named(seen, 'task:updated').map(([, , meta]) => meta.replayed === true)
  const firstLive = flags.indexOf(false)
  t.ok(firstLive > 0, `${label}: some events replayed, some live`)
  t.notOk(flags.slice(firstLive).includes(true), `${label}: no replay after the first live event`)
}

t.test('events broadcast during a handshake catch-up arrive exactly once, in order', async (t) => {
  const built = await build(t, grants)
  const position = await positionThenLeave(built, 'u1', 'team:1')
  await broadcastN(built, 'team:1', 1, 20)
  const running = pump(built, 'team:1', 21)
  const socket = built.client({ token: tokenFor('u1'), since: { 'team:1': position } })
  const seen = record(socket)
  const enough = liveEvents(socket, 5)
  await waitFor(socket, 'realtime:ready')
  await enough
  const metas = await running.stop()
  await flush(socket)
  const last = metas[metas.length - 1]!.seq!
  checkExactlyOnce(t, seen, last, 'handshake')
  const readyAt = eventIndex(seen, 'realtime:ready')
  t.notOk(seen.slice(readyAt).some(([, , meta]) => meta?.replayed === true), 'no replay after ready')
})

t.test('events broadcast during a subscribe catch-up arrive exactly once, in order', async (t) => {
  const built = await build(t, grants)
  const { socket } = await built.connected('u1')
  const { position } = await request(socket, 'realtime:subscribe', { scope: 'team:2' })
  await request(socket, 'realtime:unsubscribe', { scope: 'team:2' })
  await broadcastN(built, 'team:2', 1, 20)
  const running = pump(built, 'team:2', 21)
  const seen = record(socket)
  const enough = liveEvents(socket, 5)
  const ack = await request(socket, 'realtime:subscribe', { scope: 'team:2', since: position })
  t.equal(ack.ok, true)
  t.ok(ack.replayed >= 20, 'at least the events broadcast before the subscribe are replayed')
  await enough
  const metas = await running.stop()
  await flush(socket)
  checkExactlyOnce(t, seen, metas[metas.length - 1]!.seq!, 'subscribe')
})

for (const snapshot of ['before', 'after'] as const) {
  t.test(`with a store that answers slowly (log read ${snapshot} a live broadcast), the wire carries every seq once, replay first`, async (t) => {
    // A store with latency (like Redis): a live broadcast lands while the log is being read.
    // Whether or not the read saw it, the socket must get seq 1, 2, 3, 4 once each, the replay first.
    const inner = new MemoryHistoryStore()
    t.teardown(() => inner.close())
    let reading!: () => void
    const readStarted = new Promise<void>((resolve) => { reading = resolve })
    let release!: () => void
    const gate = new Promise<void>((resolve) => { release = resolve })
    let slowReads = false
    const slow: HistoryStore = {
      kind: 'slow-memory',
      append: (scope, entry) => inner.append(scope, entry),
      position: (scope) => inner.position(scope),
      read: async (scope, since) => {
        if (!slowReads) return inner.read(scope, since)
        const early = snapshot === 'before' ? inner.read(scope, since) : null
        reading()
        await gate
        return early ?? inner.read(scope, since)
      }
    }
    const built = await build(t, { ...grants, history: { store: slow } })
    const position = await positionThenLeave(built, 'u1', 'team:1')
    await broadcastN(built, 'team:1', 1, 3)
    slowReads = true
    const socket = built.client({ token: tokenFor('u1'), since: { 'team:1': position } })
    const seen = record(socket)
    const ready = waitFor(socket, 'realtime:ready')
    await readStarted
    await built.app.broadcast('team:1', 'task:updated', { n: 4 })
    release()
    await ready
    await built.app.broadcast('team:1', 'task:updated', { n: 5 })
    await flush(socket)
    const events = named(seen, 'task:updated')
    t.same(events.map(([, , meta]) => meta.seq), [1, 2, 3, 4, 5], 'every seq once, in order, on the wire')
    const replayed = events.filter(([, , meta]) => meta.replayed === true).map(([, , meta]) => meta.seq)
    t.same(replayed, snapshot === 'before' ? [1, 2, 3] : [1, 2, 3, 4], 'the replay is what the read saw; the rest came live, after it')
  })
}

t.test('many sockets replaying the same events each get all of them, binary ones too, and outgoing listeners see them', async (t) => {
  const outgoing: string[] = []
  const built = await build(t, grants, {
    after: (app) => {
      app.io.on('connection', (socket) => {
        socket.onAnyOutgoing((event: string, _payload: unknown, meta: { replayed?: true, seq?: number }) => {
          if (meta?.replayed === true) outgoing.push(`${socket.data.userId}:${event}:${meta.seq}`)
        })
      })
    }
  })
  const position = await positionThenLeave(built, 'u1', 'team:1')
  await built.app.broadcast('team:1', 'task:updated', { n: 1 })
  await built.app.broadcast('team:1', 'task:file', { name: 'a.bin', bytes: Buffer.from([1, 2, 3]) })
  await built.app.broadcast('team:1', 'task:updated', { n: 3 }, { by: 'u9' })
  const users = ['u1', 'u1', 'u1', 'u1', 'u1']
  const sockets = users.map((sub) => built.client({ token: tokenFor(sub), since: { 'team:1': position } }))
  const seen = sockets.map(record)
  await Promise.all(sockets.map(async (socket) => await waitFor(socket, 'realtime:ready')))
  for (const [i, events] of seen.entries()) {
    const replayed = events.filter(([event]) => event.startsWith('task:'))
    t.same(replayed.map(([event, , meta]) => [event, meta.seq, meta.replayed]), [
      ['task:updated', 1, true], ['task:file', 2, true], ['task:updated', 3, true]
    ], `socket ${i}: every event once, in order, marked replayed`)
    const file = replayed[1]![1] as { name: string, bytes: ArrayBuffer | Uint8Array }
    t.same([...new Uint8Array(file.bytes)], [1, 2, 3], `socket ${i}: the binary payload intact`)
    t.equal((replayed[2]![2] as { by?: string }).by, 'u9')
  }
  t.equal(outgoing.length, users.length * 3, 'the app\'s outgoing listeners saw every replayed event')
})

for (const store of ['memory', 'redis'] as const) {
  t.test(`${store} history: the seq-0 position of an empty scope is replayed the scope's first events after a reconnect, never a resync`, async (t) => {
    const built = await build(t, { ...grants, ...(store === 'redis' ? { redis: redisOptions(t) } : {}) })
    const empty = await positionThenLeave(built, 'u1', 'team:1')
    t.equal(empty.seq, 0, 'the scope has no events yet')
    // Epochs are made from the store's millisecond clock: let it move, so the first event's log
    // really begins after the empty position was taken.
    await sleep(5)
    const first = await built.app.broadcast('team:1', 'task:created', { n: 1 })
    await built.app.broadcast('team:1', 'task:created', { n: 2 })
    t.not(first?.epoch, empty.epoch, 'the first event starts a log of its own epoch')
    const { seen, ready } = await reconnect(built, 'u1', { 'team:1': empty })
    t.same(named(seen, 'task:created').map(([, payload, meta]) => [payload, meta.seq, meta.replayed]), [
      [{ n: 1 }, 1, true], [{ n: 2 }, 2, true]
    ], 'both events replayed, in order')
    t.same(named(seen, 'realtime:resync'), [], 'no resync')
    t.same(ready.positions['team:1'], { seq: 2, epoch: first?.epoch }, 'ready carries the log\'s own position')
  })
}
