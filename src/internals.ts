import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { Cluster, Redis } from 'ioredis'
import { Socket } from 'socket.io'
import { FST_REALTIME_UNSUPPORTED_VERSION } from './errors.js'
import type { RealtimeServer, RealtimeSocket } from './types.js'

/*
 * Every Socket.IO, engine.io, socket.io-parser and ioredis internal the plugin touches lives in this file, each
 * with what it is for and since when it exists. `checkInternals` runs at `register`: when one
 * is missing, `register` fails with FST_REALTIME_UNSUPPORTED_VERSION naming the installed
 * version, so no feature ever switches itself off unnoticed. The `socket.io` peer range is kept
 * to the minor line the tests run against.
 */

/** A packet as Socket.IO hands it to a socket's outgoing listeners. */
export interface OutgoingPacket {
  data?: unknown[]
}

type WriteToEngine = (encoded: unknown, opts: unknown) => void

/**
 * socket.io `Socket#notifyOutgoingListeners(packet)` (private, since 4.5.0, with `onAnyOutgoing`):
 * called with each packet right before its frames are written, for a direct emit and for every
 * socket of a broadcast alike. The catch-up hold reads from it which scope and seq the next write
 * carries; a replayed frame is announced through it, so the app's `onAnyOutgoing` sees it too.
 *
 * socket.io `Client#writeToEngine(encoded, opts)` (private; what socket.io-adapter's broadcast
 * calls for every socket, with frames encoded once): the catch-up hold holds writes back while a
 * replay is read, and a replayed event is written pre-encoded through it.
 */
interface SocketInternals {
  notifyOutgoingListeners?: (packet: OutgoingPacket) => void
  client: { writeToEngine?: WriteToEngine }
}

/** An engine.io connection, as the transport limits read it. */
export interface EngineConnection {
  remoteAddress: string
  /**
   * engine.io `Socket#writeBuffer` (private, since 1.x): packets waiting for the transport to
   * drain; the slow-consumer check counts their bytes.
   */
  writeBuffer: Array<{ data?: unknown }>
  /**
   * engine.io `WebSocket#socket` (private, since 1.x): the `ws` socket of the websocket
   * transport, whose public `bufferedAmount` counts what the kernel has not taken yet.
   */
  transport?: { socket?: { bufferedAmount?: unknown } }
  on: (event: 'close', listener: (this: EngineConnection) => void) => void
  /** `discard` (engine.io, since 1.x) drops what is queued instead of waiting for a drain that never comes. */
  close: (discard?: boolean) => void
}

/**
 * Sees every write to one socket while `hold` says so: `intercept` returns false to hold a
 * write back (it keeps the frames and sends them later with `send`).
 */
export interface WriteTap {
  /** Writes frames straight to the socket's transport, past the tap. */
  send: (encoded: unknown, opts: unknown) => void
  /** Removes the tap; writes go straight through again. */
  remove: () => void
}

/**
 * Taps the writes of one socket: before each one Socket.IO announces its packet, and `onWrite`
 * decides whether the frames go out now (true) or are kept (false, then `send` them later).
 */
export function tapWrites (socket: RealtimeSocket, onWrite: (packet: OutgoingPacket | undefined, encoded: unknown, opts: unknown) => boolean): WriteTap {
  const internals = socket as unknown as SocketInternals
  const notify = internals.notifyOutgoingListeners!
  const write = internals.client.writeToEngine!
  let last: OutgoingPacket | undefined
  internals.notifyOutgoingListeners = function (this: unknown, packet: OutgoingPacket) {
    last = packet
    notify.call(this, packet)
  }
  internals.client.writeToEngine = function (this: unknown, encoded: unknown, opts: unknown) {
    const packet = last
    last = undefined
    if (onWrite(packet, encoded, opts)) write.call(this, encoded, opts)
  }
  return {
    send: (encoded, opts) => { write.call(internals.client, encoded, opts) },
    // put back rather than deleted: a delete would turn both objects into slow dictionaries
    remove: () => {
      internals.notifyOutgoingListeners = notify
      internals.client.writeToEngine = write
    }
  }
}

/** Writes an already encoded event to `socket`, as a broadcast does: outgoing listeners first, then the frames. */
export function writeEncoded (socket: RealtimeSocket, data: unknown[], encoded: unknown[]): void {
  const internals = socket as unknown as SocketInternals
  internals.notifyOutgoingListeners!.call(socket, { data })
  internals.client.writeToEngine!.call(internals.client, encoded, { compress: true })
}

/**
 * engine.io `Server#clients` (protected in its types, documented in its README; since 1.x):
 * every open transport by id. Closing them all lets clients reconnect (to another node); the
 * slow-consumer check walks them.
 */
export function transports (io: RealtimeServer): Iterable<EngineConnection> {
  return Object.values((io.engine as unknown as { clients: Record<string, EngineConnection> }).clients)
}

/** Bytes waiting to be sent to one client: the `ws` socket's and engine.io's buffers, counted up to `cap`. */
export function queuedBytes (conn: EngineConnection, cap: number): number {
  const buffered = conn.transport?.socket?.bufferedAmount
  let queued = typeof buffered === 'number' ? buffered : 0
  for (const packet of conn.writeBuffer) {
    queued += byteLength(packet.data)
    if (queued > cap) break
  }
  return queued
}

function byteLength (data: unknown): number {
  if (typeof data === 'string') return data.length
  if (data instanceof ArrayBuffer) return data.byteLength
  if (ArrayBuffer.isView(data)) return data.byteLength
  return 0
}

/** The decoder socket.io-parser exports, as the plugin uses it (socket.io builds one per transport). */
export interface ParserDecoder {
  add (chunk: unknown): void
  destroy (): void
  on (event: 'decoded', listener: (packet: unknown) => void): unknown
}

/** socket.io-parser's classes, the pair Socket.IO's `parser` option takes. */
export interface SocketIoParser {
  Encoder: new () => unknown
  Decoder: new (opts?: { maxAttachments?: number }) => ParserDecoder
}

/**
 * The socket.io-parser that the installed socket.io itself loads (not a dependency of the
 * plugin's own, so the pair never differs from Socket.IO's default), checked for its
 * `maxAttachments` option (public since 4.2.6): a decoder built with `maxAttachments: 0` must
 * refuse a packet announcing one attachment. Throws FST_REALTIME_UNSUPPORTED_VERSION.
 */
export function socketIoParser (): SocketIoParser {
  const fromSocketIo = createRequire(requireHere.resolve('socket.io'))
  let parser: Partial<SocketIoParser> | undefined
  try {
    parser = fromSocketIo('socket.io-parser') as Partial<SocketIoParser>
  } catch {
    parser = undefined
  }
  const { Encoder, Decoder } = parser ?? {}
  if (typeof Encoder !== 'function' || typeof Decoder !== 'function') missing('socket.io-parser', 'its Encoder and Decoder', fromSocketIo)
  let refused = false
  try {
    new Decoder({ maxAttachments: 0 }).add('51-["x",{"_placeholder":true,"num":0}]')
  } catch {
    refused = true
  }
  if (!refused) missing('socket.io-parser', 'the Decoder option maxAttachments', fromSocketIo)
  return { Encoder, Decoder }
}

/** The subscribe family of ioredis methods, in the shape the adapters call them (the s* ones: the sharded adapter). */
export type SubscribeMethod = 'subscribe' | 'psubscribe' | 'unsubscribe' | 'punsubscribe' | 'ssubscribe' | 'sunsubscribe'
export type RedisCall = (...args: unknown[]) => Promise<unknown>
export const SUBSCRIBE_METHODS: readonly SubscribeMethod[] = ['subscribe', 'psubscribe', 'unsubscribe', 'punsubscribe', 'ssubscribe', 'sunsubscribe']

/**
 * Routes every (p|s)subscribe and (p|s)unsubscribe the Redis adapter makes on the plugin's own
 * subscriber connection through `route`, returns the original methods, and turns ioredis'
 * own resubscribe (`options.autoResubscribe`, public since 1.x but read at each reconnect) off
 * on a single Redis: the plugin restores what is still wanted itself. (A Cluster's sharded
 * subscribers always restore what they knew; see `Subscriptions`.) Methods are replaced on this
 * one instance.
 */
export function routeSubscriptions (sub: Redis | Cluster, route: (method: SubscribeMethod, args: unknown[]) => Promise<unknown>): Record<SubscribeMethod, RedisCall> {
  if (!(sub as Cluster).isCluster) (sub as Redis).options.autoResubscribe = false
  const methods = sub as unknown as Record<SubscribeMethod, RedisCall>
  const originals = {} as Record<SubscribeMethod, RedisCall>
  for (const method of SUBSCRIBE_METHODS) {
    originals[method] = methods[method].bind(sub)
    methods[method] = async (...args: unknown[]) => await route(method, args)
  }
  return originals
}

/**
 * ioredis `Cluster` events of its sharded subscribers (`shardedSubscribers`, since ioredis 5.8):
 * `-node` when a master's subscriber connection ends, `subscribersReady` once the subscribers
 * are connected again and ioredis has sent its own SSUBSCRIBEs (emitted after every attempt, so
 * what it means is checked by subscribing again). Not in ioredis' README.
 */
export const SHARDED_EVENTS = { dropped: '-node', reconnected: 'subscribersReady' } as const

/**
 * Whether a command sent on `client` now would be written: ioredis keeps `status` 'ready' for a
 * moment after its socket (`Redis#stream`, typed but undocumented) has ended. A Cluster has one
 * socket per node: its own status says whether it takes commands.
 */
export function writable (client: Redis | Cluster): boolean {
  if ((client as Cluster).isCluster) return client.status === 'ready'
  const stream = (client as Redis).stream as Redis['stream'] | undefined
  return client.status === 'ready' && stream !== undefined && stream.writable && !stream.writableEnded
}

const requireHere = createRequire(import.meta.url)

/** The installed version of a package that `from` depends on (engine.io's exports hide its package.json). */
function versionOf (name: string, from: NodeJS.Require = requireHere): string {
  try {
    let dir = dirname(from.resolve(name))
    for (let up = 0; up < 5; up++, dir = dirname(dir)) {
      try {
        const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string, version?: string }
        if (pkg.name === name) return pkg.version ?? 'unknown'
      } catch {
        // not here: one folder up
      }
    }
  } catch {
    // not resolvable from here
  }
  return 'unknown'
}

function missing (pkg: string, internal: string, from?: NodeJS.Require): never {
  throw new FST_REALTIME_UNSUPPORTED_VERSION(`${pkg} ${versionOf(pkg, from)}`, internal)
}

/**
 * Checks at `register` that every internal above is where this file expects it, on the
 * Socket.IO server the plugin has just created. Throws FST_REALTIME_UNSUPPORTED_VERSION.
 */
export function checkInternals (io: RealtimeServer, redis: { prototype: object } | null, cluster: { prototype: object } | null = null): void {
  if (typeof (Socket.prototype as unknown as SocketInternals).notifyOutgoingListeners !== 'function') {
    missing('socket.io', 'Socket#notifyOutgoingListeners')
  }
  // socket.io's Client class is not exported: it is read from the module socket.io itself loaded
  const fromSocketIo = createRequire(requireHere.resolve('socket.io'))
  let Client: { prototype: { writeToEngine?: unknown } } | undefined
  try {
    Client = (fromSocketIo('./client.js') as { Client?: typeof Client }).Client
  } catch {
    Client = undefined
  }
  if (typeof Client?.prototype.writeToEngine !== 'function') missing('socket.io', 'Client#writeToEngine')
  const clients = (io.engine as unknown as { clients?: unknown }).clients
  if (clients === null || typeof clients !== 'object') missing('engine.io', 'Server#clients', fromSocketIo)
  const EngineSocket = (fromSocketIo('engine.io') as { Socket?: { prototype: object, toString: () => string } }).Socket
  // writeBuffer is an instance field: the class must set it, and write the frames through it
  if (EngineSocket === undefined || !EngineSocket.toString().includes('this.writeBuffer') || typeof (EngineSocket.prototype as { close?: unknown }).close !== 'function') {
    missing('engine.io', 'Socket#writeBuffer', fromSocketIo)
  }
  if (redis !== null) {
    const proto = redis.prototype as Record<string, unknown>
    for (const method of SUBSCRIBE_METHODS) {
      if (typeof proto[method] !== 'function') missing('ioredis', `Redis#${method}`)
    }
  }
  if (cluster !== null) {
    const proto = cluster.prototype as Record<string, unknown>
    for (const method of SUBSCRIBE_METHODS) {
      if (typeof proto[method] !== 'function') missing('ioredis', `Cluster#${method}`)
    }
  }
}
