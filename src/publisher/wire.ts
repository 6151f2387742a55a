import { encode } from 'notepack.io'
import { CHANNEL_KEY } from '../cluster.js'

// The nodes' side of this is @socket.io/redis-adapter 8.3 (createAdapter, see src/cluster.ts).
// Each node PSUBSCRIBEs `<key>#/#*` with key `<keyPrefix>fastify-realtime`, and a message on
// `<key>#/#<room>#` (the adapter's channel for a broadcast to one room) is, MessagePack-encoded
// (notepack.io, as the adapter decodes it): `[uid, packet, opts]`, where
//   uid     the sending node's id; a node drops its own messages, so ours is none of theirs
//   packet  `{ type: 2 (EVENT), data: [event, ...args], nsp: '/' }`, a socket.io-parser packet
//   opts    `{ rooms: [room], except: [socket or room ids], flags: {} }`
// A node with no socket in the room ignores the message; the others deliver it to their sockets
// in the room as their own `io.to(room).emit(event, ...args)` would (same encoding, binary too).
// test/publisher.test.ts checks this against the adapter itself: if its format changes, it fails.

/** Not a node's id (those are 6 random characters), so no node mistakes a message for its own. */
const PUBLISHER_UID = 'fastify-realtime-publisher'

/** socket.io-parser's PacketType.EVENT. */
const EVENT_PACKET = 2

/** What goes to one room: `[event, ...args]` to every socket in `room` but those in `except`. */
export interface RoomMessage {
  room: string
  data: unknown[]
  except?: string
}

/** A message ready for Redis: the channel and the encoded body. */
export interface WireMessage {
  channel: string
  body: Buffer
}

/**
 * The message the nodes of `keyPrefix` deliver to the sockets in `message.room`. Throws what the
 * encoder throws for data it cannot encode (a BigInt, a cycle), as a node's adapter would for the
 * same broadcast.
 */
export function roomMessage (keyPrefix: string, { room, data, except }: RoomMessage): WireMessage {
  const packet = { type: EVENT_PACKET, data, nsp: '/' }
  const opts = { rooms: [room], except: except === undefined ? [] : [except], flags: {} }
  return { channel: `${keyPrefix}${CHANNEL_KEY}#/#${room}#`, body: encode([PUBLISHER_UID, packet, opts]) }
}

// On a Redis Cluster the nodes run the sharded adapter (createShardedAdapter, subscriptionMode
// 'dynamic', channelPrefix `<keyPrefix>fastify-realtime`): a broadcast to one room goes by
// SPUBLISH on `<channelPrefix>#/#<room>#` (on the main `<channelPrefix>#/#` when the room looks
// like a socket id: 20 characters), as `{ type: 3 (BROADCAST), data: { packet, opts }, uid, nsp }`,
// JSON unless it carries binary (then MessagePack). Checked by test/publisher-cluster.test.ts.

/** socket.io-adapter's MessageType.BROADCAST. */
const BROADCAST_MESSAGE = 3

/** What the sharded adapter takes for a socket id, and sends on the main channel. */
const SOCKET_ID_LENGTH = 20

function hasBinary (value: unknown): boolean {
  if (value === null || typeof value !== 'object') return false
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return true
  return Object.values(value).some(hasBinary)
}

/** `roomMessage` for the nodes of a Redis Cluster: the channel and body for SPUBLISH. */
export function shardedRoomMessage (keyPrefix: string, { room, data, except }: RoomMessage): WireMessage {
  const message = {
    type: BROADCAST_MESSAGE,
    data: {
      packet: { type: EVENT_PACKET, data, nsp: '/' },
      opts: { rooms: [room], except: except === undefined ? [] : [except], flags: {} }
    },
    uid: PUBLISHER_UID,
    nsp: '/'
  }
  const main = `${keyPrefix}${CHANNEL_KEY}#/#`
  return {
    channel: room.length === SOCKET_ID_LENGTH ? main : `${main}${room}#`,
    body: hasBinary(data) ? encode(message) : Buffer.from(JSON.stringify(message))
  }
}
