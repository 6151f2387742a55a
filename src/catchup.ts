import type { HistoryStore, ReadResult } from './history/store.js'
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

function replay (socket: RealtimeSocket, scope: string, result: Extract<ReadResult, { ok: true }>): void {
  const { epoch } = result.position
  for (const stored of result.events) {
    const meta: EventMeta = { id: stored.id, scope, seq: stored.seq, epoch, at: stored.at, replayed: true }
    if (stored.by !== undefined) meta.by = stored.by
    try {
      socket.emit(stored.event, stored.payload, meta)
    } catch {
      // an event that cannot be encoded reached nobody live either: its seq carries nothing
      const skipped: SkipMessage = { scope, seq: stored.seq, epoch }
      socket.emit(EVENT_SKIP, skipped)
    }
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
  warn: (details: object, message: string) => void
): Promise<CatchUp> {
  if (store === null) {
    if (since !== undefined) resync(socket, scope, 'unavailable')
    return { replayed: 0, position: null }
  }
  if (since === undefined) {
    try {
      return { replayed: 0, position: await store.position(scope) }
    } catch (err) {
      warn({ err, scope }, 'fastify-realtime: history unavailable for a position')
      return { replayed: 0, position: null }
    }
  }
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
      replay(socket, scope, result)
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
