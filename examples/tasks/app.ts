// A task board that broadcasts every CRUD change to the people on the board.
//
// The routes are ordinary Fastify routes; after each change they call `app.broadcast` on
// `board:<id>`, and fastify-realtime does the rest: it authenticates every socket with the same
// JWT as the routes, joins it to the boards `rooms(user)` returns, checks each payload against
// its TypeBox schema, logs it for catch-up and fans it out.
import { randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import fastifyJwt from '@fastify/jwt'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import realtime from 'fastify-realtime'
import {
  BoardParamsSchema,
  NewTaskSchema,
  TaskChangeSchema,
  TaskParamsSchema,
  events,
  type BoardParams,
  type NewTask,
  type Task,
  type TaskChange,
  type TaskParams
} from './schemas.js'

export interface DemoUser {
  id: string
  name: string
}

interface Board {
  id: string
  name: string
  members: Set<string>
}

// Demo data, in memory. A real app keeps this in its database.
const USERS: ReadonlyMap<string, DemoUser> = new Map([
  ['alice', { id: 'alice', name: 'Alice' }],
  ['bob', { id: 'bob', name: 'Bob' }],
  ['carol', { id: 'carol', name: 'Carol' }] // on no board: sees nothing
])

// Demo default only: set JWT_SECRET for anything but a local try-out.
const DEMO_SECRET = 'fastify-realtime-tasks-demo-secret-change-me'

const scopeOf = (boardId: string): string => `board:${boardId}`

export interface TasksAppOptions {
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

export async function buildTasksApp (opts: TasksAppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: opts.logger ?? false,
    // JSON bodies are taken as sent: `{ "title": 42 }` is a 400, not the title "42"
    ajv: { customOptions: { coerceTypes: false } }
  })

  const boards = new Map<string, Board>([
    ['demo', { id: 'demo', name: 'Demo board', members: new Set(['alice', 'bob']) }]
  ])
  const tasks = new Map<string, Task>()
  const seed: Array<Pick<Task, 'title' | 'status'>> = [
    { title: 'Write the README', status: 'done' },
    { title: 'Try the demo in two tabs', status: 'doing' },
    { title: 'Ship it', status: 'todo' }
  ]
  for (const { title, status } of seed) {
    const task: Task = { id: randomUUID(), title, status, boardId: 'demo', updatedAt: Date.now() }
    tasks.set(task.id, task)
  }

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
    // The boards a user belongs to, asked on connect and on every subscribe.
    rooms: (user) => [...boards.values()]
      .filter((board) => board.members.has(String(user.id)))
      .map((board) => scopeOf(board.id)),
    events
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

  function boardFor (user: DemoUser, boardId: string, reply: FastifyReply): Board | null {
    const board = boards.get(boardId)
    if (board === undefined || !board.members.has(user.id)) {
      // the same answer for "no such board" and "not yours": ids are not a way in
      reply.code(404).send({ error: 'Not Found', message: `No board "${boardId}"` })
      return null
    }
    return board
  }

  function taskFor (user: DemoUser, id: string, reply: FastifyReply): Task | null {
    const task = tasks.get(id)
    if (task === undefined || boards.get(task.boardId)?.members.has(user.id) !== true) {
      reply.code(404).send({ error: 'Not Found', message: `No task "${id}"` })
      return null
    }
    return task
  }

  /**
   * The socket that made the change (from `x-socket-id`): it already shows the change, so it is
   * skipped. Only a socket of the same user is honoured, so nobody can mute someone else's tab.
   * (With several nodes the socket may live elsewhere; it then gets its echo, which is harmless.)
   */
  function exceptOf (request: FastifyRequest, user: DemoUser): string | undefined {
    const id = request.headers['x-socket-id']
    if (typeof id !== 'string' || !/^[\w-]{1,64}$/.test(id)) return undefined
    const socket = app.io.of('/').sockets.get(id)
    return socket !== undefined && socket.data.userId === user.id ? id : undefined
  }

  app.get<{ Params: BoardParams }>('/api/boards/:boardId/tasks', {
    schema: { params: BoardParamsSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const board = boardFor(user, request.params.boardId, reply)
    if (board === null) return reply
    return { board: { id: board.id, name: board.name }, tasks: [...tasks.values()].filter((task) => task.boardId === board.id) }
  })

  app.post<{ Params: BoardParams, Body: NewTask }>('/api/boards/:boardId/tasks', {
    schema: { params: BoardParamsSchema, body: NewTaskSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const board = boardFor(user, request.params.boardId, reply)
    if (board === null) return reply
    const task: Task = {
      id: randomUUID(),
      title: request.body.title,
      status: request.body.status ?? 'todo',
      boardId: board.id,
      updatedAt: Date.now()
    }
    tasks.set(task.id, task)
    await app.broadcast(scopeOf(board.id), 'task:created', { task }, { by: user.id, except: exceptOf(request, user) })
    return reply.code(201).send(task)
  })

  app.patch<{ Params: TaskParams, Body: TaskChange }>('/api/tasks/:id', {
    schema: { params: TaskParamsSchema, body: TaskChangeSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const current = taskFor(user, request.params.id, reply)
    if (current === null) return reply
    const { title = current.title, status = current.status } = request.body
    if (title === current.title && status === current.status) return current
    // a new object: a payload already handed to broadcast is never changed afterwards
    const task: Task = { ...current, title, status, updatedAt: Math.max(Date.now(), current.updatedAt + 1) }
    tasks.set(task.id, task)
    const opts = { by: user.id, except: exceptOf(request, user) }
    if (status !== current.status) {
      await app.broadcast(scopeOf(task.boardId), 'task:moved', { task, from: current.status }, opts)
    } else {
      await app.broadcast(scopeOf(task.boardId), 'task:updated', { task }, opts)
    }
    return task
  })

  app.delete<{ Params: TaskParams }>('/api/tasks/:id', {
    schema: { params: TaskParamsSchema }
  }, async (request, reply) => {
    const user = await authenticate(request, reply)
    if (user === null) return reply
    const task = taskFor(user, request.params.id, reply)
    if (task === null) return reply
    tasks.delete(task.id)
    await app.broadcast(scopeOf(task.boardId), 'task:deleted', { id: task.id, boardId: task.boardId }, {
      by: user.id,
      except: exceptOf(request, user)
    })
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

  const page = await readFile(new URL('./public/index.html', import.meta.url), 'utf8')
  app.get('/', async (_request, reply) => {
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(page)
  })

  const clientScript = opts.clientScript ?? BUILT_CLIENT
  const script = await readFile(clientScript, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err
    throw new Error(`The page needs the browser client at ${String(clientScript)}: run \`npm run build\` first`)
  })
  app.get('/fastify-realtime.js', async (_request, reply) => {
    return reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(script)
  })

  return app
}
