import type { Cluster, Redis } from 'ioredis'

/** The stream of membership operations, under the client's keyPrefix. One key: one hash slot on a Redis Cluster. */
export const OPS_KEY = 'rt:ops'

/**
 * Operations are added to the stream before they are published, and two nodes may publish in the
 * other order of their ids: after an outage, the stream is read again from this long before the
 * last id seen, skipping the ids already applied.
 */
const REORDER_MS = 2000

/** Entries read per XRANGE call. */
const PAGE = 500

/** A stream id `ms-seq` as two numbers. */
function parseId (id: string): [number, number] {
  const at = id.indexOf('-')
  return [Number(id.slice(0, at)), Number(id.slice(at + 1))]
}

/** Orders two stream ids. */
export function compareIds (a: string, b: string): number {
  const [am, as] = parseId(a)
  const [bm, bs] = parseId(b)
  return am === bm ? as - bs : am - bm
}

/** One entry of the stream: its id and the operation as JSON. */
export interface LoggedOperation {
  id: string
  data: string
}

/**
 * The shared, bounded record of membership operations (`join`, `leave`, `disconnectUser`): a
 * Redis stream capped at about `max` entries (`XADD … MAXLEN ~`). Every node remembers the last id
 * it has applied (its own operations and those it heard through the adapter); a node whose
 * subscriber was away reads what it missed from there, or learns that the record no longer
 * reaches back that far (trimmed, or lost with a Redis restart) and it must re-check instead.
 * Single-key commands only.
 */
export class OperationsLog {
  readonly #client: Redis | Cluster
  readonly #max: number
  /** The highest id applied on this node. */
  #last = '0-0'
  /** Where the last outage began: what was applied up to then. Null while nothing was missed. */
  #from: string | null = null
  /** Ids applied within REORDER_MS of the last one, with their time part. */
  readonly #recent = new Map<string, number>()

  constructor (client: Redis | Cluster, max: number) {
    this.#client = client
    this.#max = max
  }

  /**
   * Starts from the stream's newest entry. An empty stream gets a first entry that changes
   * nothing, so a node always holds an id the stream can be checked against.
   */
  async start (): Promise<void> {
    const newest = await this.#client.xrevrange(OPS_KEY, '+', '-', 'COUNT', 1)
    const id = newest[0]?.[0] ?? await this.#client.xadd(OPS_KEY, 'MAXLEN', '~', this.#max, '*', 'op', '{"op":"start"}')
    if (id !== null) this.seen(id)
  }

  /** Adds an operation; resolves with its id. Rejects when Redis does not take it. */
  async append (data: string): Promise<string> {
    const id = await this.#client.xadd(OPS_KEY, 'MAXLEN', '~', this.#max, '*', 'op', data)
    if (id === null) throw new Error('XADD added nothing')
    this.seen(id)
    return id
  }

  /** An operation with this id was applied on this node. */
  seen (id: string): void {
    if (compareIds(id, this.#last) > 0) this.#last = id
    const [ms] = parseId(id)
    this.#recent.set(id, ms)
    const floor = parseId(this.#from ?? this.#last)[0] - REORDER_MS
    // kept in the order applied, which is about the order of time: stop at the first one to keep
    for (const [old, at] of this.#recent) {
      if (at >= floor) break
      this.#recent.delete(old)
    }
  }

  /** This node's subscriber is gone: what it applied so far is where reading starts again. */
  away (): void {
    this.#from ??= this.#last
  }

  /**
   * What other nodes recorded since the outage began and this node has not applied, oldest
   * first; null when the stream no longer holds the last id applied before it (trimmed past it,
   * or lost): this node cannot know what it missed. Rejects when Redis does not answer.
   */
  async missed (): Promise<LoggedOperation[] | null> {
    const from = this.#from ?? this.#last
    this.#from = null
    // trimming takes the oldest entries first: while `from` is there, nothing after it is gone
    const kept = await this.#client.xrange(OPS_KEY, from, from)
    if (kept.length === 0) return null
    const result: LoggedOperation[] = []
    let cursor = `${Math.max(0, parseId(from)[0] - REORDER_MS)}-0`
    for (;;) {
      const page = await this.#client.xrange(OPS_KEY, cursor, '+', 'COUNT', PAGE)
      for (const [id, fields] of page) {
        if (this.#recent.has(id)) continue
        const at = fields.indexOf('op')
        if (at >= 0 && at % 2 === 0 && typeof fields[at + 1] === 'string') result.push({ id, data: fields[at + 1]! })
      }
      if (page.length < PAGE) break
      cursor = `(${page[page.length - 1]![0]}`
    }
    return result
  }
}
