import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { Redis } from 'ioredis'
import { uniq, type Teardown } from './helper.js'

export const REDIS_HOST = '127.0.0.1'
export const REDIS_PORT = Number(process.env.REDIS_PORT ?? 6379)

/** ioredis options for the shared Redis with a key prefix this test owns; its keys are deleted at teardown. */
export function redisOptions (t: Teardown, port = REDIS_PORT): { host: string, port: number, keyPrefix: string } {
  const keyPrefix = `${uniq('frt')}:`
  t.teardown(() => deleteKeys(port, keyPrefix))
  return { host: REDIS_HOST, port, keyPrefix }
}

/** Deletes every key under `prefix`. */
export async function deleteKeys (port: number, prefix: string): Promise<void> {
  const client = new Redis({ host: REDIS_HOST, port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  try {
    await client.connect()
    let cursor = '0'
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500)
      cursor = next
      if (keys.length > 0) await client.del(...keys)
    } while (cursor !== '0')
  } catch {
    // a Redis the test stopped has nothing left to clean
  } finally {
    client.disconnect()
  }
}

/** A loopback port nothing listens on right now. */
export async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

export interface OwnRedis {
  port: number
  /** Starts (or restarts) the server and resolves once it answers. */
  start: () => Promise<void>
  /** Kills it (SIGKILL) and resolves once the process is gone. */
  kill: () => Promise<void>
}

/**
 * Starts `redis-server` with `args`, tied to this test process: besides the test's own kill, a
 * small watchdog kills it by its pid once this process is gone, so a test process that dies
 * (a timeout, a crash) leaves no server behind.
 */
export function spawnRedis (args: string[]): ChildProcess {
  const child = spawn('redis-server', args, { stdio: 'ignore' })
  if (child.pid !== undefined) {
    const watchdog = spawn('sh', ['-c', `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${child.pid} 2>/dev/null; do sleep 1; done; kill -9 ${child.pid} 2>/dev/null; exit 0`], { stdio: 'ignore', detached: true })
    watchdog.unref()
  }
  return child
}

/** Resolves once the Redis at `port` answers a PING (a server just started needs a moment, and may load its data); bounded. */
export async function answering (port: number): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const probe = new Redis({ host: REDIS_HOST, port, lazyConnect: true, retryStrategy: () => null })
    probe.on('error', () => {})
    try {
      await probe.connect()
      await probe.ping()
      return
    } catch (err) {
      if (attempt >= 100) throw err
      await new Promise((resolve) => setTimeout(resolve, 50))
    } finally {
      probe.disconnect()
    }
  }
}

/**
 * A redis-server of this test's own on a free loopback port; killed at teardown. By default it
 * keeps nothing on disk; `persistence` gives it other settings (e.g. an append-only file).
 */
export async function ownRedis (t: Teardown, persistence: string[] = ['--save', '', '--appendonly', 'no']): Promise<OwnRedis> {
  const port = await freePort()
  let child: ChildProcess | null = null
  const kill = async (): Promise<void> => {
    const running = child
    child = null
    if (running === null || running.exitCode !== null) return
    const exited = once(running, 'exit')
    running.kill('SIGKILL')
    await exited
  }
  const start = async (): Promise<void> => {
    child = spawnRedis(['--port', String(port), '--bind', REDIS_HOST, ...persistence])
    await answering(port)
  }
  t.teardown(kill)
  await start()
  return { port, start, kill }
}

/** A plain client of the Redis at `port` for a test to inspect or change it (it reconnects after a restart); disconnected at teardown. */
export function redisClient (t: Teardown, port = REDIS_PORT): Redis {
  const client = new Redis({ host: REDIS_HOST, port, maxRetriesPerRequest: 1, retryStrategy: () => 50 })
  client.on('error', () => {})
  t.teardown(() => { client.disconnect() })
  return client
}

/** `CLIENT LIST` of the server `client` is connected to, one record of fields per connection, `client`'s own left out. */
export async function clientList (client: Redis): Promise<Array<Record<string, string>>> {
  const [own, list] = await Promise.all([client.client('ID'), client.client('LIST') as Promise<string>])
  return list.split('\n').filter((line) => line.length > 0)
    .map((line) => Object.fromEntries(line.split(' ').map((field) => {
      const at = field.indexOf('=')
      return [field.slice(0, at), field.slice(at + 1)]
    })))
    .filter((fields) => fields.id !== String(own))
}
