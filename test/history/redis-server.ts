import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { REDIS_HOST, spawnRedis } from '../redis-helper.js'

interface Teardown {
  teardown: (fn: () => unknown) => void
}

export interface DurableRedis {
  port: number
  /** Starts (or restarts) the server and resolves once it answers, its data loaded. */
  start: () => Promise<void>
  /** Kills it (SIGKILL) and resolves once the process is gone. Every write it acknowledged survives. */
  kill: () => Promise<void>
}

async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, REDIS_HOST)
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/**
 * A redis-server of this test's own that keeps its data across a SIGKILL (append-only file,
 * fsync on every write, in a temporary directory): the outage of a Redis that comes back with
 * its keys, as a persistent Redis or a network cut does. Killed and its directory removed at
 * teardown.
 */
export async function durableRedis (t: Teardown): Promise<DurableRedis> {
  const port = await freePort()
  const dir = await mkdtemp(join(tmpdir(), 'frt-redis-'))
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
    child = spawnRedis([
      '--port', String(port), '--bind', REDIS_HOST, '--dir', dir,
      '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'
    ])
    // the server needs a moment to listen and load its file: probe until it answers (bounded)
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
  t.teardown(async () => {
    await kill()
    await rm(dir, { recursive: true, force: true })
  })
  await start()
  return { port, start, kill }
}
