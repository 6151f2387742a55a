import t from 'tap'
import { io } from 'socket.io-client'
import { startNode } from './cluster-helper.js'
import { tokenFor, waitFor, uniq } from './helper.js'
import { deleteKeys, REDIS_PORT } from './redis-helper.js'

t.test('two nodes smoke', async (t) => {
  const prefix = `${uniq('cl')}:`
  t.teardown(() => deleteKeys(REDIS_PORT, prefix))
  const env = { KEY_PREFIX: prefix, ROOMS: JSON.stringify({ u1: ['team:1'] }) }
  const [a, b] = await Promise.all([startNode(t, env), startNode(t, env)])
  const socket = io(a.url, { transports: ['websocket'], auth: { token: tokenFor('u1') }, reconnection: false })
  t.teardown(() => { socket.disconnect() })
  await waitFor(socket, 'realtime:ready')
  const got = waitFor(socket, 'hello')
  const res = await b.post('/broadcast', { scope: 'team:1', event: 'hello', payload: { n: 1 } })
  t.equal(res.status, 200)
  const [payload, meta] = await got
  t.same(payload, { n: 1 })
  t.match(meta, { seq: 1 })
  const join = await b.post('/join', { userId: 'u1', scope: 'team:7' })
  t.same(join.body, { ok: true })
  const got7 = waitFor(socket, 'seven')
  await a.post('/broadcast', { scope: 'team:7', event: 'seven', payload: 7 })
  t.same((await got7)[0], 7)
  const health = await b.get('/health/realtime')
  t.match(health.body, { cluster: { nodes: 2 } })
  const dc = waitFor(socket, 'disconnect')
  await b.post('/disconnect', { userId: 'u1' })
  t.equal((await dc)[0], 'io server disconnect')
})
