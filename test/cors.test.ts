import Fastify from 'fastify'
import t, { type Test } from 'tap'
import realtime, { type FastifyRealtimeOptions } from '../src/index.js'
import { SECRET, build, processFaults, tokenFor } from './helper.js'
import { HandshakeRefused, openRaw } from './raw-client.js'

const faults = processFaults()

type Cors = NonNullable<FastifyRealtimeOptions['io']>['cors']

/** The error `register` fails with for `cors`, or null when it passes. */
async function registerError (t: Test, cors: Cors): Promise<{ code?: string, message: string } | null> {
  const app = Fastify()
  t.teardown(() => app.close())
  try {
    await app.register(realtime, { auth: { secret: SECRET }, io: { cors } })
    return null
  } catch (err) {
    return err as { code?: string, message: string }
  }
}

t.test('credentials: true with an origin that lets any site in fails register, unless the app opts in', async (t) => {
  const reflecting: Array<[string, Cors]> = [
    ['origin: true', { origin: true, credentials: true }],
    ["origin: '*'", { origin: '*', credentials: true }],
    ['no origin (the cors default is any site)', { credentials: true }],
    ['origin: /.*/', { origin: /.*/, credentials: true }],
    ['origin: /^https?:\\/\\//', { origin: /^https?:\/\//, credentials: true }],
    ['a function origin', { origin: (origin, cb) => { cb(null, origin) }, credentials: true }],
    ["a list with '*'", { origin: ['https://app.example', '*'], credentials: true }],
    ['a list with a RegExp that matches any site', { origin: ['https://app.example', /./], credentials: true }],
    ['a list with true', { origin: ['https://app.example', true], credentials: true }]
  ]
  for (const [name, cors] of reflecting) {
    const err = await registerError(t, cors)
    t.equal(err?.code, 'FST_REALTIME_INVALID_OPTION', `${name}: refused`)
    t.match(err?.message, /io\.cors\.origin: .*credentials: true lets any site act as the user/, `${name}: says why`)
    t.equal(await registerError(t, { ...cors as object, allowAnyOriginWithCredentials: true }), null, `${name}: accepted once the app says so`)
  }
  const fine: Array<[string, Cors]> = [
    ['a listed origin', { origin: 'https://app.example', credentials: true }],
    ['a RegExp for one site', { origin: /^https:\/\/(app|admin)\.example$/, credentials: true }],
    ['a list', { origin: ['https://app.example', /^https:\/\/\w+\.example$/], credentials: true }],
    ['any origin without credentials', { origin: true }],
    ['a function without credentials', { origin: (_origin, cb) => { cb(null, true) } }]
  ]
  for (const [name, cors] of fine) t.equal(await registerError(t, cors), null, `${name}: accepted`)
  t.match(await registerError(t, { origin: 'https://app.example', allowAnyOriginWithCredentials: 'yes' } as never),
    { code: 'FST_REALTIME_INVALID_OPTION', message: /io\.cors\.allowAnyOriginWithCredentials: must be a boolean/ })
})

t.test('allowAnyOriginWithCredentials never reaches new Server(); the caller\'s options are untouched', async (t) => {
  const cors = Object.freeze({ origin: true, credentials: true, allowAnyOriginWithCredentials: true })
  const { app } = await build(t, { io: { cors } })
  const passed = (app.io as unknown as { _opts: { cors: Record<string, unknown> } })._opts.cors
  t.same(passed, { origin: true, credentials: true }, 'Socket.IO gets the cors options without it')
  t.same(Object.keys(cors), ['origin', 'credentials', 'allowAnyOriginWithCredentials'])
})

/** Opens a WebSocket transport with `origin` (or none); resolves with whether the server let it in. */
async function admitted (t: Test, url: string, origin?: string): Promise<boolean> {
  try {
    const raw = await openRaw(t, url, origin === undefined ? {} : { headers: { origin } })
    raw.terminate()
    return true
  } catch (err) {
    if (err instanceof HandshakeRefused) return false
    throw err
  }
}

t.test('WebSocket handshakes follow io.cors.origin: a string, a RegExp, a list and a callback', async (t) => {
  const answers: Array<string | undefined> = []
  const cases: Array<[string, Cors, string[], string[]]> = [
    ['a string', { origin: 'https://app.example' }, ['https://app.example'], ['https://evil.example', 'https://app.example.evil.example']],
    ['a RegExp', { origin: /^https:\/\/(app|admin)\.example$/ }, ['https://app.example', 'https://admin.example'], ['https://evil.example', 'null']],
    ['a list', { origin: ['https://app.example', /^https:\/\/\w+\.corp\.example$/] }, ['https://app.example', 'https://hr.corp.example'], ['https://evil.example']],
    ['a callback', {
      origin: (origin, cb) => {
        answers.push(origin)
        if (origin === 'https://broken.example') cb(new Error('lookup failed'))
        else if (origin === 'https://listed.example') setImmediate(() => { cb(null, ['https://listed.example']) })
        else cb(null, origin === 'https://app.example')
      },
      credentials: true,
      allowAnyOriginWithCredentials: true
    }, ['https://app.example', 'https://listed.example'], ['https://evil.example', 'https://broken.example']],
    ['a cors options delegate', (req, cb) => { cb(null, { origin: req.headers.origin === 'https://app.example' }) }, ['https://app.example'], ['https://evil.example']]
  ]
  for (const [name, cors, allowed, refused] of cases) {
    const { app, url } = await build(t, { io: { cors } })
    for (const origin of allowed) t.ok(await admitted(t, url, origin), `${name}: ${origin} is let in`)
    for (const origin of refused) t.notOk(await admitted(t, url, origin), `${name}: ${origin} is refused`)
    t.ok(await admitted(t, url), `${name}: a client without an Origin header (not a browser) is let in`)
    const raw = await openRaw(t, url, { headers: { origin: allowed[0]! } })
    t.same((await raw.ready(tokenFor('u1'))).userId, 'u1', `${name}: and authenticates as usual`)
    t.equal(app.io.of('/').sockets.size, 1)
  }
  // the cors middleware asks it too, for every request
  t.same(new Set(answers.filter((origin) => origin !== undefined)), new Set(['https://app.example', 'https://listed.example', 'https://evil.example', 'https://broken.example']),
    'the callback is asked for each browser handshake')
})

t.test('a callback origin that throws refuses the handshake', async (t) => {
  const { url } = await build(t, {
    io: {
      cors: {
        origin: (origin, cb) => {
          if (origin === 'https://throws.example') throw new Error('broken')
          cb(null, true)
        }
      }
    }
  })
  t.notOk(await admitted(t, url, 'https://throws.example'), 'refused')
  t.ok(await admitted(t, url, 'https://app.example'), 'the others are let in')
})

t.test('no unhandled rejections', async (t) => {
  t.same(await faults.since(), [])
})
