// fastify-realtime/client, the basics: token and getToken, subscribe outcomes, unsubscribe,
// onState and onError, one subscribe per connection. The real client against the real plugin.
import t from 'tap'
import { RealtimeClientError } from '../src/client/index.js'
import { build, tokenFor } from './helper.js'
import { Gate, dropTransport, incoming, open, ready, roundTrip, serverSocket, subscribes, until } from './client-helper.js'

const rooms = () => ['team:1']
const canSubscribe = (_user: unknown, scope: string) => scope.startsWith('extra:')

t.test('a fixed token: connected once ready, events of its scopes in seq order', async (t) => {
  const { app, url } = await build(t, { rooms })
  const { client, events, states, errors } = open(t, url, { token: tokenFor('alice') })
  t.equal(client.state, 'connecting')
  await ready(client)
  t.same(states, ['connected'], 'connected only once realtime:ready has come')
  t.same(Object.keys(client.positions).sort(), ['team:1', 'user:alice'], 'a position for every scope of ready')

  for (let i = 1; i <= 3; i++) await app.broadcast('team:1', 'tick', { i })
  await until(() => events.length === 3, 'three events')
  t.same(events.map((e) => e.payload.i), [1, 2, 3])
  t.same(events.map((e) => e.meta.seq), [1, 2, 3])
  t.same(client.positions['team:1'], { seq: 3, epoch: events[2]!.meta.epoch }, 'the position follows the last event')
  t.same(errors, [])
})

t.test('getToken is asked on every handshake and its token is the one sent', async (t) => {
  const { app, url } = await build(t, { rooms })
  const sent: unknown[] = []
  app.io.on('connection', (socket) => { sent.push((socket.handshake.auth as { token?: unknown }).token) })
  const tokens: string[] = []
  const { client } = open(t, url, {
    getToken: async () => {
      const token = tokenFor('alice', { n: tokens.length })
      tokens.push(token)
      return token
    }
  })
  await ready(client)
  dropTransport(app, client)
  await until(() => sent.length === 2 && client.state === 'connected', 'reconnected')
  t.equal(tokens.length, 2, 'one call per handshake')
  t.same(sent, tokens, 'each handshake carries the token of its own call')
})

t.test('subscribe resolves with the position; later events arrive live', async (t) => {
  const { app, url } = await build(t, { rooms, canSubscribe })
  await app.broadcast('extra:1', 'tick', { i: 1 })
  await app.broadcast('extra:1', 'tick', { i: 2 })
  const { client, events } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  const position = await client.subscribe('extra:1')
  t.match(position, { seq: 2, epoch: String })
  t.same(events, [], 'a first subscribe starts at the current position: nothing is replayed')
  t.same(client.subscriptions, ['extra:1'])
  t.ok(serverSocket(app, client).rooms.has('extra:1'))

  await app.broadcast('extra:1', 'tick', { i: 3 })
  await until(() => events.length === 1, 'the live event')
  t.match(events[0], { payload: { i: 3 }, meta: { seq: 3, scope: 'extra:1' } })
})

t.test('subscribe rejects with the code of the ack, and the scope is not kept', async (t) => {
  const { app, url } = await build(t, { rooms, canSubscribe, limits: { scopesPerSocket: 3 } })
  const { client, errors } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  const refused = async (scope: string, code: string) => {
    const err = await client.subscribe(scope).then(() => null, (e: unknown) => e)
    t.type(err, RealtimeClientError, `${scope}: a RealtimeClientError`)
    t.match(err, { code, scope }, `${scope} → ${code}`)
  }
  await refused('team:9', 'FORBIDDEN')
  await refused('Not a scope', 'INVALID_SCOPE')
  await client.subscribe('extra:1') // user:alice, team:1, extra:1: the limit is reached
  await refused('extra:2', 'LIMIT')
  t.same(client.subscriptions, ['extra:1'], 'refused scopes are not kept')
  t.same([...serverSocket(app, client).rooms].filter((r) => r.includes(':')).sort(), ['extra:1', 'team:1', 'user:alice'])
  t.same(errors, [], 'a refused first subscribe goes to its caller, not to onError')
})

t.test('unsubscribe leaves the scope and forgets its position', async (t) => {
  const { app, url } = await build(t, { rooms, canSubscribe })
  const { client, events } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  await client.subscribe('extra:1')
  await app.broadcast('extra:1', 'tick', { i: 1 })
  await until(() => events.length === 1, 'the first event')

  await client.unsubscribe('extra:1')
  t.notOk(serverSocket(app, client).rooms.has('extra:1'), 'the server took the socket out')
  t.same(client.subscriptions, [])
  t.notOk('extra:1' in client.positions)
  await app.broadcast('extra:1', 'tick', { i: 2 })
  await app.broadcast('team:1', 'tick', { i: 3 })
  await until(() => events.length === 2, 'the team event')
  t.same(events.map((e) => e.meta.scope), ['extra:1', 'team:1'], 'nothing more from the scope left')
})

t.test('a subscribe made while connecting or reconnecting is sent once, when the server is ready', async (t) => {
  const { app, url } = await build(t, { rooms, canSubscribe })
  const log = incoming(app)
  const { client } = open(t, url, { token: tokenFor('alice') })
  t.equal(client.state, 'connecting')
  const position = await client.subscribe('extra:1')
  t.match(position, { seq: 0 })
  await roundTrip(client)
  t.equal(subscribes(log, 'extra:1').length, 1, 'one subscribe, not a buffered one plus a restore')

  // subscribe to another scope the moment the connection is down
  const second = new Promise((resolve, reject) => {
    const off = client.onState((state) => {
      if (state !== 'reconnecting') return
      off()
      client.subscribe('extra:2').then(resolve, reject)
    })
  })
  dropTransport(app, client)
  t.match(await second, { seq: 0 })
  await until(() => subscribes(log, 'extra:1').length === 2, 'restored after the reconnect')
  await ready(client)
  await roundTrip(client)
  t.equal(subscribes(log, 'extra:1').length, 2, 'one more per connection')
  t.equal(new Set(subscribes(log, 'extra:1').map((e) => e.socketId)).size, 2)
  t.equal(subscribes(log, 'extra:2').length, 1, 'a subscribe made while reconnecting is sent once')
  t.same(client.subscriptions.sort(), ['extra:1', 'extra:2'])
})

t.test('a subscribe of a scope the server joins by itself resolves with the ready position', async (t) => {
  const { app, url } = await build(t, { rooms })
  await app.broadcast('team:1', 'tick', { i: 1 })
  const log = incoming(app)
  const { client } = open(t, url, { token: tokenFor('alice') })
  t.match(await client.subscribe('team:1'), { seq: 1 })
  await roundTrip(client)
  t.equal(subscribes(log, 'team:1').length, 0, 'nothing to ask: ready already holds it')
})

t.test('a subscribe with no answer rejects with TIMEOUT, is not kept, and a late acceptance is undone', async (t) => {
  const gate = new Gate()
  t.teardown(() => gate.open())
  const { app, url } = await build(t, {
    rooms,
    canSubscribe: async (_user, scope) => {
      await gate.pass()
      return scope.startsWith('extra:')
    },
    auth: { timeoutMs: 60_000 }
  })
  const log = incoming(app)
  const { client, events } = open(t, url, { token: tokenFor('alice'), timeoutMs: 300 })
  await ready(client)
  const err = await client.subscribe('extra:1').then(() => null, (e: unknown) => e)
  t.type(err, RealtimeClientError)
  t.match(err, { code: 'TIMEOUT', scope: 'extra:1' })
  t.same(client.subscriptions, [], 'a timed-out subscribe is not kept')

  gate.open() // the server answers now: it joins the socket, the client leaves again
  const unsubscribed = () => log.some((e) => e.event === 'realtime:unsubscribe' && e.data?.scope === 'extra:1')
  await until(unsubscribed, 'the client sends unsubscribe after the late acceptance')
  await roundTrip(client)
  t.notOk(serverSocket(app, client).rooms.has('extra:1'), 'not left in the room')
  await app.broadcast('extra:1', 'tick', { i: 1 })
  await app.broadcast('team:1', 'tick', { i: 2 })
  await until(() => events.length === 1, 'the team event')
  t.same(events.map((e) => e.meta.scope), ['team:1'])
})

t.test('onState follows the connection: connected, reconnecting, connected, disconnected', async (t) => {
  const { app, url } = await build(t, { rooms })
  const { client, states } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  dropTransport(app, client)
  await until(() => states.length >= 3 && client.state === 'connected', 'back')
  client.close()
  t.same(states, ['connected', 'reconnecting', 'connected', 'disconnected'])
})

t.test('a refused token is reported once and the client stops', async (t) => {
  const { url } = await build(t, { rooms })
  const { client, errors, states } = open(t, url, { token: 'not.a.token' })
  const subscribed = client.subscribe('team:1').then(() => null, (e: unknown) => e)
  await until(() => client.state === 'disconnected', 'disconnected')
  t.match(await subscribed, { code: 'AUTH_INVALID', scope: 'team:1' }, 'a subscribe waiting for the connection gets the refusal')
  t.equal(errors.length, 1)
  t.type(errors[0], RealtimeClientError)
  t.match(errors[0], { code: 'AUTH_INVALID' })
  t.same(states, ['disconnected'])
})

t.test('no token at all: AUTH_REQUIRED, final', async (t) => {
  const { url } = await build(t, { rooms })
  const { client, errors } = open(t, url, {})
  await until(() => client.state === 'disconnected', 'disconnected')
  t.match(errors, [{ code: 'AUTH_REQUIRED' }])
})

t.test('UNAVAILABLE at the handshake is reported and retried until it connects', async (t) => {
  let lookups = 0
  const { url } = await build(t, {
    rooms,
    auth: {
      user: (claims) => {
        if (++lookups <= 2) throw new Error('database down')
        return { id: String(claims.sub) }
      }
    }
  })
  const { client, errors } = open(t, url, { token: tokenFor('alice') })
  await ready(client)
  t.match(errors, [{ code: 'UNAVAILABLE' }, { code: 'UNAVAILABLE' }])
  t.equal(lookups, 3)
})

t.test('LIMIT at the handshake (the user holds every connection allowed) is reported and retried until a place is free', async (t) => {
  const { app, url, connected } = await build(t, { rooms, limits: { connectionsPerUser: 1 } })
  const { socket: other } = await connected('alice')
  const { client, errors } = open(t, url, { token: tokenFor('alice'), retry: { minMs: 20, maxMs: 100 } })
  await until(() => errors.length >= 2, 'refused twice')
  t.ok(errors.every((e) => e.code === 'LIMIT'), 'reported as LIMIT')
  t.equal(client.state, 'connecting', 'and still trying')
  other.disconnect()
  await ready(client)
  t.equal(app.io.of('/').sockets.size, 1)
})

t.test('socket.io giving up its reconnects (a finite reconnectionAttempts) is reported', async (t) => {
  const { app, url } = await build(t, { rooms })
  const { client, errors, states } = open(t, url, { token: tokenFor('alice'), io: { reconnectionAttempts: 1 } })
  await ready(client)
  await app.close()
  await until(() => client.state === 'disconnected', 'given up')
  t.same(states, ['connected', 'reconnecting', 'disconnected'])
  t.match(errors, [{ code: 'DISCONNECTED' }])
})
