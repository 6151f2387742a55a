import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { createSigner } from 'fast-jwt'
import { io } from 'socket.io-client'
import t from 'tap'
import { until, waitFor } from './helper.js'

// This file's own limit, over .taprc's 120 s per file (tap's runner takes a limit set on the root
// `t`): building and installing from the registry can take minutes on a busy machine.
t.setTimeout(330_000)

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))
const tsc = join(root, 'node_modules/.bin/tsc')

// What the build reads, and what the package publishes besides dist/.
const SOURCES = ['package.json', 'tsconfig.json', 'tsup.config.ts', 'src', 'README.md', 'CHANGELOG.md', 'LICENSE']

/**
 * Copies the package's sources into `dir` and runs its own `npm run build` there, so the
 * repository's dist/ is never rewritten under an app that is using it.
 */
async function buildCopy (dir: string): Promise<string> {
  for (const entry of SOURCES) await cp(join(root, entry), join(dir, entry), { recursive: true })
  await symlink(join(root, 'node_modules'), join(dir, 'node_modules'), 'dir')
  await run('npm', ['run', 'build'], { cwd: dir })
  return dir
}

t.test('the packed tarball installs into a fresh app: ESM, CJS and types', { timeout: 300_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'frt-pack-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const built = await buildCopy(join(dir, 'package'))
  const { stdout } = await run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], { cwd: built })
  const [packed] = JSON.parse(stdout) as Array<{ filename: string, files: Array<{ path: string }> }>
  const paths = packed!.files.map((f) => f.path)
  t.ok(paths.every((p) => p.startsWith('dist/') || ['package.json', 'README.md', 'CHANGELOG.md', 'LICENSE'].includes(p)),
    'only dist and the package documents are published')
  t.ok(paths.includes('dist/index.d.ts') && paths.includes('dist/index.d.cts') && paths.includes('dist/client/index.js'))
  t.ok(paths.includes('dist/client/browser.global.js'), 'the browser bundle of the client is published')
  t.ok(['js', 'cjs', 'd.ts', 'd.cts'].every((ext) => paths.includes(`dist/publisher/index.${ext}`)), 'the publisher: ESM, CJS and types')

  const app = join(dir, 'app')
  await run('mkdir', ['-p', app])
  await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'commonjs' }))
  await run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', join(dir, packed!.filename), 'fastify@5', 'socket.io@4.8', 'socket.io-client@4.8', '@types/node@20'], { cwd: app })

  await writeFile(join(app, 'esm.mjs'), `
import Fastify from 'fastify'
import realtime, { fastifyRealtime, isScope } from 'fastify-realtime'
import { connect } from 'fastify-realtime/client'
import { createPublisher } from 'fastify-realtime/publisher'
const app = Fastify()
await app.register(realtime, { auth: { secret: 'a-secret-for-the-pack-test' } })
await app.ready()
const meta = await app.broadcast('team:1', 'x', 1)
// checked before anything connects: no Redis needed
const publisher = createPublisher({ redis: 'redis://127.0.0.1:1' })
const publisherCode = await publisher.broadcast('Team 1', 'x', 1).catch((err) => err.code)
await publisher.close()
console.log(JSON.stringify({ same: realtime === fastifyRealtime, scope: isScope('team:1'), seq: meta.seq, client: typeof connect, publisher: publisherCode }))
await app.close()
`)
  const esm = JSON.parse((await run('node', ['esm.mjs'], { cwd: app })).stdout)
  t.same(esm, { same: true, scope: true, seq: 1, client: 'function', publisher: 'FST_REALTIME_INVALID_SCOPE' })

  await writeFile(join(app, 'cjs.cjs'), `
const Fastify = require('fastify')
const realtime = require('fastify-realtime')
const { connect } = require('fastify-realtime/client')
const { createPublisher } = require('fastify-realtime/publisher')
const app = Fastify()
app.register(realtime.default, { auth: { secret: 'a-secret-for-the-pack-test' } })
app.ready().then(async () => {
  const meta = await app.broadcast('team:1', 'x', 1)
  console.log(JSON.stringify({ named: typeof realtime.fastifyRealtime, seq: meta.seq, client: typeof connect, publisher: typeof createPublisher }))
  await app.close()
})
`)
  const cjs = JSON.parse((await run('node', ['cjs.cjs'], { cwd: app })).stdout)
  t.same(cjs, { named: 'function', seq: 1, client: 'function', publisher: 'function' })

  const typed = `
import Fastify from 'fastify'
import realtime from 'fastify-realtime'
import { createPublisher } from 'fastify-realtime/publisher'
declare module 'fastify-realtime' {
  interface RealtimeEvents { 'incident:created': { id: string } }
}
const app = Fastify()
app.register(realtime, { auth: { secret: 'x' } })
export async function ok (): Promise<void> { await app.broadcast('team:1', 'incident:created', { id: '1' }) }
// @ts-expect-error the payload type comes from RealtimeEvents
export async function bad (): Promise<void> { await app.broadcast('team:1', 'incident:created', { id: 1 }) }
const publisher = createPublisher({ redis: { host: '127.0.0.1', port: 6379 }, keyPrefix: 'app:' })
export async function fromWorker (): Promise<number | undefined> { return (await publisher.broadcast('team:1', 'incident:created', { id: '1' })).seq }
// @ts-expect-error the publisher's payload type comes from RealtimeEvents too
export async function badFromWorker (): Promise<void> { await publisher.broadcast('team:1', 'incident:created', { id: 1 }) }
`
  await writeFile(join(app, 'typed.mts'), typed)
  await writeFile(join(app, 'typed.cts'), typed)
  await writeFile(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: false, target: 'ES2022' },
    files: ['typed.mts', 'typed.cts']
  }))
  const types = await run(tsc, ['-p', 'tsconfig.json'], { cwd: app }).then(() => 'ok', (err: { stdout: string }) => err.stdout)
  t.equal(types, 'ok', 'types resolve for import and require, fastify-realtime/publisher\'s too')
  t.ok((await readFile(join(app, 'node_modules/fastify-realtime/package.json'), 'utf8')).includes('"exports"'))
  const browser = (await run('node', ['-e', "console.log(require.resolve('fastify-realtime/client/browser'))"], { cwd: app })).stdout.trim()
  t.match(await readFile(browser, 'utf8'), /FastifyRealtime/, 'fastify-realtime/client/browser resolves to the bundle')

  await t.test('the README\'s Usage snippet runs as written: an ES module run with tsx', async (t) => {
    const readme = await readFile(join(root, 'README.md'), 'utf8')
    const snippet = /```ts\n([\s\S]*?)```/.exec(readme.slice(readme.indexOf('## Usage')))?.[1]
    t.ok(snippet?.includes('app.register(realtime'), 'the first TypeScript block under Usage')
    // a folder of the app with its own package.json, as the README says: "type": "module"
    const usage = join(app, 'usage')
    await mkdir(usage)
    await writeFile(join(usage, 'package.json'), JSON.stringify({ name: 'usage', private: true, type: 'module' }))
    await writeFile(join(usage, 'app.ts'), snippet!)
    const child = spawn(join(root, 'node_modules/.bin/tsx'), ['app.ts'], { cwd: usage, env: { ...process.env, PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] })
    const exited = once(child, 'exit')
    t.teardown(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        await exited
      }
    })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    let url = ''
    await until(() => {
      url = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1] ?? ''
      return url !== '' || child.exitCode !== null
    }, 'the snippet\'s app listening', 60_000)
    t.not(url, '', `the app listens (its output: ${output.slice(0, 2000)})`)

    // alice is in team:42 by the snippet's own table; the token is signed with its default secret
    const token = createSigner({ key: 'change-me-to-a-long-random-secret', algorithm: 'HS256', expiresIn: 600_000 })({ sub: 'alice' })
    const socket = io(url, { auth: { token }, transports: ['websocket'], reconnection: false })
    t.teardown(() => socket.close())
    const [ready] = await waitFor<[{ scopes: string[] }]>(socket, 'realtime:ready')
    t.same(ready.scopes, ['user:alice', 'team:42'], 'alice joined her own scope and her team')
    const event = waitFor<[unknown, { scope: string, by?: string }]>(socket, 'incident:acknowledged')
    const response = await fetch(`${url}/incidents/7/ack`, { method: 'POST' })
    t.same(await response.json(), { id: '7', status: 'acknowledged' })
    const [payload, meta] = await event
    t.same(payload, { id: '7', status: 'acknowledged' }, 'the route\'s broadcast reached her socket')
    t.match(meta, { scope: 'team:42', by: 'alice', seq: 1 })
  })
})
