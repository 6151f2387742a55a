/** A timer from a Clock: only that clock can stop it. */
export type TimerHandle = unknown

/**
 * Where the client's timers come from. The client runs on real timers; the sequencer takes its
 * clock as a parameter, so that its tests can move time by hand.
 */
export interface Clock {
  setTimeout: (run: () => void, ms: number) => TimerHandle
  clearTimeout: (timer: TimerHandle | undefined) => void
}

/** The host's own timers. */
export const realClock: Clock = {
  setTimeout: (run, ms) => setTimeout(run, ms),
  clearTimeout: (timer) => { clearTimeout(timer as ReturnType<typeof setTimeout> | undefined) }
}

/** Delays between retries: doubling from `minMs` per attempt (the first is attempt 0), never above `maxMs`. */
export function backoff (attempt: number, minMs: number, maxMs: number): number {
  const delay = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30))
  // spread clients that all lost the same server, so they do not come back at once
  return Math.round(delay * (0.75 + Math.random() / 4))
}
