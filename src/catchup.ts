import { replayMeta } from './event.js'
import type { HistoryStore, ReadResult, StoredEvent } from './history/store.js'
import { tapWrites, writeEncoded, type OutgoingPacket, type WriteTap } from './internals.js'
import type { Instruments } from './metrics.js'
import { EVENT_RESYNC, EVENT_SKIP, isPosition, isScope, type Position, type ResyncReason } from './protocol.js'
import type { RealtimeSocket, ResyncMessage, SkipMessage } from './types.js'

export interface CatchUp {
  /** Events replayed to the socket. */
  replayed: number
  /** Where the socket now stands in the scope's log; null without history, or when the store cannot say. */
  position: Position | null
}

/** A warning said at most so often (see rateLimitedWarn). */
type Warn = (details: object, message: string) => void

/** `since` as a client sends it with a subscribe: undefined when absent, null when malformed. */
export function sinceOf (value: unknown): Position | undefined | null {
  if (value === undefined) return undefined
  return isPosition(value) ? { seq: value.seq, epoch: value.epoch } : null
}

/** `auth.since` of a handshake, `{ [scope]: { seq, epoch } }`: its well-formed entries; anything else is ignored. */
export function sinceMap (value: unknown): Record<string, Position> {
  const result: Record<string, Position> = Object.create(null)
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return result
  for (const [scope, position] of Object.entries(value)) {
    const since = sinceOf(position)
    if (isScope(scope) && since) result[scope] = since
  }
  return result
}

function resync (socket: RealtimeSocket, scope: string, reason: ResyncReason): void {
  const message: ResyncMessage = { scope, reason }
  socket.emit(EVENT_RESYNC, message)
}

/** Tells `target` (a socket, or a room) that `position.seq` of `scope` carries nothing for it. */
export function skip (target: { emit: (event: string, message: SkipMessage) => boolean }, scope: string, position: Position): void {
  const message: SkipMessage = { scope, seq: position.seq, epoch: position.epoch }
  target.emit(EVENT_SKIP, message)
}

/** The scope and seq an outgoing packet carries: an event's meta, or a `realtime:skip`. */
export function placeOf (packet: OutgoingPacket | undefined): { scope: string, seq: number, epoch: unknown } | null {
  const data = packet?.data
  if (!Array.isArray(data)) return null
  const carrier = (data[0] === EVENT_SKIP ? data[1] : data[2]) as { scope?: unknown, seq?: unknown, epoch?: unknown } | null | undefined
  if (carrier === null || typeof carrier !== 'object') return null
  if (typeof carrier.scope !== 'string' || typeof carrier.seq !== 'number') return null
  return { scope: carrier.scope, seq: carrier.seq, epoch: carrier.epoch }
}

type Held = [packet: OutgoingPacket | undefined, encoded: unknown, opts: unknown]

/**
 * Live events of the scopes a socket is catching up in, held back while the log is read, so
 * the replay reaches the socket before them and what it already covers is not sent twice: in
 * order and exactly once on the wire, even with a store that answers asynchronously (Redis).
 * It taps the socket's writes for as long as a catch-up runs, and no longer.
 */
class Hold {
  readonly #scopes = new Map<string, Held[]>()
  readonly #tap: WriteTap
  /** True while the replay itself is written. */
  replaying = false

  constructor (socket: RealtimeSocket) {
    this.#tap = tapWrites(socket, (packet, encoded, opts) => {
      if (this.replaying) return true
      const place = placeOf(packet)
      const queue = place === null ? undefined : this.#scopes.get(place.scope)
      if (queue === undefined) return true
      queue.push([packet, encoded, opts])
      return false
    })
  }

  add (scope: string): void {
    if (!this.#scopes.has(scope)) this.#scopes.set(scope, [])
  }

  /** Sends what was held for `scope`, leaving out what the replay up to `head` covered; true once nothing is held. */
  release (scope: string, head: Position | null): boolean {
    const queue = this.#scopes.get(scope)
    this.#scopes.delete(scope)
    for (const [packet, encoded, opts] of queue ?? []) {
      const place = placeOf(packet)
      if (head !== null && place !== null && place.epoch === head.epoch && place.seq <= head.seq) continue
      this.#tap.send(encoded, opts)
    }
    if (this.#scopes.size > 0) return false
    this.#tap.remove()
    return true
  }
}

const holds = new WeakMap<RealtimeSocket, Hold>()

function holdFor (socket: RealtimeSocket, scope: string): Hold {
  let hold = holds.get(socket)
  if (hold === undefined) holds.set(socket, hold = new Hold(socket))
  hold.add(scope)
  return hold
}

/** Socket.IO's EVENT packet type. */
const EVENT_PACKET = 2

interface Encoder {
  encode: (packet: { type: number, nsp: string, data: unknown[] }) => unknown[]
}

interface Frame {
  data: unknown[]
  encoded: unknown[]
  bytes: number
}

/**
 * Replayed events encoded once and written to every socket that replays them: after a node goes
 * away, its clients reconnect together and replay the same events, and encoding each one per
 * socket would cost more than the live delivery did (which Socket.IO encodes once per broadcast).
 * Bounded by entries and bytes; an entry never changes, since `(scope, epoch, seq)` names one event.
 */
export class ReplayFrames {
  readonly #encoder: Encoder
  readonly #frames = new Map<string, Frame>()
  readonly #maxEntries: number
  readonly #maxBytes: number
  #bytes = 0

  constructor (encoder: Encoder, maxEntries = 2000, maxBytes = 16 * 1024 * 1024) {
    this.#encoder = encoder
    this.#maxEntries = maxEntries
    this.#maxBytes = maxBytes
  }

  /** Writes one replayed event to `socket`; false when it cannot be encoded. */
  write (socket: RealtimeSocket, scope: string, epoch: string, stored: StoredEvent): boolean {
    const key = `${epoch}\u0000${stored.seq}\u0000${scope}`
    let frame = this.#frames.get(key)
    if (frame === undefined) {
      const data = [stored.event, stored.payload, replayMeta(scope, epoch, stored)]
      let encoded: unknown[]
      try {
        encoded = this.#encoder.encode({ type: EVENT_PACKET, nsp: '/', data })
      } catch {
        return false
      }
      let bytes = 0
      for (const part of encoded) bytes += typeof part === 'string' ? part.length : (part as { byteLength?: number }).byteLength ?? 0
      frame = { data, encoded, bytes }
      if (bytes <= this.#maxBytes) this.#keep(key, frame)
    }
    if (socket.connected) writeEncoded(socket, frame.data, frame.encoded)
    return true
  }

  #keep (key: string, frame: Frame): void {
    this.#frames.set(key, frame)
    this.#bytes += frame.bytes
    for (const [oldest, old] of this.#frames) {
      if (this.#frames.size <= this.#maxEntries && this.#bytes <= this.#maxBytes) break
      this.#frames.delete(oldest)
      this.#bytes -= old.bytes
    }
  }
}

/**
 * Positions and replays, for sockets that have just joined a scope: since → replay or resync,
 * in order before the scope's live events. Called only after the socket was authorized for and
 * joined to the scope.
 */
export class CatchUps {
  readonly #store: HistoryStore | null
  readonly #frames: ReplayFrames
  readonly #warn: Warn
  readonly #metrics: Pick<Instruments, 'replayed' | 'resync'>
  readonly #onPosition: (socket: RealtimeSocket, scope: string, position: Position) => void
  /**
   * Set when the adapter subscribes one channel per room (the sharded adapter on a Redis
   * Cluster): resolves once the subscriptions asked for so far have settled.
   */
  channelsReady: (() => Promise<void>) | null = null

  /** `onPosition` hears where each socket stands in a scope once it has caught up (the recovery starts from there). */
  constructor (store: HistoryStore | null, encoder: Encoder, warn: Warn, metrics: Pick<Instruments, 'replayed' | 'resync'>, onPosition: (socket: RealtimeSocket, scope: string, position: Position) => void = () => {}) {
    this.#store = store
    this.#frames = new ReplayFrames(encoder)
    this.#warn = warn
    this.#metrics = metrics
    this.#onPosition = onPosition
  }

  /**
   * Brings `socket` up to date in `scope`. With `since`, replays what it missed (in order, marked
   * `replayed`, before any live event of the scope) or tells it to resync; either way returns
   * its position.
   */
  async run (socket: RealtimeSocket, scope: string, since: Position | undefined): Promise<CatchUp> {
    const caughtUp = await this.#run(socket, scope, since)
    if (caughtUp.position !== null) this.#onPosition(socket, scope, caughtUp.position)
    return caughtUp
  }

  /**
   * Brings the sockets of a room up to date in `scope` with one read of the log (the recovery
   * after a Redis blip). From this call on, live events of the scope wait on each socket; the
   * returned function reads the log from `since` and writes each socket its replay before them. A
   * socket that already stands further (`own(socket)`: it caught up by itself meanwhile) gets only
   * what lies beyond its own position, so no seq is replayed to it twice. It resolves with how many
   * events were read, or the reason every socket was told to resync.
   */
  holdRoom (sockets: RealtimeSocket[], scope: string): (since: Position | null, own: (socket: RealtimeSocket) => Position | undefined) => Promise<number | ResyncReason> {
    const held = sockets.map((socket) => [socket, holdFor(socket, scope)] as const)
    return async (since, own) => {
      let head: Position | null = null
      try {
        const store = this.#store
        if (store === null || since === null) return this.#resyncAll(sockets, scope, 'unavailable')
        const result = await store.read(scope, since)
        if (!result.ok) return this.#resyncAll(sockets, scope, result.reason)
        const { epoch } = result.position
        for (const [socket, hold] of held) {
          // a membership change applied meanwhile may have taken the socket out of the scope
          if (!socket.rooms.has(scope)) continue
          const stands = own(socket)
          hold.replaying = true
          try {
            this.#replay(socket, scope, result, stands !== undefined && stands.epoch === epoch ? stands.seq : since.seq)
          } finally {
            hold.replaying = false
          }
        }
        head = result.position
        this.#metrics.replayed(result.events.length)
        return result.events.length
      } catch (err) {
        this.#warn({ err, scope }, 'fastify-realtime: history unavailable after the Redis subscriber came back; resync sent')
        return this.#resyncAll(sockets, scope, 'unavailable')
      } finally {
        for (const [socket, hold] of held) if (hold.release(scope, head)) holds.delete(socket)
      }
    }
  }

  /** The scope's position in the store; null (after a warning) without history or when the store cannot say. */
  async position (scope: string): Promise<Position | null> {
    if (this.#store === null) return null
    try {
      return await this.#store.position(scope)
    } catch (err) {
      this.#warn({ err, scope }, 'fastify-realtime: history unavailable for a position')
      return null
    }
  }

  async #run (socket: RealtimeSocket, scope: string, since: Position | undefined): Promise<CatchUp> {
    const store = this.#store
    // the room was joined just now: with a channel per room, this node listens on it before the
    // log is read, so an event is either in what is read or delivered live
    if (this.channelsReady !== null) await this.channelsReady()
    if (since === undefined) return { replayed: 0, position: await this.position(scope) }
    if (store === null) {
      this.#resync(socket, scope, 'unavailable')
      return { replayed: 0, position: null }
    }
    // live events of the scope wait until the log is read: the replay goes first
    const hold = holdFor(socket, scope)
    let head: Position | null = null
    try {
      const result = await store.read(scope, since)
      if (!result.ok) {
        this.#resync(socket, scope, result.reason)
        return { replayed: 0, position: await store.position(scope) }
      }
      hold.replaying = true
      try {
        this.#replay(socket, scope, result)
      } finally {
        hold.replaying = false
      }
      head = result.position
      this.#metrics.replayed(result.events.length)
      return { replayed: result.events.length, position: result.position }
    } catch (err) {
      this.#warn({ err, scope }, 'fastify-realtime: history unavailable for catch-up; resync sent')
      this.#resync(socket, scope, 'unavailable')
      return { replayed: 0, position: null }
    } finally {
      if (hold.release(scope, head)) holds.delete(socket)
    }
  }

  #resync (socket: RealtimeSocket, scope: string, reason: ResyncReason): void {
    this.#metrics.resync(reason)
    resync(socket, scope, reason)
  }

  /** One resync for a room (counted once), to each of its sockets. */
  #resyncAll (sockets: RealtimeSocket[], scope: string, reason: ResyncReason): ResyncReason {
    this.#metrics.resync(reason)
    for (const socket of sockets) if (socket.rooms.has(scope)) resync(socket, scope, reason)
    return reason
  }

  #replay (socket: RealtimeSocket, scope: string, result: Extract<ReadResult, { ok: true }>, after = -1): void {
    const { epoch } = result.position
    for (const stored of result.events) {
      if (stored.seq <= after) continue
      // an event that cannot be encoded reached nobody live either: its seq carries nothing
      if (!this.#frames.write(socket, scope, epoch, stored)) skip(socket, scope, { seq: stored.seq, epoch })
    }
  }
}
