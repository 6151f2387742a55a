import type { ServerOptions } from 'socket.io'
import { Type } from 'typebox'
import { Compile, type Validator } from 'typebox/compile'
import type { TSchema } from 'typebox'
import { FST_REALTIME_INVALID_OPTION } from './errors.js'
import type { HistoryStore } from './history/store.js'
import type {
  FastifyRealtimeOptions,
  RealtimeAuthOptions,
  RealtimeClaims,
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
    Type.Object({ path: Type.Optional(Type.String({ pattern: '^/' })) }, Strict)
  ])),
  rateLimit: Type.Optional(Type.Union([
    Type.Literal(false),
    Type.Object({ max: Type.Optional(PositiveInt), windowMs: Type.Optional(PositiveInt) }, Strict)
  ])),
  limits: Type.Optional(Type.Object({
    scopesPerSocket: Type.Optional(PositiveInt),
    handshakesPerAddress: Type.Optional(Type.Union([Type.Literal(false), PositiveInt])),
    sendBufferBytes: Type.Optional(Type.Union([Type.Literal(false), PositiveInt]))
  }, Strict)),
  clusterTimeoutMs: Type.Optional(PositiveInt),
  cluster: Type.Optional(Type.Object({ heartbeatMs: Type.Optional(PositiveInt), nodeTtlMs: Type.Optional(PositiveInt) }, Strict)),
  events: Type.Optional(Type.Record(Type.String({ minLength: 1 }), Type.Object({}))),
  io: Type.Optional(Type.Object({})),
  preClose: Type.Optional(Fn)
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
  health: false | { path: string }
  rateLimit: false | { max: number, windowMs: number }
  limits: { scopesPerSocket: number, handshakesPerAddress: number | false, sendBufferBytes: number | false }
  clusterTimeoutMs: number
  cluster: { heartbeatMs: number, nodeTtlMs: number }
  events: Map<string, Validator>
  io: Partial<ServerOptions>
  preClose: ((done: () => void) => void) | null
}

function fail (path: string, message: string): never {
  throw new FST_REALTIME_INVALID_OPTION(path, message)
}

const defaultUser = (claims: RealtimeClaims): RealtimeUser | null =>
  claims.sub === undefined ? null : { ...claims, id: claims.sub }

const noRooms = (): string[] => []

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

function checkCors (io: Partial<ServerOptions>): void {
  const cors = io.cors as { origin?: unknown, credentials?: unknown } | undefined
  if (cors === undefined || cors === null) return
  if (cors.credentials === true && (cors.origin === '*' || (Array.isArray(cors.origin) && cors.origin.includes('*')))) {
    fail('io.cors', "origin '*' together with credentials: true lets any site act as the user; list the allowed origins")
  }
}

/** What a union-typed option accepts, for the message when a value fits none of its forms. */
const FORMS: Record<string, string> = {
  history: 'false or { store, ttl, max }',
  redis: 'true, a Redis URL or ioredis options',
  health: 'false or { path }',
  rateLimit: 'false or { max, windowMs }'
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
  if (history !== false && history.store === 'redis' && opts.redis === undefined) {
    fail('history.store', "'redis' needs the redis option")
  }

  const events = new Map<string, Validator>()
  for (const [name, schema] of Object.entries(opts.events ?? {})) {
    try {
      events.set(name, Compile(schema as TSchema))
    } catch (err) {
      fail(`events.${name}`, `is not a valid schema (${(err as Error).message})`)
    }
  }

  // unauthenticated transports are dropped after 10 s instead of Socket.IO's 45 s
  const io: Partial<ServerOptions> = { connectTimeout: 10_000, ...opts.io }
  checkCors(io)
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
    health: opts.health === false ? false : { path: opts.health?.path ?? '/health/realtime' },
    rateLimit: opts.rateLimit === false
      ? false
      : { max: opts.rateLimit?.max ?? 100, windowMs: opts.rateLimit?.windowMs ?? 60_000 },
    limits: {
      scopesPerSocket: opts.limits?.scopesPerSocket ?? 100,
      handshakesPerAddress: opts.limits?.handshakesPerAddress ?? 256,
      sendBufferBytes: opts.limits?.sendBufferBytes ?? 8 * 1024 * 1024
    },
    clusterTimeoutMs: opts.clusterTimeoutMs ?? 5000,
    cluster,
    events,
    io,
    preClose: opts.preClose ?? null
  }
}
