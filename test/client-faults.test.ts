// fastify-realtime/client under faults: handlers that throw, re-subscribes the server refuses or
// does not answer, getToken failing at the handshake and at refresh, tokens running out.
import t from 'tap'
import { ManualClock } from './clock.js'
import { build, sign, tokenFor } from './helper.js'
import { Gate, dropTransport, incoming, on, open, ready, roomsOf, roundTrip, send, serverSocket, store, subscribes, until } from './client-helper.js'

const rooms = () => ['team:1']

t.test('a handler that throws skips neither the other handlers nor later events, and is reported', async (t) => {
  const { app, url } = await build(t, { rooms })
  const { client, events, errors } = open(t, url, { token: tokenFor('alice') })
  const second: number[] = []
  on(client, 'tick', (payload: any) => { if (payload.i === 1) throw new Error('boom') })
  on(client, 'tick', async (payload: any) => { if (payload.i === 2) throw new Error('async boom') })
  on(client, 'tick', (payload: any) => { second.push(payload.i) })
  let thrown = 0
  client.onError(() => {
    thrown++
    throw new Error('the error handler fails too')
  })
  const alsoSeen: string[] = []
  client.onError((err) => { alsoSeen.push(err.code) })
  client.onState(() => { throw new Error('state handler fails') })
  await ready(client)

  for (let i = 1; i <= 3; i++) await app.broadcast('team:1', 'tick', { i })
  await until(() => second.length === 3 && errors.length === 3, 'all three events')
  t.same(second, [1, 2, 3], 'the handler after the throwing one ran for every event')
  t.same(events.map((e) => e.payload.i), [1, 2, 3])
  t.same(errors.map((e) => e.code), ['HANDLER_FAILED', 'HANDLER_FAILED', 'HANDLER_FAILED'])
  t.match(errors.map((e) => e.message), [/onState/, /boom/, /async boom/])
  t.match(errors[1], { scope: 'team:1', cause: { message: 'boom' } })
  t.equal(thrown, 3, 'an onError handler that throws is not called again for its own throw')
  t.same(alsoSeen, errors.map((e) => e.code), 'the next onError handler still runs')
  t.same(client.positions['team:1']?.seq, 3)
})

t.test('a restored subscription the server cannot answer yet is retried until it is back', async (t) => {
  const never = new Gate()
  t.teardown(() => never.open())
  // canSubscribe answers each call as scripted: the first subscribe works, then after the
  // reconnect one call hangs (the client times out), two fail (UNAVAILABLE), the next works
  const script = ['ok', 'hang', 'fail', 'fail']
  const { app, url } = await build(t, {
    rooms,
    canSubscribe: async (_user, scope) => {
      const step = script.shift() ?? 'ok'
      if (step === 'hang') await never.pass()
      if (step === 'fail') throw new Error('membership service down')
      return scope.startsWith('extra:')
    },
    auth: { timeoutMs: 60_000 }
  })
  const log = incoming(app)
  // the scope has a log already, so no first-event fetch (a new epoch) takes a scripted answer
  await app.broadcast('extra:1', 'tick', { i: 0 })
  const { client, events, errors } = open(t, url, { token: tokenFor('alice'), timeoutMs: 300 })
  await ready(client)
  await client.subscribe('extra:1')
  await app.broadcast('extra:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'first event')

  dropTransport(app, client)
  await until(() => client.state === 'connected' && roomsOf(app, client).has('extra:1'), 'restored')
  t.same(client.subscriptions, ['extra:1'], 'never dropped')
  t.match(errors.map((e) => e.code), ['TIMEOUT', 'UNAVAILABLE', 'UNAVAILABLE'], 'each failed attempt reported')
  t.equal(errors.length, 3)
  t.ok(errors.every((e) => e.scope === 'extra:1'))
  const attempts = subscribes(log, 'extra:1').slice(1)
  t.equal(attempts.length, 4, 'retried until accepted')
  t.ok(attempts.every((e) => e.data.since?.seq === 2), 'each attempt with since')
  await app.broadcast('extra:1', 'tick', { i: 2 })
  await until(() => events.length === 2, 'live again')
  t.same(events.map((e) => e.payload.i), [1, 2])
})

t.test('a restore refused with RATE_LIMITED is retried once the window has passed', async (t) => {
  const clock = new ManualClock()
  const { app, url } = await build(t, { rooms, clock, canSubscribe: (_user, scope) => scope.startsWith('extra:'), rateLimit: { max: 1, windowMs: 200 } })
  await app.broadcast('extra:1', 'tick', { i: 0 })
  await app.broadcast('extra:2', 'tick', { i: 0 })
  // a refusal past the first of its window goes unanswered: the client gives up on it after timeoutMs
  const { client, errors } = open(t, url, { token: tokenFor('alice'), timeoutMs: 1000 })
  await ready(client)
  await client.subscribe('extra:1')
  // one client-to-server event per window: the second subscribe goes through in the next one
  const refused = await client.subscribe('extra:2').then(() => null, (e: { code?: string }) => e)
  t.equal(refused?.code, 'RATE_LIMITED')
  clock.advance(200)
  await client.subscribe('extra:2')
  t.same(errors, [], 'a refused first subscribe is its caller\'s')

  // after the reconnect both restores go out at once: the second is over the limit until time moves on
  dropTransport(app, client)
  await until(() => {
    clock.advance(50)
    return client.state === 'connected' && roomsOf(app, client).has('extra:1') && roomsOf(app, client).has('extra:2')
  }, 'both restored')
  t.ok(errors.length >= 1, 'the refusal is reported')
  t.ok(errors.every((e) => (e.code === 'RATE_LIMITED' || e.code === 'TIMEOUT') && e.scope === 'extra:2'),
    'as RATE_LIMITED (or TIMEOUT, when it was not the first refusal of its window) for the second scope, each attempt')
  t.same(client.subscriptions.sort(), ['extra:1', 'extra:2'])
})

t.test('a restored subscription the server refuses is dropped, and the app is told', async (t) => {
  let allowed = true
  const { app, url } = await build(t, { rooms, canSubscribe: (_user, scope) => allowed && scope === 'extra:1' })
  const { client, events, errors, resyncs } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  await client.subscribe('extra:1')
  await app.broadcast('extra:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'first event')

  allowed = false // removed from the scope while offline
  dropTransport(app, client)
  await until(() => errors.length === 1, 'the refusal reported')
  t.match(errors[0], { code: 'FORBIDDEN', scope: 'extra:1' })
  t.same(resyncs, [{ scope: 'extra:1', reason: 'forbidden' }])
  t.same(client.subscriptions, [])
  t.notOk('extra:1' in client.positions, 'its position is forgotten')
  await ready(client)
  t.same(Object.keys(client.positions).sort(), ['team:1', 'user:alice'])
})

t.test('getToken failing at the handshake is reported and tried again', async (t) => {
  const { url } = await build(t, { rooms })
  let calls = 0
  const { client, errors } = open(t, url, {
    getToken: async () => {
      if (++calls <= 2) throw new Error('auth server down')
      return tokenFor('alice')
    }
  })
  await ready(client)
  t.equal(calls, 3)
  t.match(errors, [{ code: 'TOKEN_FAILED', message: /auth server down/ }, { code: 'TOKEN_FAILED' }])
  t.equal(errors.length, 2, 'the refusal that follows a failed getToken is not reported again')
})

t.test('AUTH_EXPIRED at the handshake with getToken: a new token is asked for', async (t) => {
  const { url } = await build(t, { rooms })
  let calls = 0
  const { client, errors } = open(t, url, {
    getToken: () => ++calls === 1 ? sign({ sub: 'alice' }, -10) : tokenFor('alice')
  })
  await ready(client)
  t.equal(calls, 2)
  t.match(errors, [{ code: 'AUTH_EXPIRED' }])
})

t.test('realtime:auth_expired: the client refreshes the token and keeps its socket', async (t) => {
  const clock = new ManualClock()
  const { app, url } = await build(t, { rooms, clock, auth: { refreshGraceMs: 60_000 } })
  const log = incoming(app)
  let calls = 0
  const { client, errors, states } = open(t, url, {
    getToken: () => ++calls === 1 ? sign({ sub: 'alice' }, 60) : tokenFor('alice', { n: calls })
  })
  await ready(client)
  const socket = serverSocket(app, client)
  const firstExp = socket.data.claims.exp
  clock.advancePast(firstExp!)
  await until(() => log.some((e) => e.event === 'realtime:auth'), 'the refresh is sent')
  await until(() => socket.data.claims.exp !== firstExp, 'the server took the new token')
  t.equal(calls, 2)
  t.ok(socket.connected, 'the same socket stays')
  t.same(states, ['connected'], 'never disconnected')
  t.same(errors, [])
})

t.test('a refreshed token that no longer grants a scope: the client stops following it and tells the app (onResync revoked)', async (t) => {
  const clock = new ManualClock()
  const { app, url } = await build(t, {
    rooms,
    clock,
    auth: { user: (claims) => ({ id: String(claims.sub), role: claims.role }) },
    canSubscribe: (user, scope) => (user as { role?: unknown }).role === 'admin' && scope === 'incidents:all'
  })
  let calls = 0
  const { client, events, resyncs, errors, states } = open(t, url, {
    getToken: () => ++calls === 1 ? sign({ sub: 'alice', role: 'admin' }, 60) : sign({ sub: 'alice', role: 'member' })
  })
  await ready(client)
  await client.subscribe('incidents:all')
  await app.broadcast('incidents:all', 'tick', { i: 1 })
  await until(() => events.length === 1, 'the admin scope\'s event')
  clock.advancePast(serverSocket(app, client).data.claims.exp!)
  await until(() => resyncs.length === 1, 'told')
  t.same(resyncs, [{ scope: 'incidents:all', reason: 'revoked' }])
  t.same(client.subscriptions, [], 'no longer followed')
  t.notOk('incidents:all' in client.positions, 'its position forgotten')
  t.ok('team:1' in client.positions, 'the other scopes stay')
  await app.broadcast('incidents:all', 'tick', { i: 2 })
  await app.broadcast('team:1', 'tick', { i: 3 })
  await until(() => events.length === 2, 'the next event')
  t.same(events.map((e) => e.payload.i), [1, 3])
  t.same(errors, [])

  // a reconnect does not ask for it again
  const log = incoming(app)
  dropTransport(app, client)
  await until(() => states.includes('reconnecting') && client.state === 'connected', 'back')
  await roundTrip(client)
  t.same(subscribes(log, 'incidents:all'), [], 'not restored')
})

t.test('a refresh that fails is reported and retried within the grace period', async (t) => {
  let lookups = 0
  const clock = new ManualClock()
  const { app, url } = await build(t, {
    rooms,
    clock,
    auth: {
      refreshGraceMs: 60_000,
      user: (claims) => {
        // the handshake works; the first refresh finds the user store down
        if (++lookups === 2) throw new Error('database down')
        return { id: String(claims.sub) }
      }
    }
  })
  let calls = 0
  const { client, errors } = open(t, url, {
    getToken: () => {
      calls++
      if (calls === 1) return sign({ sub: 'alice' }, 60)
      if (calls === 2) throw new Error('token service down')
      return tokenFor('alice', { n: calls })
    }
  })
  await ready(client)
  const socket = serverSocket(app, client)
  const firstExp = socket.data.claims.exp
  clock.advancePast(firstExp!)
  await until(() => socket.data.claims.exp !== firstExp, 'the refresh got through')
  t.match(errors.map((e) => e.code), ['TOKEN_FAILED', 'UNAVAILABLE'], 'each failure reported')
  t.equal(calls, 4, 'getToken asked again after each failure')
  t.ok(socket.connected, 'the socket was kept')
})

t.test('no getToken: an expiring token is reported, then the server disconnect is', async (t) => {
  const clock = new ManualClock()
  const { app, url } = await build(t, { rooms, clock, auth: { refreshGraceMs: 30_000 } })
  const { client, errors } = open(t, url, { token: sign({ sub: 'alice' }, 60) })
  await ready(client)
  clock.advancePast(serverSocket(app, client).data.claims.exp!)
  await until(() => errors.length === 1, 'the expiry is reported')
  t.equal(client.state, 'connected', 'still connected during the grace')
  clock.advance(30_000)
  await until(() => client.state === 'disconnected', 'disconnected after the grace')
  t.match(errors.map((e) => e.code), ['AUTH_EXPIRED', 'DISCONNECTED'])
})

t.test('the server disconnects after the grace: with getToken the client comes back with a fresh token', async (t) => {
  let calls = 0
  let failRefresh = true
  const clock = new ManualClock()
  const { app, url } = await build(t, { rooms, clock, auth: { refreshGraceMs: 30_000 } })
  const { client, events, errors } = open(t, url, {
    timeoutMs: 60_000,
    getToken: () => {
      calls++
      if (calls === 1) return sign({ sub: 'alice' }, 60)
      // the refresh never gets a token before the grace ends; the next handshake does
      if (failRefresh) {
        failRefresh = false
        return new Promise<string>(() => {})
      }
      return tokenFor('alice', { n: calls })
    }
  })
  await ready(client)
  const first = client.socket.id
  clock.advancePast(serverSocket(app, client).data.claims.exp!)
  await until(() => calls === 2, 'the refresh asks for a token')
  clock.advance(30_000)
  await until(() => client.state === 'connected' && client.socket.id !== first, 'back with a new socket')
  t.notOk(errors.some((e) => e.code === 'DISCONNECTED'), 'not a final disconnect')
  await app.broadcast('team:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'an event on the new socket')
  t.match(events, [{ payload: { i: 1 } }], 'the new socket is in its rooms again')
})

t.test('a range fetch refused with FORBIDDEN: the app is told and the client leaves the room', async (t) => {
  let member = true
  const { app, url } = await build(t, { rooms: () => member ? ['team:1'] : [] })
  await app.broadcast('team:1', 'tick', { i: 0 })
  const { client, events, errors, resyncs } = open(t, url, { token: tokenFor('alice'), gapWaitMs: 20 })
  await ready(client)
  member = false // taken off the team; the app has not called realtime.leave
  // seq 2 is in the log but never sent here: seq 3 alone makes the client fetch the range
  await store(app, 'team:1', 'tick', { i: 1 })
  send(app, client.socket.id!, await store(app, 'team:1', 'tick', { i: 2 }))
  await until(() => resyncs.length === 1, 'told')
  t.same(resyncs, [{ scope: 'team:1', reason: 'forbidden' }])
  t.match(errors, [{ code: 'FORBIDDEN', scope: 'team:1' }])
  await until(() => !roomsOf(app, client).has('team:1'), 'left the room')
  t.notOk('team:1' in client.positions)
  await app.broadcast('team:1', 'tick', { i: 3 })
  await roundTrip(client)
  t.same(events, [], 'nothing after the refusal')
})
