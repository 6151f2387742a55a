// The server process: hosts every arm of a scenario side by side (raw Socket.IO on a plain
// http server, the plugin on a Fastify app), so one process gives every CPU figure. Each block
// does one arm's work only, and the driver reads this process's CPU around it.
import { randomBytes, randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter'
import { createVerifier } from 'fast-jwt'
import Fastify from 'fastify'
import { Cluster, Redis } from 'ioredis'
import { Registry } from 'prom-client'
import { Server } from 'socket.io'
import { EVENT, REDIS, SECRET, cpuSince, now, send, serve, sleep } from './lib/util.js'

let realtime, RedisHistoryStore
try {
  ({ default: realtime, RedisHistoryStore } = await import('../dist/index.js'))
} catch (err) {
  console.error('bench: cannot import ../dist/index.js; build first (npx tsup)\n', err.message)
  process.exit(2)
}

// Heartbeats are the same on every arm and only add noise to per-block CPU: one every 10 min.
const IO_OPTIONS = { pingInterval: 600_000, pingTimeout: 600_000 }
const BACKLOG = 4096
const HOST = '127.0.0.1'

/** A raw app's event log kept by hand in Redis: what a hand-written integration does per event. */
const RAW_APPEND = `
local seq = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], seq .. ':' .. ARGV[1])
redis.call('LTRIM', KEYS[2], -50, -1)
redis.call('PEXPIRE', KEYS[1], 300000)
redis.call('PEXPIRE', KEYS[2], 300000)
return seq
`

// The options the plugin gives its own Redis connections (src/redis.ts), used for every client
// that carries history here too, so raw and plugin talk to Redis the same way.
const HISTORY_CONNECTION = {
  lazyConnect: true,
  enableOfflineQueue: false,
  autoResendUnfulfilledCommands: false,
  maxRetriesPerRequest: 0,
  commandTimeout: 2000
}

const arms = new Map()
const redisClients = []

function redisClient (keyPrefix, options = { lazyConnect: true, maxRetriesPerRequest: 1 }) {
  const client = new Redis({ ...REDIS, ...options, keyPrefix })
  redisClients.push(client)
  return client
}

/** A client of the Redis Cluster at `nodes` (sharded pub/sub), as the plugin opens its own. */
function clusterClient (nodes, keyPrefix) {
  const client = new Cluster(nodes, { lazyConnect: true, enableOfflineQueue: false, shardedSubscribers: true, keyPrefix, redisOptions: { maxRetriesPerRequest: 0, commandTimeout: 10_000 } })
  redisClients.push(client)
  return client
}

function listening (server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: 0, host: HOST, backlog: BACKLOG }, () => resolve(server.address().port))
  })
}

/**
 * Raw Socket.IO doing by hand what the plugin does on the paths measured: the same JWT check
 * (fast-jwt, HS256, same secret) in io.use, the same rooms joined, a ready message, and
 * broadcasts of a byte-identical frame: payload + { id, scope, seq, epoch, at } (the order the plugin writes, as the contract lists it).
 */
async function rawArm ({ name, auth = 'jwt', history = 'memory', adapter = false, cluster = null, prefix, fastify = false }) {
  // `fastify`: the same raw Socket.IO on a Fastify app's server, no plugin: what Fastify itself costs
  const app = fastify ? Fastify({ logger: false }) : null
  const http = app === null ? createServer() : app.server
  const io = new Server(http, IO_OPTIONS)
  if (adapter && cluster !== null) {
    // a Redis Cluster: the official sharded adapter, one channel per room, as the plugin has it
    const pub = clusterClient(cluster, '')
    const sub = clusterClient(cluster, '')
    await Promise.all([pub.connect(), sub.connect()])
    io.adapter(createShardedAdapter(pub, sub, { channelPrefix: `${prefix}raw:socket.io`, subscriptionMode: 'dynamic' }))
  } else if (adapter) {
    const pub = redisClient('')
    const sub = redisClient('')
    await Promise.all([pub.connect(), sub.connect()])
    io.adapter(createAdapter(pub, sub, { key: `${prefix}raw:socket.io` }))
  }
  if (auth === 'jwt') {
    const verify = createVerifier({ key: SECRET, algorithms: ['HS256'] })
    io.use((socket, next) => {
      const token = socket.handshake.auth?.token
      if (typeof token !== 'string') return next(new Error('A token is required'))
      let claims
      try {
        claims = verify(token)
      } catch {
        return next(new Error('The token is not valid'))
      }
      socket.data.user = { ...claims, id: claims.sub }
      next()
    })
  } else {
    io.use((socket, next) => {
      socket.data.user = { ...socket.handshake.auth.user, id: socket.handshake.auth.user.sub }
      next()
    })
  }
  io.on('connection', (socket) => {
    const user = socket.data.user
    const scopes = [`user:${user.id}`, ...(user.rooms ?? [])]
    socket.join(scopes)
    socket.emit('ready', { userId: user.id, scopes })
  })
  const port = app === null ? await listening(http) : (await app.listen({ port: 0, host: HOST, backlog: BACKLOG }), app.server.address().port)

  let epoch = `${randomBytes(6).toString('base64url')}.${Date.now()}`
  const seqs = new Map()
  let broadcast
  if (history === 'redis') {
    const redis = cluster === null ? redisClient(`${prefix}raw:`, HISTORY_CONNECTION) : clusterClient(cluster, `${prefix}raw:`)
    await redis.connect()
    redis.defineCommand('rawAppend', { numberOfKeys: 2, lua: RAW_APPEND })
    broadcast = async (scope, payload) => {
      const id = randomUUID()
      const at = Date.now()
      // one hash tag: both keys in one slot on a cluster
      const seq = await redis.rawAppend(`s:{${scope}}`, `l:{${scope}}`, JSON.stringify({ id, event: EVENT, payload, at }))
      io.to(scope).emit(EVENT, payload, { id, scope, seq, epoch, at })
    }
  } else {
    broadcast = (scope, payload) => {
      const seq = (seqs.get(scope) ?? 0) + 1
      seqs.set(scope, seq)
      io.to(scope).emit(EVENT, payload, { id: randomUUID(), scope, seq, epoch, at: Date.now() })
    }
  }
  return {
    name,
    kind: 'raw',
    port,
    io,
    broadcast,
    setEpoch (value) { epoch = value },
    async close () {
      // io.close() also closes the http server
      await new Promise((resolve) => { io.close(() => resolve()) })
    }
  }
}

/**
 * The plugin on a Fastify app: JWT auth, rooms from the token's claims, history as asked, and
 * presence when asked (default options: every scope kind but `user`, diffs coalesced per second).
 * With `adapter` it gets the `redis` option (Redis adapter + Redis history, as a multi-node app
 * runs it). Redis history without the adapter (one node) is a RedisHistoryStore on a connection
 * of our own, passed as `history.store`, since the `redis` option always brings the adapter.
 */
async function pluginArm ({ name, history = 'memory', adapter = false, cluster = null, presence = false, metrics = false, prefix }) {
  const app = Fastify({ logger: false })
  let historyOption = history === false ? false : { store: history }
  let redis
  if (adapter && cluster !== null) {
    redis = { cluster, options: { keyPrefix: `${prefix}plugin:` } }
  } else if (adapter) {
    redis = { ...REDIS, keyPrefix: `${prefix}plugin:` }
  } else if (history === 'redis') {
    const client = redisClient(`${prefix}plugin:`, HISTORY_CONNECTION)
    await client.connect()
    const store = new RedisHistoryStore()
    store.attach(client)
    historyOption = { store }
  }
  await app.register(realtime, {
    auth: { secret: SECRET },
    rooms: (user) => user.rooms ?? [],
    history: historyOption,
    ...(redis === undefined ? {} : { redis }),
    // every simulated client shares the loopback address: the per-address handshake cap would
    // refuse a storm of them that real clients, from their own addresses, never hit
    limits: { handshakesPerAddress: false },
    presence,
    // metrics on a registry of the arm's own, as an app with a /metrics route has them
    ...(metrics ? { metrics: { registry: new Registry() } } : {}),
    io: IO_OPTIONS
  })
  await app.listen({ port: 0, host: HOST, backlog: BACKLOG })
  return {
    name,
    kind: 'plugin',
    port: app.server.address().port,
    io: app.io,
    app,
    broadcast: (scope, payload) => app.broadcast(scope, EVENT, payload),
    async close () { await app.close() }
  }
}

function arm (name) {
  const a = arms.get(name)
  if (a === undefined) throw new Error(`no arm ${name}`)
  return a
}

let blockCpu = null
let blockStart = 0

serve({
  async setup ({ arms: specs, prefix }) {
    const out = {}
    for (const spec of specs) {
      const a = spec.kind === 'plugin' ? await pluginArm({ ...spec, prefix }) : await rawArm({ ...spec, prefix })
      arms.set(spec.name, a)
      out[spec.name] = { port: a.port, kind: a.kind }
    }
    return out
  },

  /** Gives a raw arm the plugin's epoch string, so their frames are byte for byte the same length. */
  async matchEpoch ({ raw, plugin, scope }) {
    const position = await arm(plugin).app.realtime.history.position(scope)
    arm(raw).setEpoch(position.epoch)
    return position.epoch
  },

  async position ({ name, scope }) {
    return await arm(name).app.realtime.history.position(scope)
  },

  async close ({ names }) {
    for (const name of names ?? [...arms.keys()]) {
      await arms.get(name)?.close()
      arms.delete(name)
    }
    return true
  },

  counts () {
    const out = {}
    for (const [name, a] of arms) out[name] = { sockets: a.io.of('/').sockets.size, engine: a.io.engine.clientsCount }
    return out
  },

  /** Resolves once none of `names` holds a socket or an engine.io client (bounded). */
  async waitEmpty ({ names, timeoutMs = 60_000 }) {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const busy = names.filter((n) => {
        const a = arm(n)
        return a.io.of('/').sockets.size > 0 || a.io.engine.clientsCount > 0
      })
      if (busy.length === 0) return true
      if (Date.now() > deadline) throw new Error(`sockets still open on ${busy.join(', ')}`)
      await sleep(10)
    }
  },

  cpuMark () {
    blockCpu = process.cpuUsage()
    blockStart = now()
    return blockStart
  },

  cpuRead () {
    return { cpu: cpuSince(blockCpu), wall: now() - blockStart }
  },

  /** One measured block: CPU is read from here until blockEnd. */
  async block ({ arm: name, ...plan }) {
    const target = arm(name)
    blockCpu = process.cpuUsage()
    blockStart = now()
    await send(target, plan)
    return { t0: blockStart, sent: now(), sendCpu: cpuSince(blockCpu) }
  },

  blockEnd () {
    return { cpu: cpuSince(blockCpu), wall: now() - blockStart }
  },

  /** Sends without measuring (e.g. the events a storm will replay). */
  async send ({ arm: name, ...plan }) {
    await send(arm(name), plan)
    return true
  },

  memory () {
    for (let i = 0; i < 4; i++) globalThis.gc?.()
    return process.memoryUsage()
  },

  async shutdown () {
    for (const a of arms.values()) await a.close()
    arms.clear()
    await Promise.all(redisClients.map((c) => c.quit().catch(() => c.disconnect())))
    setImmediate(() => process.exit(0))
    return true
  }
})

process.send({ ready: true })
