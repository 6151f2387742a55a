import type { FastifyBaseLogger } from 'fastify'
import type { RealtimeClock } from './clock.js'
import { ConnectError } from './credentials.js'
import { ExpiringMap } from './expiring-map.js'
import type { NormalizedOptions } from './options.js'
import { isScope, userScope } from './protocol.js'
import type { RealtimeUser } from './types.js'
import { cut, rateLimitedWarn, withTimeout } from './util.js'

type Options = Pick<NormalizedOptions, 'rooms' | 'canSubscribe'> & { scopesPerSocket: number, timeoutMs: number }

/** How often a question is asked again when membership changes keep landing while it is out. */
const MAX_ASKS = 5

/**
 * An authorization in flight for one user (a handshake or a subscribe). A `leave` or
 * `disconnectUser` that lands while it waits on the app marks it: its answer may predate the
 * change, so the question is asked again.
 */
interface Question {
  stale: boolean
}

/**
 * The app's answers about who may see what: `rooms(user)` at connect and at every subscribe,
 * `canSubscribe(user, scope)` beyond them. Membership changes applied on this node (a `leave`
 * or `disconnectUser`, issued here or on another node) reach it through `removed`, so an
 * answer still in flight for that user is not used: it is asked for again, and a handshake of
 * a user disconnected meanwhile is refused.
 *
 * Every failure is a ConnectError with code UNAVAILABLE: the app could not answer, or the
 * memberships kept changing. The caller turns it into a refused handshake or a negative ack.
 */
export class Memberships {
  readonly #options: Options
  readonly #clock: RealtimeClock
  readonly #warn: (details: object, message: string) => void
  /** Questions in flight by user id; an entry lives only while one is. */
  readonly #asking = new Map<string, Set<Question>>()
  /**
   * `disconnectUser` calls applied on this node, counted, with the count of each user's latest:
   * a handshake compares it with the count when it began. Kept long enough to outlast any
   * handshake still waiting on the app's lookups.
   */
  #disconnects = 0
  readonly #disconnected = new ExpiringMap<string, number>()
  readonly #keepMs: number

  constructor (options: Options, log: FastifyBaseLogger, clock: RealtimeClock) {
    this.#options = options
    this.#clock = clock
    this.#warn = rateLimitedWarn(log, 10_000, clock.now)
    this.#keepMs = Math.max(60_000, 2 * (MAX_ASKS + 1) * options.timeoutMs)
  }

  /** A membership of `userId` was removed on this node: answers in flight for the user are stale. */
  removed (userId: string, disconnected: boolean): void {
    if (disconnected) {
      const now = this.#clock.now()
      this.#disconnected.sweep(now)
      this.#disconnected.set(userId, ++this.#disconnects, now + this.#keepMs)
    }
    for (const question of this.#asking.get(userId) ?? []) question.stale = true
  }

  /** Where the count of `disconnectUser` calls stands: take it when a handshake begins. */
  mark (): number {
    return this.#disconnects
  }

  /** True when `userId` was disconnected after `mark` was taken. */
  disconnectedSince (userId: string, mark: number): boolean {
    if (this.#disconnects === mark) return false
    return (this.#disconnected.get(userId, this.#clock.now()) ?? 0) > mark
  }

  /**
   * The scopes a socket of `user` joins at connect: its own user scope and what `rooms(user)`
   * grants, cleaned and capped at `limits.scopesPerSocket`. Refused when the user was
   * disconnected after `mark`.
   */
  async granted (user: RealtimeUser, userId: string, mark: number): Promise<string[]> {
    const scopes = await this.#settled(userId, mark, async () => await this.#rooms(user))
    return this.#clean(scopes, userId)
  }

  /** Whether `user` may subscribe to `scope` now: it is in `rooms(user)`, or `canSubscribe` says yes. */
  async allows (user: RealtimeUser, userId: string, scope: string): Promise<boolean> {
    return (await this.refused(user, userId, [scope])).length === 0
  }

  /** Those of `scopes` that `user` may not hold now: neither in `rooms(user)` nor allowed by `canSubscribe`. */
  async refused (user: RealtimeUser, userId: string, scopes: readonly string[]): Promise<string[]> {
    return await this.#settled(userId, this.#disconnects, async () => {
      const rooms = new Set(await this.#rooms(user))
      const beyond = scopes.filter((scope) => !rooms.has(scope))
      const allowed = await Promise.all(beyond.map(async (scope) => await this.#beyondRooms(user, scope)))
      return beyond.filter((_scope, i) => !allowed[i])
    })
  }

  /** Asks until an answer comes back that no membership change overtook. */
  async #settled<T> (userId: string, mark: number, ask: () => Promise<T>): Promise<T> {
    const question: Question = { stale: false }
    let asking = this.#asking.get(userId)
    if (asking === undefined) this.#asking.set(userId, asking = new Set())
    asking.add(question)
    try {
      for (let attempt = 1; ; attempt++) {
        question.stale = false
        let answer: T
        try {
          answer = await ask()
        } catch (err) {
          this.#warn({ err }, 'fastify-realtime: rooms(user) or canSubscribe failed')
          throw new ConnectError('UNAVAILABLE', 'Memberships could not be looked up right now; try again')
        }
        if (this.disconnectedSince(userId, mark)) throw new ConnectError('UNAVAILABLE', 'This user was disconnected; try again')
        if (!question.stale) return answer
        if (attempt >= MAX_ASKS) throw new ConnectError('UNAVAILABLE', 'Memberships kept changing; try again')
      }
    } finally {
      asking.delete(question)
      if (asking.size === 0) this.#asking.delete(userId)
    }
  }

  async #rooms (user: RealtimeUser): Promise<readonly string[]> {
    const scopes = await withTimeout(() => this.#options.rooms(user), this.#options.timeoutMs, 'rooms(user)')
    if (!Array.isArray(scopes)) throw new TypeError('rooms(user) must return an array of scopes')
    return scopes
  }

  async #beyondRooms (user: RealtimeUser, scope: string): Promise<boolean> {
    const canSubscribe = this.#options.canSubscribe
    if (canSubscribe === null) return false
    return await withTimeout(() => canSubscribe(user, scope), this.#options.timeoutMs, 'canSubscribe') === true
  }

  #clean (scopes: readonly string[], userId: string): string[] {
    const own = userScope(userId)
    const result = new Set<string>([own])
    const max = this.#options.scopesPerSocket
    for (const scope of scopes) {
      if (!isScope(scope) || (scope.startsWith('user:') && scope !== own)) {
        this.#warn({ scope: cut(scope) }, 'fastify-realtime: rooms(user) returned a scope that cannot be granted; skipped')
        continue
      }
      if (!result.has(scope) && result.size >= max) {
        this.#warn({ userId: cut(userId), max }, 'fastify-realtime: rooms(user) returned more scopes than limits.scopesPerSocket; the rest are not joined')
        break
      }
      result.add(scope)
    }
    return [...result]
  }
}
