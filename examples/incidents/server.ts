// One node of the incident dashboard: `PORT=3001 npx tsx examples/incidents/server.ts`.
// Start several with the same REDIS_URL (default redis://127.0.0.1:6379), REDIS_KEY_PREFIX
// (optional) and JWT_SECRET: they share the data, the fan-out, the event log and presence.
// `npm run demo:incidents` starts two. See examples/incidents/README.md.
import type { AddressInfo } from 'node:net'
import { buildIncidentsApp } from './app.js'

const redis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'
const keyPrefix = process.env.REDIS_KEY_PREFIX
const app = await buildIncidentsApp({ redis, logger: process.env.LOG !== '0', ...(keyPrefix === undefined ? {} : { keyPrefix }) })
const host = process.env.HOST ?? '127.0.0.1'
await app.listen({ port: Number(process.env.PORT ?? 3000), host })

const { port } = app.server.address() as AddressInfo
const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
const { node } = await app.realtime.stats()
console.log(`\nIncident dashboard node ${node.id} on http://${shown}:${port}, Redis ${redis.replace(/\/\/[^@/]*@/, '//…@')}`)
console.log(`Dashboard: http://${shown}:${port}/ — sign in as a demo user.`)
console.log(`Health: curl http://${shown}:${port}/health/realtime — Ctrl+C to stop.\n`)

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(1) // a second signal: do not wait any longer
    stopping = true
    app.log.info({ signal }, 'closing')
    app.close().then(
      () => process.exit(0),
      (err: unknown) => {
        app.log.error({ err }, 'close failed')
        process.exit(1)
      }
    )
  })
}
