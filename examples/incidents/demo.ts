// `npm run demo:incidents`: two nodes of the incident dashboard on the local Redis, on ports 3001
// and 3002 (PORTS=4001,4002 to change them; REDIS_URL and REDIS_KEY_PREFIX as for server.ts).
// Open one node as one user and the other node as another, and act in either. Ctrl+C stops both.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const server = fileURLToPath(new URL('./server.ts', import.meta.url))
const ports = (process.env.PORTS ?? '3001,3002').split(',').map((port) => port.trim())

const nodes: ChildProcess[] = ports.map((port, i) => {
  // the same node and loader flags as this process (tsx), so each node runs server.ts as it is
  const child = spawn(process.execPath, [...process.execArgv, server], {
    env: { LOG: '0', ...process.env, PORT: port },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const label = `[node ${i + 1}]`
  console.log(`${label} pid ${child.pid}, port ${port}`)
  for (const stream of [child.stdout!, child.stderr!]) {
    let rest = ''
    stream.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n')
      rest = lines.pop() ?? ''
      for (const line of lines) if (line.trim() !== '') console.log(`${label} ${line}`)
    })
  }
  child.on('exit', (code, signal) => {
    console.log(`${label} stopped (${signal ?? code})`)
    if (nodes.every((node) => node.exitCode !== null || node.signalCode !== null)) process.exit(0)
  })
  return child
})

console.log(`Starting ${ports.length} nodes. Then open, for instance:
  http://127.0.0.1:${ports[0]}/?user=alice   (admin: every team)
  http://127.0.0.1:${ports[1] ?? ports[0]}/?user=bob     (the payments team)
Kill one node (kill <pid>) and act on the other page meanwhile; start it again with
  PORT=<port> npx tsx examples/incidents/server.ts
and its page catches up. Ctrl+C stops the nodes.\n`)

let stopping = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(1)
    stopping = true
    for (const node of nodes) node.kill('SIGTERM')
  })
}
