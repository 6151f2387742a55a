import type { FastifyInstance } from 'fastify'
import t from 'tap'
import { ManualClock } from './clock.js'
import { build, collect, flush, processFaults, request, sign, tokenFor, waitFor } from './helper.js'
import { acks, eventFrame, openRaw, until } from './raw-client.js'

const faults = processFaults()

t.test('realtime:auth has a budget of its own (limits.refreshesPerMinute, 5 by default): a flood costs 5 lookups and one RATE_LIMITED ack', async (t) => {
  const clock = new ManualClock()
  let lookups = 0
  const { url } = await build(t, {
    clock,
    // the general cap is off: the bound on refreshes stands alone
    rateLimit: false,
    auth: {
      user: (claims) => {
        lookups++
        return { id: String(claims.sub) }
      }
    }
  })
  const raws = await Promise.all(['u1', 'u2'].map(async (sub) => {
    const raw = await openRaw(t, url)
    await raw.ready(tokenFor(sub))
    return raw
  }))
  lookups = 0
  const seen = raws.map(acks)
  raws.forEach((raw, i) => {
    const token = tokenFor(`u${i + 1}`)
    for (let id = 1; id <= 500; id++) raw.send(eventFrame('realtime:auth', [{ token }], id))
  })
  await until(() => seen.every((s) => s.length >= 6), 'the answers to both floods')
  // a round trip behind each flood: every refresh of it has passed the budget by then
  for (const raw of raws) await raw.request(9000, 'realtime:unsubscribe', { scope: 'flush:x' })
  t.equal(lookups, 10, '2 sockets x 500 refreshes: 5 lookups each')
  for (const [i, s] of seen.entries()) {
    // the refusal is answered at once, the refreshes after their lookups: compare by ack id
    const answers = s.filter(([id]) => id < 9000).sort(([a], [b]) => a - b)
    t.same(answers.slice(0, 5).map(([id, a]) => [id, a.ok]), [[1, true], [2, true], [3, true], [4, true], [5, true]], `socket ${i + 1}: the first five go through`)
    t.match(answers.slice(5), [[6, { ok: false, error: { code: 'RATE_LIMITED', message: /try again in 12 s/ } }]], `socket ${i + 1}: one RATE_LIMITED ack, the other 494 refreshes dropped`)
  }

  // the budget refills evenly: one refresh every 12 s
  const [raw] = raws
  const token = tokenFor('u1')
  clock.advance(11_999)
  raw!.send(eventFrame('realtime:auth', [{ token }], 600))
  await raw!.request(9001, 'realtime:unsubscribe', { scope: 'flush:x' })
  t.notOk(seen[0]!.some(([id]) => id === 600), 'not before 12 s (and, refused already, not answered)')
  clock.advance(1)
  t.match(await raw!.request(601, 'realtime:auth', { token }), [{ ok: true }], '12 s on: one more refresh')
  t.match(await raw!.request(602, 'realtime:auth', { token }), [{ ok: false, error: { code: 'RATE_LIMITED' } }], 'and the next is refused again, with an ack')
  clock.advance(60_000)
  for (let i = 0; i < 5; i++) t.match(await raw!.request(610 + i, 'realtime:auth', { token }), [{ ok: true }], `a minute on: refresh ${i + 1} of 5`)
  t.equal(lookups, 16)
})

t.test('limits.refreshesPerMinute is an option', async (t) => {
  const { url } = await build(t, { limits: { refreshesPerMinute: 1 } })
  const raw = await openRaw(t, url)
  await raw.ready(tokenFor('u1'))
  t.match(await raw.request(1, 'realtime:auth', { token: tokenFor('u1') }), [{ ok: true }])
  t.match(await raw.request(2, 'realtime:auth', { token: tokenFor('u1') }), [{ ok: false, error: { code: 'RATE_LIMITED', message: /try again in 60 s/ } }])
})

/** The rooms of the server-side sockets, their own id room left out. */
function roomsOnServer (app: FastifyInstance): string[][] {
  return [...app.io.of('/').sockets.values()].map((s) => [...s.rooms].filter((room) => room !== s.id).sort())
}

const expOf = (token: string): number => (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp

const roleOf = (user: unknown): unknown => (user as { role?: unknown }).role

t.test('a refresh checks the scopes held again: those the new token no longer grants are left, with realtime:revoked', async (t) => {
  let roomsFail = false
  const { app, client } = await build(t, {
    auth: { user: (claims) => ({ id: String(claims.sub), role: claims.role }) },
    rooms: (user) => {
      if (roomsFail) throw new Error('database down')
      return roleOf(user) === 'admin' ? ['team:1', 'team:admins'] : ['team:1']
    },
    canSubscribe: (user, scope) => roleOf(user) === 'admin' && scope === 'incidents:all'
  })
  const socket = client({ token: sign({ sub: 'u1', role: 'admin' }) })
  await waitFor(socket, 'realtime:ready')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'incidents:all' }), { ok: true })
  t.same(roomsOnServer(app), [['incidents:all', 'team:1', 'team:admins', 'user:u1']])
  const revoked = collect(socket, 'realtime:revoked')

  roomsFail = true
  t.match(await request(socket, 'realtime:auth', { token: sign({ sub: 'u1', role: 'member' }) }), { ok: false, error: { code: 'UNAVAILABLE' } },
    'the app cannot answer: the refresh is refused')
  t.equal([...app.io.of('/').sockets.values()][0]!.data.claims.role, 'admin', 'and the old token stands')
  t.same(roomsOnServer(app), [['incidents:all', 'team:1', 'team:admins', 'user:u1']], 'with its scopes')
  roomsFail = false

  t.match(await request(socket, 'realtime:auth', { token: sign({ sub: 'u1', role: 'member' }) }), { ok: true }, 'an admin refreshed to a member token')
  await flush(socket)
  t.same(revoked.map(([message]) => message).sort((a: any, b: any) => a.scope < b.scope ? -1 : 1), [{ scope: 'incidents:all' }, { scope: 'team:admins' }],
    'told of each scope it lost')
  t.same(roomsOnServer(app), [['team:1', 'user:u1']], 'and out of them')
  const got = collect(socket, 'incident:created')
  await app.broadcast('incidents:all', 'incident:created', { id: 1 })
  await app.broadcast('team:1', 'incident:created', { id: 2 })
  await waitFor(socket, 'incident:created')
  await flush(socket)
  t.same(got.map(([payload]) => payload), [{ id: 2 }], 'nothing more of a scope it lost')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'incidents:all' }), { ok: false, error: { code: 'FORBIDDEN' } }, 'nor by subscribing again')

  t.match(await request(socket, 'realtime:auth', { token: sign({ sub: 'u1', role: 'admin' }) }), { ok: true }, 'an admin token again')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'incidents:all' }), { ok: true }, 'grants it again')
  await flush(socket)
  t.equal(revoked.length, 2, 'and revokes nothing')
})

t.test('a subscribe answered for the token before a refresh asks again for the new one', async (t) => {
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  let asked!: () => void
  const waiting = new Promise<void>((resolve) => { asked = resolve })
  const { app, client } = await build(t, {
    auth: { user: (claims) => ({ id: String(claims.sub), role: claims.role }) },
    canSubscribe: async (user, scope) => {
      if (roleOf(user) !== 'admin') return false
      asked()
      await gate
      return scope === 'incidents:all'
    }
  })
  const socket = client({ token: sign({ sub: 'u1', role: 'admin' }) })
  await waitFor(socket, 'realtime:ready')
  const subscribed = request(socket, 'realtime:subscribe', { scope: 'incidents:all' })
  await waiting
  // the admin's subscribe waits on canSubscribe while the token is refreshed to a member's
  t.match(await request(socket, 'realtime:auth', { token: sign({ sub: 'u1', role: 'member' }) }), { ok: true })
  release()
  t.match(await subscribed, { ok: false, error: { code: 'FORBIDDEN' } }, 'asked again for the member: refused')
  t.same(roomsOnServer(app), [['user:u1']])
})

t.test('between realtime:auth_expired and a refresh, a subscribe is refused with AUTH_EXPIRED', async (t) => {
  const clock = new ManualClock()
  const { app, client } = await build(t, { clock, canSubscribe: () => true })
  const token = sign({ sub: 'u1' }, 60)
  const socket = client({ token })
  await waitFor(socket, 'realtime:ready')
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:1' }), { ok: true }, 'before exp')
  const told = waitFor(socket, 'realtime:auth_expired')
  clock.advancePast(expOf(token))
  await told
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:2' }), { ok: false, error: { code: 'AUTH_EXPIRED' } }, 'after auth_expired')
  t.same(roomsOnServer(app), [['team:1', 'user:u1']], 'no new scope')
  t.match(await request(socket, 'realtime:unsubscribe', { scope: 'team:1' }), { ok: true }, 'leaving one is fine')
  t.match(await request(socket, 'realtime:auth', { token: sign({ sub: 'u1' }, 600) }), { ok: true })
  t.match(await request(socket, 'realtime:subscribe', { scope: 'team:2' }), { ok: true }, 'after the refresh')
})

t.test('no unhandled rejections', async (t) => {
  t.same(await faults.since(), [])
})
