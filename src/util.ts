/** True for a promise or any other thenable. */
export function isPromiseLike<T> (value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as PromiseLike<T> | null)?.then === 'function'
}

/**
 * `work`'s answer, or a rejection with a TimeoutError after `ms`. A timer is set only when the
 * answer is a promise (lookups are often plain functions).
 */
export async function withTimeout<T> (work: () => T | PromiseLike<T>, ms: number, what: string): Promise<T> {
  const answer = work()
  if (!isPromiseLike(answer)) return answer
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} did not answer within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([answer, timeout])
  } finally {
    clearTimeout(timer)
  }
}

export class TimeoutError extends Error {
  override name = 'TimeoutError'
}

/** Calls `ack` when the client sent one; a client that sent none simply gets nothing. */
export function reply (ack: unknown, value: unknown): void {
  if (typeof ack === 'function') ack(value)
}

/** An id or a scope as it goes into a log line or an error message: a string of at most 200 characters. */
export function cut (value: unknown): string {
  return String(value).slice(0, 200)
}

/**
 * A warning said at most once per `everyMs` for each kind; the ones in between go to `debug`,
 * so an outage that touches every connection does not flood the log.
 */
export function rateLimitedWarn (log: { warn: (obj: object, msg: string) => void, debug: (obj: object, msg: string) => void }, everyMs = 10_000, now: () => number = Date.now): (details: object, message: string) => void {
  const last = new Map<string, number>()
  return (details, message) => {
    const at = now()
    if (at - (last.get(message) ?? -Infinity) < everyMs) {
      log.debug(details, message)
      return
    }
    last.set(message, at)
    log.warn(details, message)
  }
}
