import type { EventEmitter } from 'node:events'
import v8 from 'node:v8'
import vm from 'node:vm'
import type { FastifyInstance } from 'fastify'
import { io as ioClient, type Socket } from 'socket.io-client'
import t from 'tap'
import type { MemoryHistoryStore } from '../src/index.js'
import { build, processFaults, tokenFor } from './helper.js'
import { until } from './raw-client.js'

// This file's own limit, over .taprc's 120 s per file (tap's runner takes a limit set on the root
// `t`): room for the limits of its tests below, one after the other.
t.setTimeout(420_000)

const faults = processFaults({ uncaughtExceptions: true })

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

const fileStarted = Date.now()

/** Heap in use after full collections, with turns in between so weak callbacks and finalizers run. */
async function settledHeap (): Promise<number> {
  for (let i = 0; i < 4; i++) {
    gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  return process.memoryUsage().heapUsed
}

function listeners (emitter: EventEmitter): number {
  return emitter.eventNames().reduce((sum, name) => sum + emitter.listenerCount(name), 0)
}

/** What a connection could leave behind on the server, in numbers. */
function footprint (app: FastifyInstance): Record<string, number> {
  const main = app.io.of('/')
  const { rooms, sids } = main.adapter
  return {
    sockets: main.sockets.size,
    handshaking: (main as unknown as { _preConnectSockets: Map<string, unknown> })._preConnectSockets.size,
    transports: app.io.engine.clientsCount,
    rooms: rooms.size,
    sids: sids.size,
    namespaces: (app.io as unknown as { _nsps: Map<string, unknown> })._nsps.size,
    historyScopes: (app.realtime.history as MemoryHistoryStore).scopes,
    serverListeners: listeners(app.io as unknown as EventEmitter),
    engineListeners: listeners(app.io.engine as unknown as EventEmitter),
    namespaceListeners: listeners(main as unknown as EventEmitter),
    adapterListeners: listeners(main.adapter as unknown as EventEmitter),
    httpListeners: listeners(app.server)
  }
}

function timers (): number {
  return process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length
}

/**
 * One client (not registered for teardown, so the test holds no reference to it once it is
 * done): connect as `user-<i>`, wait for `realtime:ready`, disconnect.
 */
async function cycle (url: string, i: number, live: Set<Socket>): Promise<void> {
  const socket = ioClient(url, {
    transports: ['websocket'],
    forceNew: true,
    reconnection: false,
    auth: { token: tokenFor(`user-${i}`) }
  })
  live.add(socket)
  let timer: NodeJS.Timeout | undefined
  try {
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`user-${i}: no realtime:ready within 20 s`)), 20_000)
      socket.once('realtime:ready', () => resolve())
      socket.once('connect_error', reject)
      socket.once('disconnect', (reason) => reject(new Error(`user-${i}: disconnected before ready (${reason})`)))
    })
  } finally {
    clearTimeout(timer)
    socket.disconnect()
    live.delete(socket)
  }
}

/** Runs cycles for users `from` .. `from + count - 1`, `window` at a time. */
async function cycles (url: string, from: number, count: number, window: number, live: Set<Socket>): Promise<void> {
  let next = from
  const end = from + count
  const worker = async (): Promise<void> => {
    while (next < end) await cycle(url, next++, live)
  }
  await Promise.all(Array.from({ length: window }, worker))
}

t.test('10,000 connect/disconnect cycles leave no sockets, rooms, scopes, listeners, timers or heap behind', { timeout: 240_000 }, async (t) => {
  const { app, url } = await build(t, { rooms: (user) => [`team:${user.id}`] })
  const live = new Set<Socket>()
  t.teardown(() => { for (const socket of live) socket.disconnect() })
  const idle = (): boolean => app.io.of('/').sockets.size === 0 && app.io.engine.clientsCount === 0

  // warm-up: lazily built state (JIT, pools, caches) is in the baseline, not in the difference
  await cycles(url, 0, 500, 50, live)
  await until(idle, 'the warm-up connections are gone on the server', 30_000)
  const before = footprint(app)
  const timersBefore = timers()
  const heapBefore = await settledHeap()

  const started = Date.now()
  await cycles(url, 1000, 10_000, 50, live)
  await until(idle, 'every connection is gone on the server', 60_000)
  t.comment(`10,000 cycles in ${((Date.now() - started) / 1000).toFixed(1)} s`)

  const after = footprint(app)
  t.same(after, before, 'sockets, adapter rooms and sids, transports, history scopes and listeners back to the baseline')
  t.equal(after.sockets, 0, 'no sockets')
  t.equal(after.transports, 0, 'engine.clientsCount is 0')
  t.ok(timers() <= timersBefore + 10, `no timers per connection left (${timersBefore} before, ${timers()} after)`)
  const heapAfter = await settledHeap()
  const grownMb = (heapAfter - heapBefore) / 1024 / 1024
  t.comment(`heap after GC: ${(heapBefore / 1024 / 1024).toFixed(1)} MB before, ${(heapAfter / 1024 / 1024).toFixed(1)} MB after`)
  t.ok(grownMb < 30, `heap within 30 MB of the baseline after GC (grew ${grownMb.toFixed(1)} MB)`)
})

t.test('close() with 1,000 sockets open resolves and every client sees a transport close', { timeout: 120_000 }, async (t) => {
  const { app, url } = await build(t, { rooms: (user) => [`team:${Number(String(user.id).slice(5)) % 10}`] })
  const sockets: Socket[] = []
  t.teardown(() => { for (const socket of sockets) socket.disconnect() })
  let next = 0
  // a window well under limits.handshakesPerAddress: every client here comes from 127.0.0.1
  const worker = async (): Promise<void> => {
    while (next < 1000) {
      const i = next++
      const socket = ioClient(url, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: tokenFor(`user-${i}`) } })
      sockets.push(socket)
      await new Promise<void>((resolve, reject) => {
        socket.once('realtime:ready', () => resolve())
        socket.once('connect_error', reject)
      })
    }
  }
  await Promise.all(Array.from({ length: 100 }, worker))
  t.equal(app.io.of('/').sockets.size, 1000, '1,000 sockets open')
  const reasons = Promise.all(sockets.map((socket) => new Promise<string>((resolve) => socket.once('disconnect', resolve))))

  const started = Date.now()
  await app.close()
  t.comment(`close() with 1,000 sockets: ${Date.now() - started} ms`)
  const seen = await reasons
  t.equal(seen.length, 1000)
  t.same([...new Set(seen)], ['transport close'], 'every client saw a transport close')
  t.equal(app.io.engine.clientsCount, 0, 'no transport left')
})

t.test('no unhandledRejection or uncaughtException in this file', async (t) => {
  t.same(await faults.since(), [])
  t.comment(`file ran ${((Date.now() - fileStarted) / 1000).toFixed(1)} s`)
})
