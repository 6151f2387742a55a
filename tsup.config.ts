import { defineConfig } from 'tsup'

export default defineConfig({
  entry: { index: 'src/index.ts', 'client/index': 'src/client/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  sourcemap: true,
  target: 'node20',
  outDir: 'dist',
  splitting: false,
  external: ['typebox', 'socket.io', 'socket.io-client', 'fastify']
})
