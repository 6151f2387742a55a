import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { Socket } from 'socket.io'
import { io } from 'socket.io-client'
import { build, flush, processFaults, refusal, request, sign, tokenFor, until, waitFor, within } from './helper.js'
import { ManualClock } from './clock.js'

const faults = processFaults()

interface Line {
  level: number
  msg: string
  [key: string]: unknown
}

/** A Fastify logger at `level` whose every line is kept, raw and parsed. */
function capture (level = 'debug'): { fastify: { logger: { level: string, stream: { write: (line: string) => void } } }, raw: string[], lines: () => Line[] } {
  const raw: string[] = []
  return {
    fastify: { logger: { level, stream: { write: (line: string) => { raw.push(line) } } } },
    raw,
    lines: () => raw.map((line) => JSON.parse(line) as Line)
  }
}

const DEBUG = 20
const INFO = 30
const WARN = 40

const grants = {
  rooms: () => ['team:1'],
  canSubscribe: (_user: unknown, scope: string) => scope === 'team:2'
}

t.test('logs: one info line at ready; connect, disconnect, refusals and refused subscribes at debug', async (t) => {
  const log = capture()
  const { connected, client } = await build(t, { ...grants, limits: { scopesPerSocket: 50 } }, { fastify: log.fastify })
  const ready = log.lines().filter((l) => l.msg === 'fastify-realtime: ready')
  t.equal(ready.length, 1, 'one ready line')
  t.match(ready[0], {
    level: INFO,
    nodeId: String,
    history: 'memory',
    adapter: 'in-memory',
    metrics: false,
    limits: { scopesPerSocket: 50, handshakesPerAddress: 256, sendBufferBytes: 8388608, rateLimit: { max: 100, windowMs: 60000 }, connectTimeout: 10000 }
  })

  const { socket } = await connected('alice')
  const connect = log.lines().find((l) => l.msg === 'fastify-realtime: socket connected')
  t.match(connect, { level: DEBUG, userId: 'alice', namespace: '/', transport: 'websocket', address: /127\.0\.0\.1/ })

  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:3' }), { ok: false, error: { code: 'FORBIDDEN' } })
  const long = `team:${'x'.repeat(10_000)}`
  t.match(await request(socket, 'realtime:subscribe', { scope: long }), { ok: false, error: { code: 'INVALID_SCOPE' } })
  const refused = log.lines().filter((l) => l.msg === 'fastify-realtime: subscribe refused')
  t.match(refused, [
    { level: DEBUG, userId: 'alice', scope: 'team:3', code: 'FORBIDDEN' },
    { level: DEBUG, userId: 'alice', code: 'INVALID_SCOPE' }
  ])
  t.equal((refused[1]!.scope as string).length, 200, 'a scope is cut to 200 characters')

  const gone = new Promise((resolve) => { socket.once('disconnect', resolve) })
  socket.disconnect()
  await gone
  await until(() => log.lines().some((l) => l.msg === 'fastify-realtime: socket disconnected'), 'the disconnect line')
  t.match(log.lines().find((l) => l.msg === 'fastify-realtime: socket disconnected'), { level: DEBUG, userId: 'alice', reason: 'client namespace disconnect', durationMs: Number })

  t.equal((await refusal(client({ token: 'a.b.c' }))).data?.code, 'AUTH_INVALID')
  t.match(log.lines().filter((l) => l.msg === 'fastify-realtime: handshake refused'), [{ level: DEBUG, code: 'AUTH_INVALID', namespace: '/' }])
})

t.test('logs: never a token, a claim or a payload, at any level', async (t) => {
  const log = capture('trace')
  const claim = `claim-${randomUUID()}`
  const secretPayload = `payload-${randomUUID()}`
  const { app, client } = await build(t, { ...grants, hooks: { connect: () => { throw new Error('hook failed') } } }, { fastify: log.fastify })
  const token = sign({ sub: 'bob', apiKey: claim })
  const socket = client({ token })
  await waitFor(socket, 'realtime:ready')
  const got = waitFor(socket, 'note')
  await app.broadcast('team:1', 'note', { secretPayload })
  await got
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:9' }), { ok: false })
  const bad = sign({ sub: 'mallory', apiKey: claim }, -60)
  t.equal((await refusal(client({ token: bad }))).data?.code, 'AUTH_EXPIRED')
  t.equal((await refusal(client({ token }, { query: { access_token: token } }))).data?.code, 'AUTH_INVALID')
  socket.disconnect()
  await until(() => log.raw.some((l) => l.includes('socket disconnected')), 'the disconnect line')

  t.ok(log.raw.length > 5, `the logger was in use (${log.raw.length} lines)`)
  const all = log.raw.join('\n')
  for (const [what, value] of [['token', token], ["the token's signature", token.split('.')[2]!], ['the expired token', bad.split('.')[2]!], ['a claim', claim], ['a payload', secretPayload]] as const) {
    t.notOk(all.includes(value), `no line carries ${what}`)
  }
})

t.test('hooks: connect, subscribe, unsubscribe and disconnect, after the fact and with what happened', async (t) => {
  const calls: unknown[][] = []
  let roomsAtConnect: string[] = []
  const { connected, app, client, url } = await build(t, {
    ...grants,
    hooks: {
      connect: (socket: Socket) => {
        roomsAtConnect = [...socket.rooms].filter((r) => r !== socket.id).sort()
        calls.push(['connect', socket.data.userId, socket.nsp.name])
      },
      subscribe: (socket: Socket, scope: string) => { calls.push(['subscribe', socket.data.userId, scope, socket.rooms.has(scope)]) },
      unsubscribe: (socket: Socket, scope: string) => { calls.push(['unsubscribe', socket.data.userId, scope, socket.rooms.has(scope)]) },
      disconnect: (socket: Socket, reason: string) => { calls.push(['disconnect', socket.data.userId, reason]) }
    }
  })
  const { socket } = await connected('carol')
  t.same(roomsAtConnect, ['team:1', 'user:carol'], 'connect: the granted scopes are joined')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:2' }), { ok: true })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:3' }), { ok: false })
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:2' }), { ok: true })
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'user:carol' }), { ok: false })

  // another namespace: connect and disconnect, with its name
  app.io.of('/admin')
  // each wait is set up in the tick its socket is made, before anything can arrive
  const other = client({ token: tokenFor('dave') })
  const otherReady = waitFor(other, 'realtime:ready')
  const admin = io(`${url}/admin`, { transports: ['websocket'], forceNew: true, reconnection: false, auth: { token: tokenFor('dave') } })
  t.teardown(() => { admin.disconnect() })
  await Promise.all([otherReady, waitFor(admin, 'connect')])
  admin.disconnect()
  other.disconnect()
  socket.disconnect()
  await until(() => calls.filter((c) => c[0] === 'disconnect').length === 3, 'every disconnect hook')
  t.same(calls.slice(0, 3), [
    ['connect', 'carol', '/'],
    ['subscribe', 'carol', 'team:2', true],
    ['unsubscribe', 'carol', 'team:2', false]
  ], 'each once, after the fact, none for refused ones')
  t.same(calls.slice(3).filter((c) => c[0] === 'connect').sort(), [['connect', 'dave', '/'], ['connect', 'dave', '/admin']])
  t.same(calls.slice(3).filter((c) => c[0] === 'disconnect').map((c) => c.join(' ')).sort(), [
    'disconnect carol client namespace disconnect',
    'disconnect dave client namespace disconnect',
    'disconnect dave client namespace disconnect'
  ], 'a disconnect for every connect')
})

t.test('hooks that throw, reject or never answer break nothing and delay nothing', async (t) => {
  const log = capture('info')
  const never = new Promise<void>(() => {})
  const { connected, app } = await build(t, {
    ...grants,
    hooks: {
      connect: async () => await never,
      subscribe: () => { throw new Error('subscribe hook threw') },
      unsubscribe: async () => { throw new Error('unsubscribe hook rejected') },
      disconnect: async () => await never
    }
  }, { fastify: log.fastify })
  // the handshake is not held by a connect hook that never resolves
  const { socket } = await within(connected('erin'), 10_000, 'ready while the connect hook hangs')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:2' }), { ok: true }, 'the subscribe is answered')
  const got = waitFor(socket, 'note')
  await app.broadcast('team:2', 'note', 1)
  t.same((await within(got, 10_000, 'delivery'))[0], 1, 'and delivery goes on')
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:2' }), { ok: true })
  await flush(socket)
  t.ok(socket.connected, 'the socket is still connected')
  await until(() => log.lines().filter((l) => l.level === WARN).length >= 2, 'both failures logged')
  t.match(log.lines().filter((l) => l.level === WARN), [
    { msg: 'fastify-realtime: the subscribe hook failed', hook: 'subscribe', err: { message: 'subscribe hook threw' } },
    { msg: 'fastify-realtime: the unsubscribe hook failed', hook: 'unsubscribe', err: { message: 'unsubscribe hook rejected' } }
  ])
})

t.test('a failing hook warns at most once per 10 s (on the plugin clock); the rest go to debug', async (t) => {
  const log = capture()
  const clock = new ManualClock()
  const { connected } = await build(t, { clock, hooks: { connect: () => { throw new Error('down') } } }, { fastify: log.fastify })
  const failures = (level: number): number => log.lines().filter((l) => l.msg === 'fastify-realtime: the connect hook failed' && l.level === level).length
  for (const user of ['a', 'b', 'c']) await connected(user)
  t.equal(failures(WARN), 1, 'one warning')
  t.equal(failures(DEBUG), 2, 'the others at debug')
  clock.advance(10_000)
  await connected('d')
  t.equal(failures(WARN), 2, 'another warning once 10 s have passed')
})

t.test('a user lookup that keeps failing warns once per 10 s, not once per handshake', async (t) => {
  const log = capture()
  const clock = new ManualClock()
  const { client } = await build(t, { clock, auth: { user: () => { throw new Error('database down') } } }, { fastify: log.fastify })
  const failures = (level: number): number => log.lines().filter((l) => l.msg === 'fastify-realtime: user lookup failed' && l.level === level).length
  for (let i = 0; i < 3; i++) t.equal((await refusal(client({ token: tokenFor(`u${i}`) }))).data?.code, 'UNAVAILABLE')
  t.same([failures(WARN), failures(DEBUG)], [1, 2], 'one warning, the rest at debug')
  clock.advance(10_000)
  t.equal((await refusal(client({ token: tokenFor('u9') }))).data?.code, 'UNAVAILABLE')
  t.equal(failures(WARN), 2, 'the next period warns again')
})

t.test('no unhandledRejection in this file', async (t) => {
  t.same(await faults.since(), [])
})
