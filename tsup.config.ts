import { defineConfig, type Options } from 'tsup'

/**
 * The package and its client in one build. Both entries share src/protocol.ts, and the
 * declaration build puts what they share in one file (dist/protocol-<hash>.d.ts and .d.cts) that
 * dist/index.d.ts and dist/client/index.d.ts both import: `RealtimeEvents` is then declared once,
 * so a `declare module 'fastify-realtime'` augmentation types `broadcast` and the client's `on()`.
 * The publisher (dist/publisher/index.*) shares it the same way, for its `broadcast`.
 */
const node: Options = {
  entry: { index: 'src/index.ts', 'client/index': 'src/client/index.ts', 'publisher/index': 'src/publisher/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  target: 'node20',
  // src/internals.ts finds socket.io's own modules from import.meta.url, in the CJS build too
  shims: true,
  outDir: 'dist',
  splitting: false,
  // the browser bundle is written by the other build of this same run
  clean: ['!client/browser.global.js*'],
  external: ['typebox', 'socket.io', 'socket.io-client', 'fastify']
}

/**
 * The client for a plain `<script>` tag: dist/client/browser.global.js sets `window.FastifyRealtime`
 * (`FastifyRealtime.connect(url, options)`). socket.io-client is bundled in, so the page needs this
 * one file and nothing from the server's `/socket.io/socket.io.js` (which `io.serveClient: false`
 * turns off), and it runs the socket.io-client version this package was tested with.
 */
export const browserBundle: Options = {
  entry: { 'client/browser': 'src/client/index.ts' },
  format: ['iife'],
  globalName: 'FastifyRealtime',
  platform: 'browser',
  target: 'es2020',
  outDir: 'dist',
  minify: true,
  sourcemap: true,
  dts: false,
  splitting: false,
  clean: false,
  noExternal: ['socket.io-client']
}

export default defineConfig([node, browserBundle])
