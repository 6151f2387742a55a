import t from 'tap'
import { connect } from '../src/client/index.js'
import { balancer, clientFor, clusterPrefix, outageCluster, poll, RECONNECTING, startCluster, type NodeProcess } from './cluster-helper.js'
import { collect, tokenFor, waitFor, type ReadyPayload } from './helper.js'

// any name: other test files may declare RealtimeEvents for the whole type-check, narrowing the names
// the event name as the client's on() types it (the examples in this program extend RealtimeEvents)
const EV = 'ev' as Parameters<ReturnType<typeof connect>['on']>[0]

t.test('a client of a killed node reconnects to another, authenticates again, re-joins and fills the gap', async (t) => {
  const env = { KEY_PREFIX: clusterPrefix(t), ROOMS: JSON.stringify({ u1: ['team:1'] }) }
  const [a, b] = await startCluster(t, 2, env) as [NodeProcess, NodeProcess]
  const lb = await balancer(t, [a.port, b.port])

  let handshakes = 0
  const client = connect(lb.url, {
    getToken: () => { handshakes++; return tokenFor('u1') },
    io: { transports: ['websocket'], forceNew: true, reconnectionDelay: 20, reconnectionDelayMax: 100, randomizationFactor: 0 }
  })
  t.teardown(() => { client.close() })
  const readies = collect(client.socket, 'realtime:ready') as unknown as Array<[ReadyPayload]>
  const wire = collect(client.socket, 'ev') // what the server sent, before the client's ordering and de-duplication
  const delivered: Array<[unknown, any]> = []
  const handed: Array<() => void> = []
  client.on(EV, (payload, meta) => { delivered.push([payload, meta]); handed.splice(0).forEach((wake) => { wake() }) })
  // the app has had `n` events: the wire alone does not say so, since the first event of the
  // scope's new log is also asked for by range and comes back replayed
  const handedOn = async (n: number): Promise<void> => {
    while (delivered.length < n) await new Promise<void>((resolve) => handed.push(resolve))
  }
  await waitFor(client.socket, 'realtime:ready')
  t.equal((await a.get('/health/realtime')).body.websocket.connections, 1, 'the client is on A')

  const broadcast = async (n: number): Promise<any> => {
    const res = await b.post('/broadcast', { scope: 'team:1', event: 'ev', payload: { n } })
    t.equal(res.status, 200)
    return res.body
  }
  await broadcast(1)
  await handedOn(1)
  await broadcast(2)
  await handedOn(2)

  // new connections wait at the balancer, so the 5 events below are all missed while reconnecting
  lb.hold()
  const dropped = waitFor<[string]>(client.socket, 'disconnect')
  await a.stop('SIGKILL')
  t.equal((await dropped)[0], 'transport close', 'the client sees the transport go, not a do-not-reconnect')
  const missed = []
  for (let n = 3; n <= 7; n++) missed.push(await broadcast(n))
  t.same(missed.map((m) => [m.seq, m.stored]), [[3, true], [4, true], [5, true], [6, true], [7, true]])

  const readyAgain = waitFor<[ReadyPayload]>(client.socket, 'realtime:ready')
  lb.release()
  const [ready] = await readyAgain
  t.equal(handshakes, 2, 'a fresh token was sent for the new handshake')
  t.same(ready.scopes.sort(), ['team:1', 'user:u1'], 're-joined from memberships')
  t.match(ready.positions['team:1'], { seq: 7, epoch: missed[0].epoch })
  t.equal((await b.get('/health/realtime')).body.websocket.connections, 1, 'the client is now on B')

  await broadcast(8)
  await handedOn(8)

  // on the wire each seq comes at most once live and at most once replayed (the client asks for
  // the first event of a scope's new log by range, since it held only the empty position); the
  // missed ones come replayed, and the client hands every one on once, in order
  const seqs = (replayed: boolean): number[] => wire.filter(([, meta]) => (meta.replayed === true) === replayed).map(([, meta]) => meta.seq)
  t.equal(new Set(seqs(false)).size, seqs(false).length, 'no seq twice live')
  t.equal(new Set(seqs(true)).size, seqs(true).length, 'no seq twice replayed')
  t.same([...new Set([...seqs(false), ...seqs(true)])].sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7, 8], 'none missing on the wire')
  t.same([3, 4, 5, 6, 7].filter((n) => seqs(false).includes(n)), [], 'the missed ones were not live')
  t.same(delivered.map(([payload, meta]) => [payload, meta.seq]), [1, 2, 3, 4, 5, 6, 7, 8].map((n) => [{ n }, n]),
    'the client handed every event on once, in seq order')
  t.ok(delivered.slice(2, 7).every(([, meta]) => meta.replayed === true), 'the missed ones as replays')
  t.equal(readies.length, 2, 'a realtime:ready per connection')
})

t.test('Redis stopped mid-run: nodes keep serving locally, then fan out again once it is back', async (t) => {
  const { redis, a, b } = await outageCluster(t)
  const { socket } = await clientFor(t, a.url, 'u1', RECONNECTING)
  await clientFor(t, b.url, 'u2', RECONNECTING)
  const across = waitFor(socket, 'before')
  t.equal((await b.post('/broadcast', { scope: 'team:1', event: 'before', payload: 0 })).body.stored, true)
  await across
  await poll('A counts both nodes', async () => await a.get('/health/realtime'), (res) => res.body.cluster?.nodes === 2)

  await redis.kill()
  const local = waitFor<[unknown, any]>(socket, 'down')
  const res = await a.post('/broadcast', { scope: 'team:1', event: 'down', payload: 1 })
  t.equal(res.status, 200, 'the broadcast does not throw into the route')
  t.match(res.body, { scope: 'team:1', stored: false })
  t.equal(res.body.seq, undefined, 'no seq without the store')
  const [payload, meta] = await local
  t.equal(payload, 1, 'the local client still gets it live')
  t.match(meta, { scope: 'team:1' })
  t.notOk('seq' in meta)

  for (const [name, node] of [['A', a], ['B', b]] as const) {
    // the route's Redis checks are reused for health.cacheMs (1 s): an answer from before the kill may stand that long
    const health = await poll(`${name} answers 503`, async () => await node.get('/health/realtime'), (res) => res.status === 503)
    t.equal(health.status, 503, `${name} answers health with 503`)
    t.match(health.body, {
      websocket: { enabled: true, connections: 1 },
      node: { id: String, connections: 1 },
      history: { store: 'redis', ok: false }
    }, `${name}: same shape, ok: false`)
    t.equal(node.child.exitCode, null, `${name} is still running`)
  }

  await redis.start()
  const back = collect(socket, 'back')
  // the adapter subscribes again by itself once its connection is back; until then a broadcast stays local to B
  await poll('a broadcast on B reaches A again', async () => {
    await b.post('/broadcast', { scope: 'team:1', event: 'back', payload: 2 })
    return back.length
  }, (n) => n > 0, 15_000, 200)
  t.match(back[0], [2, { scope: 'team:1' }])
  await poll('A is healthy again', async () => await a.get('/health/realtime'), (r) => r.status === 200, 10_000)
  const stored = await poll('history stores again', async () => (await b.post('/broadcast', { scope: 'team:1', event: 'back', payload: 3 })).body,
    (body) => body.stored === true, 10_000, 200)
  t.type(stored.seq, 'number')
  t.same([a.child.exitCode, b.child.exitCode], [null, null], 'neither node went down on the way')
})
