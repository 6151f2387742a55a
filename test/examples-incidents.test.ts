// The incident dashboard example (examples/incidents) run as two nodes: two instances of the
// real app in this process, on their own ports, sharing one Redis key prefix (data, fan-out and
// event log), with real socket.io-client clients and real HTTP calls.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type AddressInfo } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { io as ioClient, type Socket } from 'socket.io-client'
import { flush, importExample, request, until, waitFor, type ReadyPayload, type Teardown } from './helper.js'
import { Redis } from 'ioredis'
import { redisOptions } from './redis-helper.js'

type IncidentsExample = typeof import('../examples/incidents/app.js')
const { buildIncidentsApp } = await importExample<IncidentsExample>('examples/incidents/app.ts')

interface Seen { event: string, payload: any, meta: any }
interface Position { seq: number, epoch: string }

/** One node: the app listening on its own port, and clients and HTTP calls against it. */
async function startNode (t: Teardown, redis: { host: string, port: number, keyPrefix: string }) {
  const app = await buildIncidentsApp({ redis: { ...redis } })
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`

  async function tokenOf (user: string): Promise<string> {
    const res = await fetch(`${url}/api/demo-token?user=${user}`)
    return ((await res.json()) as { token: string }).token
  }

  /** A socket of `user` on this node after `realtime:ready`, recording every incident event. */
  async function connect (user: string, since?: Record<string, Position>) {
    const token = await tokenOf(user)
    const socket: Socket = ioClient(url, {
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      auth: since === undefined ? { token } : { token, since }
    })
    t.teardown(() => { socket.disconnect() })
    const events: Seen[] = []
    const waiting: Array<{ count: number, resolve: () => void }> = []
    socket.onAny((event: string, payload: unknown, meta: unknown) => {
      if (!event.startsWith('incident:')) return
      events.push({ event, payload, meta })
      for (const w of waiting.filter((w) => events.length >= w.count)) {
        waiting.splice(waiting.indexOf(w), 1)
        w.resolve()
      }
    })
    /** Resolves once `count` incident events have arrived in all. */
    const received = async (count: number): Promise<Seen[]> => {
      if (events.length < count) await new Promise<void>((resolve) => { waiting.push({ count, resolve }) })
      return events
    }
    const [ready] = await waitFor<[ReadyPayload]>(socket, 'realtime:ready')
    return { user, socket, ready, events, received }
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

/** Two nodes on one Redis prefix, as two processes behind a load balancer would be. */
async function twoNodes (t: Teardown) {
  const redis = redisOptions(t)
  const node1 = await startNode(t, redis)
  const node2 = await startNode(t, redis)
  return { node1, node2 }
}

t.test('a team member on node 1 receives what is done on node 2, outsiders nothing', async (t) => {
  const { node1, node2 } = await twoNodes(t)
  const bob = await node1.connect('bob')
  const carol = await node1.connect('carol')
  const dave = await node1.connect('dave')
  t.same(bob.ready.scopes.sort(), ['team:payments', 'user:bob'])
  t.same(carol.ready.scopes.sort(), ['team:search', 'user:carol'])
  t.same(dave.ready.scopes, ['user:dave'])

  const created = await node2.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Card payments failing', severity: 'sev1' })
  t.equal(created.status, 201)
  t.match(created.body, { teamId: 'payments', status: 'open', severity: 'sev1', version: 1, notes: [] })
  const id: string = created.body.id
  const acked = await node2.call('bob', 'POST', `/api/incidents/${id}/acknowledge`)
  t.equal(acked.status, 200)
  t.match(acked.body, { status: 'acknowledged', acknowledgedBy: 'bob', version: 2 })
  const note = await node2.call('bob', 'POST', `/api/incidents/${id}/notes`, { text: 'Rolled back the deploy' })
  t.equal(note.status, 201)
  const resolved = await node2.call('bob', 'POST', `/api/incidents/${id}/resolve`)
  t.equal(resolved.status, 200)
  t.match(resolved.body, { status: 'resolved', resolvedBy: 'bob', version: 4 })

  const got = await bob.received(4)
  t.same(got.map((e) => [e.event, e.payload]), [
    ['incident:created', { incident: created.body }],
    ['incident:acknowledged', { incident: acked.body }],
    ['incident:note_added', { incidentId: id, teamId: 'payments', note: note.body, version: 3 }],
    ['incident:resolved', { incident: resolved.body }]
  ], 'every change, as broadcast, in order')
  t.ok(got.every((e) => e.meta.scope === 'team:payments' && e.meta.by === 'bob'), 'on team:payments, by bob')
  t.same(got.map((e) => e.meta.seq), [1, 2, 3, 4], 'one log for the team, shared by the nodes')

  // bob's events came through node 1 already: a round trip each shows the others got nothing
  await Promise.all([carol.socket, dave.socket].map(flush))
  t.same(carol.events, [], 'carol (search) got nothing')
  t.same(dave.events, [], 'dave (no team) got nothing')

  const health = await node1.app.inject('/health/realtime')
  t.match(health.json(), { history: { store: 'redis', ok: true }, cluster: { nodes: 2 } })
  const metrics = await node1.app.inject('/metrics')
  t.equal(metrics.statusCode, 200)
  t.match(metrics.body, /^realtime_connections \d+$/m, 'GET /metrics shows the plugin\'s metrics')
  t.match(metrics.body, /^realtime_handshakes_total\{result="ok"\} [1-9]/m, 'handshakes on this node are counted')
})

t.test('the data is shared: what one node changed, the other refuses to change again', async (t) => {
  const { node1, node2 } = await twoNodes(t)
  const bob = await node1.connect('bob')
  const { body: incident } = await node1.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Slow refunds', severity: 'sev3' })
  t.equal((await node2.call('bob', 'GET', `/api/incidents/${incident.id}`)).body.title, 'Slow refunds')
  t.equal((await node2.call('bob', 'POST', `/api/incidents/${incident.id}/acknowledge`)).status, 200)
  t.equal((await node1.call('bob', 'POST', `/api/incidents/${incident.id}/acknowledge`)).status, 409, 'acknowledged already')
  t.equal((await node1.call('bob', 'POST', `/api/incidents/${incident.id}/resolve`)).status, 200)
  t.equal((await node2.call('bob', 'POST', `/api/incidents/${incident.id}/resolve`)).status, 409, 'resolved already')
  t.equal((await node2.call('bob', 'POST', `/api/incidents/${incident.id}/reassign`, { teamId: 'payments' })).status, 409, 'with that team already')
  t.equal((await node2.call('bob', 'POST', `/api/incidents/${incident.id}/reassign`, { teamId: 'nowhere' })).status, 400)
  t.equal((await node2.call('carol', 'POST', `/api/incidents/${incident.id}/acknowledge`)).status, 404, 'not her team')
  t.equal((await node2.call('carol', 'POST', '/api/teams/payments/incidents', { title: 'x', severity: 'sev3' })).status, 404)
  t.equal((await node2.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'x', severity: 'sev0' })).status, 400)
  t.equal((await node2.call('bob', 'POST', `/api/incidents/${incident.id}/notes`, { text: 'hi', extra: 1 })).status, 400)
  await flush(bob.socket)
  t.same(bob.events.map((e) => e.event), ['incident:created', 'incident:acknowledged', 'incident:resolved'], 'refused changes broadcast nothing')
  t.same(bob.events.map((e) => e.payload.incident.version), [1, 2, 3])
})

t.test('an admin subscribed to incidents:all gets every team; anyone else is FORBIDDEN', async (t) => {
  const { node1, node2 } = await twoNodes(t)
  const alice = await node1.connect('alice')
  const bob = await node1.connect('bob')
  const dave = await node2.connect('dave')
  t.same(alice.ready.scopes, ['user:alice'], 'incidents:all is asked for, not joined at connect')

  const ok = await request(alice.socket, 'realtime:subscribe', { scope: 'incidents:all' })
  t.match(ok, { ok: true, scope: 'incidents:all', position: { seq: 0 } })
  for (const client of [bob, dave]) {
    const refused = await request(client.socket, 'realtime:subscribe', { scope: 'incidents:all' })
    t.match(refused, { ok: false, error: { code: 'FORBIDDEN' } }, `${client.user} may not watch all teams`)
  }
  t.match(await request(dave.socket, 'realtime:subscribe', { scope: 'team:payments' }), { ok: false, error: { code: 'FORBIDDEN' } })

  const payments = await node2.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Checkout down', severity: 'sev1' })
  const search = await node2.call('carol', 'POST', '/api/teams/search/incidents', { title: 'Index lagging', severity: 'sev2' })
  const acked = await node1.call('carol', 'POST', `/api/incidents/${search.body.id}/acknowledge`)
  const byAdmin = await node2.call('alice', 'POST', `/api/incidents/${payments.body.id}/notes`, { text: 'Comms sent' })
  t.equal(byAdmin.status, 201, 'an admin may act on any team')

  // from two nodes: the log's order is seq (arrival may differ across nodes; the bundled client reorders)
  const all = [...await alice.received(4)].sort((a, b) => a.meta.seq - b.meta.seq)
  t.same(all.map((e) => [e.event, e.meta.scope, e.meta.by]), [
    ['incident:created', 'incidents:all', 'bob'],
    ['incident:created', 'incidents:all', 'carol'],
    ['incident:acknowledged', 'incidents:all', 'carol'],
    ['incident:note_added', 'incidents:all', 'alice']
  ])
  t.same(all.map((e) => e.meta.seq), [1, 2, 3, 4], 'incidents:all has its own log')
  t.same(all[2]?.payload, { incident: acked.body })

  await bob.received(2)
  await Promise.all([bob.socket, dave.socket].map(flush))
  t.same(bob.events.map((e) => [e.event, e.meta.scope]), [
    ['incident:created', 'team:payments'],
    ['incident:note_added', 'team:payments']
  ], 'bob: his team only, not incidents:all')
  t.same(dave.events, [], 'dave: refused, so nothing')

  const listed = await node1.call('alice', 'GET', '/api/incidents')
  t.equal(listed.body.incidents.length, 2, 'the admin lists every team')
  t.same((await node1.call('bob', 'GET', '/api/incidents')).body.incidents.map((i: { id: string }) => i.id), [payments.body.id])
})

t.test('a reassignment reaches both teams and incidents:all; afterwards only the new team', async (t) => {
  const { node1, node2 } = await twoNodes(t)
  const alice = await node1.connect('alice')
  t.match(await request(alice.socket, 'realtime:subscribe', { scope: 'incidents:all' }), { ok: true })
  const bob = await node1.connect('bob')
  const carol = await node2.connect('carol')

  const { body: incident } = await node1.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Search results in checkout', severity: 'sev2' })
  const moved = await node2.call('bob', 'POST', `/api/incidents/${incident.id}/reassign`, { teamId: 'search' })
  t.equal(moved.status, 200)
  t.match(moved.body, { id: incident.id, teamId: 'search', version: 2 })

  const expected = { incident: moved.body, from: 'payments', to: 'search' }
  const reassigned = (events: Seen[]): Seen | undefined => events.find((e) => e.event === 'incident:reassigned')
  const bobSaw = reassigned(await bob.received(2))
  const carolSaw = reassigned(await carol.received(1))
  const aliceSaw = reassigned(await alice.received(2))
  t.match(bobSaw, { event: 'incident:reassigned', meta: { scope: 'team:payments', by: 'bob' } })
  t.same(bobSaw?.payload, expected)
  t.match(carolSaw, { event: 'incident:reassigned', meta: { scope: 'team:search', by: 'bob' } })
  t.same(carolSaw?.payload, expected)
  t.match(aliceSaw, { event: 'incident:reassigned', meta: { scope: 'incidents:all' } })
  t.same(aliceSaw?.payload, expected)

  // the incident is search's now: carol may act on it, bob may not, and only search hears of it
  t.equal((await node1.call('bob', 'POST', `/api/incidents/${incident.id}/acknowledge`)).status, 404)
  const acked = await node1.call('carol', 'POST', `/api/incidents/${incident.id}/acknowledge`)
  t.equal(acked.status, 200)
  const acknowledged = (events: Seen[]): Seen | undefined => events.find((e) => e.event === 'incident:acknowledged')
  t.match(acknowledged(await carol.received(2)), { payload: { incident: acked.body }, meta: { scope: 'team:search', by: 'carol' } })
  t.match(acknowledged(await alice.received(3)), { payload: { incident: acked.body }, meta: { scope: 'incidents:all' } })
  await flush(bob.socket)
  t.same(bob.events.map((e) => e.event), ['incident:created', 'incident:reassigned'], 'payments hears nothing more')
})

t.test('removing a member through node 2 stops delivery to their socket on node 1', async (t) => {
  const { node1, node2 } = await twoNodes(t)
  const bob = await node1.connect('bob')
  const carol = await node1.connect('carol')

  t.equal((await node2.call('bob', 'DELETE', '/api/teams/payments/members/bob')).status, 403, 'members cannot change memberships')
  t.equal((await node2.call('alice', 'POST', '/api/teams/nowhere/members/carol')).status, 404)
  t.equal((await node2.call('alice', 'POST', '/api/teams/payments/members/mallory')).status, 404)

  // carol joins payments through node 2: her live socket on node 1 is moved in
  const joined = await node2.call('alice', 'POST', '/api/teams/payments/members/carol')
  t.equal(joined.status, 200)
  t.same(joined.body, { teamId: 'payments', members: ['bob', 'carol'] })
  const { body: first } = await node2.call('alice', 'POST', '/api/teams/payments/incidents', { title: 'Before', severity: 'sev3' })
  t.match((await carol.received(1))[0], { event: 'incident:created', payload: { incident: { id: first.id } }, meta: { scope: 'team:payments' } })
  t.match((await bob.received(1))[0], { event: 'incident:created', payload: { incident: { id: first.id } } })

  // bob leaves payments through node 2: his socket on node 1 gets nothing more from it
  const removed = await node2.call('alice', 'DELETE', '/api/teams/payments/members/bob')
  t.equal(removed.status, 200)
  t.same(removed.body, { teamId: 'payments', members: ['carol'] })
  const { body: second } = await node2.call('alice', 'POST', '/api/teams/payments/incidents', { title: 'After', severity: 'sev3' })
  t.match((await carol.received(2))[1], { event: 'incident:created', payload: { incident: { id: second.id } } })
  // carol's copy came through node 1, so bob's would have too: one round trip to be sure
  await flush(bob.socket)
  t.same(bob.events.map((e) => e.payload.incident.id), [first.id], 'bob got the first incident only')
  t.ok(bob.socket.connected, 'bob stays connected: only the team is gone')

  // and no node lets him back in, nor shows him the team's incidents
  t.match(await request(bob.socket, 'realtime:subscribe', { scope: 'team:payments' }), { ok: false, error: { code: 'FORBIDDEN' } })
  t.equal((await node2.call('bob', 'GET', `/api/incidents/${second.id}`)).status, 404)
  const again = await node1.connect('bob')
  t.same(again.ready.scopes, ['user:bob'], 'a new connection is not joined to payments')
})

t.test('a client that drops off node 1 catches up on node 2 with since', async (t) => {
  const { node1, node2 } = await twoNodes(t)
  const bob = await node1.connect('bob')
  const { body: incident } = await node1.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Flapping', severity: 'sev2' })
  const [seen] = await bob.received(1)
  const since = { seq: seen!.meta.seq, epoch: seen!.meta.epoch }
  const gone = waitFor(bob.socket, 'disconnect')
  bob.socket.disconnect()
  await gone

  const acked = await node1.call('alice', 'POST', `/api/incidents/${incident.id}/acknowledge`)
  const note = await node1.call('alice', 'POST', `/api/incidents/${incident.id}/notes`, { text: 'Watching it' })

  const back = await node2.connect('bob', { 'team:payments': since })
  t.same(back.events.map((e) => [e.event, e.payload, e.meta.seq, e.meta.replayed]), [
    ['incident:acknowledged', { incident: acked.body }, since.seq + 1, true],
    ['incident:note_added', { incidentId: incident.id, teamId: 'payments', note: note.body, version: 3 }, since.seq + 2, true]
  ], 'replayed from the shared log before ready')
  t.same(back.ready.positions['team:payments'], { seq: since.seq + 2, epoch: since.epoch })
})

t.test('an edit is incident:updated, to the team and incidents:all; an empty or unknown change is refused', async (t) => {
  const { node1, node2 } = await twoNodes(t)
  const bob = await node1.connect('bob')
  const alice = await node2.connect('alice')
  t.match(await request(alice.socket, 'realtime:subscribe', { scope: 'incidents:all' }), { ok: true })
  const { body: incident } = await node2.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Slow refunds', severity: 'sev3' })
  const edited = await node2.call('bob', 'PATCH', `/api/incidents/${incident.id}`, { title: 'Refunds stuck', severity: 'sev2' })
  t.equal(edited.status, 200)
  t.match(edited.body, { title: 'Refunds stuck', severity: 'sev2', status: 'open', version: 2 })
  t.equal((await node1.call('bob', 'PATCH', `/api/incidents/${incident.id}`, { severity: 'sev1' })).body.title, 'Refunds stuck', 'one field at a time')
  for (const body of [{}, { title: '' }, { severity: 'sev9' }, { status: 'resolved' }]) {
    t.equal((await node1.call('bob', 'PATCH', `/api/incidents/${incident.id}`, body)).status, 400, JSON.stringify(body))
  }
  t.equal((await node1.call('carol', 'PATCH', `/api/incidents/${incident.id}`, { title: 'mine now' })).status, 404, 'not her team')
  const got = await bob.received(3)
  t.same(got.map((e) => [e.event, e.payload.incident.title, e.payload.incident.severity]),
    [['incident:created', 'Slow refunds', 'sev3'], ['incident:updated', 'Refunds stuck', 'sev2'], ['incident:updated', 'Refunds stuck', 'sev1']])
  t.same((await alice.received(3)).map((e) => [e.event, e.meta.scope]), [
    ['incident:created', 'incidents:all'], ['incident:updated', 'incidents:all'], ['incident:updated', 'incidents:all']
  ])
})

t.test('who is looking at a team, across the nodes; admins may look at any team', async (t) => {
  const { node1, node2 } = await twoNodes(t)
  const bob = await node1.connect('bob')
  const alice = await node2.connect('alice')
  const carol = await node2.connect('carol')
  t.match(await request(alice.socket, 'realtime:subscribe', { scope: 'team:payments' }), { ok: true }, 'an admin looks at a team')
  t.match(await request(carol.socket, 'realtime:subscribe', { scope: 'team:payments' }), { ok: false, error: { code: 'FORBIDDEN' } })
  await until(async () => (await node1.app.realtime.presence('team:payments')).count === 2, 'bob and alice present')
  const snapshot = await request(bob.socket, 'realtime:presence', { scope: 'team:payments' })
  t.match(snapshot, { ok: true, count: 2 })
  t.same(snapshot.users.map((u: { info: unknown }) => u.info).sort((a: any, b: any) => a.id.localeCompare(b.id)),
    [{ id: 'alice', name: 'Alice', role: 'admin' }, { id: 'bob', name: 'Bob', role: 'member' }], 'name and role, nothing else')
  t.match(await request(carol.socket, 'realtime:presence', { scope: 'team:payments' }), { ok: false, error: { code: 'FORBIDDEN' } })
})

t.test('the dashboard page and what it asks for', async (t) => {
  const redis = redisOptions(t)
  const missing = join(tmpdir(), `no-such-bundle-${Date.now()}.js`)
  const app = await buildIncidentsApp({ redis: { ...redis }, clientScript: missing })
  t.teardown(() => app.close())
  const page = await app.inject('/')
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], 'text/html')
  t.match(page.body, '<script src="/fastify-realtime.js"></script>')
  const files: Array<[string, string]> = [['/dashboard.js', 'text/javascript'], ['/view.js', 'text/javascript'], ['/dashboard.css', 'text/css'], ['/favicon.svg', 'image/svg+xml']]
  for (const [path, type] of files) {
    const res = await app.inject(path)
    t.same([res.statusCode, String(res.headers['content-type']).split(';')[0]], [200, type], path)
  }
  const bundle = await app.inject('/fastify-realtime.js')
  t.equal(bundle.statusCode, 503, 'without a built client the page says what to do')
  t.match(bundle.body, 'run npm run build')
  const users = (await app.inject('/api/demo-users')).json().users
  t.same(users.map((u: { id: string, teams: string[] }) => [u.id, u.teams]), [['alice', []], ['bob', ['Payments']], ['carol', ['Search']], ['dave', []]])
  const token = (await app.inject('/api/demo-token?user=bob')).json().token
  const me = await app.inject({ url: '/api/me', headers: { authorization: `Bearer ${token}` } })
  t.same(me.json(), { user: { id: 'bob', name: 'Bob', role: 'member' }, teams: [{ id: 'payments', name: 'Payments' }] })
  t.equal((await app.inject('/api/me')).statusCode, 401)
})

t.test('watch.ts says plainly when no server answers, before and after it was connected', async (t) => {
  const tsx = fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url))
  const script = fileURLToPath(new URL('../examples/incidents/watch.ts', import.meta.url))
  const watch = (url: string): { child: ReturnType<typeof spawn>, lines: string[], printed: (pattern: RegExp, what: string) => Promise<void> } => {
    const child = spawn(tsx, [script, 'bob', url], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.teardown(() => { if (child.exitCode === null) child.kill() })
    const lines: string[] = []
    createInterface({ input: child.stdout! }).on('line', (line) => { lines.push(line) })
    createInterface({ input: child.stderr! }).on('line', (line) => { lines.push(line) })
    const printed = async (pattern: RegExp, what: string): Promise<void> => {
      await until(() => lines.some((line) => pattern.test(line)), `${what}; printed so far: ${JSON.stringify(lines)}`, 30_000)
    }
    return { child, lines, printed }
  }

  // a port nothing listens on: taken, then given back
  const probe = createServer()
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve))
  const { port } = probe.address() as AddressInfo
  await new Promise((resolve) => probe.close(resolve))
  const nobody = watch(`http://127.0.0.1:${port}`)
  const [code] = await once(nobody.child, 'exit')
  t.equal(code, 1, 'it exits with an error')
  t.match(nobody.lines.join('\n'), `No incidents server answers at http://127.0.0.1:${port}`)

  const node1 = await startNode(t, redisOptions(t))
  const live = watch(node1.url)
  await live.printed(/^ready as bob in /, 'ready')
  await node1.app.close()
  await live.printed(/^disconnected \(transport close\); reconnecting/, 'the disconnect')
  await live.printed(new RegExp(`^cannot reach the server at ${node1.url.replace(/\./g, '\\.')} \\(.+\\); retrying`), 'the failed reconnects')
  t.notOk(live.lines.some((line) => line.startsWith('connect_error')), 'no bare connect_error')
  // a subscribe still waiting for its answer when the server went away must not end the watcher
  t.equal(live.child.exitCode, null, 'it is still running, retrying')
})

t.test('escalate.ts hands incidents nobody acknowledged to another team, and the pages hear of it through the publisher', async (t) => {
  type Escalation = typeof import('../examples/incidents/escalate.js')
  const { escalate, ESCALATION } = await importExample<Escalation>('examples/incidents/escalate.ts')
  const { createPublisher } = await import('../src/publisher/index.js')
  const { IncidentStore } = await importExample<typeof import('../examples/incidents/store.js')>('examples/incidents/store.ts')
  const { events } = await importExample<typeof import('../examples/incidents/schemas.js')>('examples/incidents/schemas.ts')
  const redis = redisOptions(t)
  const node1 = await startNode(t, redis)
  const node2 = await startNode(t, redis)
  const bob = await node1.connect('bob')
  const carol = await node2.connect('carol')
  const { body: open } = await node1.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Nobody looks', severity: 'sev2' })
  const { body: seen } = await node1.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Looked at', severity: 'sev3' })
  t.equal((await node1.call('bob', 'POST', `/api/incidents/${seen.id}/acknowledge`)).status, 200)
  await bob.received(3)

  const client = new Redis({ ...redis })
  t.teardown(() => { client.disconnect() })
  const publisher = createPublisher({ redis: { ...redis }, events })
  t.teardown(() => publisher.close())
  const store = new IncidentStore(client)
  t.same(await escalate({ store, publisher, to: 'search', olderThanMs: 15 * 60_000 }), [], 'nothing is overdue yet')
  const moved = await escalate({ store, publisher, to: 'search', olderThanMs: 15 * 60_000, now: Date.now() + 16 * 60_000 })
  t.same(moved.map((incident) => [incident.id, incident.teamId, incident.version]), [[open.id, 'search', 2]], 'only the open one, moved')

  const [, , , lost] = await bob.received(4)
  const [got] = await carol.received(1)
  for (const [who, event] of [['bob (payments, node 1)', lost!], ['carol (search, node 2)', got!]] as const) {
    t.equal(event.event, 'incident:reassigned', `${who} hears of it`)
    t.same(event.payload, { incident: moved[0], from: 'payments', to: 'search' })
    t.equal(event.meta.by, ESCALATION)
  }
  t.equal(lost!.meta.seq, 4, 'the team\'s log goes on from the routes\' events')
  t.equal((await node2.call('carol', 'GET', `/api/incidents/${open.id}`)).body.teamId, 'search', 'the nodes see the move')
  t.same(await escalate({ store, publisher, to: 'search', olderThanMs: 0 }), [], 'a second run finds nothing more to do')

  // the job as cron runs it: its own process, the nodes' Redis and prefix from the environment
  const { body: another } = await node2.call('bob', 'POST', '/api/teams/payments/incidents', { title: 'Also ignored', severity: 'sev1' })
  const script = fileURLToPath(new URL('../examples/incidents/escalate.ts', import.meta.url))
  const job = spawn(process.execPath, [
    '--import', new URL('../node_modules/tsx/dist/loader.mjs', import.meta.url).href,
    '--import', new URL('./fixtures/src-package-register.mjs', import.meta.url).href,
    script
  ], {
    env: { ...process.env, REDIS_URL: `redis://${redis.host}:${redis.port}`, REDIS_KEY_PREFIX: redis.keyPrefix, ESCALATE_TO: 'search', OLDER_THAN_MINUTES: '0' },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(() => { if (job.exitCode === null) job.kill() })
  let output = ''
  job.stdout!.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const [code] = await once(job, 'exit')
  t.equal(code, 0, 'the job exits by itself once done')
  t.match(output, `escalated ${another.id.slice(0, 8)} "Also ignored" to team search`)
  const [reassigned] = (await carol.received(2)).slice(1)
  t.match(reassigned, { event: 'incident:reassigned', payload: { from: 'payments', to: 'search' }, meta: { by: ESCALATION } })
})
