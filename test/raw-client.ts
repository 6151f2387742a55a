import type { IncomingMessage } from 'node:http'
import type { Socket as NetSocket } from 'node:net'
import WebSocket from 'ws'
import { until, within, type Teardown } from './helper.js'

/**
 * Speaks the Engine.IO v4 / Socket.IO v5 wire protocol over a bare `ws` WebSocket, so tests can
 * send what no official client would: packets out of order, broken encodings, oversized frames,
 * or nothing at all.
 *
 * Frames as they go over the wire: `0{...}` open (server), `2` ping (server) and `3` pong,
 * `4` + a Socket.IO packet: `0` CONNECT, `1` DISCONNECT, `2` EVENT, `3` ACK, `4` CONNECT_ERROR,
 * `5` BINARY_EVENT (`5<n>-` with n attachments following as binary frames). A namespace other
 * than `/` comes before a comma (`40/admin,{...}`), an ack id right before the JSON (`421[...]`).
 */

/** The Engine.IO open packet the server sends first. */
export interface OpenPacket {
  sid: string
  upgrades: string[]
  pingInterval: number
  pingTimeout: number
  maxPayload: number
}

/** How the WebSocket ended: `code` 1006 means no close frame came (the TCP connection just went). */
export interface RawClosed {
  code: number
  reason: string
}

export type Frame = string | Buffer

/** The upgrade was answered with a plain HTTP response instead of `101 Switching Protocols`. */
export class HandshakeRefused extends Error {
  readonly status: number
  readonly body: string
  constructor (status: number, body: string) {
    super(`upgrade refused with HTTP ${status}: ${body}`)
    this.status = status
    this.body = body
  }
}

const DEADLINE_MS = 10_000

/** A Socket.IO EVENT frame: `42["name",...args]`, with `ack` as its ack id, on `nsp`. */
export function eventFrame (name: string, args: unknown[] = [], ack?: number, nsp = '/'): string {
  return `42${nsp === '/' ? '' : `${nsp},`}${ack ?? ''}${JSON.stringify([name, ...args])}`
}

/** A Socket.IO CONNECT frame for `nsp` with `auth` as its payload. */
export function connectFrame (auth?: Record<string, unknown>, nsp = '/'): string {
  return `40${nsp === '/' ? '' : `${nsp},`}${auth === undefined ? '' : JSON.stringify(auth)}`
}

export { until }

interface Waiter {
  match: (frame: Frame) => boolean
  resolve: (frame: Frame) => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
  what: string
}

/** One raw Engine.IO transport over WebSocket. Pings are answered unless the socket is paused. */
export class RawClient {
  readonly ws: WebSocket
  readonly open: OpenPacket
  /** Resolves when the WebSocket has closed, whoever closed it. */
  readonly closed: Promise<RawClosed>
  #ended: RawClosed | null = null
  /** Frames received after the open packet and not yet taken by `next`. */
  readonly #unread: Frame[] = []
  readonly #waiters = new Set<Waiter>()

  constructor (ws: WebSocket, open: OpenPacket, unread: Frame[]) {
    this.ws = ws
    this.open = open
    this.#unread.push(...unread)
    this.closed = new Promise((resolve) => {
      ws.once('close', (code, reason) => {
        this.#ended = { code, reason: reason.toString() }
        for (const waiter of this.#waiters) {
          clearTimeout(waiter.timer)
          waiter.reject(new Error(`the WebSocket closed (${code}) while waiting for ${waiter.what}`))
        }
        this.#waiters.clear()
        resolve(this.#ended)
      })
    })
    ws.on('message', (data, isBinary) => this.#received(isBinary ? toBuffer(data) : data.toString()))
  }

  /** Whether the WebSocket has closed. */
  get isClosed (): boolean {
    return this.#ended !== null
  }

  /** Sends one frame as it is: a string as a text frame, a Buffer as a binary frame. */
  send (frame: Frame): void {
    this.ws.send(frame, { binary: typeof frame !== 'string' })
  }

  /** Sends a CONNECT and resolves with the server's CONNECT answer (`40{"sid":...}`); rejects on CONNECT_ERROR. */
  async connect (auth?: Record<string, unknown>, nsp = '/'): Promise<{ sid: string }> {
    const at = nsp === '/' ? '' : `${nsp},`
    const ok = `40${at}`
    const refused = `44${at}`
    const answer = this.next((f) => typeof f === 'string' && (f.startsWith(`${ok}{`) || f.startsWith(`${refused}{`)), `the CONNECT answer on ${nsp}`)
    this.send(connectFrame(auth, nsp))
    const frame = await answer as string
    const payload = JSON.parse(frame.slice(ok.length)) as Record<string, unknown>
    if (frame.startsWith(refused)) throw Object.assign(new Error(String(payload.message)), { data: payload.data })
    return payload as { sid: string }
  }

  /** Connects to `/` with `token` and waits for `realtime:ready`; resolves with its payload. */
  async ready (token: string): Promise<{ userId: string, scopes: string[] }> {
    const ready = this.event('realtime:ready')
    await this.connect({ token })
    const [message] = await ready
    return message as { userId: string, scopes: string[] }
  }

  /** The arguments of the next EVENT named `name` on `/`. */
  async event (name: string): Promise<unknown[]> {
    const frame = await this.next((f) => typeof f === 'string' && f.startsWith('42[') && parseArray(f.slice(2))?.[0] === name, `event ${name}`)
    return parseArray((frame as string).slice(2))!.slice(1)
  }

  /** Sends an EVENT on `/` with ack id `id` and resolves with the ACK's arguments. */
  async request (id: number, name: string, ...args: unknown[]): Promise<unknown[]> {
    const prefix = `43${id}[`
    const answer = this.next((f) => typeof f === 'string' && f.startsWith(prefix), `the ack ${id} for ${name}`)
    this.send(eventFrame(name, args, id))
    const frame = await answer as string
    return parseArray(frame.slice(prefix.length - 1))!
  }

  /**
   * The first unread frame `match` accepts (taken out of the unread ones); rejects when the
   * WebSocket closes first or after `ms`.
   */
  next (match: (frame: Frame) => boolean = () => true, what = 'a frame', ms = DEADLINE_MS): Promise<Frame> {
    const index = this.#unread.findIndex(match)
    if (index !== -1) return Promise.resolve(this.#unread.splice(index, 1)[0]!)
    if (this.#ended !== null) return Promise.reject(new Error(`the WebSocket is closed (${this.#ended.code}); no ${what}`))
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        match,
        resolve,
        reject,
        what,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter)
          reject(new Error(`no ${what} within ${ms} ms`))
        }, ms)
      }
      this.#waiters.add(waiter)
    })
  }

  /** Waits for the WebSocket to close; rejects after `ms` if it stays open. */
  async waitClosed (what: string, ms = DEADLINE_MS): Promise<RawClosed> {
    return await within(this.closed, ms, `the WebSocket to close: ${what}`)
  }

  /** Stops reading from the TCP socket: the kernel buffers fill, then the server's back up. */
  pause (): void {
    (this.ws as unknown as { _socket: NetSocket })._socket.pause()
  }

  /** Drops the TCP connection at once (no close handshake). */
  terminate (): void {
    this.ws.terminate()
  }

  #received (frame: Frame): void {
    if (frame === '2') {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send('3')
      return
    }
    for (const waiter of this.#waiters) {
      if (!waiter.match(frame)) continue
      this.#waiters.delete(waiter)
      clearTimeout(waiter.timer)
      waiter.resolve(frame)
      return
    }
    this.#unread.push(frame)
  }
}

/** Every ACK frame `raw` receives from now on, as `[ack id, first argument]`, in the order they come. */
export function acks (raw: RawClient): Array<[number, any]> {
  const seen: Array<[number, any]> = []
  raw.ws.on('message', (data, isBinary) => {
    const match = isBinary ? null : /^43(\d+)(\[.*)$/s.exec(data.toString())
    if (match !== null) seen.push([Number(match[1]), (JSON.parse(match[2]!) as unknown[])[0]])
  })
  return seen
}

function toBuffer (data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data
  if (Array.isArray(data)) return Buffer.concat(data)
  return Buffer.from(data)
}

function parseArray (json: string): unknown[] | null {
  try {
    const value: unknown = JSON.parse(json)
    return Array.isArray(value) ? value : null
  } catch {
    return null
  }
}

export interface OpenRawOptions {
  headers?: Record<string, string>
  /** Engine.IO path. @default '/socket.io/' */
  path?: string
}

/**
 * Opens a raw WebSocket transport to the app at `url` (`http://host:port`) and waits for the
 * open packet. Rejects with HandshakeRefused when the upgrade gets an HTTP answer instead.
 * The socket is terminated at teardown.
 */
export function openRaw (t: Teardown, url: string, opts: OpenRawOptions = {}): Promise<RawClient> {
  const target = `${url.replace(/^http/, 'ws')}${opts.path ?? '/socket.io/'}?EIO=4&transport=websocket`
  const ws = new WebSocket(target, { perMessageDeflate: false, headers: opts.headers })
  t.teardown(() => { ws.terminate() })
  return new Promise((resolve, reject) => {
    const early: Frame[] = []
    let open: OpenPacket | null = null
    const timer = setTimeout(() => {
      ws.terminate()
      reject(new Error(`no open packet within ${DEADLINE_MS} ms`))
    }, DEADLINE_MS)
    const fail = (err: Error): void => {
      clearTimeout(timer)
      ws.off('message', onMessage)
      reject(err)
    }
    const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
      if (open !== null) return
      const frame = isBinary ? toBuffer(data) : data.toString()
      if (typeof frame !== 'string' || !frame.startsWith('0')) {
        early.push(frame)
        return
      }
      open = JSON.parse(frame.slice(1)) as OpenPacket
      clearTimeout(timer)
      ws.off('message', onMessage)
      ws.off('error', fail)
      // ws reports later errors (a reset under load) as events; the close that follows is what tests read
      ws.on('error', () => {})
      resolve(new RawClient(ws, open, early))
    }
    ws.on('message', onMessage)
    ws.once('error', fail)
    ws.once('unexpected-response', (req, res: IncomingMessage) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      const done = (): void => {
        req.destroy()
        fail(new HandshakeRefused(res.statusCode ?? 0, body))
      }
      res.once('end', done)
      res.once('error', done)
    })
  })
}
