import { randomBytes, randomUUID } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import type { FastifyInstance } from 'fastify'
import type { Socket as ServerSocket } from 'socket.io'
import { io as ioClient, type Socket } from 'socket.io-client'
import t, { type Test } from 'tap'
import { build, processFaults, refusal, request, sign, tokenFor, waitFor, within } from './helper.js'
import { HandshakeRefused, connectFrame, eventFrame, openRaw, until, type Frame, type RawClient } from './raw-client.js'

// Tracked for the whole file: the last test asserts that none happened.
const faults = processFaults({ uncaughtExceptions: true })

/** Sockets still being authenticated on `nsp` (Socket.IO keeps them until their middlewares answer). */
function preConnectSockets (app: FastifyInstance, nsp = '/'): number {
  return (app.io.of(nsp) as unknown as { _preConnectSockets: Map<string, unknown> })._preConnectSockets.size
}

/** The server-side socket of the user `userId`, once it has connected. */
async function serverSocketOf (app: FastifyInstance, userId: string): Promise<ServerSocket> {
  let found: ServerSocket | undefined
  await until(() => {
    found = [...app.io.of('/').sockets.values()].find((s) => s.data.userId === userId)
    return found !== undefined
  }, `the server-side socket of ${userId}`)
  return found!
}

/**
 * Only `watcher` is left on the server (the raw client's transport and socket are gone) and it
 * still receives a broadcast to its scope.
 */
async function stillServing (t: Test, app: FastifyInstance, watcher: Socket, label: string): Promise<void> {
  await until(() => app.io.engine.clientsCount === 1 && app.io.of('/').sockets.size === 1 && preConnectSockets(app) === 0,
    `${label}: only the watcher left on the server`)
  const marker = randomUUID()
  const got = waitFor<[string]>(watcher, 'probe')
  await app.broadcast('team:1', 'probe', marker)
  t.equal((await within(got, 10_000, `${label}: the probe broadcast`))[0], marker, `${label}: the watcher still receives broadcasts`)
}

const placeholder = (num: unknown): string => JSON.stringify({ _placeholder: true, num })

t.test('crafted packets close the connection; other clients go on being served', async (t) => {
  // one attachment allowed, so the decoder's own checks are reached (with the default 0 any binary packet closes the transport)
  const { app, url, connected } = await build(t, { rooms: () => ['team:1'], io: { maxHttpBufferSize: 10_000 }, limits: { binaryAttachments: 1 } })
  const { socket: watcher } = await connected('watcher')

  interface Case { name: string, connect: boolean, frames: () => Frame[], code?: number }
  const cases: Case[] = [
    { name: 'EVENT before CONNECT', connect: false, frames: () => [eventFrame('realtime:subscribe', [{ scope: 'team:1' }])] },
    { name: 'EVENT with an ack id before CONNECT', connect: false, frames: () => [eventFrame('realtime:subscribe', [{ scope: 'team:1' }], 1)] },
    { name: 'text garbage before CONNECT', connect: false, frames: () => ['hello'] },
    { name: 'binary garbage before CONNECT', connect: false, frames: () => [randomBytes(64)] },
    { name: 'text garbage: unknown Engine.IO packet type', connect: true, frames: () => ['x{"a":1}'] },
    { name: 'text garbage: empty frame', connect: true, frames: () => [''] },
    { name: 'text garbage: a ping from the client (wrong direction)', connect: true, frames: () => ['2'] },
    { name: 'text garbage: unknown Socket.IO packet type', connect: true, frames: () => ['49["x"]'] },
    { name: 'text garbage: broken JSON', connect: true, frames: () => ['42["realtime:subscribe",{'] },
    { name: 'text garbage: random base64', connect: true, frames: () => [`4${randomBytes(48).toString('base64')}`] },
    { name: 'binary garbage', connect: true, frames: () => [randomBytes(64)] },
    { name: 'second CONNECT after connected', connect: true, frames: () => [connectFrame({ token: tokenFor('raw') })] },
    { name: 'CONNECT_ERROR sent by the client', connect: true, frames: () => ['44{"message":"x"}'] },
    { name: 'DISCONNECT with a payload', connect: true, frames: () => ['41{"a":1}'] },
    { name: 'negative attachment count', connect: true, frames: () => [`45-1-["x",${placeholder(0)}]`] },
    { name: 'zero attachments', connect: true, frames: () => [`450-["x",${placeholder(0)}]`] },
    { name: 'huge attachment count', connect: true, frames: () => [`45999999999-["x",${placeholder(0)}]`] },
    { name: 'huge attachment count without its dash', connect: true, frames: () => [`45999999999["x",${placeholder(0)}]`] },
    { name: 'attachment count not a number', connect: true, frames: () => [`45a-["x",${placeholder(0)}]`] },
    { name: 'one attachment announced, text sent instead', connect: true, frames: () => [`451-["x",${placeholder(0)}]`, '42["x"]'] },
    { name: 'binary frame with no attachment announced', connect: true, frames: () => [Buffer.from([1, 2, 3])] },
    { name: 'placeholder beyond the attachments', connect: true, frames: () => [`451-["realtime:subscribe",${placeholder(5)}]`, Buffer.from([1])] },
    { name: 'placeholder with a negative num', connect: true, frames: () => [`451-["realtime:subscribe",${placeholder(-1)}]`, Buffer.from([1])] },
    { name: 'placeholder with a string num', connect: true, frames: () => [`451-["realtime:subscribe",${placeholder('0')}]`, Buffer.from([1])] },
    { name: 'non-array event payload: object', connect: true, frames: () => ['42{"scope":"team:1"}'] },
    { name: 'non-array event payload: string', connect: true, frames: () => ['42"realtime:subscribe"'] },
    { name: 'non-array event payload: null', connect: true, frames: () => ['42null'] },
    { name: 'event payload without a name', connect: true, frames: () => ['42[]'] },
    { name: 'event name an object', connect: true, frames: () => ['42[{"scope":"team:1"}]'] },
    { name: 'event name reserved by Socket.IO', connect: true, frames: () => ['42["disconnect"]'] },
    { name: 'text frame over maxHttpBufferSize', connect: true, frames: () => [eventFrame('x', ['a'.repeat(20_000)])], code: 1009 },
    { name: 'binary frame over maxHttpBufferSize', connect: true, frames: () => [`451-["x",${placeholder(0)}]`, Buffer.alloc(20_000)], code: 1009 },
    { name: 'frame over maxHttpBufferSize before CONNECT', connect: false, frames: () => ['4'.padEnd(20_000, 'a')], code: 1009 }
  ]

  const codes: Record<string, number> = {}
  for (const c of cases) {
    const raw = await openRaw(t, url)
    if (c.connect) {
      await raw.ready(tokenFor('raw'))
      t.equal(app.io.of('/').sockets.size, 2, `${c.name}: the raw client is connected`)
    }
    for (const frame of c.frames()) raw.send(frame)
    const closed = await raw.waitClosed(c.name)
    codes[c.name] = closed.code
    if (c.code !== undefined) t.equal(closed.code, c.code, `${c.name}: closed with ${c.code}`)
    else t.not(closed.code, 1006, `${c.name}: the server closed the WebSocket with a close frame (code ${closed.code})`)
    await stillServing(t, app, watcher, c.name)
  }
  t.comment(`close codes: ${JSON.stringify(codes)}`)
  t.ok(watcher.connected, 'the watcher stayed connected throughout')
})

t.test('packets Socket.IO ignores (or answers) leave the connection open and working', async (t) => {
  const { app, url, connected } = await build(t, { rooms: () => ['team:1'], limits: { binaryAttachments: 1 } })
  const { socket: watcher } = await connected('watcher')

  interface Case { name: string, frames: Frame[], answer?: (raw: RawClient) => Promise<void> }
  const invalidScope = (id: number) => async (raw: RawClient): Promise<void> => {
    const frame = await raw.next((f) => typeof f === 'string' && f.startsWith(`43${id}[`), `ack ${id}`) as string
    t.match(JSON.parse(frame.slice(`43${id}`.length)), [{ ok: false, error: { code: 'INVALID_SCOPE' } }], 'answered INVALID_SCOPE')
  }
  const cases: Case[] = [
    { name: 'ACK for an id the server never used', frames: ['43999[{"ok":true}]'] },
    { name: 'EVENT nobody listens to', frames: [eventFrame('no:such:event', [1])] },
    { name: 'EVENT with a numeric name', frames: ['42[7,"x"]'] },
    { name: 'Engine.IO noop', frames: ['6'] },
    {
      name: 'CONNECT to a namespace that does not exist (answered with CONNECT_ERROR)',
      frames: ['40/nope,{}'],
      answer: async (raw) => {
        const frame = await raw.next((f) => typeof f === 'string' && f.startsWith('44/nope,'), 'the CONNECT_ERROR for /nope') as string
        t.match(JSON.parse(frame.slice('44/nope,'.length)), { message: 'Invalid namespace' })
      }
    },
    { name: 'placeholder in a packet that is not binary (data, not an attachment)', frames: [`4217["realtime:subscribe",${placeholder(0)}]`], answer: invalidScope(17) },
    { name: 'binary subscribe: the scope is a Buffer', frames: [`451-18["realtime:subscribe",${placeholder(0)}]`, Buffer.from('team:1')], answer: invalidScope(18) },
    { name: 'binary subscribe: the message is a Buffer', frames: [`451-19["realtime:subscribe",{"scope":${placeholder(0)}}]`, Buffer.from('team:1')], answer: invalidScope(19) }
  ]

  for (const c of cases) {
    const raw = await openRaw(t, url)
    await raw.ready(tokenFor('raw'))
    for (const frame of c.frames) raw.send(frame)
    await c.answer?.(raw)
    t.same(await raw.request(1, 'realtime:unsubscribe', { scope: 'flush:x' }), [{ ok: true, scope: 'flush:x' }], `${c.name}: the connection still answers`)
    t.notOk(raw.isClosed, `${c.name}: not closed`)
    t.equal(app.io.of('/').sockets.size, 2, `${c.name}: its socket is still on the server`)
    raw.terminate()
    await stillServing(t, app, watcher, c.name)
  }
})

t.test('a second CONNECT while the first is being authenticated: one lookup, no second socket, transport closed', async (t) => {
  let lookups = 0
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  let granted = 0
  const { app, url } = await build(t, {
    auth: {
      user: async (claims) => {
        lookups++
        await gate
        return { id: String(claims.sub) }
      }
    },
    rooms: () => {
      granted++
      return ['team:1']
    }
  })
  let connections = 0
  app.io.on('connection', () => { connections++ })

  const raw = await openRaw(t, url)
  raw.send(connectFrame({ token: tokenFor('slow') }))
  await until(() => lookups === 1, 'the first lookup has started')
  raw.send(connectFrame({ token: tokenFor('slow') }))
  await raw.waitClosed('the second CONNECT')
  t.pass('the transport is closed')

  release()
  // the first handshake now finishes on a closed transport; Socket.IO drops its socket then
  await until(() => granted === 1, 'the first handshake reached rooms()')
  const settled = await until(() => preConnectSockets(app) === 0, 'no socket left in the handshake phase', 5000).then(() => true, () => false)
  t.ok(settled, 'no socket is left in the handshake phase')
  if (!settled) {
    const left = [...(app.io.of('/') as unknown as { _preConnectSockets: Map<string, ServerSocket> })._preConnectSockets.values()]
    t.comment(`left in the handshake phase: ${left.map((s) => `${s.id} (userId ${String(s.data.userId)})`).join(', ')}`)
  }
  t.equal(preConnectSockets(app), 0, 'neither the first nor the second handshake left a socket behind')
  t.equal(lookups, 1, 'the user was looked up once')
  t.equal(connections, 0, 'no socket connected')
  t.equal(app.io.of('/').sockets.size, 0, 'no socket on the server')
  await until(() => app.io.engine.clientsCount === 0, 'the transport is gone on the server')
})

t.test('every namespace is authenticated: created before ready, after ready, and dynamic children', async (t) => {
  const { app, url } = await build(t, { rooms: () => ['team:1'] }, { after: (app) => { app.io.of('/admin') } })
  app.io.of('/late')
  const dynamic = app.io.of(/^\/dyn-\w+$/)
  const seen: ServerSocket[] = []
  app.io.of('/admin').on('connection', (s) => { seen.push(s) })
  app.io.of('/late').on('connection', (s) => { seen.push(s) })
  dynamic.on('connection', (s) => { seen.push(s) })

  const nspClient = (nsp: string, auth?: Record<string, unknown>): Socket => {
    const socket = ioClient(`${url}${nsp}`, { transports: ['websocket'], forceNew: true, reconnection: false, ...(auth === undefined ? {} : { auth }) })
    t.teardown(() => { socket.disconnect() })
    return socket
  }
  const otherKey = 'not-the-secret-of-this-app-0123456789'
  for (const nsp of ['/admin', '/late', '/dyn-abc']) {
    t.equal((await refusal(nspClient(nsp))).data?.code, 'AUTH_REQUIRED', `${nsp}: no token`)
    t.equal((await refusal(nspClient(nsp, { token: 'not.a.jwt' }))).data?.code, 'AUTH_INVALID', `${nsp}: malformed token`)
    const forged = createSigner({ key: otherKey, algorithm: 'HS256' })({ sub: 'u1', exp: Math.floor(Date.now() / 1000) + 60 })
    t.equal((await refusal(nspClient(nsp, { token: forged }))).data?.code, 'AUTH_INVALID', `${nsp}: bad signature`)
    t.equal((await refusal(nspClient(nsp, { token: sign({ sub: 'u1' }, -60) }))).data?.code, 'AUTH_EXPIRED', `${nsp}: expired`)
    t.equal(app.io.of(nsp).sockets.size, 0, `${nsp}: no socket after the refusals`)

    const before = seen.length
    const good = nspClient(nsp, { token: tokenFor('u1') })
    await waitFor(good, 'connect')
    await until(() => seen.length === before + 1, `${nsp}: the server-side connection`)
    const socket = seen[seen.length - 1]!
    t.equal(socket.nsp.name, nsp)
    t.equal(socket.data.userId, 'u1', `${nsp}: socket.data.userId is set`)
    t.equal(app.io.of(nsp).sockets.size, 1, `${nsp}: one socket`)
    good.disconnect()
  }

  // a transport already authenticated on / gets nothing for free on another namespace
  const raw = await openRaw(t, url)
  await raw.ready(tokenFor('u2'))
  const err = await raw.connect(undefined, '/admin').then(() => null, (e: Error & { data?: { code?: string } }) => e)
  t.equal(err?.data?.code, 'AUTH_REQUIRED', '/admin on a transport authenticated on /: still needs a token')
  const ok = await raw.connect({ token: tokenFor('u2') }, '/admin')
  t.type(ok.sid, 'string', 'and connects with one')
})

t.test('missing and non-function acks, and app callbacks that throw, never crash the server', async (t) => {
  let roomsThrow = false
  let lookupThrows = false
  const { app, url, connected } = await build(t, {
    auth: {
      user: (claims) => {
        if (lookupThrows) throw new Error('user lookup broke')
        return { id: String(claims.sub) }
      }
    },
    rooms: () => {
      if (roomsThrow) throw new Error('rooms broke')
      return ['team:1']
    },
    canSubscribe: (_user, scope) => {
      if (scope === 'boom:sync') throw new Error('canSubscribe broke')
      if (scope === 'boom:async') return Promise.reject(new Error('canSubscribe rejected'))
      return false
    }
  })
  const { socket: watcher } = await connected('watcher')
  const raw = await openRaw(t, url)
  await raw.ready(tokenFor('raw'))

  const refresh = tokenFor('raw')
  const unacked = [
    eventFrame('realtime:subscribe', [{ scope: 'team:1' }]),
    eventFrame('realtime:subscribe', [{ scope: 'team:1' }, 'not-a-function']),
    eventFrame('realtime:subscribe', [{ scope: 'team:1' }, { not: 'a function' }, 42]),
    eventFrame('realtime:subscribe'),
    eventFrame('realtime:subscribe', [null]),
    eventFrame('realtime:subscribe', [{ scope: 'boom:sync' }]),
    eventFrame('realtime:subscribe', [{ scope: 'boom:async' }]),
    eventFrame('realtime:subscribe', [{ scope: 'other:1' }, 'x']),
    eventFrame('realtime:unsubscribe'),
    eventFrame('realtime:unsubscribe', [{ scope: 'team:1' }, 7]),
    eventFrame('realtime:auth'),
    eventFrame('realtime:auth', [{ token: 'not.a.jwt' }, 'x']),
    eventFrame('realtime:auth', [{ token: refresh }])
  ]
  for (const frame of unacked) raw.send(frame)
  t.same(await raw.request(1, 'realtime:unsubscribe', { scope: 'flush:x' }), [{ ok: true, scope: 'flush:x' }], 'answers after events without acks')

  t.match(await raw.request(2, 'realtime:subscribe', { scope: 'boom:sync' }), [{ ok: false, error: { code: 'UNAVAILABLE' } }], 'canSubscribe throws: UNAVAILABLE')
  t.match(await raw.request(3, 'realtime:subscribe', { scope: 'boom:async' }), [{ ok: false, error: { code: 'UNAVAILABLE' } }], 'canSubscribe rejects: UNAVAILABLE')

  roomsThrow = true
  raw.send(eventFrame('realtime:subscribe', [{ scope: 'team:2' }]))
  raw.send(eventFrame('realtime:subscribe', [{ scope: 'team:2' }, 'x']))
  t.match(await raw.request(4, 'realtime:subscribe', { scope: 'team:2' }), [{ ok: false, error: { code: 'UNAVAILABLE' } }], 'rooms throws at subscribe: UNAVAILABLE')
  roomsThrow = false

  lookupThrows = true
  raw.send(eventFrame('realtime:auth', [{ token: refresh }]))
  t.match(await raw.request(5, 'realtime:auth', { token: refresh }), [{ ok: false, error: { code: 'UNAVAILABLE' } }], 'auth.user throws at refresh: UNAVAILABLE')
  lookupThrows = false

  // the official client: no ack, and a last argument that is not a function
  watcher.emit('realtime:subscribe', { scope: 'team:1' })
  watcher.emit('realtime:subscribe', { scope: 'boom:sync' }, 'not-a-function')
  watcher.emit('realtime:auth', { token: tokenFor('watcher') }, 'not-a-function')
  t.match(await request(watcher, 'realtime:subscribe', { scope: 'team:1' }), { ok: true }, 'the official client is answered afterwards')

  t.notOk(raw.isClosed, 'the raw connection is still open')
  t.same(await raw.request(6, 'realtime:unsubscribe', { scope: 'flush:x' }), [{ ok: true, scope: 'flush:x' }])
  const marker = randomUUID()
  const got = waitFor<[string]>(watcher, 'probe')
  const rawGot = raw.event('probe')
  await app.broadcast('team:1', 'probe', marker)
  t.equal((await within(got, 10_000, 'the probe broadcast'))[0], marker, 'the watcher receives broadcasts')
  t.equal((await rawGot)[0], marker, 'so does the raw client')
  t.equal(app.io.of('/').sockets.size, 2, 'both sockets still connected')
})

t.test('a client that stops reading is disconnected once its send buffer passes limits.sendBufferBytes; the others are not', async (t) => {
  const limit = 256 * 1024
  const { app, url, connected } = await build(t, { rooms: () => ['team:1'], limits: { sendBufferBytes: limit } })
  const { socket: normal } = await connected('normal')
  const raw = await openRaw(t, url)
  t.same((await raw.ready(tokenFor('slow'))).scopes.sort(), ['team:1', 'user:slow'], 'the slow client joined the scope')
  const slow = await serverSocketOf(app, 'slow')
  const normalServer = await serverSocketOf(app, 'normal')
  const slowState = { gone: false }
  const gone = new Promise<string>((resolve) => slow.once('disconnect', (reason) => {
    slowState.gone = true
    resolve(reason)
  }))
  let normalDropped = false
  normalServer.once('disconnect', () => { normalDropped = true })
  raw.pause()

  // well past what the loopback kernel buffers can absorb (send and receive side together)
  const chunk = 'x'.repeat(128 * 1024)
  const most = 512
  let sent = 0
  const received: number[] = []
  normal.on('bulk', (payload: { n: number }) => { received.push(payload.n) })
  while (sent < most && !slowState.gone) {
    const arrived = waitFor(normal, 'bulk')
    await app.broadcast('team:1', 'bulk', { n: sent, chunk }, { volatile: true })
    sent++
    await within(arrived, 10_000, `broadcast ${sent} at the normal client`)
  }
  t.comment(`${sent} broadcasts of 128 KiB (the loop stops once the slow client is dropped)`)
  const reason = await within(gone, 20_000, 'the slow client\'s server-side disconnect')
  t.equal(reason, 'forced close', 'the server closed the slow client\'s transport')
  await until(() => app.io.engine.clientsCount === 1, 'the slow transport is gone on the server')

  for (let i = 0; i < 3; i++) {
    const arrived = waitFor(normal, 'bulk')
    await app.broadcast('team:1', 'bulk', { n: sent++, chunk: 'small' })
    await within(arrived, 10_000, 'a broadcast after the drop at the normal client')
  }
  t.same(received, Array.from({ length: sent }, (_, i) => i), 'the normal client received every broadcast, in order')
  t.ok(normal.connected, 'the normal client is still connected')
  t.notOk(normalDropped, 'and its server-side socket too')
  t.equal(app.io.of('/').sockets.size, 1)
})

t.test('handshakes pending from one address are capped at the HTTP level; places come back on authenticate or close', async (t) => {
  const { app, url } = await build(t, { limits: { handshakesPerAddress: 5 }, io: { connectTimeout: 60_000 } })
  const refused = async (what: string): Promise<void> => {
    const err = await openRaw(t, url).then(() => null, (e: unknown) => e)
    t.ok(err instanceof HandshakeRefused, `${what}: the upgrade is refused`)
    if (err instanceof HandshakeRefused) {
      t.equal(err.status, 400, `${what}: HTTP 400`)
      t.match(err.body, /Too many pending handshakes/, `${what}: says why`)
    }
  }
  const pending = await Promise.all(Array.from({ length: 5 }, () => openRaw(t, url)))
  t.equal(app.io.engine.clientsCount, 5)
  await refused('6th transport')
  const polling = await fetch(`${url}/socket.io/?EIO=4&transport=polling`)
  t.equal(polling.status, 403, 'a long-polling handshake is refused too (HTTP 403)')
  await polling.text()

  const noToken = await pending[4]!.connect().then(() => null, (e: Error & { data?: { code?: string } }) => e)
  t.equal(noToken?.data?.code, 'AUTH_REQUIRED')
  await refused('after a refused CONNECT (the transport still holds its place)')

  await pending[0]!.ready(tokenFor('p0'))
  const admitted = await openRaw(t, url)
  t.ok(admitted.open.sid, 'one authenticated: a new transport is admitted')
  await refused('at the cap again')

  pending[1]!.terminate()
  await until(() => app.io.engine.clientsCount === 5, 'the closed transport is gone on the server')
  const again = await openRaw(t, url)
  t.ok(again.open.sid, 'one closed: a new transport is admitted')
  await refused('at the cap once more')
})

t.test('limits.handshakesPerAddress: 256 by default; false turns the cap off', async (t) => {
  await t.test('default', async (t) => {
    const { app, url } = await build(t, { io: { connectTimeout: 60_000 } })
    await Promise.all(Array.from({ length: 256 }, () => openRaw(t, url)))
    t.equal(app.io.engine.clientsCount, 256)
    const err = await openRaw(t, url).then(() => null, (e: unknown) => e)
    t.ok(err instanceof HandshakeRefused, 'the 257th is refused')
  })
  await t.test('false', async (t) => {
    const { app, url } = await build(t, { limits: { handshakesPerAddress: false }, io: { connectTimeout: 60_000 } })
    await Promise.all(Array.from({ length: 300 }, () => openRaw(t, url)))
    t.equal(app.io.engine.clientsCount, 300, '300 pending transports from one address, all admitted')
  })
})

t.test('connectTimeout: 10 s by default; a transport that never authenticates is closed after it', async (t) => {
  await t.test('default', async (t) => {
    const { app } = await build(t)
    t.equal(app.io.connectTimeout(), 10_000, 'the plugin sets 10 s')
    const { app: custom } = await build(t, { io: { connectTimeout: 1234 } })
    t.equal(custom.io.connectTimeout(), 1234, 'io.connectTimeout is passed through')
  })
  await t.test('closes idle and refused transports, keeps authenticated ones, gives the place back', async (t) => {
    const { app, url } = await build(t, { limits: { handshakesPerAddress: 2 }, io: { connectTimeout: 500 } })
    const authenticated = await openRaw(t, url)
    await authenticated.ready(tokenFor('a'))
    const idle = await openRaw(t, url)
    const refusedConnect = await openRaw(t, url)
    const err = await refusedConnect.connect().then(() => null, (e: Error & { data?: { code?: string } }) => e)
    t.equal(err?.data?.code, 'AUTH_REQUIRED')
    t.ok((await openRaw(t, url).then(() => null, (e: unknown) => e)) instanceof HandshakeRefused, 'two pending: the next is refused')

    await idle.waitClosed('the idle transport')
    t.pass('a transport that sent no CONNECT is closed')
    await refusedConnect.waitClosed('the refused transport')
    t.pass('a transport whose CONNECT was refused is closed')
    t.same(await authenticated.request(1, 'realtime:unsubscribe', { scope: 'flush:x' }), [{ ok: true, scope: 'flush:x' }],
      'the authenticated one, opened first, is still open')
    await until(() => app.io.engine.clientsCount === 1, 'the closed transports are gone on the server')
    const next = await openRaw(t, url)
    t.ok(next.open.sid, 'their places are given back')
  })
})

t.test('no unhandledRejection or uncaughtException in this file', async (t) => {
  t.same(await faults.since(), [])
})
