// `fastify-realtime` as the root program (src, test, bench: `npm run typecheck`) sees it, through
// tsconfig.json's `paths`, so it type-checks on a fresh clone, before any build.
//
// Tests import the examples for their types, and the examples declare their own `RealtimeEvents`
// with `declare module 'fastify-realtime'`. Those declarations merge into the interface below, not
// into the one src/ reads, so the tests keep their own event names ('tick'…).
// examples/tsconfig.json resolves the package to src/ itself and checks the examples' events for
// real; test/types checks the built package.
export * from '../../../src/index.js'
export { default } from '../../../src/index.js'
export interface RealtimeEvents {}
