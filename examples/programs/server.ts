// `npx tsx examples/programs/server.ts`: the request tracker on http://127.0.0.1:3000
// (PORT and HOST override; REDIS_URL keeps the event log in Redis instead of memory).
import type { AddressInfo } from 'node:net'
import { buildProgramsApp } from './app.js'

const redis = process.env.REDIS_URL
const app = await buildProgramsApp({ logger: true, ...(redis === undefined || redis === '' ? {} : { redis }) })
const host = process.env.HOST ?? '127.0.0.1'
await app.listen({ port: Number(process.env.PORT ?? 3000), host })

const { port } = app.server.address() as AddressInfo
const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
console.log(`\nRequest tracker on http://${shown}:${port} (event log: ${redis ? 'Redis' : 'memory'}).`)
console.log(`Token: curl 'http://${shown}:${port}/api/demo-token?user=alice' — see examples/programs/README.md.`)
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
