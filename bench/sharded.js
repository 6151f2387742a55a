// Two nodes on a three-master Redis Cluster: the plugin against raw Socket.IO with the same
// sharded adapter (createShardedAdapter, one channel per room), in one run. The masters are
// started here (redis-server --cluster-enabled yes on free ports, joined with redis-cli) and
// stopped by their pids; without redis-server or redis-cli the scenario is skipped, saying why.
import { spawn as spawnProcess, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'

const HOST = '127.0.0.1'

/** Why a Redis Cluster cannot be started here, or null. */
export function clusterUnavailable () {
  for (const [bin, pkg] of [['redis-server', 'redis-server'], ['redis-cli', 'redis-tools']]) {
    const probe = spawnSync(bin, ['--version'], { stdio: 'ignore' })
    if (probe.error !== undefined || probe.status !== 0) return `${bin} is not on the PATH (Debian package ${pkg})`
  }
  return null
}

async function freePort () {
  const server = createServer()
  server.listen(0, HOST)
  await once(server, 'listening')
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function answering (port) {
  for (let attempt = 0; ; attempt++) {
    const probe = new Redis({ host: HOST, port, lazyConnect: true, retryStrategy: () => null })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.ping()
      return probe
    } catch (err) {
      probe.disconnect()
      if (attempt >= 100) throw err
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

/**
 * Three masters joined into one cluster; resolves with their startup nodes and `stop()`, which
 * kills each server by its pid and removes the temporary folder of their cluster configs.
 */
export async function startRedisCluster (count = 3) {
  const dir = mkdtempSync(join(tmpdir(), 'frt-bench-cluster-'))
  const servers = []
  const stop = async () => {
    for (const { child } of servers) {
      if (child.exitCode !== null || child.signalCode !== null) continue
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    }
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', () => { for (const { child } of servers) if (child.exitCode === null) child.kill('SIGKILL') })
  try {
    for (let i = 0; i < count; i++) {
      const port = await freePort()
      const child = spawnProcess('redis-server', [
        '--port', String(port), '--bind', HOST, '--daemonize', 'no',
        '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`),
        '--save', '', '--appendonly', 'no', '--dir', dir
      ], { stdio: 'ignore' })
      servers.push({ port, child })
      const probe = await answering(port)
      probe.disconnect()
    }
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...servers.map((s) => `${HOST}:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' })
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${(create.stdout + create.stderr).slice(-500)}`)
    for (const { port } of servers) {
      const probe = await answering(port)
      try {
        for (let attempt = 0; !/cluster_state:ok/.test(await probe.cluster('INFO')); attempt++) {
          if (attempt >= 300) throw new Error(`master ${port} never reached cluster_state:ok`)
          await new Promise((resolve) => setTimeout(resolve, 100))
        }
      } finally {
        probe.disconnect()
      }
    }
  } catch (err) {
    await stop()
    throw err
  }
  return { nodes: servers.map(({ port }) => ({ host: HOST, port })), stop }
}

/**
 * The scenario. `ctx` is what bench/run.js shares with it: its config, process helpers, the
 * measured-block machinery and the report.
 */
export async function sharded (ctx, workers) {
  const { cfg, PREFIX, log, startServer, stopServer, connect, release, broadcastBlock, abba, expectations, usersFor } = ctx
  const { row, details, raw, armValues, groupRatios, saturated, utilisation, frameCheck } = ctx
  const why = clusterUnavailable()
  if (why !== null) {
    log(`scenario sharded skipped: ${why}`)
    details.push(`**Two nodes on a Redis Cluster.** Skipped in this run: ${why}.`)
    return
  }
  const redis = await startRedisCluster()
  const nodes = []
  try {
    nodes.push(await startServer('server-sharded-a', { pinned: false }), await startServer('server-sharded-b', { pinned: false }))
    const specs = [
      { name: 'raw', kind: 'raw', adapter: true, cluster: redis.nodes, history: 'redis' },
      { name: 'plugin', kind: 'plugin', adapter: true, cluster: redis.nodes, history: 'redis' }
    ]
    const ports = await Promise.all(nodes.map((s) => s.call('setup', { prefix: PREFIX, arms: specs })))
    const N = cfg.shardedN
    // scopes whose channels and keys spread over the three masters
    const scopes = Array.from({ length: cfg.shardedScopes }, (_, i) => `fan:sharded:${i}`)
    const halves = [usersFor(N / 2, () => scopes, 'sa'), usersFor(N / 2, () => scopes, 'sb')]
    for (const arm of ['raw', 'plugin']) {
      for (let i = 0; i < 2; i++) {
        await connect(workers, { group: `sharded-${arm}-${i}`, port: ports[i][arm].port, kind: ports[i][arm].kind, users: halves[i] })
      }
    }
    await nodes[0].call('matchEpoch', { raw: 'raw', plugin: 'plugin', scope: scopes[0] })
    const count = Math.max(scopes.length, Math.ceil(cfg.shardedBlock / N))
    const expect = expectations([...halves[0], ...halves[1]], scopes, count)
    const block = (arm) => broadcastBlock({
      workers, sender: nodes[0], others: [nodes[1]], arm, plan: { scopes, count, concurrency: 16, bytes: cfg.payload }, expect
    })
    const [ab] = await abba('two nodes, Redis Cluster', [['raw', 'plugin']], block, { groups: cfg.shardedGroups, warmup: cfg.warmup })
    const perDelivery = (b) => b.serverCpu / (count * N)
    const perBroadcast = (b) => b.serverCpu / count
    const rate = (b) => count * N / b.wall * 1e9
    const ratio = groupRatios(ab, perDelivery)
    const label = `Two nodes, Redis Cluster ×3, sharded adapter (N=${N}, ${scopes.length} scopes)`
    const cpu = armValues(ab, perDelivery)
    row(label, 'server CPU µs per delivery (both nodes, Redis history)', {
      a: cpu.a, b: cpu.b, unit: 'µs', ratio: ctx.spread(ratio), target: '≤ 1.05', pass: ctx.median(ratio) <= 1.05
    })
    const cpuB = armValues(ab, perBroadcast)
    row(label, 'server CPU µs per broadcast (both nodes)', {
      a: cpuB.a, b: cpuB.b, unit: 'µs', ratio: ctx.spread(groupRatios(ab, perBroadcast))
    })
    const thr = armValues(ab, rate)
    row(label, 'deliveries/s (wall)', {
      a: thr.a, b: thr.b, unit: '/s', ratio: ctx.spread(groupRatios(ab, rate)), note: saturated(utilisation(ab)) + ' (server = both nodes)'
    })
    const frames = await Promise.all(['raw', 'plugin'].map((a) => workers[0].call('frame', { group: `sharded-${a}-1` })))
    details.push('**Two nodes on a Redis Cluster.** Three masters started for the run (`redis-server --cluster-enabled yes`, joined ' +
      'with `redis-cli --cluster create`, no replicas). Two server processes, each with a raw arm (official sharded adapter, ' +
      '`subscriptionMode: \'dynamic\'`, log kept by hand in hash-tagged keys) and a plugin arm (`redis: { cluster }`: the same ' +
      `adapter, Redis history); ${count} broadcasts per block issued on node A (16 in flight) round robin over ${scopes.length} scopes, ` +
      `${N / 2} clients on each node in every scope. CPU is the sum of both nodes; Redis's own CPU is not counted. ` +
      `${frameCheck('frames on node B', ...frames)}.`)
    raw.scenarios.sharded = { ab, count }
    for (const arm of ['raw', 'plugin']) {
      for (let i = 0; i < 2; i++) await release(workers, nodes[i], `sharded-${arm}-${i}`, [arm])
    }
  } finally {
    for (const s of nodes) await stopServer(s)
    await redis.stop()
  }
}
