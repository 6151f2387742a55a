import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { SECRET } from './helper.js'

interface Teardown {
  teardown: (fn: () => unknown) => void
}

const FIXTURE = fileURLToPath(new URL('./fixtures/node.ts', import.meta.url))
// tsx as a loader in the node process itself (its CLI would put the app in a grandchild that a kill misses)
const TSX_LOADER = new URL('../node_modules/tsx/dist/loader.mjs', import.meta.url).href

export interface NodeProcess {
  port: number
  url: string
  child: ChildProcess
  /** POSTs JSON to one of the fixture's routes and resolves with the parsed reply. */
  post: (path: string, body: unknown) => Promise<{ status: number, body: any }>
  get: (path: string) => Promise<{ status: number, body: any }>
  /** Sends `signal` and resolves once the process has exited. */
  stop: (signal?: NodeJS.Signals) => Promise<void>
}

/** Starts test/fixtures/node.ts in its own process with `env`; stopped (SIGKILL) at teardown. */
export async function startNode (t: Teardown, env: Record<string, string>): Promise<NodeProcess> {
  const child = spawn(process.execPath, ['--import', TSX_LOADER, FIXTURE], {
    env: { ...process.env, SECRET, ...env },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  const stop = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill(signal)
    await exited
  }
  t.teardown(() => stop())
  const port = await new Promise<number>((resolve, reject) => {
    let buffered = ''
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const line = buffered.split('\n').find((l) => l.startsWith('{"port"'))
      if (line !== undefined) resolve((JSON.parse(line) as { port: number }).port)
    })
    child.once('exit', (code) => reject(new Error(`node exited with ${code} before listening`)))
  })
  const url = `http://127.0.0.1:${port}`
  const call = async (method: string, path: string, body?: unknown): Promise<{ status: number, body: any }> => {
    const res = await fetch(url + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await res.text()
    return { status: res.status, body: text.length > 0 ? JSON.parse(text) : null }
  }
  return {
    port,
    url,
    child,
    post: async (path, body) => await call('POST', path, body),
    get: async (path) => await call('GET', path),
    stop
  }
}
