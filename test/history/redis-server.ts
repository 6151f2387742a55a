import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Teardown } from '../helper.js'
import { ownRedis, type OwnRedis } from '../redis-helper.js'

/** Like `OwnRedis`, but every write it acknowledged survives `kill()` and comes back at `start()`. */
export type DurableRedis = OwnRedis

/**
 * A redis-server of this test's own that keeps its data across a SIGKILL (append-only file,
 * fsync on every write, in a temporary directory): the outage of a Redis that comes back with
 * its keys, as a persistent Redis or a network cut does. Killed and its directory removed at
 * teardown.
 */
export async function durableRedis (t: Teardown): Promise<DurableRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'frt-redis-'))
  const redis = await ownRedis(t, ['--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'])
  t.teardown(async () => {
    await redis.kill()
    await rm(dir, { recursive: true, force: true })
  })
  return redis
}
