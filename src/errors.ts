import { createError } from '@fastify/error'

/** Bad plugin options: thrown by `register` (or `ready`, for what depends on later plugins). */
export const FST_REALTIME_INVALID_OPTION = createError(
  'FST_REALTIME_INVALID_OPTION',
  'Invalid fastify-realtime option %s: %s',
  500
)

/** A scope that does not follow `kind:id` (see the README's Scopes section). */
export const FST_REALTIME_INVALID_SCOPE = createError(
  'FST_REALTIME_INVALID_SCOPE',
  'Invalid scope "%s": a scope is kind:id, e.g. team:42',
  400
)

/** An event name that is empty, not a string, or reserved for the protocol or by Socket.IO. */
export const FST_REALTIME_INVALID_EVENT = createError(
  'FST_REALTIME_INVALID_EVENT',
  'Invalid event name "%s": %s',
  400
)

/** A payload that fails the TypeBox schema declared for its event in `events`. */
export const FST_REALTIME_INVALID_PAYLOAD = createError(
  'FST_REALTIME_INVALID_PAYLOAD',
  'Payload for event "%s" does not match its schema: %s',
  400
)

/** A user id that is not a string or number usable in the `user:<id>` scope. */
export const FST_REALTIME_INVALID_USER_ID = createError(
  'FST_REALTIME_INVALID_USER_ID',
  'Invalid user id "%s": it must be 1-128 characters of A-Z a-z 0-9 _ . : @ -',
  400
)

/** Bad `broadcast` options (`by`, `except`, `idempotencyKey`). */
export const FST_REALTIME_INVALID_BROADCAST_OPTION = createError(
  'FST_REALTIME_INVALID_BROADCAST_OPTION',
  'Invalid broadcast option %s: %s',
  400
)

/** A cluster-wide membership operation that did not hear back from every node in time. */
export const FST_REALTIME_CLUSTER_TIMEOUT = createError(
  'FST_REALTIME_CLUSTER_TIMEOUT',
  'Cluster operation %s did not complete on every node within %d ms',
  504
)

/**
 * Redis configured but not answering at `ready`: the app fails fast instead of starting half-wired.
 * A publisher's `broadcast` rejects with it while Redis cannot be reached: nothing was delivered.
 */
export const FST_REALTIME_REDIS_UNAVAILABLE = createError(
  'FST_REALTIME_REDIS_UNAVAILABLE',
  'Redis is not reachable: %s',
  503
)

/**
 * A cluster-wide membership operation that could not be confirmed on every live node without
 * waiting: Redis is not reachable from this node, or a node with a fresh heartbeat was not
 * listening (its Redis subscriber is reconnecting). It was applied on this node and on every
 * node that answered.
 */
export const FST_REALTIME_CLUSTER_UNAVAILABLE = createError(
  'FST_REALTIME_CLUSTER_UNAVAILABLE',
  'Cluster operation %s could not be confirmed on every node: %s',
  503
)

/**
 * An installed Socket.IO, engine.io, socket.io-parser or ioredis lacks an internal the plugin relies on (see
 * src/internals.ts): `register` fails rather than run with a feature switched off.
 */
export const FST_REALTIME_UNSUPPORTED_VERSION = createError(
  'FST_REALTIME_UNSUPPORTED_VERSION',
  'fastify-realtime does not support the installed %s: %s is missing',
  500
)

/**
 * `realtime.presence(scope)` for a scope whose presence is not tracked: presence is off, or the
 * scope's kind is not in `presence.kinds`.
 */
export const FST_REALTIME_PRESENCE_UNTRACKED = createError(
  'FST_REALTIME_PRESENCE_UNTRACKED',
  'Presence is not tracked for scope "%s": %s',
  400
)

/** `realtime.presence(scope)` could not be read: the presence store (Redis) did not answer. */
export const FST_REALTIME_PRESENCE_UNAVAILABLE = createError(
  'FST_REALTIME_PRESENCE_UNAVAILABLE',
  'Presence of "%s" could not be read: %s',
  503
)

/** An option that needs an optional peer dependency the app has not installed (`metrics` needs prom-client). */
export const FST_REALTIME_MISSING_DEPENDENCY = createError(
  'FST_REALTIME_MISSING_DEPENDENCY',
  'The fastify-realtime option %s needs the package %s, which cannot be loaded: npm install %s',
  500
)

/** `broadcast` on a publisher (`fastify-realtime/publisher`) after its `close()`. */
export const FST_REALTIME_PUBLISHER_CLOSED = createError(
  'FST_REALTIME_PUBLISHER_CLOSED',
  'The publisher is closed: create a new one to broadcast',
  500
)
