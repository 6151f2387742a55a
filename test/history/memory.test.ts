import { mock } from 'node:test'
import t from 'tap'
import { MemoryHistoryStore } from '../../src/index.js'
import { storeContract } from './contract.js'

const DAY_MS = 24 * 60 * 60 * 1000

// a restart of the memory store is a new instance: every log is gone, the id is new
storeContract(t, 'memory', {
  make: (opts) => new MemoryHistoryStore(opts),
  lose: async (store, opts) => {
    await store.close?.()
    return new MemoryHistoryStore(opts)
  }
})

t.test('memory: the sweep releases expired events at once, then each scope once its position has expired', (t) => {
  // the store's one sweep timer, driven by hand for this synchronous block only
  mock.timers.enable({ apis: ['setInterval'] })
  try {
    const clock = { now: 1_700_000_000_000 }
    const store = new MemoryHistoryStore({ ttl: 10, max: 5, now: () => clock.now })
    for (let i = 0; i < 10_000; i++) {
      store.append(`user:u${i}`, { id: `e${i}`, event: 'x', payload: i, at: clock.now })
    }
    t.equal(store.scopes, 10_000, 'one log per scope while they are live')
    t.equal(store.events, 10_000)
    const held = store.position('user:u0')
    clock.now += 10_000
    t.same(store.position('user:u0'), held, 'past the ttl the position is kept')
    mock.timers.tick(10_000)
    t.equal(store.events, 0, 'one sweep after the ttl releases every expired event')
    t.equal(store.scopes, 10_000, 'but keeps the positions')
    const next = store.append('user:u0', { id: 'again', event: 'x', payload: null, at: clock.now })
    t.same(next, { seq: 2, epoch: held.epoch }, 'an append after the events expired goes on in the same epoch')
    t.equal(store.events, 1)

    clock.now += DAY_MS
    t.equal(store.position('user:u1').seq, 0, 'past the keep a scope reads as empty before any sweep')
    t.equal(store.append('team:1', { id: 'last', event: 'x', payload: null, at: clock.now }).seq, 1)
    mock.timers.tick(10_000)
    t.equal(store.scopes, 1, 'after one sweep only the scope still in use is held')
    t.equal(store.events, 1)
    t.equal(store.position('user:u2').seq, 0)
    t.equal(store.scopes, 1, 'and asking about a released scope does not bring it back')
    store.close()
  } finally {
    mock.timers.reset()
  }
  t.end()
})

t.test('memory: a log whose events the sweep released fills its ring again and reads in order', (t) => {
  mock.timers.enable({ apis: ['setInterval'] })
  try {
    const clock = { now: 1_700_000_000_000 }
    const store = new MemoryHistoryStore({ ttl: 10, max: 3, now: () => clock.now })
    const first = store.append('team:1', { id: 'e1', event: 'x', payload: 1, at: 1 })
    store.append('team:1', { id: 'e2', event: 'x', payload: 2, at: 2 })
    clock.now += 10_000
    mock.timers.tick(10_000)
    t.equal(store.events, 0)
    for (let n = 3; n <= 4; n++) store.append('team:1', { id: `e${n}`, event: 'x', payload: n, at: n })
    const result = store.read('team:1', { seq: 2, epoch: first.epoch })
    t.ok(result.ok)
    if (result.ok) t.same(result.events.map((e) => [e.seq, e.payload]), [[3, 3], [4, 4]])
    t.same(store.read('team:1', { seq: 1, epoch: first.epoch }), { ok: false, reason: 'gap' }, 'seq 2 was released')
    for (let n = 5; n <= 9; n++) store.append('team:1', { id: `e${n}`, event: 'x', payload: n, at: n })
    const wrapped = store.read('team:1', { seq: 6, epoch: first.epoch })
    t.ok(wrapped.ok)
    if (wrapped.ok) t.same(wrapped.events.map((e) => e.seq), [7, 8, 9], 'and wraps as before')
    store.close()
  } finally {
    mock.timers.reset()
  }
  t.end()
})

t.test('memory: the ring keeps the newest max events in order across many wraps', (t) => {
  const store = new MemoryHistoryStore({ ttl: 60, max: 3 })
  t.teardown(() => store.close())
  const first = store.append('team:1', { id: 'e1', event: 'x', payload: 1, at: 1 })
  for (let n = 2; n <= 1000; n++) store.append('team:1', { id: `e${n}`, event: 'x', payload: n, at: n })
  const result = store.read('team:1', { seq: 997, epoch: first.epoch })
  t.ok(result.ok)
  if (result.ok) t.same(result.events.map((e) => [e.seq, e.payload]), [[998, 998], [999, 999], [1000, 1000]])
  t.same(store.read('team:1', { seq: 996, epoch: first.epoch }), { ok: false, reason: 'gap' }, 'seq 997 was overwritten')
  t.end()
})

t.test('memory: close() stops the sweep timer and empties the store', (t) => {
  // setInterval driven by a fake clock for this synchronous block only
  mock.timers.enable({ apis: ['setInterval'] })
  try {
    let sweeps = 0
    let counting = false
    const now = (): number => {
      if (counting) sweeps++
      return 1_700_000_000_000
    }
    const store = new MemoryHistoryStore({ ttl: 1, now })
    store.append('team:1', { id: 'a', event: 'x', payload: 1, at: 0 })
    counting = true
    mock.timers.tick(1000)
    t.equal(sweeps, 1, 'the sweep runs once per interval while open')
    store.close()
    t.equal(store.scopes, 0, 'logs released')
    mock.timers.tick(10_000)
    t.equal(sweeps, 1, 'no sweep after close')
  } finally {
    mock.timers.reset()
  }
  t.end()
})
