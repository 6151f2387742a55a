import type { RedisOptions } from 'ioredis'
import type { Server, ServerOptions, Socket } from 'socket.io'
import type { TSchema } from 'typebox'
import type { HistoryStore } from './history/store.js'
import type { Position, ResyncReason } from './protocol.js'

/**
 * Event names and payload types checked by `broadcast` (and the client's `on`). Extend it:
 *
 * @example
 * declare module 'fastify-realtime' {
 *   interface RealtimeEvents { 'incident:created': { id: string, title: string } }
 * }
 */
export interface RealtimeEvents {}

/**
 * The user `auth.user` returns, kept on `socket.data.user`. Extend it with your own fields:
 *
 * @example
 * declare module 'fastify-realtime' {
 *   interface RealtimeUser { role: 'admin' | 'member' }
 * }
 */
export interface RealtimeUser {
  id: string | number
}

/** Verified JWT claims. */
export interface RealtimeClaims {
  sub?: string
  exp?: number
  iat?: number
  [claim: string]: unknown
}

/** Event names `broadcast` accepts: any string until `RealtimeEvents` declares some. */
export type RealtimeEventName = [keyof RealtimeEvents] extends [never]
  ? string
  : Extract<keyof RealtimeEvents, string>

/** The payload type of `event`. */
export type RealtimePayload<E extends string> = E extends keyof RealtimeEvents
  ? RealtimeEvents[E]
  : unknown

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
  by?: string | number
  /** Present (true) on events replayed from the log after a reconnect or subscribe. */
  replayed?: true
}

/** What `broadcast` resolves with. */
export interface BroadcastMeta extends EventMeta {
  /** Whether the event is in the history log (false: volatile, history off, or store down). */
  stored: boolean
}

export interface BroadcastOptions {
  /** Who did it; delivered as `meta.by`. */
  by?: string | number
  /** Skip the history log: not replayed, no `seq`. @default false */
  volatile?: boolean
  /** A socket id that must not receive the event (usually the one that caused it). */
  except?: string
  /** A repeated key within the history ttl is not broadcast again; the first meta is returned. */
  idempotencyKey?: string
}

export type BroadcastFn = <E extends RealtimeEventName>(
  scope: string,
  event: E,
  payload: RealtimePayload<E>,
  opts?: BroadcastOptions
) => Promise<BroadcastMeta | null>

/** Figures shared by `stats()` and the health route. */
export interface RealtimeStats {
  node: { id: string, connections: number }
  cluster?: { nodes: number, connections: number }
}

/**
 * `fastify.realtime`. `join`, `leave` and `disconnectUser` act on the user's sockets on every node
 * and resolve once every live node applied them. They reject with `FST_REALTIME_CLUSTER_TIMEOUT`
 * when a listening node does not answer within `clusterTimeoutMs`, and at once with
 * `FST_REALTIME_CLUSTER_UNAVAILABLE` when this node cannot reach Redis or a live node is not
 * listening; either way the change was applied here and on every node that answered.
 */
export interface RealtimeApi {
  /** Joins every socket of `userId` to `scope` (also make `rooms()` grant it: subscribes are checked against it). */
  join: (userId: string | number, scope: string) => Promise<void>
  /** Removes every socket of `userId` from `scope`; authorizations in flight for the user are asked again. */
  leave: (userId: string | number, scope: string) => Promise<void>
  /** Disconnects every socket of `userId` (they do not reconnect by themselves); handshakes in flight are refused. */
  disconnectUser: (userId: string | number) => Promise<void>
  stats: () => Promise<RealtimeStats>
  /** The history store in use, or null with `history: false`. */
  history: HistoryStore | null
}

/** What the plugin keeps on `socket.data`. */
export interface RealtimeSocketData {
  user: RealtimeUser
  claims: RealtimeClaims
  /** `user.id` as a string, the id in `user:<id>`. */
  userId: string
}

export type RealtimeServer = Server<any, any, any, RealtimeSocketData>
export type RealtimeSocket = Socket<any, any, any, RealtimeSocketData>

/** Options of `@fastify/jwt`'s verifier (fast-jwt), e.g. `algorithms`, `allowedIss`, `allowedAud`, `clockTolerance`. */
export interface RealtimeVerifyOptions {
  /** @default ['HS256'] for a shared secret */
  algorithms?: string[]
  allowedIss?: string | RegExp | Array<string | RegExp>
  allowedAud?: string | RegExp | Array<string | RegExp>
  allowedSub?: string | RegExp | Array<string | RegExp>
  /** Seconds of leeway for `exp`/`nbf`. */
  clockTolerance?: number
  maxAge?: number | string
  requiredClaims?: string[]
  [option: string]: unknown
}

export interface RealtimeAuthOptions {
  /**
   * Key for `@fastify/jwt`, used only when the app has not registered `@fastify/jwt` itself:
   * a shared secret, `{ public, private? }` PEM keys, or a function returning the key.
   */
  secret?: string | Buffer | { public: string | Buffer, private?: string | Buffer } | ((...args: any[]) => unknown)
  /** Verify options for that key (or per-call options for the app's own `fastify.jwt`). */
  verify?: RealtimeVerifyOptions
  /**
   * Looks the user up. Falsy refuses with `USER_REJECTED`; a throw or a timeout with `UNAVAILABLE`.
   * @default (claims) => ({ ...claims, id: claims.sub })
   */
  user?: (claims: RealtimeClaims, socket: RealtimeSocket) => Promise<RealtimeUser | null | false | undefined> | RealtimeUser | null | false | undefined
  /** Time allowed for `user`, `rooms` and `canSubscribe` answers. @default 5000 */
  timeoutMs?: number
  /** After `realtime:auth_expired`, time to send `realtime:auth` before the disconnect. @default 30000 */
  refreshGraceMs?: number
  /** Refuse tokens without an `exp` claim. @default true */
  requireExp?: boolean
}

export interface RealtimeHistoryOptions {
  /** `'memory'`, `'redis'`, or your own `HistoryStore`. @default 'memory' ('redis' when `redis` is set) */
  store?: 'memory' | 'redis' | HistoryStore
  /**
   * Seconds an event stays replayable. A scope's position (epoch and seq) is kept longer, a day
   * after its newest event (or the ttl, if longer), so a client that missed nothing during a
   * quiet spell carries on instead of resyncing. @default 300
   */
  ttl?: number
  /** Events kept per scope. @default 50 */
  max?: number
}

export interface FastifyRealtimeOptions {
  auth?: RealtimeAuthOptions
  /** Scopes to join on connect; asked again on every subscribe. @default () => [] */
  rooms?: (user: RealtimeUser) => Promise<readonly string[]> | readonly string[]
  /** Extra scopes a client may subscribe to, beyond `rooms(user)`. @default none */
  canSubscribe?: (user: RealtimeUser, scope: string) => Promise<boolean> | boolean
  /** Event log for catch-up; `false` turns it off. @default { store: 'memory', ttl: 300, max: 50 } */
  history?: false | RealtimeHistoryOptions
  /**
   * Redis for history and multi-node fan-out: `true` reuses `fastify.redis` (duplicated; the app's
   * client is never closed), or a URL / ioredis options (the plugin's own connections, closed on
   * `close()`). Keys and channels live under the client's `keyPrefix`, which must not contain
   * `* ? [ ] \`.
   */
  redis?: true | string | RedisOptions
  /** Health route; `false` removes it. @default { path: '/health/realtime' } */
  health?: false | { path?: string }
  /** Client-to-server events per socket; `false` turns it off. @default { max: 100, windowMs: 60000 } */
  rateLimit?: false | { max?: number, windowMs?: number }
  /** Per-socket and per-address limits. */
  limits?: {
    /** Scopes one socket may hold (its own `user:` scope included); beyond it a subscribe gets `LIMIT`. @default 100 */
    scopesPerSocket?: number
    /**
     * Transports from one address that are open but not yet authenticated; further handshakes
     * from it are refused until some finish. `false`: no cap. Behind a proxy every client shares
     * the proxy's address: raise it or turn it off there. @default 256
     */
    handshakesPerAddress?: number | false
    /**
     * Bytes waiting to be sent to one client before its transport is closed (it reconnects and
     * catches up with `since`), so a client that does not read cannot hold memory. `false`: no cap.
     * @default 8388608 (8 MiB)
     */
    sendBufferBytes?: number | false
  }
  /** How long cluster-wide `join`/`leave`/`disconnectUser` wait for every node. @default 5000 */
  clusterTimeoutMs?: number
  /** Heartbeats behind the cluster figures: how often each node writes its count, and when a silent node drops out. @default { heartbeatMs: 5000, nodeTtlMs: 30000 } */
  cluster?: { heartbeatMs?: number, nodeTtlMs?: number }
  /** TypeBox schemas checked on `broadcast`, by event name. */
  events?: Partial<Record<RealtimeEventName, TSchema>>
  /** Socket.IO `ServerOptions`, passed to `new Server()`. */
  io?: Partial<ServerOptions>
  /** Same hook as fastify-socket.io: runs on `preClose` instead of closing each local transport. */
  preClose?: (done: () => void) => void
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

/** Sent as `realtime:resync`. */
export interface ResyncMessage {
  scope: string
  reason: ResyncReason
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The Socket.IO server on this app's HTTP server. */
    io: RealtimeServer
    /** Sends `event` with `payload` to every socket in `scope`, through the history log. */
    broadcast: BroadcastFn
    realtime: RealtimeApi
  }
}
