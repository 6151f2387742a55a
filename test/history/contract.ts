import type { Test } from 'tap'
import type { EventActor, HistoryEntry, HistoryStore, Position, ReadResult, StoredEvent } from '../../src/index.js'

/** What a contract run gives the store under test: its limits and the clock to read. */
export interface ContractStoreOptions {
  /** Seconds an event stays replayable. */
  ttl: number
  /** Events kept per scope. */
  max: number
  /** Milliseconds clock the store must use; the contract moves it forward. */
  now: () => number
}

/** How the contract builds, and loses, the store under test. */
export interface ContractHooks {
  /** A fresh, empty store with the given limits and the injected clock. */
  make: (opts: ContractStoreOptions) => Promise<HistoryStore> | HistoryStore
  /**
   * Loses every log `store` holds, the way this kind of store loses them (memory: a restart;
   * Redis: a flush), and returns the store to go on with (the same or a new one).
   */
  lose: (store: HistoryStore, opts: ContractStoreOptions) => Promise<HistoryStore> | HistoryStore
  /** Milliseconds a scope's position outlives its newest event. @default max(ttl, 24 h) */
  keepMs?: number
  /** The store implements `appendOnce`: check it too. */
  appendOnce?: boolean
}

const TTL = 60
const TTL_MS = TTL * 1000
const MAX = 5
/** A fixed start, far from 0, so a store that ignored the injected clock would stand out. */
const T0 = 1_700_000_000_000

interface Harness {
  store: HistoryStore
  /** Advances the injected clock by `ms`. */
  advance: (ms: number) => void
  /** Appends a fresh entry (numbered `n`) and returns what the store says plus the entry. */
  add: (scope: string, n: number, by?: EventActor) => Promise<{ position: Position, entry: HistoryEntry }>
  /** Loses every log through the store's `lose` hook; `store` is the one to use afterwards. */
  lose: () => Promise<void>
}

async function harness (t: Test, hooks: ContractHooks): Promise<Harness> {
  const clock = { now: T0 }
  const opts: ContractStoreOptions = { ttl: TTL, max: MAX, now: () => clock.now }
  const closing = new Set<HistoryStore>()
  const track = (store: HistoryStore): HistoryStore => {
    if (!closing.has(store)) {
      closing.add(store)
      t.teardown(async () => { await store.close?.() })
    }
    return store
  }
  const h: Harness = {
    store: track(await hooks.make(opts)),
    advance: (ms) => { clock.now += ms },
    add: async (scope, n, by) => {
      const base = { id: `id-${scope}-${n}`, event: 'thing:done', payload: { n, list: [n, 'x'], nested: { ok: true } }, at: clock.now }
      const entry: HistoryEntry = by === undefined ? base : { ...base, by }
      const position = await h.store.append(scope, entry)
      return { position, entry }
    },
    lose: async () => { h.store = track(await hooks.lose(h.store, opts)) }
  }
  return h
}

/** The stored form of `entry` at `seq`: everything it was given, plus its place. */
function stored (entry: HistoryEntry, seq: number): StoredEvent {
  return { ...entry, seq }
}

function isPositionShape (value: unknown): boolean {
  const p = value as Position
  return typeof p === 'object' && p !== null && Number.isSafeInteger(p.seq) && typeof p.epoch === 'string' && p.epoch.length > 0
}

/** Asserts a read is not ok, for one of `reasons`. */
function notOk (t: Test, result: ReadResult, reasons: Array<'gap' | 'epoch'>, message: string): void {
  t.equal(result.ok, false, message)
  if (!result.ok) t.ok(reasons.includes(result.reason), `${message}: reason ${result.reason}`)
}

/**
 * The HistoryStore contract (src/history/store.ts), store-agnostic: every store the plugin
 * ships (memory, Redis) and any custom one must pass it. `hooks.make` builds a fresh, empty
 * store for each case with the given limits and the injected clock.
 */
export function storeContract (t: Test, name: string, hooks: ContractHooks): void {
  const KEEP_MS = hooks.keepMs ?? Math.max(TTL_MS, 24 * 60 * 60 * 1000)

  t.test(`${name}: append numbers events 1, 2, 3 per scope under a stable epoch`, async (t) => {
    const { add } = await harness(t, hooks)
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
    const h = await harness(t, hooks)
    const first = await h.add('team:a', 1)
    await h.add('team:a', 2)
    t.same(await h.store.position('team:a'), { seq: 2, epoch: first.position.epoch })
  })

  t.test(`${name}: read returns exactly the events after a position, in order, as given`, async (t) => {
    const h = await harness(t, hooks)
    const added = []
    for (let n = 1; n <= 4; n++) added.push(await h.add('team:a', n, n % 2 === 0 ? `user-${n}` : undefined))
    await h.add('team:b', 99, 7)
    const { epoch } = added[0]!.position
    for (let k = 0; k <= 3; k++) {
      const result = await h.store.read('team:a', { seq: k, epoch })
      t.same(result, {
        ok: true,
        events: added.slice(k).map(({ entry, position }) => stored(entry, position.seq)),
        position: { seq: 4, epoch }
      }, `from seq ${k}`)
    }
    const { epoch: epochB } = await h.store.position('team:b')
    const numeric = await h.store.read('team:b', { seq: 0, epoch: epochB })
    t.match(numeric, { ok: true, events: [{ seq: 1, by: 7, payload: { n: 99 } }] }, 'a numeric by is kept')
    const actor = { id: 'u7', name: 'Jane Ünïcødé', roles: ['admin', 'oncall'], team: { id: 42 }, away: false, note: null }
    const c1 = await h.add('team:c', 1, actor)
    t.same(await h.store.read('team:c', { seq: 0, epoch: c1.position.epoch }), { ok: true, events: [stored(c1.entry, 1)], position: c1.position },
      'an object by is kept as given')
  })

  t.test(`${name}: read from the head returns no events`, async (t) => {
    const h = await harness(t, hooks)
    await h.add('team:a', 1)
    const head = (await h.add('team:a', 2)).position
    t.same(await h.store.read('team:a', head), { ok: true, events: [], position: head })
  })

  t.test(`${name}: max evicts the oldest; a read that needs it is a gap`, async (t) => {
    const h = await harness(t, hooks)
    const added = []
    for (let n = 1; n <= MAX + 1; n++) added.push(await h.add('team:a', n))
    const { epoch } = added[0]!.position
    t.same(await h.store.read('team:a', { seq: 0, epoch }), { ok: false, reason: 'gap' }, 'seq 1 was evicted')
    const fromOne = await h.store.read('team:a', { seq: 1, epoch })
    t.same(fromOne, {
      ok: true,
      events: added.slice(1).map(({ entry, position }) => stored(entry, position.seq)),
      position: { seq: MAX + 1, epoch }
    }, 'everything after the evicted one is still there')
  })

  t.test(`${name}: events older than the ttl are gone, newer ones stay`, async (t) => {
    const h = await harness(t, hooks)
    const first = await h.add('team:a', 1)
    h.advance(TTL_MS / 2)
    const second = await h.add('team:a', 2)
    h.advance(TTL_MS / 2 + 1)
    const { epoch } = first.position
    t.same(await h.store.read('team:a', { seq: 0, epoch }), { ok: false, reason: 'gap' }, 'seq 1 expired: a gap')
    t.same(await h.store.read('team:a', { seq: 1, epoch }), {
      ok: true, events: [stored(second.entry, 2)], position: { seq: 2, epoch }
    }, 'seq 2 is still within the ttl')
  })

  t.test(`${name}: idle past the ttl, the events go but the position stays`, async (t) => {
    const h = await harness(t, hooks)
    for (let n = 1; n <= 3; n++) await h.add('team:a', n)
    const head = await h.store.position('team:a')
    t.equal(head.seq, 3)
    h.advance(TTL_MS + 1)
    t.same(await h.store.position('team:a'), head, 'same epoch and seq after the events expired')
    t.same(await h.store.read('team:a', head), { ok: true, events: [], position: head }, 'a client at the head missed nothing')
    for (const seq of [0, 1, 2]) {
      t.same(await h.store.read('team:a', { seq, epoch: head.epoch }), { ok: false, reason: 'gap' }, `a client behind (seq ${seq}) gets gap`)
    }
    const next = await h.add('team:a', 4)
    t.same(next.position, { seq: 4, epoch: head.epoch }, 'the next append goes on in the same epoch')
    t.same(await h.store.read('team:a', head), {
      ok: true, events: [stored(next.entry, 4)], position: next.position
    }, 'the client at the old head gets exactly the new event')
    t.same(await h.store.read('team:a', { seq: 2, epoch: head.epoch }), { ok: false, reason: 'gap' }, 'seq 3 is still gone')
  })

  t.test(`${name}: idle past the position's keep, a new generation begins under a new epoch`, async (t) => {
    const h = await harness(t, hooks)
    for (let n = 1; n <= 3; n++) await h.add('team:a', n)
    const head = await h.store.position('team:a')
    h.advance(KEEP_MS - 1)
    t.same(await h.store.position('team:a'), head, 'kept until just before the keep ends')
    h.advance(1)
    const emptied = await h.store.position('team:a')
    t.not(emptied.epoch, head.epoch, 'then the scope reads as empty, under a new epoch')
    t.equal(emptied.seq, 0)
    for (const seq of [0, 1, 3]) notOk(t, await h.store.read('team:a', { seq, epoch: head.epoch }), ['gap', 'epoch'], `old position seq ${seq}`)
    const again = await h.add('team:a', 4)
    t.equal(again.position.seq, 1, 'a new generation starts at seq 1')
    t.not(again.position.epoch, head.epoch, 'under a new epoch')
    for (const seq of [0, 3]) notOk(t, await h.store.read('team:a', { seq, epoch: head.epoch }), ['gap', 'epoch'], `old position seq ${seq} after the next append`)
  })

  t.test(`${name}: a lost log gives every position from before a new epoch`, async (t) => {
    const h = await harness(t, hooks)
    for (let n = 1; n <= 3; n++) await h.add('team:a', n)
    const head = await h.store.position('team:a')
    const empty = await h.store.position('team:b')
    t.equal(empty.seq, 0)
    await h.lose()
    const after = await h.store.position('team:a')
    t.equal(after.seq, 0, 'nothing left')
    t.not(after.epoch, head.epoch, 'under a new epoch')
    for (const seq of [0, 2, 3]) {
      t.same(await h.store.read('team:a', { seq, epoch: head.epoch }), { ok: false, reason: 'epoch' }, `old position seq ${seq}`)
    }
    const next = await h.add('team:a', 4)
    t.equal(next.position.seq, 1)
    t.not(next.position.epoch, head.epoch)
    t.same(await h.store.read('team:a', { seq: 3, epoch: head.epoch }), { ok: false, reason: 'epoch' }, 'the old head after the next append')
    await h.add('team:b', 1)
    t.same(await h.store.read('team:b', empty), { ok: false, reason: 'epoch' }, 'a seq-0 position from before the loss never covers the new log')
    const fresh = await h.store.position('team:c')
    const c1 = await h.add('team:c', 1)
    t.same(await h.store.read('team:c', fresh), { ok: true, events: [stored(c1.entry, 1)], position: c1.position }, 'positions taken after the loss work')
  })

  t.test(`${name}: a since.seq ahead of the log, or an unknown epoch, is reason epoch`, async (t) => {
    const h = await harness(t, hooks)
    await h.add('team:a', 1)
    const head = (await h.add('team:a', 2)).position
    t.same(await h.store.read('team:a', { seq: 3, epoch: head.epoch }), { ok: false, reason: 'epoch' }, 'one ahead')
    t.same(await h.store.read('team:a', { seq: 500, epoch: head.epoch }), { ok: false, reason: 'epoch' }, 'far ahead')
    t.same(await h.store.read('team:a', { seq: 1, epoch: 'some-other-store.123' }), { ok: false, reason: 'epoch' }, 'foreign epoch')
    t.same(await h.store.read('team:a', { seq: 1, epoch: 'garbage' }), { ok: false, reason: 'epoch' }, 'malformed epoch')
    t.same(await h.store.read('team:never', { seq: 2, epoch: 'some-other-store.123' }), { ok: false, reason: 'epoch' }, 'foreign epoch, no log')
    for (const seq of [-1, 0.5, Number.NaN]) {
      t.equal((await h.store.read('team:a', { seq, epoch: head.epoch })).ok, false, `a seq no store hands out (${seq})`)
    }
  })

  t.test(`${name}: a never-used scope has a position at seq 0 that replays from seq 1`, async (t) => {
    const h = await harness(t, hooks)
    const start = await h.store.position('team:new')
    t.ok(isPositionShape(start), 'a position even without a log')
    t.equal(start.seq, 0)
    t.same(await h.store.read('team:new', start), { ok: true, events: [], position: start }, 'nothing to replay yet')
    h.advance(1000)
    const added = []
    for (let n = 1; n <= 3; n++) added.push(await h.add('team:new', n))
    t.same(await h.store.read('team:new', start), {
      ok: true,
      events: added.map(({ entry, position }) => stored(entry, position.seq)),
      position: added[2]!.position
    }, 'the whole first generation is replayed')
  })

  t.test(`${name}: a seq-0 position covers a new log only within the keep`, async (t) => {
    // a seq-0 position taken before the log began covers it only if no generation can have
    // begun and expired in between, i.e. when the log began less than one keep later
    const h = await harness(t, hooks)
    const early = await h.store.position('team:late')
    h.advance(KEEP_MS - 1)
    await h.add('team:late', 1)
    t.equal((await h.store.read('team:late', early)).ok, true, 'log begun within the keep: ok')

    const stale = await h.store.position('team:stale')
    h.advance(KEEP_MS)
    await h.add('team:stale', 1)
    notOk(t, await h.store.read('team:stale', stale), ['gap', 'epoch'], 'log begun a keep later')

    // the danger it guards against: a generation begun after the position, then expired
    const before = await h.store.position('team:lost')
    h.advance(1000)
    await h.add('team:lost', 1) // missed by the holder of `before`…
    h.advance(KEEP_MS + 1) // …and gone
    await h.add('team:lost', 2)
    notOk(t, await h.store.read('team:lost', before), ['gap', 'epoch'], 'never ok with an event missing')

    const idle = await h.store.position('team:idle')
    h.advance(KEEP_MS)
    notOk(t, await h.store.read('team:idle', idle), ['gap', 'epoch'], 'no log and a position a keep old (a log may have come and gone)')
  })

  t.test(`${name}: concurrent appends get unique, gap-free seqs and are stored under them`, async (t) => {
    const h = await harness(t, hooks)
    const scopes = ['team:a', 'team:b', 'team:c']
    const per = 40
    const all = await Promise.all(Array.from({ length: per * scopes.length }, (_, i) => h.add(scopes[i % scopes.length]!, Math.floor(i / scopes.length) + 1)))
    for (const scope of scopes) {
      const mine = all.filter(({ entry }) => entry.id.startsWith(`id-${scope}-`))
      t.same(mine.map(({ position }) => position.seq).sort((a, b) => a - b), Array.from({ length: per }, (_, i) => i + 1), `${scope}: 1…${per}, once each`)
      t.equal(new Set(mine.map(({ position }) => position.epoch)).size, 1, `${scope}: one epoch`)
      const bySeq = new Map(mine.map(({ entry, position }) => [position.seq, entry]))
      const epoch = mine[0]!.position.epoch
      t.same(await h.store.read(scope, { seq: per - MAX, epoch }), {
        ok: true,
        events: Array.from({ length: MAX }, (_, i) => stored(bySeq.get(per - MAX + 1 + i)!, per - MAX + 1 + i)),
        position: { seq: per, epoch }
      }, `${scope}: each seq holds the entry its append was told`)
    }
  })

  if (hooks.appendOnce === true) {
    t.test(`${name}: appendOnce appends once per key and scope within the ttl, and answers a repeat with the first entry`, async (t) => {
      const h = await harness(t, hooks)
      const once = h.store.appendOnce!.bind(h.store)
      const entry = (n: number, by?: EventActor): HistoryEntry => by === undefined
        ? { id: `e${n}`, event: 'thing:done', payload: { n }, at: T0 + n }
        : { id: `e${n}`, event: 'thing:done', payload: { n }, at: T0 + n, by }
      const e1 = entry(1, { id: 'u7', name: 'Jane' })
      const first = await once('team:a', e1, 'request-1')
      t.same({ seq: first.seq, first: first.first }, { seq: 1, first: undefined }, 'a new key appends')
      const again = await once('team:a', entry(2, 'someone else'), 'request-1')
      t.same(again, { seq: 1, epoch: first.epoch, first: { id: 'e1', at: T0 + 1, by: { id: 'u7', name: 'Jane' } } }, 'a repeat answers with the first entry and its place')
      t.same(await h.store.read('team:a', { seq: 0, epoch: first.epoch }), { ok: true, events: [stored(e1, 1)], position: { seq: 1, epoch: first.epoch } }, 'and appends nothing')
      t.match(await once('team:a', entry(3), 'request-2'), { seq: 2, first: undefined }, 'another key appends')
      t.match(await h.store.append('team:a', entry(4)), { seq: 3 }, 'plain appends go on in the same sequence')
      t.match(await once('team:b', entry(5), 'request-1'), { seq: 1, first: undefined }, 'the same key for another scope appends')
      const repeats = await Promise.all([6, 7, 8].map(async (n) => await once('team:c', entry(n), 'request-3')))
      t.equal(repeats.filter((r) => r.first === undefined).length, 1, 'of concurrent calls with one key, one appends')
      h.advance(TTL_MS + 1)
      t.match(await once('team:a', entry(9), 'request-1'), { seq: 4, first: undefined }, 'past the ttl the key is forgotten')
    })
  }

  t.test(`${name}: scopes do not see each other's events or positions`, async (t) => {
    const h = await harness(t, hooks)
    const a = await h.add('team:a', 1)
    await h.add('team:b', 1)
    await h.add('team:b', 2)
    t.same(await h.store.read('team:a', { seq: 0, epoch: a.position.epoch }), {
      ok: true, events: [stored(a.entry, 1)], position: a.position
    })
    t.equal((await h.store.position('team:a')).seq, 1)
    t.equal((await h.store.position('team:b')).seq, 2)
  })
}
