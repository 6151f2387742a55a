// An escalation job, run by cron or a queue worker, with no web server of its own:
// `ESCALATE_TO=search OLDER_THAN_MINUTES=15 npx tsx examples/incidents/escalate.ts`.
// Every incident still open (nobody acknowledged it) after OLDER_THAN_MINUTES is handed to the
// ESCALATE_TO team, and the dashboards hear of it as they do of a reassignment made on a page:
// `incident:reassigned` to both teams and to incidents:all, through fastify-realtime/publisher.
// REDIS_URL and REDIS_KEY_PREFIX as for server.ts: the nodes' Redis and prefix.
import { pathToFileURL } from 'node:url'
import { createPublisher, type Publisher } from 'fastify-realtime/publisher'
import { Redis } from 'ioredis'
import { events, type Incident } from './schemas.js'
import { IncidentStore, Refusal } from './store.js'

/** The `by` of every event this job sends, as `meta.by` on the pages. */
export const ESCALATION = 'escalation'

export interface EscalationOptions {
  store: IncidentStore
  publisher: Publisher
  /** The team that gets what nobody acknowledged. */
  to: string
  /** How long an incident may stay open before it is escalated. */
  olderThanMs: number
  /** @default Date.now() */
  now?: number
}

/**
 * Hands every incident open for longer than `olderThanMs` to team `to`, and broadcasts each
 * move. Resolves with the incidents it moved. An incident acknowledged (or moved) meanwhile is
 * left alone: the change is a compare-and-set on its version, as a route's is.
 */
export async function escalate ({ store, publisher, to, olderThanMs, now = Date.now() }: EscalationOptions): Promise<Incident[]> {
  const overdue = (await store.list()).filter((incident) =>
    incident.status === 'open' && incident.teamId !== to && now - incident.createdAt >= olderThanMs)
  const moved: Incident[] = []
  for (const { id } of overdue) {
    const changed = await store.update(id, (current) => current.status === 'open' && current.teamId !== to
      ? { ...current, teamId: to }
      : new Refusal(409, 'acknowledged or moved meanwhile'))
    if (changed === null || changed instanceof Refusal) continue
    const [before, incident] = changed
    const payload = { incident, from: before.teamId, to }
    // the key names this move: a broadcast retried for it (by a retrying publisher, or a second
    // job racing this one on the same version) is sent once. A move whose broadcasts all failed is
    // not announced by a later run, which no longer selects it: the clients see it at their next load.
    const opts = { by: ESCALATION, idempotencyKey: `escalate:${incident.id}:${incident.version}` }
    await Promise.all([`team:${before.teamId}`, `team:${to}`, 'incidents:all'].map(async (scope) =>
      await publisher.broadcast(scope, 'incident:reassigned', payload, opts)))
    moved.push(incident)
  }
  return moved
}

async function main (): Promise<void> {
  const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
  const keyPrefix = process.env.REDIS_KEY_PREFIX ?? ''
  const redis = new Redis(url, { keyPrefix })
  // the nodes' events option: a payload that does not match is refused here too
  const publisher = createPublisher({ redis, events })
  try {
    const moved = await escalate({
      store: new IncidentStore(redis),
      publisher,
      to: process.env.ESCALATE_TO ?? 'search',
      olderThanMs: Number(process.env.OLDER_THAN_MINUTES ?? 15) * 60_000
    })
    for (const incident of moved) console.log(`escalated ${incident.id.slice(0, 8)} "${incident.title}" to team ${incident.teamId}`)
    console.log(`${moved.length} incident(s) escalated`)
  } finally {
    await publisher.close()
    redis.disconnect()
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    // FST_REALTIME_REDIS_UNAVAILABLE: nothing was sent; run the job again later
    console.error(err)
    process.exitCode = 1
  })
}
