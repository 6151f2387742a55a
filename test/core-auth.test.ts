import { generateKeyPairSync } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import { createSigner } from 'fast-jwt'
import Fastify from 'fastify'
import t from 'tap'
import realtime from '../src/index.js'
import { ManualClock } from './clock.js'
import { SECRET, build, flush, processFaults, refusal, request, sign, tokenFor, waitFor } from './helper.js'

const faults = processFaults()

function scopeRooms (app: { io: { of: (n: string) => { adapter: { rooms: Map<string, Set<string>> } } } }): string[] {
  const { rooms } = app.io.of('/').adapter
  // socket-id rooms hold exactly their own socket; scopes are everything else
  return [...rooms.keys()].filter((room) => !rooms.get(room)!.has(room))
}

t.test('refusal codes reach connect_error, with nothing joined', async (t) => {
  const lookups: Record<string, () => unknown> = {
    nobody: () => null,
    banned: () => false,
    broken: () => { throw new Error('db down') },
    slow: () => new Promise(() => {})
  }
  const { app, client } = await build(t, {
    auth: { user: (claims) => (lookups[String(claims.sub)] ?? (() => ({ id: claims.sub })))() as never, timeoutMs: 200 },
    rooms: () => ['team:1']
  })
  const other = createSigner({ key: 'another-secret-entirely', algorithm: 'HS256' })
  const cases: Array<[string, Record<string, unknown> | null, string]> = [
    ['no token', null, 'AUTH_REQUIRED'],
    ['malformed', { token: 'not.a.jwt' }, 'AUTH_INVALID'],
    ['bad signature', { token: other({ sub: 'u1', exp: Math.floor(Date.now() / 1000) + 60 }) }, 'AUTH_INVALID'],
    ['expired', { token: sign({ sub: 'u1' }, -60) }, 'AUTH_EXPIRED'],
    ['lookup says no (null)', { token: tokenFor('nobody') }, 'USER_REJECTED'],
    ['lookup says no (false)', { token: tokenFor('banned') }, 'USER_REJECTED'],
    ['lookup throws', { token: tokenFor('broken') }, 'UNAVAILABLE'],
    ['lookup hangs', { token: tokenFor('slow') }, 'UNAVAILABLE']
  ]
  for (const [name, auth, code] of cases) {
    const err = await refusal(client(auth))
    t.equal(err.data?.code, code, name)
    t.ok(err.message.length > 10 && !err.message.includes('Error:'), `${name}: plain-words message`)
  }
  t.equal((await app.realtime.stats()).node.connections, 0)
  t.same(scopeRooms(app), [])
})

t.test('Authorization header accepted; query-string tokens refused', async (t) => {
  const { client } = await build(t)
  const viaHeader = client(null, { extraHeaders: { authorization: `Bearer ${tokenFor('u1')}` } })
  const [ready] = await waitFor<[{ userId: string }]>(viaHeader, 'realtime:ready')
  t.equal(ready.userId, 'u1')
  const inQuery = await refusal(client({ token: tokenFor('u1') }, { query: { token: tokenFor('u1') } }))
  t.equal(inQuery.data?.code, 'AUTH_INVALID')
  const jwtLooking = await refusal(client({ token: tokenFor('u1') }, { query: { x: tokenFor('u1') } }))
  t.equal(jwtLooking.data?.code, 'AUTH_INVALID')
})

t.test('algorithm pinning, alg none, key confusion, exp and claims', async (t) => {
  const { client } = await build(t, { auth: { verify: { allowedIss: 'https://issuer.example' } } })
  const now = Math.floor(Date.now() / 1000)
  const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')
  const body = Buffer.from(JSON.stringify({ sub: 'u1', exp: now + 60, iss: 'https://issuer.example' })).toString('base64url')
  t.equal((await refusal(client({ token: `${header}.${body}.` }))).data?.code, 'AUTH_INVALID', 'alg none')
  const hs512 = createSigner({ key: SECRET, algorithm: 'HS512' })
  t.equal((await refusal(client({ token: hs512({ sub: 'u1', exp: now + 60, iss: 'https://issuer.example' }) }))).data?.code, 'AUTH_INVALID', 'HS512 not pinned')
  t.equal((await refusal(client({ token: sign({ sub: 'u1', iss: 'https://evil.example' }) }))).data?.code, 'AUTH_INVALID', 'wrong iss')
  const noExp = createSigner({ key: SECRET, algorithm: 'HS256' })({ sub: 'u1', iss: 'https://issuer.example' })
  t.equal((await refusal(client({ token: noExp }))).data?.code, 'AUTH_INVALID', 'no exp')
  const good = client({ token: sign({ sub: 'u1', iss: 'https://issuer.example' }) })
  await waitFor(good, 'realtime:ready')
  t.pass('a token with the right issuer connects')
})

t.test('HS256 signed with the RSA public key is refused', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const { client } = await build(t, { auth: { secret: { public: pem } } })
  const exp = Math.floor(Date.now() / 1000) + 60
  const forged = createSigner({ key: pem, algorithm: 'HS256' })({ sub: 'u1', exp })
  t.equal((await refusal(client({ token: forged }))).data?.code, 'AUTH_INVALID')
  const real = createSigner({ key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'RS256' })({ sub: 'u1', exp })
  await waitFor(client({ token: real }), 'realtime:ready')
  t.pass('RS256 with the private key connects')
})

t.test('option errors', async (t) => {
  const empty = Fastify()
  t.teardown(() => empty.close())
  await t.rejects(async () => { await empty.register(realtime, { auth: { secret: '' } }) }, { code: 'FST_REALTIME_INVALID_OPTION' })

  const unknown = Fastify()
  t.teardown(() => unknown.close())
  await t.rejects(async () => { await unknown.register(realtime, { auth: { secrett: 'x' } } as never) }, { code: 'FST_REALTIME_INVALID_OPTION', message: /auth.*secrett/ })

  const noSecret = Fastify()
  t.teardown(() => noSecret.close())
  await noSecret.register(realtime, {})
  await t.rejects(async () => { await noSecret.ready() }, { code: 'FST_REALTIME_INVALID_OPTION', message: /auth\.secret/ })

  const opts = Object.freeze({ auth: Object.freeze({ secret: SECRET }), rooms: () => [] })
  const frozen = Fastify()
  t.teardown(() => frozen.close())
  await frozen.register(realtime, opts)
  await frozen.ready()
  t.same(Object.keys(opts.auth), ['secret'], 'caller options untouched')
})

for (const when of ['before', 'after'] as const) {
  t.test(`the app's own @fastify/jwt registered ${when} the plugin is reused`, async (t) => {
    const appSecret = `app-secret-${when}-0123456789abcdef`
    const app = Fastify()
    t.teardown(() => app.close())
    if (when === 'before') await app.register(fastifyJwt, { secret: appSecret })
    await app.register(realtime, when === 'after' ? { auth: { secret: SECRET } } : {})
    if (when === 'after') await app.register(fastifyJwt, { secret: appSecret })
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { io } = await import('socket.io-client')
    const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
    const good = io(url, { transports: ['websocket'], reconnection: false, auth: { token: app.jwt.sign({ sub: 'u1' }, { expiresIn: 60 }) } })
    t.teardown(() => { good.disconnect() })
    await waitFor(good, 'realtime:ready')
    const bad = io(url, { transports: ['websocket'], reconnection: false, auth: { token: tokenFor('u1') } })
    t.teardown(() => { bad.disconnect() })
    t.equal((await refusal(bad)).data?.code, 'AUTH_INVALID', 'a token for the plugin secret is not the app key')
  })
}

t.test('socket.data.user is the lookup result; bad user ids refused', async (t) => {
  const seen: unknown[] = []
  const { app, client } = await build(t, { auth: { user: (claims) => claims.sub === 'bad' ? { id: 'has space' } : { id: String(claims.sub), role: 'admin' } } }, {
    after: (app) => { app.io.on('connection', (socket) => { seen.push(socket.data.user) }) }
  })
  await waitFor(client({ token: tokenFor('u1') }), 'realtime:ready')
  t.same(seen, [{ id: 'u1', role: 'admin' }])
  t.equal((await refusal(client({ token: tokenFor('bad') }))).data?.code, 'USER_REJECTED')
  t.equal((await app.realtime.stats()).node.connections, 1)
})

t.test('token expiry: auth_expired, refresh keeps the socket, otherwise disconnect', async (t) => {
  const clock = new ManualClock()
  const { app, client } = await build(t, { rooms: () => ['team:1'], clock, auth: { refreshGraceMs: 30_000 } })
  const kept = client({ token: sign({ sub: 'u1' }, 60) })
  const dropped = client({ token: sign({ sub: 'u2' }, 60) })
  await Promise.all([waitFor(kept, 'realtime:ready'), waitFor(dropped, 'realtime:ready')])
  const told = [waitFor(kept, 'realtime:auth_expired'), waitFor(dropped, 'realtime:auth_expired')]
  clock.advance(59_000)
  await flush(kept)
  t.equal(clock.pending, 1, 'one timer watches every token, and nothing is due yet')
  // past both exp seconds (the tokens were signed on the real clock, after this one began)
  clock.advancePast(Math.max(...[kept, dropped].map((s) => [...app.io.of('/').sockets.values()].find((x) => x.id === s.id)!.data.claims.exp!)))
  await Promise.all(told)
  t.pass('both sockets are told once their exp second has passed')

  const fresh = sign({ sub: 'u1' }, 600)
  const ack = await request(kept, 'realtime:auth', { token: fresh })
  t.same(ack, { ok: true, exp: JSON.parse(Buffer.from(fresh.split('.')[1]!, 'base64url').toString()).exp })
  const wrongSub = await request(dropped, 'realtime:auth', { token: tokenFor('someone-else') })
  t.match(wrongSub, { ok: false, error: { code: 'AUTH_INVALID' } })
  const invalid = await request(dropped, 'realtime:auth', { token: 'garbage' })
  t.match(invalid, { ok: false, error: { code: 'AUTH_INVALID' } })

  const gone = waitFor<[string]>(dropped, 'disconnect')
  clock.advance(29_000)
  await flush(dropped)
  t.ok(dropped.connected, 'not before the grace has run out')
  clock.advance(1_000)
  t.equal((await gone)[0], 'io server disconnect')

  // the refreshed socket outlived the grace and still has its rooms
  const got = waitFor<[unknown]>(kept, 'after:grace')
  await app.broadcast('team:1', 'after:grace', { n: 1 })
  t.same((await got)[0], { n: 1 })
  t.ok(kept.connected)
})

t.test('disconnectUser closes every socket of that user only', async (t) => {
  const { app, connected } = await build(t)
  const [a1, a2, b] = await Promise.all([connected('a'), connected('a'), connected('b')])
  const reasons = Promise.all([waitFor<[string]>(a1.socket, 'disconnect'), waitFor<[string]>(a2.socket, 'disconnect')])
  await app.realtime.disconnectUser('a')
  t.same((await reasons).map(([r]) => r), ['io server disconnect', 'io server disconnect'])
  t.ok(b.socket.connected)
  await t.rejects(app.realtime.disconnectUser('has space'), { code: 'FST_REALTIME_INVALID_USER_ID' })
})

t.test('cross-origin handshakes refused when io.cors names origins', async (t) => {
  const { app, client } = await build(t, { io: { cors: { origin: ['http://good.example'] } } })
  const evil = await refusal(client({ token: tokenFor('u1') }, { extraHeaders: { origin: 'http://evil.example' } }))
  t.ok(evil instanceof Error)
  t.equal((await app.realtime.stats()).node.connections, 0)
  await waitFor(client({ token: tokenFor('u1') }, { extraHeaders: { origin: 'http://good.example' } }), 'realtime:ready')

  const wildcard = Fastify()
  t.teardown(() => wildcard.close())
  await t.rejects(async () => { await wildcard.register(realtime, { auth: { secret: SECRET }, io: { cors: { origin: '*', credentials: true } } }) }, { code: 'FST_REALTIME_INVALID_OPTION' })
})

t.test('query-string check: names in any case and real JWTs refused, other values accepted', async (t) => {
  const { client } = await build(t)
  const token = tokenFor('u1')
  t.equal((await refusal(client({ token }, { query: { Authorization: `Bearer ${token}` } }))).data?.code, 'AUTH_INVALID', 'Authorization in the query')
  t.equal((await refusal(client({ token }, { query: { Access_Token: 'opaque' } }))).data?.code, 'AUTH_INVALID', 'a token name in another case')
  t.equal((await refusal(client({ token }, { query: { x: `bearer ${token}` } }))).data?.code, 'AUTH_INVALID', 'a JWT behind "bearer "')
  const version = client({ token }, { query: { v: '1.2.3', host: 'app.example.com' } })
  await waitFor(version, 'realtime:ready')
  t.pass('dotted values that are not JWTs (versions, host names) are fine')
})

t.test('a refused query-string token is never logged', async (t) => {
  const lines: string[] = []
  const stream = { write: (line: string) => { lines.push(line) } }
  const { client } = await build(t, {}, { fastify: { logger: { level: 'trace', stream } } })
  const token = tokenFor('u1')
  t.equal((await refusal(client({ token }, { query: { token } }))).data?.code, 'AUTH_INVALID')
  t.ok(lines.length > 0, 'the logger was in use')
  t.notOk(lines.some((line) => line.includes(token.split('.')[2]!)), 'no log line carries the token')
})

t.test('wrong audience, and AUTH_EXPIRED through the app\'s own @fastify/jwt', async (t) => {
  const aud = await build(t, { auth: { verify: { allowedAud: 'dashboard' } } })
  t.equal((await refusal(aud.client({ token: sign({ sub: 'u1', aud: 'billing' }) }))).data?.code, 'AUTH_INVALID', 'wrong aud')
  await waitFor(aud.client({ token: sign({ sub: 'u1', aud: 'dashboard' }) }), 'realtime:ready')

  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyJwt, { secret: 'the-app-own-secret-0123456789abcdef' })
  await app.register(realtime, {})
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { io } = await import('socket.io-client')
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const past = Math.floor(Date.now() / 1000) - 60
  const expired = io(url, { transports: ['websocket'], reconnection: false, auth: { token: app.jwt.sign({ sub: 'u1', iat: past - 60, exp: past }) } })
  t.teardown(() => { expired.disconnect() })
  t.equal((await refusal(expired)).data?.code, 'AUTH_EXPIRED')
})

t.test('rooms() failing or hanging at connect refuses with UNAVAILABLE', async (t) => {
  const { client } = await build(t, {
    auth: { timeoutMs: 200 },
    rooms: (user) => user.id === 'hang' ? new Promise<string[]>(() => {}) : Promise.reject(new Error('db down'))
  })
  t.equal((await refusal(client({ token: tokenFor('hang') }))).data?.code, 'UNAVAILABLE', 'hangs')
  t.equal((await refusal(client({ token: tokenFor('fail') }))).data?.code, 'UNAVAILABLE', 'throws')
})

t.test('realtime:auth: lookup failing, hanging or refusing; outside rateLimit', async (t) => {
  let mode: 'ok' | 'throw' | 'hang' | 'reject' = 'ok'
  const { client } = await build(t, {
    auth: {
      timeoutMs: 200,
      user: (claims) => {
        if (mode === 'throw') throw new Error('db down')
        if (mode === 'hang') return new Promise(() => {})
        if (mode === 'reject') return null
        return { id: String(claims.sub) }
      }
    },
    rateLimit: { max: 2, windowMs: 60_000 }
  })
  const socket = client({ token: tokenFor('u1') })
  await waitFor(socket, 'realtime:ready')
  for (let i = 0; i < 2; i++) await request(socket, 'realtime:unsubscribe', { scope: 'team:1' })
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:1' }), { ok: false, error: { code: 'RATE_LIMITED' } }, 'the socket is over its cap')
  t.match(await request(socket, 'realtime:auth', { token: tokenFor('u1') }), { ok: true }, 'a refresh still goes through')
  mode = 'throw'
  t.match(await request(socket, 'realtime:auth', { token: tokenFor('u1') }), { ok: false, error: { code: 'UNAVAILABLE' } })
  mode = 'hang'
  t.match(await request(socket, 'realtime:auth', { token: tokenFor('u1') }), { ok: false, error: { code: 'UNAVAILABLE' } })
  t.ok(socket.connected, 'a lookup that failed leaves the socket as it was')
  mode = 'reject'
  const gone = waitFor<[string]>(socket, 'disconnect')
  t.match(await request(socket, 'realtime:auth', { token: tokenFor('u1') }), { ok: false, error: { code: 'USER_REJECTED' } })
  t.equal((await gone)[0], 'io server disconnect', 'a user the lookup now refuses is disconnected at once')
})

t.test('before ready a handshake is refused with UNAVAILABLE', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  await app.register(realtime, { auth: { secret: SECRET } })
  // a later plugin that holds ready back while the server already listens
  app.register(async () => { await gate })
  const { io } = await import('socket.io-client')
  await new Promise<void>((resolve) => app.server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`
  const early = io(url, { transports: ['websocket'], reconnection: false, auth: { token: tokenFor('u1') } })
  t.teardown(() => { early.disconnect() })
  t.equal((await refusal(early)).data?.code, 'UNAVAILABLE')
  release()
  await app.ready()
  const later = io(url, { transports: ['websocket'], reconnection: false, auth: { token: tokenFor('u1') } })
  t.teardown(() => { later.disconnect() })
  await waitFor(later, 'realtime:ready')
})

t.test('option errors name the failing path, also inside union options', async (t) => {
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ rateLimit: { max: 0 } }, /rateLimit\.max: must be >= 1/],
    [{ health: { path: 'x' } }, /health\.path/],
    [{ history: { ttl: -1 } }, /history\.ttl: must be >= 1/],
    [{ redis: 42 }, /redis: must be true, a Redis URL, ioredis options, an ioredis Cluster or \{ cluster, options \}/],
    [{ limits: { scopesPerSocket: 0 } }, /limits\.scopesPerSocket/],
    [{ limits: { nope: 1 } }, /limits: unknown option "nope"/],
    [{ auth: { secret: '   ' } }, /auth\.secret: must not be empty/],
    [{ io: { connectionStateRecovery: {} } }, /io\.connectionStateRecovery/],
    [{ cluster: { heartbeatMs: 20_000, nodeTtlMs: 60_000 } }, /cluster\.heartbeatMs/],
    [{ cluster: { heartbeatMs: 5000, nodeTtlMs: 5000 } }, /cluster\.heartbeatMs/]
  ]
  for (const [opts, message] of cases) {
    const app = Fastify()
    t.teardown(() => app.close())
    await t.rejects(async () => { await app.register(realtime, { auth: { secret: SECRET }, ...opts } as never) },
      { code: 'FST_REALTIME_INVALID_OPTION', message }, JSON.stringify(opts))
  }
})

t.test('plugin options never reach new Server(); connectTimeout defaults to 10 s', async (t) => {
  const { app } = await build(t, { rooms: () => [], limits: { scopesPerSocket: 5 }, io: { pingInterval: 12_345 } })
  const opts = (app.io as unknown as { _opts: Record<string, unknown> })._opts
  for (const key of ['auth', 'rooms', 'history', 'limits', 'rateLimit', 'health', 'events', 'preClose', 'redis', 'cluster']) {
    t.notOk(key in opts, `${key} not passed to Socket.IO`)
  }
  t.equal(opts.pingInterval, 12_345, 'io options are')
  t.equal(opts.connectTimeout, 10_000)
})

t.test('no unhandled rejections', async (t) => {
  t.same(await faults.since(), [])
})
