import fastifyJwt, { type JWT } from '@fastify/jwt'
import type { FastifyInstance } from 'fastify'
import type { VerifyToken } from './credentials.js'
import { FST_REALTIME_INVALID_OPTION } from './errors.js'
import type { NormalizedOptions } from './options.js'
import type { RealtimeClaims } from './types.js'

/** Secrets that are not PEM keys or functions get HS256 pinned unless `auth.verify.algorithms` says otherwise. */
function defaultAlgorithms (secret: NormalizedOptions['auth']['secret']): string[] | undefined {
  if (typeof secret === 'string' || Buffer.isBuffer(secret)) {
    return secret.toString().startsWith('-----BEGIN') ? undefined : ['HS256']
  }
  return undefined
}

/**
 * The token verifier, settled at `ready`: the app's own `fastify.jwt` when it registered
 * `@fastify/jwt` (before or after this plugin), else a private one built from `auth.secret`.
 * The private one lives in a child context, so an app that registers `@fastify/jwt` later does
 * not collide with it.
 */
export function tokenVerifier (fastify: FastifyInstance, auth: NormalizedOptions['auth']): () => VerifyToken {
  let own: JWT | undefined
  if (auth.secret !== undefined && !fastify.hasDecorator('jwt')) {
    const algorithms = defaultAlgorithms(auth.secret)
    const verify = { ...(algorithms === undefined ? {} : { algorithms }), ...auth.verify }
    fastify.register(async function realtimeJwt (child) {
      await child.register(fastifyJwt, { secret: auth.secret as string, verify: verify as never })
      own = child.jwt
    })
  }
  return () => {
    const jwt: JWT | undefined = fastify.hasDecorator('jwt') ? fastify.jwt : own
    if (jwt === undefined || typeof jwt.verify !== 'function') {
      throw new FST_REALTIME_INVALID_OPTION('auth.secret', 'is required when the app does not register @fastify/jwt')
    }
    // the private verifier was built with auth.verify; the app's gets it on every call
    const perCall = jwt === own ? undefined : auth.verify
    if (perCall === undefined) return (token) => jwt.verify<RealtimeClaims>(token)
    return (token) => jwt.verify<RealtimeClaims>(token, perCall as never)
  }
}
