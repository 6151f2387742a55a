// A program-scoped request tracker: people see the requests of the programs they belong to, and
// every change to a request (its title, status, assignee, comments, attachments) reaches the
// other members of that program live.
//
// The routes are ordinary Fastify routes: after each change they call `app.broadcast` on
// `program:<id>`. fastify-realtime authenticates every socket with the same JWT as the routes,
// joins it to the programs `rooms(user)` returns (the user's program memberships), checks each
// payload against its TypeBox schema, and logs it so a client that reconnects with `since` gets
// what it missed. With `redis` set, that log lives in Redis and survives a restart of the app.
import { randomUUID } from 'node:crypto'
import fastifyJwt from '@fastify/jwt'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import realtime from 'fastify-realtime'
import type { RedisOptions } from 'ioredis'
import {
  AssignSchema,
  AttachmentParamsSchema,
  CommentParamsSchema,
  NewAttachmentSchema,
  NewCommentSchema,
  NewRequestSchema,
  ProgramParamsSchema,
  RequestChangeSchema,
  RequestParamsSchema,
  StatusChangeSchema,
  events,
  type Assign,
  type Attachment,
  type AttachmentParams,
  type Comment,
  type CommentParams,
  type NewAttachment,
  type NewComment,
  type NewRequest,
  type ProgramParams,
  type ProgramRequest,
  type RequestChange,
  type RequestParams,
  type StatusChange
} from './schemas.js'

export interface DemoUser {
  id: string
  name: string
}

export interface Program {
  id: string
  name: string
}

// Demo data, in memory. A real app keeps this in its database.
const USERS: ReadonlyMap<string, DemoUser> = new Map([
  ['alice', { id: 'alice', name: 'Alice' }], // apollo and gemini
  ['bob', { id: 'bob', name: 'Bob' }], //       apollo
  ['carol', { id: 'carol', name: 'Carol' }], // gemini
  ['dave', { id: 'dave', name: 'Dave' }] //     no program: sees nothing
])

// Demo default only: set JWT_SECRET for anything but a local try-out.
const DEMO_SECRET = 'fastify-realtime-programs-demo-secret-change-me'

const scopeOf = (programId: string): string => `program:${programId}`

export interface ProgramsAppOptions {
  /**
   * Redis for the event log (a URL or ioredis options): catch-up then survives a restart and is
   * shared by every instance. Without it the log is kept in memory.
   */
  redis?: string | RedisOptions
  logger?: boolean
}

export async function buildProgramsApp (opts: ProgramsAppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? false,
    // JSON bodies are taken as sent: `{ "size": "12" }` is a 400, not 12 bytes, and a field the
    // schema does not name (file `data`, say) is a 400 too, not silently dropped
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false } }
  })

  const programs = new Map<string, Program>([
    ['apollo', { id: 'apollo', name: 'Apollo' }],
    ['gemini', { id: 'gemini', name: 'Gemini' }]
  ])
  /** user id → the ids of the programs they belong to */
  const memberships = new Map<string, ReadonlySet<string>>([
    ['alice', new Set(['apollo', 'gemini'])],
    ['bob', new Set(['apollo'])],
    ['carol', new Set(['gemini'])]
  ])
  const requests = new Map<string, ProgramRequest>()

  const programsOf = (userId: string): string[] => [...(memberships.get(userId) ?? [])]
  const isMember = (userId: string, programId: string): boolean => memberships.get(userId)?.has(programId) === true

  // The app's own JWT setup; fastify-realtime finds `app.jwt` and verifies sockets with it.
  await app.register(fastifyJwt, {
    secret: process.env.JWT_SECRET ?? DEMO_SECRET,
    sign: { algorithm: 'HS256', expiresIn: '1h' },
    verify: { algorithms: ['HS256'] }
  })

  await app.register(realtime, {
    auth: {
      // Look the user up on every handshake: an unknown user is refused.
      user: (claims) => USERS.get(String(claims.sub)) ?? null
    },
    // The user's programs, asked on every connect and every subscribe.
    rooms: (user) => programsOf(String(user.id)).map(scopeOf),
    events,
    // history: in Redis when `redis` is set, in memory otherwise (the plugin's default)
    ...(opts.redis === undefined ? {} : { redis: opts.redis })
  })

  /** The signed-in user, or a 401 already sent. */
  async function authenticate (request: FastifyRequest, reply: FastifyReply): Promise<DemoUser | null> {
    try {
      const claims = await request.jwtVerify<{ sub?: string }>()
      const user = USERS.get(String(claims.sub))
      if (user !== undefined) return user
    } catch {}
    await reply.code(401).send({ error: 'Unauthorized', message: 'Send a valid token: Authorization: Bearer <token>' })
    return null
  }

  function notFound (reply: FastifyReply, message: string): null {
    reply.code(404).send({ error: 'Not Found', message })
    return null
  }

  function programFor (user: DemoUser, programId: string, reply: FastifyReply): Program | null {
    const program = programs.get(programId)
    // the same answer for "no such program" and "not yours": ids are not a way in
    if (program === undefined || !isMember(user.id, programId)) return notFound(reply, `No program "${programId}"`)
    return program
  }

  function requestFor (user: DemoUser, id: string, reply: FastifyReply): ProgramRequest | null {
    const found = requests.get(id)
    if (found === undefined || !isMember(user.id, found.programId)) return notFound(reply, `No request "${id}"`)
    return found
  }

  /** An assignee must belong to the request's program (null: nobody). */
  function assigneeOk (assignee: string | null | undefined, programId: string, reply: FastifyReply): boolean {
    if (assignee === null || assignee === undefined || isMember(assignee, programId)) return true
    reply.code(400).send({ error: 'Bad Request', message: `"${assignee}" is not a member of program "${programId}"` })
    return false
  }

  /**
   * Stores a changed copy: a payload already handed to `broadcast` is never changed afterwards
   * (the memory store keeps it as it was for catch-up).
   */
  function save (current: ProgramRequest, change: Partial<ProgramRequest>): ProgramRequest {
    const next: ProgramRequest = { ...current, ...change, updatedAt: Math.max(Date.now(), current.updatedAt + 1) }
    requests.set(next.id, next)
    return next
  }

  app.get('/api/programs', async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    return { programs: programsOf(user.id).map((id) => programs.get(id)).filter((p) => p !== undefined) }
  })

  // What a client fetches at start and again on `realtime:resync` for `program:<id>`.
  app.get<{ Params: ProgramParams }>('/api/programs/:programId/requests', {
    schema: { params: ProgramParamsSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const program = programFor(user, request.params.programId, reply)
    if (program === null) return reply
    return { program, requests: [...requests.values()].filter((r) => r.programId === program.id) }
  })

  app.post<{ Params: ProgramParams, Body: NewRequest }>('/api/programs/:programId/requests', {
    schema: { params: ProgramParamsSchema, body: NewRequestSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const program = programFor(user, request.params.programId, reply)
    if (program === null) return reply
    const assignee = request.body.assignee ?? null
    if (!assigneeOk(assignee, program.id, reply)) return reply
    const created: ProgramRequest = {
      id: randomUUID(),
      programId: program.id,
      title: request.body.title,
      status: 'open',
      assignee,
      comments: [],
      attachments: [],
      updatedAt: Date.now()
    }
    requests.set(created.id, created)
    await app.broadcast(scopeOf(program.id), 'request:created', { request: created }, { by: user.id })
    return reply.code(201).send(created)
  })

  app.get<{ Params: RequestParams }>('/api/requests/:id', {
    schema: { params: RequestParamsSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    return requestFor(user, request.params.id, reply) ?? reply
  })

  app.patch<{ Params: RequestParams, Body: RequestChange }>('/api/requests/:id', {
    schema: { params: RequestParamsSchema, body: RequestChangeSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const current = requestFor(user, request.params.id, reply)
    if (current === null) return reply
    const { title = current.title } = request.body
    if (title === current.title) return current // nothing changed, nothing to tell
    const updated = save(current, { title })
    await app.broadcast(scopeOf(updated.programId), 'request:updated', { request: updated }, { by: user.id })
    return updated
  })

  app.post<{ Params: RequestParams, Body: StatusChange }>('/api/requests/:id/status', {
    schema: { params: RequestParamsSchema, body: StatusChangeSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const current = requestFor(user, request.params.id, reply)
    if (current === null) return reply
    const to = request.body.status
    if (to === current.status) return current
    const updated = save(current, { status: to })
    await app.broadcast(scopeOf(updated.programId), 'request:status_changed', { id: updated.id, from: current.status, to }, { by: user.id })
    return updated
  })

  app.post<{ Params: RequestParams, Body: Assign }>('/api/requests/:id/assign', {
    schema: { params: RequestParamsSchema, body: AssignSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const current = requestFor(user, request.params.id, reply)
    if (current === null) return reply
    const { assignee } = request.body
    if (!assigneeOk(assignee, current.programId, reply)) return reply
    if (assignee === current.assignee) return current
    const updated = save(current, { assignee })
    await app.broadcast(scopeOf(updated.programId), 'request:assigned', {
      id: updated.id,
      assignee,
      previous: current.assignee
    }, { by: user.id })
    return updated
  })

  app.post<{ Params: RequestParams, Body: NewComment }>('/api/requests/:id/comments', {
    schema: { params: RequestParamsSchema, body: NewCommentSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const current = requestFor(user, request.params.id, reply)
    if (current === null) return reply
    const comment: Comment = { id: randomUUID(), author: user.id, body: request.body.body, at: Date.now() }
    save(current, { comments: [...current.comments, comment] })
    await app.broadcast(scopeOf(current.programId), 'comment:added', { requestId: current.id, comment }, { by: user.id })
    return reply.code(201).send(comment)
  })

  app.delete<{ Params: CommentParams }>('/api/requests/:id/comments/:commentId', {
    schema: { params: CommentParamsSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const current = requestFor(user, request.params.id, reply)
    if (current === null) return reply
    const { commentId } = request.params
    const comment = current.comments.find((c) => c.id === commentId)
    if (comment === undefined) return reply.code(404).send({ error: 'Not Found', message: `No comment "${commentId}"` })
    if (comment.author !== user.id) {
      return reply.code(403).send({ error: 'Forbidden', message: 'Only its author may delete a comment' })
    }
    save(current, { comments: current.comments.filter((c) => c.id !== commentId) })
    await app.broadcast(scopeOf(current.programId), 'comment:deleted', { requestId: current.id, commentId }, { by: user.id })
    return reply.code(204).send()
  })

  app.post<{ Params: RequestParams, Body: NewAttachment }>('/api/requests/:id/attachments', {
    schema: { params: RequestParamsSchema, body: NewAttachmentSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const current = requestFor(user, request.params.id, reply)
    if (current === null) return reply
    const { name, size, contentType } = request.body
    const attachment: Attachment = { id: randomUUID(), name, size, contentType, uploadedBy: user.id, at: Date.now() }
    save(current, { attachments: [...current.attachments, attachment] })
    await app.broadcast(scopeOf(current.programId), 'attachment:uploaded', { requestId: current.id, attachment }, { by: user.id })
    return reply.code(201).send(attachment)
  })

  app.delete<{ Params: AttachmentParams }>('/api/requests/:id/attachments/:attachmentId', {
    schema: { params: AttachmentParamsSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const current = requestFor(user, request.params.id, reply)
    if (current === null) return reply
    const { attachmentId } = request.params
    const attachment = current.attachments.find((a) => a.id === attachmentId)
    if (attachment === undefined) return reply.code(404).send({ error: 'Not Found', message: `No attachment "${attachmentId}"` })
    if (attachment.uploadedBy !== user.id) {
      return reply.code(403).send({ error: 'Forbidden', message: 'Only who uploaded it may delete an attachment' })
    }
    save(current, { attachments: current.attachments.filter((a) => a.id !== attachmentId) })
    await app.broadcast(scopeOf(current.programId), 'attachment:deleted', { requestId: current.id, attachmentId }, { by: user.id })
    return reply.code(204).send()
  })

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

  return app
}
