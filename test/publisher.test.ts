import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { Redis } from 'ioredis'
import { decode } from 'notepack.io'
import { Type } from 'typebox'
import { CHANNEL_KEY } from '../src/cluster.js'
import { createPublisher, type Publisher, type PublisherOptions } from '../src/publisher/index.js'
import { roomMessage } from '../src/publisher/wire.js'
import { poll } from './cluster-helper.js'
import { build, collect, flush, processFaults, tokenFor, uniq, waitFor, type Teardown } from './helper.js'
import { clientList, deleteKeys, freePort, ownRedis, redisClient, redisOptions, REDIS_HOST, REDIS_PORT } from './redis-helper.js'

const faults = processFaults()

const WORKER = fileURLToPath(new URL('./fixtures/publisher-worker.ts', import.meta.url))
const TSX_LOADER = new URL('../node_modules/tsx/dist/loader.mjs', import.meta.url).href

type Answer = { meta: Record<string, any> } | { code: string, message: string }

/** Runs test/fixtures/publisher-worker.ts in its own process and resolves with its answers once it has exited by itself. */
async function runWorker (t: Teardown, keyPrefix: string, broadcasts: unknown[]): Promise<Answer[]> {
  const child = spawn(process.execPath, ['--import', TSX_LOADER, WORKER], {
    env: { ...process.env, REDIS_PORT: String(REDIS_PORT), KEY_PREFIX: keyPrefix, BROADCASTS: JSON.stringify(broadcasts) },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  const [code] = await once(child, 'exit') as [number | null]
  if (code !== 0) throw new Error(`worker exited with ${code}: ${out}`)
  return out.trim().split('\n').map((line) => JSON.parse(line) as Answer)
}

/** A publisher closed at teardown. */
function publisherFor (t: Teardown, options: PublisherOptions): Publisher {
  const publisher = createPublisher(options)
  t.teardown(() => publisher.close())
  return publisher
}

/** The code and message a rejection carries. */
async function failure (promise: Promise<unknown>): Promise<{ code: string, message: string }> {
  try {
    await promise
  } catch (err) {
    const { code, message } = err as { code: string, message: string }
    return { code, message }
  }
  throw new Error('resolved instead of rejecting')
}

t.test('a worker process publishes; clients on two nodes get it live, with the seq the nodes continue, and a late client gets it replayed', async (t) => {
  const redis = redisOptions(t)
  const a = await build(t, { rooms: () => ['team:1'], redis })
  const b = await build(t, { rooms: () => ['team:1'], redis: { ...redis } })
  const onA = await a.connected('u1')
  const onB = await b.connected('u2')
  const start = onB.ready.positions['team:1']!
  const seenA = collect(onA.socket, 'incident:created')
  const seenB = collect(onB.socket, 'incident:created')

  const first = await a.app.broadcast('team:1', 'incident:created', { n: 1 })
  const answers = await runWorker(t, redis.keyPrefix, [
    ['team:1', 'incident:created', { n: 2 }, { by: 'scheduler' }],
    ['team:1', 'incident:created', { n: 3 }, { by: { id: 'cron', name: 'Escalation' } }]
  ])
  const metas = answers.map((answer) => (answer as { meta: Record<string, any> }).meta)
  t.match(metas, [
    { scope: 'team:1', seq: 2, epoch: first!.epoch, by: 'scheduler', stored: true },
    { scope: 'team:1', seq: 3, epoch: first!.epoch, by: { id: 'cron', name: 'Escalation' }, stored: true }
  ], 'the worker continues the scope\'s seq in the same epoch, and answers with the meta as fastify.broadcast does')
  t.same(Object.keys(metas[0]!), ['id', 'scope', 'seq', 'epoch', 'at', 'by', 'stored'], 'the meta\'s fields, in the plugin\'s order')
  const last = await b.app.broadcast('team:1', 'incident:created', { n: 4 })
  t.equal(last!.seq, 4, 'and the nodes go on after it')

  await Promise.all([flush(onA.socket), flush(onB.socket)])
  for (const [name, seen] of [['client on A', seenA], ['client on B', seenB]] as const) {
    t.same(seen.map(([payload, meta]) => [payload, meta.seq]), [[{ n: 1 }, 1], [{ n: 2 }, 2], [{ n: 3 }, 3], [{ n: 4 }, 4]], `${name}: every event once, in order`)
    const { stored: _stored, ...live } = metas[0]!
    t.same(seen[1]![1], live, `${name}: the worker's event carries the meta it answered with (without stored)`)
  }

  const late = b.client({ token: tokenFor('u3'), since: { 'team:1': start } })
  const replayed = collect(late, 'incident:created')
  await waitFor(late, 'realtime:ready')
  t.same(replayed.map(([payload, meta]) => [payload, meta.seq, meta.replayed, meta.by]), [
    [{ n: 1 }, 1, true, undefined],
    [{ n: 2 }, 2, true, 'scheduler'],
    [{ n: 3 }, 3, true, { id: 'cron', name: 'Escalation' }],
    [{ n: 4 }, 4, true, undefined]
  ], 'a client catching up gets the worker\'s events like any other')
})

t.test('the message is the one the adapter itself publishes for io.to(room).emit()', async (t) => {
  const redis = redisOptions(t)
  const a = await build(t, { rooms: () => ['team:1'], redis })
  await a.connected('u1')
  const listener = redisClient(t)
  const heard: Buffer[] = []
  const channel = `${redis.keyPrefix}${CHANNEL_KEY}#/#team:1#`
  listener.on('messageBuffer', (name: Buffer, message: Buffer) => { if (name.toString() === channel) heard.push(message) })
  await listener.subscribe(channel)

  a.app.io.to('team:1').emit('e', { x: 1 }, { m: 2 })
  const writer = redisClient(t)
  const { channel: to, body } = roomMessage(redis.keyPrefix, { room: 'team:1', data: ['e', { x: 1 }, { m: 2 }] })
  t.equal(to, channel, 'on the channel the adapter uses for one room')
  await writer.publish(to, body)
  while (heard.length < 2) await once(listener, 'messageBuffer')
  const [fromNode, fromPublisher] = heard.map((message) => decode(message) as [string, unknown, unknown])
  t.same(fromPublisher![1], fromNode![1], 'the same packet')
  t.same(fromPublisher![2], fromNode![2], 'the same options')
  t.not(fromPublisher![0], fromNode![0], 'under a uid that is no node\'s')
})

t.test('an idempotency key is honoured across the publisher and the plugin', async (t) => {
  const redis = redisOptions(t)
  const a = await build(t, { rooms: () => ['team:1'], redis })
  const { socket } = await a.connected('u1')
  const seen = collect(socket, 'n')
  const publisher = publisherFor(t, { redis: { host: REDIS_HOST, port: REDIS_PORT }, keyPrefix: redis.keyPrefix })

  const sent = await publisher.broadcast('team:1', 'n', 1, { idempotencyKey: 'job-1', by: 'worker' })
  const again = await a.app.broadcast('team:1', 'n', 1, { idempotencyKey: 'job-1' })
  t.same(again, sent, 'the plugin answers a key the publisher used with the first call\'s meta')
  const fromApp = await a.app.broadcast('team:1', 'n', 2, { idempotencyKey: 'job-2' })
  const repeat = await publisher.broadcast('team:1', 'n', 2, { idempotencyKey: 'job-2' })
  t.same(repeat, fromApp, 'and the publisher one the plugin used')
  t.same(await publisher.broadcast('team:1', 'n', 1, { idempotencyKey: 'job-1' }), sent, 'a repeat from the same publisher too')
  await flush(socket)
  t.same(seen.map(([payload, meta]) => [payload, meta.seq]), [[1, 1], [2, 2]], 'each delivered once')
})

t.test('the publisher refuses exactly what fastify.broadcast refuses, with the same codes and messages', async (t) => {
  const redis = redisOptions(t)
  const events = { 'incident:created': Type.Object({ id: Type.String(), level: Type.Integer({ minimum: 1 }) }) }
  const a = await build(t, { rooms: () => ['team:1'], redis, events })
  const publisher = publisherFor(t, { redis: { ...redis }, events })
  const big = 'x'.repeat(2000)
  const cycle: Record<string, unknown> = {}
  cycle.self = cycle
  const calls: Array<[string, unknown[]]> = [
    ['bad scope', ['Team 1', 'e', 1]],
    ['empty event', ['team:1', '', 1]],
    ['reserved event', ['team:1', 'realtime:ready', 1]],
    ['Socket.IO\'s own event', ['team:1', 'disconnect', 1]],
    ['options not an object', ['team:1', 'e', 1, 'x']],
    ['by too large', ['team:1', 'e', 1, { by: big }]],
    ['by of the wrong type', ['team:1', 'e', 1, { by: [1] }]],
    ['empty except', ['team:1', 'e', 1, { except: '' }]],
    ['long idempotency key', ['team:1', 'e', 1, { idempotencyKey: big }]],
    ['volatile not a boolean', ['team:1', 'e', 1, { volatile: 'yes' }]],
    ['payload off its schema', ['team:1', 'incident:created', { id: 'i1', level: 0 }]],
    ['payload of the wrong type', ['team:1', 'incident:created', 'i1']],
    ['payload that cannot be serialised', ['team:1', 'e', { n: 1n }]],
    ['volatile payload that cannot be serialised', ['team:1', 'e', { n: 1n }, { volatile: true }]],
    ['payload that is stored but cannot be sent', ['team:1', 'e', { s: Symbol('s') }]]
  ]
  for (const [what, args] of calls) {
    const fromApp = await failure((a.app.broadcast as (...args: unknown[]) => Promise<unknown>)(...args))
    const fromPublisher = await failure((publisher.broadcast as (...args: unknown[]) => Promise<unknown>)(...args))
    t.same(fromPublisher, fromApp, `${what}: ${fromApp.code}`)
  }
  t.ok(await publisher.broadcast('team:1', 'incident:created', { id: 'i1', level: 2 }), 'a payload that fits its schema goes out')
  const { socket } = await a.connected('u1')
  const cyclic = await failure(publisher.broadcast('team:1', 'e', cycle))
  t.equal(cyclic.code, 'FST_REALTIME_INVALID_PAYLOAD', 'a cycle is the caller\'s mistake, not an outage')
  const skipped = waitFor<[{ scope: string, seq: number }]>(socket, 'realtime:skip')
  t.equal((await failure(publisher.broadcast('team:1', 'e', { s: Symbol('s') }))).code, 'FST_REALTIME_INVALID_PAYLOAD')
  const [skip] = await skipped
  t.match(skip, { scope: 'team:1' }, 'the seq it took in the log is skipped for the clients, as a node does')
  t.equal(skip.seq, (await a.app.broadcast('team:1', 'e', 'next'))!.seq! - 1)
  t.throws(() => createPublisher({ redis: { ...redis }, events: { bad: 42 as never } }), { code: 'FST_REALTIME_INVALID_OPTION' })
  t.throws(() => createPublisher({ redis: { ...redis }, keyPrefix: 'a*' }), { code: 'FST_REALTIME_INVALID_OPTION' })
  // where the plugin takes it from: the prefix in `redis`, as a URL's options or a client of the app's
  t.throws(() => createPublisher({ redis: { ...redis, keyPrefix: 'a*' } }), { code: 'FST_REALTIME_INVALID_OPTION', message: /keyPrefix/ })
  const globbed = new Redis({ ...redis, keyPrefix: 'b?', lazyConnect: true })
  t.teardown(() => { globbed.disconnect() })
  t.throws(() => createPublisher({ redis: globbed }), { code: 'FST_REALTIME_INVALID_OPTION', message: /keyPrefix/ })
  t.throws(() => createPublisher({ redis: 42 as never }), { code: 'FST_REALTIME_INVALID_OPTION' })
  t.throws(() => createPublisher({ redis: { ...redis }, history: { ttl: 0 } }), { code: 'FST_REALTIME_INVALID_OPTION' })
})

t.test('with Redis unreachable, broadcast rejects with FST_REALTIME_REDIS_UNAVAILABLE, and works again once it is back', async (t) => {
  const nowhere = publisherFor(t, { redis: { host: REDIS_HOST, port: await freePort() }, connectTimeoutMs: 2000 })
  t.equal((await failure(nowhere.broadcast('team:1', 'e', 1))).code, 'FST_REALTIME_REDIS_UNAVAILABLE', 'never connected')
  t.equal((await failure(nowhere.broadcast('team:1', 'e', 1, { volatile: true }))).code, 'FST_REALTIME_REDIS_UNAVAILABLE', 'volatile too')

  const server = await ownRedis(t)
  const publisher = publisherFor(t, { redis: { host: REDIS_HOST, port: server.port }, keyPrefix: `${uniq('pub')}:` })
  const first = await publisher.broadcast('team:1', 'e', 1)
  t.equal(first.seq, 1)
  await server.kill()
  t.equal((await failure(publisher.broadcast('team:1', 'e', 2))).code, 'FST_REALTIME_REDIS_UNAVAILABLE', 'a connection that dropped')
  t.equal((await failure(publisher.broadcast('team:1', 'e', 2, { volatile: true }))).code, 'FST_REALTIME_REDIS_UNAVAILABLE', 'volatile too: nothing was delivered')
  await server.start()
  // ioredis reconnects by itself; until then every call rejects at once, and the worker retries
  const meta = await poll('a broadcast once Redis is back', async () => await publisher.broadcast('team:1', 'e', 2), () => true, 15_000, 50)
  t.equal(meta.stored, true, 'a retry after Redis is back is delivered and stored')
  t.not(meta.epoch, first.epoch, 'in a new epoch: the restarted Redis lost the log')
})

t.test('close: one connection of its own, closed once; broadcast after close rejects; a client passed in is left open', async (t) => {
  const redis = redisOptions(t)
  const name = uniq('conn')
  const app = new Redis({ ...redis, connectionName: name })
  t.teardown(() => { app.disconnect() })
  await app.ping()
  const publisher = createPublisher({ redis: app })
  const admin = redisClient(t)
  const meta = await publisher.broadcast('team:1', 'e', 1)
  t.equal(meta.seq, 1, 'keys under the keyPrefix of the client passed in')
  t.equal(await admin.exists(`${redis.keyPrefix}rt:m:{team:1}`), 1)
  t.same((await clientList(admin)).filter((c) => c.name === name).length, 2, 'the app\'s client and one connection of the publisher\'s')
  await Promise.all([publisher.close(), publisher.close()])
  await publisher.close()
  await poll('the publisher\'s connection closed', async () => (await clientList(admin)).filter((c) => c.name === name).length, (n) => n === 1)
  t.equal(app.status, 'ready', 'the client passed in is not')
  t.same(await failure(publisher.broadcast('team:1', 'e', 2)), {
    code: 'FST_REALTIME_PUBLISHER_CLOSED',
    message: 'The publisher is closed: create a new one to broadcast'
  })

  const unused = createPublisher({ redis: { ...redis } })
  await unused.close()
  t.equal((await failure(unused.broadcast('team:1', 'e', 1))).code, 'FST_REALTIME_PUBLISHER_CLOSED', 'closing one that never connected')
})

t.test('a publisher under another key prefix reaches nobody; history: false sends volatile events', async (t) => {
  const redis = redisOptions(t)
  const a = await build(t, { rooms: () => ['team:1'], redis })
  const { socket } = await a.connected('u1')
  const seen = collect(socket, 'e')
  const skips = collect(socket, 'realtime:skip')
  const otherPrefix = `${uniq('frt')}:`
  t.teardown(() => deleteKeys(REDIS_PORT, otherPrefix))
  const other = publisherFor(t, { redis: { ...redis }, keyPrefix: otherPrefix })
  const elsewhere = await other.broadcast('team:1', 'e', 'elsewhere')
  t.equal(elsewhere.seq, 1, 'stored in its own log')
  const volatile = publisherFor(t, { redis: { ...redis }, history: false })
  const sent = await volatile.broadcast('team:1', 'e', 'volatile')
  t.same(Object.keys(sent), ['id', 'scope', 'at', 'stored'], 'no seq, no epoch')
  t.equal(sent.stored, false)
  const publisher = publisherFor(t, { redis: { ...redis } })
  const kept = await publisher.broadcast('team:1', 'e', 'kept', { except: socket.id! })
  await flush(socket)
  t.same(seen.map(([payload]) => payload), ['volatile'], 'only the one under the nodes\' prefix arrives; except leaves the socket out')
  t.same(skips.map(([message]) => message), [{ scope: 'team:1', seq: kept.seq, epoch: kept.epoch }], 'and tells it the seq moved on')
})

t.test('nothing went unhandled', async (t) => {
  t.same(await faults.since(), [], 'no unhandled rejection in this process')
})
