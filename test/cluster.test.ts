import t from 'tap'
import type { Socket } from 'socket.io-client'
import { clientFor, clusterPrefix, startCluster, type NodeProcess } from './cluster-helper.js'
import { collect, waitFor } from './helper.js'

/** Everything `node` broadcast before has reached `socket` once a later event to its user scope has. */
async function fence (node: NodeProcess, userId: string, socket: Socket): Promise<void> {
  const fenced = waitFor(socket, 'fence')
  await node.post('/broadcast', { scope: `user:${userId}`, event: 'fence', payload: null })
  await fenced
}

t.test('a broadcast on one node reaches clients on every node, with one seq per scope', async (t) => {
  const env = { KEY_PREFIX: clusterPrefix(t), ROOMS: JSON.stringify({ u1: ['team:1'], u2: ['team:1'] }) }
  const [a, b] = await startCluster(t, 2, env) as [NodeProcess, NodeProcess]
  const onA = await clientFor(t, a.url, 'u1')
  const onB = await clientFor(t, b.url, 'u2')
  const seenA = collect(onA.socket, 'tick')
  const seenB = collect(onB.socket, 'tick')

  const replies = []
  for (const [i, node] of ([a, b, a, b] as const).entries()) {
    replies.push(await node.post('/broadcast', { scope: 'team:1', event: 'tick', payload: { n: i + 1 } }))
  }
  t.same(replies.map((r) => [r.status, r.body.seq, r.body.stored]), [[200, 1, true], [200, 2, true], [200, 3, true], [200, 4, true]],
    'seq comes from the shared store, whichever node broadcasts')
  const epoch = replies[0]!.body.epoch
  t.equal(typeof epoch, 'string')
  t.ok(replies.every((r) => r.body.epoch === epoch), 'one epoch for the scope on both nodes')

  // each client's fence comes from the other node, after that node's last tick
  await Promise.all([fence(b, 'u1', onA.socket), fence(a, 'u2', onB.socket)])
  for (const [name, seen] of [['client on A', seenA], ['client on B', seenB]] as const) {
    // a raw client: an event from the other node may come after a later one broadcast here (SPEC §6);
    // putting them in order is the bundled client's job, tested in client-catchup.test.ts
    const bySeq = [...seen].sort(([, x], [, y]) => (x.seq ?? 0) - (y.seq ?? 0))
    t.same(bySeq.map(([payload, meta]) => [payload, meta.seq, meta.epoch, meta.scope, meta.replayed]), [
      [{ n: 1 }, 1, epoch, 'team:1', undefined],
      [{ n: 2 }, 2, epoch, 'team:1', undefined],
      [{ n: 3 }, 3, epoch, 'team:1', undefined],
      [{ n: 4 }, 4, epoch, 'team:1', undefined]
    ], `${name}: every event once, live, seqs 1-4`)
  }
})

t.test('join, leave and disconnectUser issued on one node are applied on the others before they resolve', async (t) => {
  const env = { KEY_PREFIX: clusterPrefix(t), ROOMS: JSON.stringify({ u1: ['team:1'] }) }
  const [a, b] = await startCluster(t, 2, env) as [NodeProcess, NodeProcess]
  const { socket } = await clientFor(t, a.url, 'u1')
  t.same((await a.get('/local-rooms/u1')).body, [['team:1', 'user:u1']])

  t.same(await b.post('/join', { userId: 'u1', scope: 'team:9' }), { status: 200, body: { ok: true } })
  t.same((await a.get('/local-rooms/u1')).body, [['team:1', 'team:9', 'user:u1']], 'A had joined the socket when B answered')
  const nine = waitFor(socket, 'nine')
  await a.post('/broadcast', { scope: 'team:9', event: 'nine', payload: 9 })
  t.same((await nine)[0], 9, 'the next broadcast to the joined scope reaches the socket')

  t.same(await b.post('/leave', { userId: 'u1', scope: 'team:9' }), { status: 200, body: { ok: true } })
  t.same((await a.get('/local-rooms/u1')).body, [['team:1', 'user:u1']], 'A had removed it when B answered')
  const nines = collect(socket, 'nine')
  await b.post('/broadcast', { scope: 'team:9', event: 'nine', payload: 10 })
  await fence(b, 'u1', socket)
  t.same(nines, [], 'a broadcast after the leave does not reach it')

  const second = await clientFor(t, b.url, 'u1')
  const closedA = waitFor(socket, 'disconnect')
  const closedB = waitFor(second.socket, 'disconnect')
  t.same(await b.post('/disconnect', { userId: 'u1' }), { status: 200, body: { ok: true } })
  t.same((await a.get('/local-rooms/u1')).body, [], 'A had closed its socket when B answered')
  t.equal((await a.get('/health/realtime')).body.websocket.connections, 0)
  t.equal((await closedA)[0], 'io server disconnect', 'the socket on the other node is told not to reconnect')
  t.equal((await closedB)[0], 'io server disconnect', 'and so is the one on the issuing node')
})

t.test('an operation that a node does not acknowledge rejects after clusterTimeoutMs', async (t) => {
  const env = {
    KEY_PREFIX: clusterPrefix(t),
    ROOMS: JSON.stringify({ u1: ['team:1'], u2: ['team:1'], u3: ['team:1'] }),
    // long enough for three nodes to connect to Redis at ready on a busy machine
    CLUSTER_TIMEOUT_MS: '2000'
  }
  const [a, b, stalled] = await startCluster(t, 3, env) as [NodeProcess, NodeProcess, NodeProcess]
  const [u1, u2, u3] = await Promise.all([clientFor(t, a.url, 'u1'), clientFor(t, a.url, 'u2'), clientFor(t, a.url, 'u3')])
  const closed = waitFor(u3.socket, 'disconnect')
  // stopped, not dead: its Redis connections stay open, so it still counts as a node that must answer
  stalled.child.kill('SIGSTOP')
  t.teardown(() => { stalled.child.kill('SIGCONT') })

  const [join, leave, disconnect] = await Promise.all([
    b.post('/join', { userId: 'u1', scope: 'team:9' }),
    b.post('/leave', { userId: 'u2', scope: 'team:1' }),
    b.post('/disconnect', { userId: 'u3' })
  ])
  for (const [op, res] of [['join', join], ['leave', leave], ['disconnect', disconnect]] as const) {
    t.equal(res.status, 504, `${op} answers 504`)
    t.match(res.body, { code: 'FST_REALTIME_CLUSTER_TIMEOUT', message: new RegExp(`${op} did not complete on every node within 2000 ms`) })
  }
  // the nodes that do answer have applied it all the same
  t.same((await a.get('/local-rooms/u1')).body, [['team:1', 'team:9', 'user:u1']])
  t.same((await a.get('/local-rooms/u2')).body, [['user:u2']])
  t.equal((await closed)[0], 'io server disconnect')
  t.ok(u1.socket.connected && u2.socket.connected)
})
