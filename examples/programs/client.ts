// What one member sees live: `npx tsx examples/programs/client.ts bob [http://127.0.0.1:3000]`.
// Press Enter to go offline, make changes as someone else, press Enter again to come back: the
// missed events arrive first, marked (replayed). Ctrl+C quits. A plain socket.io-client, as any
// non-browser client would use it; it keeps its positions and sends them as `since`.
import { createInterface } from 'node:readline'
import { io } from 'socket.io-client'

const user = process.argv[2] ?? 'bob'
const base = process.argv[3] ?? 'http://127.0.0.1:3000'

interface Position { seq: number, epoch: string }
interface Meta extends Position { scope: string, by?: string, replayed?: true }

let res: Response
try {
  res = await fetch(`${base}/api/demo-token?user=${encodeURIComponent(user)}`)
} catch (err) {
  console.error(`The request tracker does not answer at ${base} (${(err as Error).cause ?? (err as Error).message}): start it with npx tsx examples/programs/server.ts`)
  process.exit(1)
}
if (!res.ok) {
  console.error(`No token for "${user}": ${res.status} ${await res.text()}`)
  process.exit(1)
}
const { token } = await res.json() as { token: string }

const positions: Record<string, Position> = {}
const socket = io(base, {
  transports: ['websocket'],
  // read on every (re)connect: the server replays what this client missed, or says resync
  auth: (send) => { send({ token, since: positions }) }
})

socket.on('connect_error', (err: Error & { data?: { code?: string } }) => {
  const code = err.data?.code
  // without a code the server was not reached at all (down, or the wrong address)
  console.log(code === undefined ? `cannot reach ${base} (${err.message}); trying again…` : `refused (${code}): ${err.message}`)
})
socket.on('realtime:ready', ({ scopes, positions: start }: { scopes: string[], positions: Record<string, Position> }) => {
  for (const [scope, position] of Object.entries(start)) positions[scope] ??= position
  console.log(`ready as ${user} in ${scopes.join(', ')} — Enter: go offline / come back, Ctrl+C: quit`)
})
socket.on('realtime:resync', ({ scope, reason }: { scope: string, reason: string }) => {
  delete positions[scope]
  console.log(`resync ${scope} (${reason}): refetch GET /api/programs/${scope.slice('program:'.length)}/requests`)
})
socket.onAny((event: string, payload: unknown, meta?: Meta) => {
  // the protocol's own messages are handled above
  if (event.startsWith('realtime:') || meta === undefined) return
  if (meta.seq !== undefined) positions[meta.scope] = { seq: meta.seq, epoch: meta.epoch }
  console.log(`${event} by ${meta.by ?? '?'}${meta.replayed ? ' (replayed)' : ''}: ${JSON.stringify(payload)}`)
})
socket.on('disconnect', (reason) => {
  // a disconnect asked for here stays offline until Enter; any other one reconnects by itself
  console.log(reason === 'io client disconnect' ? 'offline' : `disconnected (${reason}); reconnecting…`)
})

// stdin keeps the process alive while offline; the positions stay in memory meanwhile
const keys = createInterface({ input: process.stdin })
keys.on('line', () => {
  if (socket.connected) {
    socket.disconnect()
  } else {
    console.log('coming back…')
    socket.connect()
  }
})
const quit = (): void => {
  keys.close()
  socket.disconnect()
  process.exit(0)
}
keys.on('close', quit)
process.on('SIGINT', quit)
