/** The wire protocol both sides import: event names, codes and message shapes (the client never imports the server). */

export const EVENT_READY = 'realtime:ready'
export const EVENT_RESYNC = 'realtime:resync'
export const EVENT_AUTH_EXPIRED = 'realtime:auth_expired'
export const EVENT_SUBSCRIBE = 'realtime:subscribe'
export const EVENT_UNSUBSCRIBE = 'realtime:unsubscribe'
export const EVENT_AUTH = 'realtime:auth'
export const EVENT_SKIP = 'realtime:skip'
export const EVENT_REVOKED = 'realtime:revoked'
export const EVENT_PRESENCE = 'realtime:presence'
export const EVENT_PRESENCE_DIFF = 'realtime:presence_diff'

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
  | 'LIMIT'

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
  | 'AUTH_EXPIRED'

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

// --- events and messages -------------------------------------------------------------

/**
 * Event names and payload types checked by `broadcast` (and the client's `on`). Extend it:
 *
 * @example
 * declare module 'fastify-realtime' {
 *   interface RealtimeEvents { 'incident:created': { id: string, title: string } }
 * }
 */
export interface RealtimeEvents {}

/** Event names `broadcast` accepts: any string until `RealtimeEvents` declares some. */
export type RealtimeEventName = [keyof RealtimeEvents] extends [never]
  ? string
  : Extract<keyof RealtimeEvents, string>

/** The payload type of `event`. */
export type RealtimePayload<E extends string> = E extends keyof RealtimeEvents
  ? RealtimeEvents[E]
  : unknown

/** A value JSON can carry as it is. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue }

/**
 * Who did it (`broadcast`'s `opts.by`, the event's `meta.by`): a user id, or a small JSON object
 * for the UI, such as `{ id: 'u7', name: 'Jane' }`; at most 1 KB as JSON.
 */
export type EventActor = string | number | { [key: string]: JsonValue }

/** Second argument of every delivered event. */
export interface EventMeta {
  /** Unique event id. */
  id: string
  scope: string
  /** Place in the scope's log; absent for `volatile` events and with `history: false`. */
  seq?: number
  /** Generation of the scope's log; absent when `seq` is. */
  epoch?: string
  /** Milliseconds since the Unix epoch, when `broadcast` was called. */
  at: number
  /** Who did it, as given in `opts.by`. */
  by?: EventActor
  /** Present (true) on events replayed from the log after a reconnect or subscribe. */
  replayed?: true
}

/** Sent as `realtime:ready`. */
export interface ReadyMessage {
  userId: string
  scopes: string[]
  positions: Record<string, Position>
}

/**
 * Sent as `realtime:skip`: `seq` of `scope` carries nothing for this socket (it was left out
 * with `except`, or the event could not be encoded). The position moves on; nothing is missed.
 */
export interface SkipMessage {
  scope: string
  seq: number
  epoch: string
}

/**
 * Sent as `realtime:revoked`: the socket was taken out of `scope`, because the token it refreshed
 * to (or the user `auth.user` now returns) is no longer granted it. Nothing more of the scope
 * comes; a subscribe to it is refused until it is granted again.
 */
export interface RevokedMessage {
  scope: string
}

/** Sent as `realtime:resync`. */
export interface ResyncMessage {
  scope: string
  reason: ResyncReason
}

// --- presence -------------------------------------------------------------------------

/**
 * What others see of a present user: what the `presence.user(user)` option returns (by default
 * `{ id }`). Declare its shape to type it on both sides:
 *
 * @example
 * declare module 'fastify-realtime' {
 *   interface RealtimePresenceInfo { id: string, name: string }
 * }
 */
export interface RealtimePresenceInfo {}

/** `RealtimePresenceInfo` once declared; a JSON object until then. */
export type PresenceInfo = [keyof RealtimePresenceInfo] extends [never]
  ? Record<string, unknown>
  : RealtimePresenceInfo

/** One user present in a scope, as a snapshot lists them. */
export interface PresenceUser {
  userId: string
  /** What `presence.user(user)` returned for them. */
  info: PresenceInfo
  /** Their sockets in the scope, on every node (tabs, devices). */
  connections: number
  /** When they became present (ms since the Unix epoch), by the presence store's clock. */
  since: number
}

/** Who is in a scope: `fastify.realtime.presence(scope)`, and the ack of `realtime:presence`. */
export interface PresenceSnapshot {
  scope: string
  /** Every present user, listed or not. */
  count: number
  /** At most `presence.maxListed` of them, longest present first. */
  users: PresenceUser[]
  /** True when `users` does not list everyone. */
  truncated: boolean
}

/** The ack of `realtime:presence`: a snapshot and the version the next diff follows. */
export interface PresenceAnswer extends PresenceSnapshot {
  ok: true
  /** The diff with `version + 1` is the next one that applies to this snapshot. */
  version: number
}

/** A user who joined a scope, in a `realtime:presence_diff`. */
export interface PresenceJoin {
  userId: string
  info: PresenceInfo
  since: number
}

/**
 * Sent as `realtime:presence_diff` to a scope's members: who joined and who left since the
 * previous diff (coalesced, at most one per `presence.intervalMs` per node).
 */
export interface PresenceDiff {
  scope: string
  /** At most `presence.maxListed`; `count` is always exact. */
  joins: PresenceJoin[]
  leaves: string[]
  count: number
  /**
   * One more than the scope's previous diff: a diff applies to the list whose version is
   * `version - 1`. A diff with `fromEmpty` applies to an empty list of any lower version.
   */
  version: number
  /** Present when the scope was empty before this diff (its versions then start above every earlier one). */
  fromEmpty?: true
}
