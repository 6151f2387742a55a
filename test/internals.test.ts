// Every Socket.IO, engine.io, socket.io-parser and ioredis internal in src/internals.ts: present in the installed
// versions, and `register` failing with a coded error naming the version when one is missing.
import { createRequire } from 'node:module'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import { Socket } from 'socket.io'
import t from 'tap'
import realtime from '../src/index.js'
import { SECRET, build, collect, flush, request } from './helper.js'

const require = createRequire(import.meta.url)
const fromSocketIo = createRequire(require.resolve('socket.io'))
const socketIoVersion = (require('socket.io/package.json') as { version: string }).version
const { Client } = fromSocketIo('./client.js') as { Client: { prototype: Record<string, unknown> } }
const parser = fromSocketIo('socket.io-parser') as { Decoder: { prototype: object } }
const adapter = fromSocketIo('socket.io-adapter') as { Adapter: { prototype: Record<string, unknown> } }
const engine = fromSocketIo('engine.io') as { Socket: { prototype: object }, BaseServer?: { prototype: object }, Server: { prototype: object } }

/** Registers the plugin on a fresh app and returns the error `ready` fails with, or null. */
async function registerError (opts: Record<string, unknown> = {}): Promise<{ code?: string, message: string } | null> {
  const app = Fastify()
  try {
    await app.register(realtime, { auth: { secret: SECRET }, history: false, health: false, ...opts })
    await app.ready()
    return null
  } catch (err) {
    return err as { code?: string, message: string }
  } finally {
    await app.close().catch(() => {})
  }
}

/** Runs `fn` with `key` of `target` hidden (own property set to `value`), then puts it back. */
async function without<T> (target: object, key: string, value: unknown, fn: () => Promise<T>): Promise<T> {
  const had = Object.getOwnPropertyDescriptor(target, key)
  Object.defineProperty(target, key, { value, configurable: true, writable: true })
  try {
    return await fn()
  } finally {
    if (had === undefined) delete (target as Record<string, unknown>)[key]
    else Object.defineProperty(target, key, had)
  }
}

t.test('the installed versions have every internal, and register passes', async (t) => {
  t.type((Socket.prototype as unknown as Record<string, unknown>).notifyOutgoingListeners, 'function', 'socket.io Socket#notifyOutgoingListeners')
  t.type(Client.prototype.writeToEngine, 'function', 'socket.io Client#writeToEngine')
  t.ok(engine.Socket.toString().includes('this.writeBuffer'), 'engine.io Socket#writeBuffer')
  for (const method of ['subscribe', 'psubscribe', 'unsubscribe', 'punsubscribe']) {
    t.type((Redis.prototype as unknown as Record<string, unknown>)[method], 'function', `ioredis Redis#${method}`)
  }
  t.throws(() => { new (parser.Decoder as new (o: object) => { add: (s: string) => void })({ maxAttachments: 0 }).add('51-["x",{"_placeholder":true,"num":0}]') },
    'socket.io-parser Decoder option maxAttachments')
  t.type(adapter.Adapter.prototype._encode, 'function', 'socket.io-adapter Adapter#_encode')
  t.equal(await registerError(), null)
})

t.test('socket.io-adapter Adapter#_encode missing: register with redis fails, naming the version', async (t) => {
  const err = await without(adapter.Adapter.prototype, '_encode', undefined, async () => await registerError({ redis: 'redis://127.0.0.1:6379' }))
  t.equal(err?.code, 'FST_REALTIME_UNSUPPORTED_VERSION')
  t.match(err?.message, /socket\.io-adapter \d+\.\d+\.\d+/)
  t.match(err?.message, 'Adapter#_encode')
  t.equal(await without(adapter.Adapter.prototype, '_encode', undefined, registerError), null, 'without redis, the recovery that reads it is not wired')
})

t.test('socket.io Socket#notifyOutgoingListeners missing: register fails, naming the version', async (t) => {
  const err = await without(Socket.prototype, 'notifyOutgoingListeners', undefined, registerError)
  t.equal(err?.code, 'FST_REALTIME_UNSUPPORTED_VERSION')
  t.match(err?.message, `socket.io ${socketIoVersion}`)
  t.match(err?.message, 'Socket#notifyOutgoingListeners')
})

t.test('socket.io Client#writeToEngine missing: register fails, naming the version', async (t) => {
  const err = await without(Client.prototype, 'writeToEngine', undefined, registerError)
  t.equal(err?.code, 'FST_REALTIME_UNSUPPORTED_VERSION')
  t.match(err?.message, `socket.io ${socketIoVersion}`)
  t.match(err?.message, 'Client#writeToEngine')
})

t.test('engine.io Server#clients missing: register fails, naming the version', async (t) => {
  // the constructor's `this.clients = {}` lands on a setter that keeps nothing
  const base = (engine.BaseServer ?? Object.getPrototypeOf(engine.Server)).prototype
  const had = Object.getOwnPropertyDescriptor(base, 'clients')
  Object.defineProperty(base, 'clients', { get: () => undefined, set: () => {}, configurable: true })
  let err
  try {
    err = await registerError()
  } finally {
    if (had === undefined) delete (base as Record<string, unknown>).clients
    else Object.defineProperty(base, 'clients', had)
  }
  t.equal(err?.code, 'FST_REALTIME_UNSUPPORTED_VERSION')
  t.match(err?.message, /engine\.io \d+\.\d+\.\d+/)
  t.match(err?.message, 'Server#clients')
})

t.test('engine.io Socket#writeBuffer missing: register fails, naming the version', async (t) => {
  const err = await without(engine.Socket, 'toString', () => 'class Socket {}', registerError)
  t.equal(err?.code, 'FST_REALTIME_UNSUPPORTED_VERSION')
  t.match(err?.message, /engine\.io \d+\.\d+\.\d+/)
  t.match(err?.message, 'Socket#writeBuffer')
})

t.test('socket.io-parser without the maxAttachments option: register fails, naming the version', async (t) => {
  // a decoder that takes any attachment count, as socket.io-parser did before 4.2.6
  const err = await without(parser.Decoder.prototype, 'add', () => {}, registerError)
  t.equal(err?.code, 'FST_REALTIME_UNSUPPORTED_VERSION')
  t.match(err?.message, /socket\.io-parser \d+\.\d+\.\d+/)
  t.match(err?.message, 'maxAttachments')
  t.equal(await without(parser.Decoder.prototype, 'add', () => {}, async () => await registerError({ io: { parser: { Encoder: class {}, Decoder: class {} } } })), null,
    'with an app\'s own io.parser, socket.io-parser is not needed')
})

t.test('ioredis subscribe methods missing: register with redis fails, naming the version', async (t) => {
  const err = await without(Redis.prototype, 'psubscribe', undefined, async () => await registerError({ redis: 'redis://127.0.0.1:6379' }))
  t.equal(err?.code, 'FST_REALTIME_UNSUPPORTED_VERSION')
  t.match(err?.message, /ioredis \d+\.\d+\.\d+/)
  t.match(err?.message, 'Redis#psubscribe')
  t.equal(await without(Redis.prototype, 'psubscribe', undefined, registerError), null, 'without redis, ioredis is not needed')
})

t.test('the internals at work: a write tap holds and releases, and is put back afterwards', async (t) => {
  // a catch-up taps the socket's writes while it reads the log, then puts the originals back
  const { app, connected } = await build(t, { rooms: () => ['team:1'] })
  const { socket } = await connected('u1')
  const got = collect(socket, 'tick')
  await app.broadcast('team:1', 'tick', 1)
  const server = [...app.io.of('/').sockets.values()][0]! as unknown as { client: Record<string, unknown> } & Record<string, unknown>
  await request(socket, 'realtime:subscribe', { scope: 'team:1', since: { seq: 0, epoch: 'stale.0' } })
  t.equal(server.notifyOutgoingListeners, (Socket.prototype as unknown as Record<string, unknown>).notifyOutgoingListeners, 'the outgoing listener hook is the original again')
  t.equal(server.client.writeToEngine, Client.prototype.writeToEngine, 'the engine write is the original again')
  await app.broadcast('team:1', 'tick', 2)
  await flush(socket)
  t.same(got.map(([payload]) => payload), [1, 2], 'live events still flow through')
})
