import type { FastifyBaseLogger } from 'fastify'
import { EVENT_AUTH, ackError } from './protocol.js'
import type { RealtimeServer, RealtimeSocket } from './types.js'
import { reply } from './util.js'

/** A handler of one of the protocol's client-to-server events. */
export type EventRoute = (socket: RealtimeSocket, message: unknown, ack: unknown) => void

/**
 * One middleware per socket, ahead of the app's own: it caps client-to-server events in fixed
 * windows (an event over the cap is dropped and, when it carries an ack, answered with
 * RATE_LIMITED) and answers the protocol's events (`routes`, by name), which never reach the
 * app's listeners. `realtime:auth` is never capped: a client over its cap must still be able to
 * refresh its token. `rate` false: no cap.
 */
export function routeEvents (socket: RealtimeSocket, rate: { max: number, windowMs: number } | false, routes: Readonly<Record<string, EventRoute>>): void {
  let count = 0
  let windowEnds = 0
  socket.use((packet, next) => {
    const event = packet[0] as string
    const route = Object.hasOwn(routes, event) ? routes[event] : undefined
    const ack = packet.length > 1 ? packet[packet.length - 1] : undefined
    if (rate !== false && event !== EVENT_AUTH) {
      const now = Date.now()
      if (now >= windowEnds) {
        count = 0
        windowEnds = now + rate.windowMs
      }
      if (++count > rate.max) {
        const retryIn = Math.ceil((windowEnds - now) / 1000)
        reply(ack, ackError('RATE_LIMITED', `Too many events; try again in ${retryIn} s`))
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

/** The part of an engine.io connection these limits read. */
interface EngineConnection {
  remoteAddress: string
  writeBuffer: Array<{ data?: unknown }>
  transport?: { socket?: { bufferedAmount?: unknown } }
  on: (event: 'close', listener: (this: EngineConnection) => void) => void
  close: (discard?: boolean) => void
}

/**
 * Transports per client address that are open but not yet authenticated. A flood of idle or
 * slow handshakes from one address is refused at the HTTP level once `max` are pending; each
 * one is released when a namespace handshake on it succeeds or the transport closes (Socket.IO
 * closes one that has not connected a namespace within `connectTimeout`). A refused CONNECT
 * keeps its place.
 */
export class HandshakeGuard {
  readonly #max: number | false
  readonly #pending = new Map<string, number>()
  readonly #open = new WeakSet<object>()
  /** Namespaces with a handshake running, per transport (nearly always just `/`): a second CONNECT meanwhile is refused. */
  readonly #running = new WeakMap<object, string | Set<string>>()

  /** One listener for every transport (`this` is the transport): no closure per connection. */
  readonly #onClose: (this: EngineConnection) => void

  constructor (max: number | false) {
    this.#max = max
    const guard = this
    this.#onClose = function onClose () { guard.authenticated(this) }
  }

  /** False when `address` is at its cap (for `allowRequest`). */
  admits (address: string | undefined): boolean {
    return this.#max === false || address === undefined || (this.#pending.get(address) ?? 0) < this.#max
  }

  /** Counts a new transport (engine.io `connection`). */
  opened (conn: EngineConnection): void {
    if (this.#max === false) return
    const address = conn.remoteAddress
    this.#pending.set(address, (this.#pending.get(address) ?? 0) + 1)
    this.#open.add(conn)
    conn.on('close', this.#onClose)
  }

  /** Releases the transport's place; later calls for it do nothing. */
  authenticated (conn: { remoteAddress: string }): void {
    if (!this.#open.has(conn)) return
    this.#open.delete(conn)
    const address = conn.remoteAddress
    const left = (this.#pending.get(address) ?? 1) - 1
    if (left <= 0) this.#pending.delete(address)
    else this.#pending.set(address, left)
  }

  /** Marks a namespace handshake as running on `conn`; false when one already is. */
  begin (conn: object, namespace: string): boolean {
    const running = this.#running.get(conn)
    if (running === undefined) {
      this.#running.set(conn, namespace)
      return true
    }
    if (running === namespace || (typeof running !== 'string' && running.has(namespace))) return false
    if (typeof running === 'string') this.#running.set(conn, new Set([running, namespace]))
    else running.add(namespace)
    return true
  }

  end (conn: object, namespace: string): void {
    const running = this.#running.get(conn)
    if (running === undefined) return
    if (running === namespace) {
      this.#running.delete(conn)
      return
    }
    if (typeof running === 'string') return
    running.delete(namespace)
    if (running.size === 0) this.#running.delete(conn)
  }
}

function byteLength (data: unknown): number {
  if (typeof data === 'string') return data.length
  if (data instanceof ArrayBuffer) return data.byteLength
  if (ArrayBuffer.isView(data)) return data.byteLength
  return 0
}

/**
 * Closes the transport of a client that does not read what it is sent (a slow consumer), once
 * more than `maxBytes` wait for it, so its buffer cannot grow without bound and fan-out to the
 * others is not held back. The client sees a transport close and reconnects with `since`,
 * catching up from the log. One timer for the whole server, checking every second.
 */
export class SendBufferWatch {
  readonly #timer: NodeJS.Timeout

  constructor (io: RealtimeServer, maxBytes: number, log: FastifyBaseLogger) {
    this.#timer = setInterval(() => {
      const { clients } = io.engine as unknown as { clients: Record<string, EngineConnection> }
      for (const id in clients) {
        const conn = clients[id]!
        const ws = conn.transport?.socket?.bufferedAmount
        let queued = typeof ws === 'number' ? ws : 0
        for (const packet of conn.writeBuffer) {
          queued += byteLength(packet.data)
          if (queued > maxBytes) break
        }
        if (queued <= maxBytes) continue
        log.warn({ address: conn.remoteAddress, queued, maxBytes }, 'fastify-realtime: closing the transport of a client that does not keep up')
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
