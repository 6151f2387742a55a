// Type tests of fastify-realtime/client against the built package (dist), as users see it:
// a `declare module 'fastify-realtime'` augmentation reaches `client.on()`.
// Each @ts-expect-error line must fail to compile, or tsc reports an unused directive.
import type { EventMeta, Position } from 'fastify-realtime'
import {
  connect,
  RealtimeClient,
  RealtimeClientError,
  type ClientState,
  type ConnectOptions,
  type PresenceState,
  type ResyncNotice
} from 'fastify-realtime/client'

interface ChatMessage { text: string, from: string }

declare module 'fastify-realtime' {
  interface RealtimeEvents {
    'chat:message': ChatMessage
    'chat:typing': { from: string }
  }
}

function expectType<T> (value: T): T {
  return value
}

const options: ConnectOptions = {
  getToken: async () => 'token',
  storage: localStorage,
  gapWaitMs: 500,
  timeoutMs: 5000,
  retry: { minMs: 100, maxMs: 5000 },
  io: { transports: ['websocket'], path: '/socket.io' }
}
const client = connect('https://api.example', options)
expectType<RealtimeClient>(client)

const off = client.on('chat:message', (message, meta) => {
  expectType<string>(message.text)
  expectType<EventMeta>(meta)
  expectType<number | undefined>(meta.seq)
})
expectType<() => void>(off)
// the incident events declared in index.test-d.ts are in the same program, and typed too
client.on('incident:created', (incident) => { expectType<string>(incident.title) })

// @ts-expect-error the payload type comes from RealtimeEvents
client.on('chat:message', (message: { text: number }) => { expectType(message) })
// @ts-expect-error the payload has no such field
client.on('chat:typing', (typing) => { expectType<string>(typing.text) })
// @ts-expect-error an event name not declared in RealtimeEvents
client.on('chat:unknown', () => {})

const position: Position | null = await client.subscribe('room:1')
expectType(position)
await client.unsubscribe('room:1')
client.onResync((notice: ResyncNotice) => {
  const reason: 'gap' | 'epoch' | 'unavailable' | 'forbidden' | 'revoked' = notice.reason
  expectType(reason)
})
client.onError((error) => {
  expectType<RealtimeClientError>(error)
  expectType<string>(error.code)
  expectType<string | undefined>(error.scope)
})
client.onState((state) => { expectType<ClientState>(state) })
expectType<Record<string, Position>>(client.positions)
expectType<string[]>(client.subscriptions)
expectType<string | undefined>(client.socket.id)
client.close()

// @ts-expect-error a token is a string
connect('https://api.example', { token: 42 })
// @ts-expect-error storage needs getItem and setItem
connect('https://api.example', { storage: { getItem: () => null } })

// presence: info typed by the RealtimePresenceInfo declared in index.test-d.ts
const offPresence = client.onPresence('team:1', (state) => {
  expectType<PresenceState>(state)
  expectType<number>(state.count)
  expectType<'admin' | 'member' | undefined>(state.users[0]?.info.role)
})
expectType<() => void>(offPresence)
const team = client.presence('team:1')
expectType<PresenceState | undefined>(team)
// @ts-expect-error the handler gets a PresenceState
client.onPresence('team:1', (state: string) => { expectType(state) })
