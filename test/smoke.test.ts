import t from 'tap'
import { build, collect, flush, refusal, request } from './helper.js'

t.test('smoke', async (t) => {
  const { app, client, connected } = await build(t, { rooms: () => ['team:1'] })
  const { socket, ready } = await connected('u1')
  t.same(ready.scopes.sort(), ['team:1', 'user:u1'])
  const got = collect(socket, 'incident:created')
  const meta = await app.broadcast('team:1', 'incident:created', { id: 1 }, { by: 'u2' })
  await flush(socket)
  t.equal(got.length, 1)
  t.same(got[0]![0], { id: 1 })
  t.match(got[0]![1], { scope: 'team:1', seq: 1, by: 'u2' })
  t.match(meta, { stored: true, seq: 1 })
  const ack = await request(socket, 'realtime:subscribe', { scope: 'team:2' })
  t.match(ack, { ok: false, error: { code: 'FORBIDDEN' } })
  const err = await refusal(client())
  t.equal(err.data?.code, 'AUTH_REQUIRED')
  const res = await app.inject('/health/realtime')
  t.same(res.json().websocket, { enabled: true, connections: 1 })
})
