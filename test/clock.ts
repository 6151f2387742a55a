import type { RealtimeClock } from '../src/index.js'

interface Timer {
  id: number
  at: number
  fn: () => void
}

/**
 * A clock the test moves by hand (the plugin's `clock` option). It starts at the real time, so
 * tokens signed with real `exp` claims line up with it; only `advance` moves it.
 */
export class ManualClock implements RealtimeClock {
  #now = Date.now()
  #nextId = 1
  #timers: Timer[] = []

  readonly now = (): number => this.#now

  readonly setTimeout = (fn: () => void, ms: number): unknown => {
    const timer = { id: this.#nextId++, at: this.#now + Math.max(0, ms), fn }
    this.#timers.push(timer)
    return timer.id
  }

  readonly clearTimeout = (id: unknown): void => {
    this.#timers = this.#timers.filter((timer) => timer.id !== id)
  }

  /** Timers waiting to fire. */
  get pending (): number {
    return this.#timers.length
  }

  /**
   * Moves the time on until a token whose `exp` (a JWT claim, in seconds) is this has expired and
   * a watch that ticks once a second has seen it: to the end of the second after `exp`. Tokens are
   * signed on the real clock, maybe seconds after this clock began, so a fixed advance may fall short.
   */
  advancePast (exp: number): void {
    this.advance(Math.max(0, (exp + 2) * 1000 - this.#now))
  }

  /** Moves the time on by `ms`, firing every timer that falls due on the way, in order (timers they set included). */
  advance (ms: number): void {
    const end = this.#now + ms
    for (;;) {
      const due = this.#timers.filter((timer) => timer.at <= end).sort((a, b) => a.at - b.at || a.id - b.id)[0]
      if (due === undefined) break
      this.#timers = this.#timers.filter((timer) => timer !== due)
      this.#now = Math.max(this.#now, due.at)
      due.fn()
    }
    this.#now = end
  }
}
