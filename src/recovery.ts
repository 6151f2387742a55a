import type { FastifyBaseLogger } from 'fastify'
import { placeOf, type CatchUps } from './catchup.js'
import type { RealtimeClock } from './clock.js'
import type { HistoryStore } from './history/store.js'
import { observeBroadcasts, type ObservedAdapter, type OutgoingPacket } from './internals.js'
import { isScope, type Position } from './protocol.js'
import type { RealtimeServer, RealtimeSocket } from './types.js'

/** What a node does when its Redis subscriber comes back (the `recovery` option, normalised). */
export interface RecoveryOptions {
  /** Membership operations kept in the shared record (a capped Redis stream). */
  operations: number
  /** Sockets re-checked at once when the record cannot say what was missed. */
  recheckBatch: number
  /** Time between two batches of re-checks. */
  recheckIntervalMs: number
}

type RoomCatchUp = ReturnType<CatchUps['holdRoom']>

/** Seqs seen ahead of a missing one before the record gives up waiting for it and moves on. */
const MAX_AHEAD = 64

/** Scopes read from the log at once when the subscriber is back. */
const READS_AT_ONCE = 32

/**
 * Where a scope stands on this node: the last seq delivered to its room with every earlier one
 * delivered too (events from several nodes may come out of order), and the later seqs already seen.
 */
interface Delivered {
  seq: number
  epoch: string
  ahead: Set<number> | null
}

export interface RecoveryContext {
  io: RealtimeServer
  store: HistoryStore | null
  /** Reads a scope's log once and replays it to the room's sockets, in order before the scope's live events. */
  catchUps: CatchUps
  /** Applies the membership operations missed meanwhile; null when the shared record cannot say. */
  applyMissed: () => Promise<number | null>
  /** Asks the app again about the scopes a socket holds; those no longer granted are left with `realtime:revoked`. */
  recheck: (socket: RealtimeSocket) => Promise<void>
  log: FastifyBaseLogger
  clock: RealtimeClock
  options: RecoveryOptions
}

/** What one recovery did, for the log line and for tests. */
export interface RecoveryReport {
  scopes: number
  replayed: number
  resyncs: number
  /** Operations applied from the shared record; null when it could not say and sockets are re-checked instead. */
  operations: number | null
}

/**
 * Brings this node's rooms up to date by itself after its Redis subscriber was away, instead of
 * closing every transport (a reconnect, a JWT check and a `rooms()` lookup per client at once).
 *
 * It follows every event this node delivers to a scope's room (local broadcasts and those from
 * other nodes alike), so it knows per local scope the last seq delivered; the record of a scope
 * goes when its room empties. While the subscriber is away that record stands still. Once it is
 * back: the membership operations other nodes issued meanwhile are applied from the shared record
 * (or, when it was trimmed or lost, every local socket's scopes are asked about again, a batch at
 * a time), then each local scope reads its log from where it stood and what others stored
 * meanwhile goes to its room as replays (`meta.replayed`), or `realtime:resync` when the log cannot
 * say (gap, epoch, unavailable, no history).
 *
 * As for any catch-up (SPEC §6), live events of a scope wait on each socket until its replay is
 * written, so the replay comes first; a socket that caught up by itself meanwhile (a subscribe with
 * `since` while the subscriber was away) is sent only what lies beyond its own position, so each seq
 * reaches a socket at most once live and at most once replayed.
 */
export class Recovery {
  readonly #ctx: RecoveryContext
  readonly #delivered = new Map<string, Delivered>()
  #adapter: ObservedAdapter | null = null
  #away = false
  /** Where sockets stood once they caught up by themselves, from `away()` until the recovery is done: per scope, by socket id. */
  #caughtUp: Map<string, Map<string, Position>> | null = null
  #recheckTimer: unknown = null
  #closed = false

  constructor (ctx: RecoveryContext) {
    this.#ctx = ctx
  }

  /** Starts following what the `/` namespace's adapter delivers: call it once the cluster adapter is in place. */
  attach (): void {
    const adapter = this.#ctx.io.of('/').adapter as unknown as ObservedAdapter
    this.#adapter = adapter
    observeBroadcasts(adapter, (packet) => { this.#delivering(packet) })
    adapter.on('delete-room', (room) => { this.#delivered.delete(room) })
  }

  /** Scopes whose position this node keeps (one per local scope at most). */
  get tracked (): number {
    return this.#delivered.size
  }

  /** The last seq of `scope` delivered to its room on this node, every earlier one delivered too; undefined when none is kept. */
  position (scope: string): Position | undefined {
    const delivered = this.#delivered.get(scope)
    return delivered === undefined ? undefined : { seq: delivered.seq, epoch: delivered.epoch }
  }

  /** A socket caught up in `scope` at `position`: a starting point when nothing was delivered to the room yet. */
  joined (socket: RealtimeSocket, scope: string, position: Position): void {
    if (this.#caughtUp !== null) {
      let sockets = this.#caughtUp.get(scope)
      if (sockets === undefined) this.#caughtUp.set(scope, sockets = new Map())
      sockets.set(socket.id, position)
    }
    if (this.#delivered.has(scope) || this.#adapter?.rooms.has(scope) !== true) return
    this.#delivered.set(scope, { seq: position.seq, epoch: position.epoch, ahead: null })
  }

  /** The subscriber is gone: what was delivered so far is where each scope is read from later. */
  away (): void {
    this.#away = true
    this.#caughtUp ??= new Map()
  }

  /** The subscriber is back and subscribed again: brings every local scope up to date. */
  async resubscribed (): Promise<RecoveryReport> {
    const { io, log } = this.#ctx
    const adapter = this.#adapter
    // the scopes and positions as they stood while away, before anything new moves them on
    // and from now on the live events of each scope wait on its sockets until its replay is written
    const scopes: Array<[string, Position | null, RoomCatchUp]> = []
    for (const [room, ids] of adapter?.rooms ?? []) {
      if (!isScope(room)) continue
      const delivered = this.#delivered.get(room)
      scopes.push([room, delivered === undefined ? null : { seq: delivered.seq, epoch: delivered.epoch }, this.#ctx.catchUps.holdRoom(this.#socketsOf(ids), room)])
    }
    this.#away = false
    let operations: number | null
    try {
      operations = await this.#ctx.applyMissed()
    } catch (err) {
      log.warn({ err }, 'fastify-realtime: membership operations missed while away could not be read; re-checking memberships')
      operations = null
    }
    if (operations === null) this.#recheck()
    const report: RecoveryReport = { scopes: scopes.length, replayed: 0, resyncs: 0, operations }
    for (let i = 0; i < scopes.length && !this.#closed; i += READS_AT_ONCE) {
      await Promise.all(scopes.slice(i, i + READS_AT_ONCE).map(async ([scope, since, run]) => {
        const outcome = await this.#catchUp(scope, since, run)
        if (outcome === 'resync') report.resyncs++
        else report.replayed += outcome
      }))
    }
    this.#caughtUp = null
    log.info({ ...report, sockets: io.of('/').sockets.size }, 'fastify-realtime: Redis subscriber back; local rooms brought up to date without reconnects')
    return report
  }

  close (): void {
    this.#closed = true
    this.#ctx.clock.clearTimeout(this.#recheckTimer)
    this.#recheckTimer = null
  }

  #delivering (packet: OutgoingPacket): void {
    if (this.#away) return
    const place = placeOf(packet)
    if (place === null || typeof place.epoch !== 'string' || this.#adapter?.rooms.has(place.scope) !== true) return
    const { scope, seq, epoch } = place
    const delivered = this.#delivered.get(scope)
    if (delivered === undefined || delivered.epoch !== epoch) {
      this.#delivered.set(scope, { seq, epoch, ahead: null })
      return
    }
    if (seq <= delivered.seq) return
    if (seq > delivered.seq + 1) {
      const ahead = delivered.ahead ??= new Set()
      ahead.add(seq)
      if (ahead.size <= MAX_AHEAD) return
      // a seq that never comes (its node died between storing and publishing): move on
      delivered.seq = Math.max(...ahead)
      delivered.ahead = null
      return
    }
    delivered.seq = seq
    const ahead = delivered.ahead
    if (ahead === null) return
    while (ahead.delete(delivered.seq + 1)) delivered.seq++
    if (ahead.size === 0) delivered.ahead = null
  }

  /** The connected sockets among `ids` (a room's members). */
  #socketsOf (ids: Iterable<string>): RealtimeSocket[] {
    const sockets: RealtimeSocket[] = []
    for (const id of ids) {
      const socket = this.#ctx.io.of('/').sockets.get(id)
      if (socket?.connected === true) sockets.push(socket)
    }
    return sockets
  }

  /** Replays what `scope` missed since `since` to its room; the count, or 'resync' when the log could not say. */
  async #catchUp (scope: string, since: Position | null, run: RoomCatchUp): Promise<number | 'resync'> {
    const { store } = this.#ctx
    const caughtUp = this.#caughtUp?.get(scope)
    const outcome = await run(since, (socket) => caughtUp?.get(socket.id))
    if (typeof outcome === 'number') return outcome
    // the room starts again from the log's head, which the clients are told to refetch up to
    if (store !== null) {
      try {
        const head = await store.position(scope)
        if (this.#adapter?.rooms.has(scope) === true) this.#delivered.set(scope, { seq: head.seq, epoch: head.epoch, ahead: null })
      } catch {
        // the next event sets it
      }
    }
    return 'resync'
  }

  /**
   * The shared record cannot say which membership changes were missed: every local socket's
   * scopes are asked about again, `recheckBatch` sockets every `recheckIntervalMs`, never all at once.
   * A later call starts over with the sockets there are then.
   */
  #recheck (): void {
    const { io, clock, options, log } = this.#ctx
    clock.clearTimeout(this.#recheckTimer)
    const ids = [...io.of('/').sockets.keys()]
    log.info({ sockets: ids.length, batch: options.recheckBatch, intervalMs: options.recheckIntervalMs },
      'fastify-realtime: the record of membership operations does not reach back far enough; re-checking local sockets, paced')
    let next = 0
    const batch = (): void => {
      this.#recheckTimer = null
      if (this.#closed) return
      const end = Math.min(ids.length, next + options.recheckBatch)
      for (; next < end; next++) {
        const socket = io.of('/').sockets.get(ids[next]!)
        if (socket === undefined || !socket.connected) continue
        this.#ctx.recheck(socket).catch((err: unknown) => {
          log.debug({ err }, 'fastify-realtime: a membership re-check failed; the socket keeps its scopes')
        })
      }
      if (next < ids.length) this.#recheckTimer = clock.setTimeout(batch, options.recheckIntervalMs)
    }
    batch()
  }
}
