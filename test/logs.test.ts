import t from 'tap'
import { build, processFaults, refusal, request, sign, tokenFor, waitFor } from './helper.js'

const faults = processFaults()

/** A logger at trace level whose lines are kept. */
function logger (): { lines: string[], fastify: { logger: { level: string, stream: { write: (line: string) => void } } } } {
  const lines: string[] = []
  return { lines, fastify: { logger: { level: 'trace', stream: { write: (line: string) => { lines.push(line) } } } } }
}

/** The longest run of `char` in any line. */
function longestRun (lines: string[], char: string): number {
  const run = new RegExp(`${char}+`, 'g')
  return Math.max(0, ...lines.flatMap((line) => (line.match(run) ?? []).map((m) => m.length)))
}

t.test('ids in log lines are cut to 200 characters: over-long subjects, user ids and scopes from the app', async (t) => {
  const { lines, fastify } = logger()
  const long = (char: string): string => char.repeat(5000)
  const { app, client, connected } = await build(t, {
    auth: {
      // the subject as the user id, as the default lookup does, unless it is the one that stays short
      user: (claims) => ({ id: claims.sub === 'short' ? 'short' : String(claims.sub) })
    },
    rooms: (user) => user.id === 'short' ? [`team:${long('R')}`, `user:${long('S')}`, 'team:1'] : [],
    limits: { connectionsPerUser: 1 }
  }, { fastify })

  // a validly signed token whose subject is 5,000 characters: refused, and logged cut
  t.equal((await refusal(client({ token: tokenFor(long('Q')) }))).data?.code, 'USER_REJECTED')
  // the same subject at a refresh
  const { socket } = await connected('short')
  t.match(await request(socket, 'realtime:auth', { token: tokenFor(long('Q')) }), { ok: false, error: { code: 'AUTH_INVALID' } })
  // a second connection of the user, over limits.connectionsPerUser
  t.equal((await refusal(client({ token: tokenFor('short') }))).data?.code, 'LIMIT')
  await t.rejects(app.broadcast(`team:${long('B')}`, 'x', 1), { code: 'FST_REALTIME_INVALID_SCOPE' })
  await t.rejects(app.realtime.join(long('J'), 'team:1'), { code: 'FST_REALTIME_INVALID_USER_ID' })

  for (const [char, what] of [['Q', 'subject'], ['R', 'scope from rooms()'], ['S', 'user scope from rooms()']] as const) {
    const run = longestRun(lines, char)
    t.ok(run > 0, `the ${what} was logged`)
    t.ok(run <= 200, `the ${what} was cut to 200 characters (longest run ${run})`)
  }
  const errors = [
    await app.broadcast(`team:${long('B')}`, 'x', 1).catch((err: Error) => err.message),
    await app.realtime.join(long('J'), 'team:1').catch((err: Error) => err.message)
  ]
  for (const message of errors) t.ok(String(message).length < 300, 'error messages carry ids cut too')
})

t.test('no token, claim set or payload is logged', async (t) => {
  const { lines, fastify } = logger()
  const { app, client } = await build(t, { rooms: () => ['team:1'], auth: { refreshGraceMs: 0 } }, { fastify })
  const token = sign({ sub: 'u1', secretClaim: 'claim-value-never-logged' })
  const socket = client({ token })
  await waitFor(socket, 'realtime:ready')
  await request(socket, 'realtime:auth', { token: 'not-a-jwt' })
  await request(socket, 'realtime:auth', { token: tokenFor('someone-else') })
  await app.broadcast('team:1', 'x', { secret: 'payload-value-never-logged' })
  t.equal((await refusal(client({ token }, { query: { token } }))).data?.code, 'AUTH_INVALID')
  t.ok(lines.length > 0, 'the logger was in use')
  t.notOk(lines.some((line) => line.includes(token.split('.')[2]!)), 'no token')
  t.notOk(lines.some((line) => line.includes('claim-value-never-logged')), 'no claim')
  t.notOk(lines.some((line) => line.includes('payload-value-never-logged')), 'no payload')
})

t.test('no unhandled rejections', async (t) => {
  t.same(await faults.since(), [])
})
