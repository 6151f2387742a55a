import type { ServerOptions } from 'socket.io'
import type { RealtimeClock } from './clock.js'
import { socketIoParser, type ParserDecoder } from './internals.js'

/** Thrown into Socket.IO by the next chunk of a transport whose binary packet expired: it closes that transport. */
class ExpiredPacketError extends Error {
  override name = 'ExpiredPacketError'
}

/**
 * Socket.IO's own parser with two bounds on incoming binary attachments, one decoder per
 * transport, before authentication and after. A packet announcing more than `maxAttachments`
 * fails to decode, and Socket.IO closes its transport at once (the protocol itself sends no
 * binary: the default is 0). A packet whose attachments have not all arrived `partialMs` after
 * its first part is dropped with the buffers it holds, and the transport's next chunk closes it:
 * a client that announces ten and sends nine cannot keep nine buffers on the server.
 */
export function limitedParser (maxAttachments: number, partialMs: number, clock: RealtimeClock): NonNullable<ServerOptions['parser']> {
  const { Encoder, Decoder } = socketIoParser()

  class LimitedDecoder extends Decoder {
    /** Set while a binary packet waits for the rest of its attachments. */
    #timer: unknown
    #decoded = false
    #expired = false

    constructor () {
      super({ maxAttachments })
      this.on('decoded', () => { this.#decoded = true })
    }

    override add (chunk: unknown): void {
      if (this.#expired) throw new ExpiredPacketError(`A binary packet's attachments did not all arrive within ${partialMs} ms`)
      this.#decoded = false
      super.add(chunk)
      // every chunk but a binary packet's first part and its attachments before the last decodes at once
      if (this.#decoded) this.#clear()
      else this.#timer ??= clock.setTimeout(() => { this.#expire() }, partialMs)
    }

    override destroy (): void {
      this.#clear()
      super.destroy()
    }

    #expire (): void {
      this.#timer = undefined
      this.#expired = true
      super.destroy()
    }

    #clear (): void {
      if (this.#timer === undefined) return
      clock.clearTimeout(this.#timer)
      this.#timer = undefined
    }
  }

  return { Encoder, Decoder: LimitedDecoder satisfies new () => ParserDecoder } as unknown as NonNullable<ServerOptions['parser']>
}
