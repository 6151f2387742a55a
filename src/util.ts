/** Resolves or rejects with `work`, or rejects with a TimeoutError after `ms`. */
export async function withTimeout<T> (work: () => T | Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new TimeoutError(`${what} did not answer within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([Promise.resolve().then(work), timeout])
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

/** Largest delay `setTimeout` honours; longer ones fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1
