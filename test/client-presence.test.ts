// The client's presence: the pure list (diffs in version order, no server), then the real client
// against a real server with presence on, its diffs coalesced on a clock the test moves.
import t from 'tap'
import { PresenceList } from '../src/client/presence-list.js'
import type { PresenceState } from '../src/client/index.js'
import type { PresenceDiff } from '../src/protocol.js'
import { dropTransport, incoming, open, ready, send, serverSocket, until } from './client-helper.js'
import { ManualClock } from './clock.js'
import { build, processFaults, tokenFor } from './helper.js'

const faults = processFaults()

const join = (userId: string, since = 1): { userId: string, info: { id: string }, since: number } => ({ userId, info: { id: userId }, since })
const diff = (version: number, joins: string[], leaves: string[], count: number, fromEmpty = false): PresenceDiff =>
  ({ scope: 'team:1', joins: joins.map((id) => join(id)), leaves, count, version, ...(fromEmpty ? { fromEmpty: true as const } : {}) })
const ids = (list: PresenceList): string[] => list.state().users.map((u) => u.userId)

t.test('the list: diffs in version order, held until the missing one, older ones dropped', async (t) => {
  const list = new PresenceList('team:1')
  t.equal(list.apply(diff(11, ['b'], [], 2)), 'ahead', 'before a snapshot, every diff waits')
  t.equal(list.snapshot({ version: 10, count: 1, users: [join('a')] }), 'applied', 'the held diff follows the snapshot')
  t.same([ids(list), list.state().count], [['a', 'b'], 2])
  t.equal(list.apply(diff(11, ['b'], [], 2)), 'old', 'a diff the list already has')
  t.equal(list.apply(diff(13, [], ['a'], 2)), 'ahead', 'one after a missing one waits')
  t.ok(list.waiting)
  t.equal(list.apply(diff(12, ['c'], [], 3)), 'applied', 'the missing one comes: both apply, in order')
  t.same([ids(list), list.state().count, list.waiting], [['b', 'c'], 2, false])
  t.equal(list.apply(diff(14, [], ['b', 'c'], 0)), 'applied')
  t.same(list.state(), { scope: 'team:1', count: 0, users: [], truncated: false })
  // the scope emptied; a new series starts far above, from empty
  t.equal(list.apply(diff(9_000_000, ['d'], [], 1, true)), 'applied', 'a diff from empty applies to an empty list')
  t.equal(list.apply(diff(9_000_002, ['e'], [], 3, true)), 'ahead', 'but not to a list that is not empty')
  list.reset()
  t.notOk(list.known)
  t.equal(list.snapshot({ version: 5, count: 3, users: [join('x')] }), 'applied')
  t.same(list.state(), { scope: 'team:1', count: 3, users: [{ userId: 'x', info: { id: 'x' }, since: 1 }], truncated: true })
  list.apply(diff(7, [], [], 3))
  list.apply(diff(8, [], [], 3))
  t.equal(list.snapshot({ version: 6, count: 3, users: [] }), 'applied', 'held diffs after a snapshot apply')
  for (let v = 100; v < 200; v++) list.apply(diff(v, [], [], 3))
  t.ok(list.waiting, 'diffs far ahead are held, a bounded number of them')
  list.dropHeld()
  t.notOk(list.waiting)
})

/** A server with presence on, team:1 for everyone, team:9 by subscribe, its diffs sent when the test moves its clock. */
async function presenceServer (t: Parameters<typeof build>[0]) {
  const clock = new ManualClock()
  const built = await build(t, {
    rooms: () => ['team:1'],
    canSubscribe: (_user, scope) => scope === 'team:9',
    presence: { user: (user) => ({ id: user.id, initial: String(user.id).slice(0, 1).toUpperCase() }) },
    clock
  })
  return { ...built, clock }
}

/** The presence snapshots the server was asked for, by scope. */
function asked (log: ReturnType<typeof incoming>, scope: string): number {
  return log.filter((entry) => entry.event === 'realtime:presence' && entry.data?.scope === scope).length
}

/** Alice's client on a presence server, following `scope`: every state it hands her, and what the server was asked. */
async function aliceFollowing (t: Parameters<typeof build>[0], scope: string) {
  const server = await presenceServer(t)
  const log = incoming(server.app)
  const alice = open(t, server.url, { token: tokenFor('alice'), gapWaitMs: 50 })
  const states: PresenceState[] = []
  alice.client.onPresence(scope, (state) => { states.push(state) })
  return { ...server, log, alice, states }
}

/** Lets the server write what changed: its diffs go out (and cross the socket, which the callers wait for). */
function flushPresence (clock: ManualClock): void {
  clock.advance(1000)
}

t.test('client.presence(scope) and onPresence: a snapshot, then diffs; a fresh snapshot after a reconnect', async (t) => {
  const { app, url, clock, log, alice, states } = await aliceFollowing(t, 'team:1')
  t.equal(alice.client.presence('team:1'), undefined, 'nothing known before the first snapshot')
  await ready(alice.client)
  await until(() => states.length > 0, 'the first snapshot')
  t.equal(asked(log, 'team:1'), 1, 'asked for once the scope was joined')

  flushPresence(clock)
  await until(() => alice.client.presence('team:1')?.count === 1, 'alice sees herself')
  t.same(alice.client.presence('team:1')?.users, [{ userId: 'alice', info: { id: 'alice', initial: 'A' }, since: states.at(-1)!.users[0]!.since }])

  const bob = open(t, url, { token: tokenFor('bob') })
  await ready(bob.client)
  flushPresence(clock)
  await until(() => alice.client.presence('team:1')?.count === 2, 'bob joins')
  t.same(alice.client.presence('team:1')?.users.map((u) => u.userId), ['alice', 'bob'])
  t.same(states.at(-1)?.users.map((u) => u.info), [{ id: 'alice', initial: 'A' }, { id: 'bob', initial: 'B' }], 'onPresence had it too')

  // alice drops; bob leaves while she is away; she comes back and asks again
  const before = asked(log, 'team:1')
  const carol = open(t, url, { token: tokenFor('carol') })
  await ready(carol.client)
  dropTransport(app, alice.client)
  bob.client.close()
  await until(() => app.io.of('/').sockets.size === 1, 'only carol left on the server')
  flushPresence(clock)
  await ready(alice.client)
  await until(() => asked(log, 'team:1') === before + 1, 'a fresh snapshot after the reconnect')
  flushPresence(clock)
  await until(() => alice.client.presence('team:1')?.count === 2 &&
    alice.client.presence('team:1')?.users.map((u) => u.userId).sort().join() === 'alice,carol', 'the list as it is now')
  t.same(alice.errors, [])
  t.same(await faults.since(), [])
})

t.test('a scope joined by subscribe; unsubscribe forgets its list', async (t) => {
  const { app, clock, log, alice, states } = await aliceFollowing(t, 'team:9')
  await ready(alice.client)
  t.equal(asked(log, 'team:9'), 0, 'not asked before the scope is joined')
  await alice.client.subscribe('team:9')
  await until(() => states.length > 0, 'the snapshot after the subscribe')
  flushPresence(clock)
  await until(() => alice.client.presence('team:9')?.count === 1, 'her own join')

  dropTransport(app, alice.client)
  await until(() => asked(log, 'team:9') === 2, 'asked again once the subscription is restored')
  await alice.client.unsubscribe('team:9')
  t.equal(alice.client.presence('team:9'), undefined, 'unsubscribed: no list')
})

t.test('a missing diff: held for gapWaitMs, then a snapshot instead', async (t) => {
  const { app, clock, log, alice, states } = await aliceFollowing(t, 'team:1')
  await ready(alice.client)
  await until(() => states.length === 1, 'the snapshot')
  flushPresence(clock)
  await until(() => alice.client.presence('team:1')?.count === 1, 'her own join')
  const asks = asked(log, 'team:1')
  // a diff far ahead of the list, as if the ones before it were lost
  send(app, serverSocket(app, alice.client).id, ['realtime:presence_diff', { scope: 'team:1', joins: [join('ghost')], leaves: [], count: 2, version: Number.MAX_SAFE_INTEGER }])
  await until(() => asked(log, 'team:1') === asks + 1, 'a snapshot asked for once the gap wait is over')
  await until(() => states.length >= 3, 'the snapshot applied')
  t.same(alice.client.presence('team:1')?.users.map((u) => u.userId), ['alice'], 'the server\'s list, not the stray diff')
  send(app, serverSocket(app, alice.client).id, ['realtime:presence_diff', { scope: 'team:1', joins: 'nope' }])
  send(app, serverSocket(app, alice.client).id, ['realtime:presence_diff', null])
  t.same(alice.errors, [], 'malformed diffs are ignored')
})

t.test('a presence handler that throws is reported; a scope not tracked is an error', async (t) => {
  const { url, clock } = await presenceServer(t)
  const alice = open(t, url, { token: tokenFor('alice') })
  alice.client.onPresence('team:1', () => { throw new Error('render failed') })
  alice.client.presence('user:alice')
  await ready(alice.client)
  flushPresence(clock)
  await until(() => alice.errors.length >= 2, 'both reported')
  t.match(alice.errors.map((e) => e.code).sort(), ['BAD_REQUEST', 'HANDLER_FAILED'])
})
