/** True for a promise or any other thenable. */
export function isPromiseLike<T> (value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as PromiseLike<T> | null)?.then === 'function'
}

/**
 * `work`'s answer, or a rejection with a TimeoutError after `ms`. An answer given synchronously
 * is returned as it is, with no timer and no promise (lookups are often plain functions).
 */
export function withTimeout<T> (work: () => T | PromiseLike<T>, ms: number, what: string): T | Promise<T> {
  let answer: T | PromiseLike<T>
  try {
    answer = work()
  } catch (err) {
    return Promise.reject(err)
  }
  if (!isPromiseLike(answer)) return answer
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} did not answer within ${ms} ms`)), ms)
  })
  return Promise.race([answer, timeout]).finally(() => clearTimeout(timer))
}

export class TimeoutError extends Error {
  override name = 'TimeoutError'
}

/** Calls `ack` when the client sent one; a client that sent none simply gets nothing. */
export function reply (ack: unknown, value: unknown): void {
  if (typeof ack === 'function') ack(value)
}
