// A Redis blip on one node's subscriber: 2,000 clients on node A, A's subscriber killed with
// CLIENT KILL while node B broadcasts to their scopes. Measured for raw Socket.IO with the same
// Redis adapter and for the plugin, in one run: reconnects, how many of the events broadcast
// during the blip every client ends up with and how long that takes, the first live broadcast
// after it, and the app's rooms() calls on A.
// Usage: node bench/blip.js [--clients=2000] (or as the `blip` scenario of bench/run.js).
// Needs a build (npx tsup): the plugin arm imports ../dist/index.js.
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { createAdapter } from '@socket.io/redis-adapter'
import { createSigner, createVerifier } from 'fast-jwt'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { Server } from 'socket.io'
import { io as ioClient } from 'socket.io-client'
import { REDIS, SECRET, killChildren, now, serve, spawn } from './lib/util.js'

const FILE = fileURLToPath(import.meta.url)
const EVENT = 'tick'
const SCOPES = 20
/** Events per scope broadcast by B while A's subscriber is away. */
const DURING = 5
const HOST = '127.0.0.1'

const scopeOf = (i) => `team:${i % SCOPES}`

// ---------- the server process: nodes A and B of one arm ----------
async function serverRole () {
  let arm = null
  const connections = []
  const redisFor = (keyPrefix, connectionName) => {
    const client = new Redis({ ...REDIS, keyPrefix, connectionName, lazyConnect: true, maxRetriesPerRequest: 1 })
    connections.push(client)
    return client
  }

  async function rawNode (prefix, name) {
    const io = new Server({ pingInterval: 600_000, pingTimeout: 600_000 })
    const pub = redisFor('', `bench-raw:pub:${name}`)
    const sub = redisFor('', `bench-raw:sub:${name}`)
    await Promise.all([pub.connect(), sub.connect()])
    io.adapter(createAdapter(pub, sub, { key: `${prefix}raw` }))
    const verify = createVerifier({ key: SECRET, algorithms: ['HS256'] })
    io.use((socket, next) => {
      try {
        socket.data.user = verify(socket.handshake.auth.token)
        next()
      } catch {
        next(new Error('The token is not valid'))
      }
    })
    io.on('connection', (socket) => {
      socket.join([`user:${socket.data.user.sub}`, ...socket.data.user.rooms])
      socket.emit('ready')
    })
    const app = Fastify()
    io.attach(app.server)
    await app.listen({ port: 0, host: HOST })
    return {
      port: app.server.address().port,
      broadcast: async (scope, payload) => { io.to(scope).emit(EVENT, payload) },
      close: async () => { io.close(); await app.close() }
    }
  }

  async function pluginNode (prefix, counter) {
    const { default: realtime } = await import('../dist/index.js')
    const app = Fastify()
    await app.register(realtime, {
      auth: { secret: SECRET },
      rooms: (user) => { counter.rooms++; return user.rooms },
      redis: { ...REDIS, keyPrefix: prefix },
      rateLimit: false,
      io: { pingInterval: 600_000, pingTimeout: 600_000 }
    })
    await app.listen({ port: 0, host: HOST })
    return {
      app,
      port: app.server.address().port,
      broadcast: async (scope, payload) => { await app.broadcast(scope, EVENT, payload) },
      close: async () => { await app.close() }
    }
  }

  serve({
    async setup ({ kind, prefix }) {
      const counter = { rooms: 0 }
      const a = kind === 'raw' ? await rawNode(prefix, 'a') : await pluginNode(prefix, counter)
      const b = kind === 'raw' ? await rawNode(prefix, 'b') : await pluginNode(prefix, { rooms: 0 })
      const subName = kind === 'raw' ? 'bench-raw:sub:a' : `fastify-realtime:sub:${(await a.app.realtime.stats()).node.id}`
      arm = { a, b, counter }
      return { port: a.port, subName }
    },
    async broadcast ({ ns }) {
      const sends = []
      for (const n of ns) for (let s = 0; s < SCOPES; s++) sends.push(arm.b.broadcast(`team:${s}`, { n }))
      await Promise.all(sends)
      return true
    },
    roomsCalls () {
      return arm.counter.rooms
    },
    resetRooms () {
      arm.counter.rooms = 0
      return true
    },
    async teardown () {
      await arm.a.close()
      await arm.b.close()
      await Promise.all(connections.splice(0).map(async (c) => { c.disconnect() }))
      arm = null
      return true
    }
  })
  process.send({ ready: true })
}

// ---------- the client process ----------
function clientsRole () {
  const sign = createSigner({ key: SECRET, algorithm: 'HS256', expiresIn: 3600 * 1000 })
  let sockets = []
  serve({
    async connect ({ url, kind, count, window = 200 }) {
      let next = 0
      const lane = async () => {
        while (next < count) {
          const i = next++
          const entry = { connects: 0, seen: new Set() }
          await new Promise((resolve, reject) => {
            const socket = ioClient(url, {
              transports: ['websocket'],
              forceNew: true,
              reconnectionDelay: 100,
              timeout: 60_000,
              auth: { token: sign({ sub: `u${i}`, rooms: [scopeOf(i)] }) }
            })
            entry.socket = socket
            socket.on('connect', () => { entry.connects++ })
            socket.on(EVENT, (payload) => { entry.seen.add(payload.n) })
            socket.once('connect_error', reject)
            socket.once(kind === 'plugin' ? 'realtime:ready' : 'ready', () => {
              socket.off('connect_error', reject)
              resolve()
            })
          })
          sockets.push(entry)
        }
      }
      await Promise.all(Array.from({ length: window }, lane))
      return sockets.length
    },
    /** How many clients hold every n of `ns`, and how many of those events arrived in all. */
    status ({ ns }) {
      let complete = 0
      let held = 0
      let connects = 0
      for (const entry of sockets) {
        connects += entry.connects
        let all = true
        for (const n of ns) {
          if (entry.seen.has(n)) held++
          else all = false
        }
        if (all) complete++
      }
      return { clients: sockets.length, complete, held, connects }
    },
    close () {
      for (const entry of sockets) entry.socket.disconnect()
      sockets = []
      return true
    }
  })
  process.send({ ready: true })
}

// ---------- the driver ----------
async function waitFor (read, ok, withinMs, everyMs = 10) {
  const deadline = Date.now() + withinMs
  let last
  while (Date.now() < deadline) {
    last = await read()
    if (ok(last)) return { value: last, reached: true }
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
  return { value: last, reached: false }
}

async function subscriberId (admin, name) {
  const list = await admin.client('LIST')
  for (const line of list.split('\n')) {
    const fields = Object.fromEntries(line.split(' ').map((f) => [f.slice(0, f.indexOf('=')), f.slice(f.indexOf('=') + 1)]))
    if (fields.name === name && Number(fields.psub ?? 0) + Number(fields.sub ?? 0) > 0) return fields.id
  }
  return null
}

async function arm (kind, { n, prefix, log }) {
  const server = spawn(FILE, { name: `blip-server-${kind}`, env: { BLIP_ROLE: 'server' } })
  const clients = spawn(FILE, { name: `blip-clients-${kind}`, env: { BLIP_ROLE: 'clients' }, execArgv: ['--max-old-space-size=4096'] })
  await Promise.all([server.ready, clients.ready])
  const admin = new Redis({ ...REDIS, lazyConnect: true })
  await admin.connect()
  try {
    const { port, subName } = await server.call('setup', { kind, prefix: `${prefix}${kind}:` })
    await clients.call('connect', { url: `http://${HOST}:${port}`, kind, count: n }, 300_000)
    log(`blip ${kind}: ${n} clients on A`)
    await server.call('broadcast', { ns: [0] })
    if (!(await waitFor(() => clients.call('status', { ns: [0] }), (s) => s.complete === n, 30_000)).reached) throw new Error(`${kind}: the first broadcast did not reach every client`)
    await server.call('resetRooms')
    const before = await clients.call('status', { ns: [] })

    const id = await subscriberId(admin, subName)
    if (id === null) throw new Error(`${kind}: no subscriber named ${subName}`)
    const t0 = now()
    await admin.client('KILL', 'ID', id)
    const during = Array.from({ length: DURING }, (_, i) => i + 1)
    await server.call('broadcast', { ns: during })
    // raw Socket.IO never gets them: give it as long as the plugin could need, then count
    const held = await waitFor(() => clients.call('status', { ns: during }), (s) => s.complete === n, kind === 'raw' ? 5000 : 60_000)
    const heldMs = held.reached ? (now() - t0) / 1e6 : Number.NaN
    // the first live broadcast once A's subscriber is back
    await waitFor(() => subscriberId(admin, subName), (found) => found !== null, 30_000)
    const t1 = now()
    await server.call('broadcast', { ns: [99] })
    const live = await waitFor(() => clients.call('status', { ns: [99] }), (s) => s.complete === n, 30_000, 5)
    const liveMs = live.reached ? (now() - t1) / 1e6 : Number.NaN
    const after = await clients.call('status', { ns: during })
    return {
      kind,
      clients: n,
      reconnects: after.connects - before.connects,
      heldShare: after.held / (n * DURING),
      complete: after.complete,
      heldMs,
      liveMs,
      roomsCalls: kind === 'plugin' ? await server.call('roomsCalls') : Number.NaN
    }
  } finally {
    await clients.call('close').catch(() => {})
    await server.call('teardown').catch(() => {})
    admin.disconnect()
    await clients.stop()
    await server.stop()
  }
}

/** Runs both arms; resolves with their figures. */
export async function runBlip ({ n = 2000, prefix = `bench-blip-${randomUUID().slice(0, 8)}:`, log = console.error } = {}) {
  const raw = await arm('raw', { n, prefix, log })
  const plugin = await arm('plugin', { n, prefix, log })
  const admin = new Redis({ ...REDIS, lazyConnect: true })
  try {
    await admin.connect()
    let cursor = '0'
    do {
      const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await admin.del(...keys)
    } while (cursor !== '0')
  } finally {
    admin.disconnect()
  }
  return { raw, plugin, during: DURING * SCOPES }
}

/** The figures as lines of text. */
export function describe ({ raw, plugin, during }) {
  const ms = (v) => Number.isFinite(v) ? `${Math.round(v)} ms` : 'never'
  return [
    `Subscriber blip (CLIENT KILL on A's subscriber), ${plugin.clients} clients on A, ${during} events broadcast by B during it (${SCOPES} scopes):`,
    `  reconnects:                          raw ${raw.reconnects}, plugin ${plugin.reconnects} (target 0)`,
    `  blip events held by clients:         raw ${(100 * raw.heldShare).toFixed(1)} %, plugin ${(100 * plugin.heldShare).toFixed(1)} % (${plugin.complete}/${plugin.clients} clients with all of them)`,
    `  kill → every client holds them all:  raw ${ms(raw.heldMs)}, plugin ${ms(plugin.heldMs)}`,
    `  first live broadcast after the blip: raw ${ms(raw.liveMs)}, plugin ${ms(plugin.liveMs)} (${(plugin.liveMs / raw.liveMs).toFixed(2)}×)`,
    `  rooms() calls on A:                  plugin ${plugin.roomsCalls}`
  ]
}

if (process.env.BLIP_ROLE === 'server') await serverRole()
else if (process.env.BLIP_ROLE === 'clients') clientsRole()
else if (process.argv[1] === FILE) {
  const arg = process.argv.find((a) => a.startsWith('--clients='))
  try {
    const result = await runBlip({ n: arg === undefined ? 2000 : Number(arg.slice(10)) })
    for (const line of describe(result)) console.log(line)
  } finally {
    killChildren()
  }
}
