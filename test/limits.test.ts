import type { FastifyInstance } from 'fastify'
import Fastify from 'fastify'
import { Decoder, Encoder } from 'socket.io-parser'
import t from 'tap'
import realtime from '../src/index.js'
import { ManualClock } from './clock.js'
import { SECRET, build, processFaults, refusal, tokenFor, waitFor, within } from './helper.js'
import { acks, eventFrame, openRaw, until, type RawClient } from './raw-client.js'
import { redisOptions } from './redis-helper.js'

const faults = processFaults({ uncaughtExceptions: true })

t.test('events over the rate limit: one RATE_LIMITED ack per window, the rest dropped unanswered', async (t) => {
  const clock = new ManualClock()
  const { url } = await build(t, { clock, rateLimit: { max: 3, windowMs: 60_000 } })
  const raw = await openRaw(t, url)
  await raw.ready(tokenFor('u1'))
  const seen = acks(raw)
  // three within the cap, then a flood of 2,000 with acks, the app's own events and the protocol's
  for (let id = 1; id <= 2003; id++) raw.send(eventFrame(id % 2 === 0 ? 'app:thing' : 'realtime:unsubscribe', [{ scope: 'team:1' }], id))
  // a refresh is outside the cap: once it is answered, the server has been through the flood
  await raw.request(4999, 'realtime:auth', { token: tokenFor('u1') })
  clock.advance(60_000)
  // the next window: answered, so everything sent before has been answered by now
  t.same(await raw.request(5000, 'realtime:unsubscribe', { scope: 'team:1' }), [{ ok: true, scope: 'team:1' }], 'a new window: answered again')
  const before = seen.filter(([id]) => id < 4999)
  t.same(before.map(([id]) => id), [1, 3, 4], 'the protocol\'s events within the cap are answered (the app\'s own has no listener here), then one refusal')
  t.match(before[2]![1], { ok: false, error: { code: 'RATE_LIMITED', message: /try again in 60 s/ } })

  for (let id = 5001; id <= 5004; id++) raw.send(eventFrame('realtime:unsubscribe', [{ scope: 'team:1' }], id))
  await raw.request(5999, 'realtime:auth', { token: tokenFor('u1') })
  clock.advance(60_000)
  await raw.request(5005, 'realtime:unsubscribe', { scope: 'team:1' })
  t.same(seen.filter(([id]) => id > 5000 && id < 5005).map(([id, ack]) => [id, ack.ok]), [[5001, true], [5002, true], [5003, false]],
    'each window: its events within the cap, then one refusal; nothing for the rest')
  t.notOk(raw.isClosed, 'the transport stays open')
})

const placeholders = (n: number): string => Array.from({ length: n }, (_, num) => `,{"_placeholder":true,"num":${num}}`).join('')

/** A BINARY_EVENT header announcing `attachments`, each a placeholder in the arguments. */
const binaryEvent = (name: string, attachments: number): string => `45${attachments}-["${name}"${placeholders(attachments)}]`

/** Sends a packet announcing two attachments, and one of them; resolves once the server has both frames. */
async function sendPartial (app: FastifyInstance, raw: RawClient): Promise<void> {
  const conn = (app.io.engine as unknown as { clients: Record<string, { on: (e: string, l: () => void) => void }> }).clients[raw.open.sid]!
  let seen = 0
  const both = new Promise<void>((resolve) => { conn.on('message', () => { if (++seen === 2) resolve() }) })
  raw.send(binaryEvent('upload', 2))
  raw.send(Buffer.alloc(100_000))
  await both
}

t.test('limits.binaryAttachments is 0 by default: a packet announcing an attachment closes its transport at once, before and after authentication', async (t) => {
  const { app, url, connected } = await build(t, { io: { connectTimeout: 60_000 } })
  const { socket: watcher } = await connected('watcher')
  const before = await openRaw(t, url)
  before.send(binaryEvent('x', 1))
  await before.waitClosed('a binary packet before CONNECT')
  t.pass('before authentication')
  const after = await openRaw(t, url)
  await after.ready(tokenFor('u1'))
  // nine 1 MB buffers announced as ten: nothing of them is kept
  after.send(binaryEvent('upload', 10))
  for (let i = 0; i < 9 && !after.isClosed; i++) after.send(Buffer.alloc(999_000))
  await after.waitClosed('a binary packet after authentication')
  t.pass('after authentication')
  await until(() => app.io.engine.clientsCount === 1, 'only the watcher left')
  t.ok(watcher.connected, 'other clients are not touched')
})

t.test('limits.binaryAttachments raised: complete packets reach the app; a partial one is dropped after io.connectTimeout', async (t) => {
  const clock = new ManualClock()
  const { app, url } = await build(t, { clock, limits: { binaryAttachments: 2 }, io: { connectTimeout: 30_000 } })
  const uploads: unknown[][] = []
  app.io.on('connection', (socket) => { socket.on('upload', (...args: unknown[]) => { uploads.push(args) }) })

  const raw = await openRaw(t, url)
  await raw.ready(tokenFor('u1'))
  raw.send(binaryEvent('upload', 2))
  raw.send(Buffer.from('a'))
  raw.send(Buffer.from('b'))
  await until(() => uploads.length === 1, 'the complete packet at the app')
  t.same(uploads[0]!.map((b) => Buffer.from(b as Buffer).toString()), ['a', 'b'], 'with both attachments')

  // nothing is held for long: a packet still waiting after connectTimeout is dropped, and the next frame closes the transport
  await sendPartial(app, raw)
  clock.advance(29_999)
  raw.send(Buffer.from('in time'))
  await until(() => uploads.length === 2, 'a packet completed within connectTimeout')
  await sendPartial(app, raw)
  clock.advance(30_000)
  raw.send(Buffer.from('too late'))
  await raw.waitClosed('the frame after the packet expired')
  t.equal(uploads.length, 2, 'the expired packet never reached the app')

  const tooMany = await openRaw(t, url)
  await tooMany.ready(tokenFor('u2'))
  tooMany.send(binaryEvent('upload', 3))
  await tooMany.waitClosed('three attachments announced')
  t.pass('more than limits.binaryAttachments: closed at once')

  // before authentication the same bound holds (Socket.IO's own connect timeout is 30 s of real time here)
  const early = await openRaw(t, url)
  await sendPartial(app, early)
  clock.advance(30_000)
  early.send(Buffer.from('too late'))
  await early.waitClosed('before authentication, the frame after the packet expired')
  t.pass('before authentication too')
})

t.test('an app\'s own io.parser is used as it is; limits.binaryAttachments next to it fails register', async (t) => {
  const parser = { Encoder, Decoder }
  const { app, connected } = await build(t, { io: { parser } })
  t.equal((app.io as unknown as { _parser: unknown })._parser, parser, 'the app\'s parser')
  const { socket } = await connected('u1')
  const echoed = waitFor<[Buffer]>(socket, 'echo')
  for (const s of app.io.of('/').sockets.values()) s.on('echo', (b: Buffer) => { s.emit('echo', b) })
  socket.emit('echo', Buffer.from('binary through the app\'s parser'))
  t.equal(Buffer.from((await echoed)[0]).toString(), 'binary through the app\'s parser')

  const both = Fastify()
  t.teardown(() => both.close())
  await t.rejects(async () => { await both.register(realtime, { auth: { secret: SECRET }, io: { parser }, limits: { binaryAttachments: 1 } }) },
    { code: 'FST_REALTIME_INVALID_OPTION', message: /limits\.binaryAttachments/ })
})

t.test('limits.connectionsPerUser: 20 by default, on each namespace; the next handshake of that user gets LIMIT', async (t) => {
  const { app, url, client } = await build(t, { rooms: () => ['team:1'] }, { after: (app) => { app.io.of('/admin') } })
  const raws = await Promise.all(Array.from({ length: 20 }, async () => {
    const raw = await openRaw(t, url)
    await raw.ready(tokenFor('u1'))
    return raw
  }))
  t.equal(app.io.of('/').sockets.size, 20, 'twenty sockets of one user')
  const refused = await within(refusal(client({ token: tokenFor('u1') })), 10_000, 'the 21st handshake refused')
  t.equal(refused.data?.code, 'LIMIT', 'the 21st is refused with LIMIT')
  t.match(refused.message, /too many connections/)
  await waitFor(client({ token: tokenFor('u2') }), 'realtime:ready')
  t.pass('another user still connects')
  const admin = await raws[0]!.connect({ token: tokenFor('u1') }, '/admin')
  t.type(admin.sid, 'string', 'another namespace counts on its own')

  raws[0]!.terminate()
  await until(() => app.io.of('/').sockets.size === 20, 'the closed socket is gone')
  await waitFor(client({ token: tokenFor('u1') }), 'realtime:ready')
  t.pass('a place given back is taken again')
  t.equal((await refusal(client({ token: tokenFor('u1') }))).data?.code, 'LIMIT', 'and the cap holds again')
})

t.test('limits.connectionsPerUser holds for handshakes that run at once, and places come back from refused ones', async (t) => {
  let roomsFail = false
  const { app, url, client } = await build(t, {
    limits: { connectionsPerUser: 3 },
    auth: { user: async (claims) => await new Promise((resolve) => setImmediate(() => resolve({ id: String(claims.sub) }))) },
    rooms: () => {
      if (roomsFail) throw new Error('rooms failed')
      return []
    }
  })
  const raws = await Promise.all(Array.from({ length: 12 }, async () => await openRaw(t, url)))
  const outcomes = await Promise.all(raws.map(async (raw) => await raw.connect({ token: tokenFor('u1') }).then(() => 'ready', (err: { data?: { code?: string } }) => err.data?.code)))
  t.same(outcomes.filter((o) => o === 'ready').length, 3, 'three of twelve concurrent handshakes connect')
  t.same(outcomes.filter((o) => o === 'LIMIT').length, 9, 'the others get LIMIT')
  t.equal(app.io.of('/').sockets.size, 3)

  raws[outcomes.indexOf('ready')]!.terminate()
  await until(() => app.io.of('/').sockets.size === 2, 'one closed')
  roomsFail = true
  for (let i = 0; i < 3; i++) t.equal((await refusal(client({ token: tokenFor('u1') }))).data?.code, 'UNAVAILABLE', `refused after its place was taken (${i + 1})`)
  roomsFail = false
  await waitFor(client({ token: tokenFor('u1') }), 'realtime:ready')
  t.pass('the refused handshakes gave their places back')
  t.equal((await refusal(client({ token: tokenFor('u1') }))).data?.code, 'LIMIT')
  const { app: open } = await build(t, { limits: { connectionsPerUser: false } })
  t.ok(open, 'false turns the cap off')
})

t.test('limits.connectionsPerUser holds behind an app middleware that holds handshakes back', async (t) => {
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  let held = 0
  const { app, client } = await build(t, { limits: { connectionsPerUser: 1 } }, {
    after: (app) => {
      app.io.use((_socket, next) => {
        held++
        gate.then(() => { next() }, next)
      })
    }
  })
  const sockets = [client({ token: tokenFor('u1') }), client({ token: tokenFor('u1') })]
  await until(() => held === 2, 'both handshakes past the plugin, held by the app')
  const outcomes = sockets.map(async (socket) => await new Promise<string>((resolve) => {
    socket.once('disconnect', (reason) => { resolve(reason) })
    socket.once('realtime:ready', () => { resolve('ready') })
  }))
  release()
  const [first, second] = await Promise.all(outcomes)
  t.same([first, second].sort(), ['io server disconnect', 'ready'], 'one connects; the one past the cap is disconnected at its connection')
  await until(() => app.io.of('/').sockets.size === 1, 'one socket left')
  t.pass()
})

/** Namespaces Socket.IO holds, by name. */
const namespaces = (app: FastifyInstance): string[] => [...(app.io as unknown as { _nsps: Map<string, unknown> })._nsps.keys()]

for (const redis of [false, true]) {
  t.test(`dynamic namespaces${redis ? ' with the Redis adapter' : ''}: refused handshakes leave none behind; an emptied one is removed`, async (t) => {
    const { app, url } = await build(t, redis ? { redis: redisOptions(t) } : {})
    const parent = app.io.of(/^\/dyn-\d+$/)
    const raws = await Promise.all([0, 1, 2, 3].map(async () => await openRaw(t, url)))
    const refusals = raws.map(async (raw, r) => {
      for (let i = r; i < 1000; i += 4) {
        await raw.connect(undefined, `/dyn-${i}`).then(() => t.fail('connected without a token'), () => {})
      }
    })
    await Promise.all(refusals)
    t.same(namespaces(app), ['/'], '1,000 CONNECTs without a token to new names: no namespace left')
    t.equal((parent as unknown as { children: Set<unknown> }).children.size, 0, 'nor a child of the parent')

    const [raw] = raws
    await raw!.connect({ token: tokenFor('u1') }, '/dyn-7')
    t.same(namespaces(app), ['/', '/dyn-7'], 'a namespace with a socket stays')
    raw!.send('41/dyn-7,')
    await until(() => namespaces(app).length === 1, 'the emptied namespace removed')
    t.pass('and goes once its last socket has left')
  })
}

t.test('io.cleanupEmptyChildNamespaces: the app may still turn it off', async (t) => {
  const { app, url } = await build(t, { io: { cleanupEmptyChildNamespaces: false } })
  app.io.of(/^\/dyn-\d+$/)
  const raw = await openRaw(t, url)
  await raw.connect(undefined, '/dyn-1').then(() => t.fail('connected without a token'), () => {})
  t.same(namespaces(app), ['/', '/dyn-1'])
})

t.test('no unhandledRejection or uncaughtException in this file', async (t) => {
  t.same(await faults.since(), [])
})
