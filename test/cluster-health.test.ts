import t from 'tap'
import { clientFor, clusterPrefix, poll, startCluster, type NodeProcess } from './cluster-helper.js'

const health = async (node: NodeProcess): Promise<{ status: number, body: any }> => await node.get('/health/realtime')
const clusterIs = (nodes: number, connections: number) => (res: { status: number, body: any }): boolean =>
  res.status === 200 && res.body.cluster?.nodes === nodes && res.body.cluster?.connections === connections

t.test('health on each node counts the live nodes and every connection from the heartbeats', async (t) => {
  const env = { KEY_PREFIX: clusterPrefix(t), HEARTBEAT_MS: '100', NODE_TTL_MS: '1000' }
  const [a, b] = await startCluster(t, 2, env) as [NodeProcess, NodeProcess]
  await Promise.all([clientFor(t, a.url, 'u1'), clientFor(t, a.url, 'u2'), clientFor(t, b.url, 'u3')])

  const onA = await poll('A sees 2 nodes, 3 connections', async () => await health(a), clusterIs(2, 3))
  const onB = await poll('B sees 2 nodes, 3 connections', async () => await health(b), clusterIs(2, 3))
  t.same(onA.body.websocket, { enabled: true, connections: 2 }, 'websocket is the node\'s own count')
  t.same(onB.body.websocket, { enabled: true, connections: 1 })
  t.equal(onA.body.node.connections, 2)
  t.equal(onB.body.node.connections, 1)
  t.not(onA.body.node.id, onB.body.node.id, 'each node has its own id')
  t.same(onA.body.history, { store: 'redis', ok: true })

  await b.stop('SIGKILL')
  const after = await poll('a killed node drops out after nodeTtlMs', async () => await health(a), clusterIs(1, 2))
  t.same(after.body.websocket, { enabled: true, connections: 2 })
})

t.test('a node closed gracefully leaves the counts at once', async (t) => {
  // a ttl far longer than the poll below: only the node deleting its own heartbeat can explain nodes: 1
  const env = { KEY_PREFIX: clusterPrefix(t), HEARTBEAT_MS: '100', NODE_TTL_MS: '60000' }
  const [a, b] = await startCluster(t, 2, env) as [NodeProcess, NodeProcess]
  await Promise.all([clientFor(t, a.url, 'u1'), clientFor(t, b.url, 'u2'), clientFor(t, b.url, 'u3')])
  await poll('A sees 2 nodes, 3 connections', async () => await health(a), clusterIs(2, 3))

  await b.stop('SIGTERM')
  t.equal(b.child.exitCode, 0, 'the node closed cleanly (app.close resolved)')
  const after = await poll('A sees the closed node gone', async () => await health(a), clusterIs(1, 1), 5000)
  t.same(after.body.websocket, { enabled: true, connections: 1 })
})
