import type { FastifyBaseLogger } from 'fastify'
import type { HandshakeGuard } from './admission.js'
import { ConnectError, handshakeToken, type Credentials } from './credentials.js'
import type { UserConnections } from './limits.js'
import type { Memberships } from './memberships.js'
import type { RealtimeSocket } from './types.js'

export interface HandshakeContext {
  /** Null until `ready` has wired the verifier, and again once closing has begun. */
  credentials: () => Credentials | null
  memberships: Memberships
  guard: HandshakeGuard
  connections: UserConnections
  log: FastifyBaseLogger
}

/**
 * The `io.use` middleware of every namespace: token to claims to user, kept on `socket.data`;
 * on `/` also the scopes `rooms(user)` grants (`socket.data.granted`, joined at `connection`).
 * A user past `limits.connectionsPerUser` on the namespace is refused with LIMIT.
 * A refusal reaches the client's `connect_error` with a code; anything unexpected is logged and
 * refused with UNAVAILABLE.
 */
export function handshake (ctx: HandshakeContext): (socket: RealtimeSocket, next: (err?: Error) => void) => void {
  const { guard, connections, memberships, log } = ctx

  async function admit (socket: RealtimeSocket, credentials: Credentials): Promise<void> {
    // disconnectUser() calls from here on refuse this handshake: it would join after its user's sockets were closed
    const mark = memberships.mark()
    const who = await credentials.check(handshakeToken(socket.handshake), socket)
    socket.data.claims = who.claims
    socket.data.user = who.user
    socket.data.userId = who.userId
    if (!connections.take(socket)) throw new ConnectError('LIMIT', 'This user has too many connections open; close one and try again')
    if (socket.nsp.name !== '/') return
    try {
      // from this answer to the join at `connection` nothing waits on I/O (a next tick at most),
      // so no membership change can land in between: the grant is still current
      socket.data.granted = await memberships.granted(who.user, who.userId, mark)
    } catch (err) {
      connections.release(socket)
      throw err
    }
  }

  return function authenticate (socket, next) {
    const credentials = ctx.credentials()
    if (credentials === null) {
      next(new ConnectError('UNAVAILABLE', 'The server is not accepting connections right now'))
      return
    }
    const conn = socket.conn
    const namespace = socket.nsp.name
    // a second CONNECT for a namespace whose first one is still being checked: a protocol
    // violation (the official client never does it) that would double the lookups
    if (!guard.begin(conn, namespace)) {
      conn.close(true)
      // the transport is gone, so nothing is sent; this lets Socket.IO drop the socket
      next(new ConnectError('UNAVAILABLE', 'A second CONNECT arrived during the handshake'))
      return
    }
    admit(socket, credentials).then(() => {
      guard.end(conn, namespace)
      guard.authenticated(conn)
      connections.admitted(socket)
      next()
    }, (err: unknown) => {
      guard.end(conn, namespace)
      if (err instanceof ConnectError) return next(err)
      log.error({ err }, 'fastify-realtime: handshake failed')
      next(new ConnectError('UNAVAILABLE', 'The server could not complete the handshake; try again'))
    })
  }
}
