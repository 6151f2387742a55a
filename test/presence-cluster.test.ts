// Presence across real nodes: each node is its own process (test/fixtures/node.ts) on the shared
// Redis, with the plugin's clock moved by hand (POST /clock/advance), so the test decides when the
// coalesced writes happen. Node liveness runs on real heartbeats, made short for the test.
import t from 'tap'
import type { Socket } from 'socket.io-client'
import type { PresenceDiff } from '../src/index.js'
import { clientFor, clusterPrefix, poll, startCluster, type NodeProcess } from './cluster-helper.js'
import { diffsOf, request, tokenFor, waitFor, within, type Teardown } from './helper.js'
import { REDIS_PORT, redisClient } from './redis-helper.js'

const ROOMS = JSON.stringify({ u1: ['team:1'], u2: ['team:1'], u3: ['team:2'] })

/** Two nodes with presence on and hand-moved clocks; `advance()` lets both write what changed. */
async function presenceCluster (t: Teardown, env: Record<string, string> = {}) {
  const prefix = clusterPrefix(t)
  const [a, b] = await startCluster(t, 2, { KEY_PREFIX: prefix, ROOMS, PRESENCE: '{}', CLOCK: 'manual', ...env }) as [NodeProcess, NodeProcess]
  const advance = async (...nodes: NodeProcess[]): Promise<void> => {
    await Promise.all((nodes.length > 0 ? nodes : [a, b]).map(async (node) => await node.post('/clock/advance', { ms: 1000 })))
  }
  const presence = async (node: NodeProcess, scope = 'team:1'): Promise<any> => (await node.get(`/presence/${scope}`)).body
  return { prefix, a, b, advance, presence }
}

/** Disconnects `socket` and resolves once `node` holds no socket of `userId`. */
async function gone (node: NodeProcess, socket: Socket, userId: string, left = 0): Promise<void> {
  socket.disconnect()
  await poll(`${userId} has ${left} sockets left on the node`, async () => (await node.get(`/local-rooms/${userId}`)).body, (rooms: unknown[]) => rooms.length === left)
}

/** Resolves once `diffs` holds `count` diffs. */
async function diffCount (diffs: PresenceDiff[], count: number, what: string): Promise<PresenceDiff[]> {
  return await poll(what, async () => diffs, (seen) => seen.length >= count, 15_000, 20)
}

/** Resolves once the joins of `users` have arrived in `diffs` (one diff per node that wrote them, or fewer). */
async function joined (diffs: PresenceDiff[], users: string[]): Promise<void> {
  await poll(`${users.join(', ')} joined`, async () => new Set(diffs.flatMap((d) => d.joins.map((j) => j.userId))),
    (seen) => users.every((user) => seen.has(user)), 15_000, 20)
}

t.test('one user in two tabs on two nodes counts once, and leaves with the last tab', async (t) => {
  const { prefix, a, b, advance, presence } = await presenceCluster(t)
  const watcher = await clientFor(t, a.url, 'u2')
  const diffs = diffsOf(watcher.socket)
  const tab1 = await clientFor(t, a.url, 'u1')
  const tab2 = await clientFor(t, b.url, 'u1')
  await advance()
  await poll('both nodes wrote their counts', async () => await presence(b), (p) => p.count === 2 && p.users.find((u: any) => u.userId === 'u1')?.connections === 2)
  await joined(diffs, ['u1', 'u2'])
  t.same(diffs.flatMap((d) => d.joins.map((j) => j.userId)).sort(), ['u1', 'u2'], 'each user joined once, whichever node wrote first')
  // Diffs written by different nodes may arrive in either order: the newest version tells the count.
  t.equal(diffs.reduce((newest, d) => d.version > newest.version ? d : newest).count, 2, 'the newest diff counts both users')
  t.same((await presence(a)).users.map((u: any) => [u.userId, u.connections]).sort(), [['u1', 2], ['u2', 1]], 'the same answer on either node')
  t.same(await presence(a), await presence(b))

  await gone(a, tab1.socket, 'u1')
  await advance()
  await poll('the first tab is out of the counts', async () => await presence(a), (p) => p.users.find((u: any) => u.userId === 'u1')?.connections === 1)
  const before = diffs.length
  await gone(b, tab2.socket, 'u1')
  await advance()
  const [leave] = (await diffCount(diffs, before + 1, 'the leave')).slice(before)
  t.match(leave, { scope: 'team:1', joins: [], leaves: ['u1'], count: 1 }, 'the last tab closing is a leave')
  t.equal(leave!.version, Math.max(...diffs.slice(0, before).map((d) => d.version)) + 1, 'and the diff after the joins: the first tab closing sent none')

  await gone(a, watcher.socket, 'u2')
  await advance()
  await poll('an empty scope', async () => await presence(a), (p) => p.count === 0)
  const redis = redisClient(t, REDIS_PORT)
  const [, keys] = await redis.scan('0', 'MATCH', `${prefix}rt:p*{team:1}`, 'COUNT', 1000)
  t.same(keys, [], 'nothing kept in Redis for a scope nobody is in')
})

t.test('a node killed outright: its users leave once its heartbeat expires', async (t) => {
  const { prefix, a, b, advance, presence } = await presenceCluster(t)
  const watcher = await clientFor(t, a.url, 'u2')
  const diffs = diffsOf(watcher.socket)
  await clientFor(t, b.url, 'u1')
  await advance()
  await joined(diffs, ['u1', 'u2'])
  const deadId = (await b.get('/health/realtime')).body.node.id as string
  const redis = redisClient(t, REDIS_PORT)
  t.ok(await redis.sismember(`${prefix}rt:presence:{nodes}`, deadId), 'the node is listed as holding presence')

  const before = diffs.length
  await b.stop('SIGKILL')
  // the fixture's nodes expire 1.5 s after their last beat (cluster.nodeTtlMs); the default is 30 s
  const leave = await within(waitFor<[PresenceDiff]>(watcher.socket, 'realtime:presence_diff'), 30_000, 'the dead node\'s users leaving')
  t.match(leave[0], { scope: 'team:1', leaves: ['u1'], count: 1 })
  // the two joins may have come in either order (one node's diff is local, the other's crosses Redis)
  t.equal(leave[0].version, Math.max(...diffs.slice(0, before).map((d) => d.version)) + 1)
  t.match(await presence(a), { count: 1, users: [{ userId: 'u2' }] })
  await poll('the dead node forgotten', async () => await redis.sismember(`${prefix}rt:presence:{nodes}`, deadId), (n) => n === 0)
  t.equal(await redis.exists(`${prefix}rt:presence:{nodes}:${deadId}`), 0, 'with its list of scopes')
})

t.test('a node that closes takes its users out at once', async (t) => {
  // a heartbeat that would take a minute to expire: the leave can only come from the close
  const { a, b, advance } = await presenceCluster(t, { NODE_TTL_MS: '60000', HEARTBEAT_MS: '1000' })
  const watcher = await clientFor(t, a.url, 'u2')
  const diffs = diffsOf(watcher.socket)
  await clientFor(t, b.url, 'u1')
  await advance()
  await joined(diffs, ['u1', 'u2'])
  const leave = within(waitFor<[PresenceDiff]>(watcher.socket, 'realtime:presence_diff'), 20_000, 'the leave at close')
  await b.stop('SIGTERM')
  t.match((await leave)[0], { leaves: ['u1'], count: 1 })
})

t.test('500 clients joining at once over two nodes are a handful of diffs, not 500', async (t) => {
  const { a, b, advance, presence } = await presenceCluster(t, {
    PRESENCE: JSON.stringify({ maxListed: 1000 }),
    ROOMS: JSON.stringify({ '*': ['team:1'] })
  })
  const watcher = await clientFor(t, a.url, 'u2')
  const diffs = diffsOf(watcher.socket)
  const sockets: Socket[] = []
  for (let batch = 0; batch < 10; batch++) {
    const node = batch % 2 === 0 ? a : b
    sockets.push(...await Promise.all(Array.from({ length: 50 }, async (_, i) => (await clientFor(t, node.url, `storm-${batch}-${i}`)).socket)))
  }
  await advance()
  await poll('all 501 present', async () => await presence(a), (p) => p.count === 501)
  await poll('their joins arrived', async () => diffs.flatMap((d) => d.joins).length, (n) => n === 501)
  t.ok(diffs.length <= 3, `${diffs.length} diffs for 501 joins`)
  t.same(new Set(diffs.flatMap((d) => d.joins.map((j) => j.userId))).size, 501, 'each user joined once')
  t.equal(Math.max(...diffs.map((d) => d.count)), 501)

  const before = diffs.length
  for (const socket of sockets) socket.disconnect()
  for (const node of [a, b]) {
    await poll('the storm gone', async () => (await node.get('/health/realtime')).body.node.connections, (n) => n === (node === a ? 1 : 0))
  }
  await advance()
  await poll('their leaves arrived', async () => diffs.slice(before).flatMap((d) => d.leaves).length, (n) => n === 500)
  t.ok(diffs.length - before <= 3, `${diffs.length - before} diffs for 500 leaves`)
  t.match(await presence(b), { count: 1, users: [{ userId: 'u2' }] })
})

t.test('members only, and presence.user is all that others see', async (t) => {
  const { a, b, advance } = await presenceCluster(t)
  const claims = { name: 'Ann', email: 'ann@example.com', role: 'admin' }
  const ann = await clientFor(t, a.url, 'u1', { auth: { token: tokenFor('u1', claims) } })
  const diffs = diffsOf(ann.socket)
  const outsider = await clientFor(t, b.url, 'u3')
  const outsiderDiffs = diffsOf(outsider.socket)
  await advance()
  await diffCount(diffs, 1, 'ann\'s own join')
  await diffCount(outsiderDiffs, 1, 'the outsider\'s own join, in team:2')
  t.same(diffs[0]!.joins.map(({ userId, info }) => ({ userId, info })), [{ userId: 'u1', info: { id: 'u1', name: 'Ann' } }])
  t.match(await request(outsider.socket, 'realtime:presence', { scope: 'team:1' }), { ok: false, error: { code: 'FORBIDDEN' } }, 'a non-member asking')
  const answer = await request(ann.socket, 'realtime:presence', { scope: 'team:1' })
  t.match(answer, { ok: true, count: 1, users: [{ userId: 'u1', info: { id: 'u1', name: 'Ann' }, connections: 1 }] })
  const wire = JSON.stringify([answer, diffs])
  for (const leak of ['ann@example.com', 'email', 'admin', 'role', 'exp', 'iat']) t.notOk(wire.includes(leak), `no ${leak} on the wire`)
  t.same(outsiderDiffs.filter((d) => d.scope === 'team:1'), [], 'a non-member gets no diffs of the scope')
  t.same(outsiderDiffs.map((d) => d.scope), ['team:2'], 'only those of its own')
})
