import { register } from 'node:module'
import t from 'tap'
import Fastify from 'fastify'
import realtime from '../src/index.js'
import { SECRET } from './helper.js'

// In this test process prom-client cannot be resolved, as in an app that never installed it.
const hook = `export async function resolve (specifier, context, next) {
  if (specifier === 'prom-client') {
    const err = new Error("Cannot find package 'prom-client'")
    err.code = 'ERR_MODULE_NOT_FOUND'
    throw err
  }
  return next(specifier, context)
}`
register(`data:text/javascript,${encodeURIComponent(hook)}`)

t.test('metrics on without prom-client installed: register fails with FST_REALTIME_MISSING_DEPENDENCY', async (t) => {
  await t.rejects(import('prom-client'), { code: 'ERR_MODULE_NOT_FOUND' }, 'prom-client cannot be loaded here')
  const app = Fastify()
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(realtime, { auth: { secret: SECRET }, metrics: true }) }, {
    code: 'FST_REALTIME_MISSING_DEPENDENCY',
    message: 'The fastify-realtime option metrics needs the package prom-client, which cannot be loaded: npm install prom-client',
    cause: { code: 'ERR_MODULE_NOT_FOUND' }
  })
})

t.test('without metrics the plugin never needs prom-client', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(realtime, { auth: { secret: SECRET } })
  await app.ready()
  t.ok(app.io, 'registered and ready')
})
