import { generateKeyPairSync } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import { createSigner } from 'fast-jwt'
import Fastify from 'fastify'
import t from 'tap'
import realtime from '../src/index.js'
import { SECRET, build, refusal, request, sign, tokenFor, waitFor } from './helper.js'

const rejections: unknown[] = []
process.on('unhandledRejection', (reason) => { rejections.push(reason) })

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
  const { app, client } = await build(t, { rooms: () => ['team:1'], auth: { refreshGraceMs: 300 } })
  // expires in ~1 s; refreshed with a fresh token when told
  const kept = client({ token: sign({ sub: 'u1' }, 1) })
  await waitFor(kept, 'realtime:ready')
  await waitFor(kept, 'realtime:auth_expired')
  const fresh = sign({ sub: 'u1' }, 600)
  const ack = await request(kept, 'realtime:auth', { token: fresh })
  t.same(ack, { ok: true, exp: JSON.parse(Buffer.from(fresh.split('.')[1]!, 'base64url').toString()).exp })

  const dropped = client({ token: sign({ sub: 'u2' }, 1) })
  await waitFor(dropped, 'realtime:ready')
  await waitFor(dropped, 'realtime:auth_expired')
  const wrongSub = await request(dropped, 'realtime:auth', { token: tokenFor('someone-else') })
  t.match(wrongSub, { ok: false, error: { code: 'AUTH_INVALID' } })
  const invalid = await request(dropped, 'realtime:auth', { token: 'garbage' })
  t.match(invalid, { ok: false, error: { code: 'AUTH_INVALID' } })
  const [reason] = await waitFor<[string]>(dropped, 'disconnect')
  t.equal(reason, 'io server disconnect')

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

t.test('no unhandled rejections', async (t) => {
  t.same(rejections, [])
})
