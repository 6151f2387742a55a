import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import type { Teardown } from './helper.js'
import { answering, freePort, REDIS_HOST, spawnRedis } from './redis-helper.js'

/** Why a Redis Cluster cannot be started here, or null when it can (redis-server and redis-cli on the PATH). */
export function clusterUnavailable (): string | null {
  for (const [bin, pkg] of [['redis-server', 'redis-server'], ['redis-cli', 'redis-tools']] as const) {
    const probe = spawnSync(bin, ['--version'], { stdio: 'ignore' })
    if (probe.error !== undefined || probe.status !== 0) return `${bin} is not on the PATH (Debian package ${pkg})`
  }
  return null
}

export interface ClusterMaster {
  port: number
  /** Kills the server (SIGKILL) and resolves once it is gone. */
  kill: () => Promise<void>
  /** Starts it again on the same port with the same cluster config (it rejoins, empty). */
  start: () => Promise<void>
  /** A plain connection to this one server (not cluster-aware); disconnected at teardown. */
  client: Redis
}

export interface RedisClusterServers {
  masters: ClusterMaster[]
  /** The startup nodes to give ioredis. */
  nodes: Array<{ host: string, port: number }>
  /** The master that holds `key`'s slot (keys with a hash tag: the tag's). */
  masterOf: (key: string) => Promise<ClusterMaster>
  /** Resolves once every running master says cluster_state:ok and knows every slot's master. */
  ok: () => Promise<void>
}

async function run (bin: string, args: string[]): Promise<string> {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { out += chunk.toString() })
  const [code] = await once(child, 'exit') as [number | null]
  if (code !== 0) throw new Error(`${bin} ${args.join(' ')} exited with ${code}: ${out.slice(-2000)}`)
  return out
}

/**
 * `count` (at least 3) redis-server masters with `--cluster-enabled yes` on free loopback ports,
 * joined with `redis-cli --cluster create … --cluster-replicas 0`, nothing kept on disk but each
 * one's cluster config (in a temporary folder, removed at teardown). A master may be down
 * without taking the others with it (`cluster-require-full-coverage no`). Each server is a
 * child of this process, killed by its pid at teardown. Fails with a clear message when
 * redis-cli is missing.
 */
export async function redisCluster (t: Teardown, count = 3): Promise<RedisClusterServers> {
  const missing = clusterUnavailable()
  if (missing !== null) throw new Error(`A Redis Cluster cannot be started: ${missing}`)
  const dir = mkdtempSync(join(tmpdir(), 'frt-cluster-'))
  const masters: ClusterMaster[] = []
  const children = new Map<number, ChildProcess>()
  t.teardown(async () => {
    for (const master of masters) await master.kill()
    rmSync(dir, { recursive: true, force: true })
  })
  for (let i = 0; i < count; i++) {
    const port = await freePort()
    const start = async (): Promise<void> => {
      children.set(port, spawnRedis([
        '--port', String(port), '--bind', REDIS_HOST, '--daemonize', 'no',
        '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`),
        '--cluster-node-timeout', '2000', '--cluster-require-full-coverage', 'no',
        '--save', '', '--appendonly', 'no', '--dir', dir
      ]))
      await answering(port)
    }
    const kill = async (): Promise<void> => {
      const child = children.get(port)
      children.delete(port)
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGKILL')
      await exited
    }
    const client = new Redis({ host: REDIS_HOST, port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => 50 })
    client.on('error', () => {})
    t.teardown(() => { client.disconnect() })
    masters.push({ port, kill, start, client })
    await start()
  }
  await run('redis-cli', ['--cluster', 'create', ...masters.map((m) => `${REDIS_HOST}:${m.port}`), '--cluster-replicas', '0', '--cluster-yes'])

  const ok = async (): Promise<void> => {
    for (let attempt = 0; ; attempt++) {
      const states = await Promise.all(masters.filter((m) => children.has(m.port)).map(async (m) => {
        try {
          const info = await m.client.cluster('INFO') as string
          const slots = await m.client.cluster('SLOTS') as unknown[]
          return /cluster_state:ok/.test(info) && slots.length === count
        } catch {
          return false
        }
      }))
      if (states.every(Boolean)) return
      if (attempt >= 300) throw new Error('the Redis Cluster did not reach cluster_state:ok')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  await ok()

  const masterOf = async (key: string): Promise<ClusterMaster> => {
    const slot = await masters[0]!.client.cluster('KEYSLOT', key) as number
    const ranges = await masters[0]!.client.cluster('SLOTS') as unknown as Array<[number, number, [string, number]]>
    const range = ranges.find(([from, to]) => slot >= from && slot <= to)
    const master = masters.find((m) => m.port === Number(range?.[2][1]))
    if (master === undefined) throw new Error(`no master holds slot ${slot}`)
    return master
  }
  return { masters, nodes: masters.map((m) => ({ host: REDIS_HOST, port: m.port })), masterOf, ok }
}
