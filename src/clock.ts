/**
 * Where the plugin reads the time and sets its timers: token expiry and the refresh grace, rate
 * limit windows, idempotency keys, presence diffs. Tests pass one they move by hand, so
 * time-based behaviour needs no real waiting.
 */
export interface RealtimeClock {
  /** Milliseconds since the Unix epoch; it must never go back. */
  now: () => number
  /** Calls `fn` once, `ms` from now; what it returns is handed back to `clearTimeout`. */
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (timer: unknown) => void
}

/** The real clock; its timers never hold the process open. */
export const systemClock: RealtimeClock = {
  now: Date.now,
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (timer) => { clearTimeout(timer as NodeJS.Timeout) }
}
