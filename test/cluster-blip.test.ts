// A Redis blip on one node's subscriber, as it happens in production: the node keeps every socket,
// replays what other nodes stored meanwhile and applies the membership changes made meanwhile.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Redis as RedisClient, type Redis } from 'ioredis'
import { connect, type RealtimeClient } from '../src/client/index.js'
import Fastify from 'fastify'
import realtime, { type EventMeta, type RealtimeRecoveryOptions, type RealtimeUser } from '../src/index.js'
import { compareIds, OperationsLog, OPS_KEY } from '../src/ops-log.js'
import { CatchUps } from '../src/catchup.js'
import { Recovery } from '../src/recovery.js'
import { poll } from './cluster-helper.js'
import { ManualClock } from './clock.js'
import { build, collect, processFaults, SECRET, tokenFor, type Built, type Teardown } from './helper.js'
import { clientList, ownRedis, REDIS_HOST, redisClient, redisOptions } from './redis-helper.js'

const faults = processFaults()
const FAST = { heartbeatMs: 100, nodeTtlMs: 5000 }

/** The rooms (scopes) of each local socket of `userId`, own socket id left out. */
async function roomsOf (app: FastifyInstance, userId: string): Promise<string[][]> {
  const sockets = await app.io.local.in(`user:${userId}`).fetchSockets()
  return sockets.map((socket) => [...socket.rooms].filter((room) => room !== socket.id).sort())
}

/** The Redis connection id of `app`'s subscriber, found by its name in CLIENT LIST. */
async function subscriberOf (admin: Redis, app: FastifyInstance): Promise<string> {
  const { node } = await app.realtime.stats()
  const name = `fastify-realtime:sub:${node.id}`
  const found = (await clientList(admin)).filter((fields) => fields.name === name)
  if (found.length !== 1) throw new Error(`expected one connection named ${name}, found ${found.length}`)
  return found[0]!.id!
}

interface Watched {
  user: string
  client: RealtimeClient
  connects: number
  socketIds: Set<string>
  /** What the client handed to the app, as [scope, seq, replayed]. */
  events: Array<[string, number, boolean]>
  /** Resyncs the client raised, as `scope reason`. */
  resyncs: string[]
}

/** Connects `users` to `node` with the bundled client, `batch` at a time, each once `realtime:ready`. */
async function connectAll (t: Teardown, node: Built, users: string[], batch = 50): Promise<Watched[]> {
  const watched: Watched[] = []
  for (let i = 0; i < users.length; i += batch) {
    await Promise.all(users.slice(i, i + batch).map(async (user) => {
      // a long gap wait: a replay that comes after a later live event is waited for, never fetched
      const client = connect(node.url, { token: tokenFor(user), gapWaitMs: 60_000, io: { transports: ['websocket'], forceNew: true } })
      t.teardown(() => { client.close() })
      const entry: Watched = { user, client, connects: 0, socketIds: new Set(), events: [], resyncs: [] }
      client.onResync(({ scope, reason }) => { entry.resyncs.push(`${scope} ${reason}`) })
      client.socket.on('connect', () => {
        entry.connects++
        entry.socketIds.add(client.socket.id!)
      })
      client.on('ev' as never, (_payload: unknown, meta: EventMeta) => {
        entry.events.push([meta.scope, meta.seq ?? 0, meta.replayed === true])
      })
      await new Promise<void>((resolve) => { client.socket.once('realtime:ready', () => { resolve() }) })
      watched.push(entry)
    }))
  }
  return watched
}

const seqsIn = (entry: Watched, scope: string): number[] => entry.events.filter(([s]) => s === scope).map(([, seq]) => seq)
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

t.test('CLIENT KILL on one node\'s subscriber: no reconnects, every event in order, membership changes in force', async (t) => {
  const USERS = 300
  const TEAMS = 5
  const options = redisOptions(t)
  const members = new Map<string, Set<string>>()
  for (let i = 0; i < USERS; i++) members.set(`u${i}`, new Set([`team:${i % TEAMS}`]))
  let roomsCallsOnA = 0
  const grantedTo = (user: RealtimeUser): string[] => [...members.get(String(user.id)) ?? []]
  const a = await build(t, { rooms: (user) => { roomsCallsOnA++; return grantedTo(user) }, redis: { ...options }, cluster: FAST, clusterTimeoutMs: 2000 })
  const b = await build(t, { rooms: grantedTo, redis: { ...options }, cluster: FAST, clusterTimeoutMs: 2000 })
  await poll('A counts both nodes', async () => await a.app.realtime.stats(), (s) => s.cluster?.nodes === 2)
  const admin = redisClient(t)

  const clients = await connectAll(t, a, range(0, USERS - 1).map((i) => `u${i}`))
  t.equal(clients.length, USERS)
  const teams = range(0, TEAMS - 1).map((i) => `team:${i}`)
  const send = async (count: number): Promise<void> => {
    for (let n = 0; n < count; n++) {
      await Promise.all(teams.map(async (scope) => await b.app.broadcast(scope, 'ev', { n })))
    }
  }
  const holding = (entry: Watched, scope: string, upTo: number): boolean => seqsIn(entry, scope).length >= upTo
  const everyoneHas = async (upTo: number, except: Set<string> = new Set()): Promise<void> => {
    await poll(`every client holds seq 1..${upTo} of its team`, async () =>
      clients.filter((c) => !except.has(c.user) && !holding(c, `team:${Number(c.user.slice(1)) % TEAMS}`, upTo)).length,
    (missing) => missing === 0, 60_000, 50)
  }
  await send(2)
  await everyoneHas(2)

  // the blip: A's subscriber killed, while B broadcasts and changes memberships
  roomsCallsOnA = 0
  const killed = await admin.client('KILL', 'ID', await subscriberOf(admin, a.app))
  t.equal(killed, 1, 'A\'s subscriber was killed')
  await send(5)
  members.get('u1')!.delete('team:1')
  members.get('u2')!.add('team:9')
  const outcomes = await Promise.allSettled([b.app.realtime.leave('u1', 'team:1'), b.app.realtime.join('u2', 'team:9'), b.app.realtime.disconnectUser('u3')])
  for (const outcome of outcomes) {
    // A may be away (not confirmed) or back already (applied live): in force on A either way
    if (outcome.status === 'rejected') t.match(outcome.reason, { code: 'FST_REALTIME_CLUSTER_UNAVAILABLE' })
  }
  const changed = new Set(['u1', 'u2', 'u3'])

  await everyoneHas(7, changed)
  await poll('the leave, join and disconnect are in force on A', async () => [await roomsOf(a.app, 'u1'), await roomsOf(a.app, 'u2'), await roomsOf(a.app, 'u3')],
    ([u1, u2, u3]) => JSON.stringify(u1) === '[["user:u1"]]' && JSON.stringify(u2) === '[["team:2","team:9","user:u2"]]' && u3!.length === 0, 30_000)
  const u3 = clients.find((c) => c.user === 'u3')!
  t.equal(u3.client.socket.connected, false, 'u3 was disconnected')

  // after the blip, cross-node delivery goes on as before
  await send(2)
  await everyoneHas(9, changed)
  const toTeam9 = await b.app.broadcast('team:9', 'ev', { n: 0 })
  const u2 = clients.find((c) => c.user === 'u2')!
  await poll('the user joined meanwhile gets team:9 on A', async () => seqsIn(u2, 'team:9'), (seqs) => seqs.includes(toTeam9!.seq!), 30_000)

  const others = clients.filter((c) => !changed.has(c.user))
  t.same(others.filter((c) => c.connects !== 1 || c.socketIds.size !== 1).map((c) => c.user), [], 'zero reconnects: one connect and one socket id per client')
  t.same(others.filter((c) => {
    const seqs = seqsIn(c, `team:${Number(c.user.slice(1)) % TEAMS}`)
    return JSON.stringify(seqs) !== JSON.stringify(range(1, 9))
  }).map((c) => c.user), [], 'every client handed on seq 1..9 of its team once each, in order: no silent gap')
  t.same(others.flatMap((c) => c.resyncs), [], 'no resync: the log could say what was missed everywhere')
  const replayed = others.reduce((sum, c) => sum + c.events.filter(([, , r]) => r).length, 0)
  t.ok(replayed > 0, `events stored while A was away came as replays (${replayed} handed on)`)
  const u1 = clients.find((c) => c.user === 'u1')!
  const u1Seqs = seqsIn(u1, 'team:1')
  t.same(u1Seqs, range(1, u1Seqs.length), 'u1 got team:1 in order up to its leave')
  t.ok(u1Seqs.length < 9, 'and nothing of team:1 after it')
  t.ok(roomsCallsOnA <= changed.size, `rooms() calls on A bounded by the users whose membership changed (${roomsCallsOnA} <= ${changed.size})`)
  t.same(await faults.since(), [], 'no unhandled rejection')
})

t.test('the record of operations trimmed past what a node missed: memberships re-checked, paced on the clock', async (t) => {
  const redis = await ownRedis(t)
  const admin = redisClient(t, redis.port)
  // A logs in as its own ACL user: taking its channels away keeps its subscriber out until they are given back
  await admin.call('ACL', 'SETUSER', 'node-a', 'on', '>pw', '~*', '&*', '+@all')
  const keyPrefix = 'trim:'
  const members = new Map<string, Set<string>>()
  const USERS = 40
  for (let i = 0; i < USERS; i++) members.set(`u${i}`, new Set(['team:0']))
  let roomsCalls = 0
  const rooms = (user: RealtimeUser): string[] => [...members.get(String(user.id)) ?? []]
  const clock = new ManualClock()
  const recovery = { recheckBatch: 10, recheckIntervalMs: 100 }
  const a = await build(t, {
    rooms: (user) => { roomsCalls++; return rooms(user) },
    redis: { host: REDIS_HOST, port: redis.port, keyPrefix, username: 'node-a', password: 'pw' },
    cluster: FAST,
    clusterTimeoutMs: 2000,
    clock,
    recovery
  })
  const b = await build(t, { rooms, redis: { host: REDIS_HOST, port: redis.port, keyPrefix }, cluster: FAST, clusterTimeoutMs: 2000 })
  await poll('A counts both nodes', async () => await a.app.realtime.stats(), (s) => s.cluster?.nodes === 2)
  const clients = await connectAll(t, a, range(0, USERS - 1).map((i) => `u${i}`), 20)
  const revoked: string[] = []
  for (const c of clients) c.client.socket.on('realtime:revoked', ({ scope }: { scope: string }) => { revoked.push(`${c.user} ${scope}`) })

  await admin.call('ACL', 'SETUSER', 'node-a', 'resetchannels')
  await poll('A reports its subscriber down', async () => (await a.app.inject('/health/realtime')).statusCode, (code) => code === 503)
  members.get('u5')!.delete('team:0')
  await t.rejects(b.app.realtime.leave('u5', 'team:0'), { code: 'FST_REALTIME_CLUSTER_UNAVAILABLE' })
  // the record no longer reaches back to where A stood (a tiny MAXLEN, or a Redis that lost it)
  await admin.xtrim(`${keyPrefix}rt:ops`, 'MAXLEN', 0)
  roomsCalls = 0

  await admin.call('ACL', 'SETUSER', 'node-a', 'allchannels')
  await poll('the first batch is re-checked', async () => roomsCalls, (n) => n >= recovery.recheckBatch, 30_000, 20)
  t.equal(roomsCalls, recovery.recheckBatch, 'one batch at once, the next one only when the clock moves')
  for (let batch = 2; batch <= USERS / recovery.recheckBatch; batch++) {
    clock.advance(recovery.recheckIntervalMs)
    t.equal(roomsCalls, batch * recovery.recheckBatch, `batch ${batch} after another ${recovery.recheckIntervalMs} ms`)
  }
  clock.advance(10 * recovery.recheckIntervalMs)
  t.equal(roomsCalls, USERS, 'every local socket re-checked once, no more')
  await poll('u5 left team:0 with realtime:revoked', async () => revoked, (r) => r.includes('u5 team:0'), 30_000)
  t.same(revoked, ['u5 team:0'], 'only the membership that changed is revoked')
  t.same(await roomsOf(a.app, 'u5'), [['user:u5']])
  t.same(clients.filter((c) => c.connects !== 1).map((c) => c.user), [], 'no client reconnected')
})

t.test('the position kept per local scope follows what the room is sent, in seq order, and goes with the room', async (t) => {
  const { app, connected } = await build(t, { rooms: () => ['team:1'] })
  const recovery = new Recovery({
    io: app.io,
    store: null,
    catchUps: new CatchUps(null, app.io.encoder, () => {}, { replayed: () => {}, resync: () => {} }),
    applyMissed: async () => 0,
    recheck: async () => {},
    log: app.log,
    clock: new ManualClock(),
    options: { operations: 100, recheckBatch: 1, recheckIntervalMs: 1 }
  })
  recovery.attach()
  const { socket } = await connected('u1')
  const onServer = [...app.io.of('/').sockets.values()][0]!
  recovery.joined(onServer, 'team:1', { seq: 3, epoch: 'e1' })
  recovery.joined(onServer, 'team:2', { seq: 1, epoch: 'e1' })
  t.equal(recovery.tracked, 1, 'only scopes with sockets on this node are kept')
  const meta = (seq: number): object => ({ id: `id${seq}`, scope: 'team:1', seq, epoch: 'e1', at: 0 })
  const resyncs: string[] = []
  socket.on('realtime:resync', ({ scope, reason }: { scope: string, reason: string }) => { resyncs.push(`${scope} ${reason}`) })
  // 5 comes before 4 (two nodes broadcasting at once): the position waits for 4
  app.io.to('team:1').emit('ev', 5, meta(5))
  t.same(recovery.position('team:1'), { seq: 3, epoch: 'e1' }, 'a later seq waits for the missing one')
  app.io.to('team:1').emit('ev', 4, meta(4))
  t.same(recovery.position('team:1'), { seq: 5, epoch: 'e1' }, 'then both count')
  recovery.away()
  app.io.to('team:1').emit('ev', 6, meta(6))
  t.same(recovery.position('team:1'), { seq: 5, epoch: 'e1' }, 'while away the position stands still: others may be missing')
  t.equal((await recovery.resubscribed()).resyncs, 2, 'no history: every local scope is told to resync')
  app.io.to('team:1').emit('ev', 7, meta(7))
  app.io.to('team:1').emit('ev', 6, meta(6))
  t.same(recovery.position('team:1'), { seq: 7, epoch: 'e1' }, 'followed again once back')
  await poll('the resyncs arrive', async () => resyncs, (r) => r.length === 2)
  t.same(resyncs.sort(), ['team:1 unavailable', 'user:u1 unavailable'])
  socket.disconnect()
  await poll('the room is gone', async () => app.io.of('/').adapter.rooms.has('team:1'), (has) => !has)
  t.equal(recovery.tracked, 0, 'and its position with it')
  recovery.close()
})

t.test('after a blip each socket gets the replay before the scope\'s live events, and one that caught up meanwhile is replayed nothing twice', async (t) => {
  const { app, client, connected } = await build(t, { rooms: () => ['team:1'] })
  const store = app.realtime.history!
  const recovery = new Recovery({
    io: app.io,
    store,
    catchUps: new CatchUps(store, app.io.encoder, () => {}, { replayed: () => {}, resync: () => {} }),
    applyMissed: async () => 0,
    recheck: async () => {},
    log: app.log,
    clock: new ManualClock(),
    options: { operations: 100, recheckBatch: 1, recheckIntervalMs: 1 }
  })
  recovery.attach()
  const first = await connected('u1')
  const onFirst = collect(first.socket, 'ev')
  await app.broadcast('team:1', 'ev', 1)
  const { epoch } = (await app.broadcast('team:1', 'ev', 2))!
  await poll('u1 has both', async () => onFirst.length, (n) => n === 2)

  recovery.away()
  // what other nodes stored while this node could not hear them
  for (const n of [3, 4, 5]) await store.append('team:1', { id: `id${n}`, event: 'ev', payload: n, at: 0 })
  // a client that catches up by itself meanwhile, from the position it held
  const second = client({ token: tokenFor('u2'), since: { 'team:1': { seq: 2, epoch } } })
  const onSecond = collect(second, 'ev')
  await new Promise<void>((resolve) => { second.once('realtime:ready', () => { resolve() }) })
  const secondOnServer = [...app.io.of('/').sockets.values()].find((socket) => socket.id === second.id)!
  recovery.joined(secondOnServer, 'team:1', { seq: 5, epoch: epoch! })

  const back = recovery.resubscribed()
  // a live event of the scope while its log is being read
  await app.broadcast('team:1', 'ev', 6)
  await back
  // a fence: everything sent before it has arrived once it has
  await app.broadcast('team:1', 'ev', 7)
  await poll('both have the fence', async () => [onFirst.length, onSecond.length], () => onFirst.at(-1)?.[0] === 7 && onSecond.at(-1)?.[0] === 7)
  t.same(onFirst.map(([n]) => n), [1, 2, 3, 4, 5, 6, 7], 'u1: every event once, the replay before the live ones')
  t.same(onFirst.slice(2, 5).map(([, meta]) => meta.replayed), [true, true, true], 'what others stored meanwhile came as replays')
  t.same(onSecond.map(([n]) => n), [3, 4, 5, 6, 7], 'u2: its own catch-up, then only what lies beyond it: no seq replayed twice')
  recovery.close()
})

t.test('recovery options are checked at register', async (t) => {
  const registerError = async (recovery: unknown): Promise<{ code?: string, message: string } | null> => {
    const app = Fastify()
    try {
      await app.register(realtime, { auth: { secret: SECRET }, recovery: recovery as RealtimeRecoveryOptions })
      await app.ready()
      return null
    } catch (err) {
      return err as { code?: string, message: string }
    } finally {
      await app.close()
    }
  }
  t.equal(await registerError({ operations: 100, recheckBatch: 1, recheckIntervalMs: 1 }), null, 'the smallest values')
  for (const [recovery, path] of [
    [{ operations: 99 }, 'recovery.operations'],
    [{ operations: 1.5 }, 'recovery.operations'],
    [{ recheckBatch: 0 }, 'recovery.recheckBatch'],
    [{ recheckIntervalMs: -1 }, 'recovery.recheckIntervalMs'],
    [{ recheckEvery: 1 }, 'recovery']
  ] as const) {
    const err = await registerError(recovery)
    t.equal(err?.code, 'FST_REALTIME_INVALID_OPTION', JSON.stringify(recovery))
    t.match(err?.message, path)
  }
})

t.test('the record of operations: what a node missed, never what it applied, and null once trimmed past it', async (t) => {
  const { keyPrefix } = redisOptions(t)
  const client = new RedisClient({ host: REDIS_HOST, keyPrefix })
  t.teardown(() => { client.disconnect() })
  const here = new OperationsLog(client, 100)
  const there = new OperationsLog(client, 100)
  await here.start()
  await there.start()
  t.same(await here.missed(), [], 'the first entry changes nothing')
  const heard = await there.append('{"op":"join","userId":"u1","scope":"team:1"}')
  here.seen(heard)
  here.away()
  const missed = await there.append('{"op":"leave","userId":"u1","scope":"team:1"}')
  // published after this node was back, and applied live before it read the record
  const live = await there.append('{"op":"disconnect","userId":"u2"}')
  here.seen(live)
  t.same((await here.missed())?.map((entry) => entry.id), [missed], 'only the one it missed, not the ones it applied')
  here.seen(missed)
  here.away()
  await client.xtrim(OPS_KEY, 'MAXLEN', 0)
  t.equal(await here.missed(), null, 'trimmed past where it stood: it cannot say')
  t.ok(compareIds('2-0', '10-0') < 0 && compareIds('5-3', '5-10') < 0, 'ids compare as numbers')
})
