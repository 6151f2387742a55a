import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Cluster } from 'ioredis'
import type { BroadcastMeta, FastifyRealtimeOptions } from '../src/index.js'
import { poll } from './cluster-helper.js'
import { build, collect, request, uniq, until, waitFor, within, type Built, type Teardown } from './helper.js'
import { clusterUnavailable, redisCluster, type ClusterMaster, type RedisClusterServers } from './redis-cluster-helper.js'

const FAST = { heartbeatMs: 100, nodeTtlMs: 1500 }

async function status (app: FastifyInstance): Promise<number> {
  return (await app.inject('/health/realtime')).statusCode
}

/** One scope per master: `team:<n>` whose keys (tagged with the scope) the master holds. */
async function scopePerMaster (servers: RedisClusterServers): Promise<Array<{ scope: string, master: ClusterMaster }>> {
  const picked = new Map<number, string>()
  for (let n = 1; picked.size < servers.masters.length; n++) {
    const scope = `team:${n}`
    const master = await servers.masterOf(`{${scope}}`)
    if (!picked.has(master.port)) picked.set(master.port, scope)
  }
  return [...picked].map(([port, scope]) => ({ scope, master: servers.masters.find((m) => m.port === port)! }))
}

interface Setup {
  servers: RedisClusterServers
  keyPrefix: string
  redis: FastifyRealtimeOptions['redis']
  scopes: Array<{ scope: string, master: ClusterMaster }>
  a: Built
  b: Built
}

/** Three masters and two app nodes on them; every user is granted one scope per master. */
async function twoNodes (t: Teardown, more: FastifyRealtimeOptions = {}): Promise<Setup> {
  const servers = await redisCluster(t)
  const scopes = await scopePerMaster(servers)
  const keyPrefix = `${uniq('sh')}:`
  const redis = { cluster: servers.nodes, options: { keyPrefix } }
  const opts: FastifyRealtimeOptions = { rooms: () => scopes.map(({ scope }) => scope), redis, cluster: FAST, ...more }
  const a = await build(t, opts)
  const b = await build(t, opts)
  await poll('both nodes counted', async () => (await a.app.realtime.stats()).cluster?.nodes, (n) => n === 2)
  return { servers, keyPrefix, redis, scopes, a, b }
}

const skip = clusterUnavailable()
if (skip !== null) t.comment(`Redis Cluster tests skipped: ${skip}`)

t.test('bad shapes of redis fail register with FST_REALTIME_INVALID_OPTION', async (t) => {
  const cases: Array<[unknown, RegExp]> = [
    [{ cluster: [] }, /redis\.cluster/],
    [{ cluster: 'localhost:7000' }, /redis\.cluster/],
    [{ cluster: [{ host: '127.0.0.1' }] }, /redis\.cluster\.0/],
    [{ cluster: [{ host: '127.0.0.1', port: 70000 }] }, /redis\.cluster\.0/],
    [{ cluster: [{ host: '127.0.0.1', port: 7000 }], options: 'x' }, /redis\.options/],
    [{ cluster: [{ host: '127.0.0.1', port: 7000 }], extra: 1 }, /redis\.extra/],
    [{ cluster: [{ host: '127.0.0.1', port: 7000 }], options: { keyPrefix: 'a*' } }, /redis\.keyPrefix/]
  ]
  for (const [redis, message] of cases) {
    await t.rejects(build(t, { redis: redis as FastifyRealtimeOptions['redis'] }), { code: 'FST_REALTIME_INVALID_OPTION', message }, JSON.stringify(redis))
  }
})

t.test('two nodes on three masters: delivery across nodes in scopes on every master, catch-up on the other node', { skip: skip ?? false }, async (t) => {
  const { a, b, scopes, keyPrefix } = await twoNodes(t)
  const { socket: onB } = await b.connected('u1')
  const seen = collect(onB, 'task:updated')
  const sent: Array<BroadcastMeta | null> = []
  for (const [i, { scope }] of scopes.entries()) sent.push(await a.app.broadcast(scope, 'task:updated', { i }))
  await until(() => seen.length === scopes.length, 'every broadcast from A reaches the client on B')
  // order is kept per scope; scopes on different masters travel on different connections
  const byScope = (x: [unknown, string, number], y: [unknown, string, number]): number => x[1].localeCompare(y[1])
  t.same(seen.map(([payload, meta]) => [payload, meta.scope, meta.seq] as [unknown, string, number]).sort(byScope),
    scopes.map(({ scope }, i) => [{ i }, scope, 1] as [unknown, string, number]).sort(byScope))
  t.ok(sent.every((meta) => meta?.stored === true), 'each one stored')
  for (const { scope, master } of scopes) {
    t.same(await master.client.exists(`${keyPrefix}rt:m:{${scope}}`, `${keyPrefix}rt:l:{${scope}}`, `${keyPrefix}rt:i:{${scope}}`), 3,
      `every key of ${scope} is on the master of its hash tag (port ${master.port})`)
  }

  // a client that was on B and comes back on A with its positions: replayed from the log
  const positions = Object.fromEntries(scopes.map(({ scope }) => [scope, { seq: 0, epoch: sent[scopes.findIndex((s) => s.scope === scope)]!.epoch }]))
  for (const [i, { scope }] of scopes.entries()) await b.app.broadcast(scope, 'task:updated', { i, again: true })
  const { socket: onA } = await a.connected('u2')
  const replayed = collect(onA, 'task:updated')
  for (const { scope } of scopes) {
    const ack = await request(onA, 'realtime:subscribe', { scope, since: positions[scope] })
    t.match(ack, { ok: true, scope, replayed: 2, position: { seq: 2 } }, `${scope}: both events replayed on A`)
  }
  t.same(replayed.map(([payload, meta]) => [payload, meta.seq, meta.replayed]), scopes.flatMap((_scope, i) => [[{ i }, 1, true], [{ i, again: true }, 2, true]]))
})

t.test('join, leave and disconnectUser reach the other node; presence is shared', { skip: skip ?? false }, async (t) => {
  const { a, b, scopes } = await twoNodes(t, { presence: { intervalMs: 20 } })
  const { socket } = await b.connected('u1')
  const scope = 'team:extra'
  const seen = collect(socket, 'task:updated')
  await a.app.realtime.join('u1', scope)
  await a.app.broadcast(scope, 'task:updated', { n: 1 })
  await until(() => seen.length === 1, 'a broadcast in the joined scope reaches the socket on B')

  await poll('u1 present in every scope, as seen from A', async () => await a.app.realtime.presence(scopes[0]!.scope), (p) => p.count === 1 && p.users[0]?.userId === 'u1')

  await a.app.realtime.leave('u1', scope)
  await a.app.broadcast(scope, 'task:updated', { n: 2 })
  await b.app.broadcast(scopes[0]!.scope, 'task:updated', { n: 3 })
  await until(() => seen.length === 2, 'the next event in a granted scope arrives')
  t.same(seen.map(([payload]) => payload), [{ n: 1 }, { n: 3 }], 'nothing from the scope left on A')

  const closed = waitFor<[string]>(socket, 'disconnect')
  await a.app.realtime.disconnectUser('u1')
  t.equal((await within(closed, 10_000, 'u1 disconnected on B'))[0], 'io server disconnect')
  await poll('u1 no longer present', async () => await a.app.realtime.presence(scopes[0]!.scope), (p) => p.count === 0)
})

t.test('health: 200 with both nodes counted; 503 while a master is down; 200 again once it is back', { skip: skip ?? false }, async (t) => {
  const { a, b, scopes } = await twoNodes(t)
  const res = await a.app.inject('/health/realtime')
  t.equal(res.statusCode, 200)
  t.match(res.json(), { cluster: { nodes: 2 }, history: { store: 'redis', ok: true } })
  const { master } = scopes[1]!
  await master.kill()
  await poll('A says a master is down', async () => await status(a.app), (code) => code === 503, 15_000)
  await poll('B says so too', async () => await status(b.app), (code) => code === 503, 15_000)
  await master.start()
  await poll('A healthy again', async () => await status(a.app), (code) => code === 200, 30_000)
  await poll('B healthy again', async () => await status(b.app), (code) => code === 200, 30_000)
  // the heartbeats are written again within a beat (they may live on the restarted master)
  const body = await poll('both nodes counted again', async () => (await a.app.inject('/health/realtime')).json(), (b) => b.cluster?.nodes === 2, 15_000)
  t.match(body, { cluster: { nodes: 2 }, history: { ok: true } })
})

t.test('one master restarted empty: its scopes start a new epoch, the others replay; delivery in its scopes resumes', { skip: skip ?? false }, async (t) => {
  const { a, b, scopes } = await twoNodes(t)
  const heads = new Map<string, { seq: number, epoch: string }>()
  for (const { scope } of scopes) {
    const meta = (await a.app.broadcast(scope, 'task:updated', { n: 1 }))!
    heads.set(scope, { seq: 0, epoch: meta.epoch! })
  }
  const lost = scopes[0]!
  await lost.master.kill()
  await lost.master.start()
  await poll('both nodes healthy again', async () => [await status(a.app), await status(b.app)], (codes) => codes.every((c) => c === 200), 30_000)

  const { socket } = await b.connected('u1')
  const resyncs = collect(socket, 'realtime:resync')
  for (const { scope } of scopes) {
    const ack = await request(socket, 'realtime:subscribe', { scope, since: heads.get(scope) })
    if (scope === lost.scope) t.match(ack, { ok: true, scope, replayed: 0 }, `${scope} (on the restarted master): nothing to replay`)
    else t.match(ack, { ok: true, scope, replayed: 1, position: { seq: 1, epoch: heads.get(scope)!.epoch } }, `${scope} (another master): replayed`)
  }
  t.same(resyncs.map(([message]) => message), [{ scope: lost.scope, reason: 'epoch' }], 'a resync for the restarted master\'s scope alone')

  const seen = collect(socket, 'task:updated')
  await poll('a broadcast from A in the restarted master\'s scope reaches B', async () => {
    await a.app.broadcast(lost.scope, 'task:updated', { n: 2 })
    return seen.length
  }, (n) => n > 0, 30_000, 500)
  const [, meta] = seen[0]!
  t.not(meta.epoch, heads.get(lost.scope)!.epoch, 'in a new epoch')
})

t.test('FLUSHALL on one master: realtime:subscribe with since resyncs its scopes (epoch) and replays the others', { skip: skip ?? false }, async (t) => {
  const { a, b, scopes } = await twoNodes(t)
  const heads = new Map<string, { seq: number, epoch: string }>()
  for (const { scope } of scopes) {
    const first = (await a.app.broadcast(scope, 'task:updated', { n: 1 }))!
    await a.app.broadcast(scope, 'task:updated', { n: 2 })
    heads.set(scope, { seq: 1, epoch: first.epoch! })
  }
  const flushed = scopes[2]!
  await flushed.master.client.flushall()

  const { socket } = await b.connected('u1')
  const resyncs = collect(socket, 'realtime:resync')
  for (const { scope } of scopes) {
    const ack = await request(socket, 'realtime:subscribe', { scope, since: heads.get(scope) })
    if (scope === flushed.scope) t.match(ack, { ok: true, scope, replayed: 0 })
    else t.match(ack, { ok: true, scope, replayed: 1, position: { seq: 2 } }, `${scope} replays the one event after since`)
  }
  t.same(resyncs.map(([message]) => message), [{ scope: flushed.scope, reason: 'epoch' }])
  const next = (await a.app.broadcast(flushed.scope, 'task:updated', { n: 3 }))!
  t.equal(next.seq, 1, 'the flushed scope starts again at seq 1')
  t.not(next.epoch, heads.get(flushed.scope)!.epoch, 'in a new epoch')
})

t.test('an app\'s own Cluster: duplicated, never closed by the plugin; redis: true over a fastify.redis that is one', { skip: skip ?? false }, async (t) => {
  const servers = await redisCluster(t)
  const keyPrefix = `${uniq('own')}:`
  const appCluster = new Cluster(servers.nodes, { keyPrefix })
  t.teardown(() => { appCluster.disconnect() })
  const a = await build(t, { rooms: () => ['team:1'], redis: appCluster, cluster: FAST })
  const b = await build(t, { rooms: () => ['team:1'], redis: true, cluster: FAST }, {
    before: (app) => { app.decorate('redis', appCluster as never) }
  })
  const { socket } = await b.connected('u1')
  const seen = collect(socket, 'task:updated')
  await a.app.broadcast('team:1', 'task:updated', { n: 1 })
  await until(() => seen.length === 1, 'delivered from A to B')
  t.equal(await appCluster.exists('rt:m:{team:1}'), 1, 'the plugin wrote under the app cluster\'s key prefix')
  await a.app.close()
  await b.app.close()
  t.equal(appCluster.status, 'ready', 'the app\'s own cluster client is still open')
  t.equal(await appCluster.ping(), 'PONG')
})
