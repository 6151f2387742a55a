import type { RedisClient } from '../redis.js'
import type { PresenceInfo, PresenceJoin, PresenceUser } from '../protocol.js'
import type { NodeCount, PresenceChange, PresenceStore, StoredPresence } from './store.js'

// Keys, under the client's keyPrefix. Every key of one scope carries the scope as its hash tag,
// so each script touches one slot (a Redis Cluster keeps them together):
//   rt:p:{<scope>}    hash: user id -> {"n":{<node>:<sockets>},"i":"<info json>"}, and '#v', the version
//   rt:ps:{<scope>}   sorted set: user id by the ms they became present (the order snapshots list)
// and the nodes that hold presence, in one slot of their own:
//   rt:presence:{nodes}          set of node ids
//   rt:presence:{nodes}:<node>   set of the scopes that node has counts in
// Every key expires KEY_TTL_MS after its last write or refresh: a cluster that is gone leaves nothing.
const usersKey = (scope: string): string => `rt:p:{${scope}}`
const sinceKey = (scope: string): string => `rt:ps:{${scope}}`
const NODES_KEY = 'rt:presence:{nodes}'
const nodeKey = (node: string): string => `${NODES_KEY}:${node}`

/** How long presence keys outlive their last write; nodes refresh what they hold well before. */
export const KEY_TTL_MS = 60 * 60 * 1000

// Versions: a scope's first change takes Redis's clock in microseconds, each later one adds one,
// so a scope that empties (its keys deleted) and fills again starts above every earlier version.
// String-formatted: Lua would print a number this large in exponent form.
// `finish` bumps the version when someone joined or left, and deletes the keys of an empty scope.
// KEYS: users, since. ARGV[2]: ttl ms.
const COMMON = `
local function ms ()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function finish (joins, leaves)
  local count = redis.call('ZCARD', KEYS[2])
  local version = 0
  local fresh = 0
  if #joins + #leaves > 0 then
    if redis.call('HEXISTS', KEYS[1], '#v') == 1 then
      version = redis.call('HINCRBY', KEYS[1], '#v', 1)
    else
      local t = redis.call('TIME')
      version = tonumber(t[1]) * 1000000 + tonumber(t[2])
      fresh = 1
      redis.call('HSET', KEYS[1], '#v', string.format('%.0f', version))
    end
  end
  if count == 0 then
    redis.call('DEL', KEYS[1], KEYS[2])
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
  return { version, count, joins, leaves, fresh }
end
`

// One node's counts of some users. ARGV: node, ttl ms, then (user id, sockets, info json) per user.
// Returns { version, count, { user, info, since, … } joined, { user, … } left, 1 when the scope was empty }.
const WRITE = `${COMMON}
local node = ARGV[1]
local now
local joins, leaves = {}, {}
for i = 3, #ARGV, 3 do
  local user, sockets, info = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local raw = redis.call('HGET', KEYS[1], user)
  if raw then
    local entry = cjson.decode(raw)
    if sockets > 0 then
      entry.n[node] = sockets
      entry.i = info
    else
      entry.n[node] = nil
    end
    if next(entry.n) == nil then
      redis.call('HDEL', KEYS[1], user)
      redis.call('ZREM', KEYS[2], user)
      leaves[#leaves + 1] = user
    else
      redis.call('HSET', KEYS[1], user, cjson.encode(entry))
    end
  elseif sockets > 0 then
    now = now or ms()
    redis.call('HSET', KEYS[1], user, cjson.encode({ n = { [node] = sockets }, i = info }))
    redis.call('ZADD', KEYS[2], now, user)
    joins[#joins + 1] = user
    joins[#joins + 1] = info
    joins[#joins + 1] = now
  end
end
return finish(joins, leaves)
`

// Every count of one node. ARGV: node, ttl ms. Returns what WRITE returns.
const PURGE = `${COMMON}
local node = ARGV[1]
local leaves = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= '#v' then
    local entry = cjson.decode(all[i + 1])
    if entry.n[node] then
      entry.n[node] = nil
      if next(entry.n) == nil then
        redis.call('HDEL', KEYS[1], all[i])
        redis.call('ZREM', KEYS[2], all[i])
        leaves[#leaves + 1] = all[i]
      else
        redis.call('HSET', KEYS[1], all[i], cjson.encode(entry))
      end
    end
  end
end
if #leaves == 0 then return { 0, redis.call('ZCARD', KEYS[2]), {}, {}, 0 } end
return finish({}, leaves)
`

// The first ARGV[1] users by since, with their entries; the count and the version. An empty
// scope answers a version below any the scope can take later (Redis's clock, in microseconds).
const READ = `
local count = redis.call('ZCARD', KEYS[2])
if count == 0 then
  local t = redis.call('TIME')
  return { tonumber(t[1]) * 1000000 + tonumber(t[2]) - 1, 0, {}, {} }
end
local max = tonumber(ARGV[1])
local listed = {}
if max > 0 then listed = redis.call('ZRANGE', KEYS[2], 0, max - 1, 'WITHSCORES') end
local ids = {}
for i = 1, #listed, 2 do ids[#ids + 1] = listed[i] end
local entries = {}
if #ids > 0 then entries = redis.call('HMGET', KEYS[1], unpack(ids)) end
return { tonumber(redis.call('HGET', KEYS[1], '#v')) or 0, count, listed, entries }
`

// Registers this node and lists every node that holds presence. KEYS: nodes, this node's scopes.
// ARGV: node id, ttl ms. Returns { 1 when the node was not registered, node ids }.
const ENLIST = `
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return { added, redis.call('SMEMBERS', KEYS[1]) }
`

// Forgets a node whose counts are gone. KEYS: nodes, that node's scopes. ARGV: node id.
const FORGET = `
redis.call('DEL', KEYS[2])
return redis.call('SREM', KEYS[1], ARGV[1])
`

type Written = [number, number, Array<string | number>, string[], number]

type PresenceClient = RedisClient & {
  realtimePresenceWrite: (users: string, since: string, ...args: Array<string | number>) => Promise<Written>
  realtimePresencePurge: (users: string, since: string, node: string, ttlMs: number) => Promise<Written>
  realtimePresenceRead: (users: string, since: string, max: number) => Promise<[number, number, string[], Array<string | null>]>
  realtimePresenceEnlist: (nodes: string, scopes: string, node: string, ttlMs: number) => Promise<[number, string[]]>
  realtimePresenceForget: (nodes: string, scopes: string, node: string) => Promise<number>
}

/** One user's entry in a scope's hash; undefined when it cannot be read. */
function entryOf (raw: string | null): { n: Record<string, number>, i: string } | undefined {
  if (raw === null) return undefined
  try {
    const entry = JSON.parse(raw) as { n?: unknown, i?: unknown }
    if (entry.n === null || typeof entry.n !== 'object' || typeof entry.i !== 'string') return undefined
    return entry as { n: Record<string, number>, i: string }
  } catch {
    return undefined
  }
}

function infoOf (json: string): PresenceInfo {
  try {
    return JSON.parse(json) as PresenceInfo
  } catch {
    return {}
  }
}

function changeOf ([version, count, joined, leaves, fresh]: Written): PresenceChange | null {
  if (joined.length + leaves.length === 0) return null
  const joins: PresenceJoin[] = []
  for (let i = 0; i < joined.length; i += 3) {
    joins.push({ userId: String(joined[i]), info: infoOf(String(joined[i + 1])), since: Number(joined[i + 2]) })
  }
  return { joins, leaves, count: Number(count), version: Number(version), fromEmpty: fresh === 1 }
}

/**
 * Presence shared by every node: per scope, each user's sockets counted per node, so a user is
 * present once however many tabs and nodes they use. Each node also lists the scopes it has
 * counts in, so that when it dies another node can take them out (`purge`).
 */
export class RedisPresenceStore implements PresenceStore {
  readonly #client: PresenceClient
  readonly #node: string
  /** The scopes this node has listed as its own. */
  readonly #listed = new Set<string>()

  constructor (client: RedisClient, node: string) {
    client.defineCommand('realtimePresenceWrite', { numberOfKeys: 2, lua: WRITE })
    client.defineCommand('realtimePresencePurge', { numberOfKeys: 2, lua: PURGE })
    client.defineCommand('realtimePresenceRead', { numberOfKeys: 2, lua: READ })
    client.defineCommand('realtimePresenceEnlist', { numberOfKeys: 2, lua: ENLIST })
    client.defineCommand('realtimePresenceForget', { numberOfKeys: 2, lua: FORGET })
    this.#client = client as PresenceClient
    this.#node = node
  }

  async write (scope: string, node: string, counts: NodeCount[], held: boolean): Promise<PresenceChange | null> {
    // listed before the counts are written: if this node dies in between, its counts can still be found
    if (held && !this.#listed.has(scope)) {
      await this.#client.multi().sadd(nodeKey(node), scope).pexpire(nodeKey(node), KEY_TTL_MS).exec()
      this.#listed.add(scope)
    }
    const args: Array<string | number> = [node, KEY_TTL_MS]
    for (const { userId, connections, info } of counts) args.push(userId, connections, info)
    const change = changeOf(await this.#client.realtimePresenceWrite(usersKey(scope), sinceKey(scope), ...args))
    if (!held && this.#listed.delete(scope)) await this.#client.srem(nodeKey(node), scope)
    return change
  }

  async purge (scope: string, node: string): Promise<PresenceChange | null> {
    return changeOf(await this.#client.realtimePresencePurge(usersKey(scope), sinceKey(scope), node, KEY_TTL_MS))
  }

  async read (scope: string, max: number): Promise<StoredPresence> {
    const [version, count, listed, entries] = await this.#client.realtimePresenceRead(usersKey(scope), sinceKey(scope), max)
    const users: PresenceUser[] = []
    for (let i = 0; i < listed.length; i += 2) {
      const entry = entryOf(entries[i / 2] ?? null)
      if (entry === undefined) continue
      let connections = 0
      for (const sockets of Object.values(entry.n)) connections += Number(sockets)
      users.push({ userId: listed[i]!, info: infoOf(entry.i), connections, since: Number(listed[i + 1]) })
    }
    return { count: Number(count), version: Number(version), users }
  }

  /**
   * Registers this node among those that hold presence (again, when another node had taken it
   * for dead and purged its counts: `readded` is then true) and lists them all.
   */
  async enlist (): Promise<{ readded: boolean, nodes: string[] }> {
    const [added, nodes] = await this.#client.realtimePresenceEnlist(NODES_KEY, nodeKey(this.#node), this.#node, KEY_TTL_MS)
    if (added === 1) this.#listed.clear()
    return { readded: added === 1, nodes: nodes.map(String) }
  }

  /** The scopes `node` has counts in. */
  async scopesOf (node: string): Promise<string[]> {
    return await this.#client.smembers(nodeKey(node))
  }

  /** Forgets `node` once its counts are purged. */
  async forget (node: string): Promise<void> {
    if (node === this.#node) this.#listed.clear()
    await this.#client.realtimePresenceForget(NODES_KEY, nodeKey(node), node)
  }

  /** Keeps the keys of `scopes` (this node's) from expiring. */
  async touch (scopes: Iterable<string>): Promise<void> {
    await Promise.all([...scopes].flatMap((scope) => [
      this.#client.pexpire(usersKey(scope), KEY_TTL_MS),
      this.#client.pexpire(sinceKey(scope), KEY_TTL_MS)
    ]))
  }
}
