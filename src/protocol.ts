/** Wire-level names and codes shared by the server and the bundled client. */

export const EVENT_READY = 'realtime:ready'
export const EVENT_RESYNC = 'realtime:resync'
export const EVENT_AUTH_EXPIRED = 'realtime:auth_expired'
export const EVENT_SUBSCRIBE = 'realtime:subscribe'
export const EVENT_UNSUBSCRIBE = 'realtime:unsubscribe'
export const EVENT_AUTH = 'realtime:auth'
export const EVENT_SKIP = 'realtime:skip'

/** Every name in this namespace belongs to the protocol; `broadcast` refuses it. */
export const RESERVED_PREFIX = 'realtime:'

/** Names Socket.IO itself gives meaning to; emitting them would confuse clients. */
export const SOCKET_IO_RESERVED = new Set([
  'connect',
  'connect_error',
  'disconnect',
  'disconnecting',
  'newListener',
  'removeListener',
  'error'
])

/** `err.data.code` on `connect_error`. */
export type ConnectErrorCode =
  | 'AUTH_REQUIRED'
  | 'AUTH_INVALID'
  | 'AUTH_EXPIRED'
  | 'USER_REJECTED'
  | 'UNAVAILABLE'

/** `error.code` in a negative ack. */
export type AckErrorCode =
  | 'FORBIDDEN'
  | 'INVALID_SCOPE'
  | 'RATE_LIMITED'
  | 'LIMIT'
  | 'UNAVAILABLE'
  | 'AUTH_INVALID'
  | 'USER_REJECTED'
  | 'BAD_REQUEST'

/** Why a scope's missed events cannot be replayed. */
export type ResyncReason = 'gap' | 'epoch' | 'unavailable'

export interface AckError {
  ok: false
  error: { code: AckErrorCode, message: string }
}

export function ackError (code: AckErrorCode, message: string): AckError {
  return { ok: false, error: { code, message } }
}

/** A point in a scope's log: the last `seq` seen, in log generation `epoch`. */
export interface Position {
  seq: number
  epoch: string
}

const SCOPE_RE = /^[a-z][a-z0-9_-]{0,31}:[A-Za-z0-9_.:@-]{1,128}$/
const USER_ID_RE = /^[A-Za-z0-9_.:@-]{1,128}$/

/** True when `value` is a scope: `kind:id` as the README's grammar gives it. */
export function isScope (value: unknown): value is string {
  return typeof value === 'string' && value.length <= 161 && SCOPE_RE.test(value)
}

/** The id part of `user:<id>` as a string, or null when `id` cannot name a user scope. */
export function userIdString (id: unknown): string | null {
  if (typeof id === 'number' && Number.isFinite(id)) id = String(id)
  return typeof id === 'string' && USER_ID_RE.test(id) ? id : null
}

export function userScope (id: string): string {
  return `user:${id}`
}

/** True for a well-formed `{ seq, epoch }`. */
export function isPosition (value: unknown): value is Position {
  if (value === null || typeof value !== 'object') return false
  const { seq, epoch } = value as Record<string, unknown>
  return Number.isSafeInteger(seq) && (seq as number) >= 0 &&
    typeof epoch === 'string' && epoch.length > 0 && epoch.length <= 128
}
