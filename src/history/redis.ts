import type { Cluster, Redis } from 'ioredis'
import { isCluster, keyPrefixOf, type RedisClient } from '../redis.js'
import { FST_REALTIME_INVALID_PAYLOAD } from '../errors.js'
import type { Position } from '../protocol.js'
import { emptyPosition, keepFor, planRead, type LogView, type ReadContext } from './plan.js'
import type { RealtimeRedisClient } from '../types.js'
import type { HistoryEntry, HistoryStore, OnceResult, ReadResult, StoredEvent } from './store.js'

export interface RedisHistoryOptions {
  /** Seconds an event stays replayable. @default 300 */
  ttl?: number
  /** Events kept per scope. @default 50 */
  max?: number
  /** Milliseconds clock for tests; by default Redis's own `TIME`, shared by every node. */
  now?: () => number
}

// Keys, under the client's own ioredis `keyPrefix`. Every key of one scope carries the scope as
// its hash tag, so each script touches one slot (a Redis Cluster keeps them on one master):
//   rt:i:{<scope>}  the scope's store identity, part of every epoch: new after a flush (of the
//                 master that holds the scope) or once unused for `keep`; expires `keep` after
//                 its last use, so it outlives the scope's position
//   rt:m:{<scope>}  hash: seq, epoch, started, last (store ms of the newest append), floor
//                 (see LogView.floor); expires `keep` after the newest append
//   rt:l:{<scope>}  list of "<seq>:<stored ms>:<json entry>", oldest first, at most `max`;
//                 expires `ttl` after the newest append
//   rt:o:{<scope>}:<key>  an idempotency key used for the scope: "<store ms it ends>:<seq>:<epoch>:
//                 <json of the entry's id, at and by>"; expires `ttl` after that append
const idKey = (scope: string): string => `rt:i:{${scope}}`
const metaKey = (scope: string): string => `rt:m:{${scope}}`
const logKey = (scope: string): string => `rt:l:{${scope}}`
const onceKey = (scope: string, key: string): string => `rt:o:{${scope}}:${key}`
/** What every identity key matches, under the key prefix (for SCAN). */
const ID_PATTERN = 'rt:i:{*'

/** Past this many scopes with unstored broadcasts, every scope takes a new identity instead of listing them. */
const MAX_LOST_SCOPES = 10_000
/** Lost scopes dropped at once: one script each (their keys are in different slots on a cluster). */
const DROP_BATCH = 100

// Sets `now` (ARGV[1], or Redis TIME when it is -1) and `id` (the scope's identity, created on
// first use; its expiry is pushed to `keep` ms from now, the Lua expression `keep`).
// `idKey` is the Lua expression naming the id key.
const clockAndId = (idKey: string, keep: string): string => `
local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local id = redis.call('GET', ${idKey})
if not id then
  local t = redis.call('TIME')
  id = 'r' .. t[1] .. t[2]
  if not redis.call('SET', ${idKey}, id, 'NX') then id = redis.call('GET', ${idKey}) end
end
redis.call('PEXPIRE', ${idKey}, ${keep})
`

// The start of a new generation of the scope whose meta hash is `meta`: later than any earlier
// generation of this identity, so its epoch is new even within one millisecond.
const NEXT_START = `
local function nextStart (meta)
  local m = redis.call('HMGET', meta, 'started', 'epoch')
  local prev = -1
  if m[2] and string.sub(m[2], 1, #id + 1) == id .. '.' then
    prev = tonumber(m[1]) or tonumber(string.sub(m[2], #id + 2)) or -1
  end
  return math.max(now, prev + 1)
end
`

// Sequence, epoch, append, trim and expiry in one atomic step. The position goes on while the
// scope was used within `keep`, even after its events have expired; otherwise a new generation
// begins (new epoch). Follows clockAndId; leaves `seq` and `epoch` set.
// KEYS: meta, log, id. ARGV: now|-1, entry json, max, ttl ms, keep ms.
const APPEND_STEP = `${NEXT_START}
local ttl = tonumber(ARGV[4])
local keep = tonumber(ARGV[5])
local m = redis.call('HMGET', KEYS[1], 'seq', 'epoch', 'started', 'last')
local seq = tonumber(m[1])
local started = tonumber(m[3])
local last = tonumber(m[4])
local ours = m[2] and string.sub(m[2], 1, #id + 1) == id .. '.'
local sound = seq and started and last and seq >= 0 and seq == math.floor(seq)
local epoch = m[2]
if ours and sound and now - last < keep then
  seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[1], 'last', now)
else
  -- on an empty scope, over another identity's log or after an idle one: covers seq-0
  -- positions from up to keep before; over a damaged meta hash: none
  local empty = not (m[1] or m[2] or m[3] or m[4])
  local start = nextStart(KEYS[1])
  local floor = start
  if empty or (m[2] and not ours) or (ours and sound) then floor = start - keep end
  redis.call('DEL', KEYS[1], KEYS[2])
  seq = 1
  epoch = id .. '.' .. start
  redis.call('HSET', KEYS[1], 'seq', 1, 'epoch', epoch, 'started', start, 'last', now, 'floor', floor)
end
redis.call('RPUSH', KEYS[2], seq .. ':' .. now .. ':' .. ARGV[2])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], ttl)
`

const APPEND = `${clockAndId('KEYS[3]', 'ARGV[5]')}${APPEND_STEP}
return { seq, epoch }
`

// APPEND once per idempotency key (KEYS[4]): a key used within the ttl (on the store's clock)
// appends nothing and answers { 'once', "<seq>:<epoch>:<json>" }; otherwise the key is set in the
// same atomic step.
// KEYS: meta, log, id, once. ARGV: as APPEND, then the json of the entry's id, at and by.
const APPEND_ONCE = `${clockAndId('KEYS[3]', 'ARGV[5]')}
local first = redis.call('GET', KEYS[4])
if first then
  local sep = string.find(first, ':', 1, true)
  local ends = sep and tonumber(string.sub(first, 1, sep - 1))
  if ends and ends > now then return { 'once', string.sub(first, sep + 1) } end
end
${APPEND_STEP}
redis.call('SET', KEYS[4], (now + ttl) .. ':' .. seq .. ':' .. epoch .. ':' .. ARGV[6], 'PX', ttl)
return { seq, epoch }
`

// Replaces the log of a scope with an empty generation that covers no earlier seq-0 position:
// the scope had broadcasts that were delivered but never stored.
// KEYS: id, meta, log. ARGV: now|-1, keep ms.
const DROP = `${clockAndId('KEYS[1]', 'ARGV[2]')}${NEXT_START}
local keep = tonumber(ARGV[2])
local start = nextStart(KEYS[2])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'seq', 0, 'epoch', id .. '.' .. start, 'started', start, 'last', now, 'floor', start)
redis.call('PEXPIRE', KEYS[2], keep)
return 1
`

// A consistent snapshot of one scope. KEYS: meta, log, id. ARGV: now|-1, with events (1|0), keep ms.
const SNAPSHOT = `${clockAndId('KEYS[3]', 'ARGV[3]')}
local m = redis.call('HMGET', KEYS[1], 'seq', 'epoch', 'started', 'last', 'floor')
local events = {}
if ARGV[2] == '1' then events = redis.call('LRANGE', KEYS[2], 0, -1) end
return { id, tostring(now), m[1] or '', m[2] or '', m[3] or '', m[4] or '', m[5] or '', events }
`

type Snapshot = [string, string, string, string, string, string, string, string[]]

type ScriptedClient = RedisClient & {
  realtimeAppend: (meta: string, log: string, id: string, now: number, entry: string, max: number, ttlMs: number, keepMs: number) => Promise<[number, string]>
  realtimeAppendOnce: (meta: string, log: string, id: string, once: string, now: number, entry: string, max: number, ttlMs: number, keepMs: number, origin: string) => Promise<[number, string] | ['once', string]>
  realtimeDrop: (id: string, meta: string, log: string, now: number, keepMs: number) => Promise<number>
  realtimeSnapshot: (meta: string, log: string, id: string, now: number, withEvents: 0 | 1, keepMs: number) => Promise<Snapshot>
}

/** What an idempotency key holds (see APPEND_ONCE): the first entry's place, id, time and `by`. */
function parseOnce (raw: string): OnceResult {
  const first = raw.indexOf(':')
  const second = first < 0 ? -1 : raw.indexOf(':', first + 1)
  const seq = Number(raw.slice(0, first))
  const origin = second < 0 ? null : JSON.parse(raw.slice(second + 1)) as OnceResult['first']
  if (!Number.isSafeInteger(seq) || typeof origin?.id !== 'string' || typeof origin.at !== 'number') {
    throw new Error('An idempotency key in Redis holds something unreadable')
  }
  return { seq, epoch: raw.slice(first + 1, second), first: origin }
}

/**
 * Deletes every scope's identity key: SCAN on the one Redis, or on every master of a cluster (a
 * key at a time there, as the keys are in many slots). Only when too many scopes lost broadcasts
 * to list them, so rarely, and the scan is bounded by the keyspace.
 */
async function forgetIdentities (client: RedisClient): Promise<void> {
  const prefix = keyPrefixOf(client)
  // a cluster's node connections have no key prefix (the cluster client adds it); a single
  // Redis adds it again to what SCAN returns, so it is taken off first
  const targets: Array<{ node: Redis | Cluster, strip: number }> = isCluster(client)
    ? client.nodes('master').map((node) => ({ node, strip: 0 }))
    : [{ node: client, strip: prefix.length }]
  for (const { node, strip } of targets) {
    let cursor = '0'
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', `${prefix}${ID_PATTERN}`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) {
        const pipeline = node.pipeline()
        for (const key of keys) pipeline.unlink(key.slice(strip))
        const results = await pipeline.exec()
        const failed = results?.find(([err]) => err !== null)
        if (failed !== undefined) throw failed[0]
      }
    } while (cursor !== '0')
  }
}

/** A meta hash that cannot be read: nothing in it can be trusted, so no read is ok. */
const DAMAGED = Symbol('damaged')

/** A number field of a meta hash, or NaN. */
function field (raw: string): number {
  return raw === '' ? Number.NaN : Number(raw)
}

/** One list entry, or undefined when it cannot be read (the read then treats it as missing). */
function parseEntry (raw: string): { storedAt: number, stored: StoredEvent } | undefined {
  const first = raw.indexOf(':')
  const second = first < 0 ? -1 : raw.indexOf(':', first + 1)
  if (second < 0) return undefined
  const seq = Number(raw.slice(0, first))
  const storedAt = Number(raw.slice(first + 1, second))
  if (!Number.isSafeInteger(seq) || !Number.isFinite(storedAt)) return undefined
  let entry: unknown
  try {
    entry = JSON.parse(raw.slice(second + 1))
  } catch {
    return undefined
  }
  if (typeof entry !== 'object' || entry === null) return undefined
  const { id, event, at, by } = entry as Partial<HistoryEntry>
  if (typeof id !== 'string' || typeof event !== 'string' || typeof at !== 'number' ||
      (by !== undefined && typeof by !== 'string' && typeof by !== 'number' && (by === null || typeof by !== 'object' || Array.isArray(by)))) return undefined
  return { storedAt, stored: { ...(entry as HistoryEntry), seq } }
}

/**
 * The shared store: per-scope logs in Redis, so every node sees one `seq` per scope and a client
 * can catch up on whichever node it reconnects to. Sequence numbers come from Redis (`HINCRBY`
 * inside one Lua script), never from a node's clock. A scope's position outlives its events by
 * a day (or the ttl, when longer), as in the memory store.
 *
 * A broadcast that could not be stored (Redis unreachable) is remembered by scope, and that
 * scope's log is replaced by a new, empty generation as soon as the connection is ready again,
 * before this node uses the scope again: a client behind it is then told to resync instead of
 * skipping those events. That knowledge lives in this process until then.
 */
export class RedisHistoryStore implements HistoryStore {
  readonly kind = 'redis'
  readonly #ttlMs: number
  readonly #keepMs: number
  readonly #max: number
  readonly #now: (() => number) | undefined
  #client: ScriptedClient | null = null
  /** Scopes with broadcasts that were delivered but not stored; their logs are dropped before the next use. */
  readonly #lost = new Set<string>()
  /** Too many lost scopes to list: the next recovery gives every scope a new identity instead. */
  #lostAll = false
  /** The recovery in flight; every use of the store waits for it. */
  #recovering: Promise<void> | null = null
  readonly #onReady = (): void => { this.#recoverWhenReady() }

  constructor (options: RedisHistoryOptions = {}) {
    this.#ttlMs = (options.ttl ?? 300) * 1000
    this.#keepMs = keepFor(this.#ttlMs)
    this.#max = options.max ?? 50
    this.#now = options.now
  }

  /**
   * Starts using `client` (the plugin's own connection; the store never closes it). Each time
   * the connection is ready again, the logs of scopes with unstored broadcasts are dropped.
   */
  attach (client: RealtimeRedisClient): void {
    this.#client?.off('ready', this.#onReady)
    client.defineCommand('realtimeAppend', { numberOfKeys: 3, lua: APPEND })
    client.defineCommand('realtimeAppendOnce', { numberOfKeys: 4, lua: APPEND_ONCE })
    client.defineCommand('realtimeDrop', { numberOfKeys: 3, lua: DROP })
    client.defineCommand('realtimeSnapshot', { numberOfKeys: 3, lua: SNAPSHOT })
    client.on('ready', this.#onReady)
    // the commands just defined are there now; the rest is what RealtimeRedisClient names
    this.#client = client as unknown as ScriptedClient
  }

  async append (scope: string, entry: HistoryEntry): Promise<Position> {
    return await this.#append(scope, entry, undefined)
  }

  /** `append`, once per `key` and scope within the ttl, for every node sharing this Redis. */
  async appendOnce (scope: string, entry: HistoryEntry, key: string): Promise<OnceResult> {
    return await this.#append(scope, entry, key)
  }

  async #append (scope: string, entry: HistoryEntry, key: string | undefined): Promise<OnceResult> {
    const client = this.#use()
    let json: string
    try {
      json = JSON.stringify(entry)
    } catch (err) {
      // the caller's mistake, not an outage: the scope's log is not touched
      throw new FST_REALTIME_INVALID_PAYLOAD(entry.event, `it cannot be serialised (${(err as Error).message})`)
    }
    if (this.#recovering !== null || this.#hasLost()) await this.#recover(client)
    if (key === undefined) {
      const [seq, epoch] = await client.realtimeAppend(
        metaKey(scope), logKey(scope), idKey(scope), this.#clock(), json, this.#max, this.#ttlMs, this.#keepMs)
      return { seq: Number(seq), epoch }
    }
    const origin = JSON.stringify(entry.by === undefined ? { id: entry.id, at: entry.at } : { id: entry.id, at: entry.at, by: entry.by })
    const answer = await client.realtimeAppendOnce(
      metaKey(scope), logKey(scope), idKey(scope), onceKey(scope, key), this.#clock(), json, this.#max, this.#ttlMs, this.#keepMs, origin)
    return answer[0] === 'once' ? parseOnce(answer[1]) : { seq: Number(answer[0]), epoch: answer[1] }
  }

  /**
   * An event of `scope` was delivered live but not stored (the plugin calls this after a failed
   * `append`): the scope's log is dropped before the next use, so a position from before it
   * resyncs instead of skipping it. A sender that delivered nothing (the publisher) does not call it.
   */
  lost (scope: string): void {
    if (this.#lost.size < MAX_LOST_SCOPES) this.#lost.add(scope)
    else this.#lostAll = true
  }

  async read (scope: string, since: Position): Promise<ReadResult> {
    const [log, ctx] = await this.#snapshot(scope, true)
    if (log === DAMAGED) return { ok: false, reason: 'gap' }
    return planRead(log, since, ctx)
  }

  async position (scope: string): Promise<Position> {
    const [log, ctx] = await this.#snapshot(scope, false)
    return log === undefined || log === DAMAGED ? emptyPosition(ctx) : { seq: log.seq, epoch: log.epoch }
  }

  async ping (): Promise<boolean> {
    if (this.#client === null || this.#client.status !== 'ready') return false
    try {
      return await this.#client.ping() === 'PONG'
    } catch {
      return false
    }
  }

  /** Stops listening to the client; the client itself belongs to whoever attached it. */
  close (): void {
    this.#client?.off('ready', this.#onReady)
  }

  #use (): ScriptedClient {
    if (this.#client === null) throw new Error('The Redis history store is not connected yet')
    return this.#client
  }

  #clock (): number {
    return this.#now === undefined ? -1 : this.#now()
  }

  async #snapshot (scope: string, withEvents: boolean): Promise<[LogView | typeof DAMAGED | undefined, ReadContext]> {
    const client = this.#use()
    if (this.#recovering !== null || this.#hasLost()) await this.#recover(client)
    const [storeId, now, seq, epoch, started, last, floor, raw] =
      await client.realtimeSnapshot(metaKey(scope), logKey(scope), idKey(scope), this.#clock(), withEvents ? 1 : 0, this.#keepMs)
    const ctx: ReadContext = { storeId, now: Number(now), ttlMs: this.#ttlMs, keepMs: this.#keepMs }
    // no meta, or one of an earlier identity (the next append begins a new generation)
    if ((seq === '' && epoch === '' && started === '' && last === '') || (epoch !== '' && !epoch.startsWith(`${storeId}.`))) {
      return [undefined, ctx]
    }
    const view: LogView = { seq: field(seq), epoch, startedAt: field(started), floor: field(floor), events: [] }
    const lastAt = field(last)
    if (!Number.isSafeInteger(view.seq) || view.seq < 0 || epoch === '' || !Number.isFinite(view.startedAt) || !Number.isFinite(lastAt)) {
      return [DAMAGED, ctx]
    }
    if (ctx.now - lastAt >= this.#keepMs) return [undefined, ctx]
    // written before floors were kept: a generation begun on an empty scope
    if (!Number.isFinite(view.floor)) view.floor = view.startedAt - this.#keepMs
    for (const entry of raw) {
      const parsed = parseEntry(entry)
      if (parsed !== undefined) view.events.push(parsed)
    }
    return [view, ctx]
  }

  /** Drops the logs of lost scopes; one recovery at a time, and it runs until nothing is left. */
  /** Whether broadcasts went unstored (in some scopes, or anywhere) since the last recovery. */
  #hasLost (): boolean {
    return this.#lostAll || this.#lost.size > 0
  }

  #recover (client: ScriptedClient): Promise<void> {
    this.#recovering ??= this.#drain(client).finally(() => { this.#recovering = null })
    return this.#recovering
  }

  async #drain (client: ScriptedClient): Promise<void> {
    while (this.#hasLost()) {
      const all = this.#lostAll
      const scopes = [...this.#lost]
      this.#lostAll = false
      this.#lost.clear()
      try {
        if (all) {
          // a new identity for every scope gives each a new epoch, and no seq-0 position from
          // before it passes for one of its generations
          await forgetIdentities(client)
        } else {
          for (let i = 0; i < scopes.length; i += DROP_BATCH) {
            await Promise.all(scopes.slice(i, i + DROP_BATCH).map(async (scope) =>
              await client.realtimeDrop(idKey(scope), metaKey(scope), logKey(scope), this.#clock(), this.#keepMs)))
          }
        }
      } catch (err) {
        if (all) this.#lostAll = true
        for (const scope of scopes) this.#lost.add(scope)
        throw err
      }
    }
  }

  /** On a connection that is ready again: one recovery attempt, after the one in flight settles. */
  #recoverWhenReady (): void {
    const client = this.#client
    if (client === null) return
    const pending = this.#recovering ?? Promise.resolve()
    pending.catch(() => {}).then(async () => {
      if (this.#hasLost()) await this.#recover(client)
    }).catch(() => {
      // still unreachable: the next ready, or the next use of the store, tries again
    })
  }
}
