import t from 'tap'
import { Type } from 'typebox'
import Fastify from 'fastify'
import realtime from '../src/index.js'
import { SECRET, build, collect, flush, gatedRooms, processFaults, refusal, request, tokenFor, waitFor } from './helper.js'

const faults = processFaults()

/** Every room of every socket on the server, its own id room included, so a room joined wrongly shows. */
function serverRooms (app: { io: { of: (n: string) => { sockets: Map<string, { id: string, rooms: Set<string> }> } } }): string[][] {
  return [...app.io.of('/').sockets.values()].map((s) => [...s.rooms].map((r) => r === s.id ? '<own id>' : r).sort())
}

t.test('connect joins user scope and granted rooms, skipping what cannot be granted', async (t) => {
  const { app, connected, client } = await build(t, {
    rooms: (user) => user.id === 'boom' ? Promise.reject(new Error('db down')) : ['team:1', 'user:someone-else', 'bad scope', 'team:2', 'team:1']
  })
  const { ready } = await connected('u1')
  t.same(ready.scopes.sort(), ['team:1', 'team:2', 'user:u1'])
  t.same(serverRooms(app), [['<own id>', 'team:1', 'team:2', 'user:u1']], 'exactly its own id room, its user scope and the granted scopes')
  t.equal((await refusal(client({ token: tokenFor('boom') }))).data?.code, 'UNAVAILABLE')
})

t.test('subscribe outcomes', async (t) => {
  const { app, connected } = await build(t, {
    rooms: () => ['team:1'],
    canSubscribe: (user, scope) => {
      if (scope === 'flaky:1') throw new Error('lookup failed')
      return user.id === 'admin' && scope === 'incidents:all'
    },
    limits: { scopesPerSocket: 4 }
  })
  const { socket } = await connected('u1')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1' }), { ok: true, scope: 'team:1', replayed: 0, position: { seq: 0 } })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'incidents:all' }), { ok: false, error: { code: 'FORBIDDEN' } })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'flaky:1' }), { ok: false, error: { code: 'UNAVAILABLE' } })
  const before = serverRooms(app)
  const bad: unknown[] = [{ scope: socket.id }, { scope: '#' }, { scope: '*' }, { scope: 'team 1' }, { scope: 'team:é' },
    { scope: 'x:'.padEnd(10_000, 'a') }, { scope: ['team:1'] }, { scope: { a: 1 } }, { scope: null }, null, 42, 'team:1', []]
  for (const message of bad) {
    t.match(await request(socket, 'realtime:subscribe', message), { ok: false, error: { code: 'INVALID_SCOPE' } }, JSON.stringify(message)?.slice(0, 40))
  }
  t.match(await request(socket, 'realtime:subscribe', { scope: 'user:u2' }), { ok: false, error: { code: 'INVALID_SCOPE' } }, 'another user\'s scope')
  t.same(serverRooms(app), before, 'refused subscribes joined nothing')

  const { socket: admin } = await connected('admin')
  t.match(await request(admin, 'realtime:subscribe', { scope: 'incidents:all' }), { ok: true })
  t.match(await request(admin, 'realtime:subscribe', { scope: 'team:1' }), { ok: true })
  // user:admin, team:1, incidents:all held; the cap is 4
  t.match(await request(admin, 'realtime:subscribe', { scope: 'incidents:all' }), { ok: true }, 'a held scope does not count twice')

  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:1' }), { ok: true, scope: 'team:1' })
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'user:u1' }), { ok: false, error: { code: 'FORBIDDEN' } })
  const got = collect(socket, 'ping')
  await app.broadcast('team:1', 'ping', 1)
  await flush(socket)
  t.equal(got.length, 0, 'unsubscribed socket gets nothing')
})

t.test('scope cap and rate limit', async (t) => {
  const { connected } = await build(t, {
    canSubscribe: () => true,
    limits: { scopesPerSocket: 3 },
    rateLimit: { max: 6, windowMs: 60_000 }
  })
  const { socket } = await connected('u1')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'a:1' }), { ok: true })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'a:2' }), { ok: true })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'a:3' }), { ok: false, error: { code: 'LIMIT' } })
  socket.emit('realtime:subscribe', { scope: 'a:1' }) // no ack: answered into the void
  socket.emit('realtime:subscribe', { scope: 'a:1' }, 'not a function')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'a:1' }), { ok: true }, 'still answering')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'a:1' }), { ok: false, error: { code: 'RATE_LIMITED' } })
  t.ok(socket.connected)
})

t.test('membership changes: leave, re-check at subscribe, join on every socket', async (t) => {
  const members = new Map<string, string[]>([['u1', ['team:1']], ['u2', ['team:1']]])
  const { app, connected } = await build(t, { rooms: (user) => members.get(String(user.id)) ?? [] })
  const a = await connected('u1')
  const a2 = await connected('u1')
  const b = await connected('u2')
  const gotA = collect(a.socket, 'note')
  const gotB = collect(b.socket, 'note')
  members.set('u1', [])
  await app.realtime.leave('u1', 'team:1')
  await app.broadcast('team:1', 'note', 'after leave')
  await app.broadcast('user:u1', 'fence', null)
  await waitFor(a.socket, 'fence')
  await flush(b.socket)
  t.equal(gotA.length, 0, 'removed member gets nothing')
  t.equal(gotB.length, 1, 'remaining member still does')
  t.match(await request(a.socket, 'realtime:subscribe', { scope: 'team:1' }), { ok: false, error: { code: 'FORBIDDEN' } })

  await app.realtime.join('u1', 'team:9')
  const both = Promise.all([waitFor(a.socket, 'nine'), waitFor(a2.socket, 'nine')])
  await app.broadcast('team:9', 'nine', 9)
  t.same((await both).map(([p]) => p), [9, 9])
  await t.rejects(app.realtime.join('u1', 'user:u2'), { code: 'FST_REALTIME_INVALID_SCOPE' })
  await t.rejects(app.realtime.leave('u1', 'nope'), { code: 'FST_REALTIME_INVALID_SCOPE' })
  await t.rejects(app.realtime.join('has space', 'team:1'), { code: 'FST_REALTIME_INVALID_USER_ID' })
})

t.test('a team-B member never receives team-A events', async (t) => {
  const { app, connected } = await build(t, { rooms: (user) => [`team:${user.id === 'a' ? 'A' : 'B'}`] })
  const b = await connected('b')
  const seen: string[] = []
  b.socket.onAny((event: string) => { seen.push(event) })
  for (let i = 0; i < 5; i++) await app.broadcast('team:A', 'a:event', i)
  await app.broadcast('team:B', 'b:event', 'fence')
  await waitFor(b.socket, 'b:event')
  t.same(seen, ['b:event'])
})

t.test('broadcast delivers payload and meta; options', async (t) => {
  const { app, connected } = await build(t, { rooms: () => ['team:1', 'team:2'] })
  const one = await connected('u1')
  const two = await connected('u2')
  const got = collect(one.socket, 'task:created')
  const payload = { id: 7, title: 'Ünïcødé ✓', nested: { list: [1, 2.5, null, true] } }
  const m1 = await app.broadcast('team:1', 'task:created', payload, { by: 'u9' })
  const m2 = await app.broadcast('team:1', 'task:created', payload)
  const other = await app.broadcast('team:2', 'task:created', payload)
  await flush(one.socket)
  t.same(got.map(([p]) => p), [payload, payload, payload])
  t.match(got[0]![1], { id: m1!.id, scope: 'team:1', seq: 1, epoch: m1!.epoch, at: m1!.at, by: 'u9' })
  t.notOk('stored' in got[0]![1], 'stored stays server-side')
  t.match(m1, { stored: true, seq: 1 })
  t.equal(m2!.seq, 2)
  t.equal(other!.seq, 1, 'seq per scope')

  const skipped = collect(one.socket, 'echo')
  const seenByTwo = waitFor(two.socket, 'echo')
  await app.broadcast('team:1', 'echo', 1, { except: one.socket.id })
  await seenByTwo
  await flush(one.socket)
  t.equal(skipped.length, 0, 'except skips that socket')

  const volatileGot = waitFor<[unknown, Record<string, unknown>]>(one.socket, 'typing')
  const vm = await app.broadcast('team:1', 'typing', { who: 'u2' }, { volatile: true })
  const [, vmeta] = await volatileGot
  t.notOk('seq' in vmeta)
  t.match(vm, { stored: false })

  const dup = collect(one.socket, 'once')
  const first = await app.broadcast('team:1', 'once', 1, { idempotencyKey: 'k1' })
  const again = await app.broadcast('team:1', 'once', 1, { idempotencyKey: 'k1' })
  await flush(one.socket)
  t.equal(dup.length, 1)
  t.equal(again!.id, first!.id)
})

t.test('programming errors reject with codes; nothing emitted or stored', async (t) => {
  const { app, connected } = await build(t, {
    rooms: () => ['team:1'],
    events: { 'task:created': Type.Object({ id: Type.Integer(), title: Type.String() }) }
  })
  const { socket } = await connected('u1')
  const seen: string[] = []
  socket.onAny((event: string) => { seen.push(event) })
  await t.rejects(app.broadcast('bad scope', 'x', 1), { code: 'FST_REALTIME_INVALID_SCOPE' })
  for (const name of ['realtime:ready', 'realtime:anything', 'connect', 'disconnect', 'connect_error', 'newListener', '']) {
    await t.rejects(app.broadcast('team:1', name, 1), { code: 'FST_REALTIME_INVALID_EVENT' }, name)
  }
  await t.rejects(app.broadcast('team:1', 'task:created', { id: 'x', title: 't' }), { code: 'FST_REALTIME_INVALID_PAYLOAD', message: /\/id/ })
  await t.rejects(app.broadcast('team:1', 'x', 1, { by: [] as never }), { code: 'FST_REALTIME_INVALID_BROADCAST_OPTION' })
  await flush(socket)
  t.same(seen, [])
  t.match(await app.realtime.history!.position('team:1'), { seq: 0 })
  t.match(await app.broadcast('team:1', 'task:created', { id: 1, title: 't' }), { seq: 1 })
})

t.test('broadcast before ready and after close resolves null', async (t) => {
  const app = Fastify()
  await app.register(realtime, { auth: { secret: SECRET } })
  t.equal(await app.broadcast('team:1', 'x', 1), null)
  await app.ready()
  await app.close()
  t.equal(await app.broadcast('team:1', 'x', 1), null)
})

t.test('a route handler broadcasts', async (t) => {
  const { app, connected } = await build(t, { rooms: () => ['board:1'] }, {
    after: (app) => {
      app.post('/tasks', async () => await app.broadcast('board:1', 'task:created', { id: 1 }, { by: 'route' }))
    }
  })
  const { socket } = await connected('u1')
  const got = waitFor<[unknown, { by: string }]>(socket, 'task:created')
  const res = await app.inject({ method: 'POST', url: '/tasks' })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { seq: 1, stored: true })
  t.equal((await got)[1].by, 'route')
})

t.test('oversized frame closes only that socket', async (t) => {
  const { app, connected } = await build(t, { rooms: () => ['team:1'], io: { maxHttpBufferSize: 1000 } })
  const big = await connected('u1')
  const fine = await connected('u2')
  const gone = waitFor<[string]>(big.socket, 'disconnect')
  big.socket.emit('realtime:subscribe', { scope: 'team:1', pad: 'x'.repeat(5000) })
  t.equal((await gone)[0], 'transport close')
  t.match(await request(fine.socket, 'realtime:subscribe', { scope: 'team:1' }), { ok: true })
  t.equal((await app.realtime.stats()).node.connections, 1)
})

t.test('except: the socket left out is told its seq moved on, nothing else', async (t) => {
  const { app, connected } = await build(t, { rooms: () => ['team:1'] })
  const one = await connected('u1')
  const two = await connected('u2')
  const oneSees: Array<[string, unknown]> = []
  one.socket.onAny((event: string, payload: unknown) => { oneSees.push([event, payload]) })
  const twoSees = collect(two.socket, 'realtime:skip')
  const meta = await app.broadcast('team:1', 'task:moved', { id: 1 }, { except: one.socket.id })
  await flush(one.socket)
  await flush(two.socket)
  t.same(oneSees, [['realtime:skip', { scope: 'team:1', seq: meta!.seq, epoch: meta!.epoch }]])
  t.same(twoSees, [], 'the others get the event itself, no skip')
  const volatile = collect(one.socket, 'realtime:skip')
  await app.broadcast('team:1', 'typing', 1, { except: one.socket.id, volatile: true })
  await flush(one.socket)
  t.same(volatile, [], 'no skip for an event outside the log')
})

t.test('a payload that cannot be encoded rejects with FST_REALTIME_INVALID_PAYLOAD; its seq is skipped, never a hole', async (t) => {
  const { app, connected, client } = await build(t, { rooms: () => ['team:1'] })
  const { socket, ready } = await connected('u1')
  const skips = collect(socket, 'realtime:skip')
  const cyclic: Record<string, unknown> = {}
  cyclic.self = cyclic
  await t.rejects(app.broadcast('team:1', 'x', { n: 10n }), { code: 'FST_REALTIME_INVALID_PAYLOAD', message: /serialised/ })
  await t.rejects(app.broadcast('team:1', 'x', cyclic), { code: 'FST_REALTIME_INVALID_PAYLOAD' })
  const after = await app.broadcast('team:1', 'x', 'fine')
  await flush(socket)
  t.same(skips.map(([m]) => (m as { seq: number }).seq), [1, 2], 'live clients are told seq 1 and 2 carry nothing')
  t.equal(after!.seq, 3)
  // a client catching up from before them gets the same story: skips, then the event
  const later = client({ token: tokenFor('u1'), since: ready.positions })
  const seen: Array<[string, unknown]> = []
  later.onAny((event: string, payload: unknown) => { if (event !== 'realtime:ready') seen.push([event, payload]) })
  await waitFor(later, 'realtime:ready')
  t.same(seen.map(([event]) => event), ['realtime:skip', 'realtime:skip', 'x'])
})

t.test('broadcast never throws synchronously: null options, bad types, all as rejections', async (t) => {
  const { app } = await build(t, { rooms: () => ['team:1'] })
  t.match(await app.broadcast('team:1', 'x', 1, null as never), { seq: 1 }, 'null options are no options')
  const attempts: Array<() => Promise<unknown>> = [
    () => app.broadcast(42 as never, 'x', 1),
    () => app.broadcast('team:1', 42 as never, 1 as never),
    () => app.broadcast('team:1', 'x', 1, { except: 5 } as never),
    () => app.broadcast('team:1', 'x', 1, 'nope' as never)
  ]
  for (const attempt of attempts) {
    let result: Promise<unknown> | undefined
    t.doesNotThrow(() => { result = attempt() })
    await t.rejects(result!, { code: /^FST_REALTIME_/ })
  }
})

t.test('rooms(user) at connect is capped at limits.scopesPerSocket', async (t) => {
  const many = Array.from({ length: 10 }, (_, i) => `team:${i}`)
  const { connected } = await build(t, { rooms: () => many, limits: { scopesPerSocket: 4 } })
  const { ready } = await connected('u1')
  t.same(ready.scopes, ['user:u1', 'team:0', 'team:1', 'team:2'])
})

t.test('a leave() that lands while a subscribe waits on rooms() is not lost', async (t) => {
  const members = new Set(['u1'])
  const gated = gatedRooms(members)
  const { app, connected } = await build(t, { rooms: gated.rooms })
  const { socket } = await connected('u1')
  await request(socket, 'realtime:unsubscribe', { scope: 'team:1' })
  const paused = gated.pause()
  const ack = request(socket, 'realtime:subscribe', { scope: 'team:1' })
  await paused.asked
  // the lookup has answered "member" and waits; meanwhile the member is removed
  members.delete('u1')
  await app.realtime.leave('u1', 'team:1')
  paused.release()
  t.match(await ack, { ok: false, error: { code: 'FORBIDDEN' } }, 'the answer given before the leave is not used')
  const got = collect(socket, 'after')
  await app.broadcast('team:1', 'after', 1)
  await flush(socket)
  t.same(got, [], 'not in the scope')
})

t.test('a leave() or disconnectUser() that lands during the handshake is not lost', async (t) => {
  const members = new Set(['u1', 'u2'])
  const gated = gatedRooms(members)
  const { app, client } = await build(t, { rooms: gated.rooms })
  for (const [userId, change] of [['u1', 'leave'], ['u2', 'disconnect']] as const) {
    const paused = gated.pause()
    const socket = client({ token: tokenFor(userId) })
    const outcome = new Promise<unknown>((resolve) => {
      socket.once('realtime:ready', (ready: { scopes: string[] }) => resolve(ready.scopes))
      socket.once('connect_error', (err: Error & { data?: { code?: string } }) => resolve(err.data?.code))
    })
    await paused.asked
    members.delete(userId)
    if (change === 'leave') await app.realtime.leave(userId, 'team:1')
    else await app.realtime.disconnectUser(userId)
    paused.release()
    if (change === 'leave') t.same(await outcome, [`user:${userId}`], 'asked again: joined without the scope it lost')
    else t.equal(await outcome, 'UNAVAILABLE', 'a user disconnected during the handshake is refused (retry decides again)')
  }
})

t.test('a disconnectUser() that lands while auth.user is looking the user up refuses the handshake', async (t) => {
  let release!: () => void
  let asked!: () => void
  const lookup = new Promise<void>((resolve) => { asked = resolve })
  const gate = new Promise<void>((resolve) => { release = resolve })
  const { app, client } = await build(t, {
    rooms: () => ['team:1'],
    auth: {
      user: async (claims: { sub?: unknown }) => {
        asked()
        await gate
        return { id: String(claims.sub) }
      }
    }
  })
  const socket = client({ token: tokenFor('u1') })
  const outcome = new Promise<unknown>((resolve) => {
    socket.once('realtime:ready', () => resolve('ready'))
    socket.once('connect_error', (err: Error & { data?: { code?: string } }) => resolve(err.data?.code))
  })
  await lookup
  await app.realtime.disconnectUser('u1')
  release()
  t.equal(await outcome, 'UNAVAILABLE', 'refused: the user was disconnected before the socket could join')
  t.equal(app.io.of('/').sockets.size, 0, 'no socket of that user is left')

  // a later handshake of the same user goes through
  const again = client({ token: tokenFor('u1') })
  await waitFor(again, 'realtime:ready')
  t.equal(app.io.of('/').sockets.size, 1)
})

t.test('no unhandled rejections', async (t) => {
  t.same(await faults.since(), [])
})
