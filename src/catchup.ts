import type { FastifyBaseLogger } from 'fastify'
import type { HistoryStore } from './history/store.js'
import { EVENT_RESYNC, type Position, type ResyncReason } from './protocol.js'
import type { EventMeta, RealtimeSocket, ResyncMessage } from './types.js'

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

/**
 * Brings one socket up to date in one scope it has just joined. With `since`, replays what it
 * missed (in order, marked `replayed`) or tells it to resync; either way returns its position.
 * Called only after the socket was authorized for and joined to `scope`.
 */
export async function catchUp (
  socket: RealtimeSocket,
  store: HistoryStore | null,
  scope: string,
  since: Position | undefined,
  log: FastifyBaseLogger
): Promise<CatchUp> {
  if (store === null) {
    if (since !== undefined) resync(socket, scope, 'unavailable')
    return { replayed: 0, position: null }
  }
  try {
    if (since === undefined) return { replayed: 0, position: await store.position(scope) }
    const result = await store.read(scope, since)
    if (!result.ok) {
      resync(socket, scope, result.reason)
      return { replayed: 0, position: await store.position(scope) }
    }
    const { epoch } = result.position
    for (const stored of result.events) {
      const meta: EventMeta = { id: stored.id, scope, seq: stored.seq, epoch, at: stored.at, replayed: true }
      if (stored.by !== undefined) meta.by = stored.by
      socket.emit(stored.event, stored.payload, meta)
    }
    return { replayed: result.events.length, position: result.position }
  } catch (err) {
    log.warn({ err, scope }, 'fastify-realtime: history unavailable for catch-up')
    if (since !== undefined) resync(socket, scope, 'unavailable')
    return { replayed: 0, position: null }
  }
}
