import type { HistoryStore, ReadResult, StoredEvent } from './history/store.js'
import { EVENT_RESYNC, EVENT_SKIP, type Position, type ResyncReason } from './protocol.js'
import type { EventMeta, RealtimeSocket, ResyncMessage, SkipMessage } from './types.js'
import { isPromiseLike } from './util.js'

export interface CatchUp {
  /** Events replayed to the socket. */
  replayed: number
  /** Where the socket now stands in the scope's log; null without history. */
  position: Position | null
}

function resync (socket: RealtimeSocket, scope: string, reason: ResyncReason): void {
  const message: ResyncMessage = { scope, reason }
  socket.emit(EVENT_RESYNC, message)
}

/** A packet as Socket.IO hands it to a socket's outgoing listeners. */
interface OutgoingPacket {
  data?: unknown[]
}

type WriteToEngine = (encoded: unknown, opts: unknown) => void
type Held = [packet: OutgoingPacket, encoded: unknown, opts: unknown]

/** Socket.IO internals the hold relies on (4.8); without them there is no hold and the client orders. */
interface Internals {
  notifyOutgoingListeners?: (packet: OutgoingPacket) => void
  client: { writeToEngine?: WriteToEngine }
}

/** The scope and seq an outgoing packet carries: an event's meta, or a `realtime:skip`. */
function placeOf (packet: OutgoingPacket): { scope: string, seq: number, epoch: unknown } | null {
  const data = packet.data
  if (!Array.isArray(data)) return null
  const carrier = (data[0] === EVENT_SKIP ? data[1] : data[2]) as { scope?: unknown, seq?: unknown, epoch?: unknown } | null | undefined
  if (carrier === null || typeof carrier !== 'object') return null
  if (typeof carrier.scope !== 'string' || typeof carrier.seq !== 'number') return null
  return { scope: carrier.scope, seq: carrier.seq, epoch: carrier.epoch }
}

/**
 * Live events of the scopes a socket is catching up in, held back while the log is read, so
 * the replay reaches the socket before them and what it already covers is not sent twice: in
 * order and exactly once on the wire, even with a store that answers asynchronously (Redis).
 * It wraps the socket's two write steps for as long as a catch-up runs, and no longer.
 */
class Hold {
  readonly #socket: Internals
  readonly #write: WriteToEngine
  readonly #scopes = new Map<string, Held[]>()
  #last: OutgoingPacket | undefined
  /** True while the replay itself is written. */
  replaying = false

  constructor (socket: Internals, notify: NonNullable<Internals['notifyOutgoingListeners']>, write: WriteToEngine) {
    this.#socket = socket
    this.#write = write
    const hold = this
    // every write of an event or a broadcast is told its packet just before it
    socket.notifyOutgoingListeners = function (this: unknown, packet: OutgoingPacket) {
      hold.#last = packet
      notify.call(this, packet)
    }
    socket.client.writeToEngine = function (this: unknown, encoded: unknown, opts: unknown) {
      const packet = hold.#last
      hold.#last = undefined
      if (!hold.replaying && packet !== undefined) {
        const place = placeOf(packet)
        const queue = place === null ? undefined : hold.#scopes.get(place.scope)
        if (queue !== undefined) {
          queue.push([packet, encoded, opts])
          return
        }
      }
      write.call(this, encoded, opts)
    }
  }

  add (scope: string): void {
    if (!this.#scopes.has(scope)) this.#scopes.set(scope, [])
  }

  /** Sends what was held for `scope`, leaving out what the replay up to `head` covered. */
  release (scope: string, head: Position | null): boolean {
    const queue = this.#scopes.get(scope)
    this.#scopes.delete(scope)
    for (const [packet, encoded, opts] of queue ?? []) {
      const place = placeOf(packet)
      if (head !== null && place !== null && place.epoch === head.epoch && place.seq <= head.seq) continue
      this.#write.call(this.#socket.client, encoded, opts)
    }
    if (this.#scopes.size > 0) return false
    delete this.#socket.notifyOutgoingListeners
    delete this.#socket.client.writeToEngine
    return true
  }
}

const holds = new WeakMap<RealtimeSocket, Hold>()

function holdFor (socket: RealtimeSocket, scope: string): Hold | null {
  let hold = holds.get(socket)
  if (hold === undefined) {
    const internals = socket as unknown as Internals
    const notify = internals.notifyOutgoingListeners
    const write = internals.client.writeToEngine
    if (typeof notify !== 'function' || typeof write !== 'function') return null
    hold = new Hold(internals, notify, write)
    holds.set(socket, hold)
  }
  hold.add(scope)
  return hold
}

function release (socket: RealtimeSocket, hold: Hold | null, scope: string, head: Position | null): void {
  if (hold !== null && hold.release(scope, head)) holds.delete(socket)
}

/** Socket.IO's EVENT packet type. */
const EVENT_PACKET = 2

interface Encoder {
  encode: (packet: { type: number, nsp: string, data: unknown[] }) => unknown[]
}

/**
 * Replayed events encoded once and written to every socket that replays them: after a node goes
 * away, its clients reconnect together and replay the same events, and encoding each one per
 * socket would cost more than the live delivery did (which Socket.IO encodes once per broadcast).
 * Bounded by entries and bytes; an entry never changes, since `(scope, epoch, seq)` names one event.
 */
export class ReplayFrames {
  readonly #encoder: Encoder | null
  readonly #frames = new Map<string, { data: unknown[], encoded: unknown[], bytes: number }>()
  readonly #maxEntries: number
  readonly #maxBytes: number
  #bytes = 0

  constructor (encoder: unknown, maxEntries = 2000, maxBytes = 16 * 1024 * 1024) {
    this.#encoder = typeof (encoder as Encoder | null)?.encode === 'function' ? encoder as Encoder : null
    this.#maxEntries = maxEntries
    this.#maxBytes = maxBytes
  }

  /** Writes one replayed event to `socket`; false when it cannot be encoded. */
  write (socket: RealtimeSocket, scope: string, epoch: string, stored: StoredEvent): boolean {
    const internals = socket as unknown as Internals
    const write = internals.client.writeToEngine
    if (this.#encoder === null || typeof write !== 'function') return emitReplay(socket, scope, epoch, stored)
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
    if (!socket.connected) return true
    // the same two steps as a broadcast: outgoing listeners, then the pre-encoded write
    internals.notifyOutgoingListeners?.call(socket, { data: frame.data })
    write.call(internals.client, frame.encoded, { compress: true })
    return true
  }

  #keep (key: string, frame: { data: unknown[], encoded: unknown[], bytes: number }): void {
    this.#frames.set(key, frame)
    this.#bytes += frame.bytes
    for (const [oldest, old] of this.#frames) {
      if (this.#frames.size <= this.#maxEntries && this.#bytes <= this.#maxBytes) break
      this.#frames.delete(oldest)
      this.#bytes -= old.bytes
    }
  }
}

function replayMeta (scope: string, epoch: string, stored: StoredEvent): EventMeta {
  const meta: EventMeta = { id: stored.id, scope, seq: stored.seq, epoch, at: stored.at, replayed: true }
  if (stored.by !== undefined) meta.by = stored.by
  return meta
}

function emitReplay (socket: RealtimeSocket, scope: string, epoch: string, stored: StoredEvent): boolean {
  try {
    socket.emit(stored.event, stored.payload, replayMeta(scope, epoch, stored))
    return true
  } catch {
    return false
  }
}

/** Tells `target` (a socket, or a room) that `position.seq` of `scope` carries nothing for it. */
export function skip (target: { emit: (event: string, message: SkipMessage) => boolean }, scope: string, position: Position): void {
  const message: SkipMessage = { scope, seq: position.seq, epoch: position.epoch }
  target.emit(EVENT_SKIP, message)
}

/**
 * The scope's position in the store; null (after a warning) when the store cannot say. A
 * synchronous store answers synchronously.
 */
export function positionOf (
  store: HistoryStore,
  scope: string,
  warn: (details: object, message: string) => void
): Position | null | Promise<Position | null> {
  const failed = (err: unknown): null => {
    warn({ err, scope }, 'fastify-realtime: history unavailable for a position')
    return null
  }
  let position: Position | PromiseLike<Position>
  try {
    position = store.position(scope)
  } catch (err) {
    return failed(err)
  }
  return isPromiseLike(position) ? Promise.resolve(position).then((answer) => answer, failed) : position
}

function replay (socket: RealtimeSocket, scope: string, result: Extract<ReadResult, { ok: true }>, frames: ReplayFrames): void {
  const { epoch } = result.position
  for (const stored of result.events) {
    // an event that cannot be encoded reached nobody live either: its seq carries nothing
    if (!frames.write(socket, scope, epoch, stored)) skip(socket, scope, { seq: stored.seq, epoch })
  }
}

/**
 * Brings one socket up to date in one scope it has just joined. With `since`, replays what it
 * missed (in order, marked `replayed`, before any live event of the scope) or tells it to
 * resync; either way returns its position. Called only after the socket was authorized for and
 * joined to `scope`.
 */
export async function catchUp (
  socket: RealtimeSocket,
  store: HistoryStore | null,
  scope: string,
  since: Position | undefined,
  warn: (details: object, message: string) => void,
  frames: ReplayFrames
): Promise<CatchUp> {
  if (store === null) {
    if (since !== undefined) resync(socket, scope, 'unavailable')
    return { replayed: 0, position: null }
  }
  if (since === undefined) return { replayed: 0, position: await positionOf(store, scope, warn) }
  let hold: Hold | null = null
  let head: Position | null = null
  try {
    const reading = store.read(scope, since)
    // a synchronous store answers before any live event can arrive: nothing to hold
    if (isPromiseLike(reading)) hold = holdFor(socket, scope)
    const result = await reading
    if (!result.ok) {
      resync(socket, scope, result.reason)
      return { replayed: 0, position: await store.position(scope) }
    }
    if (hold !== null) hold.replaying = true
    try {
      replay(socket, scope, result, frames)
    } finally {
      if (hold !== null) hold.replaying = false
    }
    head = result.position
    return { replayed: result.events.length, position: result.position }
  } catch (err) {
    warn({ err, scope }, 'fastify-realtime: history unavailable for catch-up; resync sent')
    resync(socket, scope, 'unavailable')
    return { replayed: 0, position: null }
  } finally {
    release(socket, hold, scope, head)
  }
}
