import type { FastifyBaseLogger } from 'fastify'
import type { RealtimeClock } from './clock.js'
import { queuedBytes, transports } from './internals.js'
import { EVENT_AUTH, ackError } from './protocol.js'
import type { RealtimeServer, RealtimeSocket } from './types.js'
import { cut, rateLimitedWarn } from './util.js'

/** A handler of one of the protocol's client-to-server events. */
export type EventRoute = (socket: RealtimeSocket, message: unknown, ack: unknown) => void

/** How many client-to-server events one socket may send. */
export interface EventLimits {
  /** Events per fixed window, `realtime:auth` aside; false: no cap. */
  rate: { max: number, windowMs: number } | false
  /** `realtime:auth` per minute, refilled evenly (one every 60 / n s). */
  refreshesPerMinute: number
}

/**
 * The `realtime:auth` budget of one socket: `max` refreshes at once, one more every
 * `60 / max` seconds. A client that refreshes when told (once per token) never comes near it,
 * and one that ran it dry gets its next refresh within seconds, well inside the refresh grace.
 * Built at a socket's first refresh: most sockets never need one.
 */
class RefreshBudget {
  readonly #max: number
  readonly #refillMs: number
  #left: number
  #refilledAt: number

  constructor (max: number, now: number) {
    this.#max = max
    this.#refillMs = 60_000 / max
    this.#left = max
    this.#refilledAt = now
  }

  /** Takes one refresh; false when none is left. */
  take (now: number): boolean {
    const earned = Math.floor((now - this.#refilledAt) / this.#refillMs)
    if (earned > 0) {
      this.#left = Math.min(this.#max, this.#left + earned)
      this.#refilledAt += earned * this.#refillMs
    }
    if (this.#left === 0) return false
    if (this.#left === this.#max) this.#refilledAt = now
    this.#left--
    return true
  }

  /** Seconds until the next refresh is earned. */
  retryIn (now: number): number {
    return Math.ceil((this.#refillMs - (now - this.#refilledAt)) / 1000)
  }
}

/**
 * One middleware per socket, ahead of the app's own: it caps client-to-server events in fixed
 * windows and answers the protocol's events (`routes`, by name), which never reach the app's
 * listeners. `realtime:auth` is outside that cap (a client over it must still be able to refresh
 * its token) and has a budget of its own (RefreshBudget), so a flood of refreshes costs at most
 * that many token checks and `auth.user` lookups.
 *
 * An event over either limit is dropped. The first one refused carries a RATE_LIMITED ack; the
 * others get no answer until an event is let through again: answering each would make a flood
 * of small events a larger flood of acks queued for the sender.
 */
export function routeEvents (
  socket: RealtimeSocket,
  limits: EventLimits,
  routes: Readonly<Record<string, EventRoute>>,
  clock: RealtimeClock,
  onLimited: (event: string) => void = () => {}
): void {
  const { rate } = limits
  let count = 0
  let windowEnds = 0
  let budget: RefreshBudget | undefined
  /** A RATE_LIMITED ack went out in this window (for a refresh: since the last one let through). */
  let told = false
  let refreshTold = false
  socket.use((packet, next) => {
    const event = packet[0] as string
    const route = Object.hasOwn(routes, event) ? routes[event] : undefined
    const ack = packet.length > 1 ? packet[packet.length - 1] : undefined
    if (event === EVENT_AUTH) {
      const now = clock.now()
      budget ??= new RefreshBudget(limits.refreshesPerMinute, now)
      if (!budget.take(now)) {
        onLimited(event)
        if (!refreshTold && typeof ack === 'function') {
          refreshTold = true
          ack(ackError('RATE_LIMITED', `Too many token refreshes; try again in ${budget.retryIn(now)} s`))
        }
        return
      }
      refreshTold = false
    } else if (rate !== false) {
      const now = clock.now()
      if (now >= windowEnds) {
        count = 0
        windowEnds = now + rate.windowMs
        told = false
      }
      if (++count > rate.max) {
        onLimited(event)
        if (!told && typeof ack === 'function') {
          told = true
          ack(ackError('RATE_LIMITED', `Too many events; try again in ${Math.ceil((windowEnds - now) / 1000)} s`))
        }
        return
      }
    }
    if (route === undefined) {
      next()
      return
    }
    route(socket, packet.length > 2 || typeof ack !== 'function' ? packet[1] : undefined, ack)
  })
}

/**
 * Sockets per user on each namespace of this node, capped at `max` (false: no cap). A handshake
 * takes a place once its user is known (`take`, refused with LIMIT when none is left) and gives
 * it back when it is refused later on (`release`); an admitted one hands its place to the socket
 * at `connection` (`connected`), which keeps it until it disconnects. A socket that an app's
 * middleware holds past the next turn connects without a reserved place: it takes one then, and
 * is disconnected when that goes past the cap, so the bound holds either way.
 */
export class UserConnections {
  readonly #max: number | false
  readonly #log: FastifyBaseLogger
  /** Places taken per user id, by namespace (a namespace cleaned up takes its counts along). */
  readonly #places = new WeakMap<object, Map<string, number>>()
  /** Admitted sockets whose place waits for their `connection`. */
  readonly #reserved = new WeakSet<RealtimeSocket>()
  /** Shared by every socket (`this` is the socket): no closure per connection. */
  readonly #onDisconnect: (this: RealtimeSocket) => void

  constructor (max: number | false, log: FastifyBaseLogger) {
    this.#max = max
    this.#log = log
    const limit = this
    this.#onDisconnect = function onDisconnect () { limit.release(this) }
  }

  /** Takes a place for the socket's user (`socket.data.userId`); false when the user holds every one. */
  take (socket: RealtimeSocket): boolean {
    if (this.#max === false) return true
    const places = this.#placesOf(socket)
    const taken = places.get(socket.data.userId) ?? 0
    if (taken >= this.#max) return false
    places.set(socket.data.userId, taken + 1)
    return true
  }

  /** The handshake let the socket in: its place is kept for its `connection`, at most until the next turn. */
  admitted (socket: RealtimeSocket): void {
    if (this.#max === false) return
    this.#reserved.add(socket)
    setImmediate(() => {
      if (this.#reserved.delete(socket)) this.release(socket)
    })
  }

  /** A socket connected: it keeps its place until it disconnects. */
  connected (socket: RealtimeSocket): void {
    if (this.#max === false) return
    if (!this.#reserved.delete(socket) && !this.take(socket)) {
      this.#log.warn({ userId: cut(socket.data.userId), max: this.#max }, 'fastify-realtime: a socket connected past limits.connectionsPerUser; disconnected')
      socket.disconnect(true)
      return
    }
    socket.on('disconnect', this.#onDisconnect)
  }

  /** Gives the socket's place back. */
  release (socket: RealtimeSocket): void {
    if (this.#max === false) return
    const places = this.#placesOf(socket)
    const left = (places.get(socket.data.userId) ?? 1) - 1
    if (left <= 0) places.delete(socket.data.userId)
    else places.set(socket.data.userId, left)
  }

  #placesOf (socket: RealtimeSocket): Map<string, number> {
    let places = this.#places.get(socket.nsp)
    if (places === undefined) this.#places.set(socket.nsp, places = new Map())
    return places
  }
}

/**
 * Closes the transport of a client that does not read what it is sent (a slow consumer), once
 * more than `maxBytes` wait for it, so its buffer cannot grow without bound and fan-out to the
 * others is not held back. The client sees a transport close and reconnects with `since`,
 * catching up from the log. One timer for the whole server, checking every second.
 */
export class SendBufferWatch {
  readonly #timer: NodeJS.Timeout

  constructor (io: RealtimeServer, maxBytes: number, log: FastifyBaseLogger, onClosed: () => void = () => {}) {
    const warn = rateLimitedWarn(log)
    this.#timer = setInterval(() => {
      for (const conn of transports(io)) {
        const queued = queuedBytes(conn, maxBytes)
        if (queued <= maxBytes) continue
        warn({ address: conn.remoteAddress, queued, maxBytes }, 'fastify-realtime: closing the transport of a client that does not keep up')
        onClosed()
        // discard: a plain close would wait for a drain that never comes
        conn.close(true)
      }
    }, 1000)
    this.#timer.unref()
  }

  close (): void {
    clearInterval(this.#timer)
  }
}
