// An incident dashboard backend meant to run as several nodes behind a load balancer.
//
// Each team sees its own incidents live (`team:<id>`, from the user's memberships); admins may
// also subscribe to `incidents:all` and to any team, which `canSubscribe` grants to them only.
// Every route broadcasts its change to the owning team and to `incidents:all` (a reassignment to
// both teams). Presence shows who is looking at each team. The dashboard page (public/) is served
// at `/`.
//
// Redis does three jobs here, all through one `@fastify/redis` client of the app's own:
// - the data (incidents, team memberships), so every node answers the same (store.ts);
// - with `redis: true`, fastify-realtime duplicates that client for the Socket.IO Redis adapter,
//   so an event broadcast on one node reaches the sockets on every node;
// - the event log for catch-up, shared by all nodes, so a client that reconnects to another
//   node with `since` gets what it missed.
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import fastifyJwt from '@fastify/jwt'
import fastifyRedis from '@fastify/redis'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import realtime from 'fastify-realtime'
import type { RedisOptions } from 'ioredis'
import { Registry } from 'prom-client'
import {
  IncidentEditSchema,
  IncidentParamsSchema,
  MemberParamsSchema,
  NewIncidentSchema,
  NewNoteSchema,
  ReassignSchema,
  TeamParamsSchema,
  events,
  type Incident,
  type IncidentEdit,
  type IncidentParams,
  type MemberParams,
  type NewIncident,
  type NewNote,
  type Note,
  type Reassign,
  type TeamParams
} from './schemas.js'
import { IncidentStore, Refusal } from './store.js'

export interface DemoUser {
  id: string
  name: string
  role: 'admin' | 'member'
}

export interface Team {
  id: string
  name: string
}

// Demo users and teams, in code. Who is on which team is data, in Redis (see store.ts).
const USERS: ReadonlyMap<string, DemoUser> = new Map([
  ['alice', { id: 'alice', name: 'Alice', role: 'admin' }], // on no team; may watch incidents:all
  ['bob', { id: 'bob', name: 'Bob', role: 'member' }], //      payments
  ['carol', { id: 'carol', name: 'Carol', role: 'member' }], // search
  ['dave', { id: 'dave', name: 'Dave', role: 'member' }] //    on no team: sees nothing
])
const TEAMS: ReadonlyMap<string, Team> = new Map([
  ['payments', { id: 'payments', name: 'Payments' }],
  ['search', { id: 'search', name: 'Search' }]
])
/** Written to a Redis that has no demo data yet. */
const SEED_MEMBERSHIPS = [
  { userId: 'bob', teamId: 'payments' },
  { userId: 'carol', teamId: 'search' }
]

// Demo default only: set JWT_SECRET (the same on every node) for anything but a local try-out.
const DEMO_SECRET = 'fastify-realtime-incidents-demo-secret-change-me'

/** Every incident event goes here too: the admins' view of all teams. */
export const ALL_INCIDENTS = 'incidents:all'
const teamScope = (teamId: string): string => `team:${teamId}`
const isAdmin = (userId: string): boolean => USERS.get(userId)?.role === 'admin'

export interface IncidentsAppOptions {
  /** The Redis every node shares: a URL (`redis://127.0.0.1:6379`) or ioredis options. */
  redis: string | RedisOptions
  /** Prefix of every key the nodes write (data, event log, presence), e.g. `demo:`. */
  keyPrefix?: string
  logger?: boolean
  /**
   * The browser bundle of fastify-realtime/client the page loads as `/fastify-realtime.js`.
   * @default the package's dist/client/browser.global.js, written by `npm run build`
   */
  clientScript?: string | URL
}

// In this repository the package is built into ../../dist; an app that installs fastify-realtime
// serves node_modules/fastify-realtime/dist/client/browser.global.js the same way.
const BUILT_CLIENT = new URL('../../dist/client/browser.global.js', import.meta.url)

/** The dashboard's files, served as they are. */
const PAGE_FILES: ReadonlyArray<[path: string, file: string, type: string]> = [
  ['/', 'index.html', 'text/html; charset=utf-8'],
  ['/dashboard.js', 'dashboard.js', 'text/javascript; charset=utf-8'],
  ['/view.js', 'view.js', 'text/javascript; charset=utf-8'],
  ['/dashboard.css', 'dashboard.css', 'text/css; charset=utf-8'],
  ['/favicon.svg', 'favicon.svg', 'image/svg+xml']
]

/** The signed-in user and what they may see, read once per request. */
interface Viewer {
  user: DemoUser
  admin: boolean
  teams: ReadonlySet<string>
}

export async function buildIncidentsApp (opts: IncidentsAppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? false,
    // JSON bodies are taken as sent: no coercion, and unknown fields are a 400, not dropped
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } }
  })

  // The app's own JWT setup; fastify-realtime finds `app.jwt` and verifies sockets with it.
  await app.register(fastifyJwt, {
    secret: process.env.JWT_SECRET ?? DEMO_SECRET,
    sign: { algorithm: 'HS256', expiresIn: '1h' },
    verify: { algorithms: ['HS256'] }
  })

  const keyPrefix = opts.keyPrefix === undefined ? {} : { keyPrefix: opts.keyPrefix }
  await app.register(fastifyRedis, typeof opts.redis === 'string' ? { url: opts.redis, ...keyPrefix } : { ...opts.redis, ...keyPrefix })
  const store = new IncidentStore(app.redis)
  await store.seed(SEED_MEMBERSHIPS)

  const metrics = new Registry()
  await app.register(realtime, {
    auth: {
      // Look the user up on every handshake: an unknown user is refused.
      user: (claims) => USERS.get(String(claims.sub)) ?? null
    },
    // The user's teams, asked on every connect and every subscribe: read from Redis, so a
    // membership removed through any node is refused by every node.
    rooms: async (user) => (await store.teamsOf(String(user.id))).map(teamScope),
    // Beyond memberships, admins (their current role, not the token's) may watch incidents:all and
    // look at any team, which makes them present there.
    canSubscribe: (user, scope) => isAdmin(String(user.id)) && (scope === ALL_INCIDENTS || TEAMS.has(scope.slice('team:'.length))),
    // Reuse app.redis: the plugin makes its own connections from it (and leaves app.redis open).
    // History then lives in Redis too, shared by the nodes, and so does presence.
    redis: true,
    // Who is looking at each team, across the nodes: their name and role, nothing of the token.
    presence: {
      kinds: ['team'],
      user: (user) => {
        const known = USERS.get(String(user.id))
        return { id: String(user.id), name: known?.name ?? String(user.id), role: known?.role ?? 'member' }
      }
    },
    events,
    // Prometheus metrics on this node's own registry, scraped at GET /metrics
    metrics: { registry: metrics }
  })
  app.get('/metrics', async (_request, reply) => await reply.type(metrics.contentType).send(await metrics.metrics()))

  /** The signed-in user, or a 401 already sent. */
  async function authenticate (request: FastifyRequest, reply: FastifyReply): Promise<Viewer | null> {
    let user: DemoUser | undefined
    try {
      const claims = await request.jwtVerify<{ sub?: string }>()
      user = USERS.get(String(claims.sub))
    } catch {}
    if (user === undefined) {
      await reply.code(401).send({ error: 'Unauthorized', message: 'Send a valid token: Authorization: Bearer <token>' })
      return null
    }
    return { user, admin: user.role === 'admin', teams: new Set(await store.teamsOf(user.id)) }
  }

  const canSee = (viewer: Viewer, teamId: string): boolean => viewer.admin || viewer.teams.has(teamId)

  function send (reply: FastifyReply, statusCode: number, message: string): FastifyReply {
    const error = statusCode === 400 ? 'Bad Request' : statusCode === 403 ? 'Forbidden' : statusCode === 404 ? 'Not Found' : 'Conflict'
    return reply.code(statusCode).send({ error, message })
  }

  /**
   * Sends one change to every team concerned and to incidents:all: `send` is called once per
   * scope. Each scope has its own log (and seq), so a client catches up per scope.
   */
  async function toScopes (teamIds: string[], send: (scope: string) => Promise<unknown>): Promise<void> {
    const scopes = [...new Set(teamIds.map(teamScope)), ALL_INCIDENTS]
    await Promise.all(scopes.map(send))
  }

  /**
   * Changes an incident the viewer may see, or sends the refusal (404 when they may not see it,
   * whatever the reason: ids are not a way in). Resolves with [before, after] or null.
   */
  async function change (
    reply: FastifyReply,
    viewer: Viewer,
    id: string,
    apply: (current: Incident) => Incident | Refusal
  ): Promise<[Incident, Incident] | null> {
    const notFound = new Refusal(404, `No incident "${id}"`)
    const result = await store.update(id, (current) => canSee(viewer, current.teamId) ? apply(current) : notFound)
    if (result === null || result instanceof Refusal) {
      const refusal = result ?? notFound
      send(reply, refusal.statusCode, refusal.message)
      return null
    }
    return result
  }

  app.get('/api/teams', async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const teams = await Promise.all([...TEAMS.values()].map(async (team) => ({ ...team, members: await store.membersOf(team.id) })))
    return { teams }
  })

  // Who the signed-in user is, and the teams they see (all of them for an admin).
  app.get('/api/me', async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const teams = [...TEAMS.values()].filter((team) => canSee(viewer, team.id))
    return { user: viewer.user, teams }
  })

  // What a dashboard fetches at start and again on `realtime:resync`.
  app.get('/api/incidents', async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    return { incidents: (await store.list()).filter((incident) => canSee(viewer, incident.teamId)) }
  })

  app.get<{ Params: IncidentParams }>('/api/incidents/:id', {
    schema: { params: IncidentParamsSchema }
  }, async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const incident = await store.get(request.params.id)
    if (incident === null || !canSee(viewer, incident.teamId)) return send(reply, 404, `No incident "${request.params.id}"`)
    return incident
  })

  app.post<{ Params: TeamParams, Body: NewIncident }>('/api/teams/:teamId/incidents', {
    schema: { params: TeamParamsSchema, body: NewIncidentSchema }
  }, async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const { teamId } = request.params
    if (!TEAMS.has(teamId) || !canSee(viewer, teamId)) return send(reply, 404, `No team "${teamId}"`)
    const now = Date.now()
    const incident: Incident = {
      id: randomUUID(),
      teamId,
      title: request.body.title,
      severity: request.body.severity,
      status: 'open',
      acknowledgedBy: null,
      resolvedBy: null,
      notes: [],
      createdAt: now,
      updatedAt: now,
      version: 1
    }
    await store.create(incident)
    await toScopes([teamId], (scope) => app.broadcast(scope, 'incident:created', { incident }, { by: viewer.user.id }))
    return reply.code(201).send(incident)
  })

  app.post<{ Params: IncidentParams }>('/api/incidents/:id/acknowledge', {
    schema: { params: IncidentParamsSchema }
  }, async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const changed = await change(reply, viewer, request.params.id, (current) => current.status === 'open'
      ? { ...current, status: 'acknowledged', acknowledgedBy: viewer.user.id }
      : new Refusal(409, `The incident is ${current.status} already`))
    if (changed === null) return reply
    const [, incident] = changed
    await toScopes([incident.teamId], (scope) => app.broadcast(scope, 'incident:acknowledged', { incident }, { by: viewer.user.id }))
    return incident
  })

  app.post<{ Params: IncidentParams }>('/api/incidents/:id/resolve', {
    schema: { params: IncidentParamsSchema }
  }, async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const changed = await change(reply, viewer, request.params.id, (current) => current.status !== 'resolved'
      ? { ...current, status: 'resolved', resolvedBy: viewer.user.id }
      : new Refusal(409, 'The incident is resolved already'))
    if (changed === null) return reply
    const [, incident] = changed
    await toScopes([incident.teamId], (scope) => app.broadcast(scope, 'incident:resolved', { incident }, { by: viewer.user.id }))
    return incident
  })

  app.patch<{ Params: IncidentParams, Body: IncidentEdit }>('/api/incidents/:id', {
    schema: { params: IncidentParamsSchema, body: IncidentEditSchema }
  }, async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const { title, severity } = request.body
    const changed = await change(reply, viewer, request.params.id, (current) =>
      ({ ...current, title: title ?? current.title, severity: severity ?? current.severity }))
    if (changed === null) return reply
    const [, incident] = changed
    await toScopes([incident.teamId], (scope) => app.broadcast(scope, 'incident:updated', { incident }, { by: viewer.user.id }))
    return incident
  })

  app.post<{ Params: IncidentParams, Body: Reassign }>('/api/incidents/:id/reassign', {
    schema: { params: IncidentParamsSchema, body: ReassignSchema }
  }, async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const to = request.body.teamId
    if (!TEAMS.has(to)) return send(reply, 400, `No team "${to}"`)
    const changed = await change(reply, viewer, request.params.id, (current) => current.teamId !== to
      ? { ...current, teamId: to }
      : new Refusal(409, `The incident is with team "${to}" already`))
    if (changed === null) return reply
    const [before, incident] = changed
    // both teams hear of it: one loses the incident, the other gets it
    await toScopes([before.teamId, to], (scope) =>
      app.broadcast(scope, 'incident:reassigned', { incident, from: before.teamId, to }, { by: viewer.user.id }))
    return incident
  })

  app.post<{ Params: IncidentParams, Body: NewNote }>('/api/incidents/:id/notes', {
    schema: { params: IncidentParamsSchema, body: NewNoteSchema }
  }, async (request, reply) => {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    const note: Note = { id: randomUUID(), author: viewer.user.id, text: request.body.text, at: Date.now() }
    const changed = await change(reply, viewer, request.params.id, (current) => ({ ...current, notes: [...current.notes, note] }))
    if (changed === null) return reply
    const [, incident] = changed
    const added = { incidentId: incident.id, teamId: incident.teamId, note, version: incident.version }
    await toScopes([incident.teamId], (scope) => app.broadcast(scope, 'incident:note_added', added, { by: viewer.user.id }))
    return reply.code(201).send(note)
  })

  /**
   * Membership changes (admins only). The data changes first, so every node refuses a new
   * subscribe at once; then `join`/`leave` moves the user's live sockets, on every node, and
   * resolves once each live node has done it.
   */
  async function membership (request: FastifyRequest<{ Params: MemberParams }>, reply: FastifyReply, op: 'join' | 'leave'): Promise<unknown> {
    const viewer = await authenticate(request, reply)
    if (viewer === null) return reply
    if (!viewer.admin) return send(reply, 403, 'Only an admin may change team memberships')
    const { teamId, userId } = request.params
    if (!TEAMS.has(teamId)) return send(reply, 404, `No team "${teamId}"`)
    if (!USERS.has(userId)) return send(reply, 404, `No user "${userId}"`)
    if (op === 'join') await store.addMember(userId, teamId)
    else await store.removeMember(userId, teamId)
    try {
      await app.realtime[op](userId, teamScope(teamId))
    } catch (err) {
      // saved, but some node did not confirm in time: its sockets may not have moved yet
      request.log.warn({ err, teamId, userId, op }, 'membership saved; live sockets not confirmed on every node')
      return reply.code(503).send({
        error: 'Service Unavailable',
        message: 'The membership is saved, but not every node confirmed the change; send it again'
      })
    }
    return { teamId, members: await store.membersOf(teamId) }
  }

  app.post<{ Params: MemberParams }>('/api/teams/:teamId/members/:userId', {
    schema: { params: MemberParamsSchema }
  }, async (request, reply) => await membership(request, reply, 'join'))

  app.delete<{ Params: MemberParams }>('/api/teams/:teamId/members/:userId', {
    schema: { params: MemberParamsSchema }
  }, async (request, reply) => await membership(request, reply, 'leave'))

  // DEMO ONLY: hands a token to anyone who asks. A real app issues tokens at login.
  app.get<{ Querystring: { user: string } }>('/api/demo-token', {
    schema: { querystring: { type: 'object', properties: { user: { type: 'string' } }, required: ['user'] } }
  }, async (request, reply) => {
    const user = USERS.get(request.query.user)
    if (user === undefined) {
      return reply.code(404).send({ error: 'Not Found', message: `No demo user "${request.query.user}"; try ${[...USERS.keys()].join(', ')}` })
    }
    reply.header('cache-control', 'no-store')
    return { token: app.jwt.sign({ sub: user.id, name: user.name }) }
  })

  // The demo users to sign in as: the page lists them. DEMO ONLY, like the token route above.
  app.get('/api/demo-users', async () => ({
    users: await Promise.all([...USERS.values()].map(async (user) =>
      ({ ...user, teams: (await store.teamsOf(user.id)).map((id) => TEAMS.get(id)?.name ?? id) })))
  }))

  // The dashboard page: plain HTML, CSS and JS, on the browser bundle of fastify-realtime/client.
  for (const [path, file, type] of PAGE_FILES) {
    const body = await readFile(new URL(`./public/${file}`, import.meta.url))
    app.get(path, async (_request, reply) => await reply.type(type).header('cache-control', 'no-cache').send(body))
  }
  // read at the first request, so the API runs without a build (watch.ts, the tests)
  const clientScript = opts.clientScript ?? BUILT_CLIENT
  let script: Promise<Buffer> | null = null
  app.get('/fastify-realtime.js', async (_request, reply) => {
    script ??= readFile(clientScript)
    try {
      return await reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(await script)
    } catch (err) {
      script = null
      app.log.error({ err }, 'the browser client is missing')
      return await reply.code(503).type('text/plain').send(`The page needs the browser client at ${String(clientScript)}: run npm run build`)
    }
  })

  return app
}
