// Presence in Redis from inside the test process: what Redis holds, Redis going away and coming
// back, and a node that another one took for dead writing its counts again.
import t from 'tap'
import type { Socket } from 'socket.io-client'
import type { PresenceDiff } from '../src/index.js'
import { poll, RECONNECTING } from './cluster-helper.js'
import { ManualClock } from './clock.js'
import { build, processFaults, request, waitFor, within } from './helper.js'
import { REDIS_HOST, ownRedis, redisClient, redisOptions } from './redis-helper.js'

const faults = processFaults()
const FAST = { heartbeatMs: 100, nodeTtlMs: 1500 }

async function nextDiff (clock: ManualClock, socket: Socket): Promise<PresenceDiff> {
  const next = waitFor<[PresenceDiff]>(socket, 'realtime:presence_diff')
  clock.advance(1000)
  return (await within(next, 10_000, 'a presence diff'))[0]
}

/** A node with presence on the shared Redis (a key prefix of the test's own), u1 present in team:1. */
async function u1Present (t: Parameters<typeof build>[0]) {
  const redis = redisOptions(t)
  const clock = new ManualClock()
  const { app, connected } = await build(t, { rooms: () => ['team:1'], redis: { ...redis }, presence: true, clock, cluster: FAST })
  const { socket } = await connected('u1')
  await nextDiff(clock, socket)
  return { redis, clock, app }
}

t.test('what Redis holds: one hash and one sorted set per scope, tagged with the scope, expiring', async (t) => {
  const { redis, app } = await u1Present(t)
  const client = redisClient(t)
  const keys = (await client.keys(`${redis.keyPrefix}rt:p*`)).map((key) => key.slice(redis.keyPrefix.length)).sort()
  const nodeId = (await app.realtime.stats()).node.id
  t.same(keys, ['rt:p:{team:1}', 'rt:presence:{nodes}', `rt:presence:{nodes}:${nodeId}`, 'rt:ps:{team:1}'])
  for (const key of keys) {
    const ttl = await client.pttl(redis.keyPrefix + key)
    t.ok(ttl > 0 && ttl <= 3_600_000, `${key} expires (${ttl} ms)`)
  }
  t.same(await client.smembers(`${redis.keyPrefix}rt:presence:{nodes}:${nodeId}`), ['team:1'])
  await app.close()
  t.same(await client.keys(`${redis.keyPrefix}rt:p*`), [], 'a node that closes takes its counts and its list of scopes out')
})

t.test('Redis away: reads refuse with a code, writes wait, and catch up once it is back', async (t) => {
  const own = await ownRedis(t)
  const clock = new ManualClock()
  const { app, connected } = await build(t, {
    rooms: () => ['team:1'],
    redis: { host: REDIS_HOST, port: own.port },
    presence: true,
    clock,
    cluster: FAST
  })
  const watcher = await connected('u1', RECONNECTING)
  t.match(await nextDiff(clock, watcher.socket), { joins: [{ userId: 'u1' }] })

  await own.kill()
  await poll('the plugin sees Redis gone', async () => (await app.inject('/health/realtime')).statusCode, (code) => code === 503)
  const before = faults.count
  await t.rejects(app.realtime.presence('team:1'), { code: 'FST_REALTIME_PRESENCE_UNAVAILABLE' })
  t.match(await request(watcher.socket, 'realtime:presence', { scope: 'team:1' }), { ok: false, error: { code: 'UNAVAILABLE' } })
  await connected('u2', RECONNECTING)
  clock.advance(1000) // the write fails and is tried again at the next turn
  clock.advance(1000)

  // a Redis that comes back empty: this node writes its counts again (its clients also reconnect,
  // since a node that could not hear Redis closes their transports)
  await own.start()
  const back = await poll('both present again', async () => {
    clock.advance(1000)
    return await app.realtime.presence('team:1').catch(() => null)
  }, (snapshot) => snapshot?.count === 2, 20_000, 100)
  t.same(back!.users.map((u) => u.userId).sort(), ['u1', 'u2'])
  t.same(await faults.since(before), [], 'nothing rejected unhandled while Redis was away')
})

t.test('a node another one took for dead writes its counts again', async (t) => {
  const { redis, clock, app } = await u1Present(t)
  const nodeId = (await app.realtime.stats()).node.id
  // what another node's sweep does to a node whose heartbeat it saw expire
  const client = redisClient(t)
  await client.del(`${redis.keyPrefix}rt:p:{team:1}`, `${redis.keyPrefix}rt:ps:{team:1}`, `${redis.keyPrefix}rt:presence:{nodes}:${nodeId}`)
  await client.srem(`${redis.keyPrefix}rt:presence:{nodes}`, nodeId)
  t.match(await app.realtime.presence('team:1'), { count: 0 })
  const back = await poll('the counts written again', async () => {
    clock.advance(1000)
    return await app.realtime.presence('team:1')
  }, (snapshot) => snapshot.count === 1, 10_000, 50)
  t.match(back, { users: [{ userId: 'u1', connections: 1 }] })
  t.same(await client.smembers(`${redis.keyPrefix}rt:presence:{nodes}:${nodeId}`), ['team:1'], 'and its list of scopes')
})
