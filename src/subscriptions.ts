import type { FastifyBaseLogger } from 'fastify'
import { sinceMap, sinceOf, type CatchUps } from './catchup.js'
import { ConnectError } from './credentials.js'
import type { Memberships } from './memberships.js'
import { EVENT_READY, EVENT_REVOKED, ackError, isScope, userScope, type Position, type RevokedMessage } from './protocol.js'
import type { ReadyMessage, RealtimeSocket, RealtimeUser } from './types.js'
import { reply } from './util.js'

/** How often a subscribe is asked again when token refreshes keep landing while it is out. */
const MAX_ASKS = 5

/**
 * Which scopes a socket is in: the granted ones at connect (then `realtime:ready`), and
 * `realtime:subscribe` / `realtime:unsubscribe` after, each authorized by the app's answers
 * asked again and followed by a catch-up from `since`.
 */
export class Subscriptions {
  readonly #memberships: Memberships
  readonly #catchUps: CatchUps
  readonly #scopesPerSocket: number
  readonly #log: FastifyBaseLogger
  /** Subscribes authorized but not yet joined, so parallel ones cannot pass the scope cap together. */
  readonly #pending = new WeakMap<RealtimeSocket, number>()
  /** Scopes held being checked again for a refreshed token: no subscribe joins meanwhile. */
  readonly #rechecks = new WeakMap<RealtimeSocket, Promise<void>>()

  constructor (memberships: Memberships, catchUps: CatchUps, scopesPerSocket: number, log: FastifyBaseLogger) {
    this.#memberships = memberships
    this.#catchUps = catchUps
    this.#scopesPerSocket = scopesPerSocket
    this.#log = log
  }

  /**
   * A socket that passed the handshake: joins the scopes granted there (before any I/O, so the
   * grant is still current), catches up each from the handshake's `since`, then says ready with
   * every position, so the client always holds a starting point.
   */
  async welcome (socket: RealtimeSocket): Promise<void> {
    const scopes = socket.data.granted ?? []
    delete socket.data.granted
    socket.join(scopes)
    const since = sinceMap((socket.handshake.auth as { since?: unknown } | undefined)?.since)
    // keyed by scope names that differ per user: a dictionary object, so each connection does not
    // leave V8 a new hidden class behind
    const positions: Record<string, Position> = Object.create(null)
    await Promise.all(scopes.map(async (scope) => {
      const { position } = await this.#catchUps.run(socket, scope, since[scope])
      if (position !== null) positions[scope] = position
    }))
    if (!socket.connected) return
    const message: ReadyMessage = { userId: socket.data.userId, scopes, positions }
    socket.emit(EVENT_READY, message)
  }

  /** Answers `realtime:subscribe { scope, since? }`. */
  subscribe (socket: RealtimeSocket, message: unknown, ack: unknown): void {
    this.#subscribe(socket, message).then((answer) => { reply(ack, answer) }, (err: unknown) => {
      this.#log.error({ err }, 'fastify-realtime: subscribe failed')
      reply(ack, ackError('UNAVAILABLE', 'The subscription could not be completed right now'))
    })
  }

  /** Answers `realtime:unsubscribe { scope }`. */
  unsubscribe (socket: RealtimeSocket, message: unknown, ack: unknown): void {
    const scope = (message as { scope?: unknown } | null)?.scope
    if (!isScope(scope)) return reply(ack, ackError('INVALID_SCOPE', 'A scope is kind:id, e.g. team:42'))
    if (scope === userScope(socket.data.userId)) {
      return reply(ack, ackError('FORBIDDEN', 'A socket always stays in its own user scope'))
    }
    socket.leave(scope)
    reply(ack, { ok: true, scope })
  }

  /**
   * A token refresh on `socket`: asks the app again about every scope the socket holds, for
   * `user` (the refreshed token's), and once every answer is in, `commit`s the refresh and takes
   * the socket out of each scope no longer granted, telling the client `realtime:revoked`.
   * Subscribes meanwhile wait, then ask again for whichever user holds the socket. Rejects with
   * a ConnectError (UNAVAILABLE) when the app could not answer: nothing is committed then.
   */
  reauthorize (socket: RealtimeSocket, user: RealtimeUser, commit: () => void): Promise<void> {
    const own = userScope(socket.data.userId)
    const held = socket.nsp.name === '/' ? [...socket.rooms].filter((room) => room !== own && isScope(room)) : []
    if (held.length === 0) {
      commit()
      return Promise.resolve()
    }
    const run: Promise<void> = this.#memberships.refused(user, socket.data.userId, held).then((lost) => {
      commit()
      for (const scope of lost) {
        if (!socket.rooms.has(scope)) continue
        socket.leave(scope)
        const message: RevokedMessage = { scope }
        socket.emit(EVENT_REVOKED, message)
      }
    }).finally(() => {
      if (this.#rechecks.get(socket) === run) this.#rechecks.delete(socket)
    })
    this.#rechecks.set(socket, run)
    return run
  }

  async #subscribe (socket: RealtimeSocket, message: unknown): Promise<unknown> {
    const scope = (message as { scope?: unknown } | null)?.scope
    if (!isScope(scope)) return ackError('INVALID_SCOPE', 'A scope is kind:id, e.g. team:42')
    const since = sinceOf((message as { since?: unknown }).since)
    if (since === null) return ackError('BAD_REQUEST', 'since must be { seq, epoch }')
    const userId = socket.data.userId
    const own = userScope(userId)
    if (scope.startsWith('user:') && scope !== own) {
      return ackError('INVALID_SCOPE', 'A user scope belongs to its user')
    }
    if (scope !== own) {
      const refused = await this.#join(socket, scope)
      if (refused !== null) return refused
    } else if (!socket.connected) {
      return ackError('UNAVAILABLE', 'The socket is closed')
    }
    const { replayed, position } = await this.#catchUps.run(socket, scope, since)
    return { ok: true, scope, replayed, position }
  }

  /** Authorizes and joins `scope`; the negative ack when it may not, else null. */
  async #join (socket: RealtimeSocket, scope: string): Promise<unknown> {
    const pending = this.#pending.get(socket) ?? 0
    // socket.rooms holds the socket's own id room besides its scopes
    const held = socket.rooms.size - 1 + pending
    if (!socket.rooms.has(scope) && held >= this.#scopesPerSocket) {
      return ackError('LIMIT', `A socket may hold at most ${this.#scopesPerSocket} scopes`)
    }
    this.#pending.set(socket, pending + 1)
    try {
      for (let attempt = 1; ; attempt++) {
        const user = socket.data.user
        const allowed = await this.#memberships.allows(user, socket.data.userId, scope)
        const recheck = this.#rechecks.get(socket)
        if (recheck === undefined && socket.data.user === user) {
          if (!allowed) return ackError('FORBIDDEN', `Not allowed to subscribe to ${scope}`)
          if (!socket.connected) return ackError('UNAVAILABLE', 'The socket is closed')
          socket.join(scope)
          return null
        }
        // a token refresh came meanwhile: the answer was for the user before it
        if (attempt >= MAX_ASKS) return ackError('UNAVAILABLE', 'The token kept changing; try again')
        await recheck?.catch(() => {})
      }
    } catch (err) {
      if (err instanceof ConnectError) return ackError('UNAVAILABLE', err.message)
      throw err
    } finally {
      this.#pending.set(socket, (this.#pending.get(socket) ?? 1) - 1)
    }
  }
}
