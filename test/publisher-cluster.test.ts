// The publisher on a Redis Cluster: events go out by sharded pub/sub in the sharded adapter's own
// format, and reach the nodes' sockets in scopes held by every master.
import t from 'tap'
import { createPublisher } from '../src/publisher/index.js'
import { poll } from './cluster-helper.js'
import { build, collect, flush, uniq } from './helper.js'
import { clusterUnavailable, redisCluster } from './redis-cluster-helper.js'

const skip = clusterUnavailable()
if (skip !== null) t.comment(`Redis Cluster tests skipped: ${skip}`)

t.test('a publisher on a Redis Cluster reaches clients on two nodes in scopes on every master, seq continued', { skip: skip ?? false }, async (t) => {
  const servers = await redisCluster(t)
  const scopes: string[] = []
  const masters = new Set<number>()
  for (let n = 1; masters.size < servers.masters.length; n++) {
    const master = await servers.masterOf(`{team:${n}}`)
    if (!masters.has(master.port)) {
      masters.add(master.port)
      scopes.push(`team:${n}`)
    }
  }
  const keyPrefix = `${uniq('shp')}:`
  const redis = { cluster: servers.nodes, options: { keyPrefix } }
  const opts = { rooms: () => scopes, redis, cluster: { heartbeatMs: 100, nodeTtlMs: 1500 } }
  const a = await build(t, opts)
  const b = await build(t, opts)
  await poll('both nodes counted', async () => (await a.app.realtime.stats()).cluster?.nodes, (n) => n === 2)
  const onA = await a.connected('u1')
  const onB = await b.connected('u2')
  const seenA = collect(onA.socket, 'e')
  const seenB = collect(onB.socket, 'e')
  const skips = collect(onB.socket, 'realtime:skip')

  const publisher = createPublisher({ redis: { cluster: servers.nodes }, keyPrefix })
  t.teardown(() => publisher.close())
  const expected: Array<[string, number]> = []
  for (const scope of scopes) {
    const first = await a.app.broadcast(scope, 'e', `${scope} from a node`)
    const sent = await publisher.broadcast(scope, 'e', `${scope} from the publisher`, { by: 'worker' })
    t.equal(sent.seq, first!.seq! + 1, `${scope}: the publisher continues the scope's seq`)
    t.equal(sent.epoch, first!.epoch)
    expected.push([scope, first!.seq!], [scope, sent.seq!])
  }
  const left = await publisher.broadcast(scopes[0]!, 'e', 'not for u2', { except: onB.socket.id! })
  await poll('every event on both nodes', async () => [seenA.length, seenB.length, skips.length], ([x, y, z]) => x === 2 * scopes.length + 1 && y === 2 * scopes.length && z === 1, 15_000, 20)
  await Promise.all([flush(onA.socket), flush(onB.socket)])
  for (const seen of [seenA, seenB]) {
    t.same(seen.slice(0, 2 * scopes.length).map(([, meta]) => [meta.scope, meta.seq]), expected, 'each event once, in every scope')
    t.same(seen.filter(([, meta]) => meta.by === 'worker').length, scopes.length)
  }
  t.same(skips[0]![0], { scope: scopes[0], seq: left.seq, epoch: left.epoch }, 'except: the socket left out is told the seq moved on')
  t.equal(seenA.at(-1)![0], 'not for u2')
})
