import type { FastifyBaseLogger } from 'fastify'
import { ConnectError } from './auth.js'
import { catchUp } from './catchup.js'
import type { HistoryStore } from './history/store.js'
import type { NormalizedOptions } from './options.js'
import {
  EVENT_READY,
  EVENT_SUBSCRIBE,
  EVENT_UNSUBSCRIBE,
  ackError,
  isPosition,
  isScope,
  userScope,
  type Position
} from './protocol.js'
import type { ReadyMessage, RealtimeSocket, RealtimeUser } from './types.js'
import { reply, withTimeout } from './util.js'

type Options = Pick<NormalizedOptions, 'rooms' | 'canSubscribe' | 'limits'> & { timeoutMs: number }

/**
 * Which scopes a socket is in: the grant at connect, subscribe and unsubscribe, and the catch-up
 * that follows every join. Membership is asked of the app again at every subscribe.
 */
export class Rooms {
  readonly #options: Options
  readonly #store: HistoryStore | null
  readonly #log: FastifyBaseLogger
  /** Subscribes authorized but not yet joined, so parallel ones cannot pass the scope cap together. */
  readonly #pending = new WeakMap<RealtimeSocket, number>()

  constructor (options: Options, store: HistoryStore | null, log: FastifyBaseLogger) {
    this.#options = options
    this.#store = store
    this.#log = log
  }

  /** The scopes `rooms(user)` grants, cleaned; throws a ConnectError when the app cannot answer. */
  async granted (user: RealtimeUser, userId: string): Promise<string[]> {
    let scopes: readonly string[]
    try {
      scopes = await this.#ask(user)
    } catch (err) {
      this.#log.warn({ err }, 'fastify-realtime: rooms(user) failed at connect')
      throw new ConnectError('UNAVAILABLE', 'Memberships could not be looked up right now; try again')
    }
    const own = userScope(userId)
    const result = new Set<string>([own])
    for (const scope of scopes) {
      if (!isScope(scope) || (scope.startsWith('user:') && scope !== own)) {
        this.#log.warn({ scope }, 'fastify-realtime: rooms(user) returned a scope that cannot be granted; skipped')
        continue
      }
      result.add(scope)
    }
    return [...result]
  }

  /** Joins the granted scopes, answers subscribe/unsubscribe, catches up, then says ready. */
  async attach (socket: RealtimeSocket, scopes: string[]): Promise<void> {
    socket.on(EVENT_SUBSCRIBE, (message: unknown, ack: unknown) => {
      this.#subscribe(socket, message).then((answer) => reply(ack, answer), (err: unknown) => {
        this.#log.error({ err }, 'fastify-realtime: subscribe failed')
        reply(ack, ackError('UNAVAILABLE', 'The subscription could not be completed right now'))
      })
    })
    socket.on(EVENT_UNSUBSCRIBE, (message: unknown, ack: unknown) => {
      reply(ack, this.#unsubscribe(socket, message))
    })

    socket.join(scopes)
    const since = sinceMap((socket.handshake.auth as { since?: unknown } | undefined)?.since)
    const positions: Record<string, Position> = {}
    await Promise.all(scopes.map(async (scope) => {
      const { position } = await catchUp(socket, this.#store, scope, since?.[scope], this.#log)
      if (position !== null) positions[scope] = position
    }))
    if (!socket.connected) return
    const ready: ReadyMessage = { userId: socket.data.userId, scopes, positions }
    socket.emit(EVENT_READY, ready)
  }

  async #subscribe (socket: RealtimeSocket, message: unknown): Promise<unknown> {
    const scope = (message as { scope?: unknown } | null)?.scope
    if (!isScope(scope)) return ackError('INVALID_SCOPE', 'A scope is kind:id, e.g. team:42')
    const since = (message as { since?: unknown }).since
    if (since !== undefined && !isPosition(since)) {
      return ackError('BAD_REQUEST', 'since must be { seq, epoch }')
    }
    const own = userScope(socket.data.userId)
    if (scope.startsWith('user:') && scope !== own) {
      return ackError('FORBIDDEN', 'A user scope belongs to its user')
    }
    if (scope !== own) {
      const pending = this.#pending.get(socket) ?? 0
      // socket.rooms holds the socket's own id room besides its scopes
      const held = socket.rooms.size - 1 + pending
      if (!socket.rooms.has(scope) && held >= this.#options.limits.scopesPerSocket) {
        return ackError('LIMIT', `A socket may hold at most ${this.#options.limits.scopesPerSocket} scopes`)
      }
      this.#pending.set(socket, pending + 1)
      let allowed: boolean
      try {
        allowed = await this.#authorize(socket.data.user, scope)
      } catch (err) {
        this.#log.warn({ err, scope }, 'fastify-realtime: membership lookup failed at subscribe')
        return ackError('UNAVAILABLE', 'Memberships could not be looked up right now; try again')
      } finally {
        this.#pending.set(socket, (this.#pending.get(socket) ?? 1) - 1)
      }
      if (!allowed) return ackError('FORBIDDEN', `Not allowed to subscribe to ${scope}`)
    }
    if (!socket.connected) return ackError('UNAVAILABLE', 'The socket is closed')
    socket.join(scope)
    const { replayed, position } = await catchUp(socket, this.#store, scope, since as Position | undefined, this.#log)
    return { ok: true, scope, replayed, position }
  }

  #unsubscribe (socket: RealtimeSocket, message: unknown): unknown {
    const scope = (message as { scope?: unknown } | null)?.scope
    if (!isScope(scope)) return ackError('INVALID_SCOPE', 'A scope is kind:id, e.g. team:42')
    if (scope === userScope(socket.data.userId)) {
      return ackError('FORBIDDEN', 'A socket always stays in its own user scope')
    }
    socket.leave(scope)
    return { ok: true, scope }
  }

  async #ask (user: RealtimeUser): Promise<readonly string[]> {
    const scopes = await withTimeout(() => this.#options.rooms(user), this.#options.timeoutMs, 'rooms(user)')
    if (!Array.isArray(scopes)) throw new TypeError('rooms(user) must return an array of scopes')
    return scopes
  }

  async #authorize (user: RealtimeUser, scope: string): Promise<boolean> {
    if ((await this.#ask(user)).includes(scope)) return true
    const canSubscribe = this.#options.canSubscribe
    if (canSubscribe === null) return false
    return await withTimeout(() => canSubscribe(user, scope), this.#options.timeoutMs, 'canSubscribe') === true
  }
}

/** `auth.since` from the handshake: well-formed entries only; anything else is ignored. */
function sinceMap (value: unknown): Record<string, Position> | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
  const result: Record<string, Position> = Object.create(null)
  for (const [scope, position] of Object.entries(value)) {
    if (isScope(scope) && isPosition(position)) result[scope] = { seq: position.seq, epoch: position.epoch }
  }
  return result
}
