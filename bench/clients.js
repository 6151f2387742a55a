// A client worker: many official socket.io-client sockets (websocket transport) in one process.
// It counts the `tick` events of a block, records their latency when asked, and tells the
// driver when the block's expected count has arrived.
import { createSigner } from 'fast-jwt'
import { io } from 'socket.io-client'
import { EVENT, SECRET, cpuSince, newHist, now, record, serve } from './lib/util.js'

const sign = createSigner({ key: SECRET, algorithm: 'HS256', expiresIn: 4 * 3600 * 1000 })
const tokens = new Map()
const groups = new Map()

function tokenFor (user) {
  const key = `${user.sub}|${user.rooms.join(',')}`
  let token = tokens.get(key)
  if (token === undefined) {
    token = sign({ sub: user.sub, rooms: user.rooms })
    tokens.set(key, token)
  }
  return token
}

// ---------- the block counter ----------
const block = { count: 0, target: Infinity, recording: false, hist: null, cpu0: null, doneAt: 0, cpu: 0, waiters: [] }

function finish () {
  block.doneAt = now()
  block.cpu = cpuSince(block.cpu0)
  for (const resolve of block.waiters) resolve()
  block.waiters = []
}

function onTick (payload) {
  block.count++
  if (block.recording) record(block.hist, now() - payload.t)
  if (block.count === block.target) finish()
}

// ---------- sockets ----------
function connectOne (url, kind, auth, group) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports: ['websocket'], forceNew: true, reconnection: false, timeout: 60_000, auth })
    socket.on(EVENT, onTick)
    if (group.frame === null && group.sockets.length === 0 && !group.watching) {
      group.watching = true
      socket.io.engine.on('packet', (packet) => {
        if (group.frame === null && packet.type === 'message' && String(packet.data).startsWith(`2["${EVENT}"`)) {
          group.frame = String(packet.data)
        }
      })
    }
    const fail = (err) => {
      socket.close()
      reject(new Error(`connect to ${url} refused: ${err.message}`))
    }
    socket.once('connect_error', fail)
    socket.once(kind === 'plugin' ? 'realtime:ready' : 'ready', () => {
      socket.off('connect_error', fail)
      resolve(socket)
    })
  })
}

serve({
  /**
   * Connects `users` to `url` with at most `window` handshakes in flight; resolves once every
   * socket has its ready message. `plain` sends the user in the clear (raw arm without auth).
   */
  async connect ({ group: name, url, kind, users, window = 200, plain = false, since }) {
    let group = groups.get(name)
    if (group === undefined) {
      group = { sockets: [], frame: null, watching: false }
      groups.set(name, group)
    }
    const auths = users.map((user) => {
      const auth = plain ? { user } : { token: tokenFor(user) }
      if (since !== undefined) auth.since = since
      return auth
    })
    const t0 = now()
    const cpu0 = process.cpuUsage()
    let next = 0
    const lane = async () => {
      while (next < auths.length) {
        const auth = auths[next++]
        group.sockets.push(await connectOne(url, kind, auth, group))
      }
    }
    await Promise.all(Array.from({ length: Math.min(window, auths.length) }, lane))
    return { wall: now() - t0, cpu: cpuSince(cpu0), t0, t1: now() }
  },

  disconnect ({ group: name }) {
    const group = groups.get(name)
    if (group === undefined) return 0
    for (const socket of group.sockets) socket.disconnect()
    const n = group.sockets.length
    group.sockets = []
    return n
  },

  forget ({ group: name }) {
    groups.delete(name)
    return true
  },

  frame ({ group: name }) {
    return groups.get(name)?.frame ?? null
  },

  /** Arms the counter for the next block: `n` events expected, latency recorded or not. */
  expect ({ n, latency = false }) {
    block.count = 0
    block.target = n
    block.recording = latency
    block.hist = latency ? newHist() : null
    block.cpu0 = process.cpuUsage()
    block.doneAt = 0
    if (n === 0) finish()
    return true
  },

  /** Resolves once the expected count has arrived (bounded by `timeoutMs`). */
  async done ({ timeoutMs = 120_000 }) {
    if (block.count < block.target) {
      let timer
      await Promise.race([
        new Promise((resolve) => block.waiters.push(resolve)),
        new Promise((resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`only ${block.count} of ${block.target} events arrived`)), timeoutMs)
        })
      ]).finally(() => clearTimeout(timer))
    }
    const result = { count: block.count, lastAt: block.doneAt, cpu: block.cpu, hist: block.hist }
    block.target = Infinity
    block.recording = false
    return result
  },

  counted () {
    return block.count
  },

  memory () {
    return process.memoryUsage()
  }
})

process.send({ ready: true })
