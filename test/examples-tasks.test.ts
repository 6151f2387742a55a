// The task board example (examples/tasks): every CRUD route broadcasts its change to the board,
// proven with real socket.io-client clients against the real app on a real port.
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { io as ioClient, type Socket } from 'socket.io-client'
import { flush, importExample, waitFor, type ReadyPayload, type Teardown } from './helper.js'
import { buildBrowserBundle } from './client-helper.js'

type TasksExample = typeof import('../examples/tasks/app.js')
const { buildTasksApp } = await importExample<TasksExample>('examples/tasks/app.ts')
const clientScript = await buildBrowserBundle(t)

interface Task { id: string, title: string, status: string, boardId: string, updatedAt: number }

async function start (t: Teardown) {
  const app = await buildTasksApp({ clientScript })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

  const tokens = new Map<string, string>()
  async function tokenOf (user: string): Promise<string> {
    let token = tokens.get(user)
    if (token === undefined) {
      const res = await fetch(`${url}/api/demo-token?user=${user}`)
      token = ((await res.json()) as { token: string }).token
      tokens.set(user, token)
    }
    return token
  }

  /** A connected socket of `user`, after `realtime:ready`, recording every event it gets. */
  async function connect (user: string) {
    const socket: Socket = ioClient(url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      auth: { token: await tokenOf(user) }
    })
    t.teardown(() => { socket.disconnect() })
    const events: Array<{ event: string, payload: any, meta: any }> = []
    socket.onAny((event: string, payload: unknown, meta: unknown) => { events.push({ event, payload, meta }) })
    const [ready] = await waitFor<[ReadyPayload]>(socket, 'realtime:ready')
    const taskEvents = () => events.filter((e) => e.event.startsWith('task:'))
    const skips = () => events.filter((e) => e.event === 'realtime:skip').map((e) => e.payload)
    return { socket, ready, taskEvents, skips }
  }

  /** A real HTTP call as `user`; `socket` is sent as `x-socket-id`. */
  async function call (user: string, method: string, path: string, body?: unknown, socket?: Socket) {
    const headers: Record<string, string> = { authorization: `Bearer ${await tokenOf(user)}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    if (socket !== undefined) headers['x-socket-id'] = socket.id!
    const res = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? null : JSON.stringify(body) })
    const text = await res.text()
    return { status: res.status, body: text === '' ? null : JSON.parse(text) }
  }

  return { app, url, connect, call, tokenOf }
}

t.test('the demo token is a 1 h JWT for a known demo user only', async (t) => {
  const { url, tokenOf } = await start(t)
  const claims = JSON.parse(Buffer.from((await tokenOf('alice')).split('.')[1]!, 'base64url').toString())
  t.equal(claims.sub, 'alice')
  t.equal(claims.exp - claims.iat, 3600)
  const res = await fetch(`${url}/api/demo-token?user=mallory`)
  t.equal(res.status, 404)
})

t.test('sockets are joined to the boards of their user only', async (t) => {
  const { connect } = await start(t)
  const alice = await connect('alice')
  const bob = await connect('bob')
  const carol = await connect('carol')
  t.same(alice.ready.scopes.sort(), ['board:demo', 'user:alice'])
  t.same(bob.ready.scopes.sort(), ['board:demo', 'user:bob'])
  t.same(carol.ready.scopes, ['user:carol'])
})

t.test('a created task reaches the board, not the tab that made it, not outsiders', async (t) => {
  const { connect, call } = await start(t)
  const alice = await connect('alice')
  const aliceOtherTab = await connect('alice')
  const bob = await connect('bob')
  const carol = await connect('carol')

  const res = await call('alice', 'POST', '/api/boards/demo/tasks', { title: 'Write tests' }, alice.socket)
  t.equal(res.status, 201)
  t.match(res.body, { title: 'Write tests', status: 'todo', boardId: 'demo' })

  // the route answered after broadcasting: one round trip each and everything sent has arrived
  await Promise.all([alice, aliceOtherTab, bob, carol].map(({ socket }) => flush(socket)))
  const [created] = bob.taskEvents()
  t.equal(created?.event, 'task:created')
  t.same(created?.payload, { task: res.body })
  t.match(created?.meta, { scope: 'board:demo', by: 'alice', seq: Number })
  t.same(alice.taskEvents(), [], 'no echo to the socket named in x-socket-id')
  t.same(alice.skips(), [{ scope: 'board:demo', seq: created?.meta.seq, epoch: created?.meta.epoch }], 'it is told the seq moved on')
  t.same(aliceOtherTab.taskEvents().map((e) => e.event), ['task:created'], "alice's other tab is updated")
  t.same(carol.taskEvents(), [], 'carol is on no board and hears nothing')

  const list = await call('alice', 'GET', '/api/boards/demo/tasks')
  t.ok(list.body.tasks.some((task: Task) => task.id === res.body.id), 'the task is in the board')
})

t.test('moving, renaming and deleting are broadcast as task:moved, task:updated, task:deleted', async (t) => {
  const { connect, call } = await start(t)
  const alice = await connect('alice')
  const bob = await connect('bob')
  const carol = await connect('carol')
  const { body: task } = await call('alice', 'POST', '/api/boards/demo/tasks', { title: 'Review PR' }, alice.socket)

  const moved = await call('alice', 'PATCH', `/api/tasks/${task.id}`, { status: 'doing' }, alice.socket)
  t.equal(moved.status, 200)
  t.match(moved.body, { id: task.id, status: 'doing', title: 'Review PR' })
  t.ok(moved.body.updatedAt > task.updatedAt, 'updatedAt grows')
  await flush(bob.socket)
  t.match(bob.taskEvents().at(-1), { event: 'task:moved', payload: { task: moved.body, from: 'todo' }, meta: { by: 'alice' } })
  t.same(bob.taskEvents().at(-1)?.payload, { task: moved.body, from: 'todo' })

  const renamed = await call('bob', 'PATCH', `/api/tasks/${task.id}`, { title: 'Review the PR' }, bob.socket)
  t.equal(renamed.status, 200)
  await flush(alice.socket)
  t.match(alice.taskEvents().at(-1), { event: 'task:updated', meta: { by: 'bob' } })
  t.same(alice.taskEvents().at(-1)?.payload, { task: renamed.body })
  t.match(renamed.body, { status: 'doing', title: 'Review the PR' })

  const deleted = await call('alice', 'DELETE', `/api/tasks/${task.id}`, undefined, alice.socket)
  t.equal(deleted.status, 204)
  await flush(bob.socket)
  t.match(bob.taskEvents().at(-1), { event: 'task:deleted', meta: { by: 'alice' } })
  t.same(bob.taskEvents().at(-1)?.payload, { id: task.id, boardId: 'demo' })
  t.equal((await call('alice', 'GET', '/api/boards/demo/tasks')).body.tasks.some((x: Task) => x.id === task.id), false)

  await Promise.all([alice, bob, carol].map(({ socket }) => flush(socket)))
  t.same(bob.taskEvents().map((e) => e.event), ['task:created', 'task:moved', 'task:deleted'], 'bob: all but his own rename')
  t.same(alice.taskEvents().map((e) => e.event), ['task:updated'], "alice: only bob's rename")
  t.same(bob.taskEvents().map((e) => e.meta.seq), [1, 2, 4], 'one log for the board, in order')
  t.same(carol.taskEvents(), [])
})

t.test('a PATCH that changes nothing broadcasts nothing', async (t) => {
  const { connect, call } = await start(t)
  const bob = await connect('bob')
  const { body: task } = await call('alice', 'POST', '/api/boards/demo/tasks', { title: 'Same' })
  const res = await call('alice', 'PATCH', `/api/tasks/${task.id}`, { title: 'Same', status: 'todo' })
  t.equal(res.status, 200)
  t.same(res.body, task)
  await flush(bob.socket)
  t.same(bob.taskEvents().map((e) => e.event), ['task:created'])
})

t.test('invalid bodies are refused with 400 and nothing is broadcast', async (t) => {
  const { connect, call } = await start(t)
  const bob = await connect('bob')
  const { body: task } = await call('alice', 'POST', '/api/boards/demo/tasks', { title: 'Valid' })
  await flush(bob.socket)
  const before = bob.taskEvents().length
  t.equal(before, 1)

  const bad: Array<[string, string, unknown]> = [
    ['POST', '/api/boards/demo/tasks', {}],
    ['POST', '/api/boards/demo/tasks', { title: '' }],
    ['POST', '/api/boards/demo/tasks', { title: '   ' }],
    ['POST', '/api/boards/demo/tasks', { title: 'x'.repeat(201) }],
    ['POST', '/api/boards/demo/tasks', { title: 'ok', status: 'archived' }],
    ['PATCH', `/api/tasks/${task.id}`, {}],
    ['PATCH', `/api/tasks/${task.id}`, { status: 'later' }],
    ['PATCH', `/api/tasks/${task.id}`, { title: 42 }]
  ]
  for (const [method, path, body] of bad) {
    const res = await call('alice', method, path, body)
    t.equal(res.status, 400, `${method} ${JSON.stringify(body)} → 400`)
  }
  await flush(bob.socket)
  t.equal(bob.taskEvents().length, before, 'no event after the refused requests')
  t.match((await call('alice', 'GET', '/api/boards/demo/tasks')).body.tasks.find((x: Task) => x.id === task.id), { title: 'Valid', status: 'todo' })
})

t.test('routes need a member of the board; x-socket-id cannot mute another user', async (t) => {
  const { url, connect, call } = await start(t)
  const alice = await connect('alice')
  const bob = await connect('bob')

  const anonymous = await fetch(`${url}/api/boards/demo/tasks`)
  t.equal(anonymous.status, 401)
  const forged = await fetch(`${url}/api/boards/demo/tasks`, { headers: { authorization: 'Bearer not.a.token' } })
  t.equal(forged.status, 401)

  t.equal((await call('carol', 'GET', '/api/boards/demo/tasks')).status, 404)
  t.equal((await call('carol', 'POST', '/api/boards/demo/tasks', { title: 'Sneaky' })).status, 404)
  const { body: task } = await call('alice', 'POST', '/api/boards/demo/tasks', { title: 'Mine' })
  t.equal((await call('carol', 'PATCH', `/api/tasks/${task.id}`, { status: 'done' })).status, 404)
  t.equal((await call('carol', 'DELETE', `/api/tasks/${task.id}`)).status, 404)

  // bob names alice's socket: the change still reaches alice
  await call('bob', 'PATCH', `/api/tasks/${task.id}`, { status: 'done' }, alice.socket)
  await Promise.all([alice, bob].map(({ socket }) => flush(socket)))
  t.match(alice.taskEvents().at(-1), { event: 'task:moved', payload: { task: { status: 'done' } }, meta: { by: 'bob' } })
  t.same(bob.taskEvents().map((e) => e.event), ['task:created', 'task:moved'], "carol's attempts broadcast nothing")
})

t.test('the page, the fastify-realtime browser client and the health route are served', async (t) => {
  const { url, connect } = await start(t)
  await connect('alice')
  const page = await fetch(url)
  t.equal(page.status, 200)
  t.match(page.headers.get('content-type'), /^text\/html/)
  const html = await page.text()
  t.match(html, 'id="state"')
  t.match(html, '<script src="/fastify-realtime.js"></script>')
  t.match(html, 'FastifyRealtime.connect(')
  t.notMatch(html, '/socket.io/socket.io.js', 'no raw socket.io-client on the page')
  const script = await fetch(`${url}/fastify-realtime.js`)
  t.equal(script.status, 200)
  t.match(script.headers.get('content-type'), /^text\/javascript/)
  t.match(await script.text(), /var FastifyRealtime=/, 'the global bundle from the build options')
  const health = await fetch(`${url}/health/realtime`)
  t.equal(health.status, 200)
  t.same(((await health.json()) as { websocket: unknown }).websocket, { enabled: true, connections: 1 })
})

t.test('without a built client the app says what to do', async (t) => {
  await t.rejects(buildTasksApp({ clientScript: new URL('file:///nonexistent/browser.global.js') }), /npm run build/)
})
