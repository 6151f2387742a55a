import type { Redis } from 'ioredis'
import type { Position } from '../protocol.js'
import { emptyPosition, planRead, type LogView, type ReadContext } from './plan.js'
import type { HistoryEntry, HistoryStore, ReadResult, StoredEvent } from './store.js'

export interface RedisHistoryOptions {
  /** Seconds an event stays replayable. @default 300 */
  ttl?: number
  /** Events kept per scope. @default 50 */
  max?: number
  /** Milliseconds clock for tests; by default Redis's own `TIME`, shared by every node. */
  now?: () => number
}

// Keys, under the client's own ioredis `keyPrefix`:
//   rt:id         the store's identity, part of every epoch (new after a flush)
//   rt:m:<scope>  hash: seq, epoch, started, last (store ms of the newest append)
//   rt:l:<scope>  list of "<seq>:<stored ms>:<json entry>", oldest first, at most `max`
const ID_KEY = 'rt:id'
const metaKey = (scope: string): string => `rt:m:${scope}`
const logKey = (scope: string): string => `rt:l:${scope}`

const CLOCK_AND_ID = `
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local id = redis.call('GET', KEYS[3])
if not id then
  local t = redis.call('TIME')
  id = 'r' .. t[1] .. t[2]
  if not redis.call('SET', KEYS[3], id, 'NX') then id = redis.call('GET', KEYS[3]) end
end
`

// Sequence, epoch, append, trim and expiry in one atomic step. A log whose newest event is
// older than the ttl, or from an earlier store identity, starts a new generation (new epoch)
// instead of continuing the old seq.
// KEYS: meta, log, id. ARGV: now|-1, entry json, max, ttl ms.
const APPEND = `${CLOCK_AND_ID}
local ttl = tonumber(ARGV[4])
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1')
local seq
local epoch = redis.call('HGET', KEYS[1], 'epoch') or ''
-- a log from an earlier store identity (flush, rotation) is not continued either
if last < 0 or now - last >= ttl or string.sub(epoch, 1, #id + 1) ~= id .. '.' then
  redis.call('DEL', KEYS[1], KEYS[2])
  seq = 1
  epoch = id .. '.' .. now
  redis.call('HSET', KEYS[1], 'seq', 1, 'epoch', epoch, 'started', now, 'last', now)
else
  seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[1], 'last', now)
end
redis.call('RPUSH', KEYS[2], seq .. ':' .. now .. ':' .. ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return { seq, epoch }
`

// A consistent snapshot of one scope. KEYS: meta, log, id. ARGV: now|-1, with events (1|0).
const SNAPSHOT = `${CLOCK_AND_ID}
local m = redis.call('HMGET', KEYS[1], 'seq', 'epoch', 'started', 'last')
local events = {}
if ARGV[2] == '1' then events = redis.call('LRANGE', KEYS[2], 0, -1) end
return { id, tostring(now), m[1] or '', m[2] or '', m[3] or '', m[4] or '', events }
`

type Snapshot = [string, string, string, string, string, string, string[]]

interface ScriptedClient extends Redis {
  realtimeAppend: (meta: string, log: string, id: string, now: number, entry: string, max: number, ttlMs: number) => Promise<[number, string]>
  realtimeSnapshot: (meta: string, log: string, id: string, now: number, withEvents: 0 | 1) => Promise<Snapshot>
}

function parseEntry (raw: string): { storedAt: number, stored: StoredEvent } {
  const first = raw.indexOf(':')
  const second = raw.indexOf(':', first + 1)
  const entry = JSON.parse(raw.slice(second + 1)) as HistoryEntry
  return { storedAt: Number(raw.slice(first + 1, second)), stored: { ...entry, seq: Number(raw.slice(0, first)) } }
}

/**
 * The shared store: per-scope logs in Redis, so every node sees one `seq` per scope and a client
 * can catch up on whichever node it reconnects to. Sequence numbers come from Redis (`HINCRBY`
 * inside one Lua script), never from a node's clock.
 *
 * Scopes whose broadcasts could not be stored while Redis was unreachable get a new epoch once
 * it is back, so a client behind them resyncs instead of skipping those events.
 */
export class RedisHistoryStore implements HistoryStore {
  readonly kind = 'redis'
  readonly #ttlMs: number
  readonly #max: number
  readonly #now: (() => number) | undefined
  #client: ScriptedClient | null = null
  /** Scopes with broadcasts that were delivered but not stored; their logs are dropped before the next use. */
  readonly #unstored = new Set<string>()
  #tooManyUnstored = false

  constructor (options: RedisHistoryOptions = {}) {
    this.#ttlMs = (options.ttl ?? 300) * 1000
    this.#max = options.max ?? 50
    this.#now = options.now
  }

  /** Starts using `client` (the plugin's own connection; the store never closes it). */
  attach (client: Redis): void {
    client.defineCommand('realtimeAppend', { numberOfKeys: 3, lua: APPEND })
    client.defineCommand('realtimeSnapshot', { numberOfKeys: 3, lua: SNAPSHOT })
    this.#client = client as ScriptedClient
  }

  async append (scope: string, entry: HistoryEntry): Promise<Position> {
    const client = this.#use()
    try {
      await this.#forgetUnstored(client)
      const [seq, epoch] = await client.realtimeAppend(
        metaKey(scope), logKey(scope), ID_KEY, this.#clock(), JSON.stringify(entry), this.#max, this.#ttlMs)
      return { seq: Number(seq), epoch }
    } catch (err) {
      if (this.#unstored.size < 10_000) this.#unstored.add(scope)
      else this.#tooManyUnstored = true
      throw err
    }
  }

  async read (scope: string, since: Position): Promise<ReadResult> {
    const [log, ctx] = await this.#snapshot(scope, true)
    return planRead(log, since, ctx)
  }

  async position (scope: string): Promise<Position> {
    const [log, ctx] = await this.#snapshot(scope, false)
    return log === undefined ? emptyPosition(ctx) : { seq: log.seq, epoch: log.epoch }
  }

  async ping (): Promise<boolean> {
    if (this.#client === null || this.#client.status !== 'ready') return false
    try {
      return await this.#client.ping() === 'PONG'
    } catch {
      return false
    }
  }

  #use (): ScriptedClient {
    if (this.#client === null) throw new Error('The Redis history store is not connected yet')
    return this.#client
  }

  #clock (): number {
    return this.#now === undefined ? -1 : this.#now()
  }

  async #snapshot (scope: string, withEvents: boolean): Promise<[LogView | undefined, ReadContext]> {
    const client = this.#use()
    await this.#forgetUnstored(client)
    const [storeId, now, seq, epoch, started, last, raw] =
      await client.realtimeSnapshot(metaKey(scope), logKey(scope), ID_KEY, this.#clock(), withEvents ? 1 : 0)
    const ctx: ReadContext = { storeId, now: Number(now), ttlMs: this.#ttlMs }
    const current = epoch.startsWith(`${storeId}.`) && ctx.now - Number(last) < this.#ttlMs
    if (seq === '' || !current) return [undefined, ctx]
    return [{ seq: Number(seq), epoch, startedAt: Number(started), events: raw.map(parseEntry) }, ctx]
  }

  async #forgetUnstored (client: ScriptedClient): Promise<void> {
    if (this.#tooManyUnstored) {
      // too many to list: a new store identity gives every scope a new epoch
      await client.del(ID_KEY)
      this.#tooManyUnstored = false
      this.#unstored.clear()
      return
    }
    if (this.#unstored.size === 0) return
    const scopes = [...this.#unstored]
    await client.del(...scopes.flatMap((scope) => [metaKey(scope), logKey(scope)]))
    for (const scope of scopes) this.#unstored.delete(scope)
  }
}
