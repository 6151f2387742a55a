// The dashboard's data, in Redis, so that every node sees the same incidents and the same team
// memberships (a membership removed through one node is refused by all of them at the next
// subscribe). A real app keeps this in its database; the realtime part would not change.
//
// Keys, under the client's own keyPrefix:
//   incidents:seeded                 set once, when the demo memberships were written
//   incidents:team:<teamId>:members  set of user ids
//   incidents:user:<userId>:teams    set of team ids (the same facts, read by `rooms(user)`)
//   incidents:incident:<id>          the incident as JSON
//   incidents:index                  sorted set of incident ids by creation time
import type { Redis } from 'ioredis'
import type { Incident } from './schemas.js'

const SEEDED = 'incidents:seeded'
const INDEX = 'incidents:index'
const membersKey = (teamId: string): string => `incidents:team:${teamId}:members`
const teamsKey = (userId: string): string => `incidents:user:${userId}:teams`
const incidentKey = (id: string): string => `incidents:incident:${id}`

// Writes the demo memberships once per Redis, atomically, whichever node starts first.
// KEYS: seeded, then (members, teams) per membership. ARGV: (userId, teamId) per membership.
const SEED = `
if not redis.call('SET', KEYS[1], '1', 'NX') then return 0 end
for i = 2, #KEYS, 2 do
  redis.call('SADD', KEYS[i], ARGV[i - 1])
  redis.call('SADD', KEYS[i + 1], ARGV[i])
end
return 1
`

// Replaces an incident only if nobody changed it since it was read (same version).
// KEYS: incident. ARGV: version read, new JSON. Returns 1 done, 0 changed meanwhile, -1 gone.
const COMPARE_AND_SET = `
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if cjson.decode(current).version ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`

/** What a change function may answer instead of the changed incident: an HTTP error to send. */
export class Refusal {
  readonly statusCode: number
  readonly message: string

  constructor (statusCode: number, message: string) {
    this.statusCode = statusCode
    this.message = message
  }
}

export class IncidentStore {
  readonly #redis: Redis

  constructor (redis: Redis) {
    this.#redis = redis
  }

  /** Writes `memberships` unless this Redis already has the demo data. */
  async seed (memberships: ReadonlyArray<{ userId: string, teamId: string }>): Promise<void> {
    const keys = [SEEDED, ...memberships.flatMap(({ userId, teamId }) => [membersKey(teamId), teamsKey(userId)])]
    const args = memberships.flatMap(({ userId, teamId }) => [userId, teamId])
    await this.#redis.eval(SEED, keys.length, ...keys, ...args)
  }

  async teamsOf (userId: string): Promise<string[]> {
    return (await this.#redis.smembers(teamsKey(userId))).sort()
  }

  async membersOf (teamId: string): Promise<string[]> {
    return (await this.#redis.smembers(membersKey(teamId))).sort()
  }

  async isMember (userId: string, teamId: string): Promise<boolean> {
    return await this.#redis.sismember(membersKey(teamId), userId) === 1
  }

  async addMember (userId: string, teamId: string): Promise<void> {
    await this.#redis.multi().sadd(membersKey(teamId), userId).sadd(teamsKey(userId), teamId).exec()
  }

  async removeMember (userId: string, teamId: string): Promise<void> {
    await this.#redis.multi().srem(membersKey(teamId), userId).srem(teamsKey(userId), teamId).exec()
  }

  async create (incident: Incident): Promise<void> {
    await this.#redis.multi()
      .set(incidentKey(incident.id), JSON.stringify(incident))
      .zadd(INDEX, incident.createdAt, incident.id)
      .exec()
  }

  async get (id: string): Promise<Incident | null> {
    const json = await this.#redis.get(incidentKey(id))
    return json === null ? null : JSON.parse(json) as Incident
  }

  /** The newest `limit` incidents, newest first. */
  async list (limit = 200): Promise<Incident[]> {
    const ids = await this.#redis.zrevrange(INDEX, 0, limit - 1)
    if (ids.length === 0) return []
    const found = await this.#redis.mget(ids.map(incidentKey))
    return found.filter((json) => json !== null).map((json) => JSON.parse(json) as Incident)
  }

  /**
   * Applies `change` to the current incident and stores the result with the next version, or
   * answers the Refusal `change` returned. Two nodes changing one incident at once cannot undo
   * each other: the slower one reads the new version and tries again.
   * Returns [before, after], null when there is no such incident.
   */
  async update (id: string, change: (current: Incident) => Incident | Refusal): Promise<[Incident, Incident] | Refusal | null> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const current = await this.get(id)
      if (current === null) return null
      const changed = change(current)
      if (changed instanceof Refusal) return changed
      const next: Incident = {
        ...changed,
        version: current.version + 1,
        updatedAt: Math.max(Date.now(), current.updatedAt + 1)
      }
      const done = await this.#redis.eval(COMPARE_AND_SET, 1, incidentKey(id), current.version, JSON.stringify(next))
      if (done === 1) return [current, next]
      if (done === -1) return null
    }
    return new Refusal(409, 'The incident keeps changing; try again')
  }
}
