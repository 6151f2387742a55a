import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { MemoryHistoryStore, type HistoryStore } from '../src/index.js'
import { poll } from './cluster-helper.js'
import { build, processFaults, waitFor, type Teardown } from './helper.js'
import type { Redis } from 'ioredis'
import { ManualClock } from './clock.js'
import { ownRedis, redisClient, REDIS_HOST } from './redis-helper.js'

const faults = processFaults()

interface Health {
  websocket: { enabled: boolean, connections: number }
  node: { id: string, connections: number }
  cluster?: { nodes: number, connections: number }
  history: { store: string, ok: boolean }
}

async function health (url: string, path = '/health/realtime'): Promise<{ status: number, body: Health, headers: Headers }> {
  const res = await fetch(`${url}${path}`)
  return { status: res.status, body: await res.json() as Health, headers: res.headers }
}

/** Polls the route until `connections` is `want`; a bounded loop of round trips, no timers. */
async function connectionsReach (url: string, want: number): Promise<number> {
  let seen = -1
  for (let i = 0; i < 500; i++) {
    seen = (await health(url)).body.websocket.connections
    if (seen === want) return seen
    await new Promise((resolve) => setImmediate(resolve))
  }
  return seen
}

/** A store that keeps events in memory and answers ping() as told. */
function storeWithPing (t: Teardown, kind: string, ping: HistoryStore['ping']): HistoryStore {
  const inner = new MemoryHistoryStore()
  t.teardown(() => inner.close())
  return {
    kind,
    append: (scope, entry) => inner.append(scope, entry),
    read: (scope, since) => inner.read(scope, since),
    position: (scope) => inner.position(scope),
    ...(ping === undefined ? {} : { ping })
  }
}

async function nodeId (app: FastifyInstance): Promise<string> {
  return (await app.realtime.stats()).node.id
}

t.test('GET /health/realtime: exact shape on one node, no cluster key', async (t) => {
  const { app, url } = await build(t)
  const { status, body, headers } = await health(url)
  t.equal(status, 200)
  t.same(body, {
    websocket: { enabled: true, connections: 0 },
    node: { id: await nodeId(app), connections: 0 },
    history: { store: 'memory', ok: true }
  })
  t.same(Object.keys(body).sort(), ['history', 'node', 'websocket'], 'no other keys')
  t.same(Object.keys(body.websocket).sort(), ['connections', 'enabled'], 'websocket is exactly { enabled, connections }')
  t.type(body.node.id, 'string')
  t.ok(body.node.id.length > 0, 'node id is not empty')
  t.equal(headers.get('cache-control'), 'no-store', 'never cached')
})

t.test('connection counts go up with clients and back down when they leave', async (t) => {
  const { url, connected } = await build(t)
  const a = await connected('u1')
  const b = await connected('u2')
  const two = await health(url)
  t.equal(two.status, 200)
  t.equal(two.body.websocket.connections, 2)
  t.equal(two.body.node.connections, 2)

  const gone = waitFor(a.socket, 'disconnect')
  a.socket.disconnect()
  await gone
  t.equal(await connectionsReach(url, 1), 1, 'one left')
  b.socket.disconnect()
  t.equal(await connectionsReach(url, 0), 0, 'none left')
  const after = await health(url)
  t.same([after.body.websocket.connections, after.body.node.connections], [0, 0], 'websocket and node agree')
})

t.test('health: { path } moves the route', async (t) => {
  const { url } = await build(t, { health: { path: '/ops/rt' } })
  const moved = await health(url, '/ops/rt')
  t.equal(moved.status, 200)
  t.same(moved.body.websocket, { enabled: true, connections: 0 })
  t.equal((await fetch(`${url}/health/realtime`)).status, 404, 'not at the default path any more')
})

t.test('health: false removes the route', async (t) => {
  const { url, app } = await build(t, { health: false })
  t.equal((await fetch(`${url}/health/realtime`)).status, 404)
  t.notOk(app.hasRoute({ method: 'GET', url: '/health/realtime' }))
})

t.test('a store whose ping() says false: 503, same shape, ok: false', async (t) => {
  const { app, url } = await build(t, { history: { store: storeWithPing(t, 'custom', () => false) } })
  const { status, body } = await health(url)
  t.equal(status, 503)
  t.same(body, {
    websocket: { enabled: true, connections: 0 },
    node: { id: await nodeId(app), connections: 0 },
    history: { store: 'custom', ok: false }
  })
})

t.test('a store whose ping() rejects, or never answers: 503, the route still answers', async (t) => {
  const failing = await build(t, { history: { store: storeWithPing(t, 'failing', async () => { throw new Error('down') }) } })
  const failed = await health(failing.url)
  t.equal(failed.status, 503)
  t.same(failed.body.history, { store: 'failing', ok: false })

  const hanging = await build(t, { history: { store: storeWithPing(t, 'hanging', () => new Promise<boolean>(() => {})) } })
  const hung = await health(hanging.url)
  t.equal(hung.status, 503)
  t.same(hung.body.history, { store: 'hanging', ok: false })
})

t.test('a custom store without ping() counts as ok; ping() true is 200', async (t) => {
  const without = await build(t, { history: { store: storeWithPing(t, 'no-ping', undefined) } })
  const a = await health(without.url)
  t.equal(a.status, 200)
  t.same(a.body.history, { store: 'no-ping', ok: true })
  const withPing = await build(t, { history: { store: storeWithPing(t, 'pinging', async () => true) } })
  const b = await health(withPing.url)
  t.equal(b.status, 200)
  t.same(b.body.history, { store: 'pinging', ok: true })
})

t.test('history: false reports store none', async (t) => {
  const { app, url } = await build(t, { history: false })
  const { status, body } = await health(url)
  t.equal(status, 200)
  t.same(body, {
    websocket: { enabled: true, connections: 0 },
    node: { id: await nodeId(app), connections: 0 },
    history: { store: 'none', ok: true }
  })
})

t.test('with redis configured, health is 503 while Redis is unreachable, whatever holds the history', async (t) => {
  const redis = await ownRedis(t)
  const redisAt = (keyPrefix: string): { host: string, port: number, keyPrefix: string } => ({ host: REDIS_HOST, port: redis.port, keyPrefix })
  const cluster = { heartbeatMs: 100, nodeTtlMs: 1500 }
  const cases = [
    { name: 'history in Redis', options: { redis: redisAt('h1:'), cluster }, history: 'redis', okWhileDown: false },
    { name: 'history: false', options: { redis: redisAt('h2:'), cluster, history: false as const }, history: 'none', okWhileDown: true },
    { name: 'memory store', options: { redis: redisAt('h3:'), cluster, history: { store: 'memory' as const } }, history: 'memory', okWhileDown: true },
    { name: 'custom store', options: { redis: redisAt('h4:'), cluster, history: { store: storeWithPing(t, 'custom', async () => true) } }, history: 'custom', okWhileDown: true }
  ]
  const apps = []
  for (const c of cases) apps.push({ ...c, ...(await build(t, c.options)) })

  for (const { name, url, history } of apps) {
    const up = await health(url)
    t.equal(up.status, 200, `${name}: 200 while Redis is up`)
    t.same(up.body.history, { store: history, ok: true })
  }

  await redis.kill()
  for (const { name, url, history, okWhileDown } of apps) {
    const down = await poll(`${name}: 503`, async () => await health(url), (res) => res.status === 503)
    t.same(Object.keys(down.body).filter((key) => key !== 'cluster').sort(), ['history', 'node', 'websocket'], `${name}: same shape`)
    t.same(down.body.websocket, { enabled: true, connections: 0 })
    t.same(down.body.history, { store: history, ok: okWhileDown }, `${name}: history.ok is about the store alone`)
  }

  await redis.start()
  for (const { name, url } of apps) {
    await poll(`${name}: 200 again`, async () => await health(url), (res) => res.status === 200, 15_000)
  }
  t.pass('every combination is healthy again by itself')
})

t.test('health.routeOptions are merged into the route: onRequest auth, logLevel, config', async (t) => {
  const lines: string[] = []
  const { url } = await build(t, {
    health: {
      routeOptions: {
        logLevel: 'warn',
        config: { probe: true },
        onRequest: async (request, reply) => {
          if (request.headers['x-probe-key'] !== 'k3y') return await reply.code(401).send({ error: 'probe key required' })
          t.same(request.routeOptions.config, { probe: true, url: '/health/realtime', method: 'GET' }, 'the config reaches the route')
        }
      }
    }
  }, { fastify: { logger: { level: 'info', stream: { write: (line: string) => { lines.push(line) } } } } })
  t.equal((await fetch(`${url}/health/realtime`)).status, 401, 'no key: refused by the app\'s onRequest')
  const res = await fetch(`${url}/health/realtime`, { headers: { 'x-probe-key': 'k3y' } })
  t.equal(res.status, 200)
  t.same(((await res.json()) as Health).websocket, { enabled: true, connections: 0 })
  t.notOk(lines.some((line) => line.includes('/health/realtime')), 'logLevel warn: no request lines for the probe')
})

t.test('health.details: false shows only websocket, and the status code still tells', async (t) => {
  const { url } = await build(t, { health: { details: false } })
  const ok = await fetch(`${url}/health/realtime`)
  t.equal(ok.status, 200)
  t.same(await ok.json(), { websocket: { enabled: true, connections: 0 } })
  const failing = await build(t, { health: { details: false }, history: { store: storeWithPing(t, 'custom', () => false) } })
  const down = await fetch(`${failing.url}/health/realtime`)
  t.equal(down.status, 503)
  t.same(await down.json(), { websocket: { enabled: true, connections: 0 } }, 'no store name, no node id')
})

t.test('health.cacheMs: the checks run once per period, on the plugin clock; live counts are never cached', async (t) => {
  const clock = new ManualClock()
  let pings = 0
  const store = storeWithPing(t, 'counted', async () => { pings++; return true })
  const { url, connected } = await build(t, { clock, history: { store } })
  await Promise.all(Array.from({ length: 100 }, async () => await health(url)))
  t.equal(pings, 1, '100 probes at once: one ping')
  await connected('u1')
  t.equal((await health(url)).body.websocket.connections, 1, 'connections are live')
  t.equal(pings, 1, 'still cached')
  clock.advance(999)
  await health(url)
  t.equal(pings, 1, 'within the period')
  clock.advance(1)
  await health(url)
  t.equal(pings, 2, 'after 1000 ms, checked again')

  const uncached = await build(t, { clock, health: { cacheMs: 0 }, history: { store: storeWithPing(t, 'every', async () => { pings++; return true }) } })
  pings = 0
  for (let i = 0; i < 3; i++) await health(uncached.url)
  t.equal(pings, 3, 'cacheMs 0: every request checks')
})

/** Calls per command on a Redis, from INFO commandstats. */
async function commandCalls (client: Redis): Promise<Map<string, number>> {
  const info = await client.info('commandstats')
  const calls = new Map<string, number>()
  for (const [, name, n] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(name!, Number(n))
  return calls
}

t.test('a storm of 1,000 probes costs Redis a handful of commands (INFO commandstats on a Redis of the test\'s own)', async (t) => {
  const redis = await ownRedis(t)
  const clock = new ManualClock()
  const { url } = await build(t, {
    clock,
    redis: { host: REDIS_HOST, port: redis.port, keyPrefix: 'storm:' },
    cluster: { heartbeatMs: 10_000, nodeTtlMs: 30_000 }
  })
  const probe = redisClient(t, redis.port)
  const before = await commandCalls(probe)
  for (let round = 0; round < 20; round++) {
    const answers = await Promise.all(Array.from({ length: 50 }, async () => await health(url)))
    t.ok(answers.every((a) => a.status === 200 && a.body.cluster?.nodes === 1), `round ${round}: 50 healthy answers with the cluster figures`, { diagnostic: false })
  }
  const after = await commandCalls(probe)
  const spent = (from: Map<string, number>, to: Map<string, number>, name: string): number => (to.get(name) ?? 0) - (from.get(name) ?? 0)
  const listed = (from: Map<string, number>, to: Map<string, number>): string => [...to.keys()].filter((n) => n !== 'info' && spent(from, to, n) > 0).map((n) => `${n} ${spent(from, to, n)}`).join(', ')
  // commandstats also counts the commands a script runs (the cluster counts are one EVAL of TIME, ZRANGEBYSCORE, HMGET)
  t.comment(`commands for 1,000 probes: ${listed(before, after)}`)
  t.equal(spent(before, after, 'ping'), 2, 'one PING for the Redis connection, one for the history store')
  // the heartbeat (every 10 s) may land in the storm too: one more script
  t.ok(spent(before, after, 'eval') + spent(before, after, 'evalsha') <= 2, 'the cluster figures read once (a heartbeat at most besides)')

  clock.advance(1000)
  await health(url)
  const next = await commandCalls(probe)
  t.equal(spent(after, next, 'ping'), 2, 'once the period is over, the next probe checks again')
})

t.test('no unhandled rejections in this file', async (t) => {
  t.same(await faults.since(), [])
})
