// The CommonJS side of the type tests: in a .cts file, `fastify-realtime` and
// `fastify-realtime/client` resolve to the built .d.cts files (the `require` condition), and a
// `declare module 'fastify-realtime'` augmentation made here must type both `broadcast` and the
// client's `on()`. Each @ts-expect-error line must fail to compile.
import Fastify = require('fastify')
import realtime = require('fastify-realtime')
import client = require('fastify-realtime/client')
import publisher = require('fastify-realtime/publisher')

interface Job { id: string, done: boolean }

declare module 'fastify-realtime' {
  interface RealtimeEvents {
    'job:finished': Job
  }
}

function expectType<T> (value: T): T {
  return value
}

export async function check (): Promise<void> {
  const app = Fastify()
  await app.register(realtime.fastifyRealtime, { auth: { secret: 'x' } })
  await app.broadcast('team:1', 'job:finished', { id: 'j1', done: true })
  // @ts-expect-error the payload type comes from RealtimeEvents
  await app.broadcast('team:1', 'job:finished', { id: 1 })
  // @ts-expect-error an event name not declared in RealtimeEvents
  await app.broadcast('team:1', 'job:unknown', {})

  const worker = publisher.createPublisher({ redis: 'redis://127.0.0.1:6379' })
  expectType<number | undefined>((await worker.broadcast('team:1', 'job:finished', { id: 'j1', done: true })).seq)
  // @ts-expect-error the publisher's payload type comes from RealtimeEvents too
  await worker.broadcast('team:1', 'job:finished', { id: 1 })

  const socket = client.connect('https://api.example', { token: 't' })
  socket.on('job:finished', (job, meta: realtime.EventMeta) => {
    expectType<boolean>(job.done)
    expectType<string>(meta.scope)
  })
  // @ts-expect-error the payload has no such field
  socket.on('job:finished', (job) => { expectType<string>(job.title) })
  // @ts-expect-error an event name not declared in RealtimeEvents
  socket.on('job:unknown', () => {})
}
