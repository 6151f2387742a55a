// fastify-realtime/client, a browser-and-Node client on top of socket.io-client:
// client.ts (RealtimeClient, the public API) is built from connection.ts (the socket, handshakes,
// refusals, token refresh), scopes.ts (one ScopeState per scope: subscribes, restores, range
// fetches), sequencer.ts (a scope's events in seq order, once each), listeners.ts (the app's
// handlers), storage.ts (positions across page reloads), and presence.ts (followed scopes' presence)
// on presence-list.ts (one scope's list, diffs applied in version order).
import { RealtimeClient } from './client.js'
import type { ConnectOptions } from './options.js'

export { RealtimeClient } from './client.js'
export { RealtimeClientError, type ClientErrorCode } from './errors.js'
export type { ClientResyncReason, ClientState, ResyncNotice } from './listeners.js'
export type { ConnectOptions, PositionStorage, RetryOptions } from './options.js'
export type { PresenceMember, PresenceState } from './presence-list.js'
export type { EventMeta, Position, PresenceInfo, ResyncReason } from '../protocol.js'

/**
 * Connects to a fastify-realtime server.
 *
 * @example
 * import { connect } from 'fastify-realtime/client'
 *
 * const client = connect('https://api.example.com', { getToken: () => auth.token(), storage: localStorage })
 * client.on('incident:created', (incident, meta) => render(incident))
 * client.onResync(({ scope }) => refetch(scope))
 * await client.subscribe('incidents:all')
 */
export function connect (url: string, options: ConnectOptions = {}): RealtimeClient {
  return new RealtimeClient(url, options)
}
