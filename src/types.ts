import type { RouteShorthandOptions } from 'fastify'
import type { Server, ServerOptions, Socket } from 'socket.io'
import type { TSchema } from 'typebox'
import type { RealtimeClock } from './clock.js'
import type { HistoryStore } from './history/store.js'
import type { EventActor, EventMeta, PresenceInfo, PresenceSnapshot, RealtimeEventName, RealtimePayload } from './protocol.js'

// The wire's types live in protocol.ts, which the client imports too; re-exported here so that
// `fastify-realtime` exports them and `declare module 'fastify-realtime'` augments the one
// `RealtimeEvents` that both `broadcast` and the client's `on()` read.
export type {
  EventActor,
  EventMeta,
  JsonValue,
  PresenceAnswer,
  PresenceDiff,
  PresenceInfo,
  PresenceJoin,
  PresenceSnapshot,
  PresenceUser,
  ReadyMessage,
  RealtimeEventName,
  RealtimeEvents,
  RealtimePayload,
  RealtimePresenceInfo,
  ResyncMessage,
  RevokedMessage,
  SkipMessage
} from './protocol.js'

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

/** What `broadcast` resolves with. */
export interface BroadcastMeta extends EventMeta {
  /** Whether the event is in the history log (false: volatile, history off, or store down). */
  stored: boolean
}

export interface BroadcastOptions {
  /**
   * Who did it; delivered as `meta.by`, stored and replayed with the event: a user id, or a
   * small JSON object (at most 1 KB as JSON; an object typed with an `interface` needs a spread,
   * `{ ...actor }`, to count as one).
   * @example { by: { id: 'u7', name: 'Jane' } }
   */
  by?: EventActor
  /** Skip the history log: not replayed, no `seq`. @default false */
  volatile?: boolean
  /** A socket id that must not receive the event (usually the one that caused it). */
  except?: string
  /**
   * A key repeated for the same scope within the history ttl is not broadcast again; the first
   * call's meta is returned. Kept in Redis, for every node, with the Redis history store (or any
   * store with `appendOnce`); otherwise per node (`limits.idempotencyKeys` of them at most).
   */
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
  /**
   * Who is in `scope` right now, across every node: `{ scope, count, users, truncated }`, at most
   * `presence.maxListed` users (longest present first), `count` always exact. Rejects with
   * `FST_REALTIME_INVALID_SCOPE`, `FST_REALTIME_PRESENCE_UNTRACKED` (presence off, or a kind not in
   * `presence.kinds`) or `FST_REALTIME_PRESENCE_UNAVAILABLE` (Redis did not answer).
   *
   * @example
   * const { count, users } = await fastify.realtime.presence('team:42')
   */
  presence: (scope: string) => Promise<PresenceSnapshot>
  /** The history store in use, or null with `history: false`. */
  history: HistoryStore | null
}

/** What the plugin keeps on `socket.data`. */
export interface RealtimeSocketData {
  user: RealtimeUser
  claims: RealtimeClaims
  /** `user.id` as a string, the id in `user:<id>`. */
  userId: string
  /** The scopes granted at the handshake, from then until the socket has joined them at `connection`. */
  granted?: string[]
}

export type RealtimeServer = Server<any, any, any, RealtimeSocketData>
export type RealtimeSocket = Socket<any, any, any, RealtimeSocketData>

/** `io.cors` as an object (Socket.IO passes it to the `cors` package), plus the plugin's opt-in. */
type SocketIoCors = Exclude<NonNullable<ServerOptions['cors']>, (...args: any[]) => unknown>

/** `io.cors` options: those of the `cors` package, plus one the plugin reads (and never passes on). */
export interface RealtimeCorsOptions extends SocketIoCors {
  /**
   * With `credentials: true`, an `origin` that lets any site in (`true`, `'*'`, unset, a RegExp
   * that matches any site, or a function) fails `register`: every site could then act as the
   * user. Set this to say that it is meant (a function that checks a list of its own, say).
   * @default false
   * @example { cors: { origin: (origin, cb) => cb(null, allowed.has(origin)), credentials: true, allowAnyOriginWithCredentials: true } }
   */
  allowAnyOriginWithCredentials?: boolean
}

/** Socket.IO `ServerOptions`, with `cors` able to carry the plugin's opt-in. */
export type RealtimeIoOptions = Omit<Partial<ServerOptions>, 'cors'> & { cors?: ServerOptions['cors'] | RealtimeCorsOptions }

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

/** Who is online in a scope, across every node (`presence: true` for the defaults). */
export interface RealtimePresenceOptions {
  /**
   * Scope kinds whose presence is tracked.
   * @default every kind but `user`
   * @example ['team', 'incident']
   */
  kinds?: string[]
  /**
   * What others may see of a present user: a JSON object of at most 1 KB, never claims or
   * tokens (declare its shape as `RealtimePresenceInfo`). Called when a user's first socket on a node joins a tracked scope; a throw or an
   * answer that is not such an object falls back to `{ id }` (with a warning).
   * @default (user) => ({ id: user.id })
   * @example (user) => ({ id: user.id, name: user.name })
   */
  user?: (user: RealtimeUser) => PresenceInfo
  /**
   * Users listed per scope (in a snapshot, and joins per diff); `count` is always the full number.
   * @default 100
   */
  maxListed?: number
  /**
   * Join and leave changes of a scope are coalesced and sent at most this often (per node), so a
   * reconnect storm is one `realtime:presence_diff`, not one per client.
   * @default 1000
   */
  intervalMs?: number
}

/** A prom-client `Registry`, or anything with these three methods. */
export interface RealtimeMetricsRegistry {
  registerMetric: (metric: any) => void
  getSingleMetric: (name: string) => unknown
  removeSingleMetric: (name: string) => void
}

/**
 * Prometheus metrics through `prom-client` (an optional peer dependency: install it). They go on
 * the app's registry, so the app's own `/metrics` route shows them.
 *
 * @example
 * import { Registry } from 'prom-client'
 * const registry = new Registry()
 * await app.register(realtime, { metrics: { registry, prefix: 'chat_' } })
 * app.get('/metrics', async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()))
 */
export interface RealtimeMetricsOptions {
  /** Where the metrics are registered. @default prom-client's global `register` */
  registry?: RealtimeMetricsRegistry
  /** Put before every metric name (`realtime_connections`…). @default 'realtime_' */
  prefix?: string
}

/**
 * Called after the fact, for webhooks, audit or analytics. A hook that throws or rejects is
 * logged (a warning, at most one per 10 s) and never breaks the socket; nothing waits for a hook,
 * so a slow one delays neither the handshake nor any delivery.
 *
 * @example
 * hooks: {
 *   connect: (socket) => fetch(webhookUrl, { method: 'POST', body: JSON.stringify({ user: socket.data.userId, at: Date.now() }) }),
 *   subscribe: (socket, scope) => audit.log(socket.data.userId, 'subscribed', scope)
 * }
 */
export interface RealtimeHooks {
  /** A socket connected (any namespace); on `/` it has joined its granted scopes (`socket.rooms`). */
  connect?: (socket: RealtimeSocket) => unknown
  /** A socket that `connect` was called for went away, with Socket.IO's reason (`transport close`, `client namespace disconnect`…). */
  disconnect?: (socket: RealtimeSocket, reason: string) => unknown
  /** A `realtime:subscribe` was granted and answered (after its replay). */
  subscribe?: (socket: RealtimeSocket, scope: string) => unknown
  /** A `realtime:unsubscribe` was answered: the socket left `scope`. */
  unsubscribe?: (socket: RealtimeSocket, scope: string) => unknown
}

/** The health route. */
export interface RealtimeHealthOptions {
  /** @default '/health/realtime' */
  path?: string
  /**
   * Merged into the route's options: `onRequest` for auth, `logLevel`, `config`, `schema` extras
   * (its `response` stays the plugin's).
   * @example { logLevel: 'warn', onRequest: async (request) => { if (request.headers['x-probe'] !== probeKey) throw app.httpErrors.unauthorized() } }
   */
  routeOptions?: RouteShorthandOptions
  /**
   * How long the Redis checks behind the route (ping, cluster figures, the store's ping) are
   * reused: a probe storm costs Redis one round of checks per period. `0`: checked on every
   * request (requests that arrive while a check runs still share it). @default 1000
   */
  cacheMs?: number
  /** `false`: the body is only `{ websocket }`, the status code still says healthy (200) or not (503). @default true */
  details?: boolean
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
   * `close()`). A Redis Cluster: `{ cluster: [{ host, port }, …], options? }` or an ioredis
   * `Cluster` (duplicated, never closed by the plugin; with `true`, when `fastify.redis` is one).
   * Keys and channels live under the client's `keyPrefix`, which must not contain `* ? [ ] \`.
   * @example { cluster: [{ host: '10.0.0.1', port: 6379 }], options: { keyPrefix: 'app:' } }
   */
  redis?: true | string | RealtimeRedisOptions | RealtimeRedisClusterOptions | RealtimeRedisCluster
  /** Health route; `false` removes it. @default { path: '/health/realtime', cacheMs: 1000, details: true } */
  health?: false | RealtimeHealthOptions
  /** Prometheus metrics through prom-client; `true` uses its global registry. @default false */
  metrics?: boolean | RealtimeMetricsOptions
  /** Called after connects, disconnects, subscribes and unsubscribes; never awaited. @default none */
  hooks?: RealtimeHooks
  /** Client-to-server events per socket; `false` turns it off. @default { max: 100, windowMs: 60000 } */
  rateLimit?: false | { max?: number, windowMs?: number }
  /** Per-socket and per-address limits. */
  limits?: {
    /** Scopes one socket may hold (its own `user:` scope included); beyond it a subscribe gets `LIMIT`. @default 100 */
    scopesPerSocket?: number
    /**
     * `realtime:auth` (token refreshes) per socket and minute, refilled evenly (one every
     * 60 / n s), whatever `rateLimit` says; beyond it the refresh gets `RATE_LIMITED`, so a
     * flood of refreshes costs at most this many token checks and `auth.user` lookups.
     * @default 5
     * @example { limits: { refreshesPerMinute: 10 } }
     */
    refreshesPerMinute?: number
    /**
     * Binary attachments one incoming packet may announce. The protocol sends none: raise it
     * only when your own events carry binary. A packet announcing more closes its transport at
     * once; one whose attachments have not all arrived `io.connectTimeout` after it began is
     * dropped with its buffers (and its transport closed at its next frame), before and after
     * authentication. Applies to Socket.IO's own parser: with `io.parser` set, leave it out.
     * @default 0
     * @example { limits: { binaryAttachments: 2 } }
     */
    binaryAttachments?: number
    /**
     * Sockets one user may hold on each namespace of this node (not across nodes); the next
     * handshake of that user gets `connect_error` with code `LIMIT`. `false`: no cap.
     * @default 20
     * @example { limits: { connectionsPerUser: 50 } }
     */
    connectionsPerUser?: number | false
    /**
     * Idempotency keys (`broadcast`'s `opts.idempotencyKey`) remembered on this node, for the
     * history ttl; past it the oldest are forgotten early. With the Redis history store a key is
     * also kept in Redis for the ttl, for every node, whatever this says.
     * @default 10000
     * @example { limits: { idempotencyKeys: 100000 } }
     */
    idempotencyKeys?: number
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
  /**
   * Who is online in each scope, across every node: `realtime.presence(scope)`,
   * `realtime:presence` and `realtime:presence_diff`. Kept in memory on one node, in Redis when
   * `redis` is set. `false` turns it off.
   * @default false
   * @example presence: { kinds: ['team'], user: (user) => ({ id: user.id, name: user.name }) }
   */
  presence?: boolean | RealtimePresenceOptions
  /** Heartbeats behind the cluster figures: how often each node writes its count, and when a silent node drops out. @default { heartbeatMs: 5000, nodeTtlMs: 30000 } */
  cluster?: { heartbeatMs?: number, nodeTtlMs?: number }
  /**
   * What a node does when its Redis subscriber drops and comes back (see the README's "What
   * happens on a Redis blip"): it keeps its sockets, replays what other nodes stored meanwhile and
   * applies the membership operations issued meanwhile from a shared record of them (a Redis
   * stream capped at about `operations` entries). Only when that record was trimmed past what it
   * missed, or lost, does it re-check every local socket's scopes with `rooms`/`canSubscribe`:
   * `recheckBatch` sockets every `recheckIntervalMs` (on `clock`), never all at once.
   * @default { operations: 10000, recheckBatch: 50, recheckIntervalMs: 100 }
   * @example recovery: { operations: 50000, recheckBatch: 20, recheckIntervalMs: 250 }
   */
  recovery?: RealtimeRecoveryOptions
  /** TypeBox schemas checked on `broadcast`, by event name. */
  events?: Partial<Record<RealtimeEventName, TSchema>>
  /**
   * Socket.IO `ServerOptions`, passed to `new Server()`. `io.cors.origin` is enforced for
   * WebSocket handshakes too (a callback is asked for each one).
   * @default { connectTimeout: 10000, cleanupEmptyChildNamespaces: true }
   */
  io?: RealtimeIoOptions
  /** Same hook as fastify-socket.io: runs on `preClose` instead of closing each local transport. */
  preClose?: (done: () => void) => void
  /**
   * The time and the timers behind token expiry, the refresh grace, rate-limit windows,
   * idempotency keys and presence diffs. Tests pass a clock they move by hand.
   * @default the system clock
   */
  clock?: RealtimeClock
}

/** The `recovery` option. */
export interface RealtimeRecoveryOptions {
  /** Membership operations kept in the shared record (`XADD <keyPrefix>rt:ops MAXLEN ~ operations`), at least 100. @default 10000 */
  operations?: number
  /** Sockets whose scopes are re-checked at once when the record cannot say what was missed. @default 50 */
  recheckBatch?: number
  /** Time between two batches of re-checks. @default 100 */
  recheckIntervalMs?: number
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

/**
 * ioredis connection options for the plugin's own connections, handed to ioredis as they are:
 * every ioredis `RedisOptions` field is accepted. The package's types name only the common ones,
 * so that an app compiles them without ioredis' own declarations (and their dependencies).
 */
export interface RealtimeRedisOptions {
  host?: string
  port?: number
  /** A Unix socket path, instead of host and port. */
  path?: string
  username?: string
  password?: string
  db?: number
  /** Prefix of every key and channel the plugin uses; must not contain `* ? [ ] \`. */
  keyPrefix?: string
  /** Node `tls.connect` options: set to use TLS. */
  tls?: object
  connectionName?: string
  /** Not here: a Redis Cluster is `{ cluster, options }` (see `RealtimeRedisClusterOptions`). */
  cluster?: never
  /**
   * Any other ioredis option (`retryStrategy`, `family`, `commandTimeout`…). `any`, not
   * `unknown`: an ioredis `RedisOptions` interface must stay assignable to this one.
   */
  [option: string]: any
}

/**
 * An ioredis `Redis` or `Cluster`, as the Redis history store is attached to one (the plugin
 * attaches its own connection). Only the members every use of it touches are named here, so that
 * the package's types do not depend on ioredis' own declarations; the store also runs its Lua
 * scripts, SCAN and pipelines on it, so pass an ioredis client, not a look-alike.
 */
export interface RealtimeRedisClient {
  readonly status: string
  defineCommand: (name: string, definition: { lua: string, numberOfKeys?: number }) => void
  on: (event: 'ready', listener: () => void) => unknown
  off: (event: 'ready', listener: () => void) => unknown
  ping: () => Promise<string>
}

/** A Redis Cluster the plugin opens its own clients to (Redis 7 or later: sharded pub/sub). */
export interface RealtimeRedisClusterOptions {
  /** Startup nodes: one reachable master is enough, the others are discovered. */
  cluster: Array<{ host?: string, port: number }>
  /**
   * ioredis `ClusterOptions`, handed to ioredis as they are (`keyPrefix`, `redisOptions` for
   * passwords and TLS, `natMap`…), except what the plugin's own connections need: no offline
   * queue, sharded subscribers.
   */
  options?: {
    /** Prefix of every key and channel the plugin uses; must not contain `* ? [ ] \`. */
    keyPrefix?: string
    /** Options for each node's connection (ioredis `RedisOptions`, without host and port). */
    redisOptions?: RealtimeRedisOptions
    /** Any other ioredis `ClusterOptions` field. */
    [option: string]: any
  }
}

/**
 * The part of an ioredis `Cluster` the plugin uses: it duplicates the app's client for
 * connections of its own. Declared here so the package's types do not depend on ioredis'.
 */
export interface RealtimeRedisCluster {
  /** True on an ioredis `Cluster`. */
  readonly isCluster: boolean
  duplicate: (...args: any[]) => unknown
}
