import { isPosition, type Position } from '../protocol.js'
import { RealtimeClientError, messageOf } from './errors.js'
import type { PositionStorage } from './options.js'

/**
 * Positions kept in the app's `storage` (e.g. `localStorage`) across page reloads: read once at
 * start, written at the end of every turn that changed one, however many changed.
 */
export class SavedPositions {
  readonly #storage: PositionStorage | undefined
  readonly #key: string
  readonly #current: () => Record<string, Position>
  readonly #report: (error: RealtimeClientError) => void
  #queued = false

  /** `current` gives the positions to write; `report` is told when they could not be written. */
  constructor (storage: PositionStorage | undefined, key: string, current: () => Record<string, Position>, report: (error: RealtimeClientError) => void) {
    this.#storage = storage
    this.#key = key
    this.#current = current
    this.#report = report
  }

  /** The positions stored before; none when there are none or they cannot be read. */
  load (): Map<string, Position> {
    const positions = new Map<string, Position>()
    try {
      const raw = this.#storage?.getItem(this.#key)
      if (raw === null || raw === undefined) return positions
      for (const [scope, position] of Object.entries(JSON.parse(raw) as Record<string, unknown>)) {
        if (isPosition(position)) positions.set(scope, { seq: position.seq, epoch: position.epoch })
      }
    } catch {
      // unreadable storage: start without positions
    }
    return positions
  }

  /** A position changed: saved at the end of the current turn. */
  changed (): void {
    if (this.#storage === undefined || this.#queued) return
    this.#queued = true
    queueMicrotask(() => {
      if (this.#queued) this.#save()
    })
  }

  /** Saves now what a `changed()` queued. */
  flush (): void {
    if (this.#queued) this.#save()
  }

  #save (): void {
    this.#queued = false
    try {
      this.#storage?.setItem(this.#key, JSON.stringify(this.#current()))
    } catch (err) {
      this.#report(new RealtimeClientError('STORAGE_FAILED', `Positions could not be saved: ${messageOf(err)}`, { cause: err }))
    }
  }
}
