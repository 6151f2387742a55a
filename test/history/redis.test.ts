import t from 'tap'
import { Redis } from 'ioredis'
import { RedisHistoryStore, type HistoryEntry, type HistoryStore, type Position, type RedisHistoryOptions } from '../../src/index.js'
import { until, type Teardown } from '../helper.js'
import { deleteKeys, redisOptions, REDIS_PORT } from '../redis-helper.js'
import { storeContract } from './contract.js'

const DAY_MS = 24 * 60 * 60 * 1000

/** A client set up like the plugin's own: commands fail at once while Redis is away. */
function pluginLikeClient (t: Teardown, options = redisOptions(t)): Redis {
  const client = new Redis({
    ...options,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0
  })
  client.on('error', () => {})
  t.teardown(() => { client.disconnect() })
  return client
}

/** Closes the client's connection and resolves once it is closed: commands then fail at once. */
async function cut (client: Redis): Promise<void> {
  const ended = new Promise<void>((resolve) => client.once('end', resolve))
  client.disconnect()
  await ended
}

async function ready (client: Redis): Promise<void> {
  if (client.status === 'ready') return
  await new Promise<void>((resolve) => client.once('ready', resolve))
}

function entry (n: number | string): HistoryEntry {
  return { id: `e${n}`, event: 'n', payload: n, at: Date.now() }
}

// every case gets an empty store of its own: a fresh key prefix, deleted at the end; losing
// its logs is a flush of that prefix (the store id included)
const prefixes = new WeakMap<HistoryStore, string>()
storeContract(t, 'redis', {
  make: async (opts) => {
    const options = redisOptions(t)
    const client = new Redis(options)
    const store = new RedisHistoryStore(opts)
    store.attach(client)
    prefixes.set(store, options.keyPrefix)
    return Object.assign(store, { close: () => { client.disconnect() } })
  },
  lose: async (store) => {
    await deleteKeys(REDIS_PORT, prefixes.get(store)!)
    return store
  },
  appendOnce: true
})

/** A Redis store on a connection of its own under a fresh key prefix, closed at teardown. */
function attached (t: Teardown, options: RedisHistoryOptions): { client: Redis, store: RedisHistoryStore } {
  const client = new Redis(redisOptions(t))
  t.teardown(() => { client.disconnect() })
  const store = new RedisHistoryStore(options)
  store.attach(client)
  return { client, store }
}

t.test('redis: append, trim and expiry happen together; the position outlives the events', async (t) => {
  const { client, store } = attached(t, { ttl: 30, max: 3 })
  for (let i = 1; i <= 4; i++) await store.append('team:1', entry(i))
  t.equal(await client.llen('rt:l:{team:1}'), 3, 'the list holds max events')
  const listTtl = await client.pttl('rt:l:{team:1}')
  t.ok(listTtl > 25_000 && listTtl <= 30_000, `the events expire with the ttl (${listTtl})`)
  const metaTtl = await client.pttl('rt:m:{team:1}')
  t.ok(metaTtl > DAY_MS - 5000 && metaTtl <= DAY_MS, `the position expires a day after the newest append (${metaTtl})`)
})

t.test('redis: a read is one round trip', async (t) => {
  const { client, store } = attached(t, { ttl: 30, max: 10 })
  const first = await store.append('team:1', entry(1))
  await store.append('team:1', entry(2))
  const send = client.sendCommand.bind(client)
  let sent = 0
  client.sendCommand = ((...args: Parameters<Redis['sendCommand']>) => { sent++; return send(...args) }) as Redis['sendCommand']
  const result = await store.read('team:1', { seq: 0, epoch: first.epoch })
  t.equal(result.ok && result.events.length, 2)
  t.equal(sent, 1, 'one command sent for a read')
  sent = 0
  await store.position('team:1')
  t.equal(sent, 1, 'one for a position')
})

t.test('redis: corrupt list entries make a read that needs them a gap, never a throw', async (t) => {
  const { client, store } = attached(t, { ttl: 60, max: 10 })
  const first = await store.append('team:1', entry(1))
  for (let n = 2; n <= 6; n++) await store.append('team:1', entry(n))
  const { epoch } = first
  const now = Date.now()
  // seq 2 … 5 replaced by garbage of every kind; 1 and 6 stay sound
  await client.lset('rt:l:{team:1}', 1, 'garbage')
  await client.lset('rt:l:{team:1}', 2, `3:${now}:{not json`)
  await client.lset('rt:l:{team:1}', 3, `4:soon:${JSON.stringify(entry(4))}`)
  await client.lset('rt:l:{team:1}', 4, `5:${now}:${JSON.stringify({ id: 5, event: null })}`)
  for (const seq of [0, 1, 2, 3, 4]) {
    t.same(await store.read('team:1', { seq, epoch }), { ok: false, reason: 'gap' }, `from seq ${seq}: gap`)
  }
  t.match(await store.read('team:1', { seq: 5, epoch }), { ok: true, events: [{ seq: 6, payload: 6 }] }, 'a read past the damage still works')
  t.same(await store.position('team:1'), { seq: 6, epoch })
  t.same(await store.append('team:1', entry(7)), { seq: 7, epoch }, 'appends go on')
})

t.test('redis: a damaged position reads as a gap, and the next append begins a log no old position covers', async (t) => {
  const { client, store } = attached(t, { ttl: 60, max: 10 })
  const empty = await store.position('team:2')
  await store.append('team:2', entry(0))
  await client.hset('rt:m:{team:2}', 'seq', 'many')
  t.same(await store.read('team:2', empty), { ok: false, reason: 'gap' }, 'no read is ok over a damaged position')
  const fallback = await store.position('team:2')
  t.equal(fallback.seq, 0, 'position still answers')
  const next = await store.append('team:2', entry(1))
  t.equal(next.seq, 1, 'the next append begins a new generation')
  t.same(await store.read('team:2', empty), { ok: false, reason: 'epoch' }, 'which a seq-0 position from before does not cover')
  // one taken while it was damaged joined no earlier than the new generation's first event
  const joined = await store.read('team:2', fallback)
  t.ok(!joined.ok || (joined.events.length === 1 && joined.events[0]!.seq === 1), 'a position taken while damaged: resync, or exactly what came after it')
})

t.test('redis: unstored broadcasts: their scopes get a new, empty generation as soon as the connection is ready, seen by every node', async (t) => {
  const options = redisOptions(t)
  const client = pluginLikeClient(t, options)
  const other = pluginLikeClient(t, options)
  const store = new RedisHistoryStore({ ttl: 60, max: 10 })
  const otherNode = new RedisHistoryStore({ ttl: 60, max: 10 })
  store.attach(client)
  otherNode.attach(other)
  await Promise.all([ready(client), ready(other)])

  const fresh = await store.position('team:fresh')
  t.equal(fresh.seq, 0)
  await store.append('team:used', entry(1))
  const held = await store.append('team:used', entry(2))

  await cut(client)
  await t.rejects(store.append('team:fresh', entry('lost-1')), 'Redis unreachable: the append fails')
  await t.rejects(store.append('team:used', entry('lost-2')))
  // as the plugin does once it has delivered them live all the same
  store.lost('team:fresh')
  store.lost('team:used')
  t.same(await otherNode.read('team:used', held), { ok: true, events: [], position: held }, 'another node cannot know yet')

  await client.connect()
  // no use of `store` from here on until the other node sees the new generation
  await until(async () => !(await otherNode.read('team:used', held)).ok, 'the failed node drops the logs on ready, by itself', 10_000)
  t.pass('the failed node drops the logs on ready, by itself')
  t.same(await otherNode.read('team:used', held), { ok: false, reason: 'epoch' })
  const empty = await otherNode.position('team:used')
  t.equal(empty.seq, 0, 'the new generation is empty')
  t.not(empty.epoch, held.epoch)

  const next = await otherNode.append('team:fresh', entry(3))
  t.equal(next.seq, 1)
  t.same(await otherNode.read('team:fresh', fresh), { ok: false, reason: 'epoch' }, 'a seq-0 position from before the outage does not cover the new log')
  t.same(await store.read('team:fresh', fresh), { ok: false, reason: 'epoch' }, 'on the failed node either')
  const after = await otherNode.position('team:used')
  const stored = await store.append('team:used', entry(4))
  t.same(stored, { seq: 1, epoch: empty.epoch })
  t.match(await otherNode.read('team:used', after), { ok: true, events: [{ seq: 1, payload: 4 }] }, 'positions taken after the drop replay as usual')
})

t.test('redis: a failed append that nobody delivered (a publisher\'s) leaves the scope\'s log and epoch as they were', async (t) => {
  const client = pluginLikeClient(t)
  const store = new RedisHistoryStore({ ttl: 60, max: 10 })
  store.attach(client)
  await ready(client)
  const held = await store.append('team:kept', entry(1))
  await cut(client)
  await t.rejects(store.append('team:kept', entry('not-sent')), 'Redis unreachable: the append fails')
  await client.connect()
  const next = await store.append('team:kept', entry(2))
  t.same(next, { seq: 2, epoch: held.epoch }, 'the log goes on: nothing was delivered that it lacks')
  t.match(await store.read('team:kept', held), { ok: true, events: [{ seq: 2, payload: 2 }] })
})

t.test('redis: appends racing the recovery on ready are never dropped by it', async (t) => {
  const client = pluginLikeClient(t)
  const store = new RedisHistoryStore({ ttl: 60, max: 10 })
  // registered before attach, so these appends go out before the store hears of the ready
  let armed = false
  let racing: Promise<Position[]> | null = null
  const scopes = Array.from({ length: 20 }, (_, i) => `team:r${i}`)
  client.on('ready', () => {
    if (!armed || racing !== null) return
    racing = Promise.all(scopes.flatMap((scope) => [store.append(scope, entry(`${scope}-a`)), store.append(scope, entry(`${scope}-b`))]))
  })
  store.attach(client)
  await ready(client)
  const before = await Promise.all(scopes.map(async (scope) => await store.append(scope, entry(`${scope}-0`))))

  await cut(client)
  for (const scope of scopes) {
    await t.rejects(store.append(scope, entry(`${scope}-lost`)))
    store.lost(scope)
  }
  armed = true
  await client.connect()
  await until(async () => racing !== null, 'the racing appends went out on ready', 10_000)
  t.pass('the racing appends went out on ready')
  const positions = await racing!
  for (const [i, scope] of scopes.entries()) {
    const [a, b] = [positions[2 * i]!, positions[2 * i + 1]!]
    t.not(a.epoch, before[i]!.epoch, `${scope}: appended into the new generation`)
    t.same([a.seq, b.seq].sort((x, y) => x - y), [1, 2])
    const read = await store.read(scope, { seq: 0, epoch: a.epoch })
    t.match(read, { ok: true, events: [{ seq: 1 }, { seq: 2 }], position: { seq: 2, epoch: a.epoch } }, `${scope}: both racing appends are still stored`)
    t.same(await store.read(scope, before[i]!), { ok: false, reason: 'epoch' }, `${scope}: the old position resyncs`)
  }
})

t.test('redis: too many scopes with unstored broadcasts give the store a new identity', async (t) => {
  const client = pluginLikeClient(t)
  const store = new RedisHistoryStore({ ttl: 60, max: 10 })
  store.attach(client)
  await ready(client)
  const held = await store.append('team:keep', entry(1))
  await cut(client)
  await Promise.all(Array.from({ length: 10_001 }, async (_, i) => await store.append(`user:u${i}`, entry(i)).catch(() => { store.lost(`user:u${i}`) })))
  await client.connect()
  const next = await store.append('team:keep', entry(2))
  t.equal(next.seq, 1, 'every scope begins again')
  t.not(next.epoch.split('.')[0], held.epoch.split('.')[0], 'under a new store id')
  t.same(await store.read('team:keep', held), { ok: false, reason: 'epoch' })
})

t.test('redis: close() stops listening to the client it was given', async (t) => {
  const client = pluginLikeClient(t)
  await ready(client)
  const listeners = client.listenerCount('ready')
  const store = new RedisHistoryStore()
  store.attach(client)
  t.equal(client.listenerCount('ready'), listeners + 1)
  store.attach(client)
  t.equal(client.listenerCount('ready'), listeners + 1, 'attaching again does not add a second listener')
  store.close()
  t.equal(client.listenerCount('ready'), listeners)
  t.equal(await client.ping(), 'PONG', 'the client itself is left open')
})
