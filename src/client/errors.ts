/**
 * Codes a RealtimeClientError carries: the server's own (`FORBIDDEN`, `INVALID_SCOPE`, `LIMIT`,
 * `RATE_LIMITED`, `UNAVAILABLE`, `AUTH_REQUIRED`, `AUTH_INVALID`, `AUTH_EXPIRED`, `USER_REJECTED`…)
 * and the client's: `TIMEOUT` (no answer within `timeoutMs`), `TOKEN_FAILED` (`getToken` threw),
 * `HANDLER_FAILED` (one of your handlers threw), `DISCONNECTED` (the server closed the connection),
 * `UNSUBSCRIBED` (a pending subscribe was cancelled), `CLOSED` (`close()` was called),
 * `STORAGE_FAILED` (positions could not be saved).
 */
export type ClientErrorCode = string

/** A refusal or failure: `code` is stable (see ClientErrorCode); `scope` is set when it concerns one. */
export class RealtimeClientError extends Error {
  readonly code: ClientErrorCode
  readonly scope: string | undefined
  constructor (code: ClientErrorCode, message: string, options: { scope?: string, cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'RealtimeClientError'
    this.code = code
    this.scope = options.scope
  }
}

/** The server's answer to a client-to-server event. */
export interface Ack {
  ok: boolean
  position?: unknown
  error?: { code?: string, message?: string }
}

/** Worth asking again later: the server is busy or did not answer, or the token is being refreshed. */
export const RETRYABLE = new Set(['UNAVAILABLE', 'RATE_LIMITED', 'TIMEOUT', 'AUTH_EXPIRED'])

export function isAck (value: unknown): value is Ack {
  return value !== null && typeof value === 'object' && typeof (value as Ack).ok === 'boolean'
}

/** True for an ack that says yes. */
export function accepted (ack: unknown): ack is Ack & { ok: true } {
  return isAck(ack) && ack.ok
}

/** The error a negative (or missing, or malformed) ack stands for. */
export function refusal (ack: unknown, fallback: string, scope?: string): RealtimeClientError {
  const error = isAck(ack) ? ack.error : undefined
  const code = typeof error?.code === 'string' ? error.code : 'UNAVAILABLE'
  return new RealtimeClientError(code, typeof error?.message === 'string' ? error.message : fallback, scope === undefined ? {} : { scope })
}

export function messageOf (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** A `TOKEN_FAILED` error for a `getToken` that threw, rejected or gave no token. */
export function tokenFailed (err: unknown): RealtimeClientError {
  return new RealtimeClientError('TOKEN_FAILED', `getToken failed: ${messageOf(err)}`, { cause: err })
}
