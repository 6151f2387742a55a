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

// Two passes (`npm run build` runs both): the client's types import `fastify-realtime` itself,
// so that `declare module 'fastify-realtime'` augmentations reach `client.on()`; that import
// resolves to the first pass's dist/index.d.ts.
export default process.env.BUILD_PART === 'client'
  ? defineConfig({ ...common, entry: { 'client/index': 'src/client/index.ts' }, clean: false })
  : defineConfig({ ...common, entry: { index: 'src/index.ts' }, clean: true })
