// Presence on one node (the memory store): who is in a scope, from every way a socket comes and
// goes, coalesced into diffs on the plugin's clock, and what others may see of a user.
import t from 'tap'
import type { Socket } from 'socket.io-client'
import Fastify from 'fastify'
import realtime, { type PresenceDiff } from '../src/index.js'
import { ManualClock } from './clock.js'
import type { FastifyInstance } from 'fastify'
import { SECRET, build, diffsOf, flush, processFaults, request, tokenFor, until, waitFor, within, type Teardown } from './helper.js'

const faults = processFaults()

/** Disconnects `sockets` and resolves once the server has let them go (their rooms left). */
async function gone (app: FastifyInstance, ...sockets: Socket[]): Promise<void> {
  const ids = sockets.map((socket) => socket.id)
  for (const socket of sockets) socket.disconnect()
  const local = app.io.of('/').sockets
  await until(() => ids.every((id) => id === undefined || !local.has(id)), 'the server let the sockets go')
}

/** Moves the clock past the coalescing interval and resolves with the next diff `socket` gets. */
async function nextDiff (clock: ManualClock, socket: Socket, ms = 1000): Promise<PresenceDiff> {
  const next = waitFor<[PresenceDiff]>(socket, 'realtime:presence_diff')
  clock.advance(ms)
  const [diff] = await within(next, 10_000, 'a presence diff')
  return diff
}

/** A one-node app with presence on, its users granted `team:1` (and `team:2` for u3), on a hand-moved clock. */
async function presenceApp (t: Teardown, presence: unknown = true, more: Record<string, unknown> = {}) {
  const clock = new ManualClock()
  const rooms: Record<string, string[]> = { u1: ['team:1'], u2: ['team:1'], u3: ['team:1', 'team:2'], u4: [] }
  const built = await build(t, {
    rooms: (user) => rooms[String(user.id)] ?? ['team:1'],
    canSubscribe: (_user, scope) => scope === 'team:9',
    presence: presence as boolean,
    clock,
    ...more
  })
  return { ...built, clock, rooms }
}

t.test('a user counts once however many tabs, and leaves with the last one', async (t) => {
  const { connected, clock, app } = await presenceApp(t)
  const a = await connected('u1')
  const seen = diffsOf(a.socket)
  const first = await nextDiff(clock, a.socket)
  t.match(first, { scope: 'team:1', joins: [{ userId: 'u1', info: { id: 'u1' } }], leaves: [], count: 1, fromEmpty: true })
  t.type(first.joins[0]!.since, 'number')

  const tab2 = await connected('u1')
  const b = await connected('u2')
  const second = await nextDiff(clock, a.socket)
  t.same(second.joins.map((j) => j.userId), ['u2'], "u1's second tab is not a join")
  t.same([second.count, second.version], [2, first.version + 1])
  t.notOk('fromEmpty' in second)

  const answer = await request(b.socket, 'realtime:presence', { scope: 'team:1' })
  t.match(answer, { ok: true, scope: 'team:1', count: 2, truncated: false, version: second.version })
  t.same(answer.users.map((u: any) => [u.userId, u.connections, u.info]), [['u1', 2, { id: 'u1' }], ['u2', 1, { id: 'u2' }]],
    'longest present first, with their connections')
  t.same(await app.realtime.presence('team:1'), { scope: 'team:1', count: 2, truncated: false, users: answer.users })

  await gone(app, tab2.socket)
  clock.advance(1000)
  await flush(a.socket)
  t.equal(seen.length, 2, 'one of two tabs closing is no leave')
  t.same((await app.realtime.presence('team:1')).users.map((u) => u.connections), [1, 1])

  await gone(app, a.socket)
  const leave = await nextDiff(clock, b.socket)
  t.match(leave, { joins: [], leaves: ['u1'], count: 1, version: second.version + 1 })
  await gone(app, b.socket)
  clock.advance(1000)
  await t.resolveMatch(app.realtime.presence('team:1'), { count: 0, users: [], truncated: false })
  t.same(await faults.since(), [])
})

t.test('every way out is a leave: unsubscribe, leave(), disconnectUser()', async (t) => {
  const { connected, clock, app } = await presenceApp(t)
  const watcher = await connected('u3')
  await nextDiff(clock, watcher.socket)
  const u1 = await connected('u1')
  await connected('u2')
  const u4 = await connected('u4')
  t.match(await request(u4.socket, 'realtime:subscribe', { scope: 'team:9' }), { ok: true })
  t.match(await request(watcher.socket, 'realtime:subscribe', { scope: 'team:9' }), { ok: true })
  t.match(await nextDiff(clock, watcher.socket), { scope: 'team:1', count: 3 })

  t.match(await request(u1.socket, 'realtime:unsubscribe', { scope: 'team:1' }), { ok: true })
  t.match(await nextDiff(clock, watcher.socket), { scope: 'team:1', leaves: ['u1'], count: 2 }, 'unsubscribe')

  await app.realtime.leave('u2', 'team:1')
  t.match(await nextDiff(clock, watcher.socket), { scope: 'team:1', leaves: ['u2'], count: 1 }, 'leave()')

  await app.realtime.join('u2', 'team:1')
  t.match(await nextDiff(clock, watcher.socket), { scope: 'team:1', joins: [{ userId: 'u2' }], count: 2 }, 'join() is a join')

  await app.realtime.disconnectUser('u2')
  t.match(await nextDiff(clock, watcher.socket), { scope: 'team:1', leaves: ['u2'], count: 1 }, 'disconnectUser()')

  // team:9 was subscribed to (canSubscribe): tracked like any other scope
  t.match(await app.realtime.presence('team:9'), { count: 2 })
  await gone(app, u4.socket)
  t.match(await nextDiff(clock, watcher.socket), { scope: 'team:9', leaves: ['u4'], count: 1 })
  t.same(await faults.since(), [])
})

t.test('a reconnect storm is one diff', async (t) => {
  const { app, connected, client, clock } = await presenceApp(t, { maxListed: 1000 }, { limits: { handshakesPerAddress: false } })
  const watcher = await connected('u1')
  const seen = diffsOf(watcher.socket)
  const sockets: Socket[] = []
  for (let batch = 0; batch < 5; batch++) {
    sockets.push(...await Promise.all(Array.from({ length: 100 }, async (_, i) => {
      const socket = client({ token: tokenFor(`storm-${batch}-${i}`) })
      await waitFor(socket, 'realtime:ready')
      return socket
    })))
  }
  const diff = await nextDiff(clock, watcher.socket)
  await flush(watcher.socket)
  t.equal(seen.length, 1, '501 joins, one diff')
  t.equal(diff.count, 501)
  t.equal(diff.joins.length, 501)
  await gone(app, ...sockets)
  const leaves = await nextDiff(clock, watcher.socket)
  t.same([leaves.leaves.length, leaves.count, seen.length], [500, 1, 2], 'and 500 leaves are another')
})

t.test('what others see of a user is presence.user(user), never claims', async (t) => {
  const { connected, clock } = await presenceApp(t, {
    user: (user: { id: string, name?: string }) => user.id === 'u2' ? 'not an object' : { id: user.id, name: user.name ?? 'Anonymous' }
  }, { auth: { user: (claims: Record<string, unknown>) => ({ ...claims, id: claims.sub, email: `${String(claims.sub)}@example.com`, name: 'Ann' }) } })
  const u1 = await connected('u1')
  const diff = await nextDiff(clock, u1.socket)
  t.same(diff.joins.map(({ userId, info }) => ({ userId, info })), [{ userId: 'u1', info: { id: 'u1', name: 'Ann' } }])
  const u2 = await connected('u2')
  t.same((await nextDiff(clock, u1.socket)).joins[0]?.info, { id: 'u2' }, 'an answer that is not an object falls back to { id }')
  const answer = await request(u2.socket, 'realtime:presence', { scope: 'team:1' })
  const wire = JSON.stringify(answer)
  for (const secret of ['email', 'example.com', 'exp', 'iat', 'sub', tokenFor('u1').split('.')[0]!]) {
    t.notOk(wire.includes(secret), `no ${secret} on the wire`)
  }
  t.same(Object.keys(answer.users[0]).sort(), ['connections', 'info', 'since', 'userId'])
})

t.test('maxListed caps the list, count stays exact', async (t) => {
  const { connected, clock, app } = await presenceApp(t, { maxListed: 2 })
  const sockets = []
  for (const user of ['u1', 'u2', 'u3', 'u5']) sockets.push((await connected(user)).socket)
  const diff = await nextDiff(clock, sockets[0]!)
  t.same([diff.joins.length, diff.count], [2, 4], 'a diff lists at most maxListed joins')
  t.match(await app.realtime.presence('team:1'), { count: 4, truncated: true, users: [{ userId: 'u1' }, { userId: 'u2' }] })
  const none = await presenceApp(t, { maxListed: 0 })
  const only = await none.connected('u1')
  t.match(await nextDiff(none.clock, only.socket), { joins: [], count: 1 })
  t.match(await request(only.socket, 'realtime:presence', { scope: 'team:1' }), { ok: true, count: 1, users: [], truncated: true })
})

t.test('realtime:presence answers members only', async (t) => {
  const { connected, clock } = await presenceApp(t, { kinds: ['team'] })
  const { socket } = await connected('u1')
  clock.advance(1000)
  t.match(await request(socket, 'realtime:presence', { scope: 'team:1' }), { ok: true, count: 1 })
  t.match(await request(socket, 'realtime:presence', { scope: 'team:2' }), { ok: false, error: { code: 'FORBIDDEN' } }, 'not a member')
  t.match(await request(socket, 'realtime:presence', { scope: 'team:9' }), { ok: false, error: { code: 'FORBIDDEN' } }, 'may subscribe, has not')
  t.match(await request(socket, 'realtime:presence', { scope: 'user:u1' }), { ok: false, error: { code: 'BAD_REQUEST' } }, 'a kind not tracked')
  for (const bad of [{ scope: 'nope' }, { scope: 42 }, null, 'team:1', {}]) {
    t.match(await request(socket, 'realtime:presence', bad), { ok: false, error: { code: 'INVALID_SCOPE' } }, JSON.stringify(bad))
  }
  socket.emit('realtime:presence', { scope: 'team:1' }) // no ack: nothing to answer, nothing breaks
  t.ok(socket.connected)

  const off = await presenceApp(t, false)
  const other = await off.connected('u1')
  t.match(await request(other.socket, 'realtime:presence', { scope: 'team:1' }), { ok: false, error: { code: 'BAD_REQUEST' } }, 'presence off')
  const seen = diffsOf(other.socket)
  off.clock.advance(5000)
  await flush(other.socket)
  t.same(seen, [], 'and no diffs')
})

t.test('realtime.presence(scope) rejects what it cannot answer', async (t) => {
  const { app } = await presenceApp(t, { kinds: ['team'] })
  await t.rejects(app.realtime.presence('nope'), { code: 'FST_REALTIME_INVALID_SCOPE' })
  await t.rejects(app.realtime.presence('incident:1'), { code: 'FST_REALTIME_PRESENCE_UNTRACKED' })
  t.match(await app.realtime.presence('team:404'), { scope: 'team:404', count: 0, users: [], truncated: false })
  const off = await presenceApp(t, false)
  await t.rejects(off.app.realtime.presence('team:1'), { code: 'FST_REALTIME_PRESENCE_UNTRACKED', message: /presence option is off/ })
})

t.test('presence options are validated at register', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ kinds: ['Team'] }, /presence\.kinds\.0/],
    [{ kinds: [] }, /presence\.kinds/],
    [{ maxListed: -1 }, /presence\.maxListed/],
    [{ intervalMs: 0 }, /presence\.intervalMs/],
    [{ user: 'id' }, /presence\.user/],
    [{ every: 1 }, /presence.*unknown option "every"/],
    ['yes', /presence: must be true, false or \{ kinds, user, maxListed, intervalMs \}/]
  ]
  for (const [presence, message] of bad) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(realtime, { auth: { secret: SECRET }, presence: presence as boolean }).ready() },
      { code: 'FST_REALTIME_INVALID_OPTION', message }, JSON.stringify(presence))
  }
  const options = { presence: { kinds: ['team'], maxListed: 5 } }
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(realtime, { auth: { secret: SECRET }, ...options }).ready()
  t.same(options, { presence: { kinds: ['team'], maxListed: 5 } }, 'the caller\'s object is left as it was')
})
