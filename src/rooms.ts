import type { FastifyBaseLogger } from 'fastify'
import { ConnectError } from './auth.js'
import { ReplayFrames, catchUp, positionOf } from './catchup.js'
import { ExpiringMap } from './expiring-map.js'
import type { HistoryStore } from './history/store.js'
import type { NormalizedOptions } from './options.js'
import {
  EVENT_READY,
  ackError,
  isPosition,
  isScope,
  userScope,
  type Position
} from './protocol.js'
import type { ReadyMessage, RealtimeSocket, RealtimeUser } from './types.js'
import { isPromiseLike, reply, withTimeout } from './util.js'

type Options = Pick<NormalizedOptions, 'rooms' | 'canSubscribe' | 'limits'> & { timeoutMs: number }

/**
 * An authorization in flight for one user (a handshake or a subscribe). A `leave` or
 * `disconnectUser` that lands while it waits on the app marks it, so its answer is not used:
 * it may predate the membership change.
 */
export interface Grant {
  revoked: boolean
}

/** How often an authorization is asked again when membership changes keep landing during it. */
const MAX_ASKS = 5

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
  /** Authorizations in flight by user id; an entry lives only while one is. */
  readonly #grants = new Map<string, Set<Grant>>()
  /** Catch-up failures during a store outage come with every reconnect: warned at most every 10 s. */
  readonly #warnCatchUp: (details: object, message: string) => void
  readonly #frames: ReplayFrames
  /**
   * `disconnectUser` calls applied on this node, counted, with the count of each user's latest:
   * a handshake or subscribe compares it with the count when it began. Kept long enough to
   * outlast any handshake or subscribe still waiting on the app's lookups.
   */
  #disconnects = 0
  readonly #disconnected = new ExpiringMap<string, number>()
  readonly #disconnectedKeepMs: number

  constructor (options: Options, store: HistoryStore | null, log: FastifyBaseLogger, encoder?: unknown) {
    this.#options = options
    this.#store = store
    this.#log = log
    this.#frames = new ReplayFrames(encoder)
    this.#disconnectedKeepMs = Math.max(60_000, 2 * (MAX_ASKS + 1) * options.timeoutMs)
    let lastWarning = -Infinity
    this.#warnCatchUp = (details, message) => {
      const now = Date.now()
      if (now - lastWarning < 10_000) return log.debug(details, message)
      lastWarning = now
      log.warn(details, message)
    }
  }

  /** Answers `realtime:subscribe { scope, since? }`. */
  subscribe (socket: RealtimeSocket, message: unknown, ack: unknown): void {
    this.#subscribe(socket, message).then((answer) => reply(ack, answer), (err: unknown) => {
      this.#log.error({ err }, 'fastify-realtime: subscribe failed')
      reply(ack, ackError('UNAVAILABLE', 'The subscription could not be completed right now'))
    })
  }

  /** Answers `realtime:unsubscribe { scope }`. */
  unsubscribe (socket: RealtimeSocket, message: unknown, ack: unknown): void {
    reply(ack, this.#unsubscribe(socket, message))
  }

  /** Opens an authorization for `userId`; close it with `settle` once its answer is applied. */
  open (userId: string): Grant {
    const grant: Grant = { revoked: false }
    let set = this.#grants.get(userId)
    if (set === undefined) this.#grants.set(userId, set = new Set())
    set.add(grant)
    return grant
  }

  settle (userId: string, grant: Grant): void {
    const set = this.#grants.get(userId)
    if (set === undefined) return
    set.delete(grant)
    if (set.size === 0) this.#grants.delete(userId)
  }

  /** A membership of `userId` was removed on this node: answers still in flight are stale. */
  revoke (userId: string, disconnected = false): void {
    if (disconnected) {
      const now = Date.now()
      this.#disconnected.sweep(now)
      this.#disconnected.set(userId, ++this.#disconnects, now + this.#disconnectedKeepMs)
    }
    const set = this.#grants.get(userId)
    if (set === undefined) return
    for (const grant of set) grant.revoked = true
  }

  /** Where the count of `disconnectUser` calls stands: pass it to `disconnectedSince` later. */
  mark (): number {
    return this.#disconnects
  }

  /** True when `userId` was disconnected after `mark` was taken. */
  disconnectedSince (userId: string, mark: number): boolean {
    if (this.#disconnects === mark) return false
    return (this.#disconnected.get(userId, Date.now()) ?? 0) > mark
  }

  /**
   * The scopes `rooms(user)` grants, cleaned and capped at `limits.scopesPerSocket`; asked again
   * when a membership change lands meanwhile. Throws (or rejects with) a ConnectError when the
   * app cannot answer. A synchronous `rooms` is answered synchronously: nothing can land meanwhile.
   */
  granted (user: RealtimeUser, userId: string, mark: number): string[] | Promise<string[]> {
    let scopes: readonly string[] | Promise<readonly string[]>
    try {
      scopes = this.#ask(user)
    } catch (err) {
      throw this.#lookupFailed(err)
    }
    if (!isPromiseLike(scopes)) return this.#clean(scopes, userId)
    // only an answer that takes a while can be overtaken by a leave or a disconnect: watch for
    // them until it is in (what follows up to the join runs without waiting on anything)
    const grant = this.open(userId)
    return this.#grantedLater(scopes, user, userId, grant, mark).finally(() => this.settle(userId, grant))
  }

  async #grantedLater (first: Promise<readonly string[]>, user: RealtimeUser, userId: string, grant: Grant, mark: number): Promise<string[]> {
    let asking = first
    for (let ask = 1; ; ask++) {
      let scopes: readonly string[]
      try {
        scopes = await asking
      } catch (err) {
        throw this.#lookupFailed(err)
      }
      if (this.disconnectedSince(userId, mark)) throw disconnectedMeanwhile()
      if (!grant.revoked) return this.#clean(scopes, userId)
      if (ask >= MAX_ASKS) throw new ConnectError('UNAVAILABLE', 'Memberships kept changing; try again')
      grant.revoked = false
      asking = Promise.resolve().then(() => this.#ask(user))
    }
  }

  #lookupFailed (err: unknown): ConnectError {
    this.#log.warn({ err }, 'fastify-realtime: rooms(user) failed at connect')
    return new ConnectError('UNAVAILABLE', 'Memberships could not be looked up right now; try again')
  }

  /**
   * Joins the granted scopes, catches up, then says ready. With nothing to replay and a
   * synchronous store, all of it happens before it returns.
   */
  attach (socket: RealtimeSocket, scopes: string[]): Promise<void> | undefined {
    socket.join(scopes)
    const since = sinceMap((socket.handshake.auth as { since?: unknown } | undefined)?.since)
    // keyed by scope names that differ per user: a dictionary object, so each connection does not
    // leave V8 a new hidden class behind
    const positions: Record<string, Position> = Object.create(null)
    const catchingUp: Array<Promise<void>> = []
    for (const scope of scopes) {
      const from = since?.[scope]
      if (from === undefined) {
        // the usual first connect: only the position, which a synchronous store (memory) gives
        // at once, without a promise per scope
        if (this.#store === null) continue
        const position = positionOf(this.#store, scope, this.#warnCatchUp)
        if (isPromiseLike(position)) {
          catchingUp.push(position.then((answer) => { if (answer !== null) positions[scope] = answer }))
        } else if (position !== null) {
          positions[scope] = position
        }
        continue
      }
      catchingUp.push(catchUp(socket, this.#store, scope, from, this.#warnCatchUp, this.#frames).then((result) => {
        if (result.position !== null) positions[scope] = result.position
      }))
    }
    const ready = (): void => {
      if (!socket.connected) return
      const message: ReadyMessage = { userId: socket.data.userId, scopes, positions }
      socket.emit(EVENT_READY, message)
    }
    if (catchingUp.length > 0) return Promise.all(catchingUp).then(ready)
    ready()
    return undefined
  }

  #clean (scopes: readonly string[], userId: string): string[] {
    const own = userScope(userId)
    const result = new Set<string>([own])
    for (const scope of scopes) {
      if (!isScope(scope) || (scope.startsWith('user:') && scope !== own)) {
        this.#log.warn({ scope }, 'fastify-realtime: rooms(user) returned a scope that cannot be granted; skipped')
        continue
      }
      if (!result.has(scope) && result.size >= this.#options.limits.scopesPerSocket) {
        this.#log.warn({ userId, max: this.#options.limits.scopesPerSocket }, 'fastify-realtime: rooms(user) returned more scopes than limits.scopesPerSocket; the rest are not joined')
        break
      }
      result.add(scope)
    }
    return [...result]
  }

  async #subscribe (socket: RealtimeSocket, message: unknown): Promise<unknown> {
    const scope = (message as { scope?: unknown } | null)?.scope
    if (!isScope(scope)) return ackError('INVALID_SCOPE', 'A scope is kind:id, e.g. team:42')
    const since = (message as { since?: unknown }).since
    if (since !== undefined && !isPosition(since)) {
      return ackError('BAD_REQUEST', 'since must be { seq, epoch }')
    }
    const userId = socket.data.userId
    const own = userScope(userId)
    if (scope.startsWith('user:') && scope !== own) {
      return ackError('INVALID_SCOPE', 'A user scope belongs to its user')
    }
    if (scope !== own) {
      const pending = this.#pending.get(socket) ?? 0
      // socket.rooms holds the socket's own id room besides its scopes
      const held = socket.rooms.size - 1 + pending
      if (!socket.rooms.has(scope) && held >= this.#options.limits.scopesPerSocket) {
        return ackError('LIMIT', `A socket may hold at most ${this.#options.limits.scopesPerSocket} scopes`)
      }
      this.#pending.set(socket, pending + 1)
      const grant = this.open(userId)
      const mark = this.#disconnects
      try {
        const allowed = await this.#authorize(socket.data.user, userId, scope, grant, mark)
        if (!allowed) return ackError('FORBIDDEN', `Not allowed to subscribe to ${scope}`)
        if (!socket.connected) return ackError('UNAVAILABLE', 'The socket is closed')
        socket.join(scope)
      } catch (err) {
        this.#log.warn({ err, scope }, 'fastify-realtime: membership lookup failed at subscribe')
        return ackError('UNAVAILABLE', 'Memberships could not be looked up right now; try again')
      } finally {
        this.settle(userId, grant)
        this.#pending.set(socket, (this.#pending.get(socket) ?? 1) - 1)
      }
    } else if (!socket.connected) {
      return ackError('UNAVAILABLE', 'The socket is closed')
    }
    const { replayed, position } = await catchUp(socket, this.#store, scope, since as Position | undefined, this.#warnCatchUp, this.#frames)
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

  /** rooms(user), checked; synchronous when the app's function is. */
  #ask (user: RealtimeUser): readonly string[] | Promise<readonly string[]> {
    const scopes = withTimeout(() => this.#options.rooms(user), this.#options.timeoutMs, 'rooms(user)')
    return isPromiseLike(scopes) ? Promise.resolve(scopes).then(scopesOnly) : scopesOnly(scopes)
  }

  async #allowedBeyondRooms (user: RealtimeUser, scope: string): Promise<boolean> {
    const canSubscribe = this.#options.canSubscribe
    if (canSubscribe === null) return false
    return await withTimeout(() => canSubscribe(user, scope), this.#options.timeoutMs, 'canSubscribe') === true
  }

  /** rooms(user), then canSubscribe; asked again while membership changes land during the asking. */
  async #authorize (user: RealtimeUser, userId: string, scope: string, grant: Grant, mark: number): Promise<boolean> {
    for (let ask = 1; ; ask++) {
      grant.revoked = false
      const allowed = (await this.#ask(user)).includes(scope) || await this.#allowedBeyondRooms(user, scope)
      if (this.disconnectedSince(userId, mark)) throw new Error('the user was disconnected during the subscribe')
      if (!grant.revoked) return allowed
      if (ask >= MAX_ASKS) throw new Error('memberships kept changing during the subscribe')
    }
  }
}

/** The refusal of a handshake whose user was disconnected while its lookups were out. */
export function disconnectedMeanwhile (): ConnectError {
  return new ConnectError('UNAVAILABLE', 'This user was disconnected; try again')
}

function scopesOnly (scopes: readonly string[]): readonly string[] {
  if (!Array.isArray(scopes)) throw new TypeError('rooms(user) must return an array of scopes')
  return scopes
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
