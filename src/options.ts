import type { RouteShorthandOptions } from 'fastify'
import type { ServerOptions } from 'socket.io'
import { Type } from 'typebox'
import { Compile, type Validator } from 'typebox/compile'
import type { TSchema } from 'typebox'
import { systemClock, type RealtimeClock } from './clock.js'
import { FST_REALTIME_INVALID_OPTION } from './errors.js'
import type { HistoryStore } from './history/store.js'
import type { RecoveryOptions } from './recovery.js'
import { checkRedisSpec } from './redis.js'
import type {
  FastifyRealtimeOptions,
  RealtimeAuthOptions,
  RealtimeClaims,
  RealtimeHooks,
  RealtimeMetricsRegistry,
  RealtimeSocket,
  RealtimeUser,
  RealtimeVerifyOptions
} from './types.js'

const Fn = Type.Function([], Type.Unknown())
const PositiveInt = Type.Integer({ minimum: 1 })
const NonNegativeInt = Type.Integer({ minimum: 0 })
const Strict = { additionalProperties: false }

const OptionsSchema = Type.Object({
  auth: Type.Optional(Type.Object({
    // checked by hand: string, Buffer, key pair or function
    secret: Type.Optional(Type.Unknown()),
    verify: Type.Optional(Type.Object({
      algorithms: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })),
      clockTolerance: Type.Optional(Type.Number({ minimum: 0 })),
      requiredClaims: Type.Optional(Type.Array(Type.String()))
    })),
    user: Type.Optional(Fn),
    timeoutMs: Type.Optional(PositiveInt),
    refreshGraceMs: Type.Optional(NonNegativeInt),
    requireExp: Type.Optional(Type.Boolean())
  }, Strict)),
  rooms: Type.Optional(Fn),
  canSubscribe: Type.Optional(Fn),
  history: Type.Optional(Type.Union([
    Type.Literal(false),
    Type.Object({
      // checked by hand: 'memory' | 'redis' | HistoryStore
      store: Type.Optional(Type.Unknown()),
      ttl: Type.Optional(PositiveInt),
      max: Type.Optional(PositiveInt)
    }, Strict)
  ])),
  redis: Type.Optional(Type.Union([
    Type.Literal(true),
    Type.String({ minLength: 1 }),
    Type.Object({})
  ])),
  health: Type.Optional(Type.Union([
    Type.Literal(false),
    Type.Object({
      path: Type.Optional(Type.String({ pattern: '^/' })),
      routeOptions: Type.Optional(Type.Object({})),
      cacheMs: Type.Optional(NonNegativeInt),
      details: Type.Optional(Type.Boolean())
    }, Strict)
  ])),
  metrics: Type.Optional(Type.Union([
    Type.Boolean(),
    Type.Object({
      // checked by hand: a prom-client Registry
      registry: Type.Optional(Type.Unknown()),
      prefix: Type.Optional(Type.String({ pattern: '^[a-zA-Z_:][a-zA-Z0-9_:]*$' }))
    }, Strict)
  ])),
  hooks: Type.Optional(Type.Object({
    connect: Type.Optional(Fn),
    disconnect: Type.Optional(Fn),
    subscribe: Type.Optional(Fn),
    unsubscribe: Type.Optional(Fn)
  }, Strict)),
  rateLimit: Type.Optional(Type.Union([
    Type.Literal(false),
    Type.Object({ max: Type.Optional(PositiveInt), windowMs: Type.Optional(PositiveInt) }, Strict)
  ])),
  limits: Type.Optional(Type.Object({
    scopesPerSocket: Type.Optional(PositiveInt),
    refreshesPerMinute: Type.Optional(PositiveInt),
    binaryAttachments: Type.Optional(NonNegativeInt),
    connectionsPerUser: Type.Optional(Type.Union([Type.Literal(false), PositiveInt])),
    idempotencyKeys: Type.Optional(PositiveInt),
    handshakesPerAddress: Type.Optional(Type.Union([Type.Literal(false), PositiveInt])),
    sendBufferBytes: Type.Optional(Type.Union([Type.Literal(false), PositiveInt]))
  }, Strict)),
  clusterTimeoutMs: Type.Optional(PositiveInt),
  presence: Type.Optional(Type.Union([
    Type.Boolean(),
    Type.Object({
      kinds: Type.Optional(Type.Array(Type.String({ pattern: '^[a-z][a-z0-9_-]{0,31}$' }), { minItems: 1 })),
      user: Type.Optional(Fn),
      maxListed: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000 })),
      intervalMs: Type.Optional(Type.Integer({ minimum: 10, maximum: 60_000 }))
    }, Strict)
  ])),
  cluster: Type.Optional(Type.Object({ heartbeatMs: Type.Optional(PositiveInt), nodeTtlMs: Type.Optional(PositiveInt) }, Strict)),
  recovery: Type.Optional(Type.Object({
    operations: Type.Optional(Type.Integer({ minimum: 100, maximum: 10_000_000 })),
    recheckBatch: Type.Optional(PositiveInt),
    recheckIntervalMs: Type.Optional(PositiveInt)
  }, Strict)),
  events: Type.Optional(Type.Record(Type.String({ minLength: 1 }), Type.Object({}))),
  io: Type.Optional(Type.Object({})),
  preClose: Type.Optional(Fn),
  clock: Type.Optional(Type.Object({ now: Fn, setTimeout: Fn, clearTimeout: Fn }))
}, Strict)

const checkOptions = Compile(OptionsSchema)

type Lookup<T> = T | Promise<T>

/** Options after validation and defaults: a new object, never the caller's. */
export interface NormalizedOptions {
  auth: {
    secret: RealtimeAuthOptions['secret']
    verify: RealtimeVerifyOptions | undefined
    user: (claims: RealtimeClaims, socket: RealtimeSocket) => Lookup<RealtimeUser | null | false | undefined>
    timeoutMs: number
    refreshGraceMs: number
    requireExp: boolean
  }
  rooms: (user: RealtimeUser) => Lookup<readonly string[]>
  canSubscribe: ((user: RealtimeUser, scope: string) => Lookup<boolean>) | null
  history: false | { store: 'memory' | 'redis' | HistoryStore, ttl: number, max: number }
  redis: NonNullable<FastifyRealtimeOptions['redis']> | null
  health: false | { path: string, routeOptions: RouteShorthandOptions, cacheMs: number, details: boolean }
  metrics: false | { registry: RealtimeMetricsRegistry | null, prefix: string }
  hooks: RealtimeHooks
  rateLimit: false | { max: number, windowMs: number }
  limits: {
    scopesPerSocket: number
    refreshesPerMinute: number
    binaryAttachments: number
    connectionsPerUser: number | false
    idempotencyKeys: number
    handshakesPerAddress: number | false
    sendBufferBytes: number | false
  }
  clusterTimeoutMs: number
  cluster: { heartbeatMs: number, nodeTtlMs: number }
  recovery: RecoveryOptions
  presence: false | NormalizedPresence
  events: Map<string, Validator>
  io: Partial<ServerOptions> & { connectTimeout: number }
  preClose: ((done: () => void) => void) | null
  clock: RealtimeClock
}

/** The `presence` option after defaults. */
export interface NormalizedPresence {
  /** Kinds tracked; null: every kind but `user`. */
  kinds: ReadonlySet<string> | null
  user: (user: RealtimeUser) => unknown
  maxListed: number
  intervalMs: number
}

function fail (path: string, message: string): never {
  throw new FST_REALTIME_INVALID_OPTION(path, message)
}

const defaultUser = (claims: RealtimeClaims): RealtimeUser | null =>
  claims.sub === undefined ? null : { ...claims, id: claims.sub }

const noRooms = (): string[] => []

const presenceOfId = (user: RealtimeUser): { id: RealtimeUser['id'] } => ({ id: user.id })

function presenceOptions (value: FastifyRealtimeOptions['presence']): NormalizedOptions['presence'] {
  if (value === undefined || value === false) return false
  const opts = value === true ? {} : value
  return {
    kinds: opts.kinds === undefined ? null : new Set(opts.kinds),
    user: opts.user ?? presenceOfId,
    maxListed: opts.maxListed ?? 100,
    intervalMs: opts.intervalMs ?? 1000
  }
}

function checkSecret (secret: unknown): void {
  if (secret === undefined || typeof secret === 'function') return
  if (typeof secret === 'string' || Buffer.isBuffer(secret)) {
    if (secret.toString().trim().length === 0) fail('auth.secret', 'must not be empty')
    return
  }
  if (secret !== null && typeof secret === 'object') {
    const pub = (secret as { public?: unknown }).public
    if ((typeof pub === 'string' || Buffer.isBuffer(pub)) && pub.length > 0) return
    fail('auth.secret.public', 'must be a non-empty PEM string or Buffer')
  }
  fail('auth.secret', 'must be a string, a Buffer, { public, private? } keys or a function')
}

function isStore (value: unknown): value is HistoryStore {
  const store = value as Partial<HistoryStore> | null
  return typeof store === 'object' && store !== null &&
    typeof store.append === 'function' && typeof store.read === 'function' &&
    typeof store.position === 'function'
}

/** Origins no app means to allow: a `cors.origin` RegExp that matches them matches any site. */
const UNRELATED_ORIGINS = ['https://fastify-realtime-probe.invalid', 'null']

/** How `origin` lets any site in, in words; null when it names the sites it allows. */
function anyOrigin (origin: unknown): string | null {
  if (origin === undefined) return 'no origin (the cors default, any site)'
  if (origin === true || origin === '*') return `origin ${String(origin)}`
  if (typeof origin === 'function') return 'a function origin (what it answers cannot be checked at register)'
  if (origin instanceof RegExp && UNRELATED_ORIGINS.some((probe) => {
    origin.lastIndex = 0
    return origin.test(probe)
  })) return `origin ${String(origin)} (it matches any site)`
  if (Array.isArray(origin)) {
    for (const one of origin) {
      const why = one === undefined ? null : anyOrigin(one)
      if (why !== null) return why
    }
  }
  return null
}

/**
 * Refuses a CORS setup that lets any site send the user's credentials (cookies, HTTP auth):
 * `credentials: true` with an origin that reflects any site, unless the app says
 * `allowAnyOriginWithCredentials: true`. Returns `io` without that plugin-only key.
 */
function checkCors (io: NormalizedOptions['io']): NormalizedOptions['io'] {
  const cors = io.cors as { origin?: unknown, credentials?: unknown, allowAnyOriginWithCredentials?: unknown } | undefined
  if (cors === undefined || cors === null || typeof cors !== 'object') return io
  const { allowAnyOriginWithCredentials: optIn, ...rest } = cors
  if (optIn !== undefined && typeof optIn !== 'boolean') fail('io.cors.allowAnyOriginWithCredentials', 'must be a boolean')
  const why = rest.credentials === true && optIn !== true ? anyOrigin(rest.origin) : null
  if (why !== null) {
    fail('io.cors.origin', `${why} together with credentials: true lets any site act as the user; list the allowed origins, or set io.cors.allowAnyOriginWithCredentials: true if that is what you mean`)
  }
  return optIn === undefined ? io : { ...io, cors: rest as ServerOptions['cors'] }
}

/** What a union-typed option accepts, for the message when a value fits none of its forms. */
const FORMS: Record<string, string> = {
  history: 'false or { store, ttl, max }',
  redis: 'true, a Redis URL, ioredis options, an ioredis Cluster or { cluster, options }',
  health: 'false or { path, routeOptions, cacheMs, details }',
  metrics: 'true, false or { registry, prefix }',
  rateLimit: 'false or { max, windowMs }',
  presence: 'true, false or { kinds, user, maxListed, intervalMs }'
}

interface SchemaError {
  keyword: string
  instancePath: string
  params: unknown
  message: string
}

/**
 * Fails with the most useful of TypeBox's errors: an unknown key first, else the deepest path,
 * so `rateLimit: { max: 0 }` says `rateLimit.max: must be >= 1` rather than which union branch
 * it is not.
 */
function report (errors: SchemaError[]): never {
  const dotted = (error: SchemaError): string => error.instancePath.slice(1).replaceAll('/', '.')
  const unknown = errors.find((e) => e.keyword === 'additionalProperties')
  if (unknown !== undefined) {
    const keys = (unknown.params as { additionalProperties?: string[] }).additionalProperties ?? []
    fail(dotted(unknown) || '(root)', `unknown option ${keys.map((k) => `"${k}"`).join(', ')}`)
  }
  const useful = errors.filter((e) => e.keyword !== 'anyOf' && e.keyword !== 'boolean')
  const depth = (e: SchemaError): number => e.instancePath.split('/').length
  const deepest = useful.reduce<SchemaError | undefined>((best, e) => best === undefined || depth(e) > depth(best) ? e : best, undefined)
  if (deepest === undefined) fail('(root)', 'is invalid')
  const path = dotted(deepest)
  const forms = FORMS[path]
  if (forms !== undefined && (deepest.keyword === 'type' || deepest.keyword === 'const')) fail(path, `must be ${forms}`)
  fail(path || '(root)', deepest.message)
}

function metricsOptions (metrics: FastifyRealtimeOptions['metrics']): NormalizedOptions['metrics'] {
  if (metrics === undefined || metrics === false) return false
  const registry = metrics === true ? undefined : metrics.registry
  if (registry !== undefined) {
    const r = registry as Partial<RealtimeMetricsRegistry> | null
    if (typeof r?.registerMetric !== 'function' || typeof r.getSingleMetric !== 'function' || typeof r.removeSingleMetric !== 'function') {
      fail('metrics.registry', 'must be a prom-client Registry')
    }
  }
  return { registry: registry ?? null, prefix: (metrics === true ? undefined : metrics.prefix) ?? 'realtime_' }
}

/** The `events` option's schemas, compiled once (the plugin's and the publisher's). Throws FST_REALTIME_INVALID_OPTION. */
export function compileEvents (schemas: FastifyRealtimeOptions['events']): NormalizedOptions['events'] {
  const events = new Map<string, Validator>()
  for (const [name, schema] of Object.entries(schemas ?? {})) {
    try {
      events.set(name, Compile(schema as TSchema))
    } catch (err) {
      fail(`events.${name}`, `is not a valid schema (${(err as Error).message})`)
    }
  }
  return events
}

/** Validates `options` once and returns a new, normalised object. Throws FST_REALTIME_INVALID_OPTION. */
export function normalizeOptions (options: FastifyRealtimeOptions | undefined): NormalizedOptions {
  const opts = options ?? {}
  if (!checkOptions.Check(opts)) report([...checkOptions.Errors(opts)])

  const auth = opts.auth ?? {}
  checkSecret(auth.secret)

  let history: NormalizedOptions['history'] = false
  if (opts.history !== false) {
    const store = opts.history?.store ?? (opts.redis ? 'redis' : 'memory')
    if (store !== 'memory' && store !== 'redis' && !isStore(store)) {
      fail('history.store', "must be 'memory', 'redis' or an object with append, read and position")
    }
    history = { store, ttl: opts.history?.ttl ?? 300, max: opts.history?.max ?? 50 }
  }
  checkRedisSpec(opts.redis)
  if (history !== false && history.store === 'redis' && opts.redis === undefined) {
    fail('history.store', "'redis' needs the redis option")
  }

  const events = compileEvents(opts.events)

  // unauthenticated transports are dropped after 10 s instead of Socket.IO's 45 s; dynamic
  // namespaces are created before any middleware runs, so without the clean-up every refused
  // CONNECT to a new name would leave one behind
  const io = checkCors({ connectTimeout: 10_000, cleanupEmptyChildNamespaces: true, ...opts.io as Partial<ServerOptions> })
  if (io.parser !== undefined && opts.limits?.binaryAttachments !== undefined) {
    fail('limits.binaryAttachments', "applies to Socket.IO's own parser; with io.parser, that parser decides what it accepts")
  }
  if (io.connectionStateRecovery !== undefined) {
    fail('io.connectionStateRecovery', 'is not supported: it skips authentication on recovery and does not work with the Redis adapter; catch-up with since replaces it')
  }
  const cluster = { heartbeatMs: opts.cluster?.heartbeatMs ?? 5000, nodeTtlMs: opts.cluster?.nodeTtlMs ?? 30_000 }
  if (cluster.heartbeatMs > 10_000) fail('cluster.heartbeatMs', 'must be at most 10000 (cluster figures are at most 10 s old)')
  if (cluster.heartbeatMs >= cluster.nodeTtlMs) fail('cluster.heartbeatMs', 'must be less than cluster.nodeTtlMs')

  return {
    auth: {
      secret: auth.secret,
      verify: auth.verify === undefined ? undefined : { ...auth.verify },
      user: auth.user ?? defaultUser,
      timeoutMs: auth.timeoutMs ?? 5000,
      refreshGraceMs: auth.refreshGraceMs ?? 30_000,
      requireExp: auth.requireExp ?? true
    },
    rooms: opts.rooms ?? noRooms,
    canSubscribe: opts.canSubscribe ?? null,
    history,
    redis: opts.redis ?? null,
    health: opts.health === false
      ? false
      : {
          path: opts.health?.path ?? '/health/realtime',
          routeOptions: { ...opts.health?.routeOptions },
          cacheMs: opts.health?.cacheMs ?? 1000,
          details: opts.health?.details ?? true
        },
    metrics: metricsOptions(opts.metrics),
    hooks: { ...opts.hooks },
    rateLimit: opts.rateLimit === false
      ? false
      : { max: opts.rateLimit?.max ?? 100, windowMs: opts.rateLimit?.windowMs ?? 60_000 },
    limits: {
      scopesPerSocket: opts.limits?.scopesPerSocket ?? 100,
      refreshesPerMinute: opts.limits?.refreshesPerMinute ?? 5,
      binaryAttachments: opts.limits?.binaryAttachments ?? 0,
      connectionsPerUser: opts.limits?.connectionsPerUser ?? 20,
      idempotencyKeys: opts.limits?.idempotencyKeys ?? 10_000,
      handshakesPerAddress: opts.limits?.handshakesPerAddress ?? 256,
      sendBufferBytes: opts.limits?.sendBufferBytes ?? 8 * 1024 * 1024
    },
    clusterTimeoutMs: opts.clusterTimeoutMs ?? 5000,
    cluster,
    recovery: {
      operations: opts.recovery?.operations ?? 10_000,
      recheckBatch: opts.recovery?.recheckBatch ?? 50,
      recheckIntervalMs: opts.recovery?.recheckIntervalMs ?? 100
    },
    presence: presenceOptions(opts.presence),
    events,
    io,
    preClose: opts.preClose ?? null,
    clock: opts.clock ?? systemClock
  }
}
