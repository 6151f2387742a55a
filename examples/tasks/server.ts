// `npm run demo`: the task board on http://127.0.0.1:3000 (PORT and HOST override).
import type { AddressInfo } from 'node:net'
import { buildTasksApp } from './app.js'

const app = await buildTasksApp({ logger: true })
const host = process.env.HOST ?? '127.0.0.1'
await app.listen({ port: Number(process.env.PORT ?? 3000), host })

const { port } = app.server.address() as AddressInfo
const shown = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host
console.log(`\nOpen http://${shown}:${port} in two tabs (add ?user=bob in one, ?user=carol sees nothing) and move some tasks.`)
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
