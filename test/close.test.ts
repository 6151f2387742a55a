import t from 'tap'
import type { FastifyInstance } from 'fastify'
import type { Socket } from 'socket.io-client'
import { build, refusal, tokenFor, waitFor } from './helper.js'

const reconnecting = { reconnection: true, reconnectionDelay: 20, reconnectionDelayMax: 50 }

/** The reason of the first `disconnect` the socket sees. */
function firstDisconnect (socket: Socket): Promise<string> {
  return waitFor<[string]>(socket, 'disconnect').then(([reason]) => reason)
}

/**
 * Resolves when the socket's manager decides to reconnect; the socket is then closed on the
 * spot, so the attempt itself never goes out (it could reach another test's server on a reused port).
 */
function reconnectAttempt (socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    socket.io.once('reconnect_attempt', () => {
      socket.disconnect()
      resolve()
    })
  })
}

t.test('close with 300 clients: transport close, the clients try to reconnect, broadcast resolves null', async (t) => {
  const { app, client } = await build(t, { rooms: () => ['team:1'] })
  const sockets = Array.from({ length: 300 }, (_, i) => client({ token: tokenFor(`u${i % 30}`) }, reconnecting))
  await Promise.all(sockets.map((s) => waitFor(s, 'realtime:ready')))
  t.equal(app.io.of('/').sockets.size, 300, 'all connected')
  const reasons = Promise.all(sockets.map(firstDisconnect))
  const attempts = Promise.all(sockets.map(reconnectAttempt))

  await app.close()
  const seen = await reasons
  t.same([...new Set(seen)], ['transport close'], 'every client first sees a transport close')
  t.equal(seen.length, 300)
  t.equal(app.io.of('/').sockets.size, 0, 'no socket left on the server')
  t.equal(app.io.engine.clientsCount, 0, 'no transport left on the server')
  await attempts
  t.pass('every client tried to reconnect (no server "do not reconnect" disconnect)')
  t.equal(await app.broadcast('team:1', 'task:updated', { n: 1 }), null, 'broadcast after close resolves null')
})

t.test('preClose option: called once with done and the app as this; transports left open are closed after done', async (t) => {
  const calls: Array<{ self: unknown, connectedDuringHook: number }> = []
  const { app, client } = await build(t, {
    preClose (this: FastifyInstance, done) {
      calls.push({ self: this, connectedDuringHook: this.io.of('/').sockets.size })
      // the app's own goodbye, then done later: the plugin closes whatever is still open
      this.io.emit('server:goodbye', { restarting: true })
      setImmediate(() => {
        done()
        done() // a second call is harmless
      })
    }
  })
  const sockets = Array.from({ length: 20 }, (_, i) => client({ token: tokenFor(`u${i}`) }, reconnecting))
  await Promise.all(sockets.map((s) => waitFor(s, 'realtime:ready')))
  const order = sockets.map((s) => {
    const events: string[] = []
    s.on('server:goodbye', () => { events.push('goodbye') })
    s.on('disconnect', (reason: string) => { events.push(`disconnect:${reason}`) })
    return events
  })
  const reasons = Promise.all(sockets.map(firstDisconnect))
  const attempts = Promise.all(sockets.map(reconnectAttempt))

  await app.close()
  await reasons
  t.equal(calls.length, 1, 'preClose called once')
  t.equal(calls[0]!.self, app, 'this is the app')
  t.equal(calls[0]!.connectedDuringHook, 20, 'the hook runs before any transport is closed')
  t.same(new Set(order.map((events) => events.join(','))), new Set(['goodbye,disconnect:transport close']),
    'the app\'s goodbye arrives, then the transport close')
  t.equal(app.io.engine.clientsCount, 0)
  await attempts
})

t.test('no new handshake is accepted once closing has started', async (t) => {
  let hookCalled!: () => void
  const inHook = new Promise<void>((resolve) => { hookCalled = resolve })
  let finish!: () => void
  const { app, client, connected } = await build(t, {
    rooms: () => ['team:1'],
    preClose: (done) => {
      finish = done
      hookCalled()
    }
  })
  const { socket: early } = await connected('early', reconnecting)
  const earlyReason = firstDisconnect(early)
  const closing = app.close()
  await inHook

  const late = client({ token: tokenFor('late') })
  const err = await refusal(late)
  t.ok(err instanceof Error, 'a new client gets connect_error while closing')
  t.equal(app.io.of('/').sockets.size, 1, 'only the socket from before is there')
  t.equal(app.io.engine.clientsCount, 1, 'and no new transport')
  t.ok(early.connected, 'the early socket is still open until the hook calls done')
  t.equal(await app.broadcast('team:1', 'task:updated', { n: 1 }), null, 'broadcast while closing resolves null')

  const attempt = reconnectAttempt(early)
  finish()
  await closing
  t.equal(await earlyReason, 'transport close')
  await attempt
})

t.test('close with no clients, and close twice, resolve', async (t) => {
  const { app } = await build(t)
  await app.close()
  await app.close()
  t.equal(app.io.engine.clientsCount, 0)
  t.equal(await app.broadcast('team:1', 'x', 1), null)
})
