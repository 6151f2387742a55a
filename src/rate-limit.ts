import { ackError } from './protocol.js'
import type { RealtimeSocket } from './types.js'
import { reply } from './util.js'

/**
 * Caps client-to-server events per socket in fixed windows. An event over the cap is dropped
 * and, when it carries an ack, answered with RATE_LIMITED.
 */
export function limitRate (socket: RealtimeSocket, max: number, windowMs: number): void {
  let count = 0
  let windowEnds = 0
  socket.use((packet, next) => {
    const now = Date.now()
    if (now >= windowEnds) {
      count = 0
      windowEnds = now + windowMs
    }
    if (++count <= max) {
      next()
      return
    }
    const retryIn = Math.ceil((windowEnds - now) / 1000)
    reply(packet[packet.length - 1], ackError('RATE_LIMITED', `Too many events; try again in ${retryIn} s`))
  })
}
