// A worker process for the publisher scenario: `fastify-realtime/publisher` in a process of its
// own, with no Socket.IO server, broadcasting through the nodes' Redis. Driven by bench/run.js
// like the server process (setup, then measured blocks); its CPU is read around each block.
import { EVENT, REDIS, cpuSince, now, send, serve } from './lib/util.js'

let createPublisher
try {
  ({ createPublisher } = await import('../dist/publisher/index.js'))
} catch (err) {
  console.error('bench: cannot import ../dist/publisher/index.js; build first (npx tsup)\n', err.message)
  process.exit(2)
}

let publisher = null
let target = null
let blockCpu = null
let blockStart = 0

serve({
  /** A publisher under the plugin arm's key prefix: the plugin arm's sockets receive what it sends. */
  setup ({ keyPrefix }) {
    publisher = createPublisher({ redis: { ...REDIS }, keyPrefix })
    target = { broadcast: (scope, payload) => publisher.broadcast(scope, EVENT, payload) }
    return true
  },

  async block ({ arm: _arm, ...plan }) {
    blockCpu = process.cpuUsage()
    blockStart = now()
    await send(target, plan)
    return { t0: blockStart, sent: now(), sendCpu: cpuSince(blockCpu) }
  },

  blockEnd () {
    return { cpu: cpuSince(blockCpu), wall: now() - blockStart }
  },

  async shutdown () {
    await publisher?.close()
    setImmediate(() => process.exit(0))
    return true
  }
})

process.send({ ready: true })
