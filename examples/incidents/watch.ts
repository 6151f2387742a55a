// Prints what one user sees live: `npx tsx examples/incidents/watch.ts bob http://127.0.0.1:3001`.
// It also asks for incidents:all, which only an admin (alice) is granted. A plain socket.io-client,
// as any non-browser client would use it; it reconnects with `since` so nothing missed is lost.
import { io } from 'socket.io-client'

const user = process.argv[2] ?? 'bob'
const url = process.argv[3] ?? 'http://127.0.0.1:3001'

interface Position { seq: number, epoch: string }
interface Meta extends Position { scope: string, by?: string, replayed?: true }
interface Payload {
  incident?: { id: string, teamId: string, title: string, status: string }
  from?: string
  to?: string
  incidentId?: string
  note?: { text: string }
}

/** One line per event: which incident, and what happened to it. */
function describe ({ incident, from, to, incidentId, note }: Payload): string {
  if (note !== undefined) return `${incidentId?.slice(0, 8)} note "${note.text}"`
  if (incident === undefined) return ''
  const moved = from === undefined ? `team ${incident.teamId}` : `team ${from} → ${to}`
  return `${incident.id.slice(0, 8)} "${incident.title}" ${incident.status}, ${moved}`
}

const res = await fetch(`${url}/api/demo-token?user=${encodeURIComponent(user)}`).catch((err: Error & { cause?: { code?: string } }) => {
  console.error(`No incidents server answers at ${url} (${err.cause?.code ?? err.message}). Start one first: npx tsx examples/incidents/server.ts`)
  process.exit(1)
})
if (!res.ok) {
  console.error(`No token for "${user}": ${res.status} ${await res.text()}`)
  process.exit(1)
}
const { token } = await res.json() as { token: string }

const positions: Record<string, Position> = {}
const socket = io(url, {
  transports: ['websocket'],
  // read on every (re)connect: the server replays what this client missed, or says resync
  auth: (send) => { send({ token, since: positions }) }
})

socket.on('connect_error', (err: Error & { data?: { code?: string } }) => {
  // with a code the server refused this client (AUTH_EXPIRED, USER_REJECTED…); without one it was not reached
  if (err.data?.code !== undefined) console.log(`refused by the server, ${err.data.code}: ${err.message}`)
  else console.log(`cannot reach the server at ${url} (${err.message}); retrying…`)
})
socket.on('realtime:ready', async ({ scopes, positions: start }: { scopes: string[], positions: Record<string, Position> }) => {
  for (const [scope, position] of Object.entries(start)) positions[scope] ??= position
  console.log(`ready as ${user} in ${scopes.join(', ')}`)
  // granted to admins only: anyone else gets FORBIDDEN
  let ack
  try {
    ack = await socket.emitWithAck('realtime:subscribe', { scope: 'incidents:all', since: positions['incidents:all'] })
  } catch {
    // the connection dropped before the answer: asked again at the next realtime:ready
    console.log('subscribe incidents:all → no answer before the disconnect; asked again after the reconnect')
    return
  }
  console.log('subscribe incidents:all →', ack.ok === true ? 'ok' : ack.error.code)
  if (ack.ok === true) positions['incidents:all'] ??= ack.position
})
socket.on('realtime:resync', ({ scope, reason }: { scope: string, reason: string }) => {
  delete positions[scope]
  console.log(`resync ${scope} (${reason}): refetch GET /api/incidents`)
})
socket.onAny((event: string, payload: Payload, meta?: Meta) => {
  if (!event.startsWith('incident:') || meta === undefined) return
  positions[meta.scope] = { seq: meta.seq, epoch: meta.epoch }
  console.log(`${meta.scope} #${meta.seq} ${event} by ${meta.by ?? '?'}${meta.replayed ? ' (replayed)' : ''}: ${describe(payload)}`)
})
socket.on('disconnect', (reason) => { console.log(`disconnected (${reason}); reconnecting…`) })
process.on('SIGINT', () => { socket.disconnect(); process.exit(0) })
