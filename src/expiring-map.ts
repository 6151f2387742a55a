interface Slot<V> {
  value: V
  expiresAt: number
}

/**
 * A Map whose entries expire. Every `set` moves the key to the end, and all callers use one
 * time-to-live with a clock that never goes back, so entries sit in expiry order: a sweep
 * stops at the first live entry and costs O(expired), however many keys were ever seen. Past
 * `max` entries, a `set` drops the oldest.
 */
export class ExpiringMap<K, V> {
  readonly #slots = new Map<K, Slot<V>>()
  readonly #max: number

  constructor (max = Number.POSITIVE_INFINITY) {
    this.#max = max
  }

  get size (): number {
    return this.#slots.size
  }

  get (key: K, now: number): V | undefined {
    const slot = this.#slots.get(key)
    if (slot === undefined) return undefined
    if (slot.expiresAt <= now) {
      this.#slots.delete(key)
      return undefined
    }
    return slot.value
  }

  set (key: K, value: V, expiresAt: number): void {
    this.#slots.delete(key)
    this.#slots.set(key, { value, expiresAt })
    if (this.#slots.size > this.#max) this.#slots.delete(this.#slots.keys().next().value!)
  }

  delete (key: K): void {
    this.#slots.delete(key)
  }

  sweep (now: number): void {
    for (const [key, slot] of this.#slots) {
      if (slot.expiresAt > now) break
      this.#slots.delete(key)
    }
  }

  clear (): void {
    this.#slots.clear()
  }
}
