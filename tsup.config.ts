import { defineConfig, type Options } from 'tsup'

const common: Options = {
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  target: 'node20',
  outDir: 'dist',
  splitting: false,
  external: ['typebox', 'socket.io', 'socket.io-client', 'fastify', 'fastify-realtime']
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

// Two passes (`npm run build` runs both): the client's types import `fastify-realtime` itself,
// so that `declare module 'fastify-realtime'` augmentations reach `client.on()`; that import
// resolves to the first pass's dist/index.d.ts. The second pass also writes the browser bundle.
export default process.env.BUILD_PART === 'client'
  ? defineConfig([{ ...common, entry: { 'client/index': 'src/client/index.ts' }, clean: false }, browserBundle])
  : defineConfig({ ...common, entry: { index: 'src/index.ts' }, clean: true })
