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

/** Redis configured but not answering at `ready`: the app fails fast instead of starting half-wired. */
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
