import type { Test } from 'tap'
import type { HistoryEntry, HistoryStore, Position, StoredEvent } from '../../src/index.js'

/** What a contract run gives the store under test: its limits and the clock to read. */
export interface ContractStoreOptions {
  /** Seconds an event stays replayable. */
  ttl: number
  /** Events kept per scope. */
  max: number
  /** Milliseconds clock the store must use; the contract moves it forward. */
  now: () => number
}

export type MakeStore = (opts: ContractStoreOptions) => Promise<HistoryStore> | HistoryStore

const TTL = 60
const TTL_MS = TTL * 1000
const MAX = 5
/** A fixed start, far from 0, so a store that ignored the injected clock would stand out. */
const T0 = 1_700_000_000_000

interface Harness {
  store: HistoryStore
  clock: { now: number }
  /** Advances the injected clock by `ms`. */
  advance: (ms: number) => void
  /** Appends a fresh entry (numbered `n`) and returns what the store says plus the entry. */
  add: (scope: string, n: number, by?: string | number) => Promise<{ position: Position, entry: HistoryEntry }>
}

async function harness (t: Test, makeStore: MakeStore): Promise<Harness> {
  const clock = { now: T0 }
  const store = await makeStore({ ttl: TTL, max: MAX, now: () => clock.now })
  t.teardown(async () => { await store.close?.() })
  return {
    store,
    clock,
    advance: (ms) => { clock.now += ms },
    add: async (scope, n, by) => {
      const base = { id: `id-${scope}-${n}`, event: 'thing:done', payload: { n, list: [n, 'x'], nested: { ok: true } }, at: clock.now }
      const entry: HistoryEntry = by === undefined ? base : { ...base, by }
      const position = await store.append(scope, entry)
      return { position, entry }
    }
  }
}

/** The stored form of `entry` at `seq`: everything it was given, plus its place. */
function stored (entry: HistoryEntry, seq: number): StoredEvent {
  return { ...entry, seq }
}

function isPositionShape (value: unknown): boolean {
  const p = value as Position
  return typeof p === 'object' && p !== null && Number.isSafeInteger(p.seq) && typeof p.epoch === 'string' && p.epoch.length > 0
}

/**
 * The HistoryStore contract (src/history/store.ts), store-agnostic: every store the plugin
 * ships (memory, Redis) and any custom one must pass it. `makeStore` builds a fresh, empty
 * store for each case with the given limits and the injected clock.
 */
export function storeContract (t: Test, name: string, makeStore: MakeStore): void {
  t.test(`${name}: append numbers events 1, 2, 3 per scope under a stable epoch`, async (t) => {
    const { add } = await harness(t, makeStore)
    const a1 = await add('team:a', 1)
    const a2 = await add('team:a', 2)
    const b1 = await add('team:b', 1)
    const a3 = await add('team:a', 3)
    t.ok(isPositionShape(a1.position), 'append returns { seq, epoch }')
    t.same([a1, a2, a3].map((a) => a.position.seq), [1, 2, 3])
    t.equal(a2.position.epoch, a1.position.epoch, 'same epoch for the second append')
    t.equal(a3.position.epoch, a1.position.epoch, 'same epoch for the third append')
    t.equal(b1.position.seq, 1, 'another scope has its own sequence')
  })

  t.test(`${name}: position follows the appends`, async (t) => {
    const { store, add } = await harness(t, makeStore)
    const first = await add('team:a', 1)
    await add('team:a', 2)
    t.same(await store.position('team:a'), { seq: 2, epoch: first.position.epoch })
  })

  t.test(`${name}: read returns exactly the events after a position, in order, as given`, async (t) => {
    const { store, add } = await harness(t, makeStore)
    const added = []
    for (let n = 1; n <= 4; n++) added.push(await add('team:a', n, n % 2 === 0 ? `user-${n}` : undefined))
    await add('team:b', 99, 7)
    const { epoch } = added[0]!.position
    for (let k = 0; k <= 3; k++) {
      const result = await store.read('team:a', { seq: k, epoch })
      t.same(result, {
        ok: true,
        events: added.slice(k).map(({ entry, position }) => stored(entry, position.seq)),
        position: { seq: 4, epoch }
      }, `from seq ${k}`)
    }
    const { epoch: epochB } = await store.position('team:b')
    const numeric = await store.read('team:b', { seq: 0, epoch: epochB })
    t.match(numeric, { ok: true, events: [{ seq: 1, by: 7, payload: { n: 99 } }] }, 'a numeric by is kept')
  })

  t.test(`${name}: read from the head returns no events`, async (t) => {
    const { store, add } = await harness(t, makeStore)
    await add('team:a', 1)
    const head = (await add('team:a', 2)).position
    t.same(await store.read('team:a', head), { ok: true, events: [], position: head })
  })

  t.test(`${name}: max evicts the oldest; a read that needs it is a gap`, async (t) => {
    const { store, add } = await harness(t, makeStore)
    const added = []
    for (let n = 1; n <= MAX + 1; n++) added.push(await add('team:a', n))
    const { epoch } = added[0]!.position
    t.same(await store.read('team:a', { seq: 0, epoch }), { ok: false, reason: 'gap' }, 'seq 1 was evicted')
    const fromOne = await store.read('team:a', { seq: 1, epoch })
    t.same(fromOne, {
      ok: true,
      events: added.slice(1).map(({ entry, position }) => stored(entry, position.seq)),
      position: { seq: MAX + 1, epoch }
    }, 'everything after the evicted one is still there')
  })

  t.test(`${name}: events older than the ttl are gone, newer ones stay`, async (t) => {
    const { store, add, advance } = await harness(t, makeStore)
    const first = await add('team:a', 1)
    advance(TTL_MS / 2)
    const second = await add('team:a', 2)
    advance(TTL_MS / 2 + 1)
    const { epoch } = first.position
    const fromZero = await store.read('team:a', { seq: 0, epoch })
    t.equal(fromZero.ok, false, 'seq 1 expired: not replayable')
    t.same(await store.read('team:a', { seq: 1, epoch }), {
      ok: true, events: [stored(second.entry, 2)], position: { seq: 2, epoch }
    }, 'seq 2 is still within the ttl')
  })

  t.test(`${name}: a log past its ttl is gone and comes back under a new epoch`, async (t) => {
    const { store, add, advance } = await harness(t, makeStore)
    const old = []
    for (let n = 1; n <= 3; n++) old.push(await add('team:a', n))
    const { epoch } = old[0]!.position
    advance(TTL_MS + 1)
    for (const seq of [0, 1, 3]) {
      const result = await store.read('team:a', { seq, epoch })
      t.equal(result.ok, false, `an old position (seq ${seq}) is not ok`)
      if (!result.ok) t.ok(result.reason === 'gap' || result.reason === 'epoch', `reason ${result.reason}`)
    }
    const emptied = await store.position('team:a')
    t.not(emptied.epoch, epoch, 'the position of an expired log has a new epoch')
    t.equal(emptied.seq, 0, 'and nothing in it')
    const again = await add('team:a', 4)
    t.equal(again.position.seq, 1, 'a new generation starts at seq 1')
    t.not(again.position.epoch, epoch, 'under a new epoch')
    for (const seq of [0, 3]) {
      const result = await store.read('team:a', { seq, epoch })
      t.equal(result.ok, false, `a position from the old generation (seq ${seq}) is not ok after the restart`)
    }
  })

  t.test(`${name}: a since.seq ahead of the log, or an unknown epoch, is reason epoch`, async (t) => {
    const { store, add } = await harness(t, makeStore)
    await add('team:a', 1)
    const head = (await add('team:a', 2)).position
    t.same(await store.read('team:a', { seq: 3, epoch: head.epoch }), { ok: false, reason: 'epoch' }, 'one ahead')
    t.same(await store.read('team:a', { seq: 500, epoch: head.epoch }), { ok: false, reason: 'epoch' }, 'far ahead')
    t.same(await store.read('team:a', { seq: 1, epoch: 'some-other-store.123' }), { ok: false, reason: 'epoch' }, 'foreign epoch')
    t.same(await store.read('team:a', { seq: 1, epoch: 'garbage' }), { ok: false, reason: 'epoch' }, 'malformed epoch')
    t.same(await store.read('team:never', { seq: 2, epoch: 'some-other-store.123' }), { ok: false, reason: 'epoch' }, 'foreign epoch, no log')
  })

  t.test(`${name}: a never-used scope has a position at seq 0 that replays from seq 1`, async (t) => {
    const { store, add, advance } = await harness(t, makeStore)
    const start = await store.position('team:new')
    t.ok(isPositionShape(start), 'a position even without a log')
    t.equal(start.seq, 0)
    t.same(await store.read('team:new', start), { ok: true, events: [], position: start }, 'nothing to replay yet')
    advance(1000)
    const added = []
    for (let n = 1; n <= 3; n++) added.push(await add('team:new', n))
    t.same(await store.read('team:new', start), {
      ok: true,
      events: added.map(({ entry, position }) => stored(entry, position.seq)),
      position: added[2]!.position
    }, 'the whole first generation is replayed')
  })

  t.test(`${name}: seenNothing holds only within the ttl`, async (t) => {
    // a seq-0 position taken before the log began covers it only if no generation can have
    // begun and expired in between, i.e. when the log began less than one ttl later
    const { store, add, advance } = await harness(t, makeStore)
    const early = await store.position('team:late')
    advance(TTL_MS - 1)
    await add('team:late', 1)
    t.equal((await store.read('team:late', early)).ok, true, 'log begun within the ttl: ok')

    const stale = await store.position('team:stale')
    advance(TTL_MS)
    await add('team:stale', 1)
    t.equal((await store.read('team:stale', stale)).ok, false, 'log begun a ttl later: not ok')

    // the danger it guards against: a generation begun after the position, then expired
    const before = await store.position('team:lost')
    advance(1000)
    await add('team:lost', 1) // missed by the holder of `before`…
    advance(TTL_MS + 1) // …and expired
    await add('team:lost', 2)
    const lost = await store.read('team:lost', before)
    t.equal(lost.ok, false, 'never ok with an event missing')
    if (!lost.ok) t.ok(lost.reason === 'gap' || lost.reason === 'epoch', `reason ${lost.reason}`)

    const idle = await store.position('team:idle')
    advance(TTL_MS)
    const idleRead = await store.read('team:idle', idle)
    t.equal(idleRead.ok, false, 'no log and a position a ttl old: not ok (a log may have come and gone)')
  })

  t.test(`${name}: scopes do not see each other's events or positions`, async (t) => {
    const { store, add } = await harness(t, makeStore)
    const a = await add('team:a', 1)
    await add('team:b', 1)
    await add('team:b', 2)
    t.same(await store.read('team:a', { seq: 0, epoch: a.position.epoch }), {
      ok: true, events: [stored(a.entry, 1)], position: a.position
    })
    t.equal((await store.position('team:a')).seq, 1)
    t.equal((await store.position('team:b')).seq, 2)
  })
}
