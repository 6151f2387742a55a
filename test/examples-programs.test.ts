// The request tracker example (examples/programs): every route broadcasts its change to the
// members of the request's program, and a member who was away catches up with `since`. Real
// socket.io-client clients against the real app on a real port, once with the memory store and
// once with the event log in the shared Redis.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { io as ioClient, type Socket } from 'socket.io-client'
import { flush, importExample, request, until, waitFor, type ReadyPayload, type Teardown } from './helper.js'
import { redisOptions } from './redis-helper.js'

type ProgramsExample = typeof import('../examples/programs/app.js')
const { buildProgramsApp } = await importExample<ProgramsExample>('examples/programs/app.ts')

interface Seen { event: string, payload: any, meta: any }
interface Position { seq: number, epoch: string }
/** The `t` a subtest callback gets. */
type TapTest = Parameters<Parameters<typeof t.test>[0]>[0]

const APP_EVENTS = /^(request|comment|attachment):/

async function start (t: Teardown, opts: Parameters<ProgramsExample['buildProgramsApp']>[0] = {}) {
  const app = await buildProgramsApp(opts)
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

  /** A connected socket of `user`, after `realtime:ready`, recording every app event it gets. */
  async function connect (user: string, since?: Record<string, Position>) {
    const socket: Socket = ioClient(url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      auth: since === undefined ? { token: await tokenOf(user) } : { token: await tokenOf(user), since }
    })
    t.teardown(() => { socket.disconnect() })
    const events: Seen[] = []
    socket.onAny((event: string, payload: unknown, meta: unknown) => {
      if (APP_EVENTS.test(event)) events.push({ event, payload, meta })
    })
    const [ready] = await waitFor<[ReadyPayload]>(socket, 'realtime:ready')
    return { socket, ready, events }
  }

  /** A real HTTP call as `user`. */
  async function call (user: string, method: string, path: string, body?: unknown) {
    const headers: Record<string, string> = { authorization: `Bearer ${await tokenOf(user)}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const res = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? null : JSON.stringify(body) })
    const text = await res.text()
    return { status: res.status, body: text === '' ? null : JSON.parse(text) }
  }

  return { app, url, connect, call }
}

type Started = Awaited<ReturnType<typeof start>>

/**
 * Every route once, as alice and bob on program apollo: each answer is checked, then every
 * member must have exactly the expected event (payload, meta.by, meta.scope, the next seq) and
 * the outsiders (carol on gemini, dave on nothing) nothing at all.
 */
async function everyRoute (t: TapTest, { connect, call }: Started): Promise<void> {
  const alice = await connect('alice')
  const bob = await connect('bob')
  const carol = await connect('carol')
  const dave = await connect('dave')
  const members = [alice, bob]
  let seq = alice.ready.positions['program:apollo']!.seq

  async function expectEvent (event: string, payload: unknown, by: string): Promise<void> {
    seq += 1
    await Promise.all([alice, bob, carol, dave].map(({ socket }) => flush(socket)))
    for (const [name, member] of [['alice', alice], ['bob', bob]] as const) {
      const last = member.events.at(-1)
      t.equal(last?.event, event, `${name} got ${event}`)
      t.same(last?.payload, payload, `${name}: the ${event} payload as broadcast`)
      t.match(last?.meta, { scope: 'program:apollo', by, seq, epoch: String, id: String, at: Number }, `${name}: ${event} meta`)
      t.notOk(last?.meta.replayed, 'live, not replayed')
    }
  }

  const created = await call('alice', 'POST', '/api/programs/apollo/requests', { title: 'Budget for Q3' })
  t.equal(created.status, 201)
  t.match(created.body, { programId: 'apollo', title: 'Budget for Q3', status: 'open', assignee: null, comments: [], attachments: [] })
  const id: string = created.body.id
  await expectEvent('request:created', { request: created.body }, 'alice')

  const renamed = await call('bob', 'PATCH', `/api/requests/${id}`, { title: 'Budget for Q3 and Q4' })
  t.equal(renamed.status, 200)
  t.equal(renamed.body.title, 'Budget for Q3 and Q4')
  await expectEvent('request:updated', { request: renamed.body }, 'bob')

  const started = await call('alice', 'POST', `/api/requests/${id}/status`, { status: 'in_progress' })
  t.equal(started.status, 200)
  t.equal(started.body.status, 'in_progress')
  await expectEvent('request:status_changed', { id, from: 'open', to: 'in_progress' }, 'alice')

  const assigned = await call('alice', 'POST', `/api/requests/${id}/assign`, { assignee: 'bob' })
  t.equal(assigned.status, 200)
  t.equal(assigned.body.assignee, 'bob')
  await expectEvent('request:assigned', { id, assignee: 'bob', previous: null }, 'alice')

  const comment = await call('bob', 'POST', `/api/requests/${id}/comments`, { body: 'Numbers attached tomorrow' })
  t.equal(comment.status, 201)
  t.match(comment.body, { id: String, author: 'bob', body: 'Numbers attached tomorrow', at: Number })
  await expectEvent('comment:added', { requestId: id, comment: comment.body }, 'bob')

  const uncommented = await call('bob', 'DELETE', `/api/requests/${id}/comments/${comment.body.id}`)
  t.equal(uncommented.status, 204)
  await expectEvent('comment:deleted', { requestId: id, commentId: comment.body.id }, 'bob')

  const file = { name: 'budget.xlsx', size: 48213, contentType: 'application/vnd.ms-excel' }
  const attachment = await call('alice', 'POST', `/api/requests/${id}/attachments`, file)
  t.equal(attachment.status, 201)
  t.match(attachment.body, { ...file, id: String, uploadedBy: 'alice', at: Number })
  await expectEvent('attachment:uploaded', { requestId: id, attachment: attachment.body }, 'alice')

  const detached = await call('alice', 'DELETE', `/api/requests/${id}/attachments/${attachment.body.id}`)
  t.equal(detached.status, 204)
  await expectEvent('attachment:deleted', { requestId: id, attachmentId: attachment.body.id }, 'alice')

  const all = ['request:created', 'request:updated', 'request:status_changed', 'request:assigned',
    'comment:added', 'comment:deleted', 'attachment:uploaded', 'attachment:deleted']
  for (const member of members) t.same(member.events.map((e) => e.event), all, 'each event once, in order')
  t.same(carol.events, [], 'carol (gemini only) got nothing')
  t.same(dave.events, [], 'dave (no program) got nothing')

  const final = await call('bob', 'GET', `/api/requests/${id}`)
  t.match(final.body, { title: 'Budget for Q3 and Q4', status: 'in_progress', assignee: 'bob', comments: [], attachments: [] })
}

/** bob drops off, alice changes the request twice, bob comes back with `since` and gets both. */
async function catchUp (t: TapTest, { connect, call }: Started): Promise<void> {
  const { body: req } = await call('alice', 'POST', '/api/programs/apollo/requests', { title: 'Catch me up' })
  const bob = await connect('bob')
  const alice = await connect('alice')
  await call('alice', 'POST', `/api/requests/${req.id}/status`, { status: 'blocked' })
  await flush(bob.socket)
  const last = bob.events.at(-1)!.meta
  t.equal(bob.events.length, 1)
  const since: Position = { seq: last.seq, epoch: last.epoch }

  const gone = waitFor(bob.socket, 'disconnect')
  bob.socket.disconnect()
  await gone
  const { body: comment } = await call('alice', 'POST', `/api/requests/${req.id}/comments`, { body: 'While you were away' })
  const { body: moved } = await call('alice', 'POST', `/api/requests/${req.id}/assign`, { assignee: 'alice' })
  t.equal(moved.assignee, 'alice')

  const back = await connect('bob', { 'program:apollo': since })
  // replays come before realtime:ready, so they are all there already
  t.same(back.events.map((e) => [e.event, e.payload]), [
    ['comment:added', { requestId: req.id, comment }],
    ['request:assigned', { id: req.id, assignee: 'alice', previous: null }]
  ], 'the two missed events, in order')
  t.same(back.events.map((e) => e.meta.seq), [since.seq + 1, since.seq + 2])
  t.ok(back.events.every((e) => e.meta.replayed === true && e.meta.by === 'alice' && e.meta.scope === 'program:apollo'), 'marked replayed, with by')
  t.same(back.ready.positions['program:apollo'], { seq: since.seq + 2, epoch: since.epoch }, 'ready says where bob now stands')

  // and live again afterwards, without a repeat of what was replayed
  await call('alice', 'POST', `/api/requests/${req.id}/status`, { status: 'done' })
  await Promise.all([back.socket, alice.socket].map(flush))
  t.same(back.events.map((e) => e.event), ['comment:added', 'request:assigned', 'request:status_changed'])
  t.equal(back.events.at(-1)?.meta.replayed, undefined)
  t.equal(back.events.at(-1)?.meta.seq, since.seq + 3)
}

t.test('sockets are joined to the programs of their user only', async (t) => {
  const { connect } = await start(t)
  const alice = await connect('alice')
  const bob = await connect('bob')
  const carol = await connect('carol')
  const dave = await connect('dave')
  t.same(alice.ready.scopes.sort(), ['program:apollo', 'program:gemini', 'user:alice'])
  t.same(bob.ready.scopes.sort(), ['program:apollo', 'user:bob'])
  t.same(carol.ready.scopes.sort(), ['program:gemini', 'user:carol'])
  t.same(dave.ready.scopes, ['user:dave'])
  const refused = await request(dave.socket, 'realtime:subscribe', { scope: 'program:apollo' })
  t.match(refused, { ok: false, error: { code: 'FORBIDDEN' } }, 'a non-member cannot subscribe to a program')
  const own = await request(carol.socket, 'realtime:subscribe', { scope: 'program:gemini' })
  t.match(own, { ok: true, scope: 'program:gemini' })
})

t.test('memory store: every route broadcasts to the program members only, with meta.by', async (t) => {
  const started = await start(t)
  await everyRoute(t, started)
  const health = await started.app.inject('/health/realtime')
  t.match(health.json(), { history: { store: 'memory', ok: true } })
})

t.test('memory store: a member who reconnects with since gets what it missed', async (t) => {
  await catchUp(t, await start(t))
})

t.test('Redis store: the same routes and the same catch-up, with the log in Redis', async (t) => {
  const redis = redisOptions(t)
  const started = await start(t, { redis })
  const health = await started.app.inject('/health/realtime')
  t.equal(health.statusCode, 200)
  t.match(health.json(), { history: { store: 'redis', ok: true } })
  await t.test('every route', async (t) => { await everyRoute(t, started) })
  await t.test('catch-up with since', async (t) => { await catchUp(t, started) })
})

t.test('Redis store: the log outlives the app, so a reconnect to a new instance catches up', async (t) => {
  const redis = redisOptions(t)
  const first = await start(t, { redis })
  const bob = await first.connect('bob')
  const { body: req } = await first.call('alice', 'POST', '/api/programs/apollo/requests', { title: 'Survive a restart' })
  await flush(bob.socket)
  const seen = bob.events.at(-1)!.meta
  await first.call('alice', 'POST', `/api/requests/${req.id}/status`, { status: 'done' })
  await first.app.close()

  const second = await start(t, { redis })
  const back = await second.connect('bob', { 'program:apollo': { seq: seen.seq, epoch: seen.epoch } })
  t.same(back.events.map((e) => [e.event, e.payload, e.meta.replayed]), [
    ['request:status_changed', { id: req.id, from: 'open', to: 'done' }, true]
  ])
})

t.test('refused requests are not broadcast', async (t) => {
  const { connect, call, url } = await start(t)
  const bob = await connect('bob')
  const { body: req } = await call('alice', 'POST', '/api/programs/apollo/requests', { title: 'Guarded' })
  const { body: comment } = await call('alice', 'POST', `/api/requests/${req.id}/comments`, { body: 'Mine' })
  const { body: file } = await call('alice', 'POST', `/api/requests/${req.id}/attachments`, { name: 'a.pdf', size: 10, contentType: 'application/pdf' })
  await flush(bob.socket)
  const before = bob.events.length
  t.equal(before, 3)

  const refused: Array<[string, string, string, unknown, number]> = [
    ['carol', 'POST', '/api/programs/apollo/requests', { title: 'Not my program' }, 404],
    ['dave', 'GET', '/api/programs/apollo/requests', undefined, 404],
    ['carol', 'PATCH', `/api/requests/${req.id}`, { title: 'Hijack' }, 404],
    ['carol', 'POST', `/api/requests/${req.id}/status`, { status: 'done' }, 404],
    ['carol', 'POST', `/api/requests/${req.id}/comments`, { body: 'Hi' }, 404],
    ['bob', 'DELETE', `/api/requests/${req.id}/comments/${comment.id}`, undefined, 403],
    ['bob', 'DELETE', `/api/requests/${req.id}/attachments/${file.id}`, undefined, 403],
    ['bob', 'DELETE', `/api/requests/${req.id}/comments/no-such-comment`, undefined, 404],
    ['alice', 'POST', `/api/requests/${req.id}/assign`, { assignee: 'carol' }, 400],
    ['alice', 'POST', '/api/programs/apollo/requests', { title: 'x', assignee: 'dave' }, 400],
    ['alice', 'POST', '/api/programs/apollo/requests', { title: '   ' }, 400],
    ['alice', 'PATCH', `/api/requests/${req.id}`, {}, 400],
    ['alice', 'POST', `/api/requests/${req.id}/status`, { status: 'archived' }, 400],
    ['alice', 'POST', `/api/requests/${req.id}/attachments`, { name: 'a.pdf', size: '10', contentType: 'application/pdf' }, 400],
    ['alice', 'POST', `/api/requests/${req.id}/attachments`, { name: 'a.pdf', size: 10, contentType: 'pdf' }, 400],
    ['alice', 'POST', `/api/requests/${req.id}/attachments`, { name: 'a.pdf', size: 10, contentType: 'application/pdf', data: 'AAAA' }, 400]
  ]
  for (const [user, method, path, body, status] of refused) {
    const res = await call(user, method, path, body)
    t.equal(res.status, status, `${user} ${method} ${path} ${JSON.stringify(body) ?? ''} → ${status}`)
  }
  // no-ops answer 200 and tell nobody
  t.equal((await call('alice', 'PATCH', `/api/requests/${req.id}`, { title: 'Guarded' })).status, 200)
  t.equal((await call('alice', 'POST', `/api/requests/${req.id}/status`, { status: 'open' })).status, 200)
  t.equal((await call('alice', 'POST', `/api/requests/${req.id}/assign`, { assignee: null })).status, 200)
  t.equal((await fetch(`${url}/api/programs`)).status, 401)

  await flush(bob.socket)
  t.equal(bob.events.length, before, 'nothing was broadcast')
  t.match((await call('bob', 'GET', `/api/requests/${req.id}`)).body, {
    title: 'Guarded', status: 'open', assignee: null, comments: [comment], attachments: [file]
  })
})

t.test('GET /api/programs lists the programs of the signed-in user', async (t) => {
  const { call } = await start(t)
  t.same((await call('alice', 'GET', '/api/programs')).body, { programs: [{ id: 'apollo', name: 'Apollo' }, { id: 'gemini', name: 'Gemini' }] })
  t.same((await call('dave', 'GET', '/api/programs')).body, { programs: [] })
})

t.test('client.ts runs as a script: live events, Enter to go offline, changes meanwhile replayed on the way back', async (t) => {
  const { url, call } = await start(t)
  const tsx = fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url))
  const script = fileURLToPath(new URL('../examples/programs/client.ts', import.meta.url))
  const child = spawn(tsx, [script, 'bob', url], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => { if (child.exitCode === null) child.kill() })
  const lines: string[] = []
  createInterface({ input: child.stdout! }).on('line', (line) => { lines.push(line) })
  const printed = async (pattern: RegExp, what: string): Promise<void> => {
    await until(() => lines.some((line) => pattern.test(line)), `${what}; printed so far: ${JSON.stringify(lines)}`, 30_000)
  }

  await printed(/^ready as bob in user:bob, program:apollo/, 'ready')
  const { body: live } = await call('alice', 'POST', '/api/programs/apollo/requests', { title: 'Seen live' })
  await printed(/^request:created by alice: .*Seen live/, 'the live event')

  child.stdin!.write('\n')
  await printed(/^offline$/, 'offline after Enter')
  await call('alice', 'POST', `/api/requests/${live.id}/status`, { status: 'in_progress' })
  await call('alice', 'POST', '/api/programs/apollo/requests', { title: 'Made while away' })
  t.equal(child.exitCode, null, 'the script is still running while offline')

  child.stdin!.write('\n')
  await printed(/^request:created by alice \(replayed\): .*Made while away/, 'the second missed event, replayed')
  const back = lines.slice(lines.indexOf('offline'))
  const changed = back.findIndex((line) => /^request:status_changed by alice \(replayed\)/.test(line))
  const created = back.findIndex((line) => /^request:created by alice \(replayed\): .*Made while away/.test(line))
  const ready = back.findIndex((line) => line.startsWith('ready as bob'))
  t.ok(changed > 0 && changed < created, 'the missed events come back in order')
  t.ok(created < ready, 'before ready')

  child.stdin!.end()
  const [code] = await once(child, 'exit')
  t.equal(code, 0, 'the end of its input quits it')
})
