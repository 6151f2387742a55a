import { mock } from 'node:test'
import t from 'tap'
import { MemoryHistoryStore } from '../../src/index.js'
import { storeContract } from './contract.js'

storeContract(t, 'memory', (opts) => new MemoryHistoryStore(opts))

t.test('memory: expired scopes read as empty at once and are released by the sweep', (t) => {
  // the store's one sweep timer, driven by hand for this synchronous block only
  mock.timers.enable({ apis: ['setInterval'] })
  try {
    const clock = { now: 1_700_000_000_000 }
    const store = new MemoryHistoryStore({ ttl: 10, max: 5, now: () => clock.now })
    for (let i = 0; i < 10_000; i++) {
      store.append(`user:u${i}`, { id: `e${i}`, event: 'x', payload: i, at: clock.now })
    }
    t.equal(store.scopes, 10_000, 'one log per scope while they are live')
    clock.now += 10_000 + 1
    t.equal(store.position('user:u0').seq, 0, 'an expired scope reads as empty before any sweep')
    const position = store.append('team:1', { id: 'last', event: 'x', payload: null, at: clock.now })
    t.equal(position.seq, 1)
    mock.timers.tick(10_000)
    t.equal(store.scopes, 1, 'after one sweep only the scope still in use holds a log')
    t.equal(store.position('user:u1').seq, 0)
    t.equal(store.scopes, 1, 'and asking about an expired scope does not bring its log back')
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
