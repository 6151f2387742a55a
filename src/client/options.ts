import type { ManagerOptions, SocketOptions } from 'socket.io-client'

/** A `localStorage`-like place to keep positions across page reloads. */
export interface PositionStorage {
  getItem: (key: string) => string | null
  setItem: (key: string, value: string) => void
}

/** Delays between retries: doubling from `minMs`, never above `maxMs`. */
export interface RetryOptions {
  /** @default 250 */
  minMs?: number
  /** @default 10000 */
  maxMs?: number
}

export interface ConnectOptions {
  /** A fixed token. Use `getToken` when tokens expire. */
  token?: string
  /**
   * Called for every (re)connect and on `realtime:auth_expired`; its token is sent. When it
   * throws or rejects, the error goes to `onError` (code `TOKEN_FAILED`) and it is called again
   * after a backoff.
   */
  getToken?: () => string | Promise<string>
  /** Keeps positions across page reloads, e.g. `localStorage`. Written in the same turn as every change. */
  storage?: PositionStorage
  /** Key under which positions are stored. @default 'fastify-realtime:positions' */
  storageKey?: string
  /** How long a later event waits for a missing one before the client fetches the range. @default 2000 */
  gapWaitMs?: number
  /** How long `subscribe`, `unsubscribe` and a token refresh wait for the server. @default 10000 */
  timeoutMs?: number
  /** Backoff for refused handshakes, re-subscribes, range fetches and token refreshes. @default { minMs: 250, maxMs: 10000 } */
  retry?: RetryOptions
  /** socket.io-client options (transports, path, reconnection delays…). `auth` is set by the client. */
  io?: Partial<ManagerOptions & SocketOptions>
}

/** The options with their defaults filled in. */
export interface Settings {
  storageKey: string
  gapWaitMs: number
  timeoutMs: number
  retryMinMs: number
  retryMaxMs: number
}

export function settingsOf (options: ConnectOptions): Settings {
  return {
    storageKey: options.storageKey ?? 'fastify-realtime:positions',
    gapWaitMs: options.gapWaitMs ?? 2000,
    timeoutMs: options.timeoutMs ?? 10_000,
    retryMinMs: options.retry?.minMs ?? 250,
    retryMaxMs: options.retry?.maxMs ?? 10_000
  }
}
